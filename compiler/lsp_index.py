"""The symbol index of a checked .pipe program: every name written in its files, what it names, and
where that is declared. Hover, go to definition, references, rename and completion read it.

A symbol is a key, a tuple whose first item says what it is:

- declared in the files (renamable): `("decl", file, name)` a top-level declaration; `("field",
  file, owner, name)` a field of a signature or record, or a parameter of a tool; `("param", file,
  pipeline, name)`, `("out", file, pipeline, name)`, `("var", file, pipeline, name)` a pipeline's
  inputs, outputs and values; `("mapvar", file, line, col)` a map's variable;
- built in (never renamed): `("kind", K)`, `("kindoption", K, option)`, `("extra", K, field)` (a
  field a kind adds, like `reasoning`), `("type", T)`, `("lmoption", option)`, `("setting", S)`,
  `("optimizer", O)`, `("optoption", O, option)`, `("metric", M)`, `("metricoption", M, option)`;
- `("import", file)` the file an `import` line names.

Files are named as the loader names them (absolute when the main file's path is), so two programs
that share a file agree on its symbols' keys: references across open documents are merged by key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .dsl import ast as A
from .dsl.catalogue import Catalogue
from .dsl.checked_program import CheckedProgram
from .dsl.types import ANY, Type
from .lsp_text import SourceText, contains, leading, trailing

RENAMABLE = frozenset({"decl", "field", "param", "out", "var", "mapvar"})
_DECLS = (A.LMDecl, A.Record, A.Signature, A.ModuleDecl, A.ToolDecl, A.Pipeline)
_REF_OPTIONS = {"lm", "lms", "tool", "tools", "module", "modules"}     # option types whose values name declarations


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One written name: where (a 1-based span of just the name), which symbol, and whether it declares it."""

    span: A.Span
    key: tuple
    definition: bool = False


@dataclass(slots=True)
class Scope:
    """The values visible in part of a pipeline: its body, or a map's body (the map variable)."""

    span: A.Span
    pipeline: str
    values: dict[str, tuple[Type, tuple]] = field(default_factory=dict)    # name -> (type, key)


