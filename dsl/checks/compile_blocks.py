"""Pass: each compile block's pipeline and settings (metric, optimizer, lms, data files)."""
from __future__ import annotations

from pathlib import Path

from .. import ast as A
from ..catalogue import FunctionSpec
from ..checked_program import PipelineInfo
from ..diagnostics import did_you_mean
from .options import check_option_value, setting_value, value_hint
from .state import CheckState, leading_name_span, listing, where
from .tools import PYTHON_TARGET


def check_compile_block(state: CheckState, block: A.CompileBlock) -> None:
    """One compile block per pipeline; known settings with values of their types; a metric and a
    trainset; data files that exist."""
    if block.pipeline in state.compiled:
        state.error(block.pipeline_span, f"pipeline {block.pipeline} already has a compile block",
                    f"the first is at {where(state.compiled[block.pipeline].span, block.span)}; merge the two",
                    "duplicate")
    state.compiled.setdefault(block.pipeline, block)
    _settings(state, block)
    state.program.compiles.append(block)


def _settings(state: CheckState, block: A.CompileBlock) -> None:
    prog = state.program
    info = prog.pipelines.get(block.pipeline)
    if info is None:
        state.unknown(block.pipeline_span, "pipeline", block.pipeline, state.names("pipeline"))
    seen: dict[str, A.Setting] = {}
    specs = state.catalogue.compile_settings
    for s in block.settings:
        name_span = leading_name_span(s.span, s.name)
        if s.name in seen:
            state.error(name_span, f"setting '{s.name}' is given twice",
                        f"first given at {where(seen[s.name].span, s.span)}",
                        "duplicate")
            continue
        seen[s.name] = s
        spec = specs.get(s.name)
        if spec is None:
            state.error(name_span, f"unknown compile setting '{s.name}'",
                        did_you_mean(s.name, specs) or "known settings: " + ", ".join(sorted(specs)),
                        "unknown-option")
            continue
        if spec.type == "budget":
            for span, message, hint in read_budget(s.value)[2]:
                state.error(span, message, hint, "bad-option")
        elif spec.type in ("metric", "optimizer"):
            table = state.catalogue.metrics if spec.type == "metric" else state.catalogue.optimizers
            _function_call(state, s, spec.type, table, info)
        elif spec.type == "lm":
            if not isinstance(s.value, A.Var):
                hint = value_hint(spec, s.value.value if isinstance(s.value, A.Literal) else None, prog.lms)
                state.error(s.value.span, f"setting '{s.name}' must name an lm declaration", hint, "bad-option")
            elif s.value.name not in prog.lms:
                state.unknown(s.value.span, "lm", s.value.name, state.names("lm"))
        else:
            check_option_value(state, f"setting '{s.name}'", A.Option(s.value.span, s.name, setting_value(s.value)),
                               spec)
    for name, example in (("metric", "metric = exact_match(answer)"), ("trainset", 'trainset = "train.jsonl"')):
        if name not in seen:
            state.error(leading_name_span(block.span, "compile"),
                        f"compile block for {block.pipeline} has no {name}",
                        f"add `{example}`", "missing-setting")
    _data_files(state, block, [seen[n] for n in ("trainset", "valset") if n in seen])


BUDGET_FORMS = "a budget is LM calls (300), dollars (usd(2.50)), or both ([300, usd(2.50)])"


def read_budget(e: A.Expr) -> tuple[int | None, float | None, list[tuple[A.Span, str, str]]]:
    """A `budget` setting's bounds, LM calls and dollars (None: not given), and what is wrong with it
    as (span, message, hint): a whole number of calls, `usd(AMOUNT)`, or a list of one of each.

    >>> from pipec.dsl.parser import parse
    >>> def budget(text): return read_budget(parse(f"compile p {{ budget = {text} }}")[0].items[0].settings[0].value)
    >>> budget("[300, usd(2.50)]"), budget("usd(1)")[:2]
    ((300, 2.5, []), (None, 1.0))
    >>> [problem[1] for problem in budget("[usd(0), 2.5]")[2]]
    ['a dollar budget must be more than $0, not 0', "setting 'budget' counts LM calls: a whole number, not 2.5"]
    """
    calls: int | None = None
    usd: float | None = None
    problems: list[tuple[A.Span, str, str]] = []
    items = e.items if isinstance(e, A.ListLit) else [e]
    if isinstance(e, A.ListLit) and not e.items:
        problems.append((e.span, "setting 'budget' is an empty list", BUDGET_FORMS))
    for item in items:
        unit, value, problem = _budget_bound(item)
        if problem is not None:
            problems.append(problem)
        elif (unit == "calls" and calls is not None) or (unit == "usd" and usd is not None):
            what = "LM calls" if unit == "calls" else "dollars"
            problems.append((item.span, f"setting 'budget' gives {what} twice",
                             "give each bound once: " + BUDGET_FORMS))
        elif unit == "calls":
            calls = value
        else:
            usd = value
    return calls, usd, problems


def _number(e: A.Expr):
    """A numeric literal's value (never a bool), else None."""
    if isinstance(e, A.Literal) and isinstance(e.value, (int, float)) and not isinstance(e.value, bool):
        return e.value
    return None


