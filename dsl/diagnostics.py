"""Compiler-style diagnostics: `file:line:col: error: message`, the source line, a caret, a hint."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

from .ast import Span


@dataclass(slots=True)
class Diagnostic:
    """One finding about a source file.

    >>> d = Diagnostic("error", "unknown module 'clasify'", Span("a.pipe", 3, 9, 3, 16), "did you mean 'classify'?")
    >>> d.headline()
    "a.pipe:3:9: error: unknown module 'clasify'"
    """

    severity: str                  # "error" or "warning"
    message: str
    span: Span
    hint: str = ""
    code: str = ""                 # stable identifier, e.g. "unknown-name"

    def headline(self) -> str:
        return f"{self.span}: {self.severity}: {self.message}"

    def render(self, source: str | None = None, color: bool = False) -> str:
        """The headline, the source line with a caret under the span, and the hint."""
        out = [self.headline()]
        if source is not None:
            lines = source.splitlines()
            if 1 <= self.span.line <= len(lines):
                # Tabs count as one column in spans, so show them as one space to keep the caret aligned.
                text = lines[self.span.line - 1].replace("\t", " ")
                width = 1
                if self.span.end_line == self.span.line and self.span.end_col > self.span.col:
                    width = self.span.end_col - self.span.col
                lineno = str(self.span.line)
                out.append(f" {lineno} | {text}")
                caret = "^" + "~" * (width - 1)
                out.append(f" {' ' * len(lineno)} | {' ' * (self.span.col - 1)}{caret}")
        if self.hint:
            out.append(f"  hint: {self.hint}")
        text = "\n".join(out)
        if color:
            tint = "\x1b[31m" if self.severity == "error" else "\x1b[33m"
            text = text.replace(f"{self.severity}:", f"{tint}{self.severity}:\x1b[0m", 1)
        return text

    def sort_key(self) -> tuple:
        return (self.span.file, self.span.line, self.span.col, self.message)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A hint naming the closest candidate, or "".

    >>> did_you_mean("clasify", ["classify", "answer"])
    "did you mean 'classify'?"
    """
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


class PipeError(Exception):
    """Raised when a .pipe file has errors; carries every diagnostic, not just the first."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = diagnostics
        self.sources = sources or {}
        super().__init__(self.render())

    def render(self, color: bool = False) -> str:
        return render_all(self.diagnostics, self.sources, color)


def render_all(diagnostics: list[Diagnostic], sources: dict[str, str], color: bool = False) -> str:
    """Render diagnostics in source order followed by a count line."""
    parts = [d.render(sources.get(d.span.file), color) for d in sorted(diagnostics, key=Diagnostic.sort_key)]
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    if diagnostics:
        parts.append(f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}")
    return "\n".join(parts)
