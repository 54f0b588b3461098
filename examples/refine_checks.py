"""Checks for examples/refine.pipe: a `Refine` module calls one with its outputs and stops once it returns true."""
from __future__ import annotations


def fits(tagline: str) -> bool:
    """Whether a tagline is one line of 3 to 40 characters.

    >>> fits("Cold for a day, kind for a lifetime."), fits("")
    (True, False)
    """
    text = (tagline or "").strip()
    return 3 <= len(text) <= 40 and "\n" not in text
