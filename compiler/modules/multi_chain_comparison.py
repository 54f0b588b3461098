"""MultiChainComparison: reason several times, then compare the chains in one final call (Yoran et
al. 2023, "Answering Questions by Meta-Reasoning over Multiple Chains of Thought"; DSPy's
`MultiChainComparison`).

`attempts` chain-of-thought replies are sampled in parallel at a temperature (independent draws,
`sample=0..m-1`). Each becomes one input of the comparison call, written like a student's attempt
("«reasoning … I'm not sure, but my prediction is: answer»"), so the final call sees every rationale
and every answer at once; it reasons over all of them (its `rationale`, exposed on the result) and
gives the outputs. Unlike a vote, the comparison may prefer a minority answer or combine facts from
several chains. An attempt whose reply does not parse is shown as failed; only when every attempt
fails does the call fail.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, settle
from .chain_of_thought import DEFAULT_RATIONALE

DEFAULT_ATTEMPTS = 3
DEFAULT_TEMPERATURE = 0.7
FAILED_ATTEMPT = "«this attempt failed to produce an answer»"
RATIONALE_DOC = ("accurate reasoning: compare the attempts holistically, say which reasoning holds up and "
                 "where the others go wrong")
COMPARE_INSTRUCTION = ("Several attempts at this task are given below, each with its reasoning and its "
                       "prediction; they may disagree and any of them may be wrong. Compare them holistically, "
                       "then give the correct outputs.")
_ATTEMPT_FIELD = re.compile(r"^attempt_\d+$")


def describe_attempt(sample: dict[str, Any] | None, outputs: list[str]) -> str:
    """One attempt as the comparison call reads it (the shape of DSPy's student attempts).

    >>> describe_attempt({"reasoning": "2 and 2 make 4.", "answer": 4}, ["answer"])
    "«2 and 2 make 4. I'm not sure, but my prediction is: 4»"
    """
    if sample is None:
        return FAILED_ATTEMPT

    def one(v):
        return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    answer = one(sample.get(outputs[0])) if len(outputs) == 1 else \
        ", ".join(f"{n} = {one(sample.get(n))}" for n in outputs)
    reasoning = (sample.get("reasoning") or "").strip()
    return f"«{reasoning + ' ' if reasoning else ''}I'm not sure, but my prediction is: {answer}»"


class MultiChainComparison(ModuleKind):
    """Sample several chains of thought in parallel, then one call compares them and answers.

    .pipe: `module solve = MultiChainComparison(Word, attempts: 3, temperature: 0.7)`
    """

    kind = "MultiChainComparison"
    doc = "m chain-of-thought attempts in parallel, then one call that compares them all and answers"
    options = {**COMMON_OPTIONS,
               "attempts": OptionSpec("int", f"how many reasoning attempts to compare (default {DEFAULT_ATTEMPTS})",
                                      minimum=2),
               "temperature": OptionSpec("number", f"sampling temperature of the attempts (default "
                                                   f"{DEFAULT_TEMPERATURE}); the comparison uses the LM's",
                                         minimum=0),
               "reasoning": OptionSpec("str", "how the attempts' reasoning field is described to the model (the "
                                              "comparison's own is `rationale`)")}
    extra_outputs = (("rationale", STR, RATIONALE_DOC),)

    @staticmethod
    def validate_decl(decl, program) -> list[tuple[str, str]]:
        sig = program.signatures[decl.signature]
        out = []
        for name, _, _ in sig.inputs + sig.outputs:
            if name == "reasoning" or _ATTEMPT_FIELD.match(name):
                out.append((f"MultiChainComparison module {decl.name} uses the field name '{name}' for its own "
                            f"prompts, and signature {decl.signature} has a field of that name",
                            f"rename the signature's field '{name}'"))
        return out

    def __init__(self, spec):
        super().__init__(spec)
        self.attempts = int(spec.options.get("attempts", DEFAULT_ATTEMPTS))
        self.output_names = [n for n, _, _ in spec.outputs]
        instruction = self.instruction()
        rationale = spec.options.get("reasoning") or DEFAULT_RATIONALE
        self.reason = self.predictor("reason", instruction, spec.inputs,
                                     [("reasoning", STR, rationale)] + list(spec.outputs),
                                     {"temperature": spec.options.get("temperature", DEFAULT_TEMPERATURE)})
        compare_params = dict(spec.sampling)                    # the module's temperature is the attempts'
        if "max_tokens" in spec.options:
            compare_params["max_tokens"] = spec.options["max_tokens"]
        attempt_fields = [(f"attempt_{i + 1}", STR, f"student attempt #{i + 1}: its reasoning and prediction")
                          for i in range(self.attempts)]
        self.compare = Predictor(f"{spec.name}.compare", instruction.strip() + "\n\n" + COMPARE_INSTRUCTION,
                                 list(spec.inputs) + attempt_fields,
                                 [("rationale", STR, RATIONALE_DOC)] + list(spec.outputs), spec.lm, compare_params)

    def predictors(self) -> list[Predictor]:
        return [self.reason, self.compare]

    def max_calls(self) -> int:
        return 2 * (self.attempts + 1)      # m attempts and the comparison, each with at most one parse retry

    async def forward(self, values, ctx):
        results = await ctx.gather(*(settle(self.reason(values, ctx, sample=i)) for i in range(self.attempts)))
        samples = [None if isinstance(r, Exception) else r for r in results]
        if all(s is None for s in samples):
            first = results[0]
            raise ModuleFailure(f"all {self.attempts} attempts failed; the first: {first}", getattr(first, "raw", ""))
        shown = {f"attempt_{i + 1}": describe_attempt(s, self.output_names) for i, s in enumerate(samples)}
        final = await self.compare({**values, **shown}, ctx)
        return {**final, "rationale": final.get("rationale") or ""}
