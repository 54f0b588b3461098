"""A direct client for OpenAI-compatible `/chat/completions` endpoints: servers you run (vLLM, llama.cpp,
Ollama, LM Studio, ...) and every hosted provider that speaks OpenAI's API (OpenAI, Azure OpenAI, Groq,
Together, Fireworks, DeepSeek, Mistral, OpenRouter, xAI, ...; `providers.py` says which, where and with
which key).

For these litellm adds nothing but client time: measured on 2 cores against a loopback server with
100 ms latency, `litellm.acompletion` needs 1.15 / 1.44 / 4.1 x the physical limit N*L/C at concurrency
1 / 8 / 32, a bare httpx loop 1.04 / 1.08 / 1.5 (see BENCHMARKS.md). This backend is a bare loop: one shared client session per
event loop (a large keep-alive pool, so concurrency is never capped by the client), a shared sync
`httpx.Client`, a pre-encoded JSON body, and nothing else on the hot path.

The async transport is aiohttp when it is importable (it always is where litellm is installed, as
it depends on it), else `httpx.AsyncClient`: on this machine at C = 32 a bare aiohttp loop needs
about a quarter of the client CPU per request of a bare httpx loop (bench/run_all.py measures both),
and at high concurrency that CPU is what separates wall time from the physical limit.

Structured output (`structured` option), checked per server rather than assumed:
- `json_object` sends `{"type": "json_object", "schema": <schema>}`: llama.cpp's servers (llama-server
  and llama-cpp-python's) turn the attached schema into a grammar and so *enforce* it; vLLM, Ollama
  and others take it as JSON mode.
- `json_schema` sends OpenAI's `{"type": "json_schema", "json_schema": {...}}`: OpenAI, vLLM and
  llama-server enforce it, but llama-cpp-python's server silently ignores it (the design notes
  measured 2% on a 7-way task that way, against 54% with the schema enforced).
- `text` sends no `response_format`; the prompt asks for JSON and the reply is parsed tolerantly.
- `auto` (the default) is `json_object`: on the llama-cpp-python server serving the embedded
  SmolLM2 model it is the only form that constrains the reply (measured in bench/run_all.py's
  compile benchmark), and no server tried rejects it.

For a hosted provider `auto` is what litellm says of the model (`supports_response_schema`):
`json_schema` where it takes one, else `text`, as on the litellm path.

Keys: read at call time (so a key set after load works and none is ever stored) from the environment
variable named by `api_key_env`, else from the provider's usual one (OPENAI_API_KEY, GROQ_API_KEY,
AZURE_OPENAI_API_KEY or AZURE_API_KEY, ...: `providers.key_variables`); a hosted provider's call with
none set fails at once, naming the variable, while a server of your own is sent none. Azure gets its
key in an `api-key` header, the rest as a bearer token. Errors name the model and the server, never a key.

The OpenAI SDK (`openai.AsyncOpenAI`) was measured as the transport instead (bench/run_all.py, batch
section): at C = 32 its bare loop needed 1.49 x the physical limit where this client needed 1.28 (17%
more wall time; the bar for switching was this client being no more than 5% faster), so this one stays.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import threading
import weakref
from typing import AsyncIterator

from .base import (SAMPLING, AuthLMError, LMBackend, LMError, LMReply, LMRequest, TransientLMError, auth_message,
                   is_context_overflow, request_error)
from .providers import SELF_HOSTED, Endpoint, EndpointError, provider_of, resolve
from .rate_limit import RateLimiter
from ..secrets import mask_url, redact

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
_REFUSED_STATUS = frozenset({400, 413, 422})        # the request itself: see `request_error`
MAX_CONNECTIONS = 1024          # per event loop; far above any concurrency a batch asks for

_httpx = None
_sync_client = None
_sync_lock = threading.Lock()
_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]" = weakref.WeakKeyDictionary()
_aiohttp = None                 # the module, or False where it is not installed


def _lib():
    global _httpx
    if _httpx is None:
        import httpx
        _httpx = httpx
    return _httpx


def _limits():
    httpx = _lib()
    return httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS,
                        keepalive_expiry=60.0)


def sync_client():
    """The process's one sync client (thread-safe; its pool is shared by every OpenAI-compatible LM)."""
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                _sync_client = _lib().Client(limits=_limits(), timeout=None)
    return _sync_client


