"""How fast `pipec check` reads big programs, and whether its cost stays linear in their size.

    python bench/bench_check.py              # full run (a few minutes), writes bench/results/check.md
    python bench/bench_check.py --quick      # smoke run (seconds): exits 0 unless something crashes
    python bench/bench_check.py --only unknown-names --reps 5 --json out.json

Each shape of program is generated at several sizes, written to a temp dir (every file under the
1 MiB cap on .pipe sources; bigger programs are split into imports), and checked the way
`pipec check` checks it: `pipec.dsl.load` (parse, imports, checks) plus `render_all` of the
diagnostics (the capped text) and `json.dumps` of all of them (`--format json`). Every size runs
in a fresh interpreter (parser tables built before timing), `--reps` times; the figure is the
median, the rate is lines per second. A `linear` row per shape compares the time per line at the
largest size with the smallest: 1.0 is linear, 4 would be quadratic over a 4x size step.

Shapes: `declarations` (signatures, records, modules, pipelines, tests in one file), `imports` (up
to four files of about 1 MiB each), `unknown-names` (each line misspells a declared name, with a
did-you-mean for each), `syntax-errors` (every other declaration broken), `deep-nesting` (a list
nested N deep). The full run adds `over-cap`, one file of 2.3 MB passed in memory (the size the
report of issue 13 measured: over the cap, so not readable from disk), and `cli`, `pipec check`
end to end in a subprocess.

The children import whichever pipec the interpreter finds, so `PYTHONPATH=<an older checkout's
package> python bench/bench_check.py` measures that one with the same programs. Exit status: 0, or
2 if a benchmark crashed; with --strict, 1 if a shape is not linear (time per line more than 2x).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (REPO, Metric, environment, fmt_num, median, render_markdown, render_table,  # noqa: E402
                     rerun_command, summary)

RESULTS = REPO / "bench" / "results"
CAP = 1 << 20          # dsl/files.py MAX_SOURCE_BYTES: every generated file stays under it


# ---------------------------------------------------------------------- programs
def declarations(n: int, prefix: str = "") -> str:
    """About `n` declarations in groups of five (signature, record, module, pipeline, test), laid out
    as people write them. 47 bytes a declaration, 1.9 lines."""
    out = [f'lm {prefix}local = "local/smollm2" (temperature: 0)\n\n']
    for i in range(n // 5):
        k = f"{prefix}{i}"
        out.append(
            f'signature S{k} {{\n    "Answer question {i}."\n    in  question: str "the question"\n'
            f'    out answer: str "a short answer"\n}}\n'
            f'record R{k} {{ title: str  score: float?  tags: list[str] }}\n'
            f'module m{k} = ChainOfThought(S{k}, lm: {prefix}local)\n'
            f'pipeline p{k}(question: str) -> (answer) {{\n    a = m{k}(question: question)\n'
            f'    return answer = a.answer\n}}\n'
            f'test "t{k}" {{ p{k}(question: "x") -> answer == "y" }}\n\n')
    return "".join(out)


def decl_count(nbytes: float, prefix: str = "") -> int:
    """How many declarations of `declarations(n, prefix)` fit in `nbytes`."""
    return max(5, int(nbytes / (len(declarations(5000, prefix)) / 5000)) // 5 * 5)


def shape_declarations(size: int) -> dict[str, str]:
    return {"main.pipe": declarations(size)}


def shape_imports(files: int) -> dict[str, str]:
    """`files` files of about 1 MiB each: the main file imports the others."""
    imports = "".join(f'import "part{j}.pipe"\n' for j in range(1, files))
    out = {"main.pipe": imports + declarations(decl_count(CAP * 0.97))}
    for j in range(1, files):
        out[f"part{j}.pipe"] = declarations(decl_count(CAP * 0.97, f"f{j}_"), prefix=f"f{j}_")
    return out


def shape_unknown_names(n: int) -> dict[str, str]:
    """`n` lines, each misspelling one name among `n` declared modules and `n` assigned values (half
    modules, half values), with a did-you-mean for each; pipelines of 5,000 steps, imported."""
    files = {}
    per_file = 16_000
    for j, lo in enumerate(range(0, n, per_file)):
        files[f"modules{j}.pipe"] = "".join(f"module step_{i} = Predict(S)\n" for i in range(lo, min(n, lo + per_file)))
    steps = []
    for lo in range(0, n, 5_000):
        body = []
        for i in range(lo, min(n, lo + 5_000)):
            if i % 2 == 0:
                body.append(f"    answer_{i} = stpe_{i}(q: q)\n")                       # unknown module
            else:
                body.append(f"    answer_{i} = step_{i}(q: answr_{i - 1}.a)\n")          # unknown name
        steps.append(f"pipeline p{lo}(q: str) -> (a) {{\n{''.join(body)}    return a = q\n}}\n")
    for j in range(0, len(steps), 4):
        files[f"steps{j // 4}.pipe"] = "".join(steps[j:j + 4])
    main = 'signature S { in q: str out a: str }\n' + "".join(f'import "{f}"\n' for f in files)
    return {"main.pipe": main, **files}


def shape_syntax_errors(n: int) -> dict[str, str]:
    """`n` broken declarations, each between two that parse."""
    out = []
    for i in range(n):
        out.append(f"signature S{i} {{ in q: str out a: str }}\n"
                   f"signature B{i} {{ in q str out a: str }}\n")      # missing ':'
    return {"main.pipe": "".join(out) + "signature Last { in q: str out a: str }\n"}


def shape_deep_nesting(depth: int) -> dict[str, str]:
    return {"main.pipe": "pipeline p(x: str) -> (a) {\n    y = " + "[" * depth + "x" + "]" * depth +
            "\n    return a = y\n}\n"}


SHAPES = {
    "declarations": (shape_declarations, "declarations"),
    "imports": (shape_imports, "files of ~1 MiB"),
    "unknown-names": (shape_unknown_names, "unknown names"),
    "syntax-errors": (shape_syntax_errors, "broken declarations"),
    "deep-nesting": (shape_deep_nesting, "deep list"),
}

FULL_SIZES = {
    "declarations": [decl_count(64 << 10), decl_count(256 << 10), decl_count(CAP * 0.97)],
    "imports": [1, 2, 4],
    "unknown-names": [1_000, 10_000, 30_000],
    "syntax-errors": [1_000, 4_000, 12_000],
    "deep-nesting": [10_000, 100_000, 400_000],
}
QUICK_SIZES = {
    "declarations": [200, 800],
    "imports": [],
    "unknown-names": [200, 800],
    "syntax-errors": [100, 400],
    "deep-nesting": [1_000, 10_000],
}


# ---------------------------------------------------------------------- the child: one program, timed
CHILD = r"""
import gc, json, resource, sys, time
from pathlib import Path
from pipec.registry import catalogue
from pipec.dsl import load, render_all
from pipec.dsl.parser import parse
main, reps, in_memory = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
cat = catalogue()
parse('signature S { in q: str out a: str }', "warm.pipe")          # lark's tables, outside the timing
text = main.read_text(encoding="utf-8") if in_memory else None

