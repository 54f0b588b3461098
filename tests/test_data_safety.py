"""Data safety (issue 13): batch outputs are written only by the run they belong to, and no row of
data, no reply and no cached reply can kill a run or make an output that is not standard JSON.

* the output path: a file that is not this command's batch output (the `.pipe` source, notes, other
  JSON) is refused and left byte for byte as it was;
* the producer: every record carries a `run` object (program fingerprint, pipeline, input file, LMs);
  resuming onto records of another program, pipeline, input file or LM is refused, saying what differs;
* the lock: a second `pipec run` on an output that a first one is writing refuses at once, naming it;
* lone surrogates (half of a cut emoji pair) in inputs, replies and cached replies;
* a read-only warm cache serves its hits (a read-only mount as root, a directory of another user);
* NaN, Infinity, lists and objects for `str` inputs, duplicate JSON keys and CSV headers, empty inputs.

The CLI runs in-process through `pipec.cli.main` with every LM bound to a ScriptedLM, and as real
processes where two runs or another user are the point.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import pipec
from pipec import cli
from pipec import batch
from pipec.batch import run_jsonl
from pipec.dataset import DatasetError, load_examples, read_examples

from fault_server import FaultServer, field_value, pipec_command, record_figure

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TOY = """
signature Flip { "Reverse the word." in q: str out a: str }
module m = Predict(Flip)
pipeline toy(q: str) -> (a) {
    r = m(q: q)
    return a = r.a
}
pipeline other(q: str) -> (a) {
    r = m(q: q)
    return a = r.a
}
"""
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple"]


def flip_rule(request):
    for content in reversed([m["content"] for m in request.messages if m["role"] == "user"]):
        for line in content.split("\n"):
            if line.startswith("q: "):
                return {"a": line[3:][::-1]}
    return {"a": "ok"}


class AsyncLM(pipec.ScriptedLM):
    """A ScriptedLM on the asyncio path (rows run concurrently on the event loop)."""

    inline = False

    async def acomplete(self, request):
        return self.complete(request)


@pytest.fixture
def lms(monkeypatch):
    """Every LM the CLI builds is a ScriptedLM for its model id (so `--lm` shows); all are listed."""
    made = []

    def backend_for(model, options=None):
        lm = pipec.ScriptedLM(rule=flip_rule, model=model)
        made.append(lm)
        return lm
    monkeypatch.setattr("pipec.program.backend_for", backend_for)
    return made


def requests(lms) -> int:
    return sum(len(lm.requests) for lm in lms)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "toy.pipe").write_text(TOY, encoding="utf-8")
    write_rows(tmp_path / "rows.jsonl", [{"q": w} for w in WORDS])
    return tmp_path


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def main(capsys, *args) -> tuple[int, str, str]:
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return rc, out, err


def strict_records(path: Path) -> list[dict]:
    """The file's records, read as a strict JSON reader would: valid UTF-8, no NaN or Infinity, every
    line one object (split on newlines only)."""
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")
    text = path.read_bytes().decode("utf-8")           # raises on invalid UTF-8 (a lone surrogate written raw)
    return [json.loads(line, parse_constant=refuse) for line in text.split("\n") if line.strip()]


def run(capsys, project, *extra, out="out.jsonl", inputs="rows.jsonl", pipe="toy.pipe"):
    return main(capsys, "run", project / pipe, "--inputs", project / inputs, "-o", project / out, "--no-cache",
                "--pipeline", "toy", *extra)


# ====================================================================== the output path
@pytest.mark.parametrize("name, content", [
    ("victim.pipe", None),                                    # the program's own source
    ("notes.md", "my notes\nline 2\n"),
    ("notes.txt", "no newline at the end"),
    ("other.json", '{"a": 1}\n{"b": 2}\n'),                   # JSON, but not batch records
    ("report.jsonl", '{"line": 1, "key": "x", "ok": true, "inputs": {}}\nnot json\n{"line": 2}\n'),
], ids=["pipe-source", "text", "text-no-newline", "other-json", "records-then-junk"])
def test_an_output_that_holds_something_else_is_refused_and_left_as_it_was(project, lms, capsys, name, content):
    """Issue 13: `-o victim.pipe` overwrote the source; `-o notes.md` emptied a text file."""
    target = project / name
    if content is None:
        shutil.copy(project / "toy.pipe", target)
        pipe = name
    else:
        target.write_text(content, encoding="utf-8")
        pipe = "toy.pipe"
    before = target.read_bytes()
    rc, _, err = run(capsys, project, out=name, pipe=pipe)
    assert rc == 2, err
    assert target.read_bytes() == before
    assert "it was not changed" in err or "was not changed" in err
    assert requests(lms) == 0
    assert not (project / (name + ".lock")).exists()


def test_an_output_that_is_an_imported_source_or_the_artifact_is_refused(project, lms, capsys, monkeypatch):
    (project / "shared.pipe").write_text('signature Flip { "Reverse the word." in q: str out a: str }\n')
    (project / "main.pipe").write_text('import "shared.pipe"\nmodule m = Predict(Flip)\n'
                                       'pipeline toy(q: str) -> (a) { r = m(q: q) return a = r.a }\n')
    before = (project / "shared.pipe").read_bytes()
    rc, _, err = run(capsys, project, pipe="main.pipe", out="shared.pipe")
    assert rc == 2 and "source file of the program" in err and (project / "shared.pipe").read_bytes() == before
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    compiled = prog.compile([{"q": w, "a": w[::-1]} for w in WORDS], metric="exact_match(a)",
                            optimizer="labeled_fewshot", seed=0)
    art = compiled.save(project / "toy.compiled.json")
    before = art.read_bytes()
    rc, _, err = run(capsys, project, pipe="toy.compiled.json", out="toy.compiled.json")
    assert rc == 2 and "artifact" in err and art.read_bytes() == before


def test_an_output_that_is_a_directory_is_refused(project, lms, capsys):
    (project / "folder").mkdir()
    rc, _, err = run(capsys, project, out="folder")
    assert rc == 2 and "not a regular file" in err


def test_a_record_cut_short_by_a_kill_is_still_redone(project, lms, capsys):
    """What resume may cut: only a last line without its newline that starts like a record."""
    assert run(capsys, project)[0] == 0
    out = project / "out.jsonl"
    text = out.read_text()
    out.write_text(text[: len(text) - 40])                    # killed in the middle of the last record
    rc, _, err = run(capsys, project)
    assert rc == 0, err
    assert sorted(r["line"] for r in strict_records(out)) == list(range(1, len(WORDS) + 1))


# ====================================================================== who wrote an output
def test_every_record_names_what_produced_it(project, lms, capsys):
    assert run(capsys, project, out="res/out.jsonl")[0] == 0
    recs = strict_records(project / "res" / "out.jsonl")
    runs = {json.dumps(r["run"], sort_keys=True) for r in recs}
    assert len(runs) == 1
    run_obj = recs[0]["run"]
    assert run_obj["pipeline"] == "toy" and run_obj["inputs"] == "../rows.jsonl" and run_obj["file"] == "../toy.pipe"
    assert run_obj["lm"] == ["local/smollm2"] and len(run_obj["program"]) == 16
    assert list(recs[0])[:3] == ["line", "key", "inputs"]      # the row comes first, as before


def test_resuming_onto_the_output_of_another_input_file_is_refused(project, lms, capsys):
    """Issue 13: 600 records, every row answered twice, exit 0."""
    write_rows(project / "other.jsonl", [{"q": w.upper()} for w in WORDS])
    assert run(capsys, project)[0] == 0
    out = project / "out.jsonl"
    before, calls = out.read_bytes(), requests(lms)
    rc, _, err = run(capsys, project, inputs="other.jsonl")
    assert rc == 2
    assert "input file rows.jsonl there, other.jsonl now" in err
    assert out.read_bytes() == before and requests(lms) == calls


def test_resuming_with_another_program_pipeline_or_lm_is_refused(project, lms, capsys):
    assert run(capsys, project)[0] == 0
    out = project / "out.jsonl"
    before, calls = out.read_bytes(), requests(lms)
    rc, _, err = run(capsys, project, "--pipeline", "other")
    assert rc == 2 and "pipeline toy there, other now" in err
    rc, _, err = run(capsys, project, "--lm", "openai/gpt-4o-mini")
    assert rc == 2 and "LM local/smollm2 there, openai/gpt-4o-mini now" in err
    pipe = project / "toy.pipe"
    pipe.write_text(pipe.read_text().replace("Reverse the word.", "Reverse the word, please."))
    rc, _, err = run(capsys, project)
    assert rc == 2 and "program " in err and "(toy.pipe) there" in err
    assert out.read_bytes() == before and requests(lms) == calls


def test_an_artifact_is_another_program_than_its_pipe_file(project, lms, capsys):
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    compiled = prog.compile([{"q": w, "a": w[::-1]} for w in WORDS], metric="exact_match(a)",
                            optimizer="labeled_fewshot", seed=0)
    compiled.save(project / "toy.compiled.json")
    assert run(capsys, project)[0] == 0
    rc, _, err = run(capsys, project, pipe="toy.compiled.json")
    assert rc == 2 and "(toy.pipe) there" in err and "(toy.compiled.json) now" in err
    assert run(capsys, project, pipe="toy.compiled.json", out="compiled.jsonl")[0] == 0
    assert run(capsys, project, pipe="toy.compiled.json", out="compiled.jsonl")[0] == 0   # its own: resumes


def test_resume_still_grows_with_the_input_and_survives_moving_the_folder(project, lms, capsys):
    """The existing resume semantics: appended rows run, changed rows rerun, finished rows do not;
    the paths a record names are relative to the output, so a project folder can move."""
    assert run(capsys, project)[0] == 0
    write_rows(project / "rows.jsonl", [{"q": w} for w in WORDS] + [{"q": "extra"}])
    calls = requests(lms)
    rc, _, err = run(capsys, project)
    assert rc == 0 and requests(lms) == calls + 1 and "1 rows" in err
    moved = project.parent / (project.name + "-moved")
    shutil.move(str(project), moved)
    try:
        calls = requests(lms)
        rc, _, err = run(capsys, moved)
        assert rc == 0 and requests(lms) == calls and f"{len(WORDS) + 1} already done" in err
    finally:
        shutil.move(str(moved), project)


def test_records_of_an_earlier_pipec_without_a_run_object_still_resume(project, lms, capsys):
    assert run(capsys, project)[0] == 0
    out = project / "out.jsonl"
    recs = strict_records(out)
    out.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "run"}) + "\n" for r in recs))
    calls = requests(lms)
    rc, _, err = run(capsys, project)
    assert rc == 0 and requests(lms) == calls


# ====================================================================== merge
def test_merge_refuses_parts_of_different_programs_and_outputs_that_are_not_its_own(project, lms, capsys):
    assert run(capsys, project, "--shard", "1/2", out="a.jsonl")[0] == 0
    assert run(capsys, project, "--shard", "2/2", "--lm", "other/model", out="b.jsonl")[0] == 0
    merged = project / "all.jsonl"
    rc, _, err = main(capsys, "merge", project / "a.jsonl", project / "b.jsonl", "--inputs", project / "rows.jsonl",
                      "-o", merged)
    assert rc == 1 and "different runs" in err and "other/model" in err and not merged.exists()
    assert run(capsys, project, "--shard", "2/2", out="c.jsonl")[0] == 0
    for victim in ("rows.jsonl", "toy.pipe", "a.jsonl"):
        before = (project / victim).read_bytes()
        rc, _, err = main(capsys, "merge", project / "a.jsonl", project / "c.jsonl", "--inputs",
                          project / "rows.jsonl", "-o", project / victim)
        assert rc == 2 and (project / victim).read_bytes() == before, err


def test_a_merged_file_names_its_input_from_where_it_is_and_resumes(project, lms, capsys):
    for k in (1, 2):
        assert run(capsys, project, "--shard", f"{k}/2", out=f"parts/p{k}.jsonl")[0] == 0
    merged = project / "out" / "all.jsonl"
    rc, _, err = main(capsys, "merge", project / "parts/p1.jsonl", project / "parts/p2.jsonl", "--inputs",
                      project / "rows.jsonl", "-o", merged)
    assert rc == 0, err
    recs = strict_records(merged)
    assert [r["line"] for r in recs] == list(range(1, len(WORDS) + 1))
    assert {r["run"]["inputs"] for r in recs} == {"../rows.jsonl"} and {r["run"]["file"] for r in recs} == {"../toy.pipe"}
    calls = requests(lms)
    assert run(capsys, project, out="out/all.jsonl")[0] == 0 and requests(lms) == calls


def test_merge_takes_the_record_of_a_row_as_it_is_now_from_a_resumed_part(project, lms, capsys):
    """A part resumed after a row changed holds the old row's record and the new one: the new one
    counts (it used to be 'answered more than once')."""
    for k in (1, 2):
        assert run(capsys, project, "--shard", f"{k}/2", out=f"p{k}.jsonl")[0] == 0
    write_rows(project / "rows.jsonl", [{"q": w} for w in WORDS[:-1]] + [{"q": "changed"}])
    assert run(capsys, project, "--shard", f"{len(WORDS) % 2 or 2}/2", out=f"p{len(WORDS) % 2 or 2}.jsonl")[0] == 0
    merged = project / "all.jsonl"
    rc, _, err = main(capsys, "merge", project / "p1.jsonl", project / "p2.jsonl", "--inputs", project / "rows.jsonl",
                      "-o", merged)
    assert rc == 0, err
    assert strict_records(merged)[-1]["outputs"] == {"a": "degnahc"}


# ====================================================================== two runs on one output
HOLDER = """
import os, sys, time
import pipec, pipec.program
from pipec.cli import main

