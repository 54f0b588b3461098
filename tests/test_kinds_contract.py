"""The contract every module kind the registry finds (`pipec.modules.kinds()`) keeps, checked on its
example with `pipec.ScriptedLM` (no model, no network):

1. An example uses it and checks clean. A kind's example is `examples/<stem>.pipe`, where <stem> is
   the kind's file in compiler/modules/ (ReAct: react.py -> examples/react.pipe), when that file
   declares a module of the kind; otherwise the smallest example (fewest modules, then by name) that
   does (Predict: intent.pipe). It must check clean, as `pipec check --werror` (no error, no warning,
   tool diagnostics included), and its pipeline must call the module, directly or through another
   module's options (a RankFuse candidate, a Decompose solver).
2. The static call bound holds. For one input, the LM requests are at most what `pipec inspect`
   reports, for the pipeline and for each module call site (a site counts the calls of the modules
   it reaches through options too), whether every reply is garbage ("{}", "not json") or every first
   attempt fails to parse and every retry succeeds. The module either succeeds or fails cleanly: a
   failed prediction with an error, the kind having raised only ModuleFailure or LMError (the
   executor would turn any other exception into a failure too, hiding a crash). And the bound is
   reached: some scripted worst case makes exactly as many calls as a site's bound, so an
   understated bound fails here rather than passing by luck, and an overstated one is caught too.
3. Predictor names. `ModuleKind.predictor(part, ...)` names a predictor `M.part` (`M` for an empty
   part); kinds that build `Predictor`s themselves follow the same shape, adding the LM's name for a
   per-LM predictor (`solve.answer.cold`). The exact rule, for a module `M`: every predictor is named
   `M` or `M.<part>`, where <part> is one or more dot-separated identifiers; the bare `M` only when it
   is the module's one predictor; no two predictors of the program share a name (the program keys
   parameters by it); and every LM call in a trace comes from a listed predictor of the module that
   made it (else an optimizer could not tune it and `max_calls` could not count it). A one_of
   module's alternative with label L (`one_of(Predict, Majority(n: 5))`: Predict, Majority) is built
   as a module named `M.L`, so the same rule names its predictors `M.L` or `M.L.<part>`
   (`solve.Majority.reason`); tests/test_strategy_search.py runs every kind as an alternative.
4. Every extra output a kind declares (`ModuleKind.extra_outputs`, which the checker lets a pipeline
   read, like `r.transcript`) is in the result of each successful call of the module, with its
   declared type.

Replies are built from each request's JSON schema, so a new kind needs no script of its own: every
field gets a value of its type, fresh per call (a search that drops duplicate thoughts keeps them
all), lists get several items, an enum its first label (ReAct's first tool, not `finish`). Booleans
and text length are the two things that end loops early (SelfAsk stops on `false`, Refine's check
tool accepts a short line), so the worst case is tried in four styles: true/false x short/long text.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import pipec
from pipec.dsl.diagnostics import render_all
from pipec.dsl.loader import load
from pipec.dsl.types import Type, show
from pipec.inspection import inspect_program
from pipec.lm.base import LMError
from pipec.modules import kinds
from pipec.modules.base import ModuleFailure
from pipec.prompt import retry_message
from pipec.registry import catalogue
from pipec.tools import describe_tools, tool_diagnostics

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model", "sandbox_or_weaker")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
KINDS = sorted(kinds())
# Taken from the prompt module: a reworded retry message must not quietly turn the worst case into garbage only.
RETRY_PREFIX = retry_message("\0", []).split("\0")[0]
GARBAGE = ["{}", "not json"]
PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
LIST_LEN = 6            # more items than any example's max_steps / max_points, so the bound is reached


@dataclass(frozen=True)
class Style:
    flag: bool
    long_text: bool

    def __str__(self) -> str:
        return f"booleans {str(self.flag).lower()}, {'long' if self.long_text else 'short'} text"


STYLES = [Style(flag, long_text) for flag in (True, False) for long_text in (False, True)]


@pytest.fixture
def sandbox_or_weaker(monkeypatch):
    """ProgramOfThought's example runs its programs; without bubblewrap the weaker sandbox is the
    only one there is (the isolation itself is tests/test_sandbox_isolation.py's business)."""
    import pipec.sandbox
    status = pipec.sandbox.sandbox_status()
    if not (status.ok and status.mode == "bwrap"):
        monkeypatch.setenv("PIPEC_SANDBOX", "process")


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def forwards(monkeypatch):
    """Every `forward` of every kind, as (module, result or the exception it raised): the module's own
    result (a pipeline may not return the extras) and what it raised (the executor hides it)."""
    seen: list[tuple[Any, Any]] = []

    def spy(real):
        async def forward(self, values, ctx):
            try:
                out = await real(self, values, ctx)
            except BaseException as err:
                seen.append((self, err))
                raise
            seen.append((self, out))
            return out
        return forward
    for cls in kinds().values():
        if "forward" in vars(cls):
            monkeypatch.setattr(cls, "forward", spy(vars(cls)["forward"]))
    return seen


# ---------------------------------------------------------------------------- examples
def kind_file(kind: str) -> str:
    return kinds()[kind].__module__.rsplit(".", 1)[-1]


@cache
def declared_kinds(path: Path) -> tuple[frozenset[str], int]:
    """(kinds of the modules the file declares, how many it declares). Read by the checker, not
    loaded: an example with an error still maps to its kind, and the first test shows the error."""
    modules = load(path, catalogue()).program.modules.values()
    return frozenset(m.kind for m in modules), len(modules)


@cache
def example_for(kind: str) -> Path | None:
    own = EXAMPLES / f"{kind_file(kind)}.pipe"
    if own.is_file() and kind in declared_kinds(own)[0]:
        return own
    users = [p for p in sorted(EXAMPLES.glob("*.pipe")) if kind in declared_kinds(p)[0]]
    return min(users, key=lambda p: (declared_kinds(p)[1], p.name), default=None)


def require_example(kind: str) -> Path:
    path = example_for(kind)
    if path is None:
        cls = kinds()[kind]
        extras = ", ".join(f"r.{n}" for n, _, _ in cls.extra_outputs) or "its outputs"
        stem = kind_file(kind)
        pytest.fail(
            f"no example in examples/ uses module kind {kind} (compiler/modules/{stem}.py). Add "
            f"examples/{stem}.pipe: a small, realistic pipeline that declares `module m = {kind}(Sig, ...)`, "
            f"calls it and returns {extras}, runs on `lm local = \"local/smollm2\"` like the other examples, "
            f"and passes `pipec check --werror examples/{stem}.pipe`; this suite then checks the kind on it.")
    return path


# ---------------------------------------------------------------------------- scripted replies
def value_for(schema: dict, n: int, style: Style) -> Any:
    if "anyOf" in schema:
        return value_for(schema["anyOf"][0], n, style)
    if "enum" in schema:
        return schema["enum"][0]
    t = schema.get("type")
    if t == "boolean":
        return style.flag
    if t == "integer":
        return n
    if t == "number":
        return n + 0.5
    if t == "array":
        return [value_for(schema.get("items") or {}, n * 10 + i, style) for i in range(LIST_LEN)]
    if t == "object":
        return {k: value_for(s, n, style) for k, s in schema.get("properties", {}).items()}
    # Long text is over 40 characters and two lines: what a "does it fit" check tool rejects.
    return f"reply {n}: a longer answer that goes on\nover a second line" if style.long_text else f"r{n}"


def valid_reply(request, n: int, style: Style) -> Any:
    assert request.schema is not None, "a structured ScriptedLM request without a reply schema"
    return value_for(request.schema, n, style)


def worst_case(style: Style):
    """Every first attempt fails to parse, every retry succeeds (tests/test_kind_debate.py's retry_rule)."""
    counter = itertools.count(1)

    def rule(request):
        if request.messages[-1]["content"].startswith(RETRY_PREFIX):
            return valid_reply(request, next(counter), style)
        return "{}"
    return rule


def first_time(style: Style):
    counter = itertools.count(1)
    return lambda request: valid_reply(request, next(counter), style)


def sample_value(t: Type) -> Any:
    k = t.kind
    if k == "list":
        return [sample_value(t.arg or Type("str"))]
    if k == "int":
        return 3
    if k == "float":
        return 2.5
    if k == "bool":
        return True
    if k == "enum":
        return t.values[0]
    if k == "record":
        return {n: sample_value(ft) for n, ft, _ in t.fields}
    return "A shop sells pens at 3 dollars each. How much do 4 pens cost?"


@dataclass
class Run:
    prog: Any
    lm: Any
    pred: Any
    report: dict
    what: str


def run_example(kind: str, rule, what: str) -> Run:
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(require_example(kind), lm=lm, cache=False)
    inputs = {n: sample_value(t) for n, t in prog.checked.pipelines[prog.name].params.items()}
    pred = prog(**inputs)
    return Run(prog, lm, pred, inspect_program(prog), what)


def lm_records(pred) -> list:
    return [r for r in pred.trace if not r.cache_hit and r.model[:5] != "tool:" and r.model != "map"]


def sites_of(run: Run, kind: str) -> list[dict]:
    """The report's call sites of modules of `kind` that the graph calls (not those only reached
    through another module's options: their calls count at the caller's site)."""
    return [s for s in run.report["calls"] if s.get("kind") == kind and not s["node"].startswith("(")]


def assert_within_bound(run: Run) -> None:
    where = f"{run.prog.path.name} under {run.what}"
    requests, bound = len(run.lm.requests), run.report["max_lm_calls"]
    assert requests == run.pred.lm_calls, f"{where}: {requests} LM requests, {run.pred.lm_calls} in the trace"
    assert requests <= bound, f"{where}: {requests} LM requests for one input, but `pipec inspect` says at most {bound}"
    for site in run.report["calls"]:
        if "module" not in site or site["node"].startswith("("):
            continue
        made = sum(r.node == site["node"] for r in lm_records(run.pred))
        assert made <= site["max_lm_calls"], (
            f"{where}: {site['module']} ({site['kind']}) made {made} LM calls, but its max_calls() is "
            f"{site['max_lm_calls']}")


def assert_clean(run: Run, forwards) -> None:
    where = f"{run.prog.path.name} under {run.what}"
    for module, outcome in forwards:
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, (ModuleFailure, LMError)), (
                f"{where}: {type(module).kind} module {module.name} raised {type(outcome).__name__}: {outcome} "
                "(a kind fails a call by raising ModuleFailure)")
    if not run.pred.ok:
        assert isinstance(run.pred.error, str) and run.pred.error.strip(), f"{where}: a failure without an error"


