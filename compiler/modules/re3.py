"""Re3: plan, then write a long text passage by passage, each drafted several times, reranked and edited.

Re3 (Yang, Tian, Peng and Klein, 2022, "Re3: Generating Longer Stories With Recursive Reprompting and
Revision", arXiv:2210.06774) writes texts longer than one reply by recursively reprompting the LM
with the plan and the current state of the story. One call of the module makes:

1. `<name>.plan`: a premise (setting, characters, the central conflict) and an outline of the
   passages, one point per passage; at most `max_passages` points are used (extra ones are dropped,
   blank ones skipped). A plan that does not parse, or has no point, fails the module: nothing can
   be written without it.
2. For each outline point, in order:
   - `<name>.draft`, `candidates` times in parallel (draws `sample=0..candidates-1` at
     `sample_temperature`): each sees the inputs, the plan, the point to write and the story so far,
     and writes one passage (the paper's Draft module);
   - `<name>.rerank`, once per distinct candidate, in parallel, when there are two or more: it rates
     the candidate's coherence with the story so far and its relevance to the plan point on the
     sure/likely/impossible scale of TreeOfThought and GraphOfThoughts (worth 20 / 1 / 0.001); the
     two are summed and the best candidate is taken, the earlier one on ties (the paper's Rewrite
     module, its coherence and relevance rerankers);
   - `<name>.edit` (unless `edit: false`): sees the plan, the story so far and the chosen passage, and
     returns it edited for consistency with them (the paper's Edit module).
   The passage is added to the story.
3. The signature's one `str` output is the story: the passages joined by blank lines.

The story so far, as drafts, reranks and edits see it: the whole text while it is at most
`CONTEXT_CHARS` characters; beyond that, a summary of what came before made from the plan (each
earlier passage replaced by the outline point it was written for), followed by the last passage in
full (its last `CONTEXT_CHARS` characters). This costs no LM call, so the bound stays exact, and it
is what Re3 injects too: the relevant part of the plan, then the most recent story text.

Failures: a draft that does not parse (after its retry) or an LM error drops that candidate; a rerank
that fails counts 0 for its candidate; an edit that fails, or comes back empty, is skipped (the
chosen draft is kept). When every draft of a passage fails, the story ends with the passages written
so far; the module fails only if that is none, or the plan failed. A spent budget is raised.

Worst-case calls, for P = `max_passages`, c = `candidates`, e = 1 with `edit` (else 0):
2 · (1 + P · (c + (c if c > 1 else 0) + e)), every call retried once.

The signature must have exactly one output, of type `str` (checked). Extra outputs: `plan` (the
premise and numbered outline, as text) and `passages` (the passages written, in order).

.pipe:
    module write = Re3(Story, max_passages: 4, candidates: 3, edit: true, sample_temperature: 0.8)
"""
from __future__ import annotations

from typing import Any

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type
from ..vote import answer_key
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, fresh_name, settle
from .tree_of_thought import LABEL_VALUE, LABELS

LIST_STR = Type("list", arg=STR)
DEFAULTS = {"max_passages": 4, "candidates": 3, "edit": True, "sample_temperature": 0.8}
CONTEXT_CHARS = 4000        # the story so far is shown whole up to this length, then summarized by the plan
NOTHING_YET = "(nothing yet: this is the first passage)"


def worst_case_calls(max_passages: int, candidates: int, edit: bool) -> int:
    """Predictor calls of one module call at most, before retries.

    >>> worst_case_calls(3, 2, True)         # plan + 3 * (2 drafts + 2 reranks + 1 edit)
    16
    >>> worst_case_calls(2, 1, False)        # one candidate: nothing to rerank
    3
    """
    return 1 + max_passages * (candidates + (candidates if candidates > 1 else 0) + (1 if edit else 0))


def show_plan(premise: str, points: list[str]) -> str:
    """The plan as the prompts and the `plan` output show it.

    >>> print(show_plan("A lighthouse keeper finds a map.", ["The map", "The voyage"]))
    Premise: A lighthouse keeper finds a map.
    Outline:
    1. The map
    2. The voyage
    """
    lines = [f"Premise: {premise or '(none)'}", "Outline:"]
    return "\n".join(lines + [f"{i}. {p}" for i, p in enumerate(points, 1)])


