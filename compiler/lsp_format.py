"""Formatting a buffer as `pipec fmt` formats a file (`pipec.dsl.format`), as edits of the lines that
change: an editor keeps the cursor and folds of the lines left alone."""
from __future__ import annotations

import difflib

from .lsp_text import Range, SourceText


def format_edits(text: str, path: str = "<string>") -> list[tuple[Range, str]]:
    """The edits that turn `text` into its canonical layout, one per run of changed lines, as
    (0-based range, new text); none when it is formatted already. Raises
    `pipec.dsl.format.FormatError` when the text does not parse.

    >>> format_edits('lm a = "local/smollm2"\\nsignature S{in q:str out a:str}\\n')
    [((1, 0, 2, 0), 'signature S {\\n    in  q: str\\n    out a: str\\n}\\n')]
    >>> format_edits('default lm = a\\n')
    []
    """
    from .dsl.format import format_source
    new = format_source(text, path)
    if new == text:
        return []
    old_lines, new_lines = _lines(text), _lines(new)
    end_of_text = SourceText(text).position(len(text))
    edits = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        start = (i1, 0) if i1 < len(old_lines) else end_of_text
        end = (i2, 0) if i2 < len(old_lines) else end_of_text
        edits.append(((*start, *end), "".join(new_lines[j1:j2])))
    return edits


def _lines(text: str) -> list[str]:
    """Lines with their "\\n" (the last one without, when the text does not end with one).

    >>> _lines("a\\nb"), _lines("a\\n"), _lines("")
    (['a\\n', 'b'], ['a\\n'], [])
    """
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
