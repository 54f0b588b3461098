"""What a `pipec report` page shows, as plain data: the eval rows, their summary, and each module's
prompt before and after compiling. Nothing here writes HTML but `esc`, the escaping every part of
the page shares (with `clip` and `as_text`, the text of any value).

Only the standard library is imported at module level (see `pipec.html_report`).
"""
from __future__ import annotations

import difflib
import html
import json
import math
from pathlib import Path
from typing import Any


class ReportError(Exception):
    """Input a report cannot be made from (an unreadable eval JSONL, say); the message names the file."""


# ============================================================================ text of values
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def as_text(v: Any) -> str:
    """A value as one line of text: a string as it is, anything else as JSON."""
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ============================================================================ eval rows
ROW_KEYS = ("where", "inputs", "expected", "outputs", "score", "passed", "feedback", "error", "raw")


def read_eval_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a `pipec eval --output` JSONL file; raise ReportError naming every bad line."""
    from .jsonl import read_objects
    path = Path(path)
    rows, problems = [], []
    try:
        objects = list(read_objects(path, problems))
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    for lineno, value in objects:
        if not ({"inputs", "score"} <= value.keys()):
            problems.append(f"{path}:{lineno}: not an eval row (expected the keys of `pipec eval --output`: "
                            f"{', '.join(ROW_KEYS)})")
            continue
        value.setdefault("where", f"{path.name}:{lineno}")
        rows.append(_row(value))
    if problems:
        prefix = len(str(path)) + 1
        problems.sort(key=lambda m: int(m[prefix:].split(":", 1)[0]) if m[prefix:].split(":", 1)[0].isdigit() else 0)
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ReportError("\n".join(shown))
    return rows


def _row(r: dict[str, Any]) -> dict[str, Any]:
    """An eval row with every key present and JSON-ready values."""
    score = r.get("score")
    try:
        score = float(score) if score is not None else 0.0
    except (TypeError, ValueError):
        score = 0.0
    passed = r.get("passed")
    feedback = r.get("feedback")        # absent from rows an older pipec wrote
    return {"where": str(r.get("where") or ""), "inputs": r.get("inputs") or {}, "expected": r.get("expected") or {},
            "outputs": r.get("outputs"), "score": score if math.isfinite(score) else 0.0,
            "passed": bool(passed) if passed is not None else score >= 1.0,
            "feedback": as_text(feedback) if feedback not in (None, "") else None,
            "error": r.get("error"), "raw": r.get("raw") or ""}


def rows_of(rows) -> list[dict[str, Any]] | None:
    """Rows given as an EvalResult, a list of RowResults, or a list of dicts."""
    if rows is None:
        return None
    rows = getattr(rows, "rows", rows)
    out = []
    for r in rows:
        out.append(_row(r.to_dict() if hasattr(r, "to_dict") else dict(r)))
    return out


def eval_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the rows (passed, failed, without outputs), the mean score, and on failing rows how
    often each expected field was wrong."""
    n = len(rows)
    passed = sum(1 for r in rows if r["passed"])
    errors = sum(1 for r in rows if r["outputs"] is None)
    misses: dict[str, int] = {}
    for r in rows:
        if r["passed"] or r["outputs"] is None:
            continue
        for f, want in (r["expected"] or {}).items():
            got = (r["outputs"] or {}).get(f)
            if _norm(got) != _norm(want):
                misses[f] = misses.get(f, 0) + 1
    return {"rows": n, "passed": passed, "failed": n - passed, "errors": errors,
            "score": (sum(r["score"] for r in rows) / n) if n else 0.0, "misses": misses}


def _norm(v: Any) -> str:
    return " ".join(as_text(v).lower().split()) if v is not None else ""


def stats_dict(stats) -> dict[str, Any] | None:
    """LM usage (calls, cache hits, tokens, cost) from a program's stats or a dict of them."""
    if stats is None:
        return None
    if isinstance(stats, dict):
        return stats
    return {"calls": stats.calls, "cache_hits": stats.cache_hits, "tokens": stats.prompt_tokens + stats.completion_tokens,
            "cost": stats.cost}


# ============================================================================ per-module prompts
def module_cards(program) -> list[dict[str, Any]]:
    """What each predictor looked like before compiling and after; `code` is the code it holds
    instead of a prompt (ToolMaker's tool: `ModuleKind.code`), else None."""
    pristine = program.pristine_params()
    params = program.params()
    cards = []
    for name, p in program.predictors().items():
        module = name.split(".", 1)[0]
        mod = program.modules.get(module)
        kind = (mod.describe() or type(mod).__name__) if mod is not None else ""
        before, after = pristine.get(name), params[name]
        b_instr = before.instruction if before else after.instruction
        b_demos = list(before.demos) if before else []
        before_msgs = _prefix(p, b_instr, b_demos)
        after_msgs = _prefix(p, after.instruction, after.demos)
        template = {"role": "user", "content": "\n".join(f"{n}: {{{n}}}" for n, _, _ in p.inputs)}
        before_text = _prompt_text(before_msgs) + "\n── user ──\n" + template["content"]
        after_text = _prompt_text(after_msgs) + "\n── user ──\n" + template["content"]
        cards.append({
            "name": name, "module": module, "kind": kind, "lm": program.lm_ids.get(p.lm, p.lm),
            "inputs": [n for n, _, _ in p.inputs], "outputs": [n for n, _, _ in p.outputs],
            "instruction_before": b_instr, "instruction_after": after.instruction,
            "demos_before": len(b_demos), "demos": list(after.demos),
            "knn": after.knn.model_dump() if after.knn is not None else None,
            "diff": line_diff(before_text, after_text),
            "changed": before_text != after_text or after.knn is not None,
            "pinned": sorted(p.pinned),
            "code": mod.code().get(name) if mod is not None else None,
        })
    return cards


def _prompt_text(messages: list[dict[str, str]]) -> str:
    lines, demo = [], 0
    for i, m in enumerate(messages):
        role = m["role"]
        if i and role == "user":
            demo += 1
        tag = role if i == 0 else f"{role} · demo {demo}"
        lines.append(f"── {tag} ──")
        lines += m["content"].splitlines() or [""]
    return "\n".join(lines)


def _prefix(p, instruction: str, demos: list[dict]) -> list[dict[str, str]]:
    """A predictor's prompt prefix (system message and demo turns) for other parameters."""
    return p.prefix_for(list(demos), instruction)


def line_diff(before: str, after: str, context: int = 3) -> list[tuple[str, str]]:
    """(tag, line) pairs: ' ' unchanged, '-' removed, '+' added, '…' a run of hidden unchanged lines.

    >>> line_diff("a\\nb", "a\\nc")
    [(' ', 'a'), ('-', 'b'), ('+', 'c')]
    """
    a, b = before.splitlines(), after.splitlines()
    out: list[tuple[str, str]] = []
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    for k, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            same = a[i1:i2]
            head = context if k > 0 else 0
            tail = context if k < len(ops) - 1 else 0
            if len(ops) == 1:
                out += [(" ", x) for x in same]
            elif len(same) > head + tail + 1:
                out += [(" ", x) for x in same[:head]]
                out.append(("…", f"{len(same) - head - tail} unchanged lines"))
                out += [(" ", x) for x in same[len(same) - tail:]] if tail else []
            else:
                out += [(" ", x) for x in same]
            continue
        out += [("-", x) for x in a[i1:i2]]
        out += [("+", x) for x in b[j1:j2]]
    return out
