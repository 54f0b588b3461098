"""Auto-CoT: one worked demo per cluster of training questions, its rationale written by zero-shot CoT.

After Zhang et al., "Automatic Chain of Thought Prompting in Large Language Models" (2022,
arXiv:2210.03493). The training questions (the pipeline's inputs of each row) are clustered by
k-means over pipec's lexical TF-IDF vectors (`pipec.session.tfidf_vectors`); each cluster gives one
representative, the question nearest its centroid that passes the paper's simple heuristics (at most
`max_words` words, a rationale of at most `max_steps` steps). Its rationale comes from running the
teacher on it with "Let's think step by step." added to the instruction of every predictor that has
a `reasoning` output (ChainOfThought, Majority, ...): that call's inputs, rationale and answer become
the predictor's demo, as the zero-shot CoT call wrote them (as in the paper, the answer is not
checked against the label; diversity across clusters is what limits the harm of a wrong one). Other
predictors get the representative's labeled row as a demo (or, when their fields are not labeled,
their traced call from a run that passed the metric).
"""
from __future__ import annotations

import re

from pipec.session import OptionSpec

from .base import Optimizer, labeled_demo, with_demos

ZERO_SHOT_COT = "Let's think step by step."


def kmeans(vectors: list[dict[str, float]], k: int, rng, restarts: int = 8) -> list[list[int]]:
    """Spherical k-means over unit-length sparse vectors: the clusters as lists of row indices, each
    sorted nearest-to-centroid first (ties: the earlier row). Seeded k-means++ starts, `restarts` of
    them, keeping the tightest result (the highest total similarity of rows to their centroids);
    deterministic for a given `rng` state. Empty clusters are dropped.

    >>> import random
    >>> from pipec.session import tfidf_vectors
    >>> vs = tfidf_vectors(["play jazz", "play some jazz now", "rain in Oslo", "rain tomorrow in Oslo"])
    >>> sorted(sorted(c) for c in kmeans(vs, 2, random.Random(0)))
    [[0, 1], [2, 3]]
    """
    from pipec.session import cosine
    n = len(vectors)
    k = max(0, min(k, n))
    if k == 0:
        return []
    best, best_fit = [], -1.0
    for _ in range(max(1, restarts)):
        clusters, centers = _kmeans_once(vectors, k, rng)
        fit = sum(cosine(vectors[i], c) for members, c in zip(clusters, centers) for i in members)
        if fit > best_fit + 1e-9:
            best, best_fit = clusters, fit
    return best


def _kmeans_once(vectors, k, rng, iterations: int = 20):
    from pipec.session import cosine
    n = len(vectors)
    centers = [vectors[rng.randrange(n)]]
    while len(centers) < k:                      # k-means++: far rows are likelier next centers
        dist = [min(1.0 - cosine(v, c) for c in centers) ** 2 for v in vectors]
        total = sum(dist)
        if total <= 1e-12:
            break                                # every row equals a center already
        pick, acc = rng.random() * total, 0.0
        for i, d in enumerate(dist):
            acc += d
            if acc >= pick and d > 0:
                centers.append(vectors[i])
                break
        else:
            centers.append(vectors[max(range(n), key=lambda i: (dist[i], -i))])
    assign: list[int] = []
    for _ in range(iterations):
        new = [max(range(len(centers)), key=lambda j: (cosine(v, centers[j]), -j)) for v in vectors]
        if new == assign:
            break
        assign = new
        centers = [_mean([vectors[i] for i in range(n) if assign[i] == j]) or centers[j] for j in range(len(centers))]
    clusters, kept = [], []
    for j, c in enumerate(centers):
        members = [i for i in range(n) if assign[i] == j]
        if members:
            clusters.append(sorted(members, key=lambda i: (-cosine(vectors[i], c), i)))
            kept.append(c)
    return clusters, kept


def _mean(vs: list[dict[str, float]]) -> dict[str, float]:
    if not vs:
        return {}
    out: dict[str, float] = {}
    for v in vs:
        for t, x in v.items():
            out[t] = out.get(t, 0.0) + x
    norm = sum(x * x for x in out.values()) ** 0.5 or 1.0
    return {t: x / norm for t, x in out.items()}


def rationale_steps(text: str) -> int:
    """The steps of a rationale: its non-empty lines, or its sentences when it is one line.

    >>> rationale_steps("First, 2+2 is 4.\\nThen 4*3 is 12.")
    2
    >>> rationale_steps("2+2 is 4. Then 4*3 is 12. So 12.")
    3
    """
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    if len(lines) > 1:
        return len(lines)
    return len([s for s in re.split(r"(?<=[.!?])\s+", str(text).strip()) if s.strip()])


def reasoning_predictors(preds) -> list[str]:
    """The predictors whose outputs include a rationale (`reasoning`): the ones zero-shot CoT writes demos for."""
    return [n for n, p in preds.items() if any(o[0] == "reasoning" for o in p.outputs)]


