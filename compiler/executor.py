"""Runs a Graph on one row: inline (no event loop) when every LM is in-process, else on asyncio.

Expressions are compiled to closures once per program, so a run does no interpretation of the IR:
for each node, evaluate its argument closures over the environment, call the module or tool, store
the result. Under asyncio each node is a task that waits for its dependencies, so nodes that do not
depend on each other overlap.
"""
from __future__ import annotations

import asyncio
from operator import itemgetter
from typing import Any, Awaitable, Callable

from .context import RowContext, Runtime
from .graph import Expr, Graph
from .lm.base import LMError
from .modules.base import ModuleFailure
from .prediction import Prediction

Env = dict[str, Any]


def compile_expr(e: Expr) -> Callable[[Env], Any]:
    """Turn an expression into a closure over the row's environment.

    >>> compile_expr(("concat", ("input", "a"), ("lit", [3])))({"a": [1, 2]})
    [1, 2, 3]
    """
    tag = e[0]
    if tag in ("input", "node"):
        return itemgetter(e[1])
    if tag == "lit":
        v = e[1]
        return lambda env: v
    if tag == "attr":
        inner, name = compile_expr(e[1]), e[2]

        def attr(env):
            base = inner(env)
            return base.get(name) if isinstance(base, dict) else getattr(base, name)
        return attr
    if tag == "list":
        items = [compile_expr(x) for x in e[1]]
        return lambda env: [f(env) for f in items]
    if tag == "concat":
        left, right = compile_expr(e[1]), compile_expr(e[2])

        def concat(env):
            a, b = left(env), right(env)
            if isinstance(a, list) or isinstance(b, list):
                return (a if isinstance(a, list) else [a]) + (b if isinstance(b, list) else [b])
            return _text(a) + _text(b)
        return concat
    raise ValueError(f"unknown expression {tag}")


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Step:
    """A node ready to run: its argument closures and the coroutine function that runs it."""

    __slots__ = ("id", "target", "args", "deps", "run")

    def __init__(self, node_id: str, target: str, args, deps, run: Callable[[dict, Any], Awaitable[Any]]):
        self.id, self.target, self.args, self.deps, self.run = node_id, target, args, deps, run


class Plan:
    """A Graph bound to module instances and tools, ready to execute rows."""

    __slots__ = ("graph", "steps", "outputs")

    def __init__(self, graph: Graph, runners: dict[str, Callable]):
        self.graph = graph
        self.steps = [Step(n.id, n.target, [(name, compile_expr(x)) for name, x in n.args], n.deps,
                           runners[n.target]) for n in graph.nodes]
        self.outputs = [(name, compile_expr(x)) for name, _, x in graph.outputs]

    def run_inline(self, inputs: dict[str, Any], runtime: Runtime) -> Prediction:
        """Run without an event loop: every LM call completes synchronously in this thread."""
        row = RowContext(runtime, True)
        env = dict(inputs)
        step = None
        try:
            for step in self.steps:
                args = {name: f(env) for name, f in step.args}
                coro = step.run(args, row.node(step.id, step.target))
                try:
                    coro.send(None)
                except StopIteration as done:
                    env[step.id] = done.value
                else:
                    coro.close()
                    raise RuntimeError(f"node {step.id} waited on I/O while running inline")
            return Prediction({name: f(env) for name, f in self.outputs}, row.trace)
        except (ModuleFailure, LMError) as err:
            return _failure(step, err, row)
        except Exception as err:       # a bug in a module kind must cost one row, not the batch
            return _failure(step, ModuleFailure(f"{type(err).__name__}: {err}"), row)

    async def run_async(self, inputs: dict[str, Any], runtime: Runtime) -> Prediction:
        """Run on asyncio: each node starts as soon as the nodes it reads have finished."""
        row = RowContext(runtime, False)
        env = dict(inputs)
        tasks: dict[str, asyncio.Task] = {}
        failed: list = []

        async def run(step: Step):
            for d in step.deps:
                await tasks[d]
            try:
                args = {name: f(env) for name, f in step.args}
                env[step.id] = await step.run(args, row.node(step.id, step.target))
            except (ModuleFailure, LMError) as err:
                failed.append((step, err))
                raise
            except Exception as err:   # a bug in a module kind must cost one row, not the batch
                failure = ModuleFailure(f"{type(err).__name__}: {err}")
                failed.append((step, failure))
                raise failure from err

        for step in self.steps:
            tasks[step.id] = asyncio.ensure_future(run(step))
        if tasks:
            try:
                await asyncio.gather(*tasks.values())
            except (ModuleFailure, LMError):
                for t in tasks.values():
                    t.cancel()
                await asyncio.gather(*tasks.values(), return_exceptions=True)
                step, err = failed[0]
                return _failure(step, err, row)
        return Prediction({name: f(env) for name, f in self.outputs}, row.trace)


def _failure(step: Step | None, err: Exception, row: RowContext) -> Prediction:
    where = f"{step.id} ({step.target})" if step is not None else "pipeline"
    raw = getattr(err, "raw", "")
    return Prediction(None, row.trace, f"{where}: {err}", raw, step.id if step else None)
