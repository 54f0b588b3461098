"""The LM cache under concurrency, corruption, a full disk and a locked database.

* several processes, each with several threads, share one cache directory and read and write
  overlapping keys (small values in sqlite, large ones in files): no read ever returns a value that
  was not written for its key, and no operation waits longer than the cache's lock timeout;
* the sqlite file itself corrupted (garbage, truncated, header zeroed, pages with changed bytes): the
  cache reads as misses and the pipeline still answers correctly;
* a full disk (`OSError(ENOSPC)` and sqlite's "database or disk is full" from the store's writes) and
  a read-only cache: runs go on uncached, with one warning;
* another process holding the database locked: every operation gives up after the timeout.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import pipec
from pipec.cache import LMCache
from pipec.lm.base import LMReply

from fault_server import record_figure

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

KEYS = 200
LOCK_TIMEOUT = 2.0          # LMCache opens diskcache with timeout=2


def value_for(i: int) -> str:
    """The one value ever written for key i (some large enough to live in a file, not in sqlite)."""
    body = f"reply-{i:04d}-" + ("L" * 40_000 if i % 25 == 0 else "s" * (i % 50))
    return body


WORKER = textwrap.dedent('''
    import json, random, sys, threading, time
    from pipec.cache import LMCache
    from pipec.lm.base import LMReply

    def value_for(i):
        return f"reply-{i:04d}-" + ("L" * 40_000 if i % 25 == 0 else "s" * (i % 50))

    directory, seed, threads, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    shared = LMCache(directory)
    wrong, hits, misses, slowest = [], 0, 0, 0.0
    lock = threading.Lock()

    def work(t):
        global hits, misses, slowest
        rng = random.Random(seed * 1000 + t)
        cache = shared if t % 2 else LMCache(directory, memory_items=4)   # shared object and own objects
        for _ in range(ops):
            i = rng.randrange(KEYS)
            key = f"key-{i}"
            start = time.perf_counter()
            if rng.random() < 0.5:
                got = cache.get(key)
                with lock:
                    if got is None:
                        misses += 1
                    elif got.text != value_for(i) or got.prompt_tokens != i:
                        wrong.append((key, got.text[:40]))
                    else:
                        hits += 1
            else:
                cache.put(key, LMReply(value_for(i), i, 1, 0.0))
            with lock:
                slowest = max(slowest, time.perf_counter() - start)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    print(json.dumps({"wrong": wrong, "hits": hits, "misses": misses, "slowest": slowest}))
''').replace("KEYS", str(KEYS))


def test_processes_and_threads_share_one_cache_directory(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache_dir = tmp_path / "cache"
    procs, threads, ops = 4, 4, 1000
    start = time.perf_counter()
    children = [subprocess.Popen([sys.executable, str(script), str(cache_dir), str(seed), str(threads), str(ops)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(procs)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.perf_counter() - start
    wrong = [w for r in results for w in r["wrong"]]
    assert wrong == [], wrong[:5]
    hits = sum(r["hits"] for r in results)
    slowest = max(r["slowest"] for r in results)
    assert hits > 0
    assert slowest < LOCK_TIMEOUT + 3, slowest
    # Afterwards every key that was written reads back exactly.
    cache = LMCache(cache_dir)
    for i in range(KEYS):
        got = cache.get(f"key-{i}")
        assert got is None or got.text == value_for(i)
    cache.close()
    record_figure("cache.concurrency", processes=procs, threads_per_process=threads, ops=procs * threads * ops,
                  hits=hits, misses=sum(r["misses"] for r in results), wrong_entries=0,
                  slowest_op_s=round(slowest, 3), seconds=round(elapsed, 1))


# ---------------------------------------------------------------------- through a Program, threads
COUNT = """
signature S { "Count the letters." in q: str out n: int }
module m = Predict(S)
pipeline count(q: str) -> (n) {
    r = m(q: q)
    return n = r.n
}
"""


def count_rule(request):
    q = request.messages[-1]["content"].split("q: ", 1)[1]
    return {"n": len(q)}


def test_threads_running_batches_on_one_program_share_its_cache(tmp_path):
    path = tmp_path / "count.pipe"
    path.write_text(COUNT)
    lm = pipec.ScriptedLM(rule=count_rule, cacheable=True)
    prog = pipec.load(path, lm=lm, cache=tmp_path / "cache")
    words = ["w" * i for i in range(1, 121)]
    errors, results = [], {}

    def run(t):
        try:
            rows = [{"q": w} for w in random.Random(t).sample(words, 80)]
            preds = prog.run_batch(rows, concurrency=8)
            results[t] = [(r["q"], p.n if p.ok else p.error) for r, p in zip(rows, preds)]
        except BaseException as err:          # reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    prog.close()
    assert not errors and len(results) == 6, errors
    assert all(n == len(q) for res in results.values() for q, n in res)
    # A prompt may be asked once per thread that missed it at the same moment, never more.
    assert len(lm.requests) <= 6 * len(words)
    again = pipec.ScriptedLM(rule=count_rule, cacheable=True)
    preds = pipec.load(path, lm=again, cache=tmp_path / "cache").run_batch([{"q": w} for w in words])
    asked = {q for res in results.values() for q, _ in res}
    assert [p.n for p in preds] == [len(w) for w in words]
    assert len(again.requests) == len(set(words) - asked)


# ---------------------------------------------------------------------- a corrupted sqlite file
def _filled_cache(directory: Path, n: int = 60) -> None:
    cache = LMCache(directory)
    for i in range(n):
        cache.put(f"key-{i}", LMReply(value_for(i), i, 1, 0.0))
    cache.close()


def _corrupt(db: Path, how: str, rng: random.Random) -> None:
    data = bytearray(db.read_bytes())
    if how == "garbage":
        data = bytearray(rng.randbytes(len(data)))
    elif how == "truncated":
        data = data[: len(data) // 2]
    elif how == "header zeroed":
        data[:100] = bytes(100)
    elif how == "empty":
        data = bytearray()
    elif how.startswith("pages"):
        for _ in range(200):
            pos = rng.randrange(100, len(data))
            data[pos] = rng.randrange(256)
    db.write_bytes(bytes(data))
    for side in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if side.exists():
            side.unlink()


CORRUPTIONS = ["garbage", "truncated", "header zeroed", "empty", "pages 1", "pages 2", "pages 3", "pages 4"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupted_sqlite_file_is_a_miss_never_a_wrong_entry_or_a_hang(tmp_path, how, caplog):
    directory = tmp_path / "lm"
    _filled_cache(directory)
    _corrupt(directory / "cache.db", how, random.Random(how))
    cache = LMCache(directory)
    slowest = 0.0
    for i in range(60):
        start = time.perf_counter()
        got = cache.get(f"key-{i}")
        slowest = max(slowest, time.perf_counter() - start)
        assert got is None or (got.text == value_for(i) and got.prompt_tokens == i), (i, got)
    start = time.perf_counter()
    cache.put("key-new", LMReply("fresh", 1, 1, 0.0))          # may fail; must not raise
    slowest = max(slowest, time.perf_counter() - start)
    assert cache.get("key-new").text == "fresh"                # the in-process front still has it
    cache.close()
    assert slowest < LOCK_TIMEOUT + 3, slowest
    # And a pipeline on that cache still answers every row correctly.
    path = tmp_path / "count.pipe"
    path.write_text(COUNT)
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=count_rule, cacheable=True), cache=directory)
    preds = prog.run_batch([{"q": "x" * i} for i in range(1, 21)], concurrency=4)
    prog.close()
    assert [p.n for p in preds] == list(range(1, 21))


@pytest.mark.parametrize("where", ["sqlite page", "value file"])
def test_a_changed_byte_inside_a_stored_reply_is_not_returned(tmp_path, where):
    directory = tmp_path / "lm"
    _filled_cache(directory)
    if where == "sqlite page":
        db = directory / "cache.db"
        data = db.read_bytes()
        pos = data.find(value_for(7).encode())
        assert pos > 0
        db.write_bytes(data[:pos + 6] + b"X" + data[pos + 7:])         # reply-0007 -> reply-X007
        i = 7
    else:
        # Replies above diskcache's 32 KB threshold live in files of their own (the entry as JSON).
        [val] = [p for p in directory.rglob("*.val") if value_for(25).encode() in p.read_bytes()]
        val.write_bytes(val.read_bytes().replace(b"LLLL", b"LLXL", 1))
        i = 25
    got = LMCache(directory).get(f"key-{i}")
    assert got is None or got.text == value_for(i), got.text[:30]


# ---------------------------------------------------------------------- a full disk, a read-only cache
DISK_FULL = [OSError(errno.ENOSPC, "No space left on device"), sqlite3.OperationalError("database or disk is full")]


@pytest.mark.parametrize("error", DISK_FULL, ids=["ENOSPC", "sqlite-full"])
def test_full_disk_on_write_keeps_the_run_going_uncached(tmp_path, disk_fault, caplog, error):
    path = tmp_path / "count.pipe"
    path.write_text(COUNT)
    directory = tmp_path / "cache"
    # Some entries were written before the disk filled up.
    warm = pipec.load(path, lm=pipec.ScriptedLM(rule=count_rule, cacheable=True), cache=directory)
    warm.run_batch([{"q": "x" * i} for i in range(1, 11)])
    warm.close()

    def full(real, self, *args, **kwargs):
        raise error
    disk_fault(directory, "set", full)
    disk_fault(directory, "delete", full)
    lm = pipec.ScriptedLM(rule=count_rule, cacheable=True)
    prog = pipec.load(path, lm=lm, cache=directory)
    with caplog.at_level(logging.WARNING, logger="pipec.cache"):
        preds = prog.run_batch([{"q": "x" * i} for i in range(1, 41)], concurrency=8)
    prog.close()
    assert [p.n for p in preds] == list(range(1, 41))
    assert len(lm.requests) == 30                                   # the 10 written before were still read
    warnings = [r for r in caplog.records if r.name == "pipec.cache" and str(directory) in r.getMessage()]
    assert len(warnings) == 1 and f"cache write at {directory} failed" in warnings[0].getMessage()
    assert "continuing without caching" in warnings[0].getMessage()


def test_full_disk_while_storing_a_compiled_artifact_in_the_cache(tmp_path, monkeypatch):
    """The compile cache (an artifact per fingerprint) failing to write costs only the shortcut."""
    from pipec import emit
    path = tmp_path / "count.pipe"
    path.write_text(COUNT)
    rows = [{"q": "x" * i, "n": i} for i in range(1, 13)]
    real = emit.write_artifact

    def full(program, dest, **kw):
        if "compiled" in Path(dest).parts:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(program, dest, **kw)
    monkeypatch.setattr(emit, "write_artifact", full)
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=count_rule, cacheable=True), cache=tmp_path / "cache")
    compiled = prog.compile(rows[:8], rows[8:], "exact_match(n)", "labeled_fewshot", seed=0)
    assert compiled.report.compiled_score == 1.0
    assert compiled.save(tmp_path / "out.compiled.json").exists()


def test_read_only_cache_directory(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    directory = tmp_path / "cache"
    _filled_cache(directory / "lm")
    for p in [directory, *directory.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        cache = LMCache(directory / "lm")
        assert all(cache.get(f"key-{i}") in (None,) or cache.get(f"key-{i}").text == value_for(i) for i in range(20))
        cache.put("new", LMReply("x"))
    finally:
        for p in [directory, *directory.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


# ---------------------------------------------------------------------- a locked database
class Locked:
    """Another process holding the cache database under an exclusive write lock for `hold` seconds."""

    def __init__(self, db: Path, hold: float):
        self.db, self.hold = db, hold

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f'''
            import sqlite3, time
            con = sqlite3.connect({str(self.db)!r}, timeout=30, isolation_level=None)
            con.execute("BEGIN EXCLUSIVE")
            con.execute("UPDATE Settings SET value = value WHERE key = 'count'")
            print("locked", flush=True)
            time.sleep({self.hold})
        ''')], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait(10)


def test_writes_to_a_database_locked_by_another_process_wait_in_memory_and_land_when_it_is_free(tmp_path):
    directory = tmp_path / "lm"
    _filled_cache(directory, 10)
    cache = LMCache(directory)
    assert cache.get("key-9").text == value_for(9)                  # open before the lock is taken
    times = []
    with Locked(directory / "cache.db", hold=20):
        for i in range(2):
            start = time.perf_counter()
            got = cache.get(f"key-{i}")
            cache.put(f"other-{i}", LMReply(f"x{i}"))
            times.append(time.perf_counter() - start)
            assert got is None or got.text == value_for(i)
        cache._mem.clear()
        assert cache.get("other-1").text == "x1"                    # read back from the write queue
        assert not cache.flush(timeout=0.5)                          # not stored: the lock is still held
    assert max(times) < LOCK_TIMEOUT / 2, times                      # writes never wait for the lock
    cache.put("after", LMReply("back"))
    assert cache.flush()                                             # once the lock is gone, all of it lands
    other = LMCache(directory)
    assert [other.get(k).text for k in ("other-0", "other-1", "after")] == ["x0", "x1", "back"]
    other.close()
    cache.close()
    record_figure("cache.locked", get_plus_put_s=[round(t, 3) for t in times], lock_timeout_s=LOCK_TIMEOUT)


def test_opening_a_locked_cache_gives_up_after_the_timeout(tmp_path):
    directory = tmp_path / "lm"
    _filled_cache(directory, 10)
    cache = LMCache(directory)
    with Locked(directory / "cache.db", hold=8):
        start = time.perf_counter()
        assert cache.get("key-1") is None
        first = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(20):                                          # later reads do not queue behind it
            assert cache.get(f"key-{i}") is None
        later = time.perf_counter() - start
    assert first < LOCK_TIMEOUT + 3, first                           # not diskcache's own 60 s of retries
    assert later < LOCK_TIMEOUT / 2, later                           # not even one more lock timeout
    deadline = time.monotonic() + 70                                 # diskcache retries its setup itself
    while cache.get("key-2") is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cache.get("key-2").text == value_for(2)                   # usable once the lock is gone
    cache.close()
    record_figure("cache.locked_open", first_get_s=round(first, 2), next_20_gets_s=round(later, 4))


def test_a_locked_cache_does_not_serialize_a_batch(tmp_path):
    from conftest import SlowLM
    path = tmp_path / "count.pipe"
    path.write_text(COUNT)
    lm = SlowLM(rule=count_rule, cacheable=True, delay=0.01)
    prog = pipec.load(path, lm=lm, cache=tmp_path / "cache")
    prog.run_batch([{"q": "warm"}])                                  # the cache is open
    with Locked(tmp_path / "cache" / "cache.db", hold=30):
        start = time.perf_counter()
        preds = prog.run_batch([{"q": "x" * i} for i in range(1, 4)], concurrency=3)
        elapsed = time.perf_counter() - start
    assert [p.n for p in preds] == [1, 2, 3]
    assert elapsed < LOCK_TIMEOUT, elapsed                           # no row waited out the lock timeout
    record_figure("cache.locked_batch", rows=3, seconds=round(elapsed, 3))
    assert prog.cache.flush()                                        # the replies land once the lock is gone
    prog.close()
    again = SlowLM(rule=count_rule, cacheable=True, delay=0.01)
    fresh = pipec.load(path, lm=again, cache=tmp_path / "cache")
    assert [p.n for p in fresh.run_batch([{"q": "x" * i} for i in range(1, 4)])] == [1, 2, 3]
    assert again.requests == []                                      # all three answered from the disk
    fresh.close()
