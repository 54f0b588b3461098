"""Compile: search each predictor's instruction and demos against a metric, emit the artifact.

`compile_program` checks the settings with the compile block's own checks (`check_settings`), loads
and checks the data, scores the uncompiled pipeline on the valset, hands a `Session` to the chosen
optimizer (which only chooses parameters), scores the result, keeps the uncompiled parameters when
the result scores lower (`never_worse`), and writes a versioned artifact. Everything is keyed by a
fingerprint of the sources, data, metric, optimizer settings, seed, budget and LM ids (the proposer
the rule picks included): compiling unchanged inputs again is a cache hit with no LM call.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifact import (FORMAT_VERSION, Artifact, ArtifactError, LMState, PredictorState, Report, Sources, Trial,
                       fingerprint, read_artifact)
from .budget import Budget
from .context import Stats
from .dataset import DatasetError, Example, check_examples, read_examples, split
from .dsl import ast as A
from .dsl.diagnostics import Diagnostic, render_all
from .evaluate import EvalResult, evaluate
from .graph import to_dict as graph_dict
from .metrics import Metric
from .progress import Progress
from .version import __version__


@dataclass
class CompileConfig:
    """Everything a compile depends on (the compile block's settings, or the API's arguments)."""

    trainset: Any
    valset: Any = None
    metric: str = ""
    optimizer: str = "bootstrap_fewshot"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    budget: int | None = None
    teacher: str | None = None        # an LM id or a declared lm name
    proposer: str | None = None
    concurrency: int = 4
    storage: str | None = None        # an optuna storage URL
    study: str | None = None
    mode: str = "single"              # "worker": join a shared study and run trials; "finalize": write the result
    progress: bool | None = False
    val_fraction: float = 0.4
    base_dir: Path | None = None      # data paths are relative to this (the .pipe file's folder)
    origin: "Origin | None" = None    # where settings given outside the compile block were written


class Origin:
    """Where compile settings given outside a compile block were written: one line of text (the
    command line's flags, or the Python call's arguments) and each value's place in it, so a setting
    that fails the compile block's checks is shown as the checker shows a .pipe file: the line, a
    caret under the value, a hint.

    >>> o = Origin("command line"); _ = o.add("budget", "--budget ", "abc"); o.text, str(o.spans["budget"])
    ('--budget abc', 'command line:1:10')
    """

    def __init__(self, file: str = "compile arguments"):
        self.file = file
        self.text = ""
        self.spans: dict[str, A.Span] = {}

    def add(self, key: str, flag: str, value: str) -> A.Span:
        """Append `flag` and `value` ("--budget ", "15"); the value's span is kept under `key`
        ("optimizer", "option:NAME", "seed", "budget", "concurrency", "metric", "teacher", "proposer")."""
        value = value.replace("\n", " ")
        if self.text:
            self.text += " "
        self.text += flag
        col = len(self.text) + 1
        self.text += value
        span = A.Span(self.file, 1, col, 1, col + max(1, len(value)))
        self.spans[key] = span
        return span


class SettingsError(ValueError):
    """Compile settings that cannot work, found before any data is read or any LM is called: an
    optimizer, option, seed, budget or metric the compile block's checks refuse, or a mode that does
    not fit the optimizer. A usage error on the command line (exit 2). `diagnostics` are the
    checker's, rendered with `sources`."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None,
                 sources: dict[str, str] | None = None):
        self.diagnostics = diagnostics or []
        self.sources = sources or {}
        super().__init__(message)

    def render(self, color: bool = False) -> str:
        return render_all(self.diagnostics, self.sources, color) if self.diagnostics else str(self)