class AutoCoT(Optimizer):
    """compile block: `optimizer = auto_cot(clusters: 4, max_steps: 5)`"""

    name = "auto_cot"
    doc = "one zero-shot-CoT demo per cluster of training questions (Auto-CoT)"
    options = {"clusters": OptionSpec("int", "clusters of training questions: demos per predictor", minimum=1),
               "max_steps": OptionSpec("int", "most steps a representative's rationale may have", minimum=1),
               "max_words": OptionSpec("int", "most words a representative's question may have", minimum=1),
               "tries": OptionSpec("int", "representatives tried per cluster before giving up on it", minimum=1),
               "seed": OptionSpec("int", "clustering seed (default: the compile seed)")}
    defaults = {"clusters": 4, "max_steps": 5, "max_words": 60, "tries": 2}

    def optimize(self, session):
        with session.holding_back_for_validation():        # writing rationales may not eat the final check
            params = self.auto_cot(session)
        session.phase("full eval")
        result = session.evaluate(params)
        session.record(result.score, full=not result.incomplete,
                       note=f"auto-CoT demos from {self.opts['clusters']} clusters",
                       calls_per_row=result.calls_per_row, tokens_per_row=result.tokens_per_row)
        base = session.baseline_score
        if not result.incomplete and base is not None and result.score < base:
            session.record(base, note="kept the uncompiled program: the auto-CoT demos scored lower")
            return session.baseline(), base
        return params, (result.score if not result.incomplete else None)

    def questions(self, session) -> list[str]:
        names = [n for n in session.input_names if any(n in r.values for r in session.trainset)]
        return [" ".join(str(r.values.get(n, "")) for n in names) for r in session.trainset]

    def clusters(self, session) -> list[list[int]]:
        """The training rows' clusters, each nearest-to-centroid first."""
        from pipec.session import tfidf_vectors
        rng = session.rng(f"auto_cot:{self.opts.get('seed', '')}")
        return kmeans(tfidf_vectors(self.questions(session)), self.opts["clusters"], rng)

    def auto_cot(self, session):
        """The demo set: one representative per cluster, its rationale by zero-shot CoT (not scored)."""
        session.phase("clustering")
        preds = {n: p for n, p in session.predictors().items() if "demos" not in p.pinned}
        cot = reasoning_predictors(preds)
        questions = self.questions(session)
        short = lambda i: len(questions[i].split()) <= self.opts["max_words"]
        # Candidates per cluster: short questions first, each nearest to the centroid first.
        queues = [[i for i in c if short(i)] + [i for i in c if not short(i)] for c in self.clusters(session)]
        chosen: list[int | None] = [None] * len(queues)
        traced: dict[int, dict[str, dict]] = {}         # row -> predictor -> its demo from the CoT run
        if cot:
            base = session.baseline()
            params = dict(base)
            for n in cot:
                st = base[n]
                params[n] = st.model_copy(update={"instruction": f"{st.instruction.rstrip()}\n\n{ZERO_SHOT_COT}"})
            session.phase("zero-shot CoT")
            for attempt in range(self.opts["tries"]):
                todo = [(j, q[attempt]) for j, q in enumerate(queues) if chosen[j] is None and attempt < len(q)]
                if not todo or session.out_of_budget:
                    break
                result = session.run_teacher(params, [session.trainset[i] for _, i in todo])
                for (j, i), row in zip(todo, result.rows):
                    demos = self._trace_demos(row, preds, cot)
                    if demos is None:
                        continue
                    if all(rationale_steps(d.get("reasoning", "")) <= self.opts["max_steps"]
                           for n, d in demos.items() if n in cot):
                        chosen[j], traced[i] = i, demos
                    elif attempt == self.opts["tries"] - 1 or attempt == len(queues[j]) - 1:
                        chosen[j], traced[i] = i, demos     # the heuristics are preferences: keep the last try
        else:
            chosen = [q[0] if q else None for q in queues]
        demos: dict[str, list[dict]] = {n: [] for n in preds}
        for i in chosen:
            if i is None:
                continue
            values = session.trainset[i].values
            for n, pred in preds.items():
                d = traced.get(i, {}).get(n) if n in cot else labeled_demo(pred, values) or traced.get(i, {}).get(n)
                if d is not None and d not in demos[n]:
                    demos[n].append(d)
        return with_demos(session.baseline(), demos)

    @staticmethod
    def _trace_demos(row, preds, cot) -> dict[str, dict] | None:
        """Per predictor, the first traced call of a teacher run (None when the row did not run). Calls
        of predictors without a rationale count only when the run passed the metric."""
        if row.prediction is None or not row.prediction.ok:
            return None
        out: dict[str, dict] = {}
        for rec in row.prediction.trace:
            if rec.parsed is None or rec.inputs is None or rec.predictor not in preds or rec.predictor in out:
                continue
            if rec.predictor in cot or row.score >= 1.0:
                out[rec.predictor] = {**rec.inputs, **rec.parsed}
        if any(n not in out for n in cot if any(r.predictor == n for r in row.prediction.trace)):
            return None
        return out
