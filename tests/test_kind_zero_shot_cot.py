"""ZeroShotCoT: reasoning after a trigger phrase, then answer extraction (Kojima et al.)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import system_of

import pipec
from pipec.inspection import inspect_program

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
ROOT = Path(__file__).resolve().parent.parent

SRC = """
    signature Word {
        "Solve the word problem."
        in  problem: str "a short word problem"
        out answer: int
    }
    module solve = ZeroShotCoT(Word, %s)
    pipeline p(problem: str) -> (answer, why: str) {
        s = solve(problem: problem)
        return answer = s.answer, why = s.reasoning
    }
"""


def pipe(write_pipe, options="max_tokens: 64"):
    return write_pipe(SRC % options)


def props(request) -> list[str]:
    return list(request.schema["properties"])


def rule(request):
    """Reasoning for the reasoning call; for the answer call, the number the reasoning ends with."""
    if props(request) == ["reasoning"]:
        return {"reasoning": "3 and 4 make 7, so 7"}
    last = request.messages[-1]["content"]
    reasoning = next(line for line in last.splitlines() if line.startswith("reasoning: "))
    return {"answer": int(reasoning.rsplit(" ", 1)[-1])}


def test_two_calls_reason_after_the_trigger_then_extract(write_pipe):
    lm = pipec.ScriptedLM(rule=rule)
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(problem="Tom has 3 apples and buys 4. How many?")
    assert pred.ok, pred.error
    assert pred.outputs() == {"answer": 7, "why": "3 and 4 make 7, so 7"}
    assert [r.predictor for r in pred.trace] == ["solve.reason", "solve.extract"]
    reason, extract = lm.requests
    # Stage 1: the prompt ends with the trigger phrase and asks only for the reasoning.
    assert reason.messages[-1]["content"] == "problem: Tom has 3 apples and buys 4. How many?\n\nLet's think step by step."
    assert props(reason) == ["reasoning"]
    assert system_of(reason).startswith("Solve the word problem.")
    # Stage 2: the answer call sees the inputs and the reasoning, ends with the answer trigger, asks for the outputs.
    assert extract.messages[-1]["content"] == ("problem: Tom has 3 apples and buys 4. How many?\n"
                                               "reasoning: 3 and 4 make 7, so 7\n\nTherefore, the answer is")
    assert props(extract) == ["answer"]
    assert "Let's think step by step." in system_of(extract)
    assert reason.params == extract.params == {"max_tokens": 64}


def test_trigger_options_reach_the_prompts(write_pipe):
    lm = pipec.ScriptedLM(rule=rule)
    path = pipe(write_pipe, 'trigger: "Let\'s work this out in a step by step way.", answer_trigger: "So the number is"')
    pipec.load(path, lm=lm, cache=False)(problem="x")
    assert lm.requests[0].messages[-1]["content"].endswith("\n\nLet's work this out in a step by step way.")
    assert lm.requests[1].messages[-1]["content"].endswith("\n\nSo the number is")


def test_inspect_shows_the_trigger_and_the_call_bound(write_pipe):
    prog = pipec.load(pipe(write_pipe), lm=pipec.ScriptedLM(rule=rule), cache=False)
    report = inspect_program(prog)
    site = report["calls"][0]
    assert site["max_lm_calls"] == prog.modules["solve"].max_calls() == 4
    assert [p["predictor"] for p in site["predictors"]] == ["solve.reason", "solve.extract"]
    assert site["predictors"][0]["messages"][-1]["content"].endswith("Let's think step by step.")


def test_worst_case_calls_equal_max_calls(write_pipe):
    # Each stage's first reply does not parse; each retry does.
    lm = pipec.ScriptedLM(["{}", {"reasoning": "so 7"}, "seven?", {"answer": 7}])
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    pred = prog(problem="x")
    assert pred.ok and pred.answer == 7
    assert len(lm.requests) == pred.lm_calls == prog.modules["solve"].max_calls() == 4
    assert [(r.predictor, r.attempt) for r in pred.trace] == [
        ("solve.reason", 1), ("solve.reason", 2), ("solve.extract", 1), ("solve.extract", 2)]


def test_a_failing_answer_call_is_a_recorded_failure(write_pipe):
    lm = pipec.ScriptedLM([{"reasoning": "so 7"}, "seven", "still seven"])
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(problem="x")
    assert not pred.ok
    assert pred.error.startswith("s (solve): reply did not parse, even after a retry")
    assert pred.raw == "still seven"
    assert len(pred.trace) == 3


@pytest.mark.parametrize("options, message", [
    ('trigger: ""', "option 'trigger' of ZeroShotCoT module solve is empty"),
    ("trigger: 3", "option 'trigger' of ZeroShotCoT module solve must be a string"),
    ('answer_trigger: "  "', "option 'answer_trigger' of ZeroShotCoT module solve is empty"),
    ("rationale: \"x\"", "unknown option 'rationale' for ZeroShotCoT module solve"),
])
def test_bad_options_are_load_errors(write_pipe, options, message):
    with pytest.raises(pipec.PipeError, match=message):
        pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(rule=rule), cache=False)


def test_a_signature_field_named_reasoning_clashes(write_pipe):
    path = write_pipe("""
        signature S { in q: str out reasoning: str }
        module m = ZeroShotCoT(S)
        pipeline p(q: str) -> (reasoning) { r = m(q: q) return reasoning = r.reasoning }
    """)
    with pytest.raises(pipec.PipeError, match="ZeroShotCoT adds an output named 'reasoning'"):
        pipec.load(path, lm=pipec.ScriptedLM(rule=rule), cache=False)


def test_bootstrap_gives_both_stages_demos_with_the_trigger(write_pipe):
    rows = [{"problem": f"{a} plus 4", "answer": a + 4} for a in range(8)]

    def solver(request):
        problem = next(line for line in request.messages[-1]["content"].splitlines() if line.startswith("problem: "))
        n = int(problem.split()[1]) + 4
        return {"reasoning": f"it is {n}"} if props(request) == ["reasoning"] else {"answer": n}

    prog = pipec.load(pipe(write_pipe), lm=pipec.ScriptedLM(rule=solver), cache=False)
    compiled = prog.compile(rows[:6], rows[6:], "exact_match(answer)", "bootstrap_fewshot", budget=200,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    reason, extract = params["solve.reason"].demos, params["solve.extract"].demos
    assert len(reason) == len(extract) == 2
    for d in reason:
        assert d == {"problem": d["problem"], "reasoning": f"it is {int(d['problem'].split()[0]) + 4}"}
    for d in extract:
        assert d["answer"] == int(d["problem"].split()[0]) + 4 and d["reasoning"] == f"it is {d['answer']}"
    # Demos are shown the way the model is asked: their user messages end with the trigger too.
    msgs = compiled.predictors()["solve.reason"].messages({"problem": "9 plus 4"})
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert all(m["content"].endswith("\n\nLet's think step by step.") for m in msgs if m["role"] == "user")


@pytest.mark.e2e
def test_e2e_runs_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipec", "run", "examples/zero_shot_cot.pipe", "--json", "--trace",
         "--input", "problem=Tom has 3 apples and buys 4 more. How many apples does he have?"],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and isinstance(out["outputs"]["answer"], int) and out["outputs"]["reasoning"]
    assert [r["predictor"] for r in out["trace"]] == ["solve.reason", "solve.extract"]
    assert out["trace"][0]["messages"][-1]["content"].endswith("Let's think step by step.")
    print(f"zero_shot_cot e2e: {elapsed:.1f} s")
