"""A hard cap on a compile's LM calls and on the money they cost, shared by every row and thread.

A dollar bound holds the way the call bound does: a call is admitted only if its worst case (the
prompt at one token per byte, the longest reply at the output price; see `Price.worst_case`) fits
what is left, that worst case is reserved while the call runs, and the reply's real cost replaces
it when it comes back. Concurrent calls therefore never overshoot together, and cache hits, which
make no call, cost nothing.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from .lm.base import LMBackend, LMError, LMRequest


class BudgetExhausted(LMError):
    """The call or dollar budget is spent: the call was not made. `waitable`: it would fit once the
    calls in flight, which hold their worst cases, have been charged what they really cost."""

    MARK = "LM call budget is spent"
    waitable = False
    falls_back = False          # the budget is the compile's, whichever lm would answer


class Budget:
    """Counts LM calls (cache hits are free) and the dollars they cost, and refuses the call that
    would pass either limit (`limit` calls, `usd` dollars; None: no limit).

    >>> b = Budget(2); _ = b.take(); _ = b.take(); b.remaining
    0
    >>> from pipec.lm import LMRequest, Price, ScriptedLM
    >>> lm, ask = ScriptedLM(price=Price(0.001, 0.002, max_output=10)), LMRequest([{"role": "user", "content": "hi"}])
    >>> m = Budget(None, usd=0.045); held = m.take(lm, ask); round(held, 6)   # 18 prompt tokens, 10 reply tokens
    0.038
    >>> m.settle(held, 0.01)
    >>> try:
    ...     m.take(lm, ask)
    ... except BudgetExhausted as refused:
    ...     print(refused)
    the LM call budget is spent ($0.0450): scripted/lm's call could cost up to $0.0380, $0.0350 is left
    """

    def __init__(self, limit: int | None, usd: float | None = None):
        self.limit = limit
        self.used = 0
        self.held = 0                 # calls kept back for later (see `holding_back`)
        self.usd = usd
        self.spent = 0.0              # dollars charged for calls that came back (or may have been billed)
        self.reserved = 0.0           # worst cases of the calls running now
        self.held_usd = 0.0
        self.refused_usd: float | None = None     # the cheapest worst case a dollar refusal turned away
        self._lock = threading.Lock()

    @property
    def money_left(self) -> float | None:
        """Dollars not spent, reserved or held back; None without a dollar limit."""
        if self.usd is None:
            return None
        return max(0.0, self.usd - self.held_usd - self.spent - self.reserved)

    @property
    def remaining(self) -> int | None:
        """Calls left: the call limit's, and, under a dollar limit, as many as the money left pays
        for at the mean cost of the calls so far (a plan for optimizers, not a promise)."""
        calls = None if self.limit is None else max(0, self.limit - self.held - self.used)
        money = self.money_left
        if money is not None and self.used and self.spent > 0:
            affordable = int(money / (self.spent / self.used))
            calls = affordable if calls is None else min(calls, affordable)
        return calls

    @property
    def exhausted(self) -> bool:
        if self.limit is not None and self.used >= self.limit - self.held:
            return True
        money = self.money_left
        # Once a call was refused for money, calls like it are refused until the money left grows
        # (when a holding-back block ends): the search should stop rather than ask again and again.
        return money is not None and (money <= 0 or (self.refused_usd is not None and money < self.refused_usd))

    @contextmanager
    def holding_back(self, calls: int):
        """Within the block, the last `calls` of the budget are refused (kept for what follows), and
        under a dollar limit what that many calls cost at the mean so far.

        >>> b = Budget(3)
        >>> with b.holding_back(2):
        ...     _ = b.take(); b.exhausted
        True
        >>> _ = b.take(); b.remaining
        1
        """
        mean = self.spent / self.used if self.used else 0.0
        previous = self.held, self.held_usd
        self.held, self.held_usd = max(0, calls), max(0, calls) * mean
        try:
            yield self
        finally:
            self.held, self.held_usd = previous

    def take(self, backend: LMBackend | None = None, request: LMRequest | None = None) -> float:
        """Admit one call of `backend` for `request`, or raise `BudgetExhausted`; return the dollars
        reserved for it, to hand back to `settle` when the call is over."""
        worst = 0.0
        if self.usd is not None and backend is not None:
            # `unpriced` refuses these before a compile starts; here they only fail the one call.
            price = backend.price()
            if price is None:
                raise LMError(f"{backend.model}: no price is known for this model, so the dollar budget cannot be "
                              "enforced: declare input_price and output_price (dollars per million tokens) on its lm")
            worst = price.worst_case(request) if request is not None else 0.0
            if worst is None:
                raise LMError(f"{backend.model}: nothing bounds the length of its replies, so a dollar budget cannot "
                              "admit the call: give the lm (or the module) max_tokens")
        with self._lock:
            if self.limit is not None and self.used >= self.limit - self.held:
                raise BudgetExhausted(f"the {BudgetExhausted.MARK} ({self.limit} calls)")
            if self.usd is not None:
                left = self.usd - self.held_usd - self.spent - self.reserved
                if worst > left + 1e-12:
                    refused = BudgetExhausted(f"the {BudgetExhausted.MARK} ({money(self.usd)}): {backend.model}'s "
                                              f"call could cost up to ${worst:.4f}, ${max(0.0, left):.4f} is left")
                    refused.waitable = self.reserved > 0 and worst <= left + self.reserved + 1e-12
                    if not refused.waitable:
                        self.refused_usd = worst if self.refused_usd is None else min(self.refused_usd, worst)
                    raise refused
                self.reserved += worst
            self.used += 1
        return worst

    def settle(self, reserved: float, cost: float) -> None:
        """A call admitted with `reserved` dollars is over and cost `cost`."""
        if self.usd is None:
            return
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += cost


def money(amount: float, limit: float | None = None) -> str:
    """Dollars as a progress line shows them: cents for amounts of a dollar or more (or under a
    limit of a dollar or more), else four decimals.

    >>> money(0.4213, 2.5), money(2.5), money(0.0123)
    ('$0.42', '$2.50', '$0.0123')
    """
    scale = limit if limit is not None else amount
    return f"${amount:,.2f}" if scale >= 1 else f"${amount:.4f}"
