"""GraphOfThoughts: a declared, bounded graph of operations over LM thoughts.

Graph of Thoughts (Besta et al. 2023, "Graph of Thoughts: Solving Elaborate Problems with Large
Language Models", arXiv:2308.09687) treats LM thoughts as the vertices of a graph whose edges are
dependencies, and runs a "graph of operations" (GoO) over them: generate new thoughts from a
thought, aggregate several thoughts into one (a vertex with several parents, which no tree search
has), refine a thought in a loop, score thoughts, keep the best. This kind runs the GoO written in
its `ops` option, a sequence of operations applied to the current set of thoughts (the frontier):

    ops: [{generate: 3}, score, {keep: 2}, aggregate, {refine: 2}, score]

- `{generate: n}` (`generate` = 1): n new thoughts from each frontier thought, sampled in parallel
  (`<name>.generate`, sample 0..n-1 at `sample_temperature`); the first operation generates n from
  the task itself. The new thoughts replace the frontier; a thought equal to another of the same
  step (by `pipec.vote`'s "same answer" rule) is dropped.
- `{score: n}` (`score` = 1): each frontier thought valued by `<name>.score`, n samples summed, on
  the `value` scale: sure / likely / impossible (20 / 1 / 0.001, TreeOfThought's values) or a number
  in 0..1 (clamped). A score that does not parse counts 0.
- `{keep: n}`: the n best-scored thoughts stay (ties keep their order). No LM call.
- `{aggregate: n}` (`aggregate` = 1): `<name>.aggregate` merges every frontier thought into one;
  n samples give n merged thoughts, the new frontier, each with all merged thoughts as parents.
- `{refine: n}` (`refine` = 1): each frontier thought improved by `<name>.refine` up to n times in
  a loop; a refinement equal to its draft ends that thought's loop (the next would be the same).
Then `<name>.answer` gives the signature's outputs from the best thought of the final frontier (the
highest score when every frontier thought has one, else the first). Calls of one operation run in
parallel. Without `ops`: [{generate: 3}, score, {keep: 2}, aggregate, refine].

Checked statically: operation names and counts, `generate` first (nothing else makes thoughts
from the task), a `score` between a `keep` and the last operation that made thoughts (keep ranks
by score), and no `aggregate` that at most one thought can reach. The GoO is a chain of operations,
each applied to the whole frontier (generate, score and refine thought by thought; aggregate merges
all of it): a subset of the paper's GoOs, which can also route thoughts into separate branches and
merge them in pairs. The graph of thoughts it builds is not a chain: `thoughts` lists every vertex
with its parents.

Worst case (`max_calls`): with f the frontier's largest size (0 before the first operation),
generate n costs max(f, 1)·n calls and makes f = max(f, 1)·n; score n costs f·n; keep n makes
f = min(f, n); aggregate n costs n and makes f = n; refine n costs f·n; plus 1 for the answer. Each
call may retry once, so max_calls is twice that sum.

Failures (a reply that does not parse after its retry, or an LM error): a failed generation is
dropped, and a step whose generations all fail fails the call. A failed refinement keeps its draft. When every sample
of an aggregate fails, the frontier becomes the best n thoughts it had (so no later step has more
thoughts than the bound counted). A failed answer fails the call.

.pipe: `module merge = GraphOfThoughts(Merge, ops: [{generate: 3}, score, {keep: 2}, aggregate, refine])`
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..dsl import ast as A
from ..dsl.catalogue import OptionSpec
from ..dsl.diagnostics import did_you_mean
from ..dsl.types import FLOAT, STR, Type
from ..vote import answer_key
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, decl_option, fresh_name, settle
from .tree_of_thought import LABEL_VALUE, LABELS

LIST_STR = Type("list", arg=STR)
OPERATIONS = ("generate", "score", "keep", "aggregate", "refine")
MAKES_THOUGHTS = ("generate", "aggregate", "refine")
DEFAULT_OPS = [{"generate": 3}, "score", {"keep": 2}, "aggregate", "refine"]
DEFAULT_SAMPLE_TEMPERATURE = 0.7
OPS_DOC = ("the graph of operations, in order: generate, score, keep, aggregate, refine, each as a name or "
           "with a count, like [{generate: 3}, score, {keep: 2}, aggregate, {refine: 2}]")


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of the graph: its name and its count (thoughts, samples, kept, rounds)."""

    name: str
    n: int


