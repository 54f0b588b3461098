"""The compile cache: a compiled artifact per compile fingerprint, in the LM cache's folder
(`compiled/FINGERPRINT.json`), so compiling unchanged inputs again makes no LM call."""
from __future__ import annotations

from pathlib import Path

from .artifact import Artifact, ArtifactError, read_artifact


def cache_path(program, fp: str) -> Path:
    return Path(program.cache.directory) / "compiled" / f"{fp}.json"


def cached_artifact(program, fp: str) -> Artifact | None:
    """The artifact an earlier compile with this fingerprint stored, if it is there and whole."""
    if program.cache is None:
        return None
    p = cache_path(program, fp)
    if not p.exists():
        return None
    try:
        art = read_artifact(p)
    except ArtifactError:
        return None
    return art if art.report.fingerprint == fp else None


def store(program, fp: str) -> None:
    """Keep a compiled program's artifact for the next compile with the same fingerprint."""
    if program.cache is None:
        return
    from . import emit
    try:
        emit.write_artifact(program, cache_path(program, fp), remember=False)
    except OSError:
        pass   # a read-only cache only costs the next compile its shortcut
