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

    def module_outputs(self, module: str, catalogue: Catalogue) -> list[tuple[str, Type, str]]:
        """Fields a call of `module` returns: its signature's outputs plus what its kind adds."""
        decl = self.modules[module]
        sig = self.signatures.get(decl.signature)
        kind = catalogue.kinds.get(decl.kind)
        extra = list(kind.extra_outputs) if kind else []
        return extra + (sig.outputs if sig else [])
