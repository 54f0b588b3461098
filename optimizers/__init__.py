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


# Files of this folder that hold helpers the optimizers share, not an optimizer. Every other file is
# one optimizer named after the file (tests/test_optimizers_contract.py holds both rules), so the
# names are known without importing anything, and checking a compile block imports only the
# optimizer it names.
HELPERS = frozenset({"base", "propose", "study_storage"})


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    """The optimizers' compile-block names, read from the folder's file names (nothing imported).

    >>> names()[0], "bootstrap_fewshot" in names()
    ('auto', True)
    """
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)
                        if info.name not in HELPERS and not info.name.startswith("_")))


@lru_cache(maxsize=None)
def _load(name: str) -> type[Optimizer]:
    mod = importlib.import_module(f"{__name__}.{name}")
    found = [value for value in vars(mod).values()
             if isinstance(value, type) and issubclass(value, Optimizer) and value.name and value.__module__ == mod.__name__]
    if len(found) != 1 or found[0].name != name:
        raise ImportError(f"optimizers/{name}.py must define one Optimizer subclass whose name is {name!r} "
                          f"(found {', '.join(repr(c.name) for c in found) or 'none'}); a file of helpers goes in "
                          "pipec.optimizers.HELPERS")
    return found[0]


def optimizers() -> dict[str, type[Optimizer]]:
    """Compile-block name → class, for every optimizer file in `pipec/optimizers/` (imports them all).

    >>> sorted(optimizers())[0], "bootstrap_fewshot" in optimizers()
    ('auto', True)
    """
    return {name: _load(name) for name in names()}


def get_optimizer(name: str) -> type[Optimizer]:
    """The optimizer class for a compile-block name (imports that optimizer's file only).

    >>> get_optimizer("bootstrap_fewshot").name
    'bootstrap_fewshot'
    """
    if name not in names():
        raise ValueError(f"unknown optimizer '{name}'; known: {', '.join(names())}")
    return _load(name)


__all__ = ["Optimizer", "HELPERS", "names", "optimizers", "get_optimizer"]
