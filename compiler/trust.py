"""Who may run what: the user's approval of the code and LM endpoints a compiled artifact names.

An artifact is meant to be shipped and shared, so opening one must be safe. Reading it (`pipec
check`, `graph`, `inspect`, `report`, loading it from Python) imports and runs nothing. Running it
(`pipec run`, `eval`, `report --data`, calling the loaded program) needs the user's approval of
everything in it that can act on this machine or reach beyond it:

* every Python target it calls (`tool t = python("pkg.mod:fn")`) and a `python(...)` metric that
  `pipec eval` would take from it: importing them runs their modules;
* every LM endpoint it would send requests to, with this machine's keys (`api_base`, or a model id
  that is itself a URL): a planted `api_base` would otherwise receive `$OPENAI_API_KEY`;
* code its parameters carry (a ToolMaker module's tool, `code:M.tool`): whoever made the file wrote
  it. It always runs in the sandbox, as code an LM writes during a run does (which needs no
  approval: the LM endpoint it came from was approved); approval is the user's word that they read it
  (`pipec inspect` shows it).

Approval, from the narrowest: `--allow NAME` / `allow=[NAME, ...]` names a target (`pkg.mod:fn`), a
module or package (`pkg.mod`, `pkg`: every target inside it), an endpoint (a URL: every path on
that scheme, host and port) or carried code (`code:M.tool`, exactly); `--trust` / `trust=True`
approves everything in the file for this run; `pipec trust FILE` approves this exact file for good.

Trusted without asking: a `.pipe` file the user runs (their own code, like a script they run), and
an artifact that pipec compiled on this machine, or that the user approved with `pipec trust`.
Those are recognised by the *trust store*: a folder of the user's (`$PIPEC_TRUST_DIR`, default
`$XDG_DATA_HOME/pipec/trusted`, i.e. `~/.local/share/pipec/trusted`) holding one file per trusted
artifact, named by the sha256 of the artifact's canonical content. Editing an artifact changes that
hash, so trust cannot be forged by editing the file (or by recomputing its fingerprint, which anyone
can do): it would take write access to the user's own trust store. A store that others can write to
is ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Requirement:
    """One thing a program would do that needs approval when it comes from an untrusted artifact.

    `kind` is "tool", "metric", "endpoint" or "code"; `name` is what the file calls it (a tool or LM
    name, the predictor carrying code); `target` is what approval names (`pkg.mod:fn`, the endpoint
    URL, `code:M.tool`); `detail` is shown to the user.
    """

    kind: str
    name: str
    target: str
    detail: str = ""

    def describe(self) -> str:
        if self.kind == "endpoint":
            return f"lm {self.name}: sends requests to {self.target}{self.detail}"
        if self.kind == "code":
            return (f"code {self.name}: runs Python code the file carries{self.detail}, in the sandbox "
                    f"(`pipec inspect` shows it)")
        if self.kind == "metric":
            return f"metric {self.name}: imports and runs python(\"{self.target}\")"
        return f"tool {self.name}: imports and runs python(\"{self.target}\")"


@dataclass(frozen=True, slots=True)
class Trust:
    """How far a program may act: `trusted` programs run everything; others run only what `allow` names.

    `origin` says where trust came from: "source" (a .pipe file), "store" (an artifact compiled here or
    approved with `pipec trust`), "flag" (`--trust` / `trust=True` for this run) or "" (none).

    >>> t = Trust(allow=("examples.corpus", "http://127.0.0.1:8000"))
    >>> [t.allows(Requirement("tool", "search", x)) for x in ("examples.corpus:search", "examples.tools:calculate")]
    [True, False]
    >>> t.allows(Requirement("endpoint", "remote", "http://127.0.0.1:8000/v1"))
    True
    >>> [Trust(allow=(x,)).allows(Requirement("code", "m.tool", "code:m.tool")) for x in ("code", "code:m.tool")]
    [False, True]
    """

    trusted: bool = False
    origin: str = ""
    allow: tuple[str, ...] = field(default=())

    def allows(self, req: Requirement) -> bool:
        return self.trusted or any(_covers(pattern, req) for pattern in self.allow)

    def missing(self, reqs: list[Requirement]) -> list[Requirement]:
        return [r for r in reqs if not self.allows(r)]


SOURCE = Trust(trusted=True, origin="source")


class ApprovalRequired(Exception):
    """Running an artifact that was not compiled on this machine needs approval of what it would run."""

    def __init__(self, path: str, missing: list[Requirement]):
        self.path = path
        self.missing = missing
        names = []
        for r in missing:
            name = _origin(r.target) if r.kind == "endpoint" else r.target if r.kind == "code" else \
                r.target.partition(":")[0]
            if name not in names:
                names.append(name)
        lines = "\n".join(f"  {r.describe()}" for r in missing)
        super().__init__(
            f"{path} was not compiled on this machine, and running it would do what only you can approve:\n{lines}\n"
            "Read them, then approve them for this run with "
            + " ".join(f"--allow {n}" for n in names)
            + " (Python: allow=[...]), or everything in this file with --trust (trust=True); "
            f"`pipec trust {path}` approves this exact file for good.")


def _covers(pattern: str, req: Requirement) -> bool:
    pattern = pattern.strip()
    if not pattern:
        return False
    if req.kind == "endpoint":
        if "://" not in pattern:
            return False
        return _origin(pattern) == _origin(req.target)
    if req.kind == "code":
        return pattern == req.target            # no module name approves code that is no module's
    if ":" in pattern:
        return pattern == req.target
    module = req.target.partition(":")[0]
    return module == pattern or module.startswith(pattern + ".")


def _origin(url: str) -> str:
    """scheme://host:port of a URL (lower case, default ports made explicit, credentials dropped)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), "")
        host = (parts.hostname or "").lower()
    except ValueError:
        return url.strip().lower()
    return f"{parts.scheme.lower()}://{host}:{port}"


# ------------------------------------------------------------------------------------ the trust store
def store_dir() -> Path:
    """Where trusted artifacts are recorded: $PIPEC_TRUST_DIR, else $XDG_DATA_HOME/pipec/trusted."""
    explicit = os.environ.get("PIPEC_TRUST_DIR")
    if explicit:
        return Path(explicit)
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "pipec" / "trusted"


def digest(canonical: str) -> str:
    """The name an artifact is recorded under: sha256 of its canonical JSON text."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _usable(folder: Path) -> bool:
    """The store counts only if it is the user's own and nobody else can write to it (whoever could
    replace the folder itself would own the replacement)."""
    try:
        st = folder.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def is_trusted(canonical: str) -> bool:
    """Whether an artifact with this canonical text was compiled here or approved with `pipec trust`."""
    folder = store_dir()
    return _usable(folder) and (folder / digest(canonical)).is_file()


def record(canonical: str, path: str | Path, how: str) -> bool:
    """Record an artifact as trusted (`how`: "compiled" or "approved"); False if the store cannot be written."""
    folder = store_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not _usable(folder):
            return False
        name = digest(canonical)
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        note = {"path": str(Path(path).resolve()), "how": how}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(note, sort_keys=True) + "\n")
        os.replace(tmp, folder / name)
    except OSError:
        return False
    return True


def revoke(canonical: str) -> bool:
    """Forget an artifact's trust; True if it had been trusted."""
    try:
        (store_dir() / digest(canonical)).unlink()
    except FileNotFoundError:
        return False
    return True
