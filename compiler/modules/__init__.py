"""The module kinds: every `ModuleKind` subclass defined in a file of this folder, found by scanning it."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from .base import ModuleFailure, ModuleKind, ModuleSpec, Predictor


@lru_cache(maxsize=1)
def kinds() -> dict[str, type[ModuleKind]]:
    """Kind name → class, for every kind file in `pipec/modules/`.

    >>> {"Predict", "ChainOfThought", "Debate"} <= set(kinds())
    True
    """
    found: dict[str, type[ModuleKind]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(mod).values():
            if isinstance(value, type) and issubclass(value, ModuleKind) and value.kind and \
                    value.__module__ == mod.__name__:
                found[value.kind] = value
    return found


__all__ = ["kinds", "ModuleKind", "ModuleSpec", "ModuleFailure", "Predictor"]
