"""Shared measuring and reporting for pipec's benchmarks (budgets now, the DSPy side-by-side later).

A benchmark is a function returning `Metric` rows. This module times things (in-process per-call
loops, fresh subprocesses), and renders rows as a plain table, Markdown and JSON. It imports
nothing from pipec, so a harness comparing pipec with another framework can reuse it as is.
"""
from __future__ import annotations

import gc
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- results
@dataclass
class Metric:
    """One row of a report: what was measured, against which budget, and whether it passed.

    `value` is numeric (in `unit`) or a list (e.g. module names); `ok` is None for rows that are
    reported but not budgeted ("info"), and `error` is set when the benchmark itself crashed.
    """

    group: str
    name: str
    value: Any = None
    unit: str = ""
    budget: str = "-"
    ok: bool | None = None
    detail: str = ""
    error: str | None = None
    samples: list[float] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.error is not None:
            return "ERROR"
        return {True: "pass", False: "FAIL", None: "info"}[self.ok]

    @property
    def measured(self) -> str:
        if self.error is not None:
            return "-"
        v = self.value
        if isinstance(v, (list, tuple)):
            return ", ".join(map(str, v)) if v else "none"
        if isinstance(v, float):
            return f"{fmt_num(v)} {self.unit}".strip()
        return f"{v} {self.unit}".strip()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status
        return d


def fmt_num(v: float) -> str:
    """Four significant digits, without scientific notation for the ranges benchmarks print.

    >>> fmt_num(0.026161), fmt_num(12.3456), fmt_num(1234.5)
    ('0.02616', '12.35', '1234')
    """
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    digits = 3 - int(f"{a:e}".split("e")[1])
    return f"{v:.{max(0, digits)}f}"


def under(value: float, limit: float, unit: str) -> tuple[str, bool]:
    """A '< limit' budget text and whether value meets it."""
    return f"< {limit:g} {unit}".strip(), value < limit


def spread(samples: Sequence[float], scale: float = 1.0) -> str:
    """'min a, max b' over samples (scaled), for the detail column."""
    if len(samples) < 2:
        return ""
    return f"min {fmt_num(min(samples) * scale)}, max {fmt_num(max(samples) * scale)}"


# ---------------------------------------------------------------------- timing
def traced_peak(fn: Callable[[], Any], times: int = 1) -> int:
    """Peak bytes tracemalloc sees while `fn` runs `times` times (garbage collected first).

    >>> traced_peak(lambda: bytearray(1_000_000)) >= 1_000_000
    True
    """
    import tracemalloc
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(times):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def per_call(fn: Callable[[], Any], calls: int, reps: int, warmup: int = 0,
             between: Callable[[], Any] | None = None) -> list[float]:
    """Seconds per call of `fn`, one sample per repetition of `calls` back-to-back calls.

    GC stays enabled (real callers pay for it) but a collection runs before each repetition so one
    repetition does not pay for the garbage of the previous. `between` runs untimed before each
    repetition (e.g. to clear a recording list).
    """
    for _ in range(warmup):
        fn()
    out = []
    rng = range(calls)
    for _ in range(reps):
        if between is not None:
            between()
        gc.collect()
        t0 = time.perf_counter()
        for _ in rng:
            fn()
        out.append((time.perf_counter() - t0) / calls)
    return out


