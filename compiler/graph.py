"""The Graph IR: a pipeline as a DAG of call nodes wired by field expressions (built by `pipec.lower`).

Nodes come in topological order, with levels of nodes that do not depend on each other; expressions
are plain tuples, cheap to build and to compile into closures (`pipec.executor`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .dsl import ast as A
from .dsl.types import Type

# Expression IR (plain tuples, cheap to build and to compile into closures):
#   ("input", name) ("node", id) ("attr", expr, field) ("lit", value) ("list", [expr...]) ("concat", l, r)
Expr = tuple


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    op: str                            # "module", "tool" or "map"
    target: str                        # module or tool name ("map" for maps)
    args: tuple[tuple[str, Expr], ...]  # parameter name (or "#i" for positional tool args) → expression
    deps: tuple[str, ...]
    span: A.Span
    body: "Graph | None" = None         # a map's body: its nodes and one output, "value"
    var: str = ""                       # a map's item variable
    ordered: bool = False
    bound: int = 0


@dataclass(frozen=True, slots=True)
class Graph:
    """A pipeline as a DAG: inputs, nodes in topological order, and output expressions."""

    name: str
    inputs: tuple[tuple[str, Type, str], ...]
    outputs: tuple[tuple[str, Type, Expr], ...]
    nodes: tuple[Node, ...]

    def walk(self):
        """Every node, map bodies included (a map node comes before its body's nodes)."""
        for n in self.nodes:
            yield n
            if n.body is not None:
                yield from n.body.walk()

    def levels(self) -> list[list[Node]]:
        """Nodes grouped by depth: nodes of one level are independent and run concurrently."""
        depth: dict[str, int] = {}
        out: list[list[Node]] = []
        for n in self.nodes:
            d = 1 + max((depth[x] for x in n.deps), default=-1)
            depth[n.id] = d
            while len(out) <= d:
                out.append([])
            out[d].append(n)
        return out


def expr_deps(e: Expr) -> set[str]:
    tag = e[0]
    if tag == "node":
        return {e[1]}
    if tag == "attr":
        return expr_deps(e[1])
    if tag == "list":
        return set().union(*(expr_deps(x) for x in e[1])) if e[1] else set()
    if tag == "concat":
        return expr_deps(e[1]) | expr_deps(e[2])
    return set()


def expr_inputs(e: Expr) -> set[str]:
    tag = e[0]
    if tag == "input":
        return {e[1]}
    if tag == "attr":
        return expr_inputs(e[1])
    if tag == "list":
        return set().union(*(expr_inputs(x) for x in e[1])) if e[1] else set()
    if tag == "concat":
        return expr_inputs(e[1]) | expr_inputs(e[2])
    return set()


def show_expr(e: Expr) -> str:
    """Source-like text of an expression, for graph labels."""
    tag = e[0]
    if tag in ("input", "node"):
        return e[1]
    if tag == "attr":
        return f"{show_expr(e[1])}.{e[2]}"
    if tag == "lit":
        return repr(e[1]) if not isinstance(e[1], str) else f'"{e[1]}"'
    if tag == "list":
        return "[" + ", ".join(show_expr(x) for x in e[1]) + "]"
    return f"{show_expr(e[1])} + {show_expr(e[2])}"


def to_dict(graph: Graph) -> dict:
    """A JSON-ready description of a graph, for artifacts and diffs (expressions shown as source)."""
    def node(n: Node) -> dict:
        d = {"id": n.id, "op": n.op, "target": n.target, "deps": list(n.deps),
             "args": {k: show_expr(e) for k, e in n.args}}
        if n.op == "map":
            d.update({"var": n.var, "ordered": n.ordered, "bound": n.bound, "body": to_dict(n.body)})
        return d
    return {"inputs": [name for name, _, _ in graph.inputs], "nodes": [node(n) for n in graph.nodes],
            "outputs": {name: show_expr(e) for name, _, e in graph.outputs}}
