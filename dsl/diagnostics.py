"""Compiler-style diagnostics: `file:line:col: error: message`, the source line, a caret, a hint."""
from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

from .ast import Span
from .gcpause import gc_paused
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
    # What found it: "syntax" (the parser), "imports" (the loader) or the check pass (its module in
    # pipec.dsl.checks, e.g. "pipelines"). For tests and tools; never rendered, not compared.
    origin: str = field(default="", repr=False, compare=False)

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
        return self._render(source.split("\n") if source is not None else None, color)

    def _render(self, lines: list[str] | None, color: bool) -> str:
        out = [redact(self.headline())]
        if lines is not None:
            out += self._quote(lines)
        if self.hint:
            out.append(f"  hint: {redact(self.hint)}")
        text = "\n".join(out)
        if color:
            tint = "\x1b[31m" if self.severity == "error" else "\x1b[33m"
            text = text.replace(f"{self.severity}:", f"{tint}{self.severity}:\x1b[0m", 1)
        return text

    def _quote(self, lines: list[str]) -> list[str]:
        """The offending line and the caret under the span (nothing when the line does not exist).

        `lines` is the source split on "\\n" only: the parser counts lines that way, while
        str.splitlines() would also break at form feeds and U+2028 and put the caret under the wrong line.
        """
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


def did_you_mean(name: str, candidates, cutoff: float = 0.6) -> str:
    """A hint naming the closest candidate, or "". `candidates` is any iterable of names or a `Names`.

    >>> did_you_mean("clasify", ["classify", "answer"])
    "did you mean 'classify'?"
    >>> did_you_mean("Str", ["str", "int"])
    "did you mean 'str'?"
    """
    close = closest(name, candidates, cutoff)
    return f"did you mean '{close}'?" if close else ""


def closest(name: str, candidates, cutoff: float = 0.6) -> str | None:
    """The candidate most like `name` (ignoring case), or None when none is close.

    >>> closest("contexts", ["question", "context"]), closest("x", ["question"])
    ('context', None)
    """
    if not isinstance(candidates, Names):
        candidates = Names(candidates)
    return candidates.closest(name, cutoff)


class Names:
    """A set of names to suggest from, indexed once and asked many times.

    Up to `SMALL` names, a question compares the name with each of them (difflib's ratio, ignoring
    case), so suggestions on hand-written programs are the best difflib knows. Above that, a program
    with 30,000 names and 30,000 misspellings would cost 900 million comparisons, so only names one
    edit away are compared (a letter added, dropped or changed, two neighbours swapped, or a
    different case), found through an index of each name with one letter deleted: a question costs
    the same against a hundred names or a hundred thousand. Answers are remembered per name.

    >>> big = Names([f"step_{i}" for i in range(1000)] + ["classify"])
    >>> big.closest("clasify"), big.closest("step_12x"), big.closest("Step_7"), big.closest("nothing")
    ('classify', 'step_12', 'step_7', None)
    """

    SMALL = 64
    LONGEST = 64        # longer names are only matched ignoring case (their deletions are not indexed)

    __slots__ = ("names", "_lower", "_deletions", "_memo")

    def __init__(self, *groups: Iterable[str]):
        self.names = list(dict.fromkeys(n for group in groups for n in group))
        self._lower: dict[str, list[str]] | None = None
        self._deletions: dict[str, list[str]] | None = None
        self._memo: dict[tuple[str, float], str | None] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def closest(self, name: str, cutoff: float = 0.6) -> str | None:
        key = (name, cutoff)
        if key not in self._memo:
            small = len(self.names) <= self.SMALL
            self._memo[key] = (_difflib_closest if small else self._indexed)(name, self.names, cutoff)
        return self._memo[key]

    def _indexed(self, name: str, names: list[str], cutoff: float) -> str | None:
        if self._lower is None:
            self._lower, self._deletions = {}, {}
            for n in names:
                low = n.lower()
                self._lower.setdefault(low, []).append(n)
                if len(low) <= self.LONGEST:
                    for d in _deletions(low):
                        self._deletions.setdefault(d, []).append(low)
        low = name.lower()
        same = [n for n in self._lower.get(low, ()) if n != name]
        if same:
            return same[0]          # a different case: difflib's ratio is 1.0, nothing beats it
        near: set[str] = set()
        if len(low) <= self.LONGEST:
            for d in _deletions(low):
                near.update(self._deletions.get(d, ()))
        near.discard(low)
        best = None
        matcher = difflib.SequenceMatcher()
        matcher.set_seq2(low)
        for cand in near:
            matcher.set_seq1(cand)
            if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
                score = matcher.ratio()
                if score >= cutoff and (best is None or (score, cand) > best):
                    best = (score, cand)     # difflib's order: highest ratio, then the larger name
        return self._lower[best[1]][0] if best else None


def _deletions(word: str) -> set[str]:
    """`word` and `word` with one letter deleted: two words one edit apart share one of these.

    >>> sorted(_deletions("abc"))
    ['ab', 'abc', 'ac', 'bc']
    """
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


def _difflib_closest(name: str, candidates: list[str], cutoff: float) -> str | None:
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


DIAGNOSTIC_LIMIT = 50    # diagnostics `render_all` prints by default; the rest are counted


@gc_paused()
def render_all(diagnostics: list[Diagnostic], sources: dict[str, str], color: bool = False,
               limit: int | None = DIAGNOSTIC_LIMIT) -> str:
    """Render diagnostics in source order, at most `limit` of them (None: all), then a count line.

    When there are more than `limit`, errors are chosen before warnings (so warnings never hide an
    error), the chosen ones are printed in source order, and a line says how many were left out.
    Only the printed ones cost anything beyond sorting, whatever the total (and sorting tens of
    thousands does not set off a collection of everything the check left in memory).

    >>> d = [Diagnostic("warning", f"w{i}", Span("a.pipe", i, 1, i, 2)) for i in range(1, 4)]
    >>> print(render_all(d + [Diagnostic("error", "e", Span("a.pipe", 9, 1, 9, 2))], {}, limit=2))
    a.pipe:1:1: warning: w1
    a.pipe:9:1: error: e
    ... and 2 more (0 errors, 2 warnings) not shown; `pipec check --format json` lists them all
    1 error, 3 warnings
    """
    ordered = sorted(diagnostics, key=Diagnostic.sort_key)
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    shown = ordered
    if limit is not None and len(ordered) > limit:
        chosen = [d for d in ordered if d.severity == "error"][:limit]
        chosen += [d for d in ordered if d.severity != "error"][:limit - len(chosen)]
        keep = set(map(id, chosen))
        shown = [d for d in ordered if id(d) in keep]
    lines: dict[str, list[str] | None] = {}
    parts = []
    for d in shown:
        if d.span.file not in lines:
            source = sources.get(d.span.file)
            lines[d.span.file] = source.split("\n") if source is not None else None
        parts.append(d._render(lines[d.span.file], color))
    if len(shown) < len(ordered):
        left_errors = errors - sum(d.severity == "error" for d in shown)
        left_warnings = len(ordered) - len(shown) - left_errors
        parts.append(f"... and {len(ordered) - len(shown)} more ({_count(left_errors, left_warnings)}) not shown; "
                     "`pipec check --format json` lists them all")
    if diagnostics:
        parts.append(_count(errors, warnings))
    return "\n".join(parts)


def _count(errors: int, warnings: int) -> str:
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
