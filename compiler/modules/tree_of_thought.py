"""TreeOfThought: breadth-first search over partial reasoning paths, pruned by an LM evaluator.

Tree of Thoughts (Yao et al. 2023, "Tree of Thoughts: Deliberate Problem Solving with Large Language
Models") keeps a tree whose nodes are partial solutions (a path of "thoughts", each a coherent step
toward the answer), lets the LM propose next thoughts, lets the LM value the resulting states, and
searches the tree. This kind runs the paper's breadth-first variant (ToT-BFS):

    states = [[]]                                         # the root: no thoughts yet
    repeat `depth` times:
        candidates = for each state, `branches` next thoughts  (<name>.expand, sampled in parallel,
                     sample=0..branches-1 at `sample_temperature`: the paper's i.i.d. "sample" generator)
        values     = each candidate valued by <name>.evaluate, `evaluations` times (in parallel),
                     summed
        states     = the `breadth` best distinct candidates (ties keep generation order)
    answer from the best state (<name>.answer) -> the signature's outputs

The evaluator (option `value`) either classifies a state as sure / likely / impossible, as in the
paper's Game of 24 value prompt (worth 20 / 1 / 0.001, summed over evaluations), or gives a number
in 0..1 (`value: "number"`, clamped, summed). The best path is returned as the extra output
`thoughts`.

Failures: a candidate whose expansion does not parse (after its retry) is pruned, and a candidate
whose evaluation does not parse counts as valued 0; if every candidate at some depth fails, the
module fails. LM errors (after the backend's retries) fail the module as usual.

Worst-case calls (`max_calls`): with s_0 = 1 and s_{d+1} = min(breadth, s_d * branches), the search
makes sum over d < depth of s_d * branches * (1 + evaluations) predictor calls, plus one answer call;
each may retry once.

.pipe:
    module solve = TreeOfThought(Puzzle, depth: 2, branches: 3, breadth: 2, value: "label")
"""
from __future__ import annotations

from ..dsl.catalogue import OptionSpec
from ..dsl.types import FLOAT, STR, Type
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, fresh_name

LIST_STR = Type("list", arg=STR)
LABELS = ("sure", "likely", "impossible")
LABEL_VALUE = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}      # the paper's value mapping
DEFAULTS = {"depth": 2, "branches": 3, "breadth": 2, "evaluations": 1, "sample_temperature": 0.7, "value": "label"}


