"""STaR rationalization in `bootstrap_fewshot` (`rationalize: true`): a row the teacher gets wrong is
retried once with its answer as a hint; the retried trace becomes a demo, without the hint."""
from __future__ import annotations

import json

import pytest
from conftest import first_user_value, system_of

import pipec

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

PIPE = """
    signature Solve { "Answer the question." in question: str out answer: str }
    module solve = ChainOfThought(Solve)
    pipeline qa(question: str) -> (answer) {
        s = solve(question: question)
        return answer = s.answer
    }
"""
TRAIN = [{"question": "easy one", "answer": "1"}, {"question": "hard two", "answer": "2"},
         {"question": "easy three", "answer": "3"}, {"question": "hard four", "answer": "4"}]
VAL = [{"question": "easy five", "answer": "5"}, {"question": "hard six", "answer": "6"}]
ANSWERS = {r["question"]: r["answer"] for r in TRAIN + VAL}


def has_demos(request) -> bool:
    return any(m["role"] == "assistant" for m in request.messages[1:-1])


def hinted(request) -> bool:
    return "Hint: the correct answer is" in system_of(request)


def make_rule(mention_hint=False):
    """Easy questions are right zero-shot, hard ones only with demos or with the hint."""
    def rule(request):
        q = first_user_value(request, "question")
        if hinted(request):
            assert f"answer: {ANSWERS[q]}" in system_of(request)       # the hint is this row's answer
            why = "as the hint says" if mention_hint else "worked backwards"
            return {"reasoning": f"rationalized {q}, {why}", "answer": ANSWERS[q]}
        ok = q.startswith("easy") or has_demos(request)
        return {"reasoning": f"solved {q}", "answer": ANSWERS[q] if ok else "wrong"}
    return rule


@pytest.fixture
def qa(write_pipe):
    return write_pipe(PIPE, "qa.pipe")


def compile_qa(path, *, rule=None, budget=None, **options):
    lm = pipec.ScriptedLM(rule=rule or make_rule())
    prog = pipec.load(path, lm=lm, cache=False)
    options = {"max_labeled": 0, **options}
    compiled = prog.compile(TRAIN, VAL, "exact_match(answer)", "bootstrap_fewshot", seed=0, budget=budget,
                            options=options)
    return compiled, lm


def demo_questions(compiled):
    return sorted(d["question"] for d in compiled.params()["solve"].demos)


def test_a_failed_row_becomes_a_demo_only_through_the_hinted_retry(qa):
    plain, plain_lm = compile_qa(qa)
    assert demo_questions(plain) == ["easy one", "easy three"]
    assert not any(hinted(r) for r in plain_lm.requests)
    star, lm = compile_qa(qa, rationalize=True)
    assert demo_questions(star) == ["easy one", "easy three", "hard four", "hard two"]
    by_q = {d["question"]: d for d in star.params()["solve"].demos}
    assert by_q["hard two"] == {"question": "hard two", "reasoning": "rationalized hard two, worked backwards", "answer": "2"}
    assert by_q["easy one"]["reasoning"] == "solved easy one"           # passing rows are not retried
    assert sum(hinted(r) for r in lm.requests) == 2                       # one retry per failed row


def test_the_stored_demos_and_instruction_carry_no_hint(qa, tmp_path):
    star, _ = compile_qa(qa, rationalize=True)
    blob = star.save(tmp_path / "star.json").read_text()
    assert "Hint" not in blob and "hint" not in json.dumps(star.params()["solve"].demos)
    assert star.params()["solve"].instruction == "Answer the question."


def test_a_rationale_that_mentions_the_hint_is_not_kept(qa):
    star, lm = compile_qa(qa, rule=make_rule(mention_hint=True), rationalize=True)
    assert sum(hinted(r) for r in lm.requests) == 2
    assert demo_questions(star) == ["easy one", "easy three"]


def test_a_retry_that_still_fails_gives_no_demo(qa):
    def stubborn(request):
        q = first_user_value(request, "question")
        ok = q.startswith("easy") or (has_demos(request) and not hinted(request))
        return {"reasoning": f"tried {q}", "answer": ANSWERS[q] if ok else "wrong"}
    star, lm = compile_qa(qa, rule=stubborn, rationalize=True)
    assert sum(hinted(r) for r in lm.requests) == 2
    assert demo_questions(star) == ["easy one", "easy three"]


def test_off_by_default_changes_nothing(qa, tmp_path):
    default, lm_default = compile_qa(qa)
    off, lm_off = compile_qa(qa, rationalize=False)
    assert default.save(tmp_path / "a.json").read_bytes() == off.save(tmp_path / "b.json").read_bytes()
    assert [r.messages for r in lm_default.requests] == [r.messages for r in lm_off.requests]
    assert default.params() == off.params()
    assert not any(hinted(r) for r in lm_default.requests)


@pytest.mark.parametrize("budget", [3, 5, 8])
def test_retries_are_paid_from_the_budget(qa, budget):
    star, lm = compile_qa(qa, rationalize=True, budget=budget)
    assert len(lm.requests) <= budget
    assert star.report.lm_requests == len(lm.requests)


def test_retries_are_counted(qa):
    plain, plain_lm = compile_qa(qa)
    star, lm = compile_qa(qa, rationalize=True)
    assert star.report.lm_requests == len(lm.requests)
    assert len(lm.requests) - len(plain_lm.requests) == 2      # the two retries, nothing else


def test_mipro_bootstraps_its_demo_sets_with_rationalize_too(qa):
    """mipro builds its bootstrapped demo sets with bootstrap_fewshot, options included: with
    `rationalize: true` a hard row enters a demo set only through the hinted retry."""
    def run(**options):
        lm = pipec.ScriptedLM(rule=make_rule())
        prog = pipec.load(qa, lm=lm, cache=False)
        compiled = prog.compile(TRAIN, VAL, "exact_match(answer)", "mipro", seed=0, options={
            "max_labeled": 0, "trials": 2, "instructions": 1, "minibatch": 2, "k": 0, **options})
        return compiled, lm
    _, plain_lm = run()
    assert not any(hinted(r) for r in plain_lm.requests)
    compiled, lm = run(rationalize=True)
    assert sum(hinted(r) for r in lm.requests) >= 1
    hard = [d for d in compiled.params()["solve"].demos if d["question"].startswith("hard")]
    assert all("rationalized" in d["reasoning"] for d in hard)
    assert not any("Hint" in json.dumps(d) for d in compiled.params()["solve"].demos)
