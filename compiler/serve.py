"""A pipeline as an HTTP service: `pipec serve FILE_OR_ARTIFACT`, or `app(program)` to mount in your
own ASGI server. Needs the `serve` extra (starlette and uvicorn), imported only when serving.

Endpoints (every body is JSON in standard form, with secrets masked as everything pipec writes):

* `POST /run`: the pipeline's inputs as an object in, its outputs as an object out. The inputs are
  checked as `Program.prepare(strict=True)` checks them: a 422 names each bad field
  (`{"error": ..., "fields": [{"field": "text", "error": "missing input 'text'"}], "request_id": ...}`).
  A run that produces no outputs (the LM failed, a reply did not parse) is a 502 naming the node;
  what went wrong goes to the log, not to the client.
* `POST /run?stream=1` (or `Accept: text/event-stream`): the same run as server-sent events:
  `event: partial` when a node of the pipeline finishes and as the LM's reply for the outputs
  streams in, then `event: done` (or `event: error`).
* `POST /batch`: a list of input objects; a list of results in the same order, each
  `{"ok": true, "outputs": {...}}` or `{"ok": false, "status": 422 | 502 | 500, "error": ...}`: a bad
  row never fails the batch. Rows run with bounded concurrency.
* `GET /schema`: JSON Schemas of the inputs and the outputs. `GET /health`: liveness, the pipeline's
  name and whether it is compiled.

Event stream format. Every event has an `id:` (1, 2, ... within the response) and one line of JSON
as `data:`. `partial` events carry a `type`; clients ignore types they do not know, so finer-grained
partial events can be added beside the ones sent now:

    event: partial
    data: {"type": "outputs", "outputs": {"note": "The text is pos"}}

    event: partial
    data: {"type": "node", "node": "a", "module": "classify", "outputs": {"label": "pos"}}

    event: done
    data: {"outputs": {"label": "pos", "note": "..."}, "request_id": "..."}

    event: error
    data: {"error": "the pipeline failed at node b", "status": 502, "node": "b", "request_id": "..."}

`type: "node"` events come once per node as it finishes (a node's `outputs` is its module's fields,
a tool's return value, or a map's list; an ensemble's members' nodes also carry `member`).
`type: "outputs"` events come while the LM reply that carries pipeline outputs streams in (see
`pipec.streaming` for which modules stream): each holds every output of the pipeline known so far,
by name, as `Program.stream`'s partials do (a text field grows, each event extending the one
before; numbers, enums and flags appear once complete). An LM that does not stream (or a cached
reply) sends none; the `done` event always has the final outputs. A status
that is known before the run starts (422, 413, 429) is sent as a plain JSON response, not a stream.
A comment line (`: keep-alive`) is sent when nothing else has been for 15 seconds.

Operations: at most `max_concurrent` runs (a batch counts once) are admitted at a time; beyond that a
429 with `Retry-After`. Bodies over `max_body` bytes get a 413 as soon as that is known (from
Content-Length, or while reading), never read whole. Every request gets an id (a client's
`X-Request-Id` of up to 64 plain characters is kept), returned in `X-Request-Id` and in error bodies,
and one access log line (method, path, status, milliseconds, id; the inputs only with `log_inputs`,
redacted). SIGTERM or SIGINT (`serve`): stop accepting, let requests in flight finish (up to
`shutdown_timeout` seconds), exit; a second signal stops at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from typing import Any, AsyncIterator, Callable

from .aio import bounded
from .dsl.diagnostics import did_you_mean
from .jsonl import dump_line, loads_strict
from .prediction import Prediction
from .reply_parser import ReplyError, coerce, input_problem
from .run import run_one
from .schema import type_schema
from .secrets import RedactingFilter, logger, redact

DEFAULT_MAX_CONCURRENT = 16
DEFAULT_MAX_BODY = 1 << 20              # 1 MiB
DEFAULT_BATCH_CONCURRENCY = 4
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
RETRY_AFTER = 1                         # seconds a client told 429 should wait
KEEPALIVE = 15.0                        # seconds of silence before an event stream sends a comment
LOGGED_INPUTS = 2000                    # characters of inputs an access log line shows at most

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_END = object()


def app(program, *, max_concurrent: int = DEFAULT_MAX_CONCURRENT, max_body: int = DEFAULT_MAX_BODY,
        batch_concurrency: int = DEFAULT_BATCH_CONCURRENCY, log_inputs: bool = False):
    """The Starlette application serving `program` (see the module's docstring for its endpoints).

    Running an artifact from elsewhere needs approval as `pipec run` needs it: this raises
    `pipec.ApprovalRequired` now, not on the first request. Mount it in your own ASGI server or
    application (`Mount("/intent", app(prog))`), or run it with `serve`.

    >>> import asyncio, httpx, pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "echo.pipe"
    >>> _ = path.write_text('signature S { in q: str out a: str } module m = Predict(S) '
    ...                     'pipeline echo(q: str) -> (a) { return a = m(q: q).a }')
    >>> prog = pipec.load(path, lm=pipec.ScriptedLM(rule=lambda request: {"a": "hello"}), cache=False)
    >>> async def post(inputs):
    ...     async with httpx.AsyncClient(transport=httpx.ASGITransport(app(prog)), base_url="http://pipec") as client:
    ...         return await client.post("/run", json=inputs)
    >>> asyncio.run(post({"q": "hi"})).json()
    {'a': 'hello'}
    >>> reply = asyncio.run(post({"question": "hi"}))
    >>> reply.status_code, [f["field"] for f in reply.json()["fields"]]
    (422, ['q', 'question'])
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.routing import Route
    for name, value in (("max_concurrent", max_concurrent), ("max_body", max_body),
                        ("batch_concurrency", batch_concurrency)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    program.approve_running()
    service = Service(program, max_concurrent, max_body, batch_concurrency, log_inputs)
    routes = [Route("/run", service.run, methods=["POST"]), Route("/batch", service.batch, methods=["POST"]),
              Route("/schema", service.schema, methods=["GET"]), Route("/health", service.health, methods=["GET"])]
    application = Starlette(routes=routes, middleware=[Middleware(Front, service=service)],
                            exception_handlers={HTTPException: service.http_error})
    application.state.pipec = service
    return application


def schema(program) -> dict[str, Any]:
    """JSON Schemas (draft 2020-12) of a program's inputs and of its outputs, as `GET /schema` gives
    them. Inputs are exactly these names (an optional one may be left out or null); outputs always
    hold every name (an optional one may be null).

    >>> import pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
    >>> _ = path.write_text('signature S { in q: str in k: int? out a: enum(x, y) } module m = Predict(S) '
    ...                     'pipeline p(q: str "the question", k: int?) -> (a) { return a = m(q: q, k: k).a }')
    >>> s = schema(pipec.load(path, cache=False))
    >>> s["input"]["properties"], s["input"]["required"], s["output"]["properties"]["a"]
    ({'q': {'type': 'string', 'description': 'the question'}, 'k': {'anyOf': [{'type': 'integer'}, {'type': 'null'}]}}, ['q'], {'type': 'string', 'enum': ['x', 'y']})
    """
    def value(t, description: str = "") -> dict:
        s = type_schema(t) if t is not None else {}
        if t is not None and t.optional:
            s = {"anyOf": [s, {"type": "null"}]}
        if description:
            s = {**s, "description": description}
        return s

    draft = "https://json-schema.org/draft/2020-12/schema"
    inputs = {"$schema": draft, "title": f"{program.name} inputs", "type": "object",
              "properties": {name: value(t, desc) for name, t, desc in program.inputs},
              "required": [name for name, t, _ in program.inputs if not t.optional],
              "additionalProperties": False}
    outputs = {"$schema": draft, "title": f"{program.name} outputs", "type": "object",
               "properties": {name: value(t) for name, t, _ in program.graph.outputs},
               "required": list(program.output_names), "additionalProperties": False}
    return {"pipeline": program.name, "input": inputs, "output": outputs}


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening TCP socket for `serve` (port 0: any free port). Binding before the server starts
    lets the caller report a taken port as an error of its own, and learn a free port's number.

    >>> sock = listen("127.0.0.1", 0); sock.getsockname()[1] > 0
    True
    >>> sock.close()
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Made with proto IPPROTO_TCP, not 0 (socket.create_server's): asyncio sets TCP_NODELAY only on
    # sockets that say they are TCP, and without it a reply's headers and body, written apart, wait
    # for the client's delayed ACK (about 40 ms on a keep-alive connection).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(program, host: str = "127.0.0.1", port: int = 8000, *, sock: socket.socket | None = None,
          shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT, **options) -> None:
    """Serve `program` over HTTP with uvicorn until SIGTERM or SIGINT, then finish the requests in
    flight (up to `shutdown_timeout` seconds) and return. `options` are `app`'s. Logs go to the
    `pipec.serve` loggers (to stderr, redacted, unless you have given them handlers of your own).

    >>> serve(pipec.load("examples/intent.pipe"), port=8000)           # doctest: +SKIP
    """
    import uvicorn
    application = app(program, **options)
    sock = sock or listen(host, port)
    _log_to_stderr()
    config = uvicorn.Config(application, log_config=None, access_log=False, server_header=False,
                            proxy_headers=False, lifespan="off", timeout_graceful_shutdown=shutdown_timeout)
    where = sock.getsockname()
    address = f"http://[{where[0]}]:{where[1]}" if sock.family == socket.AF_INET6 else f"http://{where[0]}:{where[1]}"
    server = _server_class(uvicorn.Server)(config, application.state.pipec, address, shutdown_timeout)
    server.run(sockets=[sock])


class Refusal(Exception):
    """A request refused before the pipeline runs: its status, message and (for inputs) the fields."""

    def __init__(self, status: int, message: str, fields: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.fields:
            out["fields"] = self.fields
        if request_id is not None:
            out["request_id"] = request_id
        return out


class Service:
    """What the endpoints share: the program, the limits, the count of runs in flight, the loggers."""

    def __init__(self, program, max_concurrent: int, max_body: int, batch_concurrency: int, log_inputs: bool):
        self.program = program
        self.max_concurrent = max_concurrent
        self.max_body = max_body
        self.batch_concurrency = batch_concurrency
        self.log_inputs = log_inputs
        self.in_flight = 0          # only touched on the event loop's thread: no lock
        self.log = logger("pipec.serve")
        self.access = logger("pipec.serve.access")
        self._known = [name for name, _, _ in program.inputs]
        self._schema = schema(program)

    # ------------------------------------------------------------------ admission
    def admit(self) -> bool:
        if self.in_flight >= self.max_concurrent:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1

    def busy(self, rid: str) -> "Reply":
        return Reply.json(429, {"error": f"busy: {self.max_concurrent} runs in flight; retry after {RETRY_AFTER}s",
                                "request_id": rid}, {"retry-after": str(RETRY_AFTER)})

    # ------------------------------------------------------------------ endpoints
    async def run(self, request) -> "Reply | EventStream":
        rid = request_id(request.scope)
        if not self.admit():
            return self.busy(rid)
        handed_over = False          # a stream releases its slot when it ends, not when this returns
        try:
            body = await self.read(request)
            values = self.validate(body)
            if wants_stream(request):
                handed_over = True
                return EventStream(self.events(values, rid), self.release)
            pred = await run_one(self.program, values, self.program.runtime())
            if pred.ok:
                return Reply.json(200, pred.outputs())
            return Reply.json(502, self.failure(pred, rid))
        except Refusal as refusal:
            return Reply.json(refusal.status, refusal.body(rid))
        except Exception:
            return self.internal_error(rid)
        finally:
            if not handed_over:
                self.release()

    async def batch(self, request) -> "Reply":
        rid = request_id(request.scope)
        if not self.admit():
            return self.busy(rid)
        try:
            rows = await self.read(request)
            if not isinstance(rows, list):
                raise Refusal(422, f"a batch is a JSON list of input objects, not {json_kind(rows)}")
            runtime = self.program.runtime()
            results: list[dict | None] = [None] * len(rows)

            async def one(i: int) -> None:
                try:
                    values = self.validate(rows[i])
                    pred = await run_one(self.program, values, runtime)
                    results[i] = {"ok": True, "outputs": pred.outputs()} if pred.ok else \
                        {"ok": False, "status": 502, **self.failure(pred, f"{rid}/{i}")}
                except Refusal as refusal:
                    results[i] = {"ok": False, "status": refusal.status, **refusal.body()}
                except Exception:          # one row's bug is that row's 500, never the batch's
                    self.log.exception("request %s: row %d failed inside pipec", rid, i)
                    results[i] = {"ok": False, "status": 500, "error": "internal error", "request_id": f"{rid}/{i}"}

            await bounded(range(len(rows)), self.batch_concurrency, one, lambda _: None)
            return Reply.json(200, results)
        except Refusal as refusal:
            return Reply.json(refusal.status, refusal.body(rid))
        except Exception:
            return self.internal_error(rid)
        finally:
            self.release()

    async def schema(self, request) -> "Reply":
        return Reply.json(200, self._schema)

    async def health(self, request) -> "Reply":
        return Reply.json(200, {"status": "ok", "pipeline": self.program.name,
                                "compiled": self.program.artifact is not None, "in_flight": self.in_flight,
                                "max_concurrent": self.max_concurrent})

    async def http_error(self, request, exc) -> "Reply":
        """Starlette's own refusals (404, 405) as JSON like ours."""
        return Reply.json(exc.status_code, {"error": exc.detail, "request_id": request_id(request.scope)},
                          dict(exc.headers or {}))

    # ------------------------------------------------------------------ reading and checking
    async def read(self, request) -> Any:
        """The JSON body, refused with 413 past `max_body` bytes (declared or counted), never read whole."""
        from starlette.requests import ClientDisconnect
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise Refusal(413, f"the body is {declared} bytes; at most {self.max_body} are accepted")
        data = bytearray()
        try:
            async for chunk in request.stream():
                data += chunk
                if len(data) > self.max_body:
                    raise Refusal(413, f"the body is over {self.max_body} bytes, the most accepted")
        except ClientDisconnect:
            raise Refusal(400, "the client went away before sending the whole body") from None
        try:
            value = loads_strict(bytes(data))
        except ValueError as err:           # not JSON, not UTF-8, NaN, a key twice
            raise Refusal(422, f"the body is not valid JSON: {err}") from None
        if self.log_inputs:
            request.scope["pipec.inputs"] = value
        return value

    def validate(self, row: Any) -> dict[str, Any]:
        """One row of inputs checked and coerced by `Program.prepare(strict=True)`, or a 422 `Refusal`
        naming every bad field."""
        if not isinstance(row, dict):
            raise Refusal(422, f"the inputs must be a JSON object with the inputs by name, not {json_kind(row)}")
        fields = self.field_problems(row)
        if fields:
            raise Refusal(422, "; ".join(f["error"] for f in fields), fields)
        try:
            return self.program.prepare(row, strict=True)
        except ValueError as err:            # what prepare knows beyond the field checks
            raise Refusal(422, str(err)) from None

    def field_problems(self, row: dict) -> list[dict[str, str]]:
        """Each field of `row` that `prepare(strict=True)` would refuse, or that is data no LM call
        should get (`reply_parser.input_problem`), named with the reason, in signature order."""
        out = []
        for name, t, _ in self.program.inputs:
            value = row.get(name)
            if value is None:
                if not t.optional:
                    out.append({"field": name, "error": f"missing input '{name}'"})
                continue
            problem = input_problem(value, t)
            if problem is None:
                try:
                    coerce(value, t)
                except ReplyError as err:
                    problem = str(err)
            if problem:
                out.append({"field": name, "error": f"input '{name}': {problem}"})
        for key in row:
            if key not in self._known:
                hint = did_you_mean(key, [n for n in self._known if n not in row])
                out.append({"field": key, "error": f"'{key}' is not an input of {self.program.name}"
                                                   + (f" ({hint})" if hint else "")})
        return out

    # ------------------------------------------------------------------ failures
    def failure(self, pred, rid: str) -> dict[str, Any]:
        """A run without outputs, as the client sees it: which node, not why (the reason may hold what
        an LM endpoint said); the reason goes to the log, redacted."""
        self.log.warning("request %s: %s failed: %s", rid, self.program.name, pred.error)
        message = f"the pipeline failed at node {pred.node}" if pred.node else "the pipeline failed"
        return {"error": message + f"; the server log has the reason under request {rid}", "node": pred.node,
                "request_id": rid}

    def internal_error(self, rid: str) -> "Reply":
        self.log.exception("request %s failed inside pipec", rid)
        return Reply.json(500, {"error": f"internal error; the server log has it under request {rid}",
                                "request_id": rid})

    # ------------------------------------------------------------------ streaming
    async def events(self, values: dict[str, Any], rid: str) -> AsyncIterator[bytes]:
        """The event stream of one run: a `partial` per finished node, then `done` or `error`."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(event: dict) -> None:       # also called from a worker thread (the embedded model)
            loop.call_soon_threadsafe(queue.put_nowait, event)

        served = observed(self.program, emit)
        task = asyncio.ensure_future(streamed(served, values, emit))
        # Scheduled after every event the run emitted, so the stream ends after the last of them.
        task.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _END))
        number = 0
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except asyncio.TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is _END:
                    break
                number += 1
                yield sse("partial", item, number)
            try:
                pred = task.result()
            except Exception:
                self.log.exception("request %s failed inside pipec", rid)
                yield sse("error", {"error": f"internal error; the server log has it under request {rid}",
                                    "status": 500, "request_id": rid}, number + 1)
                return
            if pred.ok:
                yield sse("done", {"outputs": pred.outputs(), "request_id": rid}, number + 1)
            else:
                yield sse("error", {**self.failure(pred, rid), "status": 502}, number + 1)
        finally:
            if not task.done():              # the client went away: stop the run
                task.cancel()


async def streamed(program, values: dict[str, Any], emit: Callable[[dict], None]):
    """Run `values` through `program` streaming (`pipec.streaming`): a `{"type": "outputs", ...}`
    event for each growth of the pipeline's outputs while an LM reply streams in; the Prediction.

    >>> import asyncio, pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
    >>> _ = path.write_text('signature S { in q: str out a: str } module m = Predict(S) '
    ...                     'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
    >>> prog, events = pipec.load(path, lm=pipec.ScriptedLM([{"a": "hello"}], chunk=3), cache=False), []
    >>> asyncio.run(streamed(prog, {"q": "hi"}, events.append)), events
    (Prediction(a='hello'), [{'type': 'outputs', 'outputs': {'a': 'he'}}, {'type': 'outputs', 'outputs': {'a': 'hello'}}])
    """
    from .streaming import stream_run
    pred = None
    async for item in stream_run(program, values, program.runtime(), nodes=False):
        if isinstance(item, Prediction):
            pred = item
        else:
            emit({"type": "outputs", "outputs": item.outputs()})
    return pred


def observed(program, emit: Callable[[dict], None]):
    """A copy of `program` (sharing its modules, LMs and cache) whose plan calls `emit` with a
    `{"type": "node", ...}` event as each top-level node finishes. The plan is copied, not changed,
    so runs that nobody streams pay nothing for this.

    >>> import pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
    >>> _ = path.write_text('signature S { in q: str out a: str } module m = Predict(S) '
    ...                     'pipeline p(q: str) -> (a) { r = m(q: q) return a = r.a }')
    >>> prog, events = pipec.load(path, lm=pipec.ScriptedLM(rule=lambda r: {"a": "yes"}), cache=False), []
    >>> observed(prog, events.append)(q="hi").a, events
    ('yes', [{'type': 'node', 'node': 'r', 'module': 'm', 'outputs': {'a': 'yes'}}])
    >>> prog(q="hi").a, len(events)                     # the program itself reports nothing
    ('yes', 1)
    """
    served = program.bound()
    served.plan = _observed_plan(program.plan, emit, None)
    return served


def _observed_plan(plan, emit, member: int | None):
    import copy
    from .executor import Plan, Step
    if not isinstance(plan, Plan):           # an ensemble: each member's plan, its events marked
        members = getattr(plan, "plans", None)
        if members is None:
            return plan
        out = copy.copy(plan)
        out.plans = [_observed_plan(p, emit, i) for i, p in enumerate(members)]
        return out

    def watch(step):
        run = step.run

        async def observed_run(*args):
            result = await run(*args)
            event = {"type": "node", "node": step.id, "module": step.target, "outputs": result}
            if member is not None:
                event["member"] = member
            emit(event)
            return result
        return Step(step.id, step.target, step.args, step.deps, observed_run, step.needs_env)

    out = copy.copy(plan)
    out.steps = [watch(s) for s in plan.steps]   # a map's body keeps its own steps: one event per map
    return out


# ---------------------------------------------------------------------- HTTP plumbing
class Reply:
    """A complete response as a plain ASGI application (Starlette's routes accept any)."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                 media_type: str = "application/json"):
        self.status, self.body = status, body
        self.headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
        self.headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]

    @classmethod
    def json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> "Reply":
        """Standard JSON with every secret masked (`jsonl.dump_line`, as batch outputs are written)."""
        return cls(status, dump_line(value).encode("utf-8"), headers)

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class EventStream:
    """A `text/event-stream` response from an async iterator of encoded events; `on_close` runs when it
    ends however it ends (finished, client gone, server stopping)."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]):
        self.events, self.on_close = events, on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]})
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:                      # ASGI 2.4 servers raise it when the client has gone
            pass
        finally:
            await self.events.aclose()
            self.on_close()


def sse(event: str, data: Any, number: int) -> bytes:
    """One server-sent event: its id, name and data (one line of redacted JSON).

    >>> sse("done", {"outputs": {"a": "x"}}, 3)
    b'id: 3\\nevent: done\\ndata: {"outputs": {"a": "x"}}\\n\\n'
    """
    return f"id: {number}\nevent: {event}\ndata: {dump_line(data)}\n".encode("utf-8")


class Front:
    """Outermost ASGI middleware: the request id, the access log line, and a generic 500 for anything
    that escaped (so no exception text reaches a client, nor an unredacted traceback the server log)."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            self.service.log.exception("request %s failed inside pipec", rid)
            if not status:
                with contextlib.suppress(Exception):
                    await Reply.json(500, {"error": f"internal error; the server log has it under request {rid}",
                                           "request_id": rid})(scope, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - started) * 1000.0
            line = f"{scope.get('method', '?')} {scope.get('path', '?')} {status or '-'} {ms:.1f}ms id={rid}"
            if self.service.log_inputs and "pipec.inputs" in scope:
                # Masked before it is cut: a key cut in half would escape the masking.
                shown = redact(dump_line(scope["pipec.inputs"]).rstrip("\n"))
                line += " inputs=" + (shown if len(shown) <= LOGGED_INPUTS else shown[:LOGGED_INPUTS] + "…")
            self.service.access.info("%s", line)


def request_id(scope) -> str:
    """The request's id: the client's `X-Request-Id` when it is a plain token of at most 64
    characters, else a new random one; kept in the scope so every part of a request shares it.

    >>> request_id({"headers": [(b"x-request-id", b"trace-42")]}), len(request_id({"headers": [(b"x-request-id", b"a b")]}))
    ('trace-42', 16)
    """
    rid = scope.get("pipec.request_id")
    if rid is None:
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), "")
        rid = given if _REQUEST_ID.fullmatch(given) else os.urandom(8).hex()
        scope["pipec.request_id"] = rid
    return rid


def wants_stream(request) -> bool:
    """Whether a run is asked for as server-sent events: `?stream=1` (`0` says no), else an `Accept`
    header naming text/event-stream.

    >>> from starlette.requests import Request
    >>> [wants_stream(Request({"type": "http", "query_string": q, "headers": h})) for q, h in
    ...  [(b"stream=1", []), (b"", [(b"accept", b"text/event-stream")]), (b"stream=0", [(b"accept", b"text/event-stream")])]]
    [True, True, False]
    """
    flag = request.query_params.get("stream")
    if flag is not None:
        return flag.lower() in ("1", "true", "yes")
    return "text/event-stream" in request.headers.get("accept", "")


def json_kind(value: Any) -> str:
    """How a JSON value is named in messages.

    >>> json_kind([1]), json_kind("x"), json_kind(None), json_kind(2.5), json_kind(True)
    ('a list', 'text', 'null', 'a number', 'true/false')
    """
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return {list: "a list", str: "text", dict: "an object"}.get(type(value), "null" if value is None else "a value")


# ---------------------------------------------------------------------- running the server
def _log_to_stderr() -> None:
    """Access and error lines to stderr, each record redacted, unless the user configured logging."""
    serve_log = logging.getLogger("pipec.serve")
    if serve_log.level == logging.NOTSET:       # access lines are INFO: shown wherever logging goes
        serve_log.setLevel(logging.INFO)
    if serve_log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())          # uvicorn's own lines too
    for name in ("pipec.serve", "uvicorn.error"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _server_class(base):
    """uvicorn's Server, with pipec's signal handling and start line (made here: uvicorn is imported
    only when serving)."""

    class Server(base):
        def __init__(self, config, service: Service, address: str, shutdown_timeout: float):
            super().__init__(config)
            self.service, self.address, self.shutdown_timeout = service, address, shutdown_timeout

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                program = self.service.program
                source = program.artifact_path or program.path
                self.service.log.info("serving pipeline %s (%s%s) on %s: POST /run, /batch; GET /schema, /health",
                                      program.name, source, ", compiled" if program.artifact is not None else "",
                                      self.address)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn's own handler re-raises the signal after shutting down, so a SIGTERM would end
            # the process by that signal; here a drained server returns and pipec exits normally.
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def handle(signum, frame) -> None:
                if self.should_exit:
                    self.force_exit = True
                    self.service.log.warning("second signal: stopping now")
                    return
                self.should_exit = True
                self.service.log.info("%s: no new connections; finishing %d requests in flight (up to %gs)",
                                      signal.Signals(signum).name, self.service.in_flight, self.shutdown_timeout)

            originals = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, original in originals.items():
                    signal.signal(sig, original)
                self.service.log.info("stopped")

    return Server
