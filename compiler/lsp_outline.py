"""A file's outline for the editor (document symbols): its declarations, signatures and records with
their fields, pipelines with their inputs, outputs and steps, compile blocks with their settings and
test blocks with their cases."""
from __future__ import annotations

from dataclasses import dataclass, field

from .dsl import ast as A
from .lsp_text import SourceText, leading


@dataclass(slots=True)
class Outline:
    """One entry: its name, what it is (`kind`), a detail, its whole span, the span of its name, and
    the entries inside it."""

    name: str
    kind: str
    detail: str
    span: A.Span
    selection: A.Span
    children: list["Outline"] = field(default_factory=list)


def outline(file: A.File) -> list[Outline]:
    """The outline of a parsed file.

    >>> from pipec.dsl import parse
    >>> f, _ = parse('signature S { in q: str out a: str }\\n'
    ...              'pipeline p(q: str) -> (a) { r = m(q: q) return a = r.a }', "x.pipe")
    >>> for o in outline(f): print(o.kind, o.name, [(c.kind, c.name, c.detail) for c in o.children])
    signature S [('field', 'q', 'in str'), ('field', 'a', 'out str')]
    pipeline p [('input', 'q', 'str'), ('output', 'a', ''), ('step', 'r', 'm(...)'), ('return', 'return', 'a')]
    """
    text = SourceText(file.source)
    out = []
    for item in file.items:
        make = _MAKERS.get(type(item))
        if make is not None:
            out.append(make(item, text))
    return out


def _shown(text: SourceText, span: A.Span | None, limit: int = 60) -> str:
    if span is None:
        return ""
    start, end = text.span_offsets(span)
    shown = " ".join(text.text[start:end].split())
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


def _field(f: A.Field, text: SourceText, kind: str = "field") -> Outline:
    names = list(text.names_in(f.span))[1 if f.direction else 0:]      # a signature field starts with in/out
    name_span = next((s for n, s in names if n == f.name), f.span)
    detail = (f"{f.direction} " if f.direction else "") + _shown(text, f.type.span)
    return Outline(f.name, kind, detail, f.span, name_span)


def _signature(item: A.Signature, text: SourceText) -> Outline:
    return Outline(item.name, "signature", item.instruction.split("\n")[0][:60], item.span, item.name_span,
                   [_field(f, text) for f in item.fields])


def _record(item: A.Record, text: SourceText) -> Outline:
    return Outline(item.name, "record", item.description.split("\n")[0][:60], item.span, item.name_span,
                   [_field(f, text) for f in item.fields])


def _module(item: A.ModuleDecl, text: SourceText) -> Outline:
    kinds = ", ".join(a.kind for a in item.alternatives)
    detail = f"one_of({kinds})({item.signature})" if item.alternatives else f"{item.kind}({item.signature})"
    return Outline(item.name, "module", detail, item.span, item.name_span)


def _lm(item: A.LMDecl, text: SourceText) -> Outline:
    return Outline(item.name, "lm", item.model, item.span, item.name_span)


def _tool(item: A.ToolDecl, text: SourceText) -> Outline:
    return Outline(item.name, "tool", item.target, item.span, item.name_span,
                   [_field(p, text, "input") for p in item.params or []])


def _pipeline(item: A.Pipeline, text: SourceText) -> Outline:
    children = [_field(p, text, "input") for p in item.params]
    children += [Outline(o.name, "output", _shown(text, o.type.span) if o.type else "", o.span, leading(o.span, o.name))
                 for o in item.outputs]
    for s in item.body:
        if isinstance(s, A.Assign):
            children.append(Outline(s.name, "step", _step(s.value), s.span, s.name_span))
        elif isinstance(s, A.Return):
            children.append(Outline("return", "return", ", ".join(r.name for r in s.items), s.span,
                                    leading(s.span, "return")))
    return Outline(item.name, "pipeline", f"{len(item.params)} in, {len(item.outputs)} out", item.span,
                   item.name_span, children)


def _step(e) -> str:
    if isinstance(e, A.Call):
        return f"{e.callee}(...)"
    if isinstance(e, A.MapExpr):
        body = _step(e.body)
        return f"map {e.var} max {e.bound} {{ {body} }}" if body else f"map {e.var} max {e.bound}"
    return ""


def _compile(item: A.CompileBlock, text: SourceText) -> Outline:
    return Outline(f"compile {item.pipeline}", "compile", "", item.span, item.pipeline_span,
                   [Outline(s.name, "setting", _shown(text, s.value.span), s.span, leading(s.span, s.name))
                    for s in item.settings])


def _test(item: A.TestBlock, text: SourceText) -> Outline:
    cases = [Outline(_shown(text, c.call.span, 40), "case", ", ".join(_shown(text, a.span, 40) for a in c.assertions),
                     c.span, c.call.callee_span) for c in item.cases]
    return Outline(f'test "{item.name}"', "test", f"{len(cases)} case{'s' * (len(cases) != 1)}", item.span,
                   leading(item.span, "test"), cases)


def _import(item: A.Import, text: SourceText) -> Outline:
    return Outline(f'import "{item.path}"', "import", "", item.span, text.string_in(item.span) or item.span)


_MAKERS = {A.Signature: _signature, A.Record: _record, A.ModuleDecl: _module, A.LMDecl: _lm, A.ToolDecl: _tool,
           A.Pipeline: _pipeline, A.CompileBlock: _compile, A.TestBlock: _test, A.Import: _import}
