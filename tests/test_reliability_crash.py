"""Crash and resume: `pipec run` and `pipec compile` killed with SIGKILL at random points, then rerun.

The LM is the loopback fault server with some latency, so a run is long enough to be killed in the
middle of its work; the kill points are drawn from a seeded RNG (during start-up, after a random
number of finished rows or LM requests). After each kill the same command is run again, until it
finishes. Then:

* the batch output holds every input line exactly once, with the same results as an uninterrupted run;
* the compile writes the same artifact, byte for byte, as an uninterrupted compile with a fresh cache;
* no LM call was made twice unless the first one was answered at most a moment before a kill (it
  could not have reached the cache yet). Each run sends its own API key, so every request the server
  logs is traced to the run that sent it without relying on timing (keys never reach a cache key).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import pipec

from fault_server import FaultServer, field_value, pipec_cli, pipec_command, record_figure

pytestmark = pytest.mark.usefixtures("isolated_env")

KEY = "sk-crash-test-0123456789abcdef"
GRACE = 1.5     # seconds: a reply that arrived this close to a kill may not have been cached yet

CHAIN = """
lm remote = "openai/crash-model" (api_base: "{base}", api_key_env: "PIPEC_CRASH_KEY", num_retries: 2, timeout: 5,
                                  temperature: 0)

signature Parity {{ "Even or odd?" in text: str out parity: enum(even, odd) }}
signature Shout {{ "Write the text and its parity in capitals." in text: str in parity: str out loud: str }}

module p = Predict(Parity)
module s = Predict(Shout)

pipeline chain(text: str) -> (parity, loud) {{
    a = p(text: text)
    b = s(text: text, parity: a.parity)
    return parity = a.parity, loud = b.loud
}}

compile chain {{
    trainset = "train.jsonl"
    valset = "val.jsonl"
    metric = exact_match(parity)
    optimizer = {optimizer}
    seed = 3
    budget = 5000
    concurrency = 4
}}
"""


def parity_of(text: str) -> str:
    return "even" if int(text.split()[-1]) % 2 == 0 else "odd"


def answer(body: dict):
    """Deterministic answers: the parity module gets its parity (wrong for multiples of 3, so the
    compile's metric has something to choose between), the shout module its capitals."""
    system = body["messages"][0]["content"]
    text = field_value(body, "text")
    if "Even or odd?" in system:
        n = int(text.split()[-1])
        has_demos = sum(m["role"] == "assistant" for m in body["messages"]) > 0
        right = parity_of(text)
        wrong = "odd" if right == "even" else "even"
        return {"parity": right if (n % 3 or has_demos) else wrong}
    return {"loud": f"{text.upper()} IS {field_value(body, 'parity').upper()}"}


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("PIPEC_CRASH_KEY", KEY)


def project(folder: Path, server: FaultServer, optimizer: str = "bootstrap_fewshot(max_demos: 2)") -> Path:
    pipe = folder / "chain.pipe"
    pipe.write_text(CHAIN.format(base=server.base, optimizer=optimizer), encoding="utf-8")
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"item {i}", "parity": parity_of(f"item {i}")}) + "\n"
                                                for i in range(1, 25)))
    (folder / "val.jsonl").write_text("".join(json.dumps({"text": f"item {i}", "parity": parity_of(f"item {i}")}) + "\n"
                                              for i in range(100, 116)))
    return pipe


