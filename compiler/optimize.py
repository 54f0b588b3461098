"""Optimize: search each predictor's instruction and demos against a metric; a pure function of the
program and the settings.

`compile_program` checks the settings with the compile block's own checks (`check_settings`), loads
and checks the data, scores the uncompiled pipeline on the valset, hands a `CompileSession` (the
implementation of `pipec.session.Session`) to the chosen optimizer, which only chooses parameters,
scores the result, keeps the uncompiled parameters when the result scores lower (`never_worse`), and
returns a new program bound to the chosen parameters, with its artifact and a `CompileResult`. The
program it was given is never changed: every candidate is scored on a copy of its own.

Everything is keyed by a fingerprint (`pipec.fingerprints.compile_fingerprint`): compiling unchanged
inputs again is a cache hit with no LM call (`pipec.compile_cache`).
"""
from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from dataclasses import dataclass

from .aio import run_coroutine
from .artifact import FORMAT_VERSION, Artifact, Choice, LineageNode, PredictorState, Report, Trial
from .budget import Budget, BudgetExhausted, money
from .context import RowContext, Runtime, Stats, auth_failures
from .dataset import DatasetError, Example, examples_from, split
from .evaluate import EvalResult, evaluate
from .fingerprints import compile_fingerprint, lm_identity, source_files
from .lm.base import LMError, LMRequest
from .metrics import Metric
from .progress import CompileProgress
from .run_log import RunLog
from .session import Alternative, Answer, Identity, MetricInfo, Mode, PredictorView, choice_of
from .settings import CompileConfig, check_settings

KEPT_BASELINE = "kept the uncompiled program"


@dataclass(frozen=True)
class CompileResult:
    """What a compile did, beside the program it returns: the artifact (None for a worker, which
    writes none), the LM calls it made (`stats`) and the dollars they cost (`spent`), its wall time,
    whether it was a compile-cache hit, and, for a worker, how many trials of the shared study it
    ran. The artifact records neither calls made nor dollars spent: it is the same bytes whether or
    not the LM cache was warm."""

    artifact: Artifact | None
    stats: Stats
    seconds: float
    cache_hit: bool = False
    worker_trials: int = 0
    spent: float = 0.0                # dollars the LM calls it made cost (cache hits are free)
    started_ns: int = 0               # when it began (ns since the epoch) and when each trial was
    trial_ns: tuple[int, ...] = ()    # recorded, in order: the times of its OpenTelemetry spans (`pipec.otel`)
    runs: RunLog | None = None        # the runs it made, when `CompileConfig.keep_runs` asked for them


