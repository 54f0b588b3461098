"""RankFuse: candidates from modules and LMs in parallel, every ordered pair ranked, the top k fused
(LLM-Blender's PairRanker and GenFuser, Jiang et al. 2023)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SlowLM

import pipec
from pipec.lm.base import LMError
from pipec.modules.rank_fuse import FUSE_NOTE, RANK_NOTE

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
ROOT = Path(__file__).resolve().parent.parent

SRC = """
    lm a = "openai/gpt-4o-mini" (temperature: 0, max_tokens: 50)
    lm b = "openai/gpt-4o" (temperature: 0.9, max_tokens: 70)
    default lm = a
    signature Answer {
        "Answer the question."
        in  question: str
        out answer: str
    }
    signature Other {
        in  question: str
        out reply: str
    }
    module direct   = Predict(Answer)
    module stepwise = ChainOfThought(Answer)
    module blend    = RankFuse(Answer%s)
    pipeline p(question: str) -> (answer, ranking: list[str]) {
        r = blend(question: question)
        return answer = r.answer, ranking = r.ranking
    }
"""
BOTH = ", candidates: [direct, stepwise], lms: [b]"


def pipe(write_pipe, options=BOTH, src=SRC):
    return write_pipe(src % options)


def stage(request) -> str:
    system = request.messages[0]["content"]
    if RANK_NOTE in system:
        return "rank"
    if FUSE_NOTE in system:
        return "fuse"
    return "stepwise" if '"reasoning"' in system else "direct"


def shown(request, name: str) -> str:
    """The answer shown as input `name` (`candidate_a: answer: X` -> X)."""
    return re.search(rf"^{name}: answer: (.*)$", request.messages[-1]["content"], re.M).group(1)


SCORE = {"S": 3, "G": 2, "D": 1}


def rule_for(answers=None, prefer=SCORE):
    """Candidates answer D (direct), S (stepwise); the ranker prefers by `prefer`; the fuser joins the
    shown candidates with '+'. `answers` overrides a stage's reply (a str starting with RAW: is sent raw)."""
    answers = answers or {}

    def rule(request):
        s = stage(request)
        if s in answers:
            a = answers[s]
            if isinstance(a, BaseException):
                raise a
            return a[4:] if isinstance(a, str) and a.startswith("RAW:") else a
        if s == "rank":
            a, b = shown(request, "candidate_a"), shown(request, "candidate_b")
            return {"better": "A" if prefer.get(a, 0) >= prefer.get(b, 0) else "B"}
        if s == "fuse":
            text = request.messages[-1]["content"]
            return {"answer": "+".join(re.findall(r"^answer: (.*)$", text, re.M))}
        return {"reasoning": "because", "answer": "S"} if s == "stepwise" else {"answer": "D"}
    return rule


def lm_b_rule(request):
    return {"answer": f"G{request.sample or ''}"}


# ---------------------------------------------------------------------------- control flow
def test_candidates_then_every_ordered_pair_ranked_then_the_top_two_fused(write_pipe):
    lm_a, lm_b = pipec.ScriptedLM(rule=rule_for()), pipec.ScriptedLM(rule=lm_b_rule)
    prog = pipec.load(pipe(write_pipe), lms={"a": lm_a, "b": lm_b}, cache=False)
    pred = prog(question="why?")
    assert pred.ok, pred.error
    # Three candidates (two modules on lm a, the built-in predictor on lm b), in parallel first.
    assert [r.predictor for r in pred.trace][:3] == ["direct", "stepwise", "blend.generate.b"]
    assert [r.module for r in pred.trace][:3] == ["direct", "stepwise", "blend"]
    assert len(lm_b.requests) == 1 and lm_b.requests[0].params == {"temperature": 0.9, "max_tokens": 70}
    assert lm_b.requests[0].messages == lm_a.requests[0].messages     # the same task prompt, another LM
    # PairRanker: N(N-1) = 6 comparisons, every pair in both orders.
    ranks = [r for r in lm_a.requests if stage(r) == "rank"]
    assert [(shown(r, "candidate_a"), shown(r, "candidate_b")) for r in ranks] == [
        ("D", "S"), ("D", "G"), ("S", "D"), ("S", "G"), ("G", "D"), ("G", "S")]
    assert ranks[0].messages[-1]["content"] == "question: why?\ncandidate_a: answer: D\ncandidate_b: answer: S"
    assert ranks[0].schema["properties"]["better"]["enum"] == ["A", "B"]
    # Wins: S 4, G 2, D 0.
    assert pred.ranking == ["stepwise", "lm:b", "direct"]
    # GenFuser: one call with the top two, best first.
    fuse = lm_a.requests[-1]
    assert stage(fuse) == "fuse"
    assert fuse.messages[0]["content"].startswith("Answer the question.\n\n" + FUSE_NOTE)
    assert fuse.messages[-1]["content"] == "question: why?\ncandidates: Candidate 1:\nanswer: S\n\nCandidate 2:\nanswer: G"
    assert pred.answer == "S+G"
    assert [r.predictor for r in pred.trace][3:] == ["blend.rank"] * 6 + ["blend.fuse"]
    assert [p.name for p in prog.modules["blend"].predictors()] == ["blend.generate.b", "blend.rank", "blend.fuse"]