def lines_in(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def run_and_kill(args: list, cwd: Path, kill_when, lives: list, timeout: float = 300) -> tuple[bool, str]:
    """Start `pipec ARGS`; SIGKILL it (by its pid) the moment `kill_when()` is true.

    The run sends an API key of its own; appends (that key, kill time or None, on the monotonic clock)
    to `lives`, so that every logged request can be traced to the run that sent it.
    Returns (killed, stderr)."""
    run_key = f"{KEY}-run{len(lives)}"
    env = {**os.environ, "NO_COLOR": "1", "PIPEC_CRASH_KEY": run_key}
    err_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([*pipec_command(), *map(str, args)], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
        deadline = time.monotonic() + timeout
        killed_at = None
        try:
            while proc.poll() is None:
                if kill_when():
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                    proc.wait(30)
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"pipec {args[0]} did not finish in {timeout}s")
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
    lives.append((run_key, killed_at))
    stderr = err_path.read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    return killed_at is not None, stderr


def repeated_after_cached(server: FaultServer, lives: list[tuple[str, float | None]]) -> list[str]:
    """Keys answered (200, no fault) more than once although the first answer was sent well before
    the run that asked for it was killed: that reply was in the cache and should not have been asked
    for again.

    A request belongs to the run whose API key it carries. A request of a killed run that was still in
    flight at the kill (answered into a dead socket), or answered less than GRACE seconds before it,
    may legitimately be asked again; a run that was not killed never asks twice.
    """
    killed_at = {f"Bearer {key}": killed for key, killed in lives}
    bad = []
    for key, recs in server.successes_by_key().items():
        if len(recs) < 2:
            continue
        first = recs[0]
        auth = first.headers.get("authorization")
        assert auth in killed_at, f"a request with an unknown key: {auth!r}"
        killed = killed_at[auth]
        if killed is None or killed - first.finished > GRACE:
            bad.append(key)
    return bad


def test_a_repeated_request_is_blamed_on_the_run_that_sent_it():
    """The oracle of the tests below: a request belongs to the run whose key it carries, even when the
    server logged it after the next run had started."""
    class Rec:
        def __init__(self, arrived: float, finished: float, run: int | None = None):
            self.arrived, self.finished = arrived, finished
            # By default, the run that was alive when it arrived.
            self.headers = {"authorization": f"Bearer k{run if run is not None else int(arrived >= 10.3)}"}

    class Log:
        def __init__(self, by_key: dict):
            self.by_key = by_key

        def successes_by_key(self) -> dict:
            return self.by_key

    lives = [("k0", 10.0), ("k1", None)]            # run 0 killed at 10.0; run 1 started at 10.3
    log = Log({"in flight at the kill": [Rec(10.501, 10.52, run=0), Rec(11, 11.1)],
               "answered just before the kill": [Rec(9.0, 9.2), Rec(11, 11.1)],
               "cached long before the kill": [Rec(1, 1.1), Rec(11, 11.1)],
               "asked twice by the last run": [Rec(11, 11.1), Rec(12, 12.1)]})
    assert repeated_after_cached(log, lives) == ["cached long before the kill", "asked twice by the last run"]


# ====================================================================== batch
BATCH_ROWS = 300


def test_batch_killed_at_random_points_resumes_to_the_same_results(tmp_path, key_env):
    rng = random.Random(2024)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}", "id": i}) + "\n" for i in range(BATCH_ROWS)))
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache"
    with FaultServer(answer, latency=0.03) as server:
        pipe = project(tmp_path, server)
        args = ["run", pipe, "--inputs", rows, "--output", out, "--concurrency", 8, "--cache-dir", cache, "--no-progress"]
        lives: list[tuple[str, float | None]] = []
        plans = [("start-up", rng.uniform(0.1, 0.5)), ("requests", rng.randrange(40, 200)),
                 ("rows", rng.randrange(150, 280))]
        runs = []
        for kind, target in plans:
            t0, done0, req0 = time.monotonic(), lines_in(out), server.count()
            if kind == "start-up":
                cond = lambda: time.monotonic() - t0 > target          # noqa: E731
            elif kind == "rows":
                cond = lambda: lines_in(out) >= target                  # noqa: E731
            else:
                cond = lambda: server.count() - req0 >= target          # noqa: E731
            killed, stderr = run_and_kill(args, tmp_path, cond, lives)
            runs.append({"kill": kind, "target": target, "killed": killed, "rows_before": done0,
                         "rows_after": lines_in(out)})
        finished = False
        for _ in range(3):                                             # then let it finish
            killed, stderr = run_and_kill(args, tmp_path, lambda: False, lives)
            assert not killed
            if "0 failed, 0 skipped" in stderr:
                finished = True
                break
        assert finished, stderr[-2000:]
        total_requests = server.count()
        bad = repeated_after_cached(server, lives)
        repeated = sum(len(r) - 1 for r in server.successes_by_key().values())

        # The uninterrupted reference, in-process with its own cache.
        ref_out = tmp_path / "ref.jsonl"
        from pipec.batch import run_jsonl
        ref = run_jsonl(pipec.load(pipe, cache=tmp_path / "ref-cache"), rows, ref_out, concurrency=8)
        assert ref.failed == 0 and ref.ran == BATCH_ROWS

    recs = [json.loads(line) for line in out.read_text().splitlines()]
    counts = Counter(r["line"] for r in recs)
    assert sorted(counts) == list(range(1, BATCH_ROWS + 1)), "a row was lost"
    assert max(counts.values()) == 1, "a row was written twice"
    ref_recs = {r["line"]: r for r in (json.loads(x) for x in ref_out.read_text().splitlines())}
    for r in recs:
        assert r["ok"], r
        assert (r["inputs"], r["outputs"]) == (ref_recs[r["line"]]["inputs"], ref_recs[r["line"]]["outputs"])
    assert bad == [], f"{len(bad)} LM calls were made again although their replies were cached"
    kills = [at for _, at in lives if at is not None]
    assert len(kills) == 3
    record_figure("crash.batch", rows=BATCH_ROWS, kills=len(kills), runs=runs, requests=total_requests,
                  calls_needed=2 * BATCH_ROWS, repeated_calls_within_grace_of_a_kill=repeated,
                  repeated_after_cached=0, rows_lost=0, rows_duplicated=0)


