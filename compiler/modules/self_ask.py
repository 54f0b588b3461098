"""SelfAsk: the model asks itself follow-up questions, answers them, and composes the final answer
(Press et al., 2022, "Measuring and Narrowing the Compositionality Gap in Language Models",
arXiv:2210.03350).

The paper's prompt scaffold, one structured call per line of it:

    Are follow up questions needed here: Yes.         <- `module.ask` (follow_up_needed, follow_up)
    Follow up: Who designed the Eiffel Tower?
    Intermediate answer: Gustave Eiffel's company.    <- `module.intermediate` (intermediate_answer)
    Follow up: Where was Gustave Eiffel born?         <- `module.ask` again
    Intermediate answer: Dijon, France.               <- `module.intermediate`
    So the final answer is: Dijon                     <- `module.final` (the signature's outputs)

`ask` sees the inputs and the transcript so far and says whether another follow-up question is
needed, and which; `intermediate` answers that one question (by itself, or, with the `tool` option,
from the tool's result for the question, as the paper's Self-ask + Search Engine variant);
`final` composes the signature's outputs from the inputs and the transcript. At most
`max_followups` follow-up questions are asked; at the bound, or when `ask` says no more are needed
(or names no question), the final answer is composed. A follow-up step whose reply cannot be used
even after the retry ends the questioning the same way; a failing tool gives the answerer its error
text instead of results. The call result exposes the transcript as `.transcript`.

.pipe:
    tool search(query: str) -> list[str] = python("examples.corpus:search")
    module answer = SelfAsk(Answer, tool: search, max_followups: 3)
    ... r = answer(question: q) ... r.answer, r.transcript
"""
from __future__ import annotations

from ..dsl import ast as A
from ..dsl.catalogue import OptionSpec
from ..dsl.types import BOOL, STR, Type
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind
from .tool_use import (
    call_args,
    call_keys,
    fill_args,
    observe,
    tool_params,
    tool_signature,
    undeclared_problem,
)

DEFAULT_MAX_FOLLOWUPS = 3
NEEDED = "Are follow up questions needed here:"
FOLLOW_UP = "Follow up:"
INTERMEDIATE = "Intermediate answer:"
FINAL = "So the final answer is:"
INNER_FIELDS = ("follow_up_needed", "follow_up", "intermediate_answer", "search_results")


def validate_self_ask(decl: A.ModuleDecl, prog) -> list[tuple[str, str]]:
    """The tool, if any, can be called with the follow-up question alone; signature inputs do not
    shadow the inner predictors' fields."""
    out: list[tuple[str, str]] = []
    opts = {o.name: o.value for o in decl.options}
    ref = opts.get("tool")
    tool = prog.tools.get(ref.name) if isinstance(ref, A.Ref) else None
    if tool is not None:
        hint = ("SelfAsk calls its tool with the follow-up question as the one argument, like a "
                "`tool search(query: str) -> list[str] = python(...)`")
        if tool.params is not None:
            required = [p for p in tool.params if not p.type.optional]
            if len(tool.params) != 1 and len(required) != 1:
                out.append((f"SelfAsk tool {tool.name} must take exactly one required parameter (the follow-up "
                            f"question); it takes {len(required)} required parameters", hint))
            else:
                p = required[0] if len(required) == 1 else tool.params[0]
                if p.type.name not in ("str", "any"):
                    out.append((f"SelfAsk tool {tool.name}: its parameter '{p.name}' is {p.type.name}, but the "
                                "follow-up question is text", hint))
        else:
            problem = undeclared_problem(tool_signature(tool, decl))
            if problem:
                out.append((f"SelfAsk tool {tool.name} has no declared parameters and {problem}", hint))
    sig = prog.signatures.get(decl.signature)
    if sig is not None:
        clash = [n for n, _, _ in sig.inputs if n in INNER_FIELDS]
        if clash:
            out.append((f"SelfAsk module {decl.name}: signature {decl.signature} has an input named "
                        f"{', '.join(map(repr, clash))}, which SelfAsk's inner steps use",
                        "rename the input (" + ", ".join(INNER_FIELDS) + " are SelfAsk's own fields)"))
    return out


