"""A hard cap on LM calls, shared by every row and thread of a compile."""
from __future__ import annotations

import threading

from .lm.base import LMError


class BudgetExhausted(LMError):
    """The call budget is spent: the call was not made."""

    MARK = "LM call budget is spent"


class Budget:
    """Counts LM calls (cache hits are free) and refuses the one past the limit.

    >>> b = Budget(2); b.take(); b.take(); b.remaining
    0
    """

    def __init__(self, limit: int | None):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    def take(self) -> None:
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                raise BudgetExhausted(f"the {BudgetExhausted.MARK} ({self.limit} calls)")
            self.used += 1
