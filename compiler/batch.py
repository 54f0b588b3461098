"""Batch runs: many rows, bounded concurrency, results as they finish, resumable JSONL output.

Rows are pulled from their source only when a slot frees, so a batch of any size holds at most
`concurrency` rows in flight. Every result is appended to the output file and flushed the moment it
finishes; rerunning the same command skips rows already written (matched by line number and a hash
of the row), so an interrupted run resumes without redoing finished work.

An output file is only ever written by the run that owns it. Every record carries a `run` object
naming what produced it (the program's fingerprint, the pipeline, the input file, the LMs), and a
run refuses, before touching anything, an output that holds something else: another file (the
`.pipe` source, notes), or records of another program, pipeline, input file or LM. While a run
writes an output it holds an OS lock (`flock`) on `OUT.lock` beside it; a second run on the same
output refuses at once, naming the first. The kernel drops the lock when a run dies.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .aio import run_coroutine
from .dsl.files import open_regular
from .fingerprints import program_fingerprint
from .jsonl import dump_line, non_finite, read_objects
from .prediction import Prediction
from .progress import Progress
from .run import drive


class BatchRefused(Exception):
    """A batch that cannot run as asked; nothing was run, and no file was changed. `status` is the
    command line's exit status for it."""

    status = 2


class OutputRefused(BatchRefused):
    """The output path holds something this run must not write to (another file, another run's
    records), or another run is writing it."""


class MixedRuns(BatchRefused):
    """Parts to merge that different programs, pipelines or LMs wrote."""

    status = 1


class NoRows(BatchRefused):
    """The input file holds no rows at all."""

    status = 1


def row_key(row: dict[str, Any]) -> str:
    """A short content hash of a row: resume only skips a line if its content is unchanged."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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


# ---------------------------------------------------------------------- who wrote an output
def _relative(path: Path, folder: Path) -> str:
    """`path` as seen from `folder` (both resolved), with forward slashes."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(folder)).replace(os.sep, "/")


def run_identity(program, in_path: Path, out_path: Path) -> dict[str, Any]:
    """The `run` object every record of a batch output carries: what produced it.

    `program` (a fingerprint of the .pipe sources or the artifact), `pipeline` and `lm` (the models
    the modules run on, `--lm` included) change results; `inputs` is the input file as seen from the
    output's folder (rows themselves are matched by line and content key, so the file may grow or
    change row by row, and a project folder may move); `file` (the program file, likewise) is only
    shown. Resuming needs `program`, `pipeline`, `inputs` and `lm` to agree.
    """
    folder = Path(out_path).parent
    models = sorted({str(getattr(b, "model", type(b).__name__)) for b in program._used_backends()})
    return {"program": program_fingerprint(program), "pipeline": program.name,
            "file": _relative(getattr(program, "artifact_path", None) or program.path, folder),
            "inputs": _relative(in_path, folder), "lm": models}


IDENTITY = (("program", "program"), ("pipeline", "pipeline"), ("inputs", "input file"), ("lm", "LM"))


def _differences(theirs: dict, ours: dict) -> list[str]:
    def show(field, run):
        v = run.get(field)
        text = ", ".join(map(str, v)) if isinstance(v, list) else str(v)
        if field == "program" and run.get("file"):
            text += f" ({run['file']})"
        return text
    return [f"{label} {show(f, theirs)} there, {show(f, ours)} now" for f, label in IDENTITY
            if theirs.get(f) != ours.get(f)]


def _is_record(rec: Any) -> bool:
    return (isinstance(rec, dict) and type(rec.get("line")) is int and isinstance(rec.get("key"), str)
            and isinstance(rec.get("ok"), bool) and "inputs" in rec)


@dataclass
class Existing:
    """What an output file holds: its records' (key, ok) by input line (the last record of a line wins),
    where its last whole record ends, and its size (a torn last line lies between the two)."""

    records: dict[int, tuple[str, bool]] = field(default_factory=dict)
    end: int = 0
    size: int = 0
    failed: int = 0                                             # failed records (any, not only the last of a line)
    runs: dict[str, dict] = field(default_factory=dict)      # distinct `run` objects, by their JSON


