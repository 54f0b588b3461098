"""Lowering: a checked pipeline becomes a Graph of call nodes wired by field expressions.

Assignments that are calls become nodes; other assignments are inlined into the expressions that use
them; calls nested inside expressions become nodes of their own. The result is a DAG in
topological order (see `pipec.graph`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .dsl import ast as A
from .graph import Expr, Graph, Node, expr_deps

if TYPE_CHECKING:
    from .dsl.checked_program import CheckedProgram as Checked


def lower(prog: Checked, pipeline: str) -> Graph:
    """Build the Graph of a pipeline that passed `check`.

    >>> from pipec.dsl import parse, check
    >>> from pipec.registry import catalogue
    >>> f, _ = parse('signature S { in q: str out a: str } module m = Predict(S) '
    ...              'pipeline p(q: str) -> (a) { r = m(q: q) return a = r.a }')
    >>> g = lower(check([f], catalogue())[0], "p")
    >>> [(n.id, n.target) for n in g.nodes], [o[0] for o in g.outputs]
    ([('r', 'm')], ['a'])
    """
    info = prog.pipelines[pipeline]
    decl = info.decl
    assigns = {s.name: s for s in decl.body if isinstance(s, A.Assign)}
    stack: list[dict[str, Node]] = [{}]      # nodes of the pipeline, then of each enclosing map body
    scopes: list[set[str]] = []               # map variables in scope
    lowered: dict[str, Expr] = {}
    counter = [0]

    def var(name: str) -> Expr:
        for scope in reversed(scopes):
            if name in scope:
                return ("input", name)
        if name in info.params:
            return ("input", name)
        if name in lowered:
            return lowered[name]
        # Assignments belong to the pipeline, even when first reached from inside a map body.
        saved_stack, saved_scopes = stack[1:], scopes[:]
        del stack[1:]
        scopes.clear()
        value = assigns[name].value
        if isinstance(value, A.Call):
            call_node(value, name)
            lowered[name] = ("node", name)
        else:
            lowered[name] = expr(value)
        stack.extend(saved_stack)
        scopes.extend(saved_scopes)
        return lowered[name]

    def map_node(m: A.MapExpr) -> Expr:
        counter[0] += 1
        node_id = f"map#{counter[0]}"
        over = expr(m.over)
        stack.append({})
        scopes.append({m.var} | ({"earlier"} if m.ordered else set()))
        value = expr(m.body)
        scopes.pop()
        inner = stack.pop()
        body = Graph(f"{node_id} body", (), (("value", None, value),), tuple(inner.values()))
        outer = expr_deps(over) | expr_deps(value)
        for n in inner.values():
            outer |= set(n.deps)
        deps = sorted(outer - set(inner))
        stack[-1][node_id] = Node(node_id, "map", "map", (("over", over),), tuple(deps), m.span, body, m.var,
                                  m.ordered, m.bound)
        return ("node", node_id)

    def expr(e) -> Expr:
        if isinstance(e, A.Literal):
            return ("lit", e.value)
        if isinstance(e, A.Var):
            return var(e.name)
        if isinstance(e, A.Attr):
            return ("attr", expr(e.value), e.name)
        if isinstance(e, A.ListLit):
            return ("list", [expr(x) for x in e.items])
        if isinstance(e, A.Concat):
            return ("concat", expr(e.left), expr(e.right))
        if isinstance(e, A.Call):
            counter[0] += 1
            node_id = f"{e.callee}#{counter[0]}"
            call_node(e, node_id)
            return ("node", node_id)
        if isinstance(e, A.MapExpr):
            return map_node(e)
        raise TypeError(f"cannot lower {type(e).__name__}")

    def call_node(c: A.Call, node_id: str) -> None:
        if c.callee in prog.modules:
            op = "module"
            sig = prog.signatures[prog.modules[c.callee].signature]
            names = [n for n, _, _ in sig.inputs]
        else:
            op = "tool"
            params = prog.tools[c.callee].params
            names = [p.name for p in params] if params is not None else []
        args = []
        for i, a in enumerate(c.args):
            if a.name is not None:
                name = a.name
            elif op == "module" or i < len(names):
                name = names[i] if i < len(names) else f"#{i}"
            else:
                name = f"#{i}"
            args.append((name, expr(a.value)))
        deps = sorted(set().union(*(expr_deps(x) for _, x in args)) if args else set())
        stack[-1][node_id] = Node(node_id, op, c.callee, tuple(args), tuple(deps), c.span)

    outputs = []
    ret_items = {it.name: it for it in info.ret.items} if info.ret else {}
    for o in decl.outputs:
        item = ret_items.get(o.name)
        outputs.append((o.name, info.outputs.get(o.name), expr(item.value) if item else ("lit", None)))
    # Nodes were created depth-first, dependencies first: that order is topological. Nodes whose
    # values nothing uses still run (their calls may matter to the user), after the others.
    for name in assigns:
        var(name)
    inputs = tuple((p.name, info.params[p.name], p.description) for p in decl.params)
    return Graph(pipeline, inputs, tuple(outputs), tuple(stack[0].values()))


def plain_options(options) -> dict:
    """A declaration's options (`A.Option`s) by name, as plain Python (see `pipec.dsl.ast.plain`)."""
    return {o.name: A.plain(o.value) for o in options}

