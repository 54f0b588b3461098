"""GraphOfThoughts: a declared chain of operations (generate, score, keep, aggregate, refine) over
thoughts, checked statically, with an exact worst-case call bound.

Scripted LMs tell the parts apart by their system messages; a generated thought is named after its
parent and sample (`root.g1`, `root.g1.g0`), a merged one lists what it merged (`agg(a+b)#0`), and a
refinement adds a `'`, so the graph can be followed exactly.
"""
from __future__ import annotations

import json
import time

import pytest
from conftest import SlowLM, first_user_value, system_of, run_example

import pipec
from pipec.inspection import inspect_program
from pipec.lm.base import LMError

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

PIPE = """
    signature Merge { "Summarize the notes." in notes: str out summary: str }
    module m = GraphOfThoughts(Merge{opts})
    pipeline p(notes: str) -> (summary, thoughts: list[str]) {
        r = m(notes: notes)
        return summary = r.summary, thoughts = r.thoughts
    }
"""
OPS = ", ops: [{generate: 3}, score, {keep: 2}, aggregate, {refine: 2}]"


def load(write_pipe, lm, opts=OPS):
    return pipec.load(write_pipe(PIPE.replace("{opts}", opts)), lm=lm, cache=False)


def role(request) -> str:
    system = system_of(request)
    for marker, name in (("When a thought to build on is given", "generate"), ("merge them into one thought", "aggregate"),
                         ("Improve the thought given", "refine"), ("Build the answer on the thought given", "answer")):
        if marker in system:
            return name
    assert system.startswith(("Judge whether this thought", "Rate how surely")), system
    return "score"


def label(thought: str) -> str:
    """`.g1` thoughts are sure, `.g0` likely, the rest impossible."""
    return "sure" if thought.endswith("g1") else "likely" if thought.endswith("g0") else "impossible"


def graph_rule(request):
    r = role(request)
    if r == "generate":
        return {"thought": f"{first_user_value(request, 'parent') or 'root'}.g{request.sample}"}
    if r == "score":
        return {"value": label(first_user_value(request, "thought"))}
    if r == "aggregate":
        return {"thought": f"agg({'+'.join(json.loads(first_user_value(request, 'thoughts')))})#{request.sample}"}
    if r == "refine":
        return {"thought": first_user_value(request, "draft") + "'"}
    return {"summary": "from " + first_user_value(request, "thought")}


def test_the_operations_run_in_order_and_build_a_graph_of_thoughts(write_pipe):
    lm = pipec.ScriptedLM(rule=graph_rule)
    prog = load(write_pipe, lm)
    pred = prog(notes="sales up")
    assert pred.ok, pred.error
    assert [role(r) for r in lm.requests] == ["generate"] * 3 + ["score"] * 3 + ["aggregate", "refine", "refine",
                                                                                 "answer"]
    gen, score, (agg, ref1, ref2, _) = lm.requests[:3], lm.requests[3:6], lm.requests[6:]
    # generate: three samples from the task itself, at the sample temperature
    assert [r.sample for r in gen] == [0, 1, 2] and all(r.params["temperature"] == 0.7 for r in gen)
    assert gen[0].messages[-1]["content"] == "notes: sales up\nparent: "
    # score: each thought once, at the module's own settings
    assert [first_user_value(r, "thought") for r in score] == ["root.g0", "root.g1", "root.g2"]
    assert all(r.sample == 0 and "temperature" not in r.params for r in score)
    # keep 2 by score (g1 sure, g0 likely), and aggregate merges them, best first
    assert json.loads(first_user_value(agg, "thoughts")) == ["root.g1", "root.g0"]
    # refine loops on the merged thought; the answer is built on the last refinement
    assert first_user_value(ref1, "draft") == "agg(root.g1+root.g0)#0"
    assert first_user_value(ref2, "draft") == "agg(root.g1+root.g0)#0'"
    assert pred.summary == "from agg(root.g1+root.g0)#0''"
    assert pred.thoughts == [
        "t1 = generate(task), score 1: root.g0",
        "t2 = generate(task), score 20: root.g1",
        "t3 = generate(task), score 0.001: root.g2",
        "t4 = aggregate(t2, t1): agg(root.g1+root.g0)#0",
        "t5 = refine(t4): agg(root.g1+root.g0)#0'",
        "t6 = refine(t5), answered: agg(root.g1+root.g0)#0''",
    ]
    assert {r.predictor for r in pred.trace} == {"m.generate", "m.score", "m.aggregate", "m.refine", "m.answer"}
    assert prog.modules["m"].max_calls() == 2 * (3 + 3 + 1 + 2 + 1)


