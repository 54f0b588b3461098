"""pipec's own performance budgets: start-up, per-call runtime overhead, cache hits, memory.

    python bench/budgets.py              # full run (about 30 s), writes bench/results/budgets.md
    python bench/budgets.py --quick      # smoke run (a few seconds): exits 0 unless something crashes
    python bench/budgets.py --json out.json --profile

Every timed number is a median over repetitions after a warm-up; start-up numbers are wall times of
fresh subprocesses, interleaved with a bare `python -c pass` baseline. Per-call numbers use the
in-process ScriptedLM, so no LM latency is in them, and the scripted LM's own cost is measured
alone and subtracted. Exit status: 0, or 2 if a benchmark crashed; with --strict, 1 if a budget
was missed. See bench/README.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (REPO, Metric, environment, median, per_call, render_markdown,  # noqa: E402
                     render_table, rerun_command, run_capture, run_python, spread, subprocess_walls, summary, under)

INTENT = REPO / "examples" / "intent.pipe"
RESULTS = REPO / "bench" / "results"
HEAVY = ("litellm", "optuna", "llama_cpp", "pydantic")
WATCH = ("lark", "diskcache", "sqlite3", "asyncio", "numpy", "httpx", "openai", "aiohttp", "jinja2", "tiktoken")

# A ChainOfThought pipeline, written to a temp dir (examples/ belongs to others).
QA_PIPE = """\
signature Answer {
    "Answer the question in one short phrase."
    in  question: str "the question"
    out answer: str "a short answer"
}

module answer = ChainOfThought(Answer)

pipeline qa(question: str) -> (answer) {
    a = answer(question: question)
    return answer = a.answer
}
"""


def intent_rule(request):
    # The first intent the file declares, so edits to examples/intent.pipe do not break the benchmark.
    return {"intent": request.schema["properties"]["intent"]["enum"][0]}


def qa_rule(request):
    return {"reasoning": "Two plus two is four.", "answer": "4"}


@dataclass(frozen=True)
class Config:
    quick: bool
    startup_runs: int      # fresh subprocesses per start-up command
    calls: int             # calls per timed repetition
    reps: int              # repetitions (the median is reported)
    warmup: int            # untimed calls first
    disk_keys: int         # distinct inputs read back from the disk cache per repetition
    disk_reps: int
    memory_calls: int


FULL = Config(False, startup_runs=21, calls=5000, reps=7, warmup=1000, disk_keys=1000, disk_reps=5,
              memory_calls=10_000)
QUICK = Config(True, startup_runs=3, calls=300, reps=3, warmup=50, disk_keys=50, disk_reps=2, memory_calls=1000)


class Context:
    """What the benchmarks share: the config, a scratch directory, and subprocess environments.

    Subprocesses write and read bytecode in a private PYTHONPYCACHEPREFIX, as an installed package
    would after its first import, even where PYTHONDONTWRITEBYTECODE is set (as it is in some dev
    sandboxes); `env_source` keeps bytecode off, to show what compiling from source costs.
    """

    def __init__(self, cfg: Config, tmp: Path):
        self.cfg = cfg
        self.tmp = tmp
        self.qa_pipe = tmp / "qa.pipe"
        self.qa_pipe.write_text(QA_PIPE)
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        self.env_source = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
        self.env_source["PYTHONDONTWRITEBYTECODE"] = "1"


def scripted(rule, cacheable: bool = False):
    """A ScriptedLM whose request record is bounded to the last request.

    ScriptedLM keeps every request in `.requests` for tests to inspect; left unbounded over
    thousands of calls that record is the benchmark's own garbage (memory, GC passes), not pipec's.
    The `memory` benchmark reports the unbounded case separately.
    """
    import pipec
    lm = pipec.ScriptedLM(rule=rule, cacheable=cacheable)
    lm.requests = deque(maxlen=1)
    return lm


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ---------------------------------------------------------------------- start-up
def pipec_command() -> tuple[list[str], str]:
    """The `pipec` console script of this interpreter's environment (or `python -m pipec`)."""
    script = Path(sys.executable).parent / "pipec"
    if script.exists():
        return [str(script)], "pipec"
    found = shutil.which("pipec")
    if found:
        return [found], "pipec"
    return [sys.executable, "-m", "pipec"], "python -m pipec"


