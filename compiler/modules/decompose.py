"""Decompose: least-to-most prompting — plan sub-questions, solve them in order, compose the answer.

Least-to-most prompting (Zhou et al. 2022, "Least-to-Most Prompting Enables Complex Reasoning in
Large Language Models") breaks a hard problem into simpler sub-problems and solves them in sequence,
each solution conditioned on the answers to the earlier ones. Decomposed prompting (Khot et al.
2022) adds that each sub-task may be delegated to its own specialised handler: the `solver` option
names another declared module that answers every sub-question instead of the built-in solve prompt.

One call of the module makes, in order:

1. `<name>.plan`: from the inputs, a list of at most `max_steps` sub-questions (`steps`), easiest
   first; extra ones are dropped, blank ones skipped.
2. for each sub-question, in order: `<name>.solve` (or the `solver` module) sees the inputs, the
   earlier sub-questions with their answers, and the sub-question; it answers it.
3. `<name>.compose`: from the inputs and every solved step, the signature's outputs.

The result also carries `steps` (the sub-questions) and `step_answers` (their answers).
A sub-question that cannot be answered (a reply that does not parse after its retry) fails the
module: later steps and the composition depend on it. If the planner proposes no sub-question at
all, the composition answers from the inputs alone.

.pipe:
    module solve = Decompose(Answer, max_steps: 3)
    module solve = Decompose(Answer, solver: lookup)      # lookup: any module with a `question: str` input

The `solver` contract (checked statically):
- the sub-question goes to the solver's input `question`, or, if it has none, to its only other
  `str` input (besides `context`);
- an input `context` (str or list[str]), if it has one, receives the earlier sub-questions with
  their answers (one "Q: ... A: ..." entry each; joined by newlines for a str); a solver without
  one gets them prepended to the sub-question's text, so every step still sees the earlier ones;
- any other input must be an input of this module's signature with a compatible type (its value is
  passed along) or optional (it receives nothing);
- the sub-answer is the solver's output `answer`, or its only output, rendered as text.
"""
from __future__ import annotations

from typing import Any

from ..dsl import ast as A
from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type, assignable, show
from ..prompt import render_value
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, decl_option, fresh_name

LIST_STR = Type("list", arg=STR)
DEFAULT_MAX_STEPS = 4
CONTEXT_INPUT = "context"
QUESTION_INPUT = "question"
ANSWER_OUTPUT = "answer"


def _solver_fields(sig) -> tuple[str | None, str | None, str | None]:
    """(question input, context input, answer output) of a solver's signature, by the contract above."""
    inputs = {n: t for n, t, _ in sig.inputs}
    context = CONTEXT_INPUT if CONTEXT_INPUT in inputs else None
    if QUESTION_INPUT in inputs:
        question = QUESTION_INPUT
    else:
        strs = [n for n, t, _ in sig.inputs if n != CONTEXT_INPUT and t.required().kind == "str"]
        question = strs[0] if len(strs) == 1 else None
    outs = [n for n, _, _ in sig.outputs]
    answer = ANSWER_OUTPUT if ANSWER_OUTPUT in outs else (outs[0] if len(outs) == 1 else None)
    return question, context, answer


def _validate(decl: A.ModuleDecl, prog) -> list[tuple[str, str]]:
    """The `solver` option must name a module that fits the contract in the module docstring."""
    ref = decl_option(decl, "solver")
    if not isinstance(ref, A.Ref):
        return []
    solver = prog.modules.get(ref.name)
    if solver is None or solver.signature not in prog.signatures:
        return []                      # an unknown name is reported by the option check
    sig = prog.signatures[solver.signature]
    mine = {n: t for n, t, _ in prog.signatures[decl.signature].inputs}
    where = f"solver {solver.name} of Decompose module {decl.name}"
    problems: list[tuple[str, str]] = []
    question, context, answer = _solver_fields(sig)
    types = {n: t for n, t, _ in sig.inputs}
    if question is None:
        problems.append((f"{where} has no input for the sub-question",
                         f"give signature {solver.signature} an input `question: str`; it receives each sub-question"))
    elif not assignable(STR, types[question]):
        problems.append((f"{where} takes the sub-question in '{question}', which is {show(types[question])}, not str",
                         f"declare `in {question}: str` in signature {solver.signature}"))
    if context is not None and not (assignable(STR, types[context]) or assignable(LIST_STR, types[context])):
        problems.append((f"{where} has an input 'context' of type {show(types[context])}; it receives the "
                         "earlier steps, so it must be str or list[str]",
                         f"declare `in context: list[str]` in signature {solver.signature}, or rename it"))
    for n, t, _ in sig.inputs:
        if n in (question, context):
            continue
        if n in mine:
            if not assignable(mine[n], t):
                problems.append((f"{where} needs input '{n}' as {show(t)}, but signature {decl.signature} "
                                 f"has it as {show(mine[n])}", "make the two types agree"))
        elif not t.optional:
            problems.append((f"{where} needs input '{n}', which Decompose module {decl.name} cannot give it",
                             f"a solver gets the sub-question ('{question or QUESTION_INPUT}'), 'context', and inputs "
                             f"of signature {decl.signature} by name; make '{n}' optional or one of those"))
    if answer is None:
        problems.append((f"{where} has several outputs and none is called 'answer'",
                         f"name the output that answers a sub-question `answer` in signature {solver.signature}"))
    return problems


