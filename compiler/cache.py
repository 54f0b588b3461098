"""The LM cache: content-addressed replies on diskcache, with an in-process front.

The key is sha256 over the cache format version, the model id, the messages, the reply schema and the
sampling parameters. Keys and the API keys that authenticate a call never meet: backends read keys
from the environment at call time, and requests never carry them (only their digest is stored). A
reply that holds a secret's value (an LM echoing a key it was shown) is kept in memory for this run
but never written to disk: stored redacted, a replay would differ from the reply it stands for, and
a cache directory is the kind of file that gets copied around. Values are JSON text; anything that
does not read back as a reply is a miss, so a corrupt entry costs one LM call, never a crash. The
disk is reached through one I/O thread (`cache_io.py`), so a locked or slow disk never stalls a run.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

from .cache_io import DELETED, FAILED, DiskWorker
from .lm.base import LMReply, LMRequest
from .secrets import contains_secret

FORMAT = 2


def default_cache_dir() -> Path:
    """`$PIPEC_CACHE_DIR`, else `$XDG_CACHE_HOME/pipec`, else `~/.cache/pipec`."""
    env = os.environ.get("PIPEC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pipec"


def cache_key(model: str, request: LMRequest) -> str:
    """The content address of a request.

    >>> cache_key("m", LMRequest([{"role": "user", "content": "hi"}])) == cache_key("m", LMRequest([{"role": "user", "content": "hi"}]))
    True
    """
    if request.prefix_key:
        # The fixed prompt (system message, demos, schema) was digested once by its predictor.
        parts = [FORMAT, model, request.prefix_key, request.messages[request.prefix_len:],
                 request.schema is not None, request.params]
    else:
        parts = [FORMAT, model, request.messages, request.schema, request.params]
    if request.sample:
        parts.append(request.sample)      # n samples of one prompt are n different cache entries
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def prefix_digest(messages: list[dict[str, str]], schema: dict | None) -> str:
    """The digest of a fixed prompt prefix and reply schema (see `LMRequest.prefix_key`)."""
    blob = json.dumps([messages, schema], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class LMCache:
    """Replies by content address; safe under threads and processes (sqlite underneath).

    Memory first, then the disk through one I/O thread (`cache_io.DiskWorker`): `put` never waits
    for the disk, and `get` waits at most `timeout` seconds (a slower disk is a miss).

    >>> import tempfile
    >>> c = LMCache(tempfile.mkdtemp()); c.put("k", LMReply("hi")); c.get("k").text
    'hi'
    >>> c.close()
    """

    def __init__(self, directory: str | Path | None = None, memory_items: int = 4096, timeout: float = 2.0):
        self.directory = Path(directory) if directory else default_cache_dir() / "lm"
        self.timeout = timeout
        self._mem: OrderedDict[str, LMReply] = OrderedDict()
        self._mem_items = memory_items
        self._worker: DiskWorker | None = None

    def _disk(self) -> DiskWorker:
        w = self._worker
        if w is None or w.pid != os.getpid():          # first use, or a child after fork()
            w = self._worker = _shared_worker(self.directory, self.timeout)   # locked and idempotent
        return w

    def get(self, key: str) -> LMReply | None:
        """The cached reply for `key`, or None (absent, damaged, or the disk did not answer in time)."""
        hit = self._mem.get(key)
        if hit is not None:                  # the hot path of a repeated call: one dict lookup
            return hit
        known, reply, disk = self._in_process(key)
        return reply if known else self._accept(key, disk.read(key))

    async def aget(self, key: str) -> LMReply | None:
        """`get` for the event loop: waiting for the disk does not block other rows."""
        known, reply, disk = self._in_process(key)
        return reply if known else self._accept(key, await disk.aread(key))

    def _in_process(self, key: str) -> tuple[bool, LMReply | None, DiskWorker | None]:
        """What memory and the write queue know of `key`: (known, reply, the disk to ask otherwise)."""
        hit = self._mem.get(key)
        if hit is not None:
            return True, hit, None
        disk = self._disk()
        queued = disk.queued(key)
        if queued is not None:
            return True, (None if queued is DELETED else queued), None
        return False, None, disk

    def _accept(self, key: str, raw) -> LMReply | None:
        if raw is None or raw is FAILED:
            return None
        try:
            d = json.loads(raw)
            if d.get("v") != FORMAT or not isinstance(d.get("text"), str):
                raise ValueError("stale or malformed entry")
            if d.get("sum") != _checksum(key, d["text"]):
                raise ValueError("damaged entry")         # sqlite does not checksum its pages; we do
            reply = LMReply(d["text"], int(d.get("pt", 0)), int(d.get("ct", 0)), float(d.get("cost", 0.0)),
                            bool(d.get("tr", False)))
        except Exception:
            self._disk().write(key, DELETED)
            return None
        self._remember(key, reply)
        return reply

    def put(self, key: str, reply: LMReply) -> None:
        """Remember a reply; it is stored on disk in the background (see `flush`), unless it holds a
        secret's value or text that cannot be encoded (then this process alone remembers it)."""
        self._remember(key, reply)
        if not contains_secret(reply.text) and _encodable(reply.text):
            self._disk().write(key, reply)

    def _remember(self, key: str, reply: LMReply) -> None:
        mem = self._mem
        mem[key] = reply
        if len(mem) > self._mem_items:
            mem.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget an entry (in memory and on disk)."""
        self._mem.pop(key, None)
        self._disk().write(key, DELETED)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every reply put so far is on disk; False if `timeout` (default 2 × the lock
        timeout) ran out first, e.g. because another process holds the database."""
        w = self._worker
        return True if w is None or w.pid != os.getpid() else w.flush(timeout)

    def close(self) -> None:
        """Store what is queued, then release the database (the object can still be used after).

        The disk worker is shared by every cache on this directory in this process: their queued
        replies are stored too, and they reopen the database on their next use."""
        w = self._worker
        if w is not None and w.pid == os.getpid():
            w.close()
        self._worker = None


