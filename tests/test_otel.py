"""OpenTelemetry export (`pipec.otel`, `--otel`): span trees of runs, evals and compiles, their
attributes, and no content (inputs, messages, replies, keys) unless asked for, secrets masked even then."""
from __future__ import annotations

import json

import pytest
from conftest import first_user_value

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


def memory_pair():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def memory():
    return memory_pair()


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


@pytest.fixture
def collector():
    """`collector(monkeypatch, receive)`: an OTLP/HTTP collector on loopback, set as the endpoint;
    `receive(path, body)` gets each POST before it is answered. Shut down when the test ends."""
    import http.server
    import threading
    servers = []

    def start(monkeypatch, receive):
        class Collector(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                receive(self.path, self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        return server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_cli_run_otel_posts_to_the_otlp_endpoint(two, capsys, monkeypatch, collector):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    posts = []
    collector(monkeypatch, lambda path, body: posts.append((path, body)))
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: pipec.ScriptedLM(rule=rule))
    assert cli.main(["run", str(two), "-i", f"text={SECRET_INPUT}", "--no-cache", "--otel"]) == 0
    err = capsys.readouterr().err
    assert '"name"' not in err                    # not printed: sent
    assert [p for p, _ in posts] == ["/v1/traces"]
    body = posts[0][1]
    assert b"pipeline two" in body and b"gen_ai.request.model" in body and SECRET_INPUT.encode() not in body


# ---------------------------------------------------------------- the eval matrix
def per_row(request):
    """`rule`, with a summary of its own for each row (so no two rows send the same request)."""
    try:
        text = first_user_value(request, "text")
    except KeyError:
        return rule(request)
    return {"summary": f"short summary {text.split()[1]}", "label": "greeting"}


def matrix_setup(write_pipe, tmp_path, monkeypatch, provider, n=3):
    """Two programs (one wrong on every row) and rows holding a secret; each LM id a cacheable ScriptedLM."""
    monkeypatch.setattr("pipec.otel.provider_from_env", lambda: provider)
    lms = {}

    def backend_for(model, options=None):
        return lms.setdefault(model, pipec.ScriptedLM(rule=per_row, model=model, cacheable=True))
    monkeypatch.setattr("pipec.program.backend_for", backend_for)
    good = write_pipe(TWO, "good.pipe")
    bad = write_pipe(TWO.replace('"Label the summary."', '"Label the summary, badly."').replace(
        "return label = l.label", "return label = s.summary"), "bad.pipe")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i} {SECRET_INPUT}", "label": "greeting"}) + "\n"
                            for i in range(n)))
    return good, bad, data


