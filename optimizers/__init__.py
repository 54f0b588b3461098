"""pipec.optimizers: search over each module's instruction and demos against a metric.

The registry has the shape of the module kinds' (`pipec.modules.kinds`): every `Optimizer` subclass
defined in a file of this folder, found by scanning it, by its compile-block name. An optimizer
declares its options once, on its class; the checker (through `pipec.registry.catalogue`), the
command line and the compile read them from there. Adding an optimizer is adding its file (and its
test): nothing else names it.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from .base import Optimizer


@lru_cache(maxsize=1)
def optimizers() -> dict[str, type[Optimizer]]:
    """Compile-block name → class, for every optimizer file in `pipec/optimizers/`.

    >>> sorted(optimizers())[:2]
    ['auto', 'bootstrap_fewshot']
    """
    found: dict[str, type[Optimizer]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(mod).values():
            if isinstance(value, type) and issubclass(value, Optimizer) and value.name and \
                    value.__module__ == mod.__name__:
                found[value.name] = value
    return found


def get_optimizer(name: str) -> type[Optimizer]:
    """The optimizer class for a compile-block name.

    >>> get_optimizer("bootstrap_fewshot").name
    'bootstrap_fewshot'
    """
    found = optimizers()
    if name not in found:
        raise ValueError(f"unknown optimizer '{name}'; known: {', '.join(sorted(found))}")
    return found[name]


__all__ = ["Optimizer", "optimizers", "get_optimizer"]