_TORN = b'{"line": '        # how every record starts: a last line cut short by a kill begins so


def examine_output(out_path: Path, identity: dict | None = None) -> Existing:
    """Read an output file that a run is about to resume, changing nothing.

    Refuses (`OutputRefused`) a path that is not a regular file, a file holding anything but batch
    records (a last line cut short by a killed run excepted), and, given `identity`, records that
    another program, pipeline, input file or LM wrote. Records of pipec versions that wrote no `run`
    object are taken as this run's.
    """
    found = Existing()
    try:
        st = os.stat(out_path)
    except FileNotFoundError:
        return found
    if not stat.S_ISREG(st.st_mode):
        raise OutputRefused(f"{out_path} is not a regular file; batch output goes to a file it can resume from")
    found.size = st.st_size

    def foreign(n: int, why: str) -> OutputRefused:
        return OutputRefused(
            f"{out_path} holds something other than this command's batch output (line {n}: {why}); it was not "
            "changed. Choose another --output, or move that file away.")
    last = None                        # the `run` of the record before: most records repeat it
    with open_regular(out_path) as fh:
        offset = 0
        for n, raw in enumerate(fh, 1):
            offset += len(raw)
            if not raw.endswith(b"\n"):
                if raw.startswith(_TORN):          # a record cut short by a kill: redone
                    break
                raise foreign(n, "not a batch record")
            if not raw.strip():
                found.end = offset
                continue
            try:
                rec = json.loads(raw)
            except (ValueError, RecursionError):
                raise foreign(n, "not JSON" if n == 1 or not raw.startswith(_TORN) else "a damaged record") from None
            if not _is_record(rec):
                raise foreign(n, "not a batch record")
            run = rec.get("run")
            if run is not None and run != last:
                last = run
                if not isinstance(run, dict):
                    raise foreign(n, "a record whose 'run' is not an object")
                tag = json.dumps(run, sort_keys=True)
                if tag not in found.runs:
                    found.runs[tag] = run
                    if identity is not None:
                        diff = _differences(run, identity)
                        if diff:
                            raise OutputRefused(
                                f"{out_path} was written by another run (line {n}): " + "; ".join(diff) +
                                ". Resuming would mix the two in one file; it was not changed. Choose another "
                                "--output, or move that file away to start over.")
            found.records[rec["line"]] = (rec["key"], rec["ok"])
            found.failed += not rec["ok"]
            found.end = offset
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(out_path: Path, in_path: Path | None = None, program=None, others: Iterable[Path] = ()) -> None:
    """Refuse an output path that is the input file, one of the program's source files (its .pipe
    file and imports, or its artifact), or one of `others` (hard and symbolic links included)."""
    if not os.path.lexists(out_path):
        return
    protected: list[tuple[Path, str]] = []
    if in_path is not None:
        protected.append((Path(in_path), "the input file"))
    if program is not None:
        if getattr(program, "artifact_path", None):
            protected.append((Path(program.artifact_path), "the program's artifact"))
        else:
            protected.append((Path(program.path), "the program's .pipe file"))
            for shown in getattr(getattr(program, "loaded", None), "sources", {}) or {}:
                p = Path(shown)
                protected.append((p if p.is_absolute() else Path.cwd() / p, "a source file of the program"))
    protected += [(Path(p), "one of the files it reads") for p in others]
    for path, what in protected:
        if _same_file(out_path, path):
            raise OutputRefused(f"--output {out_path} is {what}; it was not changed. Choose another --output.")


