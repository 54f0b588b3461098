"""Debate: independent answers in parallel, rounds of updates that read the other agents, a vote or a judge
(multi-agent debate, Du et al. 2023)."""
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
from pipec.lm.base import LMError
from pipec.modules.debate import JUDGE_NOTE, UPDATE_NOTE

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
ROOT = Path(__file__).resolve().parent.parent

SRC = """
    lm a = "openai/gpt-4o-mini" (temperature: 0, max_tokens: 50)
    lm b = "openai/gpt-4o" (temperature: 0.9, max_tokens: 70)
    default lm = a
    signature Solve {
        "Solve the problem."
        in  problem: str
        out answer: str
    }
    module solve = Debate(Solve%s)
    pipeline p(problem: str) -> (answer, transcript) {
        s = solve(problem: problem)
        return answer = s.answer, transcript = s.transcript
    }
"""


def pipe(write_pipe, options=""):
    return write_pipe(SRC % options)


def stage(request) -> str:
    system = request.messages[0]["content"]
    return "judge" if JUDGE_NOTE in system else "update" if UPDATE_NOTE in system else "answer"


def field(request, name: str) -> str:
    """The value of input `name` in the last user message (values may span lines: up to the next input)."""
    text = request.messages[-1]["content"]
    names = ["problem", "your_answer", "other_answers", "debate"]
    start = text.index(f"{name}: ") + len(name) + 2
    ends = [text.find(f"\n{n}: ", start) for n in names]
    ends = [e for e in ends if e != -1]
    return text[start:min(ends)] if ends else text[start:]


def scripted(answers: dict):
    """answers[(stage, agent)] -> answer (agent = request.sample; the judge is ('judge', 0)).
    A str starting with RAW: is sent as it is (it does not parse); a BaseException is raised."""
    def rule(request):
        a = answers[(stage(request), request.sample)]
        if isinstance(a, BaseException):
            raise a
        if a.startswith("RAW:"):
            return a[4:]
        return {"reasoning": f"{stage(request)} {request.sample} thinks {a}", "answer": a}
    return rule


# ---------------------------------------------------------------------------- control flow
def test_agents_answer_then_update_round_by_round_then_vote(write_pipe):
    lm = pipec.ScriptedLM(rule=scripted({
        ("answer", 0): "7", ("answer", 1): "8", ("answer", 2): "9",
        ("update", 0): "7", ("update", 1): "7", ("update", 2): "9"}))
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    pred = prog(problem="3 + 4?")
    assert pred.ok, pred.error
    assert pred.answer == "7"
    # Defaults: 3 agents, then 2 update rounds of 3 calls each, then a vote (no judge call).
    assert [(stage(r), r.sample) for r in lm.requests] == [
        ("answer", 0), ("answer", 1), ("answer", 2),
        ("update", 0), ("update", 1), ("update", 2),
        ("update", 0), ("update", 1), ("update", 2)]
    assert [r.predictor for r in pred.trace] == ["solve.answer"] * 3 + ["solve.update"] * 6
    # Round 1 is the plain task: identical prompts, numbered independent draws.
    assert lm.requests[0].messages == lm.requests[1].messages == lm.requests[2].messages
    assert lm.requests[0].messages[-1]["content"] == "problem: 3 + 4?"
    # Round 2: agent 2 sees its own answer and the others' (with their reasoning), never its own among them.
    r = lm.requests[4]
    assert field(r, "problem") == "3 + 4?"
    assert field(r, "your_answer") == "reasoning: answer 1 thinks 8\nanswer: 8"
    assert field(r, "other_answers") == ("Agent 1:\nreasoning: answer 0 thinks 7\nanswer: 7\n\n"
                                         "Agent 3:\nreasoning: answer 2 thinks 9\nanswer: 9")
    # Round 3 reads the round-2 answers (agent 2 had moved to 7).
    r = lm.requests[6]
    assert field(r, "your_answer") == "reasoning: update 0 thinks 7\nanswer: 7"
    assert "Agent 2:\nreasoning: update 1 thinks 7\nanswer: 7" in field(r, "other_answers")
    assert pred.transcript.splitlines()[0] == "Round 1"
    assert "Round 3\nAgent 1:\nreasoning: update 0 thinks 7" in pred.transcript
    assert pred.transcript.endswith("Vote: Agent 1's answer, given by 2 of 3 agents")