# ====================================================================== compile
def _compile_until_done(pipe: Path, cwd: Path, server: FaultServer, rng: random.Random, kills_wanted: int,
                        expected_requests: int, lives: list, extra: list | None = None) -> list[dict]:
    args = ["compile", pipe, "--cache-dir", cwd / "cache", "--no-progress", *(extra or [])]
    runs = []
    for i in range(kills_wanted):
        req0 = server.count()
        target = rng.randrange(max(1, expected_requests // 8), max(2, expected_requests - 5))
        killed, _ = run_and_kill(args, cwd, lambda: server.count() - req0 >= target, lives)
        runs.append({"kill_after_requests": target, "killed": killed, "requests": server.count() - req0})
    killed, stderr = run_and_kill(args, cwd, lambda: False, lives)
    assert not killed
    assert (pipe.with_suffix(".compiled.json")).exists(), stderr[-2000:]
    runs.append({"final": True, "requests": None})
    return runs


def test_compile_killed_at_random_points_writes_the_same_artifact(tmp_path, key_env):
    rng = random.Random(7)
    with FaultServer(answer, latency=0.02) as server:
        ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
        ref_dir.mkdir()
        run_dir.mkdir()
        # Uninterrupted, with a fresh cache (in-process: the same code path as the command).
        ref_pipe = project(ref_dir, server)
        from pipec import cli
        assert cli.main(["compile", str(ref_pipe), "--cache-dir", str(ref_dir / "cache"), "--no-progress"]) == 0
        expected = server.count()
        server.reset_log()

        pipe = project(run_dir, server)
        lives: list[tuple[str, float | None]] = []
        runs = _compile_until_done(pipe, run_dir, server, rng, 2, expected, lives)
        kills = [at for _, at in lives if at is not None]
        requests_with_kills = server.count()
        assert kills, runs
        bad = repeated_after_cached(server, lives)

        # Compiling again is a cache hit: no LM call at all.
        server.reset_log()
        again = pipec_cli("compile", pipe, "--cache-dir", run_dir / "cache", "--no-progress", cwd=run_dir)
        assert again.returncode == 0 and "cache hit" in again.stdout, again.stderr[-2000:]
        assert server.count() == 0

    ref_art = json.loads((ref_dir / "chain.compiled.json").read_text())
    art = json.loads((run_dir / "chain.compiled.json").read_text())
    # Sources are embedded with their text, and the api_base (a port) is the same server: equal bytes.
    assert (run_dir / "chain.compiled.json").read_bytes() == (ref_dir / "chain.compiled.json").read_bytes()
    assert art["report"]["compiled_score"] == ref_art["report"]["compiled_score"]
    assert bad == [], f"{len(bad)} LM calls were made again although their replies were cached"
    record_figure("crash.compile", optimizer="bootstrap_fewshot", kills=len(kills), runs=runs,
                  requests_uninterrupted=expected, requests_with_kills=requests_with_kills, repeated_after_cached=0,
                  artifact_identical=True)


def _study_states(db: Path) -> Counter:
    import sqlite3
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            return Counter(dict(con.execute("SELECT state, count(*) FROM trials GROUP BY state").fetchall()))
        finally:
            con.close()
    except sqlite3.Error:
        return Counter()


@pytest.fixture(scope="module")
def mipro_resumed(tmp_path_factory):
    """A mipro compile on a SQLite optuna study, killed in the middle of a trial (two trials done), then
    run again at once with the same command until it finishes."""
    optuna = pytest.importorskip("optuna")
    folder = tmp_path_factory.mktemp("mipro")
    trials = 6
    env_before = {k: os.environ.get(k) for k in ("PIPEC_CRASH_KEY", "PIPEC_HEARTBEAT", "PIPEC_CACHE_DIR")}
    # A long heartbeat grace: the resumed run starts well within it, whatever the machine's speed.
    os.environ.update(PIPEC_CRASH_KEY=KEY, PIPEC_HEARTBEAT="60", PIPEC_CACHE_DIR=str(folder / "default-cache"))
    try:
        with FaultServer(answer, latency=0.02) as server:
            pipe = project(folder, server, optimizer=f"mipro(trials: {trials}, instructions: 2, minibatch: 8)")
            db = folder / "study.db"
            args = ["compile", pipe, "--cache-dir", folder / "cache", "--no-progress", "--storage", f"sqlite:///{db}",
                    "--study", "crash"]

            def mid_trial():
                states = _study_states(db)
                return states["COMPLETE"] >= 2 and states["RUNNING"] >= 1
            lives: list[tuple[str, float | None]] = []
            killed, _ = run_and_kill(args, folder, mid_trial, lives)
            assert killed, "the compile finished before a trial could be interrupted"
            states_at_kill = _study_states(db)
            killed_again, stderr = run_and_kill(args, folder, lambda: False, lives)
            assert not killed_again
            bad = repeated_after_cached(server, lives)
            requests = server.count()
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    study = optuna.load_study(study_name="crash", storage=f"sqlite:///{db}")
    return {"pipe": pipe, "trials": trials, "states": Counter(t.state.name for t in study.trials),
            "states_at_kill": states_at_kill, "bad": bad, "requests": requests, "stderr": stderr}


def test_mipro_killed_mid_trial_resumes_from_its_optuna_study(mipro_resumed):
    r = mipro_resumed
    art = json.loads(r["pipe"].with_suffix(".compiled.json").read_text())
    assert art["report"]["optimizer"] == "mipro"
    assert r["bad"] == [], f"{len(r['bad'])} LM calls were made again although their replies were cached"
    # The trials finished before the kill were kept, not run again.
    assert r["states"]["COMPLETE"] + r["states"]["PRUNED"] >= r["states_at_kill"]["COMPLETE"]
    record_figure("crash.mipro", trials=r["trials"], states_at_kill=dict(r["states_at_kill"]),
                  final_states=dict(r["states"]), requests=r["requests"], repeated_after_cached=0)


def test_mipro_resumed_after_a_crash_runs_every_trial(mipro_resumed):
    r = mipro_resumed
    assert r["states"]["COMPLETE"] + r["states"]["PRUNED"] >= r["trials"], r["states"]
