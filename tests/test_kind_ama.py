"""AMA (Ask Me Anything, Arora et al.): the LM writes k open-ended questions, each is answered, and
the answers are combined by a vote weighted with accuracies learned from how the slots agree over
the calls of one program (a majority vote before any history).

Scripted LMs tell the two parts apart by their reply schemas and answer each question by its slot
(the question text is `Q<slot>`), so the answers each slot gives can be scripted row by row.
"""
from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import SlowLM, first_user_value, system_of, run_example

import pipec
from pipec.inspection import inspect_program
from pipec.lm.base import LMError
from pipec.modules.ama import PromptAccuracies

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

PIPE = """
    lm base = "openai/gpt-4o-mini" (temperature: 0, max_tokens: 80)
    signature Claim {
        "Decide whether the text supports the claim."
        in  text: str
        in  claim: str
        out label: enum(yes, no, maybe)
        out note: str
    }
    module judge = AMA(Claim{opts})
    pipeline p(text: str, claim: str) -> (label, note, questions: list[str], votes: str) {
        j = judge(text: text, claim: claim)
        return label = j.label, note = j.note, questions = j.questions, votes = j.votes
    }
"""
LABELS = ("yes", "no", "maybe")


def load(write_pipe, lm, opts=", field: label"):
    return pipec.load(write_pipe(PIPE.replace("{opts}", opts)), lm=lm, cache=False)


def part(request) -> str:
    props = list(request.schema["properties"])
    if props == ["questions"]:
        return "reformat"
    assert props == ["response", "label", "note"], props
    return "answer"


def slot_of(request) -> int:
    """The slot an answer call is for: its sample number."""
    return request.sample


def script(answers, questions=None, note=None):
    """A rule: the reformat call writes `questions` (Q1..Qk by default), and the answer to question
    Q<i+1> is `answers[i]` (a label; a BaseException is raised, a string starting RAW: sent as is)."""
    def rule(request):
        if part(request) == "reformat":
            return {"questions": questions if questions is not None else [f"Q{i + 1}" for i in range(len(answers))]}
        a = answers[slot_of(request)]
        if isinstance(a, BaseException) or (isinstance(a, str) and a.startswith("RAW:")):
            return a if isinstance(a, BaseException) else a[4:]
        return {"response": f"slot {slot_of(request) + 1} says {a}", "label": a,
                "note": note[slot_of(request)] if note else "n"}
    return rule


class Rows:
    """One LM for many rows: the row number is read from the input text (`row 7`), and `pattern(row)`
    gives each slot's label for that row."""

    def __init__(self, pattern):
        self.pattern = pattern

    def __call__(self, request):
        row = int(first_user_value(request, "text").split()[1])
        answers = self.pattern(row)
        return script(answers)(request)


def reliable_first(row: int) -> list[str]:
    """Slot 1 always right; slots 2 and 3 each right half the time, independently, and when both are
    wrong they pick the same wrong label half the time (uniform errors, as the model assumes)."""
    truth = row % 3
    wrong_2 = (truth + 1) % 3
    wrong_3 = wrong_2 if row % 8 == 3 else (truth + 2) % 3
    s2 = truth if row % 4 in (0, 2) else wrong_2
    s3 = truth if row % 4 in (0, 1) else wrong_3
    return [LABELS[truth], LABELS[s2], LABELS[s3]]


