"""Running coroutines from sync code, and a bounded pool of concurrent work: asyncio helpers that
every stage may use. A leaf: it imports nothing of pipec."""
from __future__ import annotations

import asyncio
import threading

_thread_loops = threading.local()


def run_coroutine(coro):
    """Run a coroutine to completion from sync code, reusing one event loop per thread.

    A new loop per call (`asyncio.run`) costs ~0.1 ms and drops connection pools; a kept loop costs
    neither. From inside a running loop (a notebook), the coroutine runs on a worker thread's loop.

    >>> async def two(): return 2
    >>> run_coroutine(two())
    2
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(_thread_loops, "loop", None)
        if loop is None or loop.is_closed():
            loop = _thread_loops.loop = asyncio.new_event_loop()
        return loop.run_until_complete(coro)
    box: list = []
    t = threading.Thread(target=lambda: box.append(run_coroutine(coro)))
    t.start()
    t.join()
    return box[0]


async def bounded(items, concurrency: int, work, on_done) -> None:
    """Await `work(item)` for every item with at most `concurrency` in flight, pulling items lazily,
    and hand each result to `on_done` as soon as it is ready."""
    pending: set[asyncio.Task] = set()
    source = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < max(1, concurrency):
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.add(asyncio.ensure_future(work(item)))
            if not pending:
                break
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                on_done(task.result())
    except BaseException:
        # Something fatal (the output's disk is full, Ctrl-C): the rows in flight are cancelled and
        # awaited, not left for the garbage collector to report as "Task was destroyed but it is pending".
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        raise