def test_both_orders_cancel_a_ranker_that_always_prefers_the_first_position(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for({"rank": {"better": "A"}}))
    pred = pipec.load(pipe(write_pipe, ", candidates: [stepwise, direct], k: 2"), lm=lm, cache=False)(question="q")
    assert pred.ok, pred.error
    assert pred.ranking == ["stepwise", "direct"]          # one win each: a tie, the listed order
    assert pred.answer == "S+D"
    lm = pipec.ScriptedLM(rule=rule_for({"rank": {"better": "B"}}))
    pred = pipec.load(pipe(write_pipe, ", candidates: [direct, stepwise], k: 2"), lm=lm, cache=False)(question="q")
    assert pred.ranking == ["direct", "stepwise"]


def test_k_one_takes_the_best_candidate_without_a_fuser_call(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for(prefer={"D": 5, "S": 1}))
    prog = pipec.load(pipe(write_pipe, ", candidates: [stepwise, direct], k: 1"), lm=lm, cache=False)
    pred = prog(question="q")
    assert pred.ok, pred.error
    assert pred.answer == "D" and pred.ranking == ["direct", "stepwise"]
    assert [stage(r) for r in lm.requests] == ["stepwise", "direct", "rank", "rank"]
    assert [p.name for p in prog.modules["blend"].predictors()] == ["blend.rank"]
    assert prog.modules["blend"].max_calls() == 2 + 2 + 2 * 2


def test_an_lm_named_twice_makes_two_independent_draws(write_pipe):
    lm_a, lm_b = pipec.ScriptedLM(rule=rule_for(prefer={"G1": 9, "G": 5})), pipec.ScriptedLM(rule=lm_b_rule)
    prog = pipec.load(pipe(write_pipe, ", lms: [b, b], k: 2"), lms={"a": lm_a, "b": lm_b}, cache=False)
    pred = prog(question="q")
    assert pred.ok, pred.error
    assert [r.sample for r in lm_b.requests] == [0, 1]
    assert pred.ranking == ["lm:b#2", "lm:b"]
    assert pred.answer == "G1+G"
    assert list(prog.predictors()) == ["blend.generate.b", "blend.rank", "blend.fuse"]


def test_candidates_and_comparisons_run_in_parallel(write_pipe):
    lm = SlowLM(rule=rule_for(), delay=0.2)
    prog = pipec.load(pipe(write_pipe, ", candidates: [direct, stepwise], lms: [a]"), lm=lm, cache=False)
    start = time.perf_counter()
    pred = prog(question="q")
    elapsed = time.perf_counter() - start
    assert pred.ok, pred.error
    assert len(lm.requests) == 3 + 6 + 1
    assert lm.max_in_flight == 6                         # all six comparisons at once
    assert elapsed < 1.3, elapsed                        # three phases of 0.2 s, not ten calls (2 s)
    assert [stage(r) for r in lm.requests[:3]] == ["direct", "stepwise", "direct"]
    assert [stage(r) for r in lm.requests[3:]] == ["rank"] * 6 + ["fuse"]


# ---------------------------------------------------------------------------- failures
def test_a_failing_candidate_is_left_out(write_pipe):
    lm_a = pipec.ScriptedLM(rule=rule_for({"stepwise": "RAW:{}"}))
    lm_b = pipec.ScriptedLM(rule=lm_b_rule)
    pred = pipec.load(pipe(write_pipe), lms={"a": lm_a, "b": lm_b}, cache=False)(question="q")
    assert pred.ok, pred.error
    assert pred.ranking == ["lm:b", "direct"]
    assert [stage(r) for r in lm_a.requests] == ["direct", "stepwise", "stepwise", "rank", "rank", "fuse"]
    assert pred.answer == "G+D"
    failed = [r for r in pred.trace if r.predictor == "stepwise"]
    assert len(failed) == 2 and all(r.error for r in failed)


