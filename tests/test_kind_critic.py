"""CRITIC: answer, verify with tools (ReAct's steps), critique from the evidence, correct; stop once
verified (Gou et al. 2024).

Scripted LMs tell the parts apart by the reply schema's keys, and the first answer from the
correction by the draft in its prompt; tools are a small Python module written beside the .pipe file."""
from __future__ import annotations

import sys

import pytest
from conftest import first_user_value, system_of, first_tries_unparsable

import pipec
from pipec.modules.critic import CORRECT, VERIFY

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TOOLS = '''
CALLS = []

def search(query):
    """Passages about the query."""
    CALLS.append(("search", query))
    if "offline" in query:
        raise RuntimeError("index offline")
    return ["Gustave Eiffel was born in 1832.", "The Eiffel Tower opened in 1889."]

def calculate(expression):
    """Evaluate arithmetic."""
    CALLS.append(("calculate", expression))
    return eval(expression, {"__builtins__": {}})   # test-only
'''
PIPE = """
    signature Answer {{
        "Answer the question."
        in  question: str
        out answer: str
    }}
    tool search(query: str) -> list[str] = python("{m}:search")
    tool calculate(expression: str) -> float = python("{m}:calculate")
    module check = CRITIC(Answer, tools: [search, calculate]{opts})
    pipeline p(question: str) -> (answer, critiques: list[str]) {{
        r = check(question: question)
        return answer = r.answer, critiques = r.critiques
    }}
"""
QUESTION = "How many years after Eiffel was born did the tower open?"


def part(request) -> str:
    keys = list(request.schema["properties"])
    if keys == ["thought", "action", "action_input"]:
        return "verify"
    if keys == ["critique", "verified"]:
        return "critique"
    return "correct" if CORRECT in system_of(request) else "answer"


def step(action, arg=None, thought="checking"):
    return {"thought": thought, "action": action, "action_input": arg}


class Script:
    """Replies per part from lists: `answers` (the first answer, then corrections), `steps` (verify steps),
    `critiques` as (text, verified). "garbage" does not parse; a retry gets its call's first reply."""

    def __init__(self, answers, steps=(), critiques=()):
        self.queues = {"answer": list(answers), "verify": list(steps), "critique": list(critiques)}
        self.last: dict[str, object] = {}

    def __call__(self, request):
        which = part(request)
        queue = "answer" if which == "correct" else which
        if not request.messages[-1]["content"].startswith("Your reply could not be used"):
            self.last[queue] = self.queues[queue].pop(0)
        reply = self.last[queue]
        if reply == "garbage":
            return "{}"
        if queue == "answer":
            return {"answer": reply}
        if queue == "critique":
            return {"critique": reply[0], "verified": reply[1]}
        return reply


@pytest.fixture
def make(write_pipe, tool_module):
    """make(lm, opts="") -> (program, tool module)."""
    def build(lm, opts=""):
        name = tool_module(TOOLS)
        prog = pipec.load(write_pipe(PIPE.format(m=name, opts=f", {opts}" if opts else "")), lm=lm, cache=False)
        prog.tool("search")                 # the tool module as pipec imports it, to read its calls
        return prog, sys.modules[name]
    return build


def predictors(pred) -> list[str]:
    return [r.predictor for r in pred.trace]


# ---------------------------------------------------------------------------- control flow
def test_verify_with_tools_critique_correct_then_stop_once_verified(make):
    lm = pipec.ScriptedLM(rule=Script(
        ["47", "57"],
        [step("search", "Eiffel born"), step("calculate", "1889 - 1832"), step("finish"),
         step("calculate", "1889 - 1832"), step("finish")],
        [("The evidence gives 1889 - 1832 = 57, not 47.", False), ("57 matches the evidence.", True)]))
    prog, tools = make(lm)
    pred = prog(question=QUESTION)
    assert pred.ok, pred.error
    assert pred.outputs() == {"answer": "57", "critiques": ["The evidence gives 1889 - 1832 = 57, not 47.",
                                                            "57 matches the evidence."]}
    assert predictors(pred) == ["check.answer", "check.verify", "search", "check.verify", "calculate", "check.verify",
                                "check.critique", "check.correct",
                                "check.verify", "calculate", "check.verify", "check.critique"]
    assert tools.CALLS == [("search", "Eiffel born"), ("calculate", "1889 - 1832"), ("calculate", "1889 - 1832")]
    answer, verify1, verify2, _, critique, correct, verify4, *_ = lm.requests
    assert answer.messages[-1]["content"] == f"question: {QUESTION}"
    # The verify steps see the inputs, the answer under scrutiny and the evidence so far.
    assert VERIFY in system_of(verify1) and "- search(query: str) -> list[str]: Passages about the query." \
        in system_of(verify1)
    assert verify1.messages[-1]["content"] == f"question: {QUESTION}\nanswer: 47\ntrajectory: (no steps yet)"
    assert "Observation 1: [\"Gustave Eiffel was born in 1832.\"" in verify2.messages[-1]["content"]
    # The critique reads the evidence; the correction sees the draft, the evidence and the critique.
    assert "Observation 2: 57" in critique.messages[-1]["content"]
    assert first_user_value(correct, "draft_answer") == "47"
    assert "Observation 2: 57" in correct.messages[-1]["content"]
    assert correct.messages[-1]["content"].endswith("critique: The evidence gives 1889 - 1832 = 57, not 47.")
    assert list(correct.schema["properties"]) == ["answer"]
    # The second round verifies the corrected answer afresh.
    assert verify4.messages[-1]["content"] == f"question: {QUESTION}\nanswer: 57\ntrajectory: (no steps yet)"


