"""`auto`, the default optimizer: it races every family it can afford and keeps what wins on the
validation rows, whichever family that is, and says why."""
from __future__ import annotations

import pytest
from conftest import first_user_value

import pipec

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

PIPE = """
signature Tag { "Tag the text." in text: str out tag: str }
module tag = Predict(Tag)
pipeline tagger(text: str) -> (tag) { t = tag(text: text) return tag = t.tag }
"""
TOPICS = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]


def rows(n, offset=0):
    return [{"text": f"note {i + offset} about {TOPICS[(i + offset) % len(TOPICS)]}",
             "tag": TOPICS[(i + offset) % len(TOPICS)].upper()} for i in range(n)]


def demo_texts(request) -> list[str]:
    users = [m["content"] for m in request.messages[1:-1] if m["role"] == "user"]
    return [line[len("text: "):] for u in users for line in u.splitlines() if line.startswith("text: ")]


def nearest_wins(request):
    """Right only when a demo is about the same topic as the input: what per-input nearest demos give,
    and a fixed demo set mostly does not."""
    if "instruction" in (request.schema or {}).get("properties", {}):
        return {"instruction": "Tag the text with its topic in capitals."}
    topic = first_user_value(request, "text").split()[-1]
    same = any(t.split()[-1] == topic for t in demo_texts(request))
    return {"tag": topic.upper() if same else "?"}


def demos_hurt(request):
    """Right only without demos: zero-shot must stay possible."""
    if "instruction" in (request.schema or {}).get("properties", {}):
        return {"instruction": "Tag it."}
    topic = first_user_value(request, "text").split()[-1]
    return {"tag": "?" if demo_texts(request) else topic.upper()}


def compile_with(write_pipe, rule, budget=None, **kw):
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(write_pipe(PIPE), lm=lm, cache=False)
    compiled = prog.compile(rows(30), rows(16, offset=100), "exact_match(tag)", seed=1, budget=budget, **kw)
    return compiled, lm


def test_auto_is_the_default_optimizer(write_pipe):
    compiled, _ = compile_with(write_pipe, nearest_wins)
    assert compiled.report.optimizer == "auto"


def test_it_finds_per_input_demos_when_they_win(write_pipe):
    compiled, _ = compile_with(write_pipe, nearest_wins)
    state = compiled.artifact.predictors["tag"]
    assert state.knn is not None and state.knn.k == 3
    assert compiled.report.compiled_score == 1.0 and compiled.report.baseline_score == 0.0
    verdict = compiled.report.trials[-1].note
    assert verdict.startswith("auto chose k=3 nearest demos per input: 1.000 on 16 validation rows")
    assert "runner-up" in verdict and "uncompiled 0.000" in verdict


def test_it_keeps_zero_shot_when_demos_hurt(write_pipe):
    compiled, _ = compile_with(write_pipe, demos_hurt)
    state = compiled.artifact.predictors["tag"]
    assert state.knn is None and state.demos == []
    assert compiled.report.compiled_score == 1.0
    assert compiled.report.trials[-1].note.startswith("auto chose zero-shot")


def test_losers_are_dropped_on_part_of_the_rows(write_pipe):
    """Successive halving: a candidate that loses the first rung is never scored on every row."""
    compiled, _ = compile_with(write_pipe, nearest_wins, options={"first_rung": 4, "instructions": 0})
    dropped = [t.note for t in compiled.report.trials if t.note.endswith(", out")]
    assert any(n.endswith("on 4 rows, out") for n in dropped)          # the first rung: 4 rows
    assert not any("on 16 rows" in n for n in dropped)                   # no loser saw every row


def test_a_family_the_budget_cannot_pay_for_is_left_out_and_named(write_pipe):
    # The baseline takes 16 calls; bootstrapping would run the teacher over 30 training rows.
    compiled, lm = compile_with(write_pipe, nearest_wins, budget=70, options={"instructions": 0})
    assert len(lm.requests) <= 70
    verdict = compiled.report.trials[-1].note
    assert "left out: bootstrapped (4 demos): the budget left cannot pay its teacher runs" in verdict


