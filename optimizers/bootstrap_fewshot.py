"""BootstrapFewShot: run a teacher on the training rows; traces of runs that pass become demos.

Every predictor call inside a passing run (inner modules of a chain included) contributes its
inputs and parsed outputs, rationales too, so chain-of-thought modules get worked demos without
anyone writing them (rationale bootstrapping, as in STaR and DSPy).

With `rationalize: true`, a row the teacher gets wrong is tried once more with the correct answer
given as a hint (STaR's rationalization: Zelikman et al., "STaR: Bootstrapping Reasoning With
Reasoning", 2022, arXiv:2203.14465): the hint goes into the instruction of the predictors that
produce the answer, so it is shown to the teacher only; if the hinted run now passes the metric, its
trace becomes demos like any passing run's. A demo holds a call's inputs and parsed outputs, never
its instruction, so no demo carries the hint (a rationalized call whose outputs mention a hint is
dropped). Each retry is one more teacher run, paid from the compile's budget.
"""
from __future__ import annotations

from pipec.session import OptionSpec

from .base import Optimizer, labeled_demo, with_demos


HINT = ("Hint: the correct answer is {answer}. Reason step by step toward it as if you had found it "
        "yourself, and do not mention this hint.")


def hinted(session, params, values) -> dict | None:
    """`params` with the row's correct answer as a hint in the instruction of every predictor that
    produces it (one with an output the metric scores, or a rationale; every predictor when none
    does), or None when the row has no labeled answer. What STaR's rationalization shows the teacher.

    The hint names the metric's fields with their expected values, e.g. for `exact_match(a)` and a
    row whose `a` is "12": "Hint: the correct answer is a: 12. ..."
    """
    fields = [f for f in session.metric.fields if f in values]
    if not fields:
        return None
    answer = "; ".join(f"{f}: {values[f]}" for f in fields)
    preds = session.predictors()
    producing = [n for n, p in preds.items() if any(o[0] in fields or o[0] == "reasoning" for o in p.outputs)]
    out = dict(params)
    for n in producing or list(preds):
        st = params.get(n)
        if st is None or not hasattr(st, "instruction"):
            continue
        out[n] = st.model_copy(update={"instruction": f"{st.instruction.rstrip()}\n\n{HINT.format(answer=answer)}"})
    return out


def _mentions_hint(demo: dict) -> bool:
    return any("hint" in str(v).lower() for v in demo.values())


def bootstrap_demos(session, params, rows, max_demos: int, threshold: float,
                    rationalize: bool = False) -> tuple[dict[str, list[dict]], int]:
    """Demos per predictor from teacher runs over `rows` that score at least `threshold`.

    Rows are taken in order until every predictor has `max_demos`; returns the demos and the rows used.
    Predictors whose demos the .pipe file pins get none (and no teacher run is made for them alone).
    With `rationalize`, a row that ran but failed is run once more with its answer as a hint
    (`hinted`); the retried trace counts if it now passes, without the hint.
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
        for example, row in zip(batch, result.rows):
            if row.prediction is not None and row.prediction.ok and row.score >= threshold:
                _keep_trace(row, demos, max_demos)
                continue
            if not rationalize or row.prediction is None or all(len(demos[n]) >= max_demos for n in names):
                continue
            hint = hinted(session, params, example.values)
            if hint is None or session.out_of_budget:
                continue
            retry = session.run_teacher(hint, [example]).rows[0]     # the hint is shown to the teacher only
            if retry.prediction is not None and retry.prediction.ok and retry.score >= threshold:
                _keep_trace(retry, demos, max_demos, drop=_mentions_hint)
    return demos, used


def _keep_trace(row, demos: dict[str, list[dict]], max_demos: int, drop=None) -> None:
    """Every traced call of a passing run as a demo of its predictor (inputs and parsed outputs only)."""
    for rec in row.prediction.trace:
        if rec.parsed is None or rec.inputs is None or rec.predictor not in demos:
            continue
        if len(demos[rec.predictor]) < max_demos:
            demo = {**rec.inputs, **rec.parsed}
            if demo not in demos[rec.predictor] and not (drop and drop(demo)):
                demos[rec.predictor].append(demo)


class BootstrapFewShot(Optimizer):
    """compile block: `optimizer = bootstrap_fewshot(max_demos: 4, max_labeled: 4, rounds: 1, rationalize: true)`"""

    name = "bootstrap_fewshot"
    doc = "demos from traces of teacher runs that pass the metric"
    options = {"max_demos": OptionSpec("int", "demos per predictor, at most", minimum=0),
               "max_labeled": OptionSpec("int", "labeled demos to fill up with", minimum=0),
               "rounds": OptionSpec("int", "bootstrapping rounds", minimum=1),
               "threshold": OptionSpec("number", "metric score a run needs for its trace to count", minimum=0),
               "rationalize": OptionSpec("bool", "retry a failed row once with its answer as a hint (STaR)"),
               "seed": OptionSpec("int", "shuffle seed (default: the compile seed)")}
    defaults = {"max_demos": 4, "max_labeled": 4, "rounds": 1, "threshold": 1.0}   # rationalize: off unless set

    def __init__(self, **options):
        super().__init__(**options)
        if self.opts.get("rationalize") is False:
            del self.opts["rationalize"]        # the default written out: the same settings and fingerprint

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
            demos, _used = bootstrap_demos(session, params, rows, max_demos, self.opts["threshold"],
                                           rationalize=bool(self.opts.get("rationalize")))
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
