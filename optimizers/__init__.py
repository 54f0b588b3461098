"""pipec.optimizers: search over each module's instruction and demos against a metric.

One file per optimizer, each defining one `Optimizer` subclass; `get_optimizer(name)` finds it.
`SPECS` is what the checker validates `optimizer = ...` settings in compile blocks against.
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
    "knn_fewshot": FunctionSpec("knn_fewshot", {"k": OptionSpec("int", "demos per input", minimum=1),
                                                "pool": OptionSpec("int", "largest pool per predictor", minimum=1)},
                                False, "nearest labeled rows as demos, per input"),
    "mipro": FunctionSpec("mipro", {**_BOOT, "trials": OptionSpec("int", "search trials", minimum=1),
                                    "instructions": OptionSpec("int", "instruction candidates per predictor", minimum=1),
                                    "minibatch": OptionSpec("int", "rows per minibatch evaluation", minimum=1)},
                          False, "joint TPE search over instructions and demo sets"),
    "ensemble": FunctionSpec("ensemble", {**_BOOT, "size": OptionSpec("int", "programs in the vote", minimum=2),
                                          "candidates": OptionSpec("int", "candidate programs to score", minimum=2)},
                             False, "majority vote of the top programs"),
}

_FILES = {"labeled_fewshot": "labeled_fewshot", "bootstrap_fewshot": "bootstrap_fewshot",
          "random_search": "random_search", "knn_fewshot": "knn_fewshot", "mipro": "mipro", "ensemble": "ensemble"}


def get_optimizer(name: str):
    """The optimizer class for a compile-block name.

    >>> get_optimizer("bootstrap_fewshot").name
    'bootstrap_fewshot'
    """
    import importlib
    from .base import Optimizer
    if name not in _FILES:
        raise ValueError(f"unknown optimizer '{name}'; known: {', '.join(sorted(_FILES))}")
    try:
        module = importlib.import_module(f"{__name__}.{_FILES[name]}")
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{_FILES[name]}":
            raise ValueError(f"optimizer '{name}' is not available in this version of pipec") from None
        raise
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Optimizer) and value.name == name:
            return value
    raise ValueError(f"optimizer '{name}' has no implementation class")


__all__ = ["SPECS", "get_optimizer"]
