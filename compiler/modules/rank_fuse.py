"""RankFuse: candidates from several modules and LMs, ranked pairwise, the best fused into one answer.

LLM-Blender (Jiang, Ren and Lin, 2023, "LLM-Blender: Ensembling Large Language Models with Pairwise
Ranking and Generative Fusion", arXiv:2306.02561):

1. Candidates: every module named in `candidates: [m1, m2]` (each implements a signature with the
   same inputs and outputs as this module) and one built-in predictor per LM named in `lms: [a, b]`
   answer the inputs, all in parallel.
2. PairRanker: for N candidates, every ordered pair (i, j), i != j, is compared by one ranking call
   that says which of the two is better: N(N-1) comparisons, each pair shown in both orders so the
   position of a candidate in the prompt cannot decide for it. The comparisons run in parallel. A
   candidate scores a win per comparison it wins; candidates are ordered by wins, the earlier
   candidate on ties.
3. GenFuser: one call reads the top `k` candidates (default 2), best first, and writes the final
   outputs, merging their strengths. With `k: 1` there is nothing to merge: the top candidate's
   outputs are the result and no fuser call is made.

A candidate that fails (its module fails, a reply does not parse after the retry, an LM error) is
recorded in the trace and left out; a failed comparison counts as a win for neither. The module
fails if every candidate fails, if the fuser's call fails, or if the budget refuses any call (a
compile out of budget must see it, not a ranking of fewer candidates). The ranker and fuser run on the
module's `lm`; an `lms` candidate runs on its LM with that LM's declared sampling (the module's
temperature and max_tokens override it); an LM named twice makes two numbered independent draws.

Predictors: `name.generate.<lm>` per LM in `lms`, `name.rank`, and `name.fuse` (when k > 1); the
candidate modules keep their own. A call's result has the signature's outputs plus `ranking`, the
candidates best first (module names, and `lm:<name>` or `lm:<name>#2` for LM candidates).

.pipe:
    module direct  = Predict(Answer)
    module stepwise = ChainOfThought(Answer)
    module answer  = RankFuse(Answer, candidates: [direct, stepwise], lms: [local], k: 2)
"""
from __future__ import annotations

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type, show
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, decl_option, fresh_name, settle, show_answer

RANK_NOTE = ("Two candidate answers to the inputs are given, A and B. Judge which one answers the inputs "
             "better (more correct, more complete, better following the task), and say which: A or B.")
FUSE_NOTE = ("Several candidate answers to the inputs are given, best first. Merge them into one answer "
             "that keeps the strengths of each and fixes their mistakes, better than any single candidate.")


def _fields(sig) -> tuple[dict[str, Type], dict[str, Type]]:
    return {n: t for n, t, _ in sig.inputs}, {n: t for n, t, _ in sig.outputs}


def _describe(fields: dict[str, Type]) -> str:
    return ", ".join(f"{n}: {show(t)}" for n, t in fields.items()) or "none"


def _validate(decl, prog) -> list[tuple[str, str]]:
    """Candidates must fit this module's signature; there must be two candidates; k must fit them."""
    problems: list[tuple[str, str]] = []
    cands = decl_option(decl, "candidates") or []
    lms = decl_option(decl, "lms") or []
    cands = cands if isinstance(cands, list) else []
    lms = lms if isinstance(lms, list) else []
    names = [getattr(c, "name", None) for c in cands]
    ins, outs = _fields(prog.signatures[decl.signature])
    seen: set[str] = set()
    for name in names:
        if name is None or name not in prog.modules:
            continue                        # a wrong type or an unknown name is reported by the checker
        if name in seen:
            problems.append((f"RankFuse module {decl.name} lists candidate {name} twice",
                             "each candidate module is listed once; to draw twice from one LM, list it twice in `lms`"))
            continue
        seen.add(name)
        if name == decl.name:
            continue                        # reported as a module cycle
        other = prog.modules[name]
        sig = prog.signatures.get(other.signature)
        if sig is None:
            continue
        c_ins, c_outs = _fields(sig)
        if c_ins != ins or c_outs != outs:
            problems.append((
                f"candidate {name} of RankFuse module {decl.name} implements {other.signature} "
                f"({_describe(c_ins)} -> {_describe(c_outs)}), which does not have the same inputs and outputs "
                f"as {decl.signature} ({_describe(ins)} -> {_describe(outs)})",
                f"a candidate answers the same inputs with the same outputs; declare {name} with signature "
                f"{decl.signature}"))
    total = len(cands) + len(lms)
    if total < 2:
        problems.append((f"RankFuse module {decl.name} has {total} candidate{'s' * (total != 1)}; it needs at least 2",
                         "name candidate modules with `candidates: [a, b]` and/or LMs with `lms: [x, y]`"))
    k = decl_option(decl, "k", 2)
    if isinstance(k, int) and not isinstance(k, bool) and total >= 2 and k > total:
        problems.append((f"RankFuse module {decl.name} fuses the top {k} candidates but has only {total}",
                         f"use `k: {total}` or fewer"))
    return problems


