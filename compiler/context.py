"""Per-run state: the LMs, the cache, counters, and the trace of every LM call.

`Runtime` is shared by all rows of a run; `RowContext` belongs to one row and collects its trace.
All LM traffic goes through `NodeContext.complete`, the single place that applies the cache,
retries with backoff, and records what was sent and received.
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from .cache import LMCache, cache_key
from .lm.base import AuthLMError, LMBackend, LMError, LMReply, LMRequest, TransientLMError
from .lm.fallback import FallbackLM
from .secrets import redact


@dataclass(slots=True)
class CallRecord:
    """One LM call (or cache hit) as it happened."""

    node: str
    module: str
    predictor: str
    model: str
    messages: list[dict[str, str]]
    raw: str = ""
    parsed: dict | None = None
    error: str | None = None
    cache_hit: bool = False
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    attempt: int = 1
    inputs: dict | None = None      # the values the predictor was called with (demo material)
    cache_key: str = ""
    # Through a fallback lm: the declared lm that answered (`model` is its model) and, before it, each
    # lm that failed, as "name: error". Empty for a call on an lm that declares a model.
    lm: str = ""
    fell_back: list[str] = dataclasses.field(default_factory=list)
    # When the call (or cache lookup) began, in ns since the epoch: where its OpenTelemetry span starts
    # (`pipec.otel`). Not part of `to_dict`: traces written to files stay as they were.
    start_ns: int = dataclasses.field(default_factory=time.time_ns)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if k != "start_ns"}


class Stats:
    """Counters over a run: LM calls made, cache hits, tokens, cost (safe to update from threads), and
    the requests (calls and cache hits) each LM answered, by its id: what a compile's report lists
    as the LMs it really used."""

    __slots__ = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost", "by_lm", "_lock")

    def __init__(self):
        self.calls = self.cache_hits = self.prompt_tokens = self.completion_tokens = 0
        self.cost = 0.0
        self.by_lm: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, reply: LMReply, lm: str = "") -> None:
        with self._lock:
            self.calls += 1
            if lm:
                self.by_lm[lm] = self.by_lm.get(lm, 0) + 1
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens
            self.cost += reply.cost

    def hit(self, reply: LMReply, lm: str = "") -> None:
        """A cache hit: no call made, but its tokens and cost still describe the work (so reports
        are the same whether or not the cache was warm)."""
        with self._lock:
            self.cache_hits += 1
            if lm:
                self.by_lm[lm] = self.by_lm.get(lm, 0) + 1
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens
            self.cost += reply.cost

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Runtime:
    """What every row of a run shares: LM backends by declared name, the cache, the counters."""

    __slots__ = ("lms", "cache", "stats", "sleep", "budget")

    def __init__(self, lms: dict[str, LMBackend], cache: LMCache | None, stats: Stats | None = None,
                 budget=None):
        self.lms = lms
        self.cache = cache
        self.stats = stats or Stats()
        self.sleep = time.sleep
        self.budget = budget       # a Budget: every real LM call (not cache hits) takes one unit, and its cost


class RowContext:
    """One row's run: its trace and whether it runs inline (no event loop) or on asyncio."""

    __slots__ = ("runtime", "trace", "inline", "started_ns", "nodes", "watch")

    def __init__(self, runtime: Runtime, inline: bool, watch=None):
        self.runtime = runtime
        # Who follows the row as it runs (`pipec.streaming.Watch`): told of each node that finishes and
        # handed the text of the LM calls it listens to as it streams. None for a row nobody streams.
        self.watch = watch
        self.trace: list[CallRecord] = []
        self.inline = inline
        # For OpenTelemetry spans (`pipec.otel`): when the row began, and each node run as
        # (node id, module, start ns, end ns, failed), in the order they finished.
        self.started_ns = time.time_ns()
        self.nodes: list[tuple[str, str, int, int, bool]] = []

    def node(self, node_id: str, module: str) -> NodeContext:
        return NodeContext(self, node_id, module)


class _Failed:
    """A sub-call's exception, held until its siblings have finished (never a sub-call's result)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


async def _held(call):
    """`call`'s result, or its exception held in a `_Failed` (a result may itself be an exception)."""
    try:
        return await call
    except Exception as err:
        return _Failed(err)


