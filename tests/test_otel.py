"""OpenTelemetry export (`pipec.otel`, `--otel`): span trees of runs, evals and compiles, their
attributes, and no content (inputs, messages, replies, keys) unless asked for, secrets masked even then."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import pipec  # noqa: E402
import pipec.otel  # noqa: E402
from pipec import cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

KEY = "sk-otel-abcdefghijklmnopqrstuvwxyz0123"
SECRET_INPUT = "the launch code is swordfish"

TWO = """
    lm main = "openai/gpt-4o-mini" (api_key_env: "PIPEC_OTEL_TEST_KEY")
    signature Summ { "Summarize the text." in text: str out summary: str }
    signature Label { "Label the summary." in summary: str out label: str }
    module a = Predict(Summ)
    module b = Predict(Label)
    pipeline two(text: str) -> (label) {
        s = a(text: text)
        l = b(summary: s.summary)
        return label = l.label
    }
"""


def rule(request):
    return {"summary": "short summary", "label": "greeting"}


@pytest.fixture
def two(write_pipe, monkeypatch):
    monkeypatch.setenv("PIPEC_OTEL_TEST_KEY", KEY)
    return write_pipe(TWO, "two.pipe")


@pytest.fixture
def memory():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def by_id(spans):
    return {s.context.span_id: s for s in spans}


def parent_of(span, spans):
    return by_id(spans).get(span.parent.span_id) if span.parent is not None else None


def everything(spans) -> str:
    """Every attribute, event, status text and name of the spans, as one text."""
    parts = []
    for s in spans:
        parts += [s.name, json.dumps(dict(s.attributes), default=str), str(s.status.description)]
        parts += [json.dumps(dict(e.attributes), default=str) for e in s.events]
    return "\n".join(parts)


def test_run_span_tree(two, memory):
    provider, exporter = memory
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(two, lm=lm, cache=False)
    pred = prog(text="hello there")
    assert pred.ok, pred.error
    assert [(n[0], n[1], n[4]) for n in pred.timing[2]] == [("s", "a", False), ("l", "b", False)]
    pipec.otel.export(pred, provider, pipeline=prog.name)
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert [r.name for r in roots] == ["pipeline two"]
    root = roots[0]
    nodes = sorted((s for s in spans if s.name.startswith("node ")), key=lambda s: s.start_time)
    assert [n.name for n in nodes] == ["node s", "node l"]
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert len(calls) == 2
    for node, module_name in zip(nodes, ["a", "b"]):
        assert parent_of(node, spans) is root
        (module,) = [s for s in spans if parent_of(s, spans) is node]
        assert module.name == f"module {module_name}"
        (call,) = [s for s in spans if parent_of(s, spans) is module]
        a = call.attributes
        assert a["gen_ai.request.model"] == "scripted/lm"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["pipec.cache_hit"] is False and a["pipec.node"] == node.attributes["pipec.node"]
        assert a["pipec.module"] == module_name and a["pipec.cost_usd"] == 0.0 and a["pipec.attempt"] == 1
        # children start and end within their parents
        assert node.start_time <= module.start_time <= call.start_time <= call.end_time <= module.end_time
        assert root.start_time <= node.start_time and node.end_time <= root.end_time
    for s in spans:
        assert s.end_time >= s.start_time
    assert nodes[0].end_time <= nodes[1].start_time        # b reads a: it starts after a ends
    assert root.attributes["pipec.ok"] is True and root.attributes["pipec.lm_calls"] == 2


def test_cache_hits_are_marked(two, memory, tmp_path):
    provider, exporter = memory
    lm = pipec.ScriptedLM(rule=rule)
    lm.cacheable = True
    prog = pipec.load(two, lm=lm, cache=tmp_path / "cache")
    prog(text="hello")
    pred = prog(text="hello")
    pipec.otel.export(pred, provider, pipeline=prog.name)
    calls = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert len(calls) == 2 and all(s.attributes["pipec.cache_hit"] is True for s in calls)
    assert all(s.attributes["gen_ai.usage.input_tokens"] > 0 for s in calls)


def test_no_content_unless_asked(two, memory):
    provider, exporter = memory
    prog = pipec.load(two, lm=pipec.ScriptedLM(rule=rule), cache=False)
    text = f"{SECRET_INPUT} {KEY}"
    pred = prog(text=text)
    pipec.otel.export(pred, provider, pipeline=prog.name, inputs={"text": text})
    seen = everything(exporter.get_finished_spans())
    for secret in (SECRET_INPUT, KEY, "Summarize the text", "short summary", "greeting"):
        assert secret not in seen


def test_content_when_asked_with_secrets_masked(two, memory):
    provider, exporter = memory
    prog = pipec.load(two, lm=pipec.ScriptedLM(rule=rule), cache=False)
    text = f"{SECRET_INPUT} {KEY}"
    pred = prog(text=text)
    pipec.otel.export(pred, provider, pipeline=prog.name, inputs={"text": text}, content=True)
    seen = everything(exporter.get_finished_spans())
    assert SECRET_INPUT in seen and "Summarize the text" in seen and "greeting" in seen
    assert KEY not in seen and KEY[:12] not in seen and "***" in seen


def test_eval_root_has_one_child_per_row(two, memory, tmp_path, monkeypatch):
    provider, exporter = memory
    monkeypatch.setattr("pipec.otel.provider_from_env", lambda: provider)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: pipec.ScriptedLM(rule=rule))
    data = tmp_path / "rows.jsonl"
    rows = [{"text": f"row {i} {SECRET_INPUT}", "label": "greeting" if i else "other"} for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["eval", str(two), "--data", str(data), "--metric", "exact_match(label)", "--no-cache",
                     "--otel"]) == 0
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "eval"
    assert root.attributes["pipec.rows"] == 3 and root.attributes["pipec.metric"] == "exact_match(label)"
    assert abs(root.attributes["pipec.score"] - 2 / 3) < 1e-9 and root.attributes["pipec.lm_calls"] == 6
    children = [s for s in spans if parent_of(s, spans) is root]
    assert len(children) == 3 and all(c.name == "pipeline two" for c in children)
    assert sorted(c.attributes["pipec.passed"] for c in children) == [False, True, True]
    assert len([s for s in spans if s.name.startswith("chat ")]) == 6
    assert SECRET_INPUT not in everything(spans)
    for s in spans:
        assert s.end_time >= s.start_time
        if s is not root:
            assert root.start_time <= s.start_time and s.end_time <= root.end_time


def test_compile_root_has_trials(two, memory):
    provider, exporter = memory
    prog = pipec.load(two, lm=pipec.ScriptedLM(rule=rule), cache=False)
    train = [{"text": f"t{i}", "label": "greeting"} for i in range(4)]
    compiled = prog.compile(train, train, "exact_match(label)", "labeled_fewshot")
    pipec.otel.export(compiled, provider)
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "compile"
    assert root.attributes["pipec.optimizer"] == "labeled_fewshot"
    assert root.attributes["pipec.metric"] == "exact_match(label)"
    assert root.attributes["pipec.lm_calls"] == compiled.compile_result.stats.calls > 0
    trials = [s for s in spans if parent_of(s, spans) is root]
    assert len(trials) == len(compiled.report.trials) > 0
    assert [t.attributes["pipec.trial"] for t in trials] == [t.number for t in compiled.report.trials]
    for t in trials:
        assert root.start_time <= t.start_time <= t.end_time <= root.end_time


def test_cli_run_otel_prints_spans_to_stderr(two, capsys, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: pipec.ScriptedLM(rule=rule))
    assert cli.main(["run", str(two), "-i", f"text={SECRET_INPUT} {KEY}", "--no-cache", "--otel"]) == 0
    out, err = capsys.readouterr()
    assert out == "label: greeting\n"
    for name in ("pipeline two", "node s", "module a", "chat scripted/lm"):
        assert f'"name": "{name}"' in err
    assert '"gen_ai.usage.input_tokens"' in err
    assert SECRET_INPUT not in err and KEY not in err


def test_cli_otel_content_masks_secrets(two, capsys, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: pipec.ScriptedLM(rule=rule))
    assert cli.main(["run", str(two), "-i", f"text={SECRET_INPUT} {KEY}", "--no-cache", "--otel-content"]) == 0
    err = capsys.readouterr().err
    assert SECRET_INPUT in err and KEY not in err


def test_a_batch_exports_one_pipeline_span_per_row(two, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: pipec.ScriptedLM(rule=rule))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "x one"}\n{"text": "y two"}\n{"text": "z three"}\n')
    assert cli.main(["run", str(two), "--inputs", str(rows), "--no-cache", "--otel", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count('"name": "pipeline two"') == 3 and err.count('"name": "node s"') == 3
    assert "x one" not in err and "three" not in err                 # no inputs without --otel-content


def test_cli_run_otel_posts_to_the_otlp_endpoint(two, capsys, monkeypatch):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    import http.server
    import threading
    posts = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: pipec.ScriptedLM(rule=rule))
        assert cli.main(["run", str(two), "-i", f"text={SECRET_INPUT}", "--no-cache", "--otel"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert '"name"' not in err                    # not printed: sent
    assert [p for p, _ in posts] == ["/v1/traces"]
    body = posts[0][1]
    assert b"pipeline two" in body and b"gen_ai.request.model" in body and SECRET_INPUT.encode() not in body
