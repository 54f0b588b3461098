"""`pipec fmt`: one canonical layout for .pipe files, comments kept where they were.

The layout is the one the examples are written in:

- four spaces per block level; one item, field, statement or setting per line;
- a signature's fields as `in  name: type "description"` / `out name: ...` (the direction padded, so
  the names line up);
- runs of consecutive `lm` declarations, one-line `module` declarations, pipeline assignments and
  compile settings aligned at their `=` (a run ends at a blank line, a comment line or another kind
  of line), and trailing comments of consecutive lines aligned two spaces after the longest;
- single spaces around `=`, `->`, `+` and comparisons, after `,` and `:`, none inside brackets;
- a bracketed list that ends with a comma (`one_of(...)`, arguments, options, a list, parameters)
  is written one element per line (the "magic trailing comma" of black and prettier), any other on
  one line: the author chooses, the formatter never wraps on its own;
- blank lines as written, at most one in a row, none at the start or end of a block;
- comments stay on their line: a comment after code stays after that code, a comment on its own
  line stays on its own line before what followed it.

Formatting is idempotent (formatting formatted text changes nothing) and keeps the meaning: the
formatted text parses to the same tree (tested on every example and on random valid programs).
Strings, numbers and names are written exactly as they were.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree

from .diagnostics import Diagnostic

INDENT = "    "
_LOCAL = threading.local()
_COMMENT_OR_SPACE = re.compile(r"(?:\s+|#[^\n]*)*")
# Kinds of lines aligned at their `=` when consecutive.
_ALIGNED = {"lm_decl", "module_decl", "assign", "setting"}


class FormatError(ValueError):
    """The source does not parse; `diagnostics` says where (every syntax error, as `pipec check`)."""

    def __init__(self, diagnostics: list[Diagnostic], source: str, path: str):
        from .diagnostics import render_all
        self.diagnostics = diagnostics
        super().__init__(render_all(diagnostics, {path: source}))


def format_source(source: str, path: str = "<string>") -> str:
    """The canonical layout of `source`; raises FormatError if it does not parse.

    >>> print(format_source('signature S{"Do it." in q:str out a : list[ str ]}'), end="")
    signature S {
        "Do it."
        in  q: str
        out a: list[str]
    }
    >>> print(format_source('module m = Predict(S)\\nmodule long_name = Predict(S)  # two'), end="")
    module m         = Predict(S)
    module long_name = Predict(S)  # two
    """
    bom = "\ufeff" if source.startswith("\ufeff") else ""
    text = source[len(bom):].replace("\r\n", "\n").replace("\r", "\n")
    tree, comments = _parse(text, path)
    printer = _Printer(text, comments)
    printer.file(tree)
    return bom + printer.render()


def _parse(text: str, path: str) -> tuple[Tree, list[Token]]:
    from .parser import parse
    _, diags = parse(text, path)
    if diags:
        raise FormatError(diags, text, path)
    _LOCAL.comments = []
    try:
        tree = _lark().parse(text)
        return tree, list(_LOCAL.comments)
    finally:
        _LOCAL.comments = []


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = Path(__file__).with_name("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True,
                lexer_callbacks={"COMMENT": lambda tok: _LOCAL.comments.append(tok)})


# ---------------------------------------------------------------------------- output lines
@dataclass
class _Line:
    indent: int
    parts: list[str] = field(default_factory=list)
    first: int | None = None            # source line of its first token
    last: int | None = None             # source line where its last token ends
    kind: str | None = None             # an aligned kind: parts[eq] is its " = "
    eq: int = 0
    leading: list[tuple[int, str]] = field(default_factory=list)    # (source line, comment) before it
    trailing: list[str] = field(default_factory=list)
    blank_before: bool = False          # a blank line before it (after its leading comments)
    comment_blanks: set = field(default_factory=set)     # leading comments with a blank line before them
    comment_col: int = 0                # where its trailing comment starts

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _Printer:
    def __init__(self, source: str, comments: list[Token]):
        self.source = source
        self.comments = comments
        self.next_comment = 0
        self.lines: list[_Line] = []
        self.level = 0
        self.line = _Line(0)
        self.last_token_line: _Line | None = None     # the output line holding the last token written
        self.last_token_src: int = 0                   # its source line

    # ------------------------------------------------------------------ low level
    def newline(self) -> None:
        if self.line.parts:
            self.lines.append(self.line)
        elif self.line.leading:         # comments waiting for a line that did not come: keep them
            self.lines.append(self.line)
        self.line = _Line(self.level)

    def comments_before(self, pos: int) -> None:
        """Place every comment that comes before source offset `pos`."""
        while self.next_comment < len(self.comments) and self.comments[self.next_comment].start_pos < pos:
            c = self.comments[self.next_comment]
            self.next_comment += 1
            text = c.value.rstrip()
            if self.last_token_line is not None and c.line == self.last_token_src:
                self.last_token_line.trailing.append(text)
            else:
                self.line.leading.append((c.line, text))

    def put(self, text: str, pos: int | None = None, line: int | None = None, end_line: int | None = None) -> None:
        """Write `text`; with the source offset and lines of the token it stands for, if it has one."""
        if pos is not None:
            self.comments_before(pos)
        if not self.line.parts:
            self.line.indent = self.level
        self.line.parts.append(text)
        if line is not None:
            if self.line.first is None:
                self.line.first = line
            self.line.last = end_line or line
            self.last_token_line, self.last_token_src = self.line, end_line or line

    def aligned(self, kind: str) -> None:
        """The current line is of an aligned kind, and its `=` is written next."""
        self.line.kind, self.line.eq = kind, len(self.line.parts)

    def token(self, tok: Token) -> None:
        self.put(str(tok), tok.start_pos, tok.line, tok.end_line)

    def close(self, text: str, node: Tree) -> None:
        """A closing bracket: comments written before it go before it, inside the block."""
        end = node.meta.end_pos
        self.comments_before(end - 1)
        self.put(text, None, node.meta.end_line, node.meta.end_line)

    def trailing_comma(self, after: int) -> bool:
        """Whether a comma follows source offset `after` (spaces and comments skipped)."""
        m = _COMMENT_OR_SPACE.match(self.source, after)
        return self.source.startswith(",", m.end())

    # ------------------------------------------------------------------ items
    def file(self, tree: Tree) -> None:
        for item in tree.children:
            self.item(item)
            self.newline()
        self.comments_before(len(self.source) + 1)
        self.newline()

    def item(self, node: Tree) -> None:
        getattr(self, "item_" + node.data)(node)

    def item_import_decl(self, node):
        self.put("import ", self._pos(node))
        self.string(node.children[0])

    def item_lm_decl(self, node):
        name, source, opts = node.children
        self.put("lm ", self._pos(node))
        self.token(name)
        self.aligned("lm_decl")
        self.put(" = ")
        if source.data == "fallback":
            self.put("fallback", source.meta.start_pos)
            self.sequence(source.children, self.token, "(", ")", source.meta.end_pos, source)
        else:
            self.string(source)
        if opts is not None:
            self.put(" ")
            self.option_list(opts)

    def item_default_decl(self, node):
        self.put("default lm = ", self._pos(node))
        self.token(node.children[0])

    def item_signature(self, node):
        self.fields_block(node, "signature")

    def item_record(self, node):
        self.fields_block(node, "record")

    def fields_block(self, node, keyword: str) -> None:
        """`signature S {` or `record R {`, its doc string, one field per line (a signature's field
        direction padded so the names line up), `}`."""
        name, doc, *fields = node.children
        self.put(keyword + " ", self._pos(node))
        self.token(name)
        self.block_open()
        if doc is not None:
            self.string(doc)
            self.newline()
        for f in fields:
            parts = f.children
            if f.data == "sig_field":
                direction, *parts = parts
                self.token(direction.children[0])
                self.put(" " * (4 - len(str(direction.children[0]))))
            self.field(*parts)
        self.block_close(node)

    def field(self, name, typ, desc) -> None:
        """`name: type "description"` on a line of its own (a signature's or a record's field)."""
        self.token(name)
        self.put(": ")
        self.type(typ)
        if desc is not None:
            self.put(" ")
            self.string(desc)
        self.newline()

    def item_module_decl(self, node):
        name, kind, sig, *opts = node.children
        self.put("module ", self._pos(node))
        self.token(name)
        start = len(self.lines)
        self.aligned("module_decl")
        self.put(" = ")
        if isinstance(kind, Token):
            self.token(kind)
        else:
            self.put("one_of", kind.meta.start_pos)
            self.sequence(kind.children, self.kind_alt, "(", ")", kind.meta.end_pos, kind)
        self.sequence([sig, *opts], self.option_or_name, "(", ")", node.meta.end_pos, node)
        if len(self.lines) > start:           # written over several lines: not aligned with its neighbours
            self.lines[start].kind = None

    def kind_alt(self, node):
        name, opts = node.children
        self.token(name)
        if opts is not None:
            self.option_list(opts)

    def option_or_name(self, node):
        if isinstance(node, Token):
            self.token(node)
        else:
            self.option(node)

    def item_tool_decl(self, node):
        name, sig, impl, target = node.children
        self.put("tool ", self._pos(node))
        self.token(name)
        if sig is not None:
            *params, ret = sig.children
            params = [p for p in params if p is not None]
            self.sequence(params, self.param, "(", ")", _start(ret), None)
            self.put(" -> ")
            self.type(ret)
        self.put(" = ")
        self.token(impl)
        self.put("(")
        self.string(target)
        self.close(")", node)

    def item_pipeline(self, node):
        name, *rest = node.children
        rest = [c for c in rest if c is not None]
        params = [c for c in rest if isinstance(c, Tree) and c.data == "param"]
        outs = [c for c in rest if isinstance(c, Tree) and c.data == "out_param"]
        stmts = [c for c in rest if isinstance(c, Tree) and c.data not in ("param", "out_param")]
        self.put("pipeline ", self._pos(node))
        self.token(name)
        after_params = _start(outs[0]) if outs else (_start(stmts[0]) if stmts else node.meta.end_pos)
        self.sequence(params, self.param, "(", ")", after_params, None)
        self.put(" -> ")
        after_outs = _start(stmts[0]) if stmts else node.meta.end_pos
        self.sequence(outs, self.out_param, "(", ")", after_outs, None)
        self.block_open()
        for s in stmts:
            if s.data == "assign":
                target, value = s.children
                self.token(target)
                start = len(self.lines)
                self.aligned("assign")
                self.put(" = ")
                self.expr(value)
                if len(self.lines) > start:
                    self.lines[start].kind = None
            else:
                self.put("return ", self._pos(s))
                for i, item in enumerate(s.children):
                    if i:
                        self.put(", ")
                    target, value = item.children
                    self.token(target)
                    self.put(" = ")
                    self.expr(value)
            self.newline()
        self.block_close(node)

    def param(self, node):
        name, typ, desc = node.children
        self.token(name)
        self.put(": ")
        self.type(typ)
        if desc is not None:
            self.put(" ")
            self.string(desc)

    def out_param(self, node):
        name, typ = node.children
        self.token(name)
        if typ is not None:
            self.put(": ")
            self.type(typ)

    def item_compile_block(self, node):
        name, *settings = node.children
        self.put("compile ", self._pos(node))
        self.token(name)
        self.block_open()
        for s in settings:
            key, value = s.children
            self.token(key)
            start = len(self.lines)
            self.aligned("setting")
            self.put(" = ")
            self.expr(value)
            if len(self.lines) > start:
                self.lines[start].kind = None
            self.newline()
        self.block_close(node)

    def item_test_block(self, node):
        name, *cases = node.children
        self.put("test ", self._pos(node))
        self.string(name)
        self.block_open()
        for case in cases:
            call, *assertions = case.children
            self.expr(call)
            self.put(" -> ")
            for i, a in enumerate(assertions):
                if i:
                    self.put(", ")
                left, cmp, right = a.children
                self.expr(left)
                self.put(" ")
                self.token(cmp.children[0])
                self.put(" ")
                self.expr(right)
            self.newline()
        self.block_close(node)

    def block_open(self) -> None:
        self.put(" {")
        self.newline()
        self.level += 1
        self.line.indent = self.level

    def block_close(self, node: Tree) -> None:
        self.newline()
        self.comments_before(node.meta.end_pos - 1)
        self.level -= 1
        self.line.indent = self.level
        self.close("}", node)

    # ------------------------------------------------------------------ pieces
    def sequence(self, items: list, write, open_: str, close: str, after: int | None, node: Tree | None) -> None:
        """`open_ a, b close`, or one element per line when the list ends with a comma."""
        items = [i for i in items if i is not None]
        exploded = bool(items) and self.trailing_comma(_end(items[-1]))
        self.put(open_)
        if exploded:
            self.level += 1
            self.newline()
            for item in items:
                write(item)
                self.put(",")
                self.newline()
            self.level -= 1
            self.line.indent = self.level
        else:
            for i, item in enumerate(items):
                if i:
                    self.put(", ")
                write(item)
        if node is not None:
            self.close(close, node)
        else:
            if after is not None and exploded:
                self.comments_before(after)
            self.put(close)

    def option_list(self, node: Tree) -> None:
        self.sequence(node.children, self.option, "(", ")", node.meta.end_pos, node)

    def option(self, node: Tree) -> None:
        name, value = node.children
        self.token(name)
        self.put(": ")
        self.value(value)

    def value(self, node) -> None:
        if isinstance(node, Token):
            self.token(node)
            return
        kind = node.data
        if kind == "string":
            self.string(node)
        elif kind in ("number", "ref"):
            self.token(node.children[0])
        elif kind in ("true", "false"):
            self.put(kind, node.meta.start_pos, node.meta.line, node.meta.end_line)
        elif kind == "list_value":
            self.sequence(node.children, self.value, "[", "]", node.meta.end_pos, node)
        elif kind == "record_value":
            self.sequence(node.children, self.option, "{", "}", node.meta.end_pos, node)
        else:
            raise AssertionError(f"unknown value node {kind}")

    def string(self, node) -> None:
        self.token(node.children[0] if isinstance(node, Tree) else node)

    def type(self, node: Tree) -> None:
        atom, optional = node.children
        kind = atom.data
        if kind == "named_type":
            self.token(atom.children[0])
        elif kind == "generic_type":
            self.token(atom.children[0])
            self.put("[")
            self.type(atom.children[1])
            self.close("]", atom)
        else:               # enum_type
            self.put("enum", atom.meta.start_pos, atom.meta.line)
            self.sequence(atom.children, self.enum_value, "(", ")", atom.meta.end_pos, atom)
        if optional is not None:
            self.put("?")

    def enum_value(self, node: Tree) -> None:
        child = node.children[0]
        if isinstance(child, Token):
            self.token(child)
        else:
            self.string(child)

    def expr(self, node) -> None:
        if isinstance(node, Token):
            self.token(node)
            return
        kind = node.data
        if kind == "var":
            self.token(node.children[0])
        elif kind in ("string", "number", "true", "false"):
            self.value(node)
        elif kind == "concat":
            left, right = node.children
            self.expr(left)
            self.put(" + ")
            self.wrapped(right, "concat")
        elif kind == "attr":
            obj, name = node.children
            self.wrapped(obj, "concat")
            self.put(".")
            self.token(name)
        elif kind == "call":
            name, *args = node.children
            self.token(name)
            self.sequence(args, self.arg, "(", ")", node.meta.end_pos, node)
        elif kind == "list_lit":
            self.sequence(node.children, self.expr, "[", "]", node.meta.end_pos, node)
        elif kind == "map_expr":
            var, source, order, bound, body = node.children
            self.put("map ", node.meta.start_pos, node.meta.line)
            self.token(var)
            self.put(" in ")
            self.expr(source)
            if order is not None:
                self.put(" ")
                self.token(order)
            self.put(" max ")
            self.token(bound)
            self.put(" { ")
            self.expr(body)
            self.put(" ")
            self.close("}", node)
        else:
            raise AssertionError(f"unknown expression node {kind}")

    def wrapped(self, node, parenthesise: str) -> None:
        """An operand that the grammar would read differently without its parentheses."""
        if isinstance(node, Tree) and node.data == parenthesise:
            self.put("(")
            self.expr(node)
            self.put(")")
        else:
            self.expr(node)

    def arg(self, node: Tree) -> None:
        if node.data == "named_arg":
            name, value = node.children
            self.token(name)
            self.put(": ")
            self.expr(value)
        else:
            self.expr(node.children[0])

    @staticmethod
    def _pos(node: Tree) -> int:
        return node.meta.start_pos

    # ------------------------------------------------------------------ layout
    def render(self) -> str:
        self.lines = [line for line in self.lines if line.parts or line.leading]
        _blank_lines(self.lines)
        _align(self.lines)
        out: list[str] = []
        for line in self.lines:
            closes = line.text[:1] in ("}", ")", "]")
            for i, (src, text) in enumerate(line.leading):
                if i in line.comment_blanks:
                    out.append("")
                out.append(INDENT * (line.indent + (1 if closes else 0)) + text)
            if not line.parts:
                continue
            if line.blank_before:
                out.append("")
            text = INDENT * line.indent + line.text
            if line.trailing:
                text = text.ljust(line.comment_col) + " ".join(line.trailing)
            out.append(text.rstrip())
        return "\n".join(out) + "\n" if out else ""


def _blank_lines(lines: list[_Line]) -> None:
    """Blank lines where the source had at least one, never right after a line that opens a block or
    right before one that closes it."""
    prev_last: int | None = None       # source line where the previous output ended
    prev_opens = True                  # the previous output line opened a block (or the file starts)
    for line in lines:
        closes = line.text[:1] in ("}", ")", "]")
        line.comment_blanks = set()
        for i, (src, _) in enumerate(line.leading):
            if prev_last is not None and src - prev_last >= 2 and not prev_opens:
                line.comment_blanks.add(i)
            prev_last, prev_opens = src, False
        if not line.parts:
            continue
        line.blank_before = (prev_last is not None and line.first is not None and line.first - prev_last >= 2
                             and not prev_opens and not closes)
        if line.last is not None:
            prev_last = line.last
        prev_opens = line.text[-1:] in ("{", "(", "[")


def _align(lines: list[_Line]) -> None:
    """Pad runs of consecutive lines of one aligned kind at their `=`, and align trailing comments
    of consecutive lines. A blank line or a comment line ends a run."""
    def runs(key):
        run: list[_Line] = []
        for line in lines:
            k = key(line)
            if run and (k != key(run[-1]) or line.leading or line.blank_before):
                yield run
                run = []
            if k is not None and line.parts:
                run.append(line)
        if run:
            yield run

    for run in runs(lambda line: (line.kind, line.indent) if line.kind in _ALIGNED else None):
        width = max(len("".join(line.parts[:line.eq])) for line in run)
        for line in run:
            line.parts[:line.eq] = ["".join(line.parts[:line.eq]).ljust(width)]
            line.eq = 1
    for run in runs(lambda line: line.indent if line.trailing else None):
        col = max(len(INDENT * line.indent + line.text) for line in run) + 2
        for line in run:
            line.comment_col = col


def _start(node) -> int:
    return node.start_pos if isinstance(node, Token) else node.meta.start_pos


def _end(node) -> int:
    return node.end_pos if isinstance(node, Token) else node.meta.end_pos


def check_formatted(source: str, path: str = "<string>") -> bool:
    """Whether `source` is already in the canonical layout.

    >>> check_formatted("default lm = local\\n"), check_formatted("default  lm=local")
    (True, False)
    """
    return format_source(source, path) == source