def parse_ops(value: Any) -> tuple[list[Op], list[tuple[str, str]]]:
    """The operations written in `ops` (as plain values: names as strings, records as dicts), and
    what is wrong with them as (message, hint) pairs; the operations are meaningful only without problems.

    >>> parse_ops(["generate", {"score": 2}, {"keep": 1}])[0]
    [Op(name='generate', n=1), Op(name='score', n=2), Op(name='keep', n=1)]
    >>> parse_ops([{"generate": 2}, "keep"])[1][0][0]
    "operation 2 ('keep') needs a count: how many thoughts to keep"
    """
    if not isinstance(value, list) or not value:
        return [], [("needs at least one operation", "for example ops: [{generate: 3}, score, {keep: 1}]")]
    ops, problems = [], []
    for i, item in enumerate(value, 1):
        if isinstance(item, dict) and len(item) == 1:
            (name, n), = item.items()
        elif isinstance(item, str):
            name, n = item, None
        else:
            problems.append((f"operation {i} is not an operation name or a one-entry record",
                             "write an operation as `score` or `{generate: 3}`, one per list item"))
            continue
        if name not in OPERATIONS:
            problems.append((f"operation {i} ('{name}') is not an operation",
                             did_you_mean(name, OPERATIONS) or "operations: " + ", ".join(OPERATIONS)))
            continue
        if n is None and name == "keep":
            problems.append((f"operation {i} ('keep') needs a count: how many thoughts to keep",
                             "write it as `{keep: 2}`"))
            continue
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            problems.append((f"the count of operation {i} ('{name}') must be a whole number of at least 1",
                             f"like `{{{name}: 2}}`"))
            continue
        ops.append(Op(name, 1 if n is None else n))
    if problems:
        return ops, problems
    return ops, _order_problems(ops)


def _order_problems(ops: list[Op]) -> list[tuple[str, str]]:
    """What is wrong with the order of well-formed operations."""
    if ops[0].name != "generate":
        return [(f"the first operation is '{ops[0].name}', but only generate makes thoughts from the task",
                 "start with `{generate: 3}` (or `generate`)")]
    problems, scored, width = [], True, 0
    for i, op in enumerate(ops, 1):
        if op.name == "keep" and not scored:
            problems.append((f"operation {i} ('keep') ranks thoughts that no score has valued since the last "
                             "operation that made them", f"put `score` before operation {i}"))
        if op.name == "aggregate" and width < 2:
            problems.append((f"operation {i} ('aggregate') merges thoughts, but at most one thought reaches it",
                             "generate several thoughts first, or keep more than one"))
        scored = op.name == "score" or (scored and op.name not in MAKES_THOUGHTS)
        width = _after(op, width)[1]
    return problems


def _after(op: Op, width: int) -> tuple[int, int]:
    """(predictor calls, frontier size after) of one operation in the worst case, from `width` thoughts."""
    if op.name == "generate":
        return max(width, 1) * op.n, max(width, 1) * op.n
    if op.name == "aggregate":
        return op.n, op.n
    if op.name == "keep":
        return 0, min(width, op.n)
    return width * op.n, width             # score, refine


def worst_case_calls(ops: list[Op]) -> int:
    """Predictor calls of one run in the worst case, the answer included (retries not counted).

    >>> worst_case_calls(parse_ops([{"generate": 3}, "score", {"keep": 2}, "aggregate", {"refine": 2}])[0])
    10
    """
    calls, width = 1, 0
    for op in ops:
        made, width = _after(op, width)
        calls += made
    return calls


def _validate(decl, program) -> list[tuple[str, str]]:
    value = decl_option(decl, "ops")
    if value is None or not isinstance(value, list):
        return []                           # the default, or not a list: the option check says so
    _, problems = parse_ops(A.plain(value))
    return [(f"option 'ops' of GraphOfThoughts module {decl.name}: {message}", hint) for message, hint in problems]


@dataclass(slots=True)
class Thought:
    """A vertex of the graph: its text, the operation that made it, its parents, its latest score."""

    id: int
    text: str
    op: str
    parents: tuple[int, ...]
    score: float | None = None

    def show(self, answered: bool) -> str:
        """`t4 = aggregate(t2, t3), score 20, answered: text`."""
        head = f"t{self.id} = {self.op}({', '.join(f't{p}' for p in self.parents) or 'task'})"
        if self.score is not None:
            head += f", score {self.score:g}"
        return head + (", answered" if answered else "") + f": {self.text}"


