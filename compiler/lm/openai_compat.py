"""A direct client for OpenAI-compatible `/chat/completions` servers (vLLM, llama.cpp, Ollama, LM Studio, ...).

For an `openai/<model>` id with an `api_base` (a self-hosted server) litellm adds nothing but
client time: measured on 2 cores against a loopback server with 100 ms latency, `litellm.acompletion`
needs 1.15 / 1.44 / 4.1 x the physical limit N*L/C at concurrency 1 / 8 / 32, a bare httpx loop
1.04 / 1.08 / 1.5 (see BENCHMARKS.md). This backend is a bare loop: one shared client session per
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

Keys: read from the environment variable named by `api_key_env` at call time (so a key set after
load works and none is ever stored), else from OPENAI_API_KEY as litellm would; none is sent if
neither is set. Errors name the model and the server, never a key.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import threading
import weakref

from .base import (SAMPLING, AuthLMError, LMBackend, LMError, LMReply, LMRequest, TransientLMError, auth_message,
                   is_context_overflow, request_error)
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
    """`openai/<model>` served at `api_base`, called over HTTP directly.

    >>> lm = OpenAICompatLM("openai/qwen2.5", "http://127.0.0.1:8000/v1")
    >>> lm.url, lm.wire_model, lm.structured
    ('http://127.0.0.1:8000/v1/chat/completions', 'qwen2.5', 'json_object')
    """

    def __init__(self, model: str, api_base: str, api_key_env: str | None = None, timeout: float = 60.0,
                 num_retries: int = 3, structured: str = "auto", rpm: int | None = None):
        if structured not in ("auto", "json_object", "json_schema", "text"):
            raise ValueError(f"{model}: structured must be auto, json_object, json_schema or text, not {structured!r}")
        self.model = model
        self.wire_model = model.split("/", 1)[1] if model.startswith("openai/") else model
        self.api_base = api_base
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(num_retries)
        self.limiter = RateLimiter(rpm) if rpm else None
        self.structured = "json_object" if structured == "auto" else structured
        self._timeout = None
        self._aio_timeout = None

    @classmethod
    def from_options(cls, model: str, options: dict) -> "OpenAICompatLM":
        """Build from a `.pipe` file's `lm` options (the ones this backend uses; sampling ones travel per request)."""
        return cls(model, str(options["api_base"]), api_key_env=options.get("api_key_env"),
                   timeout=float(options.get("timeout", 60.0)), num_retries=int(options.get("num_retries", 3)),
                   structured=str(options.get("structured", "auto")), rpm=options.get("rpm"))

    def describe(self) -> str:
        """The identity replies depend on (the same as the litellm path's, so caches carry over)."""
        return f"{self.model}@{mask_url(self.api_base)}"

    # ------------------------------------------------------------------ request
    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise AuthLMError(auth_message(self.model, f"environment variable {self.api_key_env} is not set",
                                               self.api_key_env, True), self.api_key_env)
        else:
            key = os.environ.get("OPENAI_API_KEY")
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def body(self, request: LMRequest) -> dict:
        """The JSON body sent for a request (public so tests and `inspect` can show it)."""
        body: dict = {"model": self.wire_model, "messages": request.messages}
        params = request.params
        for k in SAMPLING:
            if k in params and params[k] is not None:
                body[k] = params[k]
        if request.sample and "seed" in body:
            body["seed"] = int(body["seed"]) + request.sample
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
            variable = self.api_key_env or "OPENAI_API_KEY"
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
