"""A compiled artifact from someone else is hostile: opening it runs nothing, running it needs approval.

The attack (issue 12, part 1): take a real artifact, rewrite its embedded sources to declare
`tool sh(command: str) -> int = python("os:system")`, a tool and a `python(...)` metric in modules
planted beside the artifact (each leaves a marker file when imported or called), and recompute both
fingerprints, as anyone can. Then every read-only command must import nothing, every command that
runs must refuse and list every target, and approval (`--allow`, `--trust`, `pipec trust`, the
Python API's `allow=` / `trust=`) must run exactly what was approved. An artifact compiled here from
the user's own .pipe file runs without asking; editing it undoes that.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import first_user_value
from tampering import reseal

import pipec
from pipec import cli
from pipec.artifact import fingerprint
from pipec.trust import ApprovalRequired

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TOY = """
    signature Flip { "Answer." in q: str out a: str }
    module m = Predict(Flip)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""
ROWS = [{"q": w, "a": w[::-1]} for w in ["apple", "river", "stone", "cloud", "tiger", "maple"]]
_names = itertools.count()


def flip_rule(request):
    return {"a": first_user_value(request, "q")[::-1]}


@pytest.fixture
def compiled(write_pipe):
    """An artifact compiled here from the user's own .pipe file (so this machine trusts it)."""
    path = write_pipe(TOY, "toy.pipe")
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    done = prog.compile(ROWS[:4], ROWS[4:], "exact_match(a)", "labeled_fewshot", seed=1, options={"max_labeled": 2})
    return done.save(path.parent / "toy.compiled.json")


class Planted:
    """A hostile copy of an artifact in its own folder, with planted modules beside it."""

    def __init__(self, folder: Path, artifact: Path, tool_mod: str, metric_mod: str, markers: Path):
        self.folder, self.artifact, self.tool_mod, self.metric_mod, self.markers = \
            folder, artifact, tool_mod, metric_mod, markers

    def touched(self) -> list[str]:
        return sorted(p.name for p in self.markers.iterdir())

    def forget_modules(self) -> None:
        for m in (self.tool_mod, self.metric_mod):
            sys.modules.pop(m, None)


def plant(compiled: Path, folder: Path, *, lm_line: str = "") -> Planted:
    """Rewrite `compiled`'s sources as an attacker would and reseal it; return the planted copy."""
    n = next(_names)
    tool_mod, metric_mod = f"planted_tool_{n}_{os.getpid()}", f"planted_metric_{n}_{os.getpid()}"
    folder.mkdir()
    markers = folder / "markers"
    markers.mkdir()
    (folder / f"{tool_mod}.py").write_text(
        f"open({str(markers / 'tool-imported')!r}, 'w').close()\n"
        f"def shout(text: str) -> str:\n"
        f"    open({str(markers / 'tool-ran')!r}, 'w').close()\n"
        f"    return text.upper()\n")
    (folder / f"{metric_mod}.py").write_text(
        f"open({str(markers / 'metric-imported')!r}, 'w').close()\n"
        f"def score(example, prediction):\n    return True\n")
    doc = json.loads(compiled.read_text())
    main = doc["sources"]["main"]
    doc["sources"]["files"][main] = lm_line + f"""
tool sh(command: str) -> int = python("os:system")
tool shout(text: str) -> str = python("{tool_mod}:shout")
signature Flip {{ "Answer." in q: str out a: str }}
module m = Predict(Flip{', lm: remote' if lm_line else ''})
pipeline toy(q: str) -> (a, status, loud) {{
    r = m(q: q)
    s = sh(command: q)
    l = shout(text: q)
    return a = r.a, status = s, loud = l
}}
"""
    doc["sources"]["fingerprint"] = fingerprint(main, doc["sources"]["files"])
    doc["report"]["metric"] = f'python("{metric_mod}:score")'
    artifact = folder / "toy.compiled.json"
    artifact.write_text(json.dumps(reseal(doc), indent=2))
    return Planted(folder, artifact, tool_mod, metric_mod, markers)


