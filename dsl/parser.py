"""Parse .pipe source text into an AST, collecting every syntax error instead of stopping at the first.

Recovery works at the level of top-level declarations: the file is cut at each line that starts a
declaration (`signature`, `module`, `pipeline`, ...), a broken declaration is parsed alone for its
diagnostic, and parsing resumes after it, so one broken declaration costs one diagnostic and the rest
of the file is still checked. Messages come from, in order: the bracket structure (unclosed or
unmatched brackets), the top-level state (stray code, keyword typos), the table of known mistakes in
`syntax_errors`, and finally lark's list of expected tokens.

The cost is linear in the size of the file, whatever it holds: each declaration is parsed about
twice at most however many are broken (see `parse`), no piece is padded or copied to place its line
numbers, and the tree is turned into the AST without recursion. Nesting is capped: brackets deeper
than `MAX_NESTING` are found by a scan before lark sees the declaration, and any tree deeper than
`MAX_TREE_DEPTH` (a long `a + b + c ...` chain) while it is built, so no later pass can run out of
stack on what the parser accepted.
"""
from __future__ import annotations

import bisect
import re
import textwrap
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from . import ast as A
from .diagnostics import Diagnostic, did_you_mean
from .gcpause import gc_paused
from .syntax_errors import ITEM_KEYWORDS, describe_expected, describe_token, index_mistakes, match_mistake

_ITEM_START = re.compile(rf"^({'|'.join(ITEM_KEYWORDS)})\b", re.M)
_ITEM_NAME = re.compile(r"^(?:lm|signature|record|module|tool|pipeline)\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)
_WORD = re.compile(r"\s*(\S+)")

MAX_NESTING = 128                       # brackets open at once in one declaration
MAX_TREE_DEPTH = 2 * MAX_NESTING + 32   # levels of the parse tree (a type's `list[` takes two)
_TOO_DEEP = "this declaration is nested too deeply to read"
_CHUNK = 512                            # declarations parsed in one go at most: lark's tree for a whole 1 MiB file took 70 MB


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = (Path(__file__).with_name("grammar.lark")).read_text()
    # cache=True stores the built LALR tables in a temp file keyed by grammar and lark version.
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=True, cache=True)


@gc_paused()
def parse(source: str, path: str = "<string>") -> tuple[A.File, list[Diagnostic]]:
    """Parse `source`; return the AST of everything that parsed and one diagnostic per syntax error.

    Never raises on bad input: every problem becomes a diagnostic.

    >>> f, diags = parse('signature S { in q: str  out a: str }', "x.pipe")
    >>> f.items[0].name, diags
    ('S', [])
    >>> [d.message for d in parse('lm a "local/x"')[1]]
    ["missing '=' in lm declaration"]
    """
    file = A.File(path=path, source=source)
    if source.startswith("\ufeff"):
        # Editors on Windows start UTF-8 files with a byte-order mark; a space keeps every column in place.
        source = " " + source[1:]
    diags: list[Diagnostic] = []
    starts, deep = _pieces(source)
    deep_at = sorted(deep)
    lines = _Lines(source)
    pieces = len(starts) - 1
    i, size = 0, pieces
    while i < pieces:
        # Parse `size` pieces in one go (at most `_CHUNK`). On an error, keep what precedes the broken
        # declaration (it parses as a unit, or the error would have come earlier), diagnose that
        # declaration alone, and go on after it with one piece, doubling while they parse. Parsing all
        # that was left after each error, as before, cost k times the file for k errors; this way the
        # pieces parsed again after an error are never more than twice those since the previous one.
        if i in deep:
            diags.append(_too_deep(source, deep[i], lines, path))
            _mark_broken(file, source, starts[i], starts[i + 1])
            i, size = i + 1, 1
            continue
        end = min(pieces, i + min(size, _CHUNK))
        k = bisect.bisect_left(deep_at, i)
        if k < len(deep_at) and deep_at[k] < end:
            end = deep_at[k]                 # a declaration nested too deeply is never given to lark
        items, failed, where = _parse_range(source, starts[i], starts[end], path, lines, diagnose=False)
        if failed is None:
            file.items.extend(items)
            i, size = end, size * 2
            continue
        j = min(max(i, bisect.bisect_right(starts, where) - 1), end - 1)
        if j > i:
            items, failed, _ = _parse_range(source, starts[i], starts[j], path, lines, diagnose=False)
            if failed is None:
                file.items.extend(items)
                i = j
        items, diag, _ = _parse_range(source, starts[i], starts[i + 1], path, lines)
        file.items.extend(items)
        if diag is not None:
            diags.append(diag)
            _mark_broken(file, source, starts[i], starts[i + 1])
        i, size = i + 1, 1
    for d in diags:
        d.origin = "syntax"
    return file, diags


