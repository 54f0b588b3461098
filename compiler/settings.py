"""Compile settings: `CompileConfig` from a compile block, the command line's flags or the Python
call's arguments, and `check_settings`, which checks them with the compile block's own checks before
any data is read or any LM is called."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dsl import ast as A
from .dsl.checks.compile_blocks import read_budget
from .dsl.diagnostics import Diagnostic, render_all
from .metrics import Metric
from .session import Mode

# Settings a compile block writes as plain values (`seed = 3`, `teacher = big`); `optimizer` and
# `metric` are calls, read apart.
VALUE_SETTINGS = ("trainset", "valset", "seed", "budget", "teacher", "proposer", "concurrency", "max_calls_per_row")


@dataclass
class CompileConfig:
    """Everything a compile depends on: the compile block's settings with the command line's flags or
    the Python call's arguments over them (`for_program`)."""

    trainset: Any = None
    valset: Any = None
    metric: Any = ""                  # the metric's text, or a `Metric`
    optimizer: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    budget: int | None = None         # most LM calls
    budget_usd: float | None = None   # most dollars (see `pipec.budget`)
    teacher: str | None = None        # an LM id or a declared lm name
    proposer: str | None = None
    concurrency: int = 4
    max_calls_per_row: int | None = None    # most LM calls one input may make (`pipec inspect`'s bound)
    storage: str | None = None        # an optuna storage URL
    study: str | None = None
    mode: Mode = Mode.SINGLE          # WORKER: join a shared study and run trials; FINALIZE: write the result
    progress: bool | None = False
    val_fraction: float = 0.4
    base_dir: Path | None = None      # data paths are relative to this (the .pipe file's folder)
    origin: "Origin | None" = None    # where settings given outside the compile block were written
    # Keep the runs (rows scored, teacher runs, proposals) for OpenTelemetry trial spans (`pipec.otel`):
    # True without their content, "content" with inputs, outputs and messages. Not in the fingerprint.
    keep_runs: bool | str = False

    def __post_init__(self) -> None:
        self.mode = Mode(self.mode)
        if self.keep_runs not in (False, True, "content"):
            raise ValueError(f"keep_runs: {self.keep_runs!r}; give True, False or \"content\"")

    @classmethod
    def from_block(cls, block: A.CompileBlock | None, base_dir: Path | None = None, **given: Any) -> "CompileConfig":
        """The settings of a compile block (none when `block` is None), with `given` over them.

        A given value of None leaves the block's (or the default) in place: a given `budget` (calls)
        replaces the block's call bound and keeps its dollar bound, and `budget_usd` the other way
        round, so a flag never lifts a spending limit the file set. A given `optimizer` other
        than the block's drops the block's options; given `options` are added to those that remain.
        A metric from the block is built here (relative to `base_dir` for a python metric).
        """
        settings: dict[str, Any] = {}
        options: dict[str, Any] = {}
        metric_expr = None
        for s in block.settings if block is not None else ():
            value = s.value
            if s.name == "optimizer":
                call = value if isinstance(value, A.Call) else A.Call(value.span, value.name, [], value.span)
                settings["optimizer"] = call.callee
                options = {a.name: A.plain(a.value) for a in call.args if a.name}
            elif s.name == "metric":
                metric_expr = value
            elif s.name == "budget":
                settings["budget"], settings["budget_usd"], _ = read_budget(value)
            elif s.name in VALUE_SETTINGS and isinstance(value, (A.Literal, A.Var)):
                settings[s.name] = A.plain(value)
        given = {k: v for k, v in given.items() if v is not None}
        if "optimizer" in given and given["optimizer"] != settings.get("optimizer"):
            options = {}
        options.update(given.pop("options", None) or {})
        if metric_expr is not None and "metric" not in given:
            settings["metric"] = Metric.from_expr(metric_expr, near=base_dir)
        return cls(**{**settings, **given, "options": options, "base_dir": base_dir})

    @classmethod
    def for_program(cls, program, **given: Any) -> "CompileConfig":
        """The compile block of `program`'s pipeline, with `given` over it (see `from_block`); data
        paths are relative to the .pipe file."""
        block = next((b for b in program.checked.compiles if b.pipeline == program.name), None)
        return cls.from_block(block, program.path.resolve().parent, **given)


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
        ("optimizer", "option:NAME", "seed", "budget", "budget_usd", "concurrency", "metric", "teacher",
        "proposer")."""
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
    or below its minimum (`trials: "abc"`, `k: 0`, `max_demos: -5`), a seed, call budget or
    concurrency that is not a whole number in range, a dollar budget that is not a positive amount,
    a metric over an output the pipeline does not have, a teacher or proposer that names no declared
    lm. Nothing is read and no LM is called before this.
    Raises `SettingsError` with every problem at once.
    """
    from pipec.optimizers import optimizers
    from .dsl.checker import check
    from .registry import catalogue
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
    for name in ("seed", "concurrency", "max_calls_per_row"):
        value = getattr(config, name)
        if value is not None:
            at = span(name, f"{name}=", _shown(value))
            settings.append(A.Setting(at, name, _setting_expr(value, at, "")))
    bounds = []
    if config.budget is not None:
        bounds.append(_setting_expr(config.budget, span("budget", "budget=", _shown(config.budget)), ""))
    if config.budget_usd is not None:
        at = span("budget_usd", "budget_usd=", _shown(config.budget_usd))
        bounds.append(A.Call(at, "usd", [A.Arg(at, None, _setting_expr(config.budget_usd, at, ""))], at))
    if bounds:
        settings.append(A.Setting(bounds[0].span, "budget", bounds[0] if len(bounds) == 1 else
                                  A.ListLit(bounds[0].span, bounds)))
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
    if config.mode != Mode.SINGLE:
        where = span("mode", "mode=", str(config.mode.value))
        shared = [name for name, cls in optimizers().items() if cls.shares_studies]
        if optimizer not in shared:
            problems.append(Diagnostic("error", "--worker and --finalize share an optuna study: they work with the "
                                                f"{' and '.join(shared)} optimizer{'s' * (len(shared) > 1)} only", where,
                                       f"add --optimizer {shared[0]}" if shared else "", "bad-option"))
        elif not (config.storage and config.study):
            problems.append(Diagnostic("error", "--worker and --finalize need the shared study: --storage URL and "
                                                "--study NAME", where, "", "bad-option"))
    if not problems and config.max_calls_per_row is not None:
        problems += _over_the_call_bound(program, config.max_calls_per_row, origin.spans.get("max_calls_per_row")
                                         or span("max_calls_per_row", "max_calls_per_row=",
                                                 _shown(config.max_calls_per_row)),
                                         config.origin is not None and "max_calls_per_row" in config.origin.spans)
    if problems:
        sources = {**program.loaded.sources, origin.file: origin.text, spare.file: spare.text}
        raise SettingsError(render_all(problems, sources), problems, sources)
    if isinstance(config.metric, Metric):
        return config.metric
    return Metric.from_expr(metric_expr, str(config.metric), near)


