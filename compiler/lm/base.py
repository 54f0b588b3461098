"""The one LM interface the runtime talks to: a request in, a reply out, sync or async."""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator


# Sampling options travel in each request (and so in the cache key); the rest configure the backend.
SAMPLING = ("temperature", "max_tokens", "top_p", "stop", "seed")


def declared_sampling(lm_decl) -> dict[str, Any]:
    """The sampling options written on an `lm` declaration (None: no declaration, no options).

    >>> from types import SimpleNamespace as NS
    >>> declared_sampling(NS(options=[NS(name="temperature", value=0.2), NS(name="model", value="x")]))
    {'temperature': 0.2}
    """
    return {o.name: o.value for o in lm_decl.options if o.name in SAMPLING} if lm_decl is not None else {}


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


@dataclass(frozen=True, slots=True)
class Price:
    """What an LM's tokens cost, in dollars per token, and the longest reply it may send
    (`max_output`, None when unknown): what a dollar budget admits a call against.

    >>> p = Price.per_million(0.15, 0.60, max_output=100)
    >>> round(p.cost(1000, 50), 8), round(p.worst_case(LMRequest([{"role": "user", "content": "hi"}])), 8)
    (0.00018, 6.27e-05)
    """

    input: float
    output: float
    max_output: int | None = None
    source: str = ""                # where the price comes from, for messages: "declared", "litellm's price map"

    @classmethod
    def per_million(cls, input: float, output: float, max_output: int | None = None,
                    source: str = "declared") -> "Price":
        """A price as providers quote it: dollars per million prompt and reply tokens."""
        return cls(float(input) / 1e6, float(output) / 1e6, max_output, source)

    @property
    def free(self) -> bool:
        return self.input == 0 and self.output == 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What a reply with these token counts cost."""
        return prompt_tokens * self.input + completion_tokens * self.output

    def worst_case(self, request: LMRequest) -> float | None:
        """The most `request` can cost: its prompt at one token per byte and its longest reply at
        the output price. None when nothing bounds the reply (no max_tokens, no known `max_output`)."""
        if self.free:
            return 0.0
        longest = request.params.get("max_tokens") or self.max_output
        if not longest and self.output:
            return None
        return self.cost(prompt_bound(request), int(longest or 0))


# Tokens a chat format adds around each message (role markers, separators); generous on purpose.
MESSAGE_OVERHEAD = 8


def prompt_bound(request: LMRequest) -> int:
    """An upper bound on a request's prompt tokens: every byte-level BPE tokenizer (GPT, Llama,
    Claude, Qwen) spends at most one token per UTF-8 byte, plus the chat format's markers and the
    JSON schema the provider is sent with it (billed as input).

    >>> prompt_bound(LMRequest([{"role": "user", "content": "héllo"}]))
    22
    """
    import json
    size = sum(len(str(m.get("content", "")).encode("utf-8", "surrogatepass")) + MESSAGE_OVERHEAD
               for m in request.messages)
    if request.schema is not None:
        size += len(json.dumps(request.schema).encode("utf-8"))
    return size + MESSAGE_OVERHEAD


FREE = Price(0.0, 0.0, source="a local model")


class LMError(Exception):
    """A provider failed after retries; the message names the model and never holds a key."""

    # Whether the provider may have run (and billed) the request although no reply came back: a
    # timeout on our side. A dollar budget charges such an attempt at its worst case.
    may_be_billed = False
    # Whether a fallback lm tries its next lm after this failure: another provider may well answer
    # what this one could not. Not when the request itself is at fault, nor when our budget is spent.
    falls_back = True


class BadRequestLMError(LMError):
    """The LM refused the request itself (HTTP 400 or 422: a parameter it does not take, a malformed
    body). Never retried, and never passed on to a fallback's next lm: the same request is most likely
    as wrong there, and a fallback must not hide a mistake in the program or its lm options behind
    another LM's answers."""

    falls_back = False