@pytest.fixture
def planted(compiled, tmp_path):
    p = plant(compiled, tmp_path / "downloads")
    yield p
    p.forget_modules()


def pipec_cmd(*args, cwd):
    """The real CLI in a fresh process, run from the artifact's folder (planted modules importable from there)."""
    proc = subprocess.run([sys.executable, "-m", "pipec", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def in_process(capsys, monkeypatch, *args, lm=None):
    """`pipec ARGS` in this process with every LM replaced by a scripted one."""
    lm = lm or pipec.ScriptedLM(rule=flip_rule)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


# ------------------------------------------------------------------------------ reading runs nothing
def test_read_only_commands_on_a_planted_artifact_import_nothing(planted, tmp_path):
    a = planted.artifact
    for args in (["graph", a], ["graph", a, "--format", "mermaid"], ["inspect", a], ["check", a],
                 ["report", a, "-o", tmp_path / "r.html"], ["trust", a, "--show"]):
        rc, out, err = pipec_cmd(*args, cwd=planted.folder)
        assert rc == 0, (args, err)
        assert "Traceback" not in err
        assert planted.touched() == [], (args, planted.touched())
    rc, out, err = pipec_cmd("check", a, cwd=planted.folder)
    assert "not compiled on this machine" in out and "os:system" in out and planted.tool_mod in out


def test_loading_a_planted_artifact_from_python_imports_nothing(planted, monkeypatch):
    monkeypatch.chdir(planted.folder)
    monkeypatch.syspath_prepend(str(planted.folder))
    prog = pipec.load(planted.artifact, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    assert prog.name == "toy" and "sh" in prog.checked.tools
    assert planted.tool_mod not in sys.modules and planted.metric_mod not in sys.modules
    assert planted.touched() == []


# ------------------------------------------------------------------------------ running needs approval
def test_run_and_eval_refuse_and_list_every_target(planted, tmp_path):
    marker = planted.markers / "shell-ran"
    rc, out, err = pipec_cmd("run", planted.artifact, "-i", f"q=touch {marker}", cwd=planted.folder)
    assert rc == 2 and out == ""
    assert "not compiled on this machine" in err
    assert 'tool sh: imports and runs python("os:system")' in err
    assert f'tool shout: imports and runs python("{planted.tool_mod}:shout")' in err
    assert f"--allow os --allow {planted.tool_mod}" in err and "--trust" in err and "pipec trust" in err

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"q": f"touch {marker}", "a": "x"}) + "\n")
    rc, out, err = pipec_cmd("run", planted.artifact, "--inputs", rows, "-o", tmp_path / "out.jsonl",
                             cwd=planted.folder)
    assert rc == 2 and not (tmp_path / "out.jsonl").exists()

    rc, out, err = pipec_cmd("eval", planted.artifact, "--data", rows, cwd=planted.folder)
    assert rc == 2 and "os:system" in err and planted.tool_mod in err
    rc, out, err = pipec_cmd("eval", planted.artifact, "--data", rows, "--allow", "os", "--allow", planted.tool_mod,
                             cwd=planted.folder)
    assert rc == 2 and f'imports and runs python("{planted.metric_mod}:score")' in err
    assert "os:system" not in err

    rc, out, err = pipec_cmd("report", planted.artifact, "--data", rows, "-o", tmp_path / "r.html", cwd=planted.folder)
    assert rc == 2 and "os:system" in err and not (tmp_path / "r.html").exists()
    assert planted.touched() == []


def test_partial_approval_refuses_with_the_rest(planted):
    rc, out, err = pipec_cmd("run", planted.artifact, "-i", "q=true", "--allow", "os:system", cwd=planted.folder)
    assert rc == 2 and "os:system" not in err and planted.tool_mod in err
    rc, out, err = pipec_cmd("run", planted.artifact, "-i", "q=true", "--allow", "os.path", "--allow", "o",
                             cwd=planted.folder)
    assert rc == 2 and "os:system" in err            # neither a sibling module nor a name prefix approves os
    assert planted.touched() == []


