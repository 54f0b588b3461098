"""Static checks over parsed .pipe files: names, calls, types, cycles, returns, options.

`check` never stops at the first problem: it walks every declaration and returns all diagnostics,
together with the resolved program (symbol tables and inferred types) that lowering builds on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import ast as A
from .catalogue import LM_OPTIONS, Catalogue, FunctionSpec, OptionSpec
from .diagnostics import Diagnostic, did_you_mean
from .types import ANY, BOOL, FLOAT, INT, SCALARS, STR, Type, assignable, show, unify

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_KEYLIKE = re.compile(r"^(sk-|sk_|xox|ghp_|AIza)|key", re.I)


@dataclass(slots=True)
class SigInfo:
    decl: A.Signature
    inputs: list[tuple[str, Type, str]]
    outputs: list[tuple[str, Type, str]]


@dataclass(slots=True)
class PipelineInfo:
    decl: A.Pipeline
    params: dict[str, Type]
    outputs: dict[str, Type]
    vars: dict[str, Type]
    ret: A.Return | None


@dataclass(slots=True)
class Program:
    """The checked program: every declaration by name, with resolved types."""

    files: list[A.File]
    lms: dict[str, A.LMDecl] = field(default_factory=dict)
    default_lm: str | None = None
    records: dict[str, Type] = field(default_factory=dict)
    signatures: dict[str, SigInfo] = field(default_factory=dict)
    modules: dict[str, A.ModuleDecl] = field(default_factory=dict)
    tools: dict[str, A.ToolDecl] = field(default_factory=dict)
    tool_returns: dict[str, Type] = field(default_factory=dict)
    pipelines: dict[str, PipelineInfo] = field(default_factory=dict)
    compiles: list[A.CompileBlock] = field(default_factory=list)
    tests: list[A.TestBlock] = field(default_factory=list)

    @property
    def main(self) -> A.File:
        return self.files[0]

    def module_outputs(self, module: str, catalogue: Catalogue) -> list[tuple[str, Type, str]]:
        """Fields a call of `module` returns: its signature's outputs plus what its kind adds."""
        decl = self.modules[module]
        sig = self.signatures.get(decl.signature)
        kind = catalogue.kinds.get(decl.kind)
        extra = list(kind.extra_outputs) if kind else []
        return extra + (sig.outputs if sig else [])


def check(files: list[A.File], catalogue: Catalogue) -> tuple[Program, list[Diagnostic]]:
    """Check parsed files (the main file first, then its imports) and resolve names and types.

    >>> from pipec.dsl.parser import parse
    >>> f, _ = parse('signature S { in q: str out a: str } module m = Predict(S) '
    ...              'pipeline p(q: str) -> (a) { r = mm(q: q) return a = r.a }', "x.pipe")
    >>> _, diags = check([f], Catalogue())
    >>> [d.message for d in diags][:1]
    ["unknown module kind 'Predict'"]
    """
    return _Checker(files, catalogue).run()