class Decompose(ModuleKind):
    """Least-to-most: plan sub-questions, solve them in order (each seeing the earlier answers), compose.

    .pipe: `module solve = Decompose(Answer, max_steps: 3, solver: lookup)`
    """

    kind = "Decompose"
    doc = ("least-to-most prompting: plan up to max_steps sub-questions, solve them in order with the earlier "
           "answers in context (optionally with another module), then compose the outputs")
    options = {**COMMON_OPTIONS,
               "max_steps": OptionSpec("int", f"most sub-questions the plan may have (default {DEFAULT_MAX_STEPS})",
                                       minimum=1),
               "solver": OptionSpec("module", "a module that answers each sub-question instead of the built-in "
                                              "solve prompt (it needs a `question: str` input)")}
    extra_outputs = (("steps", LIST_STR, "the sub-questions, in the order they were solved"),
                     ("step_answers", LIST_STR, "the answer to each sub-question"))
    validate_decl = staticmethod(_validate)

    def __init__(self, spec):
        super().__init__(spec)
        self.max_steps = int(spec.options.get("max_steps", DEFAULT_MAX_STEPS))
        self.solver = spec.options.get("solver")
        task = self.instruction().strip() or "Produce the outputs from the inputs."
        # Inner field names must not clash with the fields they share a prompt (and a demo) with.
        ins = {n for n, _, _ in spec.inputs}
        self.f_steps = fresh_name("steps", ins)
        self.f_solved = fresh_name("solved", ins | {n for n, _, _ in spec.outputs})
        self.f_sub = fresh_name("subquestion", ins | {self.f_solved})
        self.f_answer = fresh_name("answer", ins | {self.f_solved, self.f_sub})
        s = "" if self.max_steps == 1 else "s"
        self.plan = self.predictor(
            "plan",
            f"{task}\n\nDo not solve the problem yet. Break it down into at most {self.max_steps} simpler "
            f"sub-question{s}, ordered from the easiest to the one whose answer solves the problem; a later "
            "sub-question may build on the answers to the earlier ones.",
            list(spec.inputs),
            [(self.f_steps, LIST_STR, f"at most {self.max_steps} short sub-question{s}, in the order to solve them")])
        solved_desc = "the sub-questions answered so far, each with its answer"
        self.solve = None if self.solver else self.predictor(
            "solve",
            f"Answer one sub-question of a larger problem, using the answers to the earlier sub-questions.\n"
            f"The larger problem: {task}",
            list(spec.inputs) + [(self.f_solved, STR, solved_desc),
                                 (self.f_sub, STR, "the sub-question to answer now")],
            [(self.f_answer, STR, "a short answer to the sub-question")])
        self.compose = self.predictor(
            "compose",
            f"{task}\n\nThe problem was broken into sub-questions, which were answered in order; use their answers.",
            list(spec.inputs) + [(self.f_solved, STR, "the sub-questions in order, each with its answer")],
            list(spec.outputs))

    def predictors(self):
        # A `solver` module's predictors belong to that module (the Program lists it, by its own name).
        return [p for p in (self.plan, self.solve, self.compose) if p is not None]

    def _solver_module(self):
        return self.spec.env.module(self.solver)

    def max_calls(self) -> int:
        per_step = self._solver_module().max_calls() if self.solver else 2
        return 2 + self.max_steps * per_step + 2

    @staticmethod
    def _entries(steps: list[str], answers: list[str]) -> list[str]:
        return [f"Q: {q}\nA: {a}" for q, a in zip(steps, answers)]

    def _solved_text(self, steps: list[str], answers: list[str]) -> str:
        entries = [f"{i}. {e}" for i, e in enumerate(self._entries(steps, answers), 1)]
        return "\n".join(entries) if entries else "(none yet)"

    async def _solve_with_module(self, values, question: str, steps, answers, ctx) -> str:
        module = self._solver_module()
        sig = module.spec
        inputs = {n: t for n, t, _ in sig.inputs}
        q_field, c_field, a_field = _solver_fields(sig)
        entries = self._entries(steps, answers)
        args: dict[str, Any] = {}
        for n, t, _ in sig.inputs:
            if n == q_field:
                if c_field is None and entries:
                    question = "Earlier sub-questions and their answers:\n" + "\n".join(entries) + \
                               f"\nNow answer: {question}"
                args[n] = question
            elif n == c_field:
                args[n] = entries if inputs[n].required().kind == "list" else "\n".join(entries)
            else:
                args[n] = values.get(n)
        out = await self.spec.env.call_module(self.solver, args, ctx)
        return render_value(out.get(a_field))

    async def forward(self, values, ctx):
        planned = await self.plan(values, ctx)
        steps = [s.strip() for s in (planned.get(self.f_steps) or []) if isinstance(s, str) and s.strip()]
        steps = steps[:self.max_steps]
        answers: list[str] = []
        for i, question in enumerate(steps):
            done = steps[:i]
            try:
                if self.solver:
                    answer = await self._solve_with_module(values, question, done, answers, ctx)
                else:
                    reply = await self.solve({**values, self.f_solved: self._solved_text(done, answers),
                                              self.f_sub: question}, ctx)
                    answer = reply[self.f_answer]
            except ModuleFailure as err:
                raise ModuleFailure(f"step {i + 1} ({question!r}): {err}", getattr(err, "raw", "")) from None
            answers.append(answer)
        out = await self.compose({**values, self.f_solved: self._solved_text(steps, answers)}, ctx)
        return {**out, "steps": steps, "step_answers": answers}
