"""The reflective optimizer (`reflect`, GEPA-class), offline with scripted LMs.

The task LM labels a review right only when its instruction carries the ZEBRA rule; the metric's
feedback on a miss names that rule (a python metric), and the scripted reflection LM writes it into
the instruction only when the feedback it reads mentions it. So whether the search finds the rule,
and whether it found it through the feedback, is observable. Reflection requests are recognised by
the reflection's system message.
"""
from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
from conftest import first_user_value, system_of

import pipec
from pipec.artifact import read_artifact
from pipec.optimizers import reflect
from pipec.optimizers.reflect import Candidate, Evolution, frontier, leaders, merge_rows, pick_parent

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

SENTIMENT = """
    signature Classify {
        "Label the text."
        in  text: str "a short review"
        out label: enum(pos, neg) "the sentiment"
    }
    module classify = Predict(Classify)
    pipeline senti(text: str) -> (label) {
        c = classify(text: text)
        return label = c.label
    }
"""

RULE = "Apply the ZEBRA rule: 'good' means pos, anything else neg."
BLAND = "Label the sentiment of the review carefully."

METRIC = '''
def zebra(example, prediction):
    if prediction.get("label") == example["label"]:
        return 1.0
    return 0.0, "wrong label: this task follows the ZEBRA rule, which the instruction must state"


def silent(example, prediction):
    return 1.0 if prediction.get("label") == example["label"] else 0.0
'''


def rows(prefix: str, n: int) -> list[dict]:
    # Three in four rows are 'bad' ones: the uninstructed model (which answers pos) gets only a quarter.
    return [{"text": f"{prefix} {'good' if i % 4 == 0 else 'bad'} item {i}", "label": "pos" if i % 4 == 0 else "neg"}
            for i in range(n)]


TRAIN, VAL = rows("train", 12), rows("val", 8)


def is_reflection(request) -> bool:
    return system_of(request) == reflect.SYSTEM


def truth(request) -> str:
    return "pos" if " good " in first_user_value(request, "text") else "neg"


def make_rule(replies=None, by_seed=False):
    """The task is right with ZEBRA in its instruction, else it always says pos. The reflection
    writes the ZEBRA rule when its prompt mentions ZEBRA (the feedback), else a bland instruction;
    `replies`, when given, are the reflection's replies in turn instead (a 1-tuple is an instruction),
    or, `by_seed`, the one the request's seed picks (the same request, the same reply)."""
    count = {"n": 0}

    def rule(request):
        if is_reflection(request):
            if replies is not None:
                k = request.params["seed"] if by_seed else count["n"]
                reply = replies[k % len(replies)]
                count["n"] += 1
                return reply if isinstance(reply, (str, BaseException)) else {"instruction": reply[0]}
            text = request.messages[1]["content"]
            return {"instruction": RULE if "ZEBRA" in text else BLAND}
        return {"label": truth(request) if "ZEBRA" in system_of(request) else "pos"}
    return rule


@pytest.fixture
def senti(write_pipe, tool_module):
    path = write_pipe(SENTIMENT, "senti.pipe")
    return path, tool_module(METRIC)


def compile_reflect(senti, lm, *, metric="zebra", seed=3, options=None, **kw):
    path, mod = senti
    prog = pipec.load(path, lm=lm, cache=False)
    return prog.compile(TRAIN, VAL, f'python("{mod}:{metric}")', "reflect", seed=seed,
                        options={"max_labeled": 0, **(options or {})}, **kw)


def reflections(lm) -> list:
    return [r for r in lm.requests if is_reflection(r)]


# ---------------------------------------------------------------------------- the frontier
def test_a_candidate_best_on_one_row_survives_and_dominated_ones_drop():
    scores = [[0.5, 0.5, 0.5, 0.0],      # 0: best on no row alone, below 1 everywhere but the last
              [1.0, 1.0, 1.0, 0.0],      # 1: best on three rows
              [0.0, 0.0, 0.0, 1.0],      # 2: worst on average, but the only one right on the last row
              [1.0, 1.0, 0.0, 0.0]]      # 3: ties 1 where it leads: dominated
    assert leaders(scores) == [{1, 3}, {1, 3}, {1}, {2}]
    assert frontier(scores) == {1: 3, 2: 1}