class _Checker:
    def __init__(self, files: list[A.File], catalogue: Catalogue):
        self.files = files
        self.cat = catalogue
        self.prog = Program(files)
        self.diags: list[Diagnostic] = []
        self.broken = set().union(*(f.broken_names for f in files)) if files else set()
        self.declared: dict[str, tuple[str, A.Span]] = {}

    # ------------------------------------------------------------ helpers
    def error(self, span: A.Span, message: str, hint: str = "", code: str = "") -> None:
        self.diags.append(Diagnostic("error", message, span, hint, code))

    def warn(self, span: A.Span, message: str, hint: str = "", code: str = "") -> None:
        self.diags.append(Diagnostic("warning", message, span, hint, code))

    def unknown(self, span: A.Span, what: str, name: str, candidates, code: str = "unknown-name") -> None:
        if name in self.broken:
            return  # its declaration has a syntax error, already reported
        self.error(span, f"unknown {what} '{name}'", did_you_mean(name, candidates), code)

    def declare(self, kind: str, name: str, span: A.Span) -> bool:
        if name in self.declared:
            prev_kind, prev = self.declared[name]
            self.error(span, f"duplicate name '{name}': already declared as {prev_kind} at {prev}",
                       "rename one of them", "duplicate")
            return False
        self.declared[name] = (kind, span)
        return True

    # ------------------------------------------------------------ driver
    def run(self) -> tuple[Program, list[Diagnostic]]:
        items = [it for f in self.files for it in f.items]
        # Pass 1: declare every name, so order in the file does not matter.
        for it in items:
            if isinstance(it, A.LMDecl) and self.declare("lm", it.name, it.name_span):
                self.prog.lms[it.name] = it
            elif isinstance(it, A.Record) and self.declare("record", it.name, it.name_span):
                self.prog.records[it.name] = Type("record", name=it.name)  # filled below
            elif isinstance(it, A.Signature) and self.declare("signature", it.name, it.name_span):
                self.prog.signatures[it.name] = SigInfo(it, [], [])
            elif isinstance(it, A.ModuleDecl) and self.declare("module", it.name, it.name_span):
                self.prog.modules[it.name] = it
            elif isinstance(it, A.ToolDecl) and self.declare("tool", it.name, it.name_span):
                self.prog.tools[it.name] = it
            elif isinstance(it, A.Pipeline) and self.declare("pipeline", it.name, it.name_span):
                self.prog.pipelines[it.name] = PipelineInfo(it, {}, {}, {}, None)
        defaults = [it for it in items if isinstance(it, A.DefaultLM)]
        for extra in defaults[1:]:
            self.error(extra.span, "the default LM is set more than once", f"first set at {defaults[0].span}",
                       "duplicate")
        # Pass 2: resolve and check.
        self._records([it for it in items if isinstance(it, A.Record)])
        for it in items:
            if isinstance(it, A.LMDecl):
                self._lm(it)
            elif isinstance(it, A.DefaultLM):
                if it.name in self.prog.lms:
                    self.prog.default_lm = self.prog.default_lm or it.name
                else:
                    self.unknown(it.name_span, "lm", it.name, self.prog.lms)
            elif isinstance(it, A.Signature) and self.prog.signatures.get(it.name, None) is not None \
                    and self.prog.signatures[it.name].decl is it:
                self._signature(it)
        for it in items:
            if isinstance(it, A.ModuleDecl):
                self._module(it)
            elif isinstance(it, A.ToolDecl):
                self._tool(it)
        for it in items:
            if isinstance(it, A.Pipeline) and self.prog.pipelines.get(it.name) and \
                    self.prog.pipelines[it.name].decl is it:
                self._pipeline(it)
        for it in items:
            if isinstance(it, A.CompileBlock):
                self._compile(it)
                self.prog.compiles.append(it)
            elif isinstance(it, A.TestBlock):
                self._test(it)
                self.prog.tests.append(it)
        if self.prog.default_lm is None and len(self.prog.lms) == 1:
            self.prog.default_lm = next(iter(self.prog.lms))
        return self.prog, self.diags

    # ------------------------------------------------------------ types
    def resolve(self, ref: A.TypeRef) -> Type:
        t = self._resolve(ref)
        if ref.optional:
            t = Type(t.kind, t.arg, t.values, t.name, t.fields, True)
        return t

    def _resolve(self, ref: A.TypeRef) -> Type:
        if ref.name in SCALARS and ref.arg is None:
            return Type(ref.name)
        if ref.name == "enum":
            seen = set()
            for v in ref.values:
                if v in seen:
                    self.error(ref.span, f"enum value '{v}' appears twice", "", "duplicate")
                seen.add(v)
            return Type("enum", values=tuple(dict.fromkeys(ref.values)))
        if ref.name == "list":
            if ref.arg is None:
                self.error(ref.span, "list needs an item type", "write `list[str]`", "bad-type")
                return Type("list", arg=ANY)
            return Type("list", arg=self.resolve(ref.arg))
        if ref.arg is not None:
            self.error(ref.span, f"'{ref.name}' takes no type argument", "only `list[T]` is generic", "bad-type")
        if ref.name in self.prog.records:
            return self.prog.records[ref.name]
        if ref.name in self.prog.signatures:
            self.error(ref.span, f"'{ref.name}' is a signature, not a type",
                       "declare a `record` for structured values", "bad-type")
            return ANY
        known = list(SCALARS) + ["list", "enum"] + list(self.prog.records)
        if ref.name not in self.broken:
            self.error(ref.span, f"unknown type '{ref.name}'", did_you_mean(ref.name, known), "unknown-name")
        return ANY

    def _records(self, records: list[A.Record]) -> None:
        by_name = {r.name: r for r in records if self.prog.records.get(r.name) is not None}
        state: dict[str, str] = {}

        def build(name: str, chain: list[str]) -> Type:
            if state.get(name) == "done":
                return self.prog.records[name]
            if state.get(name) == "busy":
                r = by_name[chain[0]]
                self.error(r.name_span, "record cycle: " + " -> ".join(chain + [name]),
                           "records cannot contain themselves; use a list of a smaller record", "cycle")
                return ANY
            state[name] = "busy"
            rec = by_name[name]
            fields, seen = [], set()
            for f in rec.fields:
                if f.name in seen:
                    self.error(f.span, f"duplicate field '{f.name}' in record {name}", "", "duplicate")
                seen.add(f.name)
                ft = self._record_field_type(f.type, chain + [name], build)
                fields.append((f.name, ft, f.description))
            self.prog.records[name] = Type("record", name=name, fields=tuple(fields))
            state[name] = "done"
            return self.prog.records[name]

        for name in by_name:
            build(name, [])

    def _record_field_type(self, ref: A.TypeRef, chain, build) -> Type:
        if ref.name in self.prog.records and ref.arg is None:
            t = build(ref.name, chain)
            return Type(t.kind, t.arg, t.values, t.name, t.fields, ref.optional)
        if ref.name == "list" and ref.arg is not None and ref.arg.name in self.prog.records:
            inner = self._record_field_type(ref.arg, chain, build)
            return Type("list", arg=inner, optional=ref.optional)
        return self.resolve(ref)

    # ------------------------------------------------------------ options
    def _options(self, owner: str, options: list[A.Option], specs: dict[str, OptionSpec], span_for_hint: str = ""):
        seen = set()
        for opt in options:
            if opt.name in seen:
                self.error(opt.span, f"option '{opt.name}' is given twice", "", "duplicate")
            seen.add(opt.name)
            spec = specs.get(opt.name)
            if spec is None:
                hint = did_you_mean(opt.name, specs) or ("known options: " + ", ".join(sorted(specs)) if specs
                                                         else f"{owner} takes no options")
                self.error(opt.span, f"unknown option '{opt.name}' for {owner}", hint, "unknown-option")
                continue
            self._option_value(owner, opt, spec)

    def _option_value(self, owner: str, opt: A.Option, spec: OptionSpec) -> None:
        v = opt.value
        ok = {
            "str": isinstance(v, str),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "number": isinstance(v, (int, float)) and not isinstance(v, bool),
            "float": isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": isinstance(v, bool),
            "list": isinstance(v, list),
            "lm": isinstance(v, A.Ref),
            "name": isinstance(v, A.Ref),
        }.get(spec.type, True)
        if not ok:
            want = {"number": "a number", "int": "an integer", "float": "a number", "str": "a string",
                    "bool": "true or false", "list": "a list", "lm": "the name of an lm declaration",
                    "name": "a name"}.get(spec.type, spec.type)
            self.error(opt.span, f"option '{opt.name}' of {owner} must be {want}", spec.doc, "bad-option")
            return
        if spec.type == "lm" and v.name not in self.prog.lms:
            self.unknown(opt.span, "lm", v.name, self.prog.lms)
        if spec.choices and v not in spec.choices:
            self.error(opt.span, f"option '{opt.name}' of {owner} must be one of: " + ", ".join(map(str, spec.choices)),
                       did_you_mean(str(v), map(str, spec.choices)), "bad-option")
        if spec.minimum is not None and isinstance(v, (int, float)) and v < spec.minimum:
            self.error(opt.span, f"option '{opt.name}' of {owner} must be at least {spec.minimum:g}", "", "bad-option")

    # ------------------------------------------------------------ declarations
    def _lm(self, lm: A.LMDecl) -> None:
        if "/" not in lm.model or lm.model.startswith("/") or lm.model.endswith("/"):
            self.error(lm.span, f"LM id '{lm.model}' needs a provider prefix",
                       "write `provider/model`, e.g. \"openai/gpt-4o-mini\" or \"local/smollm2\"", "bad-lm")
        for opt in lm.options:
            if opt.name in ("api_key", "key", "token") or (isinstance(opt.value, str) and opt.value.startswith("sk-")):
                self.error(opt.span, "API keys do not belong in .pipe files",
                           "put the key in an environment variable and name it with `api_key_env: \"OPENAI_API_KEY\"`",
                           "secret")
        self._options(f"lm {lm.name}", [o for o in lm.options if o.name not in ("api_key", "key", "token")],
                      LM_OPTIONS)

    def _signature(self, sig: A.Signature) -> None:
        info = self.prog.signatures[sig.name]
        seen: set[str] = set()
        for f in sig.fields:
            if f.name in seen:
                self.error(f.span, f"duplicate field '{f.name}' in signature {sig.name}",
                           "a name is either an input or an output, once", "duplicate")
                continue
            seen.add(f.name)
            entry = (f.name, self.resolve(f.type), f.description)
            (info.inputs if f.direction == "in" else info.outputs).append(entry)
        if not info.outputs:
            self.error(sig.name_span, f"signature {sig.name} has no outputs",
                       "add at least one `out name: type` field", "no-outputs")

    def _module(self, mod: A.ModuleDecl) -> None:
        if self.prog.modules.get(mod.name) is not mod:
            return
        kind = self.cat.kinds.get(mod.kind)
        if kind is None:
            self.error(mod.kind_span, f"unknown module kind '{mod.kind}'",
                       did_you_mean(mod.kind, self.cat.kinds) or
                       ("known kinds: " + ", ".join(sorted(self.cat.kinds)) if self.cat.kinds else ""), "unknown-kind")
        if mod.signature not in self.prog.signatures:
            if mod.signature in self.prog.records:
                self.error(mod.signature_span, f"'{mod.signature}' is a record, not a signature",
                           "a module implements a `signature` with in/out fields", "unknown-name")
            else:
                self.unknown(mod.signature_span, "signature", mod.signature, self.prog.signatures)
        if kind is not None:
            self._options(f"{mod.kind} module {mod.name}", mod.options, kind.options)
            sig = self.prog.signatures.get(mod.signature)
            if sig is not None:
                names = {n for n, _, _ in sig.inputs + sig.outputs}
                for extra, _, _ in kind.extra_outputs:
                    if extra in names:
                        self.error(mod.span, f"{mod.kind} adds an output named '{extra}', which signature "
                                   f"{mod.signature} already has", f"rename the signature's field '{extra}'", "duplicate")

    def _tool(self, tool: A.ToolDecl) -> None:
        if self.prog.tools.get(tool.name) is not tool:
            return
        if tool.loader not in self.cat.tool_loaders:
            self.error(tool.loader_span, f"unknown tool loader '{tool.loader}'",
                       did_you_mean(tool.loader, self.cat.tool_loaders) or
                       'write `python("package.module:function")`', "unknown-name")
        if not _TARGET.match(tool.target):
            self.error(tool.span, f"tool target '{tool.target}' is not `package.module:function`",
                       'for example python("examples.corpus:search")', "bad-tool")
        seen = set()
        for p in tool.params or ():
            if p.name in seen:
                self.error(p.span, f"duplicate parameter '{p.name}'", "", "duplicate")
            seen.add(p.name)
            self.resolve(p.type)
        if tool.returns is not None:
            self.prog.tool_returns[tool.name] = self.resolve(tool.returns)

    # ------------------------------------------------------------ pipelines
    def _pipeline(self, pipe: A.Pipeline) -> None:
        info = self.prog.pipelines[pipe.name]
        for p in pipe.params:
            if p.name in info.params:
                self.error(p.span, f"duplicate input '{p.name}'", "", "duplicate")
                continue
            info.params[p.name] = self.resolve(p.type)
        declared_outs: dict[str, A.OutParam] = {}
        for o in pipe.outputs:
            if o.name in declared_outs:
                self.error(o.span, f"duplicate output '{o.name}'", "", "duplicate")
                continue
            declared_outs[o.name] = o
        if not pipe.outputs:
            self.error(pipe.name_span, f"pipeline {pipe.name} declares no outputs", "write `-> (answer)`", "no-outputs")
        assigns: dict[str, A.Assign] = {}
        returns = [s for s in pipe.body if isinstance(s, A.Return)]
        for s in pipe.body:
            if isinstance(s, A.Assign):
                if s.name in assigns:
                    self.error(s.name_span, f"'{s.name}' is assigned twice",
                               f"first assigned at {assigns[s.name].name_span}; pipelines are dataflow graphs, "
                               "each name is set once", "duplicate")
                elif s.name in info.params:
                    self.error(s.name_span, f"'{s.name}' is a pipeline input and cannot be reassigned",
                               "choose another name", "duplicate")
                else:
                    assigns[s.name] = s
        if not returns:
            self.error(pipe.name_span, f"pipeline {pipe.name} has no return",
                       "end it with `return " + ", ".join(f"{o.name} = ..." for o in pipe.outputs) + "`",
                       "missing-return")
        for extra in returns[1:]:
            self.error(extra.span, "a pipeline has one return", f"first return at {returns[0].span}", "duplicate")
        info.ret = returns[0] if returns else None

        scope = _PipelineScope(self, info, assigns)
        for name in assigns:
            scope.type_of_var(name, assigns[name].name_span)
        if info.ret is not None:
            returned: dict[str, A.ReturnItem] = {}
            for item in info.ret.items:
                if item.name in returned:
                    self.error(item.span, f"output '{item.name}' is returned twice", "", "duplicate")
                    continue
                returned[item.name] = item
                t = scope.type_of(item.value)
                out = declared_outs.get(item.name)
                if out is None:
                    self.error(item.span, f"'{item.name}' is not a declared output of pipeline {pipe.name}",
                               did_you_mean(item.name, declared_outs) or
                               f"add it to `-> ({', '.join(list(declared_outs) + [item.name])})`", "bad-return")
                    continue
                if out.type is not None:
                    dt = self.resolve(out.type)
                    if not assignable(t, dt):
                        self.error(item.value.span, f"type mismatch: output '{item.name}' is declared {show(dt)}, "
                                   f"but the value is {show(t)}", "", "type-mismatch")
                    info.outputs[item.name] = dt
                else:
                    info.outputs[item.name] = t
            for name, out in declared_outs.items():
                if name not in returned:
                    self.error(info.ret.span, f"return does not set declared output '{name}'",
                               f"add `{name} = ...` to the return", "missing-output")
        for name, o in declared_outs.items():
            info.outputs.setdefault(name, self.resolve(o.type) if o.type is not None else ANY)
        for p in pipe.params:
            if p.name not in scope.used:
                self.warn(p.span, f"pipeline input '{p.name}' is never used", "remove it or pass it to a module",
                          "unused")
        for name, a in assigns.items():
            if name not in scope.used:
                self.warn(a.name_span, f"'{name}' is computed but never used",
                          "its LM calls still run; remove it or use its result", "unused")
        info.vars = {n: scope.var_types.get(n, ANY) for n in assigns}

    # ------------------------------------------------------------ compile and test blocks
    def _compile(self, block: A.CompileBlock) -> None:
        info = self.prog.pipelines.get(block.pipeline)
        if info is None:
            self.unknown(block.pipeline_span, "pipeline", block.pipeline, self.prog.pipelines)
        seen = set()
        specs = self.cat.compile_settings
        for s in block.settings:
            if s.name in seen:
                self.error(s.span, f"setting '{s.name}' is given twice", "", "duplicate")
            seen.add(s.name)
            spec = specs.get(s.name)
            if spec is None:
                self.error(s.span, f"unknown compile setting '{s.name}'",
                           did_you_mean(s.name, specs) or "known settings: " + ", ".join(sorted(specs)),
                           "unknown-option")
                continue
            if spec.type in ("metric", "optimizer"):
                table = self.cat.metrics if spec.type == "metric" else self.cat.optimizers
                self._function_call(s, spec.type, table, info)
            elif spec.type == "lm":
                if not isinstance(s.value, A.Var):
                    self.error(s.value.span, f"'{s.name}' must name an lm declaration", "", "bad-option")
                elif s.value.name not in self.prog.lms:
                    self.unknown(s.value.span, "lm", s.value.name, self.prog.lms)
            else:
                value = s.value.value if isinstance(s.value, A.Literal) else None
                self._option_value("compile", A.Option(s.span, s.name, value if value is not None else object()), spec)
        if "metric" not in seen:
            self.error(block.span, f"compile block for {block.pipeline} has no metric",
                       "add e.g. `metric = exact_match(answer)`", "missing-setting")
        if "trainset" not in seen:
            self.error(block.span, f"compile block for {block.pipeline} has no trainset",
                       'add `trainset = "train.jsonl"`', "missing-setting")

    def _function_call(self, s: A.Setting, what: str, table: dict[str, FunctionSpec], info: PipelineInfo | None):
        v = s.value
        if isinstance(v, A.Var):
            v = A.Call(v.span, v.name, [], v.span)
        if not isinstance(v, A.Call):
            self.error(s.value.span, f"{what} must be a call like `{'exact_match(answer)' if what == 'metric' else 'bootstrap_fewshot(max_demos: 4)'}`",
                       "", "bad-option")
            return
        if v.callee == "python":
            if len(v.args) != 1 or not isinstance(v.args[0].value, A.Literal) or \
                    not _TARGET.match(str(v.args[0].value.value)):
                self.error(v.span, f'a python {what} is written python("package.module:function")', "", "bad-option")
            return
        spec = table.get(v.callee)
        if spec is None:
            self.error(v.callee_span, f"unknown {what} '{v.callee}'",
                       did_you_mean(v.callee, table) or ("known: " + ", ".join(sorted(table)) if table else ""),
                       "unknown-name")
            return
        for a in v.args:
            if a.name is None:
                if not spec.field_args:
                    self.error(a.span, f"{what} {v.callee} takes only named options", "", "bad-option")
                elif not isinstance(a.value, A.Var):
                    self.error(a.span, f"{what} {v.callee} takes output names, like `{v.callee}(answer)`", "",
                               "bad-option")
                elif info is not None and a.value.name not in {o.name for o in info.decl.outputs}:
                    self.error(a.span, f"'{a.value.name}' is not an output of pipeline {info.decl.name}",
                               did_you_mean(a.value.name, [o.name for o in info.decl.outputs]), "unknown-name")
                continue
            ospec = spec.options.get(a.name)
            if ospec is None:
                self.error(a.span, f"unknown option '{a.name}' for {what} {v.callee}",
                           did_you_mean(a.name, spec.options) or
                           ("known options: " + ", ".join(sorted(spec.options)) if spec.options else ""),
                           "unknown-option")
                continue
            val = a.value
            if isinstance(val, A.Literal):
                raw = val.value
            elif isinstance(val, A.Var):
                raw = A.Ref(val.name)
            elif isinstance(val, A.ListLit):
                raw = [x.value if isinstance(x, A.Literal) else None for x in val.items]
            else:
                raw = object()
            self._option_value(f"{what} {v.callee}", A.Option(a.span, a.name, raw), ospec)
        if spec.field_args and not any(a.name is None for a in v.args):
            self.error(v.span, f"{what} {v.callee} needs the output it scores, like `{v.callee}(answer)`", "",
                       "bad-option")

    def _test(self, block: A.TestBlock) -> None:
        if not block.cases:
            self.warn(block.span, f"test \"{block.name}\" has no cases", "", "empty-test")
        for case in block.cases:
            info = self.prog.pipelines.get(case.call.callee)
            if info is None:
                if case.call.callee in self.prog.modules:
                    self.error(case.call.callee_span, "tests call pipelines, not modules",
                               f"wrap module {case.call.callee} in a pipeline", "bad-call")
                else:
                    self.unknown(case.call.callee_span, "pipeline", case.call.callee, self.prog.pipelines)
                continue
            params = [(p.name, info.params.get(p.name, ANY), p.type.optional) for p in info.decl.params]
            _check_args(self, case.call, params, lambda e: _literal_type(self, e), f"pipeline {info.decl.name}")
            for a in case.assertions:
                if not isinstance(a.left, A.Var):
                    self.error(a.left.span, "an assertion starts with an output name",
                               "for example `intent == \"book_restaurant\"`", "bad-test")
                    continue
                if a.left.name not in info.outputs:
                    self.error(a.left.span, f"'{a.left.name}' is not an output of pipeline {info.decl.name}",
                               did_you_mean(a.left.name, info.outputs), "unknown-name")
                    continue
                out_t = info.outputs[a.left.name]
                rt = _literal_type(self, a.right)
                if a.op in ("==", "!=") and not (assignable(rt, out_t) or assignable(out_t, rt)):
                    self.error(a.right.span, f"type mismatch: '{a.left.name}' is {show(out_t)}, compared with {show(rt)}",
                               "", "type-mismatch")
                elif a.op == "in" and rt.kind != "list":
                    self.error(a.right.span, "`in` needs a list on the right", 'write `x in ["a", "b"]`', "bad-test")
                elif a.op == "contains" and out_t.required().kind not in ("str", "list", "any"):
                    self.error(a.left.span, f"`contains` needs a str or list output; '{a.left.name}' is {show(out_t)}",
                               "", "type-mismatch")
                if isinstance(a.right, A.Literal) and out_t.kind == "enum" and a.op in ("==", "!=") and \
                        str(a.right.value) not in out_t.values:
                    self.error(a.right.span, f"'{a.right.value}' is not a value of {show(out_t)}",
                               did_you_mean(str(a.right.value), out_t.values), "type-mismatch")


