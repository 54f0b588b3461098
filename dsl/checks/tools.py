"""Pass: each tool's loader and `package.module:function` target, and its parameter and result types."""
from __future__ import annotations

import re

from .. import ast as A
from ..diagnostics import did_you_mean
from .state import CheckState

PYTHON_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")     # what python("...") names


def check_tool(state: CheckState, tool: A.ToolDecl) -> None:
    prog, cat = state.program, state.catalogue
    if prog.tools.get(tool.name) is not tool:
        return
    if tool.loader not in cat.tool_loaders:
        state.error(tool.loader_span, f"unknown tool loader '{tool.loader}'",
                    did_you_mean(tool.loader, cat.tool_loaders) or
                    'write `python("package.module:function")`', "unknown-name")
    if not PYTHON_TARGET.match(tool.target):
        fixed = ":".join(tool.target.rsplit(".", 1)) if ":" not in tool.target else ""
        hint = f'separate the function with a colon: "{fixed}"' if PYTHON_TARGET.match(fixed) else \
            'for example python("examples.corpus:search")'
        state.error(tool.target_span or tool.span, f"tool target '{tool.target}' is not `package.module:function`",
                    hint, "bad-tool")
    seen = set()
    params = []
    for p in tool.params or ():
        if p.name in seen:
            state.error(p.span, f"duplicate parameter '{p.name}'", "", "duplicate")
        seen.add(p.name)
        params.append((p.name, state.resolve(p.type), not p.type.optional))
    if tool.params is not None:
        prog.tool_params[tool.name] = params
    if tool.returns is not None:
        prog.tool_returns[tool.name] = state.resolve(tool.returns)