def _mark_broken(file: A.File, source: str, begin: int, end: int) -> None:
    """Note the name a broken declaration declares: the checker does not call it unknown."""
    m = _ITEM_NAME.match(source, begin, end)
    if m:
        file.broken_names.add(m.group(1))


class _Lines:
    """Line numbers of offsets in one source, from a table of its newlines built on first use."""

    __slots__ = ("source", "_newlines")

    def __init__(self, source: str):
        self.source = source
        self._newlines: list[int] | None = None

    def before(self, offset: int) -> int:
        """How many lines end before `offset` (so `offset` is on line `before(offset) + 1`)."""
        if offset == 0:
            return 0
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.source)]
        return bisect.bisect_left(self._newlines, offset)


def _what_follows(source: str, end: int, lines: _Lines) -> str:
    """How a message names what comes after a piece: the next declaration, or the end of the file."""
    m = _WORD.match(source, end)
    if m is None:
        return "the end of the file"
    return f"the '{m.group(1)}' at line {lines.before(end) + 1}"


_FAILED = object()      # what `_parse_range` returns for a failure it was not asked to describe


def _parse_range(source: str, begin: int, end: int, path: str, lines: _Lines,
                 diagnose: bool = True) -> tuple[list, Diagnostic | None, int]:
    """Parse `source[begin:end]`: its items, or a diagnostic and the offset in `source` where parsing failed.

    Any failure becomes a diagnostic instead of an exception (with `diagnose=False`, a marker that
    costs nothing to make). `begin` is the start of a line, so lark's columns are right and its line
    numbers are off by the lines before `begin`, which every span and message adds back.
    """
    text = source[begin:end]
    if not text.strip():
        return [], None, end
    shift = lines.before(begin)
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as err:
        at = getattr(err, "pos_in_stream", None)
        token = getattr(err, "token", None)
        where = end if at is None or getattr(token, "type", "") == "$END" else begin + at
        if not diagnose:
            return [], _FAILED, where
        return [], _shifted(_syntax_diagnostic(err, text, path, _what_follows(source, end, lines), shift), shift), where
    try:
        return _Builder(path, shift).build(tree), None, end
    except _TooDeepTree as err:
        where = begin + err.offset
        message, hint = _TOO_DEEP, "split long expressions into several assignments"
    except Exception as err:     # a literal the tree builder cannot take: local to this declaration
        where, message, hint = begin, f"cannot read this declaration: {err}", ""
    if not diagnose:
        return [], _FAILED, where
    line, col = _line_col(text, len(text) - len(text.lstrip()))
    return [], Diagnostic("error", message, A.Span(path, line + shift, col, line + shift, col + 1), hint, "syntax"), where


def _shifted(d: Diagnostic, lines: int) -> Diagnostic:
    """`d` moved down `lines` lines: a piece's diagnostic placed in its file."""
    if lines:
        s = d.span
        d.span = A.Span(s.file, s.line + lines, s.col, s.end_line + lines, s.end_col)
    return d


def _too_deep(source: str, at: int, lines: _Lines, path: str) -> Diagnostic:
    line = lines.before(at) + 1
    col = at - (source.rfind("\n", 0, at) + 1) + 1
    return Diagnostic("error", _TOO_DEEP, A.Span(path, line, col, line, col + 1),
                      f"brackets nest at most {MAX_NESTING} deep; split long expressions into several assignments",
                      "syntax")


