"""CumulativeReasoning (Zhang et al.): a proposer suggests one proposition per step, verifiers accept
or reject it, accepted ones build the context, and a reporter answers and says when it is done.

Scripted LMs tell the parts apart by their reply schemas; the proposer's proposition for step s is
`p<s>` unless a test says otherwise, so the accepted and rejected lists can be followed exactly.
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
    signature Deduce {
        "Answer the question by deduction from the facts."
        in  facts: str
        in  question: str
        out answer: enum(yes, no, unknown)
    }
    module d = CumulativeReasoning(Deduce{opts})
    pipeline p(facts: str, question: str) -> (answer, propositions: list[str]) {
        r = d(facts: facts, question: question)
        return answer = r.answer, propositions = r.propositions
    }
"""


def load(write_pipe, lm, opts=""):
    return pipec.load(write_pipe(PIPE.replace("{opts}", opts)), lm=lm, cache=False)


def part(request) -> str:
    props = list(request.schema["properties"])
    return {"proposition": "propose", "reasoning": "verify"}.get(props[0], "report")


def listed(request, field: str) -> list[str]:
    return json.loads(first_user_value(request, field))


class Script:
    """propose: `proposals[step]` (default p<step>); verify: invalid for propositions in `invalid` (or
    per verifier sample via `verdict(prop, sample)`); report: done once `done_at` propositions stand,
    answering `yes` with an even count and `no` with an odd one. A BaseException is raised; RAW: is sent as is."""

    def __init__(self, invalid=(), done_at=99, proposals=None, verdict=None, reports=None):
        self.invalid, self.done_at, self.proposals = set(invalid), done_at, proposals or {}
        self.verdict, self.reports = verdict, reports or {}

    def __call__(self, request):
        p = part(request)
        if p == "propose":
            out = self.proposals.get(request.sample, f"p{request.sample}")
        elif p == "verify":
            prop = first_user_value(request, "proposition")
            ok = self.verdict(prop, request.sample) if self.verdict else prop not in self.invalid
            out = {"reasoning": f"checked {prop}", "verdict": "valid" if ok else "invalid"}
        else:
            n = len(listed(request, "propositions"))
            out = self.reports.get(n, {"answer": "no" if n % 2 else "yes", "done": n >= self.done_at})
        if isinstance(out, BaseException) or (isinstance(out, str) and out.startswith("RAW:")):
            return out if isinstance(out, BaseException) else out[4:]
        return {"proposition": out} if p == "propose" else out


def test_propose_verify_accumulate_and_report_until_done(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(invalid={"p1"}, done_at=2))
    prog = load(write_pipe, lm, ", max_steps: 5")
    pred = prog(facts="F", question="Q")
    assert pred.ok, pred.error
    assert [part(r) for r in lm.requests] == ["propose", "verify", "report", "propose", "verify",
                                              "propose", "verify", "report"]
    assert pred.propositions == ["p0", "p2"] and pred.answer == "yes"
    propose = [r for r in lm.requests if part(r) == "propose"]
    # each proposal sees the accepted propositions and the rejected ones, and is a fresh draw (sample = step)
    assert [(listed(r, "propositions"), listed(r, "rejected")) for r in propose] == \
        [([], []), (["p0"], []), (["p0"], ["p1"])]
    assert [r.sample for r in propose] == [0, 1, 2]
    assert propose[0].messages[-1]["content"] == "facts: F\nquestion: Q\npropositions: []\nrejected: []"
    assert "propose one new proposition" in system_of(propose[0])
    verify = [r for r in lm.requests if part(r) == "verify"]
    assert verify[2].messages[-1]["content"] == 'facts: F\nquestion: Q\npropositions: ["p0"]\nproposition: p2'
    assert verify[0].schema["properties"]["verdict"]["enum"] == ["valid", "invalid"]
    assert "Check one proposed step of reasoning for this task: Answer the question" in system_of(verify[0])
    report = [r for r in lm.requests if part(r) == "report"]
    assert [listed(r, "propositions") for r in report] == [["p0"], ["p0", "p2"]]
    assert list(report[0].schema["properties"]) == ["answer", "done"]
    assert [r.predictor for r in pred.trace][:3] == ["d.propose", "d.verify", "d.report"]


def test_max_steps_bounds_the_run_and_the_last_report_is_the_answer(write_pipe):
    lm = pipec.ScriptedLM(rule=Script())                     # never done
    prog = load(write_pipe, lm, ", max_steps: 3")
    pred = prog(facts="F", question="Q")
    assert pred.propositions == ["p0", "p1", "p2"] and pred.answer == "no"       # three propositions: odd
    assert len(lm.requests) == 9 and prog.modules["d"].max_calls() == 2 * 3 * 3


