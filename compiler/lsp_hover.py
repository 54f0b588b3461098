"""What hovering a name shows: a Markdown description of the symbol it names (see `pipec.lsp_index`
for the symbols), read from the checked program, the kind and optimizer registries and the LM call
bounds `pipec inspect` computes."""
from __future__ import annotations

from .dsl import ast as A
from .dsl.catalogue import LM_OPTIONS, OptionSpec
from .dsl.types import show

TYPE_DOCS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "list": "`list[T]`: a list of values of type T",
    "enum": "`enum(a, b, \"c d\")`: one of the values listed",
}
BOUND_NOTE = "static worst case, as `pipec inspect` counts it: a call whose reply does not parse is retried once"


def hover_text(analysis, key: tuple) -> str | None:
    """Markdown for the symbol `key` of `analysis` (an `lsp_analysis.Analysis`), or None.

    >>> import tempfile, os
    >>> from pipec.lsp_analysis import analyze
    >>> a = analyze(os.path.join(tempfile.mkdtemp(), "a.pipe"), 'signature S { "Say hi." in q: str out a: str }')
    >>> print(hover_text(a, ("decl", a.path, "S")))
    **signature S**
    <BLANKLINE>
    Say hi.
    <BLANKLINE>
    - in `q: str`
    - out `a: str`
    """
    make = _HOVERS.get(key[0])
    return make(analysis, key) if make is not None else None


def option_line(name: str, spec: OptionSpec) -> str:
    """One option as a list item: its name, type, bounds, choices and doc.

    >>> option_line("k", OptionSpec("int", "demos per input", minimum=1))
    '- `k`: int, at least 1 — demos per input'
    """
    facts = [spec.type]
    if spec.minimum is not None:
        facts.append(f"at least {spec.minimum:g}")
    if spec.choices:
        facts.append("one of " + ", ".join(map(str, spec.choices)))
    return f"- `{name}`: {', '.join(facts)}" + (f" — {spec.doc}" if spec.doc else "")


def written(analysis, span: A.Span | None, limit: int = 80) -> str:
    """The source text under `span`, on one line, cut to `limit` characters."""
    if span is None:
        return ""
    text = analysis.index.texts.get(span.file)
    if text is None:
        return ""
    start, end = text.span_offsets(span)
    shown = " ".join(text.text[start:end].split())
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


def _fields(analysis, fields: list[A.Field], directions: bool) -> list[str]:
    out = []
    for f in fields:
        head = f"- {f.direction} " if directions and f.direction else "- "
        about = f" — {f.description}" if f.description else ""
        out.append(f"{head}`{f.name}: {written(analysis, f.type.span)}`{about}")
    return out


# ------------------------------------------------------------ declarations
def _decl(analysis, key: tuple) -> str | None:
    item = analysis.index.decl(key[2])
    if item is None:
        return None
    return {A.Signature: _signature, A.Record: _record, A.ModuleDecl: _module, A.LMDecl: _lm, A.ToolDecl: _tool,
            A.Pipeline: _pipeline}[type(item)](analysis, item)


def _signature(analysis, s: A.Signature) -> str:
    out = [f"**signature {s.name}**", ""]
    if s.instruction:
        out += [s.instruction, ""]
    return "\n".join(out + _fields(analysis, s.fields, True))


def _record(analysis, r: A.Record) -> str:
    out = [f"**record {r.name}**", ""]
    if r.description:
        out += [r.description, ""]
    return "\n".join(out + _fields(analysis, r.fields, False))


def _module(analysis, m: A.ModuleDecl) -> str:
    kinds = analysis.catalogue.kinds
    kind_on = A.Span(m.span.file, m.kind_span.line, m.kind_span.col, m.span.end_line, m.span.end_col)
    head = written(analysis, kind_on, 120)
    out = [f"**module {m.name}** = `{head}`", ""]
    for kind in dict.fromkeys(variant.kind for _, variant in m.variants()):
        spec = kinds.get(kind)
        if spec is not None and spec.doc:
            out.append(f"{kind}: {spec.doc}")
    sig = analysis.index.decl(m.signature)
    if isinstance(sig, A.Signature):
        ins = ", ".join(f.name for f in sig.inputs)
        outs = ", ".join(n for n, _, _ in analysis.program.module_outputs(m.name, analysis.catalogue)) \
            if m.name in analysis.program.modules else ", ".join(f.name for f in sig.outputs)
        out += ["", f"signature {m.signature}: in {ins or '(none)'}; out {outs or '(none)'}"]
    if m.options:
        out += ["", "options: " + ", ".join(_option_text(analysis, o) for o in m.options)]
    lm = next((o.value.name for o in m.options if o.name == "lm" and isinstance(o.value, A.Ref)), None)
    lm = lm or analysis.program.default_lm
    decl = analysis.program.lms.get(lm) if lm else None
    out += ["", f"LM: {lm} = \"{decl.model}\"" if decl else "LM: the default (local/smollm2)"]
    bounds = analysis.bounds
    if m.name in bounds.modules:
        calls, alternatives = bounds.modules[m.name]
        out += ["", f"at most **{calls}** LM calls per call ({BOUND_NOTE})"]
        if alternatives:
            out.append("alternatives: " + ", ".join(f"{label}: at most {n}" for label, n in alternatives.items())
                       + " (uncompiled, the first runs)")
    else:
        out += ["", f"LM call bound: unknown ({bounds.problem or 'no pipeline calls this module'})"]
    return "\n".join(out)


