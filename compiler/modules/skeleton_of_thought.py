"""SkeletonOfThought: outline the answer as a few points, expand every point in parallel, join.

Skeleton-of-Thought (Ning et al. 2023, "Skeleton-of-Thought: Large Language Models Can Do Parallel
Decoding") cuts the latency of long answers: the model first writes a skeleton (a short list of
points), then every point is expanded by its own call, all at once, and the expansions are put
together. One call of the module makes:

1. `<name>.skeleton`: at most `max_points` short points (extra ones are dropped, blank ones skipped;
   an empty skeleton fails the module);
2. `<name>.expand` once per point, all concurrently (`ctx.gather`): each sees the inputs, the whole
   skeleton and its own point, and writes one or two sentences for that point only (the paper's
   point-expanding prompt);
3. the join, which depends on the signature:
   - one `str` output: deterministic, as in the paper: "1. <point> <expansion>" lines, in skeleton
     order. No extra call, so the latency stays that of two sequential calls;
   - several outputs, or one that is not `str` (a number, an enum, a record, a list): one more call,
     `<name>.join`, reads the point-by-point draft and fills the typed outputs, since concatenated
     text cannot be parsed into them reliably without the model.
   Option `join` overrides this: "call" always makes the join call (a single str answer rewritten
   as one piece), "concatenate" forces concatenation (only allowed for one str output; checked).

Any expansion that fails (a reply that does not parse after its retry) fails the module after the
others finish: an answer with a silently missing point would look complete. The skeleton is also
returned as the extra output `points`.

.pipe:
    module explain = SkeletonOfThought(Explain, max_points: 4)
"""
from __future__ import annotations

from ..dsl import ast as A
from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, decl_option, fresh_name

LIST_STR = Type("list", arg=STR)
DEFAULT_MAX_POINTS = 5


def _concatenable(outputs) -> bool:
    """The join can be plain concatenation: the signature has exactly one output, and it is text."""
    return len(outputs) == 1 and outputs[0][1].required().kind == "str"


def _validate(decl: A.ModuleDecl, prog) -> list[tuple[str, str]]:
    sig = prog.signatures[decl.signature]
    if decl_option(decl, "join") == "concatenate" and not _concatenable(sig.outputs):
        return [(f"SkeletonOfThought module {decl.name} cannot concatenate its expansions into the outputs of "
                 f"signature {decl.signature}: that needs exactly one output of type str",
                 'drop `join: "concatenate"` (a final call then fills the outputs), or use a signature with a '
                 "single str output")]
    return []


class SkeletonOfThought(ModuleKind):
    """Skeleton first, then every point expanded in parallel, then joined.

    .pipe: `module explain = SkeletonOfThought(Explain, max_points: 4)`
    """

    kind = "SkeletonOfThought"
    doc = ("skeleton-of-thought: outline up to max_points points, expand them all in parallel, join them "
           "(concatenated for one str output, else a final call)")
    options = {**COMMON_OPTIONS,
               "max_points": OptionSpec("int", f"most points in the skeleton (default {DEFAULT_MAX_POINTS})",
                                        minimum=1),
               "join": OptionSpec("str", "how expansions become the outputs: auto (concatenate for a single str "
                                         "output, else a final call), concatenate, or call",
                                  choices=("auto", "concatenate", "call"))}
    extra_outputs = (("points", LIST_STR, "the skeleton: the points the answer was expanded from"),)
    validate_decl = staticmethod(_validate)

    def __init__(self, spec):
        super().__init__(spec)
        self.max_points = int(spec.options.get("max_points", DEFAULT_MAX_POINTS))
        mode = spec.options.get("join", "auto")
        self.concatenate = mode == "concatenate" or (mode == "auto" and _concatenable(spec.outputs))
        task = self.instruction().strip() or "Produce the outputs from the inputs."
        # Inner field names must not clash with the fields they share a prompt (and a demo) with.
        ins = {n for n, _, _ in spec.inputs}
        self.f_points = fresh_name("points", ins)
        self.f_skeleton = fresh_name("skeleton", ins)
        self.f_point = fresh_name("point", ins | {self.f_skeleton})
        self.f_text = fresh_name("expansion", ins | {self.f_skeleton, self.f_point})
        self.f_draft = fresh_name("draft", ins | {n for n, _, _ in spec.outputs})
        s = "" if self.max_points == 1 else "s"
        self.skeleton = self.predictor(
            "skeleton",
            f"{task}\n\nDo not write the answer yet. Give only its skeleton: at most {self.max_points} point{s}, "
            "each a few words.",
            list(spec.inputs),
            [(self.f_points, LIST_STR, f"at most {self.max_points} short point{s}, 3 to 5 words each, in order")])
        self.expand = self.predictor(
            "expand",
            f"{task}\n\nThe answer has been outlined as a skeleton of points. Write only the point given, very "
            "shortly, in one or two sentences; do not continue with the other points.",
            list(spec.inputs) + [(self.f_skeleton, LIST_STR, "all points of the answer's outline, in order"),
                                 (self.f_point, STR, "the point to write now, with its number")],
            [(self.f_text, STR, "one or two sentences that write out this point only")])
        self.join = None if self.concatenate else self.predictor(
            "join",
            f"{task}\n\nA draft answer was written point by point; use it to give the outputs.",
            list(spec.inputs) + [(self.f_draft, STR, "the answer written point by point")],
            list(spec.outputs))

    def predictors(self):
        return [p for p in (self.skeleton, self.expand, self.join) if p is not None]

    def max_calls(self) -> int:
        return 2 * (1 + self.max_points + (0 if self.concatenate else 1))

    async def _expand(self, values, points: list[str], i: int, ctx):
        try:
            out = await self.expand({**values, self.f_skeleton: points, self.f_point: f"{i + 1}. {points[i]}"}, ctx)
            return (out.get(self.f_text) or "").strip()
        except ModuleFailure as err:
            return err

    async def forward(self, values, ctx):
        planned = await self.skeleton(values, ctx)
        points = [p.strip() for p in (planned.get(self.f_points) or []) if isinstance(p, str) and p.strip()]
        points = points[:self.max_points]
        if not points:
            raise ModuleFailure("the skeleton has no points")
        texts = await ctx.gather(*(self._expand(values, points, i, ctx) for i in range(len(points))))
        for i, t in enumerate(texts):
            if isinstance(t, ModuleFailure):
                raise ModuleFailure(f"point {i + 1} ({points[i]!r}): {t}", getattr(t, "raw", "")) from None
        draft = "\n".join(f"{i}. {p} {t}".rstrip() for i, (p, t) in enumerate(zip(points, texts), 1))
        if self.concatenate:
            out = {self.spec.outputs[0][0]: draft}
        else:
            out = await self.join({**values, self.f_draft: draft}, ctx)
        return {**out, "points": points}