def _budget_bound(e: A.Expr):
    """One bound of a budget: ("calls", n, None), ("usd", amount, None), or (None, None, problem)."""
    n = _number(e)
    if isinstance(e, A.Literal) and isinstance(n, int):
        if n < 1:
            return None, None, (e.span, "setting 'budget' must be at least 1", "maximum LM calls")
        return "calls", n, None
    if n is not None:
        return None, None, (e.span, f"setting 'budget' counts LM calls: a whole number, not {n:g}",
                            f"for dollars write usd({n:g})")
    if isinstance(e, A.Call) and e.callee == "usd":
        amount = _number(e.args[0].value) if len(e.args) == 1 and e.args[0].name is None else None
        if amount is None:
            return None, None, (e.span, "usd takes one amount in dollars", "write it like usd(2.50)")
        if amount <= 0:
            return None, None, (e.args[0].span, f"a dollar budget must be more than $0, not {amount:g}",
                                "usd(0.50) allows fifty cents of LM calls")
        return "usd", float(amount), None
    if isinstance(e, A.Call):
        return None, None, (e.callee_span, f"unknown budget unit '{e.callee}'",
                            did_you_mean(e.callee, ["usd"]) or BUDGET_FORMS)
    hint = BUDGET_FORMS
    if isinstance(e, A.Literal) and isinstance(e.value, str):
        written = e.value.strip().lstrip("$").strip()
        try:
            hint = f"write usd({float(written):g}), without quotes"
        except ValueError:
            pass
    return None, None, (e.span, "setting 'budget' must be a whole number of LM calls or usd(AMOUNT)", hint)


def _data_files(state: CheckState, block: A.CompileBlock, settings: list[A.Setting]) -> None:
    """Warn about data files that are not there: compiling would fail only after the LM is loaded."""
    file = state.file_of.get(id(block))
    if file is None or not Path(file.path).is_file():
        return      # parsed from a string: there is no folder to look in
    for s in settings:
        if not (isinstance(s.value, A.Literal) and isinstance(s.value.value, str)) or not s.value.value:
            continue
        target = Path(file.path).parent / s.value.value
        if not target.is_file():
            problem = "is a folder, not a file" if target.is_dir() else "does not exist"
            state.warn(s.value.span, f"{s.name} file '{s.value.value}' {problem}",
                       f"paths are relative to the .pipe file: looked for {target.as_posix()}", "missing-file")


def _function_call(state: CheckState, s: A.Setting, what: str, table: dict[str, FunctionSpec],
                   info: PipelineInfo | None) -> None:
    """`metric = name(outputs..., option: value)` or `optimizer = name(option: value)`, or python("...")."""
    v = s.value
    if isinstance(v, A.Var):
        v = A.Call(v.span, v.name, [], v.span)
    if not isinstance(v, A.Call):
        example = "exact_match(answer)" if what == "metric" else "bootstrap_fewshot(max_demos: 4)"
        state.error(s.value.span, f"{what} must be a call like `{example}`", "", "bad-option")
        return
    if v.callee == "python":
        if len(v.args) != 1 or not isinstance(v.args[0].value, A.Literal) or \
                not PYTHON_TARGET.match(str(v.args[0].value.value)):
            state.error(v.span, f'a python {what} is written python("package.module:function")', "", "bad-option")
        return
    spec = table.get(v.callee)
    if spec is None:
        state.error(v.callee_span, f"unknown {what} '{v.callee}'",
                    did_you_mean(v.callee, table) or ("known: " + ", ".join(sorted(table)) if table else ""),
                    "unknown-name")
        return
    scored: dict[str, A.Arg] = {}
    for a in v.args:
        if a.name is None:
            _scored_field(state, a, what, v.callee, spec, info, scored)
        else:
            _function_option(state, a, what, v.callee, spec)
    if spec.field_args and not any(a.name is None for a in v.args):
        outs = [o.name for o in info.decl.outputs] if info is not None else []
        example = f"{v.callee}({outs[0] if outs else 'answer'})"
        state.error(v.span, f"{what} {v.callee} needs the output it scores, like `{example}`",
                    "", "bad-option")


def _scored_field(state: CheckState, a: A.Arg, what: str, callee: str, spec: FunctionSpec,
                  info: PipelineInfo | None, scored: dict[str, A.Arg]) -> None:
    """A positional argument of a metric: the pipeline output it scores."""
    if not spec.field_args:
        state.error(a.span, f"{what} {callee} takes only named options",
                    "write `name: value`" + (f", e.g. `{next(iter(spec.options))}: ...`" if spec.options else ""),
                    "bad-option")
    elif not isinstance(a.value, A.Var):
        example = info.decl.outputs[0].name if info is not None and info.decl.outputs else "answer"
        state.error(a.span, f"{what} {callee} takes output names, like `{callee}({example})`", "", "bad-option")
    elif a.value.name in scored:
        state.error(a.span, f"output '{a.value.name}' is scored twice", "", "duplicate")
    elif info is not None and a.value.name not in {o.name for o in info.decl.outputs}:
        outs = [o.name for o in info.decl.outputs]
        state.error(a.span, f"'{a.value.name}' is not an output of pipeline {info.decl.name}",
                    did_you_mean(a.value.name, outs) or "its outputs are: " + listing(outs), "unknown-name")
    else:
        scored[a.value.name] = a


def _function_option(state: CheckState, a: A.Arg, what: str, callee: str, spec: FunctionSpec) -> None:
    ospec = spec.options.get(a.name)
    if ospec is None:
        state.error(a.span, f"unknown option '{a.name}' for {what} {callee}",
                    did_you_mean(a.name, spec.options) or
                    ("known options: " + ", ".join(sorted(spec.options)) if spec.options
                     else f"{what} {callee} takes no options"), "unknown-option")
        return
    check_option_value(state, f"option '{a.name}' of {what} {callee}",
                       A.Option(a.span, a.name, setting_value(a.value)), ospec)
