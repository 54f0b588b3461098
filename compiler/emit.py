"""Emit: a compiled program becomes a versioned artifact (`build_artifact`), written canonically
(`write_artifact`); and back: the sources an artifact embeds, loaded as the checker loads files
(`embedded_sources`). Turning an artifact into a runnable program is `pipec.load_compiled`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .artifact import FORMAT_VERSION, Artifact, ArtifactError, LMState, PredictorState, Report, Sources
from .fingerprints import fingerprint, source_files
from .graph import to_dict as graph_dict
from .lower import plain_options
from .version import __version__


def build_artifact(program, report: Report, folder: Path) -> Artifact:
    """The artifact of a compiled program, with sources relative to `folder` (where it will be saved)."""
    base = program.path.resolve().parent
    files = {}
    for rel, text in source_files(program).items():
        files[os.path.relpath(base / rel, folder).replace(os.sep, "/")] = text
    main = os.path.relpath(program.path.resolve(), folder).replace(os.sep, "/")
    graph = graph_dict(program.graph)
    lms = {}
    for name, decl in program.checked.lms.items():
        lms[name] = LMState(model=decl.model, options=plain_options(decl.options))
    members = [_masked(m) for m in program.members]
    return Artifact(format_version=FORMAT_VERSION, pipec_version=__version__, pipeline=program.name,
                    sources=Sources(main=main, files=files, fingerprint=fingerprint(main, files)),
                    graph=graph, lms=lms, predictors=_masked(program.params()), ensemble=members,
                    strategies=program.strategies(), report=report).sealed()


def _masked(params: dict[str, Any]) -> dict[str, PredictorState]:
    """Parameter sets with every secret value masked: demos are LM replies and data rows, and an
    artifact is meant to be shared. (The alternatives a set chooses, its `Choice` entries, are the
    artifact's `strategies`.)"""
    from .artifact import Choice
    from .secrets import redact_data
    return {k: PredictorState.model_validate(redact_data(v.model_dump(mode="json") if isinstance(v, PredictorState) else v))
            for k, v in params.items() if not isinstance(v, Choice)}


def write_artifact(program, path: Path, remember: bool = True) -> Path:
    """Save a compiled program's artifact at `path` (sources re-rooted to the destination folder).

    A program compiled here from a .pipe file, or loaded from an artifact this machine already
    trusts, is recorded in the user's trust store (`pipec.trust`), so running the saved file needs no
    approval; a copy of an untrusted artifact stays untrusted. `remember=False` records nothing.
    """
    from . import trust
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    art = build_artifact(program, program.artifact.report, path.resolve().parent)
    text = art.dumps()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    if remember and program.trust.origin in ("source", "store") and not trust.record(text, path, "compiled"):
        import warnings
        warnings.warn(f"could not record {path} in the trust store {trust.store_dir()} (not writable, or writable by "
                      "others): running it will ask for approval (--trust)", stacklevel=2)
    return path


def embedded_sources(art: Artifact, path: Path):
    """The main source an artifact embeds and everything loaded from it (imports are read from the
    artifact too, never from the disk): `(main path, Loaded)`, checked as any .pipe file is."""
    from .dsl.loader import load as load_source
    from .registry import catalogue
    folder = Path(path).resolve().parent
    files = {(folder / rel).resolve(): text for rel, text in art.sources.files.items()}
    main = (folder / art.sources.main).resolve()
    if main not in files:
        raise ArtifactError(f"{path}: the main source '{art.sources.main}' is not embedded")

    def reader(p: Path) -> str:
        try:
            return files[p.resolve()]
        except KeyError:
            raise OSError(2, "not embedded in the artifact") from None

    return main, load_source(main, catalogue(), source=files[main], reader=reader)
