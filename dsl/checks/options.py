"""Options and their values, as lms, modules, compile settings, metrics and optimizers take them."""
from __future__ import annotations

from .. import ast as A
from ..catalogue import OptionSpec
from ..diagnostics import did_you_mean
from .state import CheckState, where


def check_options(state: CheckState, owner: str, options: list[A.Option], specs: dict[str, OptionSpec]) -> None:
    """Each option known to `specs`, given once, with a value of its type."""
    seen: dict[str, A.Option] = {}
    for opt in options:
        if opt.name in seen:
            state.error(opt.span, f"option '{opt.name}' is given twice",
                        f"first given at {where(seen[opt.name].span, opt.span)}",
                        "duplicate")
            continue
        seen[opt.name] = opt
        spec = specs.get(opt.name)
        if spec is None:
            hint = did_you_mean(opt.name, specs) or ("known options: " + ", ".join(sorted(specs)) if specs
                                                     else f"{owner} takes no options")
            state.error(opt.span, f"unknown option '{opt.name}' for {owner}", hint, "unknown-option")
            continue
        check_option_value(state, f"option '{opt.name}' of {owner}", opt, spec)


def check_option_value(state: CheckState, what: str, opt: A.Option, spec: OptionSpec) -> None:
    """Check one value against its spec; `what` names it in messages ("option 'seed' of lm x")."""
    prog = state.program
    v = opt.value
    ok = {
        "str": isinstance(v, str),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, (int, float)) and not isinstance(v, bool),
        "float": isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": isinstance(v, bool),
        "list": isinstance(v, list),
        "lm": isinstance(v, A.Ref),
        "name": isinstance(v, A.Ref),
        "tool": isinstance(v, A.Ref),
        "module": isinstance(v, A.Ref),
        "tools": isinstance(v, list) and all(isinstance(x, A.Ref) for x in v),
        "modules": isinstance(v, list) and all(isinstance(x, A.Ref) for x in v),
        "lms": isinstance(v, list) and all(isinstance(x, A.Ref) for x in v),
    }.get(spec.type, True)
    if not ok:
        want = {"number": "a number", "int": "an integer", "float": "a number", "str": "a string",
                "bool": "true or false", "list": "a list", "lm": "the name of an lm declaration",
                "name": "a name", "tool": "the name of a tool declaration",
                "module": "the name of a module declaration",
                "tools": "a list of tool names, like [search, calculate]",
                "modules": "a list of module names, like [a, b]",
                "lms": "a list of lm names, like [local, gpt]"}.get(spec.type, spec.type)
        state.error(opt.span, f"{what} must be {want}", value_hint(spec, v, prog.lms), "bad-option")
        return
    if spec.type == "lm" and v.name not in prog.lms:
        state.unknown(opt.span, "lm", v.name, state.names("lm"))
    tables = {"tool": ("tool", prog.tools), "tools": ("tool", prog.tools),
              "module": ("module", prog.modules), "modules": ("module", prog.modules),
              "lms": ("lm", prog.lms)}
    if spec.type in tables:
        label, table = tables[spec.type]
        for ref in (v if isinstance(v, list) else [v]):
            if ref.name not in table:
                state.unknown(opt.span, label, ref.name, state.names(label))
        if isinstance(v, list) and not v and spec.minimum:
            state.error(opt.span, f"{what} needs at least {spec.minimum:g} name{'s' * (spec.minimum != 1)}",
                        spec.doc, "bad-option")
        return
    if spec.choices and v not in spec.choices:
        state.error(opt.span, f"{what} must be one of: " + ", ".join(map(str, spec.choices)),
                    did_you_mean(str(v), map(str, spec.choices)), "bad-option")
    if spec.minimum is not None and isinstance(v, (int, float)) and v < spec.minimum:
        state.error(opt.span, f"{what} must be at least {spec.minimum:g}", spec.doc, "bad-option")


def value_hint(spec: OptionSpec, value, lms) -> str:
    """Why a value of the wrong type was probably written, or the option's own description."""
    if spec.type == "str" and isinstance(value, A.Ref):
        return f'strings are quoted: write "{value.name}"'
    if spec.type == "lm" and isinstance(value, str) and value in lms:
        return f"name the lm without quotes: `{value}`"
    if spec.type == "list" and isinstance(value, str):
        return f'wrap it in a list: ["{value}"]'
    return spec.doc


def setting_value(e: A.Expr):
    """A setting's or function option's value as a plain Python value, as option checks expect."""
    if isinstance(e, A.Literal):
        return e.value
    if isinstance(e, A.Var):
        return A.Ref(e.name)
    if isinstance(e, A.ListLit):
        return [setting_value(x) for x in e.items]
    return object()     # calls, concatenations, fields: never a valid option value