def test_generate_grows_every_thought_repeats_are_one_thought_and_refine_stops_at_a_fixed_point(write_pipe):
    def rule(request):
        r = role(request)
        if r == "generate" and first_user_value(request, "parent") == "root.g1":
            return {"thought": "same"}                     # both samples: one thought
        if r == "refine" and first_user_value(request, "draft").endswith("'"):
            return {"thought": first_user_value(request, "draft")}      # nothing left to improve
        return graph_rule(request)
    lm = pipec.ScriptedLM(rule=rule)
    pred = load(write_pipe, lm, ", ops: [{generate: 2}, {generate: 2}, {refine: 3}]")(notes="n")
    assert pred.ok, pred.error
    assert [first_user_value(r, "parent") for r in lm.requests if role(r) == "generate"] == \
        ["", "", "root.g0", "root.g0", "root.g1", "root.g1"]
    refined = [first_user_value(r, "draft") for r in lm.requests if role(r) == "refine"]
    assert refined == ["root.g0.g0", "root.g0.g0'", "root.g0.g1", "root.g0.g1'", "same", "same'"]
    # no score: the answer is built on the first thought of the final frontier
    assert pred.summary == "from root.g0.g0'"
    assert pred.thoughts[2:5] == ["t3 = generate(t1): root.g0.g0", "t4 = generate(t1): root.g0.g1",
                                  "t5 = generate(t2): same"]
    assert pred.thoughts[5:] == ["t6 = refine(t3), answered: root.g0.g0'", "t7 = refine(t4): root.g0.g1'",
                                 "t8 = refine(t5): same'"]


def test_repeated_scores_are_summed_on_the_number_scale_and_clamped(write_pipe):
    values = {"root.g0": [3.0, 0.0, 0.0], "root.g1": [0.5, 0.5, 0.5]}     # 3.0 counts as 1: 1.0 < 1.5

    def rule(request):
        if role(request) == "score":
            return {"value": values[first_user_value(request, "thought")][request.sample]}
        return graph_rule(request)
    lm = pipec.ScriptedLM(rule=rule)
    prog = load(write_pipe, lm, ', ops: [{generate: 2}, {score: 3}, {keep: 1}], value: "number", '
                                'sample_temperature: 1.1')
    pred = prog(notes="n")
    assert pred.summary == "from root.g1"
    scores = [r for r in lm.requests if role(r) == "score"]
    assert "from 0 (cannot lead to a correct answer) to 1" in system_of(scores[0])
    assert [r.sample for r in scores] == [0, 1, 2, 0, 1, 2] and {r.params["temperature"] for r in scores} == {1.1}
    assert pred.thoughts == ["t1 = generate(task), score 1: root.g0", "t2 = generate(task), score 1.5, answered: root.g1"]
    assert prog.modules["m"].max_calls() == 2 * (2 + 6 + 1)


def test_only_the_parts_the_operations_use_are_predictors(write_pipe):
    prog = load(write_pipe, pipec.ScriptedLM([]), ", ops: [{generate: 2}, score, {keep: 1}]")
    assert [p.name for p in prog.modules["m"].predictors()] == ["m.generate", "m.score", "m.answer"]
    sites = inspect_program(prog)["calls"]
    assert [p["predictor"] for p in sites[0]["predictors"]] == ["m.generate", "m.score", "m.answer"]


