"""The .pipe abstract syntax tree: plain dataclasses, every node with a source span.

The AST is what the parser produces and the checker reads; it knows nothing of the runtime.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True, slots=True)
class Span:
    """A source range, 1-based lines and columns; `end_col` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# ---------------------------------------------------------------- types

@dataclass(slots=True)
class TypeRef:
    """A type as written: `str`, `list[int]`, `Hit?`, `enum(a, b)`."""

    span: Span
    name: str                      # str int float bool list enum, or a record name
    arg: TypeRef | None = None     # the T of list[T]
    values: tuple[str, ...] = ()   # enum values
    optional: bool = False


# ---------------------------------------------------------------- declarations

@dataclass(slots=True)
class Field:
    span: Span
    name: str
    type: TypeRef
    description: str = ""
    direction: str = ""            # "in" / "out" for signature fields, "" elsewhere


@dataclass(slots=True)
class Option:
    span: Span
    name: str
    value: Any                     # str, int, float, bool, list, or Ref


@dataclass(frozen=True, slots=True)
class Ref:
    """A bare name used as an option value (`lm: local`)."""

    name: str


@dataclass(slots=True)
class RecordLit:
    """A record written as an option value, `{utterance: "hi", intent: greet}`: a demo's field values.
    Each field is an `Option` (its span covers `name: value`), so diagnostics point at the field."""

    span: Span
    fields: list[Option]


@dataclass(slots=True)
class Import:
    span: Span
    path: str


@dataclass(slots=True)
class LMDecl:
    """`lm NAME = "provider/model" (options)`, or a fallback `lm NAME = fallback(a, b) (options)`: the
    lms it names, tried in order until one answers. A fallback's `model` is how it is shown,
    `fallback(a, b)`; nothing reads it as a model id (`fallbacks` says it is one)."""

    span: Span
    name: str
    model: str
    options: list[Option]
    name_span: Span
    model_span: Span | None = None     # the model id string, or the `fallback(...)` of a fallback
    fallbacks: list[str] = field(default_factory=list)      # a fallback's lms, in order; empty for a model
    fallback_spans: list[Span] = field(default_factory=list)


def fallback_text(names: list[str]) -> str:
    """How a fallback lm is shown where a model id would be.

    >>> fallback_text(["gpt", "local"])
    'fallback(gpt, local)'
    """
    return f"fallback({', '.join(names)})"


@dataclass(slots=True)
class DefaultLM:
    span: Span
    name: str
    name_span: Span


@dataclass(slots=True)
class Signature:
    span: Span
    name: str
    instruction: str
    fields: list[Field]
    name_span: Span

    @property
    def inputs(self) -> list[Field]:
        return [f for f in self.fields if f.direction == "in"]

    @property
    def outputs(self) -> list[Field]:
        return [f for f in self.fields if f.direction == "out"]


@dataclass(slots=True)
class Record:
    span: Span
    name: str
    description: str
    fields: list[Field]
    name_span: Span


ONE_OF = "one_of"      # the `kind` of a module that declares alternatives


@dataclass(slots=True)
class Alternative:
    """One kind a `one_of(...)` module may run, with options of its own: `Majority(n: 5)`. Its `label`
    names it in predictor names (`solve.Majority.reason`), in a compile's choice and in reports: the
    kind, or `Kind_2`, `Kind_3`, ... for a kind listed again (`one_of(Majority(n: 3), Majority(n: 9))`)."""

    span: Span
    kind: str
    options: list[Option]
    kind_span: Span
    label: str


@dataclass(slots=True)
class ModuleDecl:
    span: Span
    name: str
    kind: str                      # the kind, or ONE_OF for a module with alternatives
    signature: str
    options: list[Option]          # a one_of module's common options: they apply to every alternative
    name_span: Span
    kind_span: Span
    signature_span: Span
    alternatives: list[Alternative] = field(default_factory=list)     # a one_of module's kinds, in order

    def variants(self) -> list[tuple[str, "ModuleDecl"]]:
        """Each kind this module may run as a declaration of its own, with its label: the module
        itself (label ""), or for a `one_of` module each alternative, whose options are the module's
        common ones with the alternative's own over them.

        >>> s = Span("m.pipe", 1, 1, 1, 2)
        >>> m = ModuleDecl(s, "solve", ONE_OF, "Task", [Option(s, "temperature", 0)], s, s, s,
        ...                [Alternative(s, "Predict", [], s, "Predict"),
        ...                 Alternative(s, "Majority", [Option(s, "temperature", 0.7)], s, "Majority")])
        >>> [(label, d.kind, [(o.name, o.value) for o in d.options]) for label, d in m.variants()]
        [('Predict', 'Predict', [('temperature', 0)]), ('Majority', 'Majority', [('temperature', 0.7)])]
        """
        if not self.alternatives:
            return [("", self)]
        out = []
        for alt in self.alternatives:
            own = {o.name for o in alt.options}
            options = [o for o in self.options if o.name not in own] + list(alt.options)
            out.append((alt.label, ModuleDecl(self.span, self.name, alt.kind, self.signature, options, self.name_span,
                                              alt.kind_span, self.signature_span)))
        return out


