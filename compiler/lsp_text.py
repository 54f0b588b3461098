"""Source text as the language server reads it: lines, spans as 0-based ranges, and tokens.

The parser's spans are 1-based with an exclusive end column, counted in characters on lines split at
"\\n" only; an editor's ranges are 0-based. Everything here stays in characters (code points): the
server converts to the client's units (UTF-16 by default) at the protocol boundary.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from .dsl.ast import Span

Range = tuple[int, int, int, int]      # start line, start character, end line, end character; 0-based

_TOKEN = re.compile(r'''
    (?P<long>"""(?:[^\\]|\\.)*?(?:"""|\Z))     # a triple-quoted string, perhaps not closed yet
  | (?P<str>"(?:[^"\\\n]|\\.)*(?:"|$))         # a string, perhaps not closed on its line
  | (?P<comment>\#[^\n]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<op>->|==|!=|\S)
''', re.X | re.S | re.M)


@dataclass(frozen=True, slots=True)
class Token:
    """One token of source text: its kind (long str comment name number op), text and offset."""

    kind: str
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def closed(self) -> bool:
        """Whether a string token has its closing quote (an editor's buffer often has not, yet)."""
        if self.kind == "long":
            return len(self.text) >= 6 and self.text.endswith('"""')
        if self.kind == "str":
            return len(self.text) >= 2 and self.text.endswith('"') and not self.text.endswith('\\"')
        return True


def tokens(text: str, start: int = 0, end: int | None = None) -> Iterator[Token]:
    """The tokens of `text[start:end]`, comments included, offsets into `text`.

    >>> [(t.kind, t.text) for t in tokens('lm a = "x" (seed: 1)  # hi')][:4]
    [('name', 'lm'), ('name', 'a'), ('op', '='), ('str', '"x"')]
    >>> [t.closed for t in tokens('"open')]
    [False]
    """
    end = len(text) if end is None else end
    for m in _TOKEN.finditer(text, start, end):
        yield Token(m.lastgroup, m.group(), m.start())


def normalize(text: str) -> str:
    """A buffer's text with line ends as the parser reads files (`files.read_source`): "\\r\\n" and a
    lone "\\r" become "\\n", so line numbers agree with the editor's.

    >>> normalize("a\\r\\nb\\rc")
    'a\\nb\\nc'
    """
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


class SourceText:
    """One file's text with its line starts, to move between offsets, positions and spans.

    >>> src = SourceText("ab\\ncd")
    >>> src.offset(1, 1), src.position(4), src.range(Span("f", 2, 1, 2, 3))
    (4, (1, 1), (1, 0, 1, 2))
    """

    __slots__ = ("text", "lines", "_starts")

    def __init__(self, text: str):
        self.text = text
        self.lines = text.split("\n")
        self._starts = [0]
        for line in self.lines[:-1]:
            self._starts.append(self._starts[-1] + len(line) + 1)

    def offset(self, line: int, character: int) -> int:
        """The offset of a 0-based position (clamped to the text)."""
        if line >= len(self.lines):
            return len(self.text)
        return self._starts[max(line, 0)] + min(max(character, 0), len(self.lines[max(line, 0)]))

    def position(self, offset: int) -> tuple[int, int]:
        """The 0-based (line, character) of an offset."""
        import bisect
        line = bisect.bisect_right(self._starts, offset) - 1
        return line, offset - self._starts[line]

    def span_offsets(self, span: Span) -> tuple[int, int]:
        """A span's start and end offsets."""
        return self.offset(span.line - 1, span.col - 1), self.offset(span.end_line - 1, span.end_col - 1)

    def range(self, span: Span) -> Range:
        """A span as a 0-based range; an empty span widens to the character under it, so an editor
        draws something."""
        start, end = self.span_offsets(span)
        if end <= start:
            end = min(start + 1, len(self.text))
        return (*self.position(start), *self.position(end))

    def span(self, file: str, start: int, end: int) -> Span:
        """The 1-based span of offsets `start`..`end`."""
        (l1, c1), (l2, c2) = self.position(start), self.position(end)
        return Span(file, l1 + 1, c1 + 1, l2 + 1, c2 + 1)

    def names_in(self, span: Span) -> Iterator[tuple[str, Span]]:
        """Each name written inside `span` (strings and comments skipped), with its own span.

        >>> src = SourceText('m = P(S, tools: [a, "b", c])')
        >>> [n for n, _ in src.names_in(Span("f", 1, 10, 1, 29))]
        ['tools', 'a', 'c']
        """
        start, end = self.span_offsets(span)
        for t in tokens(self.text, start, end):
            if t.kind == "name":
                yield t.text, self.span(span.file, t.start, t.end)

    def string_in(self, span: Span) -> Span | None:
        """The span of the first string literal inside `span` (an import's path)."""
        start, end = self.span_offsets(span)
        for t in tokens(self.text, start, end):
            if t.kind in ("str", "long"):
                return self.span(span.file, t.start, t.end)
        return None


def leading(span: Span, name: str) -> Span:
    """The span of the name a node starts with (`name: value`, `name = expr`).

    >>> leading(Span("f", 3, 5, 3, 20), "seed")
    Span(file='f', line=3, col=5, end_line=3, end_col=9)
    """
    return Span(span.file, span.line, span.col, span.line, span.col + len(name))


def trailing(span: Span, name: str) -> Span:
    """The span of the name a node ends with (the field of `c.intent`).

    >>> trailing(Span("f", 3, 5, 3, 13), "intent")
    Span(file='f', line=3, col=7, end_line=3, end_col=13)
    """
    return Span(span.file, span.end_line, span.end_col - len(name), span.end_line, span.end_col)


def contains(span: Span, line: int, character: int) -> bool:
    """Whether the 0-based position is on `span`, its end included (a cursor just after a word is on it).

    >>> s = Span("f", 1, 3, 1, 6)
    >>> contains(s, 0, 2), contains(s, 0, 5), contains(s, 0, 6), contains(s, 1, 3)
    (True, True, False, False)
    """
    start, end = (span.line - 1, span.col - 1), (span.end_line - 1, span.end_col - 1)
    return start <= (line, character) <= end
