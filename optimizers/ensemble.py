"""Ensemble: score several candidate programs, keep the top `size`, and vote on every input."""
from __future__ import annotations

from pipec.session import OptionSpec

from .base import Optimizer
from .bootstrap_fewshot import BootstrapFewShot
from .labeled_fewshot import LabeledFewShot


class Ensemble(Optimizer):
    """compile block: `optimizer = ensemble(size: 3, candidates: 6)`

    Candidates are the zero-shot program, a labeled-demo program and bootstrapped programs with
    different seeds; the top `size` by valset score become members of a majority vote. The
    ensemble itself is scored on the valset and kept only if it scores strictly higher than its
    best member; otherwise (a tie included) the best member alone is returned: an ensemble
    multiplies the LM calls per input by its size, so it has to earn them.
    """

    name = "ensemble"
    doc = "majority vote of the top programs"
    options = {**BootstrapFewShot.options,
               "size": OptionSpec("int", "programs in the vote", minimum=2),
               "candidates": OptionSpec("int", "candidate programs to score", minimum=2)}
    defaults = {**BootstrapFewShot.defaults, "size": 3, "candidates": 6}

    def optimize(self, session):
        boot = BootstrapFewShot(**{k: v for k, v in self.opts.items() if k in BootstrapFewShot.options})
        scored = []
        for i in range(self.opts["candidates"]):
            if session.out_of_budget:
                break
            if i == 0:
                params, note = session.baseline(), "zero-shot"
            elif i == 1:
                params, note = LabeledFewShot(max_labeled=self.opts["max_labeled"]).labeled(session), "labeled demos"
            else:
                params = boot.bootstrap(session, session.rng(f"ensemble:{i}"))
                note = f"bootstrapped set {i - 1}"
            result = session.evaluate(params)
            if result.incomplete:
                break
            session.record(result.score, note=f"candidate: {note}")
            scored.append((result.score, -i, params))
        if not scored:
            return session.baseline(), None
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        members = [p for _, _, p in scored[: self.opts["size"]]]
        best_single = scored[0]
        if len(members) < 2:
            return best_single[2], best_single[0]
        result = session.evaluate(members)
        if result.incomplete:
            return best_single[2], best_single[0]
        if result.score > best_single[0]:
            session.record(result.score, note=f"ensemble of {len(members)}")
            return members, result.score
        session.record(result.score, note=f"ensemble of {len(members)}: not above its best member "
                                          f"({best_single[0]:.3f}) for {len(members)}x the LM calls, so not kept")
        return best_single[2], best_single[0]