def _literal_type(chk: _Checker, e: A.Expr) -> Type:
    if isinstance(e, A.Literal):
        return _value_type(e.value)
    if isinstance(e, A.ListLit):
        t = ANY
        for item in e.items:
            t = unify(t, _literal_type(chk, item)) or ANY
        return Type("list", arg=t)
    chk.error(e.span, "test values must be literals", "use strings, numbers, true/false or lists", "bad-test")
    return ANY


def _value_type(v) -> Type:
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return INT
    if isinstance(v, float):
        return FLOAT
    return STR


def _check_args(chk: _Checker, call: A.Call, params: list[tuple[str, Type, bool]], type_of, what: str,
                positional_ok: bool = False) -> None:
    """Arguments against parameters: names known, none twice, required ones present, types fit."""
    names = [p[0] for p in params]
    given: dict[str, A.Arg] = {}
    for i, a in enumerate(call.args):
        if a.name is None:
            if positional_ok and i < len(names):
                name = names[i]
            elif len(names) == 1 and len(call.args) == 1:
                name = names[0]    # a lone argument needs no name
            else:
                t = type_of(a.value)
                chk.error(a.span, f"arguments to {what} are named", f"write `{names[i] if i < len(names) else 'name'}: ...`"
                          if names else f"{what} takes no arguments", "bad-call")
                continue
        else:
            name = a.name
        if name in given:
            chk.error(a.span, f"argument '{name}' is given twice", "", "duplicate")
            continue
        if name not in names:
            type_of(a.value)
            chk.error(a.span, f"{what} has no input '{name}'",
                      did_you_mean(name, [n for n in names if n not in given]) or
                      ("its inputs are: " + ", ".join(names) if names else f"{what} takes no inputs"), "bad-call")
            continue
        given[name] = a
        ptype = params[names.index(name)][1]
        t = type_of(a.value)
        if not assignable(t, ptype):
            hint = ""
            if ptype.kind == "str" and t.kind == "list":
                hint = "lists do not turn into text implicitly; pass a list-typed input or pick one item"
            elif ptype.kind == "list" and t.kind != "list":
                hint = f"wrap it in a list: [{name}]"
            chk.error(a.value.span, f"type mismatch: input '{name}' of {what} is {show(ptype)}, but the argument is "
                      f"{show(t)}", hint, "type-mismatch")
    missing = [n for n, t, optional in params if n not in given and not optional]
    if missing:
        chk.error(call.span, f"missing argument{'s' * (len(missing) > 1)} " + ", ".join(f"'{m}'" for m in missing) +
                  f" in call to {what}", "add " + ", ".join(f"`{m}: ...`" for m in missing), "missing-argument")