def test_approved_targets_run(planted, capsys, monkeypatch):
    monkeypatch.chdir(planted.folder)
    marker = planted.markers / "shell-ran"
    rc, out, err = in_process(capsys, monkeypatch, "run", planted.artifact, "-i", f"q=touch {marker}",
                              "--allow", "os", "--allow", planted.tool_mod, "--no-cache")
    assert rc == 0, err
    assert "status: 0" in out and f"loud: TOUCH {str(marker).upper()}" in out
    assert planted.touched() == ["shell-ran", "tool-imported", "tool-ran"]


def test_trust_flag_approves_everything_in_the_file(planted, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(planted.folder)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"q": "true", "a": "eurt"}) + "\n")
    rc, out, err = in_process(capsys, monkeypatch, "eval", planted.artifact, "--data", rows, "--trust", "--no-cache")
    assert rc == 0, err
    assert planted.touched() == ["metric-imported", "tool-imported", "tool-ran"]


def test_python_api_refuses_until_approved(planted, monkeypatch):
    monkeypatch.chdir(planted.folder)
    lm = pipec.ScriptedLM(rule=flip_rule)
    prog = pipec.load(planted.artifact, lm=lm, cache=False)
    with pytest.raises(ApprovalRequired) as exc:
        prog(q="true")
    assert [r.target for r in exc.value.missing] == ["os:system", f"{planted.tool_mod}:shout"]
    with pytest.raises(ApprovalRequired):
        prog.run_batch([{"q": "true"}])
    with pytest.raises(ApprovalRequired):
        prog.tool("shout")                         # the one place a tool is imported refuses too
    assert lm.requests == [] and planted.touched() == []

    prog = pipec.load(planted.artifact, lm=lm, cache=False, allow=["os:system", f"{planted.tool_mod}:shout"])
    pred = prog(q="true")
    assert pred.ok and pred.status == 0 and pred.loud == "TRUE"
    assert pipec.load(planted.artifact, lm=lm, cache=False, trust=True)(q="x").ok