def _option_text(analysis, o: A.Option) -> str:
    if o.name == "demos" and isinstance(o.value, list):
        return f"demos: {len(o.value)} written"
    return written(analysis, o.span, 60)


def _lm(analysis, lm: A.LMDecl) -> str:
    out = [f"**lm {lm.name}** = " + (lm.model if lm.fallbacks else f"\"{lm.model}\"")]
    if lm.fallbacks:
        out.append("tries each lm in order, with its own retries, until one answers")
    if analysis.program.default_lm == lm.name:
        out.append("the default LM of modules that name none")
    if lm.options:
        out += [""] + [f"- `{written(analysis, o.span, 60)}`" for o in lm.options]
    return "\n".join(out)


def _tool(analysis, t: A.ToolDecl) -> str:
    params = "" if t.params is None else \
        "(" + ", ".join(f"{p.name}: {written(analysis, p.type.span)}" for p in t.params) + ")"
    returns = f" -> {written(analysis, t.returns.span)}" if t.returns is not None else ""
    return f"**tool {t.name}**{params}{returns}\n\n{t.loader}(\"{t.target}\")"


def _pipeline(analysis, p: A.Pipeline) -> str:
    info = analysis.program.pipelines.get(p.name)
    ins = ", ".join(f"{x.name}: {written(analysis, x.type.span)}" for x in p.params)
    outs = ", ".join(o.name + (f": {show(info.outputs[o.name])}" if info and o.name in info.outputs else "")
                     for o in p.outputs)
    out = [f"**pipeline {p.name}**({ins}) -> ({outs})", ""]
    steps = [s for s in p.body if isinstance(s, A.Assign)]
    out.append(f"{len(steps)} step{'s' * (len(steps) != 1)}")
    bounds = analysis.bounds
    if p.name in bounds.pipelines:
        calls, dearest = bounds.pipelines[p.name]
        out += ["", f"at most **{calls}** LM calls per input ({BOUND_NOTE})"]
        if dearest is not None:
            out.append(f"with the dearest one_of alternatives: at most {dearest}")
    else:
        out += ["", f"LM call bound: unknown ({bounds.problem})"]
    return "\n".join(out)


# ------------------------------------------------------------ fields and values
def _field(analysis, key: tuple) -> str | None:
    _, _, owner, name = key
    item = analysis.index.decl(owner)
    what = {A.Signature: "signature", A.Record: "record", A.ToolDecl: "tool"}.get(type(item))
    if what is None:
        return None
    f = next((f for f in (item.fields if what != "tool" else item.params or []) if f.name == name), None)
    if f is None:
        return None
    role = {"in": "input of signature", "out": "output of signature"}.get(f.direction, "field of record") \
        if what != "tool" else "parameter of tool"
    text = f"`{f.name}: {written(analysis, f.type.span)}` — {role} {owner}"
    return text + (f"\n\n{f.description}" if f.description else "")


def _param(analysis, key: tuple) -> str | None:
    pipe = analysis.index.decl(key[2])
    p = next((p for p in getattr(pipe, "params", ()) if p.name == key[3]), None)
    if p is None:
        return None
    text = f"`{p.name}: {written(analysis, p.type.span)}` — input of pipeline {key[2]}"
    return text + (f"\n\n{p.description}" if p.description else "")


def _out(analysis, key: tuple) -> str | None:
    info = analysis.program.pipelines.get(key[2])
    t = show(info.outputs[key[3]]) if info and key[3] in info.outputs else "?"
    return f"`{key[3]}: {t}` — output of pipeline {key[2]}"


def _var(analysis, key: tuple) -> str | None:
    info = analysis.program.pipelines.get(key[2])
    pipe = analysis.index.decl(key[2])
    assign = next((s for s in getattr(pipe, "body", ()) if isinstance(s, A.Assign) and s.name == key[3]), None)
    if assign is None:
        return None
    t = info.vars.get(key[3]) if info else None
    out = [f"`{written(analysis, assign.span, 100)}` — a value of pipeline {key[2]}"]
    if t is not None and t.kind == "record" and t.name.endswith(" result"):
        out.append(f"\nthe result of module {t.name.removesuffix(' result')}: "
                   + ", ".join(f"{n}: {show(ft)}" for n, ft, _ in t.fields))
    elif t is not None and t.kind == "list" and t.arg is not None and t.arg.name.endswith(" result"):
        out.append(f"\na list of results of module {t.arg.name.removesuffix(' result')}: "
                   + ", ".join(f"{n}: {show(ft)}" for n, ft, _ in t.arg.fields))
    elif t is not None:
        out.append(f"\ntype: {show(t)}")
    return "\n".join(out)


