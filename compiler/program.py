"""The public Python API's main object: `Program`, a checked, lowered pipeline bound to its LMs,
modules and tools, and how one is made: `load` (a .pipe file, or an artifact) and `load_compiled`.

A program delegates to the stages: `pipec.lower` built its graph, `pipec.optimize` compiles it,
`pipec.emit` writes its artifact, `pipec.run` and `pipec.executor` run it.
"""
from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

from .aio import run_coroutine
from .cache import LMCache
from .registry import catalogue
from .context import Runtime, Stats
from .dsl import ast as A
from .dsl.diagnostics import Diagnostic, PipeError, did_you_mean
from .dsl.files import SourceError, open_regular
from .dsl.loader import Loaded, load as load_source
from .dsl.types import Type
from .executor import Plan
from .graph import Graph
from .lower import lower, plain_options
from .lm import DEFAULT_MODEL, LMBackend, backend_for
from .lm.base import declared_sampling
from .lm.fallback import FallbackLM, Member
from .modules import ModuleKind, ModuleSpec, Predictor, kinds
from .prediction import Prediction
from .reply_parser import ReplyError, coerce
from .run import arun_rows, call_tool, run_rows
from .tools import TargetInfo, describe_tools, import_target, tool_diagnostics
from .trust import SOURCE, ApprovalRequired, Requirement, Trust

DEFAULT_LM = "__default__"


def load(path: str | Path, pipeline: str | None = None, *, lm: str | LMBackend | None = None,
         lms: dict[str, LMBackend] | None = None, cache: bool | str | Path = True, trust: bool = False,
         allow: Iterable[str] = ()) -> "Program":
    """Load, check and lower a .pipe file or a compiled artifact; raise `PipeError` with every
    diagnostic if it has errors. Loading runs nothing of the file's: no tool or metric module is
    imported until the program runs.

    `lm` replaces every LM of the file (an LM id such as "openai/gpt-4o-mini", or a backend object
    such as `ScriptedLM`); `lms` replaces LMs by their declared names. `cache` is True (the default
    cache directory), False, or a directory. For an artifact that was not compiled on this machine,
    `allow` approves the Python targets, modules and LM endpoints it may use, and `trust=True` all
    of them (see `pipec.trust`); without them, running it raises `ApprovalRequired`.

    >>> prog = load("examples/intent.pipe")                                  # doctest: +SKIP
    >>> prog(utterance="Table for two at 8 tonight").intent                  # doctest: +SKIP
    'book_restaurant'
    """
    path = Path(path)
    if is_artifact(path):
        return load_compiled(path, lm=lm, lms=lms, cache=cache, trust=trust, allow=allow)
    try:
        loaded = load_source(path, catalogue())
    except SourceError:
        raise                            # already says which file and why it was refused
    except (OSError, UnicodeDecodeError) as err:
        raise FileNotFoundError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    return Program(loaded, path, pipeline, lm=lm, lms=lms, cache=cache)


def load_compiled(path: str | Path, *, lm=None, lms=None, cache=True, trust: bool = False, allow=()) -> "Program":
    """Load a compiled artifact as a Program with its tuned parameters. Loading runs nothing of the
    artifact's; running it needs approval unless this machine trusts it (see `pipec.trust`):
    `allow` names approved targets, modules and endpoints, `trust=True` approves all of them.

    >>> prog = load_compiled("examples/intent.compiled.json")      # doctest: +SKIP
    """
    from . import trust as trust_store
    from .artifact import ArtifactError, read_artifact
    from .emit import embedded_sources
    path = Path(path)
    art = read_artifact(path)
    main, loaded = embedded_sources(art, path)
    if trust_store.is_trusted(art.dumps()):
        policy = trust_store.Trust(trusted=True, origin="store")
    else:
        policy = trust_store.Trust(trusted=bool(trust), origin="flag" if trust else "",
                                   allow=tuple(str(a) for a in allow))
    try:
        program = Program(loaded, main, art.pipeline, lm=lm, lms=lms, cache=cache, trust=policy)
    except PipeError as err:
        raise ArtifactError(f"{path}: the embedded sources no longer check with this pipec:\n{err.render()}") from None
    except ValueError as err:           # the artifact names a pipeline its sources do not have
        raise ArtifactError(f"{path}: {err}") from None
    try:
        program.choose(art.strategies)          # the alternative the compile chose for each one_of module
    except ValueError as err:
        raise ArtifactError(f"{path}: {err}") from None
    try:
        program.set_ensemble(art.ensemble)
        program.apply(art.predictors)
    except (ValueError, KeyError) as err:
        raise ArtifactError(f"{path}: parameters for a predictor the pipeline does not have: {err}") from None
    program.artifact = art
    program.artifact_path = path
    return program


