"""OpenTelemetry spans of what pipec ran: a run (pipeline → node → module → LM call), an eval (one
child per row) or a compile (one child per trial), built after the fact from the recorded times.

Needs the `otel` extra (`pip install 'pipec[otel]'`); nothing here is imported by `import pipec`.

Spans carry what a call cost and how it went: the model and lm, tokens (the GenAI semantic
conventions' `gen_ai.request.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`),
cost, latency, cache hits, attempts and fallbacks. Never inputs, outputs, messages, replies or error
texts (which may quote a reply) unless `content=True`; even then every string is masked of secret
values (`pipec.secrets.redact`), keys included.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from .secrets import redact, redact_data

TRACER = "pipec"


def export(obj, tracer_provider=None, *, content: bool = False, pipeline: str | None = None,
           inputs: dict[str, Any] | None = None) -> None:
    """Emit the spans of `obj`: a `Prediction` (one run), an `EvalResult`, or a compiled program (or
    its `CompileResult`). `tracer_provider`: an SDK TracerProvider (default: the global one).
    `content=True` adds inputs, outputs, messages and replies (secrets masked); `pipeline` names the
    run's root span and `inputs` are the run's input values (shown only with `content`)."""
    from opentelemetry import trace
    from .version import __version__
    provider = tracer_provider or trace.get_tracer_provider()
    tracer = provider.get_tracer(TRACER, __version__)
    ex = _Exporter(tracer, content)
    kind = type(obj).__name__
    if kind == "Prediction":
        ex.run(obj, None, pipeline, inputs)
    elif kind == "EvalResult":
        ex.eval(obj, pipeline)
    elif kind == "CompileResult" or getattr(obj, "compile_result", None) is not None:
        result = obj if kind == "CompileResult" else obj.compile_result
        ex.compile(result, getattr(obj, "name", None) or pipeline)
    else:
        raise TypeError(f"pipec.otel.export: no spans for a {kind}; give a Prediction, an EvalResult or a compiled program")


def provider_from_env():
    """An SDK TracerProvider exporting to the OTLP/HTTP endpoint of OTEL_EXPORTER_OTLP_ENDPOINT (or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) when set, else printing spans to stderr. Call its
    `shutdown()` when done: that flushes them."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "pipec"}
    provider = TracerProvider(resource=Resource.create(attrs))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    return provider


