"""Debate: several agents answer, read each other's answers for a few rounds, then vote or are judged.

Multi-agent debate (Du, Li, Torralba, Tenenbaum and Mordatch, 2023, "Improving Factuality and
Reasoning in Language Models through Multiagent Debate", arXiv:2305.14325):

1. `agents` agents answer the inputs independently, in parallel, each reasoning step by step.
2. In each of `rounds` further rounds, every agent is shown its own latest answer and the other
   agents' latest answers (with their reasoning) and gives an updated answer; the agents of one
   round run in parallel, rounds run one after another.
3. The final answers are aggregated: `judge: "vote"` (the default) takes the majority answer,
   `judge: "judge"` makes one more call in which a judge reads the whole debate and answers.

Agents may run on different LMs: `lms: [a, b]` is cycled over the agents (agent 1 on a, agent 2 on
b, agent 3 on a, ...); without it every agent runs on the module's `lm`, and the judge always does.
Agents that share an LM make numbered independent draws (`sample` = the agent's index), so give
them a temperature above 0 (or different LMs) for the agents to differ.

The vote: each agent's final answer gets one point for every agent (itself included) that gave the
same value for an output field (the same answer by `pipec.vote`'s rule: case, spacing, a final period
and 3 vs 3.0 do not matter); the answer with the most points wins, the earlier agent on ties. With one output field this is a plain
majority vote; with several it picks a whole, consistent answer that agrees most with the others.

An agent whose call fails (a reply that does not parse even after the retry, an LM error) is
recorded in the trace and the transcript: in round 1 it drops out of the debate, in a later round
it keeps its previous answer. The module fails if every agent fails in round 1, if the judge's call
fails, or if the budget refuses any call (a compile out of budget must see it, not a shorter debate).
A debate stops early when fewer than two agents are left to debate.

Predictors (their demos and instructions are tuned like any other's): `name.answer` (round 1) and
`name.update` (later rounds), one pair per LM when `lms` is given (`name.answer.<lm>`,
`name.update.<lm>`), and `name.judge` with `judge: "judge"`. A call's result has the signature's
outputs plus `transcript`, the debate as text, round by round.

.pipe:
    lm cold = "local/smollm2" (temperature: 0)
    lm warm = "local/smollm2" (temperature: 0.9)
    module solve = Debate(Solve, agents: 3, rounds: 2, lms: [cold, warm], judge: "vote")
    ...  r = solve(question: q)   return answer = r.answer, debate = r.transcript
"""
from __future__ import annotations

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR
from ..vote import answer_key
from .base import (COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, decl_option, fresh_name, settle,
                   show_answer)

REASONING = "think step by step about the inputs before answering, in a few sentences"
UPDATE_NOTE = ("Other agents answered the same inputs; their latest answers, with their reasoning, are given "
               "below together with your own previous answer. Use their reasoning as additional advice: "
               "examine your answer and theirs step by step, then give your updated answer.")
JUDGE_NOTE = ("Several agents debated these inputs over a few rounds; the debate is given below. Read it, "
              "weigh the agents' arguments, and give the final answer.")


def _validate(decl, prog) -> list[tuple[str, str]]:
    """More `lms` than agents would leave some LMs unused."""
    agents, lms = decl_option(decl, "agents", 3), decl_option(decl, "lms")
    if isinstance(agents, int) and not isinstance(agents, bool) and isinstance(lms, list) and len(lms) > agents:
        return [(f"Debate module {decl.name} names {len(lms)} lms but has only {agents} agents",
                 f"agents take the lms in turn; use at most {agents} lms, or `agents: {len(lms)}`")]
    return []


