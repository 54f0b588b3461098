"""pipec.dsl: the .pipe language front end (parser, AST, types, checks, diagnostics).

It depends on lark alone and knows nothing of the runtime; the compiler hands it a `Catalogue` of
module kinds, metrics and optimizers to check against.

>>> from pipec.dsl import parse
>>> file, diagnostics = parse('signature S { in q: str out a: str }')
>>> [type(i).__name__ for i in file.items], diagnostics
(['Signature'], [])
"""
from .catalogue import Catalogue, FunctionSpec, KindSpec, OptionSpec
from .checker import Program, check
from .diagnostics import Diagnostic, PipeError, render_all
from .loader import Loaded, load
from .parser import parse
from .types import Type, assignable, show

__all__ = ["Catalogue", "FunctionSpec", "KindSpec", "OptionSpec", "Program", "check", "Diagnostic",
           "PipeError", "render_all", "Loaded", "load", "parse", "Type", "assignable", "show"]
