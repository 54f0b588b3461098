"""Read a .pipe file and everything it imports, then check the whole program."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from . import ast as A
from .catalogue import Catalogue
from .checked_program import CheckedProgram
from .checker import check
from .diagnostics import Diagnostic
from .files import MAX_SOURCE_BYTES, SourceError, read_source
from .parser import parse


class Loaded:
    """The result of `load`: the checked program, every diagnostic, and the sources to render them."""

    __slots__ = ("program", "diagnostics", "sources")

    def __init__(self, program: CheckedProgram, diagnostics: list[Diagnostic], sources: dict[str, str]):
        self.program, self.diagnostics, self.sources = program, diagnostics, sources

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


def load(path: str | Path, catalogue: Catalogue, source: str | None = None,
         reader: Callable[[Path], str] | None = None) -> Loaded:
    """Parse `path` and its imports (relative to the importing file), then check them together.

    Import cycles and unreadable imports are diagnostics at the `import` line, not exceptions. Every
    file is read by `files.read_source`: regular UTF-8 text files of at most 1 MiB, never a FIFO,
    a device or a file under /proc. An unreadable main file raises `files.SourceError` (an OSError)
    for the caller to report. `reader` reads imported files instead (default: from disk); a
    compiled artifact passes one that serves the sources embedded in it.

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
        source = read_source(path)          # the caller reports an unreadable main file
    done: dict[Path, A.File] = {}
    shown_as: dict[Path, str] = {}     # real path -> how messages name the file
    # The files being read, each importing the next, with the imports each has left to follow. An
    # explicit stack, not recursion: a chain of a thousand imports must not exhaust Python's stack
    # (the parser would then call healthy declarations "nested too deeply").
    stack: list[tuple[Path, str, list[A.Import]]] = []
    on_stack: dict[Path, int] = {}     # real path -> its place in `stack`

    def visit(real: Path, shown: str, text: str) -> None:
        sources[shown] = text
        shown_as[real] = shown
        f, syntax = parse(text, shown)
        diags.extend(syntax)
        done[real] = f
        files.append(f)
        on_stack[real] = len(stack)
        stack.append((real, shown, [item for item in reversed(f.items) if isinstance(item, A.Import)]))

    def follow(item: A.Import, real: Path, shown: str) -> None:
        try:
            target = (real.parent / item.path).resolve()
        except (OSError, ValueError, RuntimeError) as err:   # a NUL byte, a symlink loop
            unreadable(item, getattr(err, "strerror", None) or str(err))
            return
        if target == real:
            diags.append(Diagnostic("error", "a file cannot import itself", item.span, "remove this import",
                                    "import-cycle", "imports"))
            return
        if target in on_stack:
            # Name only the files on the loop, starting from the one imported again.
            loop = [p for p, _, _ in stack[on_stack[target]:]]
            chain = " -> ".join(shown_as[p] for p in loop) + f" -> {shown_as[target]}"
            diags.append(Diagnostic("error", f"import cycle: {chain}", item.span,
                                    "move the shared declarations into a file both can import", "import-cycle",
                                    "imports"))
            return
        if target in done:
            return
        try:
            body = reader(target) if reader is not None else read_source(target)
        except SourceError as err:
            unreadable(item, err.strerror, f"imports read regular UTF-8 text files of at most {MAX_SOURCE_BYTES >> 20} MiB")
            return
        except UnicodeDecodeError as err:
            unreadable(item, f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})")
            return
        except (OSError, ValueError) as err:
            unreadable(item, getattr(err, "strerror", None) or str(err))
            return
        # Show an import the way the user named the main file: relative stays relative.
        visit(target, os.path.normpath(os.path.join(os.path.dirname(shown), item.path)), body)

    def unreadable(item: A.Import, reason: str, hint: str = "import paths are relative to the importing file") -> None:
        # A path with control characters (an escaped NUL, say) is shown escaped, not printed raw.
        shown = item.path if item.path.isprintable() else repr(item.path)[1:-1]
        diags.append(Diagnostic("error", f"cannot read import '{shown}': {reason}", item.span, hint, "bad-import",
                                "imports"))

    visit(path.resolve(), display, source)
    while stack:                        # depth first, each file's imports in order, as they are written
        real, shown, imports = stack[-1]
        if imports:
            follow(imports.pop(), real, shown)
        else:
            stack.pop()
            del on_stack[real]
    program, semantic = check(files, catalogue)
    return Loaded(program, diags + semantic, sources)

