"""RolePlay: two roles of one LM prompt each other to do a task (CAMEL: Li, Hammoud, Itani,
Khizbullin and Ghanem, 2023, "CAMEL: Communicative Agents for 'Mind' Exploration of Large Language
Model Society", arXiv:2303.17760).

1. The task specifier (`module.specify`) turns the module's instruction, for these inputs, into a
   specific task (CAMEL's task-specifier agent); `specify: false` uses the instruction as it is.
2. Inception prompting: each role's system message states who it is, who the other role is, the
   rules of the conversation and the specified task ("Never forget you are the <user> and I am the
   <assistant>. ... Here is the task: ..."). Then, turn by turn, the user role (`module.user`) gives
   one instruction and the assistant role (`module.assistant`) answers it with a solution; both read
   the conversation so far.
3. The conversation ends when the user role says the task is done (its `task_done` verdict, or
   CAMEL's termination token `<CAMEL_TASK_DONE>` in its instruction, or an empty instruction), or
   after `max_turns` turns; then `module.answer` extracts the signature's outputs from the inputs, the
   task and the conversation.

Decisions the paper leaves open, taken here:
- The roles see the module's inputs as well as the specified task: a detail the specifier left out
  is not lost to them. The task is per input, so it is added to a role's system message at call time
  (`pipec inspect` shows the role's system message without it).
- A "done" verdict in the first turn, before the assistant has answered anything, is not taken when
  the user role also gives an instruction: its own prompt forbids saying so before the task is solved
  (small models often do), and the instruction is carried out.
- The answer is a separate extraction call: the conversation is free text, the outputs are typed.
- A reply that cannot be used even after its retry ends the conversation, never the run: an
  unreadable specification falls back to the instruction as the task, an unreadable user or
  assistant turn ends the conversation there, and the answer is extracted from what was said. Only
  the extraction failing fails the module.

Worst case: (1 if specify) + 2 * max_turns + 1 predictor calls, each with at most one parse retry.
The call result exposes the task and the conversation as `.transcript`.

.pipe:
    module plan = RolePlay(Plan, assistant: "Travel Agent", user: "Traveller", max_turns: 4)
    ... r = plan(request: q) ... r.plan, r.transcript
"""
from __future__ import annotations

from ..dsl.catalogue import OptionSpec
from ..dsl.types import BOOL, STR
from ..prompt import user_message
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, fresh_name

DEFAULT_MAX_TURNS = 4
DONE_TOKEN = "<CAMEL_TASK_DONE>"
SPECIFY = ("Here is a task that {assistant} will help {user} to complete: {task}\n"
           "Make the task more specific for these inputs. Be creative and imaginative, and say what a complete "
           "result must contain. Reply with the specified task in 60 words or fewer; do not do the task.")
USER = ("Never forget you are the {user} and I am the {assistant}. Never flip roles! You will always instruct me. "
        "We share a common interest in collaborating to successfully complete a task, and I must help you to "
        "complete it. Instruct me based on my expertise and your needs to complete the task: give me one "
        "instruction at a time, with any input it needs, and I will write a solution for it. Do not solve the task "
        "yourself. When my solutions have completed the task, say the task is done and give no further "
        "instruction; never say so before.")
ASSISTANT = ("Never forget you are the {assistant} and I am the {user}. Never flip roles! Never instruct me! We "
             "share a common interest in collaborating to successfully complete a task, and you must help me to "
             "complete it. I instruct you based on your expertise and my needs, one instruction at a time. Write a "
             "specific solution that completes the instruction, and explain it. If you cannot perform an "
             "instruction, decline it honestly and explain why.")
ANSWER = ("The {user} and the {assistant} worked on the task in the conversation given. Produce the outputs from "
          "what they worked out.")


