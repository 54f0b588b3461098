"""CRITIC: answer, verify the answer with tools, critique it from what the tools returned, correct it
(Gou, Shao, Gong, Shen, Yang, Duan and Chen, 2024, "CRITIC: Large Language Models Can Self-Correct
with Tool-Interactive Critiquing", arXiv:2305.11738).

    answer = module.answer(inputs)
    repeat at most max_rounds times:
        verify: module.verify steps call the declared tools about the answer  (search the facts it
                relies on, recompute its numbers, run its code), at most max_checks tool calls
        critique = module.critique(inputs, answer, evidence)  -> critique, verified
        if verified: stop                                      (the tools bear the answer out)
        answer = module.correct(inputs, draft answer, evidence, critique)
        if the correction changed nothing: stop                (the paper's stopping rule)

The verification is a ReAct loop (the same steps, tool filling and observations as the ReAct kind,
which it runs): each `verify` step writes a thought, picks a tool (or `finish`) and its input, and
the tool's result, or its error text, is the next observation. `critique` reads that evidence and
says what is wrong, with a verdict; `correct` sees the inputs, the draft (`draft_<field>`), the
evidence and the critique, and gives the corrected outputs.

Decisions the paper leaves open, taken here:
- Each round verifies the current answer afresh: the evidence a correction is built on is about the
  draft it corrects.
- Once an answer exists, a reply that cannot be used even after the retry never loses it: an
  unreadable critique or correction ends the rounds with the latest answer (unreadable verify steps
  end the verification, and the critique works from what was gathered). Only an unreadable first
  answer fails the module. A failing tool is evidence, not a failure: its error text is observed.
- The answer returned is the latest one: the correction of the last round is not verified again
  (another round would be, and `max_rounds` says how many the budget allows).

Worst case: 1 + max_rounds * (max_checks + 2) predictor calls, each with at most one parse retry.
The critiques, in order, are exposed as `.critiques`.

.pipe:
    tool search(query: str) -> list[str] = python("examples.corpus:search")
    tool calculate(expression: str) -> float = python("examples.tools:calculate")
    module answer = CRITIC(Answer, tools: [search, calculate], max_rounds: 2, max_checks: 3)
"""
from __future__ import annotations

from ..dsl import ast as A
from ..dsl.catalogue import OptionSpec
from ..dsl.types import BOOL, STR, Type
from .base import MODULE_SAMPLING, COMMON_OPTIONS, ModuleFailure, ModuleKind, ModuleSpec, fresh_name
from .react import STEP_FIELDS, ReAct, validate_react

DEFAULT_MAX_ROUNDS = 2
DEFAULT_MAX_CHECKS = 3
EVIDENCE = "trajectory"         # the name ReAct gives its steps, shown to the critique
VERIFY = ("Verify a proposed answer to the task below with the tools: look up the facts it relies on, "
          "recompute its numbers, test what can be tested. Do not trust the answer; find evidence for or against it.")
CORRECT = ("A draft answer was verified with tools and critiqued. Write a corrected answer: fix every problem the "
           "critique names, using the evidence, and keep what the evidence confirms.")


def _validate(decl: A.ModuleDecl, prog) -> list[tuple[str, str]]:
    """ReAct's checks of the tools (the verification runs ReAct's loop), and no signature field named like
    a verify step's fields: the answer is shown to the verify steps beside the inputs."""
    out = [(m.replace("ReAct", "CRITIC"), h.replace("ReAct", "CRITIC")) for m, h in validate_react(decl, prog)]
    sig = prog.signatures.get(decl.signature)
    if sig is not None:
        reserved = STEP_FIELDS + (EVIDENCE,)
        # Inputs named like a step's reply fields are reported by ReAct's check already.
        clash = [n for n, _, _ in sig.outputs if n in reserved] + [n for n, _, _ in sig.inputs if n == EVIDENCE]
        if clash:
            out.append((f"CRITIC module {decl.name}: signature {decl.signature} has a field named "
                        f"{', '.join(map(repr, clash))}, which CRITIC's verify steps use",
                        "rename the field (" + ", ".join(reserved) + " are the verify steps' own)"))
    return out