def test_equal_candidates_leave_one_on_the_frontier_and_a_row_all_miss_keeps_nobody_extra():
    assert frontier([[1.0, 0.0], [1.0, 0.0]]) == {1: 2}
    assert frontier([[0.0, 0.0]]) == {0: 2}                     # a lone candidate always survives
    assert frontier([[1.0, 0.0], [0.0, 0.0]]) == {0: 2}         # the all-miss row is not a reason to stay


def test_parents_are_drawn_by_the_rows_they_lead_deterministically():
    front = {1: 3, 2: 1}
    draws = [pick_parent(front, random.Random(f"s{i}")) for i in range(400)]
    assert set(draws) == {1, 2}
    assert 0.65 < draws.count(1) / len(draws) < 0.85              # 3 : 1
    assert draws == [pick_parent(front, random.Random(f"s{i}")) for i in range(400)]


def test_merge_rows_take_rows_where_either_parent_leads_and_ties():
    picked = merge_rows([1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 1, 0], random.Random(1), size=3)
    assert len(picked) == 3 and picked == sorted(picked)
    assert {0, 1} & set(picked) and {2, 3} & set(picked) and {4, 5} & set(picked)
    assert merge_rows([1, 0], [0, 1], random.Random(1), size=5) == [0, 1]


# ---------------------------------------------------------------------------- merges, on a stub session
class StubSession:
    """Just enough of a session for `Evolution`'s merge: two predictors, 4 valset rows, and an
    evaluate whose per-row scores are given by a function of the parameters."""

    def __init__(self, score_row):
        from pipec.session import PredictorView
        self.score_row = score_row
        self.valset = [SimpleNamespace(values={"i": i}) for i in range(4)]
        self.trainset = list(self.valset)
        self.storage = None
        self.seed = 0
        self.calls_used = 0
        self.calls_left = None
        self.module_calls = 2
        self.views = {n: PredictorView(n, "x", (), ()) for n in ("a", "b")}

    def predictors(self):
        return self.views

    def rng(self, salt=""):
        return random.Random(salt)

    def evaluate(self, params, rows):
        scored = [SimpleNamespace(score=self.score_row(params, r.values["i"])) for r in rows]
        return SimpleNamespace(rows=scored, incomplete=False, score=sum(s.score for s in scored) / len(scored))

    def phase(self, name):
        pass


def state(instruction):
    from pipec.session import PredictorState
    return PredictorState(instruction=instruction)


def test_a_merge_takes_each_lineage_s_change_and_is_judged_against_the_better_parent():
    # Candidate 1 improved predictor a (right on rows 0-1), candidate 2 predictor b (rows 2-3): the
    # merge of the two through their ancestor 0 takes a from 1 and b from 2, and is right everywhere.
    def score_row(params, i):
        return float((i < 2 and params["a"].instruction == "A1") or (i >= 2 and params["b"].instruction == "B1"))
    ev = Evolution(StubSession(score_row), {"merges": 5, "minibatch": 2, "trials": 5, "max_labeled": 0}, {})
    root = {"a": state("A0"), "b": state("B0")}
    ev.pool = [Candidate(0, root, [0, 0, 0, 0]),
               Candidate(1, {**root, "a": state("A1")}, [1, 1, 0, 0], (0,), "reflection", "a"),
               Candidate(2, {**root, "b": state("B1")}, [0, 0, 1, 1], (0,), "reflection", "b")]
    assert frontier([c.scores for c in ev.pool]) == {1: 2, 2: 2}
    assert ev.merge_triple([1, 2], random.Random(0)) == (1, 2, 0, {"a": 1, "b": 2})
    record = ev.merge(7)
    assert record["kind"] == "merge" and record["parents"] == [1, 2] and record["accepted"]
    assert record["scores"] == [1.0, 1.0, 1.0, 1.0]
    # A candidate and its own ancestor never merge; nor do candidates with no common ancestor.
    ev.pool.append(Candidate(3, {**root, "a": state("A1"), "b": state("B2")}, [1, 1, 0, 1], (1,), "reflection", "b"))
    assert ev.merge_triple([1, 3], random.Random(0)) is None
    assert ev.merge_triple([0, 1], random.Random(0)) is None