def render(diags, sources):
    try:
        return render_all(diags, sources, limit=50)
    except TypeError:                                             # a pipec from before the cap
        return render_all(diags, sources)

samples, split = [], []
for _ in range(reps):
    gc.collect()
    t0 = time.perf_counter()
    loaded = load(main, cat, source=text)
    t1 = time.perf_counter()
    shown = render(loaded.diagnostics, loaded.sources)
    dumped = json.dumps([{"file": d.span.file, "line": d.span.line, "col": d.span.col, "severity": d.severity,
                          "code": d.code, "message": d.message, "hint": d.hint} for d in loaded.diagnostics])
    t2 = time.perf_counter()
    samples.append(t2 - t0)
    split.append((t1 - t0, t2 - t1))
    sources, diags = loaded.sources, loaded.diagnostics
    del loaded
errors = sum(d.severity == "error" for d in diags)
print(json.dumps({"samples": samples, "split": split, "lines": sum(s.count("\n") for s in sources.values()),
                  "bytes": sum(len(s.encode()) for s in sources.values()), "files": len(sources),
                  "errors": errors, "warnings": len(diags) - errors, "shown_chars": len(shown),
                  "json_chars": len(dumped), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "first": [d.message for d in sorted(diags, key=lambda d: (d.span.file, d.span.line))[:1]]}))
