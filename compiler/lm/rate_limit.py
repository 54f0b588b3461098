"""A requests-per-minute limit shared by every call to one LM in this process."""
from __future__ import annotations

import asyncio
import threading
import time


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart, across threads and event loops.

    >>> r = RateLimiter(6000); r.wait(); r.wait()   # the second call waits ~10 ms
    """

    def __init__(self, rpm: int):
        self.interval = 60.0 / float(rpm)
        self._next = 0.0
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Claim the next start slot; return how long the caller must wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
            return start - now

    def wait(self) -> None:
        delay = self._reserve()
        if delay > 0:
            time.sleep(delay)

    async def await_turn(self) -> None:
        delay = self._reserve()
        if delay > 0:
            await asyncio.sleep(delay)
