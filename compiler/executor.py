"""Runs a Graph on one row: inline (no event loop) when every LM is in-process, else on asyncio.

Expressions are compiled to closures once per program, so a run does no interpretation of the IR:
for each node, evaluate its argument closures over the environment, call the module or tool, store
the result. Under asyncio each node is a task that waits for its dependencies, so nodes that do not
depend on each other overlap.
"""
from __future__ import annotations

import asyncio
import time
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
            if isinstance(base, dict):
                return base.get(name)
            if isinstance(base, list):        # a field of every item: answers.answer
                return [x.get(name) if isinstance(x, dict) else None for x in base]
            return getattr(base, name)
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

    __slots__ = ("id", "target", "args", "deps", "run", "needs_env")

    def __init__(self, node_id: str, target: str, args, deps, run: Callable[..., Awaitable[Any]], needs_env=False):
        self.id, self.target, self.args, self.deps, self.run = node_id, target, args, deps, run
        self.needs_env = needs_env


class Plan:
    """A Graph bound to module instances and tools, ready to execute rows."""

    __slots__ = ("graph", "steps", "outputs")

    def __init__(self, graph: Graph, runners: dict[str, Callable]):
        self.graph = graph
        self.steps = []
        for n in graph.nodes:
            args = [(name, compile_expr(x)) for name, x in n.args]
            if n.op == "map":
                self.steps.append(Step(n.id, "map", args, n.deps, _map_runner(n, Plan(n.body, runners)), True))
            else:
                self.steps.append(Step(n.id, n.target, args, n.deps, runners[n.target]))
        self.outputs = [(name, compile_expr(x)) for name, _, x in graph.outputs]

    async def execute(self, env: Env, row: RowContext) -> None:
        """Run every step into `env`. Inline rows run steps in order and never suspend; asyncio rows
        start each step as soon as the steps it reads have finished."""
        if row.inline:
            for step in self.steps:
                started, failed = time.time_ns(), True
                try:
                    args = {name: f(env) for name, f in step.args}
                    ctx = row.node(step.id, step.target)
                    env[step.id] = await (step.run(args, ctx, env) if step.needs_env else step.run(args, ctx))
                    failed = False
                except Exception as err:
                    raise _located(err, step) from None
                finally:
                    row.nodes.append((step.id, step.target, started, time.time_ns(), failed))
            return
        tasks: dict[str, asyncio.Task] = {}

        async def run(step: Step):
            for d in step.deps:
                if d in tasks:
                    await tasks[d]
            started, failed = time.time_ns(), True
            try:
                args = {name: f(env) for name, f in step.args}
                ctx = row.node(step.id, step.target)
                env[step.id] = await (step.run(args, ctx, env) if step.needs_env else step.run(args, ctx))
                failed = False
            except Exception as err:
                raise _located(err, step) from None
            finally:
                row.nodes.append((step.id, step.target, started, time.time_ns(), failed))
            if row.watch is not None:
                row.watch.node_done(step.id, env[step.id])

        for step in self.steps:
            tasks[step.id] = asyncio.ensure_future(run(step))
        if not tasks:
            return
        try:
            await asyncio.gather(*tasks.values())
        except BaseException:
            for t in tasks.values():
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise

    def run_inline(self, inputs: dict[str, Any], runtime: Runtime) -> Prediction:
        """Run without an event loop: every LM call completes synchronously in this thread."""
        row = RowContext(runtime, True)
        env = dict(inputs)
        coro = self.execute(env, row)
        try:
            coro.send(None)
        except StopIteration:
            return _timed(Prediction({name: f(env) for name, f in self.outputs}, row.trace), row)
        except Exception as err:
            return _failure(err, row)
        coro.close()
        return _failure(RuntimeError("a step waited on I/O while running inline"), row)

    async def run_async(self, inputs: dict[str, Any], runtime: Runtime, watch=None) -> Prediction:
        """Run on asyncio: each node starts as soon as the nodes it reads have finished. A `watch`
        (`pipec.streaming.Watch`) follows the row: the nodes as they finish, LM replies as they stream."""
        row = RowContext(runtime, False, watch)
        env = dict(inputs)
        try:
            await self.execute(env, row)
        except Exception as err:
            return _failure(err, row)
        return _timed(Prediction({name: f(env) for name, f in self.outputs}, row.trace), row)


def _map_runner(node, body: Plan):
    """The coroutine that runs a map node: the body once per item, up to the bound."""
    value = body.outputs[0][1]

    async def run(args: dict[str, Any], ctx, env: Env) -> list[Any]:
        items = args["over"]
        items = list(items) if isinstance(items, (list, tuple)) else ([] if items is None else [items])
        if len(items) > node.bound:
            from .context import CallRecord
            ctx.row.trace.append(CallRecord(node.id, "map", "map", "map", [], error=(
                f"{len(items)} items, ran the first {node.bound} (the map's bound)")))
            items = items[: node.bound]

        async def one(item, earlier):
            child = dict(env)
            child[node.var] = item
            if node.ordered:
                child["earlier"] = earlier
            await body.execute(child, ctx.row)
            return value(child)

        if node.ordered or ctx.row.inline:
            results: list[Any] = []
            for item in items:
                results.append(await one(item, list(results)))
            return results
        return list(await asyncio.gather(*(one(item, []) for item in items)))
    return run


def _located(err: Exception, step: Step) -> Exception:
    """Tag an exception with the innermost step it came from; unexpected ones become ModuleFailure
    (a bug in a module kind must cost one row, not the batch)."""
    if not isinstance(err, (ModuleFailure, LMError)):
        err = ModuleFailure(f"{type(err).__name__}: {err}")
    if getattr(err, "pipec_step", None) is None:
        err.pipec_step = step
    return err


def _failure(err: Exception, row: RowContext) -> Prediction:
    step = getattr(err, "pipec_step", None)
    where = f"{step.id} ({step.target})" if step is not None else "pipeline"
    raw = getattr(err, "raw", "")
    return _timed(Prediction(None, row.trace, f"{where}: {err}", raw, step.id if step else None), row)


def _timed(pred: Prediction, row: RowContext) -> Prediction:
    """`pred` with its row's start, end and node runs (what `pipec.otel` makes spans of)."""
    pred.timing = (row.started_ns, time.time_ns(), row.nodes)
    return pred
