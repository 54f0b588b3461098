"""The result of running a pipeline on one input: typed outputs, or a recorded failure, plus the trace."""
from __future__ import annotations

from typing import Any


class Prediction:
    """Outputs as attributes (`pred.intent`), the trace of every LM call, and `ok`/`error`.

    A failed example is still a Prediction: `ok` is False, `error` says which node failed and why,
    and `raw` keeps the last reply that did not parse.

    >>> p = Prediction({"intent": "play_music"})
    >>> p.intent, p.ok
    ('play_music', True)
    """

    __slots__ = ("_values", "trace", "error", "raw", "node", "timing")

    def __init__(self, values: dict[str, Any] | None, trace: list | None = None, error: str | None = None,
                 raw: str = "", node: str | None = None):
        self._values = values or {}
        self.trace = trace if trace is not None else []
        self.error = error
        self.raw = raw
        self.node = node
        # (start ns, end ns, node runs) of the row that made it, for `pipec.otel`; None when it never ran
        self.timing: tuple[int, int, list] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            if self.error is not None:
                raise AttributeError(f"no output '{name}': this example failed ({self.error})") from None
            raise AttributeError(f"no output '{name}'; outputs are: {', '.join(self._values)}") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def outputs(self) -> dict[str, Any]:
        return dict(self._values)

    def to_dict(self, trace: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"ok": self.ok, "outputs": self._values if self.ok else None, "error": self.error}
        if not self.ok:
            d["node"] = self.node
            d["raw"] = self.raw
        if trace:
            d["trace"] = [r.to_dict() for r in self.trace]
        return d

    @property
    def lm_calls(self) -> int:
        return sum(not r.cache_hit and r.model[:5] != "tool:" and r.model != "map" for r in self.trace)

    def __repr__(self) -> str:
        if not self.ok:
            return f"Prediction(error={self.error!r})"
        return "Prediction(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def __eq__(self, other) -> bool:
        return isinstance(other, Prediction) and other._values == self._values and other.error == self.error