def test_the_default_operations(write_pipe):
    lm = pipec.ScriptedLM(rule=graph_rule)
    pred = load(write_pipe, lm, "")(notes="n")
    assert pred.ok and [role(r) for r in lm.requests] == ["generate"] * 3 + ["score"] * 3 + \
        ["aggregate", "refine", "answer"]


def test_failed_generations_are_dropped_failed_scores_count_zero_failed_refinements_keep_the_draft(write_pipe):
    def rule(request):
        r = role(request)
        if r == "generate" and request.sample == 1:
            return ""                                            # never parses: dropped
        if r == "score" and first_user_value(request, "thought") == "root.g0":
            return LMError("provider down")                      # valued 0
        if r == "refine":
            return ""                                            # never parses: keeps its draft
        return graph_rule(request)
    pred = load(write_pipe, pipec.ScriptedLM(rule=rule))(notes="n")
    assert pred.ok, pred.error
    assert pred.thoughts == ["t1 = generate(task), score 0: root.g0", "t2 = generate(task), score 0.001: root.g2",
                             "t3 = aggregate(t2, t1), answered: agg(root.g2+root.g0)#0"]
    assert [(r.predictor, r.attempt) for r in pred.trace if r.error] == \
        [("m.generate", 1), ("m.generate", 2), ("m.score", 1), ("m.refine", 1), ("m.refine", 2)]


def test_when_every_aggregate_sample_fails_the_best_thoughts_go_on_within_the_bound(write_pipe):
    def rule(request):
        return "" if role(request) == "aggregate" else graph_rule(request)
    lm = pipec.ScriptedLM(rule=rule)
    pred = load(write_pipe, lm, ", ops: [{generate: 3}, score, {keep: 3}, {aggregate: 2}, refine]")(notes="n")
    assert pred.ok, pred.error
    # the two best of the three (the aggregate's count) are refined; nothing wider than the bound counted
    assert [first_user_value(r, "draft") for r in lm.requests if role(r) == "refine"] == ["root.g1", "root.g0"]
    assert pred.summary == "from root.g1'"


def test_when_every_generation_fails_the_call_fails_cleanly(write_pipe):
    def rule(request):
        if role(request) == "generate" and first_user_value(request, "parent"):
            return ""
        return graph_rule(request)
    lm = pipec.ScriptedLM(rule=rule)
    pred = load(write_pipe, lm, ", ops: [{generate: 2}, generate]")(notes="n")
    assert not pred.ok and "no thought could be used from operation 2 (generate)" in pred.error
    assert not any(role(r) == "answer" for r in lm.requests)


def test_an_answer_that_does_not_parse_fails_the_call(write_pipe):
    pred = load(write_pipe, pipec.ScriptedLM(rule=lambda r: "" if role(r) == "answer" else graph_rule(r)),
                ", ops: [generate]")(notes="n")
    assert not pred.ok and "did not parse" in pred.error
    assert pred.trace[-1].predictor == "m.answer" and pred.trace[-1].attempt == 2


def retry_everything(rule):
    """The worst case: every first reply is empty (unparseable); the retry gets the real answer."""
    def wrapped(request):
        if request.messages[-1]["content"].startswith("Your reply could not be used"):
            return rule(request)
        return ""
    return wrapped


@pytest.mark.parametrize("opts, calls", [
    (OPS, 10),
    (", ops: [{generate: 2}, {generate: 3}, {score: 2}, {keep: 4}, {aggregate: 2}, {refine: 2}, score]", 2 + 6 + 12 + 2 + 4 + 2 + 1),
    (", ops: [generate]", 2),
])
def test_max_calls_is_the_calls_made_in_the_worst_case(write_pipe, opts, calls):
    lm = pipec.ScriptedLM(rule=retry_everything(graph_rule))
    prog = load(write_pipe, lm, opts)
    assert prog(notes="n").ok
    assert len(lm.requests) == prog.modules["m"].max_calls() == inspect_program(prog)["max_lm_calls"] == 2 * calls


