"""`pipec serve` under load on loopback: latency percentiles and throughput at several concurrencies.

    python bench/serve_load.py                        # ~1 min; writes bench/results/serve_load.md
    python bench/serve_load.py --seconds 3 --levels 1,8   # a quick look
    python bench/serve_load.py --write-benchmarks     # also put the table into BENCHMARKS.md

Three processes on one machine: the fake LM (`bench/openai_server.py`, an OpenAI-compatible server
that answers every request after a fixed `--latency`, 50 ms by default), `python -m pipec serve`
on a one-module pipeline whose `lm` points at it (cache off, `--max-concurrent` above the highest
level, so nothing is refused), and this script, whose asyncio workers (each its own
`httpx.AsyncClient`, keep-alive) send `POST /run` with a distinct input, wait for the reply, and
send the next.

For each concurrency C: C workers for a warm-up second, then `--seconds` of measured requests.
Reported: requests completed, non-200 replies, throughput, and the p50/p99 of request latency as
the client sees it. The `direct` rows send the same number of workers straight to the fake LM (the
request pipec's LM client sends), so `serve p50 - direct p50` is what the server adds on top of
the LM call: HTTP parsing and routing, input checks, the pipeline run, JSON and redaction, the
access log line. All three processes share the machine's cores with whatever else runs there (the
load average is in the output), so absolute numbers move between runs; compare rows of one run.

Not a timed test: nothing here fails on a slow machine.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import REPO, environment, rerun_command, splice_block  # noqa: E402

BEGIN, END = "<!-- serve_load.py: begin -->", "<!-- serve_load.py: end -->"
OUT = REPO / "bench" / "results" / "serve_load.md"
KEEP = ("`bench/run_all.py` keeps this section when it rewrites BENCHMARKS.md (the markers around it); the "
        "command below measures it again.")

PIPE = """\
lm fake = "openai/bench-model" (api_base: "{base}", num_retries: 0, timeout: 60)

signature Classify {{
    "Classify the intent of the user's utterance."
    in  utterance: str "what the user said"
    out intent: enum(add_to_playlist, book_restaurant, get_weather, play_music)
}}

module classify = Predict(Classify)

pipeline intent(utterance: str) -> (intent) {{
    c = classify(utterance: utterance)
    return intent = c.intent
}}
"""
UTTERANCES = ("book a table for two at {i}", "will it rain on day {i}", "play track {i}", "add song {i} to my list")


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of the values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile(list(map(float, range(1, 101))), 99)
    (2.0, 99.0)
    """
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))          # ceil without floats drifting
    return ordered[int(rank) - 1]


def start(argv: list[str], ready: str, on_stderr: bool = False, env: dict | None = None) -> tuple[subprocess.Popen, re.Match]:
    """Start a process; wait for a line of its stdout (or stderr) that matches `ready`."""
    pipe, other = subprocess.PIPE, subprocess.DEVNULL
    # stdin stays open: bench/openai_server.py stops when it closes (so it never outlives this script).
    proc = subprocess.Popen(argv, stdin=pipe, stdout=other if on_stderr else pipe, stderr=pipe if on_stderr else other,
                            text=True, cwd=REPO, env={**os.environ, **(env or {})})
    stream = proc.stderr if on_stderr else proc.stdout
    seen = []
    for line in stream:
        seen.append(line)
        found = re.search(ready, line)
        if found:
            return proc, found
    proc.kill()
    raise RuntimeError(f"{argv[:4]} exited before it was ready:\n{''.join(seen)[-2000:]}")


