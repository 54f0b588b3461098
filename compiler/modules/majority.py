"""Majority: self-consistency (Wang et al. 2023, "Self-Consistency Improves Chain of Thought
Reasoning in Language Models").

Instead of one greedy chain of thought, sample `n` reasoning paths of the same chain-of-thought prompt
at a temperature (in parallel, each an independent draw: `sample=0..n-1`), then marginalize the
reasoning out: the most frequent answer wins. Answers are compared by `pipec.vote`'s rule (case,
whitespace, a final period, 3 == 3.0 do not matter), over one output (`field`) or all outputs
jointly; a tie goes to the earliest sample. The winner's outputs and reasoning are returned, with the tally in
`.votes` ("4: 3, 5: 2"). A sample whose reply does not parse is left out of the vote; only when every
sample fails does the call fail (and a call the budget refuses fails the call: a compile out of
budget sees it, not a vote over fewer samples).
"""
from __future__ import annotations

import json
from typing import Any

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR
from ..vote import answer_key, count_votes
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, field_option_problems, settle
from .chain_of_thought import DEFAULT_RATIONALE

DEFAULT_N = 5
DEFAULT_TEMPERATURE = 0.7


def show_value(outputs: dict[str, Any], fields: list[str]) -> str:
    """How one answer is written in the tally: the value alone, or `a=1, b=x` for several fields."""
    def one(v):
        return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    if len(fields) == 1:
        return one(outputs.get(fields[0]))
    return ", ".join(f"{f}={one(outputs.get(f))}" for f in fields)


def tally(samples: list[dict[str, Any] | None], fields: list[str]) -> tuple[int, str]:
    """The index of the winning sample and the tally text; `None` samples failed.

    Most votes win; among equal counts, the answer first given (earliest sample) wins. "The same
    answer" is `pipec.vote`'s rule, the one every vote uses.

    >>> tally([{"a": "x"}, {"a": "Y"}, None, {"a": "y."}], ["a"])
    (1, 'Y: 2, x: 1 (1 sample failed)')
    """
    ranking = count_votes([None if s is None else answer_key(*(s.get(f) for f in fields)) for s in samples])
    text = ", ".join(f"{show_value(samples[first], fields)}: {votes}" for _, votes, first in ranking)
    failed = sum(s is None for s in samples)
    if failed:
        text += f" ({failed} sample{'s' * (failed != 1)} failed)"
    return ranking[0][2], text


class Majority(ModuleKind):
    """Sample n chains of thought at a temperature, in parallel, and return the most common answer.

    .pipe: `module solve = Majority(Word, n: 5, temperature: 0.7, field: answer)`
    """

    kind = "Majority"
    doc = "self-consistency: n chain-of-thought samples in parallel, then a majority vote over the answers"
    options = {**COMMON_OPTIONS,
               "temperature": OptionSpec("number", f"sampling temperature of the n samples (default "
                                                   f"{DEFAULT_TEMPERATURE}; overrides the LM's)", minimum=0),
               "n": OptionSpec("int", f"how many reasoning paths to sample (default {DEFAULT_N})", minimum=1),
               "field": OptionSpec("name", "the output that votes, like `field: answer` (default: all outputs jointly)"),
               "rationale": OptionSpec("str", "how the reasoning field is described to the model")}
    extra_outputs = (("reasoning", STR, "the reasoning of the winning sample"),
                     ("votes", STR, "the tally of the vote, most votes first, like \"4: 3, 5: 2\""))
    demo_parts, demo_extras = ("reason",), (("reasoning", STR, DEFAULT_RATIONALE),)   # every sample reads them

    @staticmethod
    def validate_decl(decl, program) -> list[tuple[str, str]]:
        return field_option_problems(decl, program, "Majority")

    def __init__(self, spec):
        super().__init__(spec)
        self.n = int(spec.options.get("n", DEFAULT_N))
        field = spec.options.get("field")
        self.fields = [field] if field else [n for n, _, _ in spec.outputs]
        rationale = spec.options.get("rationale") or DEFAULT_RATIONALE
        self.reason = self.predictor("reason", self.instruction(), spec.inputs,
                                     [("reasoning", STR, rationale)] + list(spec.outputs),
                                     {"temperature": spec.options.get("temperature", DEFAULT_TEMPERATURE)})

    def predictors(self) -> list[Predictor]:
        return [self.reason]

    def max_calls(self) -> int:
        return 2 * self.n          # n samples, each with at most one parse retry

    async def forward(self, values, ctx):
        results = await ctx.gather(*(settle(self.reason(values, ctx, sample=i)) for i in range(self.n)))
        samples = [None if isinstance(r, Exception) else r for r in results]
        if all(s is None for s in samples):
            first = results[0]
            raise ModuleFailure(f"all {self.n} samples failed; the first: {first}", getattr(first, "raw", ""))
        best, votes = tally(samples, self.fields)
        winner = samples[best]
        return {**winner, "reasoning": winner.get("reasoning") or "", "votes": votes}