# ------------------------------------------------------------------------------ trusted without asking
def test_an_artifact_compiled_here_runs_its_tools_without_approval(write_pipe, tool_module, tmp_path):
    mod = tool_module("def shout(text: str) -> str:\n    return text.upper()\n")
    path = write_pipe(TOY.replace("signature", f'tool shout(text: str) -> str = python("{mod}:shout")\n    signature')
                      .replace("-> (a)", "-> (a, loud)").replace("return a = r.a", "l = shout(text: q)\n        "
                                                                     "return a = r.a, loud = l"), "mine.pipe")
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    done = prog.compile(ROWS[:4], ROWS[4:], "exact_match(a)", "labeled_fewshot", seed=1)
    art = done.save(tmp_path / "mine.compiled.json")
    again = pipec.load(art, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    assert again.trust.origin == "store"
    assert again(q="abc").loud == "ABC"

    # Editing it, even with its fingerprints recomputed, makes it a stranger's file again.
    doc = json.loads(art.read_text())
    doc["predictors"]["m"]["demos"][0]["a"] = "planted"
    art.write_text(json.dumps(reseal(doc), indent=2))
    with pytest.raises(ApprovalRequired):
        pipec.load(art, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)(q="abc")


def test_a_saved_copy_of_an_untrusted_artifact_stays_untrusted(planted, tmp_path):
    prog = pipec.load(planted.artifact, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    copy = prog.save(tmp_path / "laundered.compiled.json")
    with pytest.raises(ApprovalRequired):
        pipec.load(copy, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)(q="true")
    assert planted.touched() == []


def test_pipec_trust_approves_this_exact_file_until_it_changes(planted, capsys, monkeypatch):
    monkeypatch.chdir(planted.folder)
    rc, out, err = in_process(capsys, monkeypatch, "trust", planted.artifact)
    assert rc == 0 and "approved" in out and "os:system" in out and f"{planted.metric_mod}:score" in out
    rc, out, err = in_process(capsys, monkeypatch, "run", planted.artifact, "-i", "q=true", "--no-cache")
    assert rc == 0, err
    rc, out, err = in_process(capsys, monkeypatch, "trust", planted.artifact, "--show")
    assert rc == 0 and ": trusted" in out

    doc = json.loads(planted.artifact.read_text())
    doc["predictors"]["m"]["instruction"] = "Say something else."
    planted.artifact.write_text(json.dumps(reseal(doc)))
    rc, out, err = in_process(capsys, monkeypatch, "run", planted.artifact, "-i", "q=true", "--no-cache")
    assert rc == 2 and "os:system" in err

    rc, out, err = in_process(capsys, monkeypatch, "trust", planted.artifact)
    rc, out, err = in_process(capsys, monkeypatch, "trust", planted.artifact, "--revoke")
    assert rc == 0 and "withdrawn" in out
    rc, out, err = in_process(capsys, monkeypatch, "run", planted.artifact, "-i", "q=true", "--no-cache")
    assert rc == 2


def test_a_trust_store_that_others_can_write_to_is_ignored(compiled, tmp_path, monkeypatch):
    store = tmp_path / "shared-store"
    monkeypatch.setenv("PIPEC_TRUST_DIR", str(store))
    planted = plant(compiled, tmp_path / "downloads")
    try:
        assert cli.main(["trust", str(planted.artifact)]) == 0
        assert pipec.load(planted.artifact, cache=False).trust.trusted
        store.chmod(0o777)
        assert not pipec.load(planted.artifact, cache=False).trust.trusted
        assert cli.main(["trust", str(planted.artifact)]) == 1       # refuses to write there
    finally:
        planted.forget_modules()


# ------------------------------------------------------------------------------ LM endpoints
def test_a_planted_lm_endpoint_needs_approval(compiled, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-for-strangers-0123456789")
    planted = plant(compiled, tmp_path / "downloads",
                    lm_line='lm remote = "openai/gpt-4o-mini" (api_base: "http://127.0.0.1:9/v1")\n')
    try:
        prog = pipec.load(planted.artifact, cache=False, allow=["os", planted.tool_mod])
        with pytest.raises(ApprovalRequired) as exc:
            prog(q="true")
        assert [r.describe() for r in exc.value.missing] == [
            "lm remote: sends requests to http://127.0.0.1:9/v1 (with any key your environment holds for it)"]
        assert "--allow http://127.0.0.1:9" in str(exc.value)
        # Approved by its origin (scheme, host and port) ...
        pipec.load(planted.artifact, cache=False,
                   allow=["os", planted.tool_mod, "http://127.0.0.1:9/other/path"]).approve_running()
        with pytest.raises(ApprovalRequired):
            pipec.load(planted.artifact, cache=False, allow=["os", planted.tool_mod, "http://127.0.0.1:99"]).approve_running()
        # ... or not used at all when every LM is replaced.
        lm = pipec.ScriptedLM(rule=flip_rule)
        prog = pipec.load(planted.artifact, lm=lm, cache=False, allow=["os", planted.tool_mod])
        assert prog(q="true").ok
    finally:
        planted.forget_modules()


# ------------------------------------------------------------------------------ the user's own .pipe files
def test_check_graph_and_inspect_of_a_pipe_file_import_no_tool(write_pipe, tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "noisy_tools.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def search(query: str, k: int = 3) -> list:\n    '''The k best passages.'''\n    return []\n"
        "async def fetch(url):\n    return url\n")
    path = write_pipe("""
        tool search(query: str) -> list[str] = python("noisy_tools:search")
        tool fetch = python("noisy_tools:fetch")
        signature S { in q: str out a: str }
        module agent = ReAct(S, tools: [search, fetch])
        pipeline p(q: str) -> (a) {
            r = agent(q: q)
            return a = r.a
        }
    """)
    for args in (["check", path], ["graph", path], ["inspect", path]):
        rc, out, err = pipec_cmd(*args, cwd=tmp_path)
        assert rc == 0, (args, err)
    rc, out, err = pipec_cmd("inspect", path, cwd=tmp_path)
    assert "- search(query: str) -> list[str]: The k best passages." in out
    assert "- fetch(url)" in out
    assert not marker.exists()
    prog = pipec.load(path, lm=pipec.ScriptedLM([]), cache=False)
    assert not prog.inline                           # an async tool, seen in its source without importing it
    assert "noisy_tools" not in sys.modules and not marker.exists()


def test_static_tool_checks_still_catch_mistakes_without_importing(write_pipe, tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "noisy_tools2.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef search(query, k=3):\n    return []\n")
    path = write_pipe("""
        tool a(text: str) -> list[str] = python("noisy_tools2:search")
        tool b(query: str) -> list[str] = python("noisy_tools2:missing")
        tool c(query: str) -> list[str] = python("no_such_module_xyz:f")
        signature S { in q: str out a: str }
        module m = Predict(S)
        pipeline p(q: str) -> (a, x, y, z) {
            r = m(q: q)
            return a = r.a, x = a(text: q), y = b(query: q), z = c(query: q)
        }
    """)
    rc, out, err = pipec_cmd("check", path, cwd=tmp_path)
    assert rc == 1
    assert "tool a: declared parameters do not fit noisy_tools2:search: missing a required argument: 'query'" in err
    assert "tool b: 'noisy_tools2' has no attribute 'missing'" in err
    assert "tool c: cannot import 'no_such_module_xyz'" in err
    assert not marker.exists()


def test_a_module_planted_under_a_stdlib_name_is_not_imported_to_describe_it(write_pipe, tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef dumps(x):\n    return ''\n")
    path = write_pipe("""
        tool d(obj: str) -> str = python("json:dumps")
        pipeline p(q: str) -> (x) { return x = d(obj: q) }
    """)
    rc, out, err = pipec_cmd("check", path, cwd=tmp_path / "..")
    assert rc == 0, err
    assert not marker.exists()
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)


def test_markup_planted_in_an_artifact_stays_text_in_the_report(compiled, tmp_path):
    doc = json.loads(compiled.read_text())
    evil = '</script><script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    doc["predictors"]["m"]["instruction"] = evil
    doc["predictors"]["m"]["demos"][0]["a"] = evil
    doc["pipeline"] = "toy"
    art = tmp_path / "evil.compiled.json"
    art.write_text(json.dumps(reseal(doc)))
    out = tmp_path / "evil.html"
    rc, _, err = pipec_cmd("report", art, "-o", out, cwd=tmp_path)
    assert rc == 0, err
    page = out.read_text()
    assert "<script>document.title" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page or "\\u003cimg" in page


def test_approval_required_is_part_of_the_public_api():
    assert pipec.ApprovalRequired is ApprovalRequired


def test_a_key_echoed_into_demos_never_reaches_the_artifact(write_pipe, tmp_path, monkeypatch):
    key = "zq-Not-Shaped-Like-A-Key-7Hq2Vx9LmN4pR8"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    rows = [{"q": w, "a": f"{w} {key}"} for w in ["apple", "river", "stone", "cloud"]]
    prog = pipec.load(write_pipe(TOY, "echo.pipe"), lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    done = prog.compile(rows[:2], rows[2:], "exact_match(a)", "labeled_fewshot", seed=1)
    text = done.save(tmp_path / "echo.compiled.json").read_text()
    assert "apple ***" in text or "river ***" in text
    assert key not in text and key[:12] not in text and key[-12:] not in text


@pytest.mark.parametrize("special", ["/proc/self/environ", "fifo"])
def test_a_dataset_path_must_be_a_regular_file(write_pipe, tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "rows.jsonl")
        os.mkfifo(special)
    prog = pipec.load(write_pipe(TOY, "d.pipe"), lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    with pytest.raises(pipec.DatasetError, match="not a regular file"):
        prog.compile(special, ROWS, "exact_match(a)", "labeled_fewshot")

