"""`pipec serve`: the real server (`python -m pipec serve` as a subprocess on a free loopback port)
against a real fake LM (an OpenAI-compatible server on loopback, `fault_server.FaultServer`), driven
by a real HTTP client.

The fake LM holds any request whose text carries `hold-<token>` (or, for `hold2-<token>`, only the
second module's request) until the test releases that token, so "a request is in flight" is a fact
the test waits for, never a guess made with a sleep. Every wait polls with a generous deadline.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import pipec
from fault_server import FaultPlan, FaultServer, field_value

pytestmark = pytest.mark.usefixtures("isolated_env")

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 90.0                 # seconds any wait may take on a busy machine before it is a failure
KEY = "sk-serve-9Zq4Wm7Lx2Np5Rt8Vb1Yc3Hd6Jf0Gk"

TRIAGE = """
lm stub = "openai/serve-model" (api_base: "{base}", api_key_env: "PIPEC_SERVE_KEY", num_retries: 0, timeout: 120)

signature Classify {{ "Classify the text." in text: str  in n: int?  out label: enum(pos, neg)  out score: float }}
signature Explain {{ "Explain the label." in text: str  in label: str  out note: str }}
module classify = Predict(Classify)
module explain = Predict(Explain)

pipeline triage(text: str "what to triage", n: int?) -> (label, note) {{
    a = classify(text: text, n: n)
    b = explain(text: text, label: a.label)
    return label = a.label, note = b.note
}}
"""


def answer(body):
    text = field_value(body, "text")
    if "garbage" in text:
        return "I'm sorry, I cannot help with that."
    return {"label": "neg" if "bad" in text else "pos", "score": 0.5, "note": f"about {text}"}


def expected(text: str) -> dict:
    return {"label": "neg" if "bad" in text else "pos", "note": f"about {text}"}


class GatedLM(FaultServer):
    """The fake LM, holding requests marked `hold-<token>` (any module) or `hold2-<token>` (the
    second module only) until `release(token)`; `held(token)` counts those waiting now."""

    def __init__(self, *args, **kw):
        super().__init__(answer, *args, **kw)
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting: dict[str, int] = {}

    async def _respond(self, rec, body, writer):
        text = field_value(body, "text")
        mark = re.search(r"\bhold(2?)-(\w+)", text)
        second = "Explain the label." in body["messages"][0]["content"]
        if mark and (not mark.group(1) or second):
            token = mark.group(2)
            gate = self.gates.setdefault(token, asyncio.Event())
            with self._lock:
                self.waiting[token] = self.waiting.get(token, 0) + 1
            try:
                await gate.wait()
            finally:
                with self._lock:
                    self.waiting[token] -= 1
        return await super()._respond(rec, body, writer)

    def release(self, token: str) -> None:
        self._loop.call_soon_threadsafe(lambda: self.gates.setdefault(token, asyncio.Event()).set())

    def held(self, token: str) -> int:
        with self._lock:
            return self.waiting.get(token, 0)


def eventually(check, what: str, timeout: float = DEADLINE):
    """Poll `check()` until it returns something true; fail naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Served:
    """`python -m pipec serve ...` on a free loopback port, its stderr collected line by line."""

    def __init__(self, target: Path, *args: str, env: dict | None = None, cwd: Path | None = None):
        full_env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "PIPEC_SERVE_KEY": "a-key-of-no-account",
                    **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "pipec", "serve", str(target), "--port", "0", *args],
                                     cwd=cwd or target.parent, env=full_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def start(self) -> "Served":
        def address():
            if self.proc.poll() is not None:
                raise AssertionError(f"pipec serve exited with {self.proc.returncode}:\n{self.log}")
            found = re.search(r" on (http://127\.0\.0\.1:\d+)", self.log)
            return found and found.group(1)
        self.url = eventually(address, "the server's address line")
        eventually(lambda: self._healthy(), "GET /health")
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=10).status_code == 200
        except httpx.TransportError:
            return False

    def access_line(self, rid: str) -> str:
        """The access log line of request `rid` (it is written as the response ends: wait for it)."""
        return eventually(lambda: next((line for line in list(self.lines) if f"id={rid}" in line and
                                        "pipec.serve.access" in line), None), f"the access log line of {rid}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        self.proc.stdout.close()
        return self.proc.returncode


def client() -> httpx.Client:
    return httpx.Client(timeout=DEADLINE)


@pytest.fixture(scope="module")
def lm():
    with GatedLM() as server:
        yield server


@pytest.fixture(scope="module")
def triage(lm, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve")
    path = folder / "triage.pipe"
    path.write_text(TRIAGE.format(base=lm.base), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(triage, tmp_path_factory):
    """One server for the tests that need no special options: 2 runs at once, 2 rows of a batch, 4 KiB bodies."""
    served = Served(triage, "--no-cache", "--max-concurrent", "2", "--batch-concurrency", "2", "--max-body", "4096").start()
    yield served
    served.stop()


def read_events(response: httpx.Response):
    """Server-sent events as (event, id, data) as they arrive; comment lines skipped."""
    event, number, data = None, None, []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if event is not None or data:
                yield event, number, json.loads("\n".join(data))
            event, number, data = None, None, []
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "id":
            number = int(value)
        elif name == "data":
            data.append(value)


# ---------------------------------------------------------------------- running
def test_run_returns_the_outputs_and_a_request_id(server, lm):
    with client() as c:
        reply = c.post(server.url + "/run", json={"text": "a good day", "n": 3})
        assert reply.status_code == 200, reply.text
        assert reply.json() == expected("a good day")
        assert reply.headers["content-type"] == "application/json"
        rid = reply.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{16}", rid)
        # A client's own id is kept (and a malformed one replaced).
        assert c.post(server.url + "/run", json={"text": "b"}, headers={"x-request-id": "trace-42"}).headers[
            "x-request-id"] == "trace-42"
        assert c.post(server.url + "/run", json={"text": "b"}, headers={"x-request-id": "no spaces\tplease"}).headers[
            "x-request-id"] != "no spaces\tplease"
    line = server.access_line(rid)
    assert re.search(rf"POST /run 200 \d+\.\dms id={rid}$", line.rstrip()), line


def test_a_failed_run_is_a_502_naming_the_node_not_the_reason(server):
    with client() as c:
        reply = c.post(server.url + "/run", json={"text": "garbage in"})
    assert reply.status_code == 502
    body = reply.json()
    rid = reply.headers["x-request-id"]
    assert body["node"] == "a" and body["request_id"] == rid and "failed at node a" in body["error"]
    assert "parse" not in reply.text and "sorry" not in reply.text.lower()     # the reason is the log's
    eventually(lambda: f"request {rid}: triage failed: a (classify): reply did not parse" in server.log,
               "the reason in the server log")


def test_batch_gives_each_row_its_own_result(server):
    rows = [{"text": "good one"}, {"n": 2}, {"text": "garbage row"}, {"text": ["not", "text"]},
            "not an object", {"text": "bad one", "extra": 1}, {"text": "last", "n": 7}]
    with client() as c:
        reply = c.post(server.url + "/batch", json=rows)
    assert reply.status_code == 200, reply.text
    results = reply.json()
    assert len(results) == len(rows)
    assert results[0] == {"ok": True, "outputs": expected("good one")}
    assert results[6] == {"ok": True, "outputs": expected("last")}
    assert results[1]["status"] == 422 and [f["field"] for f in results[1]["fields"]] == ["text"]
    assert results[2]["status"] == 502 and results[2]["node"] == "a"
    assert results[3]["status"] == 422 and results[3]["fields"] == [
        {"field": "text", "error": "input 'text': expected text, got a list"}]
    assert results[4]["status"] == 422 and "must be a JSON object" in results[4]["error"]
    assert results[5]["status"] == 422 and [f["field"] for f in results[5]["fields"]] == ["extra"]
    assert not any(r["ok"] for r in results[1:6])


def test_batch_rows_run_with_bounded_concurrency(server, lm):
    """--batch-concurrency 2: of six held rows, two reach the LM; the others wait for them."""
    rows = [{"text": f"row {i} hold-batchbound"} for i in range(6)]
    with ThreadPoolExecutor(1) as pool, client() as c:
        future = pool.submit(c.post, server.url + "/batch", json=rows)
        try:
            eventually(lambda: lm.held("batchbound") >= 2, "two rows held at the LM")
            time.sleep(0.5)          # not for correctness: only gives a third row the chance to show up
            assert lm.held("batchbound") == 2
        finally:
            lm.release("batchbound")
        reply = future.result(DEADLINE)
    assert reply.status_code == 200
    assert [r["outputs"] for r in reply.json()] == [expected(r["text"]) for r in rows]


def test_batch_must_be_a_list(server):
    with client() as c:
        reply = c.post(server.url + "/batch", json={"text": "one"})
    assert reply.status_code == 422 and "JSON list" in reply.json()["error"]


# ---------------------------------------------------------------------- checking inputs
@pytest.mark.parametrize("body, fields, says", [
    ({"n": 1}, ["text"], "missing input 'text'"),
    ({"text": ["a"]}, ["text"], "expected text, got a list"),
    ({"text": "x", "n": "many"}, ["n"], "input 'n': expected"),
    ({"text": "x", "txt": "y"}, ["txt"], "'txt' is not an input of triage"),
    ({"txet": "x"}, ["text", "txet"], "did you mean 'text'?"),
    ({"text": {"nested": 1}, "n": [1], "zzz": 0}, ["text", "n", "zzz"], "expected text, got an object"),
])
def test_bad_inputs_are_422_naming_each_field(server, lm, body, fields, says):
    before = len(lm.records())
    with client() as c:
        reply = c.post(server.url + "/run", json=body)
    assert reply.status_code == 422, reply.text
    got = reply.json()
    assert [f["field"] for f in got["fields"]] == fields
    assert says in got["error"] and got["request_id"] == reply.headers["x-request-id"]
    assert len(lm.records()) == before              # refused before any LM call


@pytest.mark.parametrize("raw, says", [
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b"{", "not valid JSON"),
    (b"", "not valid JSON"),
    (b'{"text": NaN}', "not valid JSON: NaN is not a JSON value"),
    (b'{"text": "a", "text": "b"}', "duplicate key 'text'"),
    (b'{"text": "\xff"}', "not valid JSON"),
])
def test_bodies_that_are_not_an_input_object_are_422(server, raw, says):
    with client() as c:
        reply = c.post(server.url + "/run", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text
    assert says in reply.json()["error"]


def test_bodies_over_the_limit_are_413_without_being_read_whole(server):
    big = json.dumps({"text": "x" * 10_000}).encode()

    def chunks():                   # no Content-Length: the server has to count
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    with client() as c:
        declared = c.post(server.url + "/run", content=big, headers={"content-type": "application/json"})
        counted = c.post(server.url + "/run", content=chunks(), headers={"content-type": "application/json"})
        batch = c.post(server.url + "/batch", content=b"[" + b",".join([big] * 3) + b"]")
        assert (declared.status_code, counted.status_code, batch.status_code) == (413, 413, 413)
        assert "at most 4096" in declared.json()["error"] and "over 4096 bytes" in counted.json()["error"]
        assert "x" * 100 not in declared.text
        # The server is unharmed, and a body just under the limit is fine.
        assert c.post(server.url + "/run", json={"text": "y" * 3000}).status_code == 200


# ---------------------------------------------------------------------- schema and health
def test_schema_describes_inputs_and_outputs(server):
    with client() as c:
        got = c.get(server.url + "/schema").json()
    assert got["pipeline"] == "triage"
    assert got["input"]["properties"] == {"text": {"type": "string", "description": "what to triage"},
                                          "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}
    assert got["input"]["required"] == ["text"] and got["input"]["additionalProperties"] is False
    assert got["output"]["properties"] == {"label": {"type": "string", "enum": ["pos", "neg"]},
                                           "note": {"type": "string"}}
    assert got["output"]["required"] == ["label", "note"]
    assert got["input"]["$schema"].endswith("2020-12/schema")


def test_health_names_the_pipeline(server):
    with client() as c:
        reply = c.get(server.url + "/health")
        wrong_method = c.get(server.url + "/run")
        missing = c.get(server.url + "/nowhere")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "pipeline": "triage", "compiled": False, "in_flight": 0,
                            "max_concurrent": 2}
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "Method Not Allowed"
    assert missing.status_code == 404 and missing.json()["request_id"] == missing.headers["x-request-id"]


# ---------------------------------------------------------------------- streaming
@pytest.mark.parametrize("how", ["query", "accept"])
def test_stream_sends_an_event_per_node_then_done(server, how):
    url, headers = (server.url + "/run?stream=1", {}) if how == "query" else \
        (server.url + "/run", {"accept": "text/event-stream"})
    with client() as c, c.stream("POST", url, json={"text": "good news"}, headers=headers) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(reply))
    assert [(e, n) for e, n, _ in events] == [("partial", 1), ("partial", 2), ("done", 3)]
    first, second, done = (d for _, _, d in events)
    assert first == {"type": "node", "node": "a", "module": "classify", "outputs": {"label": "pos", "score": 0.5}}
    assert second == {"type": "node", "node": "b", "module": "explain", "outputs": {"note": "about good news"}}
    assert done["outputs"] == expected("good news") and done["request_id"] == reply.headers["x-request-id"]


def test_stream_events_arrive_while_the_run_goes_on(server, lm):
    """The first node's event is read while the second node's LM call is still held: nothing is
    buffered until the end."""
    with client() as c, c.stream("POST", server.url + "/run?stream=1", json={"text": "hold2-streaming"}) as reply:
        events = read_events(reply)
        try:
            event, _, data = next(events)
            assert event == "partial" and data["node"] == "a"
            # The second node's call reaches the fake LM and waits there (on a busy machine it may get
            # there after the first event was read): the event did not wait for the run to finish.
            eventually(lambda: lm.held("streaming") == 1, "the second node's LM call held")
        finally:
            lm.release("streaming")
        rest = list(events)
    assert [e for e, _, _ in rest] == ["partial", "done"]


def test_a_failed_streamed_run_ends_with_an_error_event(server):
    with client() as c, c.stream("POST", server.url + "/run?stream=1", json={"text": "garbage"}) as reply:
        events = list(read_events(reply))
    assert [e for e, _, _ in events] == ["error"]
    data = events[0][2]
    assert data["status"] == 502 and data["node"] == "a" and "parse" not in json.dumps(data)


def test_a_stream_sends_token_partials_of_the_outputs_as_the_lm_streams(tmp_path):
    """An LM that streams its reply (server-sent chunks, held back after the first few until the test
    has read a token partial): `type: "outputs"` events carry the pipeline's outputs so far, text
    growing, the enum whole, while the node and done events stay as they were."""
    from openai_stub import StubServer

    def reply(body):
        if "Explain the label." in body["messages"][0]["content"]:
            return {"note": "a note that arrives in pieces"}
        return {"label": "pos", "score": 0.5}
    gate = threading.Event()
    with StubServer(default=reply, stream_chunk=4, gate=gate, gate_after=4) as stub:
        pipe = tmp_path / "triage.pipe"
        pipe.write_text(TRIAGE.format(base=stub.base), encoding="utf-8")
        served = Served(pipe, "--no-cache").start()
        try:
            with client() as c, c.stream("POST", served.url + "/run?stream=1", json={"text": "good news"}) as reply_:
                events = []
                for event in read_events(reply_):
                    events.append(event)
                    if event[2].get("type") == "outputs" and not gate.is_set():
                        gate.set()          # the first token partial came while the LM held the rest back
        finally:
            gate.set()
            served.stop()
    assert [n for _, n, _ in events] == list(range(1, len(events) + 1))
    kinds = [(e, d.get("type")) for e, _, d in events]
    assert kinds[-1] == ("done", None) and all(e == "partial" for e, _ in kinds[:-1])
    nodes = [d for _, _, d in events if d.get("type") == "node"]
    assert [d["node"] for d in nodes] == ["a", "b"]
    outputs = [d["outputs"] for _, _, d in events if d.get("type") == "outputs"]
    notes = [o["note"] for o in outputs if "note" in o]
    assert len(notes) >= 3 and all(later.startswith(earlier) for earlier, later in zip(notes, notes[1:]))
    assert all(o.get("label", "pos") == "pos" for o in outputs)      # the enum appears whole or not at all
    assert events[-1][2]["outputs"] == {"label": "pos", "note": "a note that arrives in pieces"}


def test_a_stream_with_bad_inputs_is_a_plain_422(server):
    with client() as c:
        reply = c.post(server.url + "/run?stream=1", json={"txt": "x"})
    assert reply.status_code == 422 and reply.headers["content-type"] == "application/json"


# ---------------------------------------------------------------------- limits
def test_over_max_concurrent_is_429_with_retry_after(server, lm):
    with ThreadPoolExecutor(2) as pool, client() as c:
        held = [pool.submit(c.post, server.url + "/run", json={"text": f"hold-full {i}"}) for i in range(2)]
        try:
            eventually(lambda: lm.held("full") == 2, "two runs held at the LM")
            refused = c.post(server.url + "/run", json={"text": "one more"})
            refused_batch = c.post(server.url + "/batch", json=[{"text": "one more"}])
            refused_stream = c.post(server.url + "/run?stream=1", json={"text": "one more"})
            health = c.get(server.url + "/health")            # not a run: always answered
        finally:
            lm.release("full")
        done = [f.result(DEADLINE) for f in held]
        after = c.post(server.url + "/run", json={"text": "after"})
    for reply in (refused, refused_batch, refused_stream):
        assert reply.status_code == 429, reply.text
        assert reply.headers["retry-after"] == "1"
        assert "busy" in reply.json()["error"]
    assert health.status_code == 200 and health.json()["in_flight"] == 2
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200


# ---------------------------------------------------------------------- access log
def test_access_log_has_no_inputs_by_default(server):
    marker = "private-marker-7731"
    with client() as c:
        ok = c.post(server.url + "/run", json={"text": f"{marker} good"})
        bad = c.post(server.url + "/run", json={"text": [marker]})
    for reply in (ok, bad):
        line = server.access_line(reply.headers["x-request-id"])
        assert f" {reply.status_code} " in line
    assert marker not in server.log


# ---------------------------------------------------------------------- shutdown
def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(triage, lm):
    served = Served(triage, "--no-cache").start()
    try:
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, served.url + "/run", json={"text": "hold-shutdown"}, timeout=DEADLINE)
            try:
                eventually(lambda: lm.held("shutdown") == 1 or in_flight.done(), "the run held at the LM")
                assert not in_flight.done(), in_flight.result().text
                served.proc.send_signal(signal.SIGTERM)

                def refused() -> bool:
                    try:
                        httpx.get(served.url + "/health", timeout=10)
                    except httpx.ConnectError:
                        return True
                    return False
                eventually(refused, "new connections to be refused")
                assert served.proc.poll() is None            # still finishing the run
            finally:
                lm.release("shutdown")
            reply = in_flight.result(DEADLINE)
        assert reply.status_code == 200 and reply.json() == expected("hold-shutdown")
        assert served.proc.wait(DEADLINE) == 0
    finally:
        served.stop()
    assert "SIGTERM: no new connections; finishing 1 requests in flight" in served.log
    assert "pipec.serve: stopped" in served.log


# ---------------------------------------------------------------------- secrets
def test_no_secret_in_any_error_body_or_the_log(tmp_path):
    """The LM refuses the key and echoes it back (a 401 whose message holds the credential): every
    response and the whole server log are free of it, though the log has the reasons."""
    with FaultServer(answer, FaultPlan(script={0: "401_echo"})) as echo:
        pipe = tmp_path / "triage.pipe"
        pipe.write_text(TRIAGE.format(base=echo.base), encoding="utf-8")
        served = Served(pipe, "--no-cache", "--log-inputs", env={"PIPEC_SERVE_KEY": KEY}).start()
        bodies = []
        try:
            with client() as c:
                run = c.post(served.url + "/run", json={"text": "hello"})
                bodies.append(run.text)
                bodies.append(c.post(served.url + "/batch", json=[{"text": "one"}, {"text": "two"}]).text)
                with c.stream("POST", served.url + "/run?stream=1", json={"text": "three"}) as stream:
                    bodies.append("".join(stream.iter_text()))
                # The key in the inputs and in a field name: echoed nowhere, logged only masked.
                bodies.append(c.post(served.url + "/run", json={"text": f"my key is {KEY}", KEY: 1}).text)
                masked = c.post(served.url + "/run", json={"text": f"mine: {KEY} ok"})
                bodies.append(masked.text)
            line = served.access_line(masked.headers["x-request-id"])
        finally:
            served.stop()
        assert any(KEY in r.headers.get("authorization", "") for r in echo.records())     # the key was in play
    assert run.status_code == 502
    assert all(piece not in text for text in [*bodies, served.log] for piece in pieces(KEY)), served.log
    assert 'inputs={"text": "mine: *** ok"}' in line
    assert f"request {run.headers['x-request-id']}: triage failed:" in served.log      # the reason went to the log
    assert "401" in served.log


def pieces(secret: str, n: int = 12) -> list[str]:
    return [secret[i:i + n] for i in range(len(secret) - n + 1)]


def test_an_internal_error_is_a_generic_500_and_a_redacted_log_entry(tmp_path, monkeypatch, caplog):
    """What no request can cause on purpose (a bug inside pipec), shown on the Python API's app: the
    client gets an id, the log gets the traceback with the key masked."""
    import pipec.serve as serve
    pipe = tmp_path / "echo.pipe"
    pipe.write_text('signature S { in q: str out a: str } module m = Predict(S) '
                    'pipeline echo(q: str) -> (a) { return a = m(q: q).a }', encoding="utf-8")
    prog = pipec.load(pipe, lm=pipec.ScriptedLM(rule=lambda request: {"a": "x"}), cache=False)

    async def broken(*args):
        raise RuntimeError(f"internal state with {KEY}")
    monkeypatch.setattr(serve, "run_one", broken)

    async def post(path, body):
        transport = httpx.ASGITransport(serve.app(prog))
        async with httpx.AsyncClient(transport=transport, base_url="http://pipec") as c:
            return await c.post(path, json=body)

    with caplog.at_level(logging.INFO, logger="pipec.serve"):
        run = asyncio.run(post("/run", {"q": "hi"}))
        batch = asyncio.run(post("/batch", [{"q": "hi"}]))
    rid = run.headers["x-request-id"]
    assert run.status_code == 500 and run.json() == {
        "error": f"internal error; the server log has it under request {rid}", "request_id": rid}
    assert batch.status_code == 200 and batch.json()[0]["status"] == 500
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "RuntimeError: internal state with ***" in logged
    assert KEY not in logged and KEY not in run.text + batch.text and "RuntimeError" not in run.text + batch.text


# ---------------------------------------------------------------------- trust
TOY = """
lm stub = "openai/serve-model" (api_base: "{base}", api_key_env: "PIPEC_SERVE_KEY", num_retries: 0, timeout: 60)
signature Label {{ "Label the text." in text: str  out label: enum(pos, neg) }}
module label = Predict(Label)
pipeline toy(text: str) -> (label) {{
    r = label(text: text)
    return label = r.label
}}
"""


def test_an_artifact_from_elsewhere_is_refused_at_startup_like_pipec_run(tmp_path, lm, monkeypatch):
    pipe = tmp_path / "toy.pipe"
    pipe.write_text(TOY.format(base=lm.base), encoding="utf-8")
    rows = [{"text": f"{w} day", "label": "neg" if w == "bad" else "pos"} for w in ("good", "bad", "fine", "bad")]
    prog = pipec.load(pipe, lm=pipec.ScriptedLM(rule=lambda r: {"label": "pos"}), cache=False)
    artifact = prog.compile(rows[:2], rows[2:], "exact_match(label)", "labeled_fewshot", seed=1,
                            options={"max_labeled": 2}).save(tmp_path / "toy.compiled.json")
    elsewhere = {"PIPEC_TRUST_DIR": str(tmp_path / "another-machine"), "NO_COLOR": "1"}
    run = subprocess.run([sys.executable, "-m", "pipec", "run", str(artifact), "-i", "text=x"], cwd=tmp_path,
                         env={**os.environ, **elsewhere}, capture_output=True, text=True, timeout=DEADLINE)
    refused = subprocess.run([sys.executable, "-m", "pipec", "serve", str(artifact), "--port", "0"], cwd=tmp_path,
                             env={**os.environ, **elsewhere}, capture_output=True, text=True, timeout=DEADLINE)
    assert run.returncode == refused.returncode == 2
    said_by_run = run.stderr.split("pipec run: error: ", 1)[1]
    assert "was not compiled on this machine" in said_by_run and lm.base.rsplit("/", 1)[0] in said_by_run
    assert refused.stderr.split("pipec serve: error: ", 1)[1] == said_by_run
    origin = re.match(r"http://127\.0\.0\.1:\d+", lm.base).group(0)
    # The Python API refuses as early: when the app is made, not on its first request.
    from pipec.serve import app
    monkeypatch.setenv("PIPEC_TRUST_DIR", elsewhere["PIPEC_TRUST_DIR"])
    with pytest.raises(pipec.ApprovalRequired):
        app(pipec.load(artifact, cache=False))
    assert app(pipec.load(artifact, cache=False, allow=[origin])) is not None
    served = Served(artifact, "--allow", origin, "--no-cache", env=elsewhere).start()
    try:
        with client() as c:
            assert c.get(served.url + "/health").json()["compiled"] is True
            assert c.post(served.url + "/run", json={"text": "bad weather"}).json() == {"label": "neg"}
    finally:
        served.stop()


# ---------------------------------------------------------------------- the extra stays optional
def test_serve_help_imports_neither_starlette_nor_uvicorn():
    probe = ("import sys, json\nsys.argv = ['pipec', 'serve', '--help']\nfrom pipec.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"starlette", "uvicorn"}


def test_the_listening_socket_says_it_is_tcp():
    """asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP; without it each reply's
    body waited for the client's delayed ACK, some 40 ms per request (bench/serve_load.py showed it)."""
    import socket

    from pipec.serve import listen
    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
