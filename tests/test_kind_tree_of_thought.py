"""TreeOfThought (ToT-BFS): expand every kept state into sampled thoughts, value them, keep the best.

Scripted LMs answer by predictor (told apart by their system messages); thoughts are named after
the state they grow from and their sample number, so the search can be followed exactly.
"""
from __future__ import annotations

import json
import time

import pytest
from conftest import SlowLM, first_user_value, system_of, run_example

import pipec
from pipec.inspection import inspect_program

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")


PIPE = """
    signature Puzzle { "Solve the puzzle." in puzzle: str out answer: str }
    module solve = TreeOfThought(Puzzle{opts})
    pipeline p(puzzle: str) -> (answer, thoughts: list[str]) {
        r = solve(puzzle: puzzle)
        return answer = r.answer, thoughts = r.thoughts
    }
"""


def role(request) -> str:
    system = system_of(request)
    if "Write the next thought" in system:
        return "expand"
    if system.startswith("Judge whether") or system.startswith("Rate how likely"):
        return "evaluate"
    if "Build the answer on the thoughts given" in system:
        return "answer"
    raise AssertionError(system)


def path_of(request) -> list[str]:
    return json.loads(first_user_value(request, "path"))


# Thought "<parent>/<i>"; states containing a "1" (sample 1 somewhere) are sure, "0" likely, else impossible.
def label(path: list[str]) -> str:
    last = path[-1]
    return "sure" if last.endswith("1") else "likely" if last.endswith("0") else "impossible"


def tree_rule(request):
    r = role(request)
    path = path_of(request)
    if r == "expand":
        parent = path[-1] if path else "root"
        return {"thought": f"{parent}/{request.sample}"}
    if r == "evaluate":
        return {"value": label(path)}
    return {"answer": " > ".join(path)}


def load(write_pipe, lm, opts=""):
    return pipec.load(write_pipe(PIPE.replace("{opts}", opts)), lm=lm, cache=False)


def test_breadth_first_search_expands_values_keeps_the_best_and_answers_from_the_best_path(write_pipe):
    lm = pipec.ScriptedLM(rule=tree_rule)
    prog = load(write_pipe, lm)                               # defaults: depth 2, branches 3, breadth 2
    out = prog(puzzle="make 24")
    assert out.ok, out.error
    roles = [role(r) for r in lm.requests]
    assert roles == ["expand"] * 3 + ["evaluate"] * 3 + ["expand"] * 6 + ["evaluate"] * 6 + ["answer"]
    # depth 1: three samples of the root, numbered, at the sample temperature
    first = lm.requests[:3]
    assert [r.sample for r in first] == [0, 1, 2] and all(r.params["temperature"] == 0.7 for r in first)
    assert all(path_of(r) == [] for r in first)
    # root/1 is sure, root/0 likely, root/2 impossible: the two best are expanded, best first
    assert [path_of(r) for r in lm.requests[6:12]] == [["root/1"]] * 3 + [["root/0"]] * 3
    assert [path_of(r)[-1] for r in lm.requests[12:18]] == ["root/1/0", "root/1/1", "root/1/2",
                                                             "root/0/0", "root/0/1", "root/0/2"]
    # the evaluator runs at the module's own settings, once per candidate (evaluations: 1)
    assert all(r.sample == 0 and "temperature" not in r.params for r in lm.requests[3:6])
    best = ["root/1", "root/1/1"]
    assert path_of(lm.requests[-1]) == best
    assert out.thoughts == best and out.answer == "root/1 > root/1/1"
    assert [rec.predictor for rec in out.trace][:4] == ["solve.expand"] * 3 + ["solve.evaluate"]
    assert prog.modules["solve"].max_calls() == 2 * (3 * 2 + 2 * 3 * 2 + 1)


