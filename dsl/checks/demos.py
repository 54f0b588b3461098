"""A module's written demos and pins: `demos: [{field: value, ...}, ...]` and `pin: [instruction, demos]`.

Called by the modules pass (`check_module`) once a module's options have their types checked. Demos
are checked against the signature the module implements: every field known, every required field
given, every value of its field's type (enum values as strings or bare names, records as `{...}`,
lists as `[...]`); a kind's demo fields beyond the signature's (ChainOfThought's `reasoning`) come
from its `KindSpec.demo_fields`. Pinning what the file does not write is allowed and means the
default: `pin: [instruction]` alone keeps the signature's instruction, `pin: [demos]` alone keeps
no demos at all.
"""
from __future__ import annotations

from .. import ast as A
from ..catalogue import KindSpec
from ..checked_program import SigInfo
from ..diagnostics import closest, did_you_mean
from ..types import Type, show
from .state import CheckState, listing, where

PINNABLE = ("instruction", "demos")


def pin_names(value) -> list[str] | None:
    """The parts a `pin:` option's value names (bare names or strings, one or a list); None when the
    value is not of that shape.

    >>> pin_names([A.Ref("instruction"), "demos"]), pin_names(A.Ref("demos")), pin_names(3)
    (['instruction', 'demos'], ['demos'], None)
    """
    items = value if isinstance(value, list) else [value]
    names = [v.name if isinstance(v, A.Ref) else v for v in items]
    return names if all(isinstance(n, str) for n in names) else None


PART_OPTIONS = ("instruction", "demos", "nearest")


def _first_pin_and_demos(mod: A.ModuleDecl) -> list[A.Option]:
    """The first `pin:`, `demos:`, `nearest:` and `parts:` option of a module (a second is reported as
    given twice)."""
    first: dict[str, A.Option] = {}
    for opt in mod.options:
        if opt.name in ("pin", "demos", "nearest", "parts"):
            first.setdefault(opt.name, opt)
    return sorted(first.values(), key=mod.options.index)


def check_demos_and_pins(state: CheckState, mod: A.ModuleDecl, kind: KindSpec, sig: SigInfo | None) -> None:
    """Check the first `pin:`, `demos:`, `nearest:` and `parts:` of a module (a second one is already
    reported as given twice)."""
    written = _first_pin_and_demos(mod)
    for opt in written:
        if opt.name == "pin":
            _check_pin(state, mod, opt)
        elif opt.name == "parts":
            _check_parts(state, mod, opt)
        elif opt.name == "nearest":
            _check_nearest(state, mod, opt, any(o.name == "demos" for o in written))
        elif sig is not None:
            _check_demos(state, mod, opt, kind, sig)


def _check_nearest(state: CheckState, mod: A.ModuleDecl, opt: A.Option, has_demos: bool) -> None:
    if not has_demos:
        state.error(opt.span, f"option 'nearest' of module {mod.name} picks from its written demos, and it has none",
                    "write `demos: [{...}, ...]` for it to pick from, or leave `nearest` out", "bad-option")


def _check_parts(state: CheckState, mod: A.ModuleDecl, opt: A.Option) -> None:
    """`parts: {part: {instruction: "...", demos: [{...}], nearest: k}}`: the shape only. The parts a
    kind has, and their fields, exist once the kind builds its predictors: the program says then."""
    example = '`parts: {critique: {instruction: "...", demos: [{...}]}}`'
    if not isinstance(opt.value, A.RecordLit):
        state.error(opt.span, f"option 'parts' of module {mod.name} must be a record of parts", example, "bad-option")
        return
    for part in opt.value.fields:
        what = f"part '{part.name}' of module {mod.name}"
        if not isinstance(part.value, A.RecordLit):
            state.error(part.span, f"{what} must be a record of its options, not {_got(part.value)}", example,
                        "bad-option")
            continue
        given = {o.name for o in part.value.fields}
        for o in part.value.fields:
            v = o.value
            if o.name not in PART_OPTIONS:
                state.error(o.span, f"{what} has no option '{o.name}'",
                            did_you_mean(o.name, PART_OPTIONS) or "a part takes " + listing(list(PART_OPTIONS)),
                            "unknown-option")
            elif o.name == "instruction" and not isinstance(v, str):
                state.error(o.span, f"{what}: 'instruction' must be a string, not {_got(v)}", example, "bad-option")
            elif o.name == "demos" and not (isinstance(v, list) and all(isinstance(d, A.RecordLit) for d in v)):
                state.error(o.span, f"{what}: 'demos' must be a list of records", example, "bad-option")
            elif o.name == "nearest" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                state.error(o.span, f"{what}: 'nearest' must be a whole number of at least 1", example, "bad-option")
            elif o.name == "nearest" and "demos" not in given:
                state.error(o.span, f"{what}: 'nearest' picks from the part's written demos, and it has none",
                            "write `demos: [...]` in the part", "bad-option")


