"""Compiling as a user sees it: datasets, metrics, optimizers lifting a score, the report, the budget,
determinism and the compile cache.

Every LM is a `pipec.ScriptedLM` whose reply depends on the prompt: on the toy task it answers right
only when the prompt carries demos (or only when it carries none), so an optimizer's choice of demos
shows directly in the valset score.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import time

import pytest
from conftest import first_user_value

import pipec
from pipec.dataset import DatasetError, Example, check_examples, read_examples, split
from pipec.evaluate import evaluate
from pipec.lm.base import LMError
from pipec.metrics import Metric, MetricError
from pipec.prediction import Prediction

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

# ---------------------------------------------------------------------------- the toy task
TOY = """
    signature Flip { "Answer." in q: str out a: str }
    module m = Predict(Flip)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""

WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "lemon", "sugar",
         "house", "green", "violet", "pepper", "candle", "rocket"]
ROWS = [{"q": w, "a": w[::-1]} for w in WORDS]
TRAIN, VAL = ROWS[:10], ROWS[10:]
OPTIMIZERS = ["labeled_fewshot", "bootstrap_fewshot", "random_search", "knn_fewshot"]


def has_demos(request) -> bool:
    """Demos are user/assistant pairs between the system message and the final user message."""
    return any(m["role"] == "assistant" for m in request.messages[1:-1])


def flip_rule(request):
    """Right (the word reversed) only when the prompt carries demos; '?' otherwise."""
    q = first_user_value(request, "q")
    return {"a": q[::-1] if has_demos(request) else "?"}


def zero_shot_rule(request):
    """Right only without demos: demos hurt this 'model'."""
    q = first_user_value(request, "q")
    return {"a": "?" if has_demos(request) else q[::-1]}


@pytest.fixture
def toy(write_pipe):
    return write_pipe(TOY, "toy.pipe")


def compile_toy(path, optimizer="labeled_fewshot", rule=flip_rule, *, lm=None, cache=False, train=TRAIN, val=VAL,
                metric="exact_match(a)", **kw):
    lm = lm or pipec.ScriptedLM(rule=rule)
    prog = pipec.load(path, lm=lm, cache=cache)
    return prog.compile(train, val, metric, optimizer, **kw), lm


# ============================================================================ 1. datasets
def test_jsonl_rows_keep_their_line_numbers(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"q": "a", "a": "x"}\n\n{"q": "b", "a": "y"}\n', encoding="utf-8")
    rows = read_examples(p)
    assert [r.values["q"] for r in rows] == ["a", "b"]
    assert [r.where for r in rows] == [f"{p}:1", f"{p}:3"]


def test_csv_rows_are_read_and_inputs_coerced(write_pipe, tmp_path):
    path = write_pipe("""
        signature S { in q: str  in n: int  out a: str }
        module m = Predict(S)
        pipeline p(q: str, n: int) -> (a) {
            r = m(q: q, n: n)
            return a = r.a
        }
    """)
    p = tmp_path / "d.csv"
    p.write_text('q,n,a\nhello,3,"x, y"\nbye,4,z\n', encoding="utf-8")
    rows = read_examples(p)
    assert [r.values for r in rows] == [{"q": "hello", "n": "3", "a": "x, y"}, {"q": "bye", "n": "4", "a": "z"}]
    assert rows[0].where == f"{p}:2"
    prog = pipec.load(path, lm=pipec.ScriptedLM([]), cache=False)
    checked = check_examples(rows, prog, ["a"])
    assert [e.values["n"] for e in checked] == [3, 4]                 # CSV text coerced to the input type
    assert checked[0].values["a"] == "x, y"                            # labels are kept as they are


