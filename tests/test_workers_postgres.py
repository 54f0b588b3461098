"""One compile shared by several worker processes through optuna on a real PostgreSQL server.

`.ci/run` starts PostgreSQL on loopback (`.ci/postgres.sh`) and sets PIPEC_TEST_POSTGRES; locally the
test is skipped without it. The workers reach a loopback OpenAI-compatible stub through litellm, each
with its own LM cache; one worker is SIGKILLed in the middle of a trial.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from openai_stub import StubServer

URL = os.environ.get("PIPEC_TEST_POSTGRES")
if not URL:
    if os.environ.get("CI"):
        raise RuntimeError("CI must provide PostgreSQL: run `eval \"$(bash .ci/postgres.sh)\"` first")
    pytest.skip("no PostgreSQL server (set PIPEC_TEST_POSTGRES, e.g. via .ci/postgres.sh)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-worker-test-0123456789"
TRIALS = 10

PIPE = """
lm remote = "openai/stub-model" (api_base: "{base}", api_key_env: "PIPEC_TEST_KEY", num_retries: 1, timeout: 20)

signature Label {{
    "Label the text as positive or negative."
    in  text: str
    out label: enum(positive, negative)
}}

module label = Predict(Label)

pipeline sentiment(text: str) -> (label) {{
    l = label(text: text)
    return label = l.label
}}
"""


def reply(body):
    messages = body["messages"]
    if messages[0]["content"].startswith("You write instructions"):
        return {"instruction": "Decide whether the text is positive or negative."}
    text = messages[-1]["content"]
    demos = (len(messages) - 2) // 2
    good = "good" in text or "great" in text
    # Demos make the stub right; without them it says "positive" to everything.
    return {"label": ("positive" if good else "negative") if demos else "positive"}


def write_data(tmp: Path) -> tuple[Path, Path]:
    words = ["good", "bad", "great", "awful"]
    rows = [{"text": f"a {words[i % 4]} thing number {i}", "label": "positive" if i % 4 in (0, 2) else "negative"}
            for i in range(40)]
    train, val = tmp / "train.jsonl", tmp / "val.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    val.write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    return train, val


def compile_args(pipe: Path, train: Path, val: Path, study: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipec", "compile", str(pipe), "--optimizer", "mipro",
            "--trials", str(TRIALS), "--option", "minibatch=6", "--option", "instructions=2",
            "--option", "max_demos=2", "--option", "max_labeled=2", "--trainset", str(train),
            "--valset", str(val), "--metric", "exact_match(label)", "--storage", URL, "--study", study,
            "--concurrency", "1", *extra]


def env_for(tmp: Path, name: str) -> dict[str, str]:
    return {**os.environ, "PIPEC_TEST_KEY": KEY, "PIPEC_CACHE_DIR": str(tmp / f"cache-{name}"),
            "PIPEC_HEARTBEAT": "2", "NO_COLOR": "1"}   # a 6 s grace: a busy machine may delay a beat


def test_workers_share_one_study_and_survive_a_killed_worker(tmp_path):
    import optuna
    from optuna.storages import RetryFailedTrialCallback
    study_name = f"pipec-test-{uuid.uuid4().hex[:8]}"
    train, val = write_data(tmp_path)
    with StubServer(default=reply, latency=0.25) as server:
        pipe = tmp_path / "sentiment.pipe"
        pipe.write_text(PIPE.format(base=server.base))
        args = compile_args(pipe, train, val, study_name, "--worker")
        workers = {name: subprocess.Popen(args, cwd=ROOT, env=env_for(tmp_path, name), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True) for name in ("a", "b", "c")}
        victim = workers["b"]
        storage = optuna.storages.RDBStorage(URL)
        killed_trial = None
        deadline = time.time() + 180
        while killed_trial is None and time.time() < deadline:
            time.sleep(0.2)
            if victim.poll() is not None:
                pytest.fail(f"worker b exited before it could be killed: {victim.communicate()[1][-2000:]}")
            try:
                study = optuna.load_study(study_name=study_name, storage=storage)
            except KeyError:
                continue
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if t.user_attrs.get("worker", "").endswith(f":{victim.pid}"):
                    victim.send_signal(signal.SIGKILL)
                    killed_trial = t.number
                    break
        assert killed_trial is not None, "worker b never ran a trial"
        outputs = {}
        for name, proc in workers.items():
            out, err = proc.communicate(timeout=240)
            outputs[name] = (proc.returncode, out, err)
            if name != "b":
                assert proc.returncode == 0, err
                assert "Traceback" not in err, err
        study = optuna.load_study(study_name=study_name, storage=storage)
        states = optuna.trial.TrialState
        finished = study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))
        assert len(finished) == TRIALS                                   # exactly the trial budget
        failed = study.get_trials(deepcopy=False, states=(states.FAIL,))
        assert [t.number for t in failed] == [killed_trial]             # the killed worker's trial failed
        retries = [t for t in finished if RetryFailedTrialCallback.retried_trial_number(t) == killed_trial]
        assert len(retries) == 1                                         # ...and was run again, once
        assert retries[0].params == failed[0].params
        assert not study.get_trials(deepcopy=False, states=(states.RUNNING, states.WAITING))
        # The candidates were computed once: one worker proposed instructions, the others reused them.
        proposals = [r for r in server.requests if r["messages"][0]["content"].startswith("You write instructions")]
        assert len(proposals) <= 1 * 1 + 1                              # instructions=2: one proposal (+ its retry)
        # Any process can finalize; its score is the one the study recorded.
        out = tmp_path / "sentiment.compiled.json"
        final = subprocess.run(compile_args(pipe, train, val, study_name, "--finalize", "--output", str(out)),
                               cwd=ROOT, env=env_for(tmp_path, "final"), capture_output=True, text=True, timeout=240)
        assert final.returncode == 0, final.stderr
    art = json.loads(out.read_text())
    study = optuna.load_study(study_name=study_name, storage=storage)
    recorded = {k: v for k, v in study.user_attrs.items() if k.startswith("pipec:full:")}
    assert art["report"]["compiled_score"] == pytest.approx(max(recorded.values()))
    assert KEY not in out.read_text()
    # The artifact reports the study's finished trials, the retry included, the killed one not.
    lines = [t["note"].split(":")[0] for t in art["report"]["trials"] if t["note"].startswith("trial ")]
    assert lines == [f"trial {t.number + 1}" for t in sorted(finished, key=lambda t: t.number)]
    assert f"trial {killed_trial + 1}" not in lines and f"{len(art['report']['trials'])} trials" in final.stdout


def test_finalize_refuses_a_study_that_is_not_done(tmp_path):
    study_name = f"pipec-test-{uuid.uuid4().hex[:8]}"
    train, val = write_data(tmp_path)
    with StubServer(default=reply) as server:
        pipe = tmp_path / "sentiment.pipe"
        pipe.write_text(PIPE.format(base=server.base))
        proc = subprocess.run(compile_args(pipe, train, val, study_name, "--finalize"), cwd=ROOT,
                              env=env_for(tmp_path, "f"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"no study '{study_name}'" in proc.stderr and "run workers first" in proc.stderr
