"""Static checks over parsed .pipe files: names, calls, types, cycles, returns, options.

`check` never stops at the first problem: it runs every pass of `PASSES` over one `CheckState` and
returns all diagnostics, together with the checked program (declarations by name, resolved types)
that lowering builds on. Each pass lives in `pipec.dsl.checks`, one module each.
"""
from __future__ import annotations

from typing import Callable

from . import ast as A
from .catalogue import Catalogue
from .checked_program import CheckedProgram, PipelineInfo, SigInfo
from .checks.compile_blocks import check_compile_block
from .checks.declarations import collect_declarations
from .checks.lms import check_lm, choose_default_lm, default_to_the_only_lm
from .checks.modules import check_module, check_module_references
from .checks.pipelines import check_pipeline
from .checks.records import resolve_records
from .checks.signatures import check_signature
from .checks.state import CheckState
from .checks.tests import check_test_block
from .checks.tools import check_tool
from .diagnostics import Diagnostic
from .gcpause import gc_paused


__all__ = ["PASSES", "CheckState", "CheckedProgram", "PipelineInfo", "SigInfo", "check",
           "check_passes", "each_declaration"]


def _pass_name(check: Callable) -> str:
    """The pass a check belongs to: its module in `pipec.dsl.checks` ("lms", "pipelines")."""
    return check.__module__.rpartition(".")[2]


def each_declaration(checks: dict[type, Callable]) -> Callable[[CheckState], None]:
    """A pass that hands every declaration, in source order, to the check for its kind of node.

    The checks given together share one walk, so their diagnostics come in the order of the file
    rather than one kind after the other; each diagnostic still records the pass (module) of the
    check that found it.
    """
    named = {kind: (check, _pass_name(check)) for kind, check in checks.items()}

    def walk(state: CheckState) -> None:
        for item in state.items:
            entry = named.get(type(item))
            if entry is not None:
                state.check_pass = entry[1]
                entry[0](state, item)

    walk.__name__ = walk.__qualname__ = "each_declaration(" + ", ".join(c.__name__ for c in checks.values()) + ")"
    walk.checks = tuple(checks.values())
    return walk


def check_passes(run: Callable[[CheckState], None]) -> tuple[str, ...]:
    """The passes a member of `PASSES` runs, by module in `pipec.dsl.checks`: its own, or for an
    `each_declaration` walk, those of the checks it combines. A diagnostic's `origin` is one of them.

    >>> [check_passes(run) for run in PASSES][2:4]
    [('lms', 'signatures'), ('modules', 'tools')]
    """
    return tuple(dict.fromkeys(_pass_name(c) for c in getattr(run, "checks", (run,))))


# Each pass reads what the ones before it filled in: names first, so the order of a file does not
# matter; records before any type is resolved; signatures before the modules that implement them;
# modules and tools before the pipelines that call them; pipelines before the compile and test blocks.
PASSES: tuple[Callable[[CheckState], None], ...] = (
    collect_declarations,                              # every name into the program's tables; duplicates
    resolve_records,                                   # record fields, nested records, record cycles
    each_declaration({A.LMDecl: check_lm,              # lm ids, options, no keys in the file
                      A.DefaultLM: choose_default_lm,  # `default lm = NAME` names an lm
                      A.Signature: check_signature}),  # field types; at least one output
    each_declaration({A.ModuleDecl: check_module,      # kind, signature, lm and options of each module
                      A.ToolDecl: check_tool}),        # loader, target, parameter and result types
    check_module_references,                           # modules naming modules: kinds' own checks, cycles
    each_declaration({A.Pipeline: check_pipeline}),    # inputs, assignments, expressions, calls, return
    each_declaration({A.CompileBlock: check_compile_block,   # settings, metric, optimizer, data files
                      A.TestBlock: check_test_block}),       # cases: pipeline calls and assertions
    default_to_the_only_lm,                            # one lm and no `default lm`: that lm
)


@gc_paused()
def check(files: list[A.File], catalogue: Catalogue) -> tuple[CheckedProgram, list[Diagnostic]]:
    """Check parsed files (the main file first, then its imports) and resolve names and types.

    >>> from pipec.dsl import Catalogue, check, parse
    >>> f, _ = parse('signature S { in q: str out a: str } module m = Predict(S) '
    ...              'pipeline p(q: str) -> (a) { r = mm(q: q) return a = r.a }', "x.pipe")
    >>> _, diags = check([f], Catalogue())
    >>> [d.message for d in diags][:1]
    ["unknown module kind 'Predict'"]
    """
    state = CheckState(files, catalogue)
    try:
        for run in PASSES:
            state.check_pass = check_passes(run)[0]     # what its diagnostics record as their origin
            run(state)
    except RecursionError:
        # Thousands of nested records or chained values; a diagnostic beats a traceback. Its origin
        # is the pass that was running.
        span = A.Span(files[0].path if files else "<string>", 1, 1, 1, 2)
        state.error(span, "this program nests declarations too deeply to check",
                    "records containing records, or values computed from values, thousands deep", "too-deep")
    return state.program, state.diagnostics
