"""MIPRO and instruction proposal, offline with a scripted LM.

The scripted task LM answers correctly only when its system prompt carries the MAGIC phrase (which
only a proposed instruction has) or, in some tests, when demos are present; so the search has
something to find, and whether it finds it is observable. Proposal requests are recognised by the
proposer's system message and answered with JSON instructions (or garbage).
"""
from __future__ import annotations

import json
import random

import pytest
from conftest import first_user_value, system_of

import pipec
from pipec.optimizers import propose

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

MAGIC = "Use the MAGIC rule: good means pos."


def rows(prefix: str, n: int) -> list[dict]:
    return [{"text": f"{prefix} {'good' if i % 2 else 'bad'} item {i}", "label": "pos" if i % 2 else "neg"}
            for i in range(n)]


TRAIN, VAL = rows("train", 12), rows("val", 10)


def is_proposal(request) -> bool:
    return system_of(request) == propose.SYSTEM


def truth(request) -> str:
    return "pos" if "good" in first_user_value(request, "text") else "neg"


def wrong(request) -> str:
    return "neg" if truth(request) == "pos" else "pos"


def has_demos(request) -> bool:
    return len(request.messages) > 2


def make_rule(proposals=(MAGIC, "Decide the sentiment of the review.", "Label it."), demos_help=True, raw=False):
    """Proposals cycle through `proposals` (instructions, sent as `{"instruction": ...}`, or as they are
    if `raw`; exceptions are raised); the task is right with MAGIC, or with demos if `demos_help`."""
    counter = {"n": 0}

    def rule(request):
        if is_proposal(request):
            reply = proposals[counter["n"] % len(proposals)]
            counter["n"] += 1
            if isinstance(reply, BaseException):
                raise reply
            return reply if raw else {"instruction": reply}
        if has_demos(request) and not demos_help:
            return {"label": wrong(request)}
        if "MAGIC" in system_of(request) or has_demos(request):
            return {"label": truth(request)}
        return {"label": wrong(request)}
    return rule


@pytest.fixture
def senti(write_pipe):
    return write_pipe(SENTIMENT, "senti.pipe")


def compile_mipro(path, lm, tmp_path, cache="c", **kw):
    options = {"trials": 8, "minibatch": 4, "instructions": 4, **kw.pop("options", {})}
    prog = pipec.load(path, lm=lm, cache=tmp_path / cache)
    return prog.compile(trainset=TRAIN, valset=VAL, metric="exact_match(label)", optimizer="mipro",
                        seed=kw.pop("seed", 3), options=options, **kw)


def proposals_of(lm) -> list:
    return [r for r in lm.requests if is_proposal(r)]


