"""Pass: each pipeline's inputs, assignments, expressions (names, calls, fields, lists, maps) and return.

Assignments may come in any order: a value is typed when it is first used, following the values it
is computed from, and a value that depends on itself is a cycle.
"""
from __future__ import annotations

from .. import ast as A
from ..checked_program import PipelineInfo
from ..diagnostics import Names, closest, did_you_mean
from ..types import ANY, SCALARS, STR, Type, assignable, show, unify
from .calls import Params, check_args
from .state import CheckState, listing, value_type, where

MAP_LIMIT = 1000     # the largest bound a map may have


def check_pipeline(state: CheckState, pipe: A.Pipeline) -> None:
    """Check the pipeline `collect_declarations` kept under this name, and fill in its types."""
    info = state.program.pipelines.get(pipe.name)
    if not info or info.decl is not pipe:
        return
    try:
        _pipeline(state, pipe, info)
    except RecursionError:    # typing follows chains of values recursively
        state.error(pipe.name_span, f"pipeline {pipe.name} chains values too deeply to check",
                    "no real pipeline needs thousands of steps in one chain", "too-deep")


def _pipeline(state: CheckState, pipe: A.Pipeline, info: PipelineInfo) -> None:
    for p in pipe.params:
        if p.name in info.params:
            state.error(p.span, f"duplicate input '{p.name}'", "", "duplicate")
            continue
        info.params[p.name] = state.resolve(p.type)
    declared_outs: dict[str, A.OutParam] = {}
    for o in pipe.outputs:
        if o.name in declared_outs:
            state.error(o.span, f"duplicate output '{o.name}'", "", "duplicate")
            continue
        declared_outs[o.name] = o
    if not pipe.outputs:
        state.error(pipe.name_span, f"pipeline {pipe.name} declares no outputs", "write `-> (answer)`", "no-outputs")
    assigns = _assignments(state, pipe, info)
    info.ret = _the_return(state, pipe)
    scope = _PipelineScope(state, info, assigns)
    for name in assigns:
        scope.type_of_var(name, assigns[name].name_span)
    if info.ret is not None:
        _returned(state, pipe, info, scope, declared_outs)
    for name, o in declared_outs.items():
        if name not in info.outputs:
            info.outputs[name] = state.resolve(o.type) if o.type is not None else ANY
    if info.ret is not None:    # without a return everything is unused; that error says it all
        _unused(state, pipe, scope, assigns)
    info.vars = {n: scope.var_types.get(n, ANY) for n in assigns}


def _assignments(state: CheckState, pipe: A.Pipeline, info: PipelineInfo) -> dict[str, A.Assign]:
    assigns: dict[str, A.Assign] = {}
    for s in pipe.body:
        if not isinstance(s, A.Assign):
            continue
        if s.name in assigns:
            state.error(s.name_span, f"'{s.name}' is assigned twice",
                        f"first assigned at {where(assigns[s.name].name_span, s.span)}; pipelines are dataflow "
                        "graphs, each name is set once", "duplicate")
        elif s.name in info.params:
            state.error(s.name_span, f"'{s.name}' is a pipeline input and cannot be reassigned",
                        "choose another name", "duplicate")
        else:
            assigns[s.name] = s
    return assigns


def _the_return(state: CheckState, pipe: A.Pipeline) -> A.Return | None:
    returns = [s for s in pipe.body if isinstance(s, A.Return)]
    if not returns and pipe.outputs:
        state.error(pipe.name_span, f"pipeline {pipe.name} has no return",
                    "end it with `return " + ", ".join(f"{o.name} = ..." for o in pipe.outputs) + "`",
                    "missing-return")
    for extra in returns[1:]:
        state.error(extra.span, "a pipeline has one return",
                    f"the first return is at {where(returns[0].span, extra.span)}", "duplicate")
    return returns[0] if returns else None


