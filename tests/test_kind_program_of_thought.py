"""ProgramOfThought: the LM writes Python, the sandbox runs it, errors go back for at most
`max_fixes` fixes, and the outputs come from the program's result (directly when it fits, else
through the answer predictor). Program of Thoughts (Chen et al. 2022) + Self-Debugging (Chen et al. 2023).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import first_user_value, system_of

import pipec
import pipec.sandbox

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model", "sandbox_or_weaker")
_STATUS = pipec.sandbox.sandbox_status()
HAS_SANDBOX = _STATUS.ok and _STATUS.mode == "bwrap"


@pytest.fixture
def sandbox_or_weaker(monkeypatch):
    """These tests are about the module, not the isolation (tests/test_sandbox_isolation.py): without
    bubblewrap they run in the weaker mode, which only the environment can choose."""
    if not HAS_SANDBOX:
        monkeypatch.setenv("PIPEC_SANDBOX", "process")
ROOT = Path(__file__).resolve().parent.parent

SIG = """
    signature WordProblem {
        "Solve the arithmetic word problem."
        in  question: str "a word problem"
        out answer: float "the number"
    }
"""
PIPELINE = """
    pipeline p(question: str) -> (answer, code) {
        s = solve(question: question)
        return answer = s.answer, code = s.code
    }