def _pieces(source: str) -> tuple[list[int], dict[int, int]]:
    """Where the pieces of `source` start (0, each line that starts a declaration, and `len(source)`
    last), and, for each piece whose brackets nest deeper than `MAX_NESTING`, the offset of the
    bracket that goes too deep. Look-alikes inside strings and comments are skipped. One scan, and
    nothing kept per bracket: a file of a million brackets costs no memory here.
    """
    candidates = [m.start() for m in _ITEM_START.finditer(source) if m.start() > 0]
    starts, deep = [0], {}
    c, quoted_end, depth = 0, 0, 0
    for m in _QUOTED.finditer(source):
        at = m.start()
        while c < len(candidates) and candidates[c] < at:
            if candidates[c] >= quoted_end:     # not inside the last string or comment
                starts.append(candidates[c])
                depth = 0
            c += 1
        ch = source[at]
        if ch == '"' or ch == "#":
            quoted_end = m.end()
        elif ch in _OPENERS:
            depth += 1
            if depth > MAX_NESTING and len(starts) - 1 not in deep:
                deep[len(starts) - 1] = at
        elif depth:
            depth -= 1
    starts += [s for s in candidates[c:] if s >= quoted_end]
    starts.append(len(source))
    return starts, deep


# Strings, comments and brackets, in the order the lexer would see them.
_QUOTED = re.compile(r'"""(?:[^\\]|\\.)*?"""|"(?:[^"\\\n]|\\.)*"|#[^\n]*|[()\[\]{}]', re.S)
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}

# Characters that cannot start any token, with what the writer probably meant.
_CHAR_HINTS = {
    ";": "statements end at the end of the line; no ';' is needed",
    "/": "comments start with '#'",
    "`": "strings use double quotes",
    "!": "there is no '!' operator; test assertions compare with ==, !=, contains or in",
    "<": "'->' is the only arrow; test assertions compare with ==, !=, contains or in",
    ">": "'->' is the only arrow; test assertions compare with ==, !=, contains or in",
    "*": "pipelines only call modules and tools and join values with '+'",
    "-": "pipelines only call modules and tools and join values with '+'",
    "\\": "backslashes only appear inside strings",
}


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _syntax_diagnostic(err: UnexpectedInput, text: str, path: str, ending: str = "the end of the file",
                       shift: int = 0) -> Diagnostic:
    """The diagnostic for a parse error in `text`, with line numbers within `text` (`shift` more in
    the file: messages that name a line add it)."""
    if isinstance(err, UnexpectedCharacters):
        return _bad_character(err, text, path)
    token = getattr(err, "token", None)
    at_end = isinstance(err, UnexpectedEOF) or token is None or token.type == "$END"
    offset = len(text) if at_end else token.start_pos
    if at_end:
        lines = text.rstrip().split("\n")
        line, col = len(lines), len(lines[-1]) + 1
        span = A.Span(path, line, col, line, col + 1)
    else:
        span = A.Span(path, token.line, token.column, token.line, token.column + max(len(str(token).split("\n")[0]), 1))
    found = describe_token(token)
    bracket = _bracket_problem(text, offset, None if at_end else str(token), span, path,
                               ending if at_end else f"the {found} at line {span.line + shift}")
    if bracket is not None:
        return bracket
    expected = set(getattr(err, "expected", None) or ())
    if {"SIGNATURE", "PIPELINE", "MODULE"} <= expected:
        return _not_a_declaration(token, span, found, text, offset)
    label = match_mistake(err, _mistake_index())
    if label:
        message, hint, *flags = label.split("|")
        if "at-previous" in flags:
            span = _previous_token_span(text, offset, path) or span
        return Diagnostic("error", message, span, hint, "syntax")
    words = describe_expected(expected, _lark())
    return Diagnostic("error", f"unexpected {found}", span, f"expected {words}" if words else "", "syntax")


