"""MetaPrompting: a conductor consults experts that see only its instruction, verifies, and answers
(Suzgun & Kalai 2024).

Scripted LMs tell the parts apart by the reply schema (the conductor's) and the system message (an
expert's starts with its identity)."""
from __future__ import annotations

import json
import time

import pytest
from conftest import SlowLM, system_of

import pipec
from pipec.modules.meta_prompting import EXPERT, FINAL

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

SRC = """
    signature Solve {
        "Solve the word problem."
        in  problem: str
        out answer: str
    }
    module solve = MetaPrompting(Solve%s)
    pipeline p(problem: str) -> (answer, transcript: str) {
        s = solve(problem: problem)
        return answer = s.answer, transcript = s.transcript
    }
"""
PROBLEM = "A train covers 120 km in 1.5 hours. What is its average speed?"


def part(request) -> str:
    if list(request.schema["properties"]) == ["thought", "done", "consult"]:
        return "conduct"
    return "expert" if system_of(request).startswith("You are ") else "final"


def turn(thought, *consult, done=False):
    return {"thought": thought, "done": done,
            "consult": [{"expert": e, "instruction": i} for e, i in consult]}


def scripted(turns, experts=None, final="80 km/h", lm_cls=pipec.ScriptedLM, **kw):
    """Conductor turns in order ("garbage" does not parse: "{}"); expert answers by instruction (default
    'answer to <instruction>'; "RAW:..." is sent as it is); the final answer ("garbage" does not parse: "{}")."""
    todo = list(turns)

    def rule(request):
        which = part(request)
        if which == "conduct":
            reply = todo.pop(0)
        elif which == "expert":
            instruction = request.messages[1]["content"].removeprefix("instruction: ")    # a retry adds more
            reply = (experts or {}).get(instruction, f"answer to {instruction}")
            reply = reply[4:] if reply.startswith("RAW:") else {"answer": reply}
        else:
            reply = final if final == "garbage" else {"answer": final}
        return "{}" if reply == "garbage" else reply
    return lm_cls(rule=rule, **kw)


def load(write_pipe, lm, options=""):
    return pipec.load(write_pipe(SRC % options), lm=lm, cache=False)


def predictors(pred) -> list[str]:
    return [r.predictor for r in pred.trace]


# ---------------------------------------------------------------------------- control flow
def test_the_conductor_consults_experts_verifies_then_the_final_call_answers(write_pipe):
    lm = scripted([turn("Split it.", ("Expert Physicist", "Speed of 120 km in 1.5 h?"),
                        ("Expert Mathematician", "What is 120 / 1.5?")),
                   turn("Check it.", ("Expert Verifier", "Is 120 km / 1.5 h = 80 km/h right?")),
                   turn("Verified.", done=True)],
                  experts={"Speed of 120 km in 1.5 h?": "80 km/h", "What is 120 / 1.5?": "80",
                           "Is 120 km / 1.5 h = 80 km/h right?": "Yes, correct."})
    prog = load(write_pipe, lm, ", max_rounds: 3, max_experts: 2")
    pred = prog(problem=PROBLEM)
    assert pred.ok, pred.error
    assert pred.answer == "80 km/h"
    assert predictors(pred) == ["solve.conduct", "solve.expert", "solve.expert", "solve.conduct", "solve.expert",
                                "solve.conduct", "solve.final"]
    assert pred.transcript == (
        "Round 1\nConductor: Split it.\n"
        "Expert Physicist was asked:\nSpeed of 120 km in 1.5 h?\nExpert Physicist answered:\n80 km/h\n"
        "Expert Mathematician was asked:\nWhat is 120 / 1.5?\nExpert Mathematician answered:\n80\n"
        "Round 2\nConductor: Check it.\n"
        "Expert Verifier was asked:\nIs 120 km / 1.5 h = 80 km/h right?\nExpert Verifier answered:\nYes, correct.\n"
        "Round 3\nConductor: Verified.\nConductor: ready to give the final answer")
    conduct1, physicist, _, conduct2, verifier, _, final = lm.requests
    # The conductor sees the inputs and, from round 2, the consultations so far.
    assert conduct1.messages[-1]["content"] == f"problem: {PROBLEM}\ntranscript: (no consultations yet)"
    assert "Expert Mathematician answered:\n80" in conduct2.messages[-1]["content"]
    assert "Experts have no memory" in system_of(conduct1)
    assert "The task: Solve the word problem." in system_of(conduct1)
    # An expert has a fresh context: its identity, then only the conductor's instruction.
    assert system_of(physicist).startswith(f"You are Expert Physicist.\n\n{EXPERT}")
    assert [m["role"] for m in physicist.messages] == ["system", "user"]
    assert physicist.messages[-1]["content"] == "instruction: Speed of 120 km in 1.5 h?"
    assert all(PROBLEM not in m["content"] and "Solve the word problem" not in m["content"]
               for m in physicist.messages + verifier.messages)
    assert system_of(verifier).startswith("You are Expert Verifier.")
    # The final call is the conductor's last turn: the inputs and the whole transcript.
    assert FINAL in system_of(final)
    assert final.messages[-1]["content"] == f"problem: {PROBLEM}\ntranscript: {pred.transcript}"


