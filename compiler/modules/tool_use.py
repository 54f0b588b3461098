"""Calling declared tools from a model's reply, shared by the kinds that use tools (ReAct, SelfAsk):
a tool's parameters (declared, or read from its Python signature without importing it), filling them
from the model's action input, and the observation text the model reads back. Not a kind itself."""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from ..dsl import ast as A
from ..dsl.types import ANY, Type
from ..prompt import render_value
from ..reply_parser import ReplyError, coerce

MAX_OBSERVATION = 1000          # characters of one observation kept in the trajectory

# (name, type, required) of one tool parameter.
Param = tuple[str, Type, bool]


def python_params(sig: inspect.Signature | None) -> list[Param] | None:
    """The parameters of an undeclared tool's function (untyped), or None if its signature is unknown."""
    if sig is None:
        return None
    return [(p.name, ANY, p.default is inspect.Parameter.empty) for p in sig.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def undeclared_problem(sig: inspect.Signature | None) -> str | None:
    """Why an undeclared tool cannot be filled from one string, or None (exactly one required
    parameter, or a signature that cannot be read without importing the tool)."""
    if sig is None:
        return None
    ps = list(sig.parameters.values())
    required = [p.name for p in ps if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(required) == 1 and not any(p.kind == p.KEYWORD_ONLY and p.name in required for p in ps):
        return None
    if not required:
        return "its function takes no required parameter"
    return f"its function takes {len(required)} required parameters ({', '.join(required)})" if len(required) > 1 \
        else f"its function's one required parameter ({required[0]}) is keyword-only"


def tool_signature(decl: A.ToolDecl, mod: A.ModuleDecl) -> inspect.Signature | None:
    """A tool function's signature, read (not imported) from beside the .pipe file that declares `mod`."""
    from ..tools import describe_target
    return describe_target(decl.target, Path(mod.span.file).parent.resolve()).signature


def tool_params(env, name: str) -> list[Param]:
    """A tool's parameters: the declared ones (typed), else those of its Python function (untyped)."""
    declared = env.tool_params(name)
    if declared is not None:
        return declared
    return python_params(env.tool_signature(name)) or []


def call_keys(env, name: str) -> dict[str, str]:
    """Positional-only parameters of an undeclared tool's function (`math:sqrt`), as `#i` call keys."""
    if env.tool_params(name) is not None:
        return {}
    sig = env.tool_signature(name)
    if sig is None:
        return {}
    return {p.name: f"#{i}" for i, p in enumerate(sig.parameters.values()) if p.kind == p.POSITIONAL_ONLY}


def call_args(args: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """Filled arguments as `call_tool` takes them: positional-only ones first, in order, as `#i`."""
    pos = sorted((keys[k], v) for k, v in args.items() if k in keys)
    return {**dict(pos), **{k: v for k, v in args.items() if k not in keys}}


def fill_args(tool: str, params: list[Param], value: Any) -> dict[str, Any]:
    """The keyword arguments of one tool call from the model's input; ValueError says what does not fit."""
    required = [n for n, _, req in params if req]
    names = [n for n, _, _ in params]
    if isinstance(value, dict):
        given = dict(value)
        unknown = [k for k in given if k not in names]
        missing = [n for n in required if n not in given]
        # A lone parameter under another name ({"q": ...} for search(query)) is still that parameter.
        if len(unknown) == 1 and len(missing) == 1:
            given[missing[0]] = given.pop(unknown[0])
            unknown, missing = [], []
        if unknown:
            raise ValueError(f"{tool} has no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(names) or 'none'}")
        if missing:
            raise ValueError(f"{tool} needs {', '.join(map(repr, missing))}")
    elif value is None or value == "":
        if required:
            raise ValueError(f"{tool} needs {', '.join(map(repr, required))}; give them in action_input")
        given = {}
    else:
        single = required if len(required) == 1 else names if len(names) == 1 else []
        if len(single) != 1:
            raise ValueError(f"{tool} takes {', '.join(names) or 'no parameters'}: give action_input as an object "
                             "with those keys")
        given = {single[0]: value}
    types = {n: t for n, t, _ in params}
    out = {}
    for k, v in given.items():
        try:
            out[k] = coerce(v, types[k])
        except ReplyError as err:
            raise ValueError(f"argument '{k}' of {tool}: {err}") from None
    return out


def observe(result: Any) -> str:
    text = render_value(result)
    return text if len(text) <= MAX_OBSERVATION else text[:MAX_OBSERVATION] + " ..."


def shown_input(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
