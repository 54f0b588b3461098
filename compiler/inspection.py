"""`pipec inspect`: the exact messages each module will send, and the worst-case LM call count."""
from __future__ import annotations

import json
from typing import Any


def max_calls(program, graph=None) -> int:
    """The static worst case of LM calls for one input: every module call (with its parse retries),
    map bodies times their bounds, ensembles times their members."""
    total = 0
    for node in (graph or program.graph).nodes:
        if node.op == "module":
            total += program.modules[node.target].max_calls()
        elif node.op == "map":
            total += node.bound * max_calls(program, node.body)
    return total if graph is not None else total * max(1, len(program.members))


def inspect_program(program, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per module call site: kind, LM, reply schema, what the file pins, and the messages (inputs as
    `{name}` placeholders unless `values` gives pipeline inputs for a module fed directly by them)."""
    sites = []
    for node in program.graph.walk():
        if node.op == "map":
            sites.append({"node": node.id, "map": node.var, "ordered": node.ordered, "bound": node.bound,
                          "max_lm_calls": node.bound * max_calls(program, node.body)})
            continue
        if node.op != "module":
            sites.append({"node": node.id, "tool": node.target, "target": program.checked.tools[node.target].target})
            continue
        module = program.modules[node.target]
        sites.append({"node": node.id, "module": node.target, "kind": type(module).kind,
                      "max_lm_calls": module.max_calls(), "predictors": _predictors(program, module, node, values)})
    # Modules reached only through another module's options (a Decompose solver, RankFuse candidates).
    in_graph = {n.target for n in program.graph.walk() if n.op == "module"}
    for name, module in program.modules.items():
        if name not in in_graph:
            sites.append({"node": "(used by options of other modules)", "module": name, "kind": type(module).kind,
                          "max_lm_calls": module.max_calls(), "predictors": _predictors(program, module, None, None)})
    members = max(1, len(program.members))
    return {"pipeline": program.name, "max_lm_calls": max_calls(program), "ensemble_members": members, "calls": sites}


def _predictors(program, module, node, values) -> list[dict[str, Any]]:
    """Each predictor's exact messages: inputs fed straight from pipeline inputs are filled in from
    `values` when given, everything else shows as a `{name}` placeholder."""
    out = []
    args = dict(node.args) if node is not None else {}
    for p in module.predictors():
        shown = {}
        for name, _, _ in p.inputs:
            expr = args.get(name)
            if values is not None and expr is not None and expr[0] == "input" and expr[1] in values:
                shown[name] = values[expr[1]]
            else:
                shown[name] = "{" + name + "}"
        backend = program.backend(p.lm)
        out.append({
            "predictor": p.name,
            "lm": backend.model,
            "structured": backend.structured,
            "params": p.params,
            "messages": p.messages(shown),
            "schema": p.schema if backend.structured != "text" else None,
            "pinned": sorted(p.pinned),        # what the .pipe file pins: no compile changes it
        })
    return out


def render_inspection(report: dict[str, Any]) -> str:
    out = [f"pipeline {report['pipeline']}: at most {report['max_lm_calls']} LM calls per input "
           "(each module call may retry once when its reply does not parse)"]
    if report.get("ensemble_members", 1) > 1:
        out.append(f"an ensemble of {report['ensemble_members']} parameter sets voting on every output; "
                   "the prompts below are member 1's")
    for site in report["calls"]:
        out.append("")
        if "map" in site:
            out.append(f"== {site['node']} = map over at most {site['bound']} items"
                       f"{' in order' if site['ordered'] else ' in parallel'}, at most {site['max_lm_calls']} LM calls ==")
            continue
        if "tool" in site:
            out.append(f"== {site['node']} = tool {site['tool']} -> python {site['target']} (no LM call) ==")
            continue
        out.append(f"== {site['node']} = {site['module']} ({site['kind']}), at most {site['max_lm_calls']} LM calls ==")
        for p in site["predictors"]:
            params = ", ".join(f"{k}={v}" for k, v in p["params"].items())
            out.append(f"[{p['predictor']}] lm: {p['lm']}  structured output: {p['structured']}"
                       + (f"  params: {params}" if params else "")
                       + (f"  pinned: {', '.join(p['pinned'])}" if p.get("pinned") else ""))
            for m in p["messages"]:
                out.append(f"--- {m['role']}")
                out.append(m["content"])
            if p["schema"] is not None:
                out.append("--- reply schema")
                out.append(json.dumps(p["schema"], indent=None))
    return "\n".join(out)
