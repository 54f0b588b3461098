"""The `pipec` command line: exit codes, messages, graph and inspect output.

Commands that need no LM call run as real subprocesses. `run` and `test` need an LM: they run
in-process through `pipec.cli.main` with LM ids bound to a ScriptedLM (the embedded model is covered by
the end-to-end tests).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import DIAMOND, count_rule, diamond_rule, read_jsonl

import pipec
from pipec import cli

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")


def pipec_cmd(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "pipec", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def assert_clean_usage_error(rc, out, err, *fragments):
    assert rc == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    for f in fragments:
        assert f in err, err


# ---------------------------------------------------------------------------- version and help
def test_version():
    rc, out, err = pipec_cmd("--version")
    assert rc == 0 and out.strip() == f"pipec {pipec.__version__}"


def test_no_command_prints_help_and_exits_2():
    rc, out, err = pipec_cmd()
    assert rc == 2 and "usage: pipec" in out and "check" in out and "run" in out


@pytest.mark.parametrize("command,fragment", [
    (None, "exit status"),
    ("check", "--werror"),
    ("run", "--inputs"),
    ("graph", "mermaid"),
    ("inspect", "--input"),
    ("test", "-k"),
])
def test_help(command, fragment):
    rc, out, err = pipec_cmd(*([command] if command else []), "--help")
    assert rc == 0 and err == ""
    assert out.startswith("usage: pipec" + (f" {command}" if command else ""))
    assert fragment in out


def test_unknown_command_is_a_usage_error():
    rc, out, err = pipec_cmd("compile-it")
    assert rc == 2 and "invalid choice" in err


# ---------------------------------------------------------------------------- check
CLEAN = """
    signature S { "Count." in q: str out n: int }
    module m = Predict(S)
    pipeline count(q: str) -> (n) {
        r = m(q: q)
        return n = r.n
    }
"""
BROKEN = """
    signature S { in q: str out n: int }
    module m = Predict(Sx)
"""
WARNS = """
    signature S { in q: str out n: int }
    module m = Predict(S)
    pipeline p(q: str, unused: str) -> (n) {
        r = m(q: q)
        return n = r.n
    }