@pytest.mark.parametrize("failing", [1, 2])
def test_a_failing_comparison_counts_for_neither(write_pipe, failing):
    # Comparisons: 1 = (A: direct, B: stepwise), 2 = (A: stepwise, B: direct); the ranker prefers stepwise.
    # Counted for A, a failed comparison 1 would tie the two; counted for B, a failed comparison 2 would.
    calls = []

    def rule(request):
        if stage(request) == "rank":
            calls.append(1)
            if len(calls) == failing:
                raise LMError("ranker down")
        return rule_for()(request)
    lm = pipec.ScriptedLM(rule=rule)
    pred = pipec.load(pipe(write_pipe, ", candidates: [direct, stepwise], k: 2"), lm=lm, cache=False)(question="q")
    assert pred.ok, pred.error
    assert pred.ranking == ["stepwise", "direct"]           # S still won the other order
    assert sum(1 for r in pred.trace if r.error == "ranker down") == 1


def test_every_candidate_failing_or_a_failing_fuser_is_a_recorded_failure(write_pipe):
    lm_a = pipec.ScriptedLM(rule=rule_for({"stepwise": "RAW:{}", "direct": "RAW:{}"}))
    lm_b = pipec.ScriptedLM([LMError("b is down")])
    pred = pipec.load(pipe(write_pipe), lms={"a": lm_a, "b": lm_b}, cache=False)(question="q")
    assert not pred.ok
    assert "every candidate of blend failed" in pred.error

    lm = pipec.ScriptedLM(rule=rule_for({"fuse": "RAW:{}"}))
    pred = pipec.load(pipe(write_pipe, ", candidates: [direct, stepwise]"), lm=lm, cache=False)(question="q")
    assert not pred.ok and "did not parse" in pred.error



@pytest.mark.parametrize("options, calls", [(", candidates: [direct, stepwise], k: 1", 4),
                                            (", candidates: [direct, stepwise], lms: [b], k: 1", 9)])
def test_a_call_the_budget_refuses_fails_the_module_instead_of_ranking_fewer(write_pipe, options, calls):
    """Regression: a candidate or a comparison refused by a spent budget counted as a failed one (left
    out, or a win for neither), so with `k: 1` (no fuser call last) a compile out of budget scored a
    ranking of fewer candidates as if it were the real one. Now the refusal fails the call."""
    from pipec.budget import Budget
    from pipec.dataset import Example
    from pipec.evaluate import evaluate
    from pipec.metrics import Metric
    lm = pipec.ScriptedLM(rule=rule_for())
    prog = pipec.load(pipe(write_pipe, options), lm=lm, cache=False)
    rows = [Example({"question": "q", "answer": "S"}, "row 1")]
    for budget in range(calls):
        result = evaluate(prog, rows, Metric.parse("exact_match(answer)"), runtime=prog.runtime(budget=Budget(budget)))
        assert result.incomplete and "LM call budget is spent" in result.rows[0].error, budget
    assert evaluate(prog, rows, Metric.parse("exact_match(answer)"), runtime=prog.runtime(budget=Budget(calls))).score == 1


# ---------------------------------------------------------------------------- the call bound
def retry_rule(request):
    """Worst case: every first attempt fails to parse, every retry succeeds."""
    if request.messages[-1]["content"].startswith("Your reply could not be used"):
        return {"reasoning": "r", "answer": f"x{len(request.messages)}", "better": "A"}
    return "{}"


WITH_DEBATE = SRC.replace("module blend", "module panel = Debate(Answer, agents: 2, rounds: 1)\n    module blend")


@pytest.mark.parametrize("options, expected", [
    (BOTH, 2 + 2 + 2 + 2 * 3 * 2 + 2),
    (", candidates: [direct, stepwise], k: 1", 2 + 2 + 2 * 2 * 1),
    (", lms: [a, b, b, a]", 4 * 2 + 2 * 4 * 3 + 2),
    (", candidates: [panel, stepwise], lms: [b]", 8 + 2 + 2 + 2 * 3 * 2 + 2),     # a Debate as a candidate
])
def test_max_calls_is_the_worst_case_including_the_candidates_own(write_pipe, options, expected):
    lm = pipec.ScriptedLM(rule=retry_rule)
    prog = pipec.load(write_pipe(WITH_DEBATE % options), lm=lm, cache=False)
    pred = prog(question="q")
    assert pred.ok, pred.error
    assert prog.modules["blend"].max_calls() == expected == len(lm.requests) == pred.lm_calls