# ---------------------------------------------------------------------------- the search
def test_winner_beats_baseline(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_mipro(senti, lm, tmp_path)
    rep = prog.report
    assert rep.baseline_score == 0.0
    assert rep.compiled_score == 1.0
    assert rep.compiled_score > rep.baseline_score
    assert any(t.full for t in rep.trials) and any(not t.full for t in rep.trials)
    assert proposals_of(lm), "the proposer was never asked"
    # The winner is scored on the full valset, and the program carries it.
    assert prog.report.compiled_score == max(t.score for t in rep.trials if t.full)
    assert all(prog(text=r["text"]).label == r["label"] for r in VAL)


def test_original_instruction_is_candidate_zero_and_proposals_are_deduped(senti, monkeypatch):
    from pipec.optimizers.mipro import Space
    # The proposer repeats itself up to case and punctuation: one candidate each.
    lm = pipec.ScriptedLM(rule=make_rule(proposals=("Label the text", "decide the sentiment of the review.",
                                                    "Decide the Sentiment of the review")))
    stored = {}
    to_json = Space.to_json
    monkeypatch.setattr(Space, "to_json", lambda self: stored.setdefault("space", to_json(self)))
    pipec.load(senti, lm=lm, cache=False).compile(trainset=TRAIN, valset=VAL, metric="exact_match(label)",
                                                  optimizer="mipro", seed=1,
                                                  options={"trials": 2, "minibatch": 4, "instructions": 4})
    assert stored["space"]["instructions"]["classify"] == ["Label the text.", "decide the sentiment of the review."]
    assert stored["space"]["demo_sets"]["classify"][0] == []          # the zero-demo set is always there
    assert len(proposals_of(lm)) == 5                   # 3 wanted + 2 extra attempts to make up for duplicates


@pytest.mark.parametrize("budget", [25, 40, 70])
def test_budget_is_never_exceeded(senti, tmp_path, budget):
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_mipro(senti, lm, tmp_path, budget=budget)
    assert len(lm.requests) <= budget
    assert prog.report.compiled_score >= 0.0


def test_budget_spent_during_trials_returns_the_best_full_score(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = compile_mipro(senti, lm, tmp_path, budget=70, options={"trials": 50})
    assert len(lm.requests) <= 70
    full = [t.score for t in prog.report.trials if t.full]
    assert full and prog.report.compiled_score == max(full)


def test_same_seed_same_result(senti, tmp_path):
    results = []
    for i in range(2):
        lm = pipec.ScriptedLM(rule=make_rule())
        prog = compile_mipro(senti, lm, tmp_path, cache=f"c{i}")
        results.append((prog.report.model_dump(), prog.params(), [r.messages for r in lm.requests]))
    assert results[0] == results[1]


def test_different_seeds_draw_different_minibatches(senti, tmp_path):
    seen = []
    for seed in (1, 2):
        lm = pipec.ScriptedLM(rule=make_rule())
        compile_mipro(senti, lm, tmp_path, cache=f"s{seed}", seed=seed, options={"trials": 3})
        seen.append([first_user_value(r, "text") for r in lm.requests if not is_proposal(r)])
    assert seen[0] != seen[1]


def test_a_known_baseline_score_saves_the_baseline_trial(senti, tmp_path, monkeypatch):
    # Once compile_program hands the baseline's score to the session (`session.baseline_score`),
    # the enqueued baseline trial reuses it instead of scoring a minibatch. Simulated here.
    from pipec.optimize import CompileSession as Session
    evaluate = Session.evaluate

    def first_is_baseline(self, params, rows=None):
        result = evaluate(self, params, rows)
        if not hasattr(self, "baseline_score"):
            self.baseline_score = result.score
        return result
    monkeypatch.setattr(Session, "evaluate", first_is_baseline)
    prog = compile_mipro(senti, pipec.ScriptedLM(rule=make_rule()), tmp_path)
    first = prog.report.trials[0]
    assert first.note == "trial 1: classify: instruction 0, 0 demos (full score known)" and first.score == 0.0
    assert prog.report.compiled_score == 1.0


# ---------------------------------------------------------------------------- demos vs no demos
def test_zero_demo_config_wins_when_demos_hurt(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule(demos_help=False))
    prog = compile_mipro(senti, lm, tmp_path, options={"trials": 12})
    params = prog.params()["classify"]
    assert params.demos == []
    assert "MAGIC" in params.instruction
    assert prog.report.compiled_score == 1.0


def test_demos_can_win_without_a_good_instruction(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule(proposals=("Decide the sentiment of the review.",)))
    prog = compile_mipro(senti, lm, tmp_path, options={"trials": 12})
    assert prog.params()["classify"].demos
    assert prog.report.compiled_score == 1.0


# Two predictors: the search space has an instruction and a demo set index for each.
CHAIN = """
    signature Extract { "Pick the word that matters." in text: str out word: str }
    signature Judge { "Judge the word." in word: str out label: enum(pos, neg) }
    module pick = Predict(Extract)
    module judge = ChainOfThought(Judge)
    pipeline chain(text: str) -> (label) {
        w = pick(text: text)
        j = judge(word: w.word)
        return label = j.label
    }
"""


def chain_rule(request):
    if is_proposal(request):
        return {"instruction": MAGIC if "Judge the word" in request.messages[1]["content"] else "Pick one word."}
    if "Pick" in system_of(request):
        return {"word": "good" if "good" in first_user_value(request, "text") else "bad"}
    word = first_user_value(request, "word")
    right = "pos" if word == "good" else "neg"
    # Without help the judge gets only "good" right: half the rows pass, and their traces become demos.
    ok = "MAGIC" in system_of(request) or has_demos(request) or word == "good"
    return {"reasoning": "because", "label": right if ok else ("neg" if right == "pos" else "pos")}


def test_every_predictor_of_a_chain_is_searched(write_pipe, tmp_path):
    import optuna
    path = write_pipe(CHAIN, "chain.pipe")
    lm = pipec.ScriptedLM(rule=chain_rule)
    url = f"sqlite:///{tmp_path / 'chain.db'}"
    prog = compile_mipro(path, lm, tmp_path, storage=url, options={"trials": 10})
    (name,) = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    assert set(study.trials[0].params) == {"judge/demos", "judge/instruction", "pick/demos", "pick/instruction"}
    space = study.user_attrs["pipec:space"]
    assert space["instructions"]["judge"] == ["Judge the word.", MAGIC]
    assert space["instructions"]["pick"] == ["Pick the word that matters.", "Pick one word."]
    # Inner predictors get no labeled demos, only bootstrapped ones (with the rationale).
    judge_sets = space["demo_sets"]["judge"]
    assert len(judge_sets) > 1 and judge_sets[0] == [] and all("reasoning" in d for s in judge_sets[1:] for d in s)
    assert prog.report.compiled_score > prog.report.baseline_score


# ---------------------------------------------------------------------------- resume on storage
def test_resume_runs_only_the_missing_trials(senti, tmp_path):
    import optuna
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = pipec.ScriptedLM(rule=make_rule())
    compile_mipro(senti, first, tmp_path, cache="r1", storage=url, options={"trials": 4})
    (name,) = optuna.get_all_study_names(url)
    assert name.startswith("pipec-mipro-senti-")
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 4

    second = pipec.ScriptedLM(rule=make_rule())
    prog = compile_mipro(senti, second, tmp_path, cache="r2", storage=url, options={"trials": 8})
    study = optuna.load_study(study_name=name, storage=url)
    assert optuna.get_all_study_names(url) == [name]            # more trials resume, not restart
    assert len(study.trials) == 8
    assert not proposals_of(second)                             # candidates came from the study
    assert not any("train" in first_user_value(r, "text") for r in second.requests)   # no bootstrapping again
    # Baseline (10 valset rows) + 4 new minibatch trials (4 rows each) + at most two full scorings.
    assert len(second.requests) <= 10 + 4 * 4 + 2 * 10
    assert len(second.requests) < len(first.requests) + 4 * 4
    assert prog.report.compiled_score == 1.0
    stored = study.user_attrs["pipec:space"]
    assert stored["instructions"]["classify"][0] == "Label the text."
    json.dumps(stored)

    # Asking for no more trials than the study has runs none.
    third = pipec.ScriptedLM(rule=make_rule())
    compile_mipro(senti, third, tmp_path, cache="r3", storage=url, options={"trials": 6})
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 8
    assert not proposals_of(third)


@pytest.mark.parametrize("stored_by", ["this pipec", "an older pipec"])
def test_finalize_reports_the_studys_trials(senti, tmp_path, monkeypatch, stored_by):
    # Issue 13: `--finalize` reported "0 trials" and wrote `"trials": []` for a study of finished
    # trials: its report held only what the finalizing process itself scored. It is the study's now,
    # the same lines a single compile writes (number, score, full or minibatch, note), whichever
    # worker ran each trial. Workers started together are in test_workers_together.py.
    import optuna
    from pipec.optimizers.mipro import FULL_ATTR, Search
    if stored_by == "an older pipec":             # trials stored without their report line
        monkeypatch.setattr(Search, "_line", lambda self, *a: None)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    options = {"trials": 9, "minibatch": 4}
    worker = compile_mipro(senti, pipec.ScriptedLM(rule=make_rule()), tmp_path, cache="w", storage=url,
                           study="s", mode="worker", options=options)
    assert worker.compile_result.worker_trials == 9
    final = compile_mipro(senti, pipec.ScriptedLM(rule=make_rule()), tmp_path, cache="f", storage=url,
                          study="s", mode="finalize", options=options)
    study = optuna.load_study(study_name="s", storage=url)
    TS = optuna.trial.TrialState
    finished = sorted(study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.PRUNED)), key=lambda t: t.number)
    assert len(finished) == 9
    report = final.report
    lines = [t for t in report.trials if t.note.startswith("trial ")]
    assert [t.note.split(":")[0] for t in lines] == [f"trial {t.number + 1}" for t in finished]
    for line, t in zip(lines, finished):
        if t.state == TS.PRUNED:
            assert line.score == round(t.intermediate_values[0], 6) and not line.full and "(pruned" in line.note
        elif t.user_attrs["rows"]:
            assert line.score == round(t.value, 6) and not line.full and line.note.endswith("(minibatch of 4)")
        else:
            assert line.score == round(t.value, 6) and line.full and line.note.endswith("(full score known)")
    fulls = [t for t in report.trials if t.note.startswith("full valset: ")]
    assert fulls and {t.score for t in fulls} <= {round(v, 6) for k, v in study.user_attrs.items()
                                                  if k.startswith(FULL_ATTR)}
    assert len(report.trials) == len(lines) + len(fulls)
    assert [t.number for t in report.trials] == list(range(1, len(report.trials) + 1))
    assert report.compiled_score == max(t.score for t in report.trials if t.full)