class Program:
    """A checked, lowered pipeline bound to its LMs, modules and tools. Call it like a function."""

    def __init__(self, loaded: Loaded, path: Path, pipeline: str | None = None, *, lm=None, lms=None,
                 cache: bool | str | Path = True, trust: Trust = SOURCE):
        self.path = path
        self.loaded = loaded
        self.trust = trust
        self._cleared = trust.trusted          # set once running has been approved (see `approve_running`)
        diags = list(loaded.diagnostics)
        prog = loaded.program
        self._targets: dict[str, TargetInfo] = describe_tools(prog, path)
        diags += tool_diagnostics(prog, self._targets)
        errors = [d for d in diags if d.severity == "error"]
        if errors:
            raise PipeError(errors, loaded.sources)
        self.warnings = [d for d in diags if d.severity == "warning"]
        self.checked = prog
        self.name = choose_pipeline(prog, path, pipeline)
        self.graph: Graph = lower(prog, self.name)
        self.lm_ids = self._lm_ids(lm)
        self._overridden = {name for name in self.lm_ids if lm is not None or name in (lms or {})
                            or (name == DEFAULT_LM and prog.default_lm in (lms or {}))}
        self._backends = self._backends_for(lm, lms or {})
        self._tools: dict[str, Any] = {}
        self._tool_lock = threading.Lock()
        # What compile-time preparation left on predictors (`pipec.prepare`): (PredictorState, pins) by name.
        self._prepared: dict[str, tuple[Any, frozenset[str]]] = {}
        self._member_modules: list[dict[str, ModuleKind]] = []     # an ensemble's members' own instances
        self.modules: dict[str, ModuleKind] = self._modules()
        self.plan = self._plan(self.modules)
        # The uncompiled parameters, kept so a compile always starts (and measures its baseline) from them.
        self._pristine = {n: (p.instruction, list(p.demos)) for n, p in self.predictors(every=True).items()}
        self.members: list[dict[str, Any]] = []     # parameter sets of an ensemble, when compiled as one
        self.cache = None if cache is False else LMCache(None if cache is True else cache)
        self.stats = Stats()
        self.artifact = None          # set on compiled programs
        self.artifact_path: Path | None = None      # the file a compiled program was loaded from
        self.compile_result = None    # on a program `compile` returned: a `pipec.optimize.CompileResult`
        # Async tools (called by nodes or by kinds such as ReAct) need an event loop: no inline path then,
        # nor for a tool that may be async as far as reading its source can tell.
        self.inline = all(b.inline for b in self._used_backends()) and all(
            self._targets[name].is_async is False for name in self._used_tools())

    # ------------------------------------------------------------------ construction
    def _lm_ids(self, override) -> dict[str, str]:
        prog = self.checked
        ids = {name: decl.model for name, decl in prog.lms.items()}
        ids[DEFAULT_LM] = prog.lms[prog.default_lm].model if prog.default_lm else DEFAULT_MODEL
        if isinstance(override, str):
            ids = {k: override for k in ids}
        return ids

    def _backends_for(self, override, by_name: dict[str, LMBackend]) -> dict[str, LMBackend]:
        prog = self.checked
        out: dict[str, LMBackend] = {}
        for name, model in self.lm_ids.items():
            decl = prog.lms.get(name if name != DEFAULT_LM else (prog.default_lm or ""))
            opts = {o.name: o.value for o in decl.options} if decl and not isinstance(override, str) else {}
            if isinstance(override, LMBackend):
                out[name] = override
            elif name in by_name:
                out[name] = by_name[name]
            elif name == DEFAULT_LM and prog.default_lm in by_name:
                out[name] = by_name[prog.default_lm]
            elif decl is not None and decl.fallbacks and not isinstance(override, str):
                continue            # below, over the backends of the lms it tries
            else:
                out[name] = backend_for(model, opts)
        for name in self.lm_ids:
            if name not in out:
                # Its lms' own backends (an `lms=` override included), so a key one of them refused, its
                # rate limit and its answers are shared with the modules that use that lm directly.
                declared = name if name != DEFAULT_LM else prog.default_lm
                out[name] = FallbackLM(declared, [Member(n, out[n], _sampling_through(prog, n, via))
                                                  for n, via in prog.lms_tried(declared)])
        return out

    def _module_lm(self, decl: A.ModuleDecl) -> str:
        for o in decl.options:
            if o.name == "lm" and isinstance(o.value, A.Ref):
                return o.value.name
        return DEFAULT_LM

    def _plan(self, modules: dict[str, ModuleKind]) -> Plan:
        runners = {}
        for node in self.graph.walk():
            if node.op == "map":
                continue
            runners[node.target] = modules[node.target].forward if node.op == "module" else self._tool_runner(node.target)
        return Plan(self.graph, runners)

    def bound(self, params: dict[str, Any] | None = None, members: list[dict[str, Any]] | None = None, *,
              artifact=None, compile_result=None) -> "Program":
        """A copy of this program bound to other parameters: `params` (PredictorStates by predictor
        name, or their dicts), or the parameter sets of an ensemble (`members`). It shares the
        sources, graph, LMs, cache, tools and trust of this one and has module instances of its own,
        so running or tuning it never changes this program. Without parameters the copy shares this
        one's modules (and `artifact`, `compile_result` describe it: see `compile`)."""
        new = copy.copy(self)
        if params is not None or members is not None:
            new.modules = new._modules()
            new.members, new._member_modules = [], []
            new.plan = new._plan(new.modules)
            if members:
                new.set_ensemble(members)
            if params:
                new.apply(params)
        if artifact is not None:
            new.artifact = artifact
        if compile_result is not None:
            new.compile_result = compile_result
        return new

    def with_lm(self, lm) -> "Program":
        """This program's sources and pipeline on another LM (an LM id or a backend) for every module,
        sharing this program's LM cache: a compile's teacher."""
        other = Program(self.loaded, self.path, self.name, lm=lm, cache=False, trust=self.trust)
        other.cache = self.cache
        return other._with_prepared(self._prepared) if self._prepared else other

    def prepared(self, predictors: dict[str, Predictor]) -> "Program":
        """A copy of this program that starts from what compile-time preparation left on these
        predictors (`pipec.prepare`: ToolMaker's tool): their instruction, demos, per-input pool and
        pins are installed on every module instance it builds (each candidate of a compile, the
        teacher, the compiled program) and are its `pristine_params`, the uncompiled parameters a
        compile starts from and puts pinned parts back to.

        >>> import pathlib, tempfile, pipec
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
        >>> _ = path.write_text('signature S { in q: str out a: str } module m = Predict(S) '
        ...                     'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
        >>> prog = pipec.load(path, cache=False); work = prog.bound({})
        >>> work.modules["m"].predict.set_params(instruction="Answer briefly.")
        >>> ready = prog.prepared(work.predictors())
        >>> ready.bound({}).modules["m"].predict.instruction, ready.pristine_params()["m"].instruction
        ('Answer briefly.', 'Answer briefly.')
        """
        from .artifact import KnnState, PredictorState
        states = {}
        for name, p in predictors.items():
            knn = KnnState(k=p.knn.k, fields=p.knn.fields, pool=p.knn.demos) if p.knn is not None else None
            states[name] = (PredictorState(instruction=p.instruction, demos=list(p.demos), knn=knn), p.pinned)
        return self._with_prepared({**self._prepared, **states})

    def _with_prepared(self, states: dict[str, tuple[Any, frozenset[str]]]) -> "Program":
        new = copy.copy(self)
        new._prepared = dict(states)
        new._pristine = {**self._pristine, **{n: (st.instruction, list(st.demos)) for n, (st, _) in states.items()}}
        new.modules = new._modules()
        new.members, new._member_modules = [], []
        new.plan = new._plan(new.modules)
        return new

    def set_ensemble(self, members: list[dict[str, Any]]) -> None:
        """Run several parameter sets on every input and take a majority vote per output.

        Each member gets its own module instances (so their demos never mix); the first member's
        parameters are also installed on `self.modules`, which `params()` and `inspect` show.
        """
        from .ensemble import EnsemblePlan
        if not members:
            self.members, self._member_modules = [], []
            self.plan = self._plan(self.modules)
            return
        plans, instances = [], []
        for params in members:
            modules = self._modules()
            _install(modules, params, self.name)
            plans.append(self._plan(modules))
            instances.append(modules)
        self.apply(members[0])
        self.members = list(members)
        self._member_modules = instances
        self.plan = EnsemblePlan(self.graph, plans)

    def _used_tools(self) -> set[str]:
        """Tools the graph calls, plus those named in the options of the modules it uses."""
        names = {n.target for n in self.graph.walk() if n.op == "tool"}
        for m in self._referenced():
            for _, decl in self.checked.modules[m].variants():     # every alternative of a one_of module
                spec = kinds()[decl.kind].options
                for o in decl.options:
                    if o.name in spec and spec[o.name].type in ("tool", "tools"):
                        names |= {r.name for r in (o.value if isinstance(o.value, list) else [o.value])
                                  if isinstance(r, A.Ref) and r.name in self.checked.tools}
        return names

    def _referenced(self) -> list[str]:
        """Modules the graph calls, plus those they name in options (debate agents, fuse candidates)."""
        prog = self.checked
        todo = [n.target for n in self.graph.walk() if n.op == "module"]
        seen: list[str] = []
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.append(name)
            for _, decl in prog.modules[name].variants():            # every alternative of a one_of module
                spec = kinds()[decl.kind].options
                for o in decl.options:
                    # Only options that name modules: `pin: [demos]` names a part, even beside a module `demos`.
                    if o.name not in spec or spec[o.name].type not in ("module", "modules"):
                        continue
                    for ref in (o.value if isinstance(o.value, list) else [o.value]):
                        if isinstance(ref, A.Ref) and ref.name in prog.modules and ref.name not in seen:
                            todo.append(ref.name)
        return seen

    def _modules(self) -> dict[str, ModuleKind]:
        from .modules.base import KindEnv
        from .modules.one_of import OneOf
        prog = self.checked
        out: dict[str, ModuleKind] = {}
        env = KindEnv(self, out)
        problems: list[Diagnostic] = []
        for name in self._referenced():
            decl = prog.modules[name]
            sig = prog.signatures[decl.signature]

            def spec(full: str, d: A.ModuleDecl) -> ModuleSpec:
                lm_name = self._module_lm(d)
                lm_decl = prog.lms.get(lm_name if lm_name != DEFAULT_LM else (prog.default_lm or ""))
                return ModuleSpec(full, sig.decl.instruction, list(sig.inputs), list(sig.outputs),
                                  plain_options(d.options), lm_name, declared_sampling(lm_decl), env)
            if decl.alternatives:
                # Each alternative is a module named `name.<label>`, so its predictors are named apart.
                out[name] = OneOf(spec(name, decl), {label: kinds()[d.kind](spec(f"{name}.{label}", d))
                                                     for label, d in decl.variants()})
            else:
                out[name] = kinds()[decl.kind](spec(name, decl))
            try:
                out[name].install_written()     # the file's demos and pins: an uncompiled program runs with them
            except ValueError as err:           # `parts:` naming a part or field the kind does not have
                problems.append(Diagnostic("error", str(err), decl.span, "`pipec inspect` shows each part of a "
                                           "module (its predictor's name after the module's) and its fields",
                                           "bad-option"))
        if problems:
            raise PipeError(problems, self.loaded.sources)
        if self._prepared:
            preds = {p.name: p for m in out.values() for p in m.every_predictor()}
            for pname, (state, pinned) in self._prepared.items():
                if pname in preds:
                    preds[pname].set_params(state.instruction, state.demos, _knn(state))
                    preds[pname].pinned = pinned
        return out

    def _used_backends(self) -> list[LMBackend]:
        """The backends of every predictor the program may run (any alternative of a one_of module)."""
        return [self._backends[p.lm] for m in self.modules.values() for p in m.every_predictor()]

    def _tool_runner(self, name: str):
        async def run(args: dict[str, Any], ctx) -> Any:
            return await self.call_tool(name, args, ctx)
        return run

    async def call_tool(self, name: str, args: dict[str, Any], ctx) -> Any:
        """Call a declared tool with named (or `#i` positional) arguments; traced; failures raise
        ModuleFailure (see `pipec.run.call_tool`)."""
        return await call_tool(self, name, args, ctx)

    def tool_doc(self, name: str) -> str:
        """How a tool is described to a model: its declared signature (else its function's, read from
        the source) and its docstring's first line. Read without importing the tool, so `pipec
        inspect` shows exactly what a run sends."""
        from .dsl.types import show
        decl = self.checked.tools[name]
        info = self._targets[name]
        if decl.params is not None:
            params = ", ".join(f"{p.name}: {show_ref(p.type)}" for p in decl.params)
            sig = f"{name}({params})"
        else:
            sig = f"{name}{info.signature}" if info.signature is not None else f"{name}(...)"
        ret = self.checked.tool_returns.get(name)
        if ret is not None:
            sig += f" -> {show(ret)}"
        return sig + (f": {info.doc}" if info.doc else "")

    def tool_signature(self, name: str):
        """The `inspect.Signature` of a tool's function as read from its source, or None if unknown."""
        return self._targets[name].signature

    def tool(self, name: str):
        """The tool's function, imported on first use (which runs its module: only once running is approved)."""
        fn = self._tools.get(name)
        if fn is None:
            if not self._cleared:
                self.approve_running()
            with self._tool_lock:
                fn = self._tools.get(name) or import_target(self.checked.tools[name].target, self.path.parent.resolve())
                self._tools[name] = fn
        return fn

    # ------------------------------------------------------------------ trust
    def requirements(self) -> list[Requirement]:
        """What this program would run or reach that needs approval if it came from an untrusted
        artifact: the Python targets of the tools it uses, and the LM endpoints it would send
        requests (and keys) to."""
        out = [Requirement("tool", name, self.checked.tools[name].target) for name in sorted(self._used_tools())]
        # Code the parameters carry (ToolMaker's tool): written by whoever made the artifact. It runs in
        # the sandbox, but only once the user has read it (`pipec inspect`) and approved it.
        carried: dict[str, str] = {}
        for modules in [self.modules, *self._member_modules]:
            for m in modules.values():
                for name, source in m.code().items():
                    carried.setdefault(name, source)
        out += [Requirement("code", name, f"code:{name}", f" ({len(source.splitlines())} lines)")
                for name, source in sorted(carried.items())]
        for name, decl in sorted(self.checked.lms.items()):
            if name in self._overridden:       # replaced by `--lm` / `lm=` / `lms=`: the file's endpoint is not used
                continue
            opts = {o.name: o.value for o in decl.options}
            url = opts.get("api_base") or (decl.model if "://" in decl.model else None)
            if url:
                key = opts.get("api_key_env")
                detail = f" (with the key in ${key})" if key else " (with any key your environment holds for it)"
                out.append(Requirement("endpoint", name, str(url), detail))
        return out

    def approve_running(self, extra: Iterable[Requirement] = ()) -> None:
        """Raise `ApprovalRequired` listing everything this program (and `extra`, e.g. a metric taken
        from the artifact) would run without the user's approval; a trusted program passes."""
        extra = list(extra)
        missing = self.trust.missing([*self.requirements(), *extra])
        if missing:
            raise ApprovalRequired(str(self.artifact_path or self.path), missing)
        if not extra:
            self._cleared = True

    # ------------------------------------------------------------------ inputs
    @property
    def inputs(self) -> list[tuple[str, Type, str]]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return [name for name, _, _ in self.graph.outputs]

    def prepare(self, values: dict[str, Any], strict: bool = False) -> dict[str, Any]:
        """Check and coerce one row of inputs; raise ValueError naming what is wrong.

        `strict` also refuses names that are not inputs (a typo would otherwise silently drop an
        optional input); batch rows are not strict, since they carry ids and labels along.
        """
        if not isinstance(values, dict):
            raise ValueError(f"a row of inputs must be an object with the inputs by name, not {type(values).__name__}")
        out = {}
        problems = []
        for name, t, _ in self.graph.inputs:
            if name not in values or values[name] is None:
                if t.optional:
                    out[name] = None
                else:
                    problems.append(f"missing input '{name}'")
                continue
            try:
                out[name] = coerce(values[name], t)
            except ReplyError as err:
                problems.append(f"input '{name}': {err}")
        if strict:
            known = [n for n, _, _ in self.graph.inputs]
            for k in values:
                if k not in known:
                    hint = did_you_mean(k, [n for n in known if n not in values])
                    problems.append(f"'{k}' is not an input of {self.name}" + (f" ({hint})" if hint else ""))
        if problems:
            raise ValueError("; ".join(problems))
        return out

    # ------------------------------------------------------------------ parameters
    def predictors(self, every: bool = False) -> dict[str, Predictor]:
        """Every tunable predictor the program runs, by name (a module's name; `module.part` for kinds
        with several; `module.<alternative>...` for a one_of module, whose running alternative's are
        listed, or with `every` those of all its alternatives)."""
        return {p.name: p for m in self.modules.values() for p in (m.every_predictor() if every else m.predictors())}

    def strategies(self) -> dict[str, str]:
        """The alternative each one_of module runs, by module name (empty when no module has any).

        >>> import pathlib, tempfile, pipec
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
        >>> _ = path.write_text('signature S { in q: str out a: str } '
        ...                     'module m = one_of(Predict, ChainOfThought)(S) '
        ...                     'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
        >>> prog = pipec.load(path, cache=False); before = prog.strategies()
        >>> prog.choose({"m": "ChainOfThought"}); before, prog.strategies(), list(prog.predictors())
        ({'m': 'Predict'}, {'m': 'ChainOfThought'}, ['m.ChainOfThought'])
        """
        from .modules.one_of import OneOf
        return {name: m.chosen for name, m in self.modules.items() if isinstance(m, OneOf)}

    def choose(self, choice: dict[str, str]) -> None:
        """Run the named alternative of each one_of module in `choice` (module name -> label); a
        ValueError names a module that has no alternatives or a label it does not have."""
        from .modules.one_of import OneOf
        _choose(self.modules, choice, self.name, OneOf)

    def params(self) -> dict[str, Any]:
        """The current instruction and demos of every predictor, as artifact `PredictorState`s."""
        from .artifact import KnnState, PredictorState
        out = {}
        for name, p in self.predictors().items():
            knn = KnnState(k=p.knn.k, fields=p.knn.fields, pool=p.knn.demos) if p.knn is not None else None
            out[name] = PredictorState(instruction=p.instruction, demos=list(p.demos), knn=knn)
        return out

    def pristine_params(self) -> dict[str, Any]:
        """The parameters the program had when loaded from its .pipe source (no tuning), for every
        predictor it may run (each alternative's of a one_of module)."""
        from .artifact import PredictorState
        return {n: PredictorState(instruction=i, demos=d) for n, (i, d) in self._pristine.items()}

    def apply(self, params: dict[str, Any]) -> None:
        """Install tuned parameters (PredictorState objects or their dicts) by predictor name, and the
        alternatives a parameter set chooses (`Choice` entries, under one_of modules' names)."""
        _install(self.modules, params, self.name)

    def compile(self, trainset=None, valset=None, metric=None, optimizer: str | None = None, **settings) -> "Program":
        """Search demos and instructions against a metric; return the compiled program (a new one:
        this program is not changed), with `.report`, `.save(path)`, and `.compile_result`.

        Settings not given come from the file's compile block for this pipeline (its trainset,
        metric, optimizer and options, seed, budget, ...), as `pipec compile` reads them; given ones
        override them. `trainset`/`valset` are lists of dicts or paths to JSONL/CSV files (relative
        to the .pipe file); see `pipec.settings.CompileConfig` for the other settings (seed, budget,
        teacher, proposer, concurrency, storage, study, options).
        """
        from .optimize import compile_program
        from .settings import CompileConfig
        config = CompileConfig.for_program(self, trainset=trainset, valset=valset, metric=metric, optimizer=optimizer,
                                           **settings)
        return compile_program(self, config)

    def save(self, path: str | Path) -> Path:
        """Write the compiled artifact (a program that came from `compile` or `load_compiled`)."""
        if self.artifact is None:
            raise ValueError("only a compiled program can be saved; call .compile(...) first")
        from .emit import write_artifact
        return write_artifact(self, Path(path))

    def save_pipe(self, path: str | Path) -> Path:
        """Write the compiled program as readable .pipe source (its instructions, demos and chosen
        strategies written in; see `pipec.emit_pipe`), e.g. `compiled.save_pipe("intent.compiled.pipe")`."""
        from .emit_pipe import write_pipe
        return write_pipe(self, path)

    @property
    def report(self):
        return self.artifact.report if self.artifact is not None else None

    # ------------------------------------------------------------------ running
    def runtime(self, budget=None, stats: Stats | None = None) -> Runtime:
        """What one run needs (backends, cache, counters); every run starts here, so this is where an
        untrusted artifact is stopped before it runs anything."""
        if not self._cleared:
            self.approve_running()
        return Runtime(self._backends, self.cache, stats or self.stats, budget)

    def default_lm_name(self, name: str | None = None) -> str:
        """The runtime key of a declared LM, or of the file's default LM."""
        return name if name in self._backends else DEFAULT_LM

    def __call__(self, **inputs: Any) -> Prediction:
        """Run the pipeline on one input and return its Prediction (failures are recorded, not raised)."""
        values = self.prepare(inputs, strict=True)
        if self.inline:
            return self.plan.run_inline(values, self.runtime())
        return run_coroutine(self.plan.run_async(values, self.runtime()))

    async def acall(self, **inputs: Any) -> Prediction:
        """Run one input from async code."""
        values = self.prepare(inputs, strict=True)
        if self.inline and not any(b.blocking for b in self._used_backends()):
            return self.plan.run_inline(values, self.runtime())
        return await self.plan.run_async(values, self.runtime())

    def stream(self, **inputs: Any) -> AsyncIterator[Any]:
        """Run one input from async code, yielding its outputs as they arrive: `Partial`s (the outputs
        known so far; a text field may grow, other values appear once complete), then the Prediction
        `acall` would return. Bad inputs raise ValueError at once. See `pipec.streaming`.

        >>> async for item in prog.stream(question="Why is the sky blue?"):     # doctest: +SKIP
        ...     print(item.get("answer") if isinstance(item, pipec.Partial) else item.answer)
        """
        values = self.prepare(inputs, strict=True)
        from .streaming import stream_run
        return stream_run(self, values, self.runtime())

    def run_batch(self, rows: Iterable[dict[str, Any]], concurrency: int = 4, progress: bool = False) -> list[Prediction]:
        """Run many inputs with bounded concurrency; results come back in input order.

        A row with bad inputs or a failing LM reply becomes a failed Prediction; the batch goes on.
        """
        return run_rows(self, list(rows), concurrency, progress)

    async def arun_batch(self, rows: Iterable[dict[str, Any]], concurrency: int = 4,
                         progress: bool = False) -> list[Prediction]:
        """`run_batch` from async code: runs on the caller's event loop (at most `concurrency` rows in
        flight), so a web server or notebook stays live and other tasks go on meanwhile.

        >>> preds = await prog.arun_batch([{"q": "a"}, {"q": "b"}], concurrency=8)   # doctest: +SKIP
        """
        return await arun_rows(self, list(rows), concurrency, progress)

    def backend(self, lm_name: str) -> LMBackend:
        return self._backends[lm_name]

    def lm_of(self, module: str) -> str:
        return self.lm_ids[self.modules[module].predictors()[0].lm]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _sampling_through(prog, lm: str, via: tuple[str, ...]) -> dict[str, Any]:
    """The sampling lm `lm` gets when tried by the fallbacks `via` (outermost first): its own, under
    each fallback's that names it on the way down, the outermost last (a request's own, from the
    module and the fallback it names, goes over all of them)."""
    out = declared_sampling(prog.lms[lm])
    for name in reversed(via):
        out.update(declared_sampling(prog.lms[name]))
    return out