def _aio():
    global _aiohttp
    if _aiohttp is None:
        try:
            import aiohttp
            _aiohttp = aiohttp
        except ImportError:
            _aiohttp = False
    return _aiohttp


def async_client():
    """The running event loop's client: connections belong to a loop, so each loop has its own pool.

    An `aiohttp.ClientSession` (or an `httpx.AsyncClient` without aiohttp). pipec keeps one loop per
    thread (`run_coroutine`), so in practice this is one client per thread; sessions of loops that
    have closed are closed (synchronously, so nothing warns about them) when a new one is made.
    """
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        _drop_dead_sessions()
        aiohttp = _aio()
        if aiohttp:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=60.0)
            client = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)
        else:
            client = _lib().AsyncClient(limits=_limits(), timeout=None)
        _async_clients[loop] = client
    return client


def _drop_dead_sessions(at_exit: bool = False) -> None:
    """Close the sessions of loops that are closed (or, at exit, of every loop not running)."""
    for loop, client in list(_async_clients.items()):
        if not loop.is_closed() and not at_exit:
            continue
        _async_clients.pop(loop, None)
        _close_quietly(client, loop)


def _close_quietly(client, loop) -> None:
    try:
        if not loop.is_closed() and not loop.is_running():
            loop.run_until_complete(client.close() if hasattr(client, "detach") else client.aclose())
        elif hasattr(client, "detach"):         # aiohttp: close the sockets without the (gone) loop
            connector = client.connector
            client.detach()
            if connector is not None:
                connector._close()
    except Exception:  # noqa: BLE001 - best effort at shutdown; never an error for the caller
        pass


def _close_all() -> None:
    _drop_dead_sessions(at_exit=True)


atexit.register(_close_all)


