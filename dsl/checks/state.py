"""The one state every pass reads and writes: the program being checked and its diagnostics.

A pass is a function of a `CheckState`. It fills in `program` (declarations by kind, resolved types)
and appends to `diagnostics` through `error` and `warn`; what passes share besides (the declared
names, resolved types, did-you-mean indexes) lives here too, built once per check.
"""
from __future__ import annotations

import re

from .. import ast as A
from ..catalogue import Catalogue
from ..checked_program import CheckedProgram
from ..diagnostics import Diagnostic, Names, did_you_mean
from ..types import ANY, BOOL, FLOAT, INT, SCALARS, STR, Type


class CheckState:
    """One check of a program: what the passes have found so far."""

    def __init__(self, files: list[A.File], catalogue: Catalogue):
        self.files = files
        self.catalogue = catalogue
        self.program = CheckedProgram(files)
        self.diagnostics: list[Diagnostic] = []
        self.check_pass = ""       # the pass running: what `error` and `warn` record as a diagnostic's origin
        self.items = [it for f in files for it in f.items]     # every declaration: the main file's, then imports'
        self.file_of: dict[int, A.File] = {id(it): f for f in files for it in f.items}
        self.broken = set().union(*(f.broken_names for f in files)) if files else set()
        self.declared: dict[str, tuple[str, A.Span]] = {}      # every top-level name: its kind, where it is declared
        self.has_default = False                               # the files set `default lm`
        self.compiled: dict[str, A.CompileBlock] = {}          # per pipeline: its first compile block
        self.tested: dict[str, A.TestBlock] = {}               # per test name: its first test block
        # Indexes built once per check: a big program must not cost its size at every use.
        self.resolved: dict[int, tuple[A.TypeRef, Type]] = {}
        self.sources = {f.path: f.source for f in files}
        self.lines: dict[str, list[str]] = {}     # each source split into lines once, for snippets
        self.namespaces: dict[str, Names] = {}    # did-you-mean candidates, indexed once per kind of name
        self.calls: dict[str, tuple] = {}         # per module or tool: its parameters and result type
        self.field_index: dict[int, tuple] = {}   # records with many fields: name -> type
        self.test_params: dict[int, tuple] = {}   # per pipeline: the parameters its test cases are checked against

    # ------------------------------------------------------------ reporting
    def error(self, span: A.Span, message: str, hint: str = "", code: str = "") -> None:
        self.diagnostics.append(Diagnostic("error", message, span, hint, code, self.check_pass))

    def warn(self, span: A.Span, message: str, hint: str = "", code: str = "") -> None:
        self.diagnostics.append(Diagnostic("warning", message, span, hint, code, self.check_pass))

    def unknown(self, span: A.Span, what: str, name: str, candidates, code: str = "unknown-name") -> None:
        if name in self.broken:
            return  # its declaration has a syntax error, already reported
        self.error(span, f"unknown {what} '{name}'", did_you_mean(name, candidates), code)

    def names(self, kind: str) -> Names:
        """The declared names of one kind, as did-you-mean candidates: indexed once, since a program may
        misspell thousands of names. The tables are complete once `collect_declarations` has run."""
        if kind not in self.namespaces:
            prog = self.program
            groups = {"lm": [prog.lms], "signature": [prog.signatures], "pipeline": [prog.pipelines],
                      "tool": [prog.tools], "module": [prog.modules], "module or tool": [prog.modules, prog.tools],
                      "type": [SCALARS, ("list", "enum"), prog.records]}[kind]
            self.namespaces[kind] = Names(*groups)
        return self.namespaces[kind]

    # ------------------------------------------------------------ source text
    def snippet(self, span: A.Span, limit: int = 40) -> str:
        """The source text under a one-line span, or "" when it is long or spans lines."""
        if span.file not in self.sources or span.end_line != span.line:
            return ""
        lines = self.lines.get(span.file)
        if lines is None:
            lines = self.lines[span.file] = self.sources[span.file].split("\n")
        text = lines[span.line - 1][span.col - 1:span.end_col - 1] if span.line <= len(lines) else ""
        return text if len(text) <= limit else ""

    def word_span(self, span: A.Span, word: str, nth: int = 1) -> A.Span:
        """The span of the `nth` whole-word `word` inside a one-line span, or the span itself."""
        text = self.snippet(span, limit=10_000)
        hits = [m.start() for m in re.finditer(rf"(?<![\w\"]){re.escape(word)}(?![\w\"])", text)]
        if len(hits) < nth:
            return span
        col = span.col + hits[nth - 1]
        return A.Span(span.file, span.line, col, span.line, col + len(word))

    # ------------------------------------------------------------ types
    def resolve(self, ref: A.TypeRef) -> Type:
        """The type a written type names. Types are resolved from several places (declaration, each
        call, each return); memoizing by node reports a bad type once, at its declaration."""
        key = id(ref)
        if key not in self.resolved:
            t = self._resolve(ref)
            if ref.optional:
                t = Type(t.kind, t.arg, t.values, t.name, t.fields, True)
            self.resolved[key] = (ref, t)   # keep `ref` alive so its id is not reused
        return self.resolved[key][1]

    def _resolve(self, ref: A.TypeRef) -> Type:
        if ref.name in SCALARS:
            if ref.arg is not None:
                self.error(ref.span, f"'{ref.name}' takes no type argument", "only `list[T]` is generic", "bad-type")
            return Type(ref.name)
        if ref.name == "enum":
            seen = set()
            for v in ref.values:
                if v in seen:
                    self.error(self.word_span(ref.span, v, 2), f"enum value '{v}' appears twice", "", "duplicate")
                seen.add(v)
            return Type("enum", values=tuple(dict.fromkeys(ref.values)))
        if ref.name == "list":
            if ref.arg is None:
                self.error(ref.span, "list needs an item type", "write `list[str]`", "bad-type")
                return Type("list", arg=ANY)
            return Type("list", arg=self.resolve(ref.arg))
        if ref.name in self.program.records:
            if ref.arg is not None:
                self.error(ref.span, f"'{ref.name}' takes no type argument", "only `list[T]` is generic", "bad-type")
            return self.program.records[ref.name]
        if ref.name in self.program.signatures:
            self.error(ref.span, f"'{ref.name}' is a signature, not a type",
                       "declare a `record` for structured values", "bad-type")
            return ANY
        if ref.name not in self.broken:
            self.error(ref.span, f"unknown type '{ref.name}'", did_you_mean(ref.name, self.names("type")),
                       "unknown-name")
        return ANY


def value_type(v) -> Type:
    """The type of a literal's value."""
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return INT
    if isinstance(v, float):
        return FLOAT
    return STR


# ------------------------------------------------------------ how messages point and list

def where(there: A.Span, here: A.Span) -> str:
    """How a message points at an earlier place: `line 7` or `column 9` in the same file, `file:line:col` elsewhere."""
    if there.file != here.file:
        return str(there)
    return f"line {there.line}" if there.line != here.line else f"column {there.col}"


def leading_name_span(span: A.Span, name: str) -> A.Span:
    """The span of the name a node starts with (settings, blocks), for a caret under just that word."""
    return A.Span(span.file, span.line, span.col, span.line, span.col + len(name))


LISTED = 10     # names a message lists before "and N more"


def listing(items: list[str], total: int | None = None) -> str:
    """`items` joined with commas, at most `LISTED` of them, then how many more there are.

    >>> listing(["'a'", "'b'"]), listing([str(i) for i in range(12)])
    ("'a', 'b'", '0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more')
    """
    total = len(items) if total is None else total
    text = ", ".join(items[:LISTED])
    return text + (f" and {total - LISTED} more" if total > LISTED else "")
