"""MultiChainComparison: m reasoning attempts in parallel, then one call comparing them all (Yoran et al.)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SlowLM, system_of

import pipec
from pipec.modules.multi_chain_comparison import describe_attempt

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
ROOT = Path(__file__).resolve().parent.parent

SRC = """
    lm base = "openai/gpt-4o-mini" (temperature: 0, max_tokens: 60)
    signature Riddle {
        "Answer the trick question."
        in  question: str
        out answer: str
    }
    module solve = MultiChainComparison(Riddle%s)
    pipeline p(question: str) -> (answer, rationale: str) {
        s = solve(question: question)
        return answer = s.answer, rationale = s.rationale
    }
"""
ATTEMPTS = [("iron is denser", "iron"), ("a kilogram is a kilogram", "same"), ("feathers are fluffy", "feathers")]


def pipe(write_pipe, options=""):
    return write_pipe(SRC % options)


def is_compare(request) -> bool:
    return "rationale" in request.schema["properties"]


def rule(request):
    if is_compare(request):
        return {"rationale": "Attempt 2 is right: both weigh a kilogram.", "answer": "they weigh the same"}
    reasoning, answer = ATTEMPTS[request.sample]
    return {"reasoning": reasoning, "answer": answer}


def test_attempts_then_a_comparison_that_sees_every_attempt(write_pipe):
    lm = pipec.ScriptedLM(rule=rule)
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="Which is heavier, a kg of iron or of feathers?")
    assert pred.ok, pred.error
    assert pred.outputs() == {"answer": "they weigh the same", "rationale": "Attempt 2 is right: both weigh a kilogram."}
    assert [r.predictor for r in pred.trace] == ["solve.reason"] * 3 + ["solve.compare"]
    attempts, compare = lm.requests[:3], lm.requests[3]
    # Three independent draws of one chain-of-thought prompt at the attempts' temperature.
    assert [r.sample for r in attempts] == [0, 1, 2]
    assert all(r.messages == attempts[0].messages and r.params == {"temperature": 0.7, "max_tokens": 60}
               for r in attempts)
    assert list(attempts[0].schema["properties"]) == ["reasoning", "answer"]
    # The comparison sees the question and every attempt's reasoning and answer, at the LM's own temperature.
    assert compare.messages[-1]["content"] == "\n".join([
        "question: Which is heavier, a kg of iron or of feathers?",
        "attempt_1: «iron is denser I'm not sure, but my prediction is: iron»",
        "attempt_2: «a kilogram is a kilogram I'm not sure, but my prediction is: same»",
        "attempt_3: «feathers are fluffy I'm not sure, but my prediction is: feathers»"])
    assert compare.params == {"temperature": 0, "max_tokens": 60} and compare.sample == 0
    assert list(compare.schema["properties"]) == ["rationale", "answer"]
    assert "Compare them holistically" in system_of(compare)
    assert system_of(compare).startswith("Answer the trick question.")


def test_attempts_and_temperature_options(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda r: rule(r) if is_compare(r) else {"reasoning": "r", "answer": str(r.sample)})
    prog = pipec.load(pipe(write_pipe, ', attempts: 5, temperature: 1.0, max_tokens: 30, reasoning: "one line"'),
                      lm=lm, cache=False)
    prog(question="q")
    assert "- reasoning: one line (text)" in system_of(lm.requests[0])
    assert [r.sample for r in lm.requests[:5]] == [0, 1, 2, 3, 4]
    assert {r.params["temperature"] for r in lm.requests[:5]} == {1.0}
    assert lm.requests[5].params == {"temperature": 0, "max_tokens": 30}   # max_tokens applies to every call
    assert [line.split(":")[0] for line in lm.requests[5].messages[-1]["content"].splitlines()] == \
        ["question"] + [f"attempt_{i}" for i in range(1, 6)]
    assert prog.modules["solve"].max_calls() == 12


def test_attempts_run_in_parallel_and_the_comparison_waits_for_all(write_pipe):
    lm = SlowLM(rule=rule, delay=0.5)
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    start = time.perf_counter()
    pred = prog(question="q")
    elapsed = time.perf_counter() - start
    assert pred.ok and pred.answer == "they weigh the same"
    assert lm.max_in_flight == 3
    assert elapsed < 1.5, elapsed                           # 3 overlapped calls, then the comparison: ~1 s, not 2
    assert is_compare(lm.requests[-1]) and "feathers are fluffy" in lm.requests[-1].messages[-1]["content"]


def test_a_failed_attempt_is_shown_as_failed(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda r: rule(r) if is_compare(r) or r.sample != 1 else "{}")
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="q")
    assert pred.ok
    compare = lm.requests[-1].messages[-1]["content"]
    assert "attempt_2: «this attempt failed to produce an answer»" in compare
    assert len(lm.requests) == 5                            # attempt 2 was retried once


def test_every_attempt_failing_is_a_recorded_failure(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda r: "{}")
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="q")
    assert not pred.ok and pred.error.startswith("s (solve): all 3 attempts failed")
    assert not any(is_compare(r) for r in lm.requests)


def test_worst_case_calls_equal_max_calls(write_pipe):
    seen = set()

    def flaky(request):                                     # every call's first try fails to parse
        key = (request.sample, is_compare(request))
        if key not in seen:
            seen.add(key)
            return "{}"
        return rule(request)
    lm = pipec.ScriptedLM(rule=flaky)
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    pred = prog(question="q")
    assert pred.ok and pred.answer == "they weigh the same"
    assert len(lm.requests) == pred.lm_calls == prog.modules["solve"].max_calls() == 8


def test_several_outputs_in_an_attempt():
    assert describe_attempt({"reasoning": "", "answer": "7", "unit": "kg", "n": [1, 2]}, ["answer", "unit", "n"]) == \
        "«I'm not sure, but my prediction is: answer = 7, unit = kg, n = [1, 2]»"


@pytest.mark.parametrize("options, message", [
    (", attempts: 1", "option 'attempts' of MultiChainComparison module solve must be at least 2"),
    (", attempts: \"3\"", "option 'attempts' of MultiChainComparison module solve must be an integer"),
    (", temperature: -0.5", "option 'temperature' of MultiChainComparison module solve must be at least 0"),
    (", n: 3", "unknown option 'n' for MultiChainComparison module solve"),
])
def test_bad_options_are_load_errors(write_pipe, options, message):
    with pytest.raises(pipec.PipeError, match=message):
        pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(rule=rule), cache=False)


@pytest.mark.parametrize("field, message", [
    ("in attempt_2: str", "MultiChainComparison module m uses the field name 'attempt_2'"),
    ("out reasoning: str", "MultiChainComparison module m uses the field name 'reasoning'"),
    ("out rationale: str", "MultiChainComparison adds an output named 'rationale'"),
])
def test_field_names_the_kind_uses_are_refused(write_pipe, field, message):
    path = write_pipe(f"""
        signature S {{ in q: str out a: str {field} }}
        module m = MultiChainComparison(S)
        pipeline p(q: str) -> (a) {{ r = m(q: q) return a = r.a }}
    """)
    with pytest.raises(pipec.PipeError, match=message):
        pipec.load(path, lm=pipec.ScriptedLM(rule=rule), cache=False)


def test_bootstrap_gives_attempts_and_comparison_demos(write_pipe):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(8)]

    def solver(request):
        q = request.messages[-1]["content"].splitlines()[0].split(": ", 1)[1]
        if is_compare(request):
            return {"rationale": "all agree", "answer": "a" + q[1:]}
        return {"reasoning": "easy", "answer": "a" + q[1:]}

    prog = pipec.load(pipe(write_pipe), lm=pipec.ScriptedLM(rule=solver), cache=False)
    compiled = prog.compile(rows[:6], rows[6:], "exact_match(answer)", "bootstrap_fewshot", budget=300,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert len(params["solve.reason"].demos) == len(params["solve.compare"].demos) == 2
    for d in params["solve.compare"].demos:
        assert set(d) == {"question", "attempt_1", "attempt_2", "attempt_3", "rationale", "answer"}
        assert d["attempt_1"] == f"«easy I'm not sure, but my prediction is: a{d['question'][1:]}»"


@pytest.mark.e2e
def test_e2e_runs_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipec", "run", "examples/multi_chain_comparison.pipe", "--json", "--trace",
         "--input", "question=Which is heavier, a kilogram of iron or a kilogram of feathers?"],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["outputs"]["answer"] and "rationale" in out["outputs"]
    firsts = [r["predictor"] for r in out["trace"] if r["attempt"] == 1]
    assert firsts == ["answer.reason"] * 3 + ["answer.compare"]
    print(f"multi_chain_comparison e2e: {elapsed:.1f} s")
