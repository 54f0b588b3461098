"""ToolMaker (LATM, Cai et al. 2023): the maker writes a tool from the demos, verified in the sandbox,
retried at most `max_attempts` times; the use part writes one call, which the sandbox runs; the
tool's source is the `M.tool` part's instruction, so params (and a saved artifact) carry it."""
from __future__ import annotations

import json

import pytest

import pipec
import pipec.sandbox
from pipec.prompt import retry_message

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model", "sandbox_or_weaker")
_STATUS = pipec.sandbox.sandbox_status()


@pytest.fixture
def sandbox_or_weaker(monkeypatch):
    if not (_STATUS.ok and _STATUS.mode == "bwrap"):
        monkeypatch.setenv("PIPEC_SANDBOX", "process")


SRC = """
    signature Mul {
        "Multiply the two numbers in the question."
        in  question: str
        out answer: int
    }
    module m = ToolMaker(Mul OPTIONS, demos: [{question: "3 times 4", answer: 12}, {question: "5 times 6", answer: 30}])
    pipeline p(question: str) -> (answer, tool, call) {
        r = m(question: question)
        return answer = r.answer, tool = r.tool, call = r.call
    }
"""
GOOD = {"tool": "def mul(a: int, b: int) -> int:\n    \"Product.\"\n    return a * b", "calls": ["mul(3, 4)", "mul(5, 6)"]}
WRONG = {"tool": "def mul(a, b):\n    return a + b", "calls": ["mul(3, 4)", "mul(5, 6)"]}


def part(request) -> str:
    system = request.messages[0]["content"]
    return "make" if "reusable Python tool" in system else "use" if "Write only the call" in system else "answer"


def load(write_pipe, replies, options=""):
    lm = pipec.ScriptedLM(replies=replies)
    return pipec.load(write_pipe(SRC.replace(" OPTIONS", options)), lm=lm, cache=False), lm


def test_the_tool_is_made_verified_in_the_sandbox_and_called(write_pipe):
    prog, lm = load(write_pipe, [GOOD, {"call": "mul(7, 8)"}])
    pred = prog(question="7 times 8")
    assert pred.ok, pred.error
    assert pred.answer == 56 and pred.call == "mul(7, 8)" and pred.tool == GOOD["tool"]
    assert [part(r) for r in lm.requests] == ["make", "use"]
    runs = [json.loads(r.raw) for r in pred.trace if r.predictor == "m.sandbox"]
    assert [r["value"] for r in runs] == [[12, 30], 56]           # verified on both demos, then run
    # the use part sees the tool's api and, as demos, the maker's verified calls
    assert "def mul(a: int, b: int) -> int:" in lm.requests[1].messages[-1]["content"]
    assert [d["call"] for d in prog.modules["m"].use.demos] == ["mul(3, 4)", "mul(5, 6)"]


def test_the_tool_is_cached_on_the_module(write_pipe):
    prog, lm = load(write_pipe, [GOOD, {"call": "mul(7, 8)"}, {"call": "mul(2, 9)"}])
    assert prog(question="7 times 8").answer == 56
    pred = prog(question="2 times 9")
    assert pred.answer == 18 and [part(r) for r in lm.requests] == ["make", "use", "use"]


def test_a_wrong_tool_goes_back_with_its_failure_and_is_replaced(write_pipe):
    prog, lm = load(write_pipe, [WRONG, GOOD, {"call": "mul(7, 8)"}])
    pred = prog(question="7 times 8")
    assert pred.ok and pred.answer == 56 and pred.tool == GOOD["tool"], pred.error
    assert [part(r) for r in lm.requests] == ["make", "make", "use"]
    feedback = lm.requests[1].messages[-1]["content"]
    assert "a + b" in feedback and "example 1: mul(3, 4) gave 7, expected 12" in feedback


def test_wrong_tools_are_dropped_after_max_attempts(write_pipe):
    prog, lm = load(write_pipe, [WRONG, WRONG, WRONG], ", max_attempts: 2")
    pred = prog(question="7 times 8")
    assert not pred.ok and "no tool passed the examples after 2 attempt(s)" in pred.error
    assert [part(r) for r in lm.requests] == ["make", "make"]
    assert prog.modules["m"].tool.instruction == ""                # nothing kept


