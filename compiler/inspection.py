"""`pipec inspect`: the exact messages each module will send, the code it carries (ToolMaker's tool,
shown in full: it is what an artifact's user approves), and the worst-case LM call count."""
from __future__ import annotations

import json
from typing import Any


def max_calls(program, graph=None, dearest: bool = False, requests: bool = False, prepared: bool = False) -> int:
    """The static worst case of LM calls for one input: every module call (with its parse retries),
    map bodies times their bounds, ensembles times their members. A one_of module counts the
    alternative it runs, or with `dearest` its dearest one (the most any choice can cost).

    A call is one question to an lm, however many requests answering it takes. With `requests`, the
    worst case of requests instead: each call times the most requests one call of that module may
    send (every attempt, `num_retries` of them after the first, on each lm a fallback tries). With
    `prepared`, each module as a compile prepares it (`ModuleKind.max_calls_prepared`)."""
    total = 0
    for node in (graph or program.graph).nodes:
        if node.op == "module":
            module = program.modules[node.target]
            alternatives = getattr(module, "alternatives", None) if dearest else None
            if alternatives:
                calls = max(a.max_calls_prepared() if prepared else a.max_calls() for a in alternatives.values())
            else:
                calls = module.max_calls_prepared() if prepared else module.max_calls()
            total += calls * (_requests_per_call(program, module) if requests else 1)
        elif node.op == "map":
            total += node.bound * max_calls(program, node.body, dearest, requests, prepared)
    return total if graph is not None else total * max(1, len(program.members))


def _requests_per_call(program, module) -> int:
    """The most requests one LM call of `module` may send, over every lm its predictors may use."""
    from .lm.fallback import attempts_per_call
    return max((attempts_per_call(program.backend(p.lm)) for p in module.every_predictor()), default=1)


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
        sites.append({"node": node.id, "module": node.target, "kind": module.describe(),
                      "max_lm_calls": module.max_calls(), "predictors": _predictors(program, module, node, values),
                      **_code(module), **_alternatives(program, module)})
    # Modules reached only through another module's options (a Decompose solver, RankFuse candidates).
    in_graph = {n.target for n in program.graph.walk() if n.op == "module"}
    for name, module in program.modules.items():
        if name not in in_graph:
            sites.append({"node": "(used by options of other modules)", "module": name, "kind": module.describe(),
                          "max_lm_calls": module.max_calls(), "predictors": _predictors(program, module, None, None),
                          **_code(module), **_alternatives(program, module)})
    members = max(1, len(program.members))
    out = {"pipeline": program.name, "max_lm_calls": max_calls(program), "ensemble_members": members, "calls": sites,
           "max_lm_requests": max_calls(program, requests=True)}
    if program.strategies() and program.artifact is None:
        out["dearest_lm_calls"] = max_calls(program, dearest=True)     # what the alternatives may cost at most
    return out


def _alternatives(program, module) -> dict[str, Any]:
    """A one_of module's alternatives with the bound of each (a .pipe file: the compile may choose any
    of them), or the one a compile chose (an artifact: that one runs, whose bound the site shows)."""
    alternatives = getattr(module, "alternatives", None)
    if not alternatives:
        return {}
    if program.artifact is not None:
        return {"chosen": module.chosen, "alternatives": list(alternatives)}
    from .artifact import Choice
    block = next((b for b in program.checked.compiles if b.pipeline == program.name), None)
    bound = next((s.value.value for s in (block.settings if block else ()) if s.name == "max_calls_per_row"
                  and isinstance(getattr(s.value, "value", None), int)), None)
    out = []
    for label, alt in alternatives.items():
        row = max_calls(program.bound({module.name: Choice(alternative=label)}))    # the pipeline running it
        out.append({"label": label, "kind": alt.describe(), "max_lm_calls": alt.max_calls(), "row_lm_calls": row,
                    "running": label == module.chosen, "over_bound": bound is not None and row > bound})
    return {"alternatives": out, **({"max_calls_per_row": bound} if bound is not None else {})}


def _code(module) -> dict[str, Any]:
    """The code the module carries, by predictor name (`ModuleKind.code`), when it carries any."""
    code = module.code()
    return {"code": code} if code else {}


def _predictors(program, module, node, values) -> list[dict[str, Any]]:
    """Each predictor's exact messages: inputs fed straight from pipeline inputs are filled in from
    `values` when given, everything else shows as a `{name}` placeholder. A predictor that holds code
    (`_code`) sends no messages: it is shown as code instead."""
    out = []
    args = dict(node.args) if node is not None else {}
    code = module.code()
    for p in module.predictors():
        if p.name in code:
            continue
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
    if "max_lm_requests" in report:
        out.append(f"at most {report['max_lm_requests']} LM requests per input, counting each call's retries on "
                   "provider faults (the lm's num_retries) and, for a fallback lm, every lm it tries")
    if "dearest_lm_calls" in report:
        out.append(f"with the first alternative of each one_of module, as it runs uncompiled; a compile may choose "
                   f"others: at most {report['dearest_lm_calls']} LM calls with the dearest")
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
        if "chosen" in site:
            out.append(f"== {site['node']} = {site['module']} ({site['chosen']}, chosen by the compile from one_of "
                       f"{', '.join(site['alternatives'])}), at most {site['max_lm_calls']} LM calls ==")
        elif "alternatives" in site:
            out.append(f"== {site['node']} = {site['module']} (one_of {len(site['alternatives'])} alternatives), at most "
                       f"{site['max_lm_calls']} LM calls as it runs uncompiled ==")
            for alt in site["alternatives"]:
                named = alt["label"] + (f" ({alt['kind']})" if alt["kind"] != alt["label"] else "")
                out.append(f"  {named}: at most {alt['max_lm_calls']} LM calls"
                           + (" (runs uncompiled; its prompts are below)" if alt["running"] else "")
                           + (f" (the pipeline: {alt['row_lm_calls']}, over the compile block's max_calls_per_row "
                              f"{site['max_calls_per_row']}: never chosen)" if alt.get("over_bound") else ""))
        else:
            out.append(f"== {site['node']} = {site['module']} ({site['kind']}), at most {site['max_lm_calls']} LM calls ==")
        for name, source in site.get("code", {}).items():
            out.append(f"[{name}] Python code this module carries and runs in the sandbox (never sent to an LM)")
            out.append("--- code")
            out.append(source)
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