def test_csv_multiline_cell_keeps_its_line_break(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('q,a\n"two\nlines",z\nnext,y\n', encoding="utf-8")
    rows = read_examples(p)
    assert [r.values["q"] for r in rows] == ["two\nlines", "next"]


def test_broken_jsonl_lists_every_bad_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"q": "a"}\n{"q": \n[1, 2]\n"text"\n{"q": "b"}\n', encoding="utf-8")
    with pytest.raises(DatasetError) as exc:
        read_examples(p)
    problems = exc.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{p}:2: invalid JSON")
    assert problems[1] == f"{p}:3: expected a JSON object, got list"
    assert problems[2] == f"{p}:4: expected a JSON object, got str"
    assert str(exc.value).count(str(p)) == 3


def test_broken_csv_rows_named_by_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("q,a\nok,1\ntoo,many,values\nfew\nfine,2\n", encoding="utf-8")
    with pytest.raises(DatasetError) as exc:
        read_examples(p)
    assert exc.value.problems == [f"{p}:3: more values than header columns", f"{p}:4: fewer values than header columns"]


@pytest.mark.parametrize("content,fragment", [("", "no rows"), ("\n\n", "no rows")])
def test_empty_dataset_is_an_error(tmp_path, content, fragment):
    p = tmp_path / "d.jsonl"
    p.write_text(content)
    with pytest.raises(DatasetError, match=fragment):
        read_examples(p)


def test_missing_dataset_file_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot read"):
        read_examples(tmp_path / "nope.jsonl")


NUMS = """
    signature S { in q: str  in n: int  out a: str }
    module m = Predict(S)
    pipeline p(q: str, n: int) -> (a) {
        r = m(q: q, n: n)
        return a = r.a
    }
"""


def test_missing_inputs_wrong_types_and_missing_labels_all_reported_before_any_lm_call(write_pipe, tmp_path):
    path = write_pipe(NUMS)
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in [
        {"q": "fine", "n": 1, "a": "x"},
        {"n": 2, "a": "x"},                           # missing input q
        {"q": "typed", "n": "lots", "a": "x"},        # n is not a number
        {"q": "unlabeled", "n": 3},                   # no label for the metric
        {"q": "null", "n": None, "a": "x"},           # null required input
    ]) + "\n")
    lm = pipec.ScriptedLM(rule=lambda r: {"a": "x"})
    prog = pipec.load(path, lm=lm, cache=False)
    with pytest.raises(DatasetError) as exc:
        prog.compile(str(train), None, "exact_match(a)", "labeled_fewshot")
    problems = exc.value.problems
    assert len(problems) == 4, problems
    assert problems[0] == f"{train}:2: missing input 'q'"
    assert problems[1].startswith(f"{train}:3: input 'n'") and "number" in problems[1]
    assert problems[2] == f"{train}:4: missing label 'a' that the metric scores"
    assert problems[3] == f"{train}:5: missing input 'n'"
    assert lm.requests == []


def test_rows_given_as_lists_of_dicts(write_pipe):
    path = write_pipe(NUMS)
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=lambda r: {"a": "x"}), cache=False)
    compiled = prog.compile([{"q": "a", "n": "4", "a": "x"}, {"q": "b", "n": 5, "a": "x"}],
                            [{"q": "c", "n": 6, "a": "x"}], "exact_match(a)", "labeled_fewshot")
    assert compiled.report.trainset == 2 and compiled.report.valset == 1
    assert compiled.report.compiled_score == 1.0
    assert compiled.params()["m"].demos[0]["n"] in (4, 5)              # coerced like file rows
    with pytest.raises(DatasetError) as exc:
        prog.compile([{"q": "a", "n": 1, "a": "x"}, {"q": "b", "a": "x"}], None, "exact_match(a)")
    assert exc.value.problems == ["row 2: missing input 'n'"]


def test_syntax_and_field_problems_reported_together(toy, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"q": "a", "a": "x"}\n{"q": oops}\n{"a": "x"}\n')
    prog = pipec.load(toy, lm=pipec.ScriptedLM([]), cache=False)
    with pytest.raises(DatasetError) as exc:
        prog.compile(str(train), None, "exact_match(a)", "labeled_fewshot")
    text = str(exc.value)
    assert f"{train}:2: invalid JSON" in text and f"{train}:3: missing input 'q'" in text


