"""JSON Lines files: reading one object per line (every bad line reported by its number), and
writing lines with secrets masked.

Reading is strict where Python's `json` is lenient and other readers disagree: `NaN`, `Infinity` and
`-Infinity` (not JSON) and an object holding the same key twice (which value wins depends on the
reader) make the line a reported bad line. Writing always gives standard JSON in valid UTF-8: a
number JSON cannot hold (NaN, infinity) is written as null, and a line whose text holds a lone UTF-16
surrogate (half of a cut emoji pair) is written with `\\uXXXX` escapes instead of dying on encoding.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator

from .dsl.files import open_regular
from .secrets import redact, redact_data


class JSONRefused(ValueError):
    """Valid for Python's `json`, refused here: not standard JSON, or ambiguous (a key twice)."""


def _constant(name: str):
    raise JSONRefused(f"{name} is not a JSON value (standard JSON has no NaN or Infinity)")


def _object(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise JSONRefused(f"duplicate key {_show(k)} in one object (readers disagree on which value "
                                  "counts)")
            seen.add(k)
    return obj


def _show(text: str, limit: int = 40) -> str:
    """A quoted, ASCII-safe excerpt of `text` for messages (a lone surrogate must not reach a terminal)."""
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return "'" + shown.encode("utf-8", "backslashreplace").decode("utf-8").replace("'", "\\'") + "'"


def loads_strict(text: str | bytes) -> Any:
    """`json.loads`, refusing NaN/Infinity and duplicate keys with `JSONRefused` (a ValueError).

    >>> loads_strict('{"a": 1}')
    {'a': 1}
    >>> loads_strict('{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    pipec.jsonl.JSONRefused: duplicate key 'a' in one object (readers disagree on which value counts)
    """
    return json.loads(text, parse_constant=_constant, object_pairs_hook=_object)


def dumps(value: Any) -> str:
    """Standard JSON text of `value` (no newline, secrets not masked): NaN and infinities become null,
    and lone surrogates are escaped, so the text always encodes as UTF-8 and every JSON reader
    accepts it.

    >>> dumps({"x": float("nan"), "t": "é\\ud83d"})
    '{"x": null, "t": "\\\\u00e9\\\\ud83d"}'
    """
    try:
        line = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:                              # NaN or an infinity somewhere
        value = finite(value)
        line = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:                  # a lone surrogate: escape this line, keep the text
            line = json.dumps(value, ensure_ascii=True, default=str, allow_nan=False)
    return line


def finite(value: Any) -> Any:
    """`value` with every NaN and infinity (which JSON cannot hold) replaced by None.

    >>> finite({"a": [1.5, float("inf")], "b": float("nan")})
    {'a': [1.5, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def non_finite(value: Any, where: str = "") -> str | None:
    """Where in `value` a NaN or infinity is (`"x[1].y"`), or None.

    >>> non_finite({"x": [1.0, {"y": float("nan")}]}), non_finite({"x": 1})
    ('x[1].y', None)
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else (where or "the value")
    if isinstance(value, dict):
        pairs = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        pairs = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for at, v in pairs:
        found = non_finite(v, at)
        if found is not None:
            return found
    return None


def dump_line(value: Any) -> str:
    """`value` as one JSON line (newline included) with every secret in it masked (`pipec.secrets`),
    always standard JSON in valid UTF-8 (see `dumps`).

    >>> dump_line({"error": "HTTP 401: bad key sk-abcdefghijklmnop", "ok": False})
    '{"error": "HTTP 401: bad key ***", "ok": false}\\n'
    """
    line = dumps(value)
    clean = redact(line)
    if clean is not line:
        try:
            json.loads(clean)
        except ValueError:
            # A mask that cut through an escape (a secret holding a quote or a backslash): mask the
            # strings one by one instead, which always leaves valid JSON.
            clean = dumps(redact_data(json.loads(line)))
    return clean + "\n"


def read_objects(path: Path, problems: list[str], keep: Callable[[int], bool] | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each JSON object line, streamed; bad lines go to `problems` as
    `file:line: reason`; blank lines and lines `keep` rejects are skipped. A UTF-8 BOM is tolerated;
    NaN, Infinity and a key twice in one object make a bad line (see `loads_strict`).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "r.jsonl"); _ = open(p, "w").write('{"a": 1}\\n[2]\\n')
    >>> problems = []; list(read_objects(Path(p), problems)), problems[0].endswith(":2: expected a JSON object, got list")
    ([(1, {'a': 1})], True)
    """
    with open_regular(path) as fh:       # never a FIFO, a device or /proc
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip() or (keep is not None and not keep(lineno)):
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(f"{path}:{lineno}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1})")
                continue
            try:
                value = loads_strict(text)
            except JSONRefused as err:
                problems.append(f"{path}:{lineno}: {err}")
                continue
            except ValueError as err:
                problems.append(f"{path}:{lineno}: invalid JSON: {err}")
                continue
            except RecursionError:
                problems.append(f"{path}:{lineno}: JSON nested too deeply to read")
                continue
            if not isinstance(value, dict):
                problems.append(f"{path}:{lineno}: expected a JSON object, got {type(value).__name__}")
                continue
            yield lineno, value