class OutputLock:
    """An exclusive `flock` on `OUT.lock` beside an output, held while a run writes the output.

    A second run (another process, or another call in this one) refuses at once with `OutputRefused`,
    naming the holder. The kernel releases the lock when its holder exits, even by SIGKILL; the lock
    file is removed on release (a stale one left by a killed run is simply locked again).
    """

    def __init__(self, out_path: Path):
        self.out_path = Path(out_path)
        self.path = self.out_path.with_name(self.out_path.name + ".lock")
        self.fd: int | None = None

    def acquire(self) -> "OutputLock":
        try:
            import fcntl
        except ImportError:                # no flock on this platform: run unguarded
            return self
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise OutputRefused(f"cannot create the lock file {self.path}: {err.strerror or err}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputRefused(
                    f"{self.out_path} is being written by another pipec run ({holder}); two runs on one output "
                    "would answer rows twice. Wait for it to finish and run again to resume, or choose another "
                    "--output.") from None
            try:                           # still the file at the path (a finishing run removes it)?
                here, there = os.fstat(fd), os.stat(self.path)
                same = (here.st_ino, here.st_dev) == (there.st_ino, there.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                _describe_holder(fd)
                return self
            os.close(fd)
        raise OutputRefused(f"could not lock {self.path}: it keeps being replaced")

    def holder(self) -> str | None:
        """Who holds the lock now (without taking it or creating a lock file), or None."""
        try:
            import fcntl
            fd = os.open(self.path, os.O_RDONLY)
        except (ImportError, OSError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder(fd)
        finally:
            os.close(fd)                   # (closing also drops the shared lock just taken)
        return None

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)           # while still holding it: see the check in `acquire`
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(fd: int) -> None:
    import socket
    from .secrets import redact
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)) or "python"
    text = (f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {redact(command)[:300]}")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8", "backslashreplace"), 0)
    except OSError:
        pass


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process that is just starting"