@pytest.mark.parametrize("name,content", [("d.csv", "q,a\nx,y\n"), ("d.jsonl", '{"q": "x", "a": "y"}\n')])
def test_utf8_bom_files_are_read(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8-sig")
    assert read_examples(p)[0].values == {"q": "x", "a": "y"}


def test_seeded_split_is_deterministic_disjoint_and_complete():
    rows = [Example({"i": i}, f"row {i}") for i in range(20)]
    train, val = split(rows, seed=7)
    train2, val2 = split(rows, seed=7)
    assert [e.values["i"] for e in train] == [e.values["i"] for e in train2]
    assert [e.values["i"] for e in val] == [e.values["i"] for e in val2]
    ids_t, ids_v = {e.values["i"] for e in train}, {e.values["i"] for e in val}
    assert not ids_t & ids_v and ids_t | ids_v == set(range(20))
    assert len(val) == 8
    other = {e.values["i"] for e in split(rows, seed=8)[1]}
    assert other != ids_v                                                # the seed matters
    assert len(split(rows, seed=1, val_fraction=0.25)[1]) == 5


def test_compile_without_valset_splits_the_trainset(toy):
    compiled, _ = compile_toy(toy, train=ROWS, val=None, seed=3)
    r = compiled.report
    assert r.trainset + r.valset == len(ROWS) and r.valset == round(len(ROWS) * 0.4)
    demo_qs = {d["q"] for d in compiled.params()["m"].demos}
    _, val = split([Example(x, "") for x in ROWS], 3)
    assert not demo_qs & {e.values["q"] for e in val}                 # no valset row became a demo


# ============================================================================ 2. metrics
def pred(**values):
    return Prediction(values)


@pytest.mark.parametrize("metric,expected,got,score", [
    ("exact_match(a)", "Book_Restaurant", "book_restaurant ", 1.0),
    ("exact_match(a)", "The Eiffel Tower!", "eiffel tower", 1.0),
    ("exact_match(a)", "paris", "paris france", 0.0),
    ("exact_match(a)", ["b", "a"], ["A", "b"], 1.0),
    ("exact_match(a)", ["a", "b"], ["a"], 0.0),
    ("f1(a)", "the cat sat", "a cat sat down", 0.8),
    ("f1(a)", "cat", "dog", 0.0),
    ("contains(a)", "Paris", "It is Paris, France", 1.0),
    ("contains(a)", "Paris", "London", 0.0),
    ("contains(a)", "rock", ["Jazz", "Rock"], 1.0),
    ("numeric(a)", "1,000", 1000.0, 1.0),
    ("numeric(a)", "42", "about 41", 0.0),
    ("numeric(a)", "42", "no number", 0.0),
    ("numeric(a, tolerance: 0.5)", 0.2, "0.6", 1.0),
    ("numeric(a, tolerance: 0.5)", 0.2, 0.8, 0.0),
    ('regex(a, pattern: "^[A-Z]{3}-\\\\d+$")', "ignored", "ABC-12", 1.0),
    ('regex(a, pattern: "^[A-Z]{3}-\\\\d+$")', "ignored", "abc-12", 0.0),
    ("regex(a)", "^ye(s|p)$", "yep", 1.0),
])
def test_builtin_metrics(metric, expected, got, score):
    m = Metric.parse(metric)
    assert m.fields == ["a"]
    assert m.score({"a": expected}, pred(a=got)) == pytest.approx(score, abs=1e-9)


def test_numeric_tolerance_is_an_allowed_difference_for_large_values():
    m = Metric.parse("numeric(a, tolerance: 1)")
    assert m.score({"a": 100}, pred(a=101)) == 1.0
    assert m.score({"a": 100}, pred(a=150)) == 0.0


def test_metric_over_two_fields_averages_and_names_misses():
    m = Metric.parse("exact_match(a, b)")
    p = pred(a="x", b="nope")
    assert m.score({"a": "x", "b": "y"}, p) == 0.5
    assert m.misses({"a": "x", "b": "y"}, p) == ["b"]


def test_failed_prediction_scores_zero_and_misses_every_field():
    m = Metric.parse("exact_match(a, b)")
    failed = Prediction(None, error="r (m): reply did not parse")
    assert m.score({"a": "x", "b": "y"}, failed) == 0.0
    assert m.misses({"a": "x", "b": "y"}, failed) == ["a", "b"]


@pytest.mark.parametrize("text,fragment", [
    ("exactmatch(a)", "unknown metric 'exactmatch'"),
    ("exact_match()", "needs the output it scores"),
    ("exact_match(a", "cannot read metric"),
    ('python("no_such_module_xyz:fn")', "no_such_module_xyz"),
])
def test_bad_metrics_are_clear_errors(text, fragment):
    with pytest.raises(MetricError, match=fragment.replace("(", r"\(")):
        Metric.parse(text)


def test_metric_on_unknown_output_is_an_error(toy):
    prog = pipec.load(toy, lm=pipec.ScriptedLM([]), cache=False)
    with pytest.raises(ValueError, match=r"'answer' is not an output of pipeline toy(.|\n)*its outputs are: a"):
        prog.compile(TRAIN, VAL, "exact_match(answer)")


PY_METRICS = """
calls = []

def as_bool(example, prediction):
    return example["a"] == prediction["a"]

def as_float(example, prediction):
    return 0.25 if example["a"] == prediction["a"] else 0.0

def picky(example, prediction):
    if example["q"] == "river":
        raise KeyError("boom")
    return example["a"] == prediction["a"]

def bad_type(example, prediction):
    return "yes"
"""


def toy_examples(rows):
    return [Example(dict(r), f"row {i + 1}") for i, r in enumerate(rows)]


@pytest.mark.parametrize("fn,score", [("as_bool", 1.0), ("as_float", 0.25)])
def test_python_metrics_return_bool_or_float(toy, tool_module, fn, score):
    mod = tool_module(PY_METRICS)
    m = Metric.parse(f'python("{mod}:{fn}")', near=toy.parent)
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=zero_shot_rule), cache=False)
    result = evaluate(prog, toy_examples(ROWS[:4]), m)
    assert result.score == pytest.approx(score)
    assert [r.score for r in result.rows] == [score] * 4


