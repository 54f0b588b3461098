"""The runs a compile made, kept for its OpenTelemetry spans (`pipec.otel`): the rows the baseline,
each trial and the final eval scored, the rows the teacher ran and the proposer's calls. Kept only
when asked (`CompileConfig.keep_runs`, which `pipec compile --otel` sets); nothing is run again to
draw them.

A trial's runs are those made since the trial before it was recorded: the rows its candidate was
scored on, and the bootstrapping and proposals that built it. Each is kept compact: the timing and
every call's model, tokens, cost, latency and cache hit, without inputs, outputs, prompts or replies
(unless `keep_runs="content"`), and at most `KEEP_ROWS` rows in a whole compile; past that, rows are
counted (`Runs.not_kept`), not kept, so a long compile's memory stays bounded.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .context import CallRecord
from .evaluate import EvalResult, RowResult
from .prediction import Prediction

KEEP_ROWS = 10_000      # rows (each with its calls) one compile keeps; a proposal counts as a row


@dataclass
class Runs:
    """What one part of a compile ran: the rows it scored (`RowResult`s), the rows the teacher ran,
    the proposer's calls (`CallRecord`s), and how many of these were run but not kept (over `KEEP_ROWS`)."""

    scored: list[RowResult] = field(default_factory=list)
    teacher: list[RowResult] = field(default_factory=list)
    proposals: list[CallRecord] = field(default_factory=list)
    not_kept: int = 0

    def __bool__(self) -> bool:
        return bool(self.scored or self.teacher or self.proposals or self.not_kept)


class RunLog:
    """The runs of one compile, in parts: `baseline`, one `Runs` per recorded trial (`trials`, in the
    order of the report's trials) and `final` (the final eval, and whatever ran after the last trial).

    >>> log = RunLog()
    >>> log.proposal([])
    >>> log.trial(); log.final = log.take()
    >>> len(log.trials), log.baseline, bool(log.final)
    (1, None, False)
    """

    def __init__(self, content: bool = False, limit: int | None = None):
        self.content = content
        self.limit = KEEP_ROWS if limit is None else limit
        self.kept = 0
        self.baseline: Runs | None = None
        self.trials: list[Runs] = []
        self.final: Runs | None = None
        self._pending = Runs()

    # -- what ran
    def scored(self, result: EvalResult) -> None:
        """Rows a candidate was scored on (`CompileSession.evaluate`)."""
        self._rows(result, self._pending.scored)

    def teacher(self, result: EvalResult) -> None:
        """Rows the teacher ran (`CompileSession.run_teacher`)."""
        self._rows(result, self._pending.teacher)

    def proposal(self, trace: list[CallRecord]) -> None:
        """The calls of one request to the proposer (`CompileSession.ask`)."""
        for rec in trace:
            if self._room():
                self._pending.proposals.append(self._call(rec))

    # -- where it goes
    def take(self) -> Runs:
        """The runs since the last `take` (or `trial`); the log starts a new part."""
        runs, self._pending = self._pending, Runs()
        return runs

    def trial(self) -> None:
        """A trial was recorded: the runs since the one before are its own."""
        self.trials.append(self.take())

    # -- keeping it small
    def _room(self) -> bool:
        if self.kept >= self.limit:
            self._pending.not_kept += 1
            return False
        self.kept += 1
        return True

    def _rows(self, result: EvalResult, into: list[RowResult]) -> None:
        for row in result.rows:
            if self._room():
                into.append(self._row(row))

    def _row(self, row: RowResult) -> RowResult:
        """A copy of `row` holding only what its spans show (the optimizer keeps using the original)."""
        content = self.content
        pred = row.prediction
        kept = None
        if pred is not None:
            kept = Prediction(pred.outputs() if content else None, [self._call(r) for r in pred.trace], pred.error,
                              "", pred.node)
            kept.timing = pred.timing
        return RowResult(row.where, row.inputs if content else {}, row.expected if content else {},
                         row.outputs if content else None, row.score, row.error, prediction=kept,
                         feedback=row.feedback if content else None, calls=row.calls, tokens=row.tokens)

    def _call(self, rec: CallRecord) -> CallRecord:
        if self.content:
            return dataclasses.replace(rec, parsed=None, inputs=None, cache_key="")
        return dataclasses.replace(rec, messages=[], raw="", parsed=None, inputs=None, cache_key="")
