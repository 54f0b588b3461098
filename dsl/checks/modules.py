"""Passes over modules: kind, signature, lm and options of each; then the modules they name."""
from __future__ import annotations

from .. import ast as A
from ..diagnostics import did_you_mean
from .demos import check_demos_and_pins
from .options import check_options
from .state import CheckState


def check_module(state: CheckState, mod: A.ModuleDecl) -> None:
    """A known kind implementing a declared signature, with the kind's options; the outputs the kind
    adds must not clash with the signature's fields; its written demos fit the signature (`demos`)."""
    prog, cat = state.program, state.catalogue
    if prog.modules.get(mod.name) is not mod:
        return
    kind = cat.kinds.get(mod.kind)
    if kind is None:
        state.error(mod.kind_span, f"unknown module kind '{mod.kind}'",
                    did_you_mean(mod.kind, cat.kinds) or
                    ("known kinds: " + ", ".join(sorted(cat.kinds)) if cat.kinds else ""), "unknown-kind")
    if mod.signature not in prog.signatures:
        if mod.signature in prog.records:
            state.error(mod.signature_span, f"'{mod.signature}' is a record, not a signature",
                        "a module implements a `signature` with in/out fields", "unknown-name")
        else:
            state.unknown(mod.signature_span, "signature", mod.signature, state.names("signature"))
    if kind is not None and "lm" in kind.options:
        _module_lm(state, mod)
    if kind is not None:
        check_options(state, f"{mod.kind} module {mod.name}", mod.options, kind.options)
        sig = prog.signatures.get(mod.signature)
        if sig is not None:
            names = {n for n, _, _ in sig.inputs + sig.outputs}
            for extra, _, _ in kind.extra_outputs:
                if extra in names:
                    state.error(mod.kind_span, f"{mod.kind} adds an output named '{extra}', which signature "
                                f"{mod.signature} already has", f"rename the signature's field '{extra}'", "duplicate")
        check_demos_and_pins(state, mod, kind, sig)


def _module_lm(state: CheckState, mod: A.ModuleDecl) -> None:
    """With one lm it is the default; with several and no `default lm`, a module that names none
    would quietly run on the built-in model instead of any of them."""
    lms = state.program.lms
    if any(o.name == "lm" for o in mod.options) or len(lms) < 2 or state.has_default:
        return
    names = sorted(lms)
    state.warn(mod.name_span, f"module {mod.name} does not say which lm it uses",
               f"add `lm: {names[0]}` to it, or `default lm = {names[0]}` to the file; otherwise it runs on "
               "the built-in default model, not on " + " or ".join(names), "no-lm")


def check_module_references(state: CheckState) -> None:
    """Modules that name other modules in their options (ensembles, debates): no cycles, and
    each kind's own checks (such as "candidates share my signature") once every name is known."""
    prog, cat = state.program, state.catalogue
    refs: dict[str, list[str]] = {}
    for mod in prog.modules.values():
        kind = cat.kinds.get(mod.kind)
        if kind is None:
            continue
        names = []
        for o in mod.options:
            spec = kind.options.get(o.name)
            if spec is not None and spec.type in ("module", "modules"):
                names += [r.name for r in (o.value if isinstance(o.value, list) else [o.value])
                          if isinstance(r, A.Ref) and r.name in prog.modules]
        refs[mod.name] = names
        if kind.validate is not None and mod.signature in prog.signatures:
            for message, hint in kind.validate(mod, prog):
                state.error(mod.span, message, hint, "bad-option")
    status: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if status.get(name) == "done":
            return
        if status.get(name) == "busy":
            loop = chain[chain.index(name):] + [name]
            state.error(prog.modules[loop[0]].name_span, "module cycle: " + " -> ".join(loop),
                        "a module cannot use itself, directly or through others", "cycle")
            return
        status[name] = "busy"
        for other in refs.get(name, []):
            visit(other, chain + [name])
        status[name] = "done"

    for name in refs:
        visit(name, [])