"""


def pipe(write_pipe, options="", sig=SIG, pipeline=PIPELINE):
    return write_pipe(sig + f"\n    module solve = ProgramOfThought(WordProblem{options})\n" + pipeline)


def part(request) -> str:
    """Which inner predictor sent a request, from the output keys its system message asks for."""
    system = system_of(request)
    if '"diagnosis", "code"' in system:
        return "fix"
    if 'key "code"' in system:
        return "generate"
    return "answer"


def run(path, replies=None, rule=None, **inputs):
    lm = pipec.ScriptedLM(replies=replies, rule=rule)
    prog = pipec.load(path, lm=lm, cache=False)
    pred = prog(**(inputs or {"question": "A pen costs 3 dollars. What do 14 pens cost?"}))
    return prog, lm, pred


def sandbox_records(pred):
    return [r for r in pred.trace if r.predictor == "solve.sandbox"]


# ------------------------------------------------------------------ the happy path
def test_a_working_program_gives_the_answer_in_one_call(write_pipe):
    _, lm, pred = run(pipe(write_pipe), [{"code": "price = 3\ncount = 14\nresult = price * count"}])
    assert pred.ok, pred.error
    assert pred.answer == 42.0 and isinstance(pred.answer, float)
    assert pred.code == "price = 3\ncount = 14\nresult = price * count"
    assert len(lm.requests) == 1 and pred.lm_calls == 1           # the sandbox run is not an LM call
    [rec] = sandbox_records(pred)
    assert rec.model.startswith("tool:") and rec.messages[0]["content"] == pred.code
    assert json.loads(rec.raw)["value"] == 42 and rec.error is None


def test_the_prompt_explains_the_program_rules(write_pipe):
    _, lm, _ = run(pipe(write_pipe, ", timeout: 2"), [{"code": "result = 1"}])
    system = system_of(lm.requests[0])
    assert system.startswith("Solve the arithmetic word problem.")
    assert "already defined as Python variables: question" in system
    assert "variable named `result`" in system and "within 2 seconds" in system
    assert first_user_value(lm.requests[0], "question") == "A pen costs 3 dollars. What do 14 pens cost?"


def test_inputs_are_variables_of_the_program(write_pipe):
    _, _, pred = run(pipe(write_pipe), [{"code": "result = len(question.split())"}], question="one two three")
    assert pred.answer == 3.0


@pytest.mark.parametrize("code, answer", [
    ("6 * 7", 42.0),                                   # the last expression, as in a notebook
    ("answer = 40 + 2", 42.0),                         # a variable named like the output
    ("print(42)", 42.0),                               # printed text that is a number
    ("```python\nresult = 41 + 1\n```", 42.0),         # a fenced program
    ("x = 40\\nresult = x + 2", 42.0),                 # escaped newlines in a one-line reply
])
def test_results_are_found_where_programs_leave_them(write_pipe, code, answer):
    _, lm, pred = run(pipe(write_pipe), [{"code": code}])
    assert pred.ok and pred.answer == answer and len(lm.requests) == 1, pred.error


def test_several_outputs_are_taken_from_a_dict(write_pipe):
    sig = """
    signature WordProblem {
        in  question: str
        out answer: float
        out unit: str
        out exact: bool
    }
    """
    pipeline = """
    pipeline p(question: str) -> (answer, unit, exact) {
        s = solve(question: question)
        return answer = s.answer, unit = s.unit, exact = s.exact
    }
    """
    path = pipe(write_pipe, sig=sig, pipeline=pipeline)
    _, lm, pred = run(path, [{"code": "result = {'answer': 7 / 2, 'unit': 'km', 'exact': 7 % 2 == 0}"}])
    assert (pred.answer, pred.unit, pred.exact) == (3.5, "km", False) and len(lm.requests) == 1
    system = system_of(lm.requests[0])
    assert 'as a dict with the keys "answer"' in system and '"unit"' in system


# ------------------------------------------------------------------ self-debugging
def test_an_exception_goes_back_with_its_line_and_the_fix_is_run(write_pipe):
    replies = [{"code": "total = 3 * 14\nresult = totl"},
               {"diagnosis": "typo in the name", "code": "total = 3 * 14\nresult = total"}]
    _, lm, pred = run(pipe(write_pipe), replies)
    assert pred.ok and pred.answer == 42.0 and pred.code.endswith("result = total")
    assert [part(r) for r in lm.requests] == ["generate", "fix"]
    fix = lm.requests[1]
    assert first_user_value(fix, "failed_code") == "total = 3 * 14"     # first line of the failed program
    assert "result = totl" in fix.messages[-1]["content"]
    error = first_user_value(fix, "execution_error")
    assert "NameError" in error and "line 2" in error and "totl" in error
    assert [json.loads(r.raw)["ok"] for r in sandbox_records(pred)] == [False, True]


def test_timeouts_and_syntax_errors_are_fed_back_too(write_pipe):
    replies = [{"code": "while True:\n    pass"},
               {"diagnosis": "loop", "code": "result = = 1"},
               {"diagnosis": "syntax", "code": "result = 42"}]
    _, lm, pred = run(pipe(write_pipe, ", timeout: 0.5, max_fixes: 2"), replies)
    assert pred.ok and pred.answer == 42.0
    errors = [first_user_value(r, "execution_error") for r in lm.requests[1:]]
    assert "timed out" in errors[0] and "0.5 s" in errors[0]
    assert "SyntaxError" in errors[1]


def test_fixes_are_bounded_and_a_last_failure_is_recorded_not_raised(write_pipe):
    always_broken = lambda req: {"code": "result = 1 / 0"} if part(req) == "generate" else \
        {"diagnosis": "hm", "code": "result = 1 / 0"}
    prog, lm, pred = run(pipe(write_pipe, ", max_fixes: 3"), rule=always_broken)
    assert not pred.ok
    assert "still failed after 3 fixes" in pred.error and "ZeroDivisionError" in pred.error
    assert [part(r) for r in lm.requests] == ["generate", "fix", "fix", "fix"]
    assert len(sandbox_records(pred)) == 4
    _, lm, pred = run(pipe(write_pipe, ", max_fixes: 0"), rule=always_broken)
    assert not pred.ok and "after 0 fixes" in pred.error and len(lm.requests) == 1


def test_on_failure_answer_lets_the_lm_answer_after_the_last_fix(write_pipe):
    rule = lambda req: {"answer": 41} if part(req) == "answer" else \
        {"code": "result = 1 / 0", "diagnosis": "?"}
    _, lm, pred = run(pipe(write_pipe, ', max_fixes: 1, on_failure: "answer"'), rule=rule)
    assert pred.ok and pred.answer == 41.0 and pred.code == "result = 1 / 0"
    assert [part(r) for r in lm.requests] == ["generate", "fix", "answer"]
    shown = first_user_value(lm.requests[-1], "program_output")
    assert "the program failed (after 1 fix)" in shown and "ZeroDivisionError" in shown


def test_a_program_leaving_no_result_is_told_so(write_pipe):
    replies = [{"code": "x = 42"}, {"diagnosis": "no result", "code": "x = 42\nresult = x"}]
    _, lm, pred = run(pipe(write_pipe), replies)
    assert pred.ok and pred.answer == 42.0
    assert "left no result" in first_user_value(lm.requests[1], "execution_error")


def test_an_escaping_program_is_refused_and_sent_back(write_pipe):
    target = Path(f"/var/tmp/pipec-escaped-{os.getpid()}-{time.monotonic_ns()}.txt")    # outside its scratch
    replies = [{"code": f"open({str(target)!r}, 'w').write('x')\nresult = 1"},
               {"diagnosis": "no files", "code": "result = 42"}]
    _, lm, pred = run(pipe(write_pipe), replies)
    assert pred.ok and pred.answer == 42.0 and not target.exists()
    assert "not allowed" in first_user_value(lm.requests[1], "execution_error")


# ------------------------------------------------------------------ reading the outputs
def test_auto_asks_the_answer_predictor_when_the_result_does_not_fit(write_pipe):
    replies = [{"code": "result = 'forty-two dollars'"}, {"answer": 42}]
    _, lm, pred = run(pipe(write_pipe), replies)
    assert pred.ok and pred.answer == 42.0
    assert [part(r) for r in lm.requests] == ["generate", "answer"]
    assert first_user_value(lm.requests[1], "program_output") == "result = forty-two dollars"
    assert first_user_value(lm.requests[1], "code") == "result = 'forty-two dollars'"


def test_a_number_inside_text_is_not_taken_as_the_answer(write_pipe):
    replies = [{"code": "result = 'x = 3, y = 4'"}, {"answer": 7}]
    _, lm, pred = run(pipe(write_pipe), replies)
    assert pred.answer == 7.0 and len(lm.requests) == 2


def test_extract_lm_always_asks_the_answer_predictor(write_pipe):
    replies = [{"code": "print('steps')\nresult = 6 * 7"}, {"answer": 42}]
    _, lm, pred = run(pipe(write_pipe, ', extract: "lm"'), replies)
    assert pred.ok and pred.answer == 42.0
    assert [part(r) for r in lm.requests] == ["generate", "answer"]
    assert first_user_value(lm.requests[1], "program_output") == "result = 42"
    assert "steps" in lm.requests[1].messages[-1]["content"]


def test_extract_program_feeds_a_wrong_shape_back(write_pipe):
    replies = [{"code": "result = 'forty-two'"}, {"diagnosis": "not a number", "code": "result = 42"}]
    _, lm, pred = run(pipe(write_pipe, ', extract: "program"'), replies)
    assert pred.ok and pred.answer == 42.0
    assert [part(r) for r in lm.requests] == ["generate", "fix"]
    error = first_user_value(lm.requests[1], "execution_error")
    assert "wrong shape" in error and "a number" in error and "forty-two" in error


# ------------------------------------------------------------------ failures, bounds, concurrency
def test_unreadable_replies_are_fed_back_then_become_a_recorded_failure(write_pipe):
    _, lm, pred = run(pipe(write_pipe), rule=lambda req: "{}")
    assert not pred.ok
    assert "still failed after 2 fixes: the reply could not be read as a program" in pred.error
    assert [part(r) for r in lm.requests] == ["generate"] * 2 + ["fix"] * 4       # each with its one retry
    assert "could not be read" in first_user_value(lm.requests[2], "execution_error")
    assert not sandbox_records(pred)                                             # nothing to run


@pytest.mark.parametrize("options", ["", ', on_failure: "answer"'])
def test_without_a_sandbox_the_call_fails_at_once_saying_what_to_install(write_pipe, monkeypatch, tmp_path, options):
    """No isolation here is not the program's fault: no fix is asked for and nothing answers around it."""
    monkeypatch.delenv("PIPEC_SANDBOX", raising=False)
    monkeypatch.setenv("PIPEC_BWRAP", str(tmp_path / "no-bwrap"))
    _, lm, pred = run(pipe(write_pipe, options), rule=lambda req: {"code": "result = 42", "answer": 1})
    assert not pred.ok
    assert "apt install bubblewrap" in pred.error and "PIPEC_SANDBOX=process" in pred.error, pred.error
    assert [part(r) for r in lm.requests] == ["generate"]
    [rec] = sandbox_records(pred)
    assert json.loads(rec.raw)["error_type"] == "setup"


