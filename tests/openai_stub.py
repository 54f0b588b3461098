"""A loopback OpenAI-compatible chat server for tests: scripted replies, faults and latency."""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Cut:
    """A script entry streamed as far as `text`, after which the connection drops mid-reply."""

    def __init__(self, text: str):
        self.text = text


class StubServer:
    """Serve `POST /v1/chat/completions` on 127.0.0.1 with replies from a script.

    A script entry is a dict reply (sent as the message content, JSON-encoded), a str (sent as is),
    or a tuple `(status, headers)` for a fault, or a `Cut` (streamed, then the connection drops). When
    the script runs out, `default` answers.

    A request with `"stream": true` is answered with server-sent chat completion chunks of
    `stream_chunk` characters (and the usage chunk when `stream_options.include_usage` asks). With a
    `gate` (a threading.Event), the stream stops after its first `gate_after` chunks until the gate is
    set, so a test can see early partials arrive while the rest of the reply is still held back.
    """

    def __init__(self, default=None, latency: float = 0.0, stream_chunk: int = 4, gate=None, gate_after: int = 1):
        self.stream_chunk = stream_chunk
        self.gate = gate
        self.gate_after = gate_after
        self.script: deque = deque()
        self.default = default
        self.latency = latency
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []          # request target: path and query string
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with stub._lock:
                    stub.requests.append(body)
                    stub.headers.append(dict(self.headers))
                    stub.paths.append(self.path)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    entry = stub.script.popleft() if stub.script else stub.default
                try:
                    if stub.latency:
                        time.sleep(stub.latency)
                    if isinstance(entry, tuple):
                        status, headers = entry
                        payload = json.dumps({"error": {"message": f"injected {status}", "type": "server_error"}})
                        self.send_response(status)
                        for k, v in headers.items():
                            self.send_header(k, v)
                        self.send_header("content-type", "application/json")
                        self.send_header("content-length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload.encode())
                        return
                    if isinstance(entry, Cut):
                        self._stream(body, entry.text, cut=True)
                        return
                    content = entry(body) if callable(entry) else entry
                    content = content if isinstance(content, str) else json.dumps(content)
                    if body.get("stream"):
                        self._stream(body, content)
                        return
                    payload = json.dumps({
                        "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model", "stub"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
                    })
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload.encode())
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def _stream(self, body, content: str, cut: bool = False):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.end_headers()

                def send(chunk: dict):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()

                def chunk(delta: dict, finish=None) -> dict:
                    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": body.get("model", "stub"),
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

                send(chunk({"role": "assistant", "content": ""}))
                pieces = [content[i:i + stub.stream_chunk] for i in range(0, len(content), stub.stream_chunk)]
                for n, piece in enumerate(pieces):
                    if stub.gate is not None and n == stub.gate_after:
                        stub.gate.wait(timeout=30)
                    send(chunk({"content": piece}))
                if cut:
                    return                      # the connection closes without a finish reason
                send(chunk({}, "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    send({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                          "model": body.get("model", "stub"), "choices": [],
                          "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base(self) -> str:
        return self.root + "/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