class SymbolIndex:
    """Every name of a checked program's files, by file, with its symbol.

    >>> from pipec.dsl import Catalogue, check, parse
    >>> f, _ = parse('signature S { in q: str out a: str }\\nrecord R { x: str }', "m.pipe")
    >>> index = SymbolIndex(check([f], Catalogue())[0], Catalogue(), {"m.pipe": f.source})
    >>> index.at("m.pipe", 0, 11).key, len(index.references(("decl", "m.pipe", "S")))
    (('decl', 'm.pipe', 'S'), 1)
    >>> index.at("m.pipe", 1, 12).key
    ('field', 'm.pipe', 'R', 'x')
    """

    def __init__(self, program: CheckedProgram, catalogue: Catalogue, sources: dict[str, str]):
        self.program, self.catalogue = program, catalogue
        self.texts = {name: SourceText(text) for name, text in sources.items()}
        self.occurrences: dict[str, list[Occurrence]] = {}
        self.definitions: dict[tuple, Occurrence] = {}
        self.scopes: list[Scope] = []
        # Top-level names: the first declaration wins, as in the checker.
        self.decls: dict[str, tuple[str, A.Item]] = {}
        for f in program.files:
            for item in f.items:
                if isinstance(item, _DECLS):
                    self.decls.setdefault(item.name, (f.path, item))
        for f in program.files:
            _Walker(self, f).walk()

    # ------------------------------------------------------------ questions
    def at(self, file: str, line: int, character: int) -> Occurrence | None:
        """The name at a 0-based position of `file`, if one is indexed there (the innermost)."""
        found = [o for o in self.occurrences.get(file, ()) if contains(o.span, line, character)]
        return min(found, key=lambda o: (o.span.end_line - o.span.line, o.span.end_col - o.span.col), default=None)

    def references(self, key: tuple) -> list[Occurrence]:
        """Every occurrence of a symbol in the program, its declaration included, in file order."""
        return [o for occs in self.occurrences.values() for o in occs if o.key == key]

    def definition(self, key: tuple) -> Occurrence | None:
        return self.definitions.get(key)

    def decl(self, name: str) -> A.Item | None:
        """The top-level declaration of `name`, if any."""
        entry = self.decls.get(name)
        return entry[1] if entry else None

    def decl_key(self, name: str) -> tuple | None:
        entry = self.decls.get(name)
        return ("decl", entry[0], name) if entry else None

    def scope_at(self, file: str, line: int, character: int) -> tuple[str | None, dict[str, tuple[Type, tuple]]]:
        """The pipeline around a 0-based position and the values visible there (inner maps' variables
        over the pipeline's own)."""
        pipeline, values = None, {}
        for scope in self.scopes:
            if scope.span.file == file and contains(scope.span, line, character):
                pipeline = scope.pipeline
                values.update(scope.values)     # scopes are listed outermost first
        return pipeline, values

    def field_key(self, t: Type, name: str) -> tuple | None:
        """The symbol of field `name` of a value of type `t`: a signature output for a module's result
        (or the field its kind adds), a record's field; through lists, as field access projects."""
        if t.kind == "list" and t.arg is not None:
            t = t.arg
        if t.kind != "record":
            return None
        if t.name.endswith(" result"):            # a module call's result (see the checker's `_callee`)
            module = self.decl(t.name.removesuffix(" result"))
            if not isinstance(module, A.ModuleDecl):
                return None
            key = self.owned_field(module.signature, name)
            if key is not None:
                return key
            for _, variant in module.variants():
                spec = self.catalogue.kinds.get(variant.kind)
                if spec is not None and any(n == name for n, _, _ in spec.extra_outputs):
                    return ("extra", variant.kind, name)
            return None
        return self.owned_field(t.name, name)

    def owned_field(self, owner: str, name: str) -> tuple | None:
        """The key of field `name` of the signature, record or tool `owner`, if it declares one."""
        entry = self.decls.get(owner)
        if entry is None:
            return None
        fields = _fields(entry[1])
        return ("field", entry[0], owner, name) if any(f.name == name for f in fields) else None

    def type_of(self, e: A.Expr, values: dict[str, tuple[Type, tuple]]) -> Type:
        """The type of an expression among `values`, as far as fields go (names, calls, field access, maps)."""
        if isinstance(e, A.Var):
            return values.get(e.name, (ANY,))[0]
        if isinstance(e, A.Attr):
            base = self.type_of(e.value, values)
            item = base.arg if base.kind == "list" and base.arg is not None else base
            ft = item.field(e.name) if item.kind == "record" else None
            if ft is None:
                return ANY
            return Type("list", arg=ft) if base.kind == "list" else ft
        if isinstance(e, A.Call):
            return self.call_type(e.callee)
        if isinstance(e, A.MapExpr):
            over = self.type_of(e.over, values)
            inner = dict(values)
            inner[e.var] = (over.arg if over.kind == "list" and over.arg else ANY, ())
            return Type("list", arg=self.type_of(e.body, inner))
        return ANY

    def call_type(self, callee: str) -> Type:
        """What a call of a module or tool returns."""
        prog = self.program
        if callee in prog.modules:
            try:
                fields = tuple(prog.module_outputs(callee, self.catalogue))
            except KeyError:
                fields = ()
            return Type("record", name=f"{callee} result", fields=fields)
        return prog.tool_returns.get(callee, ANY)

    # ------------------------------------------------------------ building
    def add(self, span: A.Span, key: tuple | None, definition: bool = False) -> None:
        if not key or span is None:         # nothing known to name, or a name with no symbol (`earlier`)
            return
        occ = Occurrence(span, key, definition)
        self.occurrences.setdefault(span.file, []).append(occ)
        if definition:
            self.definitions.setdefault(key, occ)


def _fields(item) -> list[A.Field]:
    if isinstance(item, (A.Signature, A.Record)):
        return item.fields
    if isinstance(item, A.ToolDecl):
        return item.params or []
    return []


