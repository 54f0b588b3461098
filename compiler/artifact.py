"""The compiled artifact: a versioned JSON document with everything needed to run a tuned pipeline.

It embeds the .pipe sources (so it runs without them and a diff shows what changed), each
predictor's instruction and demos, the LM ids and options, and the compile report. It never holds
an API key: LM options name the environment variable (`api_key_env`), never its value.
The schema is validated with pydantic on load; an artifact from a newer or unknown format version
is refused with a message saying so.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from .fingerprints import fingerprint

FORMAT = "pipec-compiled"
FORMAT_VERSION = 2        # 2: a top-level fingerprint over every field (1: over the sources only)


class ArtifactError(Exception):
    """An artifact that cannot be used: unreadable, tampered, or from an unsupported version."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KnnState(_Model):
    k: int = Field(ge=1)
    fields: list[str]
    pool: list[dict[str, Any]]


class PredictorState(_Model):
    """A predictor's tuned parameters: its instruction, fixed demos, or a pool for per-input demos."""

    instruction: str
    demos: list[dict[str, Any]] = []
    knn: KnnState | None = None


class Choice(_Model):
    """In a parameter set, under a one_of module's name: the alternative the module runs (its label,
    `ChainOfThought`). A module without one runs its first alternative."""

    alternative: str