def test_experts_of_one_round_run_in_parallel(write_pipe):
    lm = scripted([turn("fan out", ("Expert A", "a?"), ("Expert B", "b?"), ("Expert C", "c?")),
                   turn("done", done=True)], lm_cls=SlowLM, delay=0.2)
    prog = load(write_pipe, lm, ", max_experts: 3")
    start = time.perf_counter()
    pred = prog(problem="q")
    assert pred.ok, pred.error
    assert lm.max_in_flight == 3
    assert time.perf_counter() - start < 1.2        # 4 sequential steps of 0.2 s, not 6
    assert [r.sample for r in lm.requests if part(r) == "expert"] == [0, 1, 2]


def test_max_experts_bounds_a_round_and_the_transcript_says_what_was_dropped(write_pipe):
    lm = scripted([turn("many", ("E1", "one"), ("E2", "two"), ("E3", "three")), turn("ok", done=True)])
    pred = load(write_pipe, lm, ", max_experts: 2")(problem="q")
    assert pred.ok and predictors(pred).count("solve.expert") == 2
    assert "(1 more consultations dropped: at most 2 per round)" in pred.transcript
    assert "three" not in pred.transcript


def test_done_ends_the_consultations_even_with_experts_named(write_pipe):
    lm = scripted([turn("I know it", ("Expert X", "anything"), done=True)])
    pred = load(write_pipe, lm)(problem="q")
    assert predictors(pred) == ["solve.conduct", "solve.final"]
    assert "Expert X" not in pred.transcript


def test_a_turn_that_consults_no_one_ends_the_consultations(write_pipe):
    lm = scripted([turn("hmm"), turn("never asked")])
    pred = load(write_pipe, lm)(problem="q")
    assert predictors(pred) == ["solve.conduct", "solve.final"]
    assert pred.transcript.endswith("Conductor: consulted no one")


def test_max_rounds_bounds_the_conductor(write_pipe):
    lm = scripted([turn(f"t{i}", ("E", f"q{i}")) for i in range(5)])
    pred = load(write_pipe, lm, ", max_rounds: 2")(problem="q")
    assert predictors(pred) == ["solve.conduct", "solve.expert"] * 2 + ["solve.final"]


@pytest.mark.parametrize("options, expected", [("", 2 * (3 * 2 + 1)), (", max_rounds: 2, max_experts: 3", 18),
                                               (", max_rounds: 1", 6)])
def test_max_calls_is_the_worst_case_and_is_reached(write_pipe, options, expected):
    seen = set()

    def rule(request):                              # every first attempt fails to parse; retries are valid
        key = json.dumps(request.messages[:2]) + str(request.sample)
        if key not in seen:
            seen.add(key)
            return "{}"
        if part(request) == "conduct":
            return turn("go", *[("E", f"q{i}-{len(seen)}") for i in range(4)])
        return {"answer": "x"}
    lm = pipec.ScriptedLM(rule=rule)
    prog = load(write_pipe, lm, options)
    pred = prog(problem="q")
    assert pred.ok, pred.error
    assert prog.modules["solve"].max_calls() == expected == len(lm.requests) == pred.lm_calls


