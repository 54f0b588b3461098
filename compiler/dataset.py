"""Datasets for compile and eval: JSONL or CSV rows, checked against a pipeline, split by seed."""
from __future__ import annotations

import csv
import io
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dsl.files import open_regular
from .jsonl import read_objects


class DatasetError(Exception):
    """Rows that cannot be used; `problems` lists every one as `file:line: reason`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        super().__init__("\n".join(shown))


@dataclass(slots=True)
class Example:
    """One labeled row and where it came from (for error messages and eval tables)."""

    values: dict[str, Any]
    where: str


def read_examples(path: str | Path, problems: list[str] | None = None) -> list[Example]:
    """Read a .jsonl or .csv file; raise DatasetError naming every bad line.

    With a `problems` list, bad lines are appended to it and the readable rows are returned, so a
    caller can report syntax and content problems together.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "d.jsonl"); _ = open(p, "w").write('{"q": "a"}\\n\\n{"q": "b"}\\n')
    >>> [e.where.rsplit(":", 1)[1] for e in read_examples(p)]
    ['1', '3']
    """
    path = Path(path)
    try:
        with open_regular(path) as fh:                  # a dataset path may name a FIFO or /proc/self/environ
            text = fh.read().decode("utf-8-sig")        # tolerate the BOM that spreadsheet tools write
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError([f"{path}: cannot read: {getattr(err, 'strerror', None) or err}"]) from None
    collect = problems is not None
    problems = problems if problems is not None else []
    rows: list[Example] = []
    if path.suffix.lower() == ".csv":
        csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))    # long documents in a cell are data, not errors
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = reader.fieldnames
        except csv.Error as err:
            raise DatasetError([f"{path}:1: {err}"]) from None
        if not header:
            raise DatasetError([f"{path}:1: no header row"])
        columns: dict[str, int] = {}
        for i, name in enumerate(header, 1):
            if name in columns:        # DictReader would silently keep the last column's values
                raise DatasetError([f"{path}:1: column {name!r} appears twice in the header (columns "
                                    f"{columns[name]} and {i}); which one holds the data?"])
            columns[name] = i
        rows_iter = iter(reader)
        while True:
            try:
                row = next(rows_iter)
            except StopIteration:
                break
            except csv.Error as err:            # a cell over the field size limit, a stray NUL
                problems.append(f"{path}:{reader.line_num}: {err}")
                continue
            line = reader.line_num
            if None in row:
                problems.append(f"{path}:{line}: more values than header columns")
                continue
            if any(v is None for v in row.values()):
                problems.append(f"{path}:{line}: fewer values than header columns")
                continue
            rows.append(Example(dict(row), f"{path}:{line}"))
    else:
        rows += [Example(value, f"{path}:{lineno}") for lineno, value in read_objects(path, problems)]
    if not rows and not problems:
        problems.append(f"{path}: no rows")
    if problems and not collect:
        raise DatasetError(problems)
    return rows


def load_examples(path: str | Path, program, label_fields: list[str]) -> list[Example]:
    """Read and check a dataset in one go: every unreadable line and every bad row, reported together."""
    return examples_from(path, None, program, label_fields)[0]


def examples_from(data, base: Path | None, program, label_fields: list[str]) -> tuple[list[Example], Any]:
    """Checked examples from a path (relative to `base`) or a list of dicts, and what identifies them
    in a compile's fingerprint. Unreadable lines and rows with bad inputs or missing labels are
    reported together."""
    problems: list[str] = []
    if isinstance(data, (str, Path)):
        p = Path(data)
        if base is not None and not p.is_absolute():
            p = base / p              # relative to the .pipe file, as the checker's hint says
        examples = read_examples(p, problems)
    else:
        examples = [Example(dict(r), f"row {i + 1}") for i, r in enumerate(data)]
    ident = [e.values for e in examples]
    try:
        examples = check_examples(examples, program, label_fields)
    except DatasetError as err:
        problems += err.problems
    if problems:
        raise DatasetError(problems)
    return examples, ident


def check_examples(examples: list[Example], program, label_fields: list[str]) -> list[Example]:
    """Coerce inputs to the pipeline's types and require the fields the metric scores.

    Returns the examples with coerced input values (labels kept as they are); raises DatasetError
    listing every problem at once.
    """
    from .run import row_problems
    from .reply_parser import lone_surrogate
    problems: list[str] = []
    out: list[Example] = []
    inputs = {n for n, _, _ in program.inputs}
    for ex in examples:
        bad = row_problems(program, ex.values)
        bad += [f"field {k!r}: text with {found} is not valid Unicode" for k, v in ex.values.items()
                if k not in inputs and (found := lone_surrogate(v))]
        if bad:
            problems.append(f"{ex.where}: " + "; ".join(bad))
            continue
        try:
            coerced = program.prepare(ex.values)
        except (ValueError, OverflowError) as err:
            problems.append(f"{ex.where}: {err}")
            continue
        missing = [f for f in label_fields if f not in ex.values]
        if missing:
            problems.append(f"{ex.where}: missing label{'s' * (len(missing) > 1)} " + ", ".join(f"'{m}'" for m in missing)
                            + " that the metric scores")
            continue
        out.append(Example({**ex.values, **coerced}, ex.where))
    if problems:
        raise DatasetError(problems)
    return out


def split(examples: list[Example], seed: int, val_fraction: float = 0.4) -> tuple[list[Example], list[Example]]:
    """A seeded train/val split (at least one row on each side when there are two or more).

    >>> tr, va = split([Example({"i": i}, str(i)) for i in range(10)], seed=1)
    >>> len(tr), len(va)
    (6, 4)
    """
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(examples) * val_fraction)) if len(examples) > 1 else 0
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [examples[i] for i in train], [examples[i] for i in val]
