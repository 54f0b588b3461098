"""What a deliberate editor of a compiled artifact does after changing it: recompute the fingerprint.

Anyone can (it is a plain sha256), so tests that exercise the checks behind the fingerprint reseal
their edits first; trust never rests on the fingerprint (see `pipec.trust`).
"""
from __future__ import annotations


def reseal(doc: dict) -> dict:
    """`doc` (an artifact as JSON) with its top-level fingerprint recomputed over everything else."""
    from pipec.artifact import fingerprint
    return {**doc, "fingerprint": fingerprint({k: v for k, v in doc.items() if k != "fingerprint"})}
