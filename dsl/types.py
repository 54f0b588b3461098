"""The .pipe type system: resolved types, assignability, and how types read in messages."""
from __future__ import annotations

from dataclasses import dataclass

SCALARS = ("str", "int", "float", "bool")


@dataclass(frozen=True, slots=True)
class Type:
    """A resolved type.

    `kind` is one of str int float bool list enum record any. Records carry their fields in order;
    `optional` marks `T?` (the value may be missing or null).

    >>> show(Type("list", arg=Type("str")))
    'list[str]'
    """

    kind: str
    arg: Type | None = None
    values: tuple[str, ...] = ()
    name: str = ""
    fields: tuple[tuple[str, Type, str], ...] = ()   # (name, type, description) for records
    optional: bool = False

    def field(self, name: str) -> Type | None:
        for fname, ftype, _ in self.fields:
            if fname == name:
                return ftype
        return None

    def required(self) -> Type:
        """The same type without `?`."""
        if not self.optional:
            return self
        return Type(self.kind, self.arg, self.values, self.name, self.fields, False)


STR, INT, FLOAT, BOOL, ANY = Type("str"), Type("int"), Type("float"), Type("bool"), Type("any")


def show(t: Type) -> str:
    """How a type reads in a diagnostic.

    >>> show(Type("enum", values=("a", "b"), optional=True))
    'enum(a, b)?'
    """
    if t.kind == "list":
        text = f"list[{show(t.arg) if t.arg else 'any'}]"
    elif t.kind == "enum":
        text = "enum(" + ", ".join(t.values) + ")"
    elif t.kind == "record":
        text = t.name or "record"
    else:
        text = t.kind
    return text + ("?" if t.optional else "")


def assignable(src: Type, dst: Type) -> bool:
    """Whether a value of type `src` may flow into a slot of type `dst`.

    Widening is allowed (int→float, enum→str, any scalar→str since prompts render it as text,
    T→T?), and so is T?→T (a missing value renders empty; the runtime validates required outputs).

    >>> assignable(INT, FLOAT), assignable(STR, INT), assignable(Type("list", arg=INT), Type("list", arg=FLOAT))
    (True, False, True)
    """
    if src.kind == "any" or dst.kind == "any":
        return True
    s, d = src.required(), dst.required()
    if d.kind == "str":
        return s.kind in ("str", "int", "float", "bool", "enum")
    if d.kind == "float":
        return s.kind in ("int", "float")
    if d.kind in ("int", "bool"):
        return s.kind == d.kind
    if d.kind == "enum":
        return s.kind == "enum" and set(s.values) <= set(d.values)
    if d.kind == "list":
        return s.kind == "list" and (s.arg is None or d.arg is None or assignable(s.arg, d.arg))
    if d.kind == "record":
        if s.kind != "record":
            return False
        if s.name and s.name == d.name:
            return True
        return all(s.field(n) is not None and assignable(s.field(n), ft) for n, ft, _ in d.fields if not ft.optional)
    return False


def unify(a: Type, b: Type) -> Type | None:
    """The common type of two values (list items, concatenation), or None if there is none."""
    if a.kind == "any":
        return b
    if b.kind == "any":
        return a
    if assignable(a, b):
        return b
    if assignable(b, a):
        return a
    if a.kind in SCALARS + ("enum",) and b.kind in SCALARS + ("enum",):
        return STR if "str" in (a.kind, b.kind) or a.kind == b.kind == "enum" else None
    return None
