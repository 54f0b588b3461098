"""Batch runs: many rows, bounded concurrency, results as they finish, resumable JSONL output.

Rows are pulled from their source only when a slot frees, so a batch of any size holds at most
`concurrency` rows in flight. Every result is appended to the output file and flushed the moment it
finishes; rerunning the same command skips rows already written (matched by line number and a hash
of the row), so an interrupted run resumes without redoing finished work.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .dsl.files import open_regular
from .jsonl import dump_line, read_objects
from .prediction import Prediction
from .progress import Progress


def row_key(row: dict[str, Any]) -> str:
    """A short content hash of a row: resume only skips a line if its content is unchanged."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


async def run_one(program, values: dict[str, Any], runtime) -> Prediction:
    """Run one prepared row the way its LMs need: inline, inline in a thread, or on asyncio."""
    if program.inline:
        if any(b.blocking for b in program._used_backends()):
            # The embedded model holds the CPU: run the row in a thread so the loop stays live.
            return await asyncio.to_thread(program.plan.run_inline, values, runtime)
        return program.plan.run_inline(values, runtime)
    return await program.plan.run_async(values, runtime)


async def drive(program, items: Iterator[tuple[Any, dict | Exception]], concurrency: int,
                on_result: Callable[[Any, dict | None, Prediction], None], progress: Progress | None = None) -> None:
    """Run rows from `items` with at most `concurrency` in flight, reporting each as it finishes.

    An item is `(key, row)`; a row that is an exception (unreadable input) is reported as failed.
    """
    runtime = program.runtime()

    async def one(item):
        key, row = item
        if isinstance(row, Exception):
            return key, None, Prediction(None, [], str(row))
        try:
            values = program.prepare(row)
        except ValueError as err:
            return key, row, Prediction(None, [], str(err))
        return key, row, await run_one(program, values, runtime)

    def done(result):
        key, row, pred = result
        on_result(key, row, pred)
        if progress is not None:
            progress.advance(pred.ok)

    await bounded(items, concurrency, one, done)


async def bounded(items, concurrency: int, work, on_done) -> None:
    """Await `work(item)` for every item with at most `concurrency` in flight, pulling items lazily,
    and hand each result to `on_done` as soon as it is ready."""
    pending: set[asyncio.Task] = set()
    source = iter(items)
    exhausted = False
    while True:
        while not exhausted and len(pending) < max(1, concurrency):
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                break
            pending.add(asyncio.ensure_future(work(item)))
        if not pending:
            break
        finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            on_done(task.result())


def run_rows(program, rows: list[dict[str, Any]], concurrency: int = 4, progress: bool = False) -> list[Prediction]:
    """Run a list of rows; return Predictions in input order (the engine of `Program.run_batch`)."""
    results: list[Prediction | None] = [None] * len(rows)
    bar = Progress(len(rows), program.stats, enabled=progress)

    def store(i, row, pred):
        results[i] = pred

    _run_loop(drive(program, iter(enumerate(rows)), concurrency, store, bar))
    bar.finish()
    return results  # type: ignore[return-value]


def _run_loop(coro):
    from .program import run_coroutine
    return run_coroutine(coro)


@dataclass
class BatchSummary:
    total: int = 0          # rows in the input file
    resumed: int = 0        # rows found finished in the output from an earlier run
    ran: int = 0
    failed: int = 0
    skipped: list[str] = field(default_factory=list)   # "file:line: reason" for unreadable rows
    line: str = ""


def read_rows(path: Path, skipped: list[str], shard: tuple[int, int] | None = None) -> Iterator[tuple[int, dict]]:
    """Rows of a JSONL file as (line number, object); bad lines go to `skipped` with their number."""
    return read_objects(path, skipped, (lambda n: in_shard(n, shard)) if shard else None)


def finished_rows(out_path: Path, retry_failed: bool) -> dict[int, str]:
    """Line → row key of results already in the output file; a torn last line is cut off."""
    done: dict[int, str] = {}
    if not out_path.exists():
        return done
    good_end = 0
    with open(out_path, "rb") as fh:
        offset = 0
        for raw in fh:
            offset += len(raw)
            if not raw.endswith(b"\n"):
                break
            try:
                rec = json.loads(raw)
                good_end = offset
            except ValueError:
                break
            if isinstance(rec, dict) and "line" in rec and (rec.get("ok") or not retry_failed):
                done[int(rec["line"])] = rec.get("key", "")
    if good_end != out_path.stat().st_size:
        with open(out_path, "r+b") as fh:          # a run killed mid-write leaves a partial line
            fh.truncate(good_end)
    return done