class TreeOfThought(ModuleKind):
    """Breadth-first search over thoughts: expand, value, keep the best, answer from the best path.

    .pipe: `module solve = TreeOfThought(Puzzle, depth: 2, branches: 3, breadth: 2)`
    """

    kind = "TreeOfThought"
    doc = ("tree-of-thoughts breadth-first search: expand each kept state into `branches` thoughts, value them "
           "with the LM, keep the `breadth` best, for `depth` levels; answer from the best path")
    options = {**COMMON_OPTIONS,
               "depth": OptionSpec("int", "levels of the search: thoughts in the final path (default 2)", minimum=1),
               "branches": OptionSpec("int", "candidate next thoughts sampled per kept state (default 3)", minimum=1),
               "breadth": OptionSpec("int", "states kept at each level (default 2)", minimum=1),
               "evaluations": OptionSpec("int", "value samples per candidate, summed (default 1; the paper uses 3)",
                                         minimum=1),
               "value": OptionSpec("str", "how the evaluator values a state: sure/likely/impossible (label, the "
                                          "default) or a number in 0..1", choices=("label", "number")),
               "sample_temperature": OptionSpec("number", "temperature of thought (and repeated value) samples "
                                                          "(default 0.7)", minimum=0)}
    extra_outputs = (("thoughts", LIST_STR, "the best path of thoughts the answer was built on"),)

    def __init__(self, spec):
        super().__init__(spec)
        opt = {k: spec.options.get(k, v) for k, v in DEFAULTS.items()}
        self.depth, self.branches, self.breadth = int(opt["depth"]), int(opt["branches"]), int(opt["breadth"])
        self.evaluations = int(opt["evaluations"])
        self.sample_temperature = float(opt["sample_temperature"])
        self.scale = opt["value"]
        task = self.instruction().strip() or "Produce the outputs from the inputs."
        # Inner field names must not clash with the fields they share a prompt (and a demo) with.
        ins = {n for n, _, _ in spec.inputs}
        self.f_path = fresh_name("path", ins | {n for n, _, _ in spec.outputs})
        self.f_thought = fresh_name("thought", ins | {self.f_path})
        self.f_value = fresh_name("value", ins | {self.f_path})
        path_field = (self.f_path, LIST_STR, "the thoughts so far, in order (empty at the start)")
        self.expand = self.predictor(
            "expand",
            f"{task}\n\nDo not give the final answer yet. Write the next thought: one short, concrete step that "
            "moves the thoughts so far toward the answer without repeating them.",
            list(spec.inputs) + [path_field],
            [(self.f_thought, STR, "the next step of reasoning, one or two sentences")])
        if self.scale == "label":
            value_field = (self.f_value, Type("enum", values=LABELS),
                           "sure if these thoughts lead to a correct answer, likely if they might, "
                           "impossible if they cannot")
            judge = "Judge whether these thoughts can lead to a correct answer: sure, likely or impossible."
        else:
            value_field = (self.f_value, FLOAT, "from 0 (cannot lead to a correct answer) to 1 (surely does)")
            judge = "Rate how likely these thoughts are to lead to a correct answer, from 0 to 1."
        self.evaluate = self.predictor(
            "evaluate", f"{judge}\nThe problem: {task}", list(spec.inputs) + [path_field], [value_field])
        self.answer = self.predictor(
            "answer", f"{task}\n\nBuild the answer on the thoughts given.",
            list(spec.inputs) + [(self.f_path, LIST_STR, "thoughts that work toward the answer, in order")],
            list(spec.outputs))

    def predictors(self):
        return [self.expand, self.evaluate, self.answer]

    def _widths(self) -> list[int]:
        """States expanded at each depth, in the worst case (every candidate distinct and parsed)."""
        widths, states = [], 1
        for _ in range(self.depth):
            widths.append(states)
            states = min(self.breadth, states * self.branches)
        return widths

    def max_calls(self) -> int:
        per_state = self.branches * (1 + self.evaluations)
        return 2 * (sum(w * per_state for w in self._widths()) + 1)

    async def _expand(self, values, path: list[str], i: int, ctx) -> list[str] | None:
        try:
            out = await self.expand({**values, self.f_path: path}, ctx, sample=i,
                                    params={"temperature": self.sample_temperature})
        except ModuleFailure:
            return None                                 # pruned; the trace records why
        thought = (out.get(self.f_thought) or "").strip()
        return path + [thought] if thought else None

    async def _value(self, values, path: list[str], j: int, ctx) -> float:
        params = {"temperature": self.sample_temperature} if self.evaluations > 1 else None
        try:
            out = await self.evaluate({**values, self.f_path: path}, ctx, sample=j, params=params)
        except ModuleFailure:
            return 0.0
        v = out.get(self.f_value)
        if self.scale == "label":
            return LABEL_VALUE.get(v, 0.0)
        return min(1.0, max(0.0, float(v or 0.0)))

    async def forward(self, values, ctx):
        states: list[list[str]] = [[]]
        best: list[str] = []
        for d in range(self.depth):
            grown = await ctx.gather(*(self._expand(values, s, i, ctx) for s in states for i in range(self.branches)))
            candidates: list[list[str]] = []
            for c in grown:
                if c is not None and c not in candidates:       # identical paths are one state
                    candidates.append(c)
            if not candidates:
                raise ModuleFailure(f"no thought at depth {d + 1} could be used (every expansion failed)")
            scores = await ctx.gather(*(self._value(values, c, j, ctx)
                                        for c in candidates for j in range(self.evaluations)))
            totals = [sum(scores[k * self.evaluations:(k + 1) * self.evaluations]) for k in range(len(candidates))]
            order = sorted(range(len(candidates)), key=lambda k: -totals[k])     # stable: ties keep order
            states = [candidates[k] for k in order[:self.breadth]]
            best = states[0]
        out = await self.answer({**values, self.f_path: best}, ctx)
        return {**out, "thoughts": best}
