"""AMA: Ask Me Anything prompting (Arora et al. 2022, "Ask Me Anything: A simple strategy for
prompting language models", arXiv:2210.02441).

The paper's two findings: open-ended question prompts ("What does the passage say about ...?") work
better than prompts that restrict the reply to a label, and several imperfect prompts can be combined
into a better answer by weak supervision, which learns how reliable each prompt is from how their
answers agree on unlabeled inputs, rather than by a majority vote. This kind runs, per call:

1. `<name>.reformat` rewrites what is asked about these inputs as `prompts` (k) open-ended questions;
   the LM writes them itself, as AMA's question() prompt chains do. Question i is "prompt slot i".
2. `<name>.answer` answers each question (k calls in parallel, `sample` = the slot): it sees the
   inputs and the question, answers it in its own words (`response`), then gives the outputs.
3. The k answers (over `field`, or all outputs jointly, compared by `pipec.vote`'s "same answer"
   rule) are combined by a weighted vote, each slot weighted by its learned accuracy.

What weak supervision needs is a batch, and one call has one input. So the accuracies are learned
online, over the calls of the program instance (a loaded or compiled program; each copy learns
afresh), and a call is combined with what the calls before it taught (its own answers are added
after its vote). After every call, for each pair of slots that both answered, the instance counts
whether they agreed. Slot accuracies come from those agreement rates by the triplet method (Fu et
al. 2020, "Fast and Three-rious"): assuming slots err independently given the true answer, the
chance-corrected agreement of slots i and j is M_ij = a_i * a_j, so a_i^2 = M_ij * M_ik / M_jk,
averaged over all pairs j, k of other slots (hence at least 3 prompts). Chance correction: with C
possible answers (2 for a bool, an enum's labels, products for several fields) and errors spread
evenly, M_ij = (P_ij - 1/C) / (1 - 1/C) and accuracy = (1 + (C-1) a) / C; free-text answers (str,
numbers, lists) have no bound on C, and two wrong free-text answers are taken never to agree by
chance, so M_ij = P_ij and accuracy = a. Every pair starts as if it had seen 4 rows agreeing halfway
between chance and always (a prior that is the same for every slot), so estimates move smoothly from
the prior as rows come in; a is clamped to 0.01..0.99, which keeps the weights finite.

The vote is the one-coin Dawid-Skene posterior: an answer's weight is the sum over the slots that
gave it of ln(acc/(1-acc)) + ln(C-1), and the heaviest answer wins (ties to the earliest slot). With
equal accuracies (no history: the prior) this is exactly a majority vote. For free-text answers
(C unbounded) it is the limit of that rule: the answer more slots gave wins, and between answers
given by equally many, the larger sum of ln(acc/(1-acc)) wins (three different answers: the most
reliable slot's). The paper's label model also learns dependencies between prompts; this one does
not (it assumes none).

Order matters, as for any online estimate: rows of a batch run concurrently, so which earlier rows a
row's vote learned from depends on which finished first (the learning itself is thread-safe). Every
call with at least two answers counts, so running the same input twice counts it twice.

Failures: a reformat reply that does not parse (after its retry), or one that parses but writes no
question at all (small models do both), degrades to a single question, the task's own instruction,
in slot 1, rather than failing: the call still answers, `votes` says why, and with one answer
nothing is learned. The reply schema caps the list at k (`maxItems`), so a grammar-constrained model
stops after k questions: without the cap, the embedded 135M model kept adding questions until
max_tokens cut the reply, on 11 of 20 rows of bench/kinds.py's sentiment task. Questions beyond k are ignored; a slot with no question abstains. An
answer that fails is that slot abstaining (left out of the vote and of the counting); only when
every answer fails does the call fail.

Worst case: 1 + k predictor calls, each of which may retry once. Extra outputs: `questions` (the
questions in slot order, "" for a slot left empty) and `votes` (the standing of each answer, the
slots that gave it, its weight, and the accuracies used).

.pipe: `module judge = AMA(Entails, prompts: 4, field: label)`
"""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type
from ..vote import answer_key
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, field_option_problems, fresh_name, settle
from .majority import show_value

LIST_STR = Type("list", arg=STR)
DEFAULT_PROMPTS = 3
PRIOR_ROWS = 4              # pseudo-rows every pair of slots starts with ...
PRIOR_AGREEMENT = 0.5       # ... agreeing halfway between chance and always
FLOOR, CEILING = 0.01, 0.99


def label_count(types: Sequence[Type]) -> int | None:
    """How many different answers fields of these types allow jointly; None when unbounded (free text).

    >>> from pipec.dsl.types import BOOL, INT
    >>> label_count([BOOL]), label_count([Type("enum", values=("a", "b", "c")), BOOL]), label_count([INT])
    (2, 6, None)
    """
    n = 1
    for t in types:
        if t.kind == "bool":
            n *= 2 + t.optional
        elif t.kind == "enum":
            n *= len(t.values) + t.optional
        else:
            return None
    return n