go = sys.argv[1]

def rule(request):
    print("started", flush=True)
    while not os.path.exists(go):           # hold the batch open until the test says go
        time.sleep(0.02)
    return {"a": "x"}

pipec.program.backend_for = lambda model, options=None: pipec.ScriptedLM(rule=rule, model=model)
sys.exit(main(sys.argv[2:]))
"""


def start_holder(project: Path):
    script = project / "holder.py"
    script.write_text(HOLDER)
    go = project / "go"
    proc = subprocess.Popen([sys.executable, str(script), str(go), "run", str(project / "toy.pipe"), "--inputs",
                             str(project / "rows.jsonl"), "-o", str(project / "out.jsonl"), "--no-cache",
                             "--concurrency", "1", "--pipeline", "toy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started", proc.stderr.read()
    return proc, go


def test_a_second_run_on_an_output_being_written_refuses_at_once_naming_the_first(project, lms, capsys):
    """Issue 13: two `pipec run` on one output wrote 300 duplicate rows."""
    proc, go = start_holder(project)
    try:
        out = project / "out.jsonl"
        before = out.read_bytes() if out.exists() else b""
        rc, _, err = run(capsys, project)
        assert rc == 2, err
        assert "being written by another pipec run" in err and f"pid {proc.pid}" in err and "holder.py" in err
        assert requests(lms) == 0 and (out.read_bytes() if out.exists() else b"") == before
    finally:
        go.touch()
        assert proc.wait(60) == 0, proc.stderr.read()
    recs = strict_records(project / "out.jsonl")
    assert sorted(r["line"] for r in recs) == list(range(1, len(WORDS) + 1))
    assert not (project / "out.jsonl.lock").exists()
    assert run(capsys, project)[0] == 0 and requests(lms) == 0      # the first run's output, resumed: all done


def test_the_lock_of_a_killed_run_is_released(project, lms, capsys):
    proc, go = start_holder(project)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert (project / "out.jsonl.lock").exists()                   # left behind, but nobody holds it
    rc, _, err = run(capsys, project)
    assert rc == 0, err
    assert sorted(r["line"] for r in strict_records(project / "out.jsonl")) == list(range(1, len(WORDS) + 1))


def test_a_second_run_in_the_same_process_refuses_too(project):
    out = project / "out.jsonl"
    seen = []

    def rule(request):
        if not seen:
            prog2 = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
            with pytest.raises(batch.OutputRefused, match="being written by another pipec run"):
                run_jsonl(prog2, project / "rows.jsonl", out)
            seen.append(True)
        return flip_rule(request)
    run_jsonl(pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=rule), cache=False), project / "rows.jsonl", out)
    assert seen and len(strict_records(out)) == len(WORDS)
    with batch.OutputLock(out):                                           # and free again afterwards
        pass


def test_merge_refuses_a_part_that_is_still_being_written(project, lms, capsys):
    proc, go = start_holder(project)
    try:
        rc, _, err = main(capsys, "merge", project / "out.jsonl", "--inputs", project / "rows.jsonl",
                          "-o", project / "all.jsonl")
        assert rc == 2 and "still being written" in err and not (project / "all.jsonl").exists()
    finally:
        go.touch()
        proc.wait(60)


PARITY = """
lm remote = "openai/lock-model" (api_base: "{base}", api_key_env: "PIPEC_LOCK_KEY", num_retries: 2, timeout: 300)
signature P {{ "Even or odd?" in text: str out parity: enum(even, odd) }}
module p = Predict(P)
pipeline parity(text: str) -> (parity) {{
    r = p(text: text)
    return parity = r.parity
}}
"""


def test_two_pipec_processes_on_one_output_write_every_row_once(tmp_path, monkeypatch):
    """The issue's report, as it happened: two real `pipec run` processes on one output, against a
    server with latency. The server holds the first run in the middle of its batch (at its 150th row)
    while the second starts; the second refuses, and the first writes 300 rows, each once."""
    import threading
    monkeypatch.setenv("PIPEC_LOCK_KEY", "sk-lock-test-0123456789")
    reached, release = threading.Event(), threading.Event()

    def latency(body):
        if field_value(body, "text") == "item 150":
            reached.set()
            release.wait(300)             # stalls the server: the first run is mid-batch, holding its lock
        return 0.005

    def answer(body):
        return {"parity": "even" if int(field_value(body, "text").split()[-1]) % 2 == 0 else "odd"}
    with FaultServer(answer, latency=latency) as server:
        pipe = tmp_path / "parity.pipe"
        pipe.write_text(PARITY.format(base=server.base))
        rows = write_rows(tmp_path / "rows.jsonl", [{"text": f"item {i}"} for i in range(300)])
        out = tmp_path / "out.jsonl"
        args = [*pipec_command(), "run", str(pipe), "--inputs", str(rows), "-o", str(out), "--no-cache",
                "--concurrency", "8"]
        env = {**os.environ, "NO_COLOR": "1"}
        first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert reached.wait(300), "the first run never reached row 150"
            # (a second run that does not refuse would wait for the stalled server: the timeout ends it)
            second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        finally:
            release.set()
        assert first.wait(300) == 0, first.stderr.read()
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr
    recs = strict_records(out)
    lines = [r["line"] for r in recs]
    assert sorted(lines) == list(range(1, 301))
    record_figure("two_runs_one_output", rows=300, records=len(recs), duplicated=len(lines) - len(set(lines)),
                  second_exit=second.returncode)


# ====================================================================== lone surrogates
@pytest.mark.parametrize("make_lm", [pipec.ScriptedLM, AsyncLM], ids=["inline", "asyncio"])
def test_a_lone_surrogate_in_an_input_fails_that_row_alone(project, make_lm):
    src = project / "rows.jsonl"
    src.write_text('{"q": "apple"}\n{"q": "ha\\ud800lf"}\n{"q": "ok", "id": "\\udfff"}\n{"q": "river"}\n')
    lm = make_lm(rule=flip_rule)
    out = project / "out.jsonl"
    summary = run_jsonl(pipec.load(project / "toy.pipe", lm=lm, cache=False), src, out)
    recs = {r["line"]: r for r in strict_records(out)}
    assert sorted(recs) == [1, 2, 3, 4] and summary.failed == 1
    assert not recs[2]["ok"] and "input 'q'" in recs[2]["error"] and "\\ud800" in recs[2]["error"]
    assert recs[2]["lm_calls"] == 0 and recs[2]["inputs"] == {"q": "ha\ud800lf"}   # kept, escaped in the file
    assert recs[3]["ok"] and recs[3]["inputs"]["id"] == "\udfff"                    # not an input: carried along
    assert recs[1]["ok"] and recs[4]["outputs"] == {"a": "revir"}
    assert len(lm.requests) == 3


CUT = '{"a": "cut \\ud83d"}'        # a reply whose JSON escapes half of an emoji pair


@pytest.mark.parametrize("make_lm", [pipec.ScriptedLM, AsyncLM], ids=["inline", "asyncio"])
@pytest.mark.parametrize("reply", [CUT, '{"a": "cut \ud83d"}'], ids=["escaped", "decoded"])
def test_a_reply_with_a_lone_surrogate_is_read_with_a_replacement_character_and_cached_safely(project, make_lm, reply):
    """Issue 13: such a reply killed the batch ("Task was destroyed but it is pending"), stayed
    cached, and every rerun crashed again."""
    src = write_rows(project / "rows.jsonl", [{"q": w} for w in WORDS])
    out = project / "out.jsonl"
    lm = make_lm(rule=lambda r: reply if "tiger" in r.messages[-1]["content"] else flip_rule(r), cacheable=True)
    summary = run_jsonl(pipec.load(project / "toy.pipe", lm=lm, cache=project / "cache"), src, out, with_trace=True)
    recs = {r["line"]: r for r in strict_records(out)}
    assert summary.failed == 0 and len(recs) == len(WORDS)
    assert recs[5]["outputs"] == {"a": "cut \ufffd"}
    again = make_lm(rule=lambda r: pytest.fail("the LM was called: the reply should be a cache hit"), cacheable=True)
    out2 = project / "again.jsonl"
    summary = run_jsonl(pipec.load(project / "toy.pipe", lm=again, cache=project / "cache"), src, out2)
    assert summary.failed == 0 and {r["line"]: r for r in strict_records(out2)}[5]["outputs"] == {"a": "cut \ufffd"}


def test_a_reply_cached_by_an_earlier_pipec_cannot_crash_a_run(project):
    from pipec.cache import LMCache, cache_key
    from pipec.lm.base import LMReply
    lm = pipec.ScriptedLM(rule=flip_rule, cacheable=True)
    prog = pipec.load(project / "toy.pipe", lm=lm, cache=project / "cache")
    prog(q="tiger")                                        # learn the request's cache key
    key = cache_key(lm.describe(), lm.requests[-1])
    prog.close()
    cache = LMCache(project / "cache")
    cache.put(key, LMReply(CUT))
    cache.close()
    lm2 = pipec.ScriptedLM(rule=lambda r: pytest.fail("not a cache hit"), cacheable=True)
    src = write_rows(project / "rows.jsonl", [{"q": "tiger"}])
    summary = run_jsonl(pipec.load(project / "toy.pipe", lm=lm2, cache=project / "cache"), src, project / "o.jsonl")
    assert summary.failed == 0 and strict_records(project / "o.jsonl")[0]["outputs"] == {"a": "cut \ufffd"}


def test_eval_and_report_survive_a_reply_with_a_lone_surrogate(project, capsys, monkeypatch):
    monkeypatch.setattr("pipec.program.backend_for",
                        lambda model, options=None: pipec.ScriptedLM(rule=lambda r: CUT if "tiger" in r.messages[-1]["content"]
                                                                     else flip_rule(r)))
    write_rows(project / "data.jsonl", [{"q": w, "a": w[::-1]} for w in WORDS])
    rc, out, err = main(capsys, "eval", project / "toy.pipe", "--data", project / "data.jsonl", "--metric",
                        "exact_match(a)", "--output", project / "eval.jsonl", "--report", project / "eval.html",
                        "--no-cache")
    assert rc == 0, err
    assert "cut \ufffd" in out
    assert len(strict_records(project / "eval.jsonl")) == len(WORDS)
    assert "cut \ufffd" in (project / "eval.html").read_bytes().decode("utf-8")
    rc, _, err = main(capsys, "report", project / "toy.pipe", "--eval", project / "eval.jsonl", "-o", project / "r.html")
    assert rc == 0, err
    rows = project / "edited.jsonl"               # eval rows from elsewhere, holding escaped lone surrogates
    rows.write_text('{"where": "d.jsonl:1", "inputs": {"q": "a\\ud800"}, "expected": {"a": "x"}, "outputs": '
                    '{"a": "y\\ud83d"}, "score": 0.0, "passed": false, "error": null, "raw": "r\\udc00"}\n')
    rc, _, err = main(capsys, "report", project / "toy.pipe", "--eval", rows, "-o", project / "r2.html")
    assert rc == 0, err
    assert "\ufffd" in (project / "r2.html").read_bytes().decode("utf-8")


def test_a_dataset_with_a_lone_surrogate_is_a_dataset_error_naming_the_line(project):
    data = project / "data.jsonl"
    data.write_text('{"q": "apple", "a": "elppa"}\n{"q": "x\\ud800", "a": "x"}\n{"q": "y", "a": "\\udc00"}\n')
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    with pytest.raises(DatasetError) as info:
        load_examples(data, prog, ["a"])
    text = str(info.value)
    assert f"{data}:2: input 'q'" in text and f"{data}:3: field 'a'" in text and "\\ud800" in text


# ====================================================================== a read-only warm cache
COUNT = """
signature S { "Count the letters." in q: str out n: int }
module m = Predict(S)
pipeline count(q: str) -> (n) {
    r = m(q: q)
    return n = r.n
}
"""

READER = """
import json, sys, logging
import pipec