def test_the_update_prompt_carries_the_debate_instruction(write_pipe):
    lm = pipec.ScriptedLM(rule=scripted({("answer", 0): "1", ("answer", 1): "2",
                                         ("update", 0): "1", ("update", 1): "1"}))
    prog = pipec.load(pipe(write_pipe, ", agents: 2, rounds: 1"), lm=lm, cache=False)
    assert prog(problem="x").answer == "1"
    update = lm.requests[2].messages[0]["content"]
    assert update.startswith("Solve the problem.\n\n" + UPDATE_NOTE)
    assert "- your_answer: your previous answer, with its reasoning" in update
    assert '"reasoning", "answer"' in update


def test_vote_picks_the_answer_most_agents_share_and_ties_go_to_the_earlier_agent(write_pipe):
    def run(finals, **kw):
        answers = {("answer", i): f for i, f in enumerate(finals)}
        lm = pipec.ScriptedLM(rule=scripted(answers))
        prog = pipec.load(pipe(write_pipe, f", agents: {len(finals)}, rounds: 0"), lm=lm, cache=False)
        return prog(problem="q")
    assert run(["8", "seven", "Seven.", " SEVEN "]).answer == "seven"     # normalized before counting
    assert run(["8", "7"]).answer == "8"                                  # a tie: the earlier agent
    assert run(["8", "7", "7", "8"]).answer == "8"
    assert run(["8", "7", "7"]).transcript.endswith("Vote: Agent 2's answer, given by 2 of 3 agents")


def test_vote_over_several_outputs_returns_one_consistent_answer(write_pipe):
    src = SRC.replace("out answer: str", "out answer: str\n        out unit: str")
    rows = {0: ("7", "kg"), 1: ("8", "g"), 2: ("7", "g"), 3: ("9", "g")}

    def rule(request):
        answer, unit = rows[request.sample]
        return {"reasoning": "r", "answer": answer, "unit": unit}
    prog = pipec.load(write_pipe(src % ", agents: 4, rounds: 0"), lm=pipec.ScriptedLM(rule=rule), cache=False)
    pred = prog(problem="q")
    # answer 7 has 2 votes, unit g has 3: agent 3 (7, g) agrees most with the others.
    assert pred.answer == "7" and pred.transcript.endswith("Vote: Agent 3's answer, given by 1 of 4 agents")


def test_judge_reads_the_whole_debate_and_decides(write_pipe):
    lm = pipec.ScriptedLM(rule=scripted({("answer", 0): "7", ("answer", 1): "8",
                                         ("update", 0): "7", ("update", 1): "8", ("judge", 0): "8"}))
    prog = pipec.load(pipe(write_pipe, ', agents: 2, rounds: 1, judge: "judge"'), lm=lm, cache=False)
    pred = prog(problem="3 + 5?")
    assert pred.ok, pred.error
    assert pred.answer == "8"
    assert [r.predictor for r in pred.trace] == ["solve.answer"] * 2 + ["solve.update"] * 2 + ["solve.judge"]
    judge = lm.requests[-1]
    assert judge.messages[0]["content"].startswith("Solve the problem.\n\n" + JUDGE_NOTE)
    assert '"answer"' in judge.messages[0]["content"] and '"reasoning"' not in judge.messages[0]["content"]
    debate = field(judge, "debate")
    assert debate.startswith("Round 1\nAgent 1:\nreasoning: answer 0 thinks 7\nanswer: 7\nAgent 2:")
    assert "Round 2\nAgent 1:\nreasoning: update 0 thinks 7" in debate
    assert pred.transcript == debate + "\nJudge:\nanswer: 8"
    assert [p.name for p in prog.modules["solve"].predictors()] == ["solve.answer", "solve.update", "solve.judge"]