class NodeContext:
    """The view of a row that one node's module gets: it knows which node is calling."""

    __slots__ = ("row", "node_id", "module")

    def __init__(self, row: RowContext, node_id: str, module: str):
        self.row, self.node_id, self.module = row, node_id, module

    async def gather(self, *coros):
        """Run sub-calls concurrently on asyncio, in order when inline; their results in order.

        Every sub-call runs to its end even when one fails, and then the first failure (in argument
        order) is raised: no sibling is left running after the module has failed, none is left
        unawaited, and the trace is the same inline and on asyncio. A cancellation or Ctrl-C stops them
        all at once."""
        if self.row.inline:
            out: list = []
            pending = iter(coros)
            try:
                for c in pending:
                    try:
                        out.append(await c)
                    except Exception as err:
                        out.append(_Failed(err))
            except BaseException:
                for c in pending:
                    c.close()
                raise
        else:
            tasks = [asyncio.ensure_future(_held(c)) for c in coros]
            try:
                out = list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        for r in out:
            if isinstance(r, _Failed):
                raise r.error
        return out

    async def complete(self, predictor: str, lm: str, request: LMRequest, attempt: int = 1) -> tuple[LMReply, CallRecord]:
        """Ask lm `lm` (a runtime key: a declared name) for a reply, through the cache, retries and the
        budget; the call is recorded in the row's trace. A fallback lm asks its lms in turn."""
        row = self.row
        backend = row.runtime.lms[lm]
        rec = CallRecord(self.node_id, self.module, predictor, backend.model, request.messages, attempt=attempt)
        row.trace.append(rec)
        listener = row.watch.listen(self.node_id, predictor) if row.watch is not None and not row.inline else None
        stream = Stream(listener) if listener is not None else None
        if isinstance(backend, FallbackLM):
            return await self._fall_back(backend, request, rec, stream), rec
        key = self._key(backend, request)
        hit = await self._cached(key, backend, rec) if key is not None else None
        return (hit if hit is not None else await self._answer(backend, request, rec, key, stream)), rec

    async def _fall_back(self, fallback: FallbackLM, request: LMRequest, rec: CallRecord,
                         stream: "Stream | None" = None) -> LMReply:
        """The first answer of a fallback's lms: a reply one of them has in the cache (in their order:
        a rerun replays what answered, without asking an lm that failed before), else each asked in
        turn until one answers or one fails in a way no other lm can help (`LMError.falls_back`). A
        streamed call falls over only while no text has arrived: an lm that failed after part of its
        reply was shown fails the call, as another lm's reply would not continue the text shown."""
        asked = []
        for member in fallback.members:
            sent = member.request(request)
            asked.append((member, sent, self._key(member.backend, sent)))
        for member, _, key in asked:
            hit = await self._cached(key, member.backend, rec) if key is not None else None
            if hit is not None:
                rec.lm, rec.model = member.name, member.backend.model
                return hit
        for i, (member, sent, key) in enumerate(asked):
            rec.lm, rec.model = member.name, member.backend.model
            try:
                reply = await self._answer(member.backend, sent, rec, key, stream)
            except LMError as err:
                if not err.falls_back or (stream is not None and stream.started):
                    raise
                rec.fell_back.append(f"{member.name}: {err}")
                if i == len(asked) - 1:
                    raise LMError(f"fallback {fallback.name}: every lm it tries failed: "
                                  + "; ".join(rec.fell_back)) from None
                continue
            rec.error = None
            return reply
        raise AssertionError("unreachable")

    def _key(self, backend: LMBackend, request: LMRequest) -> str | None:
        """The cache key of `backend`'s reply to `request`; None when its replies are not cached."""
        if self.row.runtime.cache is None or not backend.cacheable:
            return None
        return cache_key(backend.describe(), request)

    async def _cached(self, key: str, backend: LMBackend, rec: CallRecord) -> LMReply | None:
        """The cached reply under `key` (counted and recorded as a hit), or None."""
        rt = self.row.runtime
        # Off the event loop's thread when rows run concurrently: a slow disk delays this row only.
        hit = rt.cache.get(key) if self.row.inline else await rt.cache.aget(key)
        if hit is None:
            return None
        hit = _valid_text(hit)
        rt.stats.hit(hit, backend.model)
        rec.cache_hit = True
        rec.raw, rec.prompt_tokens, rec.completion_tokens = hit.text, hit.prompt_tokens, hit.completion_tokens
        return hit

    async def _answer(self, backend: LMBackend, request: LMRequest, rec: CallRecord, key: str | None,
                      stream: "Stream | None" = None) -> LMReply:
        """Ask `backend` (retries included), record the reply or the error, count it, and cache it
        under `key` (None: not cached). With a `stream`, the reply is streamed into it as it comes."""
        rt = self.row.runtime
        start = time.perf_counter()
        try:
            reply = await self._call(backend, request, stream)
        except LMError as err:
            rec.error = str(err)
            rec.latency_ms = (time.perf_counter() - start) * 1000.0
            raise
        rec.latency_ms = (time.perf_counter() - start) * 1000.0
        reply = _valid_text(reply)
        rec.raw, rec.prompt_tokens, rec.completion_tokens, rec.cost = (
            reply.text, reply.prompt_tokens, reply.completion_tokens, reply.cost)
        rt.stats.add(reply, backend.model)
        if key is not None:
            rt.cache.put(key, reply)
            rec.cache_key = key
        return reply

    def forget(self, rec: "CallRecord") -> None:
        """Drop a cached reply that turned out unusable (did not parse), so a rerun asks the LM again
        instead of replaying a transient fault forever."""
        cache = self.row.runtime.cache
        if cache is not None and rec.cache_key:
            cache.discard(rec.cache_key)

    async def _call(self, backend: LMBackend, request: LMRequest, stream: "Stream | None" = None) -> LMReply:
        refused = backend.auth_failure
        if refused is not None:
            # The key was refused (or missing) and has not changed since: every row would fail the
            # same way, so fail now, without a request, a retry or a unit of the budget.
            if refused.still_applies():
                raise AuthLMError(str(refused), refused.variable)      # a fresh one: rows tag their own
            backend.auth_failure = None
        tries = backend.max_retries + 1
        budget = self.row.runtime.budget
        for i in range(tries):
            try:
                reply = await self._attempt(backend, request, budget, stream)
                if not backend.answered:
                    backend.answered = True
                return reply
            except TransientLMError as err:
                if i == tries - 1:
                    raise LMError(f"{err} (gave up after {tries} attempts)") from None
                delay = min(MAX_RETRY_AFTER,
                            _retry_delay(err.retry_after, i, backend.backoff) * (1.0 + random.random() * 0.25))
                if self.row.inline:
                    self.row.runtime.sleep(delay)
                else:
                    await asyncio.sleep(delay)
            except AuthLMError as err:
                # Never retried. A key that never worked here is taken as wrong until its variable
                # changes; one that has worked is tried again by the next call (a one-off refusal).
                if not backend.answered:
                    backend.auth_failure = err
                raise
            except LMError:
                raise
            except Exception as err:   # a backend bug or an unexpected library error: this row fails, not the batch
                raise LMError(f"{backend.model}: {type(err).__name__}: {redact(str(err))}") from err
        raise AssertionError("unreachable")

    async def _attempt(self, backend: LMBackend, request: LMRequest, budget, stream: "Stream | None" = None) -> LMReply:
        """One request through the budget: admitted (every attempt is an LM call, retries included,
        and under a dollar limit its worst case is reserved), sent, then charged what it cost."""
        reserved = await self._admitted(backend, request, budget) if budget is not None else 0.0
        try:
            if self.row.inline:
                reply = backend.complete(request)
            elif stream is None:
                reply = await backend.acomplete(request)
            else:
                reply = await stream.follow(backend, request)
        except BaseException as err:
            if budget is not None:
                budget.settle(reserved, reserved if getattr(err, "may_be_billed", False) else 0.0)
            raise
        reply = _priced(reply, backend)
        if budget is not None:
            budget.settle(reserved, reply.cost)
        return reply

    async def _admitted(self, backend: LMBackend, request: LMRequest, budget) -> float:
        """The budget's admission of one call. A call that does not fit only because the calls in
        flight hold their worst cases waits for them to be charged what they really cost (most cost
        far less) rather than fail its row while the money is there."""
        from .budget import BudgetExhausted
        delay = 0.001
        while True:
            try:
                return budget.take(backend, request)
            except BudgetExhausted as refused:
                if not refused.waitable:
                    raise
            # The holders run on other tasks, or on other threads for an inline row in a worker
            # thread (an inline row on the loop's own thread never overlaps another call).
            if self.row.inline:
                time.sleep(delay)
            else:
                await asyncio.sleep(delay)
            delay = min(0.05, delay * 2)