def test_ties_keep_generation_order_and_identical_thoughts_are_one_state(write_pipe):
    def rule(request):
        if role(request) == "expand":
            return {"thought": "same" if request.sample < 2 else "other"}
        if role(request) == "evaluate":
            return {"value": "likely"}
        return {"answer": "done"}
    lm = pipec.ScriptedLM(rule=rule)
    out = load(write_pipe, lm, ", depth: 1, branches: 3, breadth: 1")(puzzle="p")
    assert out.ok and out.thoughts == ["same"]
    assert [role(r) for r in lm.requests] == ["expand"] * 3 + ["evaluate"] * 2 + ["answer"]


def test_numeric_values_are_clamped_and_repeated_evaluations_are_summed(write_pipe):
    scores = {"root/0": [0.9, 0.0, 0.0], "root/1": [0.5, 0.5, 0.5]}      # x3 on sample 0, then clamped

    def rule(request):
        r = role(request)
        if r == "expand":
            return {"thought": f"root/{request.sample}"}
        if r == "evaluate":
            return {"value": scores[path_of(request)[-1]][request.sample] * (3 if request.sample == 0 else 1)}
        return {"answer": path_of(request)[-1]}
    lm = pipec.ScriptedLM(rule=rule)
    prog = load(write_pipe, lm, ', depth: 1, branches: 2, breadth: 1, value: "number", evaluations: 3, '
                                'sample_temperature: 1.1')
    out = prog(puzzle="p")
    assert out.ok and out.answer == "root/1"         # root/0: 2.7 -> 1.0, total 1.0; root/1: 1.0 + 0.5 + 0.5
    evals = [r for r in lm.requests if role(r) == "evaluate"]
    assert "from 0 (cannot lead to a correct answer) to 1" in system_of(evals[0])
    assert [r.sample for r in evals] == [0, 1, 2, 0, 1, 2]
    assert all(r.params["temperature"] == 1.1 for r in evals)
    assert prog.modules["solve"].max_calls() == 2 * (2 * (1 + 3) + 1) == len(lm.requests) * 2


def retry_everything(rule):
    """The worst case: every first reply is empty (unparseable); the retry gets the real answer."""
    def wrapped(request):
        if request.messages[-1]["content"].startswith("Your reply could not be used"):
            return rule(request)
        return ""
    return wrapped


@pytest.mark.parametrize("opts", ["", ", depth: 3, branches: 2, breadth: 3, evaluations: 2", ", depth: 1, branches: 1"])
def test_max_calls_is_the_calls_made_in_the_worst_case(write_pipe, opts):
    lm = pipec.ScriptedLM(rule=retry_everything(tree_rule))
    prog = load(write_pipe, lm, opts)
    out = prog(puzzle="p")
    assert out.ok, out.error
    assert len(lm.requests) == prog.modules["solve"].max_calls() == inspect_program(prog)["max_lm_calls"]


def test_expansions_and_evaluations_run_in_parallel(write_pipe):
    lm = SlowLM(rule=tree_rule, delay=0.2)
    prog = load(write_pipe, lm, ", depth: 1, branches: 4, breadth: 2")
    start = time.perf_counter()
    out = prog(puzzle="p")
    elapsed = time.perf_counter() - start
    assert out.ok, out.error
    assert len(lm.requests) == 4 + 4 + 1
    assert lm.max_in_flight == 4                     # all four samples (then all four values) at once
    assert elapsed < 0.2 * 6, elapsed                # three rounds of 0.2 s, not nine calls in a row


def test_a_failed_expansion_is_pruned_and_a_failed_evaluation_counts_as_zero(write_pipe):
    def rule(request):
        r = role(request)
        if r == "expand" and request.sample == 1:
            return ""                                    # never parses: this branch is pruned
        if r == "evaluate" and path_of(request)[-1] == "root/2":
            return "{\"value\": \"maybe\"}"               # not a label, even on the retry: valued 0
        return tree_rule(request)
    lm = pipec.ScriptedLM(rule=rule)
    out = load(write_pipe, lm, ", depth: 1, branches: 3, breadth: 1")(puzzle="p")
    assert out.ok, out.error
    assert out.thoughts == ["root/0"]
    failed = [rec for rec in out.trace if rec.error]
    assert [(rec.predictor, rec.attempt) for rec in failed] == [("solve.expand", 1), ("solve.expand", 2),
                                                                 ("solve.evaluate", 1), ("solve.evaluate", 2)]


