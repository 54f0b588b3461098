"""A loopback OpenAI-compatible chat server for tests: scripted replies, faults and latency."""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubServer:
    """Serve `POST /v1/chat/completions` on 127.0.0.1 with replies from a script.

    A script entry is a dict reply (sent as the message content, JSON-encoded), a str (sent as is),
    or a tuple `(status, headers)` for a fault. When the script runs out, `default` answers.
    """

    def __init__(self, default=None, latency: float = 0.0):
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
                    content = entry(body) if callable(entry) else entry
                    content = content if isinstance(content, str) else json.dumps(content)
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
