"""pipec.dsl: the .pipe language front end (parser, AST, types, checks, diagnostics).

It depends on lark alone and knows nothing of the runtime; the compiler hands it a `Catalogue` of
module kinds, metrics and optimizers to check against.

>>> from pipec.dsl import parse
>>> file, diagnostics = parse('signature S { in q: str out a: str }')
>>> [type(i).__name__ for i in file.items], diagnostics
(['Signature'], [])
"""
from __future__ import annotations

# Names load on first use: the command line's redaction (`pipec.dsl.redaction`, standard library
# only) is imported by every command, `pipec --help` included, and must not pull in lark.
_LAZY = {
    "Catalogue": "catalogue", "FunctionSpec": "catalogue", "KindSpec": "catalogue", "OptionSpec": "catalogue",
    "CheckedProgram": "checked_program", "check": "checker", "Diagnostic": "diagnostics", "PipeError": "diagnostics",
    "render_all": "diagnostics", "Loaded": "loader", "load": "loader", "parse": "parser", "Type": "types",
    "assignable": "types", "show": "types",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