class AsyncLM(pipec.ScriptedLM):
    inline = False
    async def acomplete(self, request):
        return self.complete(request)

def rule(request):
    return {"n": len(request.messages[-1]["content"].split("q: ")[1])}

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
result = {}
for name, cls in (("inline", pipec.ScriptedLM), ("async", AsyncLM)):
    lm = cls(rule=rule, cacheable=True)
    prog = pipec.load(sys.argv[1], lm=lm, cache=sys.argv[2])
    preds = prog.run_batch([{"q": "x" * i} for i in range(1, 21)], concurrency=4)
    result[name] = {"requests": len(lm.requests), "answers": [p.n if p.ok else p.error for p in preds]}
    prog.close()
print(json.dumps(result))
"""


def _warm_cache(folder: Path) -> None:
    (folder / "count.pipe").write_text(COUNT)
    (folder / "reader.py").write_text(READER)
    for cls in (pipec.ScriptedLM, AsyncLM):
        lm = cls(rule=lambda r: {"n": len(r.messages[-1]["content"].split("q: ")[1])}, cacheable=True)
        prog = pipec.load(folder / "count.pipe", lm=lm, cache=folder / "cache")
        assert all(p.ok for p in prog.run_batch([{"q": "x" * i} for i in range(1, 21)]))
        prog.close()
    big = folder / "cache"                                 # one value large enough to live in a file of its own
    from pipec.cache import LMCache
    from pipec.lm.base import LMReply
    c = LMCache(big)
    c.put("big", LMReply("B" * 100_000))
    c.close()
    assert list(big.rglob("*.val"))


def _check_reader(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("inline", "async"):
        assert result[name]["answers"] == list(range(1, 21)), (name, proc.stderr)
        assert result[name]["requests"] == 0, f"{name}: a read-only warm cache served no hits:\n{proc.stderr}"
    assert "hits are still read from it" in proc.stderr


@pytest.fixture
def shared_folder():
    """A folder every user can read (pytest's own tmp folder is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="pipec-ro-cache-"))
    os.chmod(folder, 0o755)
    yield folder
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("mode", ["not-writable", "read-only-files"])
def test_a_read_only_warm_cache_serves_its_hits_to_another_user(shared_folder, mode):
    """Issue 13: "could not be opened: unable to open database file", and no hit served."""
    _warm_cache(shared_folder)
    cache = shared_folder / "cache"
    for p in [cache, *cache.rglob("*")]:
        p.chmod((0o755 if p.is_dir() else 0o644) if mode == "not-writable" else (0o555 if p.is_dir() else 0o444))
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to read the cache as another user")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    else:
        if mode == "not-writable":
            pytest.skip("the cache is the test user's own: writable to it")
        command = []
    env = {**os.environ, "HOME": str(shared_folder), "PIPEC_CACHE_DIR": str(shared_folder / "default")}
    proc = subprocess.run([*command, sys.executable, str(shared_folder / "reader.py"), str(shared_folder / "count.pipe"),
                           str(cache)], capture_output=True, text=True, timeout=120, env=env, cwd=shared_folder)
    _check_reader(proc)


def test_a_warm_cache_on_a_read_only_mount_serves_its_hits_to_root(shared_folder):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a read-only bind mount needs root and unshare")
    _warm_cache(shared_folder)
    cache = shared_folder / "cache"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{cache}' '{cache}' && touch '{cache}/x'"],
                           capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()}")
    script = (f"mount --bind -o ro '{cache}' '{cache}' && exec '{sys.executable}' '{shared_folder / 'reader.py'}' "
              f"'{shared_folder / 'count.pipe'}' '{cache}'")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    _check_reader(proc)


