"""A fault-injecting OpenAI-compatible chat server on loopback, for the reliability tests.

`FaultServer` serves `POST /v1/chat/completions` (HTTP/1.1, keep-alive) from an asyncio loop on a
background thread, so it stays responsive at hundreds of requests a second while the code under
test runs in this process or in a `pipec` subprocess.

Every request is recorded (`FaultServer.log`): when it arrived and finished, a content key (sha256
of its messages, so a transport retry of one call has the same key and a new call a new one), which
attempt of that key it was, which fault it got and the status sent. Faults are decided by a
function of `(key, attempt)`, so a given request gets the same fault whatever the scheduling:

    FaultPlan(rate=0.2, kinds=ALL_FAULTS, seed=7)     # 20% of requests, kinds drawn by seed
    FaultPlan(script={0: "429"})                     # every first attempt gets a 429

Fault kinds: "timeout" (hold the request longer than the client waits), "429" (with Retry-After),
"500", "503", "reset" (TCP RST, no reply), "close" (connection closed without a reply),
"truncated_body" (headers promise more bytes than are sent), "empty" (a 200 whose message is
empty), "truncated" (a 200 whose message is cut mid-object, finish_reason "length"),
"wrong_format" (a 200 with prose instead of JSON), "html" (a 200 text/html page),
"bad_json" (a 200 application/json body that is not JSON), "401_echo" (a 401 whose message
echoes the credential sent, as some proxies do), and "401_echo_text" (a 401 text/plain page that
echoes the key at byte `FaultPlan.echo_at`, so a client cutting the body at 300 bytes keeps its
first 12 characters). Refusals of the request, as OpenAI words them: "401" (a wrong key), "403" (a
key not allowed this model), "400" (a parameter the model does not take) and "context_window" (a 400
saying the prompt is over the model's maximum context length).

Also here, because several reliability test files share them: `pipec_cli` (run the installed
`pipec` script) and `record_figure` (figures for RELIABILITY.md).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ALL_FAULTS = ("timeout", "429", "500", "503", "reset", "close", "truncated_body", "empty", "truncated",
              "wrong_format", "html", "bad_json")
TRANSPORT_FAULTS = ("timeout", "429", "500", "503", "reset", "close", "truncated_body")
CONTENT_FAULTS = ("empty", "truncated", "wrong_format")
# Refusals of the request itself: (status, OpenAI's message, its error code).
REFUSALS = {
    "401": (401, "Incorrect API key provided. You can find your API key at your account page.", "invalid_api_key"),
    "403": (403, "Your organization does not have access to this model.", "model_not_allowed"),
    "400": (400, "Unsupported parameter: 'seed' is not supported with this model.", "unsupported_parameter"),
    "context_window": (400, "This model's maximum context length is 2048 tokens. However, your messages resulted "
                            "in 3112 tokens. Please reduce the length of the messages.", "context_length_exceeded"),
}


def request_key(body: dict) -> str:
    """The content address of a chat request: its model and messages."""
    blob = json.dumps([body.get("model"), body.get("messages")], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def last_user(body: dict) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def field_value(body: dict, name: str) -> str:
    """The value of `name: value` in the last user message that has it (pipec's user-message format)."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    for content in reversed(users):
        for line in str(content).splitlines():
            if line.startswith(name + ": "):
                return line[len(name) + 2:]
    return ""


@dataclass
class FaultPlan:
    """Which requests get which fault: a seeded draw per (key, attempt), or a script by attempt."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ALL_FAULTS
    seed: int = 0
    script: dict[int, str] = field(default_factory=dict)     # attempt number (0-based) -> fault
    retry_after: str = "0.2"
    hang: float = 5.0                                          # how long a "timeout" holds the request
    truncate_at: int | None = None                             # where "truncated" cuts (default: a third)
    echo_at: int = 288                                         # where "401_echo_text" puts the key

    def decide(self, key: str, attempt: int) -> str | None:
        if attempt in self.script:
            return self.script[attempt]
        if self.rate <= 0:
            return None
        rng = random.Random(f"{self.seed}:{key}:{attempt}")
        if rng.random() < self.rate:
            return rng.choice(self.kinds)
        return None


@dataclass
class Record:
    key: str
    attempt: int
    arrived: float
    fault: str | None
    status: int = 0
    finished: float = 0.0
    headers: dict = field(default_factory=dict)


class FaultServer:
    """The server. `answer(body) -> dict | str` makes a 200 reply's message content."""

    def __init__(self, answer: Callable[[dict], Any] | None = None, plan: FaultPlan | None = None,
                 latency: float | Callable[[dict], float] = 0.0, host: str = "127.0.0.1"):
        self.answer = answer or (lambda body: {"answer": "ok"})
        self.plan = plan or FaultPlan()
        self.latency = latency
        self.host = host
        self.log: list[Record] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-server")
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task] = set()
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FaultServer":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shutdown():
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ------------------------------------------------------------------ views of the log
    def records(self) -> list[Record]:
        with self._lock:
            return list(self.log)

    def count(self, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.log if status is None or r.status == status)

    def successes_by_key(self) -> dict[str, list[Record]]:
        """Requests answered with a usable 200 reply, by content key."""
        out: dict[str, list[Record]] = {}
        for r in self.records():
            if r.status == 200 and r.fault is None:
                out.setdefault(r.key, []).append(r)
        return out

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()
            self.attempts.clear()

    # ------------------------------------------------------------------ HTTP
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, _, rest = lines[0].partition(" ")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                raw = await reader.readexactly(length) if length else b""
                keep = await self._handle(method, headers, raw, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._conns.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    async def _handle(self, method: str, headers: dict, raw: bytes, writer) -> bool:
        """Answer one request; return whether the connection stays open."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        key = request_key(body)
        with self._lock:
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
            fault = self.plan.decide(key, attempt)
            rec = Record(key, attempt, time.monotonic(), fault, headers=headers)
            self.log.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.latency(body) if callable(self.latency) else self.latency
            if delay:
                await asyncio.sleep(delay)
            return await self._respond(rec, body, writer)
        finally:
            rec.finished = time.monotonic()
            with self._lock:
                self.in_flight -= 1

    async def _respond(self, rec: Record, body: dict, writer) -> bool:
        fault = rec.fault
        if fault == "timeout":
            await asyncio.sleep(self.plan.hang)
            rec.status = -1
            return False
        if fault in ("429", "500", "503"):
            status = int(fault)
            extra = {"retry-after": self.plan.retry_after} if status == 429 else {}
            payload = json.dumps({"error": {"message": f"injected {status}", "type": "server_error",
                                            "code": status}}).encode()
            rec.status = status
            await self._send(writer, status, payload, extra=extra)
            return True
        if fault in REFUSALS:
            status, message, code = REFUSALS[fault]
            payload = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}}).encode()
            rec.status = status
            await self._send(writer, status, payload)
            return True
        if fault == "401_echo":                       # a proxy that echoes the credential it was given
            auth = rec.headers.get("authorization", "") or rec.headers.get("api-key", "")
            payload = json.dumps({"error": {"message": f"Incorrect API key provided: {auth}", "type": "auth_error",
                                            "code": 401}}).encode()
            rec.status = 401
            await self._send(writer, 401, payload)
            return True
        if fault == "401_echo_text":                  # a plain-text error page with the key far into it
            auth = rec.headers.get("authorization", "") or rec.headers.get("api-key", "")
            key = auth.split(" ", 1)[-1]
            head = "401 Unauthorized. The gateway rejected the credential it received: "
            payload = (head.ljust(self.plan.echo_at, ".") + key + " (check your account settings)").encode()
            rec.status = 401
            await self._send(writer, 401, payload, "text/plain")
            return True
        if fault == "reset":
            rec.status = -2
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if fault == "close":
            rec.status = -3
            writer.close()
            return False
        if fault == "html":
            rec.status = 200
            await self._send(writer, 200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return True
        if fault == "bad_json":
            rec.status = 200
            await self._send(writer, 200, b'{"id": "chatcmpl-x", "choices": [{"message": ')
            return True
        content = self.answer(body)
        finish = "stop"
        content = content if isinstance(content, str) else json.dumps(content)
        if fault == "empty":
            content = ""
        elif fault == "truncated":
            content, finish = content[: self.plan.truncate_at or max(1, len(content) // 3)], "length"
        elif fault == "wrong_format":
            content = "I'm sorry, I can't help with that request."
        payload = json.dumps({
            "id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        }).encode()
        rec.status = 200
        if fault == "truncated_body":
            head = (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                    "connection: close\r\n\r\n").encode()
            writer.write(head + payload[: len(payload) // 2])
            await writer.drain()
            rec.status = -4
            writer.transport.abort()
            return False
        await self._send(writer, 200, payload)
        return True

    @staticmethod
    async def _send(writer, status: int, payload: bytes, ctype: str = "application/json", extra: dict | None = None):
        reason = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
                  400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}", f"content-type: {ctype}", f"content-length: {len(payload)}",
                 "connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await writer.drain()


# ---------------------------------------------------------------------- helpers shared by the tests
REPO = Path(__file__).resolve().parent.parent


def pipec_cli(*args, env: dict | None = None, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed `pipec` script (or `python -m pipec`) with NO_COLOR set."""
    script = Path(sys.executable).with_name("pipec")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pipec"]
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([*command, *map(str, args)], cwd=cwd or REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def pipec_command() -> list[str]:
    script = Path(sys.executable).with_name("pipec")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipec"]


def record_figure(name: str, **data) -> None:
    """Append a figure to $PIPEC_RELIABILITY_FIGURES (JSON lines) when it is set, and print it (-s shows it)."""
    line = json.dumps({"name": name, **data}, sort_keys=True, default=str)
    print(f"\nFIGURE {line}")
    path = os.environ.get("PIPEC_RELIABILITY_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