def check_common_demos_and_pins(state: CheckState, mod: A.ModuleDecl, kinds: list[tuple[str, KindSpec]],
                                sig: SigInfo) -> None:
    """A `one_of` module's common `pin:` and `demos:` (written after its signature) apply to every
    alternative, `kinds` (name and spec each, in order): a pin covers the predictors of each; demos go
    to each, so every alternative must take written demos, and of the same fields (a ChainOfThought
    demo gives `reasoning`, a Predict demo does not: such demos are written in each alternative)."""
    written = _first_pin_and_demos(mod)
    for opt in written:
        if opt.name == "pin":
            _check_pin(state, mod, opt)
            continue
        if opt.name == "parts":
            _check_parts(state, mod, opt)
            continue
        if opt.name == "nearest":
            _check_nearest(state, mod, opt, any(o.name == "demos" for o in written))
            continue
        none = [name for name, kind in kinds if kind.demo_fields is None]
        if none:
            state.error(opt.span, f"{none[0]}, an alternative of one_of module {mod.name}, takes no written demos",
                        "demos written after the signature go to every alternative; write them in the alternatives "
                        "that take them, like `Predict(demos: [...])`", "bad-option")
            continue
        shapes = {name: tuple(n for n, _, _ in kind.demo_fields) for name, kind in kinds}
        if len(set(shapes.values())) > 1:
            a = next(n for n, f in shapes.items() if f)       # shapes differ: at least one has extra fields
            b = next(n for n, f in shapes.items() if f != shapes[a])
            state.error(opt.span, f"the alternatives of one_of module {mod.name} take demos of different fields: "
                        f"a {a} demo gives {' and '.join(shapes[a])}, a {b} demo does not",
                        f"write the demos in each alternative, like `{a}(demos: [...])`", "bad-option")
            continue
        _check_demos(state, mod, opt, kinds[0][1], sig)


def _check_pin(state: CheckState, mod: A.ModuleDecl, opt: A.Option) -> None:
    names = pin_names(opt.value)
    if names is None:
        state.error(opt.span, f"option 'pin' of {mod.kind} module {mod.name} must name what to pin",
                    "write `pin: [instruction, demos]`, or one of them", "bad-option")
        return
    for i, name in enumerate(names):
        # The caret goes under this mention of the name (the option's own name `pin` comes first).
        nth = names[:i + 1].count(name) + (name == "pin")
        span = state.word_span(opt.span, name, nth)
        if name not in PINNABLE:
            state.error(span, f"module {mod.name} has no part '{name}' to pin",
                        did_you_mean(name, PINNABLE) or "a module pins its instruction, its demos, or both: "
                        "`pin: [instruction, demos]`", "bad-option")
        elif name in names[:i]:
            state.error(span, f"'{name}' is pinned twice in module {mod.name}", "name it once", "duplicate")


def _check_demos(state: CheckState, mod: A.ModuleDecl, opt: A.Option, kind: KindSpec, sig: SigInfo) -> None:
    if kind.demo_fields is None:
        state.error(opt.span, f"{mod.kind} module {mod.name} takes no written demos",
                    f"written demos go to a predictor that answers {mod.signature} from its inputs alone, and "
                    f"{mod.kind} has none; compiling gives its parts demos (`pin: [demos]` keeps them without any)",
                    "bad-option")
        return
    if not isinstance(opt.value, list):
        state.error(opt.span, f"option 'demos' of {mod.kind} module {mod.name} must be a list of demos",
                    "write `demos: [{" + ", ".join(f"{n}: ..." for n, _, _ in sig.inputs + sig.outputs) + "}, ...]`",
                    "bad-option")
        return
    fields = list(sig.inputs) + list(kind.demo_fields) + list(sig.outputs)
    extra = [n for n, _, _ in kind.demo_fields]
    writer = "its alternatives write" if mod.alternatives else f"{mod.kind} writes"
    shape = (f"a demo gives every input and output of signature {mod.signature}"
             + (f", and the {' and '.join(extra)} {writer} before the outputs" if extra else "")
             + " (optional fields may be left out)")
    for i, demo in enumerate(opt.value, 1):
        what = f"demo {i} of module {mod.name}"
        if not isinstance(demo, A.RecordLit):
            state.error(opt.span, f"{what} must be a record of field values, not {_got(demo)}",
                        "write it as `{" + ", ".join(f"{n}: ..." for n, _, _ in fields) + "}`", "bad-type")
            continue
        _check_record(state, demo, fields, what, shape)


def _check_record(state: CheckState, rec: A.RecordLit, fields: list[tuple[str, Type, str]], what: str,
                  shape: str) -> None:
    """One demo: each field known and given once, with a value of its type; every required field given."""
    types = {n: t for n, t, _ in fields}
    given: dict[str, A.Option] = {}
    suggested: set[str] = set()         # fields a misspelt one was taken for: not reported missing as well
    for entry in rec.fields:
        if entry.name in given:
            state.error(entry.span, f"{what} gives '{entry.name}' twice",
                        f"first given at {where(given[entry.name].span, entry.span)}", "duplicate")
            continue
        given[entry.name] = entry
        t = types.get(entry.name)
        if t is None:
            close = closest(entry.name, [n for n in types if n not in given])
            suggested.add(close or "")
            state.error(entry.span, f"{what} has no field '{entry.name}'",
                        f"did you mean '{close}'?" if close else
                        "its fields: " + listing([f"{n}: {show(ft)}" for n, ft, _ in fields]), "unknown-name")
            continue
        problem = value_problem(entry.value, t)
        if problem is not None:
            message, hint = problem
            state.error(entry.span, f"{what}: '{entry.name}' {message}", hint, "bad-type")
    missing = [n for n, t, _ in fields if n not in given and not t.optional and n not in suggested]
    if missing:
        state.error(rec.span, f"{what} lacks {listing([repr(n) for n in missing])}", shape, "missing-field")