# ====================================================================== NaN, lists, duplicate keys, empty files
def test_str_inputs_refuse_nan_infinity_lists_and_objects(project, lms, capsys):
    """Issue 13: `str` inputs accepted NaN, Infinity, lists and objects; outputs held bare NaN."""
    src = project / "rows.jsonl"
    src.write_text('{"q": "apple"}\n{"q": NaN}\n{"q": Infinity}\n{"q": "ok", "id": -Infinity}\n'
                   '{"q": ["a", "b"]}\n{"q": {"x": 1}}\n{"q": 1e999}\n{"q": "river"}\n')
    rc, _, err = run(capsys, project)
    assert rc == 1
    for line in (2, 3, 4):
        assert f"skipped: {src}:{line}: " in err and "not a JSON value" in err
    recs = {r["line"]: r for r in strict_records(project / "out.jsonl")}
    assert sorted(recs) == [1, 5, 6, 7, 8]
    assert "input 'q': expected text, got a list" in recs[5]["error"]
    assert "input 'q': expected text, got an object" in recs[6]["error"]
    assert "input 'q': expected text, got inf" in recs[7]["error"]
    assert recs[7]["inputs"] == {"q": None}                 # JSON cannot hold the infinity: null, not bare Infinity
    assert recs[1]["ok"] and recs[8]["ok"] and requests(lms) == 2