# ---------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("options, message", [
    (", candidates: [direct, other]", "candidate other of RankFuse module blend implements Other "
     "(question: str -> reply: str), which does not have the same inputs and outputs as Answer "
     "(question: str -> answer: str)"),
    (", candidates: [direct]", "RankFuse module blend has 1 candidate; it needs at least 2"),
    ("", "RankFuse module blend has 0 candidates; it needs at least 2"),
    (", candidates: [direct, stepwise], k: 3", "RankFuse module blend fuses the top 3 candidates but has only 2"),
    (", candidates: [direct, direct]", "RankFuse module blend lists candidate direct twice"),
    (", candidates: [direct, blend]", "module cycle: blend -> blend"),
    (", candidates: [direct, nope]", "unknown module 'nope'"),
    (", candidates: [], lms: [a, b]", "option 'candidates' of RankFuse module blend needs at least 1 name"),
    (", candidates: direct", "option 'candidates' of RankFuse module blend must be a list of module names"),
    (", lms: [a, zzz]", "unknown lm 'zzz'"),
    (", lms: [a, b], k: 0", "option 'k' of RankFuse module blend must be at least 1"),
])
def test_bad_options_are_reported_when_loading(write_pipe, options, message):
    src = SRC.replace("module blend", "module other = Predict(Other)\n    module blend")
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src % options), lm=pipec.ScriptedLM(), cache=False)
    assert message in str(err.value)


def test_candidate_signatures_must_match_in_types_too(write_pipe):
    src = SRC.replace("module blend", "module typed = Predict(Typed)\n    module blend") \
             .replace("signature Other", "signature Typed { in question: str out answer: int }\n    signature Other")
    with pytest.raises(pipec.PipeError, match=r"candidate typed .* \(question: str -> answer: int\), which does not"):
        pipec.load(write_pipe(src % ", candidates: [direct, typed]"), lm=pipec.ScriptedLM(), cache=False)
    # A candidate of another signature with the same fields is fine; so are extra outputs (reasoning).
    src = SRC.replace("signature Other {\n        in  question: str\n        out reply: str",
                      "signature Other {\n        in  question: str\n        out answer: str")
    src = src.replace("module blend", "module other = ChainOfThought(Other)\n    module blend")
    assert pipec.load(write_pipe(src % ", candidates: [direct, other]"), lm=pipec.ScriptedLM(), cache=False)


def test_a_signature_with_a_ranking_field_is_refused(write_pipe):
    src = SRC.replace("out answer: str", "out answer: str\n        out ranking: str", 1)
    with pytest.raises(pipec.PipeError, match="RankFuse adds an output named 'ranking'"):
        pipec.load(write_pipe(src % BOTH), lm=pipec.ScriptedLM(), cache=False)


# ---------------------------------------------------------------------------- compiling
def test_bootstrap_fewshot_gives_every_inner_predictor_demos(write_pipe):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(6)]

    def rule(request):
        s = stage(request)
        if s == "rank":
            return {"better": "A"}
        q = re.search(r"^question: (.*)$", request.messages[-1]["content"], re.M).group(1)
        return {"reasoning": "r", "answer": "a" + q[1:]}
    prog = pipec.load(pipe(write_pipe, ", candidates: [direct, stepwise], lms: [b]"),
                      lm=pipec.ScriptedLM(rule=rule), cache=False)
    compiled = prog.compile(rows[:4], rows[4:], "exact_match(answer)", "bootstrap_fewshot", budget=400,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert {"blend.generate.b", "blend.rank", "blend.fuse", "direct", "stepwise"} <= set(params)
    for name in ("blend.generate.b", "blend.rank", "blend.fuse", "direct", "stepwise"):
        assert len(params[name].demos) == 2, name
    rank = params["blend.rank"].demos[0]
    assert set(rank) == {"question", "candidate_a", "candidate_b", "better"} and rank["better"] == "A"
    fuse = params["blend.fuse"].demos[0]
    assert set(fuse) == {"question", "candidates", "answer"} and fuse["candidates"].startswith("Candidate 1:\n")


# ---------------------------------------------------------------------------- end to end
@pytest.mark.e2e
def test_e2e_two_candidates_ranked_and_fused_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipec", "run", "examples/rank_fuse.pipe", "--json", "--trace",
         "--input", "question=What is the capital of France?"],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"], out
    assert isinstance(out["outputs"]["answer"], str)
    assert sorted(out["outputs"]["ranking"]) == ["direct", "stepwise"]
    predictors = [r["predictor"] for r in out["trace"] if r["attempt"] == 1]
    assert predictors == ["direct", "stepwise", "blend.rank", "blend.rank", "blend.fuse"]
    print(f"rank_fuse e2e: {elapsed:.1f} s")
