"""Reflexion: attempt, evaluate (a check tool or the LM), reflect on a failure, attempt again with the
reflections in memory, per input or across a batch (Shinn et al. 2023)."""
from __future__ import annotations

import sys

import pytest
from conftest import SlowLM, first_user_value, system_of, first_tries_unparsable

import pipec
from pipec.modules.reflexion import OTHER_INPUT, REFLECT, RETRY

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

SIG = """
    signature Solve {
        "Answer the word problem."
        in  question: str
        out answer: str
    }
"""
PIPELINE = """
    module solve = Reflexion(Solve%s)
    pipeline p(question: str) -> (answer, reflections: list[str]) {
        s = solve(question: question)
        return answer = s.answer, reflections = s.reflections
    }
"""
TOOLS = """
    CALLS = []

    def is_twelve(question, answer):
        CALLS.append({"question": question, "answer": answer})
        return answer == "12"

    def closeness(answer):
        CALLS.append({"answer": answer})
        return {"a": 0.2, "b": 0.6, "c": 0.4, "d": 0.95}.get(answer, 0.0)

    def broken(answer):
        raise ValueError("no verdict today")

    def wordy(answer):
        return "fine"
"""


def part(request) -> str:
    keys = list(request.schema["properties"])
    if keys == ["feedback", "correct"]:
        return "evaluate"
    if keys == ["reflection"]:
        return "reflect"
    return "retry" if RETRY in system_of(request) else "answer"


class Script:
    """Attempts (answer and retry replies) in order; the LM evaluator says correct for the answers in
    `right`, or gives `evaluations` in order; reflections are `reflections` in order, or numbered.
    "garbage" does not parse, and a retry of a call gets the same reply as its first try."""

    def __init__(self, attempts, right=(), reflections=None, evaluations=None):
        self.queues = {"attempt": list(attempts), "evaluate": evaluations, "reflect": reflections}
        self.right = set(right)
        self.last: dict[str, object] = {}
        self.made = 0

    def next(self, which, request, default):
        if request.messages[-1]["content"].startswith("Your reply could not be used"):
            return self.last[which]
        queue = self.queues[which]
        self.last[which] = queue.pop(0) if queue is not None else default()
        return self.last[which]

    def __call__(self, request):
        which = part(request)
        if which in ("answer", "retry"):
            reply = self.next("attempt", request, None)
            return "{}" if reply == "garbage" else {"answer": reply}
        if which == "evaluate":
            answer = first_user_value(request, "answer")
            verdict = {"feedback": f"{answer} is {'right' if answer in self.right else 'wrong'}",
                       "correct": answer in self.right}
            return "{}" if self.next("evaluate", request, lambda: verdict) == "garbage" else verdict
        reply = self.next("reflect", request, self._lesson)
        return "{}" if reply == "garbage" else {"reflection": reply}

    def _lesson(self):
        self.made += 1
        return f"lesson {self.made}"


def pipe(write_pipe, options="", tools=""):
    return write_pipe(SIG + tools + PIPELINE % options)


def with_tool(write_pipe, tool_module, decl, options):
    mod = tool_module(TOOLS)
    name = decl.split("(")[0]
    path = pipe(write_pipe, options, f'\n    tool {decl} = python("{mod}:{name}")\n')
    return path, mod


def predictors(pred) -> list[str]:
    return [r.predictor for r in pred.trace]


# ---------------------------------------------------------------------------- control flow
def test_a_failed_attempt_is_reflected_on_and_the_retry_sees_the_reflection(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["7", "12"], right={"12"}))
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="3 boxes of 4 eggs: how many eggs?")
    assert pred.ok, pred.error
    assert pred.outputs() == {"answer": "12", "reflections": ["lesson 1"]}
    assert predictors(pred) == ["solve.answer", "solve.evaluate", "solve.reflection", "solve.retry", "solve.evaluate"]
    answer, evaluate, reflect, retry, evaluate2 = lm.requests
    assert answer.messages[-1]["content"] == "question: 3 boxes of 4 eggs: how many eggs?"
    # The evaluator sees the inputs and the attempt.
    assert evaluate.messages[-1]["content"] == "question: 3 boxes of 4 eggs: how many eggs?\nanswer: 7"
    # The reflection sees the attempt, what the evaluator said, and the memory so far.
    assert REFLECT in system_of(reflect)
    assert reflect.messages[-1]["content"] == ("question: 3 boxes of 4 eggs: how many eggs?\nanswer: 7\n"
                                               "evaluation: 7 is wrong\nreflections: (none)")
    # The retry answers from the inputs and the memory.
    assert retry.messages[-1]["content"] == "question: 3 boxes of 4 eggs: how many eggs?\nreflections: 1. lesson 1"
    assert list(retry.schema["properties"]) == ["answer"]
    assert first_user_value(evaluate2, "answer") == "12"