@dataclass(slots=True)
class ToolDecl:
    span: Span
    name: str
    loader: str                    # "python"
    target: str                    # "package.module:function"
    params: list[Field] | None     # None when the tool's signature is not declared
    returns: TypeRef | None
    name_span: Span
    loader_span: Span
    target_span: Span | None = None    # the target string


# ---------------------------------------------------------------- expressions

@dataclass(slots=True)
class Var:
    span: Span
    name: str


@dataclass(slots=True)
class Attr:
    span: Span
    value: Expr
    name: str


@dataclass(slots=True)
class Literal:
    span: Span
    value: Any                     # str, int, float, bool


@dataclass(slots=True)
class ListLit:
    span: Span
    items: list[Expr]


@dataclass(slots=True)
class Concat:
    span: Span
    left: Expr
    right: Expr


@dataclass(slots=True)
class Arg:
    span: Span
    name: str | None               # None for a positional argument
    value: Expr


@dataclass(slots=True)
class Call:
    span: Span
    callee: str
    args: list[Arg]
    callee_span: Span


@dataclass(slots=True)
class MapExpr:
    """`map var in over [ordered] max bound { body }`."""

    span: Span
    var: str
    over: "Expr"
    ordered: bool
    bound: int
    body: "Expr"
    var_span: Span
    bound_span: Span


Expr = Union[Var, Attr, Literal, ListLit, Concat, Call, MapExpr]


# ---------------------------------------------------------------- pipelines, compile, test

@dataclass(slots=True)
class Assign:
    span: Span
    name: str
    value: Expr
    name_span: Span


@dataclass(slots=True)
class ReturnItem:
    span: Span
    name: str
    value: Expr


@dataclass(slots=True)
class Return:
    span: Span
    items: list[ReturnItem]


@dataclass(slots=True)
class OutParam:
    span: Span
    name: str
    type: TypeRef | None


@dataclass(slots=True)
class Pipeline:
    span: Span
    name: str
    params: list[Field]
    outputs: list[OutParam]
    body: list[Assign | Return]
    name_span: Span


@dataclass(slots=True)
class Setting:
    span: Span
    name: str
    value: Expr


@dataclass(slots=True)
class CompileBlock:
    span: Span
    pipeline: str
    settings: list[Setting]
    pipeline_span: Span


@dataclass(slots=True)
class Assertion:
    span: Span
    left: Expr
    op: str                        # == != contains in
    right: Expr


@dataclass(slots=True)
class TestCase:
    span: Span
    call: Call
    assertions: list[Assertion]


@dataclass(slots=True)
class TestBlock:
    span: Span
    name: str
    cases: list[TestCase]


Item = Union[Import, LMDecl, DefaultLM, Signature, Record, ModuleDecl, ToolDecl, Pipeline,
             CompileBlock, TestBlock]


@dataclass(slots=True)
class File:
    """One parsed .pipe file: its items in source order."""

    path: str
    source: str
    items: list[Item] = field(default_factory=list)
    # Names whose declarations failed to parse: the checker does not report them as unknown.
    broken_names: set[str] = field(default_factory=set)


def plain(value):
    """An option's or setting's value as plain Python: a literal's value, a declaration's name for a
    name (`lm: local`), lists item by item, a record as a dict.

    >>> plain([Ref("local"), 2]), plain(ListLit(None, [Literal(None, "x"), Var(None, "y")]))
    (['local', 2], ['x', 'y'])
    >>> plain(RecordLit(None, [Option(None, "intent", Ref("greet")), Option(None, "n", 2)]))
    {'intent': 'greet', 'n': 2}
    """
    if isinstance(value, Literal):
        return value.value
    if isinstance(value, (Ref, Var)):
        return value.name
    if isinstance(value, ListLit):
        return [plain(v) for v in value.items]
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, RecordLit):
        return {f.name: plain(f.value) for f in value.fields}
    return value