class PromptAccuracies:
    """What a module has learned about its k prompt slots: how often each pair's answers agreed, and
    from that each slot's accuracy (the triplet method, see the module docstring). Thread-safe.

    >>> acc = PromptAccuracies(3, labels=None)
    >>> acc.estimates()                                 # no history: the prior, the same for each slot
    [0.7071..., 0.7071..., 0.7071...]
    >>> for _ in range(20):
    ...     acc.add(["x", "x", "y"])                    # slot 3 never agrees with the other two
    >>> [round(a, 2) for a in acc.estimates()], acc.rows
    ([0.96, 0.96, 0.09], 20)
    """

    def __init__(self, k: int, labels: int | None):
        self.k = k
        self.chance = 1 / labels if labels and labels > 1 else 0.0
        self.rows = 0
        self._agreed = [[0] * k for _ in range(k)]
        self._both = [[0] * k for _ in range(k)]
        self._lock = threading.Lock()

    def add(self, keys: Sequence[str | None]) -> None:
        """Count one row's answers (a key per slot, None for a slot that did not answer)."""
        with self._lock:
            self.rows += 1
            for i in range(self.k):
                for j in range(i + 1, self.k):
                    if keys[i] is not None and keys[j] is not None:
                        self._both[i][j] += 1
                        self._agreed[i][j] += keys[i] == keys[j]

    def estimates(self) -> list[float]:
        """Each slot's estimated accuracy: the probability that its answer is the right one."""
        return self.snapshot()[1]

    def snapshot(self) -> tuple[int, list[float]]:
        """(rows counted, each slot's estimated accuracy), read together while rows are being added."""
        with self._lock:
            rows = self.rows
            both = [row[:] for row in self._both]
            agreed = [row[:] for row in self._agreed]
        prior = self.chance + (1 - self.chance) * PRIOR_AGREEMENT

        def m(i: int, j: int) -> float:
            i, j = min(i, j), max(i, j)
            p = (agreed[i][j] + PRIOR_ROWS * prior) / (both[i][j] + PRIOR_ROWS)
            return (p - self.chance) / (1 - self.chance)
        out = []
        for i in range(self.k):
            others = [j for j in range(self.k) if j != i]
            squares = [max(0.0, min(1.0, m(i, j) * m(i, o) / m(j, o)))
                       for x, j in enumerate(others) for o in others[x + 1:] if m(j, o) > 1e-9]
            a = math.sqrt(sum(squares) / len(squares)) if squares else math.sqrt(PRIOR_AGREEMENT)
            a = min(CEILING, max(FLOOR, a))
            out.append(a + (1 - a) * self.chance)      # (1 + (C-1) a) / C
        return rows, out


def weighted_vote(keys: Sequence[str | None], accuracies: Sequence[float],
                  labels: int | None) -> list[tuple[str, float, list[int]]]:
    """Every answer given, as (key, weight, the slots that gave it), the winner first. A slot's weight
    is ln(acc/(1-acc)) + ln(C-1) with C = `labels`; with `labels` None (free text) more slots win
    first and the weights decide between answers given by equally many. Ties: the earliest slot.

    >>> [k for k, _, _ in weighted_vote(["a", "b", "b"], [0.9, 0.6, 0.6], 2)]   # one reliable slot wins
    ['a', 'b']
    >>> [k for k, _, _ in weighted_vote(["a", "b", "b"], [0.9, 0.6, 0.6], None)]   # free text: two agreeing
    ['b', 'a']
    >>> weighted_vote(["a", "b", None], [0.5, 0.9, 0.9], None)[0]
    ('b', 2.197..., [1])
    """
    extra = math.log(labels - 1) if labels and labels > 2 else 0.0
    standing: dict[str, tuple[float, list[int]]] = {}
    for i, key in enumerate(keys):
        if key is None:
            continue
        weight, slots = standing.get(key, (0.0, []))
        standing[key] = (weight + math.log(accuracies[i] / (1 - accuracies[i])) + extra, slots + [i])
    ranked = [(key, weight, slots) for key, (weight, slots) in standing.items()]
    if labels is None:
        ranked.sort(key=lambda t: (-len(t[2]), -t[1], t[2][0]))
    else:
        ranked.sort(key=lambda t: (-t[1], t[2][0]))
    return ranked


def _validate(decl, program) -> list[tuple[str, str]]:
    """`field` must name an output of the signature."""
    return field_option_problems(decl, program, "AMA")


