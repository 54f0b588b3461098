"""The session interface: everything an optimizer may use of a compile, in one place.

An optimizer (one file in `optimizers/`) imports nothing of pipec but this module. `optimize(session)`
gets a `Session` (the compile implements it: `pipec.optimize.CompileSession`) and returns the
parameters it chose — `PredictorState`s by predictor name, or a list of such dicts for an ensemble —
with their valset score when it knows it: `(params, score or None)`. It never touches the program.

What a session offers:

- facts, read-only: the rows (`trainset`, `valset`), `seed`, the `metric` (its text and the fields
  it scores), the pipeline's `input_names`, the predictors as `PredictorView`s, the uncompiled
  parameters (`baseline()`), an `identity` (what the compile is about: sources, pipeline, LMs), the
  `mode` (`Mode`: a single compile, or a worker or the finalizer of a shared study), the shared
  study's `storage` and `study` name, and seeded random streams (`rng(salt)`);
- running, always through the compile's call budget, LM cache and counters: `evaluate(params, rows)`
  scores a candidate on its own copy of the program, `run_teacher(params, rows)` runs the teacher with
  traces (demo material), `ask(request)` sends one request to the proposer LM. Both return a `Scored`
  whose `rows[i]` is `rows[i]` scored (`ScoredRow`): its score, the metric's feedback on it and the
  prediction with every module call's trace, which is what a reflective optimizer reads per row;
- strategies: `strategies()` lists the alternatives of each one_of module (label, kind, static call
  bounds, predictors); `under(choice)` is this session as the program runs with those alternatives
  (its `predictors()` and `baseline()` are theirs, and what is built from that baseline carries the
  choice as `Choice` entries); a parameter set chooses an alternative with a `Choice` under the
  module's name, and without one runs the first, so an optimizer that ignores strategies keeps the
  uncompiled program's alternatives;
- the budget: `out_of_budget`, `calls_used`, `calls_left`, `holding_back_for_validation()`;
- bookkeeping: `record(score, full, note, calls_per_row, tokens_per_row)` a trial (the report and the
  progress line show it; the measured cost of the candidate, `Scored.calls_per_row` and
  `tokens_per_row`, draws it on the report's score-against-cost front),
  `phase(name)` and `expect_trials(n)` for the progress line, `report_worker(trials)` for a worker's
  summary, `record_lineage(nodes)` for a search that evolves candidates from one another: where each
  came from and how it scored (`LineageNode`s; the report keeps them and draws the tree).

The values an optimizer builds or reads come from here too: `PredictorState`, `KnnState` and `Choice`
(the artifact's parameter types; `choice_of(params)` reads a set's choice), `Alternative`, `LineageNode` (the report's record of one evolved candidate),
`OptionSpec` (how an optimizer declares its options), `LMRequest`, `fingerprint`, how pipec
shows a value or a type to an LM (`render_value`, `describe_type`), and its lexical TF-IDF, the
features of the nearest-demo index, for comparing or clustering rows (`tfidf_vectors`, `cosine`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ContextManager, Protocol, Sequence

from .dsl.catalogue import OptionSpec
from .fingerprints import fingerprint
from .knn import cosine, tfidf_vectors
from .lm.base import LMRequest
from .prompt import describe_type, render_value


class Mode(str, enum.Enum):
    """How this process takes part in a compile."""

    SINGLE = "single"          # the whole compile, here
    WORKER = "worker"          # run trials of a shared study, write nothing
    FINALIZE = "finalize"      # once the study's trials are done: score the best, write the artifact


@dataclass(frozen=True, slots=True)
class PredictorView:
    """A predictor as an optimizer sees it: its name, its uncompiled instruction and its fields
    (`(name, type, description)` each), and what the .pipe file pins of it (`pinned`: "instruction",
    "demos"). Read-only: parameters are chosen, never installed. The compile puts pinned parts back
    into whatever an optimizer returns (before scoring, and in the artifact), so an optimizer loses
    nothing by ignoring pins; it saves budget by not searching them."""

    name: str
    instruction: str
    inputs: tuple[tuple[str, Any, str], ...]
    outputs: tuple[tuple[str, Any, str], ...]
    pinned: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """The compile's metric: its text (`exact_match(intent)`) and the fields it scores."""

    text: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Identity:
    """What a compile is about, for names and digests that must change with it (a study's name):
    the pipeline, its .pipe sources by relative path, its LMs (ids and options by declared name),
    and the teacher and proposer settings."""

    pipeline: str
    sources: dict[str, str]
    lms: dict[str, Any]
    teacher: str | None
    proposer: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The proposer LM's reply to `Session.ask`: its text (None when the call failed or was not made),
    the LM calls it cost (0 for a cache hit), and whether the budget refused it."""

    text: str | None
    calls: int = 0
    budget_spent: bool = False


@dataclass(frozen=True, slots=True)
class Alternative:
    """One alternative of a one_of module as `Session.strategies()` lists it: its `label` (what a
    `Choice` names: the kind, or `Majority_2` for a kind listed again), its `kind`, the static bound of
    LM calls of one call of the module running it (`max_calls`) and of one input of the whole pipeline
    (`row_calls`: the other one_of modules on the session's choice, the first alternatives unless it is
    a view from `under`), and the names of its predictors."""

    label: str
    kind: str
    max_calls: int
    row_calls: int
    predictors: tuple[str, ...]


def choice_of(params) -> dict[str, str]:
    """The alternatives a parameter set chooses: its `Choice` entries, as labels by module name (a
    one_of module absent from it runs its first alternative).

    >>> from pipec.session import Choice, PredictorState
    >>> choice_of({"solve": Choice(alternative="ChainOfThought"), "solve.ChainOfThought": PredictorState(instruction="x")})
    {'solve': 'ChainOfThought'}
    """
    from .artifact import Choice
    return {name: v.alternative for name, v in params.items() if isinstance(v, Choice)}


class Row(Protocol):
    """A labeled row: its values by field name."""

    values: dict[str, Any]


class ScoredRow(Protocol):
    """One row of a `Scored`, in the order of the rows given.

    - `score`: in [0, 1];
    - `feedback`: what the metric said about the row, or None. Built-in metrics say why a field
      missed ("expected book_restaurant, got add_to_playlist", "expected 12, got 9 (off by 3)",
      "token F1 0.50: missing eiffel, paris"; several fields: "1 of 2 fields wrong. date: ..."),
      `judge` gives its rationale, a `python(...)` metric what it returned as feedback. A passing row
      of a built-in metric has none, nor has a row whose prediction failed: its `error` says why;
    - `error`: why the row failed (the program, or a metric that raised), else None;
    - `misses`: the metric's fields it got wrong;
    - `calls`, `tokens`: the program's LM requests for the row (cache hits included, a judge's not) and
      their tokens: what the candidate costs per input;
    - `prediction`: the outputs (`.outputs()`), `.ok`, and `.trace`, every predictor call with its
      `predictor` name, `inputs`, `parsed` outputs and reply; None when the row could not even run.

    The text is as the LM and the metric gave it, unmasked like the rows' own inputs (which an
    optimizer may show to the proposer LM too); pipec masks keys wherever it writes rows out: eval
    files, reports, the terminal."""

    score: float
    feedback: str | None
    error: str | None
    misses: list[str]
    prediction: Any
    calls: int
    tokens: int


class Scored(Protocol):
    """What `evaluate` and `run_teacher` return: the mean score, whether the budget ran out before
    every row was scored, the rows (`ScoredRow`s, in the order of the rows given), and the mean LM
    requests and tokens per row (`calls_per_row`, `tokens_per_row`)."""

    score: float
    incomplete: bool
    rows: Sequence[ScoredRow]
    calls_per_row: float
    tokens_per_row: float


class Session(Protocol):
    """The one interface between the compile and an optimizer (see the module's docstring)."""

    trainset: Sequence[Row]
    valset: Sequence[Row]
    seed: int
    metric: MetricInfo
    input_names: tuple[str, ...]
    identity: Identity
    mode: Mode
    storage: str | None
    study: str | None
    concurrency: int
    baseline_score: float | None      # the uncompiled program's valset score, once measured

    def predictors(self) -> dict[str, PredictorView]: ...
    def baseline(self) -> dict[str, Any]: ...
    def rng(self, salt: str = "") -> Any: ...

    @property
    def calls_per_row(self) -> int: ...        # LM calls one input typically costs
    @property
    def module_calls(self) -> int: ...         # module call sites per input: a floor on its LM calls

    def strategies(self) -> dict[str, tuple[Alternative, ...]]: ...   # one_of modules; the first is the default
    def under(self, choice: dict[str, str]) -> "Session": ...         # this session with those alternatives

    def evaluate(self, params: Any, rows: Sequence[Row] | None = None) -> Scored: ...
    def run_teacher(self, params: dict[str, Any], rows: Sequence[Row]) -> Scored: ...
    def ask(self, request: LMRequest) -> Answer: ...

    @property
    def out_of_budget(self) -> bool: ...
    @property
    def calls_used(self) -> int: ...
    @property
    def calls_left(self) -> int | None: ...    # None: no budget
    def holding_back_for_validation(self) -> ContextManager: ...

    def record(self, score: float, full: bool = True, note: str = "", calls_per_row: float | None = None,
               tokens_per_row: float | None = None) -> Any: ...
    def phase(self, name: str) -> None: ...
    def expect_trials(self, total: int) -> None: ...
    def report_worker(self, trials: int) -> None: ...
    def record_lineage(self, nodes: Sequence[Any]) -> None: ...   # LineageNodes; replaces any recorded before


_ARTIFACT_TYPES = ("PredictorState", "KnnState", "LineageNode", "Choice")


def __getattr__(name: str):
    # The artifact's types load pydantic: only when an optimizer runs, never while a file is checked.
    if name in _ARTIFACT_TYPES:
        from . import artifact
        return getattr(artifact, name)
    raise AttributeError(f"module 'pipec.session' has no attribute '{name}'")


__all__ = ["Session", "Mode", "PredictorView", "MetricInfo", "Identity", "Answer", "Row", "Scored", "ScoredRow",
           "Alternative", "choice_of",
           "OptionSpec", "LMRequest", "fingerprint", "describe_type", "render_value", "tfidf_vectors", "cosine",
           *_ARTIFACT_TYPES]