def test_proposed_instructions_race_on_the_best_demos(write_pipe):
    compiled, lm = compile_with(write_pipe, nearest_wins, options={"instructions": 1})
    notes = [t.note for t in compiled.report.trials]
    assert any("proposed instruction 1 on k=3 nearest demos per input" in n for n in notes)
    assert any("instruction" in (r.schema or {}).get("properties", {}) for r in lm.requests)


def test_random_search_considers_per_input_demos(write_pipe):
    compiled, _ = compile_with(write_pipe, nearest_wins, optimizer="random_search", options={"candidates": 3})
    assert compiled.artifact.predictors["tag"].knn is not None
    assert "k=3 nearest demos per input" in [t.note for t in compiled.report.trials]


# ---------------------------------------------------------------------------- reflective evolution
SENTI = """
signature Classify { "Label the text." in text: str out label: enum(pos, neg) }
module classify = Predict(Classify)
pipeline senti(text: str) -> (label) { c = classify(text: text) return label = c.label }
"""
ZEBRA_METRIC = '''
def zebra(example, prediction):
    if prediction.get("label") == example["label"]:
        return 1.0
    return 0.0, "wrong label: this task follows the ZEBRA rule, which the instruction must state"
'''


def senti_rows(prefix, n):
    return [{"text": f"{prefix} {'good' if i % 4 == 0 else 'bad'} item {i}", "label": "pos" if i % 4 == 0 else "neg"}
            for i in range(n)]


def zebra_rule(request):
    """Right only with the ZEBRA rule in the instruction, which only the metric's feedback names; demos
    never help, and instruction proposals (which see no feedback) stay bland."""
    from pipec.optimizers import reflect
    if request.messages[0]["content"] == reflect.SYSTEM:
        text = request.messages[1]["content"]
        return {"instruction": "Apply the ZEBRA rule: 'good' means pos." if "ZEBRA" in text else "Label it."}
    if "instruction" in (request.schema or {}).get("properties", {}):
        return {"instruction": "Label the review's sentiment."}
    right = "pos" if " good " in first_user_value(request, "text") else "neg"
    return {"label": right if "ZEBRA" in request.messages[0]["content"] else "pos"}


def test_reflective_evolution_from_the_winner_finds_what_only_the_feedback_says(write_pipe, tool_module):
    metric = tool_module(ZEBRA_METRIC)
    lm = pipec.ScriptedLM(rule=zebra_rule)
    prog = pipec.load(write_pipe(SENTI), lm=lm, cache=False)
    compiled = prog.compile(senti_rows("train", 12), senti_rows("val", 8), f'python("{metric}:zebra")', seed=3)
    assert "ZEBRA" in compiled.params()["classify"].instruction
    assert compiled.report.baseline_score == 0.25 and compiled.report.compiled_score == 1.0
    assert compiled.report.trials[-1].note.startswith("auto chose reflective evolution from zero-shot: 1.000")
    assert compiled.report.lineage and compiled.report.lineage[0].note == "zero-shot"


def test_no_reflection_when_turned_off(write_pipe, tool_module):
    metric = tool_module(ZEBRA_METRIC)
    lm = pipec.ScriptedLM(rule=zebra_rule)
    prog = pipec.load(write_pipe(SENTI), lm=lm, cache=False)
    compiled = prog.compile(senti_rows("train", 12), senti_rows("val", 8), f'python("{metric}:zebra")', seed=3,
                            options={"reflect": 0})
    from pipec.optimizers import reflect
    assert not [r for r in lm.requests if r.messages[0]["content"] == reflect.SYSTEM]
    assert compiled.report.compiled_score == 0.25


# ---------------------------------------------------------------------------- the race itself
class TableSession:
    """Just what `Race` uses of a session: each candidate's params name a row of fixed per-row scores,
    one LM call per row, and an optional call budget."""

    calls_per_row = 1

    def __init__(self, budget=None):
        self.budget, self.spent, self.trials = budget, 0, []

    @property
    def calls_left(self):
        return None if self.budget is None else self.budget - self.spent

    def evaluate(self, params, rows):
        from types import SimpleNamespace as NS
        done = []
        for i in rows:
            if self.budget is not None and self.spent >= self.budget:
                return NS(incomplete=True, rows=done)
            self.spent += 1
            done.append(NS(score=params["scores"][i], calls=1, tokens=10))
        return NS(incomplete=False, rows=done)

    def record(self, score, full=True, note="", **cost):
        self.trials.append(note)


