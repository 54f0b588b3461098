"""A loopback OpenAI-compatible chat server for the benchmarks: deterministic replies, fixed latency.

    python bench/openai_server.py --latency 0.1 --fields intent     # prints "PORT <n>", serves until killed

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length bodies), so that it is never the
bottleneck: parsing a request and writing a reply costs tens of microseconds, and the per-request
latency L is an `asyncio.sleep`, so any number of requests wait at once. It listens on 127.0.0.1 only.

Replies are a function of the request, never random:
- the value of each output field is decided by keyword rules on the last user message (an intent,
  a support team), or a fixed text for free-text fields (`reasoning`, `answer`);
- the format follows what the client asked for: DSPy's ChatAdapter field markers
  (`[[ ## intent ## ]]`) when the system prompt uses them, otherwise one JSON object (what pipec
  and DSPy's JSONAdapter ask for). So each side gets a reply in the format its own prompt requests,
  as from an LM that follows instructions perfectly.
`usage` counts tokens as characters / 4.

With `--upstream URL` it is instead a counting proxy in front of a real server (the compile
benchmark puts it before llama-cpp-python's server): every request is forwarded as is, and
`POST /_stats/reset` returns the requests and usage tokens seen since the last reset, so both sides'
LM calls are counted by the same code, outside either framework.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time

RULES = (
    # (field, [(keywords, value)], default)
    ("intent", [(("playlist", "add ", "put ", "include", "list"), "add_to_playlist"),
                (("table", "book", "reserve", "restaurant", "dinner"), "book_restaurant"),
                (("weather", "rain", "hot", "cold", "forecast", "sunny", "temperature", "snow"), "get_weather")],
     "play_music"),
    ("team", [(("refund", "charge", "invoice", "payment", "bill"), "billing"),
              (("error", "login", "app", "crash", "password", "dashboard", "upload"), "technical"),
              (("parcel", "deliver", "tracking", "shipping", "package", "order"), "shipping")],
     "other"),
)
FREE_TEXT = {"reasoning": "The utterance names what the user wants, so the answer follows from it.",
             "answer": "4"}
FIELD_MARK = re.compile(r"\[\[ ## (\w+) ## \]\]")


def value_for(field: str, text: str) -> str:
    low = text.lower()
    for name, rules, default in RULES:
        if name == field:
            for keys, value in rules:
                if any(k in low for k in keys):
                    return value
            return default
    return FREE_TEXT.get(field, "ok")


def input_text(user: str) -> str:
    """The input values of a user message: DSPy's marked sections, or the whole message (pipec's
    `name: value` lines), without DSPy's closing instructions, which list every label."""
    if "[[ ## " in user:
        return " ".join(re.findall(r"\[\[ ## \w+ ## \]\]\n(.*?)(?:\n\n|$)", user, re.S))
    return user


def reply_content(body: dict, fields: list[str]) -> str:
    messages = body.get("messages") or []
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    if not isinstance(system, str):
        system = json.dumps(system)
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "") or ""
    if not isinstance(user, str):
        user = json.dumps(user)
    values = {f: value_for(f, input_text(user)) for f in fields}
    if "[[ ## completed ## ]]" in system and not body.get("response_format"):
        return "".join(f"[[ ## {f} ## ]]\n{v}\n\n" for f, v in values.items()) + "[[ ## completed ## ]]"
    return json.dumps(values)


class Server:
    def __init__(self, latency: float, fields: list[str], upstream: str | None = None):
        self.latency = latency
        self.fields = fields
        self.upstream = upstream.rstrip("/") if upstream else None
        self.client = None
        self.stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "errors": 0}
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0") or 0)
                raw = await reader.readexactly(n) if n else b""
                status, payload = await self.route(method, path, raw)
                data = json.dumps(payload).encode()
                close = headers.get("connection", "").lower() == "close"
                writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
                             % (status, b"OK" if status == 200 else b"Error", len(data),
                                b"connection: close\r\n" if close else b"") + data)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, raw: bytes) -> tuple[int, dict]:
        if path.startswith("/_stats"):
            out = dict(self.stats)
            if path.endswith("/reset"):
                self.stats = {k: 0 for k in self.stats}
            return 200, out
        if self.upstream is not None:
            return await self.forward(method, path, raw)
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return 200, {"object": "list", "data": [{"id": "bench-model", "object": "model", "owned_by": "bench"}]}
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}}
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}}
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        content = reply_content(body, self.fields)
        prompt_chars = sum(len(m.get("content") or "") for m in body.get("messages") or [] if isinstance(m.get("content"), str))
        pt, ct = prompt_chars // 4, len(content) // 4
        return 200, {"id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model", "bench-model"),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}],
                     "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}


    async def forward(self, method: str, path: str, raw: bytes) -> tuple[int, dict]:
        import httpx
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=None)
        sub = path[path.index("/v1") + 3:] if "/v1" in path else path
        resp = await self.client.request(method, self.upstream + sub, content=raw,
                                         headers={"content-type": "application/json"})
        try:
            payload = resp.json()
        except ValueError:
            payload = {"error": {"message": resp.text[:500]}}
        if method == "POST" and sub.rstrip("/").endswith("/chat/completions"):
            self.stats["requests"] += 1
            usage = payload.get("usage") or {} if isinstance(payload, dict) else {}
            self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
            self.stats["errors"] += resp.status_code != 200
        return resp.status_code, payload


async def serve(latency: float, fields: list[str], port: int, upstream: str | None = None) -> None:
    srv = Server(latency, fields, upstream)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", port, backlog=1024, limit=1 << 22)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Stop when the parent goes away (stdin closes), so a crashed harness never leaves a server behind.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1024) else None)
    async with server:
        await stop.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.0, help="seconds each request waits before its reply")
    ap.add_argument("--fields", default="intent", help="output fields of every reply, comma-separated")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", help="be a counting proxy in front of this base URL (ending in /v1)")
    a = ap.parse_args()
    asyncio.run(serve(a.latency, [f for f in a.fields.split(",") if f], a.port, a.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