def test_run_batch_refuses_nan_for_a_str_input(project):
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    preds = prog.run_batch([{"q": "ab"}, {"q": float("nan")}, {"q": ["x"]}])
    assert [p.ok for p in preds] == [True, False, False]
    assert "expected text, got nan" in preds[1].error
    typed = pipec.load(project / "tags.pipe" if (project / "tags.pipe").write_text(
        'signature T { "Tag." in tags: list[str] out a: str }\nmodule m = Predict(T)\n'
        'pipeline tags(tags: list[str]) -> (a) { r = m(tags: tags) return a = r.a }\n') else None,
        lm=pipec.ScriptedLM(rule=lambda r: {"a": "ok"}), cache=False)
    preds = typed.run_batch([{"tags": ["a", "b"]}, {"tags": ["a", float("inf")]}])
    assert preds[0].ok and "input 'tags': item 2: expected text, got inf" in preds[1].error


def test_an_output_that_is_nan_fails_its_row_and_the_file_stays_json(tmp_path, tool_module):
    mod = tool_module("def odd(q):\n    return float('nan') if q == 'bad' else len(q)\n")
    pipe = tmp_path / "t.pipe"
    pipe.write_text(f'tool odd = python("{mod}:odd")\npipeline p(q: str) -> (x) {{\n    v = odd(q: q)\n    return x = v\n}}\n')
    src = write_rows(tmp_path / "rows.jsonl", [{"q": "ab"}, {"q": "bad"}])
    summary = run_jsonl(pipec.load(pipe, cache=False), src, tmp_path / "out.jsonl")
    recs = {r["line"]: r for r in strict_records(tmp_path / "out.jsonl")}
    assert recs[1]["outputs"] == {"x": 2} and not recs[2]["ok"] and "output x is not a finite number" in recs[2]["error"]
    assert summary.failed == 1


