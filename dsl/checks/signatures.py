"""Pass: resolve each signature's input and output types; a signature needs an output."""
from __future__ import annotations

from .. import ast as A
from .state import CheckState


def check_signature(state: CheckState, sig: A.Signature) -> None:
    """Fill in the inputs and outputs of the signature `collect_declarations` kept under this name
    (a duplicate of an earlier declaration is not checked: its name is the error)."""
    info = state.program.signatures.get(sig.name)
    if info is None or info.decl is not sig:
        return
    seen: set[str] = set()
    for f in sig.fields:
        if f.name in seen:
            state.error(f.span, f"duplicate field '{f.name}' in signature {sig.name}",
                        "a name is either an input or an output, once", "duplicate")
            continue
        seen.add(f.name)
        entry = (f.name, state.resolve(f.type), f.description)
        (info.inputs if f.direction == "in" else info.outputs).append(entry)
    if not info.outputs:
        state.error(sig.name_span, f"signature {sig.name} has no outputs",
                    "add at least one `out name: type` field", "no-outputs")
