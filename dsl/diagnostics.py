"""Compiler-style diagnostics: `file:line:col: error: message`, the source line, a caret, a hint."""
from __future__ import annotations

import difflib
import unicodedata
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
            # Split on "\n" only: the parser counts lines that way, while str.splitlines() would also
            # break at form feeds and U+2028 and put the caret under the wrong line.
            lines = source.split("\n")
            if 1 <= self.span.line <= len(lines):
                text = _printable(lines[self.span.line - 1].rstrip("\r"))
                if self.code == "secret":
                    # Never echo a key into logs: mask string literals inside the flagged span.
                    text = _mask_strings(text, self.span.col - 1,
                                         self.span.end_col - 1 if self.span.end_line == self.span.line else len(text))
                width = 1
                if self.span.end_line == self.span.line and self.span.end_col > self.span.col:
                    width = self.span.end_col - self.span.col
                lineno = str(self.span.line)
                out.append(f" {lineno} | {text}")
                caret = "^" + "~" * (_columns(text[self.span.col - 1:self.span.col - 1 + width]) - 1)
                out.append(f" {' ' * len(lineno)} | {' ' * _columns(text[:self.span.col - 1])}{caret}")
        if self.hint:
            out.append(f"  hint: {self.hint}")
        text = "\n".join(out)
        if color:
            tint = "\x1b[31m" if self.severity == "error" else "\x1b[33m"
            text = text.replace(f"{self.severity}:", f"{tint}{self.severity}:\x1b[0m", 1)
        return text

    def sort_key(self) -> tuple:
        return (self.span.file, self.span.line, self.span.col, self.message)


def _printable(line: str) -> str:
    """The line as shown: one character per column, so the caret stays aligned (tabs and controls become spaces)."""
    return "".join(" " if (c == "\t" or not c.isprintable()) else c for c in line)


def _columns(text: str) -> int:
    """Terminal columns `text` takes: wide (CJK, emoji) characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """A hint naming the closest candidate, or "".

    >>> did_you_mean("clasify", ["classify", "answer"])
    "did you mean 'classify'?"
    >>> did_you_mean("Str", ["str", "int"])
    "did you mean 'str'?"
    """
    close = closest(name, candidates, cutoff)
    return f"did you mean '{close}'?" if close else ""


def closest(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate most like `name` (ignoring case), or None when none is close.

    >>> closest("contexts", ["question", "context"]), closest("x", ["question"])
    ('context', None)
    """
    # Compare case-insensitively: `Str` for `str` or `predict` for `Predict` are the commonest slips.
    by_lower: dict[str, str] = {}
    for c in candidates:
        if c != name:
            by_lower.setdefault(c.lower(), c)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[close[0]] if close else None


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


def _mask_strings(text: str, start: int, end: int) -> str:
    """`text` with the contents of double-quoted strings between columns start and end replaced by ***."""
    import re
    head, body, tail = text[:start], text[start:end], text[end:]
    return head + re.sub(r'"(?:[^"\\]|\\.)*"', '"***"', body) + tail