def test_on_failure_answer_lets_the_lm_answer(write_pipe):
    prog, lm = load(write_pipe, [WRONG, {"answer": 56}], ", max_attempts: 1, on_failure: \"answer\"")
    pred = prog(question="7 times 8")
    assert pred.ok and pred.answer == 56 and pred.tool == "" and pred.call == ""
    assert [part(r) for r in lm.requests] == ["make", "answer"]


@pytest.mark.parametrize("options, expected", [("", 8), (", max_attempts: 1", 4), (", max_attempts: 5", 12)])
def test_max_calls_is_the_bound(write_pipe, options, expected):
    prog, _ = load(write_pipe, [], options)
    assert prog.modules["m"].max_calls() == expected


def test_the_worst_case_makes_exactly_max_calls(write_pipe):
    """Every reply first unparseable, the retries valid: attempts 1 and 2 wrong, attempt 3 right, then the call."""
    script = iter([WRONG, WRONG, GOOD, {"call": "mul(7, 8)"}])
    retry = retry_message("\0", []).split("\0")[0]

    def rule(request):
        return next(script) if request.messages[-1]["content"].startswith(retry) else "{}"
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(write_pipe(SRC.replace(" OPTIONS", "")), lm=lm, cache=False)
    pred = prog(question="7 times 8")
    assert pred.ok and pred.answer == 56, pred.error
    assert len(lm.requests) == pred.lm_calls == prog.modules["m"].max_calls() == 8


def test_the_tool_is_in_params_and_a_loaded_program_does_not_make_it_again(write_pipe):
    prog, lm = load(write_pipe, [GOOD, {"call": "mul(7, 8)"}])
    prog(question="7 times 8")
    params = prog.params()
    assert params["m.tool"].instruction == GOOD["tool"]
    state = json.loads(json.dumps({k: v.model_dump() for k, v in params.items()}))   # as an artifact stores it
    fresh, lm2 = load(write_pipe, [{"call": "mul(6, 7)"}])
    fresh.apply(state)
    pred = fresh(question="6 times 7")
    assert pred.ok and pred.answer == 42 and [part(r) for r in lm2.requests] == ["use"]


def test_a_tool_failing_on_an_input_fails_the_call(write_pipe):
    prog, _ = load(write_pipe, [GOOD, {"call": "mul(7)"}])
    pred = prog(question="7 times 8")
    assert not pred.ok and "the tool failed on this input" in pred.error and "TypeError" in pred.error


def test_without_a_sandbox_it_refuses(write_pipe, monkeypatch, tmp_path):
    monkeypatch.delenv("PIPEC_SANDBOX", raising=False)
    monkeypatch.setenv("PIPEC_BWRAP", str(tmp_path / "no-bwrap"))
    prog, lm = load(write_pipe, [GOOD, GOOD, GOOD])
    pred = prog(question="7 times 8")
    assert not pred.ok and "bubblewrap" in pred.error, pred.error
    assert len(lm.requests) == 1                                    # not retried: no fault of the tool


def test_clashing_field_names_are_caught(write_pipe):
    src = SRC.replace("out answer: int", "out call: int").replace("answer: 12", "call: 12").replace(
        "answer: 30", "call: 30").replace("answer = r.answer, ", "")
    with pytest.raises(Exception, match="field named 'call'"):
        pipec.load(write_pipe(src.replace(" OPTIONS", "").replace("-> (answer, ", "-> (")), lm=pipec.ScriptedLM(),
                   cache=False)


def test_the_maker_runs_on_its_own_lm(write_pipe):
    src = SRC.replace(" OPTIONS", ", maker: strong").replace("signature Mul", 'lm strong = "openai/gpt-4o"\n    signature Mul')
    prog = pipec.load(write_pipe(src), lm=pipec.ScriptedLM(), cache=False)
    m = prog.modules["m"]
    assert m.make.lm == "strong" and m.use.lm != "strong"
    assert [p.name for p in m.predictors()] == ["m.tool", "m.make", "m.use"]
    assert "instruction" in m.tool.pinned                           # no optimizer rewrites the tool's source