def test_with_nothing_accepted_the_reporter_answers_once_at_the_end(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(invalid={"p0", "p1"}))
    pred = load(write_pipe, lm, ", max_steps: 2")(facts="F", question="Q")
    assert pred.ok and pred.propositions == [] and pred.answer == "yes"
    assert [part(r) for r in lm.requests] == ["propose", "verify", "propose", "verify", "report"]
    assert listed(lm.requests[2], "rejected") == ["p0"]


@pytest.mark.parametrize("accept, accepted", [("majority", ["p0", "p1"]), ("all", [])])
def test_several_verifiers_accept_by_majority_or_all(write_pipe, accept, accepted):
    lm = pipec.ScriptedLM(rule=Script(verdict=lambda prop, sample: sample != 2))        # verifier 3 always objects
    pred = load(write_pipe, lm, f', max_steps: 2, verifiers: 3, accept: "{accept}", sample_temperature: 0.9')(
        facts="F", question="Q")
    assert pred.ok and pred.propositions == accepted
    verify = [r for r in lm.requests if part(r) == "verify"]
    assert [r.sample for r in verify] == [0, 1, 2] * 2 and {r.params["temperature"] for r in verify} == {0.9}


def test_a_single_verifier_runs_at_the_module_settings(write_pipe):
    lm = pipec.ScriptedLM(rule=Script())
    load(write_pipe, lm, ", max_steps: 1")(facts="F", question="Q")
    verify = next(r for r in lm.requests if part(r) == "verify")
    assert verify.sample == 0 and "temperature" not in verify.params


def test_a_repeated_proposition_uses_its_step_without_being_verified_again(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(proposals={0: "same", 1: "Same.", 2: "p2"}))
    pred = load(write_pipe, lm, ", max_steps: 3")(facts="F", question="Q")
    assert pred.propositions == ["same", "p2"]
    assert [part(r) for r in lm.requests] == ["propose", "verify", "report", "propose", "propose", "verify", "report"]


def test_failed_verifiers_count_against_and_failed_proposals_use_their_step(write_pipe):
    script = Script(proposals={0: "RAW:"})

    def rule(request):
        if part(request) == "verify" and first_user_value(request, "proposition") == "p1" and request.sample == 1:
            return LMError("verifier down")
        return script(request)
    lm = pipec.ScriptedLM(rule=rule)
    pred = load(write_pipe, lm, ", max_steps: 3, verifiers: 2")(facts="F", question="Q")
    assert pred.ok, pred.error
    # step 0's proposal never parsed; p1 got one valid verdict of two (not a majority); p2 got both
    assert pred.propositions == ["p2"]
    assert [(r.predictor, r.attempt) for r in pred.trace if r.error] == \
        [("d.propose", 1), ("d.propose", 2), ("d.verify", 1)]


def test_a_failed_report_is_not_done_and_is_asked_again_when_the_bound_allows(write_pipe):
    failures = [1, 2]                               # the first report on [p0, p1] fails, with its retry

    def rule(request):
        if part(request) == "report" and len(listed(request, "propositions")) == 2 and failures:
            failures.pop()
            return ""
        return Script(invalid={"p2"})(request)
    lm = pipec.ScriptedLM(rule=rule)
    pred = load(write_pipe, lm, ", max_steps: 3")(facts="F", question="Q")
    # step 3 was rejected, so a report is left in the bound: asked again on [p0, p1], it answers
    assert pred.ok and pred.answer == "yes" and pred.propositions == ["p0", "p1"]
    assert [listed(r, "propositions") for r in lm.requests if part(r) == "report"] == \
        [["p0"], ["p0", "p1"], ["p0", "p1"], ["p0", "p1"]]


def test_when_the_last_report_fails_at_the_bound_the_earlier_one_stands(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(reports={2: "RAW:"}))
    pred = load(write_pipe, lm, ", max_steps: 2")(facts="F", question="Q")
    assert pred.ok and pred.answer == "no" and pred.propositions == ["p0", "p1"]      # the report on [p0]
    assert len(lm.requests) == 2 * 3 + 1


def test_when_every_reply_fails_the_call_fails_cleanly(write_pipe):
    pred = load(write_pipe, pipec.ScriptedLM(rule=lambda r: "not json"), ", max_steps: 2")(facts="F", question="Q")
    assert not pred.ok and "the report failed" in pred.error


def retry_everything(rule):
    """The worst case: every first reply is empty (unparseable); the retry gets the real answer."""
    def wrapped(request):
        if request.messages[-1]["content"].startswith("Your reply could not be used"):
            return rule(request)
        return ""
    return wrapped


