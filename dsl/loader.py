"""Read a .pipe file and everything it imports, then check the whole program."""
from __future__ import annotations

from pathlib import Path

from . import ast as A
from .catalogue import Catalogue
from .checker import Program, check
from .diagnostics import Diagnostic
from .parser import parse


class Loaded:
    """The result of `load`: the checked program, every diagnostic, and the sources to render them."""

    __slots__ = ("program", "diagnostics", "sources")

    def __init__(self, program: Program, diagnostics: list[Diagnostic], sources: dict[str, str]):
        self.program, self.diagnostics, self.sources = program, diagnostics, sources

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


def load(path: str | Path, catalogue: Catalogue, source: str | None = None) -> Loaded:
    """Parse `path` and its imports (relative to the importing file), then check them together.

    Import cycles and unreadable imports are diagnostics at the `import` line, not exceptions.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.pipe")
    >>> _ = open(p, "w").write('import "missing.pipe"')
    >>> [x.message for x in load(p, Catalogue()).diagnostics]
    ["cannot read import 'missing.pipe': No such file or directory"]
    """
    path = Path(path)
    display = str(path)
    diags: list[Diagnostic] = []
    sources: dict[str, str] = {}
    files: list[A.File] = []
    if source is None:
        source = path.read_text(encoding="utf-8")   # the caller reports an unreadable main file
    done: dict[Path, A.File] = {}

    def visit(real: Path, shown: str, text: str, stack: list[Path]) -> None:
        sources[shown] = text
        f, syntax = parse(text, shown)
        diags.extend(syntax)
        done[real] = f
        files.append(f)
        for item in f.items:
            if not isinstance(item, A.Import):
                continue
            target = (real.parent / item.path).resolve()
            shown_target = _display(path.parent, real.parent / item.path)
            if target in stack or target == real:
                chain = " -> ".join(_display(path.parent, p) for p in stack + [real]) + f" -> {shown_target}"
                diags.append(Diagnostic("error", f"import cycle: {chain}", item.span,
                                        "move the shared declarations into a file both can import", "import-cycle"))
                continue
            if target in done:
                continue
            try:
                body = target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                reason = getattr(err, "strerror", None) or str(err)
                diags.append(Diagnostic("error", f"cannot read import '{item.path}': {reason}", item.span,
                                        "import paths are relative to the importing file", "bad-import"))
                continue
            visit(target, shown_target, body, stack + [real])

    visit(path.resolve(), display, source, [])
    program, semantic = check(files, catalogue)
    return Loaded(program, diags + semantic, sources)


def _display(base: Path, p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)