_workers: "weakref.WeakValueDictionary[tuple, DiskWorker]" = weakref.WeakValueDictionary()
_workers_lock = threading.Lock()


def _shared_worker(directory: Path, timeout: float) -> DiskWorker:
    """This process's one disk worker for `directory`: caches opened on the same directory (two
    programs, a notebook cell run twice) see each other's queued replies, and share one connection.

    >>> import tempfile
    >>> d = tempfile.mkdtemp(); _shared_worker(Path(d), 2.0) is _shared_worker(Path(d) / ".", 2.0)
    True
    """
    key = (os.path.realpath(directory), timeout)
    with _workers_lock:
        w = _workers.get(key)
        if w is None:
            w = _workers[key] = DiskWorker(directory, _encode, timeout)
        return w


def _forget_workers_after_fork() -> None:
    # A child gets workers of its own; the lock may have been held by another thread of the parent
    # at the moment of the fork, so the child starts a fresh one.
    global _workers_lock
    _workers_lock = threading.Lock()
    _workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)


def _encode(key: str, reply: LMReply) -> str:
    return json.dumps({"v": FORMAT, "text": reply.text, "pt": reply.prompt_tokens, "ct": reply.completion_tokens,
                       "cost": reply.cost, "tr": reply.truncated, "sum": _checksum(key, reply.text)},
                      ensure_ascii=False)


def _encodable(text: str) -> bool:
    """Whether `text` can be stored (no lone surrogate): one that cannot would fail the whole batch
    of writes it is stored with. (`NodeContext` already replaces them in replies it receives.)"""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _checksum(key: str, text: str) -> str:
    """A digest tying a stored reply to its key, so a flipped byte on disk reads as a miss."""
    return hashlib.sha256(f"{key}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
