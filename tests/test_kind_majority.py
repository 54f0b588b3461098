"""Majority: self-consistency, n chain-of-thought samples in parallel and a vote (Wang et al.)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SlowLM

import pipec
from pipec.modules.majority import tally
from pipec.vote import normalize

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
ROOT = Path(__file__).resolve().parent.parent

SRC = """
    lm base = "openai/gpt-4o-mini" (temperature: 0, max_tokens: 50)
    signature Word {
        "Solve the word problem."
        in  problem: str
        out answer: str
        out unit: str
    }
    module solve = Majority(Word%s)
    pipeline p(problem: str) -> (answer, unit, votes: str, why: str) {
        s = solve(problem: problem)
        return answer = s.answer, unit = s.unit, votes = s.votes, why = s.reasoning
    }
"""


def pipe(write_pipe, options=""):
    return write_pipe(SRC % options)


def by_sample(answers, units=None):
    """A rule answering sample i with answers[i] (and units[i]); a BaseException is raised, a str sent raw."""
    def rule(request):
        a = answers[request.sample]
        if isinstance(a, BaseException) or (isinstance(a, str) and a.startswith("RAW:")):
            return a if isinstance(a, BaseException) else a[4:]
        return {"reasoning": f"path {request.sample}", "answer": a,
                "unit": units[request.sample] if units else "apples"}
    return rule


def test_n_samples_then_a_vote_over_normalized_answers(write_pipe):
    lm = pipec.ScriptedLM(rule=by_sample(["seven", "8", "Seven.", " SEVEN ", "8"]))
    pred = pipec.load(pipe(write_pipe, ", field: answer"), lm=lm, cache=False)(problem="3 + 4 apples?")
    assert pred.ok, pred.error
    assert pred.answer == "seven"                           # the earliest sample of the winning answer
    assert pred.votes == "seven: 3, 8: 2"
    assert pred.why == "path 0"
    assert [r.predictor for r in pred.trace] == ["solve.reason"] * 5
    # Independent draws of one prompt: distinct sample numbers, the same messages, the sampling temperature.
    assert [r.sample for r in lm.requests] == [0, 1, 2, 3, 4]
    assert all(r.messages == lm.requests[0].messages for r in lm.requests)
    assert all(r.params == {"temperature": 0.7, "max_tokens": 50} for r in lm.requests)
    assert list(lm.requests[0].schema["properties"]) == ["reasoning", "answer", "unit"]


def test_n_and_temperature_options(write_pipe):
    lm = pipec.ScriptedLM(rule=by_sample(["1", "2", "2"]))
    pred = pipec.load(pipe(write_pipe, ', n: 3, temperature: 1.1, rationale: "one line"'), lm=lm, cache=False)(problem="q")
    assert "- reasoning: one line (text)" in lm.requests[0].messages[0]["content"]
    assert len(lm.requests) == 3 and {r.params["temperature"] for r in lm.requests} == {1.1}
    assert pred.answer == "2" and pred.votes == "answer=2, unit=apples: 2, answer=1, unit=apples: 1"


def test_a_tie_goes_to_the_earliest_sample(write_pipe):
    lm = pipec.ScriptedLM(rule=by_sample(["b", "a", "a", "B"]))
    pred = pipec.load(pipe(write_pipe, ", n: 4, field: answer"), lm=lm, cache=False)(problem="q")
    assert pred.answer == "b" and pred.votes == "b: 2, a: 2" and pred.why == "path 0"


def test_all_outputs_vote_jointly_by_default(write_pipe):
    # Answer 5 is most common alone, but (5, kg) and (5, lb) split; (6, kg) wins jointly.
    lm = pipec.ScriptedLM(rule=by_sample(["5", "6", "5", "6", "5"], ["kg", "kg", "lb", "kg", "g"]))
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(problem="q")
    assert (pred.answer, pred.unit) == ("6", "kg")
    assert pred.votes.startswith("answer=6, unit=kg: 2, ")
    lm = pipec.ScriptedLM(rule=by_sample(["5", "6", "5", "6", "5"], ["kg", "kg", "lb", "kg", "g"]))
    pred = pipec.load(pipe(write_pipe, ", field: answer"), lm=lm, cache=False)(problem="q")
    assert (pred.answer, pred.unit) == ("5", "kg")          # the winning sample's other outputs come along


def test_samples_run_in_parallel(write_pipe):
    lm = SlowLM(rule=by_sample(["1"] * 5), delay=0.2)
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    assert not prog.inline
    start = time.perf_counter()
    pred = prog(problem="q")
    elapsed = time.perf_counter() - start
    assert pred.ok and pred.votes == "answer=1, unit=apples: 5"
    assert lm.max_in_flight == 5
    assert elapsed < 0.6                                    # five 0.2 s calls, overlapped


def test_a_sample_that_fails_is_left_out_of_the_vote(write_pipe):
    lm = pipec.ScriptedLM(rule=by_sample(["RAW:{}", "3", "RAW:", "4", "4"]))
    pred = pipec.load(pipe(write_pipe, ", field: answer"), lm=lm, cache=False)(problem="q")
    assert pred.ok and pred.answer == "4"
    assert pred.votes == "4: 2, 3: 1 (2 samples failed)"
    assert pred.lm_calls == 7                               # samples 0 and 2 retried once, with their own numbers
    assert [r.sample for r in lm.requests] == [0, 0, 1, 2, 2, 3, 4]


def test_every_sample_failing_is_a_recorded_failure_at_the_call_bound(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda request: "{}")
    prog = pipec.load(pipe(write_pipe, ", n: 4"), lm=lm, cache=False)
    pred = prog(problem="q")
    assert not pred.ok
    assert pred.error.startswith("s (solve): all 4 samples failed; the first: reply did not parse")
    assert len(lm.requests) == pred.lm_calls == prog.modules["solve"].max_calls() == 8


def test_lm_errors_in_some_samples_do_not_sink_the_call(write_pipe):
    from pipec.lm.base import LMError
    lm = pipec.ScriptedLM(rule=by_sample([LMError("boom"), "2", "2"]))
    pred = pipec.load(pipe(write_pipe, ", n: 3, field: answer"), lm=lm, cache=False)(problem="q")
    assert pred.ok and pred.answer == "2" and pred.votes == "2: 2 (1 sample failed)"


def test_normalize_and_tally():
    assert normalize("  Forty  Two. ") == "forty two"
    assert normalize(3.0) == normalize(3) == 3 and normalize(True) is True
    assert tally([{"a": 1}, {"a": 1.0}, {"a": 2}], ["a"]) == (0, "1: 2, 2: 1")


@pytest.mark.parametrize("options, message", [
    (", n: 0", "option 'n' of Majority module solve must be at least 1"),
    (", n: 2.5", "option 'n' of Majority module solve must be an integer"),
    (", temperature: -1", "option 'temperature' of Majority module solve must be at least 0"),
    (", field: answr", "option 'field' of Majority module solve names 'answr', which is not an output of Word"),
    (', field: "answer"', "option 'field' of Majority module solve must be a name"),
])
def test_bad_options_are_load_errors(write_pipe, options, message):
    with pytest.raises(pipec.PipeError, match=message) as err:
        pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(rule=by_sample(["1"] * 5)), cache=False)
    if "answr" in options:
        assert "did you mean 'answer'?" in str(err.value)


def test_a_signature_field_named_votes_clashes(write_pipe):
    path = write_pipe("""
        signature S { in q: str out votes: int }
        module m = Majority(S)
        pipeline p(q: str) -> (votes) { r = m(q: q) return votes = r.votes }
    """)
    with pytest.raises(pipec.PipeError, match="Majority adds an output named 'votes'"):
        pipec.load(path, lm=pipec.ScriptedLM(rule=by_sample(["1"] * 5)), cache=False)


def test_bootstrap_gives_the_reasoning_predictor_demos(write_pipe):
    rows = [{"problem": f"p{i}", "answer": f"a{i}", "unit": "kg"} for i in range(8)]

    def solver(request):
        p = request.messages[-1]["content"].split(": ", 1)[1]
        return {"reasoning": f"so a{p[1:]}", "answer": f"a{p[1:]}", "unit": "kg"}

    prog = pipec.load(pipe(write_pipe, ", n: 3"), lm=pipec.ScriptedLM(rule=solver), cache=False)
    compiled = prog.compile(rows[:6], rows[6:], "exact_match(answer)", "bootstrap_fewshot", budget=300,
                            options={"max_demos": 2, "max_labeled": 0})
    demos = compiled.params()["solve.reason"].demos
    assert len(demos) == 2
    for d in demos:
        assert d == {"problem": d["problem"], "reasoning": f"so a{d['problem'][1:]}", "answer": f"a{d['problem'][1:]}",
                     "unit": "kg"}


@pytest.mark.e2e
def test_e2e_three_samples_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipec", "run", "examples/majority.pipe", "--json", "--trace",
         "--input", "review=The battery died after two days and support never answered."],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["outputs"]["sentiment"] in ("positive", "negative", "mixed")
    votes = out["outputs"]["votes"]
    failed = int(votes.split(" (")[1].split()[0]) if " (" in votes else 0
    counted = sum(int(part.rsplit(": ", 1)[1].split()[0]) for part in votes.split(", "))
    assert counted + failed == 3, votes
    assert [r["predictor"] for r in out["trace"] if r["attempt"] == 1] == ["judge.reason"] * 3
    print(f"majority e2e: {elapsed:.1f} s")