class Debate(ModuleKind):
    """Multi-agent debate (Du et al., 2023): independent answers, rounds of updates, a vote or a judge.

    .pipe: `module solve = Debate(Solve, agents: 3, rounds: 2, lms: [a, b, c], judge: "vote")`
    """

    kind = "Debate"
    doc = "several agents answer, update their answers after reading each other's for a few rounds, then vote or a judge decides"
    options = {
        **COMMON_OPTIONS,
        "agents": OptionSpec("int", "how many agents debate (default 3)", minimum=2),
        "rounds": OptionSpec("int", "update rounds after the independent first answers (default 2)", minimum=0),
        "judge": OptionSpec("str", "how the final answer is chosen: a majority vote over the agents' final "
                            "answers, or one judge call that reads the whole debate (default vote)",
                            choices=("vote", "judge")),
        "lms": OptionSpec("lms", "the agents' LMs, taken in turn (default: the module's lm)", minimum=1),
    }
    extra_outputs = (("transcript", STR, "the debate: every agent's answer, round by round"),)
    validate_decl = staticmethod(_validate)

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.n_agents = int(opts.get("agents", 3))
        self.rounds = int(opts.get("rounds", 2))
        self.mode = opts.get("judge", "vote")
        lms = list(opts.get("lms") or [])
        self.agent_lms = [lms[i % len(lms)] for i in range(self.n_agents)] if lms else [spec.lm] * self.n_agents
        taken = {n for n, _, _ in spec.inputs + spec.outputs}
        has_reasoning = any(n == "reasoning" for n, _, _ in spec.outputs)
        self.answer_fields = list(spec.outputs) if has_reasoning else [("reasoning", STR, REASONING)] + list(spec.outputs)
        self.own_field = fresh_name("your_answer", taken)
        self.others_field = fresh_name("other_answers", taken)
        self.debate_field = fresh_name("debate", taken)
        instruction = self.instruction()
        update_inputs = list(spec.inputs) + [
            (self.own_field, STR, "your previous answer, with its reasoning"),
            (self.others_field, STR, "the other agents' latest answers, with their reasoning")]
        self.answer: dict[str, Predictor] = {}
        self.update: dict[str, Predictor] = {}
        for lm in dict.fromkeys(self.agent_lms):
            suffix = f".{lm}" if lms else ""
            params = self.sampling_on(lm)
            self.answer[lm] = Predictor(f"{spec.name}.answer{suffix}", instruction, list(spec.inputs),
                                        self.answer_fields, lm, params)
            if self.rounds:
                self.update[lm] = Predictor(f"{spec.name}.update{suffix}", f"{instruction.strip()}\n\n{UPDATE_NOTE}",
                                            update_inputs, self.answer_fields, lm, params)
        self.judge = None
        if self.mode == "judge":
            self.judge = self.predictor("judge", f"{instruction.strip()}\n\n{JUDGE_NOTE}",
                                        list(spec.inputs) + [(self.debate_field, STR, "the debate, round by round")],
                                        list(spec.outputs))

    def predictors(self):
        return list(self.answer.values()) + list(self.update.values()) + ([self.judge] if self.judge else [])

    def max_calls(self) -> int:
        return 2 * self.n_agents * (1 + self.rounds) + (2 if self.judge else 0)

    def _label(self, i: int) -> str:
        return f"Agent {i + 1}" + (f" ({self.agent_lms[i]})" if "lms" in self.spec.options else "")

    async def forward(self, values, ctx):
        async def attempt(coro):
            out = await settle(coro)           # a spent budget is raised: no debate among fewer agents
            return (None, str(out)) if isinstance(out, Exception) else (out, None)

        fields = self.answer_fields
        lines: list[str] = ["Round 1"]
        results = await ctx.gather(*(attempt(self.answer[self.agent_lms[i]](values, ctx, sample=i))
                                     for i in range(self.n_agents)))
        latest: list[dict | None] = []
        for i, (ans, err) in enumerate(results):
            latest.append(ans)
            lines.append(f"{self._label(i)}: failed ({err})" if ans is None else
                         f"{self._label(i)}:\n{show_answer(ans, fields)}")
        if all(a is None for a in latest):
            raise ModuleFailure(f"every agent of debate {self.name} failed; first: {results[0][1]}")

        for r in range(self.rounds):
            active = [i for i, a in enumerate(latest) if a is not None]
            if len(active) < 2:
                lines.append(f"(the debate stops after round {r + 1}: fewer than two agents are left)")
                break
            lines.append(f"Round {r + 2}")
            calls = []
            for i in active:
                others = "\n\n".join(f"Agent {j + 1}:\n{show_answer(latest[j], fields)}" for j in active if j != i)
                vals = {**values, self.own_field: show_answer(latest[i], fields), self.others_field: others}
                calls.append(attempt(self.update[self.agent_lms[i]](vals, ctx, sample=i)))
            results = await ctx.gather(*calls)
            for i, (ans, err) in zip(active, results):
                if ans is None:
                    lines.append(f"{self._label(i)}: failed ({err}); keeps its previous answer")
                else:
                    latest[i] = ans
                    lines.append(f"{self._label(i)}:\n{show_answer(ans, fields)}")

        final = [(i, a) for i, a in enumerate(latest) if a is not None]
        outputs = [n for n, _, _ in self.spec.outputs]
        if self.judge is not None:
            debate = "\n".join(lines)
            verdict = await self.judge({**values, self.debate_field: debate}, ctx)
            lines.append("Judge:\n" + show_answer(verdict, self.spec.outputs))
            result = {n: verdict.get(n) for n in outputs}
        else:
            keys = [[answer_key(a.get(n)) for n in outputs] for _, a in final]
            support = [sum(sum(1 for other in keys if other[f] == mine[f]) for f in range(len(outputs)))
                       for mine in keys]
            best = support.index(max(support))
            winner, answer = final[best]
            agree = sum(1 for k in keys if k == keys[best])
            lines.append(f"Vote: Agent {winner + 1}'s answer, given by {agree} of {len(final)} agents")
            result = {n: answer.get(n) for n in outputs}
        result["transcript"] = "\n".join(lines)
        return result
