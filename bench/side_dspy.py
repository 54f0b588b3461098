"""DSPy's side of the comparison (runs in the bench venv, bench/.venv; one measurement per process).

    bench/.venv/bin/python bench/side_dspy.py TASK '{"json": "params"}'   # prints one JSON line

The same tasks, data, LM and settings as `side_pipec.py`, written the way DSPy's documentation
writes them: a `dspy.Signature` class, `dspy.Predict` / `dspy.ChainOfThought`, `DummyLM` for the
in-process LM, `dspy.LM` for servers, `Module.batch` for batches, `BootstrapFewShot` and `MIPROv2`
for compiling.
"""
from __future__ import annotations

import gc
import itertools
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Literal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import per_call, traced_peak  # noqa: E402
from tasks import TASKS, load_rows, real_rows, real_task, scripted_answer  # noqa: E402

import dspy  # noqa: E402
from dspy.utils.dummies import DummyLM  # noqa: E402

TMP = Path(tempfile.mkdtemp(prefix="dspy-side-"))


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def signature(task: str, spec: dict | None = None):
    t = spec or TASKS[task]
    (inp, inp_desc), (out, out_desc) = t["input"], t["output"]
    return dspy.Signature({inp: (str, dspy.InputField(desc=inp_desc)),
                           out: (Literal[tuple(t["labels"])], dspy.OutputField(desc=out_desc))},
                          t["instruction"])


def cache(enabled: bool, tag: str) -> None:
    dspy.configure_cache(enable_disk_cache=enabled, enable_memory_cache=enabled,
                         disk_cache_dir=str(TMP / f"cache-{tag}"))


class CountingDummyLM(DummyLM):
    """DummyLM answering forever, counting the calls that reach it (so a cache hit is provable)."""

    def __init__(self, answer: dict, cached: bool = False):
        super().__init__(itertools.repeat(answer))
        self._cache_responses = cached      # DummyLM opts out of DSPy's cache; the cache paths opt back in
        engine = self._engine_spec
        self.engine_calls = 0
        inner = engine._complete_messages

        def counted(messages):
            self.engine_calls += 1
            return inner(messages)
        engine._complete_messages = counted


# ---------------------------------------------------------------------- per-call overhead
def overhead(p: dict) -> dict:
    task, cot, mode = p.get("task", "intent"), p["module"] == "cot", p["mode"]
    calls, reps, warmup = p["calls"], p["reps"], p["warmup"]
    cache(mode != "nocache", mode)
    lm = CountingDummyLM(scripted_answer(task, cot), cached=mode != "nocache")
    dspy.configure(lm=lm)
    prog = (dspy.ChainOfThought if cot else dspy.Predict)(signature(task))
    inp = TASKS[task]["input"][0]
    first = prog(**{inp: "Will it rain in Paris tomorrow?"})
    out = TASKS[task]["output"][0]
    if getattr(first, out) != scripted_answer(task)[out]:
        raise AssertionError(f"unexpected prediction {first!r}")
    messages = lm.history[-1]["messages"]
    if mode == "miss":
        total = warmup + calls * reps
        texts = iter([f"Will it rain in Paris on day {i}?" for i in range(total)])
        fn = lambda: prog(**{inp: next(texts)})  # noqa: E731
    else:
        fn = lambda: prog(**{inp: "Will it rain in Paris tomorrow?"})  # noqa: E731
    before = lm.engine_calls
    gross = per_call(fn, calls, reps, warmup)
    lm_calls = lm.engine_calls - before
    expected = 0 if mode == "hit" else warmup + calls * reps
    if lm_calls != expected:
        raise AssertionError(f"{lm_calls} LM calls in mode {mode}, expected {expected}: wrong path measured")
    engine = lm._engine_spec
    lm_only = per_call(lambda: engine._complete_messages(messages), calls, reps, warmup)
    return {"gross": gross, "lm": lm_only, "lm_calls": lm_calls}


def memory(p: dict) -> dict:
    task, cot, n = p.get("task", "intent"), p["module"] == "cot", p["calls"]
    cache(False, "memory")
    lm = CountingDummyLM(scripted_answer(task, cot))
    dspy.configure(lm=lm)
    prog = (dspy.ChainOfThought if cot else dspy.Predict)(signature(task))
    inp = TASKS[task]["input"][0]
    for _ in range(200):
        prog(**{inp: "Will it rain in Paris tomorrow?"})
    gc.collect()
    tracemalloc.start()
    for _ in range(n):
        prog(**{inp: "Will it rain in Paris tomorrow?"})
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"peak": peak, "retained": current, "rss_mib": maxrss_mib(),
            "history": len(lm.history), "max_history_size": dspy.settings.max_history_size}


