"""Persona: expert prompting (Xu et al. 2023, "ExpertPrompting: Instructing Large Language Models to
be Distinguished Experts").

A first call writes an expert identity tailored to this very input: a short second-person
description ("You are a maritime lawyer with twenty years of ...") of the expert best placed to do
the task. The answer call then runs with that identity at the head of its system message, before the
signature's instruction, fields and demos. The identity is exposed on the result as `.persona`.
Both calls are predictors an optimizer can tune: bootstrapped demos of `module.persona` are the
(input, expert identity) exemplars ExpertPrompting writes by hand.
"""
from __future__ import annotations

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR
from .base import COMMON_OPTIONS, ModuleKind, Predictor

PERSONA_DOC = "the expert's identity in the second person, starting with \"You are\", two or three sentences"
PERSONA_INSTRUCTION = (
    "Describe the expert best suited to do the task below for these inputs. Write in the second person, "
    "starting with \"You are\": the expert's field, experience and the skills that matter here, tailored to "
    "these inputs, in two or three sentences. Do not do the task itself.")


class Persona(ModuleKind):
    """Write an expert identity for the input, then answer as that expert.

    .pipe: `module advise = Persona(Advice, expert: "someone who knows the domain well", max_tokens: 96)`
    """

    kind = "Persona"
    doc = "two LM calls: an expert identity written for the input, then the answer under that identity"
    options = {**COMMON_OPTIONS,
               "expert": OptionSpec("str", "guidance for the identity, e.g. \"a clinician\" (default: any "
                                           "expert the input calls for)")}
    extra_outputs = (("persona", STR, PERSONA_DOC),)
    demo_parts = ("answer",)        # the expert's answer; the identity is written fresh for each input

    def __init__(self, spec):
        super().__init__(spec)
        instruction = self.instruction()
        guide = spec.options.get("expert")
        describe = PERSONA_INSTRUCTION + (f" The expert should be {guide}." if guide else "") + \
            "\n\nThe task: " + instruction.strip()
        self.persona = self.predictor("persona", describe, spec.inputs, [("persona", STR, PERSONA_DOC)])
        self.answer = self.predictor("answer", instruction, spec.inputs, spec.outputs)

    def predictors(self) -> list[Predictor]:
        return [self.persona, self.answer]

    def max_calls(self) -> int:
        return 2 * 2          # the identity and the answer, each with at most one parse retry

    def answer_messages(self, persona: str, values) -> list[dict[str, str]]:
        """The answer predictor's prompt with the identity heading its system message."""
        messages = self.answer.messages(values)
        if persona:
            messages = [{"role": "system", "content": f"{persona}\n\n{messages[0]['content']}"}] + messages[1:]
        return messages

    async def forward(self, values, ctx):
        persona = ((await self.persona(values, ctx))["persona"] or "").strip()
        answer = await self.answer(values, ctx, messages=self.answer_messages(persona, values))
        return {"persona": persona, **answer}
