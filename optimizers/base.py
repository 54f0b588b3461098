"""The one small interface every optimizer implements, and helpers they share.

An optimizer is one file in this folder defining one `Optimizer` subclass; the registry
(`pipec.optimizers.optimizers`) finds it by scanning the folder. It is constructed from its options
(as written in a compile block), which it declares once, on the class (`options`, with `defaults`):
the checker, the command line and the compile read them from there. It has one method,
`optimize(session) -> (params, valset score or None)`, and uses nothing of pipec but the session
interface (`pipec.session`). It chooses parameters, never the graph.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pipec.session import OptionSpec

if TYPE_CHECKING:
    from pipec.session import PredictorState, Session


class Optimizer:
    name: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    options: ClassVar[dict[str, OptionSpec]] = {}
    defaults: ClassVar[dict[str, Any]] = {}
    trials_option: ClassVar[str] = "trials"     # the option `pipec compile --trials N` sets
    shares_studies: ClassVar[bool] = False      # runs as workers of a shared study (`--worker`, `--finalize`)

    def __init__(self, **options: Any):
        unknown = [k for k in options if k not in self.options]
        if unknown:
            raise ValueError(f"unknown option{'s' * (len(unknown) > 1)} for {self.name}: {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(self.options)) or 'none'}")
        self.opts = {**self.defaults, **options}

    def settings(self) -> dict[str, Any]:
        """Every option with its effective value: what the fingerprint and the report record."""
        return dict(sorted(self.opts.items()))

    def optimize(self, session: Session) -> tuple[dict[str, PredictorState], float | None]:
        raise NotImplementedError


def demo_fields(predictor) -> list[str]:
    return [n for n, _, _ in predictor.inputs] + [n for n, _, _ in predictor.outputs]


def labeled_demo(predictor, example_values: dict[str, Any]) -> dict[str, Any] | None:
    """A demo built straight from a labeled row, when the row has every field the predictor uses.

    Only predictors fed directly by pipeline inputs and producing labeled outputs qualify;
    inner predictors of a chain get demos by bootstrapping instead. Fields a predictor adds
    itself (a rationale) are not in labels, so such predictors take no labeled demos.
    """
    fields = demo_fields(predictor)
    if all(f in example_values for f in fields):
        return {f: example_values[f] for f in fields}
    return None


def with_demos(base: dict[str, PredictorState], demos: dict[str, list[dict]]) -> dict[str, PredictorState]:
    """`base` with the demos of the named predictors replaced (a `Choice` entry, the alternative a
    one_of module runs, is kept as it is)."""
    from pipec.session import Choice
    out = {}
    for name, st in base.items():
        out[name] = st if isinstance(st, Choice) else st.model_copy(update={"demos": demos.get(name, st.demos),
                                                                            "knn": st.knn})
    return out