# ---------------------------------------------------------------------- batch against a server
def batch(p: dict) -> dict:
    """`Module.batch(examples, num_threads=C)` on Predict(intent), through dspy.LM."""
    client, url, n, cs = p["client"], p["url"], p["n"], p["cs"]
    engine = "litellm" if client == "dspy-litellm" else "auto"
    cache(False, "batch")
    lm = dspy.LM("openai/bench-model", api_base=url, api_key="bench", cache=False, temperature=0,
                 max_tokens=32, num_retries=0, engine=engine)
    dspy.configure(lm=lm)
    prog = dspy.Predict(signature("intent"))

    def examples(k, salt):
        return [dspy.Example(utterance=f"Play track {i} of the {salt} mix").with_inputs("utterance") for i in range(k)]

    prog.batch(examples(8, "warm-up"), num_threads=4, disable_progress_bar=True)
    out = {}
    for c in cs:
        k = n[str(c)] if isinstance(n, dict) else n
        exs = examples(k, f"c{c}")
        t0 = time.perf_counter()
        preds = prog.batch(exs, num_threads=c, disable_progress_bar=True, return_failed_examples=True)
        wall = time.perf_counter() - t0
        results, failed = preds[0], preds[1]
        out[str(c)] = {"wall": wall, "ok": sum(r is not None for r in results),
                       "error": str(preds[2][0]) if failed else None}
    return out


# ---------------------------------------------------------------------- compile on the embedded model
def compile_task(p: dict) -> dict:
    import httpx
    task, url, sizes, seed = p["task"], p["url"], p["sizes"], p.get("seed", 0)
    t = TASKS[task]
    inp, out = t["input"][0], t["output"][0]
    base = url.rsplit("/v1", 1)[0]

    def stats():
        return httpx.post(base + "/_stats/reset", timeout=10).json()

    # A fresh cache directory, as pipec's side has: repeated identical requests are free on both sides.
    cache(True, f"compile-{task}-{p['optimizer']}")
    # DSPy's default max_errors (10) aborts a whole evaluation or compile once 10 rows fail to parse,
    # which SmolLM2 reaches on 30 rows; pipec records failures and goes on. Both sides count failures.
    never = 10 ** 6
    dspy.configure(max_errors=never)
    # engine="litellm": DSPy 3.4's default engine sends `max_completion_tokens`, which llama-cpp-python's
    # server ignores (replies then run to the context limit); litellm sends `max_tokens`, as pipec does.
    lm = dspy.LM("openai/smollm2", api_base=url, api_key="bench", temperature=0, max_tokens=p["max_tokens"],
                 num_retries=1, cache=True, engine=p.get("engine", "litellm"))
    dspy.configure(lm=lm)
    student = dspy.Predict(signature(task))

    def ex(rows):
        return [dspy.Example(**{inp: r[inp], out: r[out]}).with_inputs(inp) for r in rows]

    train = ex(load_rows(task, "train", sizes["train"], seed))
    dev = ex(load_rows(task, "dev", sizes["dev"], seed))
    test = ex(load_rows(task, "test", sizes["test"], seed))
    conc = p.get("concurrency", 2)

    def metric(example, pred, trace=None):
        return str(getattr(pred, out, "")).strip().lower() == getattr(example, out)

    def score(program) -> dict:
        t0 = time.perf_counter()
        results = program.batch(test, num_threads=conc, disable_progress_bar=True, return_failed_examples=True,
                                max_errors=never)
        wall = time.perf_counter() - t0
        preds, failed = results[0], results[1]
        good = sum(1 for x, e in zip(preds, test) if x is not None and metric(e, x))
        return {"score": good / len(test), "failed": len(failed), "wall": wall}

    before = score(student)
    stats_before = stats()
    t0 = time.perf_counter()
    opts = p.get("options", {})
    if p["optimizer"] == "bootstrap_fewshot":
        tp = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=opts.get("max_demos", 4),
                                   max_labeled_demos=opts.get("max_labeled", 4), max_rounds=opts.get("rounds", 1),
                                   max_errors=never)
        compiled = tp.compile(student, trainset=train)
    else:
        tp = dspy.MIPROv2(metric=metric, auto=None, num_candidates=opts.get("instructions", 3),
                          max_bootstrapped_demos=opts.get("max_demos", 2), max_labeled_demos=opts.get("max_labeled", 2),
                          num_threads=conc, seed=seed, verbose=False, max_errors=never)
        compiled = tp.compile(student, trainset=train, valset=dev, num_trials=opts.get("trials", 6),
                              minibatch=True, minibatch_size=opts.get("minibatch", 10),
                              minibatch_full_eval_steps=opts.get("full_every", 5))
    wall = time.perf_counter() - t0
    compile_stats = stats()
    after = score(compiled)
    return {"before": before, "after": after, "compile_wall": wall, "compile_proxy": compile_stats,
            "eval_before_proxy": stats_before,
            "demos": {name: len(pr.demos) for name, pr in compiled.named_predictors()}}