def _bad_character(err: UnexpectedCharacters, text: str, path: str) -> Diagnostic:
    pos = err.pos_in_stream
    ch = text[pos] if pos < len(text) else ""
    if ch == '"':
        hint = 'close it with " on the same line, or use """...""" for several lines'
        if text[max(pos - 2, 0):pos + 1] == '"""':
            pos, hint = pos - 2, 'close it with """'
        line, col = _line_col(text, pos)
        return Diagnostic("error", "unterminated string", A.Span(path, line, col, line, col + 1), hint, "syntax")
    line, col = _line_col(text, pos)
    span = A.Span(path, line, col, line, col + 1)
    if ch == "'":
        return Diagnostic("error", "strings use double quotes", span, 'write "text" instead of \'text\'', "syntax")
    if ch == "-" and re.match(r"\w-[A-Za-z_]", text[max(pos - 1, 0):pos + 2]):
        before = re.search(r"\w+$", text[:pos]).group()
        after = re.match(r"[\w-]+", text[pos + 1:]).group()
        return Diagnostic("error", "names cannot contain '-'", span,
                          f"names use letters, digits and '_': write `{before}_{after.replace('-', '_')}`", "syntax")
    shown = repr(ch) if ch.isprintable() and ch else f"U+{ord(ch):04X}" if ch else "end of file"
    hint = _CHAR_HINTS.get(ch, "")
    if not hint and ch and not ch.isascii():
        hint = "names use ASCII letters, digits and '_'; other text belongs in double-quoted strings"
    return Diagnostic("error", f"unexpected character {shown}", span, hint, "syntax")


def _bracket_problem(text: str, offset: int, token: str | None, span: A.Span, path: str,
                     where: str) -> Diagnostic | None:
    """An unclosed or unmatched bracket explains the error better than the parser state does.

    Before the error point every bracket is balanced as far as the parser is concerned, so the stack of
    open brackets there tells whether the error is a missing closer (end of file, a closer of another
    kind, or a new statement while a bracket from an earlier line is open) or a closer with no opener.
    """
    if token is not None and token not in _CLOSERS and not _starts_statement(text, offset, token):
        return None
    stack: list[tuple[str, int]] = []
    for m in _QUOTED.finditer(text, 0, offset):
        ch = m.group()
        if ch in _OPENERS:
            stack.append((ch, m.start()))
        elif ch in _CLOSERS and stack and stack[-1][0] == _CLOSERS[ch]:
            stack.pop()
    if token in _CLOSERS:
        if stack and stack[-1][0] == _CLOSERS[token]:
            return None     # the closer fits; the problem is what came before it
        if all(opener != _CLOSERS[token] for opener, _ in stack):
            return Diagnostic("error", f"unmatched '{token}'", span,
                              f"there is no '{_CLOSERS[token]}' for it to close", "syntax")
    elif token is not None:
        # A statement starts while a '(' or '[' from an earlier line is open: that line lacks its closer.
        if not stack or stack[-1][0] == "{" or "\n" not in text[stack[-1][1]:offset]:
            return None
    if not stack:
        return None
    opener, at = stack[-1]
    line, col = _line_col(text, at)
    return Diagnostic("error", f"unclosed '{opener}'", A.Span(path, line, col, line, col + 1),
                      f"add the matching '{_OPENERS[opener]}' before {where}", "syntax")


def _previous_token_span(text: str, offset: int, path: str) -> A.Span | None:
    """The span of the token before `offset`: the statement a mistake belongs to often starts there."""
    m = re.search(r"(\w+|\S)\s*$", text[:offset])
    if m is None:
        return None
    line, col = _line_col(text, m.start(1))
    return A.Span(path, line, col, line, col + len(m.group(1)))


def _starts_statement(text: str, offset: int, token: str) -> bool:
    """Whether the token at `offset` opens its line and looks like a statement (`return ...`, `x = ...`)."""
    if text[text.rfind("\n", 0, offset) + 1:offset].strip():
        return False
    return token == "return" or bool(re.match(r"[ \t]*=(?!=)", text[offset + len(token):]))


# Keywords of other languages that people type out of habit; no "did you mean" for them.
_FOREIGN_KEYWORDS = frozenset({"def", "class", "function", "fn", "let", "var", "const", "return", "from", "if",
                               "for", "while", "print", "async", "struct", "type", "interface", "export"})


def _not_a_declaration(token, span: A.Span, found: str, text: str, offset: int) -> Diagnostic:
    hint = "top-level items are " + ", ".join(ITEM_KEYWORDS[:-1]) + " and " + ITEM_KEYWORDS[-1]
    if token is not None and token.type == "NAME":
        if str(token) in _FOREIGN_KEYWORDS:
            return Diagnostic("error", f"expected a declaration, found name '{token}'", span,
                              f"a .pipe file is not a script: {hint}", "syntax")
        if re.match(r"\s*=(?!=)", text[offset + len(str(token)):]):
            return Diagnostic("error", f"expected a declaration, found name '{token}'", span,
                              "assignments belong inside a `pipeline name(...) -> (...) { ... }` body", "syntax")
        close = did_you_mean(str(token), ITEM_KEYWORDS, cutoff=0.75)
        if close:
            return Diagnostic("error", f"unknown keyword '{token}'", span, close, "syntax")
    return Diagnostic("error", f"expected a declaration, found {found}", span, hint, "syntax")


