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


class SharedLock:
    """A lock that asyncio tasks (on any thread's event loop) and inline rows (coroutines that never
    suspend, driven from threads) can share: what a module holds while it does something once for
    every row, such as ToolMaker making its tool.

    A `threading.Lock` alone would block an event loop whose other task holds it (a deadlock), and an
    `asyncio.Lock` alone belongs to one loop and is no use to threads; so a task first queues on its
    loop's own `asyncio.Lock`, then takes the thread lock without blocking its loop.

    >>> lock, order = SharedLock(), []
    >>> async def row(i):
    ...     async with lock.held(inline=False):
    ...         order.append(i); await asyncio.sleep(0); order.append(i)
    >>> async def two(): await asyncio.gather(row(1), row(2))
    >>> run_coroutine(two()); order
    [1, 1, 2, 2]
    """

    def __init__(self):
        self._thread = threading.Lock()
        self._guard = threading.Lock()
        self._loops: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._guard:
            # Closed loops' locks are dropped so a long-lived module does not collect them.
            for key in [k for k, (other, _) in self._loops.items() if other.is_closed()]:
                del self._loops[key]
            entry = self._loops.get(id(loop))
            if entry is None or entry[0] is not loop:
                entry = self._loops[id(loop)] = (loop, asyncio.Lock())
            return entry[1]

    def held(self, inline: bool):
        """`async with lock.held(inline):` — `inline` for a row that runs without an event loop (its
        thread waits on the lock; it has no loop to keep running)."""
        return _Held(self, inline)


class _Held:
    __slots__ = ("_lock", "_inline", "_loop_lock")

    def __init__(self, lock: SharedLock, inline: bool):
        self._lock, self._inline, self._loop_lock = lock, inline, None

    async def __aenter__(self):
        if self._inline:
            self._lock._thread.acquire()
            return self
        self._loop_lock = self._lock._loop_lock()
        await self._loop_lock.acquire()
        try:
            delay = 0.001
            while not self._lock._thread.acquire(blocking=False):     # held by another thread's row
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        except BaseException:
            self._loop_lock.release()
            raise
        return self

    async def __aexit__(self, *exc):
        self._lock._thread.release()
        if self._loop_lock is not None:
            self._loop_lock.release()
        return False
