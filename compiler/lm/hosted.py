"""Every hosted provider and any OpenAI-compatible server, through litellm (imported on first use)."""
from __future__ import annotations

import os
import re
from typing import AsyncIterator

from .base import (SAMPLING, AuthLMError, LMBackend, LMError, LMReply, LMRequest, Price, TransientLMError,
                   auth_message, is_auth_failure, is_context_overflow, request_error)
from .rate_limit import RateLimiter
from ..secrets import mask_url, redact

_TRANSIENT = {"Timeout", "APITimeoutError", "RateLimitError", "APIConnectionError", "InternalServerError",
              "ServiceUnavailableError", "BadGatewayError"}
_TIMEOUT = {"Timeout", "APITimeoutError"}
# litellm's classes for a request the provider refused as such (ContextWindowExceededError and
# ContentPolicyViolationError are BadRequestErrors too): see `request_error`.
_REFUSED = {"BadRequestError", "ContextWindowExceededError", "UnprocessableEntityError", "UnsupportedParamsError",
            "ContentPolicyViolationError", "InvalidRequestError"}
_REFUSED_STATUS = (400, 413, 422)
# A price map entry's per-token rates: the base rate and the dearer ones above a prompt length
# ("input_cost_per_token_above_200k_tokens"), never the batch or flex discounts we do not ask for.
_RATE = re.compile(r"(input|output)_cost_per_(?:reasoning_)?token(?:_above_\d+k_tokens)?")
_litellm = None


def _lib():
    global _litellm
    if _litellm is None:
        # Without this, litellm fetches a model cost map over the network at import.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import gc

        import litellm
        litellm.suppress_debug_info = True
        litellm.telemetry = False
        # litellm's import leaves about 290,000 tracked objects on the heap, and every full collection
        # walked them all again: a 400-row batch at C = 32 on the direct client spent about a quarter of
        # its CPU in such pauses once litellm was loaded (for the endpoint lookup). Frozen, the collector
        # skips them; they live as long as the process anyway.
        gc.freeze()
        _litellm = litellm
    return _litellm


def list_price(model: str) -> Price | None:
    """A model's price from the price map litellm ships (read from its package, never fetched: see
    `_lib`), at its dearest per-token rates, with its longest reply; None for a model it does not
    list or lists without per-token rates.

    >>> p = list_price("openai/gpt-4o-mini")
    >>> round(p.input * 1e6, 3), round(p.output * 1e6, 3), p.max_output, list_price("acme/unheard-of")
    (0.15, 0.6, 16384, None)
    """
    try:
        info = _lib().get_model_info(model=model)
    except Exception:            # litellm raises its own "This model isn't mapped yet" for unknown ids
        return None
    rates: dict[str, list[float]] = {"input": [], "output": []}
    for key, value in info.items():
        m = _RATE.fullmatch(key)
        if m and isinstance(value, (int, float)) and not isinstance(value, bool):
            rates[m.group(1)].append(float(value))
    if not rates["input"] or not rates["output"]:
        return None
    longest = info.get("max_output_tokens") or info.get("max_tokens")
    return Price(max(rates["input"]), max(rates["output"]), int(longest) if longest else None,
                 "litellm's price map")


