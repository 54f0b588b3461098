"""Renaming a symbol: which names may be renamed, to what, and the edits (every occurrence of it in the
programs of the open files, see `pipec.lsp_index`). Keywords and built-in names are refused."""
from __future__ import annotations

import re

from .dsl import ast as A
from .lsp_index import RENAMABLE, Occurrence, SymbolIndex

# The grammar's words (dsl/grammar.lark): a name cannot be one of them.
KEYWORDS = frozenset({"compile", "contains", "default", "enum", "false", "import", "in", "lm", "map", "max", "module",
                      "one_of", "ordered", "out", "pipeline", "record", "return", "signature", "test", "tool", "true"})
BUILTIN_TYPES = frozenset({"str", "int", "float", "bool", "list"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WHAT = {"kind": "module kind", "kindoption": "option", "extra": "output its kind adds", "type": "type",
         "lmoption": "lm option", "setting": "compile setting", "optimizer": "optimizer",
         "optoption": "optimizer option", "metric": "metric", "metricoption": "metric option", "import": "import path"}


class RenameRefused(ValueError):
    """Why the name under the cursor cannot be renamed, or not to the name asked for."""


def renamable(occurrence: Occurrence | None, word: str) -> Occurrence:
    """The occurrence to rename, or `RenameRefused` saying why not.

    >>> renamable(None, "signature")
    Traceback (most recent call last):
    ...
    pipec.lsp_rename.RenameRefused: 'signature' is a keyword and cannot be renamed
    >>> renamable(Occurrence(A.Span("f", 1, 1, 1, 8), ("kind", "Predict")), "Predict")
    Traceback (most recent call last):
    ...
    pipec.lsp_rename.RenameRefused: 'Predict' is a built-in module kind and cannot be renamed
    """
    if occurrence is None:
        if word in KEYWORDS:
            raise RenameRefused(f"'{word}' is a keyword and cannot be renamed")
        if word in BUILTIN_TYPES or word == "python":
            raise RenameRefused(f"'{word}' is built in and cannot be renamed")
        raise RenameRefused(f"nothing to rename here{f': {word!r} names no declaration' if word else ''}")
    if occurrence.key[0] not in RENAMABLE:
        what = _WHAT.get(occurrence.key[0], "name")
        raise RenameRefused(f"'{word}' is a built-in {what} and cannot be renamed")
    return occurrence


def check_new_name(index: SymbolIndex, key: tuple, new: str) -> None:
    """Refuse a new name that is not a name, is a keyword or built-in type, or is taken where the
    symbol lives (another declaration, another field of its owner, another value of its pipeline).

    >>> from pipec.dsl import Catalogue, check, parse
    >>> f, _ = parse('signature S { in q: str out a: str }\\nrecord R { x: str }', "m.pipe")
    >>> index = SymbolIndex(check([f], Catalogue())[0], Catalogue(), {"m.pipe": f.source})
    >>> for new in ("R", "2x", "in", "T"):
    ...     try: check_new_name(index, ("decl", "m.pipe", "S"), new); print(new, "ok")
    ...     except RenameRefused as err: print(new, err)
    R 'R' is already declared (record R)
    2x '2x' is not a name: a letter or _ first, then letters, digits and _
    in 'in' is a keyword
    T ok
    """
    if not _NAME.match(new):
        raise RenameRefused(f"'{new}' is not a name: a letter or _ first, then letters, digits and _")
    if new in KEYWORDS:
        raise RenameRefused(f"'{new}' is a keyword")
    if new in BUILTIN_TYPES:
        raise RenameRefused(f"'{new}' is a built-in type")
    tag = key[0]
    if tag == "decl":
        other = index.decl(new)
        if other is not None:
            what = type(other).__name__.removesuffix("Decl").lower()
            raise RenameRefused(f"'{new}' is already declared ({what} {new})")
    elif tag == "field":
        if index.owned_field(key[2], new) is not None:
            raise RenameRefused(f"{key[2]} already has a field '{new}'")
    elif tag in ("param", "var", "out"):
        pipe = index.decl(key[2])
        taken = set()
        if isinstance(pipe, A.Pipeline):
            groups = {"out": [o.name for o in pipe.outputs]}
            groups["value"] = [p.name for p in pipe.params] + [s.name for s in pipe.body if isinstance(s, A.Assign)]
            taken = set(groups["out" if tag == "out" else "value"])
        if new in taken:
            raise RenameRefused(f"pipeline {key[2]} already has {'an output' if tag == 'out' else 'a value'} '{new}'")


def edits(occurrences: list[Occurrence]) -> dict[str, list[A.Span]]:
    """The spans to replace, by file, each once, in order.

    >>> s1, s2 = A.Span("f", 3, 1, 3, 2), A.Span("f", 1, 5, 1, 6)
    >>> edits([Occurrence(s1, ("var",)), Occurrence(s2, ("var",)), Occurrence(s1, ("var",))])
    {'f': [Span(file='f', line=1, col=5, end_line=1, end_col=6), Span(file='f', line=3, col=1, end_line=3, end_col=2)]}
    """
    out: dict[str, list[A.Span]] = {}
    for o in occurrences:
        spans = out.setdefault(o.span.file, [])
        if o.span not in spans:
            spans.append(o.span)
    for spans in out.values():
        spans.sort(key=lambda s: (s.line, s.col))
    return out