async def drive(url: str, body, concurrency: int, seconds: float, warmup: float) -> dict:
    """`concurrency` clients (each its own `httpx.AsyncClient`, one keep-alive connection) sending
    requests back to back; latencies of those sent after the warm-up. Separate clients, not one
    shared pool: they are independent callers, and one pool of many connections costs the client
    CPU that would show up as server latency."""
    import httpx
    latencies: list[float] = []
    errors = 0
    counter = 0
    completed = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop = measure_from + seconds

    async def worker() -> None:
        nonlocal errors, counter, completed
        async with httpx.AsyncClient(timeout=120) as client:
            while True:
                sent = time.perf_counter()
                if sent >= stop:
                    return
                counter += 1
                reply = await client.post(url, json=body(counter))
                done = time.perf_counter()
                completed += 1
                if sent >= measure_from:
                    latencies.append(done - sent)
                    if reply.status_code != 200:
                        errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - measure_from
    return {"requests": len(latencies), "completed": completed, "errors": errors, "rps": len(latencies) / wall,
            "p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.05, help="the fake LM's latency per request, seconds (default 0.05)")
    ap.add_argument("--levels", default="1,8,32,64", help="concurrencies, comma-separated (default 1,8,32,64)")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level (default 8)")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each level (default 1)")
    ap.add_argument("--stream", action="store_true", help="also measure POST /run?stream=1 at each level")
    ap.add_argument("--write-benchmarks", action="store_true",
                    help="also put the result into BENCHMARKS.md (its section between the serve_load.py markers)")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    with open("/proc/loadavg") as fh:
        load_start = " ".join(fh.read().split()[:3])
    folder = Path(tempfile.mkdtemp(prefix="pipec-serve-load-"))
    lm, found = start([sys.executable, str(HERE / "openai_server.py"), "--latency", str(a.latency),
                       "--fields", "intent"], r"PORT (\d+)")
    base = f"http://127.0.0.1:{found.group(1)}/v1"
    pipe = folder / "intent.pipe"
    pipe.write_text(PIPE.format(base=base), encoding="utf-8")
    log = open(folder / "serve.log", "w")
    server, found = start([sys.executable, "-m", "pipec", "serve", str(pipe), "--port", "0", "--no-cache",
                           "--max-concurrent", str(max(levels) * 4)], r" on (http://127\.0\.0\.1:\d+)",
                          on_stderr=True, env={"NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    url = found.group(1)
    # The server's log (one access line per request) must keep flowing, or it would block on a full pipe.
    drain = threading.Thread(target=lambda: [log.write(line) for line in server.stderr], daemon=True)
    drain.start()
    rows = []
    try:
        def utterance(i: int) -> dict:
            return {"utterance": UTTERANCES[i % len(UTTERANCES)].format(i=i)}

        def chat(i: int) -> dict:
            return {"model": "bench-model", "messages": [{"role": "user", "content": f"utterance: {utterance(i)['utterance']}"}]}

        # The server's first requests import its LM client and open connections: not part of any level.
        asyncio.run(drive(url + "/run", utterance, 4, 2.0, 0.0))
        for c in levels:
            modes = [("direct to the fake LM", base + "/chat/completions", chat),
                     ("pipec serve POST /run", url + "/run", utterance)]
            if a.stream:
                modes.append(("pipec serve POST /run?stream=1", url + "/run?stream=1", utterance))
            for mode, target, body in modes:
                cpu = cpu_seconds(server.pid)
                result = asyncio.run(drive(target, body, c, a.seconds, a.warmup))
                # Server CPU per request: the pipec serve process's user+system time over every request
                # of the level (warm-up included). Unlike latency, other work on the machine barely moves it.
                result["cpu_ms"] = (cpu_seconds(server.pid) - cpu) * 1000 / max(1, result["completed"])
                rows.append({"mode": mode, "concurrency": c, **result})
                print(f"{mode:32s} c={c:<3d} {result['requests']:6d} req  {result['errors']} errors  "
                      f"{result['rps']:8.1f} req/s  p50 {result['p50']:7.1f} ms  p99 {result['p99']:7.1f} ms  "
                      f"server CPU {result['cpu_ms']:.2f} ms/req", file=sys.stderr, flush=True)
    finally:
        for proc in (server, lm):
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        drain.join(10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
    with open("/proc/loadavg") as fh:
        load_end = " ".join(fh.read().split()[:3])
    text = render(rows, a, rerun_command(sys.argv), {**environment(), "load average at start": load_start,
                                                     "load average at end": load_end})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(f"# pipec serve on loopback\n\n{text}", encoding="utf-8")
    print(text)
    print(f"wrote {OUT.relative_to(REPO)}", file=sys.stderr)
    if a.write_benchmarks:
        target = REPO / "BENCHMARKS.md"
        block = f"{BEGIN}\n## pipec serve on loopback\n\n{KEEP}\n\n{text}{END}"
        target.write_text(splice_block(target.read_text(encoding="utf-8"), block, BEGIN, END), encoding="utf-8")
        print(f"wrote its section of {target.relative_to(REPO)}", file=sys.stderr)
    return 1 if any(r["errors"] for r in rows) else 0


def busy_note(env: dict) -> list[str]:
    """A warning line when other work kept the machine's cores busy during the run.

    >>> busy_note({"load average at start": "0.0 0.1 0.2"}), busy_note({"load average at start": "1000 9 9"})[0][:41]
    ([], '- the machine was busy: load average 1000')
    """
    load = max(float(env.get(k, "0").split()[0]) for k in ("load average at start", "load average at end") if k in env)
    if load <= (os.cpu_count() or 1):
        return []
    return [f"- the machine was busy: load average {load:g} on {os.cpu_count()} CPUs, other work included; where "
            "the `direct` rows slow down too, a row measures the contention for the cores (the client, the fake LM "
            "and the server share them) more than the server"]


def render(rows: list[dict], a, command: str, env: dict) -> str:
    direct = {r["concurrency"]: r for r in rows if r["mode"].startswith("direct")}
    out = ["Generated by `bench/serve_load.py`; rerun at the repository's root:", "", "```", command, "```", ""]
    out += [f"- {k}: {v}" for k, v in env.items()]
    out += [f"- fake LM: `bench/openai_server.py --latency {a.latency}` (every reply after {a.latency * 1000:g} ms); "
            "pipeline: one Predict module (one LM call per request), `pipec serve --no-cache`, access log on",
            f"- each level: {a.warmup:g} s warm-up, then {a.seconds:g} s measured; clients: this script's asyncio "
            "workers, each its own `httpx.AsyncClient` (one keep-alive connection), sending its next request "
            "when the last returns; latency is the client's, send to full reply",
            "- server CPU: the `pipec serve` process's user + system time per request over the level (in the "
            "`direct` rows it has nothing to do); it bounds throughput at about 1000 / (CPU ms) requests a second "
            "per core, whatever the latency",
            *busy_note(env),
            "", "| mode | concurrency | requests | non-200 | throughput (req/s) | p50 (ms) | p99 (ms) | p50 over direct (ms) "
            "| server CPU (ms/request) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        over = "" if r["mode"].startswith("direct") else f"{r['p50'] - direct[r['concurrency']]['p50']:+.1f}"
        cpu = "" if r["mode"].startswith("direct") else f"{r['cpu_ms']:.2f}"
        out.append(f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | "
                   f"{r['p50']:.1f} | {r['p99']:.1f} | {over} | {cpu} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
