"""A hard cap on LM calls, shared by every row and thread of a compile."""
from __future__ import annotations

import threading
from contextlib import contextmanager

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
        self.held = 0                 # calls kept back for later (see `holding_back`)
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.held - self.used)

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit - self.held

    @contextmanager
    def holding_back(self, calls: int):
        """Within the block, the last `calls` of the budget are refused (kept for what follows).

        >>> b = Budget(3)
        >>> with b.holding_back(2):
        ...     b.take(); b.exhausted
        True
        >>> b.take(); b.remaining
        1
        """
        previous, self.held = self.held, max(0, calls)
        try:
            yield self
        finally:
            self.held = previous

    def take(self) -> None:
        with self._lock:
            if self.limit is not None and self.used >= self.limit - self.held:
                raise BudgetExhausted(f"the {BudgetExhausted.MARK} ({self.limit} calls)")
            self.used += 1
