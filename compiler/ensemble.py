"""Running an ensemble: every member's plan on the same input, then a majority vote per output."""
from __future__ import annotations

from typing import Any

from .prediction import Prediction
from .vote import winner


def vote(preds: list[Prediction], outputs: list[str]) -> Prediction:
    """Majority vote per output over the members that succeeded (the same answer by `pipec.vote`'s
    rule, the one every vote uses); ties go to the earlier member.

    >>> a, b, c = Prediction({"x": "yes"}), Prediction({"x": "no"}), Prediction({"x": "no"})
    >>> vote([a, b, c], ["x"]).x
    'no'
    """
    ok = [p for p in preds if p.ok]
    trace = [r for p in preds for r in p.trace]
    if not ok:
        first = preds[0]
        return Prediction(None, trace, f"every ensemble member failed; first: {first.error}", first.raw, first.node)
    values: dict[str, Any] = {}
    for name in outputs:
        values[name] = ok[winner(p[name] for p in ok)][name]
    return Prediction(values, trace)


class EnsemblePlan:
    """Quacks like `executor.Plan`: the batch runner and `Program.__call__` use it unchanged."""

    def __init__(self, graph, plans):
        self.graph = graph
        self.plans = plans
        self.outputs = [name for name, _, _ in graph.outputs]

    def run_inline(self, inputs: dict[str, Any], runtime) -> Prediction:
        return vote([p.run_inline(inputs, runtime) for p in self.plans], self.outputs)

    async def run_async(self, inputs: dict[str, Any], runtime) -> Prediction:
        import asyncio
        preds = await asyncio.gather(*(p.run_async(inputs, runtime) for p in self.plans))
        return vote(list(preds), self.outputs)