def test_a_merge_worse_than_the_better_parent_is_rejected():
    def score_row(params, i):         # the two changes clash: together they are wrong everywhere
        a, b = params["a"].instruction == "A1", params["b"].instruction == "B1"
        return 0.0 if a and b else float((i < 2 and a) or (i >= 2 and b))
    ev = Evolution(StubSession(score_row), {"merges": 5, "minibatch": 2, "trials": 5, "max_labeled": 0}, {})
    root = {"a": state("A0"), "b": state("B0")}
    ev.pool = [Candidate(0, root, [0, 0, 0, 0]),
               Candidate(1, {**root, "a": state("A1")}, [1, 1, 0, 0], (0,), "reflection", "a"),
               Candidate(2, {**root, "b": state("B1")}, [0, 0, 1, 1], (0,), "reflection", "b")]
    record = ev.merge(1)
    assert record["accepted"] is False and "scores" not in record


def test_round_robin_over_predictors_skips_uncalled_and_pinned_ones():
    session = StubSession(lambda params, i: 0.0)
    ev = Evolution(session, {"merges": 0, "minibatch": 2, "trials": 5, "max_labeled": 0}, {})
    parent = Candidate(0, {"a": state("A0"), "b": state("B0")}, [0, 0, 0, 0])

    def scored(*called):
        trace = [SimpleNamespace(predictor=n) for n in called]
        return SimpleNamespace(rows=[SimpleNamespace(prediction=SimpleNamespace(trace=trace))])
    assert ev.turn(parent, scored("a", "b")) == 0
    parent.turn = 1
    assert ev.turn(parent, scored("a", "b")) == 1
    assert ev.turn(parent, scored("a")) == 0                  # b was not called on the minibatch: a instead
    assert ev.turn(parent, scored()) == 1                     # nothing called: simply the next
    # A predictor whose instruction the file pins is never the one rewritten.
    session.views = {"a": SimpleNamespace(name="a", pinned=frozenset({"instruction"})),
                     "b": SimpleNamespace(name="b", pinned=frozenset({"demos"}))}
    pinned = Evolution(session, {"merges": 0, "minibatch": 2, "trials": 5, "max_labeled": 0}, {})
    assert pinned.tunable == ["b"]
    parent.turn = 0
    assert pinned.turn(parent, scored("a", "b")) == 1 and pinned.turn(parent, scored("a")) == 1


# ---------------------------------------------------------------------------- the search, end to end
def test_feedback_leads_the_reflection_to_the_rule_and_the_program_improves(senti):
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_reflect(senti, lm)
    rep = prog.report
    assert rep.baseline_score == 0.25
    assert rep.compiled_score == 1.0
    assert "ZEBRA" in prog.params()["classify"].instruction
    assert all(prog(text=r["text"]).label == r["label"] for r in VAL)
    assert reflections(lm), "the reflection LM was never asked"


def test_without_feedback_the_same_search_finds_nothing(senti):
    # The same scripted reflection, but the metric says only a score: ZEBRA is nowhere to read.
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_reflect(senti, lm, metric="silent", options={"trials": 6})
    assert prog.report.compiled_score == prog.report.baseline_score == 0.25
    assert "ZEBRA" not in prog.params()["classify"].instruction
    assert reflections(lm)


def test_the_reflection_prompt_shows_the_module_s_traces_and_the_feedback(senti):
    lm = pipec.ScriptedLM(rule=make_rule())
    compile_reflect(senti, lm, options={"trials": 1, "minibatch": 3})
    (request,) = reflections(lm)
    text = request.messages[1]["content"]
    assert request.schema == {"type": "object", "properties": {"instruction": {"type": "string"}},
                              "required": ["instruction"]}
    assert request.params["max_tokens"] > 0                      # a dollar budget needs a bound on the reply
    assert '"classify"' in text and "> Label the text." in text   # the step and its current instruction
    assert "- text: train " in text and "- label: pos" in text    # what it received and answered
    assert text.count("## Example") == 3
    assert "Feedback: wrong label: this task follows the ZEBRA rule" in text
    assert "Score: 0.00" in text


def test_a_metric_without_feedback_shows_the_expected_values_instead(senti):
    lm = pipec.ScriptedLM(rule=make_rule())
    compile_reflect(senti, lm, metric="silent", options={"trials": 1, "minibatch": 3})
    text = reflections(lm)[0].messages[1]["content"]
    assert "Expected: label = neg" in text and "Feedback:" not in text.replace("Feedback: correct.", "")