def check_settings(program, config: CompileConfig, near: Path | None = None) -> Metric:
    """Check a compile's settings with the compile block's own checks and return its metric.

    The settings (the command line's flags over the file's compile block, or the Python call's
    arguments) are written into the program as its compile block and the whole program is checked
    again, by `pipec.dsl.check` itself: an unknown optimizer or option, an option of the wrong type
    or below its minimum (`trials: "abc"`, `k: 0`, `max_demos: -5`), a seed, budget or concurrency
    that is not a whole number in range, a metric over an output the pipeline does not have, a
    teacher or proposer that names no declared lm. Nothing is read and no LM is called before this.
    Raises `SettingsError` with every problem at once.
    """
    from .catalogue import catalogue
    from .dsl.checker import check
    cat = catalogue()
    origin = config.origin or Origin()
    spare = Origin() if config.origin is not None else origin     # values that came from the file

    def span(key: str, flag: str, shown: str) -> A.Span:
        return origin.spans.get(key) or spare.add(key, flag, shown)

    problems: list[Diagnostic] = []
    settings: list[A.Setting] = []
    optimizer = str(config.optimizer)
    spec = cat.optimizers.get(optimizer)
    args = []
    for name, value in (config.options or {}).items():
        at = span(f"option:{name}", "option ", f"{name}={_shown(value)}")
        kind = spec.options[name].type if spec is not None and name in spec.options else ""
        args.append(A.Arg(at, str(name), _setting_expr(value, at, kind)))
    at = span("optimizer", "optimizer=", optimizer)
    settings.append(A.Setting(at, "optimizer", A.Call(at, optimizer, args, at)))
    for name in ("seed", "budget", "concurrency"):
        value = getattr(config, name)
        if value is not None:
            at = span(name, f"{name}=", _shown(value))
            settings.append(A.Setting(at, name, _setting_expr(value, at, "")))
    for name in ("teacher", "proposer"):
        value = getattr(config, name)
        if isinstance(value, str) and "/" not in value:     # an LM id (provider/model) needs no declaration
            at = span(name, f"{name}=", value)
            settings.append(A.Setting(at, name, A.Var(at, value)))
    metric_expr = None
    if isinstance(config.metric, Metric):
        metric_expr = config.metric.expr
    else:
        text = str(config.metric)
        at = span("metric", "metric=", text)
        metric_expr = _parse_metric(text, at)
        if metric_expr is None:
            problems.append(Diagnostic("error", f"cannot read metric '{text}'", at,
                                       "write a call such as exact_match(answer)", "bad-option"))
    if metric_expr is not None:
        settings.append(A.Setting(metric_expr.span, "metric", metric_expr))
    block = A.CompileBlock(A.Span(origin.file, 1, 1, 1, 2), program.name, settings, A.Span(origin.file, 1, 1, 1, 2))
    files = []
    for f in program.checked.files:
        items = [it for it in f.items if not (isinstance(it, A.CompileBlock) and it.pipeline == program.name)]
        files.append(f if len(items) == len(f.items) else dataclasses.replace(f, items=items))
    files.append(A.File(origin.file, origin.text, [block]))
    _, diags = check(files, cat)
    # The file checked clean without these settings, so every error is theirs. A compile block must
    # name a trainset and a metric; settings given here may come without them (data from Python).
    problems += [d for d in diags if d.severity == "error" and d.code != "missing-setting"]
    if config.mode != "single":
        where = span("mode", "mode=", str(config.mode))
        if optimizer != "mipro":
            problems.append(Diagnostic("error", "--worker and --finalize share an optuna study: they work with the "
                                                "mipro optimizer only", where, "add --optimizer mipro", "bad-option"))
        elif not (config.storage and config.study):
            problems.append(Diagnostic("error", "--worker and --finalize need the shared study: --storage URL and "
                                                "--study NAME", where, "", "bad-option"))
    if problems:
        sources = {**program.loaded.sources, origin.file: origin.text, spare.file: spare.text}
        raise SettingsError(render_all(problems, sources), problems, sources)
    if isinstance(config.metric, Metric):
        return config.metric
    return Metric.from_expr(metric_expr, str(config.metric), near)


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr) if not isinstance(value, str) else value


def _setting_expr(value: Any, at: A.Span, kind: str) -> A.Expr:
    """A setting's value as the parser would have built it from the file (a name for name-typed options)."""
    if isinstance(value, list):
        return A.ListLit(at, [_setting_expr(v, at, "") for v in value])
    if isinstance(value, str) and kind in ("lm", "tool", "module", "name") and value.isidentifier():
        return A.Var(at, value)
    if isinstance(value, (str, int, float, bool)):
        return A.Literal(at, value)
    return A.Literal(at, None)         # a dict, None, an object: no option takes one, the check says so


def _parse_metric(text: str, at: A.Span) -> A.Expr | None:
    """A metric's text parsed as the compile block's `metric = ...` would be, its spans moved onto
    `at` (where the text was written), or None when it does not parse."""
    from .dsl.parser import parse
    prefix = "compile _metric { metric = "
    f, diags = parse(prefix + text + " }", at.file)
    if diags or not f.items or not getattr(f.items[0], "settings", None) or "\n" in text:
        return None
    return _moved(f.items[0].settings[0].value, at.file, at.col - len(prefix) - 1)


