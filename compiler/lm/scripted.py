"""An in-process, deterministic LM for tests and benchmarks (pipec's counterpart of DSPy's DummyLM)."""
from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterable

from .base import FREE, LMBackend, LMReply, LMRequest, Price


class ScriptedLM(LMBackend):
    """Answers from a queue of replies, or from a function of the request.

    Replies may be strings (sent as they are) or dicts (sent as JSON). Every request is recorded in
    `.requests`, so a test can assert on the exact messages a module sent. It is free unless given a
    `price` (None: a model whose price nobody knows), which its replies are charged at. Streamed,
    a reply comes in pieces of `chunk` characters.

    >>> lm = ScriptedLM([{"answer": "4"}, "not json"])
    >>> lm.complete(LMRequest([{"role": "user", "content": "2+2?"}])).text
    '{"answer": "4"}'
    """

    inline = True
    cacheable = False

    def __init__(self, replies: Iterable | None = None, rule: Callable[[LMRequest], object] | None = None,
                 model: str = "scripted/lm", cacheable: bool = False, structured: str = "json_schema",
                 price: Price | None = FREE, chunk: int = 3):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.chunk = chunk          # characters per delta when streaming
        self.queue = deque(replies or ())
        self._price = price
        self.rule = rule
        self.model = model
        self.cacheable = cacheable
        self.structured = structured
        self.requests: list[LMRequest] = []

    def price(self) -> Price | None:
        """The price it was given (free by default), unless an lm declaration declares one."""
        return self.declared_price or self._price

    def _next(self, request: LMRequest):
        self.requests.append(request)
        if self.queue:
            reply = self.queue.popleft()
        elif self.rule is not None:
            reply = self.rule(request)
        else:
            raise AssertionError("ScriptedLM ran out of replies")
        return reply

    def _reply(self, request: LMRequest, reply) -> LMReply:
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, StreamCut):
            raise reply.error
        text = reply if isinstance(reply, str) else json.dumps(reply)
        return LMReply(text, prompt_tokens=sum(len(m["content"]) for m in request.messages) // 4,
                       completion_tokens=len(text) // 4)

    def complete(self, request: LMRequest) -> LMReply:
        return self._reply(request, self._next(request))

    async def astream(self, request: LMRequest) -> AsyncIterator[str | LMReply]:
        """The reply in pieces of `chunk` characters (a `StreamCut` sends its text, then fails), with a
        turn of the event loop between pieces as a network stream would give.

        >>> import asyncio
        >>> async def items(lm):
        ...     return [x async for x in lm.astream(LMRequest([]))]
        >>> asyncio.run(items(ScriptedLM([{"a": 1}], chunk=4)))[:-1]
        ['{"a"', ': 1}']
        """
        reply = self._next(request)
        if isinstance(reply, StreamCut):
            for i in range(0, len(reply.text), self.chunk):
                yield reply.text[i:i + self.chunk]
                await asyncio.sleep(0)
            raise reply.error
        out = self._reply(request, reply)
        for i in range(0, len(out.text), self.chunk):
            yield out.text[i:i + self.chunk]
            await asyncio.sleep(0)
        yield out


@dataclass(frozen=True)
class StreamCut:
    """A scripted reply that breaks off: streaming sends `text` and then raises `error` (a call that
    does not stream raises `error` at once), as a connection dropped mid-reply would.

    >>> from pipec.lm import TransientLMError
    >>> StreamCut('{"a": "par', TransientLMError("dropped")).text
    '{"a": "par'
    """

    text: str
    error: BaseException
