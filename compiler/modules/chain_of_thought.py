"""ChainOfThought: the reply carries a step-by-step rationale before the answer fields.

The rationale is generated first (it is the first key of the reply object), so the answer is
conditioned on it. With demos (set by an optimizer), the demos carry rationales too: few-shot CoT.
A call's result exposes the rationale as `.reasoning`.
"""
from __future__ import annotations

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR
from .base import COMMON_OPTIONS, ModuleKind

DEFAULT_RATIONALE = "think step by step about the inputs before answering, in a few sentences"


class ChainOfThought(ModuleKind):
    """Reason first, then answer.

    .pipe: `module answer = ChainOfThought(Answer, rationale: "work through the numbers")`
    """

    kind = "ChainOfThought"
    doc = "one LM call whose reply reasons step by step before the outputs"
    options = {**COMMON_OPTIONS,
               "rationale": OptionSpec("str", "how the reasoning field is described to the model")}
    extra_outputs = (("reasoning", STR, DEFAULT_RATIONALE),)
    demo_parts, demo_extras = ("",), extra_outputs      # a written demo is a worked example, reasoning included

    def __init__(self, spec):
        super().__init__(spec)
        rationale = spec.options.get("rationale") or DEFAULT_RATIONALE
        outputs = [("reasoning", STR, rationale)] + list(spec.outputs)
        self.predict = self.predictor("", self.instruction(), spec.inputs, outputs)

    def predictors(self):
        return [self.predict]

    def streamed(self):
        return self.predict

    async def forward(self, values, ctx):
        return await self.predict(values, ctx)