def bench_startup(ctx: Context) -> list[Metric]:
    """Wall time of fresh processes: bare python, `import pipec`, `pipec --help`, import + load."""
    py = sys.executable
    pipec_argv, pipec_name = pipec_command()
    load = [py, "-c", "import sys, pipec; pipec.load(sys.argv[1])", str(INTENT)]
    no_pyc = "import pipec + pipec.load(examples/intent.pipe), no bytecode cache"
    commands = {
        "python -c pass (baseline)": [py, "-c", "pass"],
        "import pipec": [py, "-c", "import pipec"],
        f"{pipec_name} --help": [*pipec_argv, "--help"],
        "import pipec + pipec.load(examples/intent.pipe)": load,
        no_pyc: load,
    }
    walls = subprocess_walls(commands, ctx.cfg.startup_runs, warmup=1, cwd=ctx.tmp, env=ctx.env,
                             envs={no_pyc: ctx.env_source})
    base = median(walls["python -c pass (baseline)"])
    budgets = {"import pipec": 0.15, f"{pipec_name} --help": 0.1}
    out = []
    for name, samples in walls.items():
        m = median(samples)
        extra = "" if name.endswith("(baseline)") else f"; {ms(m - base):+.1f} ms vs baseline"
        if name == no_pyc:
            extra += "; PYTHONDONTWRITEBYTECODE=1, so modules without a .pyc beside them (pipec's own here) compile every run"
        row = Metric("startup", name, m, "s", detail=f"median of {len(samples)} fresh runs, "
                     f"{spread(samples)} s{extra}", samples=samples)
        if name in budgets:
            row.budget, row.ok = under(m, budgets[name], "s")
        out.append(row)
    return out


# Runs in a fresh interpreter; writes sorted(sys.modules) to argv[1] without importing anything itself.
_MODULES_CODE = {
    "import pipec": "import sys\nimport pipec\n",
    "pipec --help": ("import sys\nfrom pipec.cli import main\n"
                     "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"),
    "import pipec + load(intent.pipe)": "import sys\nimport pipec\npipec.load(sys.argv[2])\n",
}
_DUMP = "open(sys.argv[1], 'w').write('\\n'.join(sorted(sys.modules)))\n"


def loaded_modules(ctx: Context, code: str) -> set[str]:
    path = ctx.tmp / "modules.txt"
    run_python(code + _DUMP, str(path), str(INTENT), cwd=ctx.tmp, env=ctx.env)
    return set(path.read_text().split())


def bench_imports(ctx: Context) -> list[Metric]:
    """Which heavy third-party modules `import pipec`, `pipec --help` and a load pull in."""
    baseline = loaded_modules(ctx, "import sys\n")
    out = []
    for name, code in _MODULES_CODE.items():
        mods = loaded_modules(ctx, code)
        tops = {m.split(".")[0] for m in mods}
        heavy = [h for h in HEAVY if h in tops]
        watched = [w for w in WATCH if w in tops]
        row = Metric("imports", f"{name}: heavy modules", heavy, budget="none of " + ", ".join(HEAVY),
                     detail=f"{len(mods - baseline)} modules beyond bare python; watch list loaded: "
                            + (", ".join(watched) or "none"))
        if name == "import pipec + load(intent.pipe)":
            row.budget = "-"            # reported, not budgeted: loading needs the parser
        else:
            row.ok = not heavy
        out.append(row)
    return out


