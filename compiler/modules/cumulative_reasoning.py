"""CumulativeReasoning: a proposer, verifiers and a reporter build up verified propositions.

Cumulative Reasoning (Zhang et al. 2023, "Cumulative Reasoning with Large Language Models",
arXiv:2308.04371) has three roles: a proposer suggests the next step from the context, verifiers
check it and add it to the context only if it holds, and a reporter decides when the context is
enough and reports the answer. This kind runs, for at most `max_steps` steps:

1. `<name>.propose` sees the inputs, the propositions accepted so far and those rejected so far,
   and proposes one new proposition (`sample` = the step, so a step after a rejection is a fresh
   draw). An empty proposition, or one equal to an accepted or rejected one (by `pipec.vote`'s
   "same answer" rule), ends the step unverified: it would only be judged again.
2. `verifiers` calls of `<name>.verify` (in parallel; with several, independent draws at
   `sample_temperature`) each reason about it and say valid or invalid. `accept: "majority"` (the
   default) accepts it when more than half of the verifiers say valid, `accept: "all"` when every
   one does; a verifier whose reply does not parse says nothing, which counts against the
   proposition (it vouched for nothing).
3. An accepted proposition joins the context, and `<name>.report` sees the inputs and every
   accepted proposition, gives the signature's outputs (the answer they support) and `done`;
   `done: true` ends the run. A rejected one is only shown to later proposals, as rejected.

The answer is the latest report's outputs: the reporter answers on every new context, so at the
step bound no further call is needed. Only when no report was made on the final context (no
proposition was accepted, or the last report did not parse) is the reporter asked once more, and
only while that keeps within the bound (it always does unless every step made a report); otherwise
the latest earlier report stands, and with none the call fails.

Design choices the paper leaves open: the reporter answers as it judges (one call, not a judge and
then an answerer); rejected propositions are shown to the proposer so that it does not repeat them;
a proposer reply that does not parse uses up its step.

Worst case: every step proposes, verifies and reports, so max_steps · (2 + verifiers) predictor
calls, each of which may retry once. The accepted propositions, in order, are the extra output
`propositions`.

.pipe: `module solve = CumulativeReasoning(Deduce, max_steps: 4, verifiers: 3, accept: "majority")`
"""
from __future__ import annotations

from typing import Any

from ..dsl.catalogue import OptionSpec
from ..dsl.types import BOOL, STR, Type
from ..vote import answer_key
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, fresh_name, settle

LIST_STR = Type("list", arg=STR)
VERDICTS = ("valid", "invalid")
DEFAULTS = {"max_steps": 4, "verifiers": 1, "accept": "majority", "sample_temperature": 0.7}


def accepted(verdicts: list[str | None], rule: str) -> bool:
    """Whether a proposition passes: more than half of the verifiers (`majority`) or every one (`all`)
    said valid; None is a verifier that failed.

    >>> accepted(["valid", "invalid", "valid"], "majority"), accepted(["valid", None], "majority")
    (True, False)
    >>> accepted(["valid", "valid"], "all"), accepted(["valid", None], "all")
    (True, False)
    """
    yes = sum(v == "valid" for v in verdicts)
    return yes == len(verdicts) if rule == "all" else 2 * yes > len(verdicts)


