"""Writing an output file in full or not at all: a temporary file beside it, then a rename (or a hard
link, which refuses a file that appeared meanwhile). Used by every command that writes a text file
whole: `pipec export`, `pipec fmt`, `compile --emit pipe`."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_output(path: str | Path, text: str, replace: bool = False, mode: int | None = None) -> Path:
    """Write `text` to `path` in full or not at all (a temporary file beside it, then a rename). An
    existing file is kept (FileExistsError), even one that appears while writing, unless `replace`.
    `mode`: the new file's permissions (default: 0o666 less the umask, as for any new file).

    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "p.txt"
    >>> _ = write_output(out, "one"); write_output(out, "two")
    Traceback (most recent call last):
    FileExistsError: ...p.txt exists
    >>> _ = write_output(out, "two", replace=True); out.read_text()
    'two'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)      # the umask applies, as for any file
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)                  # fails if the file exists, whoever made it
            except FileExistsError:
                raise FileExistsError(f"{path} exists") from None
            except OSError:                         # no hard links here: exclusive creation instead
                with open(path, "x", encoding="utf-8", newline="") as fh:
                    fh.write(text)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
