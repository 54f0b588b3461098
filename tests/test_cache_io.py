"""The cache's disk side: write-behind, what a process leaves behind at exit, fork, and recovery.

The locked-database and corruption cases live in test_reliability_cache.py; these are the everyday
guarantees of the I/O thread: nothing put is lost when a script forgets to close, the database file
is whole after close, a forked child gets a working cache, and a passing disk error does not switch
caching off for the rest of the run.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time

import pytest

from pipec.cache import LMCache
from pipec.lm.base import LMReply


def test_replies_put_by_a_script_that_never_closes_are_on_disk_after_it_exits(tmp_path):
    script = textwrap.dedent(f'''
        from pipec.cache import LMCache
        from pipec.lm.base import LMReply
        cache = LMCache({str(tmp_path)!r})
        for i in range(500):
            cache.put(f"k{{i}}", LMReply("v" * (i % 7) + str(i), i, 1, 0.0))
        # no close(), no flush(): the interpreter exits with writes still queued
    ''')
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    cache = LMCache(tmp_path)
    got = [cache.get(f"k{i}") for i in range(500)]
    assert [g.text if g else None for g in got] == ["v" * (i % 7) + str(i) for i in range(500)]
    assert [g.prompt_tokens for g in got] == list(range(500))
    cache.close()


def test_close_leaves_one_whole_database_file(tmp_path):
    cache = LMCache(tmp_path)
    for i in range(50):
        cache.put(f"k{i}", LMReply(f"reply {i}"))
        assert cache.get(f"k{i}").text == f"reply {i}"
    cache._mem.clear()
    assert cache.get("k7").text == "reply 7"                 # read back through the disk path
    cache.close()
    wal = tmp_path / "cache.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0      # the write-ahead log was merged
    assert b"reply 49" in (tmp_path / "cache.db").read_bytes()


def test_large_and_small_replies_read_back_from_disk_in_a_new_process(tmp_path):
    big = "L" * 100_000 + "end"                              # above diskcache's 32 KB: a file of its own
    cache = LMCache(tmp_path)
    cache.put("big", LMReply(big, 3, 4, 0.5, truncated=True))
    cache.put("small", LMReply("tiny"))
    cache.close()
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f'''
        from pipec.cache import LMCache
        c = LMCache({str(tmp_path)!r})
        b, s = c.get("big"), c.get("small")
        print(len(b.text), b.text[-3:], b.prompt_tokens, b.completion_tokens, b.cost, b.truncated, s.text)
    ''')], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert out == ["100003", "end", "3", "4", "0.5", "True", "tiny"]


def child_exit_code(pid: int, seconds: float = 30) -> int:
    """Wait for a forked child; one stuck (on a lock, say) is killed and fails the test, never hangs it."""
    deadline = time.monotonic() + seconds
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked child did not finish in {seconds:g} s")
    return os.waitstatus_to_exitcode(done[1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_reads_and_writes_the_cache_it_inherited(tmp_path):
    cache = LMCache(tmp_path)
    cache.put("parent", LMReply("from parent"))
    assert cache.flush()
    pid = os.fork()
    if pid == 0:                                              # the child: its own I/O thread and connections
        code = 1
        try:
            cache._mem.clear()
            if cache.get("parent").text == "from parent":
                cache.put("child", LMReply("from child"))
                code = 0 if cache.flush(timeout=10) else 2
        finally:
            os._exit(code)
    assert child_exit_code(pid) == 0
    cache._mem.clear()
    assert cache.get("child").text == "from child"
    cache.put("after", LMReply("parent goes on"))
    assert cache.flush()
    cache.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_while_another_thread_opens_a_cache_does_not_hang_the_child(tmp_path):
    from pipec import cache as cache_module
    with cache_module._workers_lock:          # as if another thread were opening a cache at the fork
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                cache = LMCache(tmp_path)
                cache.put("child", LMReply("from child"))
                code = 0 if cache.flush(timeout=10) else 2
            finally:
                os._exit(code)
    assert child_exit_code(pid, seconds=15) == 0
    parent = LMCache(tmp_path)
    assert parent.get("child").text == "from child"
    parent.close()


def test_caching_resumes_after_a_passing_disk_error(tmp_path, disk_fault, caplog):
    cache = LMCache(tmp_path)
    cache.put("before", LMReply("stored"))
    assert cache.flush()
    failing = {"on": True}

    def flaky(real_set, self, *args, **kwargs):
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_set(self, *args, **kwargs)
    disk_fault(tmp_path, "set", flaky)
    cache.put("lost", LMReply("not stored"))
    assert cache.flush()                                      # given up on, not waited for
    assert cache.get("lost").text == "not stored"             # the run still has it in memory
    failing["on"] = False                                     # space was freed
    time.sleep(1.2)                                           # the disk is left alone for a second
    cache.put("later", LMReply("stored again"))
    assert cache.flush()
    cache.close()
    fresh = LMCache(tmp_path)
    assert fresh.get("before").text == "stored"
    assert fresh.get("lost") is None
    assert fresh.get("later").text == "stored again"
    fresh.close()
    assert sum(f"cache write at {tmp_path} failed" in r.getMessage() for r in caplog.records) == 1


def test_put_returns_before_the_disk_is_written(tmp_path, disk_fault):
    """A disk that hangs (here: until the test releases it) holds up the I/O thread, never the caller."""
    import threading
    writing, release = threading.Event(), threading.Event()

    def stuck(real_set, self, *args, **kwargs):
        writing.set()
        release.wait(30)
        return real_set(self, *args, **kwargs)
    disk_fault(tmp_path, "set", stuck)
    cache = LMCache(tmp_path)
    cache.put("k0", LMReply("0"))
    assert writing.wait(10)                                   # the I/O thread is stuck in the disk now
    putter = threading.Thread(target=lambda: [cache.put(f"k{i}", LMReply(str(i))) for i in range(1, 20)])
    putter.start()
    putter.join(5)
    assert not putter.is_alive(), "put waited for the disk"
    assert not cache.flush(timeout=0.1)                        # still queued, and still readable
    assert [cache.get(f"k{i}").text for i in range(20)] == [str(i) for i in range(20)]
    release.set()
    assert cache.flush(timeout=30)
    cache.close()
    fresh = LMCache(tmp_path)
    assert [fresh.get(f"k{i}").text for i in range(20)] == [str(i) for i in range(20)]
    fresh.close()


def test_a_cache_that_cannot_be_opened_for_writing_still_serves_what_it_holds(tmp_path, disk_fault, caplog):
    """A read-only mount (or a database another process holds while opening): hits still come from it."""
    import sqlite3
    cache = LMCache(tmp_path)
    for i in range(5):
        cache.put(f"k{i}", LMReply(f"reply {i}"))
    cache.put("big", LMReply("B" * 50_000))
    cache.close()

    def read_only(real_init, self, *args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    disk_fault(tmp_path, "__init__", read_only)
    ro = LMCache(tmp_path)
    assert [ro.get(f"k{i}").text for i in range(5)] == [f"reply {i}" for i in range(5)]
    assert ro.get("big").text == "B" * 50_000
    assert ro.get("absent") is None
    ro.put("new", LMReply("kept in memory"))                  # cannot be stored; the run goes on
    assert ro.get("new").text == "kept in memory"
    ro.close()
    assert any("could not be opened" in r.getMessage() for r in caplog.records)


def test_a_cache_that_cannot_be_opened_for_writing_serves_hits_on_the_event_loop_too(tmp_path, disk_fault):
    """Rows on asyncio read through `aget`: while opening for writing is paused after a failure, those
    reads used to be misses without asking the disk (issue 13: a read-only warm cache served no hits)."""
    import asyncio
    import sqlite3
    cache = LMCache(tmp_path)
    for i in range(5):
        cache.put(f"k{i}", LMReply(f"reply {i}"))
    cache.close()

    def read_only(real_init, self, *args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    disk_fault(tmp_path, "__init__", read_only)
    ro = LMCache(tmp_path)

    async def read_all():
        return [await ro.aget(f"k{i}") for i in range(5)] + [await ro.aget("absent")]
    got = asyncio.run(read_all())
    assert [r.text for r in got[:5]] == [f"reply {i}" for i in range(5)] and got[5] is None
    ro.close()


def test_an_idle_cache_gives_its_thread_back_and_wakes_on_the_next_request(tmp_path):
    """A program that is never closed (one per request in a server, say) must not pin a thread and a
    database connection for the life of the process."""
    import threading
    before = {t for t in threading.enumerate() if t.name == "pipec-cache-io"}
    cache = LMCache(tmp_path)
    cache.put("k", LMReply("v"))
    [thread] = {t for t in threading.enumerate() if t.name == "pipec-cache-io"} - before
    assert cache.flush()
    worker = cache._disk()
    with worker._cv:                  # shorten the idle time only now, so the thread was surely seen
        worker.idle = 0.3
        worker._cv.notify_all()
    thread.join(5)
    assert not thread.is_alive(), "an idle cache kept its I/O thread"
    cache.put("k2", LMReply("v2"))                             # a new thread picks the work up
    assert cache.flush()
    other = LMCache(tmp_path)
    assert (other.get("k").text, other.get("k2").text) == ("v", "v2")
    other.close()
    cache.close()


def test_closing_during_a_failing_write_still_tries_the_rest_and_warns_once(tmp_path, monkeypatch, disk_fault,
                                                                           caplog):
    """A close that lands while a write is failing (disk full) tries every queued batch once, the disk
    having perhaps recovered, and adds no second warning to "continuing without caching"."""
    import threading
    from pipec import cache_io
    monkeypatch.setattr(cache_io, "BATCH", 4)
    in_write = threading.Event()
    failures = []

    def full_until_close(real_set, self, key, *args, **kwargs):
        if not failures:
            in_write.set()
            deadline = time.monotonic() + 5
            while not cache._worker._stopping and time.monotonic() < deadline:
                time.sleep(0.001)                             # fail only once close() has begun
            failures.append(key)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_set(self, key, *args, **kwargs)           # space freed: the rest is stored
    disk_fault(tmp_path, "set", full_until_close)
    cache = LMCache(tmp_path)
    for i in range(20):
        cache.put(f"k{i}", LMReply(str(i)))
    assert in_write.wait(5)
    closer = threading.Thread(target=cache.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive()
    fresh = LMCache(tmp_path)
    stored = [i for i in range(20) if fresh.get(f"k{i}") is not None]
    fresh.close()
    # Only the failing batch (the first one, at most BATCH puts: how many had arrived) was lost.
    assert stored, "a close that raced the failing write stored nothing queued after it"
    assert failures == ["k0"] and 1 <= stored[0] <= 4 and stored == list(range(stored[0], 20))
    messages = [r.getMessage() for r in caplog.records if r.name == "pipec.cache" and str(tmp_path) in r.getMessage()]
    assert len(messages) == 1 and "continuing without caching" in messages[0]


def test_caches_on_one_directory_in_one_process_see_each_others_queued_replies(tmp_path, disk_fault):
    """Two programs on one cache directory (a notebook cell run twice, say): a reply the first just
    got is a hit for the second at once, even while the disk has not stored it yet."""
    import threading
    release = threading.Event()

    def stuck(real_set, self, *args, **kwargs):
        release.wait(30)
        return real_set(self, *args, **kwargs)
    disk_fault(tmp_path, "set", stuck)
    first, second = LMCache(tmp_path), LMCache(tmp_path)
    first.put("k", LMReply("from the first"))
    assert second.get("k").text == "from the first"
    second.discard("k")                                       # and a discard is seen by both
    first._mem.clear()
    assert first.get("k") is None
    release.set()
    first.close()
    assert second.get("k") is None
    second.put("k2", LMReply("after a close"))                # closing one does not break the other
    second.close()
    fresh = LMCache(tmp_path)
    assert fresh.get("k2").text == "after a close" and fresh.get("k") is None
    fresh.close()
