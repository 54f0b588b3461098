"""Random search over demo sets: zero-shot, labeled-only, per-input nearest (knn) and several
bootstrapped candidates, each scored on the valset; the best wins. Zero demos is always a candidate, because for small models
demos can hurt, and the search must be free to say so."""
from __future__ import annotations

from pipec.session import OptionSpec

from .base import Optimizer
from .bootstrap_fewshot import BootstrapFewShot
from .knn_fewshot import KNNFewShot
from .labeled_fewshot import LabeledFewShot


class RandomSearch(Optimizer):
    """compile block: `optimizer = random_search(candidates: 8, max_demos: 4, k: 3)`"""

    name = "random_search"
    doc = "best of zero-shot, labeled and randomly bootstrapped demo sets"
    options = {**BootstrapFewShot.options,
               "candidates": OptionSpec("int", "demo sets to score, the zero-shot one included", minimum=1),
               "k": OptionSpec("int", "demos per input of the nearest-demos candidate", minimum=1)}
    defaults = {**BootstrapFewShot.defaults, "candidates": 6, "k": 3}
    trials_option = "candidates"

    def optimize(self, session):
        boot_opts = {k: v for k, v in self.opts.items() if k in BootstrapFewShot.options}
        boot = BootstrapFewShot(**boot_opts)
        best, best_score = session.baseline(), None
        for i in range(self.opts["candidates"]):
            if session.out_of_budget:
                break
            if i == 0:
                params, note = session.baseline(), "zero-shot"
            elif i == 1:
                params = LabeledFewShot(max_labeled=self.opts["max_labeled"]).labeled(session)
                note = f"{self.opts['max_labeled']} labeled demos"
            elif i == 2:
                # Per-input nearest demos: on real classification data often the best of all.
                params = KNNFewShot(k=self.opts["k"]).knn_params(session)
                note = f"k={self.opts['k']} nearest demos per input"
            else:
                rng = session.rng(f"random_search:{i}")
                size = rng.randint(1, max(1, self.opts["max_demos"])) if i > 3 else self.opts["max_demos"]
                params = boot.bootstrap(session, rng, max_demos=size, max_labeled=size)
                note = f"bootstrapped set {i - 2} ({size} demos)"
            result = session.evaluate(params)
            if result.incomplete:
                break
            session.record(result.score, note=note)
            if best_score is None or result.score > best_score:
                best, best_score = params, result.score
        return best, best_score