"""


def test_check_clean_file(write_pipe):
    path = write_pipe(CLEAN)
    rc, out, err = pipec_cmd("check", path)
    assert rc == 0 and f"{path}: ok" in out and err == ""


def test_check_errors_exit_1_with_location_and_hint(write_pipe):
    path = write_pipe(BROKEN, "broken.pipe")
    rc, out, err = pipec_cmd("check", path)
    assert rc == 1
    assert f"{path}:2:" in err and "unknown signature 'Sx'" in err and "did you mean 'S'" in err
    assert "Traceback" not in err


def test_check_missing_file_exit_2(tmp_path):
    rc, out, err = pipec_cmd("check", tmp_path / "nope.pipe")
    assert_clean_usage_error(rc, out, err, "cannot read", "nope.pipe")


def test_check_several_files(write_pipe):
    good, bad = write_pipe(CLEAN, "good.pipe"), write_pipe(BROKEN, "bad.pipe")
    rc, out, err = pipec_cmd("check", good, bad)
    assert rc == 1 and "bad.pipe:2:" in err


def test_check_warnings_and_werror(write_pipe):
    path = write_pipe(WARNS)
    rc, out, err = pipec_cmd("check", path)
    assert rc == 0 and "warning" in err and "'unused' is never used" in err
    rc, out, err = pipec_cmd("check", "--werror", path)
    assert rc == 1


def test_check_json_format(write_pipe):
    path = write_pipe(BROKEN, "broken.pipe")
    rc, out, err = pipec_cmd("check", "--format", "json", path)
    assert rc == 1
    diags = json.loads(out)
    assert len(diags) == 1
    d = diags[0]
    assert (d["line"], d["severity"], d["code"]) == (2, "error", "unknown-name")
    assert d["message"] == "unknown signature 'Sx'" and d["file"].endswith("broken.pipe")
    rc, out, _ = pipec_cmd("check", "--format", "json", write_pipe(CLEAN))
    assert rc == 0 and json.loads(out) == []


def test_check_reports_unimportable_tool(write_pipe):
    path = write_pipe(CLEAN.replace("module m", 'tool t = python("no_such_mod_xyz:f")\n    module m'))
    rc, out, err = pipec_cmd("check", path)
    assert rc == 1 and "tool t" in err and "no_such_mod_xyz" in err


# ---------------------------------------------------------------------------- run: usage errors (no LM call)
@pytest.fixture
def count_file(write_pipe):
    return write_pipe(CLEAN, "count.pipe")


def test_run_bad_input_name(count_file):
    rc, out, err = pipec_cmd("run", count_file, "--input", "qq=hello")
    assert_clean_usage_error(rc, out, err, "missing input 'q'", "inputs of count: q", "--input name=value")
    assert out == ""


def test_run_ill_typed_input(write_pipe):
    path = write_pipe(CLEAN.replace("pipeline count(q: str)", "pipeline count(q: str, k: int)")
                      .replace("r = m(q: q)", "r = m(q: q + k)"))
    rc, out, err = pipec_cmd("run", path, "-i", "q=a", "-i", "k=lots")
    assert_clean_usage_error(rc, out, err, "input 'k'", "expected a number")


@pytest.mark.parametrize("args,fragment", [
    (["--input", "no-equals-sign"], "NAME=VALUE"),
    (["--pipeline", "cuont", "-i", "q=x"], "no pipeline 'cuont'"),
    (["--concurrency", "0", "-i", "q=x"], "--concurrency must be at least 1"),
    (["-i", "q=x", "--inputs", "rows.jsonl"], "not both"),
    (["--inputs", "missing-rows.jsonl"], "no such file"),
])
def test_run_usage_errors(count_file, args, fragment):
    rc, out, err = pipec_cmd("run", count_file, *args, cwd=count_file.parent)
    assert_clean_usage_error(rc, out, err, fragment)


def test_run_missing_file(tmp_path):
    rc, out, err = pipec_cmd("run", tmp_path / "nope.pipe", "-i", "q=x")
    assert_clean_usage_error(rc, out, err, "no such file")


def test_run_broken_file_exits_1(write_pipe):
    rc, out, err = pipec_cmd("run", write_pipe(BROKEN), "-i", "q=x")
    assert rc == 1 and "unknown signature 'Sx'" in err and "Traceback" not in err


def test_run_output_same_as_inputs(count_file, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "a"}\n')
    rc, out, err = pipec_cmd("run", count_file, "--inputs", rows, "--output", rows)
    assert_clean_usage_error(rc, out, err, "--output must differ")
    assert rows.read_text() == '{"q": "a"}\n'


# ---------------------------------------------------------------------------- graph
@pytest.fixture
def diamond_file(write_pipe):
    return write_pipe(DIAMOND, "diamond.pipe")


def test_graph_mermaid(diamond_file):
    rc, out, err = pipec_cmd("graph", diamond_file, "--format", "mermaid")
    assert rc == 0
    lines = [ln.strip() for ln in out.splitlines()]
    assert lines[0] == "flowchart LR"
    assert 'n_in_text(["text"])' in lines
    for node, label in (("x", "Predict a"), ("y", "ChainOfThought b"), ("z", "Predict c")):
        assert any(ln.startswith(f'n_{node}["{node}<br/>{label}') for ln in lines), (node, out)
    assert 'n_in_text -->|"text"| n_x' in lines
    assert 'n_in_text -->|"text"| n_y' in lines
    assert 'n_x -->|"summary"| n_z' in lines
    assert 'n_y -->|"n"| n_z' in lines
    assert 'n_z -->|"z.verdict"| n_out_verdict' in lines
    assert 'n_y -->|"y.reasoning"| n_out_why' in lines


def test_graph_dot(diamond_file):
    rc, out, err = pipec_cmd("graph", diamond_file, "-f", "dot")
    assert rc == 0
    assert out.startswith('digraph "diamond" {') and out.rstrip().endswith("}")
    for edge in ('n_in_text -> n_x [label="text"];', 'n_x -> n_z [label="summary"];', 'n_y -> n_z [label="n"];',
                 'n_z -> n_out_verdict [label="z.verdict"];'):
        assert edge in out
    assert 'n_out_verdict [label="verdict", shape=ellipse, style=bold];' in out


def test_graph_text_shows_levels(diamond_file):
    rc, out, err = pipec_cmd("graph", diamond_file)          # text is the default
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "pipeline diamond(text) -> (verdict, summary, n, tags, score, p, flag, why)"
    level0, level1 = lines.index("  level 0 (concurrent)"), lines.index("  level 1")
    assert level0 < level1
    assert any(ln.strip().startswith("x = a(text: text)") for ln in lines[level0:level1])
    assert any(ln.strip().startswith("y = b(text: text)") for ln in lines[level0:level1])
    assert any(ln.strip().startswith("z = c(summary: x.summary, n: y.n)") for ln in lines[level1:])
    assert "  return verdict = z.verdict" in lines


def test_graph_bad_format(diamond_file):
    rc, out, err = pipec_cmd("graph", diamond_file, "--format", "png")
    assert rc == 2 and "invalid choice" in err


def test_graph_tool_node(write_pipe, tool_module):
    mod = tool_module("def up(s):\n    return s.upper()\n")
    path = write_pipe(f"""
        tool up = python("{mod}:up")
        signature S {{ in q: str out n: int }}
        module m = Predict(S)
        pipeline p(q: str) -> (n, u) {{
            r = m(q: up(q))
            return n = r.n, u = up(q)
        }}
    """)
    rc, out, err = pipec_cmd("graph", path, "-f", "mermaid", cwd=path.parent)
    assert rc == 0, err
    assert 'n_up_1["up#1<br/>tool up"]' in out
    assert 'n_in_q --> n_up_1' in out and 'n_up_1 -->|"q"| n_r' in out
    assert 'n_up_2 -->|"up#2"| n_out_u' in out


# ---------------------------------------------------------------------------- inspect
def test_inspect_shows_messages_and_schema(diamond_file):
    rc, out, err = pipec_cmd("inspect", diamond_file)
    assert rc == 0, err
    assert "pipeline diamond: at most 6 LM calls" in out
    assert "== x = a (Predict), at most 2 LM calls ==" in out
    assert "== y = b (ChainOfThought), at most 2 LM calls ==" in out
    assert out.count("--- system") == 3 and out.count("--- user") == 3 and out.count("--- reply schema") == 3
    assert "Summarize the text." in out and "Judge the summary." in out
    assert "text: {text}" in out and "summary: {summary}\nn: {n}" in out
    schemas = [json.loads(ln) for ln in out.splitlines() if ln.startswith('{"type": "object"')]
    assert schemas[1]["properties"]["n"] == {"type": "integer"}
    assert schemas[2]["properties"]["verdict"] == {"type": "string", "enum": ["good", "bad", "so_so"]}
    assert schemas[2]["required"] == ["verdict", "p", "flag"]


def test_inspect_fills_inputs_and_json(diamond_file):
    rc, out, err = pipec_cmd("inspect", diamond_file, "--json", "-i", "text=Hello there")
    assert rc == 0, err
    report = json.loads(out)
    assert report["pipeline"] == "diamond" and report["max_lm_calls"] == 6
    sites = {s["node"]: s for s in report["calls"]}
    x = sites["x"]["predictors"][0]
    assert [m["role"] for m in x["messages"]] == ["system", "user"]
    assert x["messages"][1]["content"] == "text: Hello there"
    assert sites["z"]["predictors"][0]["messages"][1]["content"] == "summary: {summary}\nn: {n}"
    assert x["schema"]["properties"] == {"summary": {"type": "string"}}


def test_inspect_demos_and_lm_params(write_pipe):
    path = write_pipe("""
        lm local = "local/smollm2" (temperature: 0, max_tokens: 32)
        signature S { "Count." in q: str out n: int }
        module m = Predict(S, lm: local, temperature: 0.3)
        pipeline p(q: str) -> (n) {
            r = m(q: q)
            return n = r.n
        }
    """)
    rc, out, err = pipec_cmd("inspect", path)
    assert rc == 0, err
    assert "lm: local/smollm2" in out and "temperature=0.3" in out and "max_tokens=32" in out


# ---------------------------------------------------------------------------- run and test, in-process
@pytest.fixture
def scripted_cli(monkeypatch):
    """Bind every LM id the CLI builds to one ScriptedLM; return it."""
    lm = pipec.ScriptedLM(rule=count_rule)

    def backend_for(model, options=None):
        return lm
    monkeypatch.setattr("pipec.program.backend_for", backend_for)
    return lm


def main(*args):
    return cli.main([str(a) for a in args])


def test_run_single(count_file, scripted_cli, capsys):
    assert main("run", count_file, "--input", "q=hello") == 0
    out, err = capsys.readouterr()
    assert out == "n: 5\n"
    assert scripted_cli.requests[0].messages[-1]["content"] == "q: hello"


def test_run_single_json(count_file, scripted_cli, capsys):
    assert main("run", count_file, "-i", "q=abc", "--json", "--trace", "--no-cache") == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is True and d["outputs"] == {"n": 3}
    assert d["trace"][0]["messages"][-1]["content"] == "q: abc"


def test_run_single_failure_exit_1(count_file, scripted_cli, capsys):
    assert main("run", count_file, "-i", "q=bad input", "--no-cache") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "pipec run: failed: r (m): reply did not parse" in err
    assert "last reply: I cannot count that." in err


def test_run_json_list_input(write_pipe, scripted_cli, capsys):
    path = write_pipe("""
        signature S { in q: str out n: int }
        module m = Predict(S)
        pipeline p(items: list[int], q: str) -> (n, items2) {
            r = m(q: q)
            return n = r.n, items2 = items
        }
    """)
    assert main("run", path, "-i", "items=[1, 2, 3]", "-i", "q=ab", "--no-cache") == 0
    assert capsys.readouterr().out == "n: 2\nitems2: [1, 2, 3]\n"


def test_run_batch_and_resume(count_file, scripted_cli, capsys, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "aa"}\n{"q": "bbb"}\n{"q": "c"}\n')
    assert main("run", count_file, "--inputs", rows, "--no-cache", "--no-progress") == 0
    err = capsys.readouterr().err
    out_path = tmp_path / "rows.out.jsonl"                    # the default output name
    assert f"wrote 3 rows to {out_path}" in err and "0 failed, 0 skipped" in err
    assert sorted(r["outputs"]["n"] for r in read_jsonl(out_path)) == [1, 2, 3]
    calls = len(scripted_cli.requests)
    assert main("run", count_file, "--inputs", rows, "--no-cache", "--no-progress") == 0
    assert "3 already done" in capsys.readouterr().err
    assert len(scripted_cli.requests) == calls


def test_run_batch_failed_and_skipped_rows_exit_1(count_file, scripted_cli, capsys, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "aa"}\n{"q": "bad"}\n{"nope": 1}\noops\n')
    out_path = tmp_path / "o.jsonl"
    assert main("run", count_file, "--inputs", rows, "-o", out_path, "--no-cache", "--no-progress") == 1
    err = capsys.readouterr().err
    assert f"skipped: {rows}:3: missing input 'q'" in err
    assert f"skipped: {rows}:4: invalid JSON" in err
    assert "1 failed, 2 skipped" in err
    assert len(read_jsonl(out_path)) == 2


def test_run_uses_cache_dir(count_file, scripted_cli, capsys, tmp_path):
    scripted_cli.cacheable = True
    cache = tmp_path / "cli-cache"
    assert main("run", count_file, "-i", "q=abc", "--cache-dir", cache) == 0
    assert main("run", count_file, "-i", "q=abc", "--cache-dir", cache) == 0
    assert len(scripted_cli.requests) == 1 and cache.is_dir()
    assert capsys.readouterr().out == "n: 3\nn: 3\n"


def test_run_unknown_input_name_is_a_usage_error(write_pipe, scripted_cli, capsys):
    path = write_pipe("""
        signature S { in q: str  in hint: str? out n: int }
        module m = Predict(S)
        pipeline p(q: str, hint: str?) -> (n) {
            r = m(q: q, hint: hint)
            return n = r.n
        }
    """)
    rc = main("run", path, "-i", "q=abc", "-i", "hnit=look left", "--no-cache")
    err = capsys.readouterr().err
    assert rc == 2 and "hnit" in err
    assert scripted_cli.requests == []


def test_pipec_test_command(write_pipe, scripted_cli, capsys):
    path = write_pipe(CLEAN + """
        test "counts" {
            count(q: "abc") -> n == 3
            count("hello") -> n == 5
        }
        test "wrong on purpose" {
            count(q: "ab") -> n == 3
        }
    """)
    assert main("test", path, "--no-cache") == 1
    out = capsys.readouterr().out
    assert out.count("PASS counts") == 2
    assert "FAIL wrong on purpose" in out and "expected n == 3, got 2" in out
    assert out.rstrip().endswith("2 passed, 1 failed")
    assert main("test", path, "-k", "counts", "--no-cache") == 0


def test_pipec_test_without_blocks(count_file, capsys):
    assert main("test", count_file) == 0
    assert "no test blocks" in capsys.readouterr().err


def test_diamond_run_in_process(diamond_file, monkeypatch, capsys):
    lm = pipec.ScriptedLM(rule=diamond_rule)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    assert main("run", diamond_file, "-i", "text=hi", "--no-cache") == 0
    out = capsys.readouterr().out.splitlines()
    assert "verdict: so_so" in out and 'tags: ["a", "b"]' in out and "score: null" in out


def test_tool_problems_are_reported_with_every_other_error_in_one_run(write_pipe):
    path = write_pipe("""
        tool t(query: str) -> str = python("no_such_module_xyz:f")
        tool u = python("not a target")
        signature S { in q: str out a: str }
        module m = Predict(S)
        pipeline p(q: str) -> (a) {
            r = mm(q: q)
            return a = t(query: r.a)
        }
    """)
    rc, out, err = pipec_cmd("check", path)
    assert rc == 1
    assert "unknown module or tool 'mm'" in err
    assert "tool t: cannot import 'no_such_module_xyz'" in err
    assert "tool target 'not a target' is not `package.module:function`" in err and "3 errors" in err, err
    with pytest.raises(pipec.PipeError) as exc:
        pipec.load(path, lm=pipec.ScriptedLM([]), cache=False)
    assert "no_such_module_xyz" in str(exc.value) and "'mm'" in str(exc.value)


def test_a_long_string_starting_on_its_opening_line_is_dedented(write_pipe):
    path = write_pipe('''
        signature S {
            """Answer the question.
               Cite a source when you can.
            Be brief."""
            in q: str
            out a: str
        }
        module m = Predict(S)
        pipeline p(q: str) -> (a) {
            r = m(q: q)
            return a = r.a
        }
    ''')
    prog = pipec.load(path, lm=pipec.ScriptedLM([]), cache=False)
    assert prog.params()["m"].instruction == "Answer the question.\n   Cite a source when you can.\nBe brief."


def test_compile_eval_and_report_never_write_over_a_source_or_a_foreign_file(write_pipe, tmp_path):
    path = write_pipe(CLEAN)
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "hi", "n": 2}\n')
    source = path.read_text()
    for args in (["compile", path, "--trainset", data, "--metric", "exact_match(n)", "-o", path],
                 ["compile", path, "--trainset", data, "--metric", "exact_match(n)", "-o", notes],
                 ["eval", path, "--data", data, "--metric", "exact_match(n)", "--output", notes],
                 ["eval", path, "--data", data, "--metric", "exact_match(n)", "--output", data],
                 ["eval", path, "--data", data, "--metric", "exact_match(n)", "--report", notes],
                 ["report", path, "-o", notes]):
        rc, out, err = pipec_cmd(*args)
        assert rc == 2, (args, err)
        assert "was not changed" in err or "must not overwrite" in err, (args, err)
    assert path.read_text() == source and notes.read_text() == "my notes\n"
    assert data.read_text() == '{"q": "hi", "n": 2}\n'


def test_a_text_input_that_looks_like_json_stays_text(write_pipe, capsys, monkeypatch):
    path = write_pipe(CLEAN)
    lm = pipec.ScriptedLM(rule=lambda request: {"n": len(request.messages[-1]["content"])})
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    assert cli.main(["run", str(path), "--input", "q=[1.50, 2e3]", "--no-cache"]) == 0
    assert lm.requests[0].messages[-1]["content"] == "q: [1.50, 2e3]"          # the text as typed