class CRITIC(ModuleKind):
    """Answer, then verify with tools, critique and correct, until the tools bear the answer out.

    .pipe: `module answer = CRITIC(Answer, tools: [search, calculate], max_rounds: 2, max_checks: 3)`
    """

    kind = "CRITIC"
    doc = ("tool-interactive critiquing: answer, verify the answer with tools, critique it from their results and "
           "correct it, until verified")
    options = {**COMMON_OPTIONS,
               "tools": OptionSpec("tools", "the tools that verify an answer, like [search, calculate]", minimum=1),
               "max_rounds": OptionSpec("int", f"most verify-critique-correct rounds (default {DEFAULT_MAX_ROUNDS})",
                                        minimum=1),
               "max_checks": OptionSpec("int", f"most tool calls in one verification (default {DEFAULT_MAX_CHECKS})",
                                        minimum=1)}
    extra_outputs = (("critiques", Type("list", arg=STR), "every critique made, in order"),)
    validate_decl = staticmethod(_validate)
    demo_parts = ("answer",)        # the first answer; the other parts see drafts and evidence

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.max_rounds = int(opts.get("max_rounds", DEFAULT_MAX_ROUNDS))
        self.max_checks = int(opts.get("max_checks", DEFAULT_MAX_CHECKS))
        self.outputs = [n for n, _, _ in spec.outputs]
        taken = {n for n, _, _ in spec.inputs + spec.outputs} | set(STEP_FIELDS) | {EVIDENCE}
        self.f_critique, self.f_verified = fresh_name("critique", taken), fresh_name("verified", taken)
        self.drafts = {n: fresh_name(f"draft_{n}", taken) for n in self.outputs}
        task = self.instruction().strip()
        answer_fields = [(n, t, f"the proposed answer's {n}" + (f": {d}" if d else "")) for n, t, d in spec.outputs]
        verdict = [(self.f_critique, STR, "what the evidence shows is wrong with the answer, concretely, or that it "
                                          "bears the answer out"),
                   (self.f_verified, BOOL, "true if the evidence confirms the answer is correct and complete")]
        self.answer = self.predictor("answer", task, list(spec.inputs), list(spec.outputs))
        # The verification is ReAct's loop, over the answer as well as the inputs; its parts are renamed
        # after this module's, so they are tuned, pinned and traced as `M.verify` and `M.critique`.
        self.verifier = ReAct(ModuleSpec(
            spec.name, f"{VERIFY}\n\nThe task: {task}", list(spec.inputs) + answer_fields, verdict,
            {"tools": opts.get("tools") or [], "max_steps": self.max_checks,
             **{k: opts[k] for k in MODULE_SAMPLING if k in opts}},
            spec.lm, spec.sampling, spec.env))
        self.verify, self.critique = self.verifier.react, self.verifier.extract
        self.verify.name, self.critique.name = f"{spec.name}.verify", f"{spec.name}.critique"
        self.correct = self.predictor(
            "correct", f"{task}\n\n{CORRECT}".strip(),
            list(spec.inputs) + [(self.drafts[n], t, f"the draft answer's {n}") for n, t, _ in spec.outputs]
            + [(EVIDENCE, STR, "the tool calls made to verify the draft, and what they returned"),
               (self.f_critique, STR, "the problems found with the draft")],
            list(spec.outputs))

    def predictors(self):
        return [self.answer, self.verify, self.critique, self.correct]

    def max_calls(self) -> int:
        return 2 + self.max_rounds * (self.verifier.max_calls() + 2)

    async def forward(self, values, ctx):
        outputs = await self.answer(values, ctx)
        critiques: list[str] = []
        for _ in range(self.max_rounds):
            current = {n: outputs.get(n) for n in self.outputs}
            try:
                review = await self.verifier.forward({**values, **current}, ctx)
            except ModuleFailure:
                break               # no critique to act on: keep the latest answer
            critiques.append((review.get(self.f_critique) or "").strip())
            if review.get(self.f_verified):
                break
            try:
                revised = await self.correct({**values, **{self.drafts[n]: v for n, v in current.items()},
                                              EVIDENCE: review[EVIDENCE], self.f_critique: critiques[-1]}, ctx)
            except ModuleFailure:
                break
            unchanged = all(revised.get(n) == outputs.get(n) for n in self.outputs)
            outputs = revised
            if unchanged:
                break               # a fixed point: the next round would verify the very same answer
        return {**{n: outputs.get(n) for n in self.outputs}, "critiques": critiques}