def race_of(table, first=8, budget=None):
    from pipec.optimizers.auto import Candidate, Race
    session = TableSession(budget)
    n = len(next(iter(table.values())))
    field = [Candidate(name, {"scores": scores}) for name, scores in table.items()]
    return Race(session, list(range(n)), first), field, session


def test_a_family_within_the_noise_on_the_first_rung_is_not_dropped():
    """BBH disambiguation_qa, seed 1: on the first 8 rows nearest demos trailed labeled demos by a row,
    plain halving dropped them, and on the whole valset they were 15 points better."""
    labeled = [1, 1, 1, 0, 1, 0, 0, 0] + [0] * 12                       # 0.20 on 20 rows
    nearest = [1, 1, 0, 0, 1, 0, 0, 0] + [1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0]   # 0.45: a row behind on 8
    booted = [1, 0, 1, 1, 0, 1, 0, 0] + [0, 1, 0] * 4                   # 0.40: level with labeled on 8
    zero = [0, 1, 1, 0, 1, 0, 0, 0] + [0, 0, 1, 0] * 3                   # 0.30: level with nearest on 8
    weak = [0] * 20
    race, field, session = race_of({"zero-shot": zero, "labeled": labeled, "booted": booted, "nearest": nearest,
                                    "weak": weak})
    winner = race.run(field)
    assert winner.label == "nearest" and winner.full and winner.score == 0.45
    assert "auto: weak: 0.000 on 8 rows, out" in session.trials        # clearly worse: out on the first rung
    assert session.spent < 5 * 20


def test_the_race_still_halves_when_the_losers_are_clearly_worse():
    best = [1] * 16
    race, field, session = race_of({f"c{i}": [0] * 16 for i in range(3)} | {"best": best}, first=4)
    assert race.run(field).label == "best"
    assert session.spent == 4 * 4 + 12          # every loser out after 4 rows; the winner goes on alone
    assert len(session.trials) == 3
    assert all(t.endswith("on 4 rows, out") for t in session.trials)


def test_an_incumbent_is_compared_on_the_challengers_rows():
    """An incumbent arrives scored on every row (0.75 overall, right on all of the first 4): compared
    with its overall score, a challenger right on the first 4 rows would have knocked it out there."""
    from pipec.optimizers.auto import Candidate
    incumbent_scores = [1, 1, 1, 1, 1, 1, 0, 0]
    race, field, session = race_of({"challenger": [1, 1, 1, 1, 0, 0, 0, 0]}, first=4)
    incumbent = Candidate("incumbent", {"scores": incumbent_scores})
    incumbent.scores = list(incumbent_scores)
    winner = race.run([incumbent, *field])
    assert winner is incumbent
    assert session.spent == 8                    # the incumbent's rows are never scored again


def test_a_survivor_the_budget_cannot_pay_for_goes_out():
    labeled = [1, 1, 1, 0, 1, 0, 0, 0] + [0] * 8
    nearest = [1, 1, 0, 0, 1, 0, 0, 0] + [1] * 8
    race, field, session = race_of({"labeled": labeled, "nearest": nearest}, budget=24)
    winner = race.run(field)
    assert winner.label == "labeled" and winner.full
    assert session.spent == 24 and "auto: nearest: 0.375 on 8 rows, out" in session.trials


def test_a_tie_on_every_row_goes_to_the_earlier_candidate_whatever_led_before():
    """BBH snarks: labeled demos led zero-shot after 16 rows, the two tied on all 20, and the order of
    the last rung kept labeled demos first: a tie must go to the cheaper, earlier candidate."""
    zero = [0, 1, 1, 1, 0, 1, 1, 0] + [1, 0, 1, 0, 1, 0, 1, 0] + [1, 1, 0, 0]      # 0.55
    labeled = [1, 1, 1, 1, 1, 0, 0, 1] + [0, 1, 0, 1, 0, 1, 0, 1] + [1, 0, 0, 0]   # 0.55, a row ahead on 8 and 16
    race, field, _ = race_of({"zero-shot": zero, "labeled": labeled})
    winner = race.run(field)
    assert winner.label == "zero-shot" and winner.full and winner.score == 0.55
