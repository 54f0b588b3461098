"""pipec's side of the DSPy comparison (runs in pipec's interpreter; one measurement per process).

    python bench/side_pipec.py TASK '{"json": "params"}'     # prints one JSON line: the result

Also the reference clients of the batch benchmark (a bare httpx loop, plain `litellm.acompletion`),
since they need no framework. `bench/run_all.py` drives this; it is not meant to be run by hand.
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import per_call, traced_peak  # noqa: E402
from tasks import REPO, TASKS, load_rows, pipe_source, real_rows, real_task, scripted_answer  # noqa: E402

TMP = Path(tempfile.mkdtemp(prefix="pipec-side-"))


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_pipe(task: str, kind: str = "Predict", lm_decl: str = "", modules: int = 1) -> Path:
    path = TMP / f"{task}-{kind}-{modules}.pipe"
    path.write_text(pipe_source(task, kind, lm_decl, modules))
    return path


def scripted(task: str, cot: bool, cacheable: bool = False):
    import pipec
    answer = scripted_answer(task, cot)
    lm = pipec.ScriptedLM(rule=lambda request: answer, cacheable=cacheable)
    lm.requests = deque(maxlen=1)      # the test double's record, bounded (see bench/README.md)
    return lm


# ---------------------------------------------------------------------- per-call overhead
def overhead(p: dict) -> dict:
    """Per-call time of Predict/ChainOfThought on the scripted LM: no cache, cache miss, cache hit."""
    import pipec
    task, cot, mode = p.get("task", "intent"), p["module"] == "cot", p["mode"]
    calls, reps, warmup = p["calls"], p["reps"], p["warmup"]
    lm = scripted(task, cot, cacheable=mode != "nocache")
    cache = False if mode == "nocache" else TMP / f"cache-{mode}"
    prog = pipec.load(write_pipe(task, "ChainOfThought" if cot else "Predict"), lm=lm, cache=cache)
    inp = TASKS[task]["input"][0]
    first = prog(**{inp: "Will it rain in Paris tomorrow?"})
    if not first.ok:
        raise AssertionError(f"the scripted call failed: {first.error}")
    request = lm.requests[-1]
    if mode == "miss":
        # Distinct inputs, so every call misses the cache and writes it (memory front and disk).
        total = warmup + calls * reps
        texts = iter([f"Will it rain in Paris on day {i}?" for i in range(total)])
        fn = lambda: prog(**{inp: next(texts)})  # noqa: E731
    else:
        fn = lambda: prog(**{inp: "Will it rain in Paris tomorrow?"})  # noqa: E731
    before = prog.stats.calls
    gross = per_call(fn, calls, reps, warmup)
    lm_calls = prog.stats.calls - before
    expected = 0 if mode == "hit" else warmup + calls * reps
    if lm_calls != expected:
        raise AssertionError(f"{lm_calls} LM calls in mode {mode}, expected {expected}: wrong path measured")
    lm_only = per_call(lambda: lm.complete(request), calls, reps, warmup)
    prog.close()
    return {"gross": gross, "lm": lm_only, "lm_calls": lm_calls}


def memory(p: dict) -> dict:
    """tracemalloc peak and retained bytes over N Predict calls (no cache), and the process's max RSS."""
    import pipec
    task, cot, n = p.get("task", "intent"), p["module"] == "cot", p["calls"]
    lm = scripted(task, cot)
    prog = pipec.load(write_pipe(task, "ChainOfThought" if cot else "Predict"), lm=lm, cache=False)
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
    return {"peak": peak, "retained": current, "rss_mib": maxrss_mib()}


# ---------------------------------------------------------------------- batch against a server
def batch(p: dict) -> dict:
    """Wall time of N rows at each concurrency C against the loopback server, for one client."""
    client, url, n, cs = p["client"], p["url"], p["n"], p["cs"]
    runner = {"httpx": batch_httpx, "aiohttp": batch_aiohttp, "openai": batch_openai, "litellm": batch_litellm,
              "pipec": batch_pipec, "pipec-litellm": batch_pipec, "pipec-groq": batch_pipec,
              "pipec-openai-env": batch_pipec}[client]
    return runner(p, url, n, cs)


def _rows(n: int, salt: str) -> list[dict]:
    return [{"utterance": f"Play track {i} of the {salt} mix"} for i in range(n)]


async def timed_gathers(one, n, cs) -> dict:
    """Wall time of `one(semaphore, i)` over N rows at each concurrency C, after an 8-row warm-up:
    the loop shape every reference client shares. `n` is a count, or counts by str(C)."""
    out = {}
    await asyncio.gather(*[one(asyncio.Semaphore(4), i) for i in range(8)])
    for c in cs:
        sem = asyncio.Semaphore(c)
        t0 = time.perf_counter()
        oks = await asyncio.gather(*[one(sem, i) for i in range(n[str(c)] if isinstance(n, dict) else n)])
        out[str(c)] = {"wall": time.perf_counter() - t0, "ok": sum(oks)}
    return out