# ---------------------------------------------------------------------- per-call overhead
def overhead(ctx: Context, group: str, pipe: Path, rule, inputs: dict, field: str) -> list[Metric]:
    """Gross per-call time of a one-module pipeline, the scripted LM alone, and the difference."""
    import pipec
    cfg = ctx.cfg
    lm = scripted(rule)
    prog = pipec.load(pipe, lm=lm, cache=False)
    pred = prog(**inputs)
    request = lm.requests[-1]
    if not pred.ok or getattr(pred, field) != rule(request)[field]:
        raise AssertionError(f"unexpected prediction {pred!r}: the path measured is not the one meant")

    gross = per_call(lambda: prog(**inputs), cfg.calls, cfg.reps, cfg.warmup)
    lm_only = per_call(lambda: lm.complete(request), cfg.calls, cfg.reps, cfg.warmup)
    calls = prog.stats.calls
    expected_calls = 1 + cfg.warmup + cfg.calls * cfg.reps
    if calls != expected_calls:
        raise AssertionError(f"{calls} LM calls, expected {expected_calls}: the path measured is not the one meant")
    g, l = median(gross), median(lm_only)
    how = f"median of {cfg.reps} reps x {cfg.calls} calls"
    net_budget, net_ok = under(ms(g - l), 0.06, "ms")
    return [
        Metric(group, "per call, gross", ms(g), "ms", detail=f"{how}; {spread(gross, 1000)} ms", samples=gross),
        Metric(group, "ScriptedLM.complete alone", ms(l), "ms", detail=f"{how}; {spread(lm_only, 1000)} ms",
               samples=lm_only),
        Metric(group, "overhead per call, net of LM", ms(g - l), "ms", net_budget, net_ok,
               detail="gross minus ScriptedLM.complete"),
    ]


def bench_predict(ctx: Context) -> list[Metric]:
    """Predict: examples/intent.pipe."""
    return overhead(ctx, "Predict (intent.pipe)", INTENT, intent_rule, {"utterance": "Will it rain in Paris tomorrow?"},
                    "intent")


def bench_cot(ctx: Context) -> list[Metric]:
    """ChainOfThought: a one-module QA pipeline."""
    return overhead(ctx, "ChainOfThought (qa.pipe)", ctx.qa_pipe, qa_rule, {"question": "What is 2+2?"}, "answer")