# ---------------------------------------------------------------------------- 1. the example
def test_an_example_uses_the_kind_and_checks_clean(kind):
    path = require_example(kind)
    loaded = load(path, catalogue())
    diags = list(loaded.diagnostics) + tool_diagnostics(loaded.program, describe_tools(loaded.program, path))
    assert not diags, f"{path.name} does not check clean:\n{render_all(diags, loaded.sources, False)}"
    used = {type(m).kind for m in pipec.load(path, lm=pipec.ScriptedLM(), cache=False).modules.values()}
    assert kind in used, f"{path.name} declares a {kind} module but its pipeline never calls it"


# ---------------------------------------------------------------------------- 2. the call bound
@pytest.mark.parametrize("reply", GARBAGE)
def test_replies_that_never_parse_stay_within_the_bound_and_fail_cleanly(kind, reply, forwards):
    run = run_example(kind, lambda request: reply, f"every reply {reply!r}")
    assert_within_bound(run)
    assert_clean(run, forwards)
    assert any(type(m).kind == kind for m, _ in forwards), (
        f"{run.prog.path.name} never called its {kind} module under {run.what}: an earlier step failed first, so "
        f"nothing here tested {kind}; its example should call it on the pipeline's inputs")


def test_retries_that_succeed_stay_within_the_bound_and_reach_it(kind, forwards):
    reached: dict[str, int] = {}
    bound: dict[str, int] = {}
    for style in STYLES:
        forwards.clear()
        run = run_example(kind, worst_case(style), f"first attempts unparseable, retries valid ({style})")
        assert_within_bound(run)
        assert_clean(run, forwards)
        for site in sites_of(run, kind):
            made = sum(r.node == site["node"] for r in lm_records(run.pred))
            reached[site["node"]] = max(reached.get(site["node"], 0), made)
            bound[site["node"]] = site["max_lm_calls"]
    assert bound, f"no call site of a {kind} module in {require_example(kind).name}'s pipeline"
    assert reached == bound, (
        f"{kind}: the worst cases scripted here reached {reached} LM calls per site, but `pipec inspect` "
        f"says {bound}. If no run can reach the bound, max_calls() overstates the cost; if the worst case "
        "needs replies these styles do not make, add a style to STYLES.")


