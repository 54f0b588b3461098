"""End-to-end tests on the embedded SmolLM2 model, through the real CLI and the Python API.

Marked `e2e` (a few seconds each): `pytest -m "not e2e"` runs the fast unit tests alone; CI runs all.
Each test uses its own cache directory so that every LM call here is real unless a test is about
the cache.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTENTS = {"add_to_playlist", "book_restaurant", "get_weather", "play_music"}

pytestmark = pytest.mark.e2e

pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")


def pipec(*args: str, cache: Path, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIPEC_CACHE_DIR": str(cache), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipec", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_run_single_input_prints_a_valid_intent(tmp_path):
    proc = pipec("run", "examples/intent.pipe", "--input", "utterance=Table for two at 8 tonight", cache=tmp_path,
                 check=True)
    name, _, value = proc.stdout.strip().partition(": ")
    assert name == "intent" and value in INTENTS


def test_batch_run_reports_bad_rows_writes_results_and_resumes(tmp_path):
    rows = tmp_path / "rows.jsonl"
    lines = [json.dumps({"utterance": u}) for u in
             ["Play some rock", "Book a table for five at 9:30", "Will it rain in Oslo tomorrow"]]
    lines.insert(1, '{"utterance": "broken row"')          # line 2: invalid JSON
    lines.append(json.dumps({"text": "wrong field"}))      # line 5: missing input
    lines.append(json.dumps({"utterance": "Add Yesterday to my Focus playlist", "id": 7}))
    rows.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    cache = tmp_path / "cache"
    proc = pipec("run", "examples/intent.pipe", "--inputs", str(rows), "--output", str(out), "--concurrency", "4",
                 cache=cache)
    assert proc.returncode == 1                                # two rows were skipped
    assert f"{rows}:2: invalid JSON" in proc.stderr
    assert f"{rows}:5: missing input 'utterance'" in proc.stderr
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["line"] for r in records) == [1, 3, 4, 6]
    assert all(r["ok"] and r["outputs"]["intent"] in INTENTS for r in records)
    assert next(r for r in records if r["line"] == 6)["inputs"]["id"] == 7
    # Second run: every good row is already done, so nothing runs and no LM call is made.
    again = pipec("run", "examples/intent.pipe", "--inputs", str(rows), "--output", str(out), "--no-cache",
                  cache=cache)
    assert "wrote 0 rows" in again.stderr and "4 already done" in again.stderr
    assert len(out.read_text().splitlines()) == 4


def test_interrupted_batch_resumes_the_missing_rows_only(tmp_path):
    rows = tmp_path / "rows.jsonl"
    utterances = ["Play Imagine", "Play some jazz", "Book a table for two at noon", "Weather in Paris"]
    rows.write_text("".join(json.dumps({"utterance": u}) + "\n" for u in utterances))
    out = tmp_path / "out.jsonl"
    pipec("run", "examples/intent.pipe", "--inputs", str(rows), "--output", str(out), cache=tmp_path / "c",
          check=True)
    full = {r["line"]: r["outputs"] for r in map(json.loads, out.read_text().splitlines())}
    # Simulate a run killed after two rows, the second one torn mid-write.
    kept = out.read_text().splitlines()
    out.write_text(kept[0] + "\n" + kept[1][: len(kept[1]) // 2])
    proc = pipec("run", "examples/intent.pipe", "--inputs", str(rows), "--output", str(out), cache=tmp_path / "c2",
                 check=True)
    assert "wrote 3 rows" in proc.stderr and "1 already done" in proc.stderr
    resumed = {r["line"]: r["outputs"] for r in map(json.loads, out.read_text().splitlines())}
    assert resumed == full


def test_two_step_chain_and_python_tool_pipeline(tmp_path):
    proc = pipec("run", "examples/triage.pipe", "--input",
                 "message=My card was charged twice for order 1142, please refund one", "--json",
                 cache=tmp_path, check=True)
    result = json.loads(proc.stdout)
    assert result["ok"] and result["outputs"]["team"] in {"billing", "technical", "shipping", "other"}
    assert result["outputs"]["summary"].strip()
    proc = pipec("run", "examples/multihop.pipe", "--input", "question=Where was Gustave Eiffel born?", "--json",
                 "--trace", cache=tmp_path, check=True)
    result = json.loads(proc.stdout)
    assert result["ok"] and result["outputs"]["passages"]
    nodes = [c["node"] for c in result["trace"]]
    assert nodes == ["q1", "c1", "q2", "c2", "a"]          # the tool calls are traced between LM calls
    assert result["trace"][1]["model"] == "tool:examples.corpus:search"


def test_pipec_test_runs_the_test_blocks(tmp_path):
    proc = pipec("test", "examples/intent.pipe", cache=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed, 0 failed" in proc.stdout
    bad = tmp_path / "bad.pipe"
    bad.write_text((ROOT / "examples/intent.pipe").read_text().replace(
        'intent(utterance: "Book a table for five at 9:30") -> intent == "book_restaurant"',
        'intent(utterance: "Book a table for five at 9:30") -> intent == "get_weather"'))
    proc = pipec("test", str(bad), cache=tmp_path)
    assert proc.returncode == 1
    assert "FAIL books a table" in proc.stdout and "expected intent == 'get_weather'" in proc.stdout


def test_python_api_typed_result_trace_cache_and_batch(tmp_path):
    import pipec as api
    prog = api.load(ROOT / "examples/intent.pipe", cache=tmp_path)
    pred = prog(utterance="Play some rock")
    assert pred.ok and pred.intent in INTENTS
    (call,) = pred.trace
    assert call.messages[-1]["content"] == "utterance: Play some rock"
    assert call.raw and call.parsed == {"intent": pred.intent}
    assert call.prompt_tokens > 0 and call.completion_tokens > 0 and call.latency_ms > 0 and not call.cache_hit
    again = api.load(ROOT / "examples/intent.pipe", cache=tmp_path)(utterance="Play some rock")
    assert again.intent == pred.intent and again.trace[0].cache_hit
    rows = [{"utterance": u} for u in ["Play Hey Jude", "Book a table for five at noon", "Add Imagine to Focus"]]
    batch = prog.run_batch(rows, concurrency=4)
    single = [prog(**r) for r in rows]
    assert [p.intent for p in batch] == [p.intent for p in single]


def test_inspect_shows_the_exact_messages(tmp_path):
    proc = pipec("inspect", "examples/intent.pipe", "--input", "utterance=Play some rock", cache=tmp_path, check=True)
    assert "--- system" in proc.stdout and "utterance: Play some rock" in proc.stdout
    assert '"enum": ["add_to_playlist", "book_restaurant", "get_weather", "play_music"]' in proc.stdout
    assert "at most 2 LM calls per input" in proc.stdout


def test_the_readmes_first_command_prints_a_right_answer(tmp_path):
    """The first thing a new user sees: the quickstart's first command, as the README writes it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    first = block.strip().splitlines()[0]
    run = first.split("&& .venv/bin/pipec ", 1)[1]          # after the install: the pipec command itself
    import shlex
    proc = pipec(*shlex.split(run), cache=tmp_path, check=True)
    assert proc.stdout.strip() == "intent: book_restaurant"
