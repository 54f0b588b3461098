"""Issue 13, "the command line and the compile": flags checked like the compile block, usage errors
exit 2, refused keys fail at once, the proposer runs on a declared LM, a compile never emits a
program worse than the uncompiled one, ensembles must beat their best member, a metric of the wrong
type is an error, and the small CLI gaps (--trace, --no-progress, test -k, inspect --input).

Every LM is a ScriptedLM (or the loopback stub server, or litellm failing before the network), so
the file runs offline in seconds.
"""
from __future__ import annotations

import json
import re
import time

import pytest
from conftest import count_rule, first_user_value, read_jsonl

import pipec
from pipec import cli
from pipec.inspection import max_calls

# Names new with these fixes are imported inside the tests, so the file also runs (and fails test by
# test) against the code before them.
KEPT_BASELINE = "kept the uncompiled program"

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TOY = """
    signature Flip { "Answer." in q: str out a: str }
    module m = Predict(Flip)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }

    compile toy {
        trainset  = "data/train.jsonl"
        valset    = "data/dev.jsonl"
        metric    = exact_match(a)
        optimizer = labeled_fewshot(max_labeled: 2)
    }

    test "flips apple" { toy(q: "apple") -> a == "elppa" }
    test "flips river" { toy(q: "river") -> a == "revir" }
"""
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "lemon", "sugar", "house", "green"]
ROWS = [{"q": w, "a": w[::-1]} for w in WORDS]
TRAIN, VAL = ROWS[:8], ROWS[8:]


def has_demos(request) -> bool:
    return any(m["role"] == "assistant" for m in request.messages[1:-1])


def always_right(request):
    return {"a": first_user_value(request, "q")[::-1]}


def demos_hurt(request):
    """Right only without demos: any demo set scores below the uncompiled program."""
    q = first_user_value(request, "q")
    return {"a": "?" if has_demos(request) else q[::-1]}


def write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path, write_pipe):
    path = write_pipe(TOY, "toy.pipe")
    write_rows(tmp_path / "data" / "train.jsonl", TRAIN)
    write_rows(tmp_path / "data" / "dev.jsonl", VAL)
    return path


@pytest.fixture
def lm(monkeypatch):
    """Every LM id the command line builds is this ScriptedLM; tests may swap its rule."""
    lm = pipec.ScriptedLM(rule=always_right)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    return lm


def main(*args):
    return cli.main([str(a) for a in args])