def test_duplicate_json_keys_are_an_error_naming_the_key(project, lms, capsys):
    src = project / "rows.jsonl"
    src.write_text('{"q": "apple"}\n{"q": "first", "q": "second"}\n{"q": "x", "meta": {"k": 1, "k": 2}}\n')
    rc, _, err = run(capsys, project)
    assert rc == 1
    assert f"skipped: {src}:2: duplicate key 'q'" in err and f"skipped: {src}:3: duplicate key 'k'" in err
    assert [r["line"] for r in strict_records(project / "out.jsonl")] == [1]
    data = project / "data.jsonl"
    data.write_text('{"q": "apple", "a": "elppa"}\n{"q": "x", "a": "y", "a": "z"}\n')
    with pytest.raises(DatasetError, match=r"data.jsonl:2: duplicate key 'a'"):
        read_examples(data)
    data.write_text('{"q": "apple", "a": "elppa"}\n{"q": "x", "a": NaN}\n')
    with pytest.raises(DatasetError, match=r"data.jsonl:2: NaN is not a JSON value"):
        read_examples(data)


def test_duplicate_csv_headers_are_an_error_naming_the_column(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("q,a,q\napple,elppa,pear\n")
    with pytest.raises(DatasetError) as info:
        read_examples(data)
    assert str(info.value) == f"{data}:1: column 'q' appears twice in the header (columns 1 and 3); which one holds the data?"


@pytest.mark.parametrize("content", ["", "\n\n   \n", "\ufeff\n"], ids=["empty", "blank-lines", "bom"])
def test_an_empty_inputs_file_is_an_error(project, lms, capsys, content):
    (project / "rows.jsonl").write_text(content, encoding="utf-8")
    rc, _, err = run(capsys, project)
    assert rc == 1 and "no rows" in err
    assert not (project / "out.jsonl").exists()


def test_a_fatal_error_while_writing_leaves_no_task_pending(project, monkeypatch):
    """When the output cannot be written (disk full), the batch stops with that error, and the rows in
    flight are cancelled and awaited. Left pending on the thread's event loop, they were reported at
    exit as "Task was destroyed but it is pending" (the issue's symptom)."""
    import asyncio
    import errno
    from pipec import batch as batch_module
    from pipec import aio
    real = batch_module.dump_line
    calls = []

    def full(rec):
        calls.append(rec)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(rec)

    class Slow(AsyncLM):                 # the first rows answer at once, the rest are still in flight
        async def acomplete(self, request):
            fast = any(request.messages[-1]["content"].endswith(w * 3) for w in WORDS[:2])
            await asyncio.sleep(0 if fast else 1.0)
            return self.complete(request)
    monkeypatch.setattr(batch_module, "dump_line", full)
    src = write_rows(project / "rows.jsonl", [{"q": w * 3} for w in WORDS * 4])
    prog = pipec.load(project / "toy.pipe", lm=Slow(rule=flip_rule), cache=False)
    loop = getattr(aio._thread_loops, "loop", None)
    # Tasks an earlier test left on this thread's loop (litellm's logging worker, say) are not this batch's.
    before = set(asyncio.all_tasks(loop)) if loop is not None and not loop.is_closed() else set()
    with pytest.raises(OSError, match="No space left"):
        run_jsonl(prog, src, project / "out.jsonl", concurrency=8)
    loop = aio._thread_loops.loop
    assert not [t for t in asyncio.all_tasks(loop) if not t.done() and t not in before]
    assert not (project / "out.jsonl.lock").exists()