def value_problem(value, t: Type) -> tuple[str, str] | None:
    """What is wrong with a written value for a field of type `t` (message and hint), or None.
    Every problem comes with a hint: the likely fix, else how a value of that type is written.

    >>> from pipec.dsl.types import INT
    >>> value_problem(3, INT) is None, value_problem("3", INT)
    (True, ('must be a whole number, not a string', 'numbers are written without quotes: 3'))
    >>> value_problem(A.Ref("book_table"), Type("enum", values=("book_restaurant", "play_music")))[0]
    "must be one of book_restaurant, play_music, not 'book_table'"
    """
    problem = _problem(value, t)
    if problem is None or problem[1]:
        return problem
    return problem[0], f"a value of type {show(t.required())} is written like {example(t)}"


def _problem(value, t: Type) -> tuple[str, str] | None:
    """`value_problem` before its fallback hint: "" where no likely fix is known."""
    k = t.kind
    if k == "any":
        return None
    if k == "enum":
        name = value.name if isinstance(value, A.Ref) else value if isinstance(value, str) else None
        if name is not None and name in t.values:
            return None
        shown = f"'{name}'" if name is not None else _got(value)
        return (f"must be one of {', '.join(t.values)}, not {shown}",
                (did_you_mean(name, t.values) if name is not None else "") or
                f"write one of them, as a name or a string: {t.values[0]} or \"{t.values[0]}\"")
    if k == "str":
        if isinstance(value, str):
            return None
        hint = (f'strings are quoted: write "{value.name}"' if isinstance(value, A.Ref) else
                f'write it as text: "{value}"' if isinstance(value, (int, float)) and not isinstance(value, bool)
                else "")
        return f"must be a string, not {_got(value)}", hint
    if k in ("int", "float"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and (k == "float" or isinstance(value, int)):
            return None
        hint = (f"numbers are written without quotes: {value.strip()}" if isinstance(value, str) and _numeric(value)
                else "")
        return f"must be {'a whole number' if k == 'int' else 'a number'}, not {_got(value)}", hint
    if k == "bool":
        if isinstance(value, bool):
            return None
        hint = f"write {value.lower()} without quotes" if isinstance(value, str) and value.lower() in ("true", "false") \
            else ""
        return f"must be true or false, not {_got(value)}", hint
    if k == "list":
        if not isinstance(value, list):
            return f"must be a list ({show(t)}), not {_got(value)}", "write it in brackets: [a, b]"
        for j, item in enumerate(value, 1):
            problem = value_problem(item, t.arg) if t.arg is not None else None
            if problem is not None:
                return f"item {j} {problem[0]}", problem[1]
        return None
    if k == "record":
        if not isinstance(value, A.RecordLit):
            return (f"must be a {t.name or 'record'} record, not {_got(value)}",
                    "write it as `{" + ", ".join(f"{n}: ..." for n, _, _ in t.fields) + "}`")
        names = [e.name for e in value.fields]
        for e in value.fields:
            ft = t.field(e.name)
            if ft is None:
                return (f"has no field '{e.name}' ({t.name or 'the record'} has " + ", ".join(n for n, _, _ in t.fields)
                        + ")", did_you_mean(e.name, [n for n, _, _ in t.fields]))
            problem = value_problem(e.value, ft)
            if problem is not None:
                return f"field '{e.name}' {problem[0]}", problem[1]
        missing = [n for n, ft, _ in t.fields if n not in names and not ft.optional]
        if missing:
            return f"lacks {', '.join(repr(n) for n in missing)}", f"{t.name or 'the record'} needs every field not marked `?`"
        return None
    return None


def example(t: Type) -> str:
    """How a value of type `t` is written in a demo.

    >>> example(Type("list", arg=Type("enum", values=("a", "b")))), example(Type("float"))
    ('[a]', '0.5')
    """
    k = t.kind
    if k == "enum":
        return t.values[0] if t.values else "name"
    if k == "list":
        return f"[{example(t.arg) if t.arg is not None else '...'}]"
    if k == "record":
        return "{" + ", ".join(f"{n}: {example(ft)}" for n, ft, _ in t.fields) + "}"
    return {"str": '"text"', "int": "3", "float": "0.5", "bool": "true"}.get(k, "a value")


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _got(value) -> str:
    """How a message names a written value's shape."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, A.Ref):
        return f"the name '{value.name}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, A.RecordLit):
        return "a record"
    return "this value"
