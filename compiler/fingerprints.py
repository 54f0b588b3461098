"""Fingerprints: what identifies a program, its sources, its LMs, and a compile.

A compile's fingerprint covers everything its result depends on — pipec's own version included, so
an upgrade never returns a compile cached by an older pipec — and keys the compile cache.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .lower import plain_options
from .version import __version__


def fingerprint(*parts: Any) -> str:
    """sha256 over a canonical JSON encoding of the parts.

    >>> fingerprint("a", 1) == fingerprint("a", 1) != fingerprint("a", 2)
    True
    """
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def source_files(program) -> dict[str, str]:
    """The program's .pipe sources keyed by path relative to the main file's folder."""
    base = program.path.resolve().parent
    out = {}
    for shown, text in program.loaded.sources.items():
        p = Path(shown)
        real = (p if p.is_absolute() else Path.cwd() / p).resolve()
        out[os.path.relpath(real, base).replace(os.sep, "/")] = text
    return out


def python_sources(program, metric) -> dict[str, str]:
    """Hashes of the Python files behind tools and a python metric: editing them recompiles.
    The files are found as `import` would find them, without importing them."""
    from .tools import describe_target
    near = program.path.resolve().parent
    targets = {t.target for t in program.checked.tools.values()}
    if metric.target is not None:
        targets.add(metric.target)
    origins: dict[str, str | None] = {}
    for target in targets:
        origins[target.partition(":")[0]] = describe_target(target, near).origin
    out = {}
    for name, origin in sorted(origins.items()):
        try:
            out[name] = fingerprint(Path(origin).read_bytes().decode("utf-8", "replace")) if origin else "?"
        except OSError:
            out[name] = "?"
    return out


def lm_identity(program) -> dict[str, Any]:
    """LM ids and options by declared name: part of the fingerprint, never a key's value."""
    out = {}
    for name, decl in program.checked.lms.items():
        out[name] = {"model": program.backend(name).describe(), "options": plain_options(decl.options)}
    out["__default__"] = {"model": program.backend(program.default_lm_name()).describe()}
    return out


def compile_fingerprint(format_version: int, program, config, metric, optimizer_settings: dict[str, Any], train_id,
                        val_id, proposer: str) -> str:
    """Everything a compile's result depends on: pipec's version and the artifact format, the
    sources (.pipe files and the Python behind tools and metric), the pipeline, the data, the metric,
    the optimizer and its settings, seed, budget, the LMs, teacher and proposer, and the bound on
    LM calls per input."""
    return fingerprint(format_version, __version__, source_files(program), python_sources(program, metric),
                       program.name, train_id, val_id, config.val_fraction if config.valset is None else None,
                       metric.text, config.optimizer, optimizer_settings, config.seed, _budget(config),
                       lm_identity(program), config.teacher, config.proposer, proposer,
                       # Only when set, so compiles from before the setting existed keep their fingerprints.
                       *([config.max_calls_per_row] if getattr(config, "max_calls_per_row", None) is not None else []))


def _budget(config):
    """The budget as the fingerprint holds it: the call bound alone when there is no dollar bound,
    so compiles from before dollar budgets existed keep their fingerprints (and cached results)."""
    return config.budget if config.budget_usd is None else (config.budget, config.budget_usd)


def program_fingerprint(program) -> str:
    """A short content fingerprint of what a program does: a compiled artifact's own fingerprint, or a
    sha256 over its .pipe sources (imports included, by path relative to the main file)."""
    art = getattr(program, "artifact", None)
    if art is not None and getattr(art, "fingerprint", ""):
        return art.fingerprint[:16]
    blob = json.dumps(sorted(source_files(program).items()), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]
