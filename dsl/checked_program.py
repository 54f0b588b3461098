"""What `check` returns: the checked program, every declaration by name with its resolved types.

Lowering and the runtime read it; a module kind's `validate` hook (`KindSpec.validate`) is handed it
while the program is being checked. It is not the runtime's `pipec.Program`, which runs a checked
program.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import ast as A
from .catalogue import Catalogue
from .types import Type


@dataclass(slots=True)
class SigInfo:
    decl: A.Signature
    inputs: list[tuple[str, Type, str]]
    outputs: list[tuple[str, Type, str]]


@dataclass(slots=True)
class PipelineInfo:
    decl: A.Pipeline
    params: dict[str, Type]
    outputs: dict[str, Type]
    vars: dict[str, Type]
    ret: A.Return | None


@dataclass(slots=True)
class CheckedProgram:
    """The checked program: every declaration by name, with resolved types."""

    files: list[A.File]
    lms: dict[str, A.LMDecl] = field(default_factory=dict)
    default_lm: str | None = None
    records: dict[str, Type] = field(default_factory=dict)
    signatures: dict[str, SigInfo] = field(default_factory=dict)
    modules: dict[str, A.ModuleDecl] = field(default_factory=dict)
    tools: dict[str, A.ToolDecl] = field(default_factory=dict)
    tool_returns: dict[str, Type] = field(default_factory=dict)
    tool_params: dict[str, list[tuple[str, Type, bool]]] = field(default_factory=dict)   # (name, type, required)
    pipelines: dict[str, PipelineInfo] = field(default_factory=dict)
    compiles: list[A.CompileBlock] = field(default_factory=list)
    tests: list[A.TestBlock] = field(default_factory=list)

    @property
    def main(self) -> A.File:
        return self.files[0]

    def lms_tried(self, name: str) -> list[tuple[str, tuple[str, ...]]]:
        """The lms a request to lm `name` may go to, in the order they are tried, each with the
        fallbacks it is reached through (from `name` down): `name` itself when it declares a model; for
        a fallback, the lms it names, a fallback among them replaced by its own, each lm once (at its
        first place), a chain that comes back skipped (a check error).

        >>> S = None
        >>> p = CheckedProgram([], lms={"gpt": A.LMDecl(S, "gpt", "openai/gpt-4o-mini", [], S),
        ...     "local": A.LMDecl(S, "local", "local/smollm2", [], S),
        ...     "a": A.LMDecl(S, "a", "", [], S, fallbacks=["gpt", "local"]),
        ...     "b": A.LMDecl(S, "b", "", [], S, fallbacks=["a", "gpt"])})
        >>> p.lms_tried("b")
        [('gpt', ('b', 'a')), ('local', ('b', 'a'))]
        >>> p.lms_tried("gpt")
        [('gpt', ())]
        """
        out: dict[str, tuple[str, ...]] = {}
        path: list[str] = []

        def walk(lm: str) -> None:
            decl = self.lms.get(lm)
            if decl is None or not decl.fallbacks:
                out.setdefault(lm, tuple(path))
                return
            if lm in path:
                return
            path.append(lm)
            for member in decl.fallbacks:
                walk(member)
            path.pop()
        walk(name)
        return list(out.items())

    def module_outputs(self, module: str, catalogue: Catalogue) -> list[tuple[str, Type, str]]:
        """Fields a call of `module` returns: its signature's outputs plus what its kind adds (for a
        `one_of` module, what every alternative adds: a pipeline may read only what the chosen one
        surely returns)."""
        decl = self.modules[module]
        sig = self.signatures.get(decl.signature)
        kinds = [catalogue.kinds.get(v.kind) for _, v in decl.variants()]
        extra = list(kinds[0].extra_outputs) if all(kinds) else []
        for kind in kinds[1:]:
            extra = [f for f in extra if f[0] in {n for n, _, _ in kind.extra_outputs}]
        return extra + (sig.outputs if sig else [])
