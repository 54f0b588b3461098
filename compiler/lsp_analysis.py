"""One editor buffer checked as `pipec check` checks a file, and what the editor features read of it.

The buffer's text is checked, not the file on disk; its imports are read relative to its path, from
other open buffers first (`overlay`), then from disk. The symbol index and the LM call bounds are
built on first use: typing only needs the diagnostics.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from .dsl import ast as A
from .dsl.diagnostics import Diagnostic
from .dsl.loader import Loaded
from .lsp_text import SourceText, normalize


@dataclass(slots=True)
class Bounds:
    """The static worst case of LM calls, as `pipec inspect` counts it: per pipeline (and with the
    dearest alternative of its one_of modules), per module call, per one_of alternative."""

    pipelines: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    modules: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    problem: str = ""               # why there are none, when there are none


class Analysis:
    """A checked buffer: its program, every diagnostic, and (built when asked) its symbol index and bounds.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.pipe")
    >>> a = analyze(path, 'signature S { in q: str out a: str }\\nmodule m = Predict(S)\\n'
    ...             'pipeline p(q: str) -> (a) { r = m(q: q) return a = r.a }')
    >>> a.diagnostics, a.bounds.pipelines, a.bounds.modules
    ([], {'p': (2, None)}, {'m': (2, {})})
    """

    def __init__(self, path: str, text: str, loaded: Loaded, catalogue):
        self.path, self.text, self.loaded, self.catalogue = path, text, loaded, catalogue
        self._texts: dict[str, SourceText] = {}

    @property
    def program(self):
        return self.loaded.program

    def source(self, file: str) -> SourceText:
        """The text of a file of the program (this buffer's for its own path), indexed once."""
        if file not in self._texts:
            self._texts[file] = SourceText(self.text if file == self.path else self.loaded.sources.get(file, ""))
        return self._texts[file]

    @property
    def files(self) -> set[str]:
        """Every file of the program, this one and what it imports, as the loader names them."""
        return set(self.loaded.sources)

    @cached_property
    def diagnostics(self) -> list[Diagnostic]:
        """What `pipec check` reports: the loader's and checker's diagnostics and the tools' targets."""
        from .tools import describe_tools, tool_diagnostics
        diags = list(self.loaded.diagnostics)
        try:
            diags += tool_diagnostics(self.program, describe_tools(self.program, Path(self.path)))
        except (OSError, ValueError):       # a folder that vanished under the editor: no tool verdict
            pass
        return sorted(diags, key=Diagnostic.sort_key)

    @cached_property
    def index(self):
        from .lsp_index import SymbolIndex
        return SymbolIndex(self.program, self.catalogue, self.loaded.sources)

    def document_diagnostics(self) -> list[tuple[Diagnostic, list[Diagnostic]]]:
        """The diagnostics to show in this buffer, each with related ones elsewhere: its own, and for
        the errors of the files it imports one error at the `import` line they come through (an
        editor shows a buffer's diagnostics, and the imported file may not be open)."""
        own = [(d, []) for d in self.diagnostics if d.span.file == self.path]
        elsewhere: dict[int, list[Diagnostic]] = {}
        imports = [i for i in self.program.main.items if isinstance(i, A.Import)] if self.program.files else []
        reach = [self._reachable(_target(self.path, i.path)) for i in imports]
        for d in self.diagnostics:
            if d.span.file != self.path and d.severity == "error":
                at = next((n for n, files in enumerate(reach) if d.span.file in files), None)
                if at is not None:
                    elsewhere.setdefault(at, []).append(d)
        for n, errors in sorted(elsewhere.items()):
            first = errors[0]
            count = f"{len(errors)} error{'s' * (len(errors) != 1)}"
            shown = os.path.relpath(first.span.file, os.path.dirname(self.path))
            own.append((Diagnostic("error", f"{count} in imported file {shown}: {first.message}", imports[n].span,
                                   "open the imported file to see them all", "import-errors", "imports"), errors))
        return own

    def _reachable(self, start: str) -> set[str]:
        """The files `start` imports, directly or not, and itself."""
        by_path = {f.path: f for f in self.program.files}
        seen, todo = set(), [start]
        while todo:
            path = todo.pop()
            if path in seen or path not in by_path:
                continue
            seen.add(path)
            todo.extend(_target(path, i.path) for i in by_path[path].items if isinstance(i, A.Import))
        return seen

    @cached_property
    def bounds(self) -> Bounds:
        """The LM call bounds of every pipeline and module, computed as `pipec inspect` does, once
        the program checks without errors (a program with errors is not built)."""
        from .dsl.diagnostics import PipeError
        from .inspection import max_calls
        from .program import Program
        if any(d.severity == "error" for d in self.diagnostics):
            return Bounds(problem="the program has errors; the bound is known once they are fixed")
        out = Bounds()
        for name in self.program.pipelines:
            try:
                prog = Program(self.loaded, Path(self.path), name, cache=False)
            except (PipeError, ValueError, OSError) as err:
                return Bounds(problem=f"the program could not be built: {str(err).splitlines()[0]}")
            dearest = max_calls(prog, dearest=True) if prog.strategies() else None
            out.pipelines[name] = (max_calls(prog), dearest)
            for mname, module in prog.modules.items():
                alternatives = getattr(module, "alternatives", None) or {}
                out.modules.setdefault(mname, (module.max_calls(), {label: alt.max_calls()
                                                                    for label, alt in alternatives.items()}))
        if not self.program.pipelines:
            out.problem = "no pipeline calls it: bounds are counted per pipeline"
        return out


def _target(importer: str, path: str) -> str:
    """How the loader names the file an `import` line names (relative to the importing file)."""
    return os.path.normpath(os.path.join(os.path.dirname(importer), path))


def analyze(path: str, text: str, overlay: Callable[[Path], str | None] = lambda p: None) -> Analysis:
    """Check buffer `text` as the file at `path`; imported files come from `overlay(resolved path)`
    when it has them (other open buffers), else from disk.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); path = os.path.join(d, "a.pipe")
    >>> a = analyze(path, 'import "b.pipe"', overlay=lambda p: "signature B { out x: strr }")
    >>> [(d.message, [r.message for r in related]) for d, related in a.document_diagnostics()]
    [("1 error in imported file b.pipe: unknown type 'strr'", ["unknown type 'strr'"])]
    """
    from .dsl.files import read_source
    from .dsl.loader import load
    from .registry import catalogue

    def reader(target: Path) -> str:
        text = overlay(target)
        return normalize(text) if text is not None else read_source(target)

    text = normalize(text)
    loaded = load(path, catalogue(), source=text, reader=reader)
    return Analysis(str(path), text, loaded, catalogue())