class SelfAsk(ModuleKind):
    """Ask and answer follow-up questions one at a time, then compose the final answer.

    .pipe: `module answer = SelfAsk(Answer, tool: search, max_followups: 3)`
    """

    kind = "SelfAsk"
    doc = "self-ask: follow-up questions asked and answered one at a time (optionally with a tool), then the answer"
    options = {**COMMON_OPTIONS,
               "tool": OptionSpec("tool", "answers each follow-up question from this tool's result (e.g. a search)"),
               "max_followups": OptionSpec("int", f"most follow-up questions (default {DEFAULT_MAX_FOLLOWUPS})",
                                           minimum=1)}
    extra_outputs = (("transcript", STR, "the follow-up questions and their intermediate answers"),)
    validate_decl = staticmethod(validate_self_ask)

    def __init__(self, spec):
        super().__init__(spec)
        self.tool: str | None = spec.options.get("tool")
        self.max_followups: int = int(spec.options.get("max_followups", DEFAULT_MAX_FOLLOWUPS))
        self.tool_params = tool_params(spec.env, self.tool) if self.tool and spec.env else []
        self.tool_keys = call_keys(spec.env, self.tool) if self.tool and spec.env else {}
        task = self.instruction().strip()
        lead = task + "\n\n" if task else ""
        transcript = ("transcript", STR, "the follow-up questions asked so far and their intermediate answers")
        self.ask = self.predictor("ask", lead + (
            "Answer by asking yourself simpler follow-up questions first. Given the inputs and the follow-up "
            "questions answered so far: are follow up questions needed here? If so, write the next follow-up "
            "question: one simple question, not answered yet, whose answer is a step toward the final answer."),
            list(spec.inputs) + [transcript],
            [("follow_up_needed", BOOL, f"{NEEDED} true if another follow-up question must be answered before "
              "the final answer, false if the transcript already holds what the final answer needs"),
             ("follow_up", Type("str", optional=True), f"{FOLLOW_UP} the next follow-up question (empty when "
              "none is needed)")])
        inter_inputs = list(spec.inputs) + [transcript, ("follow_up", STR, "the follow-up question to answer")]
        if self.tool:
            inter_inputs.append(("search_results", STR, f"what {self.tool} returned for the follow-up question"))
        self.intermediate = self.predictor("intermediate", lead + (
            "Answer the follow-up question, a step toward the final answer"
            + (f", from the results {self.tool} returned for it." if self.tool else ".")),
            inter_inputs,
            [("intermediate_answer", STR, f"{INTERMEDIATE} a short, direct answer to the follow-up question")])
        self.final = self.predictor("final", lead + (
            "The transcript holds follow-up questions you asked yourself and their intermediate answers. "
            f"{FINAL} compose the outputs from the intermediate answers."),
            list(spec.inputs) + [transcript], list(spec.outputs))

    def predictors(self):
        return [self.ask, self.intermediate, self.final]

    def max_calls(self) -> int:
        return 2 * (2 * self.max_followups + 1)

    async def forward(self, values, ctx):
        lines: list[str] = []
        for i in range(self.max_followups):
            try:
                ask = await self.ask({**values, "transcript": render(lines)}, ctx)
            except ModuleFailure:
                break           # an unreadable step ends the questioning; the trace keeps it
            question = (ask.get("follow_up") or "").strip()
            needed = bool(ask["follow_up_needed"]) and bool(question)
            if i == 0:
                lines.append(f"{NEEDED} {'Yes' if needed else 'No'}.")
            if not needed:
                break
            lines.append(f"{FOLLOW_UP} {question}")
            step = {**values, "transcript": render(lines[:-1]), "follow_up": question}
            if self.tool:
                step["search_results"] = await self._search(question, ctx)
            try:
                answer = (await self.intermediate(step, ctx))["intermediate_answer"]
            except ModuleFailure:
                lines.append(f"{INTERMEDIATE} (no answer)")
                break
            lines.append(f"{INTERMEDIATE} {answer}")
        transcript = render(lines)
        out = await self.final({**values, "transcript": transcript}, ctx)
        return {**out, "transcript": transcript}

    async def _search(self, question: str, ctx):
        """The tool's result for one follow-up question as prompt text, or its error text."""
        try:
            args = call_args(fill_args(self.tool, self.tool_params, question), self.tool_keys)
            return observe(await self.spec.env.call_tool(self.tool, args, ctx))
        except (ValueError, ModuleFailure) as err:
            return f"error: {err}"


def render(lines: list[str]) -> str:
    return "\n".join(lines) if lines else "(none yet)"