@lru_cache(maxsize=1)
def _mistake_index():
    return index_mistakes(_lark().parse)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0", "'": "'"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def dedent_long(text: str) -> str:
    r"""The body of a triple-quoted string: text on the opening line kept (stripped), the lines after it
    dedented by their common indentation, blank lines at either end dropped.

    >>> dedent_long("First line.\n       Second, indented.\n    Third.")
    'First line.\n   Second, indented.\nThird.'
    >>> dedent_long("\n    Starts below.\n      More.\n    ")
    'Starts below.\n  More.'
    """
    first, newline, rest = text.partition("\n")
    rest = textwrap.dedent(rest)
    body = (first.strip() + newline + rest) if first.strip() else rest
    return body.strip("\n").rstrip()


def unescape(body: str) -> str:
    r"""Resolve backslash escapes in a string literal's body.

    >>> unescape(r'a\tb\n\"c\" \u00e9')
    'a\tb\n"c" é'
    """
    def sub(m: re.Match) -> str:
        e = m.group(1)
        if e[0] == "u" and len(e) == 5:
            code = int(e[1:], 16)
            # A lone surrogate cannot be printed or encoded; it would crash whoever shows the string.
            return "\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)
        return _ESCAPES.get(e, "\\" + e)
    return _ESCAPE_RE.sub(sub, body)


class _TooDeepTree(Exception):
    def __init__(self, offset: int):
        super().__init__(offset)
        self.offset = offset