# ---------------------------------------------------------------------------- bad replies
def test_an_expert_that_cannot_answer_is_noted_and_the_conductor_carries_on(write_pipe):
    lm = scripted([turn("ask", ("Expert A", "a?")), turn("ask again", ("Expert B", "b?")), turn("ok", done=True)],
                  experts={"a?": "RAW:{}"})
    pred = load(write_pipe, lm)(problem="q")
    assert pred.ok, pred.error
    assert "Expert A could not answer (reply did not parse, even after a retry" in pred.transcript
    assert "Expert B answered:\nanswer to b?" in pred.transcript
    assert predictors(pred).count("solve.expert") == 3          # a's two attempts, then b


def test_an_unreadable_conductor_turn_ends_the_consultations_and_the_answer_still_comes(write_pipe):
    lm = scripted([turn("ask", ("Expert A", "a?")), "garbage", "garbage"])
    pred = load(write_pipe, lm)(problem="q")
    assert pred.ok, pred.error and pred.answer == "80 km/h"
    assert predictors(pred) == ["solve.conduct", "solve.expert", "solve.conduct", "solve.conduct", "solve.final"]
    assert pred.transcript.endswith("Expert A answered:\nanswer to a?")


def test_a_final_answer_that_cannot_be_read_is_a_recorded_failure(write_pipe):
    lm = scripted([turn("ok", done=True)], final="garbage")
    pred = load(write_pipe, lm)(problem="q")
    assert not pred.ok and pred.error.startswith("s (solve): reply did not parse, even after a retry")


def test_garbage_everywhere_fails_cleanly_within_the_bound(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda r: "{}")
    prog = load(write_pipe, lm)
    pred = prog(problem="q")
    assert not pred.ok and "did not parse" in pred.error
    assert len(lm.requests) == 4                    # a turn and its retry, the final and its retry


# ---------------------------------------------------------------------------- static checks and parts
@pytest.mark.parametrize("options, message", [
    (", max_rounds: 0", "option 'max_rounds' of MetaPrompting module solve must be at least 1"),
    (", max_experts: 0", "option 'max_experts' of MetaPrompting module solve must be at least 1"),
    (', max_experts: "2"', "option 'max_experts' of MetaPrompting module solve must be an integer"),
])
def test_bad_options_are_load_errors(write_pipe, options, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM(), options)
    assert message in str(err.value)


def test_inner_fields_do_not_shadow_the_signatures(write_pipe):
    src = (SRC % "").replace("in  problem: str", "in  problem: str\n        in  thought: str") \
                    .replace("solve(problem: problem)", "solve(problem: problem, thought: problem)")
    lm = pipec.ScriptedLM(rule=lambda r: {"thought_2": "t", "done": True, "consult": []}
                          if "thought_2" in r.schema["properties"] else {"answer": "1"})
    prog = pipec.load(write_pipe(src), lm=lm, cache=False)
    assert prog(problem="q").ok
    conduct = prog.predictors()["solve.conduct"]
    assert [n for n, _, _ in conduct.inputs] == ["problem", "thought", "transcript"]
    assert [n for n, _, _ in conduct.outputs] == ["thought_2", "done", "consult"]


def test_bootstrap_gives_the_conductor_the_experts_and_the_final_call_demos(write_pipe):
    rows = [{"problem": f"p{i}", "answer": f"a{i}"} for i in range(6)]

    def rule(request):
        which = part(request)
        text = request.messages[-1]["content"]
        if which == "conduct":
            p = text.splitlines()[0].removeprefix("problem: ")
            return turn("done", done=True) if "answered" in text else turn("ask", ("Expert", f"solve {p}"))
        if which == "expert":
            return {"answer": "a" + text.removeprefix("instruction: solve p")}
        return {"answer": text.split("answered:\n")[1].splitlines()[0]}
    prog = load(write_pipe, pipec.ScriptedLM(rule=rule))
    compiled = prog.compile(rows[:4], rows[4:], "exact_match(answer)", "bootstrap_fewshot", budget=300,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert {n: len(params[n].demos) for n in params} == {"solve.conduct": 2, "solve.expert": 2, "solve.final": 2}
    assert set(params["solve.expert"].demos[0]) == {"instruction", "answer"}     # nothing of the task's inputs
