"""BootstrapFewShot: run a teacher on the training rows; traces of runs that pass become demos.

Every predictor call inside a passing run (inner modules of a chain included) contributes its
inputs and parsed outputs, rationales too, so chain-of-thought modules get worked demos without
anyone writing them (rationale bootstrapping, as in STaR and DSPy).
"""
from __future__ import annotations

from pipec.session import OptionSpec

from .base import Optimizer, labeled_demo, with_demos


def bootstrap_demos(session, params, rows, max_demos: int, threshold: float) -> tuple[dict[str, list[dict]], int]:
    """Demos per predictor from teacher runs over `rows` that score at least `threshold`.

    Rows are taken in order until every predictor has `max_demos`; returns the demos and the rows used.
    Predictors whose demos the .pipe file pins get none (and no teacher run is made for them alone).
    """
    names = [n for n, p in session.predictors().items() if "demos" not in p.pinned]
    demos: dict[str, list[dict]] = {n: [] for n in names}
    used = 0
    step = max(1, session.concurrency * 2)
    for start in range(0, len(rows), step):
        if all(len(demos[n]) >= max_demos for n in names) or session.out_of_budget:
            break
        batch = rows[start:start + step]
        result = session.run_teacher(params, batch)
        used += len(batch)
        for row in result.rows:
            if row.prediction is None or not row.prediction.ok or row.score < threshold:
                continue
            for rec in row.prediction.trace:
                if rec.parsed is None or rec.inputs is None or rec.predictor not in demos:
                    continue
                if len(demos[rec.predictor]) < max_demos:
                    demo = {**rec.inputs, **rec.parsed}
                    if demo not in demos[rec.predictor]:
                        demos[rec.predictor].append(demo)
    return demos, used


class BootstrapFewShot(Optimizer):
    """compile block: `optimizer = bootstrap_fewshot(max_demos: 4, max_labeled: 4, rounds: 1)`"""

    name = "bootstrap_fewshot"
    doc = "demos from traces of teacher runs that pass the metric"
    options = {"max_demos": OptionSpec("int", "demos per predictor, at most", minimum=0),
               "max_labeled": OptionSpec("int", "labeled demos to fill up with", minimum=0),
               "rounds": OptionSpec("int", "bootstrapping rounds", minimum=1),
               "threshold": OptionSpec("number", "metric score a run needs for its trace to count", minimum=0),
               "seed": OptionSpec("int", "shuffle seed (default: the compile seed)")}
    defaults = {"max_demos": 4, "max_labeled": 4, "rounds": 1, "threshold": 1.0}

    def optimize(self, session):
        with session.holding_back_for_validation():        # bootstrapping may not eat the final check
            params = self.bootstrap(session, session.rng(f"bootstrap:{self.opts.get('seed', '')}"))
        result = session.evaluate(params)
        session.record(result.score, full=not result.incomplete, note="bootstrapped demos")
        base = session.baseline_score
        if not result.incomplete and base is not None and result.score < base:
            # Demos can hurt a small model; zero demos stays a candidate.
            session.record(base, note="kept the uncompiled program: the demos scored lower")
            return session.baseline(), base
        return params, (result.score if not result.incomplete else None)

    def bootstrap(self, session, rng, max_demos: int | None = None, max_labeled: int | None = None):
        """One bootstrapped parameter set (used by random search with different seeds and sizes)."""
        max_demos = self.opts["max_demos"] if max_demos is None else max_demos
        max_labeled = self.opts["max_labeled"] if max_labeled is None else max_labeled
        rows = list(session.trainset)
        rng.shuffle(rows)
        params = session.baseline()
        demos: dict[str, list[dict]] = {}
        for _ in range(self.opts["rounds"]):
            demos, _used = bootstrap_demos(session, params, rows, max_demos, self.opts["threshold"])
            params = with_demos(session.baseline(), demos)
        # Fill remaining slots with labeled rows where a predictor's fields are all labeled.
        for name, pred in session.predictors().items():
            if "demos" in pred.pinned:
                continue                # the file's demos stay (`with_demos` keeps them)
            have = demos.get(name, [])
            room = max(0, max_labeled - len(have))        # as in DSPy: labeled demos fill up to max_labeled
            extra = []
            for ex in rows:
                if len(extra) >= room:
                    break
                d = labeled_demo(pred, ex.values)
                if d is not None and d not in have:
                    extra.append(d)
            demos[name] = have + extra
        return with_demos(session.baseline(), demos)
