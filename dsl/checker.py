"""Static checks over parsed .pipe files: names, calls, types, cycles, returns, options.

`check` never stops at the first problem: it walks every declaration and returns all diagnostics,
together with the resolved program (symbol tables and inferred types) that lowering builds on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from . import ast as A
from .catalogue import LM_OPTIONS, Catalogue, FunctionSpec, OptionSpec
from .diagnostics import Diagnostic, Names, closest, did_you_mean
from .gcpause import gc_paused
from .redaction import SECRET_FIELD, declare_secret_env, mask_url, url_has_credentials
from .types import ANY, BOOL, FLOAT, INT, SCALARS, STR, Type, assignable, show, unify

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Option names that hold credentials are `redaction.SECRET_FIELD`; these are the prefixes of common
# provider keys (OpenAI, Anthropic, Slack, GitHub, Google, Hugging Face, Groq, AWS). `api_key_env`
# only names a variable, so it is fine.
_SECRET_VALUE = re.compile(r"^(sk-|sk_|xox[abp]-|ghp_|github_pat_|AIza|hf_|gsk_|AKIA)[A-Za-z0-9_\-]{6,}")


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
    tool_params: dict[str, list[tuple[str, Type, bool]]] = field(default_factory=dict)   # (name, type, required)
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


@gc_paused()
def check(files: list[A.File], catalogue: Catalogue) -> tuple[Program, list[Diagnostic]]:
    """Check parsed files (the main file first, then its imports) and resolve names and types.

    >>> from pipec.dsl import Catalogue, check, parse
    >>> f, _ = parse('signature S { in q: str out a: str } module m = Predict(S) '
    ...              'pipeline p(q: str) -> (a) { r = mm(q: q) return a = r.a }', "x.pipe")
    >>> _, diags = check([f], Catalogue())
    >>> [d.message for d in diags][:1]
    ["unknown module kind 'Predict'"]
    """
    checker = _Checker(files, catalogue)
    try:
        return checker.run()
    except RecursionError:
        # Thousands of nested records or chained values; a diagnostic beats a traceback.
        span = A.Span(files[0].path if files else "<string>", 1, 1, 1, 2)
        checker.error(span, "this program nests declarations too deeply to check",
                      "records containing records, or values computed from values, thousands deep", "too-deep")
        return checker.prog, checker.diags


class _Checker:
    def __init__(self, files: list[A.File], catalogue: Catalogue):
        self.files = files
        self.cat = catalogue
        self.prog = Program(files)
        self.diags: list[Diagnostic] = []
        self.broken = set().union(*(f.broken_names for f in files)) if files else set()
        self.declared: dict[str, tuple[str, A.Span]] = {}
        self.resolved: dict[int, tuple[A.TypeRef, Type]] = {}
        self.sources = {f.path: f.source for f in files}
        self.lines: dict[str, list[str]] = {}     # each source split into lines once, for snippets
        self.namespaces: dict[str, Names] = {}    # did-you-mean candidates, indexed once per kind of name
        self.calls: dict[str, tuple] = {}         # per module or tool: its parameters and result type
        self.field_index: dict[int, tuple] = {}   # records with many fields: name -> type
        self.test_params: dict[int, tuple] = {}   # per pipeline: the parameters its test cases are checked against
        self.has_default = False
        self.file_of: dict[int, A.File] = {id(it): f for f in files for it in f.items}

    # ------------------------------------------------------------ helpers
    def error(self, span: A.Span, message: str, hint: str = "", code: str = "") -> None:
        self.diags.append(Diagnostic("error", message, span, hint, code))

    def warn(self, span: A.Span, message: str, hint: str = "", code: str = "") -> None:
        self.diags.append(Diagnostic("warning", message, span, hint, code))

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

    def unknown(self, span: A.Span, what: str, name: str, candidates, code: str = "unknown-name") -> None:
        if name in self.broken:
            return  # its declaration has a syntax error, already reported
        self.error(span, f"unknown {what} '{name}'", did_you_mean(name, candidates), code)

    def callable(self, name: str) -> tuple:
        """A module's or tool's parameters (`_Params`, None when unknown) and result type, built once:
        a big signature called many times would otherwise cost its size on every call."""
        if name not in self.calls:
            prog = self.prog
            if name in prog.modules:
                sig = prog.signatures.get(prog.modules[name].signature)
                if sig is None:
                    self.calls[name] = (None, ANY, False)
                else:
                    fields = tuple(prog.module_outputs(name, self.cat))
                    self.calls[name] = (_Params([(n, t, t.optional) for n, t, _ in sig.inputs]),
                                        Type("record", name=f"{name} result", fields=fields), False)
            else:
                tool = prog.tools[name]
                params = None if tool.params is None else \
                    _Params([(p.name, self.resolve(p.type), p.type.optional) for p in tool.params])
                result = self.resolve(tool.returns) if tool.returns is not None else ANY
                self.calls[name] = (params, result if params is not None else ANY, True)
        return self.calls[name]

    def field(self, record: Type, name: str) -> Type | None:
        """`record.field(name)`, through an index for records with many fields (a signature with
        thousands of outputs, read thousands of times)."""
        if len(record.fields) < 16:
            return record.field(name)
        entry = self.field_index.get(id(record.fields))
        if entry is None or entry[0] is not record.fields:
            index: dict[str, Type] = {}
            for fname, ftype, _ in record.fields:
                index.setdefault(fname, ftype)
            entry = self.field_index[id(record.fields)] = (record.fields, index)   # keeps the key's tuple alive
        return entry[1].get(name)

    def names(self, kind: str) -> Names:
        """The declared names of one kind, as did-you-mean candidates: indexed once, since a program may
        misspell thousands of names. The tables are complete once pass 1 has declared everything."""
        if kind not in self.namespaces:
            prog = self.prog
            groups = {"lm": [prog.lms], "signature": [prog.signatures], "pipeline": [prog.pipelines],
                      "tool": [prog.tools], "module": [prog.modules], "module or tool": [prog.modules, prog.tools],
                      "type": [SCALARS, ("list", "enum"), prog.records]}[kind]
            self.namespaces[kind] = Names(*groups)
        return self.namespaces[kind]

    def declare(self, kind: str, name: str, span: A.Span) -> bool:
        if name in self.declared:
            prev_kind, prev = self.declared[name]
            self.error(span, f"duplicate name '{name}': already declared as {prev_kind} at {_where(prev, span)}",
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
        self.has_default = bool(defaults)
        for extra in defaults[1:]:
            self.error(extra.span, "the default LM is set more than once",
                       f"first set at {_where(defaults[0].span, extra.span)}",
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
                    self.unknown(it.name_span, "lm", it.name, self.names("lm"))
            elif isinstance(it, A.Signature) and self.prog.signatures.get(it.name, None) is not None \
                    and self.prog.signatures[it.name].decl is it:
                self._signature(it)
        for it in items:
            if isinstance(it, A.ModuleDecl):
                self._module(it)
            elif isinstance(it, A.ToolDecl):
                self._tool(it)
        self._module_references()
        for it in items:
            if isinstance(it, A.Pipeline) and self.prog.pipelines.get(it.name) and \
                    self.prog.pipelines[it.name].decl is it:
                try:
                    self._pipeline(it)
                except RecursionError:    # typing follows chains of values recursively
                    self.error(it.name_span, f"pipeline {it.name} chains values too deeply to check",
                               "no real pipeline needs thousands of steps in one chain", "too-deep")
        compiled: dict[str, A.CompileBlock] = {}
        tested: dict[str, A.TestBlock] = {}
        for it in items:
            if isinstance(it, A.CompileBlock):
                if it.pipeline in compiled:
                    self.error(it.pipeline_span, f"pipeline {it.pipeline} already has a compile block",
                               f"the first is at {_where(compiled[it.pipeline].span, it.span)}; merge the two",
                               "duplicate")
                compiled.setdefault(it.pipeline, it)
                self._compile(it)
                self.prog.compiles.append(it)
            elif isinstance(it, A.TestBlock):
                if it.name in tested:
                    self.error(_leading_name_span(it.span, "test"), f'test "{it.name}" is declared twice',
                               f"the first is at {_where(tested[it.name].span, it.span)}; "
                               "names select tests to run, so keep them unique",
                               "duplicate")
                tested.setdefault(it.name, it)
                self._test(it)
                self.prog.tests.append(it)
        if self.prog.default_lm is None and len(self.prog.lms) == 1:
            self.prog.default_lm = next(iter(self.prog.lms))
        return self.prog, self.diags

    # ------------------------------------------------------------ types
    def resolve(self, ref: A.TypeRef) -> Type:
        # Types are resolved from several places (declaration, each call, each return); memoizing by
        # node reports a bad type once, at its declaration.
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
        if ref.name in self.prog.records:
            if ref.arg is not None:
                self.error(ref.span, f"'{ref.name}' takes no type argument", "only `list[T]` is generic", "bad-type")
            return self.prog.records[ref.name]
        if ref.name in self.prog.signatures:
            self.error(ref.span, f"'{ref.name}' is a signature, not a type",
                       "declare a `record` for structured values", "bad-type")
            return ANY
        if ref.name not in self.broken:
            self.error(ref.span, f"unknown type '{ref.name}'", did_you_mean(ref.name, self.names("type")),
                       "unknown-name")
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
                           "a record cannot contain itself, not even through a list or `?`; "
                           "split the nested part into its own record", "cycle")
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
        if ref.name == "list" and ref.arg is not None:     # a record may sit under any depth of lists
            inner = self._record_field_type(ref.arg, chain, build)
            return Type("list", arg=inner, optional=ref.optional)
        return self.resolve(ref)

    # ------------------------------------------------------------ options
    def _options(self, owner: str, options: list[A.Option], specs: dict[str, OptionSpec]) -> None:
        seen: dict[str, A.Option] = {}
        for opt in options:
            if opt.name in seen:
                self.error(opt.span, f"option '{opt.name}' is given twice",
                           f"first given at {_where(seen[opt.name].span, opt.span)}",
                           "duplicate")
                continue
            seen[opt.name] = opt
            spec = specs.get(opt.name)
            if spec is None:
                hint = did_you_mean(opt.name, specs) or ("known options: " + ", ".join(sorted(specs)) if specs
                                                         else f"{owner} takes no options")
                self.error(opt.span, f"unknown option '{opt.name}' for {owner}", hint, "unknown-option")
                continue
            self._option_value(f"option '{opt.name}' of {owner}", opt, spec)

    def _option_value(self, what: str, opt: A.Option, spec: OptionSpec) -> None:
        """Check one value against its spec; `what` names it in messages ("option 'seed' of lm x")."""
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
            "tool": isinstance(v, A.Ref),
            "module": isinstance(v, A.Ref),
            "tools": isinstance(v, list) and all(isinstance(x, A.Ref) for x in v),
            "modules": isinstance(v, list) and all(isinstance(x, A.Ref) for x in v),
            "lms": isinstance(v, list) and all(isinstance(x, A.Ref) for x in v),
        }.get(spec.type, True)
        if not ok:
            want = {"number": "a number", "int": "an integer", "float": "a number", "str": "a string",
                    "bool": "true or false", "list": "a list", "lm": "the name of an lm declaration",
                    "name": "a name", "tool": "the name of a tool declaration",
                    "module": "the name of a module declaration",
                    "tools": "a list of tool names, like [search, calculate]",
                    "modules": "a list of module names, like [a, b]",
                    "lms": "a list of lm names, like [local, gpt]"}.get(spec.type, spec.type)
            self.error(opt.span, f"{what} must be {want}", _value_hint(spec, v, self.prog.lms), "bad-option")
            return
        if spec.type == "lm" and v.name not in self.prog.lms:
            self.unknown(opt.span, "lm", v.name, self.names("lm"))
        tables = {"tool": ("tool", self.prog.tools), "tools": ("tool", self.prog.tools),
                  "module": ("module", self.prog.modules), "modules": ("module", self.prog.modules),
                  "lms": ("lm", self.prog.lms)}
        if spec.type in tables:
            label, table = tables[spec.type]
            for ref in (v if isinstance(v, list) else [v]):
                if ref.name not in table:
                    self.unknown(opt.span, label, ref.name, self.names(label))
            if isinstance(v, list) and not v and spec.minimum:
                self.error(opt.span, f"{what} needs at least {spec.minimum:g} name{'s' * (spec.minimum != 1)}",
                           spec.doc, "bad-option")
            return
        if spec.choices and v not in spec.choices:
            self.error(opt.span, f"{what} must be one of: " + ", ".join(map(str, spec.choices)),
                       did_you_mean(str(v), map(str, spec.choices)), "bad-option")
        if spec.minimum is not None and isinstance(v, (int, float)) and v < spec.minimum:
            self.error(opt.span, f"{what} must be at least {spec.minimum:g}", spec.doc, "bad-option")

    # ------------------------------------------------------------ declarations
    def _lm(self, lm: A.LMDecl) -> None:
        provider, slash, model = lm.model.partition("/")
        problem = "needs a provider prefix" if not slash or not provider else "names no model" if not model else ""
        if problem:
            self.error(lm.model_span or lm.span, f"LM id '{lm.model}' {problem}",
                       "write `provider/model`, e.g. \"openai/gpt-4o-mini\" or \"local/smollm2\"", "bad-lm")
        secrets = [o for o in lm.options if _is_secret(o)]
        variable = f"{provider.upper() if slash and provider.isidentifier() else 'OPENAI'}_API_KEY"
        for opt in secrets:
            hint = (f"api_key_env names the variable that holds the key, like \"{variable}\""
                    if opt.name == "api_key_env" else
                    f"put the key in an environment variable and name it with `api_key_env: \"{variable}\"`")
            self.error(opt.span, "API keys do not belong in .pipe files", hint, "secret")
        for opt in lm.options:
            if opt.name == "api_key_env" and isinstance(opt.value, str) and opt not in secrets:
                declare_secret_env(opt.value)     # from now on its value is masked in everything printed
            elif opt.name == "api_base" and isinstance(opt.value, str) and url_has_credentials(opt.value):
                # A URL is printed and logged (errors, traces, proxies' access logs): no place for a key.
                secrets.append(opt)
                self.error(opt.span, f"api_base carries credentials in its URL ({mask_url(opt.value)})",
                           f"put the key in an environment variable and name it with `api_key_env: \"{variable}\"`; "
                           "the URL keeps only the server's address", "secret")
        self._options(f"lm {lm.name}", [o for o in lm.options if o not in secrets], LM_OPTIONS)

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
                self.unknown(mod.signature_span, "signature", mod.signature, self.names("signature"))
        if kind is not None and "lm" in kind.options:
            self._module_lm(mod)
        if kind is not None:
            self._options(f"{mod.kind} module {mod.name}", mod.options, kind.options)
            sig = self.prog.signatures.get(mod.signature)
            if sig is not None:
                names = {n for n, _, _ in sig.inputs + sig.outputs}
                for extra, _, _ in kind.extra_outputs:
                    if extra in names:
                        self.error(mod.kind_span, f"{mod.kind} adds an output named '{extra}', which signature "
                                   f"{mod.signature} already has", f"rename the signature's field '{extra}'", "duplicate")

    def _module_references(self) -> None:
        """Modules that name other modules in their options (ensembles, debates): no cycles, and
        each kind's own checks (such as "candidates share my signature") once every name is known."""
        refs: dict[str, list[str]] = {}
        for mod in self.prog.modules.values():
            kind = self.cat.kinds.get(mod.kind)
            if kind is None:
                continue
            names = []
            for o in mod.options:
                spec = kind.options.get(o.name)
                if spec is not None and spec.type in ("module", "modules"):
                    names += [r.name for r in (o.value if isinstance(o.value, list) else [o.value])
                              if isinstance(r, A.Ref) and r.name in self.prog.modules]
            refs[mod.name] = names
            if kind.validate is not None and mod.signature in self.prog.signatures:
                for message, hint in kind.validate(mod, self.prog):
                    self.error(mod.span, message, hint, "bad-option")
        state: dict[str, str] = {}

        def visit(name: str, chain: list[str]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "busy":
                loop = chain[chain.index(name):] + [name]
                self.error(self.prog.modules[loop[0]].name_span, "module cycle: " + " -> ".join(loop),
                           "a module cannot use itself, directly or through others", "cycle")
                return
            state[name] = "busy"
            for other in refs.get(name, []):
                visit(other, chain + [name])
            state[name] = "done"

        for name in refs:
            visit(name, [])

    def _module_lm(self, mod: A.ModuleDecl) -> None:
        """With one lm it is the default; with several and no `default lm`, a module that names none
        would quietly run on the built-in model instead of any of them."""
        if any(o.name == "lm" for o in mod.options) or len(self.prog.lms) < 2 or self.has_default:
            return
        names = sorted(self.prog.lms)
        self.warn(mod.name_span, f"module {mod.name} does not say which lm it uses",
                  f"add `lm: {names[0]}` to it, or `default lm = {names[0]}` to the file; otherwise it runs on "
                  "the built-in default model, not on " + " or ".join(names), "no-lm")

    def _tool(self, tool: A.ToolDecl) -> None:
        if self.prog.tools.get(tool.name) is not tool:
            return
        if tool.loader not in self.cat.tool_loaders:
            self.error(tool.loader_span, f"unknown tool loader '{tool.loader}'",
                       did_you_mean(tool.loader, self.cat.tool_loaders) or
                       'write `python("package.module:function")`', "unknown-name")
        if not _TARGET.match(tool.target):
            fixed = ":".join(tool.target.rsplit(".", 1)) if ":" not in tool.target else ""
            hint = f'separate the function with a colon: "{fixed}"' if _TARGET.match(fixed) else \
                'for example python("examples.corpus:search")'
            self.error(tool.target_span or tool.span, f"tool target '{tool.target}' is not `package.module:function`",
                       hint, "bad-tool")
        seen = set()
        params = []
        for p in tool.params or ():
            if p.name in seen:
                self.error(p.span, f"duplicate parameter '{p.name}'", "", "duplicate")
            seen.add(p.name)
            params.append((p.name, self.resolve(p.type), not p.type.optional))
        if tool.params is not None:
            self.prog.tool_params[tool.name] = params
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
        assigns = self._assignments(pipe, info)
        info.ret = self._the_return(pipe)
        scope = _PipelineScope(self, info, assigns)
        for name in assigns:
            scope.type_of_var(name, assigns[name].name_span)
        if info.ret is not None:
            self._returned(pipe, info, scope, declared_outs)
        for name, o in declared_outs.items():
            if name not in info.outputs:
                info.outputs[name] = self.resolve(o.type) if o.type is not None else ANY
        if info.ret is not None:    # without a return everything is unused; that error says it all
            self._unused(pipe, scope, assigns)
        info.vars = {n: scope.var_types.get(n, ANY) for n in assigns}

    def _assignments(self, pipe: A.Pipeline, info: PipelineInfo) -> dict[str, A.Assign]:
        assigns: dict[str, A.Assign] = {}
        for s in pipe.body:
            if not isinstance(s, A.Assign):
                continue
            if s.name in assigns:
                self.error(s.name_span, f"'{s.name}' is assigned twice",
                           f"first assigned at {_where(assigns[s.name].name_span, s.span)}; pipelines are dataflow "
                           "graphs, each name is set once", "duplicate")
            elif s.name in info.params:
                self.error(s.name_span, f"'{s.name}' is a pipeline input and cannot be reassigned",
                           "choose another name", "duplicate")
            else:
                assigns[s.name] = s
        return assigns

    def _the_return(self, pipe: A.Pipeline) -> A.Return | None:
        returns = [s for s in pipe.body if isinstance(s, A.Return)]
        if not returns and pipe.outputs:
            self.error(pipe.name_span, f"pipeline {pipe.name} has no return",
                       "end it with `return " + ", ".join(f"{o.name} = ..." for o in pipe.outputs) + "`",
                       "missing-return")
        for extra in returns[1:]:
            self.error(extra.span, "a pipeline has one return",
                       f"the first return is at {_where(returns[0].span, extra.span)}", "duplicate")
        return returns[0] if returns else None

    def _returned(self, pipe: A.Pipeline, info: PipelineInfo, scope: _PipelineScope,
                  declared_outs: dict[str, A.OutParam]) -> None:
        """Each returned value against its declared output; every declared output set exactly once."""
        returned: dict[str, A.ReturnItem] = {}
        meant: set[str] = set()       # declared outputs a misspelled return item was probably meant for
        for item in info.ret.items:
            if item.name in returned:
                self.error(item.span, f"output '{item.name}' is returned twice", "", "duplicate")
                continue
            returned[item.name] = item
            t = scope.type_of(item.value)
            out = declared_outs.get(item.name)
            if out is None:
                guess = closest(item.name, [n for n in declared_outs if n not in returned])
                meant.update([guess] if guess else [])
                self.error(item.span, f"'{item.name}' is not a declared output of pipeline {pipe.name}",
                           f"did you mean '{guess}'?" if guess else
                           f"add it to `-> ({', '.join(list(declared_outs) + [item.name])})`", "bad-return")
                continue
            if out.type is None:
                info.outputs[item.name] = t
                continue
            dt = info.outputs[item.name] = self.resolve(out.type)
            if not assignable(t, dt):
                self.error(item.value.span, f"type mismatch: output '{item.name}' is declared {show(dt)}, "
                           f"but the value is {show(t)}", "", "type-mismatch")
        for name in declared_outs:
            if name not in returned and name not in meant:
                self.error(info.ret.span, f"return does not set declared output '{name}'",
                           f"add `{name} = ...` to the return", "missing-output")

    def _unused(self, pipe: A.Pipeline, scope: _PipelineScope, assigns: dict[str, A.Assign]) -> None:
        for p in pipe.params:
            if p.name not in scope.used:
                self.warn(p.span, f"pipeline input '{p.name}' is never used", "remove it or pass it to a module",
                          "unused")
        for name, a in assigns.items():
            if name not in scope.used:
                self.warn(a.name_span, f"'{name}' is computed but never used",
                          "its LM calls still run; remove it or use its result", "unused")

    # ------------------------------------------------------------ compile and test blocks
    def _compile(self, block: A.CompileBlock) -> None:
        info = self.prog.pipelines.get(block.pipeline)
        if info is None:
            self.unknown(block.pipeline_span, "pipeline", block.pipeline, self.names("pipeline"))
        seen: dict[str, A.Setting] = {}
        specs = self.cat.compile_settings
        for s in block.settings:
            name_span = _leading_name_span(s.span, s.name)
            if s.name in seen:
                self.error(name_span, f"setting '{s.name}' is given twice",
                           f"first given at {_where(seen[s.name].span, s.span)}",
                           "duplicate")
                continue
            seen[s.name] = s
            spec = specs.get(s.name)
            if spec is None:
                self.error(name_span, f"unknown compile setting '{s.name}'",
                           did_you_mean(s.name, specs) or "known settings: " + ", ".join(sorted(specs)),
                           "unknown-option")
                continue
            if spec.type in ("metric", "optimizer"):
                table = self.cat.metrics if spec.type == "metric" else self.cat.optimizers
                self._function_call(s, spec.type, table, info)
            elif spec.type == "lm":
                if not isinstance(s.value, A.Var):
                    hint = _value_hint(spec, s.value.value if isinstance(s.value, A.Literal) else None, self.prog.lms)
                    self.error(s.value.span, f"setting '{s.name}' must name an lm declaration", hint, "bad-option")
                elif s.value.name not in self.prog.lms:
                    self.unknown(s.value.span, "lm", s.value.name, self.names("lm"))
            else:
                self._option_value(f"setting '{s.name}'", A.Option(s.value.span, s.name, _setting_value(s.value)), spec)
        for name, example in (("metric", "metric = exact_match(answer)"), ("trainset", 'trainset = "train.jsonl"')):
            if name not in seen:
                self.error(_leading_name_span(block.span, "compile"),
                           f"compile block for {block.pipeline} has no {name}",
                           f"add `{example}`", "missing-setting")
        self._data_files(block, [seen[n] for n in ("trainset", "valset") if n in seen])

    def _data_files(self, block: A.CompileBlock, settings: list[A.Setting]) -> None:
        """Warn about data files that are not there: compiling would fail only after the LM is loaded."""
        file = self.file_of.get(id(block))
        if file is None or not Path(file.path).is_file():
            return      # parsed from a string: there is no folder to look in
        for s in settings:
            if not (isinstance(s.value, A.Literal) and isinstance(s.value.value, str)) or not s.value.value:
                continue
            target = Path(file.path).parent / s.value.value
            if not target.is_file():
                problem = "is a folder, not a file" if target.is_dir() else "does not exist"
                self.warn(s.value.span, f"{s.name} file '{s.value.value}' {problem}",
                          f"paths are relative to the .pipe file: looked for {target.as_posix()}", "missing-file")

    def _function_call(self, s: A.Setting, what: str, table: dict[str, FunctionSpec], info: PipelineInfo | None):
        v = s.value
        if isinstance(v, A.Var):
            v = A.Call(v.span, v.name, [], v.span)
        if not isinstance(v, A.Call):
            example = "exact_match(answer)" if what == "metric" else "bootstrap_fewshot(max_demos: 4)"
            self.error(s.value.span, f"{what} must be a call like `{example}`", "", "bad-option")
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
        scored: dict[str, A.Arg] = {}
        for a in v.args:
            if a.name is None:
                self._scored_field(a, what, v.callee, spec, info, scored)
            else:
                self._function_option(a, what, v.callee, spec)
        if spec.field_args and not any(a.name is None for a in v.args):
            outs = [o.name for o in info.decl.outputs] if info is not None else []
            example = f"{v.callee}({outs[0] if outs else 'answer'})"
            self.error(v.span, f"{what} {v.callee} needs the output it scores, like `{example}`",
                       "", "bad-option")

    def _scored_field(self, a: A.Arg, what: str, callee: str, spec: FunctionSpec, info: PipelineInfo | None,
                      scored: dict[str, A.Arg]) -> None:
        """A positional argument of a metric: the pipeline output it scores."""
        if not spec.field_args:
            self.error(a.span, f"{what} {callee} takes only named options",
                       "write `name: value`" + (f", e.g. `{next(iter(spec.options))}: ...`" if spec.options else ""),
                       "bad-option")
        elif not isinstance(a.value, A.Var):
            example = info.decl.outputs[0].name if info is not None and info.decl.outputs else "answer"
            self.error(a.span, f"{what} {callee} takes output names, like `{callee}({example})`", "", "bad-option")
        elif a.value.name in scored:
            self.error(a.span, f"output '{a.value.name}' is scored twice", "", "duplicate")
        elif info is not None and a.value.name not in {o.name for o in info.decl.outputs}:
            outs = [o.name for o in info.decl.outputs]
            self.error(a.span, f"'{a.value.name}' is not an output of pipeline {info.decl.name}",
                       did_you_mean(a.value.name, outs) or "its outputs are: " + _listing(outs), "unknown-name")
        else:
            scored[a.value.name] = a

    def _function_option(self, a: A.Arg, what: str, callee: str, spec: FunctionSpec) -> None:
        ospec = spec.options.get(a.name)
        if ospec is None:
            self.error(a.span, f"unknown option '{a.name}' for {what} {callee}",
                       did_you_mean(a.name, spec.options) or
                       ("known options: " + ", ".join(sorted(spec.options)) if spec.options
                        else f"{what} {callee} takes no options"), "unknown-option")
            return
        self._option_value(f"option '{a.name}' of {what} {callee}", A.Option(a.span, a.name, _setting_value(a.value)),
                           ospec)

    def _test(self, block: A.TestBlock) -> None:
        if not block.cases:
            self.warn(_leading_name_span(block.span, "test"), f"test \"{block.name}\" has no cases", "", "empty-test")
        for case in block.cases:
            info = self.prog.pipelines.get(case.call.callee)
            if info is None:
                if case.call.callee in self.prog.modules:
                    self.error(case.call.callee_span, "tests call pipelines, not modules",
                               f"wrap module {case.call.callee} in a pipeline", "bad-call")
                else:
                    self.unknown(case.call.callee_span, "pipeline", case.call.callee, self.names("pipeline"))
                for a in case.call.args:
                    _literal_type(self, a.value)
                continue
            if id(info) not in self.test_params:     # once per pipeline, not once per test case
                self.test_params[id(info)] = (info, _Params([(p.name, info.params.get(p.name, ANY), p.type.optional)
                                                             for p in info.decl.params]))
            params = self.test_params[id(info)][1]
            _check_args(self, case.call, params, lambda e: _literal_type(self, e), f"pipeline {info.decl.name}")
            for a in case.assertions:
                self._assertion(a, info)

    def _assertion(self, a: A.Assertion, info: PipelineInfo) -> None:
        if not isinstance(a.left, A.Var):
            swapped = isinstance(a.right, A.Var) and self.snippet(a.left.span)
            self.error(a.left.span, "an assertion starts with an output name",
                       f"put the output first: `{a.right.name} {a.op} {swapped}`" if swapped else
                       "for example `intent == \"book_restaurant\"`", "bad-test")
            return
        rt = _literal_type(self, a.right)
        if a.left.name not in info.outputs:
            outs = list(info.outputs)
            self.error(a.left.span, f"'{a.left.name}' is not an output of pipeline {info.decl.name}",
                       did_you_mean(a.left.name, outs) or "its outputs are: " + _listing(outs), "unknown-name")
            return
        out_t = info.outputs[a.left.name]
        if rt.kind == "any" or out_t.kind == "any":
            return
        if a.op in ("==", "!="):
            want, shown = out_t, show(out_t)
        elif a.op == "in":
            if rt.kind != "list":
                self.error(a.right.span, "`in` needs a list on the right", 'write `x in ["a", "b"]`', "bad-test")
                return
            want, shown, rt = out_t, show(out_t), rt.arg or ANY
        elif out_t.required().kind == "list":         # contains, on a list output: one item
            want, shown = out_t.arg or ANY, f"a list of {show(out_t.arg or ANY)}"
        elif out_t.required().kind in ("str", "enum"):  # contains, on text: a substring
            want, shown = STR, "text"
            if rt.kind not in SCALARS:
                self.error(a.right.span, f"`contains` on text needs a string, not {show(rt)}", "", "type-mismatch")
                return
            rt = STR
        else:
            self.error(a.left.span, f"`contains` needs a str or list output; '{a.left.name}' is {show(out_t)}",
                       "compare it with `==` instead", "type-mismatch")
            return
        self._comparable(a, want, rt, shown)

    def _comparable(self, a: A.Assertion, want: Type, got: Type, shown: str) -> None:
        """Whether a test value can ever equal an output: tests compare normalized values, so "3" never equals 3."""
        if _comparable(got, want):
            bad = _enum_outsiders(a.right, want)
            if bad:
                self.error(bad[0].span, f"'{bad[0].value}' is not a value of {show(want.required())}",
                           did_you_mean(str(bad[0].value), want.required().values) or
                           "its values are: " + _listing(list(want.required().values)), "type-mismatch")
            return
        self.error(a.right.span, f"type mismatch: '{a.left.name}' is {shown}, compared with {show(got)}",
                   _compare_hint(want, got, a, self.snippet), "type-mismatch")


def _where(there: A.Span, here: A.Span) -> str:
    """How a message points at an earlier place: `line 7` or `column 9` in the same file, `file:line:col` elsewhere."""
    if there.file != here.file:
        return str(there)
    return f"line {there.line}" if there.line != here.line else f"column {there.col}"


def _leading_name_span(span: A.Span, name: str) -> A.Span:
    """The span of the name a node starts with (settings, blocks), for a caret under just that word."""
    return A.Span(span.file, span.line, span.col, span.line, span.col + len(name))


def _setting_value(e: A.Expr):
    """A setting's or function option's value as a plain Python value, as option checks expect."""
    if isinstance(e, A.Literal):
        return e.value
    if isinstance(e, A.Var):
        return A.Ref(e.name)
    if isinstance(e, A.ListLit):
        return [_setting_value(x) for x in e.items]
    return object()     # calls, concatenations, fields: never a valid option value


def _comparable(got: Type, want: Type) -> bool:
    """Whether a literal of type `got` can ever equal a value of type `want` once normalized."""
    if got.kind == "any" or want.kind == "any":
        return True
    g, w = got.required(), want.required()
    if w.kind in ("str", "enum"):
        return g.kind in ("str", "enum")
    if w.kind in ("int", "float"):
        return g.kind in ("int", "float")
    if w.kind == "bool":
        return g.kind == "bool"
    if w.kind == "list":
        return g.kind == "list" and _comparable(g.arg or ANY, w.arg or ANY)
    return False    # records cannot be written as literals


def _enum_outsiders(e: A.Expr, want: Type) -> list[A.Literal]:
    """String literals in a test value that are not values of the enum they are compared with."""
    w = want.required()
    if w.kind == "list" and isinstance(e, A.ListLit):
        return [x for item in e.items for x in _enum_outsiders(item, w.arg or ANY)]
    if isinstance(e, A.ListLit):
        return [x for item in e.items for x in _enum_outsiders(item, w)]
    if w.kind == "enum" and isinstance(e, A.Literal) and isinstance(e.value, str) and e.value not in w.values:
        return [e]
    return []


def _compare_hint(want: Type, got: Type, a: A.Assertion, snippet) -> str:
    w, value = want.required(), a.right
    if w.kind == "list" and got.kind != "list" and a.op == "==":
        return f"to look for one item, write `{a.left.name} contains {snippet(value.span) or '...'}`"
    if w.kind in ("int", "float") and got.kind == "str":
        return f"write the number without quotes: {str(value.value).strip()}" if isinstance(value, A.Literal) else ""
    if w.kind in ("str", "enum") and got.kind in ("int", "float", "bool"):
        return f'text is quoted: write "{snippet(value.span) or "..."}"'
    if w.kind == "bool":
        return "write true or false"
    return ""


def _value_hint(spec: OptionSpec, value, lms) -> str:
    """Why a value of the wrong type was probably written, or the option's own description."""
    if spec.type == "str" and isinstance(value, A.Ref):
        return f'strings are quoted: write "{value.name}"'
    if spec.type == "lm" and isinstance(value, str) and value in lms:
        return f"name the lm without quotes: `{value}`"
    if spec.type == "list" and isinstance(value, str):
        return f'wrap it in a list: ["{value}"]'
    return spec.doc


def _is_secret(opt: A.Option) -> bool:
    """Whether an option looks like it carries a credential rather than naming where one lives.

    >>> _is_secret(A.Option(None, "api_key_env", "OPENAI_API_KEY")), _is_secret(A.Option(None, "api_key", "x"))
    (False, True)
    """
    values = opt.value if isinstance(opt.value, list) else [opt.value]
    if any(isinstance(v, str) and _SECRET_VALUE.match(v.strip()) for v in values):
        return True
    return bool(SECRET_FIELD.search(opt.name))


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


class _Params:
    """A callee's parameters `(name, type, optional)`, with what checking its calls needs indexed once."""

    __slots__ = ("items", "names", "index", "required", "required_set", "_names")

    def __init__(self, items: list[tuple[str, Type, bool]]):
        self.items = items
        self.names = [n for n, _, _ in items]
        self.index: dict[str, int] = {}
        for i, n in enumerate(self.names):
            self.index.setdefault(n, i)
        self.required = [n for n, _, optional in items if not optional]
        self.required_set = set(self.required)
        self._names: Names | None = None

    def missing(self, given: dict, covered: set, limit: int) -> list[str]:
        """The first `limit` required parameters neither given nor covered, in order."""
        found = []
        for n in self.required:
            if n not in given and n not in covered:
                found.append(n)
                if len(found) == limit:
                    break
        return found

    def suggest(self, name: str, given: dict, missing: list[str], large: bool) -> str | None:
        """The parameter a misspelled argument was probably meant for: a missing one first, else any
        not given. With many parameters, the closest of all of them, if it is not given already."""
        if not large:
            return closest(name, missing) or closest(name, [n for n in self.names if n not in given])
        if self._names is None:
            self._names = Names(self.names)
        guess = self._names.closest(name)
        return guess if guess not in given else None


_LISTED = 10     # names a message lists before "and N more"


def _listing(items: list[str], total: int | None = None) -> str:
    """`items` joined with commas, at most `_LISTED` of them, then how many more there are.

    >>> _listing(["'a'", "'b'"]), _listing([str(i) for i in range(12)])
    ("'a', 'b'", '0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more')
    """
    total = len(items) if total is None else total
    text = ", ".join(items[:_LISTED])
    return text + (f" and {total - _LISTED} more" if total > _LISTED else "")


def _check_args(chk: _Checker, call: A.Call, params, type_of, what: str, positional_ok: bool = False) -> None:
    """Arguments against parameters: names known, none twice, required ones present, types fit.

    `params` is a `_Params` or a list of `(name, type, optional)`. The cost is the call's size, plus
    the callee's required parameters when some are missing.
    """
    if not isinstance(params, _Params):
        params = _Params(params)
    names = params.names
    given: dict[str, A.Arg] = {}
    covered: set[str] = set()        # parameters an erroneous argument was meant for: not "missing" too
    misspelled: list[A.Arg] = []
    for i, a in enumerate(call.args):
        name = a.name if a.name is not None else _positional_name(chk, call, a, i, names, what, positional_ok)
        if name is None:
            type_of(a.value)
            if i < len(names):
                covered.add(names[i])
            continue
        if name in given:
            type_of(a.value)
            chk.error(a.span, f"argument '{name}' is given twice", f"first given at {_where(given[name].span, a.span)}",
                      "duplicate")
            continue
        if name not in params.index:
            type_of(a.value)
            misspelled.append(a)
            continue
        given[name] = a
        ptype = params.items[params.index[name]][1]
        t = type_of(a.value)
        if not assignable(t, ptype):
            chk.error(a.value.span, f"type mismatch: input '{name}' of {what} is {show(ptype)}, but the argument is "
                      f"{show(t)}", _mismatch_hint(chk, ptype, t, a.value), "type-mismatch")
    if not misspelled and len(given) + len(covered) >= len(params.required) and \
            all(n in given or n in covered for n in params.required):
        return
    # A callee with many parameters is not scanned whole for each call: only as far as the names listed.
    large = len(names) > Names.SMALL
    missing = [] if large else [n for n in params.required if n not in given and n not in covered]
    for a in misspelled:
        guess = params.suggest(a.name, given, missing, large)
        if guess is None and len(misspelled) == 1:
            left = params.missing(given, covered, 2) if large else missing
            if len(left) == 1:
                guess = left[0]     # the one name that is both wrong and missing
        if guess is not None:
            covered.add(guess)
            hint = f"did you mean '{guess}'?"
        else:
            hint = "its inputs are: " + _listing(names) if names else f"{what} takes no inputs"
        chk.error(a.span, f"{what} has no input '{a.name}'", hint, "bad-call")
    if large:
        total = len(params.required_set) - len(params.required_set.intersection(given.keys() | covered))
        missing = params.missing(given, covered, _LISTED) if total else []
    else:
        missing = [n for n in missing if n not in covered]
        total = len(missing)
    if missing:
        chk.error(call.span, f"missing argument{'s' * (total > 1)} " + _listing([f"'{m}'" for m in missing], total) +
                  f" in call to {what}", "add " + _listing([f"`{m}: ...`" for m in missing], total), "missing-argument")


def _positional_name(chk: _Checker, call: A.Call, a: A.Arg, i: int, names: list[str], what: str,
                     positional_ok: bool) -> str | None:
    """The parameter a positional argument stands for, or None after reporting why it cannot be positional."""
    if positional_ok and i < len(names):
        return names[i]
    if not positional_ok and len(names) == 1 and len(call.args) == 1:
        return names[0]    # a lone argument needs no name
    if positional_ok or not names:
        if i == len(names) and names:    # report the first extra argument only
            n = len(call.args)
            chk.error(a.span, f"{what} takes {len(names)} argument{'s' * (len(names) != 1)}, but {n} "
                      f"{'was' if n == 1 else 'were'} given", "its inputs are: " + _listing(names), "bad-call")
        elif i == 0:
            chk.error(a.span, f"{what} takes no arguments", "", "bad-call")
        return None
    chk.error(a.span, f"arguments to {what} are named",
              f"write `{names[i]}: {chk.snippet(a.value.span) or '...'}`" if i < len(names)
              else "its inputs are: " + _listing(names), "bad-call")
    return None


def _mismatch_hint(chk: _Checker, want: Type, got: Type, value: A.Expr) -> str:
    """A likely fix for the commonest mismatches between lists and single values."""
    if want.kind == "str" and got.kind == "list":
        return "lists do not turn into text implicitly; pass a list-typed input or pick one item"
    if want.kind == "list" and got.kind != "list" and want.arg is not None and assignable(got, want.arg):
        return f"wrap it in a list: [{chk.snippet(value.span) or '...'}]"
    if want.kind == got.kind == "enum":
        extra = [f"'{v}'" for v in got.values if v not in want.values]
        return f"the value may be {' or '.join(extra)}, which the input does not accept"
    if want.kind in ("int", "float") and got.kind == "str" and isinstance(value, A.Literal):
        return f"write the number without quotes: {str(value.value).strip()}"
    return ""


_MAP_LIMIT = 1000


class _PipelineScope:
    """Types the expressions of one pipeline; variables may be used before the line that sets them."""

    def __init__(self, chk: _Checker, info: PipelineInfo, assigns: dict[str, A.Assign]):
        self.chk, self.info, self.assigns = chk, info, assigns
        self.var_types: dict[str, Type] = {}
        self.busy: list[str] = []
        self.used: set[str] = set()
        self.reported_cycles: set[frozenset] = set()
        self.locals: list[dict[str, Type]] = []      # map variables in scope, innermost last
        self.names: Names | None = None

    def map_type(self, e: A.MapExpr) -> Type:
        """`map v in xs max N { body }` is list[type of body], with v bound to an item of xs."""
        chk = self.chk
        over = self.type_of(e.over)
        item = ANY
        if over.kind == "list":
            item = over.arg or ANY
        elif over.kind != "any":
            chk.error(e.over.span, f"map needs a list to go over, but this is {show(over)}",
                      "map over a list field, like `map q in plan.questions max 6 { ... }`", "type-mismatch")
        if not 1 <= e.bound <= _MAP_LIMIT:
            chk.error(e.bound_span, f"the bound of a map must be a whole number from 1 to {_MAP_LIMIT}",
                      "it caps how many items run, so the worst-case number of LM calls is known", "bad-map")
        names = {e.var} | ({"earlier"} if e.ordered else set())
        for name in sorted(names):
            if name in self.info.params or name in self.assigns or any(name in sc for sc in self.locals):
                chk.error(e.var_span, f"map variable '{name}' hides another value of the same name",
                          "choose another name for the map variable", "duplicate")
        scope = {e.var: item}
        if e.ordered:
            scope["earlier"] = Type("list", arg=ANY)     # the results so far, in order
        self.locals.append(scope)
        body = self.type_of(e.body)
        self.locals.pop()
        if e.var not in self.used:
            chk.warn(e.var_span, f"map variable '{e.var}' is not used in the body",
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
            prog = chk.prog
            kind = chk.declared.get(e.name, ("",))[0]
            if kind in ("module", "tool"):
                chk.error(e.span, f"'{e.name}' is a {kind}; call it", f"write `{e.name}(...)`", "bad-call")
            elif kind:
                chk.error(e.span, f"'{e.name}' is {'an' if kind == 'lm' else 'a'} {kind}, not a value",
                          "values in a pipeline are its inputs and the names it assigns", "bad-name")
            else:
                if self.names is None:     # indexed once per pipeline: it may misspell thousands of names
                    self.names = Names(self.info.params, self.assigns)
                chk.unknown(e.span, "name", e.name, self.names)
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
                ft = chk.field(item, e.name)
                if ft is None:
                    names = [n for n, _, _ in item.fields]
                    chk.error(e.span, f"{item.name or 'these values'} have no field '{e.name}'",
                              did_you_mean(e.name, names) or "their fields are: " + _listing(names), "bad-field")
                    return ANY
                return Type("list", arg=ft)
            if base.kind != "record":
                chk.error(e.span, f"{show(base)} has no field '{e.name}'",
                          "only module results and records have fields", "bad-field")
                return ANY
            ft = chk.field(base, e.name)
            if ft is None:
                names = [n for n, _, _ in base.fields]
                chk.error(e.span, f"{base.name or 'this value'} has no field '{e.name}'",
                          did_you_mean(e.name, names) or "its fields are: " + _listing(names), "bad-field")
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
            hint = ""
            if "list" in (lt.kind, rt.kind):
                single = e.right if lt.kind == "list" else e.left
                hint = f"wrap the single value in a list: [{chk.snippet(single.span) or '...'}]"
            chk.error(e.span, f"cannot concatenate {show(lt)} and {show(rt)}", hint, "type-mismatch")
            return ANY
        if isinstance(e, A.Call):
            return self.call(e)
        return ANY

    def call(self, c: A.Call) -> Type:
        chk, prog = self.chk, self.chk.prog
        if c.callee in prog.modules or c.callee in prog.tools:
            params, result, positional_ok = chk.callable(c.callee)
            if params is None:
                for a in c.args:
                    self.type_of(a.value)
                return ANY
            what = f"{'module' if c.callee in prog.modules else 'tool'} {c.callee}"
            _check_args(chk, c, params, self.type_of, what, positional_ok=positional_ok)
            return result
        for a in c.args:
            self.type_of(a.value)
        if c.callee in prog.pipelines:
            chk.error(c.callee_span, "pipelines cannot call other pipelines",
                      "share the modules instead: declare them once and call them from both", "bad-call")
        elif c.callee in prog.signatures:
            chk.error(c.callee_span, f"'{c.callee}' is a signature; call a module that implements it",
                      f"declare `module m = Predict({c.callee})` and call `m(...)`", "bad-call")
        else:
            chk.unknown(c.callee_span, "module or tool", c.callee, chk.names("module or tool"))
        return ANY