def _returned(state: CheckState, pipe: A.Pipeline, info: PipelineInfo, scope: _PipelineScope,
              declared_outs: dict[str, A.OutParam]) -> None:
    """Each returned value against its declared output; every declared output set exactly once."""
    returned: dict[str, A.ReturnItem] = {}
    meant: set[str] = set()       # declared outputs a misspelled return item was probably meant for
    for item in info.ret.items:
        if item.name in returned:
            state.error(item.span, f"output '{item.name}' is returned twice", "", "duplicate")
            continue
        returned[item.name] = item
        t = scope.type_of(item.value)
        out = declared_outs.get(item.name)
        if out is None:
            guess = closest(item.name, [n for n in declared_outs if n not in returned])
            meant.update([guess] if guess else [])
            state.error(item.span, f"'{item.name}' is not a declared output of pipeline {pipe.name}",
                        f"did you mean '{guess}'?" if guess else
                        f"add it to `-> ({', '.join(list(declared_outs) + [item.name])})`", "bad-return")
            continue
        if out.type is None:
            info.outputs[item.name] = t
            continue
        dt = info.outputs[item.name] = state.resolve(out.type)
        if not assignable(t, dt):
            state.error(item.value.span, f"type mismatch: output '{item.name}' is declared {show(dt)}, "
                        f"but the value is {show(t)}", "", "type-mismatch")
    for name in declared_outs:
        if name not in returned and name not in meant:
            state.error(info.ret.span, f"return does not set declared output '{name}'",
                        f"add `{name} = ...` to the return", "missing-output")


def _unused(state: CheckState, pipe: A.Pipeline, scope: _PipelineScope, assigns: dict[str, A.Assign]) -> None:
    for p in pipe.params:
        if p.name not in scope.used:
            state.warn(p.span, f"pipeline input '{p.name}' is never used", "remove it or pass it to a module",
                       "unused")
    for name, a in assigns.items():
        if name not in scope.used:
            state.warn(a.name_span, f"'{name}' is computed but never used",
                       "its LM calls still run; remove it or use its result", "unused")


def _callee(state: CheckState, name: str) -> tuple:
    """A module's or tool's parameters (`Params`, None when unknown), result type and whether its
    arguments may be positional, built once: a big signature called many times would otherwise cost
    its size on every call."""
    if name not in state.calls:
        prog = state.program
        if name in prog.modules:
            sig = prog.signatures.get(prog.modules[name].signature)
            if sig is None:
                state.calls[name] = (None, ANY, False)
            else:
                fields = tuple(prog.module_outputs(name, state.catalogue))
                state.calls[name] = (Params([(n, t, t.optional) for n, t, _ in sig.inputs]),
                                     Type("record", name=f"{name} result", fields=fields), False)
        else:
            tool = prog.tools[name]
            params = None if tool.params is None else \
                Params([(p.name, state.resolve(p.type), p.type.optional) for p in tool.params])
            result = state.resolve(tool.returns) if tool.returns is not None else ANY
            state.calls[name] = (params, result if params is not None else ANY, True)
    return state.calls[name]


def _only_some_alternatives(state: CheckState, result: Type, name: str) -> str:
    """Why a one_of module's result lacks a field some of its alternatives add (ChainOfThought's
    `reasoning`), or "" when that is not why."""
    decl = state.program.modules.get((result.name or "").removesuffix(" result"))
    if decl is None or not decl.alternatives:
        return ""
    adders = [alt.kind for alt in decl.alternatives
              if any(n == name for n, _, _ in getattr(state.catalogue.kinds.get(alt.kind), "extra_outputs", ()))]
    if not adders:
        return ""
    return (f"'{name}' comes from {' and '.join(dict.fromkeys(adders))} only, not from every alternative of one_of "
            f"module {decl.name}: the one the compile chooses may not return it")


