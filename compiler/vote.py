"""The one rule for "the same answer" in every vote: Majority's samples, Debate's agents, and an
ensemble's members all count votes here.

Two answers are the same when their normalized forms are equal: text ignoring case, runs of spaces,
surrounding spaces and a final period or exclamation mark; numbers by value (3 == 3.0); lists item by
item, in order; records key by key (keys ignoring case). The value a vote returns is always one that
was really given (the earliest of the winning answer's), never the normalized form.

Why not exact JSON: LM answers that differ only in those ways are one answer, and counting them apart
splits its votes, so that a minority answer can win ("Paris", "paris", "Lyon": exact JSON ties
three ways). Why not the SQuAD normalization of `exact_match` (punctuation and articles dropped): it
makes different answers equal ("3.5" and "35", "-1" and "1"), and a vote must never merge those.

Standard library only: kinds, the ensemble runtime and anything else may import it.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence


def normalize(value: Any) -> Any:
    """The form in which two answers count as the same vote.

    >>> normalize("  The  Answer. "), normalize(3.0), normalize(["A ", "b"]), normalize({"X": 1.0})
    ('the answer', 3, ['a', 'b'], {'x': 1})
    """
    if isinstance(value, str):
        return " ".join(value.split()).rstrip(".!").strip().casefold()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {str(k).casefold(): normalize(v) for k, v in value.items()}
    return value


def answer_key(*values: Any) -> str:
    """A hashable key equal for the same answer: several values (one per field) vote jointly.

    >>> answer_key("Seven.") == answer_key(" seven") != answer_key("8")
    True
    """
    return json.dumps([normalize(v) for v in values], sort_keys=True, default=str, ensure_ascii=False)


def count_votes(keys: Sequence[str | None]) -> list[tuple[str, int, int]]:
    """(key, votes, index of its first voter) for every answer, most votes first; among equal counts
    the answer given first wins. `None` is a voter that failed: it votes for nothing.

    >>> count_votes(["b", "a", None, "a", "b", "c"])
    [('b', 2, 0), ('a', 2, 1), ('c', 1, 5)]
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k is None:
            continue
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, i)
    return sorted(((k, counts[k], first[k]) for k in counts), key=lambda t: (-t[1], t[2]))


def winner(answers: Iterable[Any]) -> int:
    """The index of the winning answer (its first occurrence) among `answers`, all of them voting.

    >>> winner(["no", "Yes", "yes.", "no", "YES"])
    1
    """
    ranking = count_votes([answer_key(a) for a in answers])
    if not ranking:
        raise ValueError("no answers to vote on")
    return ranking[0][2]
