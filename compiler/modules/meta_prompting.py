"""MetaPrompting: one LM conducts, delegating sub-tasks to expert instances of itself (Suzgun and
Kalai, 2024, "Meta-Prompting: Enhancing Language Models with Task-Agnostic Scaffolding",
arXiv:2401.12954).

The conductor (the paper's "Meta Model") reads the inputs and everything its experts have said so
far, and each round either consults experts or declares that it is ready to answer:

    Round 1
    Conductor: I need the distance and the time first.                 <- `module.conduct`
    Expert Physicist was asked:                                        (thought, done, consult)
    A train covers 120 km in 1.5 hours. What is its average speed?
    Expert Physicist answered:                                         <- `module.expert`
    80 km/h.
    Round 2
    Conductor: Have the result checked by someone who did not compute it.
    Expert Verifier was asked: ...

Each consultation names an expert ("Expert Mathematician", "Expert Verifier", ...) and gives it a
complete instruction. An expert call has a fresh context: its system message starts with "You are
<the expert>." and its user message is the conductor's instruction and nothing else (no inputs, no
earlier consultations), so the conductor must put everything the expert needs into the instruction,
and an expert asked to check an answer checks it with fresh eyes, as in the paper. The conductor is
told to verify its experts' answers (by consulting another expert) before declaring itself done;
then `module.final` (the conductor's last turn) combines the verified answers into the signature's
outputs from the inputs and the transcript.

Decisions the paper leaves open, taken here:
- One round may consult several experts, run in parallel (`max_experts` per round, default 1: the
  paper's one expert at a time); consultations past the bound are dropped, and the transcript says so.
- `max_rounds` conductor turns at most (the paper stops at 15; the default here is 3). A round that
  is `done`, or that consults no one, ends the consultations: the next turn would see the same
  transcript. A conductor reply that cannot be used even after the retry ends them too.
- An expert whose reply cannot be used is recorded in the transcript as unanswered and the conductor
  carries on (it may ask again); only the final call failing fails the module.
- The final answer is a separate call, as ReAct's extract: the signature's outputs are typed, and the
  conductor's turn schema stays the same whatever the signature.

Worst case: max_rounds * (1 + max_experts) + 1 predictor calls, each of which may retry once.
The call result exposes the transcript as `.transcript`.

.pipe:
    module solve = MetaPrompting(Solve, max_rounds: 3, max_experts: 2)
    ... r = solve(problem: p) ... r.answer, r.transcript
"""
from __future__ import annotations

from ..dsl.catalogue import OptionSpec
from ..dsl.types import BOOL, STR, Type
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, fresh_name, settle

DEFAULT_MAX_ROUNDS = 3
DEFAULT_MAX_EXPERTS = 1

CONSULTATION = Type("record", name="Consultation", fields=(
    ("expert", STR, "who to consult, e.g. Expert Mathematician, Expert Verifier"),
    ("instruction", STR, "the complete instruction: the expert sees nothing else, so include every fact, "
                         "number and constraint it needs"),
))
CONDUCTOR = (
    "You are the conductor: an expert at solving tasks by consulting other experts (Expert Mathematician, "
    "Expert Programmer, Expert Historian, Expert Verifier, ... whoever the task needs) and at checking what "
    "they say. Break the task into sub-tasks and delegate each to a suitable expert with a complete "
    "instruction. Experts have no memory and see nothing but your instruction to them: not the task, not "
    "the inputs, not earlier consultations. Think critically about every answer; before you are done, have "
    "the key results verified, ideally by a different expert who checks them with fresh eyes. When the "
    "answer is verified, set done to true and consult no one.")
EXPERT = ("You were consulted by a conductor who is solving a larger task. Follow the instruction as the "
          "expert you are: answer it precisely and completely, and say so if something you need is missing.")
FINAL = ("You conducted the consultations below to do this task. Give the final answer: combine your experts' "
         "verified answers, and where they disagree, trust those that were checked.")