def _moved(node, file: str, shift: int):
    """An AST node with every span moved `shift` columns along line 1 of `file`."""
    if isinstance(node, A.Span):
        return A.Span(file, 1, node.col + shift, 1, node.end_col + shift)
    if isinstance(node, list):
        return [_moved(x, file, shift) for x in node]
    if dataclasses.is_dataclass(node) and not isinstance(node, type) and not isinstance(node, A.Ref):
        return dataclasses.replace(node, **{f.name: _moved(getattr(node, f.name), file, shift)
                                           for f in dataclasses.fields(node)})
    return node


class CompileProgress:
    """One status line: phase (and the LM it runs on, where that is not the pipeline's own: the
    proposer), trial, best score so far, LM calls (of the budget), tokens, cost, time."""

    def __init__(self, budget: Budget, stats: Stats, enabled: bool | None, stream=None):
        self.budget, self.stats = budget, stats
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.best: float | None = None
        self.trial = 0
        self.total: int | None = None
        self.phase = ""
        self.lms: dict[str, str] = {}       # phase -> the LM it runs on ("proposing" -> the proposer)
        self.start = time.perf_counter()

    def line(self) -> str:
        st = self.stats
        calls = f"{st.calls}" + (f"/{self.budget.limit}" if self.budget.limit else "")
        trial = f"trial {self.trial}" + (f"/{self.total}" if self.total else "")
        best = f"best {self.best:.3f}" if self.best is not None else "best -"
        phase = self.phase + (f" on {self.lms[self.phase]}" if self.phase in self.lms else "")
        return (f"{phase:<12} {trial}  {best}  LM calls {calls} ({st.cache_hits} cached)  "
                f"{st.prompt_tokens + st.completion_tokens} tokens  ${st.cost:.4f}  {time.perf_counter() - self.start:.0f}s")

    def update(self, phase: str | None = None) -> None:
        if phase is not None:
            self.phase = phase
        if self.enabled:
            self.stream.write("\r\x1b[2K" + self.line())
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


