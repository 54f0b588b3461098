"""Reflective prompt evolution (`reflect`), the algorithm of GEPA (Agrawal et al., "GEPA: Reflective
Prompt Evolution Can Outperform Reinforcement Learning", ICLR 2026, arXiv:2507.19457).

An LM reads what one module did on a few training rows and what the metric said about the results,
and rewrites that module's instruction; a pool of such candidates evolves, kept diverse by a Pareto
frontier over the validation rows.

1. Roots. The uncompiled program is candidate 0; with `max_labeled` > 0, the same program with
   labeled demos (sampled from the trainset, as `labeled_fewshot` does) is a second root, so the
   frontier can keep a lineage with demos and one without. Every candidate is scored on every
   valset row, and kept row by row.
2. The frontier. On each valset row, the candidates with the best score on it lead it. A leader
   survives unless every row it leads is also led by another survivor (dominated: the weakest go
   first). A round draws its parent among the survivors, weighted by the rows each leads: a
   candidate best on a single hard row stays a parent, where picking by mean score would lose it.
3. A reflection round. A minibatch of training rows (consecutive slices of seeded shuffles of the
   trainset) is run with the parent. A parent perfect on it is left alone. Otherwise one predictor,
   round-robin over the predictors per candidate (skipping any the minibatch never called, and any
   whose instruction the .pipe file pins), gets its instruction rewritten by the proposer LM
   (`--proposer`, through `Session.ask`), which reads that predictor's calls on the minibatch
   (inputs, outputs), each row's score and the metric's feedback
   (`ScoredRow.feedback`; the expected values when a metric gives none). The child (the parent with
   the new instruction, demos kept) is run on the same minibatch, and accepted only if its total
   score there is strictly higher; then it is scored on the whole valset and joins the pool.
4. A merge round (`merges` > 0), tried right after a round that accepted a reflection: two
   survivors that are not each other's ancestors and share an ancestor no better than either are
   combined predictor by predictor: where one of them still has the ancestor's state and the other
   changed it, the change is taken; where both changed it, the better candidate's. The merge is
   scored on a few valset rows, chosen among those where either parent is ahead and those where they
   tie; it is accepted when it scores at least as well as the better parent there, then scored on
   the rest of the valset. A merge needs no LM call of the proposer, and it can only happen in a
   program of two predictors or more, so it is on by default (as in DSPy's GEPA): where lineages
   improved different modules, it is the cheap way to get both improvements at once.
5. The result is the candidate with the best valset mean (the earliest of equals: the uncompiled
   program wins ties), with that score; the compile still keeps the uncompiled program when the
   result scores below it (`never_worse`).

The budget: a round starts only when what is left of the call budget covers it (two minibatch runs,
one reflection, and the valset scoring of an accepted child, at the LM calls per row measured so
far); a round the budget cuts short is dropped, never half-counted, and the search ends with the
best candidate scored so far. `trials` bounds the rounds (reflections and merges alike).

Resuming: with a study storage (`--storage`, optionally `--study`), the roots' scores and every
finished round (what it tried, its scores, the accepted candidate's per-row valset scores) are
stored in an optuna study, each round as one finished trial. A compile interrupted at any point and
run again with the same settings and storage replays the stored rounds without an LM call (the
pool, the frontier, the report lines and the lineage come out as they were) and goes on from the
first round not stored; asking for more `trials` continues the same study. The round that was
running when the compile stopped is run again. Rounds are sequential, so a study is not shared by
workers (`--worker`).

Every round is a line in the report (`Session.record`: minibatch scores as minibatch trials, valset
scores as full ones), and the pool goes to the report as the lineage (`Session.record_lineage`):
each candidate's parents, the predictor whose instruction was rewritten, the minibatch scores before
and after, its valset score and the rows it leads at the end.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipec.session import LMRequest, OptionSpec, fingerprint, render_value

from .base import Optimizer
from .labeled_fewshot import LabeledFewShot
from .propose import SCHEMA, parse_instruction, same_instruction, signature_text
from .study_storage import make_storage

if TYPE_CHECKING:
    from pipec.session import PredictorState

MERGE_ROWS = 5                 # valset rows a merge is first judged on
PAIR_ATTEMPTS = 20             # draws of a pair of survivors to find one that can merge
CALLS_SHOWN = 2                # a predictor's calls shown per minibatch row (retries and maps repeat it)
VALUE_CHARS = 600              # a value shown to the reflection LM is clipped to this
INSTRUCTION_CHARS = 4000       # the longest instruction a reflection may write
REFLECTION_TOKENS = 1024       # the reflection's max_tokens (a dollar budget needs a bound on replies)
SETTINGS_ATTR = "pipec:reflect:settings"
ROOTS_ATTR = "pipec:reflect:roots"
ROUND_ATTR = "pipec:reflect:round"

SYSTEM = ("You improve the instruction of one step of a language-model program. You read what the step "
          "received and answered on a few examples and what an evaluator said about the program's final "
          "results, and you write a better instruction for the step. You reply with one JSON object and "
          "nothing else.")


class Reflect(Optimizer):
    """compile block: `optimizer = reflect(trials: 20, minibatch: 3, merges: 5, max_labeled: 4)`"""

    name = "reflect"
    doc = ("reflective instruction evolution (GEPA): an LM rewrites one module's instruction at a time from "
           "its traces and the metric's feedback; a Pareto frontier over valset rows keeps the candidates")
    options = {"trials": OptionSpec("int", "rounds, reflections and merges alike (the stored rounds of a "
                                             "resumed study count)", minimum=1),
               "minibatch": OptionSpec("int", "training rows a reflection reads and its child is judged on",
                                       minimum=1),
               "merges": OptionSpec("int", "merges of two lineages to try at most (0: none)", minimum=0),
               "max_labeled": OptionSpec("int", "labeled demos per predictor of a second root candidate "
                                                "(0: the uncompiled program is the only root)", minimum=0)}
    defaults = {"trials": 20, "minibatch": 3, "merges": 5, "max_labeled": 4}

    def optimize(self, session):
        return Evolution(session, self.opts, self.study_settings()).run()

    def evolve(self, session, roots: list[tuple[dict[str, PredictorState], list[float], str]]):
        """Evolve from roots another optimizer hands over — (params, score per valset row in the
        session's order, note) — instead of this optimizer's own; returns the best candidate's
        params and its per-row scores. Not stored in a study (the roots are the caller's).

        `auto` does this with the winner of its race: `Reflect(trials=4).evolve(session, [(params,
        scores, "k=3 nearest demos")])`.
        """
        evolution = Evolution(session, self.opts, self.study_settings(), roots=roots)
        params, _ = evolution.run()
        best = max(evolution.pool, key=lambda c: (c.score, -c.id)) if evolution.pool else None
        return params, (list(best.scores) if best is not None else [])

    def study_settings(self) -> dict[str, Any]:
        """The settings a stored search depends on (everything but `trials`): its study's identity."""
        return {k: v for k, v in self.settings().items() if k != "trials"}


# ---------------------------------------------------------------------------- the frontier
def leaders(scores: Sequence[Sequence[float]]) -> list[set[int]]:
    """Per valset row, the candidates with the best score on it (`scores[c][row]`).

    >>> leaders([[1, 0, 0], [0, 1, 0]])
    [{0}, {1}, {0, 1}]
    """
    rows = len(scores[0]) if scores else 0
    out = []
    for r in range(rows):
        best = max(s[r] for s in scores)
        out.append({c for c, s in enumerate(scores) if s[r] == best})
    return out


def frontier(scores: Sequence[Sequence[float]]) -> dict[int, int]:
    """The candidates that survive, each with the number of valset rows it leads.

    A candidate survives when it leads some row and is not dominated: a leader is dropped when every
    row it leads is also led by another candidate still in; the weakest (lowest mean, then the
    oldest) are tried first, one at a time, until none can go.

    >>> frontier([[1, 0, 0], [0, 1, 0], [0, 0, 0]])      # 2 leads only the row the others tie on
    {0: 2, 1: 2}
    >>> frontier([[1, 1], [1, 1]])                        # equals: one is enough, the newer stays
    {1: 2}
    """
    rows = leaders(scores)
    means = [sum(s) / len(s) if s else 0.0 for s in scores]
    order = sorted({c for row in rows for c in row}, key=lambda c: (means[c], c))
    alive = set(order)
    dropped = True
    while dropped:
        dropped = False
        for c in order:
            if c in alive and all(row & (alive - {c}) for row in rows if c in row):
                alive.discard(c)
                dropped = True
                break
    return {c: sum(1 for row in rows if c in row) for c in sorted(alive)}


def pick_parent(front: dict[int, int], rng) -> int:
    """A survivor drawn with probability proportional to the rows it leads."""
    ids = sorted(front)
    return rng.choices(ids, weights=[front[c] for c in ids])[0]


# ---------------------------------------------------------------------------- the pool
@dataclass
class Candidate:
    """A parameter set of the pool, its per-row valset scores, and where it came from."""

    id: int
    params: dict[str, PredictorState]
    scores: list[float]
    parents: tuple[int, ...] = ()
    how: str = "root"                    # root, reflection, merge
    predictor: str | None = None         # the predictor a reflection rewrote
    note: str = ""                       # a root's description
    minibatch: tuple[float, float] | None = None     # (parent's, own) mean on the rows it was judged on
    trial: int | None = None             # the report's trial that gave its valset score
    turn: int = 0                        # round-robin: the index of the predictor to reflect on next

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


class Stop(Exception):
    """The budget ran out inside a round: the round is dropped and the search ends."""


class Evolution:
    """One search: the pool, the rounds, and the study they are stored in."""

    def __init__(self, session, opts: dict[str, Any], settings: dict[str, Any], roots=None):
        self.session = session
        self.given_roots = roots                 # (params, per-row scores, note) from another optimizer
        self.opts = opts
        self.names = sorted(session.predictors())
        self.views = session.predictors()
        # A predictor whose instruction the .pipe file pins is never reflected on (the compile would
        # put the written instruction back anyway: a reflection on it would be budget spent for nothing).
        self.tunable = [n for n in self.names if "instruction" not in getattr(self.views[n], "pinned", ())]
        self.pool: list[Candidate] = []
        self.rounds = 0
        self.merges = 0                          # merge rounds run
        self.merged: set[tuple] = set()          # (i, j, ancestor) and (i, j, picks) already tried
        self.merge_due = False                   # the last round accepted a reflection
        self.calls = 0                           # LM calls of evaluations so far, and their rows:
        self.rows = 0                            # the per-row cost that plans the rounds
        self.orders: dict[int, list[int]] = {}
        self.store = Store(session, settings, self.names) if session.storage is not None and roots is None else None

    # -- the search
    def run(self) -> tuple[dict[str, PredictorState], float | None]:
        session = self.session
        if not self.names:
            return session.baseline(), None
        session.expect_trials(self.opts["trials"])
        session.phase("roots")
        try:
            self.roots()
        except Stop:
            pass
        if self.pool:
            stored = self.store.rounds() if self.store is not None else []
            for record in stored[:self.opts["trials"]]:
                self.apply(record)
            session.phase("reflect")
            while self.tunable and self.rounds < self.opts["trials"] and not session.out_of_budget:
                try:
                    record = self.round(self.rounds)
                except Stop:
                    break
                if record is None:
                    break
                if self.store is not None:
                    self.store.save(record)
                self.apply(record)
        return self.result()

    def result(self) -> tuple[dict[str, PredictorState], float | None]:
        if not self.pool:
            return self.session.baseline(), self.session.baseline_score
        best = max(self.pool, key=lambda c: (c.score, -c.id))
        front = frontier([c.scores for c in self.pool])
        from pipec.session import LineageNode
        self.session.record_lineage([
            LineageNode(id=c.id, parents=list(c.parents), how=c.how, predictor=c.predictor,
                        instruction=c.params[c.predictor].instruction if c.predictor else None,
                        note=c.note, minibatch=[round(x, 6) for x in c.minibatch] if c.minibatch else [],
                        score=round(c.score, 6), leads=front.get(c.id, 0), trial=c.trial, chosen=c is best)
            for c in self.pool])
        return best.params, best.score

    def roots(self) -> None:
        """Candidate 0, the uncompiled program, and the labeled root: stored ones, or scored now."""
        if self.given_roots is not None:
            for params, scores, note in self.given_roots:
                self.add_root(params, scores, note)
            return
        base = self.session.baseline()
        stored = self.store.roots() if self.store is not None else None
        if stored is not None:
            from pipec.session import PredictorState
            for r in stored:
                params = {n: PredictorState.model_validate(s) for n, s in r["params"].items()}
                self.add_root(params, r["scores"], r["note"])
            return
        found = [(base, "the uncompiled program")]
        if self.opts["max_labeled"] > 0:
            labeled = LabeledFewShot(max_labeled=self.opts["max_labeled"]).labeled(self.session)
            if labeled != base:
                shown = sum(len(s.demos) for s in labeled.values())
                found.append((labeled, f"labeled demos ({shown} in all)"))
        made = []
        for params, note in found:
            result = self.evaluate(params, list(self.session.valset))
            scores = [r.score for r in result.rows]
            self.add_root(params, scores, note)
            made.append({"params": {n: s.model_dump(mode="json") for n, s in params.items()}, "scores": scores,
                         "note": note})
        if self.store is not None:
            self.store.save_roots(made)

    def add_root(self, params, scores: list[float], note: str) -> None:
        c = Candidate(len(self.pool), params, list(scores), note=note)
        c.trial = self.line(c.score, True, f"candidate {c.id}: {note}")
        self.pool.append(c)

    def round(self, t: int) -> dict[str, Any] | None:
        """Run round `t` and return its record (what `apply` adds to the pool), or None when the
        budget left cannot pay for a round."""
        b = self.minibatch_size()
        if not self.affords(2 * b + len(self.session.valset), extra=1):
            return None
        if self.merge_due and self.merges < self.opts["merges"]:
            self.session.phase("merge")
            record = self.merge(t)
            self.session.phase("reflect")
            if record is not None:
                return record
        return self.reflect(t)

    # -- reflection
    def reflect(self, t: int) -> dict[str, Any]:
        session = self.session
        front = frontier([c.scores for c in self.pool]) or {len(self.pool) - 1: 1}    # (an empty valset)
        parent = self.pool[pick_parent(front, session.rng(f"reflect:parent:{t}"))]
        rows = self.minibatch(t)
        before = self.evaluate(parent.params, rows)
        record: dict[str, Any] = {"round": t, "kind": "reflection", "parent": parent.id, "rows": len(rows),
                                  "before": before.score}
        if all(r.score >= 1.0 for r in before.rows):
            return {**record, "kind": "perfect"}
        turn = self.turn(parent, before)
        name = self.names[turn]
        current = parent.params[name].instruction
        rng = session.rng(f"reflect:ask:{t}")
        sampling = {"temperature": 0.7, "max_tokens": REFLECTION_TOKENS, "seed": rng.randrange(2 ** 31)}
        request = reflection_request(self.views[name], current, examples(name, rows, before.rows, self.labels()),
                                     sampling)
        answer = session.ask(request)
        if answer.budget_spent:
            raise Stop
        new = parse_instruction(answer.text, INSTRUCTION_CHARS, lines=True) if answer.text is not None else None
        record.update(predictor=name, turn=turn)
        if new is None or same_instruction(new, current):
            return {**record, "instruction": None, "accepted": False}
        child = with_instruction(parent.params, name, new)
        after = self.evaluate(child, rows)
        accepted = sum(r.score for r in after.rows) > sum(r.score for r in before.rows)
        record.update(instruction=new, after=after.score, accepted=accepted)
        if accepted:
            session.phase("full eval")
            record["scores"] = [r.score for r in self.evaluate(child, list(session.valset)).rows]
            session.phase("reflect")
        return record

    def labels(self) -> list[str]:
        """The fields whose expected values a reflection may show: the metric's, or (a python
        metric names none) every field of the rows that is not an input."""
        if self.session.metric.fields:
            return list(self.session.metric.fields)
        inputs = set(self.session.input_names)
        return list(dict.fromkeys(k for row in self.session.trainset for k in row.values if k not in inputs))

    def turn(self, parent: Candidate, scored) -> int:
        """The predictor to reflect on: the parent's next in round-robin order that the minibatch
        called (its calls are the reflection's material), else simply its next."""
        called = {rec.predictor for r in scored.rows if r.prediction is not None for rec in r.prediction.trace}
        n = len(self.names)
        order = [i for i in ((parent.turn + k) % n for k in range(n)) if self.names[i] in self.tunable]
        return next((i for i in order if self.names[i] in called), order[0])

    # -- merge
    def merge(self, t: int) -> dict[str, Any] | None:
        """A merge round's record, or None when no two survivors can be merged."""
        session = self.session
        rng = session.rng(f"reflect:merge:{t}")
        found = self.merge_triple(sorted(frontier([c.scores for c in self.pool])), rng)
        if found is None:
            return None
        i, j, ancestor, picks = found
        a, b = self.pool[i], self.pool[j]
        merged = {n: self.pool[picks[n]].params[n] for n in self.names}
        rows = merge_rows(a.scores, b.scores, rng)
        valset = list(session.valset)
        first = self.evaluate(merged, [valset[r] for r in rows])
        best_parent = max(sum(a.scores[r] for r in rows), sum(b.scores[r] for r in rows))
        accepted = sum(r.score for r in first.rows) >= best_parent
        record = {"round": t, "kind": "merge", "parents": [i, j], "ancestor": ancestor, "picks": picks,
                  "rows": len(rows), "before": best_parent / len(rows), "after": first.score, "accepted": accepted}
        if accepted:
            session.phase("full eval")
            rest = [r for r in range(len(valset)) if r not in rows]
            others = self.evaluate(merged, [valset[r] for r in rest]).rows if rest else []
            scores = [0.0] * len(valset)
            for r, row in zip(rows, first.rows):
                scores[r] = row.score
            for r, row in zip(rest, others):
                scores[r] = row.score
            record["scores"] = scores
        return record

    def merge_triple(self, survivors: list[int], rng) -> tuple[int, int, int, dict[str, int]] | None:
        """Two survivors and a common ancestor worth merging, with the candidate each predictor's
        state comes from, or None."""
        if len(survivors) < 2:
            return None
        for _ in range(PAIR_ATTEMPTS):
            i, j = sorted(rng.sample(survivors, 2))
            up_i, up_j = self.ancestors(i), self.ancestors(j)
            if i in up_j or j in up_i:
                continue
            common = [a for a in sorted(up_i & up_j) if (i, j, a) not in self.merged
                      and self.pool[a].score <= min(self.pool[i].score, self.pool[j].score)
                      and self.differs(a, i, j)]
            if not common:
                continue
            weights = [self.pool[a].score for a in common]
            ancestor = rng.choices(common, weights=weights if sum(weights) > 0 else None)[0]
            picks = self.picks(ancestor, i, j, rng)
            if (i, j, tuple(sorted(picks.items()))) in self.merged:
                continue
            merged = {n: self.pool[picks[n]].params[n] for n in self.names}
            if any(c.params == merged for c in self.pool):
                continue                      # nothing new: one of the pool already is this program
            return i, j, ancestor, picks
        return None

    def ancestors(self, c: int) -> set[int]:
        out, todo = set(), list(self.pool[c].parents)
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo.extend(self.pool[p].parents)
        return out

    def differs(self, a: int, i: int, j: int) -> bool:
        """Some predictor kept the ancestor's state in one of the two and changed it in the other."""
        anc, pi, pj = self.pool[a].params, self.pool[i].params, self.pool[j].params
        return any((anc[n] == pi[n] or anc[n] == pj[n]) and pi[n] != pj[n] for n in self.names)

    def picks(self, a: int, i: int, j: int, rng) -> dict[str, int]:
        """Per predictor, the candidate whose state the merge takes."""
        anc, ci, cj = self.pool[a], self.pool[i], self.pool[j]
        out = {}
        for n in self.names:
            if ci.params[n] == cj.params[n] or anc.params[n] == cj.params[n]:
                out[n] = i                    # the same, or only i changed it
            elif anc.params[n] == ci.params[n]:
                out[n] = j                    # only j changed it
            elif ci.score != cj.score:
                out[n] = i if ci.score > cj.score else j
            else:
                out[n] = rng.choice([i, j])
        return out

    # -- applying a round (a live one, or one replayed from the study)
    def apply(self, record: dict[str, Any]) -> None:
        """Add a round's outcome to the search: the report lines, the round-robin, the new candidate."""
        t, kind = record["round"], record["kind"]
        self.rounds = t + 1
        accepted = bool(record.get("accepted"))
        if kind == "merge":
            i, j = record["parents"]
            self.merges += 1
            self.merged.add((i, j, record["ancestor"]))
            self.merged.add((i, j, tuple(sorted(record["picks"].items()))))
            verdict = "accepted" if accepted else "rejected: below the better parent"
            self.line(record["after"], False, f"round {t + 1}: merge of candidates {i} and {j} (common ancestor "
                                               f"{record['ancestor']}) on {record['rows']} valset rows: "
                                               f"{_fmt(record['before'])} -> {_fmt(record['after'])}, {verdict}")
            if accepted:
                params = {n: self.pool[record["picks"][n]].params[n] for n in self.names}
                self.add(params, record, (i, j), "merge", None)
            self.merge_due = False
            return
        parent = self.pool[record["parent"]]
        if kind == "perfect":
            self.line(record["before"], False, f"round {t + 1}: candidate {parent.id} is perfect on its minibatch "
                                                f"of {record['rows']}: nothing to reflect on")
            self.merge_due = False
            return
        name = record["predictor"]
        parent.turn = record["turn"] + 1
        where = f"round {t + 1}: {name} of candidate {parent.id}"
        if record.get("instruction") is None:
            self.line(record["before"], False, f"{where}: the reflection gave no new instruction")
        else:
            verdict = "accepted" if accepted else "rejected: not better"
            self.line(record["after"], False, f"{where} rewritten from {record['rows']} rows: minibatch "
                                               f"{_fmt(record['before'])} -> {_fmt(record['after'])}, {verdict}")
        if accepted:
            child = self.add(with_instruction(parent.params, name, record["instruction"]), record, (parent.id,),
                             "reflection", name)
            child.turn = parent.turn
        self.merge_due = accepted

    def add(self, params, record: dict[str, Any], parents: tuple[int, ...], how: str,
            predictor: str | None) -> Candidate:
        c = Candidate(len(self.pool), params, list(record["scores"]), parents, how, predictor,
                      minibatch=(record["before"], record["after"]))
        origin = f"{predictor} of candidate {parents[0]}" if how == "reflection" else \
            f"merge of {parents[0]} and {parents[1]}"
        c.trial = self.line(c.score, True, f"candidate {c.id} ({origin}, round {record['round'] + 1}): valset")
        self.pool.append(c)
        return c

    def line(self, score: float, full: bool, note: str) -> int | None:
        """Record a report line; its trial number."""
        trial = self.session.record(score, full=full, note=note)
        return getattr(trial, "number", None)

    # -- rows and the budget
    def minibatch_size(self) -> int:
        return max(1, min(self.opts["minibatch"], len(self.session.trainset)))

    def minibatch(self, t: int) -> list:
        """Round `t`'s training rows: the t-th slice of consecutive seeded shuffles of the trainset
        (every row is read once per pass), a function of `t` alone so a resumed search reads the same."""
        train = self.session.trainset
        n, b = len(train), self.minibatch_size()
        picked: list[int] = []
        for k in range(t * b, t * b + b):
            epoch, at = divmod(k, n)
            if epoch not in self.orders:
                order = list(range(n))
                self.session.rng(f"reflect:epoch:{epoch}").shuffle(order)
                self.orders[epoch] = order
            if self.orders[epoch][at] not in picked:
                picked.append(self.orders[epoch][at])
        return [train[i] for i in picked]

    def evaluate(self, params, rows: list):
        """Score `params` on `rows`; raise Stop when the budget ran out before every row was scored."""
        before = self.session.calls_used
        result = self.session.evaluate(params, rows)
        self.calls += self.session.calls_used - before
        self.rows += len(rows)
        if result.incomplete:
            raise Stop
        return result

    def per_row(self) -> float:
        """LM calls one row costs: what evaluations measured so far, at least one per module call."""
        observed = self.calls / self.rows if self.rows else 0.0
        return max(float(max(1, self.session.module_calls)), observed)

    def affords(self, rows: int, extra: int = 0) -> bool:
        left = self.session.calls_left
        return left is None or left >= math.ceil(self.per_row() * rows) + extra


def with_instruction(params: dict[str, PredictorState], name: str, instruction: str) -> dict[str, PredictorState]:
    """`params` with one predictor's instruction replaced (its demos kept)."""
    return {n: (s.model_copy(update={"instruction": instruction}) if n == name else s) for n, s in params.items()}


def merge_rows(a: Sequence[float], b: Sequence[float], rng, size: int = MERGE_ROWS) -> list[int]:
    """Valset rows to judge a merge of `a` and `b` on: as many where `a` is ahead, where `b` is
    ahead, and where they tie, as there are (then any), in row order.

    >>> import random
    >>> merge_rows([1, 0, 1, 1], [0, 1, 1, 0], random.Random(0), size=3) in ([0, 1, 2], [1, 2, 3])
    True
    """
    rows = range(len(a))
    buckets = [[r for r in rows if a[r] > b[r]], [r for r in rows if b[r] > a[r]], [r for r in rows if a[r] == b[r]]]
    for bucket in buckets:
        rng.shuffle(bucket)
    picked: list[int] = []
    while len(picked) < min(size, len(a)):
        for bucket in buckets:
            if bucket and len(picked) < size:
                picked.append(bucket.pop())
    return sorted(picked)


# ---------------------------------------------------------------------------- the reflection
def examples(name: str, rows: Sequence, scored: Sequence, fields: Sequence[str]) -> list[dict[str, Any]]:
    """What the reflection reads about predictor `name` on each minibatch row: its calls (inputs and
    outputs, or the reply it could not parse), the row's score, and the metric's feedback (else the
    expected values of a row that missed, or the error of a row that failed)."""
    out = []
    for row, s in zip(rows, scored):
        trace = s.prediction.trace if s.prediction is not None else []
        calls = [rec for rec in trace if rec.predictor == name]
        shown = [rec for rec in calls if rec.parsed is not None][:CALLS_SHOWN] or calls[-1:]
        item: dict[str, Any] = {"calls": [{"inputs": rec.inputs or {}, "outputs": rec.parsed,
                                           "raw": rec.raw if rec.parsed is None else None} for rec in shown],
                                "score": s.score, "feedback": s.feedback, "error": s.error}
        if s.feedback is None and s.score < 1.0:
            item["expected"] = {f: row.values[f] for f in fields if f in row.values}
        out.append(item)
    return out


def reflection_request(predictor, instruction: str, seen: list[dict[str, Any]], params: dict[str, Any]) -> LMRequest:
    """The request asking the proposer LM to rewrite `predictor`'s instruction from what it saw.

    >>> from pipec.dsl.types import Type
    >>> from pipec.session import PredictorView
    >>> p = PredictorView("m", "Say hi.", (("q", Type("str"), ""),), (("a", Type("str"), ""),))
    >>> seen = [{"calls": [{"inputs": {"q": "x"}, "outputs": {"a": "y"}, "raw": None}], "score": 0.0,
    ...          "feedback": "expected z, got y", "error": None}]
    >>> text = reflection_request(p, "Say hi.", seen, {}).messages[1]["content"]
    >>> "expected z, got y" in text and "- q: x" in text and "- a: y" in text
    True
    """
    parts = [f'The step is called "{predictor.name}". What it receives and what it must produce:',
             signature_text(predictor), "", "Its current instruction:", _quote(instruction), "",
             (f"How it did on {len(seen)} example{'s' * (len(seen) != 1)}: for each, what the step received "
              "and answered, then the evaluator's score for the program's final result (0 to 1) and its feedback.")]
    for k, item in enumerate(seen, 1):
        parts += ["", f"## Example {k}"]
        if not item["calls"]:
            parts.append("The step was not reached on this example.")
        for call in item["calls"]:
            parts.append("Received:")
            parts += [f"- {n}: {_clip(render_value(v))}" for n, v in call["inputs"].items()]
            if call["outputs"] is not None:
                parts.append("Answered:")
                parts += [f"- {n}: {_clip(render_value(v))}" for n, v in call["outputs"].items()]
            else:
                parts.append(f"Answered something that could not be read: {_clip(call['raw'] or '')}")
        parts.append(f"Score: {item['score']:.2f}")
        if item.get("error"):
            parts.append(f"Error: {_clip(item['error'])}")
        if item.get("feedback"):
            parts.append(f"Feedback: {_clip(item['feedback'])}")
        elif item.get("expected"):
            shown = "; ".join(f"{f} = {_clip(render_value(v))}" for f, v in item["expected"].items())
            parts.append(f"Expected: {shown}")
        elif item["score"] >= 1.0:
            parts.append("Feedback: correct.")
    parts += ["", ("Write a new instruction for this step. Work out from the feedback what went wrong and why: "
                   "the rules, distinctions, facts about the domain or the form of the answer that the current "
                   "instruction leaves out or gets wrong, and state them plainly, as general guidance. Keep what "
                   "already works. The instruction is read before every input, not only these examples, so do not "
                   "refer to them. Reply with a JSON object: {\"instruction\": \"...\"}")]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]
    return LMRequest(messages, SCHEMA, dict(params))


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines()) or "> (none)"


