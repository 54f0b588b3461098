"""Progress lines for long runs: a batch's (done/total, failures, rate) and a compile's (phase, trial,
best score); both show the LM side the same way (`counters`)."""
from __future__ import annotations

import sys
import time


class Progress:
    """Redraws one line on a terminal (at most 10 times a second) and clears it at the end; `finish`
    returns the closing summary, the same numbers without the bar, for the caller to print or not
    (`--no-progress` prints neither).

    >>> p = Progress(10, enabled=False)
    >>> p.advance(ok=True); p.done, p.failed
    (1, 0)
    """

    def __init__(self, total: int | None, stats=None, enabled: bool | None = None, stream=None, label: str = "rows"):
        self.total = total
        self.stats = stats
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.done = self.failed = self.skipped = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        self.draw()

    def skip(self) -> None:
        self.skipped += 1

    def line(self, bar: bool = True) -> str:
        """The progress line; `bar=False` leaves out the bar (the closing summary).

        >>> p = Progress(4, enabled=False); p.advance(True)
        >>> p.line().split()[:2], p.line(bar=False).split()[:2]
        (['[######..................]', '1/4'], ['1/4', 'rows'])
        """
        elapsed = time.perf_counter() - self.start
        parts = []
        if self.total:
            if bar:
                width = 24
                filled = int(width * min(self.done, self.total) / self.total)
                parts.append("[" + "#" * filled + "." * (width - filled) + "]")
            parts.append(f"{self.done}/{self.total} {self.label}")
        else:
            parts.append(f"{self.done} {self.label}")
        parts.append(f"{self.failed} failed")
        if self.stats is not None:
            parts.append(counters(self.stats))
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts.append(f"{rate:.1f}/s")
        parts.append(f"{elapsed:.1f}s")
        return " ".join(parts)

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        redraw(self.stream, self.line())

    def finish(self) -> str:
        """Clear the live line; return the closing summary (no bar: it is a record, not progress)."""
        summary = self.line(bar=False)
        if self.enabled:
            redraw(self.stream, "")
        return summary


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


class CompileProgress:
    """A compile's status line: phase (and the LM it runs on, where that is not the pipeline's own:
    the proposer), trial, best score so far, then the LM side as a batch shows it (calls of the
    budget, cache hits, tokens, cost; under a dollar budget, the dollars spent of it), and the time."""

    def __init__(self, budget, stats, enabled: bool | None, stream=None):
        self.budget, self.stats = budget, stats
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.best: float | None = None
        self.trial = 0
        self.total: int | None = None
        self.phase = ""
        self.lms: dict[str, str] = {}       # phase -> the LM it runs on ("proposing" -> the proposer)
        self.start = time.perf_counter()

    def line(self) -> str:
        """
        >>> from pipec.budget import Budget
        >>> from pipec.context import Stats
        >>> p = CompileProgress(Budget(100), Stats(), enabled=False); p.phase, p.trial, p.total = "search", 2, 12
        >>> p.line().rsplit("  ", 1)[0]
        'search       trial 2/12  best -  0/100 LM calls (0 cached) 0 tokens $0.0000'
        >>> p.budget = Budget(None, usd=2.5); p.budget.spent = 0.42; p.line().split("  ")[-2]
        '0 LM calls (0 cached) 0 tokens $0.42 of $2.50'
        """
        trial = f"trial {self.trial}" + (f"/{self.total}" if self.total else "")
        best = f"best {self.best:.3f}" if self.best is not None else "best -"
        phase = self.phase + (f" on {self.lms[self.phase]}" if self.phase in self.lms else "")
        usd = getattr(self.budget, "usd", None)
        spend = (self.budget.spent, usd) if usd is not None else None
        return (f"{phase:<12} {trial}  {best}  {counters(self.stats, self.budget.limit, spend)}  "
                f"{time.perf_counter() - self.start:.0f}s")

    def update(self, phase: str | None = None) -> None:
        if phase is not None:
            self.phase = phase
        if self.enabled:
            redraw(self.stream, self.line())

    def close(self) -> None:
        if self.enabled:
            redraw(self.stream, "")


def counters(stats, limit: int | None = None, spend: tuple[float, float] | None = None) -> str:
    """The LM side of a progress line: calls made (of `limit`), cache hits, tokens, cost; with
    `spend` (dollars spent, the dollar budget) the spend of the budget in place of the cost, which
    counts cache hits at their price.

    >>> from pipec.context import Stats
    >>> counters(Stats(), 50), counters(Stats(), spend=(0.0123, 0.5))
    ('0/50 LM calls (0 cached) 0 tokens $0.0000', '0 LM calls (0 cached) 0 tokens $0.0123 of $0.5000')
    """
    from .budget import money
    calls = f"{stats.calls}" + (f"/{limit}" if limit else "")
    cost = f"{money(spend[0], spend[1])} of {money(spend[1])}" if spend is not None else f"${stats.cost:.4f}"
    tokens = _k(stats.prompt_tokens + stats.completion_tokens)
    return f"{calls} LM calls ({stats.cache_hits} cached) {tokens} tokens {cost}"


def redraw(stream, text: str) -> None:
    """Replace the terminal's current line with `text` (nothing: clear it)."""
    stream.write("\r\x1b[2K" + text)
    stream.flush()