def test_python_metric_that_raises_scores_zero_for_that_row_only(toy, tool_module):
    mod = tool_module(PY_METRICS)
    m = Metric.parse(f'python("{mod}:picky")', near=toy.parent)
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=zero_shot_rule), cache=False)
    result = evaluate(prog, toy_examples(ROWS[:4]), m)            # ROWS[1] is "river"
    assert [r.score for r in result.rows] == [1.0, 0.0, 1.0, 1.0]
    assert result.score == 0.75
    assert "KeyError" in result.rows[1].error and "boom" in result.rows[1].error
    assert result.rows[1].outputs == {"a": "revir"}                # the prediction itself was fine


def test_a_raising_metric_is_not_counted_as_a_failed_prediction(toy, tool_module):
    mod = tool_module(PY_METRICS)
    m = Metric.parse(f'python("{mod}:picky")', near=toy.parent)
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=zero_shot_rule), cache=False)
    result = evaluate(prog, toy_examples(ROWS[:4]), m)
    assert all(r.outputs is not None for r in result.rows)
    assert result.failures == 0


def test_python_metric_with_wrong_return_type_stops_the_eval_naming_the_metric(toy, tool_module):
    """A wrong return type is the metric's bug, not the row's: scoring every row 0 would hide it."""
    mod = tool_module(PY_METRICS)
    m = Metric.parse(f'python("{mod}:bad_type")', near=toy.parent)
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=zero_shot_rule), cache=False)
    expected = (f"metric python(\"{mod}:bad_type\") (bad_type in {toy.parent / mod}.py:15) returned a str ('yes'); "
                "a metric returns a bool, a number from 0 to 1, (score, \"feedback\") or {\"score\": ..., \"feedback\": ...}")
    with pytest.raises(MetricError, match=re.escape(expected)):
        evaluate(prog, toy_examples(ROWS[:2]), m, concurrency=1)


def judge_rule(verdict_for):
    """The task answers the word reversed; the judge says yes when verdict_for(expected, prediction)."""
    def rule(request):
        system = request.messages[0]["content"]
        if system.startswith("Judge whether"):
            return {"acceptable": verdict_for(first_user_value(request, "expected"),
                                              first_user_value(request, "prediction"))}
        q = first_user_value(request, "q")
        return {"a": q[::-1] if q != "river" else "wrong"}
    return rule


def test_judge_metric_uses_the_lm_verdict(toy):
    lm = pipec.ScriptedLM(rule=judge_rule(lambda e, p: e == p))
    prog = pipec.load(toy, lm=lm, cache=False)
    m = Metric.parse('judge(a, rubric: "same word")')
    result = evaluate(prog, toy_examples(ROWS[:4]), m)
    assert [r.score for r in result.rows] == [1.0, 0.0, 1.0, 1.0]
    assert result.field_misses() == {"a": 1}
    judge_calls = [r for r in lm.requests if r.messages[0]["content"].startswith("Judge whether")]
    assert len(judge_calls) == 4
    assert "Rubric: same word" in judge_calls[0].messages[0]["content"]
    assert "expected: elppa" in judge_calls[0].messages[-1]["content"]
    assert "prediction: elppa" in judge_calls[0].messages[-1]["content"]


def test_judge_unreadable_verdict_is_a_miss(toy):
    def rule(request):
        if request.messages[0]["content"].startswith("Judge whether"):
            return "I'd rather not say."
        return {"a": "x"}
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=rule), cache=False)
    result = evaluate(prog, toy_examples(ROWS[:2]), Metric.parse("judge(a)"))
    assert result.score == 0.0 and len(result.rows) == 2


def test_judge_lm_error_fails_the_row_not_the_eval(toy):
    def rule(request):
        if request.messages[0]["content"].startswith("Judge whether"):
            if first_user_value(request, "expected") == "revir":
                raise LMError("judge/lm: provider is down")
            return {"acceptable": True}
        return {"a": first_user_value(request, "q")[::-1]}
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=rule), cache=False)
    result = evaluate(prog, toy_examples(ROWS[:3]), Metric.parse("judge(a)"))
    assert [r.score for r in result.rows] == [1.0, 0.0, 1.0]


def test_judge_metric_compile_stops_at_budget(toy):
    lm = pipec.ScriptedLM(rule=judge_rule(lambda e, p: e == p))
    compiled, _ = compile_toy(toy, "labeled_fewshot", lm=lm, metric="judge(a)", budget=5)
    assert len(lm.requests) <= 5 and compiled.report is not None


def test_judge_metric_compile_within_budget_counts_judge_calls(toy):
    lm = pipec.ScriptedLM(rule=judge_rule(lambda e, p: e == p))
    compiled, _ = compile_toy(toy, "labeled_fewshot", lm=lm, metric="judge(a)")
    # baseline + one trial, each: one task call and one judge call per valset row
    assert len(lm.requests) == 2 * 2 * len(VAL)
    assert compiled.report.lm_requests == len(lm.requests)