class _Exporter:
    def __init__(self, tracer, content: bool):
        from opentelemetry import trace
        self.tracer, self.content, self.trace = tracer, content, trace

    def _span(self, name: str, parent, start: int, attrs: dict[str, Any]):
        ctx = self.trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(name, context=ctx, start_time=start,
                                      attributes={k: v for k, v in attrs.items() if v is not None})

    def _text(self, value: Any) -> str:
        return redact(value if isinstance(value, str) else json.dumps(redact_data(value), ensure_ascii=False, default=str))

    def _fail(self, span, error: str | None) -> None:
        from opentelemetry.trace import Status, StatusCode
        span.set_status(Status(StatusCode.ERROR, redact(error) if self.content and error else None))

    # -- one run
    def run(self, pred, parent, pipeline: str | None, inputs: dict | None, extra: dict | None = None,
            fallback_ns: int | None = None) -> None:
        now = fallback_ns or time.time_ns()
        start, end, nodes = pred.timing if pred.timing is not None else (now, now, [])
        calls = list(pred.trace)
        start = min([start] + [r.start_ns for r in calls])
        end = max([end] + [_end(r) for r in calls])
        attrs: dict[str, Any] = {"pipec.pipeline": pipeline, "pipec.ok": pred.ok, "pipec.lm_calls": pred.lm_calls,
                                 "pipec.failed_node": pred.node, **(extra or {})}
        if self.content:
            for k, v in (inputs or {}).items():
                attrs[f"pipec.input.{k}"] = self._text(v)
            for k, v in pred.outputs().items() if pred.ok else ():
                attrs[f"pipec.output.{k}"] = self._text(v)
        root = self._span(f"pipeline {pipeline}" if pipeline else "pipeline", parent, start, attrs)
        if not pred.ok:
            self._fail(root, pred.error)
        # Each call goes to the run of its node that was under way when it began.
        runs = [list(n) for n in nodes]
        by_run: dict[int, list] = {}
        for rec in calls:
            i = next((i for i, n in enumerate(runs) if n[0] == rec.node and n[2] <= rec.start_ns <= n[3]), None)
            if i is None:         # a judge's call, a map's note: a node of its own, as long as its calls
                i = next((i for i, n in enumerate(runs) if n[0] == rec.node and n[4] is None), None)
                if i is None:
                    runs.append([rec.node, rec.module, rec.start_ns, _end(rec), None])
                    i = len(runs) - 1
                runs[i][2], runs[i][3] = min(runs[i][2], rec.start_ns), max(runs[i][3], _end(rec))
            by_run.setdefault(i, []).append(rec)
        for i, (node, module, n_start, n_end, failed) in enumerate(runs):
            recs = by_run.get(i, [])
            n_end = max([n_end] + [_end(r) for r in recs])
            span = self._span(f"node {node}", root, n_start, {"pipec.node": node, "pipec.module": module})
            mod = self._span(f"module {module}", span, n_start, {"pipec.node": node, "pipec.module": module})
            for rec in recs:
                self._call(rec, mod)
            if failed:
                self._fail(mod, pred.error if pred.node == node else None)
                self._fail(span, pred.error if pred.node == node else None)
            mod.end(end_time=n_end)
            span.end(end_time=n_end)
        root.end(end_time=end)

    def _call(self, rec, parent) -> None:
        if rec.model == "map":                 # a map's note (items over its bound): an event, no call
            parent.add_event("pipec.map.bound", {"pipec.note": rec.error or ""}, timestamp=rec.start_ns)
            return
        tool = rec.model.startswith("tool:")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool" if tool else "chat",
            "pipec.node": rec.node, "pipec.module": rec.module, "pipec.predictor": rec.predictor,
            "pipec.latency_ms": round(rec.latency_ms, 3), "pipec.cache_hit": rec.cache_hit,
        }
        if tool:
            attrs["gen_ai.tool.name"] = rec.predictor
        else:
            attrs.update({"gen_ai.request.model": rec.model, "gen_ai.usage.input_tokens": rec.prompt_tokens,
                          "gen_ai.usage.output_tokens": rec.completion_tokens, "pipec.cost_usd": rec.cost,
                          "pipec.attempt": rec.attempt, "pipec.lm": rec.lm or None})
            if rec.fell_back:     # "name: error": the names only, the errors with content
                attrs["pipec.fell_back"] = ([redact(f) for f in rec.fell_back] if self.content
                                            else [f.partition(":")[0] for f in rec.fell_back])
        if self.content:
            attrs["gen_ai.input.messages"] = self._text(rec.messages)
            attrs["gen_ai.output.messages"] = self._text(rec.raw)
        name = f"execute_tool {rec.predictor}" if tool else f"chat {rec.model}"
        span = self._span(name, parent, rec.start_ns, attrs)
        if rec.error:
            self._fail(span, rec.error)
        span.end(end_time=_end(rec))

    # -- many runs
    def eval(self, result, pipeline: str | None) -> None:
        rows = result.rows
        now = time.time_ns()
        times = [r.prediction.timing for r in rows if r.prediction is not None and r.prediction.timing]
        calls = [c for r in rows if r.prediction is not None for c in r.prediction.trace]
        start = min([t[0] for t in times] + [c.start_ns for c in calls] or [now])
        end = max([t[1] for t in times] + [_end(c) for c in calls] or [now])
        root = self._span("eval", None, start, {
            "pipec.pipeline": pipeline, "pipec.metric": result.metric, "pipec.score": result.score,
            "pipec.rows": len(rows), "pipec.passed": sum(r.passed for r in rows), "pipec.failures": result.failures,
            "pipec.incomplete": result.incomplete,
            "pipec.lm_calls": sum(r.prediction.lm_calls for r in rows if r.prediction is not None),
            "gen_ai.usage.input_tokens": sum(c.prompt_tokens for c in calls),
            "gen_ai.usage.output_tokens": sum(c.completion_tokens for c in calls),
            "pipec.cost_usd": sum(c.cost for c in calls)})
        for r in rows:
            extra = {"pipec.row": r.where, "pipec.score": r.score, "pipec.passed": r.passed}
            if self.content:
                for k, v in r.expected.items():
                    extra[f"pipec.expected.{k}"] = self._text(v)
                if r.feedback:
                    extra["pipec.feedback"] = redact(r.feedback)
            if r.prediction is not None:
                self.run(r.prediction, root, pipeline, r.inputs, extra, fallback_ns=start)
            else:                               # the row never ran (unusable input)
                span = self._span(f"pipeline {pipeline}" if pipeline else "pipeline", root, start, extra)
                self._fail(span, r.error)
                span.end(end_time=start)
        root.end(end_time=end)

    def compile(self, result, pipeline: str | None) -> None:
        start = result.started_ns or time.time_ns() - int(result.seconds * 1e9)
        end = start + int(result.seconds * 1e9)
        art = result.artifact
        report = getattr(art, "report", None)
        st = result.stats
        root = self._span("compile", None, start, {
            "pipec.pipeline": pipeline, "pipec.optimizer": getattr(report, "optimizer", None),
            "pipec.metric": getattr(report, "metric", None), "pipec.budget": getattr(report, "budget", None),
            "pipec.budget_usd": getattr(report, "budget_usd", None),
            "pipec.baseline_score": getattr(report, "baseline_score", None),
            "pipec.score": getattr(report, "compiled_score", None),
            "pipec.trainset": getattr(report, "trainset", None), "pipec.valset": getattr(report, "valset", None),
            "pipec.cache_hit": result.cache_hit, "pipec.lm_calls": st.calls, "pipec.cache_hits": st.cache_hits,
            "gen_ai.usage.input_tokens": st.prompt_tokens, "gen_ai.usage.output_tokens": st.completion_tokens,
            "pipec.cost_usd": st.cost, "pipec.spent_usd": result.spent})
        trials = list(getattr(report, "trials", None) or []) if not result.cache_hit else []
        prev = start
        for t, t_ns in zip(trials, result.trial_ns):
            span = self._span(f"trial {t.number}", root, prev, {
                "pipec.trial": t.number, "pipec.score": t.score, "pipec.full": t.full, "pipec.note": t.note or None,
                "pipec.calls_per_row": t.calls_per_row, "pipec.tokens_per_row": t.tokens_per_row})
            span.end(end_time=max(prev, t_ns))
            prev = max(prev, t_ns)
        root.end(end_time=max(end, prev))


def _end(rec) -> int:
    return rec.start_ns + max(0, int(rec.latency_ms * 1e6))
