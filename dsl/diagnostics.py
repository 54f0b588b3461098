"""Compiler-style diagnostics: `file:line:col: error: message`, the source line, a caret, a hint."""
from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from .ast import Span
from .redaction import MASK, assignment_spans, current, mask_spans, merge_spans, redact


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
        """The headline, the source line with a caret under the span, and the hint.

        Only the offending line is quoted, made safe to print: control characters become spaces, a
        line longer than `QUOTE_WIDTH` is cut to a window around the caret, and secrets are masked
        (the environment's secret values, key shapes, URL passwords, string literals in a "secret"
        finding, and secret-named settings in an imported file that is not a .pipe file).

        >>> d = Diagnostic("error", "bad", Span("a.env", 1, 1, 1, 7))
        >>> print(d.render('ANTHROPIC_API_KEY="a1b2c3d4e5f6"\\x00 ' + "x" * 200))
        a.env:1:1: error: bad
         1 | ANTHROPIC_API_KEY="***"  xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…
           | ^~~~~~
        """
        out = [redact(self.headline())]
        if source is not None:
            out += self._quote(source)
        if self.hint:
            out.append(f"  hint: {redact(self.hint)}")
        text = "\n".join(out)
        if color:
            tint = "\x1b[31m" if self.severity == "error" else "\x1b[33m"
            text = text.replace(f"{self.severity}:", f"{tint}{self.severity}:\x1b[0m", 1)
        return text

    def _quote(self, source: str) -> list[str]:
        """The offending line and the caret under the span (nothing when the line does not exist)."""
        # Split on "\n" only: the parser counts lines that way, while str.splitlines() would also
        # break at form feeds and U+2028 and put the caret under the wrong line.
        lines = source.split("\n")
        if not 1 <= self.span.line <= len(lines):
            return []
        text = _printable(lines[self.span.line - 1].rstrip("\r"))
        start = self.span.col - 1
        end = start + 1
        if self.span.end_line == self.span.line and self.span.end_col > self.span.col:
            end = self.span.end_col - 1
        secrets = current().spans(text)
        if self.code == "secret":
            # Never echo a key into logs: mask string literals inside the flagged span.
            secrets += _string_spans(text, start, end if self.span.end_line == self.span.line else len(text))
        if not self.span.file.endswith(".pipe"):
            secrets += assignment_spans(text)     # an imported .env or credentials file
        if secrets:
            spans = merge_spans(secrets)
            text, start, end = mask_spans(text, spans), _moved(start, spans), _moved(end, spans, True)
        text, start, end = _window(text, start, end)
        lineno = str(self.span.line)
        caret = "^" + "~" * (_columns(text[start:max(end, start + 1)]) - 1)
        return [f" {lineno} | {text}", f" {' ' * len(lineno)} | {' ' * _columns(text[:start])}{caret}"]

    def sort_key(self) -> tuple:
        return (self.span.file, self.span.line, self.span.col, self.message)


QUOTE_WIDTH = 100      # characters of a source line a diagnostic quotes at most


def _window(text: str, start: int, end: int) -> tuple[str, int, int]:
    """`text` cut to QUOTE_WIDTH characters around `start` (with an ellipsis for each cut side), and
    the span's start and end moved to match.

    >>> text, start, end = _window("a" * 300 + "BAD" + "b" * 300, 300, 303)
    >>> text[:2], text[start:end], text[-2:], len(text), _window("ok", 0, 2)
    ('…a', 'BAD', 'b…', 102, ('ok', 0, 2))
    """
    if len(text) <= QUOTE_WIDTH:
        return text, start, end
    lo = max(0, min(start - QUOTE_WIDTH // 4, len(text) - QUOTE_WIDTH))
    hi = lo + QUOTE_WIDTH
    head, tail = ("…" if lo else ""), ("…" if hi < len(text) else "")
    shift = len(head) - lo
    return head + text[lo:hi] + tail, start + shift, min(end, hi) + shift


def _moved(at: int, spans: list[tuple[int, int]], end: bool = False) -> int:
    """Where column index `at` is once each of `spans` is replaced by MASK."""
    delta = 0
    for a, b in spans:
        if at >= b:
            delta += (b - a) - len(MASK)
        elif at > a:
            return a - delta + (len(MASK) if end else 0)
        else:
            break
    return at - delta


def _string_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the contents of double-quoted strings between columns start and end."""
    return [(start + m.start() + 1, start + m.end() - 1) for m in re.finditer(r'"(?:[^"\\]|\\.)*"', text[start:end])]


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