def batch_httpx(p, url, n, cs) -> dict:
    """The reference: a bare httpx.AsyncClient loop with a semaphore, nothing else."""
    import httpx

    async def run():
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            async def one(sem, i):
                async with sem:
                    body = json.dumps({"model": "bench-model", "temperature": 0, "max_tokens": 32, "messages": [
                        {"role": "user", "content": f"utterance: Play track {i}"}]}).encode()
                    r = await client.post(url + "/chat/completions", content=body,
                                          headers={"content-type": "application/json"})
                    return r.json()["choices"][0]["message"]["content"] is not None

            return await timed_gathers(one, n, cs)
    return asyncio.run(run())


def batch_aiohttp(p, url, n, cs) -> dict:
    """A second reference: a bare aiohttp.ClientSession loop (what openai_compat.py uses when it can)."""
    import aiohttp

    async def run():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:
            async def one(sem, i):
                async with sem:
                    body = json.dumps({"model": "bench-model", "temperature": 0, "max_tokens": 32, "messages": [
                        {"role": "user", "content": f"utterance: Play track {i}"}]}).encode()
                    async with session.post(url + "/chat/completions", data=body,
                                            headers={"content-type": "application/json"}) as r:
                        data = json.loads(await r.read())
                    return data["choices"][0]["message"]["content"] is not None

            return await timed_gathers(one, n, cs)
    return asyncio.run(run())


def batch_openai(p, url, n, cs) -> dict:
    """The maintained `openai.AsyncOpenAI` client in the same loop shape (the candidate transport for
    pipec's direct client: kept out unless the hand-written one is more than 5% faster at C = 32)."""
    import httpx
    import openai

    async def run():
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1024, max_keepalive_connections=1024))
        async with openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, http_client=http) as client:
            async def one(sem, i):
                async with sem:
                    r = await client.chat.completions.create(
                        model="bench-model", temperature=0, max_tokens=32,
                        messages=[{"role": "user", "content": f"utterance: Play track {i}"}])
                    return r.choices[0].message.content is not None

            return await timed_gathers(one, n, cs)
    return asyncio.run(run())


def batch_litellm(p, url, n, cs) -> dict:
    """Plain `litellm.acompletion` in the same loop shape (what pipec's hosted path used to do)."""
    import litellm
    litellm.suppress_debug_info = True

    async def run():
        async def one(sem, i):
            async with sem:
                r = await litellm.acompletion(model="openai/bench-model", api_base=url, api_key="bench",
                                              temperature=0, max_tokens=32, num_retries=0,
                                              messages=[{"role": "user", "content": f"utterance: Play track {i}"}])
                return r.choices[0].message.content is not None
        return await timed_gathers(one, n, cs)
    return asyncio.run(run())


def batch_pipec(p, url, n, cs) -> dict:
    """`Program.run_batch` on intent.pipe: the direct OpenAI-compatible backend, or litellm (HostedLM);
    `pipec-groq` and `pipec-openai-env` declare a hosted provider's id in the file, as a user would
    (`groq/...` at an api_base; `openai/...` with no api_base, pointed here by OPENAI_BASE_URL)."""
    import pipec
    os.environ["PIPEC_BENCH_KEY"] = "bench"
    decl = (f'lm remote = "openai/bench-model" (api_base: "{url}", api_key_env: "PIPEC_BENCH_KEY", '
            f'temperature: 0, max_tokens: 32, num_retries: 0)')
    lm = None
    if p["client"] == "pipec":
        from pipec.lm.openai_compat import OpenAICompatLM
        lm = OpenAICompatLM("openai/bench-model", url, api_key_env="PIPEC_BENCH_KEY", num_retries=0)
    elif p["client"] == "pipec-litellm":
        from pipec.lm.hosted import HostedLM
        lm = HostedLM("openai/bench-model", api_base=url, api_key_env="PIPEC_BENCH_KEY", num_retries=0)
    elif p["client"] == "pipec-groq":
        os.environ["GROQ_API_KEY"] = "bench"
        decl = f'lm remote = "groq/bench-model" (api_base: "{url}", temperature: 0, max_tokens: 32, num_retries: 0)'
    else:
        os.environ.update(OPENAI_BASE_URL=url, OPENAI_API_KEY="bench")
        decl = 'lm remote = "openai/bench-model" (temperature: 0, max_tokens: 32, num_retries: 0)'
    path = write_pipe("intent", lm_decl=decl)
    prog = pipec.load(path, lm=lm, cache=False) if lm is not None else pipec.load(path, cache=False)
    if lm is None and type(prog._backends["remote"]).__name__ != "OpenAICompatLM":
        raise AssertionError(f"{p['client']}: the declared lm is not on the direct client")
    prog.run_batch(_rows(8, "warm-up"), concurrency=4)
    out = {}
    for c in cs:
        rows = _rows(n[str(c)] if isinstance(n, dict) else n, f"c{c}")
        t0 = time.perf_counter()
        preds = prog.run_batch(rows, concurrency=c)
        out[str(c)] = {"wall": time.perf_counter() - t0, "ok": sum(x.ok for x in preds),
                       "error": next((x.error for x in preds if not x.ok), None)}
    return out