# ============================================================================ flags are checked like the block
@pytest.mark.parametrize("args,message,caret", [
    (["--optimizer", "mipro", "--option", "trials=abc"], "option 'trials' of optimizer mipro must be an integer",
     "trials=abc"),
    (["--optimizer", "knn_fewshot", "--option", "k=0"], "option 'k' of optimizer knn_fewshot must be at least 1",
     "k=0"),
    (["--optimizer", "labeled_fewshot", "--option", "max_demos=-5"],
     "option 'max_demos' of optimizer labeled_fewshot must be at least 0", "max_demos=-5"),
    (["--optimizer", "mipro", "--trials", "0"], "option 'trials' of optimizer mipro must be at least 1", "--trials 0"),
    (["--optimizer", "mipro", "--trials", "many"], "option 'trials' of optimizer mipro must be an integer",
     "--trials many"),
    (["--trials", "3"], "unknown option 'trials' for optimizer labeled_fewshot", "--trials 3"),
    (["--option", "max_labled=2"], "unknown option 'max_labled' for optimizer labeled_fewshot", "max_labled=2"),
    (["--optimizer", "bootstrp"], "unknown optimizer 'bootstrp'", "bootstrp"),
    (["--budget", "0"], "setting 'budget' must be at least 1", "0"),
    (["--seed", "x"], "setting 'seed' must be an integer", "x"),
    (["--concurrency", "0"], "setting 'concurrency' must be at least 1", "0"),
    (["--metric", "exact_match(b)"], "'b' is not an output of pipeline toy", "b"),
    (["--teacher", "bgi"], "unknown lm 'bgi'", "bgi"),
    (["--worker"], "--worker and --finalize share an optuna study: they work with the mipro optimizer only",
     "--worker"),
])
def test_bad_flags_are_usage_errors_shown_like_the_checker_before_any_lm_call_or_data_read(
        project, lm, capsys, tmp_path, args, message, caret):
    # The trainset is broken: had the data been read first, the error would be about it.
    (tmp_path / "data" / "train.jsonl").write_text('{"q": 1}\nnot json\n', encoding="utf-8")
    assert main("compile", project, "--no-cache", *args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "train.jsonl" not in err
    assert re.search(r"^command line:1:\d+: error: " + re.escape(message), err, re.M), err
    line, under = [ln for ln in err.splitlines() if ln.startswith((" 1 | ", "   | "))][:2]
    start = under.index("^")
    assert line[start:start + len(caret)] == caret, err            # the caret is under the flag's value
    assert lm.requests == []


def test_every_bad_flag_is_reported_in_one_run(project, lm, capsys):
    assert main("compile", project, "--optimizer", "knn_fewshot", "--option", "k=0", "--option", "pool=x",
                "--budget", "-1", "--no-cache") == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err and "option 'pool' of optimizer knn_fewshot must be an integer" in err
    assert "setting 'budget' must be at least 1" in err and err.rstrip().endswith("3 errors, 0 warnings")


def test_did_you_mean_for_an_optimizer_name(project, lm, capsys):
    assert main("compile", project, "--optimizer", "bootstrp", "--no-cache") == 2
    assert "hint: did you mean 'bootstrap_fewshot'?" in capsys.readouterr().err


def test_a_missing_trainset_file_given_as_a_flag_is_a_usage_error(project, lm, capsys, tmp_path):
    assert main("compile", project, "--trainset", tmp_path / "nope.jsonl", "--no-cache") == 2
    assert "--trainset: no such file" in capsys.readouterr().err


def test_the_python_api_takes_the_same_checks(project):
    from pipec.settings import SettingsError
    lm = pipec.ScriptedLM(rule=always_right)
    prog = pipec.load(project, lm=lm, cache=False)
    with pytest.raises(SettingsError) as exc:
        prog.compile(TRAIN, VAL, "exact_match(a)", "knn_fewshot", options={"k": 0}, budget=15)
    assert "option 'k' of optimizer knn_fewshot must be at least 1" in str(exc.value)
    assert isinstance(exc.value, ValueError) and lm.requests == []
    with pytest.raises(SettingsError, match="option 'trials' of optimizer mipro must be an integer"):
        prog.compile(TRAIN, VAL, "exact_match(a)", "mipro", options={"trials": "abc"})
    with pytest.raises(SettingsError, match="setting 'seed' must be an integer"):
        prog.compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot", seed=1.5)
    assert lm.requests == []


def test_good_flags_still_compile(project, lm, capsys):
    assert main("compile", project, "--optimizer", "knn_fewshot", "--option", "k=2", "--budget", "200",
                "--seed", "4", "--concurrency", "2", "--no-cache") == 0
    r = json.loads(project.with_name("toy.compiled.json").read_text())["report"]
    assert (r["optimizer"], r["options"]["k"], r["budget"], r["seed"]) == ("knn_fewshot", 2, 200, 4)


# ============================================================================ refused keys fail at once
def test_a_missing_openai_key_fails_the_run_at_once_naming_the_variable(count_pipe, capsys, monkeypatch):
    """litellm reports a missing OpenAI key as a 500 InternalServerError: it used to be retried 4 times.
    OpenAI now takes pipec's direct client (tests/test_providers.py), which sends nothing without a key."""
    from pipec.lm.hosted import _lib
    litellm = _lib()                    # as pipec imports it: no network fetch of litellm's price list
    calls = []
    real = litellm.acompletion

    async def counted(**kw):
        calls.append(kw["model"])
        return await real(**kw)
    monkeypatch.setattr(litellm, "acompletion", counted)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    start = time.perf_counter()
    assert main("run", count_pipe, "--lm", "openai/gpt-4o-mini", "-i", "q=hello", "--no-cache") == 1
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert calls == [], calls                                       # no attempt at all, let alone a retry
    assert "authentication failed" in err and "set OPENAI_API_KEY" in err and "not retried" in err
    assert elapsed < 10, elapsed                                    # not 4 attempts with backoff


def test_a_batch_on_a_refused_key_sends_one_request_and_says_what_to_set(count_pipe, tmp_path, capsys, monkeypatch):
    from openai_stub import StubServer
    monkeypatch.setenv("PIPEC_TEST_KEY", "sk-test-wrong-key-0123456789abcdef")
    rows = write_rows(tmp_path / "rows.jsonl", [{"q": w} for w in WORDS[:5]])
    with StubServer(default=(401, {})) as server:
        path = tmp_path / "remote.pipe"
        path.write_text(f'lm remote = "openai/stub" (api_base: "{server.base}", api_key_env: "PIPEC_TEST_KEY")\n'
                        + count_pipe.read_text())
        out = tmp_path / "out.jsonl"
        assert main("run", path, "--inputs", rows, "-o", out, "--concurrency", "1", "--no-cache",
                    "--no-progress") == 1
        assert len(server.requests) == 1                            # the other 4 rows failed without a request
    recs = read_jsonl(out)
    failed = [r for r in recs if r.get("ok") is False]
    assert len(failed) == 5 and all("set PIPEC_TEST_KEY" in r["error"] for r in failed)
    err = capsys.readouterr().err
    assert "pipec run: error: openai/stub: authentication failed (HTTP 401" in err
    assert "then run the same command with --retry-failed" in err


def test_a_refused_key_is_tried_again_once_the_variable_changes(count_pipe, monkeypatch):
    from openai_stub import StubServer
    from pipec.lm.openai_compat import OpenAICompatLM
    monkeypatch.setenv("PIPEC_TEST_KEY", "sk-test-wrong-key-0123456789abcdef")
    with StubServer(default={"n": 3}) as server:
        server.script.append((401, {}))
        backend = OpenAICompatLM("openai/stub", server.base, api_key_env="PIPEC_TEST_KEY")
        prog = pipec.load(count_pipe, lm=backend, cache=False)
        first, again = prog(q="abc"), prog(q="abc")
        assert not first.ok and not again.ok and len(server.requests) == 1
        assert "set PIPEC_TEST_KEY (the lm's api_key_env)" in again.error
        monkeypatch.setenv("PIPEC_TEST_KEY", "sk-test-right-key-0123456789abcdef")
        fixed = prog(q="abc")
        assert fixed.ok and fixed.n == 3 and len(server.requests) == 2


def test_a_refusal_after_the_key_has_worked_fails_only_its_own_call(count_pipe, monkeypatch):
    from openai_stub import StubServer
    from pipec.lm.openai_compat import OpenAICompatLM
    monkeypatch.setenv("PIPEC_TEST_KEY", "sk-test-good-key-0123456789abcdef")
    with StubServer(default={"n": 3}) as server:
        server.script.extend([{"n": 3}, (401, {})])
        prog = pipec.load(count_pipe, lm=OpenAICompatLM("openai/stub", server.base, api_key_env="PIPEC_TEST_KEY"),
                          cache=False)
        ok, refused, again = prog(q="abc"), prog(q="abc"), prog(q="abc")
        assert ok.ok and not refused.ok and again.ok
        assert "authentication failed (HTTP 401" in refused.error and "gave up" not in refused.error
        assert len(server.requests) == 3                            # the refusal was not retried


def test_litellm_authentication_errors_are_permanent_and_name_the_variable():
    from pipec.lm.base import AuthLMError
    from pipec.lm.hosted import HostedLM

    class AuthenticationError(Exception):
        status_code = 401
    err = HostedLM("anthropic/claude-3-5-haiku")._translate(AuthenticationError("invalid x-api-key"))
    assert isinstance(err, AuthLMError) and err.variable == "ANTHROPIC_API_KEY"
    assert "set ANTHROPIC_API_KEY" in str(err)

    class InternalServerError(Exception):
        status_code = 500
    err = HostedLM("openai/m", api_key_env="MY_KEY")._translate(
        InternalServerError("OpenAIException - Missing credentials. Please pass an `api_key`"))
    assert isinstance(err, AuthLMError) and "set MY_KEY (the lm's api_key_env)" in str(err)
    plain = HostedLM("openai/m")._translate(InternalServerError("upstream overloaded"))
    assert not isinstance(plain, AuthLMError)


def test_a_compile_stops_at_a_refused_key(project):
    from pipec.lm.base import AuthLMError

    def refuse(request):
        raise AuthLMError("scripted/lm: authentication failed (HTTP 401): set SCRIPTED_KEY; not retried",
                          "SCRIPTED_KEY")
    lm = pipec.ScriptedLM(rule=refuse)
    prog = pipec.load(project, lm=lm, cache=False)
    with pytest.raises(AuthLMError, match="set SCRIPTED_KEY"):
        prog.compile(TRAIN, VAL, "exact_match(a)", "bootstrap_fewshot")
    assert len(lm.requests) == 1                                    # the other baseline rows did not even ask


# ============================================================================ the proposer runs on a declared LM
TWO_LMS = """
    lm small = "openai/small"
    lm big = "openai/big"
    {default}
    signature Flip {{ "Answer." in q: str out a: str }}
    module first = Predict(Flip, lm: small)
    module second = Predict(Flip, lm: big)
    module third = Predict(Flip, lm: big)
    pipeline toy(q: str) -> (a) {{
        x = first(q: q)
        y = second(q: x.a)
        z = third(q: y.a)
        return a = z.a
    }}
"""


@pytest.fixture
def made(monkeypatch):
    """One ScriptedLM per LM id; a proposal gets an instruction, a task call echoes its input."""
    from pipec.optimizers import propose
    lms: dict[str, pipec.ScriptedLM] = {}

    def rule(request):
        if request.messages[0]["content"] == propose.SYSTEM:
            return {"instruction": "Repeat the input exactly as it is written."}
        return {"a": first_user_value(request, "q")}

    def backend_for(model, options=None):
        return lms.setdefault(model, pipec.ScriptedLM(rule=rule, model=model))
    monkeypatch.setattr("pipec.program.backend_for", backend_for)
    return lms


@pytest.mark.parametrize("default,proposer", [
    ("", "openai/big (no default lm: big, the lm most of the pipeline's predictors run on)"),
    ("default lm = small", "openai/small (the file's default lm, small)"),
])
def test_the_proposer_is_a_declared_lm_named_in_the_progress_line_and_the_report(write_pipe, made, capsys, default,
                                                                                 proposer):
    path = write_pipe(TWO_LMS.format(default=default), "two.pipe")
    rows = [{"q": w, "a": w} for w in WORDS]
    prog = pipec.load(path, cache=False)
    compiled = prog.compile(rows[:8], rows[8:], "exact_match(a)", "mipro", progress=True,
                            options={"trials": 2, "instructions": 2, "minibatch": 2, "max_demos": 0, "max_labeled": 0})
    chosen = proposer.split()[0]
    asked = [r for r in made[chosen].requests if r.messages[0]["content"].startswith("You write instructions")]
    assert asked, "the proposer never ran on the declared LM"
    assert not made.get("local/smollm2") or not made["local/smollm2"].requests   # never the embedded model
    lms = compiled.report.lms
    assert lms["proposer"] == proposer
    assert lms["task"] == "openai/small, openai/big"
    assert set(re.findall(r"(\S+) \d+", lms["requests"])) == {"openai/small", "openai/big"}
    assert f"proposing on {proposer}" in capsys.readouterr().err


def test_the_report_counts_requests_per_lm(write_pipe, made):
    path = write_pipe(TWO_LMS.format(default=""), "two.pipe")
    rows = [{"q": w, "a": w} for w in WORDS]
    compiled = pipec.load(path, cache=False).compile(rows[:8], rows[8:], "exact_match(a)", "labeled_fewshot")
    counts = dict((lm, int(n)) for lm, n in re.findall(r"(\S+) (\d+)", compiled.report.lms["requests"]))
    assert counts == {m: len(made[m].requests) for m in ("openai/small", "openai/big")}
    assert sum(counts.values()) == compiled.report.lm_requests
    assert "proposer" not in compiled.report.lms and "teacher" not in compiled.report.lms   # neither was used


# ============================================================================ never worse than the baseline
def test_a_compile_keeps_the_uncompiled_program_when_the_optimizer_scores_lower(project):
    prog = pipec.load(project, lm=pipec.ScriptedLM(rule=demos_hurt), cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "knn_fewshot", options={"k": 2})
    r = compiled.report
    assert r.baseline_score == 1.0 and r.compiled_score == 1.0
    assert compiled.params()["m"].knn is None and compiled.params()["m"].demos == []
    assert r.trials[-1].note == (f"{KEPT_BASELINE}: knn_fewshot's program scored 0.000 on the valset, below the "
                                 "uncompiled 1.000")


def test_the_cli_says_it_kept_the_uncompiled_program(project, lm, capsys):
    lm.rule = demos_hurt
    assert main("compile", project, "--optimizer", "knn_fewshot", "--no-cache") == 0
    out = capsys.readouterr().out
    assert "baseline 1.000 -> compiled 1.000" in out
    assert f"  {KEPT_BASELINE}: knn_fewshot's program scored 0.000" in out
    art = json.loads(project.with_name("toy.compiled.json").read_text())
    assert art["predictors"]["m"]["knn"] is None


CHAIN = """
    signature Sum { "Summarize." in q: str out s: str }
    signature Route { "Route." in s: str out a: str }
    module summarize = Predict(Sum)
    module route = Predict(Route)
    pipeline toy(q: str) -> (a) {
        x = summarize(q: q)
        y = route(s: x.s)
        return a = y.a
    }
"""


def test_a_tiny_budget_never_yields_a_program_below_the_baseline(write_pipe):
    """The issue's case: knn_fewshot with --budget 15 on a chain (the inner module needs bootstrapped
    demos) wrote an artifact scoring 0.000 against a baseline of 0.667."""
    def rule(request):
        system = request.messages[0]["content"]
        if system.startswith("Summarize"):
            return {"s": first_user_value(request, "q")}
        return {"a": "?" if has_demos(request) else first_user_value(request, "s")[::-1]}
    path = write_pipe(CHAIN, "chain.pipe")
    for budget in (15, 24, 40):
        lm = pipec.ScriptedLM(rule=rule)
        compiled = pipec.load(path, lm=lm, cache=False).compile(TRAIN, VAL, "exact_match(a)", "knn_fewshot",
                                                                budget=budget)
        r = compiled.report
        assert r.compiled_score >= r.baseline_score, (budget, r.trials)
        assert len(lm.requests) <= budget


# ============================================================================ ensembles must beat their best member
def test_an_ensemble_that_only_ties_its_best_member_is_not_kept(project):
    prog = pipec.load(project, lm=pipec.ScriptedLM(rule=always_right), cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "ensemble", options={"size": 3, "candidates": 3})
    assert compiled.members == []
    assert max_calls(compiled) == 2                                 # one Predict (and its parse retry), not 3x
    assert "not kept" in compiled.report.trials[-1].note


# ============================================================================ a metric of the wrong type
BAD_METRICS = """
def typo(example, prediction):
    return {"score": 1.0, "feedbak": "looks right"}

def as_list(example, prediction):
    return [1.0, "looks right"]

def picky(example, prediction):
    if example["q"] == "river":
        raise KeyError("boom")
    return example["a"] == prediction["a"]
"""


@pytest.mark.parametrize("fn,line,kind", [("typo", 2, "dict with an unknown key 'feedbak'"), ("as_list", 5, "list")])
def test_eval_with_a_metric_of_the_wrong_type_fails_naming_it(project, lm, tool_module, capsys, fn, line, kind):
    mod = tool_module(BAD_METRICS)
    metric = f'python("{mod}:{fn}")'
    rc = main("eval", project, "--data", project.parent / "data" / "dev.jsonl", "--metric", metric, "-c", "1",
              "--no-cache")
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    assert f"pipec eval: error: metric {metric} ({fn} in {project.parent / mod}.py:{line}) returned a {kind} (" in err
    assert 'a metric returns a bool, a number from 0 to 1, (score, "feedback") or' in err and "= 0.000" not in out
    assert len(lm.requests) == 1                                    # stopped at the first row


def test_compile_with_a_metric_of_the_wrong_type_fails_naming_it(project, lm, tool_module, capsys):
    mod = tool_module(BAD_METRICS)
    assert main("compile", project, "--metric", f'python("{mod}:typo")', "--no-cache") == 1
    err = capsys.readouterr().err
    assert f'pipec compile: error: metric python("{mod}:typo") (typo in ' in err
    assert ") returned a dict with an unknown key 'feedbak'" in err
    assert not project.with_name("toy.compiled.json").exists()


def test_report_with_a_metric_of_the_wrong_type_fails_naming_it(project, lm, tool_module, capsys, tmp_path):
    mod = tool_module(BAD_METRICS)
    rc = main("report", project, "--data", project.parent / "data" / "dev.jsonl", "--metric",
              f'python("{mod}:as_list")', "-o", tmp_path / "r.html", "--no-cache")
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f'metric python("{mod}:as_list") (as_list in ' in err and ") returned a list" in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("metric,message", [("accuracy(a)", "unknown metric 'accuracy'"),
                                            ("exact_match(b)", "'b' is not an output of pipeline toy")])
def test_eval_metric_flag_is_checked_like_the_compile_block(project, lm, capsys, metric, message):
    assert main("eval", project, "--data", project.parent / "data" / "dev.jsonl", "--metric", metric,
                "--no-cache") == 2
    err = capsys.readouterr().err
    assert err.startswith("command line:1:") and message in err
    assert lm.requests == []


def test_a_metric_that_raises_on_one_row_still_scores_only_that_row_zero(project, lm, tool_module, capsys):
    mod = tool_module(BAD_METRICS)
    rc = main("eval", project, "--data", project.parent / "data" / "train.jsonl", "--metric",
              f'python("{mod}:picky")', "--no-cache")
    assert rc == 0
    out = capsys.readouterr().out
    assert "= 0.875 (7/8 passed" in out and "raised KeyError" in out


# ============================================================================ small CLI gaps
def test_run_trace_without_json_prints_a_readable_trace_on_stderr(count_pipe, capsys, monkeypatch):
    lm = pipec.ScriptedLM(rule=count_rule)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    assert main("run", count_pipe, "-i", "q=hello", "--trace", "--no-cache") == 0
    out, err = capsys.readouterr()
    assert out == "n: 5\n"                                          # stdout stays what a script reads
    assert err.startswith("trace: 1 LM call\n[1] node r (m), predictor m, scripted/lm: ")
    assert "--- user\nq: hello\n--- reply\n{\"n\": 5}" in err


def test_no_progress_prints_no_progress_line_at_all(count_pipe, capsys, monkeypatch, tmp_path):
    lm = pipec.ScriptedLM(rule=count_rule)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    rows = write_rows(tmp_path / "rows.jsonl", [{"q": "aa"}, {"q": "bbb"}])
    assert main("run", count_pipe, "--inputs", rows, "-o", tmp_path / "o.jsonl", "--no-cache", "--no-progress") == 0
    err = capsys.readouterr().err
    assert err == f"wrote 2 rows to {tmp_path / 'o.jsonl'}; 0 failed, 0 skipped\n"
    # Without the flag (stderr not a terminal) the closing summary stays, as a record without a bar.
    assert main("run", count_pipe, "--inputs", rows, "-o", tmp_path / "p.jsonl", "--no-cache") == 0
    err = capsys.readouterr().err
    assert "2/2 rows 0 failed 2 LM calls" in err and "[" not in err


def test_eval_no_progress_prints_no_progress_line(project, lm, capsys):
    assert main("eval", project, "--data", project.parent / "data" / "dev.jsonl", "--no-progress",
                "--no-cache") == 0
    err = capsys.readouterr().err
    assert "LM calls" not in err and "rows" not in err


def test_test_filter_that_matches_nothing_is_a_usage_error_listing_the_tests(project, lm, capsys):
    assert main("test", project, "-k", "nomatch", "--no-cache") == 2
    err = capsys.readouterr().err
    assert 'pipec test: error: -k "nomatch" matches no test' in err
    assert '"flips apple", "flips river"' in err
    assert lm.requests == []
    assert main("test", project, "-k", "apple", "--no-cache") == 0


def test_inspect_refuses_an_unknown_input_with_a_hint(project, capsys):
    assert main("inspect", project, "--input", "nope=1") == 2
    err = capsys.readouterr().err
    assert "pipec inspect: error: 'nope' is not an input of toy" in err and "its inputs: q" in err
    assert main("inspect", project, "--input", "qq=1") == 2
    assert "did you mean 'q'?" in capsys.readouterr().err
    assert main("inspect", project, "--input", "q=apple") == 0
    assert "q: apple" in capsys.readouterr().out
