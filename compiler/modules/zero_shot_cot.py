"""ZeroShotCoT: zero-shot chain of thought in two stages (Kojima et al. 2022, "Large Language Models
are Zero-Shot Reasoners").

Stage 1, reasoning extraction: the prompt is the inputs followed by the trigger phrase ("Let's think
step by step."), and the reply is the reasoning. Stage 2, answer extraction: the prompt shows the
inputs and that reasoning, ends with the answer trigger ("Therefore, the answer is"), and the reply is
the signature's outputs. No demos are needed; an optimizer may still bootstrap some for either stage.
A call's result exposes the reasoning as `.reasoning`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR
from ..prompt import user_message
from .base import COMMON_OPTIONS, ModuleKind, Predictor

DEFAULT_TRIGGER = "Let's think step by step."
DEFAULT_ANSWER_TRIGGER = "Therefore, the answer is"
REASONING_DOC = "step-by-step reasoning about the inputs, ending with what it concludes"


@dataclass(slots=True)
class SuffixPredictor(Predictor):
    """A predictor whose user messages (demos included) end with a fixed phrase, such as a trigger."""

    suffix: str = ""

    def _user(self, values: dict[str, Any]) -> str:
        text = user_message(self.inputs, values)
        return f"{text}\n\n{self.suffix}" if self.suffix else text

    def prefix_for(self, demos: list[dict[str, Any]], instruction: str | None = None) -> list[dict[str, str]]:
        prefix = Predictor.prefix_for(self, demos, instruction)
        if self.suffix:
            for m, demo in zip(prefix[1::2], demos):
                m["content"] = self._user(demo)
        return prefix

    def messages(self, values: dict[str, Any]) -> list[dict[str, str]]:
        prefix = self._prefix if self.knn is None else self.prefix_for(self.knn.select(values))
        return prefix + [{"role": "user", "content": self._user(values)}]


class ZeroShotCoT(ModuleKind):
    """Reason after a trigger phrase, then extract the answer from the reasoning.

    .pipe: `module solve = ZeroShotCoT(Word, trigger: "Let's work this out step by step.", max_tokens: 128)`
    """

    kind = "ZeroShotCoT"
    doc = "two LM calls: reasoning after \"Let's think step by step.\", then the answer read from it"
    options = {**COMMON_OPTIONS,
               "trigger": OptionSpec("str", "the phrase the reasoning prompt ends with (default: "
                                            f"\"{DEFAULT_TRIGGER}\")"),
               "answer_trigger": OptionSpec("str", "the phrase the answer prompt ends with (default: "
                                                   f"\"{DEFAULT_ANSWER_TRIGGER}\")")}
    extra_outputs = (("reasoning", STR, REASONING_DOC),)

    @staticmethod
    def validate_decl(decl, program) -> list[tuple[str, str]]:
        out = []
        for o in decl.options:
            if o.name in ("trigger", "answer_trigger") and isinstance(o.value, str) and not o.value.strip():
                out.append((f"option '{o.name}' of ZeroShotCoT module {decl.name} is empty",
                            "leave it out to use the default, or write the phrase the prompt should end with"))
        return out

    def __init__(self, spec):
        super().__init__(spec)
        trigger = spec.options.get("trigger") or DEFAULT_TRIGGER
        answer_trigger = spec.options.get("answer_trigger") or DEFAULT_ANSWER_TRIGGER
        instruction = self.instruction()
        self.reason = SuffixPredictor(
            f"{spec.name}.reason", instruction, spec.inputs, [("reasoning", STR, REASONING_DOC)],
            spec.lm, self.sampling(), suffix=trigger)
        self.extract = SuffixPredictor(
            f"{spec.name}.extract",
            instruction.strip() + "\n\nThe reasoning below was written first; give the answer it reaches.",
            list(spec.inputs) + [("reasoning", STR, f"reasoning that began with \"{trigger}\"")],
            spec.outputs, spec.lm, self.sampling(), suffix=answer_trigger)

    def predictors(self) -> list[Predictor]:
        return [self.reason, self.extract]

    def max_calls(self) -> int:
        return 2 * 2          # two predictor calls, each with at most one parse retry

    async def forward(self, values, ctx):
        thought = await self.reason(values, ctx)
        reasoning = thought["reasoning"] or ""
        answer = await self.extract({**values, "reasoning": reasoning}, ctx)
        return {"reasoning": reasoning, **answer}
