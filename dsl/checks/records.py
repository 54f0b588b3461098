"""Pass: resolve every record's field types, records inside records included, and refuse cycles."""
from __future__ import annotations

from .. import ast as A
from ..types import ANY, Type
from .state import CheckState


def resolve_records(state: CheckState) -> None:
    """Fill in the fields of each record `collect_declarations` declared. A record may contain
    another declared later in the file, under any depth of lists, but never itself."""
    prog = state.program
    by_name = {r.name: r for r in state.items if isinstance(r, A.Record) and prog.records.get(r.name) is not None}
    status: dict[str, str] = {}

    def build(name: str, chain: list[str]) -> Type:
        if status.get(name) == "done":
            return prog.records[name]
        if status.get(name) == "busy":
            r = by_name[chain[0]]
            state.error(r.name_span, "record cycle: " + " -> ".join(chain + [name]),
                        "a record cannot contain itself, not even through a list or `?`; "
                        "split the nested part into its own record", "cycle")
            return ANY
        status[name] = "busy"
        rec = by_name[name]
        fields, seen = [], set()
        for f in rec.fields:
            if f.name in seen:
                state.error(f.span, f"duplicate field '{f.name}' in record {name}", "", "duplicate")
            seen.add(f.name)
            ft = _field_type(state, f.type, chain + [name], build)
            fields.append((f.name, ft, f.description))
        prog.records[name] = Type("record", name=name, fields=tuple(fields))
        status[name] = "done"
        return prog.records[name]

    for name in by_name:
        build(name, [])


def _field_type(state: CheckState, ref: A.TypeRef, chain, build) -> Type:
    if ref.name in state.program.records and ref.arg is None:
        t = build(ref.name, chain)
        return Type(t.kind, t.arg, t.values, t.name, t.fields, ref.optional)
    if ref.name == "list" and ref.arg is not None:     # a record may sit under any depth of lists
        inner = _field_type(state, ref.arg, chain, build)
        return Type("list", arg=inner, optional=ref.optional)
    return state.resolve(ref)