# ============================================================================ 3. compile
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_lifts_the_valset_score(toy, optimizer):
    compiled, lm = compile_toy(toy, optimizer, seed=1)
    r = compiled.report
    assert r.baseline_score == 0.0
    assert r.compiled_score == 1.0
    # the compiled program really does better on the valset: run it
    for row in VAL:
        assert compiled(q=row["q"]).a == row["a"]


def test_report_has_what_a_user_needs(toy):
    compiled, lm = compile_toy(toy, "bootstrap_fewshot", seed=5, budget=500, options={"max_demos": 2})
    r = compiled.report
    assert (r.pipeline, r.optimizer, r.metric, r.seed, r.budget) == ("toy", "bootstrap_fewshot", "exact_match(a)", 5, 500)
    assert r.options["max_demos"] == 2 and "max_labeled" in r.options       # effective options, defaults included
    assert (r.trainset, r.valset) == (len(TRAIN), len(VAL))
    assert (r.baseline_score, r.compiled_score) == (0.0, 1.0)
    assert len(r.trials) >= 1 and r.trials[-1].score == 1.0
    assert r.lm_requests == len(lm.requests) > 0
    assert r.tokens > 0
    assert len(r.fingerprint) == 64 and int(r.fingerprint, 16) >= 0
    assert r.lms["task"] == "scripted/lm"
    text = r.summary()
    assert "baseline 0.000 -> compiled 1.000 (+1.000)" in text and f"{r.lm_requests} LM requests" in text


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("budget", [1, 4, 9, 15])
def test_budget_is_never_exceeded_even_when_it_runs_out_mid_search(toy, optimizer, budget):
    compiled, lm = compile_toy(toy, optimizer, budget=budget, seed=2)
    assert len(lm.requests) <= budget
    r = compiled.report
    assert r.lm_requests <= budget and r.budget == budget
    assert 0.0 <= r.compiled_score <= 1.0
    # still a valid, runnable program with the predictor it started with
    assert set(compiled.params()) == {"m"}
    assert compiled(q="apple").ok


def test_a_budget_smaller_than_the_valset_still_leaves_calls_to_optimize(toy):
    """20 validation rows and a budget of 18: scoring the baseline on every row would spend the whole
    budget before any demo is found. The valset is sampled down so that baseline and result together
    cost at most half, and the compile still lifts the score."""
    rows = [{"q": w + w[:k], "a": (w + w[:k])[::-1]} for k in (1, 2) for w in WORDS[:10]]
    # This "model" is right only with demos: bootstrapping finds none and spends what it may (not the
    # calls held back for the final check); the labeled demos then score 1.0 on the sampled rows.
    compiled, lm = compile_toy(toy, "bootstrap_fewshot", train=TRAIN, val=rows, budget=18, seed=1,
                               options={"max_demos": 2, "max_labeled": 2})
    r = compiled.report
    assert len(lm.requests) <= 18
    assert r.valset == 4                                     # 18 // (4 calls per row-pair)
    assert (r.baseline_score, r.compiled_score) == (0.0, 1.0)
    assert len(compiled.params()["m"].demos) == 2
    assert compiled(q="stones").a == "senots"


def test_bootstrap_keeps_the_uncompiled_program_when_its_demos_score_lower(toy):
    """Demos can hurt (a small model copies them): zero demos stays a candidate."""
    compiled, lm = compile_toy(toy, "bootstrap_fewshot", rule=zero_shot_rule, seed=1,
                               options={"max_demos": 2, "max_labeled": 2})
    r = compiled.report
    assert compiled.params()["m"].demos == []
    assert (r.baseline_score, r.compiled_score) == (1.0, 1.0)
    assert [t.score for t in r.trials] == [0.0, 1.0]        # the demo set was scored, then set aside
    assert compiled(q="apple").a == "elppa"


def test_budget_large_enough_changes_nothing(toy):
    unlimited, lm1 = compile_toy(toy, "random_search", seed=4)
    limited, lm2 = compile_toy(toy, "random_search", seed=4, budget=len(lm1.requests))
    assert len(lm2.requests) == len(lm1.requests)
    assert limited.params() == unlimited.params()