def test_agents_take_the_lms_in_turn_with_each_lms_sampling(write_pipe):
    lm_a = pipec.ScriptedLM(rule=scripted({("answer", 0): "7", ("answer", 2): "7",
                                           ("update", 0): "7", ("update", 2): "7"}))
    lm_b = pipec.ScriptedLM(rule=scripted({("answer", 1): "8", ("update", 1): "7"}))
    prog = pipec.load(pipe(write_pipe, ", agents: 3, rounds: 1, lms: [a, b]"), lms={"a": lm_a, "b": lm_b},
                      cache=False)
    pred = prog(problem="q")
    assert pred.ok, pred.error
    assert [(stage(r), r.sample) for r in lm_a.requests] == [("answer", 0), ("answer", 2), ("update", 0), ("update", 2)]
    assert [(stage(r), r.sample) for r in lm_b.requests] == [("answer", 1), ("update", 1)]
    assert sorted(prog.predictors()) == ["solve.answer.a", "solve.answer.b", "solve.update.a", "solve.update.b"]
    assert lm_a.requests[0].params == {"temperature": 0, "max_tokens": 50}
    assert lm_b.requests[0].params == {"temperature": 0.9, "max_tokens": 70}
    assert "Agent 2 (b):\nreasoning: answer 1 thinks 8" in pred.transcript

    # The module's own sampling options override every LM's.
    lm = pipec.ScriptedLM(rule=scripted({("answer", 0): "7", ("answer", 1): "7"}))
    prog = pipec.load(pipe(write_pipe, ", agents: 2, rounds: 0, lms: [a, b], temperature: 0.5, max_tokens: 20"),
                      lm=lm, cache=False)
    prog(problem="q")
    assert [r.params for r in lm.requests] == [{"temperature": 0.5, "max_tokens": 20}] * 2


def test_agents_of_a_round_run_in_parallel(write_pipe):
    lm = SlowLM(rule=scripted({("answer", i): "7" for i in range(3)} | {("update", i): "7" for i in range(3)}),
                delay=0.2)
    prog = pipec.load(pipe(write_pipe, ", agents: 3, rounds: 1"), lm=lm, cache=False)
    start = time.perf_counter()
    pred = prog(problem="q")
    elapsed = time.perf_counter() - start
    assert pred.ok, pred.error
    assert lm.max_in_flight == 3
    assert len(lm.requests) == 6
    assert elapsed < 0.9, elapsed           # two rounds of 0.2 s, not six calls of 0.2 s
    assert [stage(r) for r in lm.requests] == ["answer"] * 3 + ["update"] * 3   # rounds never overlap


# ---------------------------------------------------------------------------- failures
def test_an_agent_that_fails_in_round_one_drops_out(write_pipe):
    lm = pipec.ScriptedLM(rule=scripted({("answer", 0): "RAW:no idea", ("answer", 1): "8", ("answer", 2): "9",
                                         ("update", 1): "9", ("update", 2): "9"}))
    prog = pipec.load(pipe(write_pipe, ", rounds: 1"), lm=lm, cache=False)
    pred = prog(problem="q")
    assert pred.ok, pred.error
    assert pred.answer == "9"
    # agent 1: a call and its retry, both unparseable; then only agents 2 and 3 update.
    assert [(stage(r), r.sample) for r in lm.requests] == [
        ("answer", 0), ("answer", 0), ("answer", 1), ("answer", 2), ("update", 1), ("update", 2)]
    assert pred.trace[0].error and pred.trace[1].error and pred.trace[1].attempt == 2
    assert field(lm.requests[4], "other_answers").startswith("Agent 3:")
    assert "Agent 1: failed (reply did not parse, even after a retry" in pred.transcript


def test_an_agent_that_fails_later_keeps_its_answer_and_a_lone_agent_stops_the_debate(write_pipe):
    lm = pipec.ScriptedLM(rule=scripted({
        ("answer", 0): "7", ("answer", 1): "8", ("answer", 2): "RAW:x",
        ("update", 0): RuntimeError("unexpected"), ("update", 1): "7"}))
    prog = pipec.load(pipe(write_pipe, ", rounds: 1"), lm=lm, cache=False)
    pred = prog(problem="q")
    # An LM error (here a backend bug, wrapped as LMError) costs the agent its update, not the debate.
    assert pred.ok, pred.error
    assert pred.answer == "7"
    assert "Agent 1: failed (scripted/lm: RuntimeError: unexpected); keeps its previous answer" in pred.transcript

    lm = pipec.ScriptedLM(rule=scripted({("answer", 0): "RAW:x", ("answer", 1): "8", ("answer", 2): "RAW:y"}))
    pred = pipec.load(pipe(write_pipe, ", rounds: 2"), lm=lm, cache=False)(problem="q")
    assert pred.ok and pred.answer == "8"
    assert [stage(r) for r in lm.requests] == ["answer"] * 5          # no one left to debate with
    assert "(the debate stops after round 1: fewer than two agents are left)" in pred.transcript