class AMA(ModuleKind):
    """Ask Me Anything: the LM rewrites the input as k open-ended questions, each is answered, and the
    answers are combined by a vote weighted with each question slot's accuracy, learned online from
    how the slots agree (weak supervision); with no history yet, a majority vote.

    .pipe: `module judge = AMA(Entails, prompts: 4, field: label)`
    """

    kind = "AMA"
    doc = ("ask me anything: the LM rewrites the input as k open-ended questions, answers each, and combines the "
           "answers by a vote weighted with each question slot's accuracy, learned from their agreement over calls")
    options = {**COMMON_OPTIONS,
               "prompts": OptionSpec("int", f"how many open-ended questions the reformat call writes, each answered "
                                            f"and voted (default {DEFAULT_PROMPTS}; weak supervision needs 3 to tell "
                                            "the slots' accuracies apart)", minimum=3),
               "field": OptionSpec("name", "the output that votes, like `field: label` (default: all outputs jointly)")}
    extra_outputs = (("questions", LIST_STR, "the open-ended questions asked, in slot order"),
                     ("votes", STR, "each answer with the slots that gave it and its weight, winner first, and the "
                                    "slot accuracies used"))
    validate_decl = staticmethod(_validate)

    def __init__(self, spec):
        super().__init__(spec)
        self.k = int(spec.options.get("prompts", DEFAULT_PROMPTS))
        field = spec.options.get("field")
        self.fields = [field] if field else [n for n, _, _ in spec.outputs]
        types = {n: t for n, t, _ in spec.outputs}
        self.labels = label_count([types[f] for f in self.fields])
        self.history = PromptAccuracies(self.k, self.labels)
        task = self.task = self.instruction().strip() or "Produce the outputs from the inputs."
        taken = {n for n, _, _ in spec.inputs + spec.outputs}
        self.f_questions = fresh_name("questions", taken)
        self.f_question = fresh_name("question", taken)
        self.f_response = fresh_name("response", taken | {self.f_question})
        self.reformat = self.predictor(
            "reformat",
            f"The task: {task}\n\nDo not do the task. Instead, rewrite what it asks about these inputs as {self.k} "
            "different open-ended questions (what, which, who, how, why), not yes/no questions or statements to "
            "label. Each question must stand on its own, quoting what it needs from the inputs, and each should "
            "come at the task from a different angle.",
            spec.inputs,
            [(self.f_questions, LIST_STR, f"exactly {self.k} open-ended questions, each complete on its own")],
            max_items={self.f_questions: self.k})
        self.answer = self.predictor(
            "answer",
            f"{task}\n\nFirst answer the open-ended question about the inputs in your own words, then give the "
            "outputs your answer implies.",
            list(spec.inputs) + [(self.f_question, STR, "an open-ended question about the inputs")],
            [(self.f_response, STR, "your answer to the question, in a few words or one sentence")]
            + list(spec.outputs))

    def predictors(self) -> list[Predictor]:
        return [self.reformat, self.answer]

    def max_calls(self) -> int:
        return 2 * (1 + self.k)        # the questions, then one answer per question; each may retry once

    async def forward(self, values, ctx):
        try:
            written = await self.reformat(values, ctx)
            why = "the reformat call wrote no question"
        except ModuleFailure:
            # A small model may never write usable questions: the task itself is one more question.
            written, why = {}, "the reformat reply did not parse"
        questions = [q.strip() if isinstance(q, str) else "" for q in (written.get(self.f_questions) or [])[:self.k]]
        unasked = not any(questions)
        if unasked:
            questions = [self.task]
        asked = [i for i, q in enumerate(questions) if q]
        results = await ctx.gather(*(settle(self.answer({**values, self.f_question: questions[i]}, ctx, sample=i))
                                     for i in asked))
        answers: list[dict[str, Any] | None] = [None] * self.k
        for i, r in zip(asked, results):
            answers[i] = None if isinstance(r, Exception) else r
        if all(a is None for a in answers):
            first = results[0]
            raise ModuleFailure(f"every answer failed; the first: {first}", getattr(first, "raw", ""))
        keys = [None if a is None else answer_key(*(a.get(f) for f in self.fields)) for a in answers]
        rows, accuracies = self.history.snapshot()
        ranked = weighted_vote(keys, accuracies, self.labels)
        if sum(k is not None for k in keys) > 1:
            self.history.add(keys)                  # after the vote: a row is combined with what earlier rows taught
        winner = answers[ranked[0][2][0]]
        votes = self._votes(ranked, answers, accuracies, rows)
        if unasked:
            votes += f"; {why}, so the task itself was asked"
        return {**{n: winner.get(n) for n, _, _ in self.spec.outputs}, "questions": questions, "votes": votes}

    def _votes(self, ranked, answers, accuracies: list[float], rows: int) -> str:
        """`label: slots 1, 3 (weight 1.79); ...; accuracies 0.80, 0.80, 0.80 from 0 earlier rows`."""
        parts = [f"{show_value(answers[slots[0]], self.fields)}: slot{'s' * (len(slots) > 1)} "
                 f"{', '.join(str(i + 1) for i in slots)} (weight {weight:.2f})" for _, weight, slots in ranked]
        silent = [i + 1 for i, a in enumerate(answers) if a is None]
        if silent:
            parts.append(f"no answer from slot{'s' * (len(silent) > 1)} {', '.join(map(str, silent))}")
        parts.append(f"accuracies {', '.join(f'{a:.2f}' for a in accuracies)} from {rows} earlier "
                     f"row{'s' * (rows != 1)}")
        return "; ".join(parts)