def test_k_questions_are_written_by_the_lm_each_answered_and_with_no_history_the_majority_wins(write_pipe):
    lm = pipec.ScriptedLM(rule=script(["no", "yes", "yes"]))
    pred = load(write_pipe, lm)(text="The shop opens at nine.", claim="It is open at ten.")
    assert pred.ok, pred.error
    assert pred.label == "yes" and pred.questions == ["Q1", "Q2", "Q3"]
    assert pred.votes == ("yes: slots 2, 3 (weight 4.22); no: slot 1 (weight 2.11); "
                          "accuracies 0.80, 0.80, 0.80 from 0 earlier rows")
    assert [r.predictor for r in pred.trace] == ["judge.reformat"] + ["judge.answer"] * 3
    reformat, *answers = lm.requests
    # The reformat call sees the inputs and is asked for k open-ended questions, not for the answer.
    assert reformat.messages[-1]["content"] == "text: The shop opens at nine.\nclaim: It is open at ten."
    assert "The task: Decide whether the text supports the claim." in system_of(reformat)
    assert "rewrite what it asks about these inputs as 3 different open-ended questions" in system_of(reformat)
    assert "exactly 3 open-ended questions" in system_of(reformat)
    # Each answer call sees the inputs and its own question, answers it openly, then gives the outputs.
    assert [a.messages[-1]["content"].splitlines()[-1] for a in answers] == ["question: Q1", "question: Q2",
                                                                            "question: Q3"]
    assert all(a.messages[-1]["content"].startswith("text: The shop opens at nine.\nclaim:") for a in answers)
    assert [a.sample for a in answers] == [0, 1, 2]
    assert "First answer the open-ended question" in system_of(answers[0])
    # The winner's outputs are returned: the earliest slot that gave the winning answer.
    assert pred.note == "n"


def test_learned_accuracies_let_a_reliable_slot_outvote_two_unreliable_ones(write_pipe):
    lm = pipec.ScriptedLM(rule=Rows(reliable_first))
    prog = load(write_pipe, lm)
    for row in range(24):
        assert prog(text=f"row {row}", claim="c").ok
    estimates = prog.modules["judge"].history.estimates()
    assert estimates[0] > 0.85 and estimates[1] == estimates[2] < 0.6

    # Slots 2 and 3 agree on a wrong label against slot 1: a majority vote would pick theirs.
    def final(row):
        return ["yes", "no", "no"] if row == 99 else reliable_first(row)
    lm.rule = Rows(final)
    pred = prog(text="row 99", claim="c")
    assert pred.label == "yes"
    assert pred.votes.startswith("yes: slot 1 (weight ") and "; no: slots 2, 3 (weight " in pred.votes
    assert pred.votes.endswith("from 24 earlier rows")

    fresh = load(write_pipe, pipec.ScriptedLM(rule=Rows(final)))
    assert fresh(text="row 99", claim="c").label == "no"          # no history: the majority


def test_free_text_answers_let_more_slots_win_and_accuracy_break_the_tie(write_pipe):
    def pattern(row):                       # slot 3 always right; slots 1 and 2 mostly wrong, never together
        if row == 99:
            return ["alpha", "beta", "gamma"]
        return [f"w{row}a" if row % 4 else "right", f"w{row}b" if row % 4 != 1 else "right", "right"]

    def rule(request):
        if part(request) == "reformat":
            return {"questions": ["Q1", "Q2", "Q3"]}
        row = int(first_user_value(request, "text").split()[1])
        return {"response": "r", "label": "maybe", "note": pattern(row)[slot_of(request)]}
    prog = load(write_pipe, pipec.ScriptedLM(rule=rule), ", field: note")
    assert prog(text="row 99", claim="c").note == "alpha"         # three different answers, no history: slot 1
    for row in range(16):
        assert prog(text=f"row {row}", claim="c").ok
    assert prog(text="row 99", claim="c").note == "gamma"         # now the most reliable slot's
    assert prog.modules["judge"].labels is None


def test_prompts_sets_k_extra_questions_are_ignored_and_missing_ones_abstain(write_pipe):
    lm = pipec.ScriptedLM(rule=script(["yes", "no", "no", "yes"], questions=[f"Q{i}" for i in range(1, 7)]))
    prog = load(write_pipe, lm, ", prompts: 4, field: label")
    pred = prog(text="t", claim="c")
    assert len(lm.requests) == 5 and pred.questions == ["Q1", "Q2", "Q3", "Q4"]
    assert "as 4 different open-ended questions" in system_of(lm.requests[0])
    assert pred.label == "yes"                                    # 2 against 2: the earliest slot

    lm = pipec.ScriptedLM(rule=script(["no", "yes", "yes", "yes"], questions=["Q1", " ", "Q3"]))
    pred = load(write_pipe, lm, ", prompts: 4, field: label")(text="t", claim="c")
    assert pred.ok and len(lm.requests) == 3 and pred.questions == ["Q1", "", "Q3"]
    assert pred.votes.startswith("no: slot 1 (weight ") and "; no answer from slots 2, 4;" in pred.votes