def same_label(got, expected) -> bool:
    """The held-out metric of the real-data benchmark (as side_pipec.same_label)."""
    return str(got if got is not None else "").strip().lower() == str(expected).strip().lower()


def compile_real(p: dict) -> dict:
    """DSPy's MIPROv2 or GEPA on one real task (bench/compile_real.py): the same rows, LM, server,
    proxy and held-out scoring as side_pipec.compile_real."""
    import httpx
    task, url, sizes, seed = p["task"], p["url"], p["sizes"], p["seed"]
    spec = real_task(task)
    inp, out = spec["input"][0], spec["output"][0]
    base = url.rsplit("/v1", 1)[0]

    def stats():
        return httpx.post(base + "/_stats/reset", timeout=10).json()

    cache(True, f"real-{task}-{p['optimizer']}")
    never = 10 ** 6
    dspy.configure(max_errors=never)
    # engine="litellm": see compile_task (the server ignores DSPy's own engine's max_completion_tokens).
    lm = dspy.LM("openai/smollm2", api_base=url, api_key="bench", temperature=0, max_tokens=p["max_tokens"],
                 num_retries=1, cache=True, engine="litellm")
    # The proposing / reflecting LM: the same model, sampled as pipec's proposer samples it.
    sampling = p["options"]["proposer"]
    proposer = dspy.LM("openai/smollm2", api_base=url, api_key="bench", temperature=sampling["temperature"],
                       max_tokens=sampling["max_tokens"], num_retries=1, cache=True, engine="litellm", seed=seed)
    dspy.configure(lm=lm)
    student = dspy.Predict(signature(task, spec))

    def ex(rows):
        return [dspy.Example(**{inp: r[inp], out: r[out]}).with_inputs(inp) for r in rows]

    train = ex(real_rows(task, "train", sizes["train"]))
    dev = ex(real_rows(task, "dev", sizes["dev"]))
    test = ex(real_rows(task, "test", sizes["test"]))
    conc = p.get("concurrency", 2)

    def metric(example, pred, trace=None):
        return float(same_label(getattr(pred, out, None), getattr(example, out)))

    def metric_feedback(gold, pred, trace=None, pred_name=None, pred_trace=None):
        # The feedback pipec's built-in exact_match gives (pipec.metrics.exact_match_feedback).
        got = getattr(pred, out, None)
        ok = same_label(got, getattr(gold, out))
        return dspy.Prediction(score=float(ok), feedback="correct" if ok else
                               f"expected {getattr(gold, out)}, got {got if got is not None else '(nothing)'}")

    def score(program, rows) -> dict:
        t0 = time.perf_counter()
        results = program.batch(rows, num_threads=conc, disable_progress_bar=True, return_failed_examples=True,
                                max_errors=never)
        preds, failed = results[0], results[1]
        good = sum(1 for x, e in zip(preds, rows) if x is not None and metric(e, x))
        return {"score": good / len(rows), "failed": len(failed), "wall": time.perf_counter() - t0}

    stats()
    opts = p.get("options", {})
    t0 = time.perf_counter()
    extra = {}
    if p["optimizer"] == "mipro":
        tp = dspy.MIPROv2(metric=metric, prompt_model=proposer, auto=None, num_candidates=opts["candidates"],
                          max_bootstrapped_demos=opts["max_demos"], max_labeled_demos=opts["max_labeled"],
                          num_threads=conc, seed=seed, verbose=False, max_errors=never)
        compiled = tp.compile(student, trainset=train, valset=dev, num_trials=opts["trials"], minibatch=True,
                              minibatch_size=opts["minibatch"], minibatch_full_eval_steps=opts["full_every"])
    elif p["optimizer"] == "gepa":
        tp = dspy.GEPA(metric=metric_feedback, max_metric_calls=opts["max_metric_calls"],
                       reflection_minibatch_size=opts["minibatch"], reflection_lm=proposer,
                       use_merge=opts["merges"] > 0, max_merge_invocations=opts["merges"], num_threads=conc,
                       seed=seed, track_stats=True)
        compiled = tp.compile(student, trainset=train, valset=dev)
        res = getattr(compiled, "detailed_results", None)
        if res is not None:
            extra = {"candidates": len(res.candidates), "metric_calls": getattr(res, "total_metric_calls", None),
                     "val_baseline": res.val_aggregate_scores[0], "val_compiled": res.val_aggregate_scores[res.best_idx]}
    else:
        raise ValueError(f"unknown DSPy optimizer {p['optimizer']!r}")
    wall = time.perf_counter() - t0
    compile_stats = stats()
    test_score = score(compiled, test)
    (_, pred), = compiled.named_predictors()
    instruction = pred.signature.instructions
    chosen = []
    if instruction.strip() != spec["instruction"].strip():
        chosen.append(f"new instruction ({len(instruction)} chars)")
    if pred.demos:
        chosen.append(f"{len(pred.demos)} demos")
    return {"test": test_score, "compile_wall": wall, "compile_proxy": compile_stats,
            "chosen": ", ".join(chosen) or "the uncompiled parameters", **extra}