def _over_the_call_bound(program, bound: int, at: A.Span, flag: bool) -> list[Diagnostic]:
    """`max_calls_per_row` is a promise about the compiled program, which is never worse than the
    uncompiled one and may be it: the uncompiled program (each one_of module on its first
    alternative, each module as the compile prepares it: a ToolMaker with its tool) must keep it, or
    no compile could. Pointed at the compile block's setting when the bound came from there (not
    from a flag, `flag`)."""
    from .inspection import max_calls
    written = program.bound({})         # fresh modules: every one_of module on its first alternative
    calls = max_calls(written, prepared=True)
    if calls <= bound:
        return []
    block = next((b for b in program.checked.compiles if b.pipeline == program.name), None)
    setting = next((s for s in (block.settings if block else ()) if s.name == "max_calls_per_row"
                    and A.plain(s.value) == bound), None)
    where = setting.value.span if setting is not None and not flag else at
    dear = [f"{name} ({getattr(module, 'chosen', None) or module.describe()}, {module.max_calls_prepared()} calls)"
            for name, module in written.modules.items() if module.max_calls_prepared() > 2]
    return [Diagnostic("error", f"the uncompiled program may make {calls} LM calls per input, over "
                                f"max_calls_per_row {bound}", where,
                       "a compile keeps the uncompiled program when nothing beats it, so it must fit too: raise the "
                       "bound, or put a cheaper alternative first in a one_of module (it runs the first until "
                       "compiled)" + (f"; the dearest calls: {', '.join(dear)}" if dear else "") +
                       "; `pipec inspect` shows every bound", "bad-option")]


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
