"""Feedback metrics: a metric gives a score and, per row, a short text saying why (issue 15).

- a `python("m:f")` metric may return a bool, a number, `(score, "feedback")` or
  `{"score": ..., "feedback": ...}`; anything else stops the eval with an error naming the metric,
  the file and line of its function, and what it returned;
- the built-ins explain a miss on their own ("expected x, got y", "off by 3", missing tokens, the
  pattern that did not match; several fields: which ones missed); a pass has no feedback;
- `judge` gives its rationale;
- every scored row carries it (`RowResult.feedback`), and so do the rows an optimizer gets from the
  session (`pipec.session.ScoredRow`), in the order of the rows it asked for.

`pipec eval` and the report are tested in test_eval_cli.py and test_html_report.py.
"""
from __future__ import annotations

import pytest
from conftest import first_user_value

import pipec
from pipec.dataset import Example
from pipec.evaluate import evaluate
from pipec.lm.base import LMError
from pipec.metrics import Assessment, Metric, MetricError
from pipec.prediction import Prediction
from pipec.session import ScoredRow

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TOY = """
    signature Flip { "Reverse the word." in q: str out a: str }
    module m = Predict(Flip)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""
WORDS = ["apple", "river", "stone", "cloud"]
ROWS = [{"q": w, "a": w[::-1]} for w in WORDS]


def flip_rule(request):
    """Right for every word but 'river'."""
    q = first_user_value(request, "q")
    return {"a": "?" if q == "river" else q[::-1]}


@pytest.fixture
def toy(write_pipe):
    return write_pipe(TOY, "toy.pipe")


def examples(rows):
    return [Example(dict(r), f"row {i + 1}") for i, r in enumerate(rows)]


def run(toy, metric: Metric, rule=flip_rule, rows=ROWS):
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=rule), cache=False)
    return evaluate(prog, examples(rows), metric, concurrency=1)


# ============================================================================ python(...) metrics
SHAPES = """
def as_bool(example, prediction):
    return example["a"] == prediction["a"]

def as_float(example, prediction):
    return 0.25 if example["a"] == prediction["a"] else 0.0

def as_tuple(example, prediction):
    if example["a"] == prediction["a"]:
        return 1.0, "right"
    return 0.0, f"wanted {example['a']}, the program said {prediction['a']}"

def as_dict(example, prediction):
    ok = example["a"] == prediction["a"]
    return {"score": ok, "feedback": "" if ok else "reverse the letters"}

def dict_without_feedback(example, prediction):
    return {"score": 0.5}

def tuple_without_feedback(example, prediction):
    return (1, None)
"""


@pytest.mark.parametrize("fn,scores,feedback", [
    ("as_bool", [1.0, 0.0, 1.0, 1.0], [None] * 4),
    ("as_float", [0.25, 0.0, 0.25, 0.25], [None] * 4),
    ("as_tuple", [1.0, 0.0, 1.0, 1.0], ["right", "wanted revir, the program said ?", "right", "right"]),
    ("as_dict", [1.0, 0.0, 1.0, 1.0], [None, "reverse the letters", None, None]),      # "" is no feedback
    ("dict_without_feedback", [0.5] * 4, [None] * 4),
    ("tuple_without_feedback", [1.0] * 4, [None] * 4),
])
def test_python_metric_return_shapes(toy, tool_module, fn, scores, feedback):
    mod = tool_module(SHAPES)
    result = run(toy, Metric.parse(f'python("{mod}:{fn}")', near=toy.parent))
    assert [r.score for r in result.rows] == scores
    assert [r.feedback for r in result.rows] == feedback
    assert result.score == pytest.approx(sum(scores) / 4)


BAD = """
def a_string(example, prediction):
    return "yes"

def nothing(example, prediction):
    return None

def a_list(example, prediction):
    return [1.0, "good"]

def three(example, prediction):
    return (1.0, "good", "extra")

def no_score(example, prediction):
    return {"feedback": "fine"}

def typo(example, prediction):
    return {"score": 1.0, "feedbak": "fine"}

def text_score(example, prediction):
    return ("high", "fine")

def list_feedback(example, prediction):
    return {"score": 0.0, "feedback": ["too", "short"]}
