"""Scoring a program on labeled examples: the score, per-field misses, and every row's result with
the metric's feedback on it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .aio import bounded, run_coroutine
from .run import run_one
from .budget import BudgetExhausted
from .context import RowContext
from .dataset import Example
from .dsl.types import BOOL, STR, Type
from .metrics import Assessment, Metric, MetricError
from .lm.base import LMError
from .secrets import redact_data
from .modules.base import ModuleFailure, Predictor
from .prediction import Prediction
from .progress import Progress


@dataclass(slots=True)
class RowResult:
    """One scored row: its inputs, labels and outputs, the score, the metric's `feedback` (why it
    missed, the judge's rationale, or what a python(...) metric said; None when it said nothing),
    the error of a failed row, the fields it missed and the prediction with its trace."""

    where: str
    inputs: dict[str, Any]
    expected: dict[str, Any]
    outputs: dict[str, Any] | None
    score: float
    error: str | None = None
    raw: str = ""
    misses: list[str] = field(default_factory=list)
    prediction: Prediction | None = None
    feedback: str | None = None
    calls: int = 0                  # the program's LM requests for this row, cache hits included (not the judge's)
    tokens: int = 0                 # and their tokens: what the row costs, the same with a warm cache

    @property
    def passed(self) -> bool:
        return self.score >= 1.0

    def to_dict(self) -> dict[str, Any]:
        """The row as it leaves pipec (`eval --output`, reports): secrets in it are masked."""
        return redact_data({"where": self.where, "inputs": self.inputs, "expected": self.expected,
                            "outputs": self.outputs, "score": self.score, "passed": self.passed,
                            "feedback": self.feedback, "error": self.error, "raw": self.raw})


@dataclass(slots=True)
class EvalResult:
    """The mean score over rows, and the rows (in input order)."""

    score: float
    rows: list[RowResult]
    metric: str
    incomplete: bool = False          # the LM call budget ran out before every row was scored

    @property
    def calls_per_row(self) -> float:
        """The program's mean LM requests per scored row (cache hits count: a candidate's cost does not
        depend on what the cache holds; a judge's calls do not: they are the metric's)."""
        return sum(r.calls for r in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def tokens_per_row(self) -> float:
        """The program's mean tokens per scored row, counted as `calls_per_row` counts requests."""
        return sum(r.tokens for r in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def failures(self) -> int:
        """Rows whose prediction failed outright (no outputs), not merely wrong ones."""
        return sum(r.outputs is None for r in self.rows)

    def field_misses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            for f in r.misses:
                out[f] = out.get(f, 0) + 1
        return out


class Judge:
    """The LM side of a `judge(...)` metric: a yes/no verdict on one field against a rubric, with the
    judge's rationale as the row's feedback."""

    def __init__(self, metric: Metric, lm_name: str):
        rubric = metric.judge["rubric"] or "The prediction gives the same answer as the expected value."
        # The rationale comes before the verdict (reasons first, as in chain of thought) and is
        # optional: a judge that answers only the verdict is still read.
        self.predictor = Predictor(
            "metric.judge", f"Judge whether a prediction is acceptable. Rubric: {rubric}",
            [("expected", STR, "the reference answer"), ("prediction", STR, "the answer to judge")],
            [("rationale", Type("str", optional=True),
              "one or two sentences: why the prediction does or does not meet the rubric"),
             ("acceptable", BOOL, "true if the prediction meets the rubric")], lm_name, {"temperature": 0.0})
        self.fields = metric.fields

    async def score(self, example: dict[str, Any], pred: Prediction, row: RowContext) -> float:
        """The mean verdict over the metric's fields (a failed prediction scores 0)."""
        return (await self.assess(example, pred, row)).score

    async def assess(self, example: dict[str, Any], pred: Prediction, row: RowContext) -> Assessment:
        """Verdicts and rationales on every field: the score, the rationale as feedback (each one
        named by its field when there are several) and the fields judged unacceptable."""
        if not pred.ok:
            return Assessment(0.0, None, list(self.fields))
        total, misses, notes = 0.0, [], []
        for f in self.fields:
            ctx = row.node(f"judge:{f}", "metric")
            try:
                verdict = await self.predictor({"expected": _text(example.get(f)), "prediction": _text(pred[f])}, ctx)
            except BudgetExhausted:
                raise
            except (ModuleFailure, LMError) as err:
                misses.append(f)          # an unreadable verdict or a failed judge call counts as a miss
                notes.append((f, f"no verdict: the judge failed ({_clip(str(err), 200)})"))
                continue
            if verdict["acceptable"]:
                total += 1.0
            else:
                misses.append(f)
            if verdict.get("rationale"):
                notes.append((f, " ".join(str(verdict["rationale"]).split())))
        if len(self.fields) == 1:
            feedback = notes[0][1] if notes else None
        else:
            feedback = "; ".join(f"{f}: {note}" for f, note in notes) or None
        return Assessment(total / len(self.fields), feedback, misses)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _text(v: Any) -> str:
    import json
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


async def evaluate_async(program, examples: list[Example], metric: Metric, concurrency: int = 4,
                         progress: Progress | None = None, runtime=None) -> EvalResult:
    """Run the program on every example and score it; failed rows score 0 and keep their error."""
    runtime = runtime or program.runtime()
    judge = Judge(metric, program.default_lm_name(metric.judge.get("lm"))) if metric.needs_lm else None
    input_names = [n for n, _, _ in program.inputs]
    results: list[RowResult | None] = [None] * len(examples)
    incomplete = [False]

    async def work(i):
        ex = examples[i]
        values = {n: ex.values.get(n) for n in input_names}
        expected = {f: ex.values.get(f) for f in metric.fields}
        try:
            prepared = program.prepare(ex.values)
        except ValueError as err:
            return i, RowResult(ex.where, values, expected, None, 0.0, str(err), misses=list(metric.fields))
        pred = await run_one(program, prepared, runtime)
        if _budget_failure(pred):
            incomplete[0] = True
        calls, tokens = _cost(pred)              # before a judge adds its own calls to the trace
        if judge is not None:
            row = RowContext(runtime, program.inline)
            try:
                score, feedback, misses = await judge.assess(ex.values, pred, row)
            except BudgetExhausted:
                incomplete[0] = True
                score, feedback, misses = 0.0, None, list(metric.fields)
            pred.trace.extend(row.trace)
        else:
            try:
                score, feedback, misses = metric.assess(ex.values, pred)
            except MetricError:
                raise                      # the metric itself is broken (wrong return type, not importable)
            except Exception as err:       # a user metric that raises on this row scores 0 for that row
                return i, RowResult(ex.where, values, expected, pred.outputs() if pred.ok else None, 0.0,
                                    f"metric {metric.text} raised {type(err).__name__}: {err}", prediction=pred,
                                    calls=calls, tokens=tokens)
        return i, RowResult(ex.where, values, expected, pred.outputs() if pred.ok else None, score, pred.error,
                            pred.raw, misses, pred, feedback, calls, tokens)

    def done(result):
        i, row = result
        results[i] = row
        if progress is not None:
            progress.advance(row.error is None)

    await bounded(range(len(examples)), concurrency, work, done)
    rows = [r for r in results if r is not None]
    score = sum(r.score for r in rows) / len(rows) if rows else 0.0
    return EvalResult(score, rows, metric.text, incomplete[0])


def _cost(pred: Prediction) -> tuple[int, int]:
    """The LM requests (cache hits included) and tokens of one prediction's trace."""
    lm = [r for r in pred.trace if r.model[:5] != "tool:" and r.model != "map"]
    return len(lm), sum(r.prompt_tokens + r.completion_tokens for r in lm)


def _budget_failure(pred: Prediction) -> bool:
    return pred.error is not None and BudgetExhausted.MARK in pred.error


def evaluate(program, examples: list[Example], metric: Metric, concurrency: int = 4, progress: Progress | None = None,
             runtime=None) -> EvalResult:
    """Synchronous `evaluate_async`."""
    return run_coroutine(evaluate_async(program, examples, metric, concurrency, progress, runtime))