@pytest.mark.parametrize("opts, calls", [("", 4 * 3), (", max_steps: 2, verifiers: 3", 2 * 5), (", max_steps: 1", 3)])
def test_max_calls_is_the_calls_made_in_the_worst_case(write_pipe, opts, calls):
    lm = pipec.ScriptedLM(rule=retry_everything(Script()))
    prog = load(write_pipe, lm, opts)
    assert prog(facts="F", question="Q").ok
    assert len(lm.requests) == prog.modules["d"].max_calls() == inspect_program(prog)["max_lm_calls"] == 2 * calls


def test_verifiers_run_in_parallel(write_pipe):
    lm = SlowLM(rule=Script(done_at=1), delay=0.2)
    prog = load(write_pipe, lm, ", verifiers: 4")
    start = time.perf_counter()
    assert prog(facts="F", question="Q").ok
    assert lm.max_in_flight == 4 and time.perf_counter() - start < 0.2 * 5


def test_inner_fields_are_renamed_around_the_signatures_own(write_pipe):
    src = """
        signature S { in proposition: str out done: bool out verdict: str }
        module d = CumulativeReasoning(S, max_steps: 1)
        pipeline p(proposition: str) -> (done, verdict) { r = d(proposition: proposition) return done = r.done, verdict = r.verdict }
    """

    def rule(request):
        props = list(request.schema["properties"])
        if props == ["proposition_2"]:
            return {"proposition_2": "x"}
        if props[0] == "reasoning":
            return {"reasoning": "ok", "verdict": "valid"}
        return {"done": False, "verdict": "v", "done_2": True}
    lm = pipec.ScriptedLM(rule=rule)
    pred = pipec.load(write_pipe(src), lm=lm, cache=False)(proposition="P")
    assert pred.ok, pred.error
    assert pred.done is False and pred.verdict == "v"
    # the verifier's verdict shares no prompt with the signature's: only the reporter's done is renamed
    assert list(lm.requests[1].schema["properties"]) == ["reasoning", "verdict"]
    assert list(lm.requests[2].schema["properties"]) == ["done", "verdict", "done_2"]


@pytest.mark.parametrize("opts, message", [
    (", max_steps: 0", "option 'max_steps' of CumulativeReasoning module d must be at least 1"),
    (", verifiers: 0", "option 'verifiers' of CumulativeReasoning module d must be at least 1"),
    (', accept: "most"', "option 'accept' of CumulativeReasoning module d must be one of: majority, all"),
    (", accept: all", "option 'accept' of CumulativeReasoning module d must be a string"),
    (", sample_temperature: -1", "option 'sample_temperature' of CumulativeReasoning module d must be at least 0"),
    (", steps: 3", "unknown option 'steps' for CumulativeReasoning module d"),
])
def test_bad_options_are_rejected_when_loading(write_pipe, opts, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), opts)
    assert message in str(err.value)


def test_a_signature_field_named_propositions_is_rejected(write_pipe):
    src = PIPE.replace("out answer: enum(yes, no, unknown)", "out answer: str out propositions: str")
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src.replace("{opts}", "")), lm=pipec.ScriptedLM([]), cache=False)
    assert "CumulativeReasoning adds an output named 'propositions'" in str(err.value)


def test_bootstrap_fewshot_gives_every_part_demos(write_pipe):
    def rule(request):
        if part(request) == "report":
            return {"answer": first_user_value(request, "question"), "done": True}
        return Script()(request)
    prog = load(write_pipe, pipec.ScriptedLM(rule=rule))
    rows = [{"facts": "F", "question": q, "answer": q} for q in ["yes", "no", "yes", "no", "yes"]]
    compiled = prog.compile(trainset=rows[:3], valset=rows[3:], metric="exact_match(answer)",
                            optimizer="bootstrap_fewshot", options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"d.propose", "d.verify", "d.report"}
    assert all(len(params[n].demos) == 2 for n in params)
    assert params["d.verify"].demos[0]["verdict"] == "valid"
    assert params["d.report"].demos[0]["propositions"] == ["p0"] and params["d.report"].demos[0]["done"] is True


@pytest.mark.e2e
def test_example_runs_on_the_embedded_model_through_the_cli(tmp_path):
    result = run_example("cumulative_reasoning.pipe", tmp_path,
                         "facts=All birds have feathers. Penguins are birds. Tux is a penguin.",
                         "question=Does Tux have feathers?", trace=True)
    assert result["outputs"]["answer"] in ("yes", "no", "unknown")
    assert len(result["outputs"]["propositions"]) <= 3
    assert 2 <= len(result["trace"]) <= 18           # max_calls of the example
