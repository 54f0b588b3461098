"""`pipec compile` and `pipec eval` on the command line.

Commands that need an LM run in-process through `pipec.cli.main` with every LM id bound to a
ScriptedLM (as in test_cli.py); LM-free usage errors run as real subprocesses.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import first_user_value, read_jsonl

import pipec
from pipec import cli
from pipec.lm.base import LMError

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
"""
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "lemon", "sugar", "house", "green"]
ROWS = [{"q": w, "a": w[::-1]} for w in WORDS]


def has_demos(request) -> bool:
    return any(m["role"] == "assistant" for m in request.messages[1:-1])


def flip_rule(request):
    """Right with demos; zero-shot right only for words starting with a vowel."""
    q = first_user_value(request, "q")
    if q == "boom":
        raise LMError("scripted/lm: the server is on fire")
    return {"a": q[::-1] if has_demos(request) or q[0] in "aeiou" else "?"}


def write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path, write_pipe):
    """A .pipe file with a compile block and its data beside it (data/train.jsonl, data/dev.jsonl)."""
    path = write_pipe(TOY, "toy.pipe")
    write_rows(tmp_path / "data" / "train.jsonl", ROWS[:8])
    write_rows(tmp_path / "data" / "dev.jsonl", ROWS[8:])
    return path


@pytest.fixture
def lm(monkeypatch):
    lm = pipec.ScriptedLM(rule=flip_rule)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    return lm


@pytest.fixture
def elsewhere(tmp_path_factory, monkeypatch):
    """Run from another folder, so paths in the compile block must be taken relative to the .pipe file."""
    d = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(d)
    return d


def main(*args):
    return cli.main([str(a) for a in args])