def _clip(text: str, n: int = VALUE_CHARS) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _fmt(score: float) -> str:
    return f"{score:.2f}"


# ---------------------------------------------------------------------------- the study
class Store:
    """The search kept in an optuna study (`Session.storage`), so an interrupted compile resumes: the
    settings it was made with and the roots' per-row scores as study attributes, every finished
    round as one finished trial (its record in the trial's attributes, the child's minibatch score
    as its value)."""

    def __init__(self, session, settings: dict[str, Any], names: list[str]):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        name = session.study or study_name(session, settings)
        self.study = optuna.create_study(storage=make_storage(optuna, session.storage), study_name=name,
                                         direction="maximize", load_if_exists=True)
        # Stored scores are per valset row: a study is only resumed on the same rows (a call budget
        # can cut the valset, so a study named with --study may meet other rows).
        rows = fingerprint([e.values for e in session.trainset], [e.values for e in session.valset])
        wanted = {"settings": settings, "predictors": names, "rows": rows}
        stored = self.study.user_attrs.get(SETTINGS_ATTR)
        if stored is None:
            self.study.set_user_attr(SETTINGS_ATTR, wanted)
        elif stored.get("rows") != rows and {**stored, "rows": rows} == wanted:
            raise ValueError(f"optuna study '{name}' holds a search on other training or validation rows (a call "
                             "budget too small for the whole valset scores a sample of it: give the budget the "
                             "study was made with), or name another study")
        elif stored != wanted:
            raise ValueError(f"optuna study '{name}' holds another search ({stored['settings']}, predictors "
                             f"{', '.join(stored['predictors'])}); name another study")

    def roots(self) -> list[dict[str, Any]] | None:
        return self.study.user_attrs.get(ROOTS_ATTR)

    def save_roots(self, roots: list[dict[str, Any]]) -> None:
        self.study.set_user_attr(ROOTS_ATTR, roots)

    def rounds(self) -> list[dict[str, Any]]:
        """The stored rounds, in order, up to the first one missing."""
        found = {}
        for t in self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.COMPLETE,)):
            record = t.user_attrs.get(ROUND_ATTR)
            if isinstance(record, dict):
                found.setdefault(record["round"], record)
        out = []
        while len(out) in found:
            out.append(found[len(out)])
        return out

    def save(self, record: dict[str, Any]) -> None:
        value = record.get("after", record.get("before", 0.0))
        self.study.add_trial(self.optuna.trial.create_trial(value=float(value), user_attrs={ROUND_ATTR: record}))


def study_name(session, settings: dict[str, Any]) -> str:
    """A name that changes with everything the search depends on but `trials`, so that asking for
    more trials continues the same study: 'pipec-reflect-<pipeline>-<digest>'."""
    who = session.identity
    digest = fingerprint(who.sources, who.pipeline, [e.values for e in session.trainset],
                         [e.values for e in session.valset], session.metric.text, settings, session.seed,
                         who.lms, who.teacher, who.proposer)
    return f"pipec-reflect-{who.pipeline}-{digest[:16]}"


__all__ = ["Reflect", "examples", "frontier", "leaders", "merge_rows", "pick_parent", "reflection_request",
           "study_name"]