# ---------------------------------------------------------------------- compile on the embedded model
def compile_task(p: dict) -> dict:
    """Held-out score before and after a compile, LM calls and tokens (counted at the proxy), wall time."""
    import pipec
    from pipec.lm.openai_compat import OpenAICompatLM
    task, url, sizes, seed = p["task"], p["url"], p["sizes"], p.get("seed", 0)
    t = TASKS[task]
    inp, out = t["input"][0], t["output"][0]
    lm = OpenAICompatLM("openai/smollm2", url, num_retries=1, timeout=300)
    decl = f'lm remote = "openai/smollm2" (api_base: "{url}", temperature: 0, max_tokens: {p["max_tokens"]})'
    path = write_pipe(task, lm_decl=decl)
    cache = TMP / f"cache-compile-{task}"
    prog = pipec.load(path, lm=lm, cache=cache)
    train = load_rows(task, "train", sizes["train"], seed)
    dev = load_rows(task, "dev", sizes["dev"], seed)
    test = load_rows(task, "test", sizes["test"], seed)
    conc = p.get("concurrency", 2)

    def score(program) -> dict:
        calls0 = program.stats.calls
        t0 = time.perf_counter()
        preds = program.run_batch([{inp: r[inp]} for r in test], concurrency=conc)
        wall = time.perf_counter() - t0
        good = sum(1 for x, r in zip(preds, test) if x.ok and str(getattr(x, out)).strip().lower() == r[out])
        return {"score": good / len(test), "failed": sum(not x.ok for x in preds), "wall": wall,
                "lm_calls": program.stats.calls - calls0}

    stats = p["stats"]
    before = score(prog)
    stats_before = stats("reset")
    optimizer = p["optimizer"]
    options = dict(p.get("options", {}))
    t0 = time.perf_counter()
    compiled = prog.compile(trainset=train, valset=dev, metric=f"exact_match({out})", optimizer=optimizer,
                            seed=seed, budget=p.get("budget"), options=options, concurrency=conc)
    wall = time.perf_counter() - t0
    compile_stats = stats("reset")
    after = score(compiled)
    report = compiled.report
    return {"before": before, "after": after, "compile_wall": wall, "compile_proxy": compile_stats,
            "eval_before_proxy": stats_before, "report_lm_requests": report.lm_requests,
            "report_tokens": report.tokens, "val_baseline": report.baseline_score,
            "val_compiled": report.compiled_score,
            "demos": {k: len(v.demos) for k, v in compiled.artifact.predictors.items()}}


def same_label(got, expected) -> bool:
    """The held-out metric of the real-data benchmark, the same function on both sides."""
    return str(got if got is not None else "").strip().lower() == str(expected).strip().lower()