def story_context(passages: list[str], points: list[str], limit: int = CONTEXT_CHARS) -> str:
    """The story so far as a prompt shows it: whole while at most `limit` characters, else the outline
    points of the earlier passages (a summary from the plan), then the last passage (its tail if long).

    >>> story_context([], ["a"])
    '(nothing yet: this is the first passage)'
    >>> story_context(["It rained.", "The sun came."], ["rain", "sun", "night"])
    'It rained.\\n\\nThe sun came.'
    >>> print(story_context(["x" * 8, "The sun came."], ["rain", "sun", "night"], limit=16))
    Summary of the story before the last passage, by the plan:
    1. rain
    <BLANKLINE>
    Last passage:
    The sun came.
    """
    if not passages:
        return NOTHING_YET
    whole = "\n\n".join(passages)
    if len(whole) <= limit:
        return whole
    summary = "\n".join(f"{i}. {p}" for i, p in enumerate(points[:len(passages) - 1], 1))
    return (f"Summary of the story before the last passage, by the plan:\n{summary}\n\n"
            f"Last passage:\n{passages[-1][-limit:]}")


def _validate(decl, prog) -> list[tuple[str, str]]:
    sig = prog.signatures[decl.signature]
    if len(sig.outputs) == 1 and sig.outputs[0][1].required().kind == "str":
        return []
    have = ", ".join(n for n, _, _ in sig.outputs) or "none"
    return [(f"Re3 module {decl.name} writes one long text, but signature {decl.signature} has the outputs "
             f"{have}", "give the signature exactly one output, of type str (the story); read the plan and the "
                        "passages from the module's extra outputs `plan` and `passages`")]


