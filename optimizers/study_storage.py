"""Optuna studies shared by several processes or machines: storage with heartbeats, and a lock.

A worker that dies leaves its trial RUNNING; with heartbeats on, the next worker to claim a trial
marks it FAIL and re-queues the same configuration, so no trial is lost. Claiming is done under a
study-wide lock (a PostgreSQL advisory lock, or a file lock for SQLite) so that workers together
run exactly the study's trial budget, never more.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import warnings
from pathlib import Path

HEARTBEAT_SECONDS = int(os.environ.get("PIPEC_HEARTBEAT", "10"))
_local_locks: dict[str, threading.Lock] = {}


def make_storage(optuna, url: str | None):
    """An RDB storage with heartbeats for a URL (sqlite:///..., postgresql://...), or None (in memory)."""
    if url is None:
        return None
    callback_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    kwargs = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": 3 * HEARTBEAT_SECONDS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # optuna marks heartbeats experimental; that is not the user's concern
        return _rdb(optuna, url, callback_cls, kwargs)


def _rdb(optuna, url, callback_cls, kwargs):
    callback = callback_cls(max_retry=3)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                                          heartbeat_stale_trial_callback=callback, **kwargs)
    except TypeError:       # optuna before 4.9 names the callback differently
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                                          failed_trial_callback=callback, **kwargs)


@contextlib.contextmanager
def study_lock(study, url: str | None):
    """Hold a lock shared by every process using this study."""
    name = study.study_name
    if url is None:
        lock = _local_locks.setdefault(name, threading.Lock())
        with lock:
            yield
        return
    if url.startswith("postgresql"):
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        storage = study._storage
        engine = getattr(storage, "_backend", storage).engine     # optuna wraps RDB storage in a cache
        with engine.connect() as conn:
            import sqlalchemy
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    path = Path(url.split(":///", 1)[-1] if url.startswith("sqlite") else f"/tmp/pipec-study-{abs(hash(url))}")
    lock_path = path.with_name(path.name + f".{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock")
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def heartbeat(optuna, study, trial):
    """A context manager that keeps `trial` alive in the storage while it runs (no-op in memory)."""
    from optuna.storages._heartbeat import get_heartbeat_thread
    return get_heartbeat_thread(trial._trial_id, study._storage)


def fail_stale(optuna, study) -> None:
    """Mark trials of dead workers FAIL (and re-queue them, via the storage's callback)."""
    fn = getattr(optuna.storages, "fail_stale_trials", None)
    if fn is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(study)
