"""Pass: declare every name first, so that the order of declarations in a file does not matter."""
from __future__ import annotations

from .. import ast as A
from ..checked_program import PipelineInfo, SigInfo
from ..types import Type
from .state import CheckState, where


def collect_declarations(state: CheckState) -> None:
    """Every lm, record, signature, module, tool and pipeline into the program's tables by name (a
    name declared twice is an error, the first one stays), and every `default lm` line noted."""
    prog = state.program
    for it in state.items:
        if isinstance(it, A.LMDecl) and _declare(state, "lm", it.name, it.name_span):
            prog.lms[it.name] = it
        elif isinstance(it, A.Record) and _declare(state, "record", it.name, it.name_span):
            prog.records[it.name] = Type("record", name=it.name)  # filled by resolve_records
        elif isinstance(it, A.Signature) and _declare(state, "signature", it.name, it.name_span):
            prog.signatures[it.name] = SigInfo(it, [], [])
        elif isinstance(it, A.ModuleDecl) and _declare(state, "module", it.name, it.name_span):
            prog.modules[it.name] = it
        elif isinstance(it, A.ToolDecl) and _declare(state, "tool", it.name, it.name_span):
            prog.tools[it.name] = it
        elif isinstance(it, A.Pipeline) and _declare(state, "pipeline", it.name, it.name_span):
            prog.pipelines[it.name] = PipelineInfo(it, {}, {}, {}, None)
    defaults = [it for it in state.items if isinstance(it, A.DefaultLM)]
    state.has_default = bool(defaults)
    for extra in defaults[1:]:
        state.error(extra.span, "the default LM is set more than once",
                    f"first set at {where(defaults[0].span, extra.span)}",
                    "duplicate")


def _declare(state: CheckState, kind: str, name: str, span: A.Span) -> bool:
    if name in state.declared:
        prev_kind, prev = state.declared[name]
        state.error(span, f"duplicate name '{name}': already declared as {prev_kind} at {where(prev, span)}",
                    "rename one of them", "duplicate")
        return False
    state.declared[name] = (kind, span)
    return True