class _Walker:
    """Indexes one file's items."""

    def __init__(self, index: SymbolIndex, file: A.File):
        self.index, self.file = index, file
        self.text = index.texts.get(file.path) or SourceText(file.source)

    def walk(self) -> None:
        for item in self.file.items:
            method = getattr(self, type(item).__name__, None)
            if method is not None:
                method(item)

    def own(self, item) -> bool:
        """Whether `item` is the declaration its name refers to (not a duplicate the checker rejected)."""
        entry = self.index.decls.get(item.name)
        return entry is not None and entry[1] is item

    def define(self, item) -> None:
        if self.own(item):
            self.index.add(item.name_span, ("decl", self.file.path, item.name), True)

    def ref(self, span: A.Span, name: str) -> None:
        self.index.add(span, self.index.decl_key(name))

    def type_ref(self, t: A.TypeRef | None) -> None:
        if t is None:
            return
        name_span = leading(t.span, t.name)
        if t.name in ("str", "int", "float", "bool", "list", "enum"):
            self.index.add(name_span, ("type", t.name))
        else:
            self.ref(name_span, t.name)
        self.type_ref(t.arg)

    # ------------------------------------------------------------ declarations
    def Import(self, item: A.Import) -> None:
        span = self.text.string_in(item.span)
        if span is not None:
            target = os.path.normpath(os.path.join(os.path.dirname(self.file.path), item.path))
            self.index.add(span, ("import", target))

    def LMDecl(self, item: A.LMDecl) -> None:
        self.define(item)
        for name, span in zip(item.fallbacks, item.fallback_spans):      # `fallback(gpt, local)` names lms
            self.ref(span, name)
        for o in item.options:
            self.index.add(leading(o.span, o.name), ("lmoption", o.name))

    def DefaultLM(self, item: A.DefaultLM) -> None:
        self.ref(item.name_span, item.name)

    def Signature(self, item: A.Signature) -> None:
        self.define(item)
        for f in item.fields:
            # A field's span starts at `in`/`out`: its name is the first name after that word.
            name = next((s for n, s in list(self.text.names_in(f.span))[1:] if n == f.name), None)
            if name is not None and self.own(item):
                self.index.add(name, ("field", self.file.path, item.name, f.name), True)
            self.type_ref(f.type)

    def Record(self, item: A.Record) -> None:
        self.define(item)
        for f in item.fields:
            if self.own(item):
                self.index.add(leading(f.span, f.name), ("field", self.file.path, item.name, f.name), True)
            self.type_ref(f.type)

    def ToolDecl(self, item: A.ToolDecl) -> None:
        self.define(item)
        for p in item.params or []:
            if self.own(item):
                self.index.add(leading(p.span, p.name), ("field", self.file.path, item.name, p.name), True)
            self.type_ref(p.type)
        self.type_ref(item.returns)

    def ModuleDecl(self, item: A.ModuleDecl) -> None:
        self.define(item)
        kinds = self.index.catalogue.kinds
        if item.alternatives:
            for alt in item.alternatives:
                self.index.add(alt.kind_span, ("kind", alt.kind))
                self.options(item, alt.options, [alt.kind])
        else:
            self.index.add(item.kind_span, ("kind", item.kind))
        self.ref(item.signature_span, item.signature)
        variants = [v.kind for _, v in item.variants()]
        self.options(item, item.options, [k for k in variants if k in kinds] or variants)

    def options(self, module: A.ModuleDecl, options: list[A.Option], kinds: list[str]) -> None:
        """A module's options: their names, the declarations their values name, a demo's fields."""
        specs = self.index.catalogue.kinds
        for o in options:
            kind = next((k for k in kinds if k in specs and o.name in specs[k].options), kinds[0] if kinds else "")
            self.index.add(leading(o.span, o.name), ("kindoption", kind, o.name))
            spec = specs[kind].options.get(o.name) if kind in specs else None
            if spec is not None and spec.type in _REF_OPTIONS:
                named = {r.name for r in (o.value if isinstance(o.value, list) else [o.value]) if isinstance(r, A.Ref)}
                for name, span in list(self.text.names_in(o.span))[1:]:
                    if name in named:
                        self.ref(span, name)
            elif o.name == "demos" and isinstance(o.value, list):
                for demo in o.value:
                    if isinstance(demo, A.RecordLit):
                        for f in demo.fields:
                            key = self.index.owned_field(module.signature, f.name)
                            if key is None:
                                key = next((("extra", k, f.name) for k in kinds if k in specs and any(
                                    n == f.name for n, _, _ in (specs[k].demo_fields or ()))), None)
                            self.index.add(leading(f.span, f.name), key)

    def Pipeline(self, item: A.Pipeline) -> None:
        self.define(item)
        info = self.index.program.pipelines.get(item.name)
        mine = self.own(item) and info is not None and info.decl is item
        path, name = self.file.path, item.name
        scope = Scope(item.span, name)
        for p in item.params:
            key = ("param", path, name, p.name)
            self.index.add(leading(p.span, p.name), key, True)
            scope.values.setdefault(p.name, (info.params.get(p.name, ANY) if mine else ANY, key))
            self.type_ref(p.type)
        for o in item.outputs:
            self.index.add(leading(o.span, o.name), ("out", path, name, o.name), True)
            self.type_ref(o.type)
        for s in item.body:
            if isinstance(s, A.Assign) and s.name not in scope.values:
                key = ("var", path, name, s.name)
                self.index.add(s.name_span, key, True)
                scope.values[s.name] = (info.vars.get(s.name, ANY) if mine else ANY, key)
        self.index.scopes.append(scope)
        outs = {o.name for o in item.outputs}
        for s in item.body:
            if isinstance(s, A.Assign):
                self.expr(s.value, scope.values, item)
            elif isinstance(s, A.Return):
                for r in s.items:
                    if r.name in outs:
                        self.index.add(leading(r.span, r.name), ("out", path, name, r.name))
                    self.expr(r.value, scope.values, item)

    def CompileBlock(self, item: A.CompileBlock) -> None:
        self.ref(item.pipeline_span, item.pipeline)
        outputs = self.pipeline_outputs(item.pipeline)
        settings = self.index.catalogue.compile_settings
        for s in item.settings:
            self.index.add(leading(s.span, s.name), ("setting", s.name))
            spec = settings.get(s.name)
            kind = spec.type if spec is not None else ""
            v = s.value
            if kind == "lm" and isinstance(v, A.Var):
                self.ref(v.span, v.name)
            elif kind in ("metric", "optimizer"):
                call = A.Call(v.span, v.name, [], v.span) if isinstance(v, A.Var) else v
                if isinstance(call, A.Call) and call.callee != "python":
                    self.function(call, kind, outputs)

    def function(self, call: A.Call, kind: str, outputs: dict[str, tuple]) -> None:
        """`metric = exact_match(intent)` or `optimizer = knn_fewshot(k: 3)`."""
        known = self.index.catalogue.metrics if kind == "metric" else self.index.catalogue.optimizers
        if call.callee not in known:
            return
        self.index.add(call.callee_span, (kind, call.callee))
        option_tag = "metricoption" if kind == "metric" else "optoption"
        for a in call.args:
            if a.name is None:
                if isinstance(a.value, A.Var):
                    self.index.add(a.value.span, outputs.get(a.value.name))
                continue
            self.index.add(leading(a.span, a.name), (option_tag, call.callee, a.name))
            if a.name == "lm" and isinstance(a.value, A.Var):
                self.ref(a.value.span, a.value.name)

    def pipeline_outputs(self, pipeline: str) -> dict[str, tuple]:
        entry = self.index.decls.get(pipeline)
        if entry is None or not isinstance(entry[1], A.Pipeline):
            return {}
        return {o.name: ("out", entry[0], pipeline, o.name) for o in entry[1].outputs}

    def TestBlock(self, item: A.TestBlock) -> None:
        for case in item.cases:
            call = case.call
            self.ref(call.callee_span, call.callee)
            entry = self.index.decls.get(call.callee)
            target = entry[1] if entry and isinstance(entry[1], A.Pipeline) else None
            for a in call.args:
                if a.name is not None and target is not None and any(p.name == a.name for p in target.params):
                    self.index.add(leading(a.span, a.name), ("param", entry[0], call.callee, a.name))
            outputs = self.pipeline_outputs(call.callee)
            for assertion in case.assertions:
                if isinstance(assertion.left, A.Var):
                    self.index.add(assertion.left.span, outputs.get(assertion.left.name))

    # ------------------------------------------------------------ expressions
    def expr(self, e, values: dict[str, tuple[Type, tuple]], pipe: A.Pipeline) -> None:
        """Index an expression of a pipeline's body; `values` are the names visible there."""
        todo: list[tuple[object, dict]] = [(e, values)]
        while todo:                      # a loop, not recursion: a long `a + b + ...` chain stays cheap
            e, values = todo.pop()
            if isinstance(e, A.Var):
                entry = values.get(e.name)
                if entry is not None:
                    self.index.add(e.span, entry[1])
                else:
                    self.ref(e.span, e.name)
            elif isinstance(e, A.Attr):
                todo.append((e.value, values))
                base = self.index.type_of(e.value, values)
                self.index.add(trailing(e.span, e.name), self.index.field_key(base, e.name))
            elif isinstance(e, A.Call):
                self.ref(e.callee_span, e.callee)
                owner = self.index.decl(e.callee)
                sig = owner.signature if isinstance(owner, A.ModuleDecl) else e.callee
                for a in e.args:
                    if a.name is not None:
                        self.index.add(leading(a.span, a.name), self.index.owned_field(sig, a.name))
                    todo.append((a.value, values))
            elif isinstance(e, A.ListLit):
                todo.extend((x, values) for x in e.items)
            elif isinstance(e, A.Concat):
                todo.extend(((e.left, values), (e.right, values)))
            elif isinstance(e, A.MapExpr):
                todo.append((e.over, values))
                over = self.index.type_of(e.over, values)
                key = ("mapvar", self.file.path, e.var_span.line, e.var_span.col)
                self.index.add(e.var_span, key, True)
                inner = dict(values)
                inner[e.var] = (over.arg if over.kind == "list" and over.arg is not None else ANY, key)
                scope = Scope(e.span, pipe.name, {e.var: inner[e.var]})
                if e.ordered:
                    inner["earlier"] = (Type("list", arg=ANY), ())
                self.index.scopes.append(scope)
                todo.append((e.body, inner))
