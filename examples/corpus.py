"""A small in-memory corpus and a lexical search tool for the multi-hop example.

Used from examples/multihop.pipe as `tool search = python("examples.corpus:search")`.
"""
from __future__ import annotations

import math
import re
from collections import Counter

DOCS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Paris is on the river Seine and has about two million inhabitants.",
    "Gustave Eiffel's company designed and built the Eiffel Tower for the 1889 World's Fair.",
    "Gustave Eiffel was born in Dijon, France, in 1832.",
    "Dijon is the capital of the Burgundy region and is famous for its mustard.",
    "The Statue of Liberty was a gift from France to the United States, dedicated in 1886.",
    "The internal iron framework of the Statue of Liberty was engineered by Gustave Eiffel.",
    "Frédéric Auguste Bartholdi designed the Statue of Liberty; he was born in Colmar.",
    "Colmar is a town in the Alsace region of north-eastern France.",
    "The Louvre in Paris is the world's most-visited art museum and houses the Mona Lisa.",
    "The Mona Lisa was painted by Leonardo da Vinci, who was born in Vinci, Italy, in 1452.",
    "Vinci is a town in Tuscany, near Florence.",
    "Florence is the capital of Tuscany and the birthplace of the Renaissance.",
    "Mount Fuji is the highest mountain in Japan, at 3,776 metres.",
    "Tokyo is the capital of Japan; Mount Fuji can be seen from Tokyo on clear days.",
    "The Golden Gate Bridge is in San Francisco, California, and opened in 1937.",
    "Joseph Strauss was the chief engineer of the Golden Gate Bridge; he was born in Cincinnati.",
    "Cincinnati is a city in Ohio on the Ohio River.",
]

_WORD = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


_DF = Counter(t for d in DOCS for t in set(_tokens(d)))


def search(query: str, k: int = 3) -> list[str]:
    """The k passages with the highest TF-IDF overlap with the query.

    >>> search("Where was Gustave Eiffel born?", k=1)
    ["Gustave Eiffel was born in Dijon, France, in 1832."]
    """
    q = Counter(_tokens(query))
    n = len(DOCS)
    scored = []
    for i, doc in enumerate(DOCS):
        d = Counter(_tokens(doc))
        score = sum(q[t] * d[t] * math.log(1 + n / _DF[t]) for t in q if t in d)
        scored.append((score, -i, doc))
    scored.sort(reverse=True)
    return [doc for score, _, doc in scored[:k] if score > 0]
