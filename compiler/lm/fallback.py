"""A fallback lm: `lm robust = fallback(gpt, local)` tries the lms it names in order until one answers.

It is not a client of its own: `NodeContext.complete` sends each request to its lms one after the
other, each through the usual path (its own cache entries, retries and backoff, rate limit, key and
budget), and moves on when one fails for good in a way another LM might not (`LMError.falls_back`):

| failure of an lm                                  | retried                 | next lm tried |
|---------------------------------------------------|-------------------------|---------------|
| timeout, 408/409/425/429, 5xx, dropped connection | yes, `num_retries` times | yes, then     |
| refused or missing key (401/403)                  | no                      | yes           |
| prompt over the context window                    | no                      | yes           |
| bad request (400/422: a parameter, the body)      | no                      | no: fails     |
| anything else (404 no such model, a library bug)  | no                      | yes           |
| the compile's budget is spent                     | no                      | no: fails     |

What the runtime asks of a backend (`inline`, `blocking`, `structured`, `price`, `describe`) a fallback
answers for its lms together.

A streamed call (`Program.stream`) falls over the same way, but only while no text of the reply has
arrived: once an lm has streamed part of its reply (and a caller may have shown it), its failure
fails the call, since another lm's reply would not continue that text.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .base import LMBackend, LMReply, LMRequest, Price


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One lm a fallback tries: its declared name, its backend, and the sampling its declaration sets
    (under the fallback's and the module's own, as a module's options are over its lm's)."""

    name: str
    backend: LMBackend
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)

    def request(self, request: LMRequest) -> LMRequest:
        """`request` as this lm is sent it: its own sampling under the request's, and no reply schema
        when it takes none (a text-only server), exactly as a module on this lm would ask: so the
        same question has the same cache entry whether it came through the fallback or not.

        >>> from pipec.lm import ScriptedLM
        >>> m = Member("local", ScriptedLM(structured="text"), {"temperature": 0.2, "max_tokens": 32})
        >>> r = m.request(LMRequest([{"role": "user", "content": "hi"}], {"type": "object"}, {"temperature": 0}))
        >>> r.params, r.schema
        ({'temperature': 0, 'max_tokens': 32}, None)
        """
        params = {**self.sampling, **request.params} if self.sampling else request.params
        schema = None if self.backend.structured == "text" else request.schema
        if params is request.params and schema is request.schema:
            return request
        return dataclasses.replace(request, params=params, schema=schema)


class FallbackLM(LMBackend):
    """The lms of a fallback declaration, in the order they are tried (nested fallbacks flattened).

    >>> from pipec.lm import ScriptedLM
    >>> lm = FallbackLM("robust", [Member("gpt", ScriptedLM(model="openai/gpt-4o-mini")),
    ...                            Member("local", ScriptedLM(model="local/smollm2", structured="text"))])
    >>> lm.model, lm.inline, lm.structured
    ('fallback(gpt, local)', True, 'json_schema')
    """

    cacheable = False           # each lm's replies are cached under its own key, never the fallback's

    def __init__(self, name: str, members: list[Member]):
        if len(members) < 2:
            raise ValueError(f"fallback {name} needs at least two lms")
        self.name = name
        self.members = tuple(members)
        self.model = "fallback(" + ", ".join(m.name for m in self.members) + ")"
        backends = [m.backend for m in self.members]
        self.inline = all(b.inline for b in backends)
        self.blocking = any(b.blocking for b in backends)
        # A request carries the reply schema when any lm takes one; each lm gets it its own way.
        self.structured = next((b.structured for b in backends if b.structured != "text"), "text")

    def describe(self) -> str:
        """The identity its replies depend on: its lms', in order."""
        return "fallback(" + ", ".join(m.backend.describe() for m in self.members) + ")"

    def price(self) -> Price | None:
        """The dearest of its lms' prices, per token and in reply length (None when one is unknown),
        since any of them may answer: what a dollar budget must admit a call against.

        >>> from pipec.lm import ScriptedLM
        >>> cheap, dear = ScriptedLM(price=Price.per_million(0.1, 0.4, 100)), ScriptedLM(price=Price.per_million(1, 4))
        >>> p = FallbackLM("f", [Member("cheap", cheap), Member("dear", dear, {"max_tokens": 300})]).price()
        >>> round(p.input * 1e6, 2), round(p.output * 1e6, 2), p.max_output
        (1.0, 4.0, 300)
        """
        prices = [(m.backend.price(), m.sampling.get("max_tokens")) for m in self.members]
        if any(price is None for price, _ in prices):
            return None
        longest = [own or price.max_output for price, own in prices if not price.free]
        return Price(max(price.input for price, _ in prices), max(price.output for price, _ in prices),
                     max(longest) if longest and all(longest) else None, "the dearest of " + self.model)

    def refused(self) -> bool:
        """Whether every lm it tries has refused a key that still applies: nothing can answer."""
        return all(m.backend.auth_failure is not None and m.backend.auth_failure.still_applies()
                   for m in self.members)

    def complete(self, request: LMRequest) -> LMReply:
        raise TypeError(f"{self.model} is answered by its lms: send requests through NodeContext.complete")


def attempts_per_call(backend: LMBackend) -> int:
    """The most requests one LM call may send: every attempt (the first and `num_retries` more) of
    each lm a fallback tries.

    >>> from pipec.lm import ScriptedLM
    >>> a, b = ScriptedLM(), ScriptedLM(); a.max_retries, b.max_retries = 3, 0
    >>> attempts_per_call(a), attempts_per_call(FallbackLM("f", [Member("a", a), Member("b", b)]))
    (4, 5)
    """
    if isinstance(backend, FallbackLM):
        return sum(m.backend.max_retries + 1 for m in backend.members)
    return backend.max_retries + 1