"""


def run_child(files: dict[str, str], tmp: Path, reps: int, timeout: float, in_memory: bool = False) -> dict:
    """Write `files` to a fresh folder and time checking its main.pipe in a fresh interpreter."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
        if not in_memory:
            assert len(text.encode()) <= CAP, f"{name} is over the 1 MiB cap: {len(text.encode())} bytes"
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(folder / "main.pipe"), str(reps), "1" if in_memory else "0"],
                              capture_output=True, text=True, timeout=timeout, cwd=folder)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the check crashed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(shape: str, size: int, tmp: Path, reps: int, timeout: float) -> tuple[Metric, dict]:
    make, unit = SHAPES[shape]
    r = run_child(make(size), tmp, reps, timeout)
    return row(shape, f"{size:,} {unit}", r, timeout), r


def row(group: str, name: str, r: dict, timeout: float) -> Metric:
    if "timeout" in r:
        return Metric(group, name, None, "", detail=f"did not finish in {timeout:g} s", ok=False,
                      error=f"timed out after {timeout:g} s")
    t = median(r["samples"])
    parse_check = median([a for a, _ in r["split"]])
    detail = (f"median {fmt_num(t)} s of {len(r['samples'])} (load {fmt_num(parse_check)} s, render+json "
              f"{fmt_num(t - parse_check)} s); {r['lines']:,} lines, {r['bytes'] / 1e6:.2f} MB in {r['files']} "
              f"file{'s' * (r['files'] != 1)}; {r['errors']:,} errors, {r['warnings']:,} warnings; "
              f"max RSS {r['rss_mb']:.0f} MB")
    if group == "deep-nesting":          # a few lines, however deep: the time itself says it
        return Metric(group, name, t, "s", detail=detail, samples=r["samples"])
    return Metric(group, name, round(r["lines"] / t), "lines/s", detail=detail, samples=r["samples"])


def linearity(shape: str, results: list[dict]) -> Metric | None:
    """Time per byte at the largest size over the smallest (1.0: linear; bytes, not lines, since a
    deep list is one line however deep)."""
    done = [r for r in results if "samples" in r]
    if len(done) < 2 or len(done) < len(results):
        return None
    small, big = done[0], done[-1]
    per_small = median(small["samples"]) / small["bytes"]
    per_big = median(big["samples"]) / big["bytes"]
    ratio = per_big / per_small
    growth = big["bytes"] / small["bytes"]
    return Metric(shape, "linear", round(ratio, 2), "x", "< 2", ratio < 2,
                  detail=f"time per byte at {big['bytes'] / 1e6:.2f} MB over {small['bytes'] / 1e6:.3f} MB "
                         f"({growth:.0f}x the size); a quadratic cost would show about {growth:.0f}")