def show_ref(ref) -> str:
    """A TypeRef as written (`list[str]`, `Hit?`)."""
    if ref.name == "enum":
        text = "enum(" + ", ".join(ref.values) + ")"
    else:
        text = f"{ref.name}[{show_ref(ref.arg)}]" if ref.arg is not None else ref.name
    return text + ("?" if ref.optional else "")


def is_artifact(path: Path) -> bool:
    """Whether `path` holds a compiled artifact rather than a .pipe file (a .json name, or JSON inside)."""
    return path.suffix == ".json" or _looks_like_json(path)


def _looks_like_json(path: Path) -> bool:
    """Compiled artifacts may be saved under any name: recognise them by their first byte."""
    try:
        with open_regular(path) as fh:        # never blocks on a FIFO; refuses /proc and devices
            return fh.read(64).lstrip().startswith(b"{")
    except OSError:                           # the loader then says why the file cannot be read
        return False


def _install(modules: dict[str, ModuleKind], params: dict[str, Any], pipeline: str) -> None:
    """Install a parameter set on one set of module instances: its `Choice` entries first (a one_of
    module runs that alternative), then each predictor's instruction, demos and per-input pool (a
    predictor of any alternative may be given)."""
    from .artifact import Choice, PredictorState
    from .modules.one_of import OneOf
    _choose(modules, {n: c.alternative for n, c in params.items() if isinstance(c, Choice)}, pipeline, OneOf)
    preds = {p.name: p for m in modules.values() for p in m.every_predictor()}
    for name, state in params.items():
        if isinstance(state, Choice):
            continue
        if name not in preds:
            raise ValueError(f"no predictor '{name}' in {pipeline}; predictors: {', '.join(preds)}")
        st = state if isinstance(state, PredictorState) else PredictorState.model_validate(state)
        preds[name].set_params(st.instruction, st.demos, _knn(st))


