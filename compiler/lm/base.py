"""The one LM interface the runtime talks to: a request in, a reply out, sync or async."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class LMRequest:
    """Everything that determines a reply, and nothing secret: it is hashed for the cache key."""

    messages: list[dict[str, str]]
    schema: dict | None = None                        # JSON schema of the expected reply object
    params: dict[str, Any] = field(default_factory=dict)   # temperature, max_tokens, stop, seed, ...
    sample: int = 0     # which of n samples this is: part of the cache key, and of the seed where one is sent
    # A digest of messages[:prefix_len] plus the schema (a predictor's fixed prompt), computed once
    # per predictor so a cache key hashes only what changes per call. 0 means no prefix digest.
    prefix_key: str = ""
    prefix_len: int = 0


@dataclass(slots=True)
class LMReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    truncated: bool = False     # the reply stopped at the token limit (finish_reason "length")


class LMError(Exception):
    """A provider failed after retries; the message names the model and never holds a key."""


class TransientLMError(LMError):
    """A failure worth retrying: timeout, rate limit, server error, dropped connection."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class LMBackend:
    """Base class of LM backends.

    `inline` backends answer in this process without waiting on I/O (the scripted LM, the embedded
    model); a pipeline whose LMs are all inline runs without an event loop, which keeps per-call
    overhead to a few microseconds. `blocking` inline backends hold the CPU for a long time, so batch
    runs call them from a worker thread to keep progress reporting alive.
    """

    model: str = ""
    inline: bool = False
    blocking: bool = False
    cacheable: bool = True
    structured: str = "json_schema"     # how this backend is asked for structured output
    max_retries: int = 3

    def complete(self, request: LMRequest) -> LMReply:
        raise NotImplementedError

    async def acomplete(self, request: LMRequest) -> LMReply:
        if self.blocking:
            return await asyncio.to_thread(self.complete, request)
        return self.complete(request)

    def describe(self) -> str:
        return self.model
