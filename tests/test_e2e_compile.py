"""Compiling on the embedded model, end to end: the CLI, the artifact, the compile cache, the API.

Marked `e2e`; small slices of the intent data keep each test under a minute on two cores.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"

pytestmark = pytest.mark.e2e
pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")


def pipec(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIPEC_CACHE_DIR": str(cache), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipec", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def slice_of(name: str, n: int, dest: Path) -> Path:
    rows = (DATA / name).read_text().splitlines()[:n]
    dest.write_text("\n".join(rows) + "\n")
    return dest


def scores(text: str) -> tuple[float, float]:
    m = re.search(r"baseline ([0-9.]+) -> compiled ([0-9.]+)", text)
    assert m, text
    return float(m.group(1)), float(m.group(2))


def test_compile_lifts_the_score_writes_an_artifact_and_hits_the_cache(tmp_path):
    train = slice_of("intent_train.jsonl", 40, tmp_path / "train.jsonl")
    val = slice_of("intent_dev.jsonl", 20, tmp_path / "val.jsonl")
    out = tmp_path / "intent.compiled.json"
    args = ["compile", "examples/intent.pipe", "--optimizer", "knn_fewshot", "--trainset", str(train),
            "--valset", str(val), "--budget", "200", "--output", str(out)]
    first = pipec(*args, cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    before, after = scores(first.stdout)
    assert after >= before + 0.2, first.stdout
    art = json.loads(out.read_text())
    assert art["format"] == "pipec-compiled" and art["report"]["lm_requests"] <= 200
    assert art["predictors"]["classify"]["knn"]["k"] == 3
    # Unchanged inputs: a cache hit, no LM call, well under a second of compile work.
    start = time.perf_counter()
    again = pipec(*args, cache=tmp_path / "cache")
    assert time.perf_counter() - start < 10         # a process start and a cache lookup, on a possibly busy machine
    assert "cache hit" in again.stdout and scores(again.stdout) == (before, after)
    assert out.read_text() == json.dumps(art, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    # The artifact runs and evaluates like the .pipe file does.
    ev = pipec("eval", str(out), "--data", str(val), cache=tmp_path / "cache")
    assert ev.returncode == 0 and f"= {after:.3f}" in ev.stdout
    run = pipec("run", str(out), "--input", "utterance=Will it snow in Oslo tomorrow", cache=tmp_path / "cache")
    assert run.returncode == 0 and run.stdout.startswith("intent: ")


def test_python_api_bootstrap_compile_save_and_load(tmp_path):
    import pipec as api
    rows = [json.loads(x) for x in (DATA / "intent_train.jsonl").read_text().splitlines()[:24]]
    dev = [json.loads(x) for x in (DATA / "intent_dev.jsonl").read_text().splitlines()[:12]]
    prog = api.load(ROOT / "examples/intent.pipe", cache=tmp_path / "cache")
    compiled = prog.compile(trainset=rows, valset=dev, metric="exact_match(intent)", optimizer="bootstrap_fewshot",
                            seed=7, budget=120, options={"max_demos": 2, "max_labeled": 2})
    report = compiled.report
    assert report.seed == 7 and report.budget == 120 and report.lm_requests <= 120
    assert report.trainset == 24 and report.valset == 12 and report.trials
    demos = compiled.params()["classify"].demos
    bootstrapped = report.trials[0]
    assert bootstrapped.note == "bootstrapped demos"
    if bootstrapped.score < report.baseline_score:           # demos can hurt this model: zero demos kept
        assert demos == [] and report.compiled_score == report.baseline_score
    else:
        assert 1 <= len(demos) <= 2 and all(set(d) == {"utterance", "intent"} for d in demos)
        assert report.compiled_score == bootstrapped.score
    path = compiled.save(tmp_path / "boot.compiled.json")
    again = api.load_compiled(path, cache=tmp_path / "cache")
    assert again.params()["classify"].demos == demos
    pred = again(utterance="Play some jazz")
    assert pred.ok and len(pred.trace[0].messages) == 2 + 2 * len(demos)
