"""Pass: each test block's cases: a declared pipeline called with literal arguments, and assertions
on its outputs that can hold (tests compare normalized values, so "3" never equals 3)."""
from __future__ import annotations

from .. import ast as A
from ..checked_program import PipelineInfo
from ..diagnostics import did_you_mean
from ..types import ANY, SCALARS, STR, Type, show, unify
from .calls import Params, check_args
from .state import CheckState, leading_name_span, listing, value_type, where


def check_test_block(state: CheckState, block: A.TestBlock) -> None:
    if block.name in state.tested:
        state.error(leading_name_span(block.span, "test"), f'test "{block.name}" is declared twice',
                    f"the first is at {where(state.tested[block.name].span, block.span)}; "
                    "names select tests to run, so keep them unique",
                    "duplicate")
    state.tested.setdefault(block.name, block)
    _cases(state, block)
    state.program.tests.append(block)


def _cases(state: CheckState, block: A.TestBlock) -> None:
    prog = state.program
    if not block.cases:
        state.warn(leading_name_span(block.span, "test"), f"test \"{block.name}\" has no cases", "", "empty-test")
    for case in block.cases:
        info = prog.pipelines.get(case.call.callee)
        if info is None:
            if case.call.callee in prog.modules:
                state.error(case.call.callee_span, "tests call pipelines, not modules",
                            f"wrap module {case.call.callee} in a pipeline", "bad-call")
            else:
                state.unknown(case.call.callee_span, "pipeline", case.call.callee, state.names("pipeline"))
            for a in case.call.args:
                _literal_type(state, a.value)
            continue
        if id(info) not in state.test_params:     # once per pipeline, not once per test case
            state.test_params[id(info)] = (info, Params([(p.name, info.params.get(p.name, ANY), p.type.optional)
                                                         for p in info.decl.params]))
        params = state.test_params[id(info)][1]
        check_args(state, case.call, params, lambda e: _literal_type(state, e), f"pipeline {info.decl.name}")
        for a in case.assertions:
            _assertion(state, a, info)


def _assertion(state: CheckState, a: A.Assertion, info: PipelineInfo) -> None:
    if not isinstance(a.left, A.Var):
        swapped = isinstance(a.right, A.Var) and state.snippet(a.left.span)
        state.error(a.left.span, "an assertion starts with an output name",
                    f"put the output first: `{a.right.name} {a.op} {swapped}`" if swapped else
                    "for example `intent == \"book_restaurant\"`", "bad-test")
        return
    rt = _literal_type(state, a.right)
    if a.left.name not in info.outputs:
        outs = list(info.outputs)
        state.error(a.left.span, f"'{a.left.name}' is not an output of pipeline {info.decl.name}",
                    did_you_mean(a.left.name, outs) or "its outputs are: " + listing(outs), "unknown-name")
        return
    out_t = info.outputs[a.left.name]
    if rt.kind == "any" or out_t.kind == "any":
        return
    if a.op in ("==", "!="):
        want, shown = out_t, show(out_t)
    elif a.op == "in":
        if rt.kind != "list":
            state.error(a.right.span, "`in` needs a list on the right", 'write `x in ["a", "b"]`', "bad-test")
            return
        want, shown, rt = out_t, show(out_t), rt.arg or ANY
    elif out_t.required().kind == "list":         # contains, on a list output: one item
        want, shown = out_t.arg or ANY, f"a list of {show(out_t.arg or ANY)}"
    elif out_t.required().kind in ("str", "enum"):  # contains, on text: a substring
        want, shown = STR, "text"
        if rt.kind not in SCALARS:
            state.error(a.right.span, f"`contains` on text needs a string, not {show(rt)}", "", "type-mismatch")
            return
        rt = STR
    else:
        state.error(a.left.span, f"`contains` needs a str or list output; '{a.left.name}' is {show(out_t)}",
                    "compare it with `==` instead", "type-mismatch")
        return
    _check_comparable(state, a, want, rt, shown)


def _check_comparable(state: CheckState, a: A.Assertion, want: Type, got: Type, shown: str) -> None:
    """Whether a test value can ever equal an output: tests compare normalized values, so "3" never equals 3."""
    if _comparable(got, want):
        bad = _enum_outsiders(a.right, want)
        if bad:
            state.error(bad[0].span, f"'{bad[0].value}' is not a value of {show(want.required())}",
                        did_you_mean(str(bad[0].value), want.required().values) or
                        "its values are: " + listing(list(want.required().values)), "type-mismatch")
        return
    state.error(a.right.span, f"type mismatch: '{a.left.name}' is {shown}, compared with {show(got)}",
                _compare_hint(want, got, a, state.snippet), "type-mismatch")


def _comparable(got: Type, want: Type) -> bool:
    """Whether a literal of type `got` can ever equal a value of type `want` once normalized."""
    if got.kind == "any" or want.kind == "any":
        return True
    g, w = got.required(), want.required()
    if w.kind in ("str", "enum"):
        return g.kind in ("str", "enum")
    if w.kind in ("int", "float"):
        return g.kind in ("int", "float")
    if w.kind == "bool":
        return g.kind == "bool"
    if w.kind == "list":
        return g.kind == "list" and _comparable(g.arg or ANY, w.arg or ANY)
    return False    # records cannot be written as literals


def _enum_outsiders(e: A.Expr, want: Type) -> list[A.Literal]:
    """String literals in a test value that are not values of the enum they are compared with."""
    w = want.required()
    if w.kind == "list" and isinstance(e, A.ListLit):
        return [x for item in e.items for x in _enum_outsiders(item, w.arg or ANY)]
    if isinstance(e, A.ListLit):
        return [x for item in e.items for x in _enum_outsiders(item, w)]
    if w.kind == "enum" and isinstance(e, A.Literal) and isinstance(e.value, str) and e.value not in w.values:
        return [e]
    return []


def _compare_hint(want: Type, got: Type, a: A.Assertion, snippet) -> str:
    w, value = want.required(), a.right
    if w.kind == "list" and got.kind != "list" and a.op == "==":
        return f"to look for one item, write `{a.left.name} contains {snippet(value.span) or '...'}`"
    if w.kind in ("int", "float") and got.kind == "str":
        return f"write the number without quotes: {str(value.value).strip()}" if isinstance(value, A.Literal) else ""
    if w.kind in ("str", "enum") and got.kind in ("int", "float", "bool"):
        return f'text is quoted: write "{snippet(value.span) or "..."}"'
    if w.kind == "bool":
        return "write true or false"
    return ""


def _literal_type(state: CheckState, e: A.Expr) -> Type:
    """The type of a test value, which must be a literal or a list of literals."""
    if isinstance(e, A.Literal):
        return value_type(e.value)
    if isinstance(e, A.ListLit):
        t = ANY
        for item in e.items:
            t = unify(t, _literal_type(state, item)) or ANY
        return Type("list", arg=t)
    state.error(e.span, "test values must be literals", "use strings, numbers, true/false or lists", "bad-test")
    return ANY
