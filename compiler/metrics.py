"""Built-in metrics: how a prediction is scored against a labeled row.

Each metric takes the expected value and the predicted value of one field and returns a float in
[0, 1] (bools count as 0 or 1). A metric over several fields averages them.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Callable

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


def numeric(expected: Any, got: Any, tolerance: float = 1e-6, **_) -> float:
    """1.0 when both parse as numbers within `tolerance` (relative for large values).

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
    return float(abs(a - b) <= tolerance * max(1.0, abs(a)))


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
}