# ---------------------------------------------------------------------------- 3. predictor names
def test_predictors_are_named_after_their_module(kind):
    run = run_example(kind, worst_case(STYLES[0]), "first attempts unparseable, retries valid")
    prog = run.prog
    mine = {name: m for name, m in prog.modules.items() if type(m).kind == kind}
    for name, module in mine.items():
        preds = module.predictors()
        assert preds, f"{kind} module {name} lists no predictor"
        for p in preds:
            if p.name == name:
                assert len(preds) == 1, (f"{kind} module {name}: a predictor with the bare module name beside "
                                         f"others ({[q.name for q in preds]}); name each `{name}.<part>`")
            else:
                head, dot, part = p.name.partition(".")
                assert head == name and dot and PART.fullmatch(part), (
                    f"{kind} module {name} has a predictor named {p.name!r}; expected {name!r} or "
                    f"'{name}.<part>' (use ModuleKind.predictor(part, ...))")
    listed = [p.name for m in prog.modules.values() for p in m.predictors()]
    assert len(listed) == len(set(listed)), f"predictor names are not unique: {sorted(listed)}"
    calls = [r for r in lm_records(run.pred) if r.module in mine]
    assert calls, f"{prog.path.name}: no LM call from a {kind} module"
    for r in calls:
        assert r.predictor in {p.name for p in mine[r.module].predictors()}, (
            f"{kind} module {r.module} made an LM call as {r.predictor!r}, which its predictors() does not list")