MAX_RETRY_AFTER = 60.0


class Stream:
    """One streamed LM call: each attempt's text is handed, as it grows, to `listener` (a function of
    the text so far, "" as an attempt starts); `started` once any text has arrived (a fallback then
    stops falling over)."""

    __slots__ = ("listener", "started")

    def __init__(self, listener):
        self.listener = listener
        self.started = False

    async def follow(self, backend: LMBackend, request: LMRequest) -> LMReply:
        """`backend`'s reply to `request`, streamed (`LMBackend.astream`): the same reply as
        `acomplete`'s, and the same errors."""
        import contextlib
        text, reply = "", None
        self.listener("")               # an attempt starts: any text of an earlier one is over
        async with contextlib.aclosing(backend.astream(request)) as items:
            async for item in items:
                if isinstance(item, LMReply):
                    reply = item
                elif item:
                    text += item
                    self.started = True
                    self.listener(text)
        if reply is None:
            raise TransientLMError(f"{backend.model}: the stream ended without a reply")
        return reply


def _priced(reply: LMReply, backend: LMBackend) -> LMReply:
    """The reply with its cost, where the backend did not price it itself (a declared price, the
    scripted LM's, litellm's map when its reply came without a cost): tokens at the LM's price."""
    if reply.cost or not (reply.prompt_tokens or reply.completion_tokens):
        return reply
    price = backend.price()
    if price is None or price.free:
        return reply
    return dataclasses.replace(reply, cost=price.cost(reply.prompt_tokens, reply.completion_tokens))