def in_shard(lineno: int, shard: tuple[int, int] | None) -> bool:
    """Whether input line `lineno` belongs to shard K of N (1-based): lines K, K+N, K+2N, ...

    >>> [n for n in range(1, 9) if in_shard(n, (3, 4))]
    [3, 7]
    """
    if shard is None:
        return True
    k, n = shard
    return (lineno - 1) % n == k - 1


def run_jsonl(program, in_path: Path, out_path: Path, concurrency: int = 4, progress: bool | None = None,
              retry_failed: bool = False, with_trace: bool = False, on_skip: Callable[[str], None] | None = None,
              shard: tuple[int, int] | None = None) -> BatchSummary:
    """Run every row of a JSONL file into a JSONL output file, resuming where an earlier run stopped.

    With `shard=(k, n)` only every n-th line starting at line k runs (machines split a batch; `merge_outputs`
    puts the parts back together and checks that every row is there once)."""
    summary = BatchSummary()
    done = finished_rows(out_path, retry_failed)
    if retry_failed and out_path.exists():
        _drop_failed(out_path)
    with open_regular(in_path) as fh:         # bytes: a line that is not UTF-8 is reported later, by number
        total = sum(1 for i, line in enumerate(fh, 1) if line.strip() and in_shard(i, shard))
    summary.total = total

    def todo():
        for lineno, row in read_rows(in_path, summary.skipped, shard):
            if done.get(lineno) == row_key(row):
                summary.resumed += 1
                bar.done += 1
                continue
            missing = [n for n, t, _ in program.inputs if n not in row and not t.optional]
            if missing:
                summary.skipped.append(f"{in_path}:{lineno}: missing input{'s' * (len(missing) > 1)} "
                                       + ", ".join(f"'{m}'" for m in missing))
                continue
            yield lineno, row

    bar = Progress(total, program.stats, enabled=progress)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    reported = [0]
    with open(out_path, "a", encoding="utf-8") as out:
        def write(lineno, row, pred: Prediction):
            rec = {"line": lineno, "key": row_key(row) if row is not None else "", "inputs": row}
            rec.update(pred.to_dict(trace=with_trace))
            rec["lm_calls"] = pred.lm_calls
            out.write(dump_line(rec))          # errors, raw replies and traces may echo a key
            out.flush()
            summary.ran += 1
            summary.failed += not pred.ok
            while reported[0] < len(summary.skipped) and on_skip is not None:
                on_skip(summary.skipped[reported[0]])
                reported[0] += 1

        try:
            _run_loop(drive(program, todo(), concurrency, write, bar))
        finally:
            out.flush()
            os.fsync(out.fileno())
            while reported[0] < len(summary.skipped) and on_skip is not None:
                on_skip(summary.skipped[reported[0]])
                reported[0] += 1
            summary.line = bar.finish()
    return summary


def _drop_failed(out_path: Path) -> None:
    """Remove failed records so that a --retry-failed run replaces them."""
    keep = []
    with open(out_path, encoding="utf-8") as fh:
        for line in fh:
            try:
                if json.loads(line).get("ok"):
                    keep.append(line)
            except ValueError:
                continue
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text("".join(keep), encoding="utf-8")
    os.replace(tmp, out_path)


@dataclass
class MergeResult:
    rows: int = 0
    missing: list[int] = field(default_factory=list)       # input lines no part answered
    duplicated: list[int] = field(default_factory=list)    # input lines answered by several parts
    stale: list[int] = field(default_factory=list)         # answered for a different row content
    failed: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.stale)


def merge_outputs(in_path: Path, parts: list[Path], out_path: Path) -> MergeResult:
    """Merge shard outputs into one file in input order, checking every input row appears exactly once.

    Rows the input file could not provide (bad JSON) are not expected in the parts. The merged file is
    written only when the check passes.
    """
    expected: dict[int, str] = {}
    for lineno, row in read_rows(in_path, []):
        expected[lineno] = row_key(row)
    seen: dict[int, dict] = {}
    result = MergeResult()
    for part in parts:
        with open(part, encoding="utf-8") as fh:
            for text in fh:
                try:
                    rec = json.loads(text)
                except ValueError:
                    continue              # a torn last line of a killed run: that row counts as missing
                line = rec.get("line")
                if not isinstance(line, int):
                    continue
                if line in seen:
                    result.duplicated.append(line)
                    continue
                seen[line] = rec
    for line, key in expected.items():
        if line not in seen:
            result.missing.append(line)
        elif seen[line].get("key") != key:
            result.stale.append(line)
    result.duplicated = sorted(set(result.duplicated))
    result.rows = sum(1 for line in expected if line in seen)
    result.failed = sum(1 for line in expected if line in seen and not seen[line].get("ok"))
    if result.ok:
        tmp = out_path.with_name(out_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            for line in sorted(expected):
                out.write(dump_line(seen[line]))
        os.replace(tmp, out_path)
    return result
