"""The catalogue the checker needs, built from the compiler's registries."""
from __future__ import annotations

from functools import lru_cache

from .dsl.catalogue import Catalogue, KindSpec


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """Module kinds, metrics and optimizers known to this installation."""
    from . import metrics
    from .modules import kinds
    from pipec.optimizers import SPECS as optimizer_specs
    return Catalogue(
        kinds={name: KindSpec(name, cls.options, cls.extra_outputs, cls.doc, cls.validate_decl)
               for name, cls in kinds().items()},
        metrics=dict(metrics.SPECS),
        optimizers=dict(optimizer_specs),
    )