class MetaPrompting(ModuleKind):
    """A conductor consults expert instances of the same LM, verifies their answers, then answers.

    .pipe: `module solve = MetaPrompting(Solve, max_rounds: 3, max_experts: 2)`
    """

    kind = "MetaPrompting"
    doc = ("meta-prompting: a conductor delegates sub-tasks to experts it describes (each with a fresh context), "
           "verifies their answers, and combines them")
    options = {**COMMON_OPTIONS,
               "max_rounds": OptionSpec("int", f"most conductor turns (default {DEFAULT_MAX_ROUNDS})", minimum=1),
               "max_experts": OptionSpec("int", "most experts consulted in one turn, in parallel (default "
                                                f"{DEFAULT_MAX_EXPERTS})", minimum=1)}
    extra_outputs = (("transcript", STR, "the conductor's turns, and every expert's instruction and answer"),)

    def __init__(self, spec):
        super().__init__(spec)
        self.max_rounds = int(spec.options.get("max_rounds", DEFAULT_MAX_ROUNDS))
        self.max_experts = int(spec.options.get("max_experts", DEFAULT_MAX_EXPERTS))
        taken = {n for n, _, _ in spec.inputs + spec.outputs}
        self.f_history = fresh_name("transcript", taken)
        ins = {n for n, _, _ in spec.inputs} | {self.f_history}
        self.f_thought, self.f_done, self.f_consult = (fresh_name(n, ins) for n in ("thought", "done", "consult"))
        task = self.instruction().strip()
        lead = f"The task: {task}\n\n" if task else ""
        history = (self.f_history, STR, "your consultations so far, round by round: each expert's instruction "
                                        "and answer")
        self.conduct = self.predictor(
            "conduct", f"{CONDUCTOR}\n\n{lead}".strip(), list(spec.inputs) + [history],
            [(self.f_thought, STR, "your reasoning: what is known, what the experts' answers show, whether they "
                                   "are verified, and what to do next"),
             (self.f_done, BOOL, "true when the answer is verified and you are ready to give it"),
             (self.f_consult, Type("list", arg=CONSULTATION),
              f"the experts to consult now, at most {self.max_experts}; empty when done")])
        self.expert = self.predictor(
            "expert", EXPERT, [("instruction", STR, "the conductor's instruction: all you are given")],
            [("answer", STR, "your answer to the instruction")])
        self.final = self.predictor("final", f"{lead}{FINAL}", list(spec.inputs) + [history], list(spec.outputs))

    def predictors(self):
        return [self.conduct, self.expert, self.final]

    def max_calls(self) -> int:
        return 2 * (self.max_rounds * (1 + self.max_experts) + 1)

    async def forward(self, values, ctx):
        lines: list[str] = []
        for r in range(1, self.max_rounds + 1):
            try:
                turn = await self.conduct({**values, self.f_history: render(lines)}, ctx)
            except ModuleFailure:
                break           # as in ReAct: an unreadable turn ends the consultations; the trace keeps it
            lines.append(f"Round {r}")
            lines.append(f"Conductor: {(turn.get(self.f_thought) or '').strip()}")
            asked = [(str(c.get("expert") or "").strip() or "Expert", str(c.get("instruction") or "").strip())
                     for c in turn.get(self.f_consult) or [] if isinstance(c, dict)]
            asked = [(who, what) for who, what in asked if what]
            if turn.get(self.f_done) or not asked:
                lines.append("Conductor: ready to give the final answer" if turn.get(self.f_done) else
                             "Conductor: consulted no one")
                break
            if len(asked) > self.max_experts:
                lines.append(f"({len(asked) - self.max_experts} more consultations dropped: at most "
                             f"{self.max_experts} per round)")
                asked = asked[:self.max_experts]
            answers = await ctx.gather(*(settle(self._consult(who, what, ctx, i))
                                         for i, (who, what) in enumerate(asked)))
            for (who, what), answer in zip(asked, answers, strict=True):
                lines.append(f"{who} was asked:\n{what}")
                lines.append(f"{who} could not answer ({answer})" if isinstance(answer, Exception) else
                             f"{who} answered:\n{answer}")
        transcript = render(lines)
        out = await self.final({**values, self.f_history: transcript}, ctx)
        return {**out, "transcript": transcript}

    async def _consult(self, expert: str, instruction: str, ctx, i: int) -> str:
        """One expert's answer. Its prompt is the expert's identity and the instruction, nothing of the
        task's inputs; `sample` keeps two identical consultations of one round independent draws."""
        shown = {"instruction": instruction}
        messages = self.expert.messages(shown)
        messages = [{"role": "system", "content": f"You are {expert}.\n\n{messages[0]['content']}"}] + messages[1:]
        out = await self.expert(shown, ctx, sample=i, messages=messages)
        return (out.get("answer") or "").strip()


def render(lines: list[str]) -> str:
    """The transcript as the conductor and the final call read it.

    >>> render([]), render(["Round 1", "Conductor: ask"])
    ('(no consultations yet)', 'Round 1\\nConductor: ask')
    """
    return "\n".join(lines) if lines else "(no consultations yet)"
