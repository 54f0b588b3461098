"""Rendering a pipeline graph as Mermaid, Graphviz DOT, or plain text."""
from __future__ import annotations

from .graph import Graph, Node, expr_deps, expr_inputs, show_expr


def _edges(graph: Graph, outer_inputs: set[str] | None = None):
    """(source, target, label) for inputs→nodes, nodes→nodes and →outputs, map bodies included.

    Inside a map body, the map variable is drawn as coming from the map node itself.
    """
    edges = []
    inputs = {name for name, _, _ in graph.inputs} if outer_inputs is None else outer_inputs

    def walk(nodes, local: dict[str, str]):
        for n in nodes:
            for name, e in n.args:
                label = name if not name.startswith("#") else ""
                for src in sorted(expr_inputs(e)):
                    edges.append((local.get(src, f"in:{src}"), n.id, label))
                for src in sorted(expr_deps(e)):
                    edges.append((src, n.id, label))
            if n.op == "map":
                scope = {**local, n.var: n.id, "earlier": n.id}
                walk(n.body.nodes, scope)
                _, _, value = n.body.outputs[0]
                for src in sorted(expr_deps(value)):
                    edges.append((src, n.id, "result"))

    walk(graph.nodes, {})
    for name, _, e in graph.outputs:
        for src in sorted(expr_inputs(e) & inputs):
            edges.append((f"in:{src}", f"out:{name}", show_expr(e)))
        for src in sorted(expr_deps(e)):
            edges.append((src, f"out:{name}", show_expr(e)))
    return edges


def _ident(key: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in key)


def _mermaid_nodes(nodes, labels, indent: str, out: list[str]) -> None:
    for n in nodes:
        if n.op == "map":
            out.append(f'{indent}subgraph {_ident(n.id + "_body")}["{labels.get(n.id, n.id)}"]')
            out.append(f'{indent}    {_ident(n.id)}{{{{"{n.id}"}}}}')
            _mermaid_nodes(n.body.nodes, labels, indent + "    ", out)
            out.append(f"{indent}end")
        else:
            out.append(f'{indent}{_ident(n.id)}["{n.id}<br/>{labels.get(n.id, n.target)}"]')


def _dot_nodes(nodes, labels, indent: str, out: list[str]) -> None:
    for n in nodes:
        label = labels.get(n.id, n.target).replace('"', "'")
        if n.op == "map":
            out.append(f'{indent}subgraph cluster_{_ident(n.id)} {{')
            out.append(f'{indent}    label="{label}"; style=dashed;')
            out.append(f'{indent}    {_ident(n.id)} [label="{n.id}", shape=diamond];')
            _dot_nodes(n.body.nodes, labels, indent + "    ", out)
            out.append(f"{indent}}}")
        else:
            out.append(f'{indent}{_ident(n.id)} [label="{n.id}\\n{label}", shape=box];')


def _text_nodes(nodes: list[Node], labels, indent: str, out: list[str]) -> None:
    for n in nodes:
        if n.op == "map":
            over = show_expr(dict(n.args)["over"])
            out.append(f"{indent}{n.id} = map {n.var} in {over}{' ordered' if n.ordered else ''} max {n.bound} {{")
            _text_nodes(list(n.body.nodes), labels, indent + "    ", out)
            out.append(f"{indent}    value = {show_expr(n.body.outputs[0][2])}")
            out.append(f"{indent}}}")
            continue
        args = ", ".join((f"{k}: " if not k.startswith("#") else "") + show_expr(e) for k, e in n.args)
        out.append(f"{indent}{n.id} = {n.target}({args})    [{labels.get(n.id, n.op)}]")


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
        _mermaid_nodes(graph.nodes, labels, "    ", out)
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
        _dot_nodes(graph.nodes, labels, "    ", out)
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
            _text_nodes(level, labels, "    ", out)
        for name, _, e in graph.outputs:
            out.append(f"  return {name} = {show_expr(e)}")
        return "\n".join(out)
    raise ValueError(f"unknown graph format '{fmt}' (use mermaid, dot or text)")