def test_every_agent_failing_is_a_recorded_failure(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda r: "not json")
    pred = pipec.load(pipe(write_pipe, ", agents: 2"), lm=lm, cache=False)(problem="q")
    assert not pred.ok
    assert "every agent of debate solve failed" in pred.error
    assert len(lm.requests) == 4


def test_a_failing_judge_fails_the_module(write_pipe):
    lm = pipec.ScriptedLM(rule=scripted({("answer", 0): "7", ("answer", 1): "8", ("judge", 0): LMError("judge down")}))
    pred = pipec.load(pipe(write_pipe, ', agents: 2, rounds: 0, judge: "judge"'), lm=lm, cache=False)(problem="q")
    assert not pred.ok and "judge down" in pred.error



def budget_cut_rows(prog, calls: int, **inputs):
    """`prog` run on one row through `evaluate` (the compile's path) under a budget of `calls` LM calls."""
    from pipec.budget import Budget
    from pipec.dataset import Example
    from pipec.evaluate import evaluate
    from pipec.metrics import Metric
    return evaluate(prog, [Example({**inputs, "answer": "7"}, "row 1")], Metric.parse("exact_match(answer)"),
                    runtime=prog.runtime(budget=Budget(calls)))


@pytest.mark.parametrize("calls", range(9))
def test_a_call_the_budget_refuses_fails_the_debate_instead_of_shortening_it(write_pipe, calls):
    """Regression: an agent refused by a spent budget was treated like a failed agent (dropped in round 1,
    its old answer kept later), so a compile out of budget scored a shorter debate as if it were the real
    one. Now the refusal fails the call, and the compile sees that its evaluation is incomplete."""
    lm = pipec.ScriptedLM(rule=scripted({(s, i): "7" for s in ("answer", "update") for i in range(3)}))
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    result = budget_cut_rows(prog, calls, problem="q")               # the whole debate takes 9 calls
    assert result.incomplete
    assert result.rows[0].score == 0 and "LM call budget is spent" in result.rows[0].error
    assert len(lm.requests) == calls
    assert budget_cut_rows(prog, 9, problem="q").score == 1.0


def test_a_budget_cut_leaves_no_agent_unawaited_or_running(write_pipe, recwarn):
    """Regression: when the budget refused one agent, the agents after it were never awaited (inline) or
    kept running after the module had failed (on asyncio); Python reported "coroutine ... was never
    awaited" at garbage collection."""
    import gc
    lm = pipec.ScriptedLM(rule=scripted({(s, i): "7" for s in ("answer", "update") for i in range(3)}))
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    for calls in (0, 1, 4):
        assert budget_cut_rows(prog, calls, problem="q").incomplete
        assert len(lm.requests) == calls
        lm.requests.clear()
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


# ---------------------------------------------------------------------------- the call bound
def retry_rule(request):
    """Worst case: every first attempt fails to parse, every retry succeeds."""
    if request.messages[-1]["content"].startswith("Your reply could not be used"):
        return {"reasoning": "r", "answer": str(request.sample)}
    return "{}"


@pytest.mark.parametrize("options, expected", [
    ("", 18), (", agents: 2, rounds: 1", 8), (', agents: 4, rounds: 0, judge: "judge"', 10),
    (", agents: 3, rounds: 3, lms: [a, b]", 24), (', agents: 2, rounds: 2, judge: "judge", lms: [b]', 14)])
def test_max_calls_is_the_worst_case(write_pipe, options, expected):
    lm = pipec.ScriptedLM(rule=retry_rule)
    prog = pipec.load(pipe(write_pipe, options), lm=lm, cache=False)
    pred = prog(problem="q")
    assert pred.ok, pred.error
    assert prog.modules["solve"].max_calls() == expected == len(lm.requests) == pred.lm_calls