def test_an_answer_that_fails_abstains(write_pipe):
    lm = pipec.ScriptedLM(rule=script(["no", "RAW:not json", LMError("provider down")]))
    pred = load(write_pipe, lm)(text="t", claim="c")
    assert pred.ok and pred.label == "no"
    assert "no answer from slots 2, 3" in pred.votes
    failed = [(r.predictor, r.attempt) for r in pred.trace if r.error]
    assert failed == [("judge.answer", 1), ("judge.answer", 2), ("judge.answer", 1)]


def test_a_reformat_reply_that_does_not_parse_asks_the_task_itself(write_pipe):
    def rule(request):
        if part(request) == "reformat":
            return ""                                               # nothing usable, twice
        return script(["maybe"])(request)
    lm = pipec.ScriptedLM(rule=rule)
    pred = load(write_pipe, lm)(text="t", claim="c")
    assert pred.ok and pred.label == "maybe"
    assert [(r.predictor, r.attempt) for r in pred.trace] == [("judge.reformat", 1), ("judge.reformat", 2),
                                                              ("judge.answer", 1)]
    assert pred.questions == ["Decide whether the text supports the claim."]
    assert pred.votes.endswith("; the reformat reply did not parse, so the task itself was asked")


def test_the_reply_schema_caps_the_questions_at_k(write_pipe):
    lm = pipec.ScriptedLM(rule=script(["yes"] * 4))
    assert load(write_pipe, lm, ", prompts: 4")(text="t", claim="c").ok
    assert lm.requests[0].schema["properties"]["questions"]["maxItems"] == 4
    assert "maxItems" not in json.dumps(lm.requests[1].schema)       # only the questions are capped


def test_the_cap_stops_a_grammar_constrained_model_after_k_items():
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    from pipec.modules.base import Predictor
    from pipec.dsl.types import STR, Type
    p = Predictor("m", "", [("q", STR, "")], [("questions", Type("list", arg=STR), "")], "lm", {},
                  max_items={"questions": 2})
    rule = next(line for line in llama_grammar.json_schema_to_gbnf(json.dumps(p.schema)).splitlines()
                if line.startswith("questions ::="))
    assert '("," space string)?' in rule and "*" not in rule       # a second item at most, never a third


def test_with_no_question_written_the_task_itself_is_asked(write_pipe):
    lm = pipec.ScriptedLM(rule=script(["no"], questions=["", "  "]))
    pred = load(write_pipe, lm)(text="t", claim="c")
    assert pred.ok and pred.label == "no"
    assert pred.questions == ["Decide whether the text supports the claim."]
    assert lm.requests[-1].messages[-1]["content"].endswith("question: Decide whether the text supports the claim.")
    assert pred.votes.endswith("; the reformat call wrote no question, so the task itself was asked")
    assert "no answer from slots 2, 3" in pred.votes


def test_when_every_answer_fails_the_call_fails(write_pipe):
    pred = load(write_pipe, pipec.ScriptedLM(rule=script(["RAW:"] * 3)))(text="t", claim="c")
    assert not pred.ok and "every answer failed" in pred.error


def retry_everything(rule):
    """The worst case: every first reply is empty (unparseable); the retry gets the real answer."""
    def wrapped(request):
        if request.messages[-1]["content"].startswith("Your reply could not be used"):
            return rule(request)
        return ""
    return wrapped


@pytest.mark.parametrize("k", [3, 5])
def test_max_calls_is_the_calls_made_in_the_worst_case(write_pipe, k):
    lm = pipec.ScriptedLM(rule=retry_everything(script(["yes"] * k)))
    prog = load(write_pipe, lm, f", prompts: {k}")
    pred = prog(text="t", claim="c")
    assert pred.ok, pred.error
    assert len(lm.requests) == prog.modules["judge"].max_calls() == inspect_program(prog)["max_lm_calls"] == 2 * (1 + k)


