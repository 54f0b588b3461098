"""Predict: one prompt, one reply, parsed into the signature's outputs."""
from __future__ import annotations

from .base import ModuleKind


class Predict(ModuleKind):
    """Ask the LM for the outputs directly.

    .pipe: `module classify = Predict(Classify, lm: local, temperature: 0)`
    """

    kind = "Predict"
    doc = "one LM call from the inputs to the outputs"
    demo_parts = ("",)

    def __init__(self, spec):
        super().__init__(spec)
        self.predict = self.predictor("", self.instruction(), spec.inputs, spec.outputs)

    def predictors(self):
        return [self.predict]

    def streamed(self):
        return self.predict

    async def forward(self, values, ctx):
        return await self.predict(values, ctx)