def _choose(modules: dict[str, ModuleKind], choice: dict[str, str], pipeline: str, one_of: type) -> None:
    for name, label in choice.items():
        module = modules.get(name)
        if not isinstance(module, one_of):
            raise ValueError(f"no one_of module '{name}' in {pipeline} to choose '{label}' for")
        module.choose(label)


def _knn(state):
    if state.knn is None:
        return None
    from .knn import KnnPool
    return KnnPool(state.knn.pool, state.knn.fields, state.knn.k)


def choose_pipeline(prog, path: Path, name: str | None) -> str:
    """The pipeline to run: the one named, the only one, or the one named like the file."""
    main = [it.name for it in prog.main.items if isinstance(it, A.Pipeline)]
    all_names = list(prog.pipelines)
    if name is not None:
        if name not in prog.pipelines:
            hint = did_you_mean(name, all_names)
            raise ValueError(f"no pipeline '{name}' in {path}" + (f"; {hint}" if hint else
                             f"; pipelines: {', '.join(all_names) or 'none'}"))
        return name
    if len(main) == 1:
        return main[0]
    if path.stem in prog.pipelines:
        return path.stem
    if not main:
        raise ValueError(f"{path} declares no pipeline" + (f" (imported: {', '.join(all_names)}; pick one with --pipeline)"
                                                           if all_names else ""))
    raise ValueError(f"{path} declares several pipelines ({', '.join(main)}); choose one with --pipeline")