def auth_failures(backends) -> list[AuthLMError]:
    """The authentication failures among these LM backends that still apply, one per LM. An lm that
    a fallback among them tries is left out while another lm of that fallback can still answer (the
    fallback does); a fallback none of whose lms can answer brings each of theirs.

    An lm both used on its own and tried by such a fallback is left out too: its calls on its own
    still fail, each naming the key, but this summary does not repeat it."""
    backends = list(backends)
    covered = {id(m.backend) for b in backends if isinstance(b, FallbackLM) and not b.refused() for m in b.members}
    out: list[AuthLMError] = []
    for b in backends:
        for one in ([m.backend for m in b.members] if isinstance(b, FallbackLM) else [b]):
            err = one.auth_failure
            if err is not None and err.still_applies() and err not in out and id(one) not in covered:
                out.append(err)
    return out


def _valid_text(reply: LMReply) -> LMReply:
    """The reply with lone UTF-16 surrogates replaced by U+FFFD. A provider that cuts an emoji pair
    in half sends `"\\ud83d"`, which decodes to text no encoder accepts: kept as it is, it would kill
    the row's output, the cache write and every report that shows it."""
    text = reply.text
    if text.isascii():
        return reply
    from .reply_parser import scrub
    clean = scrub(text)
    return reply if clean is text else dataclasses.replace(reply, text=clean)


def _retry_delay(retry_after, attempt: int, backoff: float = 0.5) -> float:
    """Seconds before the next attempt: the server's Retry-After when it is sane (finite, from 0 to a
    minute), else exponential backoff from `backoff` seconds (the lm's option), at most 30 s; a hostile
    or broken value (a day, infinity) cannot stall a row.

    >>> _retry_delay(2.0, 0), _retry_delay(float("inf"), 1), _retry_delay(86400, 0), _retry_delay(None, 3, 0.1)
    (2.0, 1.0, 0.5, 0.8)
    """
    import math
    if retry_after is not None:
        try:
            value = float(retry_after)
        except (TypeError, ValueError):
            value = float("nan")
        if math.isfinite(value) and 0 <= value <= MAX_RETRY_AFTER:
            return value
    return min(30.0, backoff * 2 ** attempt)
