"""Refine: answer, critique, revise (RCI, Kim et al. 2023, "Language Models can Solve Computer
Tasks"; Self-Refine, Madaan et al. 2023; with a tool as verifier, as in CRITIC, Gou et al. 2023).

The first call answers zero-shot. Then, for at most `rounds` rounds:
1. if a `check` tool is declared, it gets the current outputs as keyword arguments; true means done;
2. the critique call sees the inputs and the current outputs (and, when a check failed, that it
   failed) and names the problems with them (`critique`), with a verdict (`done`);
3. `done: true` ends refinement (unless `stop_on_done: false`; a failed check is never overruled by
   it: the tool is the better judge);
4. the revise call sees the inputs, the current outputs (as `draft_<name>`) and the critique, and
   gives improved outputs; a revision identical to its draft also ends refinement (the next round
   would only critique the same answer again).
Worst case: 1 + 2·rounds predictor calls. The critiques, in order, are exposed as `.critiques`.
"""
from __future__ import annotations

import re

from ..dsl import ast as A
from ..dsl.catalogue import OptionSpec
from ..dsl.types import ANY, BOOL, SCALARS, STR, Type, assignable, show
from .base import COMMON_OPTIONS, ModuleKind, Predictor, decl_option

DEFAULT_ROUNDS = 2
CRITIQUE_DOC = "the problems with the answer, concretely: errors, omissions, what the task asks that it misses"
DONE_DOC = "true if the answer is correct and complete and needs no change"
CHECK_DOC = "the result of an automatic check of the answer"
_RESERVED = ("critique", "done", "check_result")
_DRAFT = re.compile(r"^draft_")


def _ref_type(ref: A.TypeRef, program) -> Type:
    """A tool parameter's declared type, resolved well enough to compare with a signature's field."""
    if ref.name in SCALARS:
        t = Type(ref.name)
    elif ref.name == "enum":
        t = Type("enum", values=tuple(ref.values))
    elif ref.name == "list":
        t = Type("list", arg=_ref_type(ref.arg, program) if ref.arg is not None else ANY)
    else:
        t = program.records.get(ref.name, ANY)
    return Type(t.kind, t.arg, t.values, t.name, t.fields, ref.optional) if ref.optional else t