class RolePlay(ModuleKind):
    """A specified task, then a user role and an assistant role instructing and answering each other.

    .pipe: `module plan = RolePlay(Plan, assistant: "Travel Agent", user: "Traveller", max_turns: 4)`
    """

    kind = "RolePlay"
    doc = ("CAMEL role-playing: a task specifier, then a user role instructing an assistant role turn by turn "
           "(inception prompting) until the task is done; the answer is extracted from the conversation")
    options = {**COMMON_OPTIONS,
               "assistant": OptionSpec("str", "the role that writes the solutions (default \"Assistant\")"),
               "user": OptionSpec("str", "the role that gives the instructions (default \"User\")"),
               "max_turns": OptionSpec("int", f"most instruction-and-solution turns (default {DEFAULT_MAX_TURNS})",
                                       minimum=1),
               "specify": OptionSpec("bool", "whether a first call makes the task specific to the inputs "
                                             "(default true)")}
    extra_outputs = (("transcript", STR, "the specified task, then the conversation, turn by turn"),)

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.max_turns = int(opts.get("max_turns", DEFAULT_MAX_TURNS))
        self.roles = {"assistant": (opts.get("assistant") or "Assistant").strip(),
                      "user": (opts.get("user") or "User").strip()}
        taken = {n for n, _, _ in spec.inputs + spec.outputs}
        self.f_task, self.f_conversation, self.f_done, self.f_instruction, self.f_solution = (
            fresh_name(n, taken) for n in ("task", "conversation", "task_done", "instruction", "solution"))
        self.task = self.instruction().strip() or "Produce the outputs from the inputs."
        user, assistant = self.roles["user"], self.roles["assistant"]
        conversation = (self.f_conversation, STR, f"what the {user} and the {assistant} said so far")
        self.specify = self.predictor(
            "specify", SPECIFY.format(task=self.task, **self.roles), list(spec.inputs),
            [(self.f_task, STR, "the specified task")]) if opts.get("specify", True) else None
        self.user = self.predictor(
            "user", USER.format(**self.roles), list(spec.inputs) + [conversation],
            [(self.f_done, BOOL, f"true only when the {assistant}'s solutions have completed the task"),
             (self.f_instruction, STR, f"your next instruction to the {assistant}, with any input it needs; "
                                       "empty when the task is done")])
        self.assistant = self.predictor(
            "assistant", ASSISTANT.format(**self.roles),
            list(spec.inputs) + [conversation, (self.f_instruction, STR, f"the {user}'s instruction to answer")],
            [(self.f_solution, STR, "your solution to the instruction")])
        self.answer = self.predictor(
            "answer", f"{self.task}\n\n{ANSWER.format(**self.roles)}",
            list(spec.inputs) + [(self.f_task, STR, "the task"), conversation], list(spec.outputs))

    def predictors(self):
        return ([self.specify] if self.specify else []) + [self.user, self.assistant, self.answer]

    def max_calls(self) -> int:
        return 2 * ((1 if self.specify else 0) + 2 * self.max_turns + 1)

    async def _role(self, p: Predictor, task: str, values, ctx) -> dict:
        """One role's turn, its system message stating its role (the instruction) and then the task."""
        demos = p.knn.select(values) if p.knn is not None else p.demos
        system = f"{p.instruction.strip()}\n\nHere is the task: {task}\nNever forget our task!"
        messages = p.prefix_for(demos, instruction=system) + \
            [{"role": "user", "content": user_message(p.inputs, values)}]
        return await p(values, ctx, messages=messages)

    async def forward(self, values, ctx):
        task = self.task
        if self.specify is not None:
            try:
                task = ((await self.specify(values, ctx)).get(self.f_task) or "").strip() or task
            except ModuleFailure:
                pass                # the task as the instruction gives it; the trace keeps the failed call
        user, assistant = self.roles["user"], self.roles["assistant"]
        said: list[str] = []
        for _ in range(self.max_turns):
            shown = {**values, self.f_conversation: render(said)}
            try:
                turn = await self._role(self.user, task, shown, ctx)
            except ModuleFailure:
                break
            instruction = (turn.get(self.f_instruction) or "").strip()
            # Done before any solution cannot be true (the prompt forbids it); the instruction given stands.
            done = turn.get(self.f_done) and (bool(said) or not instruction)
            if done or DONE_TOKEN in instruction or not instruction:
                said.append(f"{user}: {DONE_TOKEN}")
                break
            said.append(f"{user}: {instruction}")
            try:
                reply = await self._role(self.assistant, task, {**shown, self.f_instruction: instruction}, ctx)
            except ModuleFailure:
                said.append(f"{assistant}: (no usable reply)")
                break
            said.append(f"{assistant}: {(reply.get(self.f_solution) or '').strip()}")
        conversation = render(said)
        out = await self.answer({**values, self.f_task: task, self.f_conversation: conversation}, ctx)
        return {**out, "transcript": f"Task: {task}\n\n{conversation}"}


def render(said: list[str]) -> str:
    """The conversation as the roles and the answer call read it: one paragraph per message.

    >>> render([]), render(["User: Plan lunch.", "Assistant: A bistro."])
    ('(nothing yet)', 'User: Plan lunch.\\n\\nAssistant: A bistro.')
    """
    return "\n\n".join(said) if said else "(nothing yet)"