def test_an_answer_verified_in_the_first_round_is_kept(make):
    lm = pipec.ScriptedLM(rule=Script(["57"], [step("calculate", "1889 - 1832"), step("finish")],
                                      [("Confirmed.", True)]))
    prog, _ = make(lm)
    pred = prog(question=QUESTION)
    assert pred.outputs() == {"answer": "57", "critiques": ["Confirmed."]}
    assert "check.correct" not in predictors(pred)


def test_max_checks_bounds_the_tool_calls_of_one_verification(make):
    lm = pipec.ScriptedLM(rule=Script(["47", "57"], [step("search", f"q{i}") for i in range(9)],
                                      [("wrong", False), ("right", True)]))
    prog, tools = make(lm, "max_checks: 2")
    pred = prog(question="q")
    assert [c[1] for c in tools.CALLS] == ["q0", "q1", "q2", "q3"]      # two per round
    assert predictors(pred)[:6] == ["check.answer", "check.verify", "search", "check.verify", "search",
                                    "check.critique"]


def test_max_rounds_bounds_the_corrections(make):
    lm = pipec.ScriptedLM(rule=Script(["1", "2", "3", "4"], [step("finish")] * 5, [("wrong", False)] * 5))
    prog, _ = make(lm, "max_rounds: 3")
    pred = prog(question="q")
    assert pred.answer == "4" and pred.critiques == ["wrong"] * 3       # the last correction is returned
    assert predictors(pred).count("check.correct") == 3


def test_a_correction_that_changes_nothing_ends_the_rounds(make):
    lm = pipec.ScriptedLM(rule=Script(["47", "47"], [step("finish")] * 3, [("unsure", False)] * 3))
    prog, _ = make(lm, "max_rounds: 3")
    pred = prog(question="q")
    assert pred.answer == "47" and pred.critiques == ["unsure"]
    assert predictors(pred)[-1] == "check.correct"


@pytest.mark.parametrize("opts, expected", [("", 2 * (1 + 2 * (3 + 2))), ("max_rounds: 1, max_checks: 1", 8),
                                            ("max_rounds: 3, max_checks: 2", 2 * (1 + 3 * 4))])
def test_max_calls_is_the_worst_case_and_is_reached(make, opts, expected):
    def answer(request, n):
        which = part(request)
        if which == "verify":
            return step("calculate", f"{n} + 1")
        if which == "critique":
            return {"critique": "wrong", "verified": False}
        return {"answer": f"a{n}"}
    lm = pipec.ScriptedLM(rule=first_tries_unparsable(answer))
    prog, _ = make(lm, opts)
    pred = prog(question="q")
    assert pred.ok, pred.error
    assert prog.modules["check"].max_calls() == expected == len(lm.requests) == pred.lm_calls


# ---------------------------------------------------------------------------- bad replies and tools
def test_a_failing_tool_is_evidence_not_a_failure(make):
    lm = pipec.ScriptedLM(rule=Script(["47"], [step("search", "offline index"), step("finish")],
                                      [("Could not check.", True)]))
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.ok and pred.answer == "47"
    assert "Observation 1: error: tool search raised RuntimeError: index offline" in \
        lm.requests[2].messages[-1]["content"]