def test_named_study_with_other_settings_is_refused(senti, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    compile_mipro(senti, pipec.ScriptedLM(rule=make_rule()), tmp_path, cache="n1", storage=url, study="s",
                  options={"trials": 2})
    with pytest.raises(ValueError, match="other settings"):
        compile_mipro(senti, pipec.ScriptedLM(rule=make_rule()), tmp_path, cache="n2", storage=url, study="s",
                      options={"trials": 2, "minibatch": 5})


def test_in_memory_by_default_and_optuna_not_imported_by_pipec():
    import subprocess
    import sys
    code = "import sys, pipec, pipec.optimizers; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------------------- proposals
GARBAGE = ("not json at all", '{"instruction": 5}', "{", '{"instructions": "Label it well."}', "",
           '{"instruction": "ok"}', json.dumps({"instruction": "x" * 5000}), "[1, 2]")


def test_garbage_proposals_do_not_crash(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule(proposals=GARBAGE, raw=True))
    prog = compile_mipro(senti, lm, tmp_path)
    assert prog.params()["classify"].instruction == "Label the text."
    assert prog.report.compiled_score >= prog.report.baseline_score


def test_failing_proposer_calls_are_skipped(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule(proposals=(RuntimeError("proposer down"),)))
    prog = compile_mipro(senti, lm, tmp_path, options={"trials": 3})
    assert proposals_of(lm)
    assert prog.params()["classify"].instruction == "Label the text."


def test_proposal_request_is_structured_and_grounded(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule())
    compile_mipro(senti, lm, tmp_path, options={"trials": 1})
    req = proposals_of(lm)[0]
    assert req.schema == propose.SCHEMA
    text = req.messages[1]["content"]
    assert "Current instruction: \"Label the text.\"" in text
    assert "- text: a short review (text)" in text and "one of: pos, neg" in text
    assert "label: neg 50%, pos 50%" in text or "label: pos 50%, neg 50%" in text
    assert "Worked examples" in text and "Tip:" in text and '{"instruction": "..."}' in text


def test_text_backends_get_no_schema(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule(), structured="text")
    compile_mipro(senti, lm, tmp_path, options={"trials": 1})
    assert proposals_of(lm) and all(r.schema is None for r in proposals_of(lm))


def test_separate_proposer_lm(senti, tmp_path, monkeypatch):
    from pipec.optimize import CompileSession as Session
    task = pipec.ScriptedLM(rule=make_rule())
    proposer = pipec.ScriptedLM(rule=lambda r: {"instruction": MAGIC}, model="scripted/proposer")
    # Session.proposer() resolves declared names and LM ids; a backend object comes in by patching.
    monkeypatch.setattr(Session, "proposer", lambda self: proposer)
    prog = compile_mipro(senti, task, tmp_path, options={"trials": 6})
    assert not proposals_of(task) and proposer.requests
    assert prog.report.compiled_score == 1.0


def test_proposals_stop_when_the_budget_refuses(senti, tmp_path):
    from pipec.optimize import open_session
    from pipec.settings import CompileConfig
    lm = pipec.ScriptedLM(rule=make_rule())
    prog = pipec.load(senti, lm=lm, cache=False)
    session = open_session(prog, CompileConfig(trainset=TRAIN, valset=VAL, metric="exact_match(label)",
                                               optimizer="mipro", budget=2))
    proposer = propose.Proposer(session)
    pred = session.predictors()["classify"]
    got = propose.propose_instructions(pred, pred.instruction, 6, [[]], "2 rows.", random.Random(0), proposer)
    assert len(lm.requests) == 2 and proposer.budget_spent
    assert got[0] == "Label the text." and len(got) == 3


def test_proposal_cap_counts_only_real_calls(senti, tmp_path):
    lm = pipec.ScriptedLM(rule=make_rule(), cacheable=True)
    # A warm cache makes proposals free: the second compile sends no proposal at all.
    for i in range(2):
        before = len(proposals_of(lm))
        compile_mipro(senti, lm, tmp_path, cache="shared", options={"trials": 1 + i})
        sent = len(proposals_of(lm)) - before
        assert (sent > 0) if i == 0 else (sent == 0)


# ---------------------------------------------------------------------------- helpers
def test_summarize_data_is_statistics_not_an_lm():
    from pipec.dataset import Example
    data = [Example({"q": f"a b c{i}", "n": i, "tags": ["x"] * i, "ok": i % 2 == 0, "lab": "yes" if i < 3 else "no"}, "")
            for i in range(1, 7)]
    text = propose.summarize_data(data, ["q", "n", "tags", "ok", "lab"], examples=2)
    assert "6 rows." in text
    assert "- q: text, typically 3 words (3-3)" in text
    assert "- n: numbers from 1 to 6, median 3.5" in text
    assert "- tags: lists, typically 3.5 items (1-6)" in text
    assert "- ok: false 50%, true 50%" in text
    assert "- lab: yes 33%, no 67%" in text or "- lab: no 67%, yes 33%" in text
    assert text.count("Example:") == 2


@pytest.mark.parametrize("reply, expected", [
    ('{"instruction": "Classify the intent of the utterance."}', "Classify the intent of the utterance."),
    ('```json\n{"instruction": "Classify  it\\n carefully."}\n```', "Classify it carefully."),
    ('Here: {"instruction": "Answer with the label only."} done', "Answer with the label only."),
    ('{"instruction": ""}', None), ('{"instruction": null}', None), ("nope", None), ("{}", None),
    ('{"instruction": "!!!!!!!!!!!!!!!!"}', None), ('["a"]', None),
])
def test_parse_instruction(reply, expected):
    assert propose.parse_instruction(reply) == expected


# ---------------------------------------------------------------------------- per-input demos
TOPICS = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
TAGGER = """
signature Tag { "Tag the text." in text: str out tag: str }
module tag = Predict(Tag)
pipeline tagger(text: str) -> (tag) { t = tag(text: text) return tag = t.tag }
"""


def topic_rows(n, offset=0):
    return [{"text": f"note {i + offset} about {TOPICS[(i + offset) % len(TOPICS)]}",
             "tag": TOPICS[(i + offset) % len(TOPICS)].upper()} for i in range(n)]


def nearest_only(request):
    """Right only when a demo is about the input's topic: what per-input nearest demos give, and no
    fixed demo set of 4 (of 6 topics) or instruction does."""
    if is_proposal(request):
        return {"instruction": "Tag the text with its topic."}
    topic = first_user_value(request, "text").split()[-1]
    users = [m["content"] for m in request.messages[1:-1] if m["role"] == "user"]
    same = any(line.split()[-1] == topic for u in users for line in u.splitlines() if line.startswith("text: "))
    return {"tag": topic.upper() if same else "?"}


def test_mipro_considers_per_input_nearest_demos(write_pipe, tmp_path):
    lm = pipec.ScriptedLM(rule=nearest_only)
    prog = pipec.load(write_pipe(TAGGER, "tagger.pipe"), lm=lm, cache=tmp_path / "c")
    compiled = prog.compile(trainset=topic_rows(30), valset=topic_rows(12, offset=100), metric="exact_match(tag)",
                            optimizer="mipro", seed=3, options={"trials": 10, "minibatch": 4, "instructions": 2})
    state = compiled.params()["tag"]
    assert state.knn is not None and state.knn.k == 3 and state.demos == []
    assert compiled.report.compiled_score == 1.0
    assert any("tag: instruction 0, 3 nearest demos per input" in t.note for t in compiled.report.trials)
    off = prog.compile(trainset=topic_rows(30), valset=topic_rows(12, offset=100), metric="exact_match(tag)",
                       optimizer="mipro", seed=3, options={"trials": 10, "minibatch": 4, "instructions": 2, "k": 0})
    assert off.params()["tag"].knn is None and off.report.compiled_score < 1.0
