"""The LM cache: content-addressed replies on diskcache, with an in-process front.

The key is sha256 over the cache format version, the model id, the messages, the reply schema and the
sampling parameters. Keys and the API keys that authenticate a call never meet: backends read keys
from the environment at call time, and requests never carry them. Values are JSON text; anything that
does not read back as a reply is a miss, so a corrupt entry costs one LM call, never a crash.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from .lm.base import LMReply, LMRequest

FORMAT = 2
log = logging.getLogger("pipec.cache")


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
    return hashlib.sha256(blob.encode()).hexdigest()


def prefix_digest(messages: list[dict[str, str]], schema: dict | None) -> str:
    """The digest of a fixed prompt prefix and reply schema (see `LMRequest.prefix_key`)."""
    blob = json.dumps([messages, schema], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class LMCache:
    """Replies by content address; safe under threads and processes (sqlite underneath)."""

    def __init__(self, directory: str | Path | None = None, memory_items: int = 4096):
        self.directory = Path(directory) if directory else default_cache_dir() / "lm"
        self._disk = None
        self._open_lock = threading.Lock()
        self._mem: OrderedDict[str, LMReply] = OrderedDict()
        self._mem_items = memory_items
        self._warned = False

    def _store(self):
        if self._disk is None:
            with self._open_lock:
                if self._disk is None:
                    import diskcache
                    self.directory.mkdir(parents=True, exist_ok=True)
                    # A short timeout: a locked database is a miss, never a hang.
                    self._disk = diskcache.Cache(str(self.directory), timeout=2,
                                                 eviction_policy="least-recently-stored")
        return self._disk

    def get(self, key: str) -> LMReply | None:
        hit = self._mem.get(key)
        if hit is not None:
            return hit
        try:
            raw = self._store().get(key)
        except Exception as err:             # locked, unreadable, or corrupt database
            self._warn(f"cache read failed ({type(err).__name__}: {err}); treating as a miss")
            return None
        if raw is None:
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
            self._discard(key)
            return None
        self._remember(key, reply)
        return reply

    def put(self, key: str, reply: LMReply) -> None:
        self._remember(key, reply)
        value = json.dumps({"v": FORMAT, "text": reply.text, "pt": reply.prompt_tokens,
                            "ct": reply.completion_tokens, "cost": reply.cost,
                            "tr": reply.truncated, "sum": _checksum(key, reply.text)}, ensure_ascii=False)
        try:
            self._store().set(key, value)
        except Exception as err:             # disk full, read-only, locked: keep running uncached
            self._warn(f"cache write failed ({type(err).__name__}: {err}); continuing without caching")

    def _remember(self, key: str, reply: LMReply) -> None:
        mem = self._mem
        mem[key] = reply
        if len(mem) > self._mem_items:
            mem.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget an entry (in memory and on disk)."""
        self._mem.pop(key, None)
        self._discard(key)

    def _discard(self, key: str) -> None:
        try:
            self._store().delete(key)
        except Exception:
            pass

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(message)

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None


def _checksum(key: str, text: str) -> str:
    """A digest tying a stored reply to its key, so a flipped byte on disk reads as a miss."""
    return hashlib.sha256(f"{key}\0{text}".encode()).hexdigest()[:16]