def pipec_cmd(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "pipec", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


# ============================================================================ pipec compile
def test_compile_uses_the_compile_block_and_writes_the_artifact(project, lm, elsewhere, capsys):
    assert main("compile", project, "--no-cache") == 0
    out, err = capsys.readouterr()
    artifact = project.with_name("toy.compiled.json")
    assert artifact.is_file()
    art = json.loads(artifact.read_text())
    r = art["report"]
    assert (r["optimizer"], r["options"], r["metric"], r["seed"]) == ("labeled_fewshot", {"max_labeled": 2},
                                                                       "exact_match(a)", 0)
    assert (r["trainset"], r["valset"]) == (8, 4)
    assert len(art["predictors"]["m"]["demos"]) == 2
    lines = out.splitlines()
    assert lines[0] == "toy: labeled_fewshot (seed 0) on 8 train / 4 val rows"
    assert "metric exact_match(a): baseline 0.000 -> compiled 1.000 (+1.000)" in out
    assert f"{r['lm_requests']} LM requests" in out
    assert any(ln.strip().startswith("trial   1  1.000") for ln in lines)
    assert f"{r['lm_requests']} LM calls made (0 cache hits)" in out
    assert lines[-1] == f"wrote {artifact}"
    assert len(lm.requests) == r["lm_requests"]


def test_compile_flags_override_the_block(project, lm, tmp_path, capsys):
    out_path = tmp_path / "build" / "tuned.json"
    rc = main("compile", project, "--optimizer", "bootstrap_fewshot", "--option", "max_demos=1",
              "--option", "max_labeled=1", "--seed", "3", "--budget", "40", "--output", out_path, "--no-cache")
    assert rc == 0, capsys.readouterr().err
    r = json.loads(out_path.read_text())["report"]
    assert r["optimizer"] == "bootstrap_fewshot" and r["seed"] == 3 and r["budget"] == 40
    assert r["options"]["max_demos"] == 1 and r["options"]["max_labeled"] == 1       # block options dropped
    assert len(lm.requests) <= 40
    assert not project.with_name("toy.compiled.json").exists()
    assert f"wrote {out_path}" in capsys.readouterr().out


def test_compile_flags_for_data_and_metric(project, lm, tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "t.csv").write_text("q,a\n" + "".join(f"{r['q']},{r['a']}\n" for r in ROWS[:6]))
    rc = main("compile", project, "--trainset", tmp_path / "other" / "t.csv", "--metric", "f1(a)",
              "--trials", "3", "--optimizer", "random_search", "--no-cache")
    assert rc == 0, capsys.readouterr().err
    r = json.loads(project.with_name("toy.compiled.json").read_text())["report"]
    assert r["trainset"] == 6 and r["valset"] == 4 and r["metric"] == "f1(a)"
    assert r["options"]["candidates"] == 3 and len(r["trials"]) == 3


def test_option_on_the_blocks_optimizer_is_merged(project, lm, capsys):
    assert main("compile", project, "--option", "seed=9", "--no-cache") == 0
    r = json.loads(project.with_name("toy.compiled.json").read_text())["report"]
    assert r["options"] == {"max_labeled": 2, "seed": 9}


def test_second_compile_is_a_cache_hit(project, lm, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main("compile", project, "--cache-dir", cache) == 0
    first = project.with_name("toy.compiled.json").read_bytes()
    calls = len(lm.requests)
    assert main("compile", project, "--cache-dir", cache) == 0
    out = capsys.readouterr().out
    assert "cache hit: nothing changed since the last compile, no LM call" in out
    assert len(lm.requests) == calls
    assert project.with_name("toy.compiled.json").read_bytes() == first


def test_compile_block_paths_are_relative_to_the_pipe_file_even_if_the_cwd_has_the_same_path(project, lm, elsewhere,
                                                                                           capsys):
    write_rows(elsewhere / "data" / "train.jsonl", ROWS[:3])             # someone else's data
    assert main("compile", project, "--no-cache") == 0
    r = json.loads(project.with_name("toy.compiled.json").read_text())["report"]
    assert r["trainset"] == 8


def test_trainset_flag_is_relative_to_the_cwd(project, lm, elsewhere, capsys):
    write_rows(elsewhere / "mine.jsonl", ROWS[:5])
    assert main("compile", project, "--trainset", "mine.jsonl", "--no-cache") == 0
    assert json.loads(project.with_name("toy.compiled.json").read_text())["report"]["trainset"] == 5


def test_compile_bad_data_exits_1_listing_every_problem(project, lm, tmp_path, capsys):
    bad = tmp_path / "data" / "train.jsonl"
    bad.write_text('{"q": "a", "a": "x"}\n{"a": "x"}\n{"q": "b"}\n')
    assert main("compile", project, "--no-cache") == 1
    err = capsys.readouterr().err
    assert err.startswith("pipec compile: error: ")
    assert f"{bad}:2: missing input 'q'" in err and f"{bad}:3: missing label 'a'" in err
    assert lm.requests == [] and not project.with_name("toy.compiled.json").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--option", "max_labled=2"], "unknown option 'max_labled' for optimizer labeled_fewshot"),
    (["--optimizer", "bootstrap"], "unknown optimizer 'bootstrap'"),
    (["--metric", "exact_match(answer)"], "'answer' is not an output of pipeline toy"),
    (["--metric", "accuracy(a)"], "unknown metric 'accuracy'"),
])
def test_bad_compile_flags_are_usage_errors_exit_2_with_a_message(project, lm, capsys, args, fragment):
    assert main("compile", project, "--no-cache", *args) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert err.startswith("command line:1:")           # printed like the checker's, pointing at the flag
    assert lm.requests == []


def test_compile_without_a_trainset_is_a_usage_error(write_pipe):
    path = write_pipe(TOY.split("compile toy")[0], "bare.pipe")
    rc, out, err = pipec_cmd("compile", path)
    assert rc == 2 and "no trainset" in err and "Traceback" not in err


def test_compile_option_without_equals_is_a_usage_error(project):
    rc, out, err = pipec_cmd("compile", project, "--option", "max_labeled")
    assert rc == 2 and "--option expects NAME=VALUE" in err


def test_compile_help_names_the_flags():
    rc, out, err = pipec_cmd("compile", "--help")
    assert rc == 0
    for flag in ("--optimizer", "--option", "--trials", "--budget", "--seed", "--trainset", "--valset", "--metric",
                 "--teacher", "--storage", "--study", "--output", "--cache-dir", "--no-cache"):
        assert flag in out


# ============================================================================ pipec eval
@pytest.fixture
def test_rows(tmp_path):
    rows = [{"q": "apple", "a": "elppa"}, {"q": "river", "a": "revir"}, {"q": "boom", "a": "moob"},
            {"q": "ocean", "a": "naeco"}, {"q": "stone", "a": "enots"}]
    return write_rows(tmp_path / "test.jsonl", rows)


