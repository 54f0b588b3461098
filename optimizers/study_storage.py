"""Optuna studies shared by several processes or machines: storage with heartbeats, and a lock.

A worker that dies leaves its trial RUNNING; with heartbeats on, the next worker to claim a trial
marks it FAIL and re-queues the same configuration, so no trial is lost. Claiming is done under a
study-wide lock (a PostgreSQL advisory lock, or a file lock for SQLite) so that workers together
run exactly the study's trial budget, never more.

Opening a storage creates optuna's tables and stamps their alembic version when they are missing,
and optuna does that without a lock: workers started together on a fresh database would each try,
and all but one crash (`UNIQUE constraint failed: alembic_version.version_num`, "relation already
exists"). So the storage is opened under a lock on the database (an advisory lock on PostgreSQL, a
file lock beside a SQLite file): the first process creates the schema, the others find it made.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import threading
import time
import warnings
from pathlib import Path

HEARTBEAT_SECONDS = int(os.environ.get("PIPEC_HEARTBEAT", "10"))
SQLITE_BUSY_SECONDS = 60       # how long a SQLite write waits for another process's (instead of "database is locked")
OPEN_ATTEMPTS = 4              # opening a storage is retried when it fails on a table another process just made
_SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"pipec:optuna-schema").digest()[:8], "big", signed=True)
_local_locks: dict[str, threading.Lock] = {}


def make_storage(optuna, url: str | None):
    """An RDB storage with heartbeats for a URL (sqlite:///..., postgresql://...), or None (in memory)."""
    if url is None:
        return None
    callback_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    kwargs = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": 3 * HEARTBEAT_SECONDS}
    import sqlalchemy
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ValueError(f"cannot read the study storage URL '{url}': write sqlite:///FILE or "
                         "postgresql://USER@HOST/DATABASE") from None
    backend = parsed.get_backend_name()
    shown = parsed.render_as_string(hide_password=True)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if backend == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with schema_lock(url), warnings.catch_warnings():
                warnings.simplefilter("ignore")    # optuna marks heartbeats experimental; not the user's concern
                return _rdb(optuna, url, callback_cls, kwargs, engine_kwargs)
        except ImportError:
            raise ValueError(f"the study storage {shown} needs its database driver: "
                             "pip install 'pipec[postgres]'") from None
        except sqlalchemy.exc.DBAPIError as err:
            # Without a lock (another database, or a SQLite folder where no lock file can be made),
            # a process that lost the race to create the schema finds it made on the next attempt.
            if attempt + 1 == OPEN_ATTEMPTS:
                reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
                raise ValueError(f"cannot open the study storage {shown}: {reason}") from None
            time.sleep(0.2 * 2 ** attempt * (1 + random.random()))
    raise AssertionError("unreachable")


def _rdb(optuna, url, callback_cls, kwargs, engine_kwargs):
    callback = callback_cls(max_retry=3)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=dict(engine_kwargs),
                                          heartbeat_stale_trial_callback=callback, **kwargs)
    except TypeError:       # optuna before 4.9 names the callback differently
        return optuna.storages.RDBStorage(url, engine_kwargs=dict(engine_kwargs),
                                          failed_trial_callback=callback, **kwargs)


@contextlib.contextmanager
def schema_lock(url: str):
    """Hold a lock on the database at `url` while optuna creates (or finds) its tables: a PostgreSQL
    advisory lock on a connection of its own, or a file lock beside a SQLite file (`x.db.schema.lock`).
    Other databases, and a SQLite file beside which no lock file can be made, go without."""
    import sqlalchemy
    parsed = sqlalchemy.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK})
        finally:
            engine.dispose()
        return
    database = parsed.database if backend == "sqlite" else None
    fh = None
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        try:
            fh = open(path.with_name(path.name + ".schema.lock"), "a+")
        except OSError:
            fh = None
    if fh is None:
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