class Session:
    """What an optimizer works with: data, metric, evaluation, the teacher, the budget, the seed.

    Optimizers never touch the graph; they return parameters (`PredictorState` by predictor name).
    """

    def __init__(self, program, config: CompileConfig, trainset: list[Example], valset: list[Example],
                 metric: Metric, budget: Budget, stats: Stats, progress: CompileProgress):
        self.program = program
        self.config = config
        self.trainset = trainset
        self.valset = valset
        self.metric = metric
        self.budget = budget
        self.stats = stats
        self.progress = progress
        self.seed = config.seed
        self.options = dict(config.options)
        self.trials: list[Trial] = []
        self.best_score: float | None = None
        self.baseline_score: float | None = None    # the uncompiled valset score, once measured
        self._teacher = None
        self._proposer = None
        self.proposer_label: str | None = None      # "openai/big (the file's default lm 'big')", once chosen
        self.teacher_used = False

    # -- parameters
    def baseline(self) -> dict[str, PredictorState]:
        """The uncompiled parameters: signature instructions, no demos."""
        return self._baseline

    def rng(self, salt: str = "") -> random.Random:
        """A deterministic random stream for a named purpose."""
        return random.Random(f"{self.seed}:{salt}")

    @property
    def calls_per_row(self) -> int:
        """LM calls one input typically costs: the static worst case without its parse retries."""
        from .inspection import max_calls
        return max(1, max_calls(self.program) // 2)

    def holding_back_for_validation(self):
        """Within the block, the budget keeps back what scoring one candidate on the valset costs."""
        return self.budget.holding_back(len(self.valset) * self.calls_per_row)

    # -- running
    def evaluate(self, params: dict[str, PredictorState], rows: list[Example] | None = None) -> EvalResult:
        """Score the program with these parameters on `rows` (default: the valset).

        `params` may also be a list of parameter sets: an ensemble that votes on every input.
        """
        if isinstance(params, list):
            self.program.set_ensemble(params)
        else:
            self.program.set_ensemble([])
            self.program.apply(params)
        rt = self.program.runtime(self.budget, self.stats)
        result = evaluate(self.program, rows if rows is not None else self.valset, self.metric,
                          self.config.concurrency, runtime=rt)
        self._stop_on_refused_keys(self.program)
        return result

    def run_teacher(self, params: dict[str, PredictorState], rows: list[Example]) -> EvalResult:
        """Run the teacher (the program itself, or on the teacher LM) with `params` and score each row.

        Each row's `prediction.trace` holds every predictor call with its inputs and parsed
        outputs: the material for bootstrapped demos.
        """
        teacher = self.teacher()
        teacher.apply(params)
        self.teacher_used = True
        rt = teacher.runtime(self.budget, self.stats)
        result = evaluate(teacher, rows, self.metric, self.config.concurrency, runtime=rt)
        self._stop_on_refused_keys(teacher)
        return result

    def _stop_on_refused_keys(self, program) -> None:
        """A compile whose LM refused its key stops at once: every row would fail the same way, and
        scoring rows that cannot run would only compare zeros (see `AuthLMError`)."""
        from .context import auth_failures
        backends = list(program._backends.values()) + ([self._proposer] if self._proposer is not None else [])
        refused = auth_failures(backends)
        if refused:
            raise refused[0]

    def teacher(self):
        if self.config.teacher is None:
            return self.program
        if self._teacher is None:
            from .program import Program
            self._teacher = Program(self.program.loaded, self.program.path, self.program.name,
                                    lm=resolve_lm(self.program, self.config.teacher), cache=self.program.cache is not None)
            self._teacher.cache = self.program.cache
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
    def record(self, score: float, full: bool = True, note: str = "") -> Trial:
        """Record a trial's score (shown in the progress line and kept in the report)."""
        t = Trial(number=len(self.trials) + 1, score=round(score, 6), full=full, note=note)
        self.trials.append(t)
        if full and (self.best_score is None or score > self.best_score):
            self.best_score = score
            self.progress.best = score
        self.progress.trial = t.number
        self.progress.update()
        return t

    @property
    def out_of_budget(self) -> bool:
        return self.budget.exhausted


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
    from .program import DEFAULT_LM
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
    used = Counter(p.lm for p in program.predictors().values()) or Counter([DEFAULT_LM])
    order = [*checked.lms, DEFAULT_LM]
    name = max(used, key=lambda n: (used[n], -order.index(n) if n in order else -len(order)))
    shown = name if name != DEFAULT_LM else "the built-in default model"
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


def _rows(data, base: Path | None, program, labels: list[str]) -> tuple[list[Example], Any]:
    """Checked examples from a path or a list of dicts, plus what identifies them in the fingerprint.

    Unreadable lines and rows with bad inputs or missing labels are reported together.
    """
    problems: list[str] = []
    if isinstance(data, (str, Path)):
        p = Path(data)
        if base is not None and not p.is_absolute():
            p = base / p              # relative to the .pipe file, as the checker's hint says
        examples = read_examples(p, problems)
    else:
        examples = [Example(dict(r), f"row {i + 1}") for i, r in enumerate(data)]
    ident = [e.values for e in examples]
    try:
        examples = check_examples(examples, program, labels)
    except DatasetError as err:
        problems += err.problems
    if problems:
        raise DatasetError(problems)
    return examples, ident


def lm_identity(program) -> dict[str, Any]:
    """LM ids and options by declared name: part of the fingerprint, never a key's value."""
    out = {}
    for name, decl in program.checked.lms.items():
        out[name] = {"model": program.backend(name).describe(),
                     "options": {o.name: getattr(o.value, "name", o.value) for o in decl.options}}
    out["__default__"] = {"model": program.backend(program.default_lm_name()).describe()}
    return out


def python_sources(program, metric: Metric) -> dict[str, str]:
    """Hashes of the Python files behind tools and a python metric: editing them recompiles.
    The files are found as `import` would find them, without importing them."""
    from .tools import describe_target
    near = program.path.resolve().parent
    targets = {t.target for t in program.checked.tools.values()}
    if metric.target is not None:
        targets.add(metric.target)
    origins: dict[str, str | None] = {}
    for target in targets:
        origins[target.partition(":")[0]] = describe_target(target, near).origin
    out = {}
    for name, origin in sorted(origins.items()):
        try:
            out[name] = fingerprint(Path(origin).read_bytes().decode("utf-8", "replace")) if origin else "?"
        except OSError:
            out[name] = "?"
    return out


def source_files(program) -> dict[str, str]:
    """The program's .pipe sources keyed by path relative to the main file's folder."""
    base = program.path.resolve().parent
    out = {}
    for shown, text in program.loaded.sources.items():
        p = Path(shown)
        real = (p if p.is_absolute() else Path.cwd() / p).resolve()
        out[os.path.relpath(real, base).replace(os.sep, "/")] = text
    return out


def compile_program(program, config: CompileConfig):
    """Compile `program` per `config`; returns the program with tuned parameters and `.artifact` set."""
    from pipec.optimizers import get_optimizer
    started = time.perf_counter()
    base = config.base_dir or program.path.resolve().parent
    metric = check_settings(program, config, base)          # before any data is read or any LM called
    optimizer = get_optimizer(config.optimizer)(**config.options)
    unknown = [f for f in metric.fields if f not in program.output_names]
    if unknown:
        raise ValueError(f"metric {metric.text} scores {', '.join(unknown)}, not an output of {program.name} "
                         f"(outputs: {', '.join(program.output_names)})")
    labels = metric.fields
    train, train_id = _rows(config.trainset, base, program, labels)
    if config.valset is not None:
        val, val_id = _rows(config.valset, base, program, labels)
    else:
        if len(train) < 2:
            raise DatasetError([f"{config.trainset}: a trainset of {len(train)} row cannot be split into train and "
                                "validation rows; add rows or give a valset"])
        train, val = split(train, config.seed, config.val_fraction)
        val_id = "split"
    fp = fingerprint(FORMAT_VERSION, source_files(program), python_sources(program, metric), program.name,
                     train_id, val_id, config.val_fraction if config.valset is None else None, metric.text,
                     config.optimizer, optimizer.settings(), config.seed, config.budget, lm_identity(program),
                     config.teacher, config.proposer, _proposer_identity(program, config))
    cached = _cached_artifact(program, fp) if config.mode == "single" else None
    if cached is not None:
        program.set_ensemble(cached.ensemble)
        program.apply(cached.predictors)
        program.artifact = cached
        program.compile_seconds = time.perf_counter() - started
        program.compile_cache_hit = True
        program.compile_stats = Stats()
        return program
    budget = Budget(config.budget)
    stats = Stats()
    progress = CompileProgress(budget, stats, config.progress)
    session = Session(program, config, train, val, metric, budget, stats, progress)
    session._baseline = program.pristine_params()
    session.valset = val = fit_valset(val, config.budget, session.calls_per_row, session.rng("valset"))
    try:
        if config.mode == "worker":
            # A worker only runs trials of the shared study; `--finalize` scores and writes the result.
            progress.update("worker")
            optimizer.optimize(session)
            program.worker_trials = getattr(session, "worker_trials", 0)
            program.compile_stats = stats
            program.compile_seconds = time.perf_counter() - started
            return program
        progress.update("baseline")
        baseline = session.evaluate(session.baseline())
        session.baseline_score = None if baseline.incomplete else baseline.score
        progress.update("optimizing")
        params, score = optimizer.optimize(session)
        progress.update("final eval")
        if score is None:
            result = session.evaluate(params)
            score = None if result.incomplete else result.score
        params, score = never_worse(session, params, score)
    finally:
        progress.close()
    members = params if isinstance(params, list) else []
    program.set_ensemble(members)
    if not members:
        program.apply(params)
    tokens = stats.prompt_tokens + stats.completion_tokens
    report = Report(pipeline=program.name, optimizer=config.optimizer, options=optimizer.settings(),
                    metric=metric.text, seed=config.seed, budget=config.budget, trainset=len(train), valset=len(val),
                    baseline_score=round(baseline.score, 6), compiled_score=round(score, 6),
                    lm_requests=stats.calls + stats.cache_hits, tokens=tokens, cost=round(stats.cost, 6),
                    trials=session.trials, fingerprint=fp, lms=lms_used(session))
    program.artifact = build_artifact(program, report, program.path.resolve().parent)
    program.compile_seconds = time.perf_counter() - started
    program.compile_cache_hit = False
    program.compile_stats = stats
    _store_cached(program, fp)
    return program


KEPT_BASELINE = "kept the uncompiled program"


def never_worse(session: Session, params, score: float | None):
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


def lms_used(session: Session) -> dict[str, str]:
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


def build_artifact(program, report: Report, folder: Path) -> Artifact:
    """The artifact of a compiled program, with sources relative to `folder` (where it will be saved)."""
    base = program.path.resolve().parent
    files = {}
    for rel, text in source_files(program).items():
        files[os.path.relpath(base / rel, folder).replace(os.sep, "/")] = text
    main = os.path.relpath(program.path.resolve(), folder).replace(os.sep, "/")
    graph = graph_dict(program.graph)
    lms = {}
    for name, decl in program.checked.lms.items():
        lms[name] = LMState(model=decl.model, options={o.name: getattr(o.value, "name", o.value) for o in decl.options})
    members = [_masked(m) for m in program.members]
    return Artifact(format_version=FORMAT_VERSION, pipec_version=__version__, pipeline=program.name,
                    sources=Sources(main=main, files=files, fingerprint=fingerprint(main, files)),
                    graph=graph, lms=lms, predictors=_masked(program.params()), ensemble=members, report=report).sealed()


def _masked(params: dict[str, Any]) -> dict[str, PredictorState]:
    """Parameter sets with every secret value masked: demos are LM replies and data rows, and an
    artifact is meant to be shared."""
    from .secrets import redact_data
    return {k: PredictorState.model_validate(redact_data(v.model_dump(mode="json") if isinstance(v, PredictorState) else v))
            for k, v in params.items()}


def write_artifact(program, path: Path, remember: bool = True) -> Path:
    """Save a compiled program's artifact at `path` (sources re-rooted to the destination folder).

    A program compiled here from a .pipe file, or loaded from an artifact this machine already
    trusts, is recorded in the user's trust store (`pipec.trust`), so running the saved file needs no
    approval; a copy of an untrusted artifact stays untrusted. `remember=False` records nothing.
    """
    from . import trust
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    art = build_artifact(program, program.artifact.report, path.resolve().parent)
    text = art.dumps()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    if remember and program.trust.origin in ("source", "store") and not trust.record(text, path, "compiled"):
        import warnings
        warnings.warn(f"could not record {path} in the trust store {trust.store_dir()} (not writable, or writable by "
                      "others): running it will ask for approval (--trust)", stacklevel=2)
    return path


def load_compiled(path: str | Path, *, lm=None, lms=None, cache=True, trust: bool = False, allow=()):
    """Load a compiled artifact as a Program with its tuned parameters. Loading runs nothing of the
    artifact's; running it needs approval unless this machine trusts it (see `pipec.trust`):
    `allow` names approved targets, modules and endpoints, `trust=True` approves all of them.

    >>> prog = load_compiled("examples/intent.compiled.json")      # doctest: +SKIP
    """
    from . import trust as trust_store
    from .catalogue import catalogue
    from .dsl.diagnostics import PipeError
    from .dsl.loader import load as load_source
    from .program import Program
    path = Path(path)
    art = read_artifact(path)
    folder = path.resolve().parent
    files = {(folder / rel).resolve(): text for rel, text in art.sources.files.items()}
    main = (folder / art.sources.main).resolve()
    if main not in files:
        raise ArtifactError(f"{path}: the main source '{art.sources.main}' is not embedded")

    def reader(p: Path) -> str:
        try:
            return files[p.resolve()]
        except KeyError:
            raise OSError(2, "not embedded in the artifact") from None

    loaded = load_source(main, catalogue(), source=files[main], reader=reader)
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
        program.set_ensemble(art.ensemble)
        program.apply(art.predictors)
    except (ValueError, KeyError) as err:
        raise ArtifactError(f"{path}: parameters for a predictor the pipeline does not have: {err}") from None
    program.artifact = art
    program.artifact_path = path
    return program


def _cache_path(program, fp: str) -> Path:
    return Path(program.cache.directory) / "compiled" / f"{fp}.json"


def _cached_artifact(program, fp: str) -> Artifact | None:
    if program.cache is None:
        return None
    p = _cache_path(program, fp)
    if not p.exists():
        return None
    try:
        art = read_artifact(p)
    except ArtifactError:
        return None
    return art if art.report.fingerprint == fp else None


def _store_cached(program, fp: str) -> None:
    if program.cache is None:
        return
    try:
        write_artifact(program, _cache_path(program, fp), remember=False)
    except OSError:
        pass   # a read-only cache only costs the next compile its shortcut


__all__ = ["CompileConfig", "Session", "compile_program", "load_compiled", "write_artifact", "DatasetError"]
