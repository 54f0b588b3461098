"""Auto: the default optimizer. A budget-aware portfolio raced by successive halving.

On real data the best optimizer differs per task (per-input nearest demos won a 7-label intent task
by 25 points where MIPRO returned the uncompiled program; on a counting task the order reversed), so
auto does not guess: it builds candidates from every family it can afford, cheapest first,

- zero-shot (the uncompiled parameters),
- labeled demos,
- per-input nearest demos (knn),
- bootstrapped demos (teacher traces that pass the metric), at two sizes,
- the other alternatives of each one_of module (strategy search), each zero-shot and with the
  winning demo family built for its own predictors, under the winner's choice for the other modules,
- proposed instructions, each on the best candidate so far (its alternatives included),
- reflective evolution (`reflect`, after GEPA) from the winner: the proposer reads the winner's
  traces and the metric's feedback and rewrites one module's instruction at a time,

and races them on growing slices of the validation set (successive halving, Jamieson & Talwalkar
2016; the same schedule AutoPDL uses over prompting patterns): every survivor is scored on the next
rows only, the better half goes on, until one candidate has been scored on every row. Candidates are
always compared on the same rows (an incumbent that arrives scored on every row is compared on the
rung's rows). A candidate goes out when it is clearly worse than the leader: its deficit on the
rung's rows, row by row, exceeds one standard error of that deficit, as in racing (Maron & Moore
1994; Birattari et al.'s F-Race). One in the worse half that is not clearly worse stays while the
budget left pays for its next rung: on 8 rows a true lead of a row or two is within the noise, and
plain halving dropped a family that was 15 points better on the whole valset (BBH
disambiguation_qa, seed 1). A row is scored once per candidate, so a race of C candidates costs between
about `(log2 C + 1) x C x first_rung` rows (every loser clearly worse) and `C x valset` rows (no
evidence either way: all of them scored on every row). A family whose construction
the remaining budget cannot pay for (bootstrapping runs the teacher over training rows) is left out,
and the report says so. The compile keeps the uncompiled program if the winner scores below it.

Each candidate's trial note says which family it is and how far it got, with its measured LM calls
and tokens per row (the report draws score against cost), and a last trial says why the winner won
(its valset score against the runner-up and the baseline).

Strategy search is cost-aware. Alternatives over the compile's `max_calls_per_row` are never
candidates (the session does not list them), and the alternatives race in the order of their static
call bounds, cheapest first, with the incumbent first among equals: a candidate must outscore every
cheaper one on the same rows to win, so a tie goes to the cheaper program. A family that would
need teacher runs the budget left cannot pay for is built only zero-shot for an alternative, and the
verdict says which alternatives the budget left out.
"""
from __future__ import annotations

import json
import math

from pipec.session import OptionSpec, choice_of

from .base import Optimizer
from .bootstrap_fewshot import BootstrapFewShot
from .knn_fewshot import KNNFewShot
from .labeled_fewshot import LabeledFewShot
from .propose import Proposer, propose_instructions, summarize_data
from .reflect import Reflect


