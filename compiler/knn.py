"""Nearest-demo selection at run time: a small lexical (TF-IDF) index over a pool of demos.

No network and no model: words and character trigrams weighted by inverse document frequency,
compared by cosine similarity. Selection is deterministic (ties go to the earlier demo).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)


def features(text: str) -> Counter:
    """Words plus character trigrams of words, so near spellings still overlap.

    >>> sorted(features("Play jazz"))[:3]
    ['#ja', '#pl', 'ay#']
    """
    out: Counter = Counter()
    for w in _WORD.findall(text.lower()):
        out[w] += 1
        padded = f"#{w}#"
        for i in range(len(padded) - 2):
            out[padded[i:i + 3]] += 1
    return out


def tfidf_vectors(texts: list[str]) -> list[dict[str, float]]:
    """Unit-length TF-IDF vectors of `texts` (sparse: feature -> weight), as the nearest-demo index
    weighs them; the dot product of two is their cosine similarity. For optimizers that compare or
    cluster rows (`pipec.session.tfidf_vectors`).

    >>> a, b, c = tfidf_vectors(["play some jazz", "play jazz music", "rain in Oslo"])
    >>> cosine(a, b) > cosine(a, c)
    True
    >>> round(cosine(a, a), 6)
    1.0
    """
    feats = [features(t) for t in texts]
    df: Counter = Counter()
    for f in feats:
        df.update(f.keys())
    n = max(1, len(texts))
    idf = {t: math.log(1.0 + n / c) for t, c in df.items()}
    out = []
    for f in feats:
        v = {t: c * idf[t] for t, c in f.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        out.append({t: x / norm for t, x in v.items()})
    return out


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    """The dot product of two sparse vectors (their cosine similarity when both have unit length).

    >>> cosine({"a": 0.6, "b": 0.8}, {"b": 1.0})
    0.8
    """
    small, big = (a, b) if len(a) < len(b) else (b, a)
    return sum(x * big.get(t, 0.0) for t, x in small.items())


def _text(values: dict[str, Any], fields: list[str]) -> str:
    return " ".join(str(values.get(f, "")) for f in fields)


class KnnPool:
    """Demos indexed by their input fields; `select(values)` returns the k most similar.

    >>> pool = KnnPool([{"q": "play jazz", "a": 1}, {"q": "rain in Oslo", "a": 2}], ["q"], k=1)
    >>> pool.select({"q": "will it rain tomorrow"})[0]["a"]
    2
    """

    def __init__(self, demos: list[dict[str, Any]], fields: list[str], k: int):
        self.demos = demos
        self.fields = fields
        self.k = k
        feats = [features(_text(d, fields)) for d in demos]
        df: Counter = Counter()
        for f in feats:
            df.update(f.keys())
        n = max(1, len(demos))
        self.idf = {t: math.log(1.0 + n / c) for t, c in df.items()}
        self.vectors = [self._weigh(f) for f in feats]

    def _weigh(self, f: Counter) -> dict[str, float]:
        v = {t: c * self.idf.get(t, math.log(1.0 + len(self.demos))) for t, c in f.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {t: x / norm for t, x in v.items()}

    def nearest(self, values: dict[str, Any]) -> list[int]:
        q = self._weigh(features(_text(values, self.fields)))
        scored = []
        for i, v in enumerate(self.vectors):
            small, big = (q, v) if len(q) < len(v) else (v, q)
            scored.append((sum(x * big.get(t, 0.0) for t, x in small.items()), -i))
        scored.sort(reverse=True)
        # Most similar last: the demo closest to the input sits right before it in the prompt.
        return [-i for _, i in scored[: self.k]][::-1]

    def select(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.demos[i] for i in self.nearest(values)]
