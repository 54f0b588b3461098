"""The plug-in registries in one place: module kinds (found by scanning `compiler/modules/`), metrics,
and optimizers (`pipec.optimizers`), and the `Catalogue` of them that the checker reads."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache

from .dsl.catalogue import Catalogue, FunctionSpec, KindSpec


class OptimizerSpecs(Mapping):
    """Optimizer specs by name, each read from its class when first asked for: checking a compile
    block imports the one optimizer it names, not every optimizer (a .pipe file loads faster).

    >>> specs = OptimizerSpecs(("knn_fewshot", "mipro"))
    >>> list(specs), specs["knn_fewshot"].options["k"].type
    (['knn_fewshot', 'mipro'], 'int')
    """

    def __init__(self, names: tuple[str, ...]):
        self._names, self._specs = names, {}

    def __getitem__(self, name: str) -> FunctionSpec:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._specs:
            from pipec.optimizers import get_optimizer
            cls = get_optimizer(name)
            self._specs[name] = FunctionSpec(name, cls.options, False, cls.doc)
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """Module kinds, metrics and optimizers known to this installation."""
    from pipec.optimizers import names
    from . import metrics
    from .modules import kinds
    return Catalogue(
        kinds={name: KindSpec(name, cls.options, cls.extra_outputs, cls.doc, cls.validate_decl,
                              cls.demo_extras if cls.demo_parts else None)
               for name, cls in kinds().items()},
        metrics=dict(metrics.SPECS),
        optimizers=OptimizerSpecs(names()),
    )
