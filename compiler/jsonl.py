"""JSON Lines files: reading one object per line (every bad line reported by its number), and
writing lines with secrets masked."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from .dsl.files import open_regular
from .secrets import redact, redact_data


def dump_line(value: Any) -> str:
    """`value` as one JSON line (newline included) with every secret in it masked (`pipec.secrets`).

    >>> dump_line({"error": "HTTP 401: bad key sk-abcdefghijklmnop", "ok": False})
    '{"error": "HTTP 401: bad key ***", "ok": false}\\n'
    """
    import json
    line = json.dumps(value, ensure_ascii=False, default=str)
    clean = redact(line)
    if clean is not line:
        try:
            json.loads(clean)
        except ValueError:
            # A mask that cut through an escape (a secret holding a quote or a backslash): mask the
            # strings one by one instead, which always leaves valid JSON.
            clean = json.dumps(redact_data(json.loads(line)), ensure_ascii=False)
    return clean + "\n"


def read_objects(path: Path, problems: list[str], keep: Callable[[int], bool] | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each JSON object line, streamed; bad lines go to `problems` as
    `file:line: reason`; blank lines and lines `keep` rejects are skipped. A UTF-8 BOM is tolerated.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "r.jsonl"); _ = open(p, "w").write('{"a": 1}\\n[2]\\n')
    >>> problems = []; list(read_objects(Path(p), problems)), problems[0].endswith(":2: expected a JSON object, got list")
    ([(1, {'a': 1})], True)
    """
    import json
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
                value = json.loads(text)
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