def compile_real(p: dict) -> dict:
    """One optimizer on one real task (bench/compile_real.py): held-out test score of the compiled
    program, compile LM calls counted by the proxy, compile wall time, and what the compile chose.
    Optimizer "uncompiled" scores the program as written (the valset too), with no compile."""
    import pipec
    from pipec.lm.openai_compat import OpenAICompatLM
    task, url, sizes, seed = p["task"], p["url"], p["sizes"], p["seed"]
    spec = real_task(task)
    inp, out = spec["input"][0], spec["output"][0]
    lm = OpenAICompatLM("openai/smollm2", url, num_retries=1, timeout=600)
    decl = f'lm remote = "openai/smollm2" (api_base: "{url}", temperature: 0, max_tokens: {p["max_tokens"]})'
    path = TMP / f"{task}.pipe"
    path.write_text(pipe_source(task, lm_decl=decl, spec=spec))
    prog = pipec.load(path, lm=lm, cache=TMP / f"cache-{task}")
    train = real_rows(task, "train", sizes["train"])
    dev = real_rows(task, "dev", sizes["dev"])
    test = real_rows(task, "test", sizes["test"])
    conc = p.get("concurrency", 2)
    stats = p["stats"]

    def score(program, rows) -> dict:
        t0 = time.perf_counter()
        preds = program.run_batch([{inp: r[inp]} for r in rows], concurrency=conc)
        good = sum(1 for x, r in zip(preds, rows) if x.ok and same_label(getattr(x, out), r[out]))
        return {"score": good / len(rows), "failed": sum(not x.ok for x in preds),
                "wall": time.perf_counter() - t0}

    stats("reset")
    code = pipec_code()
    if p["optimizer"] == "uncompiled":
        val = score(prog, dev)
        return {"test": score(prog, test), "val_baseline": val["score"], "val_compiled": val["score"],
                "compile_wall": 0.0, "compile_proxy": {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                                        "errors": 0}, "chosen": "the program as written", "code": code}
    t0 = time.perf_counter()
    compiled = prog.compile(trainset=train, valset=dev, metric=f"exact_match({out})", optimizer=p["optimizer"],
                            seed=seed, budget=p["budget"], options=dict(p.get("options", {})), concurrency=conc)
    wall = time.perf_counter() - t0
    compile_stats = stats("reset")
    test_score = score(compiled, test)
    report = compiled.report
    (_, state), = compiled.artifact.predictors.items()
    chosen = []
    if state.instruction.strip() != spec["instruction"].strip():
        chosen.append(f"new instruction ({len(state.instruction)} chars)")
    if state.knn is not None:
        chosen.append(f"{state.knn.k} nearest demos per input")
    elif state.demos:
        chosen.append(f"{len(state.demos)} demos")
    return {"test": test_score, "compile_wall": wall, "compile_proxy": compile_stats,
            "val_baseline": report.baseline_score, "val_compiled": report.compiled_score, "valset": report.valset,
            "report_lm_requests": report.lm_requests, "trials": len(report.trials),
            "why": report.trials[-1].note[:300] if report.trials else "",
            "chosen": ", ".join(chosen) or "the uncompiled parameters", "code": code}


def pipec_code() -> str:
    """The commit of the checkout this cell ran (other work may commit to it during a long run)."""
    import subprocess

    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "compiler", "optimizers", "dsl")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


# ---------------------------------------------------------------------- scaling
def scale_modules(p: dict) -> dict:
    """Per-call time and traced peak memory of a chain of K Predict modules on the scripted LM."""
    import pipec
    k, calls, reps = p["modules"], p["calls"], p["reps"]
    lm = scripted("intent", False)
    prog = pipec.load(write_pipe("intent", modules=k), lm=lm, cache=False)
    fn = lambda: prog(utterance="Will it rain in Paris tomorrow?")  # noqa: E731
    if not fn().ok:
        raise AssertionError("chain failed")
    request = lm.requests[-1]
    gross = per_call(fn, calls, reps, warmup=max(5, calls // 10))
    lm_only = per_call(lambda: lm.complete(request), calls * k, reps, warmup=10)
    peak = traced_peak(fn, max(10, calls // 5))
    return {"gross": gross, "lm_per_call": [x * k for x in lm_only], "peak": peak, "rss_mib": maxrss_mib()}


def scale_rows(p: dict) -> dict:
    """A batch of N rows on the scripted LM: wall time and traced peak, as a list (run_batch) or
    streamed JSONL to JSONL (`pipec run --inputs/--output`)."""
    import pipec
    n, conc, how = p["rows"], p["concurrency"], p["how"]
    lm = scripted("intent", False)
    prog = pipec.load(write_pipe("intent"), lm=lm, cache=False)
    rows = [{"utterance": f"Will it rain in city number {i} tomorrow?"} for i in range(n)]
    src = TMP / f"rows-{n}.jsonl"
    if how == "jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        del rows

    def run(tag):
        if how == "jsonl":
            from pipec.batch import run_jsonl
            dst = TMP / f"out-{n}-{tag}.jsonl"
            s = run_jsonl(prog, src, dst, concurrency=conc, progress=False)
            return s.ran, s.failed
        preds = prog.run_batch(rows, concurrency=conc)
        return len(preds), sum(not x.ok for x in preds)

    gc.collect()
    t0 = time.perf_counter()
    ran, failed = run("timed")
    wall = time.perf_counter() - t0
    peak = traced_peak(lambda: run("traced"))
    return {"wall": wall, "ran": ran, "failed": failed, "peak": peak, "rss_mib": maxrss_mib()}


def proxy_stats(url: str):
    """A function reading (and resetting) the counting proxy's totals: same counter for both sides."""
    import httpx
    base = url.rsplit("/v1", 1)[0]

    def stats(_action="reset"):
        return httpx.post(base + "/_stats/reset", timeout=10).json()
    return stats


TASKS_BY_NAME = {"overhead": overhead, "memory": memory, "batch": batch, "compile": compile_task,
                 "compile_real": compile_real, "scale_modules": scale_modules, "scale_rows": scale_rows}


def main() -> int:
    name, params = sys.argv[1], json.loads(sys.argv[2])
    if name in ("compile", "compile_real"):
        params["stats"] = proxy_stats(params["url"])
    result = TASKS_BY_NAME[name](params)
    print(json.dumps({"side": "pipec", "task": name, "result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
