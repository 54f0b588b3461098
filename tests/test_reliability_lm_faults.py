"""LM faults through a loopback OpenAI-compatible server (`fault_server.py`) and pipec's real HTTP client.

An `openai/<model>` LM with an `api_base` goes through the backend `backend_for` picks for it (the
direct OpenAI-compatible client, `lm/openai_compat.py`); the test of litellm's Retry-After handling
pins `lm/hosted.py` explicitly.

The big one: 2,000 rows through `pipec run --inputs ... --concurrency 32` while the server injects a
fault into 20% of requests (timeouts, 429 with Retry-After, 500, 503, connection resets, closed
connections, truncated bodies, empty, truncated and wrong-format replies, HTML pages, broken JSON
bodies). Every row must come back exactly once, either answered (correctly: the server's answers are
a function of the input) or recorded as failed with its reason; the request log must show the
global rate limit (`rpm`) and the Retry-After delays respected. Then `--retry-failed` finishes the
rest without asking again for anything already answered.

Smaller tests pin single behaviours: each fault kind alone, the rate limiter's spacing, Retry-After
larger than the backoff, out-of-range Retry-After values, and replies cut off by max_tokens.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import pipec
from pipec.lm.base import TransientLMError

from fault_server import (ALL_FAULTS, CONTENT_FAULTS, TRANSPORT_FAULTS, FaultPlan, FaultServer, field_value,
                          pipec_cli, record_figure)

pytestmark = pytest.mark.usefixtures("isolated_env")

KEY = "sk-fault-test-0123456789abcdef"

PIPE = """
lm remote = "openai/fault-model" (api_base: "{base}", api_key_env: "PIPEC_FAULT_KEY", num_retries: {retries},
                                  timeout: {timeout}, rpm: {rpm}, temperature: 0)

signature Parity {{
    "Say whether the number in the text is even or odd."
    in  text: str
    out parity: enum(even, odd)
}}

module m = Predict(Parity)