class CumulativeReasoning(ModuleKind):
    """Propose a proposition, verify it, keep it if it holds, report once the answer is reached.

    .pipe: `module solve = CumulativeReasoning(Deduce, max_steps: 4, verifiers: 3)`
    """

    kind = "CumulativeReasoning"
    doc = ("cumulative reasoning: a proposer suggests propositions one at a time, verifiers accept or reject "
           "each, accepted ones build the context, and a reporter answers and decides when it is done")
    options = {**COMMON_OPTIONS,
               "max_steps": OptionSpec("int", f"most propositions proposed (default {DEFAULTS['max_steps']})",
                                       minimum=1),
               "verifiers": OptionSpec("int", f"verifier calls per proposition (default {DEFAULTS['verifiers']})",
                                       minimum=1),
               "accept": OptionSpec("str", "which verdicts accept a proposition: more than half valid (majority, "
                                           "the default) or every one", choices=("majority", "all")),
               "sample_temperature": OptionSpec("number", "temperature of the verifiers' independent draws when there "
                                                          f"are several (default {DEFAULTS['sample_temperature']})",
                                                minimum=0)}
    extra_outputs = (("propositions", LIST_STR, "the propositions the verifiers accepted, in order"),)

    def __init__(self, spec):
        super().__init__(spec)
        opt = {k: spec.options.get(k, v) for k, v in DEFAULTS.items()}
        self.max_steps, self.verifiers = int(opt["max_steps"]), int(opt["verifiers"])
        self.rule, self.sample_temperature = opt["accept"], float(opt["sample_temperature"])
        task = self.instruction().strip() or "Produce the outputs from the inputs."
        ins = {n for n, _, _ in spec.inputs}
        self.f_props = fresh_name("propositions", ins)
        self.f_rejected = fresh_name("rejected", ins | {self.f_props})
        self.f_prop = fresh_name("proposition", ins | {self.f_props})
        self.f_reasoning = fresh_name("reasoning", ins | {self.f_props, self.f_prop})
        self.f_verdict = fresh_name("verdict", ins | {self.f_props, self.f_prop, self.f_reasoning})
        self.f_done = fresh_name("done", ins | {self.f_props} | {n for n, _, _ in spec.outputs})
        props = (self.f_props, LIST_STR, "propositions established so far, in order (verified)")
        self.propose = self.predictor(
            "propose",
            f"{task}\n\nDo not answer yet. Reason one step at a time: propose one new proposition, a short statement "
            "that follows from the inputs and the propositions established so far and brings the answer closer. "
            "Do not repeat an established proposition or a rejected one.",
            list(spec.inputs) + [props, (self.f_rejected, LIST_STR, "propositions found wrong: do not propose "
                                                                    "them again")],
            [(self.f_prop, STR, "one new proposition, a single short statement")])
        self.verify = self.predictor(
            "verify",
            f"Check one proposed step of reasoning for this task: {task}\n\nDecide whether the proposition is "
            "correct and follows from the inputs and the propositions established so far. Reason briefly, then "
            "give the verdict.",
            list(spec.inputs) + [props, (self.f_prop, STR, "the proposition to check")],
            [(self.f_reasoning, STR, "a short check of the proposition against the inputs and the propositions"),
             (self.f_verdict, Type("enum", values=VERDICTS),
              "valid if the proposition is correct and follows from what is given, invalid otherwise")])
        self.report = self.predictor(
            "report",
            f"{task}\n\nAnswer from the inputs and the propositions established so far, and say whether they settle "
            "the answer or more steps of reasoning are needed.",
            list(spec.inputs) + [props],
            list(spec.outputs) + [(self.f_done, BOOL, "true if the propositions settle this answer, false if more "
                                                      "steps are needed")])

    def predictors(self) -> list[Predictor]:
        return [self.propose, self.verify, self.report]

    def max_calls(self) -> int:
        return 2 * self.max_steps * (2 + self.verifiers)     # propose, verify, report every step; each may retry

    async def forward(self, values, ctx):
        props: list[str] = []
        rejected: list[str] = []
        seen: set[str] = set()
        latest: dict[str, Any] | None = None        # the newest report that parsed ...
        latest_on = -1                              # ... and how many propositions it saw
        reports = 0
        verify_params = {"temperature": self.sample_temperature} if self.verifiers > 1 else None
        for step in range(self.max_steps):
            r = await settle(self.propose({**values, self.f_props: props, self.f_rejected: rejected}, ctx,
                                          sample=step))
            prop = "" if isinstance(r, Exception) else (r.get(self.f_prop) or "").strip()
            if not prop or answer_key(prop) in seen:
                continue
            seen.add(answer_key(prop))
            checks = await ctx.gather(*(settle(self.verify({**values, self.f_props: props, self.f_prop: prop}, ctx,
                                                           sample=i, params=verify_params))
                                        for i in range(self.verifiers)))
            if not accepted([None if isinstance(c, Exception) else c.get(self.f_verdict) for c in checks], self.rule):
                rejected.append(prop)
                continue
            props.append(prop)
            reports += 1
            out = await settle(self.report({**values, self.f_props: props}, ctx))
            if isinstance(out, Exception):
                continue                            # not done: the next step may still settle it
            latest, latest_on = out, len(props)
            if out.get(self.f_done):
                break
        if latest_on != len(props) and reports < self.max_steps:
            out = await settle(self.report({**values, self.f_props: props}, ctx))
            if not isinstance(out, Exception):
                latest = out
            elif latest is None:
                raise ModuleFailure(f"the report failed: {out}", getattr(out, "raw", ""))
        if latest is None:
            raise ModuleFailure(f"no report could be used after {self.max_steps} steps")
        return {**{n: latest.get(n) for n, _, _ in self.spec.outputs}, "propositions": props}