def test_unreadable_verify_steps_end_the_verification_and_the_critique_still_comes(make):
    lm = pipec.ScriptedLM(rule=Script(["47"], ["garbage"], [("Nothing checked; looks plausible.", True)]))
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.ok and pred.critiques == ["Nothing checked; looks plausible."]
    assert predictors(pred) == ["check.answer", "check.verify", "check.verify", "check.critique"]


def test_an_unreadable_critique_or_correction_keeps_the_latest_answer(make):
    lm = pipec.ScriptedLM(rule=Script(["47"], [step("finish")], ["garbage"]))
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.ok and pred.outputs() == {"answer": "47", "critiques": []}

    lm = pipec.ScriptedLM(rule=Script(["47", "garbage"], [step("finish")], [("wrong", False)]))
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.ok and pred.outputs() == {"answer": "47", "critiques": ["wrong"]}
    assert predictors(pred)[-2:] == ["check.correct", "check.correct"]


def test_an_unreadable_first_answer_is_a_recorded_failure(make):
    prog, _ = make(pipec.ScriptedLM(rule=Script(["garbage"])))
    pred = prog(question="q")
    assert not pred.ok and pred.error.startswith("r (check): reply did not parse, even after a retry")


# ---------------------------------------------------------------------------- static checks and parts
@pytest.mark.parametrize("module_line, message", [
    ("CRITIC(Answer)", "CRITIC module check needs a `tools` option naming the tools it may call"),
    ("CRITIC(Answer, tools: [search, search])", "CRITIC module check names tool search more than once"),
    ("CRITIC(Answer, tools: [search], max_rounds: 0)", "option 'max_rounds' of CRITIC module check must be at least 1"),
    ("CRITIC(Answer, tools: [search], max_checks: 0)", "option 'max_checks' of CRITIC module check must be at least 1"),
    ("CRITIC(Answer, tools: [nosuch])", "unknown tool 'nosuch'"),
])
def test_bad_options_are_load_errors(write_pipe, tool_module, module_line, message):
    name = tool_module(TOOLS)
    src = PIPE.format(m=name, opts="").replace("CRITIC(Answer, tools: [search, calculate])", module_line)
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src), lm=pipec.ScriptedLM(), cache=False)
    assert message in str(err.value)


@pytest.mark.parametrize("field", ["out thought: str", "in action: str", "out trajectory: str"])
def test_signature_fields_the_verify_steps_use_are_refused(write_pipe, tool_module, field):
    name = tool_module(TOOLS)
    src = PIPE.format(m=name, opts="").replace("out answer: str", f"out answer: str\n        {field}")
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src), lm=pipec.ScriptedLM(), cache=False)
    assert f"'{field.split()[1].rstrip(':')}'" in str(err.value) and "CRITIC" in str(err.value)
    assert "ReAct" not in str(err.value)


def test_parts_are_named_after_the_module_and_can_be_set_and_pinned(make):
    lm = pipec.ScriptedLM(rule=Script(["57"], [step("finish")], [("fine", True)]))
    prog, _ = make(lm, 'parts: {critique: {instruction: "Be strict."}}, pin: [instruction]')
    assert set(prog.predictors()) == {"check.answer", "check.verify", "check.critique", "check.correct"}
    assert all(p.pinned == {"instruction"} for p in prog.predictors().values())
    prog(question="q")
    critique = next(r for r in lm.requests if part(r) == "critique")
    assert system_of(critique).startswith("Be strict.")


def test_bootstrap_gives_every_part_demos(make):
    rows = [{"question": f"q{i}", "answer": f"A{i}"} for i in range(6)]

    def solver(request):
        which = part(request)
        text = request.messages[-1]["content"]
        q = text.splitlines()[0].removeprefix("question: ")
        if which == "answer":
            return {"answer": "draft"}
        if which == "verify":
            return step("finish") if "Observation" in text else step("search", q)
        if which == "critique":
            ok = "answer: draft" not in text
            return {"critique": "fine" if ok else "the evidence disagrees", "verified": ok}
        return {"answer": "A" + q[1:]}
    prog, _ = make(pipec.ScriptedLM(rule=solver))
    compiled = prog.compile(rows[:4], rows[4:], "exact_match(answer)", "bootstrap_fewshot", budget=400,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert {n: len(params[n].demos) for n in params} == \
        {"check.answer": 2, "check.verify": 2, "check.critique": 2, "check.correct": 2}
    assert set(params["check.correct"].demos[0]) == {"question", "draft_answer", "trajectory", "critique", "answer"}