class RankFuse(ModuleKind):
    """LLM-Blender (Jiang et al., 2023): candidates in parallel, PairRanker over every pair, GenFuser of the top k.

    .pipe: `module answer = RankFuse(Answer, candidates: [direct, stepwise], lms: [a, b], k: 2)`
    """

    kind = "RankFuse"
    doc = "candidates from several modules and LMs, ranked by pairwise comparisons, the top k fused into one answer"
    options = {
        **COMMON_OPTIONS,
        "candidates": OptionSpec("modules", "modules whose answers are candidates (same inputs and outputs as this "
                                 "module)", minimum=1),
        "lms": OptionSpec("lms", "LMs that each answer with a built-in predictor, as one more candidate each",
                          minimum=1),
        "k": OptionSpec("int", "how many of the best candidates the fuser merges (default 2; 1 = take the best)",
                        minimum=1),
    }
    extra_outputs = (("ranking", Type("list", arg=STR), "the candidates, best first"),)
    validate_decl = staticmethod(_validate)

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.candidates: list[str] = list(opts.get("candidates") or [])
        self.lms: list[str] = list(opts.get("lms") or [])
        self.k = int(opts.get("k", 2))
        self.n = len(self.candidates) + len(self.lms)
        instruction = self.instruction()
        taken = {n for n, _, _ in spec.inputs + spec.outputs}
        self.a_field, self.b_field = fresh_name("candidate_a", taken), fresh_name("candidate_b", taken)
        self.better_field = "better"
        self.cands_field = fresh_name("candidates", taken)
        self.generate: dict[str, Predictor] = {}
        for lm in dict.fromkeys(self.lms):
            self.generate[lm] = Predictor(f"{spec.name}.generate.{lm}", instruction, list(spec.inputs),
                                          list(spec.outputs), lm, self.sampling_on(lm))
        self.rank = self.predictor(
            "rank", f"{instruction.strip()}\n\n{RANK_NOTE}",
            list(spec.inputs) + [(self.a_field, STR, "candidate answer A"), (self.b_field, STR, "candidate answer B")],
            [(self.better_field, Type("enum", values=("A", "B")), "which candidate answers better")])
        self.fuse = None
        if self.k > 1:
            self.fuse = self.predictor(
                "fuse", f"{instruction.strip()}\n\n{FUSE_NOTE}",
                list(spec.inputs) + [(self.cands_field, STR, "the best candidate answers, best first")],
                list(spec.outputs))
        labels, count = [], {}
        for lm in self.lms:
            count[lm] = count.get(lm, 0) + 1
            labels.append(f"lm:{lm}" + (f"#{count[lm]}" if count[lm] > 1 else ""))
        self.labels = self.candidates + labels

    def predictors(self):
        return list(self.generate.values()) + [self.rank] + ([self.fuse] if self.fuse else [])

    def max_calls(self) -> int:
        env = self.spec.env
        own = sum(env.module(c).max_calls() for c in self.candidates) if self.candidates else 0
        return own + 2 * len(self.lms) + 2 * self.n * (self.n - 1) + (2 if self.fuse else 0)

    async def forward(self, values, ctx):
        async def attempt(coro):
            out = await settle(coro)           # a spent budget is raised: no ranking of fewer candidates
            return None if isinstance(out, Exception) else out

        outputs = [n for n, _, _ in self.spec.outputs]
        drawn: dict[str, int] = {}
        calls = [attempt(self.spec.env.call_module(c, dict(values), ctx)) for c in self.candidates]
        for lm in self.lms:
            calls.append(attempt(self.generate[lm](values, ctx, sample=drawn.get(lm, 0))))
            drawn[lm] = drawn.get(lm, 0) + 1
        answers = await ctx.gather(*calls)
        pool = [(label, {n: a.get(n) for n in outputs}) for label, a in zip(self.labels, answers) if a is not None]
        if not pool:
            raise ModuleFailure(f"every candidate of {self.name} failed")

        shown = [show_answer(a, self.spec.outputs) for _, a in pool]
        pairs = [(i, j) for i in range(len(pool)) for j in range(len(pool)) if i != j]
        verdicts = await ctx.gather(*(attempt(self.rank(
            {**values, self.a_field: shown[i], self.b_field: shown[j]}, ctx)) for i, j in pairs))
        wins = [0] * len(pool)
        for (i, j), v in zip(pairs, verdicts):
            better = (v or {}).get(self.better_field)
            if better == "A":
                wins[i] += 1
            elif better == "B":
                wins[j] += 1
        order = sorted(range(len(pool)), key=lambda i: (-wins[i], i))
        ranking = [pool[i][0] for i in order]
        top = [pool[i][1] for i in order[:self.k]]
        if self.fuse is None:
            result = dict(top[0])
        else:
            text = "\n\n".join(f"Candidate {r + 1}:\n{show_answer(a, self.spec.outputs)}" for r, a in enumerate(top))
            fused = await self.fuse({**values, self.cands_field: text}, ctx)
            result = {n: fused.get(n) for n in outputs}
        result["ranking"] = ranking
        return result