def test_max_trials_bounds_the_attempts_and_no_reflection_follows_the_last(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["1", "2", "3", "4"]))
    pred = pipec.load(pipe(write_pipe, ", max_trials: 3"), lm=lm, cache=False)(question="q")
    assert pred.ok and pred.answer == "3"                    # nothing passed: the latest attempt
    assert pred.reflections == ["lesson 1", "lesson 2"]
    assert predictors(pred) == ["solve.answer", "solve.evaluate", "solve.reflection",
                                "solve.retry", "solve.evaluate", "solve.reflection",
                                "solve.retry", "solve.evaluate"]
    assert first_user_value(lm.requests[6], "reflections") == "1. lesson 1"
    assert lm.requests[6].messages[-1]["content"].endswith("reflections: 1. lesson 1\n2. lesson 2")


def test_memory_size_bounds_what_an_attempt_is_shown(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["1", "2", "3", "4"]))
    pred = pipec.load(pipe(write_pipe, ", max_trials: 4, memory_size: 2"), lm=lm, cache=False)(question="q")
    assert pred.reflections == ["lesson 1", "lesson 2", "lesson 3"]     # the output keeps every one
    last_retry = [r for r in lm.requests if part(r) == "retry"][-1]
    assert last_retry.messages[-1]["content"].endswith("reflections: 1. lesson 2\n2. lesson 3")


@pytest.mark.parametrize("options, expected", [("", 2 * (3 + 3 + 2)), (", max_trials: 1", 4),
                                               (", max_trials: 4", 2 * (4 + 4 + 3))])
def test_max_calls_is_the_worst_case_and_is_reached(write_pipe, options, expected):
    def answer(request, n):
        which = part(request)
        if which == "evaluate":
            return {"feedback": "wrong", "correct": False}
        return {"reflection" if which == "reflect" else "answer": f"reply {n}"}
    lm = pipec.ScriptedLM(rule=first_tries_unparsable(answer))
    prog = pipec.load(pipe(write_pipe, options), lm=lm, cache=False)
    pred = prog(question="q")
    assert pred.ok, pred.error
    assert prog.modules["solve"].max_calls() == expected == len(lm.requests) == pred.lm_calls


# ---------------------------------------------------------------------------- check tools
def test_a_check_tool_is_the_evaluator_and_gets_the_fields_it_names(write_pipe, tool_module):
    path, mod = with_tool(write_pipe, tool_module, "is_twelve(question: str, answer: str) -> bool",
                          ", check: is_twelve")
    lm = pipec.ScriptedLM(rule=Script(["7", "12"]))
    prog = pipec.load(path, lm=lm, cache=False)
    pred = prog(question="3 x 4?")
    assert pred.ok and pred.outputs() == {"answer": "12", "reflections": ["lesson 1"]}
    assert sys.modules[mod].CALLS == [{"question": "3 x 4?", "answer": "7"}, {"question": "3 x 4?", "answer": "12"}]
    assert predictors(pred) == ["solve.answer", "is_twelve", "solve.reflection", "solve.retry", "is_twelve"]
    assert "solve.evaluate" not in prog.predictors()
    assert first_user_value(lm.requests[1], "evaluation") == "the check is_twelve returned false"
    assert prog.modules["solve"].max_calls() == 2 * (3 + 2)


def test_a_numeric_check_passes_at_the_threshold_and_the_best_attempt_wins(write_pipe, tool_module):
    path, _ = with_tool(write_pipe, tool_module, "closeness(answer: str) -> float",
                        ", check: closeness, threshold: 0.9")
    lm = pipec.ScriptedLM(rule=Script(["a", "b", "c"]))
    pred = pipec.load(path, lm=lm, cache=False)(question="q")
    assert pred.ok and pred.answer == "b"                    # 0.6 beats the later 0.4
    assert first_user_value(lm.requests[1], "evaluation") == "the check closeness scored 0.2 (below the 0.9 needed)"

    lm = pipec.ScriptedLM(rule=Script(["a", "d", "c"]))
    pred = pipec.load(path, lm=lm, cache=False)(question="q")
    assert pred.answer == "d" and predictors(pred)[-1] == "closeness" and len(pred.reflections) == 1