class Re3(ModuleKind):
    """Re3 (Yang et al. 2022): plan, then per passage draft candidates, rerank them, edit the best.

    .pipe: `module write = Re3(Story, max_passages: 4, candidates: 3, edit: true)`
    """

    kind = "Re3"
    doc = ("Re3 recursive reprompting and revision: a plan (premise, outline), then per passage candidates "
           "drafted with the plan and story so far, reranked for coherence and relevance, the best edited")
    options = {**COMMON_OPTIONS,
               "max_passages": OptionSpec("int", f"most passages written, one per outline point (default "
                                                 f"{DEFAULTS['max_passages']})", minimum=1),
               "candidates": OptionSpec("int", f"drafts per passage, reranked (default {DEFAULTS['candidates']}; "
                                               "1 = no rerank)", minimum=1),
               "edit": OptionSpec("bool", "whether the chosen draft is edited for consistency (default true)"),
               "sample_temperature": OptionSpec("number", f"temperature of the drafts (default "
                                                          f"{DEFAULTS['sample_temperature']})", minimum=0)}
    extra_outputs = (("plan", STR, "the premise and the numbered outline the text was written from"),
                     ("passages", LIST_STR, "the passages written, in order"))
    validate_decl = staticmethod(_validate)

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.max_passages = int(opts.get("max_passages", DEFAULTS["max_passages"]))
        self.candidates = int(opts.get("candidates", DEFAULTS["candidates"]))
        self.do_edit = bool(opts.get("edit", DEFAULTS["edit"]))
        self.sample_temperature = float(opts.get("sample_temperature", DEFAULTS["sample_temperature"]))
        self.out_name = spec.outputs[0][0]
        task = self.instruction().strip() or "Write the text the inputs ask for."
        ins = {n for n, _, _ in spec.inputs}
        names: dict[str, str] = {}
        for base in ("premise", "outline", "plan", "story_so_far", "passage_plan", "passage", "coherent",
                     "relevant", "edited"):
            names[base] = fresh_name(base, ins | set(names.values()))
        self.f = names
        s = "" if self.max_passages == 1 else "s"
        self.plan = self.predictor(
            "plan",
            f"{task}\n\nDo not write the text yet. Plan it: a premise, then an outline of at most "
            f"{self.max_passages} passage{s}, one short point per passage, in order.",
            list(spec.inputs),
            [(names["premise"], STR, "the premise: setting, main characters and the central conflict, in a few "
                                     "sentences"),
             (names["outline"], LIST_STR, f"at most {self.max_passages} point{s}: what each passage tells, in "
                                          "order")])
        context = [(names["plan"], STR, "the premise and outline of the whole text"),
                   (names["story_so_far"], STR, "the text written so far, or a summary of it and its last passage"),
                   (names["passage_plan"], STR, "the outline point of the passage to write now, with its number")]
        self.draft = self.predictor(
            "draft",
            f"{task}\n\nThe text is written passage by passage from a plan. Write only the next passage: it "
            "tells the outline point given, continues the story so far without contradicting it, and stays "
            "true to the premise. Do not repeat earlier passages or write later ones.",
            list(spec.inputs) + context,
            [(names["passage"], STR, "the next passage, a paragraph or two")])
        self.rerank = None if self.candidates == 1 else self.predictor(
            "rerank",
            f"Rate a candidate next passage of a text written from a plan.\nThe task: {task}",
            list(spec.inputs) + context + [(names["passage"], STR, "the candidate passage")],
            [(names["coherent"], Type("enum", values=LABELS),
              "sure if it continues the story so far coherently, likely if mostly, impossible if it contradicts "
              "it or does not follow on"),
             (names["relevant"], Type("enum", values=LABELS),
              "sure if it tells the outline point given and fits the premise, likely if partly, impossible if "
              "not")])
        self.editor = None if not self.do_edit else self.predictor(
            "edit",
            f"{task}\n\nA passage was written for the outline point given. Edit it for consistency: fix every "
            "contradiction with the premise, the outline and the story so far (names, facts, places, time, "
            "who knows what), and keep everything else as it is. Return the whole edited passage.",
            list(spec.inputs) + context + [(names["passage"], STR, "the passage to edit")],
            [(names["edited"], STR, "the whole passage, edited")])

    def predictors(self) -> list[Predictor]:
        return [p for p in (self.plan, self.draft, self.rerank, self.editor) if p is not None]

    def max_calls(self) -> int:
        return 2 * worst_case_calls(self.max_passages, self.candidates, self.do_edit)

    def _score(self, reply) -> float:
        if isinstance(reply, Exception):
            return 0.0
        return LABEL_VALUE.get(reply.get(self.f["coherent"]), 0.0) + LABEL_VALUE.get(reply.get(self.f["relevant"]),
                                                                                      0.0)

    async def _passage(self, values, context: dict[str, Any], ctx) -> str | None:
        """One passage: drafts, the best by rerank, edited. None when every draft failed."""
        f = self.f
        params = {"temperature": self.sample_temperature}
        drafts = await ctx.gather(*(settle(self.draft({**values, **context}, ctx, sample=j, params=params))
                                    for j in range(self.candidates)))
        pool, seen = [], set()
        for d in drafts:
            text = "" if isinstance(d, Exception) else (d.get(f["passage"]) or "").strip()
            if text and answer_key(text) not in seen:       # a repeat is one candidate, not two
                seen.add(answer_key(text))
                pool.append(text)
        if not pool:
            return None
        best = pool[0]
        if len(pool) > 1:
            scores = await ctx.gather(*(settle(self.rerank({**values, **context, f["passage"]: t}, ctx))
                                        for t in pool))
            values_ = [self._score(s) for s in scores]
            best = pool[max(range(len(pool)), key=lambda i: (values_[i], -i))]
        if self.editor is not None:
            edited = await settle(self.editor({**values, **context, f["passage"]: best}, ctx))
            text = "" if isinstance(edited, Exception) else (edited.get(f["edited"]) or "").strip()
            best = text or best
        return best

    async def forward(self, values, ctx):
        f = self.f
        planned = await self.plan(values, ctx)
        premise = (planned.get(f["premise"]) or "").strip()
        points = [p.strip() for p in (planned.get(f["outline"]) or []) if isinstance(p, str) and p.strip()]
        points = points[:self.max_passages]
        if not points:
            raise ModuleFailure("the plan has no outline points")
        plan = show_plan(premise, points)
        passages: list[str] = []
        for i, point in enumerate(points):
            context = {f["plan"]: plan, f["story_so_far"]: story_context(passages, points),
                       f["passage_plan"]: f"{i + 1}. {point}"}
            passage = await self._passage(values, context, ctx)
            if passage is None:
                break                       # no draft of this passage: the story ends with what was written
            passages.append(passage)
        if not passages:
            raise ModuleFailure("every draft of the first passage failed")
        return {self.out_name: "\n\n".join(passages), "plan": plan, "passages": passages}