def cli_row(tmp: Path, n: int, reps: int, timeout: float) -> Metric:
    """`pipec check` end to end: interpreter start-up, tool checks, printing."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    (folder / "main.pipe").write_text(declarations(n), encoding="utf-8")
    script = Path(sys.executable).with_name("pipec")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "pipec"]
    walls, lines = [], declarations(n).count("\n")
    for _ in range(reps):
        t0 = time.perf_counter()
        proc = subprocess.run([*argv, "check", "main.pipe"], cwd=folder, capture_output=True, text=True, timeout=timeout)
        walls.append(time.perf_counter() - t0)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"pipec check exited {proc.returncode}: {proc.stderr[-2000:]}")
    shutil.rmtree(folder, ignore_errors=True)
    t = median(walls)
    return Metric("cli", f"pipec check, {n:,} declarations", round(lines / t), "lines/s",
                  detail=f"median {fmt_num(t)} s wall of {reps}, start-up included; {lines:,} lines", samples=walls)


# ---------------------------------------------------------------------- main
NOTES = [
    "load = parse + imports + checks; render+json = the capped text `pipec check` prints and the JSON of "
    "every diagnostic (`--format json`).",
    "Rates are medians over repetitions in a fresh interpreter; the machine may be shared, so compare the "
    "`linear` rows (ratios within one run) rather than absolute rates across runs.",
]


def main(argv: list[str] | None = None) -> int:
    argv_full = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (seconds); exit 0 unless something crashes")
    ap.add_argument("--only", action="append", choices=[*SHAPES, "over-cap", "cli"], metavar="SHAPE",
                    help=f"run only these shapes (repeatable): {', '.join([*SHAPES, 'over-cap', 'cli'])}")
    ap.add_argument("--reps", type=int, help="repetitions per size (default 3, 1 with --quick)")
    ap.add_argument("--timeout", type=float, help="seconds before a size is given up (default 600, 60 with --quick)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument("--out", metavar="PATH", help="Markdown report (default bench/results/check.md, "
                                                   "or check-quick.md with --quick)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a shape is not linear (never with --quick)")
    args = ap.parse_args(argv_full[1:])
    reps = args.reps or (1 if args.quick else 3)
    timeout = args.timeout or (60 if args.quick else 600)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES

    command = rerun_command(argv_full)
    env = environment()
    print(f"# {command}")
    for k, v in env.items():
        print(f"# {k}: {v}")
    sys.stdout.flush()

    metrics: list[Metric] = []
    raw: dict[str, list[dict]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pipec-bench-check-") as tmp_s:
        tmp = Path(tmp_s)
        jobs = [(shape, sizes[shape]) for shape in SHAPES if not args.only or shape in args.only]
        for shape, shape_sizes in jobs:
            results = []
            for size in shape_sizes:
                print(f"... {shape} {size:,}", file=sys.stderr, flush=True)
                try:
                    m, r = measure(shape, size, tmp, reps, timeout)
                except Exception as err:  # noqa: BLE001 - a crash is a row, and fails the run
                    m, r = Metric(shape, f"{size:,}", error=f"{type(err).__name__}: {err}"), {"crash": str(err)}
                    print(traceback.format_exc(), file=sys.stderr)
                metrics.append(m)
                results.append(r)
                print(f"    {m.measured} {m.detail}", file=sys.stderr, flush=True)
            raw[shape] = results
            lin = linearity(shape, results)
            if lin is not None:
                metrics.append(lin)
        if not args.quick and (not args.only or "over-cap" in args.only):
            print("... over-cap", file=sys.stderr, flush=True)
            n = decl_count(2.3e6)
            r = run_child({"main.pipe": declarations(n)}, tmp, reps, timeout, in_memory=True)
            metrics.append(row("over-cap", f"{n:,} declarations, 2.3 MB in one file, in memory", r, timeout))
            raw["over-cap"] = [r]
        if not args.quick and (not args.only or "cli" in args.only):
            print("... cli", file=sys.stderr, flush=True)
            try:
                metrics.append(cli_row(tmp, FULL_SIZES["declarations"][-1], reps, timeout))
            except Exception as err:  # noqa: BLE001
                metrics.append(Metric("cli", "pipec check", error=f"{type(err).__name__}: {err}"))
    elapsed = time.perf_counter() - started

    print()
    print(render_table(metrics))
    print(f"\n{summary(metrics)}; {elapsed:.1f} s")
    out = Path(args.out) if args.out else RESULTS / ("check-quick.md" if args.quick else "check.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    title = "pipec check on big programs" + (" (quick smoke run: numbers are rough)" if args.quick else "")
    out.write_text(render_markdown(title, command, env, metrics, NOTES), encoding="utf-8")
    print(f"wrote {os.path.relpath(out, Path.cwd()) if out.is_absolute() else out}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "environment": env, "raw": raw,
                                               "metrics": [m.to_dict() for m in metrics]}, indent=2), encoding="utf-8")
    if any(m.error is not None and "timed out" not in m.error for m in metrics):
        return 2
    if args.strict and not args.quick and any(m.ok is False for m in metrics):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