def test_an_unreadable_fix_keeps_the_last_program_for_the_next_fix(write_pipe):
    replies = [{"code": "result = 1 / 0"}, "{}", "{}", {"diagnosis": "zero", "code": "result = 42"}]
    _, lm, pred = run(pipe(write_pipe), replies)
    assert pred.ok and pred.answer == 42.0
    second_fix = lm.requests[3]
    assert first_user_value(second_fix, "failed_code") == "result = 1 / 0"
    error = second_fix.messages[-1]["content"]
    assert "ZeroDivisionError" in error and "The last reply with a fix could not be read" in error


@pytest.mark.parametrize("options, expected", [
    ("", 8), (", max_fixes: 0", 4), (", max_fixes: 3", 10), (', extract: "program"', 6),
    (', extract: "program", on_failure: "answer"', 8),
])
def test_max_calls_is_the_worst_case(write_pipe, options, expected):
    prog = pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(), cache=False)
    assert prog.modules["solve"].max_calls() == expected


@pytest.mark.parametrize("options", ["", ", max_fixes: 3", ', extract: "program", on_failure: "answer"'])
def test_the_worst_case_makes_exactly_max_calls(write_pipe, options):
    """Every predictor call needs its retry; every program fails until fixes run out; then the
    answer predictor (reading a result that does not fit, or answering after the failure)."""
    seen: dict[str, int] = {}
    fixes_left = {"n": None}

    def rule(req):
        key = json.dumps(req.messages)
        seen[key] = seen.get(key, 0) + 1
        if req.messages[-1]["role"] == "user" and "could not be used" not in req.messages[-1]["content"]:
            return "{}"                                 # first attempt of every call: unparseable
        p = part(req)
        if p == "answer":
            return {"answer": 1}
        fixes_left["n"] = fixes_left["n"] if fixes_left["n"] is not None else prog.modules["solve"].max_fixes
        if p == "fix":
            fixes_left["n"] -= 1
        last = fixes_left["n"] == 0 and "on_failure" not in options
        return {"diagnosis": "d", "code": "result = 'text, not a number'" if last else "result = 1 / 0"}

    prog = pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(rule=rule), cache=False)
    pred = prog(question="q")
    assert pred.ok, pred.error
    assert pred.lm_calls == prog.modules["solve"].max_calls()