class HostedLM(LMBackend):
    """A litellm model id such as `openai/gpt-4o-mini`, with an optional `api_base` and key variable."""

    def __init__(self, model: str, api_base: str | None = None, api_key_env: str | None = None,
                 timeout: float = 60.0, num_retries: int = 3, structured: str = "auto", rpm: int | None = None):
        self.model = model
        self.limiter = RateLimiter(rpm) if rpm else None
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = num_retries
        self._structured = structured
        self._list_price: Price | None | bool = False      # False: not looked up yet
        self._stream_options: bool | None = None           # None: not looked up yet

    @property
    def structured(self) -> str:
        if self._structured == "auto":
            # Resolved once: litellm's model lookup costs a fraction of a millisecond per call.
            try:
                supported = _lib().supports_response_schema(model=self.model)
            except Exception:
                supported = False
            # Unknown servers often ignore response_format silently: ask in the prompt, parse tolerantly.
            self._structured = "json_schema" if supported else "text"
        return self._structured

    def price(self) -> Price | None:
        """The declared price, else litellm's (looked up once)."""
        if self.declared_price is not None:
            return self.declared_price
        if self._list_price is False:
            self._list_price = list_price(self.model)
        return self._list_price

    def describe(self) -> str:
        """The identity replies depend on: the model and, for self-hosted servers, where it runs."""
        return f"{self.model}@{mask_url(self.api_base)}" if self.api_base else self.model

    def _kwargs(self, request: LMRequest) -> dict:
        kw = {"model": self.model, "messages": request.messages, "timeout": self.timeout, "num_retries": 0}
        kw.update({k: v for k, v in request.params.items() if k in SAMPLING})
        if request.sample and "seed" in kw:
            kw["seed"] = int(kw["seed"]) + request.sample
        if self.api_base:
            kw["api_base"] = self.api_base
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise AuthLMError(auth_message(self.model, f"environment variable {self.api_key_env} is not set",
                                               self.api_key_env, True), self.api_key_env)
            kw["api_key"] = key
        if request.schema is not None:
            mode = self.structured
            if mode == "json_schema":
                kw["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "reply", "schema": request.schema, "strict": False}}
            elif mode == "json_object":
                kw["response_format"] = {"type": "json_object"}
        return kw

    def key_variable(self) -> str | None:
        """The environment variable this LM's key comes from: `api_key_env`, else the one litellm
        looks for (OPENAI_API_KEY for openai/..., ANTHROPIC_API_KEY for anthropic/..., ...)."""
        if self.api_key_env:
            return self.api_key_env
        try:
            wanted = _lib().validate_environment(model=self.model).get("missing_keys") or []
        except Exception:  # noqa: BLE001 - only used to word a message
            wanted = []
        if wanted:
            return " or ".join(wanted)
        provider = self.model.split("/", 1)[0] if "/" in self.model else "openai"
        return f"{provider.upper().replace('-', '_')}_API_KEY"

    def _reply(self, resp) -> LMReply:
        usage = getattr(resp, "usage", None)
        # litellm prices every reply itself (`_hidden_params["response_cost"]`); pricing it again costs
        # about as much CPU per call as the rest of the client's work, which shows at high concurrency.
        hidden = getattr(resp, "_hidden_params", None) or {}
        if self.declared_price is not None:
            cost = None                             # the declared price is charged (see `NodeContext._call`)
        elif "response_cost" in hidden:
            cost = hidden["response_cost"]          # None: a model litellm has no price for
        else:
            try:
                cost = _lib().completion_cost(completion_response=resp)
            except Exception:
                cost = 0.0
        try:
            cost = float(cost or 0.0)
        except (TypeError, ValueError):
            cost = 0.0
        text = resp.choices[0].message.content or ""
        truncated = getattr(resp.choices[0], "finish_reason", None) == "length"
        return LMReply(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0, cost,
                       truncated)

    def _translate(self, err: Exception) -> LMError:
        name = type(err).__name__
        status = getattr(err, "status_code", None)
        message = redact(f"{self.model}: {name}: {err}")
        if is_auth_failure(status, str(err), name):
            detail = redact(f"{name}: {str(err).splitlines()[0] if str(err) else ''}")[:300]
            variable = self.key_variable()
            return AuthLMError(auth_message(self.model, detail, variable, bool(self.api_key_env)), variable)
        if name in _REFUSED or status in _REFUSED_STATUS:
            said = redact(f"{name}: {str(err).splitlines()[0] if str(err) else 'no detail'}")[:300]
            return request_error(self.model, said, is_context_overflow(str(err), name))
        if name in _TRANSIENT or status in (408, 409, 429) or (isinstance(status, int) and status >= 500):
            retry_after = None
            # litellm keeps the provider's headers on the exception itself; older versions on .response.
            headers = getattr(err, "litellm_response_headers", None) or \
                getattr(getattr(err, "response", None), "headers", None) or {}
            try:
                retry_after = float(headers.get("retry-after")) if headers.get("retry-after") else None
            except (TypeError, ValueError):
                retry_after = None
            transient = TransientLMError(message, retry_after)
            transient.may_be_billed = name in _TIMEOUT
            return transient
        return LMError(message)

    def complete(self, request: LMRequest) -> LMReply:
        if self.limiter is not None:
            self.limiter.wait()
        try:
            return self._reply(_lib().completion(**self._kwargs(request)))
        except LMError:
            raise
        except Exception as err:
            raise self._translate(err) from None

    async def acomplete(self, request: LMRequest) -> LMReply:
        if self.limiter is not None:
            await self.limiter.await_turn()
        try:
            return self._reply(await _lib().acompletion(**self._kwargs(request)))
        except LMError:
            raise
        except Exception as err:
            raise self._translate(err) from None

    def _usage_asked(self) -> bool:
        """Whether a stream should ask for its usage chunk (`stream_options`): only where litellm says
        the provider takes it (OpenAI-style APIs); the others (Anthropic, Gemini) report usage in their
        own stream events, which litellm reads, and could refuse the parameter."""
        if self._stream_options is None:
            provider, _, name = self.model.partition("/")
            try:
                params = _lib().get_supported_openai_params(model=name or provider, custom_llm_provider=provider)
            except Exception:  # noqa: BLE001 - an unknown provider: do not send what it may refuse
                params = None
            self._stream_options = bool(params) and "stream_options" in params
        return self._stream_options

    async def astream(self, request: LMRequest) -> AsyncIterator[str | LMReply]:
        """The reply as litellm streams it (`stream=True`, with the usage chunk asked for where the
        provider takes `stream_options`), then the `LMReply` built from every chunk
        (`litellm.stream_chunk_builder`), priced as `acomplete` prices a reply. Errors, before the
        first delta or after, translate as `acomplete`'s do; a stream that ends before the provider
        sent its finish reason is transient."""
        if self.limiter is not None:
            await self.limiter.await_turn()
        lib = _lib()
        try:
            kwargs = self._kwargs(request)
            if self._usage_asked():
                kwargs["stream_options"] = {"include_usage": True}
            stream = await lib.acompletion(**kwargs, stream=True)
            chunks = []
            async for chunk in stream:
                chunks.append(chunk)
                choices = getattr(chunk, "choices", None) or ()
                delta = getattr(choices[0], "delta", None) if choices else None
                text = getattr(delta, "content", None) if delta is not None else None
                if text:
                    yield text
            # litellm ends a stream whose connection closed early as if it were whole, with a finish
            # reason and usage of its own making: only the finish reason the provider sent (which
            # its stream wrapper keeps) tells a complete reply from a cut one.
            finished = getattr(stream, "received_finish_reason", "unknown") is not None or \
                getattr(stream, "intermittent_finish_reason", None) is not None
            whole = lib.stream_chunk_builder(chunks, messages=request.messages) if chunks and finished else None
        except LMError:
            raise
        except Exception as err:
            raise self._translate(err) from None
        if whole is None:
            raise TransientLMError(redact(f"{self.model}: the stream broke off before the reply ended"))
        yield self._reply(whole)
