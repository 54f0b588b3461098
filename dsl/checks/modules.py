"""Passes over modules: kind, signature, lm and options of each; then the modules they name."""
from __future__ import annotations

from .. import ast as A
from ..diagnostics import did_you_mean
from .demos import check_common_demos_and_pins, check_demos_and_pins
from .options import check_options
from .state import CheckState, where


def check_module(state: CheckState, mod: A.ModuleDecl) -> None:
    """A known kind implementing a declared signature, with the kind's options; the outputs the kind
    adds must not clash with the signature's fields; its written demos fit the signature (`demos`).
    A `one_of` module: the same for each alternative (`check_one_of`)."""
    prog = state.program
    if prog.modules.get(mod.name) is not mod:
        return
    if mod.alternatives:
        _signature(state, mod)
        check_one_of(state, mod)
        return
    kind = _known_kind(state, mod.kind, mod.kind_span)
    _signature(state, mod)
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


def _known_kind(state: CheckState, name: str, span: A.Span):
    """The catalogue's kind called `name`, or None after saying it is unknown."""
    kinds = state.catalogue.kinds
    kind = kinds.get(name)
    if kind is None:
        state.error(span, f"unknown module kind '{name}'",
                    did_you_mean(name, kinds) or ("known kinds: " + ", ".join(sorted(kinds)) if kinds else ""),
                    "unknown-kind")
    return kind


def _signature(state: CheckState, mod: A.ModuleDecl) -> None:
    prog = state.program
    if mod.signature not in prog.signatures:
        if mod.signature in prog.records:
            state.error(mod.signature_span, f"'{mod.signature}' is a record, not a signature",
                        "a module implements a `signature` with in/out fields", "unknown-name")
        else:
            state.unknown(mod.signature_span, "signature", mod.signature, state.names("signature"))


def check_one_of(state: CheckState, mod: A.ModuleDecl) -> None:
    """A `one_of(...)` module: two or more known kinds, no alternative listed twice with the same
    options, each alternative's own options checked against its kind, and the module's common
    options (after the signature) taken by every alternative, since they apply to each; written
    demos and pins as `check_demos_and_pins` says for each alternative (common `demos:` must suit
    every one of them)."""
    prog = state.program
    owner = f"one_of module {mod.name}"
    if len(mod.alternatives) < 2:
        only = mod.alternatives[0].kind
        state.error(mod.kind_span, f"{owner} has one alternative, {only}",
                    f"list the kinds the compile may choose between, like `one_of({only}, ChainOfThought)`, or "
                    f"write `module {mod.name} = {only}({mod.signature})`", "bad-option")
    known: list[tuple[A.Alternative, object]] = []
    written: dict[str, A.Alternative] = {}
    for alt in mod.alternatives:
        kind = _known_kind(state, alt.kind, alt.kind_span)
        shape = repr((alt.kind, sorted((o.name, repr(A.plain(o.value))) for o in alt.options)))
        if shape in written:
            state.error(alt.kind_span, f"alternative {alt.kind} of {owner} is listed twice",
                        f"first at {where(written[shape].span, alt.span)}; alternatives of one kind differ in their "
                        "options, like `Majority(n: 3), Majority(n: 9)`", "duplicate")
        written.setdefault(shape, alt)
        if kind is None:
            continue
        known.append((alt, kind))
        check_options(state, f"{alt.kind} alternative of {owner}", alt.options, kind.options)
    if known:
        _common_options(state, mod, known)
    if len(known) == len(mod.alternatives) and all("lm" in kind.options for _, kind in known):
        _module_lm(state, mod)
    sig = prog.signatures.get(mod.signature)
    if sig is None:
        return
    names = {n for n, _, _ in sig.inputs + sig.outputs}
    for alt, kind in known:
        for extra, _, _ in kind.extra_outputs:
            if extra in names:
                state.error(alt.kind_span, f"{alt.kind} adds an output named '{extra}', which signature "
                            f"{mod.signature} already has", f"rename the signature's field '{extra}'", "duplicate")
        # The alternative's own demos and pins, checked as any module's.
        own = A.ModuleDecl(alt.span, mod.name, alt.kind, mod.signature, alt.options, mod.name_span, alt.kind_span,
                           mod.signature_span)
        check_demos_and_pins(state, own, kind, sig)
    if len(known) == len(mod.alternatives):
        check_common_demos_and_pins(state, mod, [(alt.kind, kind) for alt, kind in known], sig)


def _common_options(state: CheckState, mod: A.ModuleDecl, known: list) -> None:
    """The options written after a one_of module's signature apply to every alternative: each must
    be an option of every alternative's kind (its value is checked against the first that has it)."""
    specs: dict = {}
    for _, kind in known:
        for name, spec in kind.options.items():
            specs.setdefault(name, spec)
    before = len(state.diagnostics)
    check_options(state, f"one_of module {mod.name}", mod.options, specs)
    reported = {id(d.span) for d in state.diagnostics[before:]}
    seen: set[str] = set()
    for opt in mod.options:
        if opt.name in seen or opt.name not in specs or id(opt.span) in reported:
            continue
        seen.add(opt.name)
        lacking = [alt.kind for alt, kind in known if opt.name not in kind.options]
        if lacking:
            taker = next(alt.kind for alt, kind in known if opt.name in kind.options)
            state.error(opt.span, f"option '{opt.name}' of one_of module {mod.name} applies to every alternative, "
                        f"and {lacking[0]} takes no '{opt.name}'",
                        f"give it to the alternatives that take it, like `{taker}({opt.name}: ...)`", "unknown-option")


def _module_lm(state: CheckState, mod: A.ModuleDecl) -> None:
    """With one lm it is the default; with several and no `default lm`, a module that names none
    would quietly run on the built-in model instead of any of them (a one_of module names one in its
    common options, or in every alternative)."""
    lms = state.program.lms
    if all(any(o.name == "lm" for o in v.options) for _, v in mod.variants()) or len(lms) < 2 or state.has_default:
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
        names = []
        for _, decl in mod.variants():       # a one_of module: each alternative, with the common options
            kind = cat.kinds.get(decl.kind)
            if kind is None:
                continue
            for o in decl.options:
                spec = kind.options.get(o.name)
                if spec is not None and spec.type in ("module", "modules"):
                    names += [r.name for r in (o.value if isinstance(o.value, list) else [o.value])
                              if isinstance(r, A.Ref) and r.name in prog.modules and r.name not in names]
            if kind.validate is not None and mod.signature in prog.signatures:
                for message, hint in kind.validate(decl, prog):
                    state.error(mod.span, message, hint, "bad-option")
        refs[mod.name] = names
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