"""


@pytest.mark.parametrize("fn,line,said", [
    ("a_string", 2, "returned a str ('yes'); a metric returns a bool, a number from 0 to 1, "
                    "(score, \"feedback\") or {\"score\": ..., \"feedback\": ...}"),
    ("nothing", 5, "returned a NoneType (None); a metric returns"),
    ("a_list", 8, "returned a list ([1.0, 'good']); a metric returns"),
    ("three", 11, "returned a tuple of 3 ((1.0, 'good', 'extra')); a metric returns"),
    ("no_score", 14, "returned a dict without 'score' ({'feedback': 'fine'}); a metric returns"),
    ("typo", 17, "returned a dict with an unknown key 'feedbak' ({'score': 1.0, 'feedbak': 'fine'}); a metric returns"),
    ("text_score", 20, "returned (score, feedback) whose score is a str ('high'), in ('high', 'fine'); "
                       "the score is a bool or a number from 0 to 1"),
    ("list_feedback", 23, "returned {\"score\": ..., \"feedback\": ...} whose feedback is a list (['too', 'short']), "
                          "in {'score': 0.0, 'feedback': ['too', 'short']}; the feedback is text (a str) or None"),
])
def test_a_bad_return_stops_the_eval_naming_the_metric_its_file_and_what_it_returned(toy, tool_module, fn, line, said):
    mod = tool_module(BAD)
    with pytest.raises(MetricError) as err:
        run(toy, Metric.parse(f'python("{mod}:{fn}")', near=toy.parent))
    where = f"{toy.parent / mod}.py:{line}"
    assert str(err.value).startswith(f'metric python("{mod}:{fn}") ({fn} in {where}) {said}')


# ============================================================================ the built-ins
@pytest.mark.parametrize("metric,expected,got,feedback", [
    ("exact_match(a)", "book_restaurant", "add_to_playlist", "expected book_restaurant, got add_to_playlist"),
    ("exact_match(a)", "x", None, "expected x, got nothing"),
    ("exact_match(a)", ["jazz", "rock"], ["jazz", "pop"], 'expected ["jazz", "rock"], got ["jazz", "pop"] '
                                                          "(missing rock; extra pop)"),
    ("numeric(a)", 12, "9", "expected 12, got 9 (off by 3)"),
    ("numeric(a)", "1,000", 999.5, "expected 1000, got 999.5 (off by 0.5)"),
    ("numeric(a, tolerance: 0.5)", 0.2, 0.8, "expected 0.2, got 0.8 (off by 0.6; tolerance 0.5)"),
    ("numeric(a)", 12, "twelve", "expected 12, got no number in twelve"),
    ("f1(a)", "the Eiffel Tower in Paris", "a tower in Lyon", "token F1 0.57: missing eiffel, paris; extra lyon"),
    ("f1(a)", "cat", "", "the prediction is empty; expected cat"),
    ("contains(a)", "Eiffel Tower", "the tower in Paris", "eiffel tower does not appear in the prediction "
                                                          "(missing eiffel)"),
    ("contains(a)", "Eiffel Tower", "a tower, the Eiffel", "eiffel tower does not appear in the prediction "
                                                           "(its words are there, not together in that order)"),
    ("contains(a)", "rock", ["Jazz", "Pop"], 'rock is not among ["Jazz", "Pop"]'),
    ('regex(a, pattern: "^[A-Z]{3}-[0-9]+$")', "ignored", "abc-12", "pattern ^[A-Z]{3}-[0-9]+$ did not match abc-12"),
    ("regex(a)", "^ye(s|p)$", "nope", "pattern ^ye(s|p)$ (the expected value) did not match nope"),
])
def test_builtin_metrics_explain_a_miss(metric, expected, got, feedback):
    m = Metric.parse(metric)
    assessed = m.assess({"a": expected}, Prediction({"a": got}))
    assert assessed.score < 1.0 and assessed.misses == ["a"]
    assert assessed.feedback == feedback


def test_long_values_are_clipped_in_feedback():
    got = "word " * 100
    feedback = Metric.parse("exact_match(a)").assess({"a": "short"}, Prediction({"a": got})).feedback
    assert feedback.startswith("expected short, got word word") and feedback.endswith("…") and len(feedback) < 120


@pytest.mark.parametrize("metric", ["exact_match(a)", "f1(a)", "contains(a)", "numeric(a)", "regex(a)"])
def test_a_pass_has_no_feedback(metric):
    assert Metric.parse(metric).assess({"a": "42"}, Prediction({"a": "42"})) == Assessment(1.0, None, [])


def test_a_failed_prediction_has_no_feedback_its_error_says_why():
    failed = Prediction(None, error="r (m): reply did not parse")
    assert Metric.parse("exact_match(a, b)").assess({"a": "x", "b": "y"}, failed) == Assessment(0.0, None, ["a", "b"])


def test_a_metric_over_several_fields_names_the_fields_that_missed():
    m = Metric.parse("exact_match(intent, day, count)")
    pred = Prediction({"intent": "book_restaurant", "day": "monday", "count": 9})
    assessed = m.assess({"intent": "book_restaurant", "day": "friday", "count": 12}, pred)
    assert assessed.score == pytest.approx(1 / 3) and assessed.misses == ["day", "count"]
    assert assessed.feedback == "2 of 3 fields wrong. day: expected friday, got monday; count: expected 12, got 9"


def test_score_and_misses_agree_with_assess():
    m = Metric.parse("f1(a, b)")
    ex, pred = {"a": "the cat sat", "b": "dog"}, Prediction({"a": "a cat sat down", "b": "dog"})
    assert m.score(ex, pred) == pytest.approx(0.9) and m.misses(ex, pred) == ["a"]


def test_eval_rows_carry_the_builtin_feedback(toy):
    result = run(toy, Metric.parse("exact_match(a)"))
    assert [r.feedback for r in result.rows] == [None, "expected revir, got ?", None, None]
    assert result.rows[1].to_dict()["feedback"] == "expected revir, got ?"


# ============================================================================ judge
def judge_rule(request):
    """The task is flip_rule; the judge accepts equal words and says why."""
    if request.messages[0]["content"].startswith("Judge whether"):
        e, p = first_user_value(request, "expected"), first_user_value(request, "prediction")
        if e == p:
            return {"rationale": f"{p} is the reversed word.", "acceptable": True}
        return {"rationale": f"{p} is not\n  {e}: the letters are not reversed.", "acceptable": False}
    return flip_rule(request)


def test_judge_gives_its_rationale_as_feedback(toy):
    lm = pipec.ScriptedLM(rule=judge_rule)
    prog = pipec.load(toy, lm=lm, cache=False)
    result = evaluate(prog, examples(ROWS), Metric.parse('judge(a, rubric: "the word reversed")'), concurrency=1)
    assert [r.score for r in result.rows] == [1.0, 0.0, 1.0, 1.0]
    assert result.rows[1].feedback == "? is not revir: the letters are not reversed."   # one line
    assert result.rows[0].feedback == "elppa is the reversed word."
    assert result.rows[1].misses == ["a"]
    judge = next(r for r in lm.requests if r.messages[0]["content"].startswith("Judge whether"))
    assert list(judge.schema["properties"]) == ["rationale", "acceptable"]          # reasons before the verdict


def test_a_judge_that_gives_no_rationale_is_still_read(toy):
    def rule(request):
        if request.messages[0]["content"].startswith("Judge whether"):
            return {"acceptable": first_user_value(request, "expected") == first_user_value(request, "prediction")}
        return flip_rule(request)
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=rule), cache=False)
    result = evaluate(prog, examples(ROWS), Metric.parse("judge(a)"), concurrency=1)
    assert [r.score for r in result.rows] == [1.0, 0.0, 1.0, 1.0]
    assert [r.feedback for r in result.rows] == [None] * 4


def test_a_failed_judge_call_says_so_in_the_feedback(toy):
    def rule(request):
        if request.messages[0]["content"].startswith("Judge whether"):
            raise LMError("judge/lm: provider is down")
        return flip_rule(request)
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=rule), cache=False)
    result = evaluate(prog, examples(ROWS[:1]), Metric.parse("judge(a)"), concurrency=1)
    assert result.rows[0].score == 0.0
    assert result.rows[0].feedback.startswith("no verdict: the judge failed (")
    assert "provider is down" in result.rows[0].feedback


# ============================================================================ the session
def test_the_session_gives_optimizers_each_rows_score_feedback_and_trace(toy):
    from pipec.optimize import open_session
    from pipec.settings import CompileConfig
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    session = open_session(prog, CompileConfig(trainset=ROWS, valset=ROWS, metric="exact_match(a)",
                                               optimizer="labeled_fewshot"))
    rows = list(reversed(session.valset))
    scored = session.evaluate(session.baseline(), rows)
    for row in scored.rows:
        for name in ScoredRow.__annotations__:           # what pipec.session documents is there
            assert hasattr(row, name), name
    # rows[i] is rows[i] scored: a reflective optimizer pairs feedback with the row and its traces.
    assert [r.feedback for r in scored.rows] == [None if r.values["q"] != "river" else "expected revir, got ?"
                                                 for r in rows]
    assert [r.score for r in scored.rows] == [0.0 if r.values["q"] == "river" else 1.0 for r in rows]
    river = next(r for r in scored.rows if r.feedback)
    assert [(t.predictor, t.inputs, t.parsed) for t in river.prediction.trace] == [("m", {"q": "river"}, {"a": "?"})]
    teacher = session.run_teacher(session.baseline(), rows)
    assert [r.feedback for r in teacher.rows] == [r.feedback for r in scored.rows]


def test_the_feedback_of_a_python_metric_reaches_the_session(toy, tool_module):
    from pipec.optimize import open_session
    from pipec.settings import CompileConfig
    mod = tool_module(SHAPES)
    prog = pipec.load(toy, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    session = open_session(prog, CompileConfig(trainset=ROWS, valset=ROWS, metric=f'python("{mod}:as_tuple")',
                                               optimizer="labeled_fewshot", base_dir=toy.parent))
    scored = session.evaluate(session.baseline())
    assert [r.feedback for r in scored.rows] == [
        "wanted revir, the program said ?" if r.values["q"] == "river" else "right" for r in session.valset]
