"""The LM cache's disk side: one thread that owns the diskcache connection.

Why a thread of its own: sqlite waits for locks. Another process holding the database (a second
`pipec run`, a backup tool) made every cache write wait out its lock timeout on the caller, which
serialized a whole batch at 2 s per row, and diskcache retries its own setup for up to a minute,
so opening a locked cache stalled a run for that long. Here callers never wait on the disk for
writes, and wait at most `timeout` for a read; a read that gives up is a miss.

Why exactly one thread: diskcache keeps one sqlite connection per thread and `close()` only closes
the caller's, so connections opened elsewhere stay open and the write-ahead log is never merged into
the database file. The worker opens, reads, writes and closes, all on the one connection.

Writes are queued (the newest value per key wins) and stored in batches, one transaction each; until
stored, reads are answered from the queue. A write that meets a locked database stays queued and is
retried after a pause; one that fails for good (disk full, read-only) is dropped with one warning, and
the run goes on uncached.
"""
from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Callable

from .secrets import logger

log = logger("pipec.cache")      # with the redacting filter: a path or an error may hold a key

DELETED = object()           # a queued delete: the key reads as absent until the delete is stored
FAILED = object()            # a read that did not complete: the caller treats it as a miss
BATCH = 256                  # writes per transaction
MAX_QUEUED = 50_000          # beyond this, the oldest queued writes are dropped (a cache may forget)
PAUSE = (1.0, 60.0)          # first and longest pause after a failure; doubles on each failure in a row
IDLE = 10.0                  # seconds without work after which the I/O thread closes and ends

_live: "weakref.WeakSet[DiskWorker]" = weakref.WeakSet()
_atexit_registered = False


class _Read:
    __slots__ = ("key", "done", "value", "loop", "future")

    def __init__(self, key: str, loop=None, future=None):
        self.key, self.loop, self.future = key, loop, future
        self.done = threading.Event() if loop is None else None
        self.value: Any = FAILED

    def finish(self, value: Any) -> None:
        if self.loop is None:
            self.value = value
            self.done.set()
            return
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future, value)
        except RuntimeError:         # the event loop has closed: nobody is waiting any more
            pass


def _resolve(future, value) -> None:
    if not future.done():
        future.set_result(value)


class _Direct:
    """The read-only sqlite connection that `DiskWorker.read` shares between the caller threads."""

    def __init__(self, dbname: str, raw: int, text_file: int):
        self.dbname, self.raw, self.text_file = dbname, raw, text_file
        self.lock = threading.Lock()
        self.con = None                  # a sqlite3.Connection, opened on first read
        self.immutable = False           # opened with `immutable=1`: the database cannot be written here
        self.closed = False
        self.sql = ("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1 "
                    "AND (expire_time IS NULL OR expire_time > ?)")

    @classmethod
    def for_diskcache(cls) -> "_Direct":
        from diskcache.core import DBNAME, MODE_RAW, MODE_TEXT
        return cls(DBNAME, MODE_RAW, MODE_TEXT)

    def close(self) -> None:
        with self.lock:
            con, self.con, self.closed = self.con, None, True
        if con is not None:
            con.close()


