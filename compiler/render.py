"""Rendering a pipeline graph as Mermaid, Graphviz DOT, or plain text."""
from __future__ import annotations

from .graph import Graph, expr_deps, expr_inputs, show_expr


def _edges(graph: Graph):
    """(source, target, label) for inputs→nodes, nodes→nodes and →outputs."""
    edges = []
    for n in graph.nodes:
        for name, e in n.args:
            label = name if not name.startswith("#") else ""
            for src in sorted(expr_inputs(e)):
                edges.append((f"in:{src}", n.id, label))
            for src in sorted(expr_deps(e)):
                edges.append((src, n.id, label))
    for name, _, e in graph.outputs:
        for src in sorted(expr_inputs(e)):
            edges.append((f"in:{src}", f"out:{name}", show_expr(e)))
        for src in sorted(expr_deps(e)):
            edges.append((src, f"out:{name}", show_expr(e)))
    return edges


def _ident(key: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in key)


def render(graph: Graph, fmt: str, labels: dict[str, str] | None = None) -> str:
    """The graph as `mermaid`, `dot` or `text`; `labels` maps node ids to a description (kind, LM).

    >>> from pipec.graph import Graph
    >>> print(render(Graph("p", (), (), ()), "mermaid"))
    flowchart LR
    """
    labels = labels or {}
    edges = _edges(graph)
    if fmt == "mermaid":
        out = ["flowchart LR"]
        for name, t, _ in graph.inputs:
            out.append(f'    {_ident("in:" + name)}(["{name}"])')
        for n in graph.nodes:
            out.append(f'    {_ident(n.id)}["{n.id}<br/>{labels.get(n.id, n.target)}"]')
        for name, _, _ in graph.outputs:
            out.append(f'    {_ident("out:" + name)}(["{name}"])')
        for a, b, label in edges:
            text = label.replace('"', "'")
            out.append(f"    {_ident(a)} -->|\"{text}\"| {_ident(b)}" if text else f"    {_ident(a)} --> {_ident(b)}")
        return "\n".join(out)
    if fmt == "dot":
        out = [f'digraph "{graph.name}" {{', "    rankdir=LR;", '    node [fontname="Helvetica"];']
        for name, _, _ in graph.inputs:
            out.append(f'    {_ident("in:" + name)} [label="{name}", shape=ellipse];')
        for n in graph.nodes:
            label = labels.get(n.id, n.target).replace('"', "'")
            out.append(f'    {_ident(n.id)} [label="{n.id}\\n{label}", shape=box];')
        for name, _, _ in graph.outputs:
            out.append(f'    {_ident("out:" + name)} [label="{name}", shape=ellipse, style=bold];')
        for a, b, label in edges:
            text = label.replace('"', "'")
            out.append(f'    {_ident(a)} -> {_ident(b)}' + (f' [label="{text}"];' if text else ";"))
        out.append("}")
        return "\n".join(out)
    if fmt == "text":
        out = [f"pipeline {graph.name}(" + ", ".join(n for n, _, _ in graph.inputs) + ") -> ("
               + ", ".join(n for n, _, _ in graph.outputs) + ")"]
        for depth, level in enumerate(graph.levels()):
            out.append(f"  level {depth}" + (" (concurrent)" if len(level) > 1 else ""))
            for n in level:
                args = ", ".join((f"{k}: " if not k.startswith("#") else "") + show_expr(e) for k, e in n.args)
                out.append(f"    {n.id} = {n.target}({args})    [{labels.get(n.id, n.op)}]")
        for name, _, e in graph.outputs:
            out.append(f"  return {name} = {show_expr(e)}")
        return "\n".join(out)
    raise ValueError(f"unknown graph format '{fmt}' (use mermaid, dot or text)")