def bench_async(ctx: Context) -> list[Metric]:
    """The asyncio path, taken when an LM is not in-process (every hosted LM): reported, not budgeted.

    A ScriptedLM marked `inline = False` stands in for a hosted LM that answers instantly.
    """
    import asyncio

    import pipec

    class NotInlineLM(pipec.ScriptedLM):
        inline = False

    cfg = ctx.cfg
    lm = NotInlineLM(rule=intent_rule)
    lm.requests = deque(maxlen=1)
    prog = pipec.load(INTENT, lm=lm, cache=False)
    inputs = {"utterance": "Will it rain in Paris tomorrow?"}
    if prog.inline or not prog(**inputs).ok:
        raise AssertionError("the program did not take the asyncio path")
    request = lm.requests[-1]
    calls, reps, warmup = max(cfg.calls // 5, 50), cfg.reps, max(cfg.warmup // 5, 10)
    lm_only = median(per_call(lambda: lm.complete(request), calls, reps, warmup))
    sync = per_call(lambda: prog(**inputs), calls, reps, warmup)

    async def acalls(n: int) -> None:
        for _ in range(n):
            await prog.acall(**inputs)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(acalls(warmup))
        acall = []
        for _ in range(reps):
            gc.collect()
            t0 = time.perf_counter()
            loop.run_until_complete(acalls(calls))
            acall.append((time.perf_counter() - t0) / calls)
    finally:
        loop.close()

    rows = [dict(inputs) for _ in range(calls)]
    prog.run_batch(rows[:warmup], concurrency=8)
    batch = []
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        preds = prog.run_batch(rows, concurrency=8)
        batch.append((time.perf_counter() - t0) / len(rows))
        if not all(p.ok for p in preds):
            raise AssertionError("a batch row failed")
    how = f"median of {reps} reps x {calls} calls, net of ScriptedLM.complete ({ms(lm_only):.4f} ms)"
    group = "asyncio path (LM not inline)"
    return [
        Metric(group, "Program.__call__ overhead per call", ms(median(sync) - lm_only), "ms",
               detail=f"{how}; asyncio.run per call; {spread(sync, 1000)} ms gross", samples=sync),
        Metric(group, "await Program.acall overhead per call", ms(median(acall) - lm_only), "ms",
               detail=f"{how}; one running loop; {spread(acall, 1000)} ms gross", samples=acall),
        Metric(group, "run_batch(concurrency=8) overhead per row", ms(median(batch) - lm_only), "ms",
               detail=f"median of {reps} batches x {calls} rows, net of ScriptedLM.complete; "
                      f"{spread(batch, 1000)} ms gross", samples=batch),
    ]


# ---------------------------------------------------------------------- cache hits
def bench_cache_memory(ctx: Context) -> list[Metric]:
    """A repeated identical call answered from the cache's in-process memory front."""
    import pipec
    cfg = ctx.cfg
    lm = scripted(intent_rule, cacheable=True)
    prog = pipec.load(INTENT, lm=lm, cache=ctx.tmp / "cache-memory")
    inputs = {"utterance": "Will it rain in Paris tomorrow?"}
    prog(**inputs)                          # the one miss: writes memory front and disk
    samples = per_call(lambda: prog(**inputs), cfg.calls, cfg.reps, cfg.warmup)
    hits = prog.stats.cache_hits
    if prog.stats.calls != 1 or hits != cfg.warmup + cfg.calls * cfg.reps:
        raise AssertionError(f"{prog.stats.calls} LM calls and {hits} hits: not the cache-hit path")
    prog.close()
    m = median(samples)
    budget, ok = under(ms(m), 0.03, "ms")
    return [Metric("cache hit", "memory front, per call", ms(m), "ms", budget, ok,
                   detail=f"median of {cfg.reps} reps x {cfg.calls} identical calls; {spread(samples, 1000)} ms",
                   samples=samples)]


def bench_cache_disk(ctx: Context) -> list[Metric]:
    """Calls answered from disk: a new Program on a warm cache dir, so its memory front is empty."""
    import pipec
    cfg = ctx.cfg
    directory = ctx.tmp / "cache-disk"
    lm = scripted(intent_rule, cacheable=True)
    keys = [f"utterance number {i}" for i in range(cfg.disk_keys)]
    warm = pipec.load(INTENT, lm=lm, cache=directory)
    for u in ["opener", *keys]:
        warm(utterance=u)
    warm.close()
    samples = []
    for _ in range(cfg.disk_reps):
        prog = pipec.load(INTENT, lm=lm, cache=directory)
        prog(utterance="opener")            # opens the sqlite store, untimed
        gc.collect()
        t0 = time.perf_counter()
        for u in keys:
            prog(utterance=u)
        samples.append((time.perf_counter() - t0) / len(keys))
        if prog.stats.calls != 0 or prog.stats.cache_hits != len(keys) + 1:
            raise AssertionError(f"{prog.stats.calls} LM calls, {prog.stats.cache_hits} hits: not all disk hits")
        prog.close()
    m = median(samples)
    return [Metric("cache hit", "disk (new Program, empty memory front), per call", ms(m), "ms",
                   detail=f"median of {cfg.disk_reps} fresh Programs x {len(keys)} distinct inputs; "
                          f"{spread(samples, 1000)} ms; includes the pipeline around the hit", samples=samples)]


# ---------------------------------------------------------------------- memory
def worker_memory(calls: int) -> dict:
    """In a fresh interpreter: RSS growth and traced peak over `calls` Predict calls."""
    import resource
    import tracemalloc

    import pipec

    def maxrss_mib() -> float:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024

    lm = scripted(intent_rule)
    prog = pipec.load(INTENT, lm=lm, cache=False)
    inputs = {"utterance": "Will it rain in Paris tomorrow?"}
    for _ in range(200):
        prog(**inputs)
    gc.collect()
    rss_before = maxrss_mib()
    for _ in range(calls):
        prog(**inputs)
    rss_after = maxrss_mib()

    def traced() -> tuple[int, int]:
        gc.collect()
        tracemalloc.start()
        for _ in range(calls):
            prog(**inputs)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return current, peak

    retained, peak = traced()
    lm.requests = []                         # ScriptedLM's default: record every request
    retained_rec, peak_rec = traced()
    return {"rss_before": rss_before, "rss_after": rss_after, "peak": peak, "retained": retained,
            "peak_recording": peak_rec, "retained_recording": retained_rec}


def bench_memory(ctx: Context) -> list[Metric]:
    """Peak memory over N calls (tracemalloc) and max RSS, measured in a fresh interpreter."""
    n = ctx.cfg.memory_calls
    out = run_capture([sys.executable, str(Path(__file__).resolve()), "--worker", "memory", "--calls", str(n)],
                      cwd=ctx.tmp, env=ctx.env, timeout=300)
    d = json.loads(out.strip().splitlines()[-1])
    mib = 1024 * 1024
    per = d["retained"] / n
    leak_budget, leak_ok = under(per, 64, "B/call")
    return [
        Metric("memory", f"traced peak over {n:,} calls", d["peak"] / mib, "MiB",
               detail="tracemalloc, allocations during the calls only; ScriptedLM record bounded"),
        Metric("memory", f"retained after {n:,} calls", per, "B/call", leak_budget, leak_ok,
               detail=f"{d['retained'] / 1024:.1f} KiB in all: a leak check"),
        Metric("memory", "max RSS of the process", d["rss_after"], "MiB",
               detail=f"ru_maxrss; {d['rss_after'] - d['rss_before']:.1f} MiB growth over {n:,} untraced calls "
                      "after import, load and warm-up"),
        Metric("memory", f"traced peak over {n:,} calls, ScriptedLM recording all", d["peak_recording"] / mib, "MiB",
               detail=f"ScriptedLM.requests keeps every request: {d['retained_recording'] / n:.0f} B/call retained "
                      "(the test double's, not pipec's)"),
    ]


# ---------------------------------------------------------------------- profile
def profile(ctx: Context, path: Path, top: int = 25) -> str:
    """cProfile of the per-call paths (Predict, ChainOfThought, memory-front cache hit)."""
    import cProfile
    import io
    import pstats

    import pipec
    n = max(ctx.cfg.calls * 2, 2000)
    cases = []
    lm = scripted(intent_rule)
    p1 = pipec.load(INTENT, lm=lm, cache=False)
    cases.append(("Predict (intent.pipe), cache off", lambda: p1(utterance="Will it rain in Paris tomorrow?")))
    p2 = pipec.load(ctx.qa_pipe, lm=scripted(qa_rule), cache=False)
    cases.append(("ChainOfThought (qa.pipe), cache off", lambda: p2(question="What is 2+2?")))
    p3 = pipec.load(INTENT, lm=scripted(intent_rule, cacheable=True), cache=ctx.tmp / "cache-profile")
    cases.append(("Predict, memory-front cache hit", lambda: p3(utterance="Will it rain in Paris tomorrow?")))
    buf = io.StringIO()
    for title, fn in cases:
        for _ in range(200):
            fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            fn()
        prof.disable()
        buf.write(f"==== {title}: {n} calls (times are inflated by the profiler) ====\n")
        st = pstats.Stats(prof, stream=buf)
        st.strip_dirs().sort_stats("tottime").print_stats(top)
        st.sort_stats("cumulative").print_stats(top)
    p3.close()
    text = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# ---------------------------------------------------------------------- main
BENCHMARKS: dict[str, Callable[[Context], list[Metric]]] = {
    "startup": bench_startup,
    "imports": bench_imports,
    "predict": bench_predict,
    "cot": bench_cot,
    "async": bench_async,
    "cache-memory": bench_cache_memory,
    "cache-disk": bench_cache_disk,
    "memory": bench_memory,
}

NOTES = (
    "Start-up: wall time of fresh subprocesses (one untimed warm-up round that also writes bytecode "
    "to a private PYTHONPYCACHEPREFIX, then rounds interleaved with the bare-python baseline), median "
    "reported.",
    "Per call: one pipeline call with one module node and the in-process ScriptedLM (cache off); "
    "'net' subtracts ScriptedLM.complete timed alone on the same request. GC stays on.",
    "Cache hits never call the LM, so they have no net figure; the disk figure is the whole call "
    "(pipeline, key hashing, sqlite read, JSON decode, reply parsing).",
    "Budgets from the project issue; rows marked info are reported, not budgeted. Never a timed "
    "test in CI: `--quick` only checks that the benchmarks still run.",
)


def main(argv: list[str] | None = None) -> int:
    argv_full = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (< 10 s); exit 0 unless something crashes")
    ap.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                    help=f"run only these benchmarks (repeatable): {', '.join(BENCHMARKS)}")
    ap.add_argument("--json", nargs="?", const="-", metavar="PATH",
                    help="also write the results as JSON to PATH (to stdout, with the table on stderr, if no PATH)")
    ap.add_argument("--out", metavar="PATH", help="Markdown report (default bench/results/budgets.md, "
                                                   "or budgets-quick.md with --quick)")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile the per-call paths; writes bench/results/profile.txt")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a budget is missed (never with --quick)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, default=10_000, help=argparse.SUPPRESS)
    args = ap.parse_args(argv_full[1:])

    if args.worker == "memory":
        print(json.dumps(worker_memory(args.calls)))
        return 0

    cfg = QUICK if args.quick else FULL
    human = sys.stderr if args.json == "-" else sys.stdout
    command = rerun_command(argv_full)
    env = environment()
    title = "pipec budgets" + (" (quick smoke run: numbers are rough)" if cfg.quick else "")
    print(f"# {command}", file=human)
    for k, v in env.items():
        print(f"# {k}: {v}", file=human)
    human.flush()

    metrics: list[Metric] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pipec-bench-") as tmp:
        ctx = Context(cfg, Path(tmp))
        for name, fn in BENCHMARKS.items():
            if args.only and name not in args.only:
                continue
            print(f"... {name}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                metrics += fn(ctx)
            except Exception as err:  # noqa: BLE001 - a crash is reported as a row, and fails the run
                metrics.append(Metric(name, (fn.__doc__ or name).split("\n")[0].rstrip("."),
                                      error=f"{type(err).__name__}: {err}\n" + traceback.format_exc()))
                print(traceback.format_exc(), file=sys.stderr)
            print(f"    {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        prof_text = None
        if args.profile:
            print("... profile", file=sys.stderr, flush=True)
            prof_text = profile(ctx, RESULTS / "profile.txt")
    elapsed = time.perf_counter() - started

    print("", file=human)
    print(render_table(metrics), file=human)
    print(f"\n{summary(metrics)}; {elapsed:.1f} s", file=human)

    out = Path(args.out) if args.out else RESULTS / ("budgets-quick.md" if cfg.quick else "budgets.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(title, command, env, metrics, NOTES))
    print(f"wrote {out}", file=human)
    if prof_text is not None:
        print(f"wrote {RESULTS / 'profile.txt'}", file=human)

    if args.json:
        doc = {"command": command, "environment": env, "quick": cfg.quick, "elapsed_s": elapsed,
               "metrics": [m.to_dict() for m in metrics]}
        text = json.dumps(doc, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"wrote {args.json}", file=human)

    if any(m.error is not None for m in metrics):
        return 2
    if args.strict and not cfg.quick and any(m.ok is False for m in metrics):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