class _Builder:
    """Turns lark's parse tree into `dsl.ast` nodes: one method per rule, called with the rule's meta
    (its position) and its children already built. Spans are moved down `shift` lines."""

    def __init__(self, path: str, shift: int = 0):
        self.path, self.shift = path, shift

    def build(self, tree: Tree) -> list:
        """The items of a parse of `start`, built bottom-up with an explicit stack: lark's own
        Transformer recurses once per level and would fail on a deep tree, or deep in a call stack."""
        methods: dict[str, object] = {"start": lambda meta, ch: ch}
        values: list = []
        todo: list[tuple[object, int]] = [(tree, 1)]     # (node, depth); depth 0: a leaf, -1: build it now
        while todo:
            node, depth = todo.pop()
            if depth == 0:
                values.append(node)
            elif depth < 0:
                n = len(node.children)
                children = values[len(values) - n:]
                del values[len(values) - n:]
                method = methods.get(node.data)
                if method is None:
                    method = methods[node.data] = getattr(self, node.data)
                values.append(method(node.meta, children))
            else:
                if depth > MAX_TREE_DEPTH:
                    raise _TooDeepTree(getattr(node.meta, "start_pos", 0))
                todo.append((node, -1))
                todo.extend((c, depth + 1) if isinstance(c, Tree) else (c, 0) for c in reversed(node.children))
        return values[0]

    def _s(self, meta) -> A.Span:
        return A.Span(self.path, meta.line + self.shift, meta.column, meta.end_line + self.shift, meta.end_column)

    def _t(self, tok: Token) -> A.Span:
        return A.Span(self.path, tok.line + self.shift, tok.column, tok.end_line + self.shift, tok.end_column)

    # strings and values
    def string(self, meta, ch):
        tok = ch[0]
        if tok.type == "LONG_STRING":
            body = dedent_long(unescape(tok[3:-3]))
            return _Str(body.rstrip(), self._t(tok))
        return _Str(unescape(tok[1:-1]), self._t(tok))

    def number(self, meta, ch):
        text = str(ch[0])
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return A.Literal(self._s(meta), value)

    def true(self, meta, ch):
        return A.Literal(self._s(meta), True)

    def false(self, meta, ch):
        return A.Literal(self._s(meta), False)

    def ref(self, meta, ch):
        return A.Var(self._s(meta), str(ch[0]))

    def list_value(self, meta, ch):
        return A.ListLit(self._s(meta), [c for c in ch if c is not None])

    def record_value(self, meta, ch):
        return A.RecordLit(self._s(meta), [c for c in ch if c is not None])

    def option(self, meta, ch):
        return A.Option(self._s(meta), str(ch[0]), _plain(ch[1]))

    def option_list(self, meta, ch):
        return [c for c in ch if c is not None]

    # types
    def type(self, meta, ch):
        t: A.TypeRef = ch[0]
        t.optional = ch[1] is not None
        t.span = self._s(meta)
        return t

    def named_type(self, meta, ch):
        return A.TypeRef(self._s(meta), str(ch[0]))

    def generic_type(self, meta, ch):
        return A.TypeRef(self._s(meta), str(ch[0]), arg=ch[1])

    def enum_type(self, meta, ch):
        return A.TypeRef(self._s(meta), "enum", values=tuple(c for c in ch if c is not None))

    def enum_value(self, meta, ch):
        v = ch[0]
        return v.value if isinstance(v, _Str) else str(v)

    # declarations
    def import_decl(self, meta, ch):
        return A.Import(self._s(meta), ch[0].value)

    def lm_decl(self, meta, ch):
        name, source, opts = ch
        if isinstance(source, _Fallback):
            return A.LMDecl(self._s(meta), str(name), A.fallback_text(source.names), opts or [], self._t(name),
                            source.span, source.names, source.spans)
        return A.LMDecl(self._s(meta), str(name), source.value, opts or [], self._t(name), source.span)

    def fallback(self, meta, ch):
        names = [c for c in ch if c is not None]
        return _Fallback([str(n) for n in names], [self._t(n) for n in names], self._s(meta))

    def default_decl(self, meta, ch):
        return A.DefaultLM(self._s(meta), str(ch[0]), self._t(ch[0]))

    def field_dir(self, meta, ch):
        return str(ch[0])

    def sig_field(self, meta, ch):
        return A.Field(self._s(meta), str(ch[1]), ch[2], ch[3].value if ch[3] else "", ch[0])

    def signature(self, meta, ch):
        name, instr, *fields = ch
        return A.Signature(self._s(meta), str(name), instr.value if instr else "", fields,
                           self._t(name))

    def record_field(self, meta, ch):
        return A.Field(self._s(meta), str(ch[0]), ch[1], ch[2].value if ch[2] else "")

    def record(self, meta, ch):
        name, desc, *fields = ch
        return A.Record(self._s(meta), str(name), desc.value if desc else "", fields, self._t(name))

    def module_decl(self, meta, ch):
        name, kind, sig, *opts = ch
        options = [o for o in opts if o is not None]
        if isinstance(kind, _OneOf):
            return A.ModuleDecl(self._s(meta), str(name), A.ONE_OF, str(sig), options, self._t(name), kind.span,
                                self._t(sig), kind.alternatives)
        return A.ModuleDecl(self._s(meta), str(name), str(kind), str(sig), options, self._t(name), self._t(kind),
                            self._t(sig))

    def kind_alt(self, meta, ch):
        return A.Alternative(self._s(meta), str(ch[0]), ch[1] or [], self._t(ch[0]), str(ch[0]))

    def one_of(self, meta, ch):
        alts = [c for c in ch if c is not None]
        seen: dict[str, int] = {}
        for alt in alts:            # a kind listed again is told apart by its place: Majority, Majority_2
            seen[alt.kind] = seen.get(alt.kind, 0) + 1
            if seen[alt.kind] > 1:
                alt.label = f"{alt.kind}_{seen[alt.kind]}"
        start = self._s(meta)       # the caret of a one_of module's diagnostics: the word `one_of`
        return _OneOf(alts, A.Span(start.file, start.line, start.col, start.line, start.col + len(A.ONE_OF)))

    def param(self, meta, ch):
        return A.Field(self._s(meta), str(ch[0]), ch[1], ch[2].value if ch[2] else "")

    def tool_sig(self, meta, ch):
        *params, ret = ch
        return ([p for p in params if p is not None], ret)

    def tool_decl(self, meta, ch):
        name, sig, loader, target = ch
        params, ret = sig if sig is not None else (None, None)
        return A.ToolDecl(self._s(meta), str(name), str(loader), target.value, params, ret,
                          self._t(name), self._t(loader), target.span)

    def out_param(self, meta, ch):
        return A.OutParam(self._s(meta), str(ch[0]), ch[1])

    def pipeline(self, meta, ch):
        name = ch[0]
        params = [c for c in ch[1:] if isinstance(c, A.Field)]
        outs = [c for c in ch[1:] if isinstance(c, A.OutParam)]
        body = [c for c in ch[1:] if isinstance(c, (A.Assign, A.Return))]
        return A.Pipeline(self._s(meta), str(name), params, outs, body, self._t(name))

    def assign(self, meta, ch):
        return A.Assign(self._s(meta), str(ch[0]), _e(ch[1]), self._t(ch[0]))

    def ret_item(self, meta, ch):
        return A.ReturnItem(self._s(meta), str(ch[0]), _e(ch[1]))

    def return_stmt(self, meta, ch):
        return A.Return(self._s(meta), list(ch))

    def setting(self, meta, ch):
        return A.Setting(self._s(meta), str(ch[0]), _e(ch[1]))

    def compile_block(self, meta, ch):
        return A.CompileBlock(self._s(meta), str(ch[0]), list(ch[1:]), self._t(ch[0]))

    def cmp(self, meta, ch):
        return str(ch[0])

    def assertion(self, meta, ch):
        return A.Assertion(self._s(meta), _e(ch[0]), ch[1], _e(ch[2]))

    def test_case(self, meta, ch):
        return A.TestCase(self._s(meta), ch[0], list(ch[1:]))

    def test_block(self, meta, ch):
        return A.TestBlock(self._s(meta), ch[0].value, list(ch[1:]))

    # expressions
    def var(self, meta, ch):
        return A.Var(self._s(meta), str(ch[0]))

    def attr(self, meta, ch):
        return A.Attr(self._s(meta), _e(ch[0]), str(ch[1]))

    def concat(self, meta, ch):
        return A.Concat(self._s(meta), _e(ch[0]), _e(ch[1]))

    def list_lit(self, meta, ch):
        return A.ListLit(self._s(meta), [_e(c) for c in ch if c is not None])

    def named_arg(self, meta, ch):
        return A.Arg(self._s(meta), str(ch[0]), _e(ch[1]))

    def pos_arg(self, meta, ch):
        return A.Arg(self._s(meta), None, _e(ch[0]))

    def map_expr(self, meta, ch):
        var, over, order, bound, body = ch
        text = str(bound)
        value = int(text) if text.lstrip("-").isdigit() else -1     # the checker reports a non-integer bound
        return A.MapExpr(self._s(meta), str(var), _e(over), order is not None, value, _e(body),
                         self._t(var), self._t(bound))

    def call(self, meta, ch):
        return A.Call(self._s(meta), str(ch[0]), [c for c in ch[1:] if c is not None], self._t(ch[0]))


class _OneOf:
    """A module's `one_of(...)` before the declaration is built: its alternatives and where it is."""

    __slots__ = ("alternatives", "span")

    def __init__(self, alternatives: list[A.Alternative], span: A.Span):
        self.alternatives, self.span = alternatives, span


class _Fallback:
    """An lm's `fallback(a, b)` before the declaration is built: the names and where each is."""

    __slots__ = ("names", "spans", "span")

    def __init__(self, names: list[str], spans: list[A.Span], span: A.Span):
        self.names, self.spans, self.span = names, spans, span


class _Str:
    """A string literal before it is placed: keeps its span for expressions."""

    __slots__ = ("value", "span")

    def __init__(self, value: str, span: A.Span):
        self.value, self.span = value, span


def _e(v):
    """String literals in expression position become `Literal` nodes."""
    return A.Literal(v.span, v.value) if isinstance(v, _Str) else v


def _plain(v):
    """Option values: literals become Python values, bare names become `Ref`."""
    if isinstance(v, _Str):
        return v.value
    if isinstance(v, A.Literal):
        return v.value
    if isinstance(v, A.Var):
        return A.Ref(v.name)
    if isinstance(v, A.ListLit):
        return [_plain(x) for x in v.items]
    return v