def subprocess_walls(commands: dict[str, Sequence[str]], runs: int, warmup: int = 1,
                     cwd: str | Path | None = None, env: dict[str, str] | None = None,
                     envs: dict[str, dict[str, str]] | None = None) -> dict[str, list[float]]:
    """Wall seconds of `runs` fresh runs of each command, interleaved round-robin so that machine
    noise hits every command alike; `warmup` untimed rounds first warm the OS caches (and the
    bytecode cache). `envs` gives some commands an environment of their own instead of `env`.

    Raises CalledProcessError (with its stderr) if any run fails, so a broken command becomes an
    error row, never a fast number.
    """
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(warmup + runs):
        for name, argv in commands.items():
            t0 = time.perf_counter()
            proc = subprocess.run(list(argv), cwd=cwd, env=(envs or {}).get(name, env), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dt = time.perf_counter() - t0
            if proc.returncode != 0:
                raise subprocess.CalledProcessError(proc.returncode, list(argv), stderr=proc.stderr)
            if i >= warmup:
                samples[name].append(dt)
    return samples


def run_capture(argv: Sequence[str], cwd: str | Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 120) -> str:
    """Run argv; return its stdout, raise RuntimeError with the end of its stderr on failure."""
    proc = subprocess.run(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed (exit {proc.returncode}): {shlex.join(argv)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def run_python(code: str, *args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
               timeout: float = 120) -> str:
    """Run `python -c code args...` in a fresh interpreter; return its stdout."""
    return run_capture([sys.executable, "-c", code, *args], cwd=cwd, env=env, timeout=timeout)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


# ---------------------------------------------------------------------- context
def environment() -> dict[str, str]:
    """What the numbers depend on: interpreter, machine, and the commit measured."""
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "commit": (commit + (" + uncommitted changes" if dirty else "")) or "unknown",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def rerun_command(argv: Sequence[str]) -> str:
    """The command that reproduces this run, to paste at the repository's root: no path of the
    machine it ran on (the interpreter is the checkout's virtualenv, as the README installs it).

    >>> rerun_command([str(REPO / "bench" / "run_all.py"), "--only", "compile"])
    '.venv/bin/python bench/run_all.py --only compile'
    """
    script = Path(argv[0]).resolve()
    try:
        script_s = str(script.relative_to(REPO))
    except ValueError:
        script_s = script.name
    return shlex.join([".venv/bin/python", script_s, *argv[1:]])


# ---------------------------------------------------------------------- rendering
COLUMNS = ("metric", "measured", "budget", "status", "detail")


def _rows(metrics: Sequence[Metric]) -> list[tuple[str, ...]]:
    rows = []
    for m in metrics:
        detail = m.detail if m.error is None else f"crashed: {m.error.splitlines()[-1] if m.error else ''}"
        rows.append((f"{m.group}: {m.name}", m.measured, m.budget, m.status, detail))
    return rows


def render_table(metrics: Sequence[Metric]) -> str:
    rows = [COLUMNS, *_rows(metrics)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        if j == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(title: str, command: str, env: dict[str, str], metrics: Sequence[Metric],
                    notes: Sequence[str] = ()) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")
    out = [f"# {title}", "", "Rerun:", "", "```", command, "```", ""]
    out += [f"- {k}: {v}" for k, v in env.items()]
    out += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in _rows(metrics)]
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


# A section of BENCHMARKS.md that another script writes (bench/compile_real.py): run_all.py, which
# rewrites the file, carries it over.
REAL_DATA_BEGIN, REAL_DATA_END = "<!-- compile_real.py: begin -->", "<!-- compile_real.py: end -->"


def splice_block(doc: str, block: str, begin: str = REAL_DATA_BEGIN, end: str = REAL_DATA_END) -> str:
    """`doc` with `block` (which starts with `begin` and ends with `end`) in place of its earlier
    copy, else before the doc's final "## Notes", else at the end.

    >>> splice_block("# B\\n\\n## Notes\\n\\n- n\\n", "<a>\\nX\\n</a>", "<a>", "</a>")
    '# B\\n\\n<a>\\nX\\n</a>\\n\\n## Notes\\n\\n- n\\n'
    >>> splice_block("a\\n<a>\\nold\\n</a>\\nb\\n", "<a>\\nnew\\n</a>", "<a>", "</a>")
    'a\\n<a>\\nnew\\n</a>\\nb\\n'
    """
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    if "\n## Notes\n" in doc:
        head, tail = doc.rsplit("\n## Notes\n", 1)
        return head + "\n" + block + "\n\n## Notes\n" + tail
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def kept_block(old_doc: str, begin: str = REAL_DATA_BEGIN, end: str = REAL_DATA_END) -> str | None:
    """The block from `begin` to `end` in a document, if it has one.

    >>> kept_block("x <a>y</a> z", "<a>", "</a>"), kept_block("x", "<a>", "</a>")
    ('<a>y</a>', None)
    """
    if begin not in old_doc or end not in old_doc.split(begin, 1)[1]:
        return None
    return begin + old_doc.split(begin, 1)[1].split(end, 1)[0] + end


def summary(metrics: Sequence[Metric]) -> str:
    counts = {s: sum(m.status == s for m in metrics) for s in ("pass", "FAIL", "info", "ERROR")}
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "no metrics"