pipeline parity(text: str) -> (parity) {{
    r = m(text: text)
    return parity = r.parity
}}
"""


def parity_of(text: str) -> str:
    return "even" if int(text.split()[-1]) % 2 == 0 else "odd"


def answer(body: dict):
    return {"parity": parity_of(field_value(body, "text"))}


def write_pipe(folder: Path, server: FaultServer, retries=3, timeout=10, rpm=60000) -> Path:
    path = folder / "parity.pipe"
    path.write_text(PIPE.format(base=server.base, retries=retries, timeout=timeout, rpm=rpm), encoding="utf-8")
    return path


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("PIPEC_FAULT_KEY", KEY)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def rate_violations(arrivals: list[float], rpm: int, burst: int, window: int = 100, slack: float = 0.05) -> int:
    """Windows of `window` consecutive requests that reached the server faster than the limit allows.

    The limiter spaces the *starts* of requests in the client; a stall in the client (the first call
    pays for litellm's lazy imports while the next ones already hold their slots) can release up to
    `burst` (the concurrency) of them together, so a window may hold that many more.
    """
    interval = 60.0 / rpm
    t = sorted(arrivals)
    return sum(1 for i in range(len(t) - window) if t[i + window] - t[i] < (window - burst) * interval - slack)


def busiest_second(arrivals: list[float]) -> int:
    t = sorted(arrivals)
    j, best = 0, 0
    for i in range(len(t)):
        while t[i] - t[j] > 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


# ====================================================================== 2,000 rows, 20% faults, the CLI
ROWS = 2000
RPM = 9000          # 150 requests/s: the limiter, not the server, sets the pace


def test_batch_under_20_percent_faults_loses_no_row(tmp_path, key_env):
    plan = FaultPlan(rate=0.2, kinds=ALL_FAULTS, seed=7, retry_after="0.3", hang=3.5)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(ROWS)))
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache"
    with FaultServer(answer, plan) as server:
        # The client timeout (2 s) is well under a hang (3.5 s) and well over a clean reply on a busy machine.
        pipe = write_pipe(tmp_path, server, retries=3, timeout=2, rpm=RPM)
        start = time.perf_counter()
        run = pipec_cli("run", pipe, "--inputs", rows, "--output", out, "--concurrency", 32, "--cache-dir", cache,
                        "--no-progress", timeout=400)
        elapsed = time.perf_counter() - start
        first_pass = server.records()
        assert "Traceback" not in run.stderr, run.stderr[-3000:]

        recs = read_jsonl(out)
        lines = Counter(r["line"] for r in recs)
        assert sorted(lines) == list(range(1, ROWS + 1)), "a row is missing"
        assert max(lines.values()) == 1, "a row was written twice"
        failed = [r for r in recs if not r["ok"]]
        for r in recs:
            if r["ok"]:
                assert r["outputs"]["parity"] == parity_of(r["inputs"]["text"]), r
            else:
                # The failing node, then the reason: the provider's error naming the model, or the parse error.
                assert r["error"].startswith("r (m): ") and r["node"] == "r", r
                assert "openai/fault-model" in r["error"] or "reply did not parse" in r["error"], r["error"]
        assert run.returncode == (1 if failed else 0), run.stderr[-2000:]
        assert f"wrote {ROWS} rows to {out}; {len(failed)} failed, 0 skipped" in run.stderr

        faults = Counter(r.fault for r in first_pass if r.fault)
        assert set(faults) == set(ALL_FAULTS), faults
        assert 0.15 < sum(faults.values()) / len(first_pass) < 0.25
        # The global rate limit held over every window of 50 request starts.
        assert rate_violations([r.arrived for r in first_pass], RPM, burst=32) == 0
        # A retry after a 429 waited at least its Retry-After.
        by_key: dict[str, list] = {}
        for r in first_pass:
            by_key.setdefault(r.key, []).append(r)
        gaps_429 = [nxt.arrived - r.finished for rs in by_key.values() for r, nxt in zip(rs, rs[1:]) if r.fault == "429"]
        assert gaps_429 and min(gaps_429) >= 0.3 - 0.02, min(gaps_429)
        reasons = Counter("did not parse" if "did not parse" in r["error"] else
                          "gave up after retries" if "gave up" in r["error"] else "provider error" for r in failed)

        # Finish the failed rows: --retry-failed reruns only them, and answered work is never asked again.
        # (--no-cache: a reply that did not parse is cached and would be replayed; see
        # test_retry_failed_recovers_a_row_whose_reply_did_not_parse.)
        server.plan.rate = 0.0
        again = pipec_cli("run", pipe, "--inputs", rows, "--output", out, "--concurrency", 32, "--no-cache",
                          "--retry-failed", "--no-progress", timeout=400)
        assert "Traceback" not in again.stderr and again.returncode == 0, again.stderr[-2000:]
        assert f"wrote {len(failed)} rows to {out}, {ROWS - len(failed)} already done; 0 failed" in again.stderr
        recs = read_jsonl(out)
        assert len(recs) == ROWS and sorted(r["line"] for r in recs) == list(range(1, ROWS + 1))
        assert all(r["ok"] and r["outputs"]["parity"] == parity_of(r["inputs"]["text"]) for r in recs)
        answered_twice = [k for k, rs in server.successes_by_key().items() if len(rs) > 1]
        assert answered_twice == [], "a call that was answered was made again"
        total_requests = len(server.records())

    rate = ROWS / elapsed
    record_figure("faults.batch_2000", rows=ROWS, concurrency=32, fault_rate=0.2, requests=len(first_pass),
                  faults_injected=sum(faults.values()), faults_by_kind=dict(sorted(faults.items())),
                  failed_first_pass=sum(reasons.values()), failed_reasons=dict(reasons),
                  requests_all_passes=total_requests, rows_lost=0, rows_duplicated=0,
                  wrong_answers=0, seconds_first_pass=round(elapsed, 1), rows_per_s=round(rate, 1),
                  rpm_limit=RPM, rate_violations=0, busiest_second=busiest_second([r.arrived for r in first_pass]), min_wait_after_429_s=round(min(gaps_429), 3))


# ====================================================================== the Python API, each fault alone
@pytest.mark.parametrize("kind", TRANSPORT_FAULTS + CONTENT_FAULTS)
def test_each_fault_kind_alone_is_retried_or_recorded(tmp_path, key_env, kind):
    """Every first attempt of every request gets the fault: transport faults are retried and the rows
    succeed; content faults are retried once by the module with the error shown, then recorded."""
    plan = FaultPlan(script={0: kind}, retry_after="0.1", hang=1.5)
    # Only a hang needs a short client timeout; elsewhere a slow first reply must not dodge its fault.
    timeout = 0.5 if kind == "timeout" else 10
    with FaultServer(answer, plan) as server:
        prog = pipec.load(write_pipe(tmp_path, server, retries=2, timeout=timeout), cache=False)
        preds = prog.run_batch([{"text": f"row {i}"} for i in range(6)], concurrency=6)
    for i, p in enumerate(preds):
        if kind in CONTENT_FAULTS:
            # The retry message repeats the bad reply, so it is a new request and gets the fault too.
            assert not p.ok and "reply did not parse, even after a retry" in p.error, p.error
            assert p.raw != "" or kind == "empty"
        else:
            assert p.ok, (kind, p.error)
            assert p.parity == parity_of(f"row {i}")
            assert [r.attempt for r in server.records() if r.key == server.records()[0].key][:2] == [0, 1]


@pytest.mark.parametrize("kind", ["html", "bad_json"])
def test_a_200_that_is_not_a_chat_completion_is_retried(tmp_path, key_env, kind):
    plan = FaultPlan(script={0: kind})
    with FaultServer(answer, plan) as server:
        prog = pipec.load(write_pipe(tmp_path, server, retries=2, timeout=0.5), cache=False)
        preds = prog.run_batch([{"text": f"row {i}"} for i in range(3)], concurrency=3)
    assert all(p.ok for p in preds), [p.error for p in preds]


def test_persistent_faults_become_failed_rows_naming_the_model_and_reason(tmp_path, key_env):
    plan = FaultPlan(rate=1.0, kinds=("500", "reset", "429", "503"), seed=3, retry_after="0")
    with FaultServer(answer, plan) as server:
        prog = pipec.load(write_pipe(tmp_path, server, retries=2, timeout=0.5), cache=False)
        preds = prog.run_batch([{"text": f"row {i}"} for i in range(8)], concurrency=4)
        assert len(server.records()) == 8 * 3            # one call and two retries per row, no more
    for p in preds:
        assert not p.ok and p.error.startswith("r (m): openai/fault-model: ") and "gave up after 3 attempts" in p.error
        assert KEY not in p.error


def test_run_batch_under_faults_keeps_order_and_accounts_for_every_row(tmp_path, key_env):
    plan = FaultPlan(rate=0.2, kinds=ALL_FAULTS, seed=21, retry_after="0.2", hang=1.5)
    n = 300
    with FaultServer(answer, plan) as server:
        prog = pipec.load(write_pipe(tmp_path, server, retries=3, timeout=0.6), cache=tmp_path / "cache")
        preds = prog.run_batch([{"text": f"row {i}"} for i in range(n)], concurrency=32)
    assert len(preds) == n
    for i, p in enumerate(preds):
        if p.ok:
            assert p.parity == parity_of(f"row {i}")
        else:
            assert p.error and p.node == "r" and p.trace, p
    record_figure("faults.run_batch_300", rows=n, failed=sum(not p.ok for p in preds), requests=len(server.records()))


def test_retry_failed_recovers_a_row_whose_reply_did_not_parse(tmp_path, key_env):
    from pipec.batch import run_jsonl
    rows, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    rows.write_text('{"text": "row 1"}\n{"text": "row 2"}\n')
    with FaultServer(answer, FaultPlan(script={0: "empty"})) as server:
        pipe = write_pipe(tmp_path, server)
        first = run_jsonl(pipec.load(pipe, cache=tmp_path / "cache"), rows, out)
        assert first.failed == 2
        server.plan = FaultPlan()                    # the provider recovered
        again = run_jsonl(pipec.load(pipe, cache=tmp_path / "cache"), rows, out, retry_failed=True)
    assert again.failed == 0, read_jsonl(out)


# ====================================================================== rate limit and Retry-After
def test_global_rate_limit_spaces_request_starts(tmp_path, key_env, monkeypatch):
    from pipec.lm.rate_limit import RateLimiter
    rpm = 600                                      # one request every 0.1 s
    slots: list[float] = []                        # the start times the limiter handed out
    reserve = RateLimiter._reserve

    def recorded(self):
        delay = reserve(self)
        slots.append(self._next - self.interval)   # the slot just claimed (one event loop: no race)
        return delay
    with FaultServer(answer) as server:
        prog = pipec.load(write_pipe(tmp_path, server, rpm=rpm), cache=False)
        prog(text="row 0")                           # pay for the client setup outside the measurement
        server.reset_log()
        monkeypatch.setattr(RateLimiter, "_reserve", recorded)
        start = time.perf_counter()
        preds = prog.run_batch([{"text": f"row {i}"} for i in range(30)], concurrency=16)
        elapsed = time.perf_counter() - start
        arrivals = sorted(r.arrived for r in server.records())
    assert all(p.ok for p in preds)
    # The limiter's schedule, free of scheduling noise: 30 starts, each a full interval after the last.
    assert len(slots) == 30
    assert min(b - a for a, b in zip(slots, slots[1:])) >= 0.1 - 1e-9
    # What the server saw: a stalled client may release a few due requests together, never a flood
    # (with no limit, all 16 would arrive at once).
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert elapsed >= 29 * 0.1 - 0.05
    assert rate_violations(arrivals, rpm, burst=3, window=5) == 0, gaps
    record_figure("faults.rate_limit", rpm=rpm, requests=30, seconds=round(elapsed, 2),
                  min_gap_s=round(min(gaps), 3), mean_gap_s=round(sum(gaps) / len(gaps), 3))


def test_retry_after_longer_than_the_backoff_is_honored(tmp_path, key_env):
    from pipec.lm.hosted import HostedLM
    plan = FaultPlan(script={0: "429"}, retry_after="2")
    with FaultServer(answer, plan) as server:
        litellm_backend = HostedLM("openai/fault-model", api_base=server.base, api_key_env="PIPEC_FAULT_KEY",
                                   timeout=1, num_retries=2)
        prog = pipec.load(write_pipe(tmp_path, server, retries=2), lms={"remote": litellm_backend}, cache=False)
        preds = prog.run_batch([{"text": f"row {i}"} for i in range(4)], concurrency=4)
        recs = server.records()
    assert all(p.ok for p in preds)
    first = {r.key: r for r in recs if r.attempt == 0}
    waits = [r.arrived - first[r.key].finished for r in recs if r.attempt == 1]
    assert len(waits) == 4 and min(waits) >= 2.0, waits


@pytest.mark.parametrize("retry_after", [86400.0, math.inf, math.nan, -5.0], ids=["day", "inf", "nan", "negative"])
def test_out_of_range_retry_after_is_capped(write_pipe, monkeypatch, retry_after):
    slept: list[float] = []
    monkeypatch.setattr("pipec.context.time.sleep", lambda s: slept.append(s))
    lm = pipec.ScriptedLM([TransientLMError("injected 429", retry_after=retry_after), {"a": "fine"}])
    path = write_pipe('signature S { in q: str out a: str }\nmodule m = Predict(S)\n'
                      'pipeline p(q: str) -> (a) {\n r = m(q: q)\n return a = r.a\n}\n')
    pred = pipec.load(path, lm=lm, cache=False)(q="x")
    assert pred.ok, pred.error
    assert slept and all(math.isfinite(s) and 0 <= s <= 60 for s in slept), slept


@pytest.mark.parametrize("retry_after", ["86400", "inf", "nan",
                                         "-3", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_hostile_retry_after_never_stalls_a_row(tmp_path, key_env, retry_after):
    """Whatever a server puts in Retry-After, the row is retried within sane bounds (here: 8 s)."""
    plan = FaultPlan(script={0: "429"}, retry_after=retry_after)
    box: list = []
    with FaultServer(answer, plan) as server:
        prog = pipec.load(write_pipe(tmp_path, server, retries=2), cache=False)
        worker = threading.Thread(target=lambda: box.append(prog(text="row 3")), daemon=True)
        start = time.perf_counter()
        worker.start()
        worker.join(8)
        elapsed = time.perf_counter() - start
    assert box, f"the row was still waiting after {elapsed:.0f}s (Retry-After: {retry_after})"
    assert box[0].ok and box[0].parity == "odd"


# ====================================================================== replies cut off by max_tokens
TWO_FIELDS = """
lm remote = "openai/fault-model" (api_base: "{base}", api_key_env: "PIPEC_FAULT_KEY", num_retries: 0, timeout: 2)
signature Count {{ "Count the letters." in text: str out note: str out n: int }}
module m = Predict(Count)
pipeline count(text: str) -> (note, n) {{
    r = m(text: text)
    return note = r.note, n = r.n
}}
"""


def test_reply_cut_mid_value_is_not_taken_as_the_answer(tmp_path, key_env):
    full = '{"note": "fine", "n": 12345}'
    plan = FaultPlan(rate=1.0, kinds=("truncated",), truncate_at=24)     # every reply: '{"note": "fine", "n": 12'
    with FaultServer(lambda body: full, plan) as server:
        path = tmp_path / "count.pipe"
        path.write_text(TWO_FIELDS.format(base=server.base))
        pred = pipec.load(path, cache=False)(text="abc")
    assert not pred.ok or pred.n == 12345, pred.outputs()
