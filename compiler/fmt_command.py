"""`pipec fmt`: write .pipe files in the canonical layout (`pipec.dsl.format`).

In place by default (a file is replaced atomically, and only if its layout changes), `--check` for
CI (nothing written; exit 1 and a unified diff when a file would change), `--diff` (the diff,
nothing written), `-` or no file: stdin to stdout. A file that does not parse is left as it is and
gets every syntax error, as `pipec check` prints them; the other files are still formatted.
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def run_fmt(files: list[str], check: bool = False, diff: bool = False) -> int:
    """Format `files` (or stdin for `-` / none); the exit status of `pipec fmt`.

    `pipec fmt examples/*.pipe`, `pipec fmt --check .`, `cat x.pipe | pipec fmt -`"""
    from .dsl.files import SourceError, read_source
    from .dsl.format import FormatError, format_source
    status = EXIT_OK
    changed = 0
    for name in files or ["-"]:
        try:
            source = sys.stdin.read() if name == "-" else read_source(name)
        except (OSError, UnicodeDecodeError, SourceError) as err:
            print(f"pipec fmt: error: cannot read {name}: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
            continue
        shown = "<stdin>" if name == "-" else name
        try:
            formatted = format_source(source, shown)
        except FormatError as err:
            print(str(err), file=sys.stderr)
            print(f"pipec fmt: {shown} does not parse; left as it is", file=sys.stderr)
            status = max(status, EXIT_FAIL)
            continue
        if name == "-" and not (check or diff):
            sys.stdout.write(formatted)
            continue
        if formatted == source:
            continue
        changed += 1
        if check or diff:
            sys.stdout.writelines(difflib.unified_diff(source.splitlines(True), formatted.splitlines(True),
                                                       f"{shown} (as written)", f"{shown} (formatted)"))
            if check:
                status = max(status, EXIT_FAIL)
            continue
        _replace(Path(name), formatted)
        print(f"reformatted {name}", file=sys.stderr)
    if check and changed:
        print(f"pipec fmt: {changed} file{'s' * (changed != 1)} would be reformatted", file=sys.stderr)
    return status


def _replace(path: Path, text: str) -> None:
    """Write `text` over `path` atomically, keeping its permissions (a crash leaves the old file)."""
    from .output_file import write_output
    write_output(path, text, replace=True, mode=path.stat().st_mode & 0o7777)
