"""Running a bound program: one prepared row the way its LMs need, many rows with bounded
concurrency (`drive`, `run_rows`: the engine of batches and evaluations), the checks a row of data
gets before it runs, and tool calls (traced like LM calls). The executor (`pipec.executor`) runs the
graph of one row; everything here is about rows."""
from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any, Callable, Iterator

from .aio import bounded, run_coroutine
from .context import CallRecord
from .modules.base import ModuleFailure
from .prediction import Prediction
from .progress import Progress
from .reply_parser import ReplyError, coerce, input_problem


async def run_one(program, values: dict[str, Any], runtime) -> Prediction:
    """Run one prepared row the way its LMs need: inline, inline in a thread, or on asyncio."""
    if program.inline:
        if any(b.blocking for b in program._used_backends()):
            # The embedded model holds the CPU: run the row in a thread so the loop stays live.
            return await asyncio.to_thread(program.plan.run_inline, values, runtime)
        return program.plan.run_inline(values, runtime)
    return await program.plan.run_async(values, runtime)


async def drive(program, items: Iterator[tuple[Any, dict | Exception]], concurrency: int,
                on_result: Callable[[Any, dict | None, Prediction], None], progress: Progress | None = None) -> None:
    """Run rows from `items` with at most `concurrency` in flight, reporting each as it finishes.

    An item is `(key, row)`; a row that is an exception (unreadable input) is reported as failed.
    """
    runtime = program.runtime()

    async def one(item):
        key, row = item
        if isinstance(row, Exception):
            return key, None, Prediction(None, [], str(row))
        problems = row_problems(program, row)
        if problems:
            return key, row, Prediction(None, [], "; ".join(problems))
        try:
            values = program.prepare(row)
        except ValueError as err:
            return key, row, Prediction(None, [], str(err))
        return key, row, await run_one(program, values, runtime)

    def done(result):
        key, row, pred = result
        on_result(key, row, pred)
        if progress is not None:
            progress.advance(pred.ok)

    await bounded(items, concurrency, one, done)


def row_problems(program, row: Any) -> list[str]:
    """What makes a row of data unusable beyond `Program.prepare`'s checks (see
    `reply_parser.input_problem`): a list, object, NaN or infinity for a `str` input, text that is not
    valid Unicode. Each names its input; no LM call is made for such a row."""
    if not isinstance(row, dict):
        return []
    out = []
    for name, t, _ in program.inputs:
        if name in row:
            problem = input_problem(row[name], t)
            if problem:
                out.append(f"input '{name}': {problem}")
    return out


def run_rows(program, rows: list[dict[str, Any]], concurrency: int = 4, progress: bool = False) -> list[Prediction]:
    """Run a list of rows; return Predictions in input order (the engine of `Program.run_batch`)."""
    return run_coroutine(arun_rows(program, rows, concurrency, progress))


async def arun_rows(program, rows: list[dict[str, Any]], concurrency: int = 4,
                    progress: bool = False) -> list[Prediction]:
    """`run_rows` on the running event loop (the engine of `Program.arun_batch`)."""
    results: list[Prediction | None] = [None] * len(rows)
    bar = Progress(len(rows), program.stats, enabled=progress)

    def store(i, row, pred):
        results[i] = pred

    try:
        await drive(program, iter(enumerate(rows)), concurrency, store, bar)
    finally:
        bar.finish()
    return results  # type: ignore[return-value]


async def call_tool(program, name: str, args: dict[str, Any], ctx) -> Any:
    """Call a declared tool with named (or `#i` positional) arguments; traced; failures raise ModuleFailure."""
    decl = program.checked.tools[name]
    ret_type = program.checked.tool_returns.get(name)
    fn = program.tool(name)
    pos = [v for k, v in args.items() if k.startswith("#")]
    kw = {k: v for k, v in args.items() if not k.startswith("#")}
    rec = CallRecord(ctx.node_id, name, name, f"tool:{decl.target}",
                     [{"role": "tool", "content": json.dumps(args, default=str, ensure_ascii=False)}])
    ctx.row.trace.append(rec)
    try:
        result = fn(*pos, **kw)
        if inspect.isawaitable(result):
            result = await result
    except Exception as err:
        rec.error = f"{type(err).__name__}: {err}"
        raise ModuleFailure(f"tool {name} raised {type(err).__name__}: {err}") from None
    if ret_type is not None:
        try:
            result = coerce(result, ret_type)
        except ReplyError as err:
            rec.error = str(err)
            raise ModuleFailure(f"tool {name} returned a value that does not fit its declared type: {err}") from None
    rec.raw = json.dumps(result, default=str, ensure_ascii=False)[:2000]
    rec.parsed = {"result": result}
    return result