class GraphOfThoughts(ModuleKind):
    """Run a declared graph of operations (generate, score, keep, aggregate, refine) over thoughts, then
    answer from the best one.

    .pipe: `module merge = GraphOfThoughts(Merge, ops: [{generate: 3}, score, {keep: 2}, aggregate, refine])`
    """

    kind = "GraphOfThoughts"
    doc = ("graph of thoughts: run a declared sequence of operations (generate, score, keep, aggregate, refine) "
           "over LM thoughts, merging and refining them, then answer from the best thought")
    options = {**COMMON_OPTIONS,
               "ops": OptionSpec("list", OPS_DOC + " (default [{generate: 3}, score, {keep: 2}, aggregate, refine])"),
               "value": OptionSpec("str", "how score values a thought: sure/likely/impossible (label, the default) "
                                          "or a number in 0..1", choices=("label", "number")),
               "sample_temperature": OptionSpec("number", "temperature of repeated samples: generated thoughts, "
                                                          "and score and aggregate samples when there are several "
                                                          f"(default {DEFAULT_SAMPLE_TEMPERATURE})", minimum=0)}
    extra_outputs = (("thoughts", LIST_STR, "every thought of the graph in the order made, as "
                                            "`t4 = aggregate(t2, t3), score 20: text`; the answer's is marked "
                                            "`answered`"),)
    validate_decl = staticmethod(_validate)

    def __init__(self, spec):
        super().__init__(spec)
        ops, problems = parse_ops(spec.options.get("ops", DEFAULT_OPS))
        if problems:
            raise ValueError(f"option 'ops' of GraphOfThoughts module {spec.name}: {problems[0][0]}")
        self.ops = ops
        self.scale = spec.options.get("value", "label")
        self.sample_temperature = float(spec.options.get("sample_temperature", DEFAULT_SAMPLE_TEMPERATURE))
        task = self.instruction().strip() or "Produce the outputs from the inputs."
        ins = {n for n, _, _ in spec.inputs}
        taken = ins | {n for n, _, _ in spec.outputs}
        self.f_thought = fresh_name("thought", taken)
        self.f_parent = fresh_name("parent", ins | {self.f_thought})
        self.f_thoughts = fresh_name("thoughts", ins | {self.f_thought})
        self.f_draft = fresh_name("draft", ins | {self.f_thought})
        self.f_value = fresh_name("value", ins | {self.f_thought})
        out = [(self.f_thought, STR, "a partial or complete solution, in plain text")]
        used = {op.name for op in ops}
        self.parts: dict[str, Predictor] = {}
        if "generate" in used:
            self.parts["generate"] = self.predictor(
                "generate",
                f"{task}\n\nDo not give the final outputs yet. Write one thought: a partial or complete solution "
                "in plain text. When a thought to build on is given, develop it: take it a step further, or "
                "improve or complete it; when none is given, start from the task.",
                list(spec.inputs) + [(self.f_parent, STR, "a thought to build on (empty: start from the task)")], out)
        if "score" in used:
            if self.scale == "label":
                value = (self.f_value, Type("enum", values=LABELS),
                         "sure if this thought leads to a correct answer, likely if it might, impossible if it cannot")
                judge = "Judge whether this thought leads to a correct, complete answer: sure, likely or impossible."
            else:
                value = (self.f_value, FLOAT, "from 0 (cannot lead to a correct answer) to 1 (surely does)")
                judge = "Rate how surely this thought leads to a correct, complete answer, from 0 to 1."
            self.parts["score"] = self.predictor(
                "score", f"{judge}\nThe task: {task}",
                list(spec.inputs) + [(self.f_thought, STR, "a thought about the task")], [value])
        if "aggregate" in used:
            self.parts["aggregate"] = self.predictor(
                "aggregate",
                f"{task}\n\nDo not give the final outputs yet. Several thoughts about the task are given: merge them "
                "into one thought that keeps what is right and useful in each and settles where they disagree.",
                list(spec.inputs) + [(self.f_thoughts, LIST_STR, "the thoughts to merge")], out)
        if "refine" in used:
            self.parts["refine"] = self.predictor(
                "refine",
                f"{task}\n\nDo not give the final outputs yet. Improve the thought given: fix its errors, fill its "
                "gaps, keep what is right. If it needs no change, repeat it unchanged.",
                list(spec.inputs) + [(self.f_draft, STR, "the thought to improve")], out)
        self.answer = self.predictor(
            "answer", f"{task}\n\nBuild the answer on the thought given.",
            list(spec.inputs) + [(self.f_thought, STR, "the best thought about the task")], list(spec.outputs))

    def predictors(self) -> list[Predictor]:
        return list(self.parts.values()) + [self.answer]

    def max_calls(self) -> int:
        return 2 * worst_case_calls(self.ops)

    def _params(self, n: int) -> dict[str, Any] | None:
        """Repeated samples of one prompt differ only at a temperature."""
        return {"temperature": self.sample_temperature} if n > 1 else None

    async def forward(self, values, ctx):
        graph: list[Thought] = []
        frontier: list[Thought] = []

        def made(text: str, op: str, parents: tuple[int, ...]) -> Thought:
            graph.append(Thought(len(graph) + 1, text, op, parents))
            return graph[-1]

        for step, op in enumerate(self.ops, 1):
            if op.name == "generate":
                frontier = await self._generate(values, frontier, op.n, made, ctx)
                if not frontier:
                    raise ModuleFailure(f"no thought could be used from operation {step} (generate): every "
                                        "generation failed")
            elif op.name == "score":
                await self._score(values, frontier, op.n, ctx)
            elif op.name == "keep":
                frontier = _best(frontier, op.n)
            elif op.name == "aggregate":
                frontier = await self._aggregate(values, frontier, op.n, made, ctx)
            else:
                chains = await ctx.gather(*(self._refine(values, t.text, op.n, ctx) for t in frontier))
                # Vertices are numbered once every loop is done, so the graph does not depend on timing.
                frontier = list(frontier)
                for k, chain in enumerate(chains):
                    for text in chain:
                        frontier[k] = made(text, "refine", (frontier[k].id,))
        best = _best(frontier, 1)[0]
        out = await self.answer({**values, self.f_thought: best.text}, ctx)
        return {**out, "thoughts": [t.show(t is best) for t in graph]}

    async def _generate(self, values, frontier: list[Thought], n: int, made, ctx) -> list[Thought]:
        parents = frontier or [None]
        params = {"temperature": self.sample_temperature}
        results = await ctx.gather(*(settle(self.parts["generate"]({**values, self.f_parent: p.text if p else ""},
                                                                   ctx, sample=i, params=params))
                                     for p in parents for i in range(n)))
        out, seen = [], set()
        for k, r in enumerate(results):
            text = "" if isinstance(r, Exception) else (r.get(self.f_thought) or "").strip()
            key = answer_key(text)
            if text and key not in seen:            # a repeat is one thought, not two
                seen.add(key)
                parent = parents[k // n]
                out.append(made(text, "generate", (parent.id,) if parent else ()))
        return out

    async def _score(self, values, frontier: list[Thought], n: int, ctx) -> None:
        results = await ctx.gather(*(settle(self.parts["score"]({**values, self.f_thought: t.text}, ctx, sample=j,
                                                                params=self._params(n)))
                                     for t in frontier for j in range(n)))
        for k, t in enumerate(frontier):
            t.score = sum(self._value(r) for r in results[k * n:(k + 1) * n])

    def _value(self, reply) -> float:
        if isinstance(reply, Exception):
            return 0.0
        v = reply.get(self.f_value)
        if self.scale == "label":
            return LABEL_VALUE.get(v, 0.0)
        return min(1.0, max(0.0, float(v or 0.0)))

    async def _aggregate(self, values, frontier: list[Thought], n: int, made, ctx) -> list[Thought]:
        merged = {**values, self.f_thoughts: [t.text for t in frontier]}
        results = await ctx.gather(*(settle(self.parts["aggregate"](merged, ctx, sample=i, params=self._params(n)))
                                     for i in range(n)))
        texts = [(r.get(self.f_thought) or "").strip() for r in results if not isinstance(r, Exception)]
        parents = tuple(t.id for t in frontier)
        out = [made(text, "aggregate", parents) for text in texts if text]
        # Nothing merged: go on from what there was, but no wider than the bound counted after this step.
        return out or _best(frontier, n)

    async def _refine(self, values, text: str, n: int, ctx) -> list[str]:
        """The successive refinements of one thought (up to n)."""
        chain: list[str] = []
        for _ in range(n):
            r = await settle(self.parts["refine"]({**values, self.f_draft: text}, ctx))
            better = "" if isinstance(r, Exception) else (r.get(self.f_thought) or "").strip()
            if not better or answer_key(better) == answer_key(text):
                break                   # failed (the draft stays), or a fixed point: another round repeats it
            chain.append(better)
            text = better
        return chain


def _best(frontier: list[Thought], n: int) -> list[Thought]:
    """The n best-scored thoughts, ties in their order; the first n when some thought has no score."""
    if any(t.score is None for t in frontier):
        return frontier[:n]
    return sorted(frontier, key=lambda t: -t.score)[:n]