def _mapvar(analysis, key: tuple) -> str | None:
    occ = analysis.index.definition(key)
    if occ is None:
        return None
    pipeline, values = analysis.index.scope_at(occ.span.file, occ.span.line - 1, occ.span.col - 1)
    name = written(analysis, occ.span)
    t = values.get(name, (None,))[0]
    return f"`{name}` — map variable of pipeline {pipeline}" + (f": one item, {show(t)}" if t is not None else "")


# ------------------------------------------------------------ built in
def _kind(analysis, key: tuple) -> str | None:
    spec = analysis.catalogue.kinds.get(key[1])
    if spec is None:
        return None
    out = [f"**{spec.name}** (module kind)", ""]
    if spec.doc:
        out += [spec.doc, ""]
    out += ["options:"] + [option_line(n, o) for n, o in spec.options.items()]
    if spec.extra_outputs:
        out += ["", "adds outputs: " + ", ".join(f"`{n}: {show(t)}`" for n, t, _ in spec.extra_outputs)]
    return "\n".join(out)


def _kindoption(analysis, key: tuple) -> str | None:
    spec = analysis.catalogue.kinds.get(key[1])
    option = spec.options.get(key[2]) if spec is not None else None
    return f"option of {key[1]}\n\n{option_line(key[2], option)}" if option is not None else None


def _extra(analysis, key: tuple) -> str | None:
    spec = analysis.catalogue.kinds.get(key[1])
    found = next(((n, t, d) for n, t, d in (spec.extra_outputs + (spec.demo_fields or ())) if n == key[2]), None) \
        if spec is not None else None
    if found is None:
        return None
    return f"`{found[0]}: {show(found[1])}` — an output {key[1]} adds" + (f"\n\n{found[2]}" if found[2] else "")


def _type(analysis, key: tuple) -> str | None:
    return f"**{key[1]}** (built-in type): {TYPE_DOCS[key[1]]}" if key[1] in TYPE_DOCS else None


def _lmoption(analysis, key: tuple) -> str | None:
    spec = LM_OPTIONS.get(key[1])
    return f"lm option\n\n{option_line(key[1], spec)}" if spec is not None else None


def _setting(analysis, key: tuple) -> str | None:
    spec = analysis.catalogue.compile_settings.get(key[1])
    return f"compile setting\n\n{option_line(key[1], spec)}" if spec is not None else None


def function_doc(catalogue, table: str, name: str) -> str | None:
    """Markdown for a metric (`table` "metrics") or an optimizer ("optimizers"): its doc and options.
    An optimizer's spec imports that optimizer alone.

    >>> from pipec.registry import catalogue
    >>> print(function_doc(catalogue(), "metrics", "f1"))
    **f1** (metric)
    <BLANKLINE>
    token F1
    <BLANKLINE>
    arguments: the pipeline outputs it scores
    """
    specs = getattr(catalogue, table)
    if name not in specs:
        return None
    spec = specs[name]
    out = [f"**{spec.name}** ({table.removesuffix('s')})", ""]
    if spec.doc:
        out += [spec.doc, ""]
    if spec.field_args:
        out.append("arguments: the pipeline outputs it scores")
    if spec.options:
        out += ["options:"] + [option_line(n, o) for n, o in spec.options.items()]
    return "\n".join(out).rstrip()


def _function(table: str):
    return lambda analysis, key: function_doc(analysis.catalogue, table, key[1])


def _function_option(table: str, what: str):
    def make(analysis, key: tuple) -> str | None:
        specs = getattr(analysis.catalogue, table)
        option = specs[key[1]].options.get(key[2]) if key[1] in specs else None
        return f"option of {what} {key[1]}\n\n{option_line(key[2], option)}" if option is not None else None
    return make


def _import(analysis, key: tuple) -> str | None:
    f = next((f for f in analysis.program.files if f.path == key[1]), None)
    if f is None:
        return f"`{key[1]}` (not read)"
    names = [f"{type(i).__name__.removesuffix('Decl').lower()} {i.name}" for i in f.items if hasattr(i, "name_span")]
    return f"imports `{key[1]}`\n\n" + (", ".join(names) if names else "no declarations")


_HOVERS = {
    "decl": _decl, "field": _field, "param": _param, "out": _out, "var": _var, "mapvar": _mapvar,
    "kind": _kind, "kindoption": _kindoption, "extra": _extra, "type": _type, "lmoption": _lmoption,
    "setting": _setting, "optimizer": _function("optimizers"), "metric": _function("metrics"),
    "optoption": _function_option("optimizers", "optimizer"), "metricoption": _function_option("metrics", "metric"),
    "import": _import,
}