def test_when_every_expansion_fails_the_row_fails_with_a_recorded_error(write_pipe):
    def rule(request):
        if role(request) == "expand" and path_of(request):
            return ""                                    # depth 2 never parses
        return tree_rule(request)
    lm = pipec.ScriptedLM(rule=rule)
    out = load(write_pipe, lm, ", branches: 2")(puzzle="p")
    assert not out.ok
    assert "no thought at depth 2 could be used" in out.error
    assert not any(role(r) == "answer" for r in lm.requests)


def test_an_answer_that_does_not_parse_fails_the_row(write_pipe):
    def rule(request):
        return "" if role(request) == "answer" else tree_rule(request)
    out = load(write_pipe, pipec.ScriptedLM(rule=rule), ", depth: 1, branches: 1")(puzzle="p")
    assert not out.ok and "did not parse" in out.error
    assert out.trace[-1].predictor == "solve.answer" and out.trace[-1].attempt == 2


@pytest.mark.parametrize("opts, message", [
    (", depth: 0", "option 'depth' of TreeOfThought module solve must be at least 1"),
    (", branches: 0", "option 'branches' of TreeOfThought module solve must be at least 1"),
    (", breadth: 1.5", "option 'breadth' of TreeOfThought module solve must be an integer"),
    (", evaluations: 0", "option 'evaluations' of TreeOfThought module solve must be at least 1"),
    (', value: "vote"', "option 'value' of TreeOfThought module solve must be one of: label, number"),
    (", sample_temperature: -1", "option 'sample_temperature' of TreeOfThought module solve must be at least 0"),
    (", width: 2", "unknown option 'width' for TreeOfThought module solve"),
])
def test_bad_options_are_rejected_when_loading(write_pipe, opts, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), opts)
    assert message in str(err.value)


def test_a_signature_field_named_thoughts_is_rejected(write_pipe):
    src = PIPE.replace("out answer: str", "out answer: str out thoughts: str").replace("{opts}", "")
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src), lm=pipec.ScriptedLM([]), cache=False)
    assert "TreeOfThought adds an output named 'thoughts'" in str(err.value)


def test_bootstrap_fewshot_gives_every_inner_predictor_demos(write_pipe):
    def rule(request):
        r = role(request)
        if r == "answer":
            return {"answer": first_user_value(request, "puzzle").upper()}
        return tree_rule(request)
    lm = pipec.ScriptedLM(rule=rule)
    prog = load(write_pipe, lm, ", depth: 1, branches: 2, breadth: 1")
    rows = [{"puzzle": w, "answer": w.upper()} for w in ["ab", "cd", "ef", "gh", "ij"]]
    compiled = prog.compile(trainset=rows[:3], valset=rows[3:], metric="exact_match(answer)",
                            optimizer="bootstrap_fewshot", options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"solve.expand", "solve.evaluate", "solve.answer"}
    for name in params:
        assert len(params[name].demos) == 2, name
    assert params["solve.expand"].demos[0]["thought"].startswith("root/")
    assert params["solve.evaluate"].demos[0]["value"] in ("sure", "likely", "impossible")
    assert params["solve.answer"].demos[0]["path"] and params["solve.answer"].demos[0]["answer"].isupper()


@pytest.mark.e2e
def test_example_runs_on_the_embedded_model_through_the_cli(tmp_path):
    result = run_example("tree_of_thought.pipe", tmp_path,
                         "question=I have 3 red and 5 blue marbles. How many marbles do I have?", trace=True)
    assert isinstance(result["outputs"]["answer"], str)
    assert 1 <= len(result["outputs"]["thoughts"]) <= 2
    assert 3 <= len(result["trace"]) <= 18           # max_calls of the example
