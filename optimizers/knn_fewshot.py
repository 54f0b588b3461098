"""KNN few-shot: at run time each input gets the k most similar training rows as demos.

The pool is the labeled rows (for predictors whose fields are all labeled) plus bootstrapped
traces (for the others); selection uses a built-in lexical TF-IDF index, so nothing leaves the
machine. The artifact stores the pool; the runtime picks demos per input.
"""
from __future__ import annotations

from pipec.session import OptionSpec

from .base import Optimizer, labeled_demo
from .bootstrap_fewshot import bootstrap_demos


class KNNFewShot(Optimizer):
    """compile block: `optimizer = knn_fewshot(k: 3)`"""

    name = "knn_fewshot"
    doc = "nearest labeled rows as demos, chosen per input"
    options = {"k": OptionSpec("int", "demos per input", minimum=1),
               "pool": OptionSpec("int", "largest pool per predictor", minimum=1)}
    defaults = {"k": 3, "pool": 256}

    def optimize(self, session):
        params = self.knn_params(session)
        result = session.evaluate(params)
        session.record(result.score, full=not result.incomplete, note=f"k={self.opts['k']} nearest demos")
        return params, (result.score if not result.incomplete else None)

    def knn_params(self, session):
        """The per-input demo parameters, without scoring them (other optimizers take them as a candidate):
        a pool of labeled rows, or of bootstrapped traces for predictors whose fields are not all labeled."""
        from pipec.session import KnnState
        preds = session.predictors()
        pools: dict[str, list[dict]] = {}
        need_bootstrap = []
        for name, pred in preds.items():
            if "demos" in pred.pinned:
                continue                # keeps the file's demos: no pool, no bootstrapping for it
            pool = [d for d in (labeled_demo(pred, ex.values) for ex in session.trainset) if d is not None]
            pools[name] = pool[: self.opts["pool"]]
            if not pool:
                need_bootstrap.append(name)
        if need_bootstrap:
            with session.holding_back_for_validation():     # bootstrapping may not eat the pool's own scoring
                boot, _ = bootstrap_demos(session, session.baseline(), list(session.trainset), self.opts["pool"], 1.0)
            for name in need_bootstrap:
                pools[name] = boot.get(name, [])
        params = {}
        for name, st in session.baseline().items():
            if name not in pools:
                params[name] = st
                continue
            pool = pools.get(name) or []
            fields = [n for n, _, _ in preds[name].inputs]
            knn = KnnState(k=self.opts["k"], fields=fields, pool=pool) if pool else None
            params[name] = st.model_copy(update={"knn": knn, "demos": []})
        return params
