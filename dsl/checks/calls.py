"""Arguments against parameters, for calls in pipelines and in test cases."""
from __future__ import annotations

from .. import ast as A
from ..diagnostics import Names, closest
from ..types import Type, assignable, show
from .state import LISTED, CheckState, listing, where


class Params:
    """A callee's parameters `(name, type, optional)`, with what checking its calls needs indexed once."""

    __slots__ = ("items", "names", "index", "required", "required_set", "_names")

    def __init__(self, items: list[tuple[str, Type, bool]]):
        self.items = items
        self.names = [n for n, _, _ in items]
        self.index: dict[str, int] = {}
        for i, n in enumerate(self.names):
            self.index.setdefault(n, i)
        self.required = [n for n, _, optional in items if not optional]
        self.required_set = set(self.required)
        self._names: Names | None = None

    def missing(self, given: dict, covered: set, limit: int) -> list[str]:
        """The first `limit` required parameters neither given nor covered, in order."""
        found = []
        for n in self.required:
            if n not in given and n not in covered:
                found.append(n)
                if len(found) == limit:
                    break
        return found

    def suggest(self, name: str, given: dict, missing: list[str], large: bool) -> str | None:
        """The parameter a misspelled argument was probably meant for: a missing one first, else any
        not given. With many parameters, the closest of all of them, if it is not given already."""
        if not large:
            return closest(name, missing) or closest(name, [n for n in self.names if n not in given])
        if self._names is None:
            self._names = Names(self.names)
        guess = self._names.closest(name)
        return guess if guess not in given else None


def check_args(state: CheckState, call: A.Call, params, type_of, what: str, positional_ok: bool = False) -> None:
    """Arguments against parameters: names known, none twice, required ones present, types fit.

    `params` is a `Params` or a list of `(name, type, optional)`. The cost is the call's size, plus
    the callee's required parameters when some are missing.
    """
    if not isinstance(params, Params):
        params = Params(params)
    names = params.names
    given: dict[str, A.Arg] = {}
    covered: set[str] = set()        # parameters an erroneous argument was meant for: not "missing" too
    misspelled: list[A.Arg] = []
    for i, a in enumerate(call.args):
        name = a.name if a.name is not None else _positional_name(state, call, a, i, names, what, positional_ok)
        if name is None:
            type_of(a.value)
            if i < len(names):
                covered.add(names[i])
            continue
        if name in given:
            type_of(a.value)
            state.error(a.span, f"argument '{name}' is given twice",
                        f"first given at {where(given[name].span, a.span)}", "duplicate")
            continue
        if name not in params.index:
            type_of(a.value)
            misspelled.append(a)
            continue
        given[name] = a
        ptype = params.items[params.index[name]][1]
        t = type_of(a.value)
        if not assignable(t, ptype):
            state.error(a.value.span, f"type mismatch: input '{name}' of {what} is {show(ptype)}, but the argument is "
                        f"{show(t)}", _mismatch_hint(state, ptype, t, a.value), "type-mismatch")
    if not misspelled and len(given) + len(covered) >= len(params.required) and \
            all(n in given or n in covered for n in params.required):
        return
    # A callee with many parameters is not scanned whole for each call: only as far as the names listed.
    large = len(names) > Names.SMALL
    missing = [] if large else [n for n in params.required if n not in given and n not in covered]
    for a in misspelled:
        guess = params.suggest(a.name, given, missing, large)
        if guess is None and len(misspelled) == 1:
            left = params.missing(given, covered, 2) if large else missing
            if len(left) == 1:
                guess = left[0]     # the one name that is both wrong and missing
        if guess is not None:
            covered.add(guess)
            hint = f"did you mean '{guess}'?"
        else:
            hint = "its inputs are: " + listing(names) if names else f"{what} takes no inputs"
        state.error(a.span, f"{what} has no input '{a.name}'", hint, "bad-call")
    if large:
        total = len(params.required_set) - len(params.required_set.intersection(given.keys() | covered))
        missing = params.missing(given, covered, LISTED) if total else []
    else:
        missing = [n for n in missing if n not in covered]
        total = len(missing)
    if missing:
        state.error(call.span, f"missing argument{'s' * (total > 1)} " + listing([f"'{m}'" for m in missing], total) +
                    f" in call to {what}", "add " + listing([f"`{m}: ...`" for m in missing], total),
                    "missing-argument")


def _positional_name(state: CheckState, call: A.Call, a: A.Arg, i: int, names: list[str], what: str,
                     positional_ok: bool) -> str | None:
    """The parameter a positional argument stands for, or None after reporting why it cannot be positional."""
    if positional_ok and i < len(names):
        return names[i]
    if not positional_ok and len(names) == 1 and len(call.args) == 1:
        return names[0]    # a lone argument needs no name
    if positional_ok or not names:
        if i == len(names) and names:    # report the first extra argument only
            n = len(call.args)
            state.error(a.span, f"{what} takes {len(names)} argument{'s' * (len(names) != 1)}, but {n} "
                        f"{'was' if n == 1 else 'were'} given", "its inputs are: " + listing(names), "bad-call")
        elif i == 0:
            state.error(a.span, f"{what} takes no arguments", "", "bad-call")
        return None
    state.error(a.span, f"arguments to {what} are named",
                f"write `{names[i]}: {state.snippet(a.value.span) or '...'}`" if i < len(names)
                else "its inputs are: " + listing(names), "bad-call")
    return None


def _mismatch_hint(state: CheckState, want: Type, got: Type, value: A.Expr) -> str:
    """A likely fix for the commonest mismatches between lists and single values."""
    if want.kind == "str" and got.kind == "list":
        return "lists do not turn into text implicitly; pass a list-typed input or pick one item"
    if want.kind == "list" and got.kind != "list" and want.arg is not None and assignable(got, want.arg):
        return f"wrap it in a list: [{state.snippet(value.span) or '...'}]"
    if want.kind == got.kind == "enum":
        extra = [f"'{v}'" for v in got.values if v not in want.values]
        return f"the value may be {' or '.join(extra)}, which the input does not accept"
    if want.kind in ("int", "float") and got.kind == "str" and isinstance(value, A.Literal):
        return f"write the number without quotes: {str(value.value).strip()}"
    return ""