class ContextWindowLMError(LMError):
    """The prompt (with the reply's room) does not fit the LM's context window. Never retried (it
    will not fit the next time either); a fallback's next lm is tried, since it may have a larger one."""


class AuthLMError(LMError):
    """The provider refused the credentials, or there were none: permanent, never retried.

    `variable` names the environment variable to set. When the LM has not answered a request in
    this process yet (the key never worked), every later call to it fails at once with this error,
    without a request, until that variable's value changes (see `NodeContext._call`): a batch or a
    compile whose key is missing or wrong ends in seconds instead of spending a request (and, before,
    retries and backoff) on every row. A refusal after the key has worked fails only its own call.
    """

    def __init__(self, message: str, variable: str | None = None):
        super().__init__(message)
        self.variable = variable
        self.key_state = _key_state(variable)

    def still_applies(self) -> bool:
        """Whether the variable holds what it held when the call was refused (a key set or changed
        since then deserves a new attempt)."""
        return self.key_state == _key_state(self.variable)


def _key_state(variable: str | None) -> str:
    """A digest of the variable's value (never the value itself: exceptions end up in logs); for
    "A or B" (a provider whose key litellm reads from any of several variables), of each one's.

    >>> import os
    >>> before = _key_state("PIPEC_DOC_A or PIPEC_DOC_B")
    >>> os.environ["PIPEC_DOC_B"] = "a key set since"
    >>> _key_state("PIPEC_DOC_A or PIPEC_DOC_B") != before
    True
    >>> del os.environ["PIPEC_DOC_B"]
    """
    import hashlib
    import os
    value = "\0".join(os.environ.get(name, "") for name in variable.split(" or ")) if variable else ""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class TransientLMError(LMError):
    """A failure worth retrying: timeout, rate limit, server error, dropped connection."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# What a provider says when the key is missing, wrong or refused. litellm reports a missing OpenAI key
# as a 500 InternalServerError and a missing Gemini key as an APIConnectionError, so the status alone
# would have them retried as server faults.
AUTH_TEXT = re.compile(
    r"missing credentials|missing (?:[\w-]+ )?api[ _-]?key|(?:no|invalid|incorrect|wrong|expired) (?:[\w-]+ )?"
    r"(?:api[ _-]?key|credentials)|api[ _-]?key (?:is )?(?:not (?:set|valid|found|provided)|missing|"
    r"must be set|invalid|expired)|unauthori[sz]ed|authentication (?:failed|error|required)", re.IGNORECASE)


# What providers and servers say when a prompt does not fit: OpenAI and vLLM ("maximum context length",
# code context_length_exceeded), llama.cpp's server ("exceeds the available context size") and
# llama-cpp-python ("exceed context window"), Anthropic ("prompt is too long"), litellm's own class.
CONTEXT_TEXT = re.compile(
    r"context[_ ]length[_ ]exceeded|maximum context length|context[_ ]window[_ ]exceeded|"
    r"exceeds? (?:the )?(?:available |model'?s? |maximum )?context|prompt is too long|input is too long|"
    r"too many (?:input |prompt )?tokens", re.IGNORECASE)


def is_context_overflow(text: str, name: str = "") -> bool:
    """Whether an error means "the prompt does not fit the context window".

    >>> is_context_overflow("This model's maximum context length is 2048 tokens. However, you requested 3000")
    True
    >>> is_context_overflow("the request exceeds the available context size, try increasing it")
    True
    >>> is_context_overflow("Requested tokens (4100) exceed context window of 2048")
    True
    >>> is_context_overflow("Unsupported parameter: 'seed'"), is_context_overflow("", "ContextWindowExceededError")
    (False, True)
    """
    return name == "ContextWindowExceededError" or bool(CONTEXT_TEXT.search(text))


def request_error(model: str, said: str, context: bool) -> LMError:
    """The one error a refused request gets (a status 400-class reply that is not about the key):
    which LM, what it said, and what pipec does about it.

    >>> str(request_error("openai/gpt-4o-mini", "HTTP 400: Unsupported parameter: 'seed'", False))
    "openai/gpt-4o-mini: bad request (HTTP 400: Unsupported parameter: 'seed'): not retried, and no fallback is tried"
    >>> type(request_error("local/smollm2", "exceed context window of 2048", True)).__name__
    'ContextWindowLMError'
    """
    if context:
        return ContextWindowLMError(f"{model}: the prompt does not fit its context window ({said}): not retried")
    return BadRequestLMError(f"{model}: bad request ({said}): not retried, and no fallback is tried")


def is_auth_failure(status, text: str, name: str = "") -> bool:
    """Whether an error means "your credentials": HTTP 401 or 403, litellm's AuthenticationError or
    PermissionDeniedError, or a message that says the key is missing or wrong.

    >>> is_auth_failure(500, "OpenAIException - Missing credentials. Please pass an `api_key`")
    True
    >>> is_auth_failure(503, "upstream overloaded"), is_auth_failure(401, "")
    (False, True)
    """
    return status in (401, 403) or name in ("AuthenticationError", "PermissionDeniedError") or \
        bool(AUTH_TEXT.search(text))


def auth_message(model: str, detail: str, variable: str | None, declared: bool) -> str:
    """The one message an authentication failure gets: which LM, what the provider said, what to set.

    >>> auth_message("openai/gpt-4o-mini", "no key", "OPENAI_API_KEY", False)  # doctest: +NORMALIZE_WHITESPACE
    'openai/gpt-4o-mini: authentication failed (no key): set OPENAI_API_KEY to a valid key, or name the
     variable that holds one with `api_key_env:` in the lm declaration; not retried'
    """
    if variable and declared:
        todo = f"set {variable} (the lm's api_key_env) to a valid key"
    elif variable:
        todo = (f"set {variable} to a valid key, or name the variable that holds one with `api_key_env:` in the lm "
                "declaration")
    else:
        todo = "set the provider's API key variable, or name it with `api_key_env:` in the lm declaration"
    return f"{model}: authentication failed ({detail}): {todo}; not retried"


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
    backoff: float = 0.5                        # seconds before the first retry, doubled for each next one
    auth_failure: AuthLMError | None = None     # the provider refused a key that never worked here
    answered: bool = False                      # a request has succeeded (the key works)
    declared_price: Price | None = None         # the lm declaration's input_price / output_price

    def price(self) -> Price | None:
        """What this LM's tokens cost; None when nobody knows (a dollar budget cannot be enforced).
        A declared price wins; backends that know their own (local: free; hosted: litellm's price
        map) say so."""
        return self.declared_price

    def complete(self, request: LMRequest) -> LMReply:
        raise NotImplementedError

    async def acomplete(self, request: LMRequest) -> LMReply:
        if self.blocking:
            return await asyncio.to_thread(self.complete, request)
        return self.complete(request)

    async def astream(self, request: LMRequest) -> AsyncIterator[str | LMReply]:
        """The reply to `request` as it is generated: text deltas (`str`), then the `LMReply` that
        `acomplete` would have returned (the whole text, tokens, cost, `truncated`) as the last item.
        Errors are the same `LMError`s `acomplete` raises. This fallback sends the whole reply as
        one delta, so every backend streams; backends that can do better override it.

        >>> from pipec.lm import ScriptedLM
        >>> async def items():
        ...     return [x async for x in LMBackend.astream(ScriptedLM(["hi"]), LMRequest([]))]
        >>> asyncio.run(items())
        ['hi', LMReply(text='hi', prompt_tokens=0, completion_tokens=0, cost=0.0, truncated=False)]
        """
        reply = await self.acomplete(request)
        if reply.text:
            yield reply.text
        yield reply

    def describe(self) -> str:
        return self.model