def test_rows_overlap_and_the_sandbox_does_not_block_the_event_loop(write_pipe, slow_lm_cls):
    lm = slow_lm_cls(rule=lambda req: {"code": "import time\ntime.sleep(0.6)\nresult = 42"}, delay=0.1)
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    start = time.perf_counter()
    preds = prog.run_batch([{"question": f"q{i}"} for i in range(4)], concurrency=4)
    elapsed = time.perf_counter() - start
    assert all(p.ok and p.answer == 42.0 for p in preds)
    assert lm.max_in_flight >= 2
    assert elapsed < 4 * 0.7, f"the four sandbox runs did not overlap ({elapsed:.2f} s)"


# ------------------------------------------------------------------ static checks
@pytest.mark.parametrize("options, message", [
    (", max_fixes: -1", "option 'max_fixes' of ProgramOfThought module solve must be at least 0"),
    (', max_fixes: "two"', "option 'max_fixes' of ProgramOfThought module solve must be an integer"),
    (", timeout: 0", "option 'timeout' of ProgramOfThought module solve must be at least 0.1"),
    (", timeout: 1000", "option 'timeout' of ProgramOfThought module solve must be at most 300 seconds"),
    (", memory_mb: 16", "option 'memory_mb' of ProgramOfThought module solve must be at least 64"),
    (", memory_mb: 100000", "option 'memory_mb' of ProgramOfThought module solve must be at most 16384"),
    (', extract: "json"', "option 'extract' of ProgramOfThought module solve must be one of: auto, program, lm"),
    (', on_failure: "retry"', "option 'on_failure' of ProgramOfThought module solve must be one of: fail, answer"),
    (", fixes: 2", "unknown option 'fixes' for ProgramOfThought module solve"),
    (', sandbox: "process"', "unknown option 'sandbox' for ProgramOfThought module solve"),   # the user's choice
])
def test_bad_options_are_caught_when_loading(write_pipe, options, message):
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(), cache=False)
    assert message in str(err.value)


