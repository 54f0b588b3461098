"""Reflexion: attempt, evaluate, reflect in words, attempt again with the reflections in memory (Shinn,
Cassano, Gopinath, Narasimhan and Yao, 2023, "Reflexion: Language Agents with Verbal Reinforcement
Learning", arXiv:2303.11366).

The paper's three roles, one predictor each (plus the actor's retry):
- the Actor answers: `module.answer` from the inputs alone on the first attempt; `module.retry` from
  the inputs and the reflections in memory on later ones;
- the Evaluator scores the attempt: a `check` tool (a metric-like Python function: it gets the
  signature's fields it names as keyword arguments and returns true/false, or a score that passes at
  `threshold`), or without one the LM evaluator `module.evaluate` (feedback, then correct: true/false);
- Self-Reflection (`module.reflection`) reads the failed attempt, what the evaluator said and the earlier
  reflections, and writes a short diagnosis and plan, which goes into the episodic memory.

    for trial in 1..max_trials:
        attempt = answer(inputs) if memory is empty else retry(inputs, memory)
        if evaluate(attempt) passes: stop
        if trial < max_trials: memory += reflection(inputs, attempt, evaluation, memory)

Decisions the paper leaves open, taken here:
- No reflection after the last attempt: no attempt would read it.
- The result is the best attempt: the one that passed, else the one with the highest score (a
  numeric check), the latest among equals (it was made with the most reflections). A true/false
  evaluation scores 1 or 0, so when nothing passes that is the last attempt.
- Memory holds this input's reflections; the actor is shown the latest `memory_size` of them (the
  paper keeps 1-3). With `memory: batch`, reflections are also kept across inputs, in one memory shared
  by every input this loaded program runs (a batch, an eval, repeated calls; a compile scores each
  candidate on fresh modules, so on an empty memory). It is bounded (the latest `memory_size`
  reflections), safe under concurrent rows, and an input is shown its own reflections first, then
  those from other inputs in the room left, marked as such. Results then depend on the order rows run
  in: use concurrency 1 for reproducible runs.
- A reply that cannot be used even after its retry never loses an attempt already made: an unreadable
  evaluation returns the attempt it was evaluating, an unreadable reflection or retry ends the trials
  with the best attempt so far (the next attempt would see the memory the last one saw). Only a first
  attempt that cannot be read fails the module. A check tool that raises fails the module, as
  Refine's does: a broken check would otherwise turn every attempt into a failure.

Worst case: max_trials attempts, max_trials LM evaluations (none with a check tool) and
max_trials - 1 reflections, each call with at most one parse retry. The call result exposes this
input's reflections, in order, as `.reflections`.

.pipe:
    tool grade(question: str, answer: str) -> float = python("mytools:grade")
    module solve = Reflexion(Solve, max_trials: 3, check: grade, threshold: 0.8)
    module solve = Reflexion(Solve, max_trials: 3, memory: "batch")        # the LM evaluates
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ..dsl import ast as A
from ..dsl.catalogue import OptionSpec
from ..dsl.types import BOOL, STR, Type, assignable, show
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, decl_option, fresh_name

DEFAULT_MAX_TRIALS = 3
DEFAULT_MEMORY_SIZE = 3
OTHER_INPUT = "(from another input) "
REFLECT = (
    "You are an agent that improves by reflecting on its own mistakes. Below is an attempt at the task that "
    "was evaluated as not good enough, with the evaluation and your reflections on earlier attempts. In a few "
    "sentences, diagnose why this attempt failed and devise a new, concise, high-level plan that avoids the "
    "same failure. Do not write the answer itself.")
EVALUATE = ("Evaluate an attempt at the task below. Check it carefully against the inputs: is it correct and "
            "complete? Say concretely what is wrong, if anything.")
RETRY = ("You have attempted this kind of task before without success. Your reflections on those attempts "
         "are given: avoid the mistakes they name and follow the plans they make.")


def _validate(decl: A.ModuleDecl, prog) -> list[tuple[str, str]]:
    """The check tool, if any, declares its parameters, each a field of the signature it can take, at
    least one of them an output, and returns bool or a number."""
    check = decl_option(decl, "check")
    if not isinstance(check, A.Ref) or check.name not in prog.tools:
        return []                       # not a tool name: the option check reports it
    sig = prog.signatures[decl.signature]
    fields = {n: t for n, t, _ in sig.inputs + sig.outputs}
    outputs = [n for n, _, _ in sig.outputs]
    example = f"`tool {check.name}({', '.join(f'{n}: {show(fields[n])}' for n in outputs)}) -> bool = ...`"
    params = prog.tool_params.get(check.name)
    out = []
    if params is None:
        return [(f"the check tool {check.name} of Reflexion module {decl.name} does not declare its parameters",
                 f"declare the fields of {decl.signature} it takes (inputs and outputs, by name): {example}")]
    for name, t, required in params:
        if name not in fields:
            if required:
                out.append((f"parameter '{name}' of the check tool {check.name} is not a field of {decl.signature}, "
                            "so Reflexion has nothing to pass it",
                            f"name its parameters after fields of {decl.signature} "
                            f"({', '.join(fields)}), or make '{name}' optional"))
        elif not assignable(fields[name], t):
            out.append((f"parameter '{name}: {show(t)}' of the check tool {check.name} does not take the field "
                        f"'{name}: {show(fields[name])}' of {decl.signature}",
                        f"declare it as `{name}: {show(fields[name])}`"))
    if not any(name in outputs for name, _, _ in params):
        out.append((f"the check tool {check.name} of Reflexion module {decl.name} takes none of the outputs of "
                    f"{decl.signature}, so it cannot judge an attempt", f"for example {example}"))
    ret = prog.tool_returns.get(check.name)
    if ret is not None and ret.required().kind not in ("bool", "int", "float"):
        out.append((f"the check tool {check.name} of Reflexion module {decl.name} returns {show(ret)}",
                    "a check returns true when the attempt is good enough, or a score that passes at `threshold`"))
    return out


class Reflexion(ModuleKind):
    """Attempt, evaluate, reflect, and attempt again with the reflections, for at most `max_trials`.

    .pipe: `module solve = Reflexion(Solve, max_trials: 3, check: grade, memory: "batch")`
    """

    kind = "Reflexion"
    doc = ("verbal reinforcement: attempt, evaluate (a check tool or the LM), reflect on a failure in words, and "
           "attempt again with the reflections in memory")
    options = {**COMMON_OPTIONS,
               "max_trials": OptionSpec("int", f"most attempts (default {DEFAULT_MAX_TRIALS})", minimum=1),
               "check": OptionSpec("tool", "the evaluator: a tool given the signature fields it names; true, or a "
                                           "score at least `threshold`, passes (default: the LM evaluates)"),
               "threshold": OptionSpec("number", "the score at which a check's numeric result passes (default 1)"),
               "memory": OptionSpec("str", "whose reflections an attempt sees: this input's, or also those made on "
                                           "the other inputs this program runs (default input)",
                                    choices=("input", "batch")),
               "memory_size": OptionSpec("int", f"most reflections shown to an attempt, and kept in a batch memory "
                                                f"(default {DEFAULT_MEMORY_SIZE})", minimum=1)}
    extra_outputs = (("reflections", Type("list", arg=STR), "this input's reflections on its failed attempts, "
                                                            "in order"),)
    validate_decl = staticmethod(_validate)
    demo_parts = ("answer",)        # the first attempt answers from the inputs alone

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.max_trials = int(opts.get("max_trials", DEFAULT_MAX_TRIALS))
        self.check: str | None = opts.get("check")
        self.threshold = float(opts.get("threshold", 1))
        self.memory_size = int(opts.get("memory_size", DEFAULT_MEMORY_SIZE))
        self.shared: deque[tuple[object, str]] | None = \
            deque(maxlen=self.memory_size) if opts.get("memory") == "batch" else None
        self._lock = threading.Lock()
        self.outputs = [n for n, _, _ in spec.outputs]
        taken = {n for n, _, _ in spec.inputs + spec.outputs}
        self.f_memory, self.f_evaluation, self.f_feedback, self.f_correct, self.f_reflection = (
            fresh_name(n, taken) for n in ("reflections", "evaluation", "feedback", "correct", "reflection"))
        task = self.instruction().strip()
        attempt = [(n, t, f"the attempt's {n}" + (f": {d}" if d else "")) for n, t, d in spec.outputs]
        memory = (self.f_memory, STR, "reflections on earlier failed attempts, numbered, the latest last")
        self.answer = self.predictor("answer", task, list(spec.inputs), list(spec.outputs))
        self.retry = self.predictor("retry", f"{task}\n\n{RETRY}".strip(), list(spec.inputs) + [memory],
                                    list(spec.outputs))
        self.evaluate = None if self.check else self.predictor(
            "evaluate", f"{EVALUATE}\n\nThe task: {task}", list(spec.inputs) + attempt,
            [(self.f_feedback, STR, "what is wrong with the attempt, concretely, or why it is right"),
             (self.f_correct, BOOL, "true if the attempt is correct and complete")])
        # Named `reflection`, not `reflect`: that is an optimizer's name, which the core never spells.
        self.reflection = self.predictor(
            "reflection", f"{REFLECT}\n\nThe task: {task}",
            list(spec.inputs) + attempt + [(self.f_evaluation, STR, "what the evaluator said about the attempt"),
                                           memory],
            [(self.f_reflection, STR, "why the attempt failed and the plan for the next one, in a few sentences")])

    def predictors(self):
        return [self.answer, self.retry] + ([self.evaluate] if self.evaluate else []) + [self.reflection]

    def max_calls(self) -> int:
        per_trial = 2 if self.evaluate else 1
        return 2 * (self.max_trials * per_trial + self.max_trials - 1)

    def _memory(self, own: list[str], mine: object) -> str:
        """The reflections an attempt is shown: this input's latest, then other inputs' in the room left."""
        shown = own[-self.memory_size:]
        if self.shared is not None and len(shown) < self.memory_size:
            with self._lock:
                others = [OTHER_INPUT + text for who, text in self.shared if who is not mine]
            room = self.memory_size - len(shown)
            shown = others[-room:] + shown
        return "\n".join(f"{i}. {text}" for i, text in enumerate(shown, 1))

    def _remember(self, mine: object, reflection: str) -> None:
        if self.shared is not None:
            with self._lock:
                self.shared.append((mine, reflection))

    async def _judge(self, values, attempt: dict[str, Any], ctx) -> tuple[bool, float, str]:
        """(passed, score, what the evaluator said) for one attempt."""
        if self.evaluate is not None:
            out = await self.evaluate({**values, **attempt}, ctx)
            correct = bool(out.get(self.f_correct))
            return correct, float(correct), (out.get(self.f_feedback) or "").strip() or \
                ("correct" if correct else "not correct")
        fields = {**values, **attempt}
        args = {n: fields[n] for n, _, _ in self.spec.env.tool_params(self.check) or [] if n in fields}
        result = await self.spec.env.call_tool(self.check, args, ctx)
        if isinstance(result, bool):
            return result, float(result), f"the check {self.check} returned {'true' if result else 'false'}"
        # A number: the checker allows only bool, int and float returns, and a call checks the value.
        passed = result >= self.threshold
        return passed, float(result), (f"the check {self.check} scored {result:g} "
                                       f"({'at least' if passed else 'below'} the {self.threshold:g} needed)")

    async def forward(self, values, ctx):
        mine = object()             # tells this call's reflections from other inputs' in a batch memory
        own: list[str] = []
        best: tuple[float, dict[str, Any]] | None = None
        for trial in range(1, self.max_trials + 1):
            memory = self._memory(own, mine)
            try:
                out = await (self.retry({**values, self.f_memory: memory}, ctx) if memory else
                             self.answer(values, ctx))
            except ModuleFailure:
                if best is None:
                    raise
                break
            attempt = {n: out.get(n) for n in self.outputs}
            try:
                passed, score, evaluation = await self._judge(values, attempt, ctx)
            except ModuleFailure:
                if self.evaluate is None:
                    raise               # the check tool failed (the LM evaluator's failures are replies)
                best = (float("inf"), attempt)  # unjudged, but made with the most reflections
                break
            if best is None or score >= best[0]:
                best = (score, attempt)
            if passed or trial == self.max_trials:
                break
            try:
                reflected = await self.reflection({**values, **attempt, self.f_evaluation: evaluation,
                                                   self.f_memory: memory or "(none)"}, ctx)
            except ModuleFailure:
                break
            reflection = (reflected.get(self.f_reflection) or "").strip()
            if not reflection:
                break               # nothing new to remember: the next attempt would repeat this one
            own.append(reflection)
            self._remember(mine, reflection)
        return {**best[1], "reflections": own}