# ---------------------------------------------------------------------- scaling
class Chain(dspy.Module):
    def __init__(self, k: int):
        super().__init__()
        self.steps = [dspy.Predict(signature("intent")) for _ in range(k)]

    def forward(self, utterance):
        pred = None
        for step in self.steps:
            pred = step(utterance=utterance)
            utterance = pred.intent
        return pred


def scale_modules(p: dict) -> dict:
    k, calls, reps = p["modules"], p["calls"], p["reps"]
    cache(False, "scale")
    lm = CountingDummyLM(scripted_answer("intent"))
    dspy.configure(lm=lm)
    prog = Chain(k)
    fn = lambda: prog(utterance="Will it rain in Paris tomorrow?")  # noqa: E731
    fn()
    messages = lm.history[-1]["messages"]
    engine = lm._engine_spec
    gross = per_call(fn, calls, reps, warmup=max(5, calls // 10))
    lm_only = per_call(lambda: engine._complete_messages(messages), calls * k, reps, warmup=10)
    peak = traced_peak(fn, max(10, calls // 5))
    return {"gross": gross, "lm_per_call": [x * k for x in lm_only], "peak": peak, "rss_mib": maxrss_mib()}


def scale_rows(p: dict) -> dict:
    n, conc = p["rows"], p["concurrency"]
    cache(False, "rows")
    lm = CountingDummyLM(scripted_answer("intent"))
    dspy.configure(lm=lm)
    prog = dspy.Predict(signature("intent"))
    exs = [dspy.Example(utterance=f"Will it rain in city number {i} tomorrow?").with_inputs("utterance")
           for i in range(n)]

    def run():
        res = prog.batch(exs, num_threads=conc, disable_progress_bar=True, return_failed_examples=True)
        return len(res[0]), len(res[1])

    gc.collect()
    t0 = time.perf_counter()
    ran, failed = run()
    wall = time.perf_counter() - t0
    peak = traced_peak(run)
    return {"wall": wall, "ran": ran, "failed": failed, "peak": peak, "rss_mib": maxrss_mib()}


TASKS_BY_NAME = {"overhead": overhead, "memory": memory, "batch": batch, "compile": compile_task,
                 "compile_real": compile_real, "scale_modules": scale_modules, "scale_rows": scale_rows}


def main() -> int:
    import logging
    logging.getLogger("dspy").setLevel(logging.ERROR)
    name, params = sys.argv[1], json.loads(sys.argv[2])
    result = TASKS_BY_NAME[name](params)
    print(json.dumps({"side": "dspy", "task": name, "result": result, "version": dspy.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