def test_field_names_that_clash_with_the_inner_predictors_are_caught(write_pipe):
    sig = """
    signature WordProblem {
        in  question: str
        in  execution_error: str
        out answer: float
        out program_output: str
    }
    """
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(pipe(write_pipe, sig=sig), lm=pipec.ScriptedLM(), cache=False)
    text = str(err.value)
    assert "ProgramOfThought uses an input named 'execution_error'" in text
    assert "ProgramOfThought uses a field named 'program_output'" in text
    sig_code = SIG.replace("out answer: float", "out answer: float\n        out code: str")
    with pytest.raises(pipec.PipeError, match="adds an output named 'code'"):
        pipec.load(pipe(write_pipe, sig=sig_code), lm=pipec.ScriptedLM(), cache=False)


def test_the_predictors_have_stable_names(write_pipe):
    names = lambda options: [p.name for p in pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(),
                                                         cache=False).modules["solve"].predictors()]
    assert names("") == ["solve.generate", "solve.fix", "solve.answer"]
    assert names(", max_fixes: 0") == ["solve.generate", "solve.answer"]
    assert names(', extract: "program"') == ["solve.generate", "solve.fix"]


# ------------------------------------------------------------------ compiling
def test_bootstrap_fewshot_gives_every_inner_predictor_demos(write_pipe):
    """The teacher's first program fails, the fix works but leaves text, the answer predictor reads it."""
    def rule(req):
        q = first_user_value(req, "question")
        n = int(q.split()[1])
        p = part(req)
        if p == "generate":
            return {"code": f"result = {n} / 0"}
        if p == "fix":
            return {"diagnosis": "division by zero", "code": f"result = '{n * 2} items'"}
        return {"answer": n * 2}

    rows = [{"question": f"double {n} please", "answer": float(n * 2)} for n in range(1, 9)]
    prog = pipec.load(pipe(write_pipe), lm=pipec.ScriptedLM(rule=rule), cache=False)
    compiled = prog.compile(rows[:5], rows[5:], "exact_match(answer)", "bootstrap_fewshot", budget=300,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert {n: len(params[n].demos) for n in ("solve.generate", "solve.fix", "solve.answer")} == \
        {"solve.generate": 2, "solve.fix": 2, "solve.answer": 2}
    fix = params["solve.fix"].demos[0]
    assert set(fix) == {"question", "failed_code", "execution_error", "diagnosis", "code"}
    assert "ZeroDivisionError" in fix["execution_error"]
    answer = params["solve.answer"].demos[0]
    assert set(answer) == {"question", "code", "program_output", "answer"}


# ------------------------------------------------------------------ the embedded model
@pytest.mark.e2e
def test_e2e_runs_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipec", "run", "examples/program_of_thought.pipe", "--json", "--trace",
         "--input", "question=A shop sells pens at 3 dollars each. How much do 14 pens cost?"],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and isinstance(out["outputs"]["answer"], float) and out["outputs"]["code"]
    names = [r["predictor"] for r in out["trace"] if r["attempt"] == 1]
    assert names[:2] == ["solve.generate", "solve.sandbox"]
    assert len([n for n in names if n != "solve.sandbox"]) <= 3           # generate, one fix, the answer
    print(f"program_of_thought e2e: {elapsed:.1f} s")
