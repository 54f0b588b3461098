"""The tasks both sides solve, described once (stdlib only: imported by pipec's and DSPy's workers).

Each task is one typed signature: an instruction, one input field, one enum output field, with the
same words on both sides (pipec writes them into a .pipe file, DSPy into a `dspy.Signature`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data"

TASKS = {
    "intent": {
        "instruction": "Classify the intent of the user's utterance.",
        "input": ("utterance", "what the user said"),
        "output": ("intent", "the user's intent"),
        "labels": ["add_to_playlist", "book_restaurant", "get_weather", "play_music"],
        "data": "intent",
    },
    "support": {
        "instruction": "Decide which team should handle the customer's message.",
        "input": ("message", "the customer's message"),
        "output": ("team", "billing: payments, refunds, invoices; technical: app or login problems; "
                           "shipping: deliveries and parcels; other: anything else"),
        "labels": ["billing", "technical", "shipping", "other"],
        "data": "triage",
    },
}


def pipe_source(task: str, kind: str = "Predict", lm_decl: str = "", modules: int = 1, spec: dict | None = None) -> str:
    """A .pipe file for a task: `modules` chained modules (the first reads the input, each next one
    classifies its predecessor's label; 1 is the plain classifier). `spec` replaces TASKS[task]."""
    t = spec or TASKS[task]
    (inp, inp_desc), (out, out_desc) = t["input"], t["output"]
    enum = ", ".join(t["labels"])
    lines = [lm_decl, "", "signature Classify {", f'    "{t["instruction"]}"',
             f'    in  {inp}: str "{inp_desc}"', f'    out {out}: enum({enum}) "{out_desc}"', "}", ""]
    for i in range(modules):
        lines.append(f"module m{i} = {kind}(Classify)")
    lines += ["", f"pipeline {task}({inp}: str) -> ({out}) {{"]
    prev = inp
    for i in range(modules):
        lines.append(f"    s{i} = m{i}({inp}: {prev})")
        prev = f"s{i}.{out}"
    lines += [f"    return {out} = {prev}", "}", ""]
    return "\n".join(lines)


def load_rows(task: str, split: str, n: int | None = None, seed: int = 0) -> list[dict]:
    """The first n rows of a split after a seeded shuffle (the same rows on both sides)."""
    path = DATA / f"{TASKS[task]['data']}_{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    random.Random(f"{task}:{split}:{seed}").shuffle(rows)
    return rows[:n] if n else rows


def scripted_answer(task: str, cot: bool = False) -> dict:
    """What the in-process scripted LMs answer (the first label; a fixed rationale for CoT)."""
    t = TASKS[task]
    out = {t["output"][0]: t["labels"][0]}
    return {"reasoning": "The utterance names what the user wants.", **out} if cot else out


# ---------------------------------------------------------------------- real data (bench/tasks_real/)
REAL_DIR = REPO / "bench" / "tasks_real"
REAL_TASKS = ("disambiguation_qa", "snarks", "sentiment")


def real_task(name: str) -> dict:
    """A task of bench/tasks_real/ in the shape of a TASKS entry, read from its .pipe file's one
    signature (instruction, one str input, one enum output, their descriptions), so that both sides
    send the same words; its rows are bench/tasks_real/data/NAME_{train,dev,test}.jsonl.

    >>> t = real_task("snarks")
    >>> t["input"][0], t["output"][0], t["labels"]
    ('question', 'answer', ['A', 'B'])
    """
    import re
    text = (REAL_DIR / f"{name}.pipe").read_text()
    sig = re.search(r"signature \w+ \{\s*\"([^\"]*)\"\s*in\s+(\w+): str \"([^\"]*)\"\s*"
                    r"out\s+(\w+): enum\(([^)]*)\) \"([^\"]*)\"\s*\}", text)
    if sig is None:
        raise ValueError(f"{name}.pipe: no signature of one str input and one enum output")
    instruction, inp, inp_desc, out, labels, out_desc = sig.groups()
    return {"instruction": instruction, "input": (inp, inp_desc), "output": (out, out_desc),
            "labels": [x.strip() for x in labels.split(",")], "data": name, "real": True}


def real_rows(name: str, split: str, n: int | None = None) -> list[dict]:
    """The first n rows of a real split, in file order: real_data.py writes each split in a seeded
    order that spreads every label evenly, so a prefix keeps the label mix (the same rows whatever
    the optimizer's seed)."""
    path = REAL_DIR / "data" / f"{name}_{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: python bench/real_data.py --suite --out bench/tasks_real/data")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:n] if n else rows