def test_a_child_is_accepted_only_when_it_improves_on_the_minibatch(senti):
    # The first reflection changes nothing that matters (same minibatch score: rejected), the second
    # writes the rule (better: accepted, then scored on the valset).
    lm = pipec.ScriptedLM(rule=make_rule(replies=[(BLAND,), (RULE,)]))
    prog = compile_reflect(senti, lm, options={"trials": 2, "minibatch": 4})
    notes = [t.note for t in prog.report.trials]
    assert notes[0] == "candidate 0: the uncompiled program"
    assert "rejected: not better" in notes[1] and "accepted" not in notes[1]
    assert "accepted" in notes[2] and notes[3].startswith("candidate 1 (classify of candidate 0, round 2)")
    assert [t.full for t in prog.report.trials] == [True, False, False, True]
    lineage = prog.report.lineage
    assert [(n.id, n.parents, n.how) for n in lineage] == [(0, [], "root"), (1, [0], "reflection")]
    assert lineage[1].instruction == RULE and lineage[1].minibatch[1] > lineage[1].minibatch[0]
    assert BLAND not in json.dumps([n.model_dump() for n in lineage])     # rejected children are not in the pool


def test_unusable_reflections_cost_a_round_not_the_compile(senti):
    lm = pipec.ScriptedLM(rule=make_rule(replies=["no json here", {"instruction": 3}, ("Label the text.",)]))
    prog = compile_reflect(senti, lm, options={"trials": 3})
    assert prog.report.compiled_score == prog.report.baseline_score
    assert sum("gave no new instruction" in t.note for t in prog.report.trials) == 3


def test_a_perfect_parent_is_not_reflected_on(senti):
    lm = pipec.ScriptedLM(rule=lambda r: {"instruction": RULE} if is_reflection(r) else {"label": truth(r)})
    prog = compile_reflect(senti, lm, options={"trials": 3})
    assert not reflections(lm)
    assert all("perfect on its minibatch" in t.note for t in prog.report.trials[1:])


@pytest.mark.parametrize("budget", [5, 12, 20, 33, 60])
def test_the_budget_is_never_exceeded_and_the_best_so_far_is_kept(senti, budget):
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_reflect(senti, lm, budget=budget, options={"trials": 50})
    assert len(lm.requests) <= budget
    rep = prog.report
    assert rep.compiled_score >= rep.baseline_score
    full = [t.score for t in rep.trials if t.full]
    if full:
        assert rep.compiled_score == max(full)


def test_a_budget_that_covers_one_good_round_returns_its_child(senti):
    # 8 (baseline) + 8 (root, row by row) + 3 + 1 + 3 (a round) + 8 (the child's valset) = 31
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_reflect(senti, lm, budget=34, options={"trials": 50, "minibatch": 3})
    assert len(lm.requests) <= 34
    assert prog.report.compiled_score == 1.0
    assert len(reflections(lm)) == 1


def test_same_seed_same_artifact_and_other_seeds_draw_other_minibatches(senti, tmp_path):
    blobs, asked = [], []
    for seed in (4, 4, 5):
        lm = pipec.ScriptedLM(rule=make_rule(replies=[(BLAND,), ("Label the reviews well.",), (RULE,)]))
        prog = compile_reflect(senti, lm, seed=seed, options={"trials": 4})
        blobs.append(prog.save(tmp_path / f"s{seed}-{len(blobs)}.json").read_bytes())
        asked.append([first_user_value(r, "text") for r in lm.requests if not is_reflection(r)])
    assert blobs[0] == blobs[1]
    assert asked[0] == asked[1] and asked[0] != asked[2]


def test_the_lineage_reaches_the_saved_artifact(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_reflect(senti, lm, options={"trials": 4})
    art = read_artifact(prog.save(tmp_path / "senti.json"))
    lineage = art.report.lineage
    assert lineage[0].how == "root" and lineage[0].note == "the uncompiled program" and lineage[0].parents == []
    child = next(n for n in lineage if n.how == "reflection")
    assert child.parents == [0] and child.predictor == "classify" and "ZEBRA" in child.instruction
    assert child.score == 1.0 and child.chosen and child.leads == len(VAL)
    assert [n.chosen for n in lineage].count(True) == 1
    assert art.report.trials[child.trial - 1].note.startswith(f"candidate {child.id} ")
    assert art.report.trials[child.trial - 1].score == child.score


def test_other_optimizers_write_no_lineage(senti, tmp_path):
    path, mod = senti
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=make_rule()), cache=False).compile(
        TRAIN, VAL, f'python("{mod}:zebra")', "labeled_fewshot", seed=1)
    doc = json.loads(prog.save(tmp_path / "l.json").read_text())
    assert "lineage" not in doc["report"]                # artifacts without one keep their old shape


