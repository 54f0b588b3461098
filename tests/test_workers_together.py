"""Workers started at the same instant on a fresh storage, SQLite and PostgreSQL (issue 13).

Opening an optuna storage creates its tables and stamps their alembic version when they are
missing, and optuna does that without a lock: two workers started together on a fresh database
crashed one of them (`UNIQUE constraint failed: alembic_version.version_num`). Then `--finalize`
reported "0 trials" and wrote `"trials": []` for a study of finished trials.

Processes start at the same instant through a barrier, not a sleep: each one imports what it needs,
says it is ready on a pipe, and blocks reading another pipe; when all are ready the test closes that
pipe's write end and every process reads EOF at once. The deadlines only trip on a hang.

PostgreSQL comes from `.ci/postgres.sh` (PIPEC_TEST_POSTGRES; each round gets a database of its own,
so the schema is always fresh); without it the PostgreSQL cases are skipped locally and fail on CI.
PIPEC_TOGETHER_ROUNDS sets how many rounds each case runs (the release check runs 20).
"""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from openai_stub import StubServer

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("PIPEC_TEST_POSTGRES")
ROUNDS = int(os.environ.get("PIPEC_TOGETHER_ROUNDS", "1"))
READY_SECONDS = 180          # every process imported and waiting at the barrier (a busy machine is slow)
RUN_SECONDS = 300            # a worker's whole run: only a hang takes this long
KEY = "sk-concurrent-0123456789abcdef"
TRIALS = 8

STORAGES = ["sqlite", "postgresql"]

# Runs in each process: import `preload`, report ready, wait for the go, then run `-m MODULE ARGS`
# (as `python -m` would) or `-c CODE ARGS`.
WRAPPER = r"""
import os, runpy, sys
go, ready, preload, kind, target, *args = sys.argv[1:]
for name in filter(None, preload.split(",")):
    __import__(name)
os.write(int(ready), b"r")
os.close(int(ready))
os.read(int(go), 1)               # EOF once the test closes the other end: every process goes at once
os.close(int(go))
if kind == "-m":
    sys.argv = [target, *args]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *args]
    exec(compile(target, "<together>", "exec"), {"__name__": "__main__"})
"""