def test_answers_run_in_parallel(write_pipe):
    lm = SlowLM(rule=script(["yes"] * 4), delay=0.2)
    prog = load(write_pipe, lm, ", prompts: 4")
    start = time.perf_counter()
    assert prog(text="t", claim="c").ok
    assert lm.max_in_flight == 4 and time.perf_counter() - start < 0.2 * 4


def test_rows_of_a_batch_add_to_one_history(write_pipe):
    prog = load(write_pipe, SlowLM(rule=Rows(reliable_first), delay=0.01))
    preds = prog.run_batch([{"text": f"row {r}", "claim": "c"} for r in range(12)], concurrency=4)
    assert all(p.ok for p in preds)
    assert prog.modules["judge"].history.rows == 12


def test_the_history_counts_every_row_added_from_many_threads():
    history = PromptAccuracies(3, labels=3)
    rows = [["a", "a", "b"], ["a", None, "a"]] * 200

    def add(chunk):
        for keys in chunk:
            history.add(keys)
    threads = [threading.Thread(target=add, args=(rows[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert history.rows == 400
    assert history._both[0][1] == 200 and history._both[0][2] == 400 and history._agreed[0][2] == 200


@pytest.mark.parametrize("opts, message", [
    (", prompts: 2", "option 'prompts' of AMA module judge must be at least 3"),
    (", prompts: 3.5", "option 'prompts' of AMA module judge must be an integer"),
    (", field: lable", "option 'field' of AMA module judge names 'lable', which is not an output of Claim"),
    (', field: "label"', "option 'field' of AMA module judge must be a name"),
    (", n: 3", "unknown option 'n' for AMA module judge"),
])
def test_bad_options_are_rejected_when_loading(write_pipe, opts, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), opts)
    assert message in str(err.value)


@pytest.mark.parametrize("field", ["out votes: str", "out questions: list[str]"])
def test_signature_fields_named_like_the_extra_outputs_are_rejected(write_pipe, field):
    src = PIPE.replace("out note: str", f"out note: str {field}").replace("{opts}", "")
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src), lm=pipec.ScriptedLM([]), cache=False)
    assert f"AMA adds an output named '{field.split()[1].rstrip(':')}'" in str(err.value)


def test_bootstrap_fewshot_gives_both_parts_demos(write_pipe):
    def rule(request):
        if part(request) == "reformat":
            return {"questions": [f"Q{i}" for i in range(1, 4)]}
        claim = first_user_value(request, "claim")
        return {"response": "r", "label": "yes" if claim.startswith("y") else "no", "note": "n"}
    prog = load(write_pipe, pipec.ScriptedLM(rule=rule))
    rows = [{"text": "t", "claim": c, "label": "yes" if c.startswith("y") else "no"}
            for c in ["ya", "nb", "yc", "nd", "ye"]]
    compiled = prog.compile(trainset=rows[:3], valset=rows[3:], metric="exact_match(label)",
                            optimizer="bootstrap_fewshot", options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"judge.reformat", "judge.answer"}
    assert all(len(params[n].demos) == 2 for n in params)
    assert params["judge.reformat"].demos[0]["questions"] == ["Q1", "Q2", "Q3"]
    assert params["judge.answer"].demos[0]["question"].startswith("Q")


@pytest.mark.e2e
def test_example_runs_on_the_embedded_model_through_the_cli(tmp_path):
    result = run_example("ama.pipe", tmp_path, "premise=The museum closes at five on weekdays.",
                         "hypothesis=The museum is open at noon on a Tuesday.", trace=True)
    assert result["outputs"]["label"] in ("entailment", "contradiction", "neutral")
    assert 1 <= len(result["outputs"]["questions"]) <= 3
    assert 2 <= len(result["trace"]) <= 8            # max_calls of the example