class _PipelineScope:
    """Types the expressions of one pipeline; variables may be used before the line that sets them."""

    def __init__(self, chk: _Checker, info: PipelineInfo, assigns: dict[str, A.Assign]):
        self.chk, self.info, self.assigns = chk, info, assigns
        self.var_types: dict[str, Type] = {}
        self.busy: list[str] = []
        self.used: set[str] = set()
        self.reported_cycles: set[frozenset] = set()

    def type_of_var(self, name: str, span: A.Span) -> Type:
        if name in self.var_types:
            return self.var_types[name]
        if name in self.busy:
            cycle = self.busy[self.busy.index(name):] + [name]
            key = frozenset(cycle)
            if key not in self.reported_cycles:
                self.reported_cycles.add(key)
                first = self.assigns[cycle[0]]
                self.chk.error(first.name_span, "cycle: " + " -> ".join(cycle),
                               "a value cannot depend on itself; pipelines are acyclic graphs", "cycle")
            return ANY
        self.busy.append(name)
        t = self.type_of(self.assigns[name].value)
        self.busy.pop()
        self.var_types[name] = t
        return t

    def type_of(self, e: A.Expr) -> Type:
        chk = self.chk
        if isinstance(e, A.Literal):
            return _value_type(e.value)
        if isinstance(e, A.Var):
            if e.name in self.info.params:
                self.used.add(e.name)
                return self.info.params[e.name]
            if e.name in self.assigns:
                self.used.add(e.name)
                return self.type_of_var(e.name, e.span)
            prog = chk.prog
            if e.name in prog.modules or e.name in prog.tools:
                chk.error(e.span, f"'{e.name}' is a {'module' if e.name in prog.modules else 'tool'}; call it",
                          f"write `{e.name}(...)`", "bad-call")
            else:
                chk.unknown(e.span, "name", e.name, list(self.info.params) + list(self.assigns))
            return ANY
        if isinstance(e, A.Attr):
            base = self.type_of(e.value)
            if base.kind == "any":
                return ANY
            if base.kind != "record":
                chk.error(e.span, f"{show(base)} has no field '{e.name}'",
                          "only module results and records have fields", "bad-field")
                return ANY
            ft = base.field(e.name)
            if ft is None:
                names = [n for n, _, _ in base.fields]
                chk.error(e.span, f"{base.name or 'this value'} has no field '{e.name}'",
                          did_you_mean(e.name, names) or "its fields are: " + ", ".join(names), "bad-field")
                return ANY
            return ft
        if isinstance(e, A.ListLit):
            t = ANY
            for item in e.items:
                it = self.type_of(item)
                u = unify(t, it)
                if u is None:
                    chk.error(item.span, f"list items have different types: {show(t)} and {show(it)}", "",
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
                    chk.error(e.span, f"cannot concatenate {show(lt)} and {show(rt)}", "", "type-mismatch")
                    return Type("list", arg=ANY)
                return Type("list", arg=u)
            if lt.kind in SCALARS + ("enum",) and rt.kind in SCALARS + ("enum",):
                return STR
            hint = "wrap the single value in a list: [x]" if "list" in (lt.kind, rt.kind) else ""
            chk.error(e.span, f"cannot concatenate {show(lt)} and {show(rt)}", hint, "type-mismatch")
            return ANY
        if isinstance(e, A.Call):
            return self.call(e)
        return ANY

    def call(self, c: A.Call) -> Type:
        chk, prog = self.chk, self.chk.prog
        if c.callee in prog.modules:
            mod = prog.modules[c.callee]
            sig = prog.signatures.get(mod.signature)
            if sig is None:
                for a in c.args:
                    self.type_of(a.value)
                return ANY
            params = [(n, t, t.optional) for n, t, _ in sig.inputs]
            _check_args(chk, c, params, self.type_of, f"module {c.callee}")
            fields = tuple(prog.module_outputs(c.callee, chk.cat))
            return Type("record", name=f"{c.callee} result", fields=fields)
        if c.callee in prog.tools:
            tool = prog.tools[c.callee]
            if tool.params is None:
                for a in c.args:
                    self.type_of(a.value)
                return ANY
            params = [(p.name, chk.resolve(p.type), p.type.optional) for p in tool.params]
            _check_args(chk, c, params, self.type_of, f"tool {c.callee}", positional_ok=True)
            return chk.resolve(tool.returns) if tool.returns is not None else ANY
        for a in c.args:
            self.type_of(a.value)
        if c.callee in prog.pipelines:
            chk.error(c.callee_span, "pipelines cannot call other pipelines",
                      "share the modules instead: declare them once and call them from both", "bad-call")
        elif c.callee in prog.signatures:
            chk.error(c.callee_span, f"'{c.callee}' is a signature; call a module that implements it",
                      f"declare `module m = Predict({c.callee})` and call `m(...)`", "bad-call")
        else:
            chk.unknown(c.callee_span, "module or tool", c.callee, list(prog.modules) + list(prog.tools))
        return ANY