class OpenAICompatLM(LMBackend):
    """An OpenAI-compatible lm called over HTTP directly: `openai/<model>` at an `api_base`, or a hosted
    provider's id (`groq/...`, `azure/<deployment>`, ...) whose endpoint is resolved at the first call.

    >>> lm = OpenAICompatLM("openai/qwen2.5", "http://127.0.0.1:8000/v1")
    >>> lm.url, lm.wire_model, lm.structured
    ('http://127.0.0.1:8000/v1/chat/completions', 'qwen2.5', 'json_object')
    """

    def __init__(self, model: str, api_base: str | None = None, api_key_env: str | None = None,
                 timeout: float = 60.0, num_retries: int = 3, structured: str = "auto", rpm: int | None = None):
        if structured not in ("auto", "json_object", "json_schema", "text"):
            raise ValueError(f"{model}: structured must be auto, json_object, json_schema or text, not {structured!r}")
        self.model = model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(num_retries)
        self.limiter = RateLimiter(rpm) if rpm else None
        self._structured = structured
        self._endpoint: Endpoint | None = None
        self._list_price = False                # False: not looked up yet
        self._timeout = None
        self._aio_timeout = None

    @classmethod
    def from_options(cls, model: str, options: dict) -> "OpenAICompatLM":
        """Build from a `.pipe` file's `lm` options (the ones this backend uses; sampling ones travel per request)."""
        return cls(model, options.get("api_base"), api_key_env=options.get("api_key_env"),
                   timeout=float(options.get("timeout", 60.0)), num_retries=int(options.get("num_retries", 3)),
                   structured=str(options.get("structured", "auto")), rpm=options.get("rpm"))

    # ------------------------------------------------------------------ endpoint
    @property
    def endpoint(self) -> Endpoint:
        """Where requests go and how the key is sent, resolved at first use (litellm is asked then, not
        at load; an `openai/...` id with an `api_base` needs nothing from it)."""
        endpoint = self._endpoint
        if endpoint is None:
            try:
                endpoint = self._endpoint = resolve(self.model, self.api_base)
            except EndpointError as err:
                raise LMError(redact(str(err))) from None
        return endpoint

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def wire_model(self) -> str:
        return self.endpoint.wire_model

    def _self_hosted(self) -> bool:
        provider = provider_of(self.model)
        return provider in SELF_HOSTED or (provider == "openai" and bool(self.api_base))

    @property
    def structured(self) -> str:
        if self._structured == "auto":
            if self._self_hosted():
                self._structured = "json_object"
            else:
                from .hosted import _lib
                try:
                    supported = _lib().supports_response_schema(model=self.model)
                except Exception:  # noqa: BLE001 - a model litellm does not know: ask in the prompt
                    supported = False
                self._structured = "json_schema" if supported else "text"
        return self._structured

    def price(self):
        """The declared price, else litellm's price map for a hosted provider's model (looked up once;
        a server of your own has none).

        >>> OpenAICompatLM("openai/qwen2.5", "http://127.0.0.1:8000/v1").price() is None
        True
        """
        if self.declared_price is not None:
            return self.declared_price
        if self._list_price is False:
            from .hosted import list_price
            self._list_price = None if self._self_hosted() else list_price(self.model)
        return self._list_price

    def describe(self) -> str:
        """The identity replies depend on (the same as the litellm path's, so caches carry over)."""
        return f"{self.model}@{mask_url(self.api_base)}" if self.api_base else self.model

    # ------------------------------------------------------------------ request
    def _headers(self) -> dict[str, str]:
        endpoint = self.endpoint
        headers = {"content-type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise AuthLMError(auth_message(self.model, f"environment variable {self.api_key_env} is not set",
                                               self.api_key_env, True), self.api_key_env)
        else:
            key = None
            for variable in endpoint.key_variables:
                key = os.environ.get(variable)
                if key:
                    break
            if not key and endpoint.key_required:
                variable = " or ".join(endpoint.key_variables)
                raise AuthLMError(auth_message(self.model, f"environment variable {variable} is not set", variable,
                                               False), variable)
        if key:
            if endpoint.key_header == "authorization":
                headers["authorization"] = f"Bearer {key}"
            else:
                headers[endpoint.key_header] = key
        return headers

    def key_variable(self) -> str:
        """The variable this lm's key comes from: `api_key_env`, else the first of the provider's usual
        ones that is set (else the first of them).

        >>> OpenAICompatLM("groq/llama-3.1-8b-instant", "http://127.0.0.1:8000/v1", api_key_env="MY_KEY").key_variable()
        'MY_KEY'
        """
        if self.api_key_env:
            return self.api_key_env
        names = self.endpoint.key_variables
        return next((n for n in names if os.environ.get(n)), names[0])

    def body(self, request: LMRequest) -> dict:
        """The JSON body sent for a request (public so tests and `inspect` can show it)."""
        endpoint = self.endpoint
        body: dict = {"model": endpoint.wire_model, "messages": request.messages}
        params = request.params
        sampling = {k: params[k] for k in SAMPLING if k in params and params[k] is not None}
        if request.sample and "seed" in sampling:
            sampling["seed"] = int(sampling["seed"]) + request.sample
        body.update(endpoint.map_params(sampling))
        if request.schema is not None:
            if self.structured == "json_object":
                body["response_format"] = {"type": "json_object", "schema": request.schema}
            elif self.structured == "json_schema":
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "reply", "schema": request.schema, "strict": False}}
        return body

    def _encode(self, request: LMRequest) -> bytes:
        return json.dumps(self.body(request), ensure_ascii=False, separators=(",", ":")).encode()

    def _httpx_timeout(self):
        if self._timeout is None:
            self._timeout = _lib().Timeout(self.timeout, connect=min(self.timeout, 10.0))
        return self._timeout

    # ------------------------------------------------------------------ reply
    def _reply(self, status: int, headers, content: bytes) -> LMReply:
        if status != 200:
            raise self._status_error(status, headers, content)
        try:
            data = json.loads(content)
            text = data["choices"][0]["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            # A proxy's error page or a body cut in transit: worth another attempt, like a 5xx.
            raise TransientLMError(redact(f"{self.model}: {self.url} sent a reply that is not a chat completion: ")
                                   + repr(_shown(content, 200))) from None
        usage = data.get("usage") or {}
        truncated = data["choices"][0].get("finish_reason") == "length"
        return LMReply(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), 0.0,
                       truncated)

    def _status_error(self, status: int, headers, content: bytes) -> LMError:
        try:
            err = json.loads(content).get("error")
            detail = err.get("message") if isinstance(err, dict) else str(err or "")
            detail = redact(str(detail))[:300]
        except (ValueError, AttributeError):
            detail = _shown(content, 300)
        message = redact(f"{self.model}: HTTP {status} from {self.url}: {detail or 'no detail'}")
        if status in (401, 403):
            variable = self.key_variable()
            said = f"HTTP {status} from {self.url}: {detail or 'no detail'}"
            return AuthLMError(redact(auth_message(self.model, said, variable, bool(self.api_key_env))), variable)
        if status in _TRANSIENT_STATUS or status >= 500:
            return TransientLMError(message, _retry_after(headers))
        if status in _REFUSED_STATUS:
            return request_error(self.model, f"HTTP {status} from {self.url}: {detail or 'no detail'}",
                                 status == 413 or is_context_overflow(detail))
        return LMError(message)

    def _transport_error(self, err: Exception) -> LMError:
        httpx = _lib()
        message = redact(f"{self.model}: {type(err).__name__} talking to {self.url}: {err}")
        transient: tuple = (httpx.TimeoutException, httpx.TransportError, asyncio.TimeoutError, ConnectionError)
        aiohttp = _aio()
        if aiohttp:
            transient += (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
        if isinstance(err, transient):
            out = TransientLMError(message)
            # The server may have run the request to its end: a dollar budget charges it in full.
            out.may_be_billed = isinstance(err, (httpx.TimeoutException, asyncio.TimeoutError))
            return out
        return LMError(message)

    # ------------------------------------------------------------------ calls
    def complete(self, request: LMRequest) -> LMReply:
        if self.limiter is not None:
            self.limiter.wait()
        headers = self._headers()
        try:
            resp = sync_client().post(self.url, content=self._encode(request), headers=headers,
                                      timeout=self._httpx_timeout())
        except LMError:
            raise
        except Exception as err:
            raise self._transport_error(err) from None
        return self._reply(resp.status_code, resp.headers, resp.content)

    async def acomplete(self, request: LMRequest) -> LMReply:
        if self.limiter is not None:
            await self.limiter.await_turn()
        headers = self._headers()
        client = async_client()
        try:
            if hasattr(client, "detach"):        # aiohttp
                async with client.post(self.url, data=self._encode(request), headers=headers,
                                       timeout=self._aiohttp_timeout()) as resp:
                    content = await resp.read()
                    return self._reply(resp.status, resp.headers, content)
            resp = await client.post(self.url, content=self._encode(request), headers=headers,
                                     timeout=self._httpx_timeout())
        except LMError:
            raise
        except Exception as err:
            raise self._transport_error(err) from None
        return self._reply(resp.status_code, resp.headers, resp.content)

    def _aiohttp_timeout(self):
        if self._aio_timeout is None:
            self._aio_timeout = _aio().ClientTimeout(total=self.timeout, connect=min(self.timeout, 10.0))
        return self._aio_timeout

    # ------------------------------------------------------------------ streaming
    def stream_body(self, request: LMRequest) -> bytes:
        """The body of a streamed request: `body(request)` with `"stream": true` and the usage chunk
        asked for (`stream_options.include_usage`), so a streamed reply is counted as a whole one."""
        body = self.body(request)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    async def astream(self, request: LMRequest) -> AsyncIterator[str | LMReply]:
        """The reply as the server streams it (server-sent events of chat completion chunks), then the
        `LMReply` with the usage of its last chunk. A status error, a transport error and a reply that
        is not a chat completion translate as in `acomplete`; an `error` chunk mid-stream is a status
        error of its code (else 500); a stream that ends before its finish reason is transient. A
        server that answers with one JSON body instead of a stream is read as `acomplete` reads it,
        and sends no delta (nothing arrived early: its fields appear when its node finishes)."""
        if self.limiter is not None:
            await self.limiter.await_turn()
        headers = self._headers()
        headers["accept"] = "text/event-stream"
        client = async_client()
        events = ChunkReader(self)
        try:
            if hasattr(client, "detach"):        # aiohttp
                async with client.post(self.url, data=self.stream_body(request), headers=headers,
                                       timeout=self._aiohttp_timeout()) as resp:
                    if resp.status != 200 or "text/event-stream" not in resp.headers.get("content-type", ""):
                        yield self._reply(resp.status, resp.headers, await resp.read())
                        return
                    async for line in resp.content:
                        text = events.line(line)
                        if text:
                            yield text
            else:
                async with client.stream("POST", self.url, content=self.stream_body(request), headers=headers,
                                         timeout=self._httpx_timeout()) as resp:
                    if resp.status_code != 200 or "text/event-stream" not in resp.headers.get("content-type", ""):
                        yield self._reply(resp.status_code, resp.headers, await resp.aread())
                        return
                    async for line in resp.aiter_lines():
                        text = events.line(line)
                        if text:
                            yield text
        except LMError:
            raise
        except Exception as err:
            raise self._transport_error(err) from None
        yield events.reply()


def _shown(content: bytes, limit: int) -> str:
    """The start of a reply body for an error message: redacted first, then cut (a key cut in half
    by the cut would otherwise escape redaction; see RELIABILITY.md)."""
    return redact(content[:64 * 1024].decode("utf-8", "replace"))[:limit]


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; an HTTP date is ignored)."""
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value else None
    except (TypeError, ValueError):
        return None


class ChunkReader:
    """Reads the server-sent events of a streamed chat completion line by line: the text deltas, the
    finish reason, the usage (the last chunk, when asked for with `stream_options.include_usage`).

    >>> from pipec.lm.openai_compat import OpenAICompatLM
    >>> r = ChunkReader(OpenAICompatLM("openai/m", "http://127.0.0.1:1/v1"))
    >>> [r.line(x) for x in (b'data: {"choices":[{"delta":{"content":"Hi"}}]}', b"", b": comment",
    ...  b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}',
    ...  b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}', b"data: [DONE]")]
    ['Hi', '', '', '', '', '']
    >>> r.reply()
    LMReply(text='Hi', prompt_tokens=9, completion_tokens=1, cost=0.0, truncated=False)
    """

    def __init__(self, lm: OpenAICompatLM):
        self.lm = lm
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: dict = {}
        self.done = False

    def line(self, raw: bytes | str) -> str:
        """Take one line of the stream; the text delta it carries ("" for none)."""
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if not line.startswith("data:"):
            return ""            # a blank line between events, a comment, an `event:` or `id:` field
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except ValueError:
            raise TransientLMError(redact(f"{self.lm.model}: {self.lm.url} streamed a chunk that is not JSON: ")
                                   + repr(_shown(data.encode(), 200))) from None
        if not isinstance(chunk, dict):
            return ""
        if chunk.get("error") is not None:
            err = chunk["error"]
            code = err.get("code") if isinstance(err, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            raise self.lm._status_error(status, None, json.dumps({"error": err}).encode())
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        self.finish = choice.get("finish_reason") or self.finish
        text = (choice.get("delta") or {}).get("content") or ""
        if text:
            self.parts.append(text)
        return text

    def reply(self) -> LMReply:
        """The whole reply, once the stream has ended; a stream that broke off before its finish
        reason (or `[DONE]`) is a transient error, retried as a dropped connection is."""
        if self.finish is None and not self.done:
            raise TransientLMError(redact(f"{self.lm.model}: the stream from {self.lm.url} broke off before "
                                          "the reply ended"))
        usage = self.usage
        return LMReply("".join(self.parts), int(usage.get("prompt_tokens") or 0),
                       int(usage.get("completion_tokens") or 0), 0.0, self.finish == "length")
