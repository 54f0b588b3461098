"""The plug-in registries in one place: module kinds (found by scanning `compiler/modules/`), metrics,
and optimizers (`pipec.optimizers`), and the `Catalogue` of them that the checker reads."""
from __future__ import annotations

from functools import lru_cache

from .dsl.catalogue import Catalogue, FunctionSpec, KindSpec


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """Module kinds, metrics and optimizers known to this installation."""
    from pipec.optimizers import optimizers
    from . import metrics
    from .modules import kinds
    return Catalogue(
        kinds={name: KindSpec(name, cls.options, cls.extra_outputs, cls.doc, cls.validate_decl,
                              cls.demo_extras if cls.demo_parts else None)
               for name, cls in kinds().items()},
        metrics=dict(metrics.SPECS),
        optimizers={name: FunctionSpec(name, cls.options, False, cls.doc) for name, cls in optimizers().items()},
    )