# ---------------------------------------------------------------------- running a file of rows
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
              shard: tuple[int, int] | None = None,
              on_row: Callable[[int, dict, Prediction], None] | None = None) -> BatchSummary:
    """Run every row of a JSONL file into a JSONL output file, resuming where an earlier run stopped.

    With `shard=(k, n)` only every n-th line starting at line k runs (machines split a batch; `merge_outputs`
    puts the parts back together and checks that every row is there once). `on_row(line, inputs,
    prediction)` is called for each row run, once it is written (OpenTelemetry export hooks in there).

    Raises `BatchRefused` before anything is run or written: `NoRows` for an input file without rows,
    `OutputRefused` for an output that is not this run's to write (see `check_output_path`,
    `examine_output`, `OutputLock`).
    """
    in_path, out_path = Path(in_path), Path(out_path)
    summary = BatchSummary()
    lines = total = 0
    with open_regular(in_path) as fh:         # bytes: a line that is not UTF-8 is reported later, by number
        for i, line in enumerate(fh, 1):
            if (line[3:] if i == 1 and line.startswith(b"\xef\xbb\xbf") else line).strip():
                lines += 1
                total += in_shard(i, shard)
    if not lines:
        raise NoRows(f"{in_path}: no rows: the file is empty (a batch reads one JSON object per line)")
    summary.total = total
    check_output_path(out_path, in_path, program)
    identity = run_identity(program, in_path, out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(out_path):
        existing = examine_output(out_path, identity)        # refuses before anything is changed
        if existing.end != existing.size:
            with open(out_path, "r+b") as fh:                # a run killed mid-write leaves a partial line
                fh.truncate(existing.end)
        if retry_failed and existing.failed:
            _drop_failed(out_path)
        done = {line: key for line, (key, ok) in existing.records.items() if ok or not retry_failed}
        _run_into(program, in_path, out_path, identity, done, summary, concurrency, progress, with_trace,
                  on_skip, shard, on_row)
    return summary


def _run_into(program, in_path: Path, out_path: Path, identity: dict, done: dict[int, str], summary: BatchSummary,
              concurrency: int, progress, with_trace: bool, on_skip, shard, on_row=None) -> None:
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

    bar = Progress(summary.total, program.stats, enabled=progress)
    reported = [0]
    with open(out_path, "a", encoding="utf-8") as out:
        def write(lineno, row, pred: Prediction):
            bad = non_finite(pred.outputs()) if pred.ok else None
            if bad is not None:            # JSON has no NaN: the row fails rather than write one
                pred.error = f"output {bad} is not a finite number (NaN or infinity), which JSON cannot hold"
            rec = {"line": lineno, "key": row_key(row) if row is not None else "", "inputs": row}
            rec.update(pred.to_dict(trace=with_trace))
            rec["lm_calls"] = pred.lm_calls
            rec["run"] = identity
            out.write(dump_line(rec))          # errors, raw replies and traces may echo a key
            out.flush()
            summary.ran += 1
            summary.failed += not rec["ok"]
            if on_row is not None:
                on_row(lineno, row, pred)
            while reported[0] < len(summary.skipped) and on_skip is not None:
                on_skip(summary.skipped[reported[0]])
                reported[0] += 1

        try:
            run_coroutine(drive(program, todo(), concurrency, write, bar))
        finally:
            out.flush()
            os.fsync(out.fileno())
            while reported[0] < len(summary.skipped) and on_skip is not None:
                on_skip(summary.skipped[reported[0]])
                reported[0] += 1
            summary.line = bar.finish()


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
    tmp = out_path.with_name(out_path.name + ".tmp")
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

    Rows the input file could not provide (bad JSON) are not expected in the parts. For each input
    line, the record whose content key matches the row as it is now counts (a part resumed after a
    row changed also holds the record for its old content); no matching record is a stale row, two
    are a duplicate. The merged file is written only when the check passes.

    Raises `OutputRefused` (nothing read further, nothing written) when the output path is the input
    file or a part, holds something other than batch records, or is being written; when a part is
    still being written by a run; and when the parts were written by different programs, pipelines or
    LMs (their `run` objects).
    """
    in_path, out_path, parts = Path(in_path), Path(out_path), [Path(p) for p in parts]
    check_output_path(out_path, in_path, others=parts)
    examine_output(out_path)           # a file that is not batch output is not replaced
    for part in parts:                 # a shard still running: its part is not complete yet
        holder = OutputLock(part).holder()
        if holder is not None:
            raise OutputRefused(f"{part} is still being written by a pipec run ({holder}); merge once every "
                                "shard has finished. Nothing was written.")
    expected: dict[int, str] = {}
    for lineno, row in read_rows(in_path, []):
        expected[lineno] = row_key(row)
    found: dict[int, list[tuple[dict, Path]]] = {}
    producers: dict[str, tuple[dict, Path]] = {}
    result = MergeResult()
    for part in parts:
        with open(part, encoding="utf-8") as fh:
            for text in fh:
                try:
                    rec = json.loads(text)
                except ValueError:
                    continue              # a torn last line of a killed run: that row counts as missing
                if not isinstance(rec, dict):
                    continue
                line = rec.get("line")
                if type(line) is not int:
                    continue
                run = rec.get("run")
                if isinstance(run, dict):
                    what = {k: run.get(k) for k in ("program", "pipeline", "lm")}
                    producers.setdefault(json.dumps(what, sort_keys=True), (run, part))
                found.setdefault(line, []).append((rec, part))
    if len(producers) > 1:
        shown = "; ".join(f"{part}: program {run.get('program')} ({run.get('file')}), pipeline {run.get('pipeline')}, "
                          f"LM {', '.join(map(str, run.get('lm') or []))}" for run, part in producers.values())
        raise MixedRuns(f"the parts were written by different runs ({shown}); merging would mix them. "
                            f"Nothing was written.")
    chosen: dict[int, tuple[dict, Path]] = {}
    for line, key in expected.items():
        recs = found.get(line)
        if not recs:
            result.missing.append(line)
            continue
        matching = [(rec, part) for rec, part in recs if rec.get("key") == key]
        if not matching:
            result.stale.append(line)
        elif len(matching) > 1:
            result.duplicated.append(line)
        else:
            chosen[line] = matching[0]
    result.rows = sum(1 for line in expected if line in found)
    result.failed = sum(1 for rec, _ in chosen.values() if not rec.get("ok"))
    if result.ok:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with OutputLock(out_path):
            examine_output(out_path)
            tmp = out_path.with_name(out_path.name + ".tmp")
            inputs = _relative(in_path, out_path.parent)
            with open(tmp, "w", encoding="utf-8") as out:
                for line in sorted(chosen):
                    rec, part = chosen[line]
                    run = rec.get("run")
                    if isinstance(run, dict):      # the paths it names, as seen from the merged file
                        run = dict(run, inputs=inputs)
                        if isinstance(run.get("file"), str):
                            run["file"] = _relative(part.parent / run["file"], out_path.parent)
                        rec = dict(rec, run=run)
                    out.write(dump_line(rec))
            os.replace(tmp, out_path)
    return result