class DiskWorker:
    """A diskcache store behind one I/O thread: non-blocking writes, reads with a deadline.

    `encode(key, value)` turns a queued value into what is stored; it runs on the worker thread, so
    the caller's `put` only queues.

    >>> import tempfile
    >>> w = DiskWorker(tempfile.mkdtemp(), encode=lambda k, v: v)
    >>> w.write("k", "v"); w.flush(); w.read("k")
    True
    'v'
    >>> w.close()
    """

    def __init__(self, directory: str | Path, encode: Callable[[str, Any], Any], timeout: float = 2.0):
        self.directory = Path(directory)
        self.timeout = timeout
        self.idle = IDLE
        self.pid = os.getpid()
        self._encode = encode
        self._cv = threading.Condition(threading.Lock())
        self._queued: dict[str, Any] = {}
        self._reads: deque[_Read] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._writing = False
        self._write_after = 0.0          # monotonic time before which writes are not tried
        self._write_failures = 0
        self._open_after = 0.0
        self._open_failures = 0
        self._opening_since: float | None = None
        self._read_after = 0.0           # reads that timed out pause the disk for a while: misses
        self._read_failures = 0
        self._warned: set[str] = set()
        self._direct: _Direct | None = None      # set once the worker has opened the store

    # ------------------------------------------------------------------ caller side
    def queued(self, key: str) -> Any:
        """The value queued for `key` (DELETED for a queued delete), else None."""
        return self._queued.get(key)

    def write(self, key: str, value: Any) -> None:
        """Queue a value (or DELETED) for `key`; returns at once."""
        with self._cv:
            q = self._queued
            q.pop(key, None)              # re-insert: the queue is oldest-first
            q[key] = value
            if len(q) > MAX_QUEUED:
                del q[next(iter(q))]
            self._start()
            if not self._writing:
                self._cv.notify()

    def read(self, key: str) -> Any:
        """The stored value of `key`, None if absent, FAILED if the disk did not answer in time."""
        if self._direct is not None:
            return self._read_direct(key)
        r = self._submit_read(key)
        if r is None:
            return FAILED
        if not r.done.wait(self.timeout):
            return self._read_timed_out()
        return r.value

    def _read_direct(self, key: str) -> Any:
        """A read on the caller's thread through the shared read-only connection: no thread hop.

        It reads diskcache's table as diskcache writes it (`Cache(key, raw, mode, filename, value)`,
        str values inline or in a text file); anything else is a miss, and the reply's checksum still
        guards what is returned.
        """
        if time.monotonic() < self._read_after:
            return FAILED
        direct = self._direct
        if direct is None:
            return FAILED
        try:
            with direct.lock:
                if direct.closed:
                    return FAILED
                row = self._query(direct, key)
            if row is None:
                return None
            mode, filename, value = row
            if mode == direct.text_file:
                with open(self.directory / filename, encoding="utf-8") as fh:
                    return fh.read()
            return value if mode == direct.raw and isinstance(value, str) else None
        except FileNotFoundError:                    # evicted or replaced between the row and the file
            return None
        except Exception as err:                     # locked, corrupt, or unreadable
            return self._read_error(err)

    def _query(self, direct: _Direct, key: str):
        """One row of the cache table (under `direct.lock`), opening the read-only connection first.

        `mode=ro` still needs to write beside the database: a database in write-ahead-log mode (as
        diskcache keeps it) is read through its `-shm` file, which a reader creates, and sqlite
        checks for a hot journal. On a read-only mount, or in a directory the user may not write,
        that fails ("unable to open database file", "attempt to write a readonly database"), so
        such a cache is opened again as `immutable`: no locks, no side files. Nothing here can
        write to it, so reads are consistent unless its owner writes to it meanwhile; then a read
        may see a damaged row, which the reply's checksum turns into a miss.
        """
        import sqlite3
        for attempt in (0, 1):
            if direct.con is None:
                uri = (self.directory / direct.dbname).resolve().as_uri()
                direct.con = sqlite3.connect(f"{uri}?mode=ro{'&immutable=1' if direct.immutable else ''}",
                                             uri=True, timeout=self.timeout, isolation_level=None,
                                             check_same_thread=False)
            try:
                return direct.con.execute(direct.sql, (key, time.time())).fetchone()
            except sqlite3.OperationalError as err:
                if attempt or direct.immutable or not _cannot_write_beside(err):
                    raise
                direct.con.close()
                direct.con, direct.immutable = None, True
                self._warn_once("open", f"cache at {self.directory} is read-only here; serving hits "
                                             "from it, new replies are not stored")

    async def aread(self, key: str) -> Any:
        """`read` for the event loop: awaits the worker instead of blocking the loop."""
        import asyncio
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        r = self._submit_read(key, loop, future)
        if r is None:
            return FAILED
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            return self._read_timed_out()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write is stored (or given up on); False if `timeout` ran out first.

        A write pausing after a locked database is tried once more now.
        """
        deadline = time.monotonic() + (self.timeout * 2 + 1 if timeout is None else timeout)
        with self._cv:
            if not self._queued and not self._writing:
                return True
            self._write_after = 0.0
            self._start()
            self._cv.notify_all()
            while self._queued or self._writing:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Store what is queued (within `timeout`), then close the connections and end the thread."""
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()      # first: the last connection to close merges the write-ahead log
        with self._cv:
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
            self._write_after = 0.0
            self._cv.notify_all()
        thread.join(self.timeout * 2 + 1 if timeout is None else timeout)
        if thread.is_alive():
            # The thread is stuck opening a locked database; it closes itself once it gets through.
            self._warn_once("close", f"cache at {self.directory} is still locked by another process; "
                                     f"{len(self._queued)} replies not yet stored")

    # ------------------------------------------------------------------ internals (caller side)
    def _start(self) -> None:
        global _atexit_registered
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="pipec-cache-io", daemon=True)
            self._thread.start()
            _live.add(self)
            if not _atexit_registered:
                _atexit_registered = True
                atexit.register(_close_all)

    def _submit_read(self, key: str, loop=None, future=None) -> _Read | None:
        now = time.monotonic()
        with self._cv:
            if now < self._read_after or (now < self._open_after and self._direct is None):
                return None           # (a store that cannot be opened for writing may still be read)
            if self._opening_since is not None and now - self._opening_since > self.timeout:
                return None               # an open is stuck on a lock: do not queue behind it
            r = _Read(key, loop, future)
            self._reads.append(r)
            self._start()
            self._cv.notify()
        return r

    def _read_timed_out(self) -> Any:
        return self._read_failed(f"cache read at {self.directory} took longer than {self.timeout:g} s "
                                 "(database locked?); treating reads as misses for a while")

    def _read_error(self, err: Exception) -> Any:
        return self._read_failed(f"cache read at {self.directory} failed ({type(err).__name__}: {err}); "
                                 "treating as a miss")

    def _read_failed(self, message: str) -> Any:
        """Leave the disk alone for a while (reads are misses meanwhile); warn the first time."""
        with self._cv:
            self._read_failures += 1
            self._read_after = time.monotonic() + _pause(self._read_failures)
        self._warn_once("read", message)
        return FAILED

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message)

    # ------------------------------------------------------------------ the I/O thread
    def _run(self) -> None:
        store = None                                 # this thread's diskcache connection
        try:
            while True:
                job = self._next_job()
                if job is None:
                    return
                reads, batch = job
                if store is None and time.monotonic() >= self._open_after:
                    store = self._open()
                if store is None:
                    self._answer_without_store(reads)
                    if self._stopping:
                        self._report_unstored()
                        return
                    continue
                for r in reads:
                    r.finish(self._get(store, r.key))
                if batch:
                    self._put_batch(store, batch)
        finally:
            if store is not None:
                if self._stopping:
                    self._report_unstored()
                try:
                    store.close()
                except Exception:                    # a broken database still lets the run finish
                    pass
            with self._cv:
                self._writing = False
                if self._thread is threading.current_thread():
                    self._thread = None
                    for r in self._reads:            # nobody will answer these now
                        r.finish(FAILED)
                    self._reads.clear()
                self._cv.notify_all()

    def _next_job(self) -> tuple[list[_Read], list[tuple[str, Any]] | None] | None:
        """Wait for work: waiting reads first, else a batch of writes. None ends the thread: on close,
        or after `idle` seconds with nothing queued (so an unclosed cache does not keep a thread and a
        connection for the life of the process)."""
        with self._cv:
            idle_since = time.monotonic()
            while True:
                now = time.monotonic()
                can_write = bool(self._queued) and now >= self._write_after and now >= self._open_after
                if self._reads or can_write:
                    break
                if self._stopping:
                    return None           # nothing writable left (or writes pausing on a lock): stop
                if not self._queued and now - idle_since >= self.idle:
                    self._thread = None   # under the lock: the next request starts a new thread
                    return None
                waits = [t - now for t in (self._write_after, self._open_after) if self._queued and t > now]
                if not self._queued:
                    waits.append(self.idle - (now - idle_since))
                self._cv.wait(min(waits))
            reads = list(self._reads)
            self._reads.clear()
            batch = None if reads else list(itertools.islice(self._queued.items(), BATCH))
            self._writing = batch is not None
            return reads, batch

    def _answer_without_store(self, reads: list[_Read]) -> None:
        for r in reads:
            r.finish(self._read_direct(r.key) if self._direct is not None else FAILED)
        with self._cv:
            self._writing = False
            self._cv.notify_all()

    def _open(self):
        """A diskcache store for this thread, or None (then the disk is left alone for a while)."""
        with self._cv:
            self._opening_since = time.monotonic()
        try:
            import diskcache
            self.directory.mkdir(parents=True, exist_ok=True)
            store = diskcache.Cache(str(self.directory), timeout=self.timeout,
                                    eviction_policy="least-recently-stored")
        except Exception as err:                     # locked, unreadable, corrupt, read-only
            store = None
            readable = (self.directory / _Direct.for_diskcache().dbname).is_file()
            self._warn_once("open", f"cache at {self.directory} could not be opened ({type(err).__name__}: "
                                    f"{err}); " + ("hits are still read from it; new replies stay in memory"
                                                   if readable else "continuing without it for now"))
        with self._cv:
            self._opening_since = None
            self._open_failures = 0 if store is not None else self._open_failures + 1
            if store is None:
                self._open_after = time.monotonic() + _pause(self._open_failures)
            if self._direct is None:
                # Reads need no write access: a cache that cannot be opened for writing (a read-only
                # mount, a lock) is still read, as long as its database exists.
                direct = _Direct.for_diskcache()
                if store is not None or (self.directory / direct.dbname).is_file():
                    self._direct = direct
        return store

    def _get(self, store, key: str) -> Any:
        try:
            value = store.get(key)
        except Exception as err:                     # locked, unreadable or corrupt database
            return self._read_error(err)
        self._read_failures = 0
        return value

    def _put_batch(self, store, batch: list[tuple[str, Any]]) -> None:
        import diskcache
        try:
            with store.transact():
                for key, value in batch:
                    if value is DELETED:
                        store.delete(key)
                    else:
                        store.set(key, self._encode(key, value))
        except diskcache.Timeout:                    # locked by another process: keep, retry later
            self._warn_once("locked", f"cache at {self.directory} is locked by another process; "
                                      "replies stay in memory and are stored when it is free")
            self._batch_done(batch, failed=True, keep=True)
        except Exception as err:                     # disk full, read-only, corrupt: drop these writes
            self._warn_once("write", f"cache write at {self.directory} failed ({type(err).__name__}: {err}); "
                                     "continuing without caching")
            self._batch_done(batch, failed=True, keep=False)
        else:
            self._batch_done(batch, failed=False, keep=False)

    def _batch_done(self, batch: list[tuple[str, Any]], failed: bool, keep: bool) -> None:
        """Unqueue a batch (unless `keep`: it is retried after the pause that a failure starts)."""
        with self._cv:
            if failed:
                self._write_failures += 1
                # Closing, a dropped batch does not hold back the rest: each is tried once, so what
                # a close stores never depends on whether it raced a failing write.
                if keep or not self._stopping:
                    self._write_after = time.monotonic() + _pause(self._write_failures)
            else:
                self._write_failures = 0
            if not keep:
                q = self._queued
                for key, value in batch:
                    if q.get(key) is value:          # not if a newer value was queued meanwhile
                        del q[key]
            self._writing = False
            self._cv.notify_all()

    def _report_unstored(self) -> None:
        if self._queued:
            self._warn_once("close", f"{len(self._queued)} replies could not be stored in the cache at "
                                     f"{self.directory}")


def _cannot_write_beside(err: Exception) -> bool:
    """Whether a read-only open failed only because sqlite could not write its side files."""
    text = str(err).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _pause(failures: int) -> float:
    """Seconds to leave the disk alone after `failures` failures in a row.

    >>> [_pause(n) for n in (1, 2, 3, 10)]
    [1.0, 2.0, 4.0, 60.0]
    """
    first, longest = PAUSE
    return min(longest, first * 2 ** (failures - 1))


def _close_all() -> None:
    """At interpreter exit, store what programs that were never closed still have queued."""
    for worker in list(_live):
        if worker.pid == os.getpid():
            worker.close(timeout=worker.timeout + 1)
