"""Built-in metrics: how a prediction is scored against a labeled row.

Each metric takes the expected value and the predicted value of one field and returns a float in
[0, 1] (bools count as 0 or 1). A metric over several fields averages them.
"""
from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Any, Callable

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
    def num(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        m = re.search(r"[-+]?\d[\d,]*(?:\.\d+)?", str(v))
        return float(m.group(0).replace(",", "")) if m else None
    a, b = num(expected), num(got)
    if a is None or b is None:
        return 0.0
    if tolerance is None:
        return float(abs(a - b) <= 1e-9 * max(1.0, abs(a)))
    return float(abs(a - b) <= tolerance)


def regex(expected: Any, got: Any, pattern: str = "", **_) -> float:
    """1.0 when the prediction matches `pattern` (or, without one, the expected value as a pattern)."""
    return float(re.search(pattern or str(expected), str(got)) is not None)


FUNCTIONS: dict[str, Callable[..., float]] = {
    "exact_match": exact_match, "f1": f1, "contains": contains, "numeric": numeric, "regex": regex,
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


class MetricError(ValueError):
    """A metric that cannot be built or cannot work: unknown name, bad fields or options, a function
    that cannot be imported or returns something other than a score. An evaluation stops at it:
    it is the metric's fault, not the row's (a metric that raises on one row scores that row 0)."""


class Metric:
    """A scoring rule: `score(example, prediction)` in [0, 1]; a failed prediction scores 0.

    Field metrics average a per-field function over the named outputs; `python("pkg.mod:fn")`
    metrics call `fn(example, prediction)` with plain dicts and may return a bool or a float;
    `judge(...)` asks an LM (see `needs_lm`).

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
        options = {}
        for a in expr.args:
            if a.name is not None:
                v = a.value
                options[a.name] = v.value if isinstance(v, A.Literal) else (v.name if isinstance(v, A.Var) else None)
        if not fields:
            raise MetricError(f"metric {text} needs the output it scores, e.g. {expr.callee}(answer)")
        if expr.callee == "judge":
            return cls(text, fields, None, {}, judge={"rubric": options.get("rubric", ""), "lm": options.get("lm")},
                       expr=expr)
        return cls(text, fields, FUNCTIONS[expr.callee], options, expr=expr)

    def score(self, example: dict[str, Any], pred) -> float:
        """The score of a prediction against a labeled example (judge metrics: use `ascore`)."""
        if not pred.ok:
            return 0.0
        if self.target is not None or self._python is not None:
            return _as_score(self.python(dict(example), pred.outputs()), self.text)
        if self.fn is None:
            raise MetricError(f"{self.text} needs an LM; call ascore")
        total = 0.0
        for f in self.fields:
            total += _as_score(self.fn(example.get(f), pred[f], **self.options), self.text)
        return total / len(self.fields)

    def misses(self, example: dict[str, Any], pred) -> list[str]:
        """The fields this prediction got wrong (all of them when it failed)."""
        if not pred.ok:
            return list(self.fields)
        if self.fn is None:
            return []
        return [f for f in self.fields if _as_score(self.fn(example.get(f), pred[f], **self.options), self.text) < 1.0]


def _as_score(value: Any, text: str) -> float:
    """A metric's return value as a score in [0, 1]; anything but a bool or a number is the metric's
    bug, reported naming the metric and what it returned (never a silent 0 for every row).

    >>> _as_score(True, "m"), _as_score(1.5, "m"), _as_score(0.25, "m")
    (1.0, 1.0, 0.25)
    >>> _as_score({"score": 1}, 'python("pkg.mod:fn")')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipec.metrics.MetricError: metric python("pkg.mod:fn") returned a dict ({'score': 1}); a metric returns a bool...
    """
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return min(1.0, max(0.0, float(value)))
    if not isinstance(value, (str, bytes)) and hasattr(type(value), "__float__"):
        try:                            # numpy and decimal numbers, one-element arrays
            return min(1.0, max(0.0, float(value)))
        except (TypeError, ValueError):
            pass
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    article = "an" if type(value).__name__[:1] in "aeiou" else "a"
    raise MetricError(f"metric {text} returned {article} {type(value).__name__} ({shown}); a metric returns a bool "
                      "or a number (a float from 0 to 1)")


def _show_call(c) -> str:
    parts = []
    for a in c.args:
        v = a.value
        shown = v.name if isinstance(v, A.Var) else json.dumps(v.value) if isinstance(v, A.Literal) else "..."
        parts.append(f"{a.name}: {shown}" if a.name else shown)
    return f"{c.callee}({', '.join(parts)})"