def test_same_seed_gives_byte_identical_artifacts(toy, tmp_path):
    paths = []
    for i in range(2):
        compiled, _ = compile_toy(toy, "random_search", seed=11, cache=tmp_path / f"cache{i}")
        paths.append(compiled.save(toy.parent / f"toy{i}.compiled.json"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_same_seed_same_artifact_whether_or_not_the_lm_cache_is_warm(toy, tmp_path):
    cache = tmp_path / "cache"
    first, lm1 = compile_toy(toy, "bootstrap_fewshot", lm=pipec.ScriptedLM(rule=flip_rule, cacheable=True), cache=cache)
    a = first.save(toy.parent / "a.compiled.json").read_bytes()
    shutil.rmtree(cache / "compiled")                        # forget the compile, keep the LM replies
    second, lm2 = compile_toy(toy, "bootstrap_fewshot", lm=pipec.ScriptedLM(rule=flip_rule, cacheable=True), cache=cache)
    assert not second.compile_result.cache_hit and lm2.requests == []
    assert second.save(toy.parent / "b.compiled.json").read_bytes() == a


def test_recompiling_unchanged_inputs_is_a_cache_hit(toy, tmp_path):
    cache = tmp_path / "cache"
    first, lm1 = compile_toy(toy, "random_search", seed=1, cache=cache)
    assert not first.compile_result.cache_hit and lm1.requests
    start = time.perf_counter()
    second, lm2 = compile_toy(toy, "random_search", seed=1, cache=cache)
    elapsed = time.perf_counter() - start
    assert second.compile_result.cache_hit and lm2.requests == [] and elapsed < 3.0, elapsed
    assert second.params() == first.params()
    assert second.report == first.report
    assert second(q="apple").a == "elppa"                     # the cached parameters are installed


def _changed(kind, toy, tmp_path):
    """Compile arguments with one thing changed (and the .pipe file edited for 'source')."""
    kw = dict(optimizer="labeled_fewshot", seed=1, options={"max_labeled": 3})
    if kind == "source":
        toy.write_text(toy.read_text().replace('"Answer."', '"Answer the question."'))
    elif kind == "trainset":
        kw["train"] = [dict(r) for r in TRAIN]
        kw["train"][0]["a"] = "changed"
    elif kind == "valset":
        kw["val"] = VAL[:-1]
    elif kind == "options":
        kw["options"] = {"max_labeled": 2}
    elif kind == "seed":
        kw["seed"] = 2
    elif kind == "lm":
        kw["lm"] = pipec.ScriptedLM(rule=flip_rule, model="scripted/other")
    elif kind == "optimizer":
        kw["optimizer"], kw["options"] = "bootstrap_fewshot", {}
    elif kind == "metric":
        kw["metric"] = "f1(a)"
    elif kind == "budget":
        kw["budget"] = 1000
    return kw


@pytest.mark.parametrize("kind", ["source", "trainset", "valset", "options", "seed", "lm", "optimizer", "metric",
                                  "budget"])
def test_changing_an_input_recompiles(toy, tmp_path, kind):
    cache = tmp_path / "cache"
    first, _ = compile_toy(toy, cache=cache, **_changed(None, toy, tmp_path))
    again, lm = compile_toy(toy, cache=cache, **_changed(None, toy, tmp_path))
    assert again.compile_result.cache_hit and lm.requests == []
    kw = _changed(kind, toy, tmp_path)
    changed, lm = compile_toy(toy, cache=cache, **kw)
    assert not changed.compile_result.cache_hit and lm.requests
    assert changed.report.fingerprint != first.report.fingerprint


def test_a_new_pipec_version_recompiles(toy, tmp_path, monkeypatch):
    """The fingerprint covers pipec's own version: after an upgrade, an old cached compile is not returned."""
    cache = tmp_path / "cache"
    first, _ = compile_toy(toy, cache=cache)
    monkeypatch.setattr("pipec.fingerprints.__version__", "999.0")
    again, lm = compile_toy(toy, cache=cache)
    assert not again.compile_result.cache_hit and lm.requests
    assert again.report.fingerprint != first.report.fingerprint


def test_lm_id_override_recompiles(write_pipe, tmp_path, monkeypatch):
    """`--lm` / `lm="provider/model"` runs every module on another LM: a different compile."""
    path = write_pipe(TOY)
    made = []

    def backend_for(model, options=None):
        made.append(pipec.ScriptedLM(rule=flip_rule, model=model))
        return made[-1]
    monkeypatch.setattr("pipec.program.backend_for", backend_for)
    cache = tmp_path / "cache"
    hits = []
    for model in ("openai/a", "openai/a", "openai/b"):
        c = pipec.load(path, lm=model, cache=cache).compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot")
        hits.append((c.compile_result.cache_hit, sum(len(lm.requests) for lm in made)))
        made.clear()
    assert [h for h, _ in hits] == [False, True, False]
    assert hits[1][1] == 0 and hits[2][1] > 0


TWO_LMS = """
    lm fast = "openai/fast"
    lm big = "openai/big"
    default lm = fast
    signature Flip { "Answer." in q: str out a: str }
    module m = Predict(Flip, lm: big)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""


def test_replacing_a_declared_lm_by_name_recompiles(write_pipe, tmp_path):
    path = write_pipe(TWO_LMS)
    cache = tmp_path / "cache"
    fast = pipec.ScriptedLM(rule=flip_rule, model="scripted/fast")
    one = pipec.ScriptedLM(rule=flip_rule, model="scripted/one")
    pipec.load(path, lms={"fast": fast, "big": one}, cache=cache).compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot")
    assert one.requests
    two = pipec.ScriptedLM(rule=zero_shot_rule, model="scripted/two")
    c = pipec.load(path, lms={"fast": fast, "big": two}, cache=cache).compile(TRAIN, VAL, "exact_match(a)",
                                                                             "labeled_fewshot")
    assert not c.compile_result.cache_hit and two.requests


def test_changing_the_split_fraction_recompiles(toy, tmp_path):
    cache = tmp_path / "cache"
    a, _ = compile_toy(toy, cache=cache, train=ROWS, val=None)
    b, lm = compile_toy(toy, cache=cache, train=ROWS, val=None, val_fraction=0.25)
    assert not b.compile_result.cache_hit and b.report.valset == 4 != a.report.valset


def test_editing_a_python_metric_recompiles(toy, tmp_path):
    mod = f"pipec_test_metric_edit_{abs(hash(str(tmp_path))) % 10**8}"
    src = tmp_path / f"{mod}.py"
    src.write_text("def score(example, prediction):\n    return example['a'] == prediction['a']\n")
    cache = tmp_path / "cache"
    try:
        a, _ = compile_toy(toy, cache=cache, metric=f'python("{mod}:score")')
        src.write_text("def score(example, prediction):\n    return 0.5\n")
        sys.modules.pop(mod, None)                          # a new `pipec compile` process
        b, lm = compile_toy(toy, cache=cache, metric=f'python("{mod}:score")')
        assert not b.compile_result.cache_hit and b.report.compiled_score == 0.5
    finally:
        sys.modules.pop(mod, None)


def test_no_cache_never_hits(toy):
    a, _ = compile_toy(toy, cache=False)
    b, lm = compile_toy(toy, cache=False)
    assert not b.compile_result.cache_hit and lm.requests


CHAIN = """
    signature Extract { "Find the keyword." in text: str out keyword: str }
    signature Answer { "Answer from the keyword." in keyword: str out a: str }
    module first = {kind}(Extract)
    module second = Predict(Answer)
    pipeline chain(text: str) -> (a) {
        k = first(text: text)
        r = second(keyword: k.keyword)
        return a = r.a
    }
"""
CHAIN_ROWS = [{"text": f"please handle {'easy' if i % 2 else 'hard'}{i}", "a": f"{'easy' if i % 2 else 'hard'}{i}"[::-1]}
              for i in range(12)]


def chain_rule(request):
    """`first` finds the last word (always right); `second` reverses it, but zero-shot only for easy words."""
    system = request.messages[0]["content"]
    if system.startswith("Find the keyword."):
        word = first_user_value(request, "text").split()[-1]
        return {"reasoning": f"the keyword is the last word, {word}", "keyword": word}
    kw = first_user_value(request, "keyword")
    return {"a": kw[::-1] if kw.startswith("easy") or has_demos(request) else "?"}


@pytest.mark.parametrize("kind", ["Predict", "ChainOfThought"])
def test_inner_module_of_a_chain_gets_bootstrapped_demos(write_pipe, kind):
    path = write_pipe(CHAIN.replace("{kind}", kind), "chain.pipe")
    lm = pipec.ScriptedLM(rule=chain_rule)
    prog = pipec.load(path, lm=lm, cache=False)
    compiled = prog.compile(CHAIN_ROWS[:8], CHAIN_ROWS[8:], "exact_match(a)", "bootstrap_fewshot",
                            options={"max_demos": 2})
    r = compiled.report
    assert r.baseline_score == 0.5 and r.compiled_score == 1.0
    params = compiled.params()
    inner, outer = params["first"].demos, params["second"].demos
    assert len(inner) == 2 and len(outer) >= 1
    train_texts = {row["text"] for row in CHAIN_ROWS[:8]}
    for d in inner:                     # built from the teacher's trace: the keyword was never a label
        assert d["text"] in train_texts and d["keyword"] == d["text"].split()[-1]
        if kind == "ChainOfThought":
            assert d["reasoning"].startswith("the keyword is the last word")
        else:
            assert "reasoning" not in d
    for d in outer:
        assert d["a"] == d["keyword"][::-1]
    # and the inner demos are in the prompt the inner module sends
    lm.requests.clear()
    assert compiled(text="please handle hard99").a == "99drah"
    first_msgs = lm.requests[0].messages
    assert first_msgs[1]["content"] == f"text: {inner[0]['text']}"
    assert json.loads(first_msgs[2]["content"])["keyword"] == inner[0]["keyword"]


def test_random_search_ends_with_zero_demos_when_demos_hurt(toy):
    compiled, lm = compile_toy(toy, "random_search", rule=zero_shot_rule, seed=3)
    r = compiled.report
    assert r.baseline_score == 1.0 and r.compiled_score == 1.0
    assert compiled.params()["m"].demos == [] and compiled.params()["m"].knn is None
    assert len(r.trials) >= 3 and any(t.score < 1.0 for t in r.trials)      # demo sets were tried and lost
    assert r.trials[0].note == "zero-shot"


def test_unknown_optimizer_is_a_clear_error(toy):
    lm = pipec.ScriptedLM([])
    with pytest.raises(ValueError, match="unknown optimizer 'bootstrap'(.|\n)*did you mean 'bootstrap_fewshot'"):
        pipec.load(toy, lm=lm, cache=False).compile(TRAIN, VAL, "exact_match(a)", "bootstrap")
    assert lm.requests == []


def test_uncompiled_program_cannot_be_saved(toy, tmp_path):
    prog = pipec.load(toy, lm=pipec.ScriptedLM([]), cache=False)
    assert prog.report is None
    with pytest.raises(ValueError, match="only a compiled program can be saved"):
        prog.save(tmp_path / "x.json")


def test_compiling_twice_starts_again_from_the_uncompiled_program(toy):
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    prog.compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot")
    again = prog.compile(TRAIN, VAL, "exact_match(a)", "random_search")
    assert again.report.baseline_score == 0.0
    assert again.report.trials[0].note == "zero-shot" and again.report.trials[0].score == 0.0


def test_compile_returns_a_new_program_and_leaves_its_own_alone(toy):
    """Compiling is pure: candidates are scored on copies, the result is a new program (with its
    artifact and `compile_result`), and the program compiled keeps its parameters and attributes."""
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    before = prog.params()
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot")
    assert compiled is not prog and compiled.report.compiled_score == 1.0 and compiled.params()["m"].demos
    assert prog.params() == before and prog.artifact is None and prog.compile_result is None
    assert prog(q="apple").a == "?" and compiled(q="apple").a == "elppa"
    result = compiled.compile_result
    assert result.artifact is compiled.artifact and not result.cache_hit and result.stats.calls > 0 < result.seconds


COMPILE_BLOCK = """
    signature Flip { "Answer." in q: str out a: str }
    module m = Predict(Flip)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
    compile toy {
        trainset = "train.jsonl"
        valset = "val.jsonl"
        metric = exact_match(a)
        optimizer = labeled_fewshot(max_labeled: 2)
        seed = 3
    }
"""


def test_compile_from_python_honours_the_compile_block(write_pipe):
    """`prog.compile()` reads the file's compile block as `pipec compile` does; arguments override it."""
    path = write_pipe(COMPILE_BLOCK, "toy.pipe")
    for name, rows in (("train.jsonl", TRAIN), ("val.jsonl", VAL)):
        (path.parent / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    compiled = prog.compile()
    r = compiled.report
    assert (r.optimizer, r.options["max_labeled"], r.seed, r.metric, r.trainset, r.valset) == \
        ("labeled_fewshot", 2, 3, "exact_match(a)", 10, 6)
    assert len(compiled.params()["m"].demos) == 2
    again = prog.compile(seed=5, options={"max_labeled": 1})          # the block's optimizer, its options merged
    assert (again.report.seed, again.report.options["max_labeled"], again.report.optimizer) == (5, 1, "labeled_fewshot")
    other = prog.compile(optimizer="random_search", options={"candidates": 2})     # another optimizer: its own options
    assert other.report.optimizer == "random_search" and other.report.options["candidates"] == 2
    assert "max_labeled" not in other.report.options or other.report.options["max_labeled"] == 4


TEACHER = """
    lm small = "openai/small"
    lm big = "openai/big"
    signature Flip { "Answer." in q: str out a: str }
    module m = Predict(Flip, lm: small)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""


@pytest.mark.parametrize("teacher", ["big", "openai/big"])
def test_teacher_lm_produces_the_bootstrapped_demos(write_pipe, monkeypatch, teacher):
    """The student answers only with demos; the teacher (a declared lm name or an LM id) always answers
    right, so every bootstrapped demo comes from a teacher trace."""
    made = {}

    def backend_for(model, options=None):
        strong = model == "openai/big"
        lm = made.setdefault(model, pipec.ScriptedLM(
            rule=(lambda r: {"a": first_user_value(r, "q")[::-1] + "!"}) if strong else flip_rule, model=model))
        return lm
    monkeypatch.setattr("pipec.program.backend_for", backend_for)
    path = write_pipe(TEACHER)
    prog = pipec.load(path, cache=False)
    compiled = prog.compile(TRAIN, VAL, "contains(a)", "bootstrap_fewshot", teacher=teacher,
                            options={"max_demos": 2, "max_labeled": 0})
    demos = compiled.params()["m"].demos
    assert len(demos) == 2 and all(d["a"].endswith("!") for d in demos)    # written by the teacher
    assert made["openai/big"].requests and made["openai/small"].requests
    assert compiled.report.lms["teacher"] == "openai/big (the teacher setting" + (", big)" if teacher == "big" else ")")
    assert compiled.report.compiled_score == 1.0