class CompileSession:
    """What an optimizer works with (`pipec.session.Session`): the data, the metric, candidates scored
    on copies of the program, the teacher, the proposer, the budget, the seed, the trials.

    Optimizers never touch the program or the graph; they return parameters (`PredictorState` by
    predictor name).
    """

    def __init__(self, program, config: CompileConfig, trainset: list[Example], valset: list[Example],
                 metric: Metric, budget: Budget, stats: Stats, progress: CompileProgress):
        self.program = program
        self.config = config
        self.trainset = trainset
        self.valset = valset
        self._metric = metric
        self.metric = MetricInfo(metric.text, tuple(metric.fields))
        self.budget = budget
        self.stats = stats
        self.progress = progress
        self.seed = config.seed
        self.mode = config.mode
        self.storage = config.storage
        self.study = config.study
        self.concurrency = config.concurrency
        self.input_names = tuple(name for name, _, _ in program.inputs)
        self.identity = Identity(program.name, source_files(program), lm_identity(program), config.teacher,
                                 config.proposer)
        self.trials: list[Trial] = []
        self.trial_ns: list[int] = []          # when each trial was recorded (`CompileResult.trial_ns`)
        self.run_log: RunLog | None = None     # the runs, kept for OpenTelemetry when asked (`keep_runs`)
        self.lineage: list[LineageNode] = []        # an evolutionary search's candidates (`record_lineage`)
        self.best_score: float | None = None
        self.baseline_score: float | None = None    # the uncompiled valset score, once measured
        self.worker_trials = 0
        self.max_calls_per_row = config.max_calls_per_row
        self._under: dict[tuple, object] = {}       # the program under each choice of alternatives asked about
        self._baseline = self._baseline_for({})
        self._teacher = None
        self._proposer = None
        self._proposer_runtime: Runtime | None = None
        self.proposer_label: str | None = None      # "openai/big (the file's default lm 'big')", once chosen
        self.teacher_used = False

    # -- facts
    def baseline(self) -> dict[str, PredictorState]:
        """The uncompiled parameters: signature instructions, no demos (the file's written ones), and
        what compile-time preparation left (`pipec.prepare`: a ToolMaker's tool, pinned), for the
        predictors the uncompiled program runs (a one_of module's first alternative's)."""
        return self._baseline

    def predictors(self) -> dict[str, PredictorView]:
        """Every predictor the uncompiled program runs, by name, read-only, with its uncompiled instruction."""
        return self._views({})

    def _views(self, choice: dict[str, str]) -> dict[str, PredictorView]:
        written = self.program.pristine_params()
        return {name: PredictorView(name, written[name].instruction, tuple(p.inputs), tuple(p.outputs), p.pinned)
                for name, p in self._program_under(choice).predictors().items()}

    def _baseline_for(self, choice: dict[str, str]) -> dict[str, PredictorState]:
        written = self.program.pristine_params()
        return {name: written[name] for name in self._program_under(choice).predictors()}

    def _program_under(self, choice: dict[str, str]):
        """The program running `choice`'s alternatives (every other one_of module its first), on module
        instances of its own; built once per choice."""
        key = tuple(sorted(choice.items()))
        if key not in self._under:
            self._under[key] = self.program.bound({name: Choice(alternative=label) for name, label in key})
        return self._under[key]

    # -- strategies
    def strategies(self, choice: dict[str, str] | None = None) -> dict[str, tuple[Alternative, ...]]:
        """Each one_of module's alternatives with their static call bounds (one call of the module, and
        one input of the pipeline with it and the other one_of modules on `choice`, default: their
        first): first the one `choice` runs (the first the file lists, which the uncompiled program
        runs, unless `choice` names another), then the others in the file's order. Another alternative
        that would take the pipeline over `max_calls_per_row` is left out: the compile does not
        consider it."""
        from .inspection import max_calls
        choice = dict(choice or {})
        out: dict[str, tuple[Alternative, ...]] = {}
        for name, module in self._program_under(choice).modules.items():
            alternatives = getattr(module, "alternatives", None)
            if not alternatives:
                continue
            listed = []
            running = choice.get(name, next(iter(alternatives)))
            for label in [running, *(a for a in alternatives if a != running)]:
                alt = alternatives[label]
                row = max_calls(self._program_under({**choice, name: label}))
                if self.max_calls_per_row is not None and row > self.max_calls_per_row and label != running:
                    continue
                listed.append(Alternative(label, alt.describe(), alt.max_calls(), row,
                                          tuple(p.name for p in alt.every_predictor())))
            out[name] = tuple(listed)
        return out

    def under(self, choice: dict[str, str]) -> "SessionUnder":
        """This session as the program runs with `choice`'s alternatives (label by module name; other
        one_of modules run their first): see `SessionUnder`. A ValueError names an unknown module or label."""
        self._program_under(dict(choice))            # raises for a module or label the program does not have
        return SessionUnder(self, dict(choice))

    def rng(self, salt: str = "") -> random.Random:
        """A deterministic random stream for a named purpose."""
        return random.Random(f"{self.seed}:{salt}")

    @property
    def calls_per_row(self) -> int:
        """LM calls one input typically costs: the static worst case without its parse retries."""
        from .inspection import max_calls
        return max(1, max_calls(self.program) // 2)

    @property
    def module_calls(self) -> int:
        """Module call sites of the pipeline (outside maps): a floor on the LM calls of one input."""
        return sum(1 for n in self.program.graph.nodes if n.op == "module")

    # -- the budget
    @property
    def out_of_budget(self) -> bool:
        return self.budget.exhausted

    @property
    def calls_used(self) -> int:
        return self.budget.used

    @property
    def calls_left(self) -> int | None:
        return self.budget.remaining

    def holding_back_for_validation(self):
        """Within the block, the budget keeps back what scoring one candidate on the valset costs."""
        return self.budget.holding_back(len(self.valset) * self.calls_per_row)

    # -- running
    def evaluate(self, params, rows: list[Example] | None = None) -> EvalResult:
        """Score the program with these parameters on `rows` (default: the valset), on a copy of its own.

        `params` may also be a list of parameter sets: an ensemble that votes on every input. Parts the
        .pipe file pins are scored as written, whatever `params` says (`keep_pinned`).
        """
        params = keep_pinned(self.program, params)
        candidate = self.program.bound(members=params) if isinstance(params, list) else self.program.bound(params)
        rt = candidate.runtime(self.budget, self.stats)
        result = evaluate(candidate, rows if rows is not None else self.valset, self._metric, self.concurrency,
                          runtime=rt)
        if self.run_log is not None:
            self.run_log.scored(result)
        self._stop_on_refused_keys(candidate)
        return result

    def run_teacher(self, params: dict[str, PredictorState], rows: list[Example]) -> EvalResult:
        """Run the teacher (the program itself, or on the teacher LM) with `params` and score each row.

        Each row's `prediction.trace` holds every predictor call with its inputs and parsed
        outputs: the material for bootstrapped demos. Pinned parts run as written (`keep_pinned`).
        """
        teacher = self.teacher().bound(keep_pinned(self.program, params))
        self.teacher_used = True
        rt = teacher.runtime(self.budget, self.stats)
        result = evaluate(teacher, rows, self._metric, self.concurrency, runtime=rt)
        if self.run_log is not None:
            self.run_log.teacher(result)
        self._stop_on_refused_keys(teacher)
        return result

    def ask(self, request: LMRequest) -> Answer:
        """Send one request to the proposer LM through the compile's budget, LM cache and counters
        (a text-only backend gets it without its schema, as any predictor's request)."""
        backend = self.proposer()
        if backend.structured == "text" and request.schema is not None:
            request = dataclasses.replace(request, schema=None)
        if self._proposer_runtime is None:
            self._proposer_runtime = Runtime({"proposer": backend}, self.program.cache, self.stats, self.budget)
        before = self.stats.calls
        row = RowContext(self._proposer_runtime, backend.inline)
        try:
            reply, _ = run_coroutine(row.node("propose", "proposer").complete("propose", "proposer", request))
        except BudgetExhausted:
            return Answer(None, self.stats.calls - before, budget_spent=True)
        except LMError:
            return Answer(None, self.stats.calls - before)       # a failed proposal is one candidate fewer
        finally:
            if self.run_log is not None:
                self.run_log.proposal(row.trace)
        return Answer(reply.text, self.stats.calls - before)

    def _stop_on_refused_keys(self, program) -> None:
        """A compile whose LM refused its key stops at once: every row would fail the same way, and
        scoring rows that cannot run would only compare zeros (see `AuthLMError`)."""
        backends = list(program._backends.values()) + ([self._proposer] if self._proposer is not None else [])
        refused = auth_failures(backends)
        if refused:
            raise refused[0]

    def teacher(self):
        """The program that bootstraps: the program itself, or the program on the teacher LM."""
        if self.config.teacher is None:
            return self.program
        if self._teacher is None:
            self._teacher = self.program.with_lm(resolve_lm(self.program, self.config.teacher))
        return self._teacher

    def teacher_label(self) -> str:
        """The teacher as the report names it: its LM, or the pipeline's own LMs."""
        if self.config.teacher is None:
            return f"{task_lms(self.program)} (no teacher set: the pipeline runs on its own LMs)"
        shown = self.teacher().backend(self.teacher().default_lm_name()).describe()
        named = f", {self.config.teacher}" if self.config.teacher != shown else ""
        return f"{shown} (the teacher setting{named})"

    def proposer(self):
        """The LM backend that proposes instructions, by `proposer_choice`'s rule; the progress line
        and the report name it."""
        if self._proposer is None:
            self._proposer, why = proposer_choice(self.program, self.config)
            self.proposer_label = f"{self._proposer.describe()} ({why})"
            self.progress.lms["proposing"] = self.proposer_label
            self.progress.update()
        return self._proposer

    # -- bookkeeping
    def record(self, score: float, full: bool = True, note: str = "", calls_per_row: float | None = None,
               tokens_per_row: float | None = None) -> Trial:
        """Record a trial's score (shown in the progress line and kept in the report), with the
        candidate's measured LM requests and tokens per row when given (the report's score-against-cost
        front)."""
        t = Trial(number=len(self.trials) + 1, score=round(score, 6), full=full, note=note,
                  calls_per_row=None if calls_per_row is None else round(calls_per_row, 3),
                  tokens_per_row=None if tokens_per_row is None else round(tokens_per_row, 1))
        self.trials.append(t)
        self.trial_ns.append(time.time_ns())
        if self.run_log is not None:
            self.run_log.trial()
        if full and (self.best_score is None or score > self.best_score):
            self.best_score = score
            self.progress.best = score
        self.progress.trial = t.number
        self.progress.update()
        return t

    def phase(self, name: str) -> None:
        """What the compile does now, for the progress line ("search", "full eval", ...)."""
        self.progress.update(name)

    def expect_trials(self, total: int) -> None:
        """How many trials the search will run, for the progress line."""
        self.progress.total = total

    def report_worker(self, trials: int) -> None:
        """How many trials of the shared study this worker ran (its summary line says so)."""
        self.worker_trials = trials

    def record_lineage(self, nodes) -> None:
        """The candidates of a search that evolves them from one another, for the report's lineage
        (`LineageNode`s, or dicts of their fields); replaces what was recorded before."""
        self.lineage = [n if isinstance(n, LineageNode) else LineageNode.model_validate(n) for n in nodes]


class SessionUnder:
    """`CompileSession.under(choice)`: the session as the program runs with some one_of modules on
    other alternatives. Its `predictors()`, `baseline()`, `calls_per_row` and `strategies()` are that
    program's; its `baseline()` carries the choice as `Choice` entries, so parameters built from it (by
    any optimizer's helpers) run those alternatives; `evaluate` and `run_teacher` add the choice to a
    parameter set that makes none for a module. Everything else (data, budget, trials, proposer) is the
    session's own.

    >>> import pathlib, tempfile, pipec
    >>> from pipec.settings import CompileConfig
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
    >>> _ = path.write_text('signature S { in q: str out a: str } module m = one_of(Predict, ChainOfThought)(S) '
    ...                     'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
    >>> prog = pipec.load(path, cache=False)
    >>> session = _session(prog, CompileConfig(), [], [], Metric.parse("exact_match(a)"))
    >>> list(session.baseline()), list(session.under({"m": "ChainOfThought"}).baseline())
    (['m.Predict'], ['m.ChainOfThought', 'm'])
    """

    def __init__(self, session: CompileSession, choice: dict[str, str]):
        self._session = session
        self.choice = choice
        self._entries = {name: Choice(alternative=label) for name, label in choice.items()}

    def predictors(self) -> dict[str, PredictorView]:
        return self._session._views(self.choice)

    def baseline(self) -> dict:
        return {**self._session._baseline_for(self.choice), **self._entries}

    @property
    def calls_per_row(self) -> int:
        from .inspection import max_calls
        return max(1, max_calls(self._session._program_under(self.choice)) // 2)

    def strategies(self) -> dict[str, tuple[Alternative, ...]]:
        return self._session.strategies(self.choice)

    def under(self, choice: dict[str, str]) -> "SessionUnder":
        return self._session.under({**self.choice, **choice})

    def evaluate(self, params, rows=None):
        return self._session.evaluate(self._chosen(params), rows)

    def run_teacher(self, params, rows):
        return self._session.run_teacher(self._chosen(params), rows)

    def holding_back_for_validation(self):
        return self._session.budget.holding_back(len(self._session.valset) * self.calls_per_row)

    def _chosen(self, params):
        if isinstance(params, list):
            return [self._chosen(member) for member in params]
        return {**self._entries, **params}          # the set's own Choice entries win

    def __getattr__(self, name: str):
        return getattr(self._session, name)


def open_session(program, config: CompileConfig) -> CompileSession:
    """A session over checked data, as a compile opens it: the settings checked (`check_settings`),
    the rows read and checked against the pipeline and the metric, the valset split off the trainset
    when none is given and cut to what the budget affords (`fit_valset`)."""
    metric = check_settings(program, config, config.base_dir or program.path.resolve().parent)
    check_prices(program, config, metric)
    train, val, _ = _data(program, config, metric)
    return _session(program, config, train, val, metric)


def _data(program, config: CompileConfig, metric: Metric):
    """The trainset and valset, checked, and what identifies them in the fingerprint."""
    unknown = [f for f in metric.fields if f not in program.output_names]
    if unknown:
        raise ValueError(f"metric {metric.text} scores {', '.join(unknown)}, not an output of {program.name} "
                         f"(outputs: {', '.join(program.output_names)})")
    if config.trainset is None:
        raise ValueError(f"no trainset: give one, or add a compile block for {program.name} with a trainset")
    base = config.base_dir or program.path.resolve().parent
    labels = metric.fields
    train, train_id = examples_from(config.trainset, base, program, labels)
    if config.valset is not None:
        val, val_id = examples_from(config.valset, base, program, labels)
    else:
        if len(train) < 2:
            raise DatasetError([f"{config.trainset}: a trainset of {len(train)} row cannot be split into train and "
                                "validation rows; add rows or give a valset"])
        train, val = split(train, config.seed, config.val_fraction)
        val_id = "split"
    return train, val, (train_id, val_id)


def _session(program, config: CompileConfig, train: list[Example], val: list[Example], metric: Metric) -> CompileSession:
    """The session of a compile of `program`, which runs prepared (`pipec.prepare`: the kinds'
    compile-time work, on the trainset) from the start: the baseline, every candidate and the
    compiled program start from what preparing left."""
    from .prepare import prepare_program
    budget = Budget(config.budget, config.budget_usd)
    stats = Stats()
    progress = CompileProgress(budget, stats, config.progress)
    try:
        program = prepare_program(program, budget, stats, train, config.seed, progress)
    except BaseException:
        progress.close()
        raise
    session = CompileSession(program, config, train, val, metric, budget, stats, progress)
    session.valset = fit_valset(val, config.budget, session.calls_per_row, session.rng("valset"))
    if config.keep_runs:
        session.run_log = RunLog(content=config.keep_runs == "content")
    return session


def _finished(log: RunLog | None) -> RunLog | None:
    """`log` with what ran after the last trial (the final eval) as its `final` part."""
    if log is not None and log.final is None:
        log.final = log.take()
    return log


def compile_program(program, config: CompileConfig):
    """Compile `program` per `config`: a new program bound to the chosen parameters, with its
    `artifact` and its `compile_result` (a `CompileResult`). `program` itself is not changed."""
    from pipec.optimizers import get_optimizer
    from . import compile_cache
    started, started_ns = time.perf_counter(), time.time_ns()
    metric = check_settings(program, config, config.base_dir or program.path.resolve().parent)   # before any data
    check_prices(program, config, metric)
    optimizer = get_optimizer(config.optimizer)(**config.options)
    train, val, (train_id, val_id) = _data(program, config, metric)
    fp = compile_fingerprint(FORMAT_VERSION, program, config, metric, optimizer.settings(), train_id, val_id,
                             _proposer_identity(program, config))
    cached = compile_cache.cached_artifact(program, fp) if config.mode == Mode.SINGLE else None
    if cached is not None:
        return program.bound(cached.predictors, cached.ensemble, artifact=cached, compile_result=CompileResult(
            cached, Stats(), time.perf_counter() - started, cache_hit=True, started_ns=started_ns))
    session = _session(program, config, train, val, metric)
    program = session.program           # prepared: its modules' compile-time work done (`pipec.prepare`)
    stats, progress = session.stats, session.progress
    try:
        if config.mode == Mode.WORKER:
            # A worker only runs trials of the shared study; `--finalize` scores and writes the result.
            progress.update("worker")
            optimizer.optimize(session)
            return program.bound(compile_result=CompileResult(None, stats, time.perf_counter() - started,
                                                              worker_trials=session.worker_trials,
                                                              spent=session.budget.spent, started_ns=started_ns,
                                                              trial_ns=tuple(session.trial_ns),
                                                              runs=_finished(session.run_log)))
        progress.update("baseline")
        baseline = session.evaluate(session.baseline())
        if session.run_log is not None:
            session.run_log.baseline = session.run_log.take()
        session.baseline_score = None if baseline.incomplete else baseline.score
        progress.update("optimizing")
        params, score = optimizer.optimize(session)
        progress.update("final eval")
        if score is None:
            result = session.evaluate(params)
            score = None if result.incomplete else result.score
        _finished(session.run_log)
        params, score = within_call_bound(session, params, score)
        params, score = never_worse(session, params, score)
        params = keep_pinned(program, params)       # the artifact holds pinned parts as written, whatever was returned
    finally:
        progress.close()
    members = params if isinstance(params, list) else []
    chosen = program.bound(None if members else params, members)
    report = Report(pipeline=program.name, optimizer=config.optimizer, options=optimizer.settings(),
                    metric=metric.text, seed=config.seed, budget=config.budget, budget_usd=config.budget_usd,
                    trainset=len(session.trainset),
                    valset=len(session.valset), baseline_score=round(baseline.score, 6), compiled_score=round(score, 6),
                    lm_requests=stats.calls + stats.cache_hits, tokens=stats.tokens, cost=round(stats.cost, 6),
                    trials=session.trials, fingerprint=fp, lms=lms_used(session), lineage=session.lineage,
                    max_calls_per_row=config.max_calls_per_row)
    from .emit import build_artifact
    artifact = build_artifact(chosen, report, program.path.resolve().parent)
    compiled = chosen.bound(artifact=artifact, compile_result=CompileResult(artifact, stats,
                                                                           time.perf_counter() - started,
                                                                           spent=session.budget.spent,
                                                                           started_ns=started_ns,
                                                                           trial_ns=tuple(session.trial_ns),
                                                                           runs=session.run_log))
    compile_cache.store(compiled, fp)
    return compiled


def check_prices(program, config: CompileConfig, metric: Metric) -> None:
    """Under a dollar budget, every LM the compile may call (the pipeline's, the judge's, the
    teacher, the proposer) needs a price and a bound on its replies' length, or the budget could
    not be kept; checked before any data is read or any LM is called. Raises `SettingsError`
    naming each such LM where it is declared (or the flag that named it)."""
    if config.budget_usd is None:
        return
    from .dsl.diagnostics import Diagnostic, render_all
    from .lm import backend_for
    from .settings import Origin, SettingsError
    origin = config.origin or Origin()
    predictors = list(program.predictors(every=True).values())      # any alternative may be scored
    # (role, the setting that named it, backend, whether its requests all name max_tokens)
    used: list[tuple[str, str | None, object, bool]] = [
        ("the pipeline's", None, program.backend(p.lm), "max_tokens" in p.params) for p in predictors]
    if metric.needs_lm:
        used.append(("the judge's", None, program.backend(program.default_lm_name(metric.judge.get("lm"))), False))
    if config.teacher is not None:
        teacher = resolve_lm(program, config.teacher)
        used.append(("the teacher", "teacher", backend_for(teacher) if isinstance(teacher, str) else teacher,
                     all("max_tokens" in p.params for p in predictors)))
    used.append(("the proposer", "proposer", proposer_choice(program, config)[0], True))   # it asks with max_tokens
    unbounded = {id(b) for _, _, b, bounded in used if not bounded}
    problems: list[Diagnostic] = []
    seen: set = set()
    for role, setting, backend, _ in used:
        decl = _declaration(program, backend)
        if (decl.name if decl else id(backend)) in seen:
            continue
        seen.add(decl.name if decl else id(backend))
        price = backend.price()
        if price is None:
            message = (f"the dollar budget ({money(config.budget_usd)}) cannot be enforced: no price is known for "
                       f"{backend.model}, {role} LM")
            hint = ("declare its price on the lm, like `input_price: 0.15, output_price: 0.60` (dollars per million "
                    "tokens; 0 for a free server), or give the budget in LM calls only")
        elif price.output and not price.max_output and id(backend) in unbounded:
            message = f"the dollar budget cannot bound a reply of {backend.model}, {role} LM: nothing limits its length"
            hint = "give its lm max_tokens, like `max_tokens: 512`"
        else:
            continue
        if decl is not None:
            span = decl.name_span
        else:
            shown = str(getattr(config, setting or "", None) or backend.model)
            span = origin.spans.get(setting or "") or origin.add(setting or "lm", f"{setting or 'lm'}=", shown)
        problems.append(Diagnostic("error", message, span, hint, "bad-lm"))
    if problems:
        sources = {**program.loaded.sources, origin.file: origin.text}
        raise SettingsError(render_all(problems, sources), problems, sources)


def _declaration(program, backend):
    """The lm declaration a backend of `program` was built from (the file's default lm for the
    modules that name none), or None for an LM given by id."""
    checked = program.checked
    default = program.default_lm_name()         # the key of the modules that name no lm
    for key in program.lm_ids:
        if program.backend(key) is backend:
            return checked.lms.get(checked.default_lm if key == default else key)
    return None


def keep_pinned(program, params):
    """`params` (`PredictorState`s by predictor name, or their dicts; a list of them for an ensemble)
    with every part the .pipe file pins put back as the file writes it: a pinned instruction, pinned
    demos (and no per-input demos in their place). The one place pins are enforced: every candidate is
    scored through it and the compiled program is built from it, so no optimizer can change what is
    pinned, whether or not it looks at `PredictorView.pinned`.

    >>> import pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
    >>> _ = path.write_text('signature S { in q: str out a: str } '
    ...                     'module m = Predict(S, instruction: "Be brief.", pin: [instruction]) '
    ...                     'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
    >>> keep_pinned(pipec.load(path, cache=False), {"m": {"instruction": "Be verbose."}})["m"].instruction
    'Be brief.'
    """
    if isinstance(params, list):
        return [keep_pinned(program, member) for member in params]
    pinned = {name: p.pinned for name, p in program.predictors(every=True).items() if p.pinned}
    if not pinned or params is None:
        return params
    written = program.pristine_params()
    out = dict(params)
    for name, parts in pinned.items():
        if name not in out:
            continue            # a predictor left out keeps the program's own parameters, the written ones
        st = out[name] if isinstance(out[name], PredictorState) else PredictorState.model_validate(out[name])
        update = {}
        if "instruction" in parts:
            update["instruction"] = written[name].instruction
        if "demos" in parts:
            update.update(demos=list(written[name].demos), knn=None)
        out[name] = st.model_copy(update=update)
    return out


def within_call_bound(session: CompileSession, params, score: float | None):
    """The optimizer's result, unless it could make more LM calls per input than `max_calls_per_row`
    allows (`pipec inspect`'s bound of it: the alternatives it chooses, an ensemble's members
    together): then the uncompiled parameters, which keep the bound (`check_settings` saw to it), with
    a trial that says why. The one place the bound is enforced, whatever an optimizer returns."""
    from .inspection import max_calls
    bound = session.max_calls_per_row
    if bound is None:
        return params, score
    program = session.program
    candidate = program.bound(members=params) if isinstance(params, list) else program.bound(params or {})
    calls = max_calls(candidate)
    if calls <= bound:
        return params, score
    chose = ", ".join(f"{m}: {label}" for m, label in choice_of(params if isinstance(params, dict) else {}).items())
    base = session.baseline_score
    session.record(base if base is not None else 0.0, full=base is not None,
                   note=f"{KEPT_BASELINE}: {session.config.optimizer}'s program may make {calls} LM calls per input"
                        + (f" ({chose})" if chose else "") + f", over max_calls_per_row {bound}")
    return session.baseline(), base


def never_worse(session: CompileSession, params, score: float | None):
    """The optimizer's result, unless it scored below the uncompiled program on the valset (or could
    not be scored there within the budget): then the uncompiled parameters, with a trial that says
    why. A compile never emits a program that scored worse than the one it started from.
    """
    base = session.baseline_score
    if base is None:                    # the budget did not even cover the baseline: nothing to compare
        return params, score if score is not None else (session.best_score or 0.0)
    if score is not None and score >= base:
        return params, score
    name = session.config.optimizer
    why = (f"{name}'s program scored {score:.3f} on the valset, below the uncompiled {base:.3f}" if score is not None
           else f"{name}'s program could not be scored on the whole valset within the budget")
    session.record(base, note=f"{KEPT_BASELINE}: {why}")
    return session.baseline(), base


def lms_used(session: CompileSession) -> dict[str, str]:
    """The report's `lms`: the LMs the pipeline's predictors run on (`task`), the teacher and the
    proposer when the optimizer used them (with the rule that chose them), and the requests each LM
    id answered (`requests`, cache hits included, so a warm cache gives the same report)."""
    out = {"task": task_lms(session.program)}
    if session.teacher_used:
        out["teacher"] = session.teacher_label()
    if session.proposer_label is not None:
        out["proposer"] = session.proposer_label
    if session.stats.by_lm:
        out["requests"] = ", ".join(f"{lm} {n}" for lm, n in sorted(session.stats.by_lm.items()))
    return out


def fit_valset(val: list, budget: int | None, per_row: int, rng: random.Random) -> list:
    """The validation rows a call budget affords. The baseline and one candidate are scored on the
    same rows with at most half the budget, leaving the other half to the optimizer; without a
    budget, or when every row fits, all rows. A budget smaller than the valset would otherwise be
    spent scoring the baseline, with nothing left to optimize.

    >>> fit_valset(list(range(20)), 18, 1, random.Random(0))
    [1, 8, 12, 13]
    >>> len(fit_valset(list(range(20)), 200, 1, random.Random(0)))
    20
    """
    if budget is None or 4 * len(val) * per_row <= budget:
        return val
    keep = sorted(rng.sample(range(len(val)), max(1, budget // (4 * per_row))))
    return [val[i] for i in keep]


def proposer_choice(program, config: CompileConfig):
    """The LM that proposes instructions, and why, by one rule:

    1. the `proposer` setting (`--proposer`): a declared lm name or an LM id;
    2. else the `teacher` setting (`--teacher`);
    3. else the file's default lm (`default lm = NAME`, or the file's only `lm`);
    4. else, in a file with several lms and no default, the lm most of the pipeline's predictors run
       on (a tie goes to the one declared first): never a model none of them uses.

    Returns `(backend, reason)`. A file that declares no lm runs on the embedded model, and so does
    its proposer (rule 3 finds no default; rule 4 finds the predictors on the built-in default).
    """
    from .lm import backend_for
    default = program.default_lm_name()
    for setting in ("proposer", "teacher"):
        choice = getattr(config, setting)
        if choice is not None:
            resolved = resolve_lm(program, choice)
            backend = resolved if not isinstance(resolved, str) else backend_for(resolved)
            named = f", {choice}" if choice != backend.describe() else ""
            return backend, f"the {setting} setting{named}"
    checked = program.checked
    if checked.default_lm is not None:
        how = "default lm" if len(checked.lms) > 1 else "only lm"
        return program.backend(checked.default_lm), f"the file's {how}, {checked.default_lm}"
    used = Counter(p.lm for p in program.predictors().values()) or Counter([default])
    order = [*checked.lms, default]
    name = max(used, key=lambda n: (used[n], -order.index(n) if n in order else -len(order)))
    shown = name if name != default else "the built-in default model"
    return program.backend(name), f"no default lm: {shown}, the lm most of the pipeline's predictors run on"


def _proposer_identity(program, config: CompileConfig) -> str:
    """The proposer `proposer_choice` would pick, for the fingerprint: a file that gains a default lm
    proposes on another LM, so it compiles again."""
    backend, why = proposer_choice(program, config)
    return f"{backend.describe()} ({why})"


def task_lms(program) -> str:
    """The LMs the pipeline's predictors run on, in order of first use: "openai/small, openai/big"."""
    return ", ".join(dict.fromkeys(program.backend(p.lm).describe() for p in program.predictors().values()))


def resolve_lm(program, choice: str):
    """A declared lm name resolves to its backend; anything else is an LM id."""
    if choice in program.checked.lms:
        return program.backend(choice)
    return choice


__all__ = ["CompileSession", "SessionUnder", "CompileResult", "compile_program", "open_session", "never_worse",
           "within_call_bound", "check_prices", "KEPT_BASELINE"]