def test_eval_prints_score_field_misses_and_a_table(project, lm, test_rows, capsys):
    assert main("eval", project, "--data", test_rows, "--no-cache") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"toy on {test_rows}: exact_match(a) = 0.400 (2/5 passed, 1 failed to produce outputs)"
    assert "  a: 3 wrong" in lines
    assert "misses (first 3 of 3):" in out
    assert f"  {test_rows}:2: q=river" in lines
    i = lines.index(f"  {test_rows}:2: q=river")
    assert lines[i + 1].split() == ["expected", "a=revir"] and lines[i + 2].split() == ["got", "a=?"]
    assert lines[i + 3] == "      feedback expected revir, got ?"           # what the metric said
    j = lines.index(f"  {test_rows}:3: q=boom")
    assert lines[j + 2].strip().startswith("got      error: ") and "the server is on fire" in lines[j + 2]
    assert lines[j + 3].startswith("  ") and not lines[j + 3].strip().startswith("feedback")   # the error says why
    assert f"{test_rows}:1" not in out                        # a pass is not a miss


def test_eval_show_limits_the_table(project, lm, test_rows, capsys):
    assert main("eval", project, "--data", test_rows, "--show", "1", "--no-cache") == 0
    out = capsys.readouterr().out
    assert "misses (first 1 of 3):" in out and out.count("expected a=") == 1
    assert main("eval", project, "--data", test_rows, "--show", "0", "--no-cache") == 0
    out = capsys.readouterr().out
    assert "misses" not in out and "expected" not in out and "a: 3 wrong" in out


def test_eval_output_writes_one_json_line_per_row(project, lm, test_rows, tmp_path, capsys):
    out_path = tmp_path / "results.jsonl"
    assert main("eval", project, "--data", test_rows, "--output", out_path, "--no-cache") == 0
    rows = read_jsonl(out_path)
    assert [r["where"] for r in rows] == [f"{test_rows}:{i}" for i in range(1, 6)]
    assert rows[0] == {"where": f"{test_rows}:1", "inputs": {"q": "apple"}, "expected": {"a": "elppa"},
                       "outputs": {"a": "elppa"}, "score": 1.0, "passed": True, "feedback": None, "error": None,
                       "raw": ""}
    assert rows[1]["passed"] is False and rows[1]["outputs"] == {"a": "?"}
    assert rows[1]["feedback"] == "expected revir, got ?"
    assert rows[2]["outputs"] is None and rows[2]["score"] == 0.0 and "the server is on fire" in rows[2]["error"]
    assert rows[2]["feedback"] is None                  # a failed prediction: its error says why


def test_eval_an_artifact_uses_its_demos_and_metric(project, lm, test_rows, tmp_path, capsys):
    assert main("compile", project, "--no-cache") == 0
    artifact = project.with_name("toy.compiled.json")
    capsys.readouterr()
    assert main("eval", artifact, "--data", test_rows, "--no-cache") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"toy on {test_rows}: exact_match(a) = 0.800 (4/5 passed, 1 failed to produce outputs)"
    assert "misses (first 1 of 1):" in out


def test_eval_metric_flag_overrides(project, lm, test_rows, capsys):
    assert main("eval", project, "--data", test_rows, "--metric", 'regex(a, pattern: "^[a-z?]+$")', "--no-cache") == 0
    assert "= 0.800 (4/5 passed" in capsys.readouterr().out


def test_eval_with_a_python_metric_that_raises_keeps_going(project, lm, test_rows, tool_module, capsys):
    mod = tool_module("def m(example, prediction):\n"
                      "    if example['q'] == 'ocean':\n"
                      "        raise RuntimeError('metric bug')\n"
                      "    return example['a'] == prediction['a']\n")
    assert main("eval", project, "--data", test_rows, "--metric", f'python("{mod}:m")', "--no-cache") == 0
    out = capsys.readouterr().out
    assert "= 0.200 (1/5 passed" in out
    assert "RuntimeError: metric bug" in out


LONG_FEEDBACK = """
import os

def m(example, prediction):
    if example["a"] == prediction["a"]:
        return True
    return 0.0, "the answer\\nis wrong: " + "no. " * 100 + "the end"

def leaky(example, prediction):
    # 152 characters, then the key: the terminal's cut at 160 would keep 7 of its characters.
    return example["a"] == prediction["a"], "x" * 152 + os.environ["ACME_API_KEY"]

def bad(example, prediction):
    return [1.0, "fine"]
"""