# ---------------------------------------------------------------------------- 4. extra outputs
def fits(value: Any, t: Type) -> bool:
    if value is None:
        return t.optional
    k = t.kind
    if k == "str":
        return isinstance(value, str)
    if k == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if k == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if k == "bool":
        return isinstance(value, bool)
    if k == "enum":
        return value in t.values
    if k == "list":
        return isinstance(value, list) and (t.arg is None or all(fits(x, t.arg) for x in value))
    if k == "record":
        return isinstance(value, dict) and all(fits(value.get(n), ft) for n, ft, _ in t.fields)
    return True


def test_declared_extra_outputs_are_in_every_successful_result(kind, forwards):
    extras = kinds()[kind].extra_outputs
    successes = []
    for style in STYLES:
        for rule, what in ((first_time(style), "valid replies"), (worst_case(style), "retried replies")):
            forwards.clear()
            run_example(kind, rule, what)
            successes += [(m, out, f"{what}, {style}") for m, out in forwards
                          if type(m).kind == kind and not isinstance(out, BaseException)]
    assert successes, f"no scripted run made a {kind} module succeed, so its extra outputs could not be checked"
    for module, out, what in successes:
        outputs = [n for n, _, _ in module.spec.outputs]
        missing = sorted(set(outputs) - set(out))
        assert not missing, f"{kind} module {module.name} ({what}) lacks the signature's outputs {missing}"
        for name, t, _ in extras:
            assert name in out, (f"{kind} module {module.name} ({what}) returned {sorted(out)} without the extra "
                                 f"output {name!r} its kind declares")
            assert fits(out[name], t), (f"{kind} module {module.name} ({what}): extra output {name}={out[name]!r} "
                                        f"is not {show(t)}")