# ---------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("options, message", [
    (", agents: 1", "option 'agents' of Debate module solve must be at least 2"),
    (", rounds: -1", "option 'rounds' of Debate module solve must be at least 0"),
    (', judge: "poll"', "option 'judge' of Debate module solve must be one of: vote, judge"),
    (", judge: vote", "option 'judge' of Debate module solve must be a string"),
    (", lms: a", "option 'lms' of Debate module solve must be a list of lm names"),
    (", lms: [a, c]", "unknown lm 'c'"),
    (", lms: []", "option 'lms' of Debate module solve needs at least 1 name"),
    (", agents: 2, lms: [a, b, a]", "Debate module solve names 3 lms but has only 2 agents"),
    (", lms: [a, b, a, b]", "Debate module solve names 4 lms but has only 3 agents"),
])
def test_bad_options_are_reported_when_loading(write_pipe, options, message):
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(), cache=False)
    assert message in str(err.value)


def test_a_signature_with_a_transcript_field_is_refused(write_pipe):
    src = SRC.replace("out answer: str", "out answer: str\n        out transcript: str")
    with pytest.raises(pipec.PipeError, match="Debate adds an output named 'transcript'"):
        pipec.load(write_pipe(src % ""), lm=pipec.ScriptedLM(), cache=False)


def test_field_names_of_the_signature_are_not_shadowed(write_pipe):
    src = SRC.replace("in  problem: str", "in  problem: str\n        in  other_answers: str") \
             .replace("solve(problem: problem)", "solve(problem: problem, other_answers: problem)") \
             .replace("out answer: str", "out reasoning: str\n        out answer: str")
    lm = pipec.ScriptedLM(rule=lambda r: {"reasoning": "r", "answer": "1"})
    prog = pipec.load(write_pipe(src % ""), lm=lm, cache=False)
    assert prog(problem="q").ok
    update = prog.predictors()["solve.update"]
    assert [n for n, _, _ in update.inputs] == ["problem", "other_answers", "your_answer", "other_answers_2"]
    assert [n for n, _, _ in update.outputs] == ["reasoning", "answer"]     # no second reasoning field


# ---------------------------------------------------------------------------- compiling
def test_bootstrap_fewshot_gives_every_inner_predictor_demos(write_pipe):
    rows = [{"problem": f"p{i}", "answer": f"a{i}"} for i in range(6)]

    def rule(request):
        p = field(request, "problem")
        return {"reasoning": f"since {p}", "answer": "a" + p[1:]}
    prog = pipec.load(pipe(write_pipe, ', agents: 2, rounds: 1, judge: "judge"'),
                      lm=pipec.ScriptedLM(rule=rule), cache=False)
    compiled = prog.compile(rows[:4], rows[4:], "exact_match(answer)", "bootstrap_fewshot", budget=400,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"solve.answer", "solve.update", "solve.judge"}
    answer, update, judge = (params[n].demos for n in ("solve.answer", "solve.update", "solve.judge"))
    assert len(answer) == len(update) == len(judge) == 2
    assert answer[0] == {"problem": answer[0]["problem"], "reasoning": f"since {answer[0]['problem']}",
                         "answer": "a" + answer[0]["problem"][1:]}
    assert set(update[0]) == {"problem", "your_answer", "other_answers", "reasoning", "answer"}
    assert set(judge[0]) == {"problem", "debate", "answer"}
    assert judge[0]["debate"].startswith("Round 1\nAgent 1:")
    # The compiled program's prompts carry the demos.
    lm = pipec.ScriptedLM(rule=rule)
    compiled_run = pipec.load(pipe(write_pipe, ', agents: 2, rounds: 1, judge: "judge"'), lm=lm, cache=False)
    compiled_run.apply(params)
    assert compiled_run(problem="p9").answer == "a9"
    assert all(any(m["role"] == "assistant" for m in r.messages) for r in lm.requests)


# ---------------------------------------------------------------------------- end to end
@pytest.mark.e2e
def test_e2e_two_agents_one_round_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipec", "run", "examples/debate.pipe", "--json", "--trace",
         "--input", "question=What is the capital of France?"],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"], out
    assert isinstance(out["outputs"]["answer"], str)
    transcript = out["outputs"]["transcript"]
    assert transcript.startswith("Round 1\nAgent 1 (cold):") and "Round 2" in transcript and "Vote: " in transcript
    predictors = [r["predictor"] for r in out["trace"] if r["attempt"] == 1]
    assert predictors == ["solve.answer.cold", "solve.answer.warm", "solve.update.cold", "solve.update.warm"]
    print(f"debate e2e: {elapsed:.1f} s")
