"""pipec.optimizers: search over each module's instruction and demos against a metric.

The optimizers themselves arrive with the compile work (see the project's issues); this package
holds the table the checker validates `optimizer = ...` settings in compile blocks against, so a
compile block written today is checked with the options those optimizers will take.
"""
from __future__ import annotations

from pipec.dsl.catalogue import FunctionSpec, OptionSpec

_DEMOS = {
    "max_demos": OptionSpec("int", "demos per predictor, at most", minimum=0),
    "max_labeled": OptionSpec("int", "labeled demos per predictor, at most", minimum=0),
    "seed": OptionSpec("int", "seed for sampling"),
}
_BOOT = {**_DEMOS, "rounds": OptionSpec("int", "bootstrapping rounds", minimum=1),
         "threshold": OptionSpec("number", "metric score a trace needs to become a demo", minimum=0)}

SPECS: dict[str, FunctionSpec] = {
    "labeled_fewshot": FunctionSpec("labeled_fewshot", _DEMOS, False, "demos sampled from labeled rows"),
    "bootstrap_fewshot": FunctionSpec("bootstrap_fewshot", _BOOT, False, "demos from traces that pass the metric"),
    "random_search": FunctionSpec("random_search", {**_BOOT, "candidates": OptionSpec("int", "demo sets tried", minimum=1)},
                                  False, "random search over bootstrapped demo sets"),
    "knn_fewshot": FunctionSpec("knn_fewshot", {"k": OptionSpec("int", "demos per input", minimum=1)}, False,
                                "nearest labeled rows as demos, per input"),
    "mipro": FunctionSpec("mipro", {**_BOOT, "trials": OptionSpec("int", "search trials", minimum=1),
                                    "instructions": OptionSpec("int", "instruction candidates per predictor", minimum=1),
                                    "minibatch": OptionSpec("int", "rows per minibatch evaluation", minimum=1)},
                          False, "joint TPE search over instructions and demo sets"),
    "ensemble": FunctionSpec("ensemble", {"size": OptionSpec("int", "programs in the vote", minimum=2)}, False,
                             "majority vote of the top programs"),
}

__all__ = ["SPECS"]
