"""OpenTelemetry spans of what pipec ran: a run (pipeline → node → module → LM call), an eval (one
child per row), an eval matrix (one eval per program and LM) or a compile (one child per trial, with
the runs it made when the compile kept them), built after the fact from the recorded times.

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
FLUSH_EVERY = 256       # spans: a batch processor's queue (2048 by default) never overflows mid-export


def export(obj, tracer_provider=None, *, content: bool = False, pipeline: str | None = None,
           inputs: dict[str, Any] | None = None) -> None:
    """Emit the spans of `obj`: a `Prediction` (one run), an `EvalResult`, the cells of an eval matrix
    (a list of `pipec.eval_matrix.Cell`), or a compiled program (or its `CompileResult`; its trials
    carry their runs when it was compiled with `keep_runs=True`). `tracer_provider`: an SDK
    TracerProvider (default: the global one). `content=True` adds inputs, outputs, messages and
    replies (secrets masked); `pipeline` names the run's root span and `inputs` are the run's input
    values (shown only with `content`). For example, with the SDK's in-memory exporter::

        provider = TracerProvider(); provider.add_span_processor(SimpleSpanProcessor(exporter))
        compiled = prog.compile(rows, metric="exact_match(label)", keep_runs=True)
        pipec.otel.export(compiled, provider)     # compile → trial → pipeline → node → module → chat
    """
    from opentelemetry import trace
    from .version import __version__
    provider = tracer_provider or trace.get_tracer_provider()
    tracer = provider.get_tracer(TRACER, __version__)
    ex = _Exporter(tracer, content, getattr(provider, "force_flush", None))
    kind = type(obj).__name__
    if kind == "Prediction":
        ex.run(obj, None, pipeline, inputs)
    elif kind == "EvalResult":
        ex.eval(obj, pipeline)
    elif kind == "Cell" or (isinstance(obj, (list, tuple)) and obj and all(type(c).__name__ == "Cell" for c in obj)):
        ex.matrix([obj] if kind == "Cell" else list(obj))
    elif kind == "CompileResult" or getattr(obj, "compile_result", None) is not None:
        result = obj if kind == "CompileResult" else obj.compile_result
        ex.compile(result, getattr(obj, "name", None) or pipeline)
    else:
        raise TypeError(f"pipec.otel.export: no spans for a {kind}; give a Prediction, an EvalResult, eval matrix "
                        "cells or a compiled program")


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
    def __init__(self, tracer, content: bool, flush=None):
        from opentelemetry import trace
        self.tracer, self.content, self.trace = tracer, content, trace
        self.flush, self.ended = flush, 0

    def _span(self, name: str, parent, start: int, attrs: dict[str, Any]):
        ctx = self.trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(name, context=ctx, start_time=start,
                                      attributes={k: v for k, v in attrs.items() if v is not None})

    def _close(self, span, end: int) -> None:
        """End `span`; every FLUSH_EVERY spans, hand the ended ones to the exporter. An eval or a
        compile ends thousands at once, and a batch processor drops what its queue cannot hold."""
        span.end(end_time=end)
        self.ended += 1
        if self.flush is not None and self.ended % FLUSH_EVERY == 0:
            self.flush()

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
            self._close(mod, n_end)
            self._close(span, n_end)
        self._close(root, end)

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
        self._close(span, _end(rec))

    # -- many runs
    def eval(self, result, pipeline: str | None, parent=None, extra: dict | None = None) -> tuple[int, int]:
        """An `eval` span over `result`'s rows, each with its run; returns its (start, end)."""
        rows = result.rows
        start, end = _bounds(rows)
        calls = [c for r in rows if r.prediction is not None for c in r.prediction.trace]
        root = self._span("eval", parent, start, {
            "pipec.pipeline": pipeline, "pipec.metric": result.metric, "pipec.score": result.score,
            "pipec.rows": len(rows), "pipec.passed": sum(r.passed for r in rows), "pipec.failures": result.failures,
            "pipec.incomplete": result.incomplete,
            "pipec.lm_calls": sum(r.prediction.lm_calls for r in rows if r.prediction is not None),
            "pipec.cache_hits": sum(c.cache_hit for c in calls),
            "gen_ai.usage.input_tokens": sum(c.prompt_tokens for c in calls),
            "gen_ai.usage.output_tokens": sum(c.completion_tokens for c in calls),
            "pipec.cost_usd": sum(c.cost for c in calls), **(extra or {})})
        self._rows(rows, root, pipeline, start)
        self._close(root, end)
        return start, end

    def _rows(self, rows, parent, pipeline: str | None, start: int) -> None:
        """One pipeline span per scored row under `parent`, with its score and whether it passed."""
        for r in rows:
            extra = {"pipec.row": r.where, "pipec.score": r.score, "pipec.passed": r.passed}
            if self.content:
                for k, v in r.expected.items():
                    extra[f"pipec.expected.{k}"] = self._text(v)
                if r.feedback:
                    extra["pipec.feedback"] = redact(r.feedback)
            if r.prediction is not None:
                self.run(r.prediction, parent, pipeline, r.inputs, extra, fallback_ns=start)
            else:                               # the row never ran (unusable input)
                span = self._span(f"pipeline {pipeline}" if pipeline else "pipeline", parent, start, extra)
                self._fail(span, r.error)
                self._close(span, start)

    def matrix(self, cells) -> None:
        """An `eval matrix` span with one `eval` span per cell (a program on an LM)."""
        start, end = _bounds([r for c in cells for r in c.result.rows])
        root = self._span("eval matrix", None, start, {
            "pipec.metric": cells[0].result.metric, "pipec.cells": len(cells),
            "pipec.programs": len({c.program for c in cells}), "pipec.lms": len({c.lm for c in cells}),
            "pipec.rows": len(cells[0].result.rows), "pipec.passed": sum(c.passed for c in cells),
            "pipec.lm_calls": sum(c.calls for c in cells), "pipec.cache_hits": sum(c.cache_hits for c in cells),
            "pipec.cost_usd": sum(c.cost for c in cells)})
        for c in cells:
            self.eval(c.result, getattr(c, "pipeline", None), root,
                      {"pipec.program": c.program, "pipec.lm_id": c.lm, "pipec.seconds": round(c.seconds, 3)})
        self._close(root, end)

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
        log = getattr(result, "runs", None) if not result.cache_hit else None
        prev = start
        if log is not None and log.baseline:
            prev = self._part("baseline", root, log.baseline, pipeline, prev, prev,
                              {"pipec.score": getattr(report, "baseline_score", None)})
        for i, (t, t_ns) in enumerate(zip(trials, result.trial_ns)):
            runs = log.trials[i] if log is not None and i < len(log.trials) else None
            prev = self._part(f"trial {t.number}", root, runs, pipeline, prev, t_ns, {
                "pipec.trial": t.number, "pipec.score": t.score, "pipec.full": t.full, "pipec.note": t.note or None,
                "pipec.calls_per_row": t.calls_per_row, "pipec.tokens_per_row": t.tokens_per_row})
        if log is not None and log.final:
            prev = self._part("final eval", root, log.final, pipeline, prev, prev, {})
        self._close(root, max(end, prev))

    def _part(self, name: str, parent, runs, pipeline: str | None, start: int, end: int, attrs: dict) -> int:
        """A span of part of a compile (the baseline, a trial, the final eval) from `start` to `end`,
        or as far as its runs (`pipec.run_log.Runs`) reach: one pipeline span per row it scored, a
        `bootstrap` span over the teacher's rows, a chat span per proposal. Returns where it ends."""
        if runs:
            r_start, r_end = _bounds(runs.scored + runs.teacher, runs.proposals, fallback=start)
            start, end = min(start, r_start), max(end, r_end)
            attrs = {**attrs, "pipec.rows": len(runs.scored), "pipec.runs_not_kept": runs.not_kept or None}
        end = max(start, end)
        span = self._span(name, parent, start, attrs)
        if runs:
            self._rows(runs.scored, span, pipeline, start)
            if runs.teacher:
                b_start, b_end = _bounds(runs.teacher, fallback=start)
                boot = self._span("bootstrap", span, b_start, {"pipec.rows": len(runs.teacher)})
                self._rows(runs.teacher, boot, pipeline, b_start)
                self._close(boot, b_end)
            for rec in runs.proposals:
                self._call(rec, span)
        self._close(span, end)
        return end


def _bounds(rows, calls=(), fallback: int | None = None) -> tuple[int, int]:
    """When `rows` (RowResults) and `calls` (CallRecords) began and ended, in ns since the epoch
    (`fallback`, or now, when nothing ran)."""
    times = [r.prediction.timing for r in rows if r.prediction is not None and r.prediction.timing]
    every = [c for r in rows if r.prediction is not None for c in r.prediction.trace] + list(calls)
    now = fallback if fallback is not None else time.time_ns()
    start = min([t[0] for t in times] + [c.start_ns for c in every] or [now])
    end = max([t[1] for t in times] + [_end(c) for c in every] or [now])
    return start, end


def _end(rec) -> int:
    return rec.start_ns + max(0, int(rec.latency_ms * 1e6))