def test_eval_matrix_exports_one_eval_span_per_program_and_lm(write_pipe, tmp_path, monkeypatch, memory, capsys):
    provider, exporter = memory
    good, bad, data = matrix_setup(write_pipe, tmp_path, monkeypatch, provider)
    argv = ["eval", str(good), str(bad), "--lm", "one/model", "--lm", "two/model", "--data", str(data),
            "--metric", "exact_match(label)", "--no-progress", "--otel"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "eval matrix" and root.attributes["pipec.cells"] == 4
    assert root.attributes["pipec.metric"] == "exact_match(label)" and root.attributes["pipec.rows"] == 3
    cells = [s for s in spans if parent_of(s, spans) is root]
    assert all(c.name == "eval" for c in cells)
    scores = {(c.attributes["pipec.program"], c.attributes["pipec.lm_id"]): c.attributes["pipec.score"] for c in cells}
    assert scores == {(str(good), "one/model"): 1.0, (str(good), "two/model"): 1.0,
                      (str(bad), "one/model"): 0.0, (str(bad), "two/model"): 0.0}
    for cell in cells:
        rows = [s for s in spans if parent_of(s, spans) is cell]
        assert len(rows) == 3 and all(r.name == "pipeline two" for r in rows)
        assert sorted(r.attributes["pipec.row"] for r in rows) == [f"{data}:{i}" for i in (1, 2, 3)]
        for row in rows:
            nodes = [s for s in spans if parent_of(s, spans) is row]
            assert sorted(n.name for n in nodes) == ["node l", "node s"]
            for node in nodes:
                (module,) = [s for s in spans if parent_of(s, spans) is node]
                (call,) = [s for s in spans if parent_of(s, spans) is module]
                assert call.attributes["gen_ai.request.model"] == cell.attributes["pipec.lm_id"]
                # The cells share the LM cache: bad's first module asks what good's asked, on the same LM.
                shared = cell.attributes["pipec.program"] == str(bad) and node.name == "node s"
                assert call.attributes["pipec.cache_hit"] is shared
            assert cell.start_time <= row.start_time <= row.end_time <= cell.end_time
        hits = 3 if cell.attributes["pipec.program"] == str(bad) else 0
        assert cell.attributes["pipec.cache_hits"] == hits and cell.attributes["pipec.lm_calls"] == 6 - hits
        assert root.start_time <= cell.start_time <= cell.end_time <= root.end_time
    assert SECRET_INPUT not in everything(spans) and "greeting" not in everything(spans)

    # The same matrix again: every call is a cache hit, and the spans say so.
    provider, exporter = memory_pair()
    monkeypatch.setattr("pipec.otel.provider_from_env", lambda: provider)
    assert cli.main(argv) == 0
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert len(calls) == 24 and all(c.attributes["pipec.cache_hit"] is True for c in calls)
    cells = [s for s in spans if s.name == "eval"]
    assert [c.attributes["pipec.cache_hits"] for c in cells] == [6, 6, 6, 6]
    assert all(c.attributes["pipec.lm_calls"] == 0 for c in cells)


def test_eval_matrix_content_only_with_otel_content(write_pipe, tmp_path, monkeypatch, memory, capsys):
    provider, exporter = memory
    good, bad, data = matrix_setup(write_pipe, tmp_path, monkeypatch, provider)
    assert cli.main(["eval", str(good), str(bad), "--data", str(data), "--metric", "exact_match(label)",
                     "--no-progress", "--no-cache", "--baseline", str(good), "--otel-content"]) == 1   # bad regresses
    seen = everything(exporter.get_finished_spans())
    assert SECRET_INPUT in seen and "Label the summary, badly." in seen and '"greeting"' in seen
    assert KEY not in seen


def test_eval_matrix_spans_all_reach_the_collector_past_the_queue(write_pipe, tmp_path, monkeypatch, capsys,
                                                                  collector):
    """More spans than the batch processor's queue holds, to a collector that takes its time to answer:
    they are flushed as they are made, none dropped."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    import time
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    names: list[str] = []

    def receive(path, body):
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        names.extend(s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
        time.sleep(0.2)             # a collector across a network: the batch worker waits on it
    collector(monkeypatch, receive)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "300")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "300")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    from pipec import otel
    real_provider = otel.provider_from_env
    good, bad, data = matrix_setup(write_pipe, tmp_path, monkeypatch, None, n=100)
    monkeypatch.setattr("pipec.otel.provider_from_env", real_provider)
    assert cli.main(["eval", str(good), str(bad), "--data", str(data), "--metric", "exact_match(label)",
                     "--no-progress", "--no-cache", "--otel"]) == 0
    # 2 cells x 100 rows x (pipeline + 2 x (node, module, chat)), 2 eval spans, 1 eval matrix span
    assert len(names) == 2 * 100 * 7 + 3
    assert names.count("pipeline two") == 200 and names.count("eval matrix") == 1


# ---------------------------------------------------------------- a compile's trials and their runs
def instruction_or_rule(request):
    """Answers the pipeline's requests, and a proposer's request for an instruction."""
    if "instruction" in json.dumps(request.schema or {}) or "proposed_instruction" in str(request.messages):
        return {"proposed_instruction": "Label it well.", "instruction": "Label it well."}
    return rule(request)


def span_tree(spans):
    children: dict = {}
    for s in spans:
        children.setdefault(s.parent.span_id if s.parent else None, []).append(s)
    return lambda s: children.get(s.context.span_id, [])


@pytest.mark.parametrize("optimizer", ["bootstrap_fewshot", "mipro"])
def test_compile_trial_spans_carry_the_runs_they_scored(two, memory, monkeypatch, optimizer):
    provider, exporter = memory
    from pipec.optimize import CompileSession
    scored: list[tuple[int, int]] = []          # (trials recorded before it, rows scored), per evaluate
    evaluate = CompileSession.evaluate

    def spy(self, params, rows=None):
        result = evaluate(self, params, rows)
        scored.append((len(self.trials), len(result.rows)))
        return result
    monkeypatch.setattr(CompileSession, "evaluate", spy)
    prog = pipec.load(two, lm=pipec.ScriptedLM(rule=instruction_or_rule), cache=False)
    train = [{"text": f"t{i} {SECRET_INPUT}", "label": "greeting"} for i in range(6)]
    options = {"trials": 4} if optimizer == "mipro" else {}
    compiled = prog.compile(train, train[:3], "exact_match(label)", optimizer, keep_runs=True, options=options)
    pipec.otel.export(compiled, provider)
    spans = exporter.get_finished_spans()
    kids = span_tree(spans)
    (root,) = [s for s in spans if s.parent is None]
    parts = sorted(kids(root), key=lambda s: s.start_time)
    trials = [s for s in parts if s.name.startswith("trial ")]
    assert len(trials) == len(compiled.report.trials) > 0
    assert parts[0].name == "baseline"
    assert len([s for s in kids(parts[0]) if s.name == "pipeline two"]) == scored[0][1] == 3
    for k, trial in enumerate(trials, start=1):
        rows = [s for s in kids(trial) if s.name == "pipeline two"]
        want = sum(n for before, n in scored[1:] if before == k - 1)
        assert len(rows) == want == trial.attributes["pipec.rows"], trial.name
        assert {r.attributes["pipec.row"] for r in rows} <= {"row 1", "row 2", "row 3"}      # valset rows
        for s in kids(trial):
            assert trial.start_time <= s.start_time <= s.end_time <= trial.end_time
        assert root.start_time <= trial.start_time <= trial.end_time <= root.end_time
    # The teacher's runs under a bootstrap span, the proposer's calls as chat spans of the trial they led to.
    boots = [s for t in trials for s in kids(t) if s.name == "bootstrap"]
    assert boots and all(kids(b) and all(r.name == "pipeline two" for r in kids(b)) for b in boots)
    proposals = [s for t in trials for s in kids(t) if s.name.startswith("chat ")]
    assert (len(proposals) > 0) == (optimizer == "mipro")
    assert all(p.attributes["pipec.node"] == "propose" for p in proposals)
    # Every LM call the compile made is one chat span, once.
    st = compiled.compile_result.stats
    assert len([s for s in spans if s.name.startswith("chat ")]) == st.calls + st.cache_hits
    assert SECRET_INPUT not in everything(spans) and "Summarize the text" not in everything(spans)


def test_compile_runs_with_content_and_within_the_bound(two, memory, monkeypatch):
    provider, exporter = memory
    prog = pipec.load(two, lm=pipec.ScriptedLM(rule=rule), cache=False)
    train = [{"text": f"t{i} {SECRET_INPUT} {KEY}", "label": "greeting"} for i in range(6)]
    compiled = prog.compile(train, train[:3], "exact_match(label)", "labeled_fewshot", keep_runs="content")
    pipec.otel.export(compiled, provider, content=True)
    seen = everything(exporter.get_finished_spans())
    assert SECRET_INPUT in seen and "Summarize the text" in seen and KEY not in seen

    # Past the bound, rows are counted, not kept: the baseline's 3 rows fit, the trial's 3 do not.
    exporter.clear()
    monkeypatch.setattr("pipec.run_log.KEEP_ROWS", 3)
    compiled = prog.compile(train, train[:3], "exact_match(label)", "labeled_fewshot", keep_runs=True)
    pipec.otel.export(compiled, provider)
    spans = exporter.get_finished_spans()
    (trial,) = [s for s in spans if s.name == "trial 1"]
    assert trial.attributes["pipec.runs_not_kept"] == 3 and trial.attributes["pipec.rows"] == 0
    assert len([s for s in spans if s.name == "pipeline two"]) == 3


def test_compile_without_keep_runs_keeps_none(two):
    prog = pipec.load(two, lm=pipec.ScriptedLM(rule=rule), cache=False)
    train = [{"text": f"t{i}", "label": "greeting"} for i in range(4)]
    assert prog.compile(train, train, "exact_match(label)", "labeled_fewshot").compile_result.runs is None
    with pytest.raises(ValueError, match="keep_runs"):
        prog.compile(train, train, "exact_match(label)", "labeled_fewshot", keep_runs="yes")


def test_cli_compile_otel_trials_carry_runs_without_inputs(two, tmp_path, monkeypatch, memory, capsys):
    provider, exporter = memory
    monkeypatch.setattr("pipec.otel.provider_from_env", lambda: provider)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: pipec.ScriptedLM(rule=rule))
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i} {SECRET_INPUT}", "label": "greeting"}) + "\n" for i in range(6)))
    assert cli.main(["compile", str(two), "--trainset", str(data), "--valset", str(data), "--metric",
                     "exact_match(label)", "--optimizer", "labeled_fewshot", "--no-progress", "--otel"]) == 0
    capsys.readouterr()
    spans = exporter.get_finished_spans()
    kids = span_tree(spans)
    (trial,) = [s for s in spans if s.name == "trial 1"]
    rows = [s for s in kids(trial) if s.name == "pipeline two"]
    assert len(rows) == 6 and all(r.attributes["pipec.passed"] is True for r in rows)
    assert len([s for s in spans if s.name.startswith("chat ")]) == 2 * 6 * 2       # baseline and trial
    assert SECRET_INPUT not in everything(spans)

    provider, exporter = memory_pair()           # --otel-content keeps the rows' inputs for the spans
    monkeypatch.setattr("pipec.otel.provider_from_env", lambda: provider)
    assert cli.main(["compile", str(two), "--trainset", str(data), "--valset", str(data), "--metric",
                     "exact_match(label)", "--optimizer", "labeled_fewshot", "--no-progress", "--seed", "1",
                     "--otel-content"]) == 0
    seen = everything(exporter.get_finished_spans())
    assert "trial 1" in seen and SECRET_INPUT in seen and KEY not in seen