def test_a_check_tool_that_raises_fails_the_module(write_pipe, tool_module):
    path, _ = with_tool(write_pipe, tool_module, "broken(answer: str) -> bool", ", check: broken")
    pred = pipec.load(path, lm=pipec.ScriptedLM(rule=Script(["7"])), cache=False)(question="q")
    assert not pred.ok and pred.error == "s (solve): tool broken raised ValueError: no verdict today"


def test_a_check_that_returns_neither_a_verdict_nor_a_score_fails_the_module(write_pipe, tool_module):
    path, _ = with_tool(write_pipe, tool_module, "wordy(answer: str) -> bool", ", check: wordy")
    pred = pipec.load(path, lm=pipec.ScriptedLM(rule=Script(["7"])), cache=False)(question="q")
    assert not pred.ok and "tool wordy returned a value that does not fit its declared type" in pred.error


@pytest.mark.parametrize("decl, message", [
    ("is_twelve", "the check tool is_twelve of Reflexion module solve does not declare its parameters"),
    ("is_twelve(query: str, answer: str) -> bool", "parameter 'query' of the check tool is_twelve is not a field"),
    ("is_twelve(question: str) -> bool", "takes none of the outputs of Solve"),
    ("is_twelve(question: str, answer: int) -> bool", "parameter 'answer: int' of the check tool is_twelve does not "
                                                      "take the field 'answer: str'"),
    ("is_twelve(question: str, answer: str) -> str", "the check tool is_twelve of Reflexion module solve returns str"),
])
def test_the_check_tool_must_fit_the_signature(write_pipe, tool_module, decl, message):
    path, _ = with_tool(write_pipe, tool_module, decl, ", check: is_twelve")
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(path, lm=pipec.ScriptedLM(), cache=False)
    assert message in str(err.value)


# ---------------------------------------------------------------------------- memory across a batch
def test_batch_memory_carries_reflections_to_other_inputs(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["1", "2", "3", "4"], right={"4"}))
    prog = pipec.load(pipe(write_pipe, ', max_trials: 2, memory: "batch"'), lm=lm, cache=False)
    first, second = prog(question="first"), prog(question="second")
    assert first.reflections == ["lesson 1"] and second.reflections == ["lesson 2"]
    # The second input's first attempt already sees the first input's reflection, marked as such.
    assert predictors(second)[0] == "solve.retry"
    assert second.trace[0].messages[-1]["content"] == f"question: second\nreflections: 1. {OTHER_INPUT}lesson 1"
    # Its own reflection comes last (the latest), after the other input's.
    retry2 = second.trace[3]
    assert retry2.messages[-1]["content"].endswith(f"1. {OTHER_INPUT}lesson 1\n2. lesson 2")


def test_without_batch_memory_each_input_starts_empty(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["1", "2", "3", "4"]))
    prog = pipec.load(pipe(write_pipe, ", max_trials: 2"), lm=lm, cache=False)
    prog(question="first")
    second = prog(question="second")
    assert predictors(second)[0] == "solve.answer" and OTHER_INPUT not in str(second.trace[0].messages)


def test_an_inputs_own_reflections_come_before_other_inputs_in_a_full_memory(write_pipe):
    lm = pipec.ScriptedLM(rule=Script([str(i) for i in range(20)]))
    prog = pipec.load(pipe(write_pipe, ', max_trials: 3, memory: "batch", memory_size: 2'), lm=lm, cache=False)
    prog(question="first")                              # lessons 1, 2 in the shared memory
    second = prog(question="second")
    shown = [r.messages[-1]["content"].split("reflections: ")[1] for r in second.trace if r.predictor == "solve.retry"]
    assert shown == [f"1. {OTHER_INPUT}lesson 1\n2. {OTHER_INPUT}lesson 2",
                     f"1. {OTHER_INPUT}lesson 2\n2. lesson 3",
                     "1. lesson 3\n2. lesson 4"]
    assert len(prog.modules["solve"].shared) == 2       # bounded: the latest memory_size reflections


