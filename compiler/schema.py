"""JSON schemas for module replies, built from .pipe types."""
from __future__ import annotations

from .dsl.types import Type


def type_schema(t: Type) -> dict:
    """The JSON schema of one value.

    >>> type_schema(Type("list", arg=Type("int")))
    {'type': 'array', 'items': {'type': 'integer'}}
    """
    k = t.kind
    if k == "str":
        s = {"type": "string"}
    elif k == "int":
        s = {"type": "integer"}
    elif k == "float":
        s = {"type": "number"}
    elif k == "bool":
        s = {"type": "boolean"}
    elif k == "enum":
        s = {"type": "string", "enum": list(t.values)}
    elif k == "list":
        s = {"type": "array", "items": type_schema(t.arg) if t.arg and t.arg.kind != "any" else {}}
    elif k == "record":
        s = object_schema([(n, ft) for n, ft, _ in t.fields])
    else:
        s = {}
    return s


def object_schema(fields: list[tuple[str, Type]]) -> dict:
    """The schema of a reply object whose keys are `fields`, in order; optional fields may be omitted."""
    return {
        "type": "object",
        "properties": {name: type_schema(t) for name, t in fields},
        "required": [name for name, t in fields if not t.optional],
    }
