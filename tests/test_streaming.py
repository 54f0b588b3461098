"""Streaming (`Program.stream`, `LMBackend.astream`, `pipec run --stream`): partial outputs as an LM
reply arrives, on the scripted LM, the OpenAI-compatible direct client and litellm against a real
loopback server (`openai_stub.StubServer` streams server-sent events), the CLI, and the embedded
model (`-m e2e`).

What a user relies on: text fields grow and never shrink, numbers, flags and enums appear only whole,
the last item is exactly what `acall` returns (outputs, trace, cost), and caching, retries,
fallbacks and the trace behave as for a normal call.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pipec
from pipec.dsl.types import Type
from pipec.lm import AuthLMError, BadRequestLMError, LMRequest, TransientLMError
from pipec.lm.scripted import StreamCut
from pipec.prediction import Prediction
from pipec.streaming import Partial, extends, partial_fields

from openai_stub import Cut, StubServer

pytestmark = pytest.mark.usefixtures("isolated_env")

REPO = Path(__file__).resolve().parent.parent

SHAPES = """
signature Report {
    "Report on the question."
    in  q: str
    out answer: str
    out n: int
    out score: float
    out ok: bool
    out tone: enum(calm, angry)
    out tags: list[str]
    out counts: list[int]
}
module m = ChainOfThought(Report)
pipeline report(q: str) -> (answer, n, score, ok, tone, tags, counts) {
    r = m(q: q)
    return answer = r.answer, n = r.n, score = r.score, ok = r.ok, tone = r.tone, tags = r.tags, counts = r.counts
}
"""

REPLY = {"reasoning": "the question is simple", "answer": "Paris is the capital, of course", "n": 12345,
         "score": 0.875, "ok": True, "tone": "angry", "tags": ["geo", "capitals"], "counts": [10, 200]}


def collect(stream) -> list:
    async def run():
        return [item async for item in stream]
    return asyncio.run(run())


def partials_and_final(items: list):
    assert items and isinstance(items[-1], Prediction), items
    assert all(isinstance(x, Partial) for x in items[:-1])
    return [x.outputs() for x in items[:-1]], items[-1]


def assert_well_formed(partials: list[dict], final: dict) -> None:
    """Each partial extends the one before; text fields are prefixes of the final text; every other
    value shown is already the final value (never 12 of 12345, never `ang` of `angry`)."""
    before: dict = {}
    for p in partials:
        assert extends(p, before), (before, p)
        before = p
        for name, value in p.items():
            if isinstance(final[name], str):
                assert final[name].startswith(value), (name, value)
            elif name == "tags":
                assert value[:-1] == final[name][:len(value) - 1] and final[name][len(value) - 1].startswith(value[-1])
            else:
                assert value == final[name], (name, value)


# ---------------------------------------------------------------------- scripted LM
def test_partials_grow_text_and_show_other_values_only_whole(write_pipe):
    prog = pipec.load(write_pipe(SHAPES), lm=pipec.ScriptedLM(rule=lambda r: REPLY, chunk=1), cache=False)
    partials, final = partials_and_final(collect(prog.stream(q="capital of France?")))
    expected = {k: v for k, v in REPLY.items() if k != "reasoning"}
    assert final.ok and final.outputs() == expected
    assert_well_formed(partials, expected)
    answers = [p["answer"] for p in partials if "answer" in p]
    assert len(set(answers)) >= 10          # the text grew a character at a time
    assert any("n" not in p for p in partials if "answer" in p)
    assert next(p["n"] for p in partials if "n" in p) == 12345
    assert next(p["tone"] for p in partials if "tone" in p) == "angry"
    assert any(p.get("tags") == ["geo", "cap"] for p in partials)     # a list of text grows item by item
    assert not any("counts" in p and p["counts"] != [10, 200] for p in partials)


def test_the_final_item_is_what_acall_returns(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda r: REPLY, chunk=5, price=pipec.Price.per_million(1.0, 2.0))
    prog = pipec.load(write_pipe(SHAPES), lm=lm, cache=False)
    *_, streamed = collect(prog.stream(q="capital?"))
    normal = asyncio.run(prog.acall(q="capital?"))
    assert streamed == normal and streamed.outputs() == normal.outputs()
    s, n = streamed.trace, normal.trace
    assert len(s) == len(n) == 1
    for field in ("node", "module", "predictor", "model", "messages", "raw", "parsed", "error", "cache_hit",
                  "prompt_tokens", "completion_tokens", "cost", "attempt"):
        assert getattr(s[0], field) == getattr(n[0], field), field
    assert s[0].cost > 0 and prog.stats.calls == 2


def test_bad_inputs_raise_at_once(write_pipe):
    prog = pipec.load(write_pipe(SHAPES), lm=pipec.ScriptedLM(rule=lambda r: REPLY), cache=False)
    with pytest.raises(ValueError, match="missing input 'q'"):
        prog.stream(question="x")


def test_a_streamed_reply_is_cached_and_a_cached_one_yields_only_the_final(write_pipe, tmp_path):
    lm = pipec.ScriptedLM(rule=lambda r: REPLY, chunk=4, cacheable=True)
    prog = pipec.load(write_pipe(SHAPES), lm=lm, cache=tmp_path / "cache")
    first = collect(prog.stream(q="cached?"))
    assert len(first) > 5 and len(lm.requests) == 1
    normal = asyncio.run(prog.acall(q="cached?"))              # the next normal call hits the cache
    assert normal.trace[0].cache_hit and len(lm.requests) == 1
    again = collect(prog.stream(q="cached?"))
    assert len(again) == 1 and again[0] == first[-1] and again[0].trace[0].cache_hit
    assert len(lm.requests) == 1
    prog.close()


def test_a_reply_that_does_not_parse_goes_through_the_parse_retry(write_pipe):
    lm = pipec.ScriptedLM(["I think the answer is Paris, but I am not sure.", REPLY], chunk=7)
    prog = pipec.load(write_pipe(SHAPES), lm=lm, cache=False)
    partials, final = partials_and_final(collect(prog.stream(q="capital?")))
    assert final.ok and final.answer == REPLY["answer"]
    assert [r.attempt for r in final.trace] == [1, 2] and final.trace[0].error
    assert "could not be used" in lm.requests[1].messages[-1]["content"]
    assert_well_formed(partials, final.outputs())


def test_field_lines_replies_stream_too(write_pipe):
    path = write_pipe("""
        signature S { in q: str  out answer: str  out n: int }
        module m = Predict(S)
        pipeline p(q: str) -> (answer, n) { r = m(q: q) return answer = r.answer, n = r.n }
    """)
    reply = "answer: The capital of France is Paris\nn: 42\n"
    prog = pipec.load(path, lm=pipec.ScriptedLM([reply], chunk=2, structured="text"), cache=False)
    partials, final = partials_and_final(collect(prog.stream(q="?")))
    assert final.outputs() == {"answer": "The capital of France is Paris", "n": 42}
    assert len({p["answer"] for p in partials}) > 5
    assert_well_formed(partials, final.outputs())


def test_only_the_output_nodes_stream_and_earlier_outputs_come_when_their_node_ends(write_pipe):
    path = write_pipe("""
        signature Classify { in text: str  out label: enum(pos, neg) }
        signature Explain { in text: str  in label: str  out note: str }
        module classify = Predict(Classify)
        module explain = Predict(Explain)
        pipeline triage(text: str) -> (label, note) {
            a = classify(text: text)
            b = explain(text: text, label: a.label)
            return label = a.label, note = b.note
        }
    """)

    def rule(request):
        if "label" in request.messages[-1]["content"]:
            return {"note": "a happy little text"}
        return {"label": "pos"}
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=rule, chunk=3), cache=False)
    partials, final = partials_and_final(collect(prog.stream(text="good news")))
    assert final.outputs() == {"label": "pos", "note": "a happy little text"}
    assert partials[0] == {"label": "pos"}          # node a finished: its output is whole
    notes = [p["note"] for p in partials if "note" in p]
    assert len(notes) >= 3 and all(p["label"] == "pos" for p in partials)
    assert_well_formed(partials, final.outputs())


def test_a_kind_that_makes_several_calls_yields_only_at_the_end(write_pipe):
    path = write_pipe("""
        signature S { in q: str  out answer: str }
        module m = Majority(S, n: 3, field: answer)
        pipeline p(q: str) -> (answer) { return answer = m(q: q).answer }
    """)
    lm = pipec.ScriptedLM(rule=lambda r: {"reasoning": "r", "answer": "forty-two"}, chunk=2)
    prog = pipec.load(path, lm=lm, cache=False)
    items = collect(prog.stream(q="?"))
    assert len(lm.requests) == 3
    assert len(items) == 1 and items[0].answer == "forty-two"


def test_a_one_of_module_streams_as_the_alternative_it_runs(write_pipe):
    path = write_pipe("""
        signature S { in q: str  out answer: str }
        module m = one_of(Predict, Majority(n: 3, field: answer))(S)
        pipeline p(q: str) -> (answer) { return answer = m(q: q).answer }
    """)
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=lambda r: {"reasoning": "r", "answer": "forty-two"}, chunk=2),
                      cache=False)
    partials, final = partials_and_final(collect(prog.stream(q="?")))
    assert final.answer == "forty-two" and len(partials) >= 3
    prog.choose({"m": "Majority"})
    assert len(collect(prog.stream(q="?"))) == 1


def test_an_ensemble_yields_only_its_vote(write_pipe):
    path = write_pipe("""
        signature S { in q: str  out answer: str }
        module m = Predict(S)
        pipeline p(q: str) -> (answer) { return answer = m(q: q).answer }
    """)
    lm = pipec.ScriptedLM(rule=lambda r: {"answer": "same for all"}, chunk=2)
    prog = pipec.load(path, lm=lm, cache=False)
    prog.set_ensemble([prog.params(), prog.params(), prog.params()])
    items = collect(prog.stream(q="?"))
    assert len(items) == 1 and items[0].answer == "same for all" and len(lm.requests) == 3


def test_a_dropped_stream_is_retried_and_the_partials_stay_monotone(write_pipe):
    lm = pipec.ScriptedLM([StreamCut(json.dumps(REPLY)[:70], TransientLMError("scripted/lm: connection dropped")),
                           REPLY], chunk=3)
    lm.backoff = 0.0
    prog = pipec.load(write_pipe(SHAPES), lm=lm, cache=False)
    partials, final = partials_and_final(collect(prog.stream(q="?")))
    assert final.ok and final.answer == REPLY["answer"] and len(lm.requests) == 2
    assert_well_formed(partials, final.outputs())


FALLBACK = """
lm primary = "openai/primary" (api_base: "http://127.0.0.1:9/v1")
lm backup = "openai/backup" (api_base: "http://127.0.0.1:9/v1")
lm robust = fallback(primary, backup)
signature S { in q: str  out answer: str }
module m = Predict(S, lm: robust)
pipeline p(q: str) -> (answer) { return answer = m(q: q).answer }
"""


def fallback_program(write_pipe, first_reply):
    primary = pipec.ScriptedLM([first_reply], model="scripted/primary", chunk=3)
    backup = pipec.ScriptedLM(rule=lambda r: {"answer": "from the backup"}, model="scripted/backup", chunk=3)
    primary.max_retries = 0
    return pipec.load(write_pipe(FALLBACK), lms={"primary": primary, "backup": backup}, cache=False), backup


def test_a_fallback_falls_over_when_the_failure_comes_before_the_first_delta(write_pipe):
    prog, backup = fallback_program(write_pipe, TransientLMError("scripted/primary: 503"))
    partials, final = partials_and_final(collect(prog.stream(q="?")))
    assert final.ok and final.answer == "from the backup" and len(backup.requests) == 1
    assert final.trace[0].lm == "backup" and final.trace[0].fell_back[0].startswith("primary: ")
    assert partials and all("from the backup".startswith(p["answer"]) for p in partials)


def test_a_fallback_does_not_fall_over_once_text_has_arrived(write_pipe):
    prog, backup = fallback_program(write_pipe, StreamCut('{"answer": "the primary sa',
                                                          TransientLMError("scripted/primary: connection dropped")))
    partials, final = partials_and_final(collect(prog.stream(q="?")))
    assert not final.ok and "connection dropped" in final.error and backup.requests == []
    assert partials[-1] == {"answer": "the primary sa"}
    # Without streaming the same failure comes before any text, so the call falls over as always.
    prog, backup = fallback_program(write_pipe, StreamCut('{"answer": "the primary sa',
                                                          TransientLMError("scripted/primary: connection dropped")))
    assert asyncio.run(prog.acall(q="?")).answer == "from the backup"


def test_partial_fields_read_incomplete_json_as_the_reply_parser_would():
    fields = [("answer", Type("str")), ("n", Type("int")), ("done", Type("bool")), ("tone", Type("enum", values=("calm", "angry")))]
    assert partial_fields('```json\n{"Answer": "Par', fields) == {"answer": "Par"}
    assert partial_fields('{"n": 1', fields) == {}
    assert partial_fields('{"n": 1, "done": tr', fields) == {"n": 1}
    assert partial_fields('{"n": -', fields) == {}
    assert partial_fields('{"tone": "ang', fields) == {}
    assert partial_fields('{"tone": "angry"}', fields) == {"tone": "angry"}
    assert partial_fields('{"answer": "a \\"quoted, text\\" here", "n": 7', fields) == {"answer": 'a "quoted, text" here'}
    # `field: value` lines: a field is whole once the next begins; the last line may still be a name.
    assert partial_fields("answer: Paris\nn: 4", fields) == {"answer": "Paris"}
    assert partial_fields("answer: Paris\nthe capital\nn", fields) == {"answer": "Paris\nthe capital"}


# ---------------------------------------------------------------------- real loopback servers
STUB_PIPE = """
lm stub = "openai/stub-model" (api_base: "{base}", api_key_env: "PIPEC_STREAM_KEY", num_retries: 0, timeout: 30)
signature S {{ "Answer." in q: str  out answer: str  out n: int }}
module m = Predict(S)
pipeline p(q: str) -> (answer, n) {{ r = m(q: q) return answer = r.answer, n = r.n }}
"""
STUB_REPLY = {"answer": "Streaming works over loopback", "n": 7}


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("PIPEC_STREAM_KEY", "sk-stream-test-0123456789abcdef")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-stream-test-0123456789abcdef")


def stub_program(write_pipe, stub, client: str):
    prog = pipec.load(write_pipe(STUB_PIPE.format(base=stub.base)), cache=False)
    if client == "litellm":
        from pipec.lm.hosted import HostedLM
        hosted = HostedLM("openai/stub-model", api_base=stub.base, api_key_env="PIPEC_STREAM_KEY", num_retries=0,
                          structured="json_object", timeout=30)
        prog = pipec.load(write_pipe(STUB_PIPE.format(base=stub.base)), lms={"stub": hosted}, cache=False)
    else:
        from pipec.lm.openai_compat import OpenAICompatLM
        assert isinstance(prog.backend("stub"), OpenAICompatLM)
    return prog


async def read_with_gate(prog, gate: threading.Event, **inputs):
    """Read the stream; open the server's gate only once a partial has arrived (so that partial came
    while the rest of the reply was still held back by the server)."""
    items = []
    async for item in prog.stream(**inputs):
        items.append(item)
        if isinstance(item, Partial) and not gate.is_set():
            assert len(items) == 1
            gate.set()
    return items


@pytest.mark.parametrize("client", ["direct", "litellm"])
def test_provider_replies_stream_over_sse(write_pipe, key, client):
    gate = threading.Event()
    with StubServer(default=STUB_REPLY, stream_chunk=5, gate=gate, gate_after=3) as stub:
        prog = stub_program(write_pipe, stub, client)
        items = asyncio.run(read_with_gate(prog, gate, q="does it stream?"))
        body = stub.requests[-1]
    partials, final = partials_and_final(items)
    assert gate.is_set() and partials[0] == {"answer": "Str"}       # '{"answer": "Str' held back the rest
    assert final.outputs() == STUB_REPLY and len(partials) >= 4
    assert_well_formed(partials, final.outputs())
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    rec = final.trace[0]
    assert (rec.prompt_tokens, rec.completion_tokens, rec.raw) == (11, 5, json.dumps(STUB_REPLY))


@pytest.mark.parametrize("client", ["direct", "litellm"])
@pytest.mark.parametrize("fault, error", [((401, {}), AuthLMError), ((400, {}), BadRequestLMError),
                                          ((503, {}), TransientLMError)])
def test_provider_errors_translate_as_without_streaming(write_pipe, key, client, fault, error):
    with StubServer(default=STUB_REPLY) as stub:
        prog = stub_program(write_pipe, stub, client)
        backend = prog.backend("stub")
        request = LMRequest([{"role": "user", "content": "q"}])
        stub.script.extend([fault, fault])

        async def both():
            errors = []
            try:
                await backend.acomplete(request)
            except Exception as err:     # noqa: BLE001 - compared below
                errors.append(err)
            try:
                async for _ in backend.astream(request):
                    pass
            except Exception as err:     # noqa: BLE001
                errors.append(err)
            return errors
        plain, streamed = asyncio.run(both())
    assert type(plain) is type(streamed) and isinstance(streamed, error)
    assert str(plain) == str(streamed) and "sk-stream" not in str(streamed)


@pytest.mark.parametrize("client", ["direct", "litellm"])
def test_a_stream_that_breaks_off_is_a_transient_error_not_a_short_reply(write_pipe, key, client):
    with StubServer(default=STUB_REPLY) as stub:
        stub.script.extend([Cut('{"answer": "cut sh'), Cut('{"answer": "cut sh')])
        prog = stub_program(write_pipe, stub, client)
        backend = prog.backend(prog.default_lm_name())       # what the module calls
        backend.max_retries, backend.backoff = 1, 0.0
        partials, final = partials_and_final(collect(prog.stream(q="?")))
        retried = collect(prog.stream(q="again"))[-1]
    assert not final.ok and "broke off" in final.error and "gave up after 2 attempts" in final.error
    assert partials == [{"answer": "cut"}, {"answer": "cut sh"}] and len(stub.requests) == 3
    assert retried.ok and retried.outputs() == STUB_REPLY


def test_a_server_that_does_not_stream_still_answers(write_pipe, key):
    """A server that ignores `stream: true` and sends one JSON body: the reply is read whole."""
    from fault_server import FaultServer
    with FaultServer(lambda body: STUB_REPLY) as server:
        prog = pipec.load(write_pipe(STUB_PIPE.format(base=server.base)), cache=False)
        items = collect(prog.stream(q="?"))
    assert len(items) == 1 and items[0].outputs() == STUB_REPLY


# ---------------------------------------------------------------------- CLI
def pipec_cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "NO_COLOR": "1", "PIPEC_STREAM_KEY": "sk-stream-test-0123456789abcdef", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipec", *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=120)


def test_cli_run_stream_prints_json_lines_per_change(write_pipe, tmp_path):
    with StubServer(default=STUB_REPLY, stream_chunk=4) as stub:
        path = write_pipe(STUB_PIPE.format(base=stub.base))
        out = pipec_cli("run", str(path), "--stream", "--json", "--no-cache", "-i", "q=hi", cwd=tmp_path)
        plain = pipec_cli("run", str(path), "--json", "--no-cache", "-i", "q=hi", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(line["partial"] for line in lines[:-1]) and lines[-1]["partial"] is False
    assert [line["outputs"]["answer"] for line in lines[:-1] if "answer" in line["outputs"]][:2] == ["Stre", "Streamin"]
    assert_well_formed([line["outputs"] for line in lines[:-1]], STUB_REPLY)
    final = {k: v for k, v in lines[-1].items() if k != "partial"}
    assert final == json.loads(plain.stdout) == {"ok": True, "outputs": STUB_REPLY, "error": None}


def test_cli_run_stream_prints_the_growing_text_to_a_pipe(write_pipe, tmp_path):
    with StubServer(default=STUB_REPLY, stream_chunk=4) as stub:
        path = write_pipe(STUB_PIPE.format(base=stub.base))
        out = pipec_cli("run", str(path), "--stream", "--no-cache", "-i", "q=hi", cwd=tmp_path)
        plain = pipec_cli("run", str(path), "--no-cache", "-i", "q=hi", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == plain.stdout == "answer: Streaming works over loopback\nn: 7\n"


def test_cli_run_stream_redraws_in_place_on_a_terminal(write_pipe, tmp_path):
    import io

    from pipec.stream_output import run_streamed
    prog = pipec.load(write_pipe(SHAPES), lm=pipec.ScriptedLM(rule=lambda r: REPLY, chunk=8), cache=False)
    out = io.StringIO()
    pred = run_streamed(prog, {"q": "?"}, out, "tty")
    text = out.getvalue()
    assert pred.ok and text.count("\x1b[J") > 3           # redrawn, each time over the last drawing
    last = text.rsplit("\x1b[J", 1)[1]
    assert last == "".join(f"{k}: {v if isinstance(v, str) else json.dumps(v)}\n" for k, v in pred.outputs().items())


def test_cli_run_stream_refuses_a_batch(write_pipe, tmp_path):
    path = write_pipe(STUB_PIPE.format(base="http://127.0.0.1:9/v1"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "a"}\n')
    out = pipec_cli("run", str(path), "--stream", "--inputs", str(rows), cwd=tmp_path)
    assert out.returncode == 2 and "--stream shows one input's outputs" in out.stderr
    assert not (tmp_path / "rows.out.jsonl").exists()


# ---------------------------------------------------------------------- embedded model
def say_pipe(tmp_path, instruction: str, max_tokens: int) -> Path:
    """A one-module pipeline answering a question in free text on the embedded model."""
    path = tmp_path / "say.pipe"
    path.write_text(f"""