def test_eval_shows_long_feedback_cut_to_one_line_and_writes_it_whole(project, lm, test_rows, tool_module, tmp_path,
                                                                       capsys):
    mod = tool_module(LONG_FEEDBACK)
    out_path = tmp_path / "rows.jsonl"
    assert main("eval", project, "--data", test_rows, "--metric", f'python("{mod}:m")', "--output", out_path,
                "--no-cache") == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [line for line in lines if line.startswith("      feedback ")]
    assert len(shown) == 2                                   # river and stone; boom failed, its error says why
    assert shown[0].startswith("      feedback the answer is wrong: no. no.") and shown[0].endswith("…")
    assert len(shown[0]) == len("      feedback ") + 160
    rows = read_jsonl(out_path)
    assert rows[1]["feedback"] == "the answer\nis wrong: " + "no. " * 100 + "the end"      # the file: in full
    assert rows[0]["feedback"] is None and rows[2]["feedback"] is None


def test_feedback_is_masked_in_the_terminal_the_rows_and_the_report(project, lm, test_rows, tool_module, tmp_path,
                                                                     monkeypatch, capsys):
    key = "acme-live-7f3c9e2b1d5a8f60c4e2"
    monkeypatch.setenv("ACME_API_KEY", key)
    mod = tool_module(LONG_FEEDBACK)
    out_path, report = tmp_path / "rows.jsonl", tmp_path / "eval.html"
    assert main("eval", project, "--data", test_rows, "--metric", f'python("{mod}:leaky")', "--output", out_path,
                "--report", report, "--no-cache") == 0
    out = capsys.readouterr().out
    assert "      feedback " + "x" * 152 + "***" in out.splitlines()
    assert key[:7] not in out                                # masked before it was cut, not after
    for text in (out_path.read_text(), report.read_text()):
        assert key[:8] not in text and "x" * 152 + "***" in text


def test_eval_stops_at_a_metric_return_it_cannot_read(project, lm, test_rows, tool_module, capsys):
    mod = tool_module(LONG_FEEDBACK)
    assert main("eval", project, "--data", test_rows, "--metric", f'python("{mod}:bad")', "--no-cache") == 1
    err = capsys.readouterr().err
    assert f'pipec eval: error: metric python("{mod}:bad") (bad in ' in err
    assert f"{mod}.py:13) returned a list ([1.0, 'fine']); a metric returns a bool, a number from 0 to 1, " \
           '(score, "feedback") or {"score": ..., "feedback": ...}; the eval stopped there' in err


def test_eval_an_artifact_whose_metric_has_a_string_option(project, lm, test_rows, capsys):
    project.write_text(project.read_text().replace("exact_match(a)", 'regex(a, pattern: "^[a-z]+$")'))
    assert main("compile", project, "--no-cache") == 0
    artifact = project.with_name("toy.compiled.json")
    assert main("eval", artifact, "--data", test_rows, "--no-cache") == 0
    assert "(4/5 passed" in capsys.readouterr().out


def test_eval_bad_rows_exit_1_listing_them(project, lm, tmp_path, capsys):
    data = write_rows(tmp_path / "bad.jsonl", [{"q": "apple"}, {"a": "x"}])
    assert main("eval", project, "--data", data, "--no-cache") == 1
    err = capsys.readouterr().err
    assert f"{data}:1: missing label 'a'" in err and f"{data}:2: missing input 'q'" in err
    assert lm.requests == []


def test_eval_without_a_metric_is_a_usage_error(write_pipe, test_rows):
    path = write_pipe(TOY.split("compile toy")[0], "bare.pipe")
    rc, out, err = pipec_cmd("eval", path, "--data", test_rows)
    assert rc == 2 and "no metric" in err and "--metric" in err and "Traceback" not in err


def test_eval_requires_data(project):
    rc, out, err = pipec_cmd("eval", project)
    assert rc == 2 and "--data" in err


def test_eval_missing_data_file_is_a_usage_error(project, tmp_path):
    rc, out, err = pipec_cmd("eval", project, "--data", tmp_path / "nope.jsonl")
    assert rc == 2 and "nope.jsonl" in err and "Traceback" not in err