class Refine(ModuleKind):
    """Answer, then critique and revise for a bounded number of rounds, stopping once it is right.

    .pipe:
        tool is_valid(answer: str) -> bool = python("mytools:is_valid")
        module write = Refine(Write, rounds: 2, check: is_valid)
    """

    kind = "Refine"
    doc = "answer, then up to `rounds` rounds of critique and revision, stopping early on a check or the critique's verdict"
    options = {**COMMON_OPTIONS,
               "rounds": OptionSpec("int", f"most critique-and-revise rounds (default {DEFAULT_ROUNDS})", minimum=1),
               "check": OptionSpec("tool", "a tool given the outputs as keyword arguments; true means done"),
               "stop_on_done": OptionSpec("bool", "whether the critique's done verdict ends refinement early "
                                                  "(default true)")}
    extra_outputs = (("critiques", Type("list", arg=STR), "every critique made, in order"),)
    demo_parts = ("answer",)        # the first answer; critique and revision see other fields

    @staticmethod
    def validate_decl(decl, program) -> list[tuple[str, str]]:
        sig = program.signatures[decl.signature]
        out = []
        for name, _, _ in sig.inputs + sig.outputs:
            if name in _RESERVED or _DRAFT.match(name):
                out.append((f"Refine module {decl.name} uses the field name '{name}' in its critique and revise "
                            f"prompts, and signature {decl.signature} has a field of that name",
                            f"rename the signature's field '{name}'"))
        check = decl_option(decl, "check")
        if not isinstance(check, A.Ref) or check.name not in program.tools:
            return out                          # not a tool name: the option check reports it
        tool = program.tools[check.name]
        outputs = {n: t for n, t, _ in sig.outputs}
        want = ", ".join(f"{n}: {show(t)}" for n, t in outputs.items())
        if tool.params is None:
            out.append((f"the check tool {tool.name} of Refine module {decl.name} does not declare its parameters",
                        f"declare them as the outputs of {decl.signature}: `tool {tool.name}({want}) -> bool = ...`"))
        else:
            params = {p.name: p for p in tool.params}
            missing = [n for n in outputs if n not in params]
            extra = [n for n in params if n not in outputs]
            if missing or extra:
                parts = ([f"lacks {', '.join(missing)}"] if missing else []) + \
                        ([f"has {', '.join(extra)}, which {'is' if len(extra) == 1 else 'are'} not "
                          f"output{'s' * (len(extra) != 1)} of {decl.signature}"] if extra else [])
                out.append((f"the check tool {tool.name} of Refine module {decl.name} receives the outputs of "
                            f"{decl.signature} as keyword arguments, but its parameter list " + " and ".join(parts),
                            f"declare it as `tool {tool.name}({want}) -> bool`"))
            for n, t in outputs.items():
                if n in params and not assignable(t, _ref_type(params[n].type, program)):
                    out.append((f"parameter '{n}' of the check tool {tool.name} does not take the output "
                                f"'{n}: {show(t)}' of {decl.signature}",
                                f"declare it as `{n}: {show(t)}`"))
        ret = program.tool_returns.get(tool.name)
        if ret is not None and ret.required().kind != BOOL.kind:
            out.append((f"the check tool {tool.name} of Refine module {decl.name} returns {show(ret)}, not bool",
                        "a check returns true when the outputs are good enough"))
        return out

    def __init__(self, spec):
        super().__init__(spec)
        self.rounds = int(spec.options.get("rounds", DEFAULT_ROUNDS))
        self.check = spec.options.get("check")
        self.stop_on_done = spec.options.get("stop_on_done", True)
        self.output_names = [n for n, _, _ in spec.outputs]
        instruction = self.instruction().strip()
        self.answer = self.predictor("answer", instruction, spec.inputs, spec.outputs)
        answer_fields = [(n, t, f"the answer's {n}" + (f": {d}" if d else "")) for n, t, d in spec.outputs]
        check_field = [("check_result", STR, CHECK_DOC)] if self.check else []
        self.critique = self.predictor(
            "critique",
            "Review an answer to the task below. Find the problems with it: errors, omissions, anything the task "
            "asks for that it does not do. If it is correct and complete, say so and set done to true.\n\n"
            f"The task: {instruction}",
            list(spec.inputs) + answer_fields + check_field,
            [("critique", STR, CRITIQUE_DOC), ("done", BOOL, DONE_DOC)])
        drafts = [(f"draft_{n}", t, f"the earlier answer's {n}") for n, t, _ in spec.outputs]
        self.revise = self.predictor(
            "revise",
            f"{instruction}\n\nAn earlier answer was reviewed. Write an improved answer: fix every problem the "
            "critique names and keep what was right.",
            list(spec.inputs) + drafts + [("critique", STR, "the problems found in the earlier answer")],
            spec.outputs)

    def predictors(self) -> list[Predictor]:
        return [self.answer, self.critique, self.revise]

    def max_calls(self) -> int:
        return 2 * (1 + 2 * self.rounds)    # the answer, then per round a critique and a revision; each may retry

    async def forward(self, values, ctx):
        outputs = await self.answer(values, ctx)
        critiques: list[str] = []
        for _ in range(self.rounds):
            extra = {}
            if self.check:
                args = {n: outputs.get(n) for n in self.output_names}
                if await self.spec.env.call_tool(self.check, args, ctx):
                    break
                extra["check_result"] = f"{self.check} returned false: the answer does not pass this check"
            review = await self.critique({**values, **outputs, **extra}, ctx)
            critiques.append(review.get("critique") or "")
            if review.get("done") and self.stop_on_done and not self.check:
                break
            drafts = {f"draft_{n}": outputs.get(n) for n in self.output_names}
            revised = await self.revise({**values, **drafts, "critique": critiques[-1]}, ctx)
            unchanged = all(revised.get(n) == outputs.get(n) for n in self.output_names)
            outputs = revised
            if unchanged:
                break           # a fixed point: the next round would critique the very same answer
        return {**outputs, "critiques": critiques}