lm local = "local/smollm2" (temperature: 0, max_tokens: {max_tokens})
signature Say {{ "{instruction}" in question: str out answer: str }}
module speak = Predict(Say, lm: local)
pipeline say(question: str) -> (answer) {{ return answer = speak(question: question).answer }}
""")
    return path


@pytest.mark.e2e
def test_the_embedded_model_streams_token_by_token(tmp_path):
    path = say_pipe(tmp_path, "Answer the question in one sentence.", 40)
    prog = pipec.load(path, cache=False)
    # llama.cpp's first run of a prompt and its later runs (which reuse the evaluated prompt) may
    # differ in the last bits of the logits, and so in a greedy reply: compare two later runs.
    asyncio.run(prog.acall(question="Why is the sky blue?"))
    partials, final = partials_and_final(collect(prog.stream(question="Why is the sky blue?")))
    normal = asyncio.run(prog.acall(question="Why is the sky blue?"))
    assert final.ok and final.outputs() == normal.outputs()
    assert len(partials) > 1 and len({p["answer"] for p in partials}) > 1
    assert_well_formed(partials, final.outputs())
    s, n = final.trace[0], normal.trace[0]
    assert (s.raw, s.prompt_tokens, s.completion_tokens) == (n.raw, n.prompt_tokens, n.completion_tokens)
    out = pipec_cli("run", str(path), "--stream", "--json", "--no-cache", "-i", "question=Why is the sky blue?",
                    cwd=tmp_path)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0 and len(lines) > 2 and lines[-1]["ok"]
    assert_well_formed([line["outputs"] for line in lines[:-1]], lines[-1]["outputs"])


@pytest.mark.e2e
def test_cli_run_stream_stops_quietly_when_the_reader_goes_away(tmp_path):
    # `pipec run --stream | head -c 8` on the embedded model: the reader leaves while tokens are still
    # coming; the run stops there (on its own loop, not left to the garbage collector) and exits 0
    # with nothing on stderr. It printed "Task was destroyed but it is pending!" and tracebacks.
    path = say_pipe(tmp_path, "Explain the question in two sentences.", 60)
    proc = subprocess.Popen([sys.executable, "-m", "pipec", "run", str(path), "--stream", "--no-cache", "-i",
                             "question=Why is the sky blue?"], cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(8) == b"answer: "
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 0 and err == b"", err.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
