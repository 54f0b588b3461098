"""An in-process, deterministic LM for tests and benchmarks (pipec's counterpart of DSPy's DummyLM)."""
from __future__ import annotations

import json
from collections import deque
from typing import Callable, Iterable

from .base import FREE, LMBackend, LMReply, LMRequest, Price


class ScriptedLM(LMBackend):
    """Answers from a queue of replies, or from a function of the request.

    Replies may be strings (sent as they are) or dicts (sent as JSON). Every request is recorded in
    `.requests`, so a test can assert on the exact messages a module sent. It is free unless given a
    `price` (None: a model whose price nobody knows), which its replies are charged at.

    >>> lm = ScriptedLM([{"answer": "4"}, "not json"])
    >>> lm.complete(LMRequest([{"role": "user", "content": "2+2?"}])).text
    '{"answer": "4"}'
    """

    inline = True
    cacheable = False

    def __init__(self, replies: Iterable | None = None, rule: Callable[[LMRequest], object] | None = None,
                 model: str = "scripted/lm", cacheable: bool = False, structured: str = "json_schema",
                 price: Price | None = FREE):
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

    def complete(self, request: LMRequest) -> LMReply:
        self.requests.append(request)
        if self.queue:
            reply = self.queue.popleft()
        elif self.rule is not None:
            reply = self.rule(request)
        else:
            raise AssertionError("ScriptedLM ran out of replies")
        if isinstance(reply, BaseException):
            raise reply
        text = reply if isinstance(reply, str) else json.dumps(reply)
        return LMReply(text, prompt_tokens=sum(len(m["content"]) for m in request.messages) // 4,
                       completion_tokens=len(text) // 4)