class Trial(_Model):
    number: int
    score: float
    full: bool = True                 # scored on the whole valset (not a minibatch)
    note: str = ""
    calls_per_row: float | None = None    # the candidate's measured LM requests per row (cache hits count)
    tokens_per_row: float | None = None   # and tokens; both left out of the JSON when not measured

    @model_serializer(mode="wrap")
    def _without_unmeasured_cost(self, handler):
        # Trials of artifacts written before costs were measured have neither: their fingerprints hold.
        out = handler(self)
        for key in ("calls_per_row", "tokens_per_row"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


class LineageNode(_Model):
    """One candidate of a search that evolves candidates from one another (a reflective optimizer's
    pool): where it came from and how it scored. A root has no parent; a reflection has one and
    names the predictor whose instruction it rewrote (and the new instruction); a merge has two."""

    id: int
    parents: list[int] = []
    how: str = "root"                 # root, reflection, merge
    predictor: str | None = None
    instruction: str | None = None
    note: str = ""                    # what a root is ("the uncompiled program", "labeled demos ...")
    minibatch: list[float] = []       # [the parent's, its own] mean score on the rows it was judged on
    score: float                      # its mean valset score
    leads: int = 0                    # valset rows it is best on at the end (0: off the frontier)
    trial: int | None = None          # the report trial that scored it on the valset
    chosen: bool = False              # the candidate the optimizer returned


class Report(_Model):
    """What a compile did. Everything here is deterministic for a given seed and LM cache."""

    pipeline: str
    optimizer: str
    options: dict[str, Any] = {}
    metric: str
    seed: int
    budget: int | None = None
    budget_usd: float | None = None   # the dollar bound, when one was given (left out of the JSON otherwise)
    trainset: int
    valset: int
    baseline_score: float
    compiled_score: float
    lm_requests: int = 0              # LM calls plus cache hits: the same whether or not the cache was warm
    tokens: int = 0
    cost: float = 0.0
    trials: list[Trial] = []
    fingerprint: str
    lms: dict[str, str] = {}          # role -> LM id (task, teacher, proposer)
    lineage: list[LineageNode] = []   # the candidates of an evolutionary search (left out of the JSON when none)
    max_calls_per_row: int | None = None  # the compile's bound on one input's LM calls (left out when unset)

    @model_serializer(mode="wrap")
    def _without_unset_dollars(self, handler):
        # Artifacts written before dollar budgets existed have no budget_usd: leaving it out when it
        # is None keeps their content fingerprints (computed over this dump) valid.
        out = handler(self)
        if out.get("budget_usd") is None:
            out.pop("budget_usd", None)
        if not out.get("lineage"):
            out.pop("lineage", None)      # likewise for artifacts written before lineages existed
        if out.get("max_calls_per_row") is None:
            out.pop("max_calls_per_row", None)    # and before call bounds per row
        return out

    def summary(self) -> str:
        lift = self.compiled_score - self.baseline_score
        return (f"{self.pipeline}: {self.optimizer} (seed {self.seed}) on {self.trainset} train / {self.valset} val rows\n"
                f"  metric {self.metric}: baseline {self.baseline_score:.3f} -> compiled {self.compiled_score:.3f} "
                f"({lift:+.3f})\n"
                f"  {self.lm_requests} LM requests, {self.tokens} tokens, ${self.cost:.4f}, {len(self.trials)} trials")


class LMState(_Model):
    model: str
    options: dict[str, Any] = {}


class Sources(_Model):
    main: str                          # the main .pipe file, relative to the artifact's folder
    files: dict[str, str]              # relative path -> text, imports included
    fingerprint: str


class Artifact(_Model):
    format: Literal["pipec-compiled"] = FORMAT
    format_version: int
    pipec_version: str
    pipeline: str
    sources: Sources
    graph: dict[str, Any]
    lms: dict[str, LMState]
    predictors: dict[str, PredictorState]
    ensemble: list[dict[str, PredictorState]] = []
    strategies: dict[str, str] = {}    # the alternative the compile chose per one_of module (left out when none)
    report: Report
    fingerprint: str = ""              # sha256 over every other field (format version 2 on)

    @model_serializer(mode="wrap")
    def _without_empty_strategies(self, handler):
        # Artifacts of programs without one_of modules, and all written before them, have no
        # `strategies`: leaving it out when empty keeps their fingerprints valid.
        out = handler(self)
        if not out.get("strategies"):
            out.pop("strategies", None)
        return out

    def content_fingerprint(self) -> str:
        """sha256 over everything that changes what the artifact does, the metric included: every
        field but this fingerprint. It detects damage and hand edits; it is not a signature (anyone
        can recompute it), which is why trust lives in the user's trust store (see `pipec.trust`)."""
        doc = self.model_dump(mode="json")
        doc.pop("fingerprint")
        return fingerprint(doc)

    def sealed(self) -> "Artifact":
        """This artifact with its fingerprint set."""
        return self.model_copy(update={"fingerprint": self.content_fingerprint()})

    def dumps(self) -> str:
        """Canonical JSON: sorted keys, stable across runs, so equal artifacts are equal bytes."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_artifact(path: str | Path) -> Artifact:
    """Load and validate an artifact; raise ArtifactError naming the file and the problem."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ArtifactError(f"{path}: cannot read: {err.strerror or err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: not a JSON document (truncated or damaged?): {err}") from None
    except RecursionError:
        raise ArtifactError(f"{path}: not a JSON document pipec can read (nested too deeply)") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a pipec compiled artifact (no \"format\": \"{FORMAT}\")")
    version = raw.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path}: the artifact has no format version")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format version {version} is newer than this pipec "
                            f"({raw.get('pipec_version', '?')} wrote it; this pipec reads up to version {FORMAT_VERSION}); "
                            "upgrade pipec")
    if version < 1:
        raise ArtifactError(f"{path}: unknown artifact format version {version}")
    try:
        art = Artifact.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ArtifactError(f"{path}: invalid artifact at '{where}': {first['msg']} "
                            f"({err.error_count()} problem{'s' * (err.error_count() != 1)})") from None
    expected = fingerprint(art.sources.main, art.sources.files)
    if art.sources.fingerprint != expected:
        raise ArtifactError(f"{path}: the embedded sources do not match their fingerprint (was the file edited by hand?)")
    if version >= 2 and art.fingerprint != art.content_fingerprint():
        raise ArtifactError(f"{path}: the artifact does not match its fingerprint (was the file edited by hand?)")
    return art