def test_generations_and_scores_run_in_parallel(write_pipe):
    lm = SlowLM(rule=graph_rule, delay=0.2)
    prog = load(write_pipe, lm, ", ops: [{generate: 4}, score, {keep: 1}]")
    start = time.perf_counter()
    assert prog(notes="n").ok
    assert lm.max_in_flight == 4 and time.perf_counter() - start < 0.2 * 5


@pytest.mark.parametrize("opts, message", [
    (", ops: []", "option 'ops' of GraphOfThoughts module m: needs at least one operation"),
    (', ops: "generate"', "option 'ops' of GraphOfThoughts module m must be a list"),
    (", ops: [score]", "the first operation is 'score', but only generate makes thoughts from the task"),
    (", ops: [{generate: 3}, {keep: 1}]", "operation 2 ('keep') ranks thoughts that no score has valued"),
    (", ops: [{generate: 3}, score, aggregate, {keep: 1}]", "operation 4 ('keep') ranks thoughts that no score"),
    (", ops: [generate, aggregate]", "operation 2 ('aggregate') merges thoughts, but at most one thought reaches it"),
    (", ops: [{generate: 3}, score, {keep: 1}, aggregate]", "operation 4 ('aggregate') merges thoughts"),
    (", ops: [{generate: 0}]", "the count of operation 1 ('generate') must be a whole number of at least 1"),
    (", ops: [{generate: 2.5}]", "the count of operation 1 ('generate') must be a whole number"),
    (", ops: [generat]", "operation 1 ('generat') is not an operation"),
    (", ops: [{generate: 2, score: 1}]", "operation 1 is not an operation name or a one-entry record"),
    (", ops: [generate, keep]", "operation 2 ('keep') needs a count"),
    (', value: "vote"', "option 'value' of GraphOfThoughts module m must be one of: label, number"),
    (", sample_temperature: -1", "option 'sample_temperature' of GraphOfThoughts module m must be at least 0"),
])
def test_bad_options_are_rejected_when_loading(write_pipe, opts, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), opts)
    assert message in str(err.value)


def test_a_misspelt_operation_gets_a_hint(write_pipe):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), ", ops: [{generat: 2}]")
    assert "did you mean 'generate'?" in str(err.value)


def test_bootstrap_fewshot_gives_every_part_demos(write_pipe):
    def rule(request):
        if role(request) == "answer":
            return {"summary": first_user_value(request, "notes").upper()}
        return graph_rule(request)
    prog = load(write_pipe, pipec.ScriptedLM(rule=rule), ", ops: [{generate: 2}, score, {keep: 2}, aggregate, refine]")
    rows = [{"notes": w, "summary": w.upper()} for w in ["ab", "cd", "ef", "gh", "ij"]]
    compiled = prog.compile(trainset=rows[:3], valset=rows[3:], metric="exact_match(summary)",
                            optimizer="bootstrap_fewshot", options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"m.generate", "m.score", "m.aggregate", "m.refine", "m.answer"}
    assert all(len(params[n].demos) == 2 for n in params)
    assert params["m.aggregate"].demos[0]["thoughts"] == ["root.g1", "root.g0"]
    assert params["m.refine"].demos[0]["thought"].endswith("'")


@pytest.mark.e2e
def test_example_runs_on_the_embedded_model_through_the_cli(tmp_path):
    result = run_example("graph_of_thoughts.pipe", tmp_path,
                         "notes=Q3 sales rose 8%. Costs rose 12%. Two new stores opened.", trace=True)
    assert isinstance(result["outputs"]["summary"], str)
    assert any("answered" in t for t in result["outputs"]["thoughts"])
    assert 2 <= len(result["trace"]) <= 18           # max_calls of the example