class Auto(Optimizer):
    """compile block: `optimizer = auto` (the default when a compile block names no optimizer), or
    `optimizer = auto(max_demos: 4, k: 3, instructions: 2, reflect: 6, first_rung: 8)`"""

    name = "auto"
    doc = "races zero-shot, labeled, nearest, bootstrapped demos and proposed instructions (successive halving)"
    options = {"max_demos": OptionSpec("int", "demos per predictor for labeled and bootstrapped candidates", minimum=1),
               "k": OptionSpec("int", "demos per input for the nearest-demos candidate", minimum=1),
               "instructions": OptionSpec("int", "proposed instructions to race (0: none)", minimum=0),
               "reflect": OptionSpec("int", "rounds of reflective evolution from the winner (0: none)", minimum=0),
               "first_rung": OptionSpec("int", "validation rows every candidate is first scored on", minimum=1),
               "seed": OptionSpec("int", "shuffle seed (default: the compile seed)")}
    defaults = {"max_demos": 4, "k": 3, "instructions": 2, "reflect": 6, "first_rung": 8}
    trials_option = "instructions"

    def optimize(self, session):
        rng = session.rng(f"auto:{self.opts.get('seed', '')}")
        order = list(range(len(session.valset)))
        rng.shuffle(order)
        rows = [session.valset[i] for i in order]
        race = Race(session, rows, self.opts["first_rung"])

        session.phase("auto: candidates")
        candidates = self.demo_candidates(session, race, rng)
        best = race.run(candidates)
        if best is not None and session.strategies() and not session.out_of_budget:
            session.phase("auto: strategies")
            best = self.strategy_search(session, race, best)
        if best is not None and self.opts["instructions"] and not session.out_of_budget:
            session.phase("auto: instructions")
            chosen = choice_of(best.params)     # proposals go to the predictors the winner runs
            challengers = self.instruction_candidates(session.under(chosen) if chosen else session, best, rng)
            if challengers:
                best = race.run([best, *challengers])
        if best is not None and best.full and self.opts["reflect"] and not session.out_of_budget:
            session.phase("auto: reflect")
            chosen = choice_of(best.params)
            best = self.reflective(session.under(chosen) if chosen else session, race, best, order)
        if best is None:
            return session.baseline(), None
        session.record(best.score, full=best.full, note=race.verdict(best), **best.cost())
        return best.params, (best.score if best.full else None)

    # ------------------------------------------------------------------ the families
    def demo_candidates(self, session, race: "Race", rng) -> list["Candidate"]:
        k, m = self.opts["k"], self.opts["max_demos"]
        out = [Candidate("zero-shot", session.baseline())]
        out.append(Candidate(f"{m} labeled demos", LabeledFewShot(max_labeled=m).labeled(session), ("labeled",)))
        out.append(Candidate(f"k={k} nearest demos per input", KNNFewShot(k=k).knn_params(session), ("knn",)))
        boot = BootstrapFewShot(max_demos=m, max_labeled=m)
        for size in dict.fromkeys((m, max(1, m // 2))):
            # The teacher runs over training rows until it has the demos: at worst the whole trainset.
            cost = len(session.trainset) * session.calls_per_row
            if not race.affords(cost + race.cost_of(len(out) + 1)):
                race.skipped.append(f"bootstrapped ({size} demos): the budget left cannot pay its teacher runs")
                continue
            with session.holding_back_for_validation():
                params = boot.bootstrap(session, session.rng(f"auto:bootstrap:{size}"), max_demos=size,
                                        max_labeled=size)
            out.append(Candidate(f"{size} bootstrapped demos", params, ("bootstrap", size)))
        return unique(out)

    def strategy_search(self, session, race: "Race", best: "Candidate") -> "Candidate":
        """One one_of module at a time, the winner against that module's other alternatives (the other
        modules as the winner chose): each zero-shot and with the winner's demo family rebuilt for the
        alternative's own predictors, raced cheapest first (see the module's docstring)."""
        for module in session.strategies():
            here = choice_of(best.params)
            listed = session.under(here).strategies()[module]         # the one `best` runs is listed first
            field: list[tuple[int, Candidate]] = [(listed[0].row_calls, best)]
            for alt in sorted(listed[1:], key=lambda a: a.row_calls):
                view = session.under({**here, module: alt.label})
                cost = race.cost_of(len(field) + 2) * max(1, view.calls_per_row) // max(1, session.calls_per_row)
                if not race.affords(cost):
                    race.skipped.append(f"{module}: {alt.label}: the budget left cannot pay for scoring it")
                    continue
                name = f"{module}: {alt.label}"
                field.append((alt.row_calls, Candidate(f"{name}, zero-shot", view.baseline())))
                params = self.rebuild(view, best.family, race, name)
                if params is not None:
                    field.append((alt.row_calls, Candidate(f"{name}, {best.label}", params, best.family)))
            challengers = unique([c for _, c in field])
            if len(challengers) > 1:
                order = {id(c): calls for calls, c in field}
                best = race.run(sorted(challengers, key=lambda c: order[id(c)]))   # stable: best first among equals
                if best is None or session.out_of_budget:
                    break
        return best

    def rebuild(self, view, family: tuple, race: "Race", name: str):
        """The demo family `family` built for the predictors `view` runs, or None for zero-shot (its
        zero-shot candidate is it) or when its teacher runs do not fit the budget left."""
        k, m = self.opts["k"], self.opts["max_demos"]
        if family[0] == "labeled":
            return LabeledFewShot(max_labeled=m).labeled(view)
        if family[0] not in ("knn", "bootstrap"):
            return None
        # Bootstrapping (and a pool for predictors that no labeled row fills) runs the teacher over the trainset.
        if not race.affords(len(view.trainset) * view.calls_per_row + race.cost_of(2)):
            race.skipped.append(f"{name} with {family[0]} demos: the budget left cannot pay its teacher runs")
            return None
        if family[0] == "knn":
            return KNNFewShot(k=k).knn_params(view)
        size = family[1]
        with view.holding_back_for_validation():
            return BootstrapFewShot(max_demos=size, max_labeled=size).bootstrap(
                view, view.rng(f"auto:bootstrap:{size}:{name}"), max_demos=size, max_labeled=size)

    def reflective(self, session, race: "Race", best: "Candidate", order: list[int]) -> "Candidate":
        """Reflective evolution with the winner as its only root (its per-row scores handed over, so
        nothing is scored twice); the evolved program if it beats the winner on the valset."""
        per_row = [0.0] * len(order)
        for j, i in enumerate(order):         # the race's row order back to the valset's
            per_row[i] = best.scores[j]
        params, scores = Reflect(trials=self.opts["reflect"], max_labeled=0, merges=2).evolve(
            session, [(best.params, per_row, best.label)])
        if params is best.params or not scores or sum(scores) <= sum(per_row):
            race.notes.append(f"reflective evolution from {best.label} found nothing better")
            return best
        evolved = Candidate(f"reflective evolution from {best.label}", params, best.family)
        evolved.scores = [scores[i] for i in order]
        # Only instructions changed: the winner's measured cost per row stands for the child's.
        evolved.calls, evolved.tokens = best.calls, best.tokens
        evolved.full = True
        race.record(best, f"beaten by {evolved.label}")
        race._seen([evolved])
        return evolved

    def instruction_candidates(self, session, best: "Candidate", rng) -> list["Candidate"]:
        count = self.opts["instructions"]
        predictors = session.predictors()
        if not race_affords_proposals(session, len(predictors) * count) or \
                all("instruction" in p.pinned for p in predictors.values()):
            return []
        proposer = Proposer(session, calls=len(predictors) * (count + 2))   # a couple of retries
        fields = list(session.input_names) + list(session.metric.fields)
        summary = summarize_data(session.trainset, fields)
        proposals = {}
        for name in sorted(predictors):
            if "instruction" in predictors[name].pinned:
                continue                     # the file pins it: no proposal is spent on it
            state = best.params[name]
            found = propose_instructions(predictors[name], state.instruction, count + 1, [list(state.demos)],
                                         summary, session.rng(f"auto:propose:{name}"), proposer)
            proposals[name] = found[1:]          # the first is the instruction it already has
        out = []
        for i in range(count):
            params = {name: st.model_copy(update={"instruction": proposals[name][i]})
                      if i < len(proposals.get(name, [])) else st for name, st in best.params.items()}
            out.append(Candidate(f"proposed instruction {i + 1} on {best.label}", params))
        return [c for c in unique([best, *out]) if c is not best]


def race_affords_proposals(session, calls: int) -> bool:
    left = session.calls_left
    return left is None or left > calls + len(session.valset) * session.calls_per_row


def unique(candidates: list["Candidate"]) -> list["Candidate"]:
    """Candidates with distinct parameters, the first of equals kept (labeled demos on a program whose
    predictors take no labeled demos are the zero-shot program)."""
    seen, out = set(), []
    for c in candidates:
        key = json.dumps({n: st.model_dump() for n, st in sorted(c.params.items())}, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


class Candidate:
    """One parameter set in the race, with the per-row scores it has earned so far, what they cost
    (LM requests and tokens, cache hits included), and the demo family it was built from."""

    __slots__ = ("label", "params", "family", "scores", "calls", "tokens", "out_at", "full")

    def __init__(self, label: str, params, family: tuple = ("zero-shot",)):
        self.label, self.params, self.family = label, params, family
        self.scores: list[float] = []
        self.calls = self.tokens = 0
        self.out_at: int | None = None        # rows scored when it was dropped
        self.full = False                     # scored on every validation row

    def cost(self) -> dict[str, float]:
        """Its measured LM requests and tokens per scored row, as `Session.record` takes them."""
        n = len(self.scores)
        return {"calls_per_row": self.calls / n, "tokens_per_row": self.tokens / n} if n else {}

    @property
    def score(self) -> float:
        return self.mean(len(self.scores))

    def mean(self, n: int) -> float:
        """Its mean score on the first `n` rows of the race (those it has, if fewer)."""
        seen = self.scores[:n]
        return sum(seen) / len(seen) if seen else 0.0


def clearly_worse(leader: Candidate, c: Candidate, n: int) -> bool:
    """Whether `c` trails `leader` on their first `n` rows by more than one standard error of the
    row-by-row difference: evidence, not noise. One row is no evidence.

    >>> a, b = Candidate("a", {}), Candidate("b", {})
    >>> a.scores, b.scores = [1, 1, 1, 1], [0, 0, 0, 0]
    >>> clearly_worse(a, b, 4)
    True
    >>> b.scores = [0, 1, 1, 1]          # one row behind on four: within the noise
    >>> clearly_worse(a, b, 4)
    False
    """
    diffs = [x - y for x, y in zip(leader.scores[:n], c.scores[:n])]
    if len(diffs) < 2:
        return False
    lead = sum(diffs) / len(diffs)
    spread = math.sqrt(sum((d - lead) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    return lead > spread


class Race:
    """Successive halving over a fixed order of validation rows."""

    def __init__(self, session, rows: list, first_rung: int):
        self.session, self.rows = session, rows
        self.first = max(1, min(first_rung, len(rows)))
        self.skipped: list[str] = []
        self.notes: list[str] = []
        self.results: list[Candidate] = []

    def cost_of(self, candidates: int) -> int:
        """LM calls a race of this many candidates costs at most: each rung halves the field and
        doubles the rows, so every rung costs about `candidates x first` rows' calls."""
        rungs = max(1, math.ceil(math.log2(max(1, candidates)))) + 1
        rows = 0
        n, alive = self.first, candidates
        for _ in range(rungs):
            rows += alive * min(n, len(self.rows))
            alive, n = max(1, math.ceil(alive / 2)), n * 2
        return rows * self.session.calls_per_row

    def affords(self, calls: int) -> bool:
        left = self.session.calls_left
        return left is None or calls <= left

    def run(self, field: list[Candidate]) -> Candidate | None:
        """The candidate left when every other has been outscored on the same rows; it has been scored
        on every validation row unless the budget ran out (then it is the best so far)."""
        alive = list(field)
        rank = {id(c): i for i, c in enumerate(field)}
        n = self.first
        while True:
            for c in alive:
                if not self._score_to(c, n):
                    return self._best_so_far(field)
            # On the same rows (an incumbent arrives scored on more of them than its challengers); a tie
            # goes to the earlier (cheaper) candidate of the field, whatever the order at the last rung.
            alive.sort(key=lambda c: (-c.mean(n), rank[id(c)]))
            if n >= len(self.rows) or len(alive) == 1:
                if n < len(self.rows):
                    if not self._score_to(alive[0], len(self.rows)):
                        return self._best_so_far(field)
                winner = alive[0]
                winner.full = True
                for c in alive[1:]:         # scored on every row too: their trials complete the cost front
                    self.record(c, f"beaten by {winner.label}")
                self._seen(field)
                return winner
            following, half = min(len(self.rows), n * 2), math.ceil(len(alive) / 2)
            survivors = alive[:1]
            for i, c in enumerate(alive[1:], 1):
                if not clearly_worse(alive[0], c, n) and (i < half or self.affords(
                        self._rows_to(survivors + [c], following) * self.session.calls_per_row)):
                    survivors.append(c)
                    continue
                c.out_at = n
                self.session.record(c.mean(n), full=False,
                                    note=f"auto: {c.label}: {c.mean(n):.3f} on {n} rows, out", **c.cost())
            alive, n = survivors, following

    def _rows_to(self, field: list[Candidate], n: int) -> int:
        """Rows still to score to bring every candidate of `field` to the first `n`."""
        return sum(max(0, n - len(c.scores)) for c in field)

    def record(self, c: Candidate, how: str) -> None:
        """A trial for a candidate scored on every row that did not win."""
        self.session.record(c.score, note=f"auto: {c.label}: {c.score:.3f} on {len(c.scores)} rows, {how}",
                            **c.cost())

    def _score_to(self, c: Candidate, n: int) -> bool:
        """Score `c` on rows it has not seen, up to the first `n`; False if the budget stopped it."""
        todo = self.rows[len(c.scores):n]
        if not todo:
            return True
        result = self.session.evaluate(c.params, todo)
        if result.incomplete:
            return False
        c.scores.extend(r.score for r in result.rows)
        c.calls += sum(r.calls for r in result.rows)
        c.tokens += sum(r.tokens for r in result.rows)
        return True

    def _best_so_far(self, field: list[Candidate]) -> Candidate | None:
        scored = [c for c in field if c.scores]
        self._seen(field)
        return max(scored, key=lambda c: (len(c.scores), c.score)) if scored else None

    def _seen(self, field: list[Candidate]) -> None:
        self.results += [c for c in field if c not in self.results]

    def verdict(self, best: Candidate) -> str:
        """Why the winner won: its score, the runner-up's on the same rows, the baseline's, what was
        left out."""
        others = [c for c in self.results if c is not best and c.scores]
        parts = [f"auto chose {best.label}: {best.score:.3f} on {len(best.scores)} validation rows"]
        if others:
            runner = max(others, key=lambda c: (len(c.scores), c.score))
            parts.append(f"runner-up {runner.label}: {runner.score:.3f} on {len(runner.scores)} rows")
        base = self.session.baseline_score
        if base is not None:
            parts.append(f"uncompiled {base:.3f}")
        parts += self.notes
        if self.skipped:
            parts.append("left out: " + "; ".join(self.skipped))
        return "; ".join(parts)
