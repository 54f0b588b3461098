"""LabeledFewShot: demos sampled (by seed) from labeled training rows."""
from __future__ import annotations

from pipec.session import OptionSpec

from .base import Optimizer, labeled_demo, with_demos


class LabeledFewShot(Optimizer):
    """Each predictor whose fields all appear in the training rows gets `max_labeled` of them as demos
    (unless the .pipe file pins its demos); the others keep the demos they start with (an inner part
    whose fields no row has, such as the demos a ToolMaker's preparation gave its `use` part).

    compile block: `optimizer = labeled_fewshot(max_labeled: 4)`
    """

    name = "labeled_fewshot"
    doc = "demos sampled from labeled rows"
    options = {"max_labeled": OptionSpec("int", "demos per predictor", minimum=0),
               "max_demos": OptionSpec("int", "alias of max_labeled", minimum=0),
               "seed": OptionSpec("int", "sampling seed (default: the compile seed)")}
    defaults = {"max_labeled": 4}

    def optimize(self, session):
        params = self.labeled(session)
        k = self.opts.get("max_demos", self.opts["max_labeled"])
        result = session.evaluate(params)
        session.record(result.score, full=not result.incomplete, note=f"{k} labeled demos")
        return params, (result.score if not result.incomplete else None)

    def labeled(self, session):
        """The labeled demo set, without scoring it (other optimizers take it as a candidate)."""
        k = self.opts.get("max_demos", self.opts["max_labeled"])
        rng = session.rng(f"labeled:{self.opts.get('seed', '')}")
        order = list(range(len(session.trainset)))
        rng.shuffle(order)
        demos = {}
        for name, pred in session.predictors().items():
            if "demos" in pred.pinned:
                continue                # the file's demos stay (`with_demos` keeps them)
            picked = []
            for i in order:
                d = labeled_demo(pred, session.trainset[i].values)
                if d is not None:
                    picked.append(d)
                if len(picked) >= k:
                    break
            if picked or k == 0:
                demos[name] = picked
        return with_demos(session.baseline(), demos)
