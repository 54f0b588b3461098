"""Reading the files a program names (the main .pipe file, its imports, compiled artifacts), safely.

A `.pipe` file may come from someone else, and its `import` lines name any path. Only regular files
are read: a FIFO would hang the reader, `/dev/zero` would fill memory, and `/proc/self/environ`
(which stats as an empty regular file) would put every API key into a syntax-error excerpt. So a
path under the kernel's pseudo-filesystems (`/proc`, `/sys`, `/dev`) is refused before it is
opened, the file is opened without blocking and checked with `fstat` on the open descriptor (no
race with a swapped path), and at most `limit + 1` bytes are ever read.

`MAX_SOURCE_BYTES` (1 MiB) bounds a `.pipe` source: the largest example is under 5 KB, so the cap
only ever stops something that is not a hand-written program.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_SOURCE_BYTES = 1 << 20
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
_PSEUDO_WHY = {"/proc": "/proc is a kernel pseudo-filesystem", "/sys": "/sys is a kernel pseudo-filesystem",
               "/dev": "/dev holds devices"}
_CHUNK = 1 << 16


class SourceError(OSError, ValueError):
    """A file pipec will not read: not a regular file, too large, binary, or not UTF-8.

    `strerror` is the reason in words; `str()` is the whole sentence.

    >>> str(SourceError(errno.EFBIG, "larger than 1 MiB", "big.pipe"))
    'cannot read big.pipe: larger than 1 MiB'
    """

    def __str__(self) -> str:
        return f"cannot read {self.filename}: {self.strerror}" if self.filename is not None else str(self.strerror)


def open_regular(path: str | Path):
    """Open `path` for reading in binary mode if it is a regular file outside the pseudo-filesystems.

    Raises `SourceError` (refused) or `OSError` (missing, no permission). Opening never blocks.

    >>> import tempfile
    >>> with open_regular(tempfile.NamedTemporaryFile(delete=False).name) as fh: fh.read()
    b''
    >>> open_regular("/proc/self/environ")
    Traceback (most recent call last):
    ...
    pipec.dsl.files.SourceError: cannot read /proc/self/environ: not a regular file (/proc is a kernel pseudo-filesystem)
    """
    path = os.fspath(path)
    refused = _pseudo_root(os.path.realpath(path))
    if refused:
        raise SourceError(errno.EPERM, f"not a regular file ({_PSEUDO_WHY[refused]})", path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)            # O_NONBLOCK: a FIFO opens at once instead of waiting for a writer
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL,
                              f"not a regular file ({_kind(st.st_mode)})", path)
        root = _pseudo_device(st.st_dev)
        if root:                         # a bind mount of /proc under another name
            raise SourceError(errno.EPERM, f"not a regular file ({_PSEUDO_WHY[root]})", path)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, refusing (`SourceError`) one over `limit` bytes.

    Never reads more than `limit + 1` bytes, whatever the file claims its size is.

    >>> import tempfile
    >>> p = tempfile.NamedTemporaryFile(delete=False).name; _ = open(p, "wb").write(b"x" * 10)
    >>> read_regular(p, 10)
    b'xxxxxxxxxx'
    >>> read_regular(p, 9)
    Traceback (most recent call last):
    ...
    pipec.dsl.files.SourceError: cannot read ...: larger than the 9 B limit (10 bytes)
    """
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise SourceError(errno.EFBIG, f"larger than the {_size(limit)} limit ({size:,} bytes)", os.fspath(path))
        chunks, got = [], 0
        while got <= limit:
            chunk = fh.read(min(_CHUNK, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    if got > limit:                      # it grew while being read, or lied about its size
        raise SourceError(errno.EFBIG, f"larger than the {_size(limit)} limit", os.fspath(path))
    return b"".join(chunks)


def read_source(path: str | Path, limit: int = MAX_SOURCE_BYTES) -> str:
    """A `.pipe` file's text: a regular UTF-8 text file without NUL bytes, at most `limit` bytes.

    Line ends are read as `Path.read_text` reads them (`\\r\\n` and `\\r` become `\\n`).

    >>> import tempfile
    >>> p = tempfile.NamedTemporaryFile(delete=False).name; _ = open(p, "wb").write(b"a\\r\\nb\\x00")
    >>> read_source(p)
    Traceback (most recent call last):
    ...
    pipec.dsl.files.SourceError: cannot read ...: a binary file, not text (NUL byte at offset 4)
    """
    data = read_regular(path, limit)
    nul = data.find(b"\0")
    if nul >= 0:
        raise SourceError(errno.EINVAL, f"a binary file, not text (NUL byte at offset {nul})", os.fspath(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SourceError(errno.EINVAL, f"not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})",
                          os.fspath(path)) from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _pseudo_root(real: str) -> str | None:
    for root in PSEUDO_FILESYSTEMS:
        if real == root or real.startswith(root + "/"):
            return root
    return None


_pseudo_devices: dict[int, str] | None = None


def _pseudo_device(dev: int) -> str | None:
    global _pseudo_devices
    if _pseudo_devices is None:
        found = {}
        for root in ("/proc", "/sys"):
            try:
                found.setdefault(os.stat(root).st_dev, root)
            except OSError:
                pass
        _pseudo_devices = found
    return _pseudo_devices.get(dev)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _size(n: int) -> str:
    """`n` bytes in words: 1 MiB, 1.5 MiB, 300 KiB, 9 B.

    >>> _size(1 << 20), _size(3 << 19), _size(300 << 10), _size(9)
    ('1 MiB', '1.5 MiB', '300 KiB', '9 B')
    """
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} B"