def _field(state: CheckState, record: Type, name: str) -> Type | None:
    """`record.field(name)`, through an index for records with many fields (a signature with
    thousands of outputs, read thousands of times)."""
    if len(record.fields) < 16:
        return record.field(name)
    entry = state.field_index.get(id(record.fields))
    if entry is None or entry[0] is not record.fields:
        index: dict[str, Type] = {}
        for fname, ftype, _ in record.fields:
            index.setdefault(fname, ftype)
        entry = state.field_index[id(record.fields)] = (record.fields, index)   # keeps the key's tuple alive
    return entry[1].get(name)


class _PipelineScope:
    """Types the expressions of one pipeline; variables may be used before the line that sets them."""

    def __init__(self, state: CheckState, info: PipelineInfo, assigns: dict[str, A.Assign]):
        self.state, self.info, self.assigns = state, info, assigns
        self.var_types: dict[str, Type] = {}
        self.busy: list[str] = []
        self.used: set[str] = set()
        self.reported_cycles: set[frozenset] = set()
        self.locals: list[dict[str, Type]] = []      # map variables in scope, innermost last
        self.names: Names | None = None

    def map_type(self, e: A.MapExpr) -> Type:
        """`map v in xs max N { body }` is list[type of body], with v bound to an item of xs."""
        state = self.state
        over = self.type_of(e.over)
        item = ANY
        if over.kind == "list":
            item = over.arg or ANY
        elif over.kind != "any":
            state.error(e.over.span, f"map needs a list to go over, but this is {show(over)}",
                        "map over a list field, like `map q in plan.questions max 6 { ... }`", "type-mismatch")
        if not 1 <= e.bound <= MAP_LIMIT:
            state.error(e.bound_span, f"the bound of a map must be a whole number from 1 to {MAP_LIMIT}",
                        "it caps how many items run, so the worst-case number of LM calls is known", "bad-map")
        names = {e.var} | ({"earlier"} if e.ordered else set())
        for name in sorted(names):
            if name in self.info.params or name in self.assigns or any(name in sc for sc in self.locals):
                state.error(e.var_span, f"map variable '{name}' hides another value of the same name",
                            "choose another name for the map variable", "duplicate")
        scope = {e.var: item}
        if e.ordered:
            scope["earlier"] = Type("list", arg=ANY)     # the results so far, in order
        self.locals.append(scope)
        body = self.type_of(e.body)
        self.locals.pop()
        if e.var not in self.used:
            state.warn(e.var_span, f"map variable '{e.var}' is not used in the body",
                       "the body runs once per item; pass the item to it", "unused")
        return Type("list", arg=body)

    def type_of_var(self, name: str, span: A.Span) -> Type:
        if name in self.var_types:
            return self.var_types[name]
        if name in self.busy:
            cycle = self.busy[self.busy.index(name):] + [name]
            key = frozenset(cycle)
            if key not in self.reported_cycles:
                self.reported_cycles.add(key)
                first = self.assigns[cycle[0]]
                self.state.error(first.name_span, "cycle: " + " -> ".join(cycle),
                                 "a value cannot depend on itself; pipelines are acyclic graphs", "cycle")
            return ANY
        self.busy.append(name)
        t = self.type_of(self.assigns[name].value)
        self.busy.pop()
        self.var_types[name] = t
        return t

    def type_of(self, e: A.Expr) -> Type:
        state = self.state
        if isinstance(e, A.Literal):
            return value_type(e.value)
        if isinstance(e, A.Var):
            for scope in reversed(self.locals):
                if e.name in scope:
                    self.used.add(e.name)
                    return scope[e.name]
            if e.name in self.info.params:
                self.used.add(e.name)
                return self.info.params[e.name]
            if e.name in self.assigns:
                self.used.add(e.name)
                return self.type_of_var(e.name, e.span)
            kind = state.declared.get(e.name, ("",))[0]
            if kind in ("module", "tool"):
                state.error(e.span, f"'{e.name}' is a {kind}; call it", f"write `{e.name}(...)`", "bad-call")
            elif kind:
                state.error(e.span, f"'{e.name}' is {'an' if kind == 'lm' else 'a'} {kind}, not a value",
                            "values in a pipeline are its inputs and the names it assigns", "bad-name")
            else:
                if self.names is None:     # indexed once per pipeline: it may misspell thousands of names
                    self.names = Names(self.info.params, self.assigns)
                state.unknown(e.span, "name", e.name, self.names)
            return ANY
        if isinstance(e, A.MapExpr):
            return self.map_type(e)
        if isinstance(e, A.Attr):
            base = self.type_of(e.value)
            if base.kind == "any":
                return ANY
            if base.kind == "list" and base.arg is not None and base.arg.kind in ("record", "any"):
                # Field access on a list of results projects the field: answers.answer is list[str].
                item = base.arg
                if item.kind == "any":
                    return Type("list", arg=ANY)
                ft = _field(state, item, e.name)
                if ft is None:
                    names = [n for n, _, _ in item.fields]
                    state.error(e.span, f"{item.name or 'these values'} have no field '{e.name}'",
                                did_you_mean(e.name, names) or "their fields are: " + listing(names), "bad-field")
                    return ANY
                return Type("list", arg=ft)
            if base.kind != "record":
                state.error(e.span, f"{show(base)} has no field '{e.name}'",
                            "only module results and records have fields", "bad-field")
                return ANY
            ft = _field(state, base, e.name)
            if ft is None:
                names = [n for n, _, _ in base.fields]
                state.error(e.span, f"{base.name or 'this value'} has no field '{e.name}'",
                            _only_some_alternatives(state, base, e.name) or did_you_mean(e.name, names)
                            or "its fields are: " + listing(names), "bad-field")
                return ANY
            return ft
        if isinstance(e, A.ListLit):
            t = ANY
            for item in e.items:
                it = self.type_of(item)
                u = unify(t, it)
                if u is None:
                    state.error(item.span, f"list items have different types: {show(t)} and {show(it)}", "",
                                "type-mismatch")
                    u = ANY
                t = u
            return Type("list", arg=t)
        if isinstance(e, A.Concat):
            lt, rt = self.type_of(e.left), self.type_of(e.right)
            if lt.kind == "any" or rt.kind == "any":
                return rt if lt.kind == "any" else lt
            if lt.kind == "list" and rt.kind == "list":
                u = unify(lt.arg or ANY, rt.arg or ANY)
                if u is None:
                    state.error(e.span, f"cannot concatenate {show(lt)} and {show(rt)}", "", "type-mismatch")
                    return Type("list", arg=ANY)
                return Type("list", arg=u)
            if lt.kind in SCALARS + ("enum",) and rt.kind in SCALARS + ("enum",):
                return STR
            hint = ""
            if "list" in (lt.kind, rt.kind):
                single = e.right if lt.kind == "list" else e.left
                hint = f"wrap the single value in a list: [{state.snippet(single.span) or '...'}]"
            state.error(e.span, f"cannot concatenate {show(lt)} and {show(rt)}", hint, "type-mismatch")
            return ANY
        if isinstance(e, A.Call):
            return self.call(e)
        return ANY

    def call(self, c: A.Call) -> Type:
        state, prog = self.state, self.state.program
        if c.callee in prog.modules or c.callee in prog.tools:
            params, result, positional_ok = _callee(state, c.callee)
            if params is None:
                for a in c.args:
                    self.type_of(a.value)
                return ANY
            what = f"{'module' if c.callee in prog.modules else 'tool'} {c.callee}"
            check_args(state, c, params, self.type_of, what, positional_ok=positional_ok)
            return result
        for a in c.args:
            self.type_of(a.value)
        if c.callee in prog.pipelines:
            state.error(c.callee_span, "pipelines cannot call other pipelines",
                        "share the modules instead: declare them once and call them from both", "bad-call")
        elif c.callee in prog.signatures:
            state.error(c.callee_span, f"'{c.callee}' is a signature; call a module that implements it",
                        f"declare `module m = Predict({c.callee})` and call `m(...)`", "bad-call")
        else:
            state.unknown(c.callee_span, "module or tool", c.callee, state.names("module or tool"))
        return ANY