def start_together(jobs: list[tuple[list[str], dict[str, str]]], preload: list[str], logs: Path) -> list[tuple]:
    """Start one process per job (`(["-m", module, *args] or ["-c", code, *args], environment)`),
    release them together, wait for all; returns (returncode, stdout, stderr) per job."""
    logs.mkdir(parents=True, exist_ok=True)
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    procs, files = [], []
    try:
        for i, (job, env) in enumerate(jobs):
            out, err = open(logs / f"{i}.out", "w+"), open(logs / f"{i}.err", "w+")
            files += [out, err]
            procs.append(subprocess.Popen([sys.executable, "-c", WRAPPER, str(go_r), str(ready_w), ",".join(preload),
                                           *job], cwd=ROOT, env=env, stdout=out, stderr=err,
                                          pass_fds=(go_r, ready_w)))
        os.close(ready_w)
        ready_w = None
        ready, deadline = 0, time.monotonic() + READY_SECONDS
        while ready < len(procs):
            readable, _, _ = select.select([ready_r], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(ready_r, 64) if readable else b""
            if not chunk:         # the deadline passed, or a process died before it was ready
                for p in procs:
                    p.kill()
                errors = "\n".join((logs / f"{i}.err").read_text()[-2000:] for i in range(len(jobs)))
                pytest.fail(f"{ready} of {len(procs)} processes reached the barrier:\n{errors}")
            ready += len(chunk)
        os.close(go_w)            # go
        go_w = None
        deadline = time.monotonic() + RUN_SECONDS
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"process {p.pid} still running after {RUN_SECONDS}s: a hang")
        results = []
        for i, p in enumerate(procs):
            results.append((p.returncode, (logs / f"{i}.out").read_text(), (logs / f"{i}.err").read_text()))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for fd in (go_r, go_w, ready_r, ready_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for f in files:
            f.close()


@contextmanager
def fresh_storage(kind: str, folder: Path):
    """The URL of a storage no process has opened yet: a new SQLite file, or a new PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'study-{uuid.uuid4().hex[:8]}.db'}"
        return
    if not PG:
        if os.environ.get("CI"):
            raise RuntimeError("CI must provide PostgreSQL: run `eval \"$(bash .ci/postgres.sh)\"` first")
        pytest.skip("no PostgreSQL server (set PIPEC_TEST_POSTGRES, e.g. via .ci/postgres.sh)")
    import sqlalchemy
    name = f"pipec_together_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(PG, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        yield PG.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def assert_clean(results: list[tuple], what: str) -> None:
    for i, (code, out, err) in enumerate(results):
        assert code == 0 and "Traceback" not in err, f"{what} {i} of {len(results)} failed (exit {code}):\n{err[-3000:]}"


# ---------------------------------------------------------------------------- opening the storage
OPEN = r"""
import sys, warnings
import optuna
from pipec.optimizers.study_storage import make_storage, study_lock
optuna.logging.set_verbosity(optuna.logging.WARNING)
url = sys.argv[1]
storage = make_storage(optuna, url)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize", load_if_exists=True)
    with study_lock(study, url):
        trial = study.ask()
    study.tell(trial, 1.0)
print("ok")
"""


@pytest.mark.parametrize("kind", STORAGES)
def test_processes_open_a_fresh_storage_at_the_same_instant(kind, tmp_path):
    import optuna
    workers = 4
    for round_ in range(max(ROUNDS, 3)):
        with fresh_storage(kind, tmp_path) as url:
            results = start_together([(["-c", OPEN, url], {**os.environ, "NO_COLOR": "1"})] * workers,
                                     ["optuna", "sqlalchemy", "pipec.optimizers.study_storage"],
                                     tmp_path / f"open-{round_}")
            assert_clean(results, f"round {round_ + 1}: process")
            assert all(out.strip() == "ok" for _, out, _ in results)
            study = optuna.load_study(study_name="s", storage=url)
            assert len(study.trials) == workers
            assert optuna.get_all_study_names(url) == ["s"]
            dispose(study)


def dispose(study) -> None:
    """Close the test's own connections to a study's database (optuna wraps RDB storage in a cache)."""
    storage = study._storage
    getattr(storage, "_backend", storage).engine.dispose()


def test_an_unusable_storage_url_is_an_error_message_not_a_traceback(tmp_path):
    import optuna
    from pipec.optimizers.study_storage import make_storage
    with pytest.raises(ValueError, match="cannot read the study storage URL 'nonsense'"):
        make_storage(optuna, "nonsense")
    with pytest.raises(ValueError, match="cannot open the study storage sqlite:///.*unable to open database file"):
        make_storage(optuna, f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'x.db'}")


# ---------------------------------------------------------------------------- whole compiles
PIPE = """
lm remote = "openai/stub-model" (api_base: "{base}", api_key_env: "PIPEC_TEST_KEY", num_retries: 1, timeout: 30)

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
    good = "good" in text or "great" in text
    # Demos make the stub right; without them it says "positive" to everything.
    return {"label": ("positive" if good else "negative") if len(messages) > 2 else "positive"}


def write_inputs(folder: Path, base: str) -> tuple[Path, Path, Path]:
    words = ["good", "bad", "great", "awful"]
    rows = [{"text": f"a {words[i % 4]} thing number {i}", "label": "positive" if i % 4 in (0, 2) else "negative"}
            for i in range(40)]
    train, val, pipe = folder / "train.jsonl", folder / "val.jsonl", folder / "sentiment.pipe"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    val.write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    pipe.write_text(PIPE.format(base=base))
    return pipe, train, val


def compile_args(pipe: Path, train: Path, val: Path, url: str, *extra: str) -> list[str]:
    return ["compile", str(pipe), "--optimizer", "mipro", "--trials", str(TRIALS), "--option", "minibatch=6",
            "--option", "instructions=2", "--option", "max_demos=2", "--option", "max_labeled=2",
            "--trainset", str(train), "--valset", str(val), "--metric", "exact_match(label)",
            "--storage", url, "--study", "together", "--concurrency", "1", *extra]


def env_for(folder: Path, name: str) -> dict[str, str]:
    return {**os.environ, "PIPEC_TEST_KEY": KEY, "PIPEC_CACHE_DIR": str(folder / f"cache-{name}"),
            "PIPEC_HEARTBEAT": "5", "NO_COLOR": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@pytest.mark.parametrize("kind", STORAGES)
def test_workers_started_together_on_a_fresh_storage_all_work_and_finalize_reports_the_study(kind, tmp_path):
    import optuna
    TS = optuna.trial.TrialState
    workers = 3
    with StubServer(default=reply, latency=0.02) as server:
        for round_ in range(ROUNDS):
            folder = tmp_path / f"round-{round_}"
            folder.mkdir()
            pipe, train, val = write_inputs(folder, server.base)
            before = len(server.requests)
            with fresh_storage(kind, folder) as url:
                # Each worker has its own LM cache, as on a machine of its own.
                args = ["-m", "pipec", *compile_args(pipe, train, val, url, "--worker")]
                results = start_together([(args, env_for(folder, f"worker-{i}")) for i in range(workers)],
                                         ["pipec.cli", "pipec.optimize", "pipec.optimizers.mipro", "optuna",
                                          "sqlalchemy", "litellm"], folder / "logs")
                assert_clean(results, f"round {round_ + 1}: worker")
                ran = [int(re.search(r"worker done: ran (\d+) trials", out).group(1)) for _, out, _ in results]
                study = optuna.load_study(study_name="together", storage=url)
                finished = sorted(study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.PRUNED)),
                                  key=lambda t: t.number)
                assert len(finished) == TRIALS == sum(ran)                # exactly the trial budget, all run once
                assert len(study.trials) == TRIALS                        # nothing failed, nothing left over
                proposals = [r for r in server.requests[before:]
                             if r["messages"][0]["content"].startswith("You write instructions")]
                assert len(proposals) <= 2                                # candidates built once (one proposal + retry)

                out = folder / "sentiment.compiled.json"
                final = subprocess.run([sys.executable, "-m", "pipec",
                                        *compile_args(pipe, train, val, url, "--finalize", "--output", str(out))],
                                       cwd=ROOT, env=env_for(folder, "final"), capture_output=True, text=True,
                                       timeout=RUN_SECONDS)
                assert final.returncode == 0 and "Traceback" not in final.stderr, final.stderr[-3000:]
                report = json.loads(out.read_text())["report"]
                lines = [t for t in report["trials"] if t["note"].startswith("trial ")]
                # The artifact records the study's trials, as a single compile records its own.
                assert [t["note"].split(":")[0] for t in lines] == [f"trial {t.number + 1}" for t in finished]
                for line, t in zip(lines, finished):
                    score = t.intermediate_values[0] if t.state == TS.PRUNED else t.value
                    assert line["score"] == pytest.approx(score)
                    assert line["full"] == ("(full score known)" in line["note"])
                    assert line["note"].endswith(("(minibatch of 6)", "rows)", "(full score known)"))
                assert f", {len(report['trials'])} trials" in final.stdout and len(report["trials"]) >= TRIALS
                assert f"trial {TRIALS}: " in final.stdout
                full = [t["score"] for t in report["trials"] if t["full"]]
                assert report["compiled_score"] == pytest.approx(max(full + [report["baseline_score"]]))
                assert KEY not in out.read_text()
                dispose(study)