def test_labeled_demos_make_a_second_root(senti):
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_reflect(senti, lm, options={"trials": 2, "max_labeled": 2})
    roots = [n for n in prog.report.lineage if n.how == "root"]
    assert [n.note for n in roots] == ["the uncompiled program", "labeled demos (2 in all)"]
    assert prog.report.trials[1].note == "candidate 1: labeled demos (2 in all)"


# ---------------------------------------------------------------------------- merges, end to end
TWO = """
    signature Word { "Say the word." in text: str out word: str }
    signature Mood { "Say the mood." in text: str out mood: enum(pos, neg) }
    module a_word = Predict(Word)
    module b_mood = Predict(Mood)
    pipeline two(text: str) -> (word, mood) {
        w = a_word(text: text)
        m = b_mood(text: text)
        return word = w.word, mood = m.mood
    }
"""


def two_rule(request):
    """Rows are of kinds A, B and C. a_word is right on B and C rows, or with ALPHA on A and B rows
    (it helps A and hurts C); b_mood says pos (wrong on B rows), or with BETA is always right. Each
    reflection writes its predictor's word."""
    if is_reflection(request):
        word = "ALPHA" if '"a_word"' in request.messages[1]["content"] else "BETA"
        return {"instruction": f"Use the {word} method."}
    word, kind, _ = first_user_value(request, "text").split()
    if "word" in (request.schema or {}).get("properties", {}):
        right = kind in ("A", "B") if "ALPHA" in system_of(request) else kind in ("B", "C")
        return {"word": word if right else "?"}
    return {"mood": ("neg" if kind == "B" else "pos") if "BETA" in system_of(request) else "pos"}


def test_merges_combine_two_lineages_in_a_compile(write_pipe):
    # ALPHA (a_word) and BETA (b_mood) written from the uncompiled program are two lineages, each
    # best on rows of its own; merged, they are best on both kinds of row.
    words = ["red", "blue", "green", "gold", "teal", "pink", "grey", "navy", "plum", "rose", "ruby", "jade",
             "sand", "wine", "lime", "rust"]
    data = [{"text": f"{w} {'AABC'[i % 4]} {i}", "word": w, "mood": "neg" if i % 4 == 2 else "pos"}
            for i, w in enumerate(words)]
    path = write_pipe(TWO, "two.pipe")
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=two_rule), cache=False)
    found = []
    for seed in range(8):
        compiled = prog.compile(data[:8], data[8:], "exact_match(word, mood)", "reflect", seed=seed,
                                options={"trials": 6, "minibatch": 3, "max_labeled": 0})
        rep = compiled.report
        assert rep.compiled_score >= rep.baseline_score
        for m in (n for n in rep.lineage if n.how == "merge"):
            assert len(m.parents) == 2 and m.predictor is None
            x, y = (rep.lineage[p] for p in m.parents)
            assert {x.predictor, y.predictor} == {"a_word", "b_mood"}
            assert m.score > max(x.score, y.score)
            found.append((seed, m))
            assert any(t.note.startswith("round ") and "merge of candidates" in t.note and "accepted" in t.note
                       for t in rep.trials)
    assert found, "no seed merged two lineages"


