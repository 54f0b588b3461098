"""A progress line for long runs: done/total, failures, LM calls, tokens, cost, rate."""
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
            st = self.stats
            parts.append(f"{st.calls} LM calls ({st.cache_hits} cached)")
            parts.append(f"{_k(st.prompt_tokens + st.completion_tokens)} tokens")
            parts.append(f"${st.cost:.4f}")
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
        self.stream.write("\r\x1b[2K" + self.line())
        self.stream.flush()

    def finish(self) -> str:
        """Clear the live line; return the closing summary (no bar: it is a record, not progress)."""
        summary = self.line(bar=False)
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        return summary


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)
