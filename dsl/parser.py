"""Parse .pipe source text into an AST, collecting every syntax error instead of stopping at the first.

Recovery works at the level of top-level declarations: when the whole file does not parse, it is cut at
each line that starts a declaration (`signature`, `module`, `pipeline`, ...) and every piece is parsed
on its own, so one broken declaration costs one diagnostic and the rest of the file is still checked.
"""
from __future__ import annotations

import re
import textwrap
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast as A
from .diagnostics import Diagnostic
from .syntax_errors import KNOWN_MISTAKES, describe_expected, describe_token

_ITEM_START = re.compile(r"^(import|lm|default|signature|record|module|tool|pipeline|compile|test)\b", re.M)
_ITEM_NAME = re.compile(r"^(?:lm|signature|record|module|tool|pipeline)\s+([A-Za-z_][A-Za-z0-9_]*)")


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = (Path(__file__).with_name("grammar.lark")).read_text()
    # cache=True stores the built LALR tables in a temp file keyed by grammar and lark version.
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=True, cache=True)


def parse(source: str, path: str = "<string>") -> tuple[A.File, list[Diagnostic]]:
    """Parse `source`; return the AST of everything that parsed and one diagnostic per syntax error.

    >>> f, diags = parse('signature S { in q: str  out a: str }', "x.pipe")
    >>> f.items[0].name, diags
    ('S', [])
    """
    parser = _lark()
    file = A.File(path=path, source=source)
    try:
        tree = parser.parse(source)
        file.items = _Builder(path).transform(tree).children
        return file, []
    except UnexpectedInput:
        pass
    diags: list[Diagnostic] = []
    starts = [m.start() for m in _ITEM_START.finditer(source)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    starts.append(len(source))
    for begin, end in zip(starts, starts[1:]):
        piece = source[begin:end]
        if not piece.strip():
            continue
        # Pad with the newlines before the piece so lark reports absolute line numbers.
        padded = "\n" * source.count("\n", 0, begin) + piece
        try:
            tree = parser.parse(padded)
            file.items.extend(_Builder(path).transform(tree).children)
        except UnexpectedInput as err:
            diags.append(_syntax_diagnostic(err, padded, path))
            m = _ITEM_NAME.match(piece)
            if m:
                file.broken_names.add(m.group(1))
        except VisitError as err:  # a transformer-level error such as a bad escape
            raise err.orig_exc from None
    return file, diags


def _syntax_diagnostic(err: UnexpectedInput, text: str, path: str) -> Diagnostic:
    line, col = err.line, err.column
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        lines = text.rstrip().splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    span = A.Span(path, max(line, 1), max(col, 1), max(line, 1), max(col, 1) + 1)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        if ch == "'":
            return Diagnostic("error", "strings use double quotes", span,
                              'write "text" instead of \'text\'', "syntax")
        if ch == '"':
            return Diagnostic("error", "unterminated string", span,
                              'close it with " on the same line, or use """...""" for several lines', "syntax")
        return Diagnostic("error", f"unexpected character {ch!r}", span, "", "syntax")
    label = err.match_examples(lambda s: _lark().parse(s), KNOWN_MISTAKES, use_accepts=True)
    token = getattr(err, "token", None)
    if token is not None and token.type != "$END":
        span = A.Span(path, line, col, line, col + max(len(str(token)), 1))
    found = describe_token(token)
    if label:
        message, _, hint = label.partition("|")
        return Diagnostic("error", message, span, hint, "syntax")
    expected = describe_expected(getattr(err, "accepts", None) or getattr(err, "expected", set()), _lark())
    return Diagnostic("error", f"unexpected {found}", span, f"expected {expected}" if expected else "", "syntax")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0", "'": "'"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def unescape(body: str) -> str:
    r"""Resolve backslash escapes in a string literal's body.

    >>> unescape(r'a\tb\n\"c\" \u00e9')
    'a\tb\n"c" é'
    """
    def sub(m: re.Match) -> str:
        e = m.group(1)
        if e[0] == "u" and len(e) == 5:
            return chr(int(e[1:], 16))
        return _ESCAPES.get(e, "\\" + e)
    return _ESCAPE_RE.sub(sub, body)


def _span(path: str, meta) -> A.Span:
    return A.Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(path: str, tok: Token) -> A.Span:
    return A.Span(path, tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _Builder(Transformer):
    """Turns lark's parse tree into `dsl.ast` nodes."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _s(self, meta) -> A.Span:
        return _span(self.path, meta)

    # strings and values
    def string(self, meta, ch):
        tok = ch[0]
        if tok.type == "LONG_STRING":
            body = textwrap.dedent(unescape(tok[3:-3])).strip("\n")
            return _Str(body.rstrip(), _tok_span(self.path, tok))
        return _Str(unescape(tok[1:-1]), _tok_span(self.path, tok))

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
        return A.LMDecl(self._s(meta), str(ch[0]), ch[1].value, ch[2] or [], _tok_span(self.path, ch[0]))

    def default_decl(self, meta, ch):
        return A.DefaultLM(self._s(meta), str(ch[0]), _tok_span(self.path, ch[0]))

    def field_dir(self, meta, ch):
        return str(ch[0])

    def sig_field(self, meta, ch):
        return A.Field(self._s(meta), str(ch[1]), ch[2], ch[3].value if ch[3] else "", ch[0])

    def signature(self, meta, ch):
        name, instr, *fields = ch
        return A.Signature(self._s(meta), str(name), instr.value if instr else "", fields,
                           _tok_span(self.path, name))

    def record_field(self, meta, ch):
        return A.Field(self._s(meta), str(ch[0]), ch[1], ch[2].value if ch[2] else "")

    def record(self, meta, ch):
        name, desc, *fields = ch
        return A.Record(self._s(meta), str(name), desc.value if desc else "", fields, _tok_span(self.path, name))

    def module_decl(self, meta, ch):
        name, kind, sig, *opts = ch
        return A.ModuleDecl(self._s(meta), str(name), str(kind), str(sig), [o for o in opts if o is not None],
                            _tok_span(self.path, name), _tok_span(self.path, kind), _tok_span(self.path, sig))

    def param(self, meta, ch):
        return A.Field(self._s(meta), str(ch[0]), ch[1], ch[2].value if ch[2] else "")

    def tool_sig(self, meta, ch):
        *params, ret = ch
        return ([p for p in params if p is not None], ret)

    def tool_decl(self, meta, ch):
        name, sig, loader, target = ch
        params, ret = sig if sig is not None else (None, None)
        return A.ToolDecl(self._s(meta), str(name), str(loader), target.value, params, ret,
                          _tok_span(self.path, name), _tok_span(self.path, loader))

    def out_param(self, meta, ch):
        return A.OutParam(self._s(meta), str(ch[0]), ch[1])

    def pipeline(self, meta, ch):
        name = ch[0]
        params = [c for c in ch[1:] if isinstance(c, A.Field)]
        outs = [c for c in ch[1:] if isinstance(c, A.OutParam)]
        body = [c for c in ch[1:] if isinstance(c, (A.Assign, A.Return))]
        return A.Pipeline(self._s(meta), str(name), params, outs, body, _tok_span(self.path, name))

    def assign(self, meta, ch):
        return A.Assign(self._s(meta), str(ch[0]), _e(ch[1]), _tok_span(self.path, ch[0]))

    def ret_item(self, meta, ch):
        return A.ReturnItem(self._s(meta), str(ch[0]), _e(ch[1]))

    def return_stmt(self, meta, ch):
        return A.Return(self._s(meta), list(ch))

    def setting(self, meta, ch):
        return A.Setting(self._s(meta), str(ch[0]), _e(ch[1]))

    def compile_block(self, meta, ch):
        return A.CompileBlock(self._s(meta), str(ch[0]), list(ch[1:]), _tok_span(self.path, ch[0]))

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

    def call(self, meta, ch):
        return A.Call(self._s(meta), str(ch[0]), [c for c in ch[1:] if c is not None], _tok_span(self.path, ch[0]))


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