# ---------------------------------------------------------------------------- resuming from the study
def test_a_stopped_search_resumes_from_its_study_and_ends_as_an_uninterrupted_one(senti, tmp_path):
    replies = [(BLAND,), ("Label the reviews well.",), (RULE,), ("Say pos or neg.",), ("Be brief, pick a label.",)]

    def lm():
        return pipec.ScriptedLM(rule=make_rule(replies=replies, by_seed=True))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    options = {"trials": 8, "max_labeled": 2}
    # Stopped early by its budget: the rounds it finished are in the study.
    first = lm()
    stopped = compile_reflect(senti, first, storage=url, budget=45, options=options)
    done = [t for t in stopped.report.trials if t.note.startswith("round ")]
    assert 0 < len(done) < 8
    # Run again with room to finish: the stored rounds are replayed without an LM call, the rest run.
    again = lm()
    resumed = compile_reflect(senti, again, storage=url, options=options)
    whole = lm()
    uninterrupted = compile_reflect(senti, whole, options=options)
    assert [t.model_dump() for t in resumed.report.trials] == [t.model_dump() for t in uninterrupted.report.trials]
    assert resumed.report.lineage == uninterrupted.report.lineage and len(resumed.report.lineage) > 2
    assert resumed.params() == uninterrupted.params()
    assert len(again.requests) < len(whole.requests)
    later = [r.messages for r in reflections(again)]
    assert later and later == [r.messages for r in reflections(whole)][-len(later):]


def test_a_study_of_other_settings_is_refused(senti, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    compile_reflect(senti, pipec.ScriptedLM(rule=make_rule()), storage=url, study="mine", options={"trials": 1})
    with pytest.raises(ValueError, match="holds another search"):
        compile_reflect(senti, pipec.ScriptedLM(rule=make_rule()), storage=url, study="mine",
                        options={"trials": 1, "minibatch": 5})


def test_a_study_on_other_rows_is_refused(senti, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    compile_reflect(senti, pipec.ScriptedLM(rule=make_rule()), storage=url, study="mine", options={"trials": 1})
    path, mod = senti
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=make_rule()), cache=False)
    with pytest.raises(ValueError, match="other training or validation rows"):
        prog.compile(TRAIN, VAL[:6], f'python("{mod}:zebra")', "reflect", seed=3, storage=url, study="mine",
                     options={"trials": 1, "max_labeled": 0})


def test_the_html_report_draws_the_lineage(senti, tmp_path):
    from pipec.html_report import build_report
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_reflect(senti, lm, options={"trials": 4, "max_labeled": 2})
    page = build_report(prog)
    assert '<section id="lineage">' in page and 'href="#lineage"' in page
    svg = page[page.index('<svg id="lineage-svg"'):]
    svg = svg[:svg.index("</svg>")]
    lineage = prog.report.lineage
    assert svg.count('class="node cand') == len(lineage)
    assert svg.count('<path class="edge"') == sum(len(n.parents) for n in lineage)
    chosen = next(n for n in lineage if n.chosen)
    assert f'data-candidate="{chosen.id}"' in svg and "cand-chosen" in svg
    assert "ZEBRA" in svg                                   # the rewritten instruction, in its tooltip
    plain = pipec.load(senti[0], lm=pipec.ScriptedLM(rule=make_rule()), cache=False).compile(
        TRAIN, VAL, f'python("{senti[1]}:zebra")', "labeled_fewshot", seed=1)
    assert '<section id="lineage">' not in build_report(plain)


def test_a_pinned_instruction_is_never_reflected_on(write_pipe):
    # a_word's instruction is pinned in the file: every reflection is about b_mood, and a_word keeps
    # its written instruction (which the compile would enforce anyway: the point is no budget on it).
    pinned = TWO.replace("module a_word = Predict(Word)",
                         'module a_word = Predict(Word, instruction: "Say the word.", pin: [instruction])')
    words = ["red", "blue", "green", "gold", "teal", "pink", "grey", "navy", "plum", "rose", "ruby", "jade"]
    data = [{"text": f"{w} {'AABC'[i % 4]} {i}", "word": w, "mood": "neg" if i % 4 == 2 else "pos"}
            for i, w in enumerate(words)]
    lm = pipec.ScriptedLM(rule=two_rule)
    prog = pipec.load(write_pipe(pinned, "pinned.pipe"), lm=lm, cache=False)
    compiled = prog.compile(data[:6], data[6:], "exact_match(word, mood)", "reflect", seed=1,
                            options={"trials": 6, "max_labeled": 0})
    asked = [r.messages[1]["content"] for r in reflections(lm)]
    assert asked and all('"b_mood"' in text and '"a_word"' not in text for text in asked)
    assert compiled.params()["a_word"].instruction == "Say the word."
    assert "BETA" in compiled.params()["b_mood"].instruction
