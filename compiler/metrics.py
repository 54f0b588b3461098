"""Built-in metrics: how a prediction is scored against a labeled row, and what the metric says about it.

Each metric takes the expected value and the predicted value of one field and returns a float in
[0, 1] (bools count as 0 or 1). A metric over several fields averages them. Each built-in has a
feedback function beside it (`FEEDBACK`) that says in a short line why a field missed ("expected
book_restaurant, got add_to_playlist"); it runs only on a miss, so a passing row costs nothing more.
`Metric.assess` gives a row's score, feedback and missed fields in one pass.
"""
from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Any, Callable, NamedTuple

from .dsl import ast as A
from .dsl.catalogue import FunctionSpec, OptionSpec

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(value: Any) -> str:
    """Lowercase, drop punctuation and articles, squeeze spaces (the SQuAD normalization).

    >>> normalize("The  Eiffel-Tower!")
    'eiffeltower'
    """
    text = str(value).lower().translate(_PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(expected: Any, got: Any, **_) -> float:
    """1.0 when the normalized values are equal.

    >>> exact_match("Book_Restaurant", "book_restaurant ")
    1.0
    """
    if isinstance(expected, list) and isinstance(got, list):
        return float(sorted(map(normalize, expected)) == sorted(map(normalize, got)))
    return float(normalize(expected) == normalize(got))


def f1(expected: Any, got: Any, **_) -> float:
    """Token-level F1 between the normalized values.

    >>> round(f1("the cat sat", "a cat sat down"), 2)
    0.8
    """
    e, g = normalize(expected).split(), normalize(got).split()
    if not e or not g:
        return float(e == g)
    common = sum((Counter(e) & Counter(g)).values())
    if common == 0:
        return 0.0
    p, r = common / len(g), common / len(e)
    return 2 * p * r / (p + r)


def contains(expected: Any, got: Any, **_) -> float:
    """1.0 when the expected value appears in the prediction.

    >>> contains("Paris", "It is Paris, France")
    1.0
    """
    if isinstance(got, list):
        return float(normalize(expected) in map(normalize, got))
    return float(normalize(expected) in normalize(got))


def numeric(expected: Any, got: Any, tolerance: float | None = None, **_) -> float:
    """1.0 when both parse as numbers that differ by at most `tolerance` (default: float noise only).

    >>> numeric("1,000", 1000.0000001)
    1.0
    """
    a, b = _number(expected), _number(got)
    if a is None or b is None:
        return 0.0
    if tolerance is None:
        return float(abs(a - b) <= 1e-9 * max(1.0, abs(a)))
    return float(abs(a - b) <= tolerance)


def _number(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    m = re.search(r"[-+]?\d[\d,]*(?:\.\d+)?", str(v))
    return float(m.group(0).replace(",", "")) if m else None


def regex(expected: Any, got: Any, pattern: str = "", **_) -> float:
    """1.0 when the prediction matches `pattern` (or, without one, the expected value as a pattern)."""
    return float(re.search(pattern or str(expected), str(got)) is not None)


FUNCTIONS: dict[str, Callable[..., float]] = {
    "exact_match": exact_match, "f1": f1, "contains": contains, "numeric": numeric, "regex": regex,
}


# ---------------------------------------------------------------------------- feedback of the built-ins
# Called only when a field scored below 1, with the same arguments as the metric: they say why in one
# short line, naming values as the prediction gave them (clipped), tokens as the metric compared them.

def _shown(value: Any, n: int = 80) -> str:
    if value is None:
        return "nothing"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split()) or repr(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _listed(tokens: list[str], most: int) -> str:
    shown = ", ".join(tokens[:most])
    return shown + (f" (+{len(tokens) - most} more)" if len(tokens) > most else "")


def _unmatched(tokens: list[str], other: list[str]) -> list[str]:
    """The tokens left once each token of `other` has cancelled one equal token, in their order.

    >>> _unmatched(["a", "b", "a", "c"], ["a", "c", "d"])
    ['b', 'a']
    """
    left = Counter(other)
    out = []
    for t in tokens:
        if left[t] > 0:
            left[t] -= 1
        else:
            out.append(t)
    return out


def exact_match_feedback(expected: Any, got: Any, **_) -> str:
    """Why an exact match missed.

    >>> exact_match_feedback("book_restaurant", "add_to_playlist")
    'expected book_restaurant, got add_to_playlist'
    >>> exact_match_feedback(["a", "b"], ["a", "c"])
    'expected ["a", "b"], got ["a", "c"] (missing b; extra c)'
    """
    text = f"expected {_shown(expected)}, got {_shown(got)}"
    if isinstance(expected, list) and isinstance(got, list):
        e, g = list(map(normalize, expected)), list(map(normalize, got))
        parts = [f"{label} {_listed(left, 5)}"
                 for label, left in (("missing", _unmatched(e, g)), ("extra", _unmatched(g, e))) if left]
        text += f" ({'; '.join(parts)})" if parts else ""
    return text


def f1_feedback(expected: Any, got: Any, **_) -> str:
    """Which expected tokens the prediction lacks, and briefly which it adds.

    >>> f1_feedback("the cat sat", "a cat sat down")
    'token F1 0.80: extra down'
    >>> f1_feedback("eiffel tower paris", "the tower")
    'token F1 0.50: missing eiffel, paris'
    """
    e, g = normalize(expected).split(), normalize(got).split()
    if not g:
        return f"the prediction is empty; expected {_shown(expected)}"
    if not e:
        return f"expected an empty answer, got {_shown(got)}"
    missing, extra = _unmatched(e, g), _unmatched(g, e)
    score = 2 * (len(e) - len(missing)) / (len(e) + len(g))     # F1 = 2PR / (P + R), from the counts
    parts = ([f"missing {_listed(missing, 8)}"] if missing else []) + ([f"extra {_listed(extra, 4)}"] if extra else [])
    return f"token F1 {score:.2f}: " + "; ".join(parts)


def contains_feedback(expected: Any, got: Any, **_) -> str:
    """Why the expected value was not found, and which of its tokens are missing.

    >>> contains_feedback("Eiffel Tower", "the tower in Paris")
    'eiffel tower does not appear in the prediction (missing eiffel)'
    >>> contains_feedback("rock", ["Jazz", "Pop"])
    'rock is not among ["Jazz", "Pop"]'
    """
    want = normalize(expected)
    if isinstance(got, list):
        return f"{_shown(want)} is not among {_shown(got)}"
    have = normalize(got).split()
    missing = _unmatched(want.split(), have)
    if not have:
        return f"the prediction is empty; expected it to contain {_shown(want)}"
    if missing:
        return f"{_shown(want)} does not appear in the prediction (missing {_listed(missing, 8)})"
    return f"{_shown(want)} does not appear in the prediction (its words are there, not together in that order)"


def _number_text(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:.10g}"


def numeric_feedback(expected: Any, got: Any, tolerance: float | None = None, **_) -> str:
    """How far the number is off (or that there is no number to compare).

    >>> numeric_feedback(12, "9 apples")
    'expected 12, got 9 (off by 3)'
    >>> numeric_feedback("0.2", 0.8, tolerance=0.5)
    'expected 0.2, got 0.8 (off by 0.6; tolerance 0.5)'
    """
    a, b = _number(expected), _number(got)
    if a is None:
        return f"the expected value {_shown(expected)} is not a number"
    if b is None:
        return f"expected {_number_text(a)}, got no number in {_shown(got)}"
    text = f"expected {_number_text(a)}, got {_number_text(b)} (off by {_number_text(abs(a - b))}"
    return text + (f"; tolerance {_number_text(float(tolerance))})" if tolerance is not None else ")")


def regex_feedback(expected: Any, got: Any, pattern: str = "", **_) -> str:
    """Which pattern did not match.

    >>> regex_feedback("x", "abc-12", pattern="^[A-Z]{3}-[0-9]+$")
    'pattern ^[A-Z]{3}-[0-9]+$ did not match abc-12'
    """
    source = "" if pattern else " (the expected value)"
    return f"pattern {_shown(pattern or str(expected))}{source} did not match {_shown(got)}"


FEEDBACK: dict[str, Callable[..., str]] = {
    "exact_match": exact_match_feedback, "f1": f1_feedback, "contains": contains_feedback,
    "numeric": numeric_feedback, "regex": regex_feedback,
}

SPECS: dict[str, FunctionSpec] = {
    "exact_match": FunctionSpec("exact_match", {}, True, "normalized equality"),
    "f1": FunctionSpec("f1", {}, True, "token F1"),
    "contains": FunctionSpec("contains", {}, True, "expected value appears in the prediction"),
    "numeric": FunctionSpec("numeric", {"tolerance": OptionSpec("number", "allowed difference", minimum=0)}, True,
                            "numbers equal within a tolerance"),
    "regex": FunctionSpec("regex", {"pattern": OptionSpec("str", "regular expression the prediction must match")},
                          True, "prediction matches a pattern"),
    "judge": FunctionSpec("judge", {"rubric": OptionSpec("str", "what a good prediction must satisfy"),
                                    "lm": OptionSpec("lm", "the LM that judges (default: the file's default LM)")},
                          True, "an LM decides whether the prediction meets a rubric"),
}


_FEEDBACK_OF = {FUNCTIONS[name]: FEEDBACK[name] for name in FUNCTIONS}


class MetricError(ValueError):
    """A metric that cannot be built or cannot work: unknown name, bad fields or options, a function
    that cannot be imported or returns something other than a score. An evaluation stops at it:
    it is the metric's fault, not the row's (a metric that raises on one row scores that row 0)."""


class Assessment(NamedTuple):
    """One row as a metric sees it: the score in [0, 1], the metric's feedback (None: it said
    nothing, as on a pass or a failed prediction, whose error says why) and the fields it missed.

    >>> Metric.parse("exact_match(a)").assess({"a": "x"}, _Outputs({"a": "y"}))
    Assessment(score=0.0, feedback='expected x, got y', misses=['a'])
    """

    score: float
    feedback: str | None
    misses: list[str]


class _Outputs(dict):
    """A successful prediction for the doctests (`pipec.prediction` stays out of this module)."""

    ok = True

    def outputs(self) -> dict:
        return dict(self)


class Metric:
    """A scoring rule: `score(example, prediction)` in [0, 1]; a failed prediction scores 0.
    `assess(example, prediction)` adds the metric's feedback and the fields it missed.

    Field metrics average a per-field function over the named outputs and explain each miss;
    `python("pkg.mod:fn")` metrics call `fn(example, prediction)` with plain dicts and may return a
    bool, a float, `(score, "feedback")` or `{"score": ..., "feedback": ...}`; `judge(...)` asks an
    LM, which gives its rationale (see `needs_lm` and `pipec.evaluate.Judge`).

    >>> m = Metric.parse("exact_match(intent)")
    >>> m.text, m.fields
    ('exact_match(intent)', ['intent'])
    """

    def __init__(self, text: str, fields: list[str], fn: Callable[..., Any] | None, options: dict[str, Any],
                 python: Callable | None = None, judge: dict | None = None, target: str | None = None,
                 near=None, expr=None):
        self.text = text
        self.expr = expr                # the parsed call, for the compile-block checks (`compiling.check_settings`)
        self.fields = fields
        self.fn = fn
        self.explain = _FEEDBACK_OF.get(fn)      # why a field missed; None for a function without one
        self.options = options
        self.judge = judge
        self.target = target            # `pkg.mod:fn` of a python(...) metric, imported on first score
        self._near = near
        self._python = python

    @property
    def python(self) -> Callable | None:
        """A python(...) metric's function, imported on first use (importing runs its module, so it
        waits until something is scored: building a metric to show or check it runs nothing)."""
        if self._python is None and self.target is not None:
            from .tools import ToolImportError, import_target
            try:
                self._python = import_target(self.target, self._near)
            except ToolImportError as err:
                raise MetricError(f"metric {self.text}: {err}") from None
        return self._python

    @property
    def needs_lm(self) -> bool:
        return self.judge is not None

    @classmethod
    def parse(cls, text: str, near=None) -> "Metric":
        """Build a metric from its source text, as written in a compile block."""
        from .dsl.parser import parse
        f, diags = parse(f"compile _metric {{ metric = {text} }}", "<metric>")
        if diags or not f.items or not f.items[0].settings:
            raise MetricError(f"cannot read metric '{text}'; write e.g. exact_match(answer)")
        return cls.from_expr(f.items[0].settings[0].value, text, near)

    @classmethod
    def from_expr(cls, expr, text: str | None = None, near=None) -> "Metric":
        """Build a metric from a parsed compile-block expression."""
        if isinstance(expr, A.Var):
            expr = A.Call(expr.span, expr.name, [], expr.span)
        if not isinstance(expr, A.Call):
            raise MetricError("a metric is a call such as exact_match(answer)")
        text = text or _show_call(expr)
        if expr.callee == "python":
            from .tools import describe_target
            target = str(expr.args[0].value.value if expr.args and isinstance(expr.args[0].value, A.Literal) else "")
            info = describe_target(target, near)
            if not info.found:
                raise MetricError(f"metric {text}: {info.problem}")
            return cls(text, [], None, {}, target=target, near=near, expr=expr)
        if expr.callee not in SPECS:
            raise MetricError(f"unknown metric '{expr.callee}'; known: {', '.join(sorted(SPECS))}, python(\"pkg.mod:fn\")")
        fields = [a.value.name for a in expr.args if a.name is None and isinstance(a.value, A.Var)]
        options = {a.name: A.plain(a.value) for a in expr.args if a.name is not None}
        if not fields:
            raise MetricError(f"metric {text} needs the output it scores, e.g. {expr.callee}(answer)")
        if expr.callee == "judge":
            return cls(text, fields, None, {}, judge={"rubric": options.get("rubric", ""), "lm": options.get("lm")},
                       expr=expr)
        return cls(text, fields, FUNCTIONS[expr.callee], options, expr=expr)

    def score(self, example: dict[str, Any], pred) -> float:
        """The score of a prediction against a labeled example (judge metrics: `pipec.evaluate.Judge`).

        >>> Metric.parse("exact_match(a, b)").score({"a": "x", "b": "y"}, _Outputs(a="x", b="z"))
        0.5
        """
        return self.assess(example, pred).score

    def misses(self, example: dict[str, Any], pred) -> list[str]:
        """The fields this prediction got wrong (all of them when it failed)."""
        return self.assess(example, pred).misses

    def assess(self, example: dict[str, Any], pred) -> Assessment:
        """Score, feedback and missed fields of a prediction, in one pass over the fields (feedback
        is built only for a miss, or taken as a python(...) metric returned it).

        >>> Metric.parse("numeric(n, tolerance: 1)").assess({"n": 12}, _Outputs(n="9"))
        Assessment(score=0.0, feedback='expected 12, got 9 (off by 3; tolerance 1)', misses=['n'])
        """
        if not pred.ok:
            return Assessment(0.0, None, list(self.fields))
        if self.target is not None or self._python is not None:
            fn = self.python
            try:
                score, feedback = _verdict(fn(dict(example), pred.outputs()))
            except _Unreadable as err:
                raise MetricError(f"metric {self.text}{_defined_at(fn)} {err}") from None
            return Assessment(score, feedback, [])
        if self.fn is None:
            raise MetricError(f"{self.text} needs an LM; score it with pipec.evaluate.Judge")
        total, misses, notes = 0.0, [], []
        for f in self.fields:
            expected, got = example.get(f), pred[f]
            value = _as_score(self.fn(expected, got, **self.options), self.text)
            total += value
            if value < 1.0:
                misses.append(f)
                notes.append(self.explain(expected, got, **self.options) if self.explain is not None
                             else f"scored {value:.2f}")
        if not misses:
            return Assessment(total / len(self.fields), None, misses)
        if len(self.fields) == 1:
            return Assessment(total, notes[0], misses)
        said = "; ".join(f"{f}: {note}" for f, note in zip(misses, notes))
        return Assessment(total / len(self.fields), f"{len(misses)} of {len(self.fields)} fields wrong. {said}", misses)


RETURNS = 'a metric returns a bool, a number from 0 to 1, (score, "feedback") or {"score": ..., "feedback": ...}'


class _Unreadable(Exception):
    """What a python(...) metric returned, when it is not a score (the caller names the metric)."""


def _number_score(value: Any) -> float | None:
    """A bool or a number as a score in [0, 1]; None for anything else."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return min(1.0, max(0.0, float(value)))
    if not isinstance(value, (str, bytes)) and hasattr(type(value), "__float__"):
        try:                            # numpy and decimal numbers, one-element arrays
            return min(1.0, max(0.0, float(value)))
        except (TypeError, ValueError):
            pass
    return None


def _as_score(value: Any, text: str) -> float:
    """A built-in metric's return value as a score in [0, 1] (anything else is a bug, named).

    >>> _as_score(True, "m"), _as_score(1.5, "m"), _as_score(0.25, "m")
    (1.0, 1.0, 0.25)
    """
    score = _number_score(value)
    if score is None:
        raise MetricError(f"metric {text} returned {_described(value)}; {RETURNS}")
    return score


def _verdict(value: Any) -> tuple[float, str | None]:
    """A python(...) metric's return value as (score, feedback); anything else is the metric's bug,
    raised as `_Unreadable` saying what it returned (never a silent 0 for every row).

    >>> _verdict(True), _verdict(0.25), _verdict((1, "ok")), _verdict({"score": 0, "feedback": "no"})
    ((1.0, None), (0.25, None), (1.0, 'ok'), (0.0, 'no'))
    >>> _verdict({"score": 1, "feedbak": "x"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipec.metrics._Unreadable: returned a dict with an unknown key 'feedbak' ({'score': 1, 'feedbak': 'x'}); ...
    """
    score = _number_score(value)
    if score is not None:
        return score, None
    if isinstance(value, tuple) and len(value) == 2:
        raw, feedback, shape = value[0], value[1], "(score, feedback)"
    elif isinstance(value, dict) and "score" in value and set(value) <= {"score", "feedback"}:
        raw, feedback, shape = value["score"], value.get("feedback"), '{"score": ..., "feedback": ...}'
    else:
        raise _Unreadable(f"returned {_described(value)}; {RETURNS}")
    score = _number_score(raw)
    if score is None:
        raise _Unreadable(f"returned {shape} whose score is {_described(raw)}, in {_clipped(value)}; "
                          "the score is a bool or a number from 0 to 1")
    if feedback is not None and not isinstance(feedback, str):
        raise _Unreadable(f"returned {shape} whose feedback is {_described(feedback)}, in {_clipped(value)}; "
                          "the feedback is text (a str) or None")
    return score, feedback if feedback and feedback.strip() else None


def _described(value: Any) -> str:
    """What a metric returned, for an error: its type and (clipped) value.

    >>> _described((1, 2, 3)), _described({"feedback": "x"})
    ('a tuple of 3 ((1, 2, 3))', "a dict without 'score' ({'feedback': 'x'})")
    """
    kind = type(value).__name__
    article = "an" if kind[:1] in "aeiou" else "a"
    if isinstance(value, tuple):
        return f"{article} {kind} of {len(value)} ({_clipped(value)})"
    if isinstance(value, dict) and "score" not in value:
        return f"{article} {kind} without 'score' ({_clipped(value)})"
    if isinstance(value, dict):
        extra = [k for k in value if k not in ("score", "feedback")]
        keys = ", ".join(repr(k) for k in extra)
        return f"{article} {kind} with an unknown key {keys} ({_clipped(value)})" if len(extra) == 1 else \
            f"{article} {kind} with unknown keys {keys} ({_clipped(value)})"
    return f"{article} {kind} ({_clipped(value)})"


def _clipped(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:59] + "…"


def _defined_at(fn: Any) -> str:
    """Where a metric function is defined, for errors: " (fn in path/to/mod.py:12)" or ""."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    return f" ({getattr(fn, '__qualname__', code.co_name)} in {code.co_filename}:{code.co_firstlineno})"


def _show_call(c) -> str:
    parts = []
    for a in c.args:
        v = a.value
        shown = v.name if isinstance(v, A.Var) else json.dumps(v.value) if isinstance(v, A.Literal) else "..."
        parts.append(f"{a.name}: {shown}" if a.name else shown)
    return f"{c.callee}({', '.join(parts)})"