def test_batch_memory_is_shared_safely_by_concurrent_rows(write_pipe):
    lm = SlowLM(rule=Script([str(i) for i in range(200)]), delay=0.01)
    prog = pipec.load(pipe(write_pipe, ', max_trials: 3, memory: "batch", memory_size: 3'), lm=lm, cache=False)
    preds = prog.run_batch([{"question": f"q{i}"} for i in range(8)], concurrency=8)
    assert all(p.ok for p in preds), [p.error for p in preds if not p.ok]
    assert lm.max_in_flight > 1
    made = sorted(r for p in preds for r in p.reflections)
    assert len(made) == 16 and len(set(made)) == 16     # two per row, none lost or doubled
    kept = [text for _, text in prog.modules["solve"].shared]
    assert len(kept) == 3 and set(kept) <= set(made)    # bounded, whatever the interleaving


def test_a_compile_scores_each_candidate_on_an_empty_batch_memory(write_pipe):
    rows = [{"question": f"q{i}", "answer": "right"} for i in range(6)]
    lm = pipec.ScriptedLM(rule=Script(["right"] * 500, right={"right"}))
    prog = pipec.load(pipe(write_pipe, ', memory: "batch"'), lm=lm, cache=False)
    prog(question="warm-up")
    before = list(prog.modules["solve"].shared)
    compiled = prog.compile(rows[:4], rows[4:], "exact_match(answer)", "bootstrap_fewshot", budget=200,
                            options={"max_demos": 2, "max_labeled": 0})
    assert list(prog.modules["solve"].shared) == before          # the compile never touched this program's memory
    assert compiled.modules["solve"] is not prog.modules["solve"]


# ---------------------------------------------------------------------------- bad replies
def test_an_unreadable_first_attempt_fails_the_module(write_pipe):
    pred = pipec.load(pipe(write_pipe), lm=pipec.ScriptedLM(rule=Script(["garbage"])), cache=False)(question="q")
    assert not pred.ok and pred.error.startswith("s (solve): reply did not parse, even after a retry")


def test_an_unreadable_retry_keeps_the_best_earlier_attempt(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["7", "garbage"]))
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="q")
    assert pred.ok and pred.answer == "7" and pred.reflections == ["lesson 1"]
    assert predictors(pred)[-2:] == ["solve.retry", "solve.retry"]


def test_an_unreadable_evaluation_returns_the_attempt_it_judged(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["7", "8"], evaluations=["ok", "garbage"]))
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="q")
    assert pred.ok and pred.answer == "8"
    assert predictors(pred)[-2:] == ["solve.evaluate", "solve.evaluate"]


def test_an_unreadable_reflection_ends_the_trials(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["7", "8"], reflections=["garbage"]))
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="q")
    assert pred.ok and pred.answer == "7" and pred.reflections == []
    assert predictors(pred) == ["solve.answer", "solve.evaluate", "solve.reflection", "solve.reflection"]


# ---------------------------------------------------------------------------- options and parts
@pytest.mark.parametrize("options, message", [
    (", max_trials: 0", "option 'max_trials' of Reflexion module solve must be at least 1"),
    (', memory: "global"', "option 'memory' of Reflexion module solve must be one of: input, batch"),
    (", memory_size: 0", "option 'memory_size' of Reflexion module solve must be at least 1"),
    (", check: nosuch", "unknown tool 'nosuch'"),
])
def test_bad_options_are_load_errors(write_pipe, options, message):
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(), cache=False)
    assert message in str(err.value)


def test_written_demos_go_to_the_first_attempt(write_pipe):
    path = pipe(write_pipe, ', demos: [{question: "1 + 1?", answer: "2"}]')
    lm = pipec.ScriptedLM(rule=Script(["7", "12"], right={"12"}))
    prog = pipec.load(path, lm=lm, cache=False)
    prog(question="q")
    assert [m["content"] for m in lm.requests[0].messages[1:3]] == ["question: 1 + 1?", '{"answer": "2"}']
    assert prog.predictors()["solve.retry"].demos == []


def test_inner_fields_do_not_shadow_the_signatures(write_pipe):
    src = SIG.replace("in  question: str", "in  question: str\n        in  feedback: str") + \
        PIPELINE.replace("solve(question: question)", "solve(question: question, feedback: question)")
    lm = pipec.ScriptedLM(rule=lambda r: {"feedback_2": "no", "correct": True} if "feedback_2" in r.schema["properties"]
                          else {"answer": "1"})
    prog = pipec.load(write_pipe(src % ""), lm=lm, cache=False)
    assert prog(question="q").ok
    assert [n for n, _, _ in prog.predictors()["solve.evaluate"].outputs] == ["feedback_2", "correct"]
