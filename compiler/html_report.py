"""`pipec report`: one self-contained HTML page that shows a compile and an evaluation.

The page has no network dependency at all: styles, the script and the data are inline, the graph
and the score chart are inline SVG drawn here, so it opens from disk (or an e-mail attachment) as it
is. It shows

- the pipeline graph, laid out in columns by `Graph.levels()` (map bodies drawn inside their map),
  each node with its module kind and LM;
- the score over the compile's trials (each trial a point, the best-so-far as a line) against the
  baseline and the compiled score;
- per module: the final instruction and demos, and a line diff of the prompt prefix (system message
  and demo turns) before and after compiling;
- the eval table: every row with inputs, expected, got, pass/fail and, on failures, the raw reply;
  filterable to failures and by text. Rows are embedded as JSON and drawn lazily (only the rows in
  view exist in the DOM), so a 10,000-row run opens and filters at once;
- the numbers: LM requests, tokens, cost, wall time when known, seed, versions.

Python: `write_report(path, program, rows=...)`, `build_report(...)` (the HTML text), and
`read_eval_rows(path)` for the JSONL that `pipec eval --output` writes. Command line:
`pipec report ARTIFACT_OR_RUN [--eval ROWS.jsonl | --data ROWS.jsonl] -o report.html`.

Only the standard library is imported at module level; the command line loads this module only
for `pipec report` (the command's arguments are declared with the others in `pipec.cli`).
"""
from __future__ import annotations

import difflib
import html
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .version import __version__

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class ReportError(Exception):
    """Input a report cannot be made from (an unreadable eval JSONL, say); the message names the file."""


# ============================================================================ inputs
ROW_KEYS = ("where", "inputs", "expected", "outputs", "score", "passed", "error", "raw")


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
    return {"where": str(r.get("where") or ""), "inputs": r.get("inputs") or {}, "expected": r.get("expected") or {},
            "outputs": r.get("outputs"), "score": score if math.isfinite(score) else 0.0,
            "passed": bool(passed) if passed is not None else score >= 1.0,
            "error": r.get("error"), "raw": r.get("raw") or ""}


def _rows_of(rows) -> list[dict[str, Any]] | None:
    """Rows given as an EvalResult, a list of RowResults, or a list of dicts."""
    if rows is None:
        return None
    rows = getattr(rows, "rows", rows)
    out = []
    for r in rows:
        out.append(_row(r.to_dict() if hasattr(r, "to_dict") else dict(r)))
    return out


# ============================================================================ formatting helpers
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _fmt_int(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _fmt_cost(c: float | None) -> str:
    if c is None:
        return "—"
    return "$0" if c == 0 else (f"${c:.4f}" if c < 1 else f"${c:,.2f}")


def _fmt_secs(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no '<' (so no '</script>'), no line separators."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"), allow_nan=False)
    except ValueError:                          # NaN or Infinity somewhere: JSON.parse would refuse them
        text = json.dumps(_finite(value), ensure_ascii=False, default=str, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _text_width(text: str, size: float = 12.0) -> float:
    """A rough width in px of sans-serif text (no font metrics offline; errs on the wide side)."""
    wide = sum(1 for c in text if c.isupper() or c in "mwMW@%")
    return (len(text) * 0.56 + wide * 0.18) * size


# ============================================================================ the graph
NODE_H, GAP_X, GAP_Y, PAD, HEADER, PILL_H = 46, 64, 18, 14, 26, 28


class _Box:
    __slots__ = ("key", "kind", "x", "y", "w", "h", "title", "sub", "tip", "inner", "inner_w", "parent")

    def __init__(self, key, kind, w, h, title="", sub="", tip="", inner=None):
        self.key, self.kind, self.w, self.h = key, kind, w, h
        self.title, self.sub, self.tip, self.inner = title, sub, tip, inner
        self.x = self.y = self.inner_w = 0.0
        self.parent = None


def _node_info(program, n) -> tuple[str, str, str]:
    """(title, subtitle, tooltip) of a graph node."""
    from .graph import show_expr
    args = ", ".join((f"{k}: " if not k.startswith("#") else "") + show_expr(e) for k, e in n.args)
    if n.op == "map":
        over = show_expr(dict(n.args)["over"])
        head = f"map {n.var} in {over}" + (" · ordered" if n.ordered else "") + f" · max {n.bound}"
        return head, "", f"{n.id} = {head}"
    if n.op == "module":
        mod = program.modules[n.target]
        kind = type(mod).kind or type(mod).__name__
        lm = program.lm_of(n.target)
        return f"{n.id} · {n.target}", f"{kind} · {lm}", f"{n.id} = {n.target}({args})\n{kind} on {lm}"
    return f"{n.id} · {n.target}", "tool", f"{n.id} = {n.target}({args})\nPython tool"


def _layout(columns: list[list[_Box]]) -> tuple[float, float]:
    """Place boxes column by column (each column centred vertically); return the total size."""
    widths = [max((b.w for b in col), default=0) for col in columns]
    heights = [sum(b.h for b in col) + GAP_Y * max(len(col) - 1, 0) for col in columns]
    total_h = max(heights, default=0)
    x = 0.0
    for col, w, h in zip(columns, widths, heights):
        y = (total_h - h) / 2
        for b in col:
            b.x, b.y = x + (w - b.w) / 2, y
            y += b.h + GAP_Y
        x += w + GAP_X
    return max(x - GAP_X, 0), total_h


def _boxes_for(program, graph, parent: _Box | None, out: dict[str, _Box]) -> list[list[_Box]]:
    columns = []
    for level in graph.levels():
        col = []
        for n in level:
            title, sub, tip = _node_info(program, n)
            if n.op == "map":
                box = _Box(n.id, "map", 0, 0, _clip(title, 60), "", tip)
                inner_cols = _boxes_for(program, n.body, box, out)
                iw, ih = _layout(inner_cols)
                box.inner, box.inner_w = inner_cols, iw
                box.w = max(iw + 2 * PAD, _text_width(box.title, 11.5) + 2 * PAD, 140)
                box.h = HEADER + ih + PAD
            else:
                t, s = _clip(title, 40), _clip(sub, 44)
                w = max(_text_width(t, 12.5), _text_width(s, 11)) + 28
                box = _Box(n.id, n.op, min(max(w, 120), 320), NODE_H, t, s, tip)
            box.parent = parent
            out[n.id] = box
            col.append(box)
        columns.append(col)
    return columns


def _shift(columns: list[list[_Box]], dx: float, dy: float) -> None:
    for col in columns:
        for b in col:
            b.x += dx
            b.y += dy


def _place_inner(columns: list[list[_Box]]) -> None:
    """Move each map's body (laid out at the origin) into its container, nested bodies included."""
    for col in columns:
        for b in col:
            if b.inner:
                _shift(b.inner, b.x + (b.w - b.inner_w) / 2, b.y + HEADER)
                _place_inner(b.inner)


def graph_svg(program) -> str:
    """The pipeline graph as an inline SVG (inputs, nodes by level, outputs; map bodies nested)."""
    from .render import _edges
    graph = program.graph
    boxes: dict[str, _Box] = {}
    ins = [_Box(f"in:{name}", "input", max(_text_width(name, 12) + 30, 70), PILL_H, name, "",
                f"input {name}" + (f": {desc}" if desc else "")) for name, _, desc in graph.inputs]
    outs = [_Box(f"out:{name}", "output", max(_text_width(name, 12) + 30, 70), PILL_H, name, "", f"output {name}")
            for name, _, _ in graph.outputs]
    for b in ins + outs:
        boxes[b.key] = b
    columns = [c for c in [ins, *_boxes_for(program, graph, None, boxes), outs] if c]
    # Lay out bodies first (sizes are known), then the top level, then move bodies into place.
    width, height = _layout(columns)
    _place_inner(columns)
    margin = 12
    parts = []

    def ancestors(b: _Box):
        while b.parent is not None:
            b = b.parent
            yield b.key

    merged: dict[tuple[str, str], list[str]] = {}
    for a, b, label in _edges(graph):
        if a in boxes and b in boxes:
            labels = merged.setdefault((a, b), [])
            if label and label not in labels:
                labels.append(label)
    edge_parts, label_parts = [], []
    lanes: list[tuple[float, float, float]] = []
    lo, hi = 0.0, height
    for (a, b), labels in merged.items():
        A, B = boxes[a], boxes[b]
        lane = None
        if a in ancestors(B):                       # the map's item flowing into its body
            x1, y1 = A.x + 4, B.y + B.h / 2
            x2, y2 = B.x, B.y + B.h / 2
        elif b in ancestors(A):                     # a body's result flowing back to its map
            x1, y1 = A.x + A.w, A.y + A.h / 2
            x2, y2 = B.x + B.w - 4, A.y + A.h / 2
        else:
            x1, y1 = A.x + A.w, A.y + A.h / 2
            x2, y2 = B.x, B.y + B.h / 2
            # An edge that skips columns goes around the boxes in between (above or below them all).
            between = [c for c in boxes.values() if c.x > x1 + 1 and c.x + c.w < x2 - 1
                       and c.key not in (a, b) and c.key not in ancestors(A) and c.key not in ancestors(B)]
            low, high = min(y1, y2) - 6, max(y1, y2) + 6
            if any(c.y < high and c.y + c.h > low for c in between):
                above = min(c.y for c in between) - 16
                below = max(c.y + c.h for c in between) + 16
                mid = (y1 + y2) / 2
                up = abs(mid - above) <= abs(below - mid)
                lane = above if up else below
                xa = min(c.x for c in between) - 12
                xb = max(c.x + c.w for c in between) + 12
                while any(abs(lane - ly) < 12 and xa < lb and la < xb for la, lb, ly in lanes):
                    lane += -12 if up else 12           # parallel long edges get lanes of their own
                lanes.append((xa, xb, lane))
                lo, hi = min(lo, lane - 14), max(hi, lane + 6)
        text = ", ".join(labels)
        if lane is None:
            dx = max((x2 - x1) / 2, 20)
            d = f"M{x1:.1f},{y1:.1f} C{x1 + dx:.1f},{y1:.1f} {x2 - dx:.1f},{y2:.1f} {x2 - 1:.1f},{y2:.1f}"
            mx, my, room = (x1 + x2) / 2, (y1 + y2) / 2 - 4, x2 - x1
        else:
            ca, cb = (x1 + xa) / 2, (xb + x2) / 2
            d = (f"M{x1:.1f},{y1:.1f} C{ca:.1f},{y1:.1f} {ca:.1f},{lane:.1f} {xa:.1f},{lane:.1f} L{xb:.1f},{lane:.1f} "
                 f"C{cb:.1f},{lane:.1f} {cb:.1f},{y2:.1f} {x2 - 1:.1f},{y2:.1f}")
            mx, my, room = (xa + xb) / 2, lane - 4, xb - xa
        edge_parts.append(f'<path class="edge" d="{d}" marker-end="url(#arrow)"><title>{esc(a)} → {esc(b)}'
                          f'{": " + esc(text) if text else ""}</title></path>')
        shown = _clip(text, 28)
        if text and room > _text_width(shown, 10.5) + 10:
            label_parts.append(f'<text class="edge-label" x="{mx:.1f}" y="{my:.1f}">{esc(shown)}</text>')

    def draw(columns):
        for col in columns:
            for b in col:
                cls = f"node node-{b.kind}"
                tip = f"<title>{esc(b.tip)}</title>" if b.tip else ""
                if b.kind in ("input", "output"):
                    parts.append(f'<g class="{cls}" data-node="{esc(b.key)}">{tip}<rect x="{b.x:.1f}" y="{b.y:.1f}" '
                                 f'width="{b.w:.1f}" height="{b.h}" rx="{b.h / 2}"/>'
                                 f'<text x="{b.x + b.w / 2:.1f}" y="{b.y + b.h / 2 + 4:.1f}" '
                                 f'text-anchor="middle">{esc(b.title)}</text></g>')
                elif b.kind == "map":
                    parts.append(f'<g class="{cls}" data-node="{esc(b.key)}">{tip}<rect x="{b.x:.1f}" y="{b.y:.1f}" '
                                 f'width="{b.w:.1f}" height="{b.h:.1f}" rx="10"/>'
                                 f'<text class="map-head" x="{b.x + PAD:.1f}" y="{b.y + 17:.1f}">{esc(b.title)}</text></g>')
                    draw(b.inner)
                else:
                    parts.append(f'<g class="{cls}" data-node="{esc(b.key)}">{tip}<rect x="{b.x:.1f}" y="{b.y:.1f}" '
                                 f'width="{b.w:.1f}" height="{b.h}" rx="8"/>'
                                 f'<text class="node-title" x="{b.x + 14:.1f}" y="{b.y + 19:.1f}">{esc(b.title)}</text>'
                                 f'<text class="node-sub" x="{b.x + 14:.1f}" y="{b.y + 35:.1f}">{esc(b.sub)}</text></g>')

    draw(columns)
    w, h = width + 2 * margin, hi - lo + 2 * margin
    return (f'<svg id="graph-svg" class="graph" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="pipeline graph of {esc(graph.name)}" width="{w:.0f}" height="{h:.0f}" '
            f'viewBox="{-margin} {lo - margin:.0f} {w:.0f} {h:.0f}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrow-head"/></marker></defs>'
            + "".join(edge_parts) + "".join(parts) + "".join(label_parts) + "</svg>")


# ============================================================================ the score chart
def chart_svg(report) -> str:
    """Score over trials: each trial a point (hollow when scored on a minibatch), the best full
    score so far as a step line, and the baseline and compiled scores as horizontal lines."""
    trials = sorted(report.trials, key=lambda t: t.number)
    W, H, L, R, T, B = 860, 290, 52, 150, 18, 40
    pw, ph = W - L - R, H - T - B
    scores = [t.score for t in trials] + [report.baseline_score, report.compiled_score]
    top = max(1.0, max(scores))
    bottom = min(0.0, min(scores))
    n_max = max((t.number for t in trials), default=1)
    n_min = min((t.number for t in trials), default=0)
    if n_max == n_min:
        n_min, n_max = n_min - 1, n_max + 1
    pad = (n_max - n_min) * 0.03
    n_lo, n_hi = n_min - pad, n_max + pad

    def X(n):
        return L + (n - n_lo) / (n_hi - n_lo) * pw

    def Y(s):
        return T + (top - s) / (top - bottom) * ph

    out = [f'<svg id="chart-svg" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
           f'aria-label="score over trials" width="{W}" height="{H}" viewBox="0 0 {W} {H}">']
    for i in range(6):                                      # y grid and ticks
        s = bottom + (top - bottom) * i / 5
        y = Y(s)
        out.append(f'<line class="grid" x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{s:.1f}</text>')
    step = max(1, math.ceil((n_max - n_min) / 10))
    first = math.ceil(n_min)
    for n in range(first, int(n_max) + 1, step):            # x ticks
        if trials and n < 1:
            continue
        out.append(f'<text class="tick" x="{X(n):.1f}" y="{T + ph + 18}" text-anchor="middle">{n}</text>')
    out.append(f'<text class="axis" x="{L + pw / 2:.1f}" y="{H - 4}" text-anchor="middle">trial</text>'
               f'<text class="axis" x="14" y="{T + ph / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {T + ph / 2:.1f})">score</text>')
    for cls, value, name in (("baseline", report.baseline_score, "baseline"),
                             ("compiled", report.compiled_score, "compiled")):
        y = Y(value)
        out.append(f'<line class="ref ref-{cls}" x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}">'
                   f'<title>{name} {value:.3f}</title></line>')
    # Keep the two reference labels apart when the scores are close.
    yb, yc = Y(report.baseline_score), Y(report.compiled_score)
    if abs(yb - yc) < 14:
        mid = (yb + yc) / 2
        yb, yc = (mid + 7, mid - 7) if report.compiled_score >= report.baseline_score else (mid - 7, mid + 7)
    out.append(f'<text class="ref-label ref-label-baseline" x="{L + pw + 8}" y="{yb + 4:.1f}">baseline '
               f'{report.baseline_score:.3f}</text>'
               f'<text class="ref-label ref-label-compiled" x="{L + pw + 8}" y="{yc + 4:.1f}">compiled '
               f'{report.compiled_score:.3f}</text>')
    best = None
    pts = []
    for t in trials:
        if t.full and (best is None or t.score > best):
            best = t.score
        if best is not None:
            pts.append((X(t.number), Y(best)))
    if pts:
        d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            d += f" H{x1:.1f} V{y1:.1f}"
        out.append(f'<path class="best" d="{d}"><title>best full score so far</title></path>')
    for t in trials:
        cls = "pt" if t.full else "pt pt-mini"
        note = f" — {t.note}" if t.note else ""
        out.append(f'<circle class="{cls}" cx="{X(t.number):.1f}" cy="{Y(t.score):.1f}" r="4.5">'
                   f'<title>trial {t.number}: {t.score:.3f}{" (minibatch)" if not t.full else ""}{esc(note)}'
                   f'</title></circle>')
    if not trials:
        out.append(f'<text class="tick" x="{L + pw / 2:.1f}" y="{T + ph / 2:.1f}" text-anchor="middle">'
                   'no trials recorded</text>')
    out.append("</svg>")
    return "".join(out)


# ============================================================================ per-module prompts
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
    import dataclasses
    try:
        other = dataclasses.replace(p, instruction=instruction, demos=list(demos), knn=None)
        return other._prefix_for(list(demos))
    except Exception:                       # a predictor type that cannot be copied: build it directly
        from .prompt import assistant_message, system_message, user_message
        out = [{"role": "system", "content": system_message(instruction, p.inputs, p.outputs)}]
        for d in demos:
            out += [{"role": "user", "content": user_message(p.inputs, d)},
                    {"role": "assistant", "content": assistant_message(p.outputs, d)}]
        return out


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


def module_cards(program) -> list[dict[str, Any]]:
    """What each predictor looked like before compiling and after."""
    pristine = program.pristine_params()
    params = program.params()
    cards = []
    for name, p in program.predictors().items():
        module = name.split(".", 1)[0]
        mod = program.modules.get(module)
        kind = (type(mod).kind or type(mod).__name__) if mod is not None else ""
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
        })
    return cards


# ============================================================================ numbers
def eval_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
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
    return " ".join(_text(v).lower().split()) if v is not None else ""


def _stats_dict(stats) -> dict[str, Any] | None:
    if stats is None:
        return None
    if isinstance(stats, dict):
        return stats
    return {"calls": stats.calls, "cache_hits": stats.cache_hits, "tokens": stats.prompt_tokens + stats.completion_tokens,
            "cost": stats.cost}


# ============================================================================ the page
CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#0969da; --pass:#1a7f37;
  --fail:#cf222e; --passbg:#dafbe1; --failbg:#ffebe9; --mod:#ddf4ff; --modline:#54aeff; --tool:#fff8c5;
  --toolline:#d4a72c; --map:#fbefff; --mapline:#c297ff; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin: 0; font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif;
  color: var(--fg); background: #fff; }
header.top { background: #24292f; color: #fff; padding: 18px 32px 14px; }
header.top h1 { margin: 0 0 2px; font-size: 22px; font-weight: 600; }
header.top .sub { color: #c9d1d9; font-size: 13px; }
header.top .sub code { color: #fff; }
nav.toc { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid var(--line);
  padding: 8px 32px; display: flex; gap: 20px; font-size: 13px; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
main { padding: 8px 32px 48px; max-width: 1320px; }
section { margin-top: 26px; }
h2 { font-size: 18px; font-weight: 600; margin: 0 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0; }
.muted { color: var(--muted); }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  font-size: 12.5px; }
.group { display: flex; gap: 14px; align-items: flex-start; margin-top: 10px; }
.group .gl { width: 92px; flex: none; padding-top: 10px; font-size: 12px; font-weight: 600; color: var(--muted);
  text-transform: uppercase; letter-spacing: .03em; }
.cards { flex: 1; display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)); gap: 8px; }
.notes { color: var(--muted); margin: 12px 0 0; font-size: 13px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 7px 12px; background: #fff; }
.card .k { font-size: 12px; color: var(--muted); }
.card .v { font-size: 16px; font-weight: 600; word-break: break-word; font-variant-numeric: tabular-nums; }
.card .v.small { font-size: 13px; font-weight: 500; }
.hero { display: flex; gap: 14px; align-items: stretch; margin-bottom: 12px; flex-wrap: wrap; }
.hero .score { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.hero .score .v { font-size: 28px; font-weight: 650; }
.hero .score.lift .v { color: var(--pass); }
.hero .score.drop .v { color: var(--fail); }
.hero .score.has-fail .v { color: var(--fg); }
.box { border: 1px solid var(--line); border-radius: 8px; background: var(--soft); padding: 14px; overflow-x: auto; }
.graph .node rect { stroke-width: 1.3; }
.graph .node-module rect { fill: var(--mod); stroke: var(--modline); }
.graph .node-tool rect { fill: var(--tool); stroke: var(--toolline); }
.graph .node-map > rect { fill: var(--map); stroke: var(--mapline); stroke-dasharray: 5 4; }
.graph .node-input rect, .graph .node-output rect { fill: #fff; stroke: #8c959f; }
.graph .node-output rect { stroke-width: 2; }
.graph text { font-family: inherit; fill: var(--fg); font-size: 12px; }
.graph .node-title { font-weight: 600; font-size: 12.5px; }
.graph .node-sub { fill: var(--muted); font-size: 11px; }
.graph .map-head { font-size: 11.5px; fill: #6639ba; font-weight: 600; }
.graph .edge { fill: none; stroke: #8c959f; stroke-width: 1.4; }
.graph .arrow-head { fill: #8c959f; }
.graph .edge-label { font-size: 10.5px; fill: var(--muted); text-anchor: middle; paint-order: stroke;
  stroke: var(--soft); stroke-width: 4px; stroke-linejoin: round; }
.legend { font-size: 12px; color: var(--muted); margin-top: 8px; display: flex; gap: 16px; flex-wrap: wrap; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 3px; vertical-align: -2px; margin-right: 5px;
  border: 1px solid; }
.chart .grid { stroke: #e6e9ed; }
.chart .tick, .chart .axis { font-size: 11px; fill: var(--muted); font-family: inherit; }
.chart .axis { font-size: 12px; }
.chart .ref { stroke-width: 1.5; }
.chart .ref-baseline { stroke: #8c959f; stroke-dasharray: 6 4; }
.chart .ref-compiled { stroke: var(--pass); stroke-dasharray: 2 3; }
.chart .ref-label { font-size: 12px; font-family: inherit; }
.chart .ref-label-baseline { fill: var(--muted); }
.chart .ref-label-compiled { fill: var(--pass); font-weight: 600; }
.chart .best { fill: none; stroke: var(--accent); stroke-width: 2.2; }
.chart .pt { fill: var(--accent); stroke: #fff; stroke-width: 1.5; }
.chart .pt-mini { fill: #fff; stroke: var(--accent); stroke-width: 1.6; }
.module { border: 1px solid var(--line); border-radius: 8px; margin-bottom: 16px; overflow: hidden; }
.module > .head { background: var(--soft); padding: 10px 14px; border-bottom: 1px solid var(--line); display: flex;
  gap: 12px; align-items: baseline; flex-wrap: wrap; }
.module > .body { padding: 12px 14px; }
.tag { display: inline-block; font-size: 11.5px; padding: 1px 8px; border-radius: 10px; border: 1px solid var(--line);
  background: #fff; color: var(--muted); }
.tag.changed { background: #fff8c5; border-color: #d4a72c; color: #7d4e00; }
.tag.same { background: #fff; }
.label { font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase; letter-spacing: .03em;
  margin: 12px 0 4px; }
.label:first-child { margin-top: 0; }
.instr { white-space: pre-wrap; background: var(--soft); border-radius: 6px; padding: 8px 10px; margin: 0; }
.instr.old { text-decoration: line-through; color: var(--muted); background: #fff; border: 1px dashed var(--line); }
table.demos { border-collapse: collapse; width: 100%; font-size: 12.5px; }
table.demos th, table.demos td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
table.demos th { background: var(--soft); font-weight: 600; }
table.trials { width: auto; min-width: 50%; } table.trials td.r { text-align: right; font-variant-numeric: tabular-nums; }
table.demos td { max-width: 420px; overflow-wrap: anywhere; }
details > summary { cursor: pointer; color: var(--accent); font-size: 13px; margin: 8px 0 4px; }
.diff { border: 1px solid var(--line); border-radius: 6px; overflow: auto; max-height: 460px; background: #fff; }
.diff .dl { white-space: pre-wrap; overflow-wrap: anywhere; padding: 0 10px 0 28px; position: relative; min-height: 18px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12px; line-height: 18px; }
.diff .dl::before { position: absolute; left: 10px; color: var(--muted); }
.diff .add { background: #e6ffec; } .diff .add::before { content: "+"; color: var(--pass); }
.diff .del { background: #ffebe9; } .diff .del::before { content: "−"; color: var(--fail); }
.diff .gap { color: var(--muted); background: var(--soft); font-style: italic; }
.diff .role { color: #6639ba; }
.evbar { display: flex; gap: 16px; align-items: center; margin: 10px 0; flex-wrap: wrap; }
.evbar input[type=search] { padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px; min-width: 280px; font: inherit; }
.evbar label { user-select: none; cursor: pointer; }
.evbar .count { color: var(--muted); margin-left: auto; font-variant-numeric: tabular-nums; }
.misses { font-size: 13px; color: var(--muted); }
.vt { position: relative; height: min(64vh, 620px); overflow: auto; border: 1px solid var(--line); border-radius: 8px;
  background: #fff; contain: strict; }
.vt .hdr, .vt .r { display: grid; grid-template-columns: 52px minmax(90px, .8fr) minmax(160px, 2fr) minmax(100px, 1fr)
  minmax(100px, 1fr) 58px 62px; align-items: center; }
.vt .hdr { position: sticky; top: 0; z-index: 2; height: 32px; background: var(--soft); border-bottom: 1px solid var(--line);
  font-size: 12px; font-weight: 600; color: var(--muted); }
.vt .canvas { position: relative; }
.vt .r { position: absolute; left: 0; right: 0; height: 30px; border-bottom: 1px solid #eef1f4; cursor: pointer; font-size: 13px; }
.vt .r:hover { background: #f6f8fa; }
.vt .r.sel { background: #ddf4ff; }
.vt .hdr > div, .vt .r > div { padding: 0 8px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.vt .r .num, .vt .hdr .num { text-align: right; font-variant-numeric: tabular-nums; }
.vt .r.fail .got { color: var(--fail); }
.badge { display: inline-block; font-size: 11.5px; font-weight: 600; padding: 0 8px; border-radius: 10px; line-height: 18px; }
.badge.pass { background: var(--passbg); color: var(--pass); }
.badge.fail { background: var(--failbg); color: var(--fail); }
.badge.err { background: var(--fail); color: #fff; }
.empty { padding: 28px; text-align: center; color: var(--muted); }
#ev-detail { margin-top: 12px; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; display: none; }
#ev-detail.open { display: block; }
#ev-detail .grid2 { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 12px; }
#ev-detail pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--soft); border-radius: 6px; padding: 8px 10px;
  margin: 0; max-height: 260px; overflow: auto; }
#ev-detail .raw pre { background: #fff8f8; border: 1px solid #ffcecb; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media print { nav.toc { display: none; } .vt { height: auto; } }
"""

JS = r"""
(function () {
  "use strict";
  var el = document.getElementById("pipec-eval-data");
  if (!el) return;
  var DATA = JSON.parse(el.textContent);
  var rows = DATA.rows, ROW_H = 30, HDR_H = 32, OVERSCAN = 6;
  var box = document.getElementById("ev-scroll"), canvas = document.getElementById("ev-canvas");
  var failBox = document.getElementById("ev-failures"), search = document.getElementById("ev-search");
  var count = document.getElementById("ev-count"), detail = document.getElementById("ev-detail");
  var shown = [], hay = null, selected = -1, pending = false, lastKey = "";

  function text(v) {
    if (v === null || v === undefined) return "";
    return typeof v === "string" ? v : JSON.stringify(v);
  }
  function pairs(o) {
    if (!o) return "";
    var ks = Object.keys(o), out = [];
    for (var i = 0; i < ks.length; i++) out.push(ks[i] + ": " + text(o[ks[i]]));
    return out.join("  \u00b7  ");
  }
  function shortWhere(w) { var i = Math.max(w.lastIndexOf("/"), w.lastIndexOf("\\")); return i >= 0 ? w.slice(i + 1) : w; }
  function got(r) {                          // the scored fields first; every output in the row's details
    if (r.outputs === null || r.outputs === undefined) return "error: " + text(r.error);
    var ks = Object.keys(r.expected || {}), o = {}, any = false;
    for (var i = 0; i < ks.length; i++) if (ks[i] in r.outputs) { o[ks[i]] = r.outputs[ks[i]]; any = true; }
    return pairs(any ? o : r.outputs);
  }

  function buildHay() {                       // once, on the first text search: O(n)
    hay = new Array(rows.length);
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      hay[i] = (r.where + "\n" + pairs(r.inputs) + "\n" + pairs(r.expected) + "\n" + got(r) + "\n" + text(r.raw)).toLowerCase();
    }
  }
  function applyFilter() {
    var onlyFail = failBox.checked, q = search.value.trim().toLowerCase();
    var key = onlyFail + "\u0000" + q;
    if (key === lastKey) return;
    lastKey = key;
    if (q && !hay) buildHay();
    var out = [];
    for (var i = 0; i < rows.length; i++) {
      if (onlyFail && rows[i].passed) continue;
      if (q && hay[i].indexOf(q) < 0) continue;
      out.push(i);
    }
    shown = out;
    canvas.style.height = Math.max(shown.length * ROW_H, 1) + "px";
    box.style.height = Math.min(maxH, HDR_H + Math.max(shown.length, 3) * ROW_H + 2) + "px";
    box.scrollTop = 0;
    count.textContent = (shown.length === rows.length ? rows.length.toLocaleString() + " rows"
      : shown.length.toLocaleString() + " of " + rows.length.toLocaleString() + " rows");
    draw();
  }
  function cell(cls, value, title) {
    var d = document.createElement("div");
    d.className = cls;
    d.textContent = value;
    if (title) d.title = title;
    return d;
  }
  function rowEl(i, pos) {
    var r = rows[i], e = document.createElement("div");
    e.className = "r" + (r.passed ? "" : " fail") + (i === selected ? " sel" : "");
    e.style.top = (pos * ROW_H) + "px";
    e.dataset.row = i;
    e.tabIndex = 0;
    e.appendChild(cell("num", i + 1));
    e.appendChild(cell("where mono", shortWhere(r.where), r.where));
    var inp = pairs(r.inputs), exp = pairs(r.expected), g = got(r);
    e.appendChild(cell("inputs", inp, inp.length > 60 ? inp : ""));
    e.appendChild(cell("exp", exp, exp.length > 30 ? exp : ""));
    e.appendChild(cell("got", g, g.length > 30 ? g : ""));
    e.appendChild(cell("num", (Math.round(r.score * 1000) / 1000).toString()));
    var b = document.createElement("div"), s = document.createElement("span");
    s.className = "badge " + (r.passed ? "pass" : (r.outputs === null ? "err" : "fail"));
    s.textContent = r.passed ? "pass" : (r.outputs === null ? "error" : "fail");
    b.appendChild(s);
    e.appendChild(b);
    return e;
  }
  function draw() {
    var top = Math.max(0, box.scrollTop - HDR_H), h = box.clientHeight;
    var first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    var last = Math.min(shown.length, Math.ceil((top + h) / ROW_H) + OVERSCAN);
    var frag = document.createDocumentFragment();
    for (var p = first; p < last; p++) frag.appendChild(rowEl(shown[p], p));
    if (!shown.length) {
      var e = document.createElement("div");
      e.className = "empty";
      e.textContent = rows.length ? "No rows match." : "No rows.";
      frag.appendChild(e);
    }
    canvas.replaceChildren(frag);
  }
  function pre(label, value, cls) {
    var wrap = document.createElement("div"), l = document.createElement("div"), p = document.createElement("pre");
    if (cls) wrap.className = cls;
    l.className = "label";
    l.textContent = label;
    p.textContent = value;
    wrap.appendChild(l);
    wrap.appendChild(p);
    return wrap;
  }
  function pretty(v) { return v === null || v === undefined ? "(none)" : JSON.stringify(v, null, 2); }
  function open(i) {
    selected = i;
    var r = rows[i];
    var head = document.createElement("h3");
    head.textContent = "Row " + (i + 1) + " \u00b7 " + r.where + " \u00b7 " + (r.passed ? "pass" : "fail") + " \u00b7 score " + r.score;
    var grid = document.createElement("div");
    grid.className = "grid2";
    grid.appendChild(pre("Inputs", pretty(r.inputs)));
    grid.appendChild(pre("Expected", pretty(r.expected)));
    grid.appendChild(pre("Got", r.outputs === null || r.outputs === undefined ? "(no outputs)" : pretty(r.outputs)));
    var parts = [head, grid];
    if (r.error) parts.push(pre("Error", text(r.error), "raw"));
    if (!r.passed && r.raw) parts.push(pre("Raw reply", text(r.raw), "raw"));
    detail.replaceChildren.apply(detail, parts);
    detail.classList.add("open");
    draw();
  }
  canvas.addEventListener("click", function (ev) {
    var t = ev.target.closest(".r");
    if (t) open(+t.dataset.row);
  });
  canvas.addEventListener("keydown", function (ev) {
    var t = ev.target.closest(".r");
    if (t && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); open(+t.dataset.row); }
  });
  box.addEventListener("scroll", function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; draw(); });
  }, { passive: true });
  window.addEventListener("resize", draw);
  failBox.addEventListener("change", applyFilter);
  var timer = 0;
  search.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(applyFilter, 120); });
  // For scripts and tests: the indices (0-based, in the data) of the rows the filter keeps.
  window.pipecReport = {
    rows: rows,
    shown: function () { return shown.slice(); },
    filter: function (onlyFailures, q) {
      failBox.checked = !!onlyFailures; search.value = q || ""; applyFilter(); return shown.length;
    }
  };
  var maxH = box.clientHeight;               // the CSS height is the most the table takes
  applyFilter();
  document.documentElement.dataset.ready = "1";
})();
"""


def build_report(program=None, *, rows=None, data: str | None = None, source: str | None = None,
                 title: str | None = None, eval_stats=None, eval_seconds: float | None = None,
                 compile_stats=None, compile_seconds: float | None = None) -> str:
    """The report page as one HTML string.

    `program` is a loaded program (compiled or not), or None for an eval-only report; `rows` the
    eval rows (an EvalResult, RowResults, or dicts as `pipec eval --output` writes them); `data`
    names the eval data; `source` the artifact or file the report is about. Stats and seconds of
    the eval and of the compile are shown when given (the artifact itself records no wall time).
    """
    rows = _rows_of(rows)
    art = getattr(program, "artifact", None) if program is not None else None
    report = art.report if art is not None else None
    name = title or (program.name if program is not None else (Path(source).name if source else "evaluation"))
    body: list[str] = []
    toc: list[tuple[str, str]] = []

    # ---- header
    what = []
    if source:
        what.append(f'<code title="{esc(source)}">{esc(Path(source).name)}</code>')
    if report is not None:
        what.append(f"compiled with <b>{esc(report.optimizer)}</b>, metric <code>{esc(report.metric)}</code>, "
                    f"seed {report.seed}")
    elif program is not None:
        what.append("not compiled")
    if data:
        what.append(f'evaluated on <code title="{esc(data)}">{esc(Path(data).name)}</code>')
    header = (f'<header class="top"><h1>{esc(name)}</h1><div class="sub">{" · ".join(what)}</div></header>')

    # ---- summary numbers
    summary = eval_summary(rows) if rows is not None else None
    hero = []
    if report is not None:
        lift = report.compiled_score - report.baseline_score
        hero.append(_score_card("baseline", f"{report.baseline_score:.3f}", f"on the valset ({report.valset:,} rows)"))
        hero.append(_score_card("compiled", f"{report.compiled_score:.3f}", f"{lift:+.3f} over the baseline",
                                "lift" if lift > 0 else ("drop" if lift < 0 else "")))
    if summary is not None:
        hero.append(_score_card("eval", f"{summary['score']:.3f}",
                                f"{summary['passed']:,} of {summary['rows']:,} rows passed",
                                "" if summary["failed"] == 0 else "has-fail"))
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    if report is not None:
        cards = [("LM requests", _fmt_int(report.lm_requests)), ("tokens", _fmt_int(report.tokens)),
                 ("cost", _fmt_cost(report.cost)), ("wall time", _fmt_secs(compile_seconds)),
                 ("trials", _fmt_int(len(report.trials))), ("seed", str(report.seed)),
                 ("budget", _fmt_int(report.budget) if report.budget is not None else "none"),
                 ("train / val rows", f"{report.trainset:,} / {report.valset:,}")]
        cs = _stats_dict(compile_stats)
        if cs is not None:
            cards.insert(1, ("calls made / cached", f"{cs['calls']:,} / {cs['cache_hits']:,}"))
        groups.append(("Compile", cards))
    if summary is not None:
        es = _stats_dict(eval_stats)
        cards = [("rows", _fmt_int(summary["rows"])), ("passed", _fmt_int(summary["passed"])),
                 ("failed", _fmt_int(summary["failed"])), ("without outputs", _fmt_int(summary["errors"]))]
        if es is not None:
            cards += [("LM calls", f"{es['calls']:,}" + (f" + {es['cache_hits']:,} cached" if es["cache_hits"] else "")),
                      ("tokens", _fmt_int(es["tokens"])), ("cost", _fmt_cost(es["cost"]))]
        cards.append(("wall time", _fmt_secs(eval_seconds)))
        groups.append(("Evaluation", cards))
    versions = [("pipec (report)", __version__), ("python", platform.python_version())]
    if art is not None:
        versions = [("pipec (compile)", art.pipec_version), ("artifact format", str(art.format_version))] + versions
    groups.append(("Versions", versions))
    lms = []
    if program is not None:
        seen: dict[str, list[str]] = {}
        for mod in program.modules:
            seen.setdefault(program.lm_of(mod), []).append(mod)
        lms = [(lm, ", ".join(mods)) for lm, mods in seen.items()]
    if report is not None and report.lms:
        for role, lm in report.lms.items():
            if role != "task":
                lms.append((lm, role))
    toc.append(("numbers", "Numbers"))
    nums = ['<section id="numbers"><h2>Numbers</h2>']
    if hero:
        nums.append('<div class="hero">' + "".join(hero) + "</div>")
    for label, cards in groups:
        nums.append(f'<div class="group"><div class="gl">{esc(label)}</div><div class="cards">'
                    + "".join(_card(k, v) for k, v in cards) + "</div></div>")
    notes = []
    if lms:
        notes.append("LMs: " + "; ".join(f"<code>{esc(lm)}</code> ({esc(mods)})" for lm, mods in lms))
    if report is not None:
        opts = ", ".join(f"{k}={_text(v)}" for k, v in sorted(report.options.items()))
        notes.append(f'optimizer <code>{esc(report.optimizer)}{"(" + esc(opts) + ")" if opts else ""}</code>')
        notes.append(f"metric <code>{esc(report.metric)}</code>")
        notes.append(f"fingerprint <code>{esc(report.fingerprint[:12])}</code>")
        if compile_seconds is None:
            notes.append("the artifact records no wall time")
    if notes:
        nums.append('<p class="notes">' + " · ".join(notes) + "</p>")
    nums.append("</section>")
    body.append("".join(nums))

    # ---- graph
    if program is not None:
        toc.append(("graph", "Graph"))
        body.append('<section id="graph"><h2>Pipeline graph</h2><div class="box">' + graph_svg(program) + "</div>"
                    '<div class="legend"><span><i style="background:var(--mod);border-color:var(--modline)"></i>module '
                    '(kind · LM)</span><span><i style="background:var(--tool);border-color:var(--toolline)"></i>tool</span>'
                    '<span><i style="background:var(--map);border-color:var(--mapline);border-style:dashed"></i>map '
                    '(its body inside)</span><span><i style="background:#fff;border-color:#8c959f;border-radius:6px">'
                    '</i>input / output</span><span>hover a node or an edge for details</span></div></section>')

    # ---- chart
    if report is not None:
        toc.append(("trials", "Score over trials"))
        body.append('<section id="trials"><h2>Score over trials</h2><div class="box">' + chart_svg(report) + "</div>"
                    '<div class="legend"><span><i style="background:var(--accent);border-color:var(--accent);'
                    'border-radius:50%"></i>trial (full valset)</span><span><i style="background:#fff;'
                    'border-color:var(--accent);border-radius:50%"></i>trial (minibatch)</span><span>'
                    '<i style="background:var(--accent);border-color:var(--accent);height:3px"></i>best so far</span>'
                    '<span><i style="border-color:#8c959f;border-style:dashed;height:0"></i>baseline</span>'
                    '<span><i style="border-color:var(--pass);border-style:dotted;height:0"></i>compiled</span></div>'
                    + _trials_table(report) + "</section>")

    # ---- modules
    if program is not None:
        toc.append(("modules", "Modules"))
        parts = ['<section id="modules"><h2>Modules</h2>']
        if getattr(program, "members", None):
            parts.append(f'<p class="muted">An ensemble of {len(program.members)} parameter sets votes on each output; '
                         "the first member is shown.</p>")
        if report is None:
            parts.append('<p class="muted">This program is not compiled: the prompts are as the .pipe file declares them.</p>')
        for c in module_cards(program):
            parts.append(_module_html(c))
        parts.append("</section>")
        body.append("".join(parts))

    # ---- eval
    if rows is not None:
        toc.append(("eval", "Evaluation"))
        misses = ", ".join(f"<b>{esc(f)}</b> {n:,}" for f, n in sorted(summary["misses"].items()))
        body.append(
            '<section id="eval"><h2>Evaluation</h2>'
            f'<div class="misses">{summary["rows"]:,} rows · {summary["passed"]:,} passed · {summary["failed"]:,} failed'
            f' ({summary["errors"]:,} without outputs) · mean score {summary["score"]:.3f}'
            + (f" · wrong fields on failing rows: {misses}" if misses else "") + "</div>"
            '<div class="evbar"><label><input type="checkbox" id="ev-failures"> failures only</label>'
            '<input type="search" id="ev-search" placeholder="Search inputs, expected, got, replies" '
            'aria-label="filter rows by text"><span class="count" id="ev-count"></span></div>'
            '<div class="vt" id="ev-scroll"><div class="hdr"><div class="num">#</div><div>where</div><div>inputs</div>'
            '<div>expected</div><div>got</div><div class="num">score</div><div>result</div></div>'
            '<div class="canvas" id="ev-canvas"></div></div>'
            '<div id="ev-detail" aria-live="polite"></div>'
            '<p class="muted" style="font-size:12px">Click a row for its full inputs, outputs and, on failures, the raw reply.</p>'
            f'<script type="application/json" id="pipec-eval-data">{_script_json({"rows": rows})}</script>'
            "</section>")

    toc_html = '<nav class="toc">' + "".join(f'<a href="#{k}">{esc(v)}</a>' for k, v in toc) + "</nav>"
    footer = (f'<footer>Made by pipec {esc(__version__)} · a self-contained page: no network, '
              "everything inline.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; img-src data:\">"
            '<link rel="icon" href="data:,">'
            f"<title>{esc(name)} · pipec report</title><style>{CSS}</style></head><body>"
            + header + toc_html + "<main>" + "".join(body) + footer + "</main>"
            + (f"<script>{JS}</script>" if rows is not None else "") + "</body></html>\n")


def _trials_table(report) -> str:
    if not report.trials:
        return ""
    rows = "".join(f"<tr><td class=\"r\">{t.number}</td><td class=\"r\">{t.score:.3f}</td>"
                   f"<td>{'full valset' if t.full else 'minibatch'}</td><td>{esc(t.note)}</td></tr>"
                   for t in sorted(report.trials, key=lambda t: t.number))
    return (f"<details><summary>All {len(report.trials)} trials</summary><table class=\"demos trials\"><thead><tr>"
            "<th>trial</th><th>score</th><th>scored on</th><th>note</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></details>")


def _score_card(label: str, value: str, note: str, cls: str = "") -> str:
    return (f'<div class="score {cls}"><div class="k muted">{esc(label)}</div><div class="v">{esc(value)}</div>'
            f'<div class="muted" style="font-size:12px">{esc(note)}</div></div>')


def _card(k: str, v: str) -> str:
    small = " small" if len(v) > 14 else ""
    return f'<div class="card"><div class="k">{esc(k)}</div><div class="v{small}">{esc(v)}</div></div>'


def _demos_table(demos: list[dict], first: list[str], limit: int = 50) -> str:
    keys = [k for k in first if any(k in d for d in demos)]
    keys += sorted({k for d in demos for k in d} - set(keys))
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    body = []
    for d in demos[:limit]:
        cells = []
        for k in keys:
            t = _text(d.get(k, ""))
            cells.append(f'<td title="{esc(t)}">{esc(_clip(t, 240))}</td>' if len(t) > 240 else f"<td>{esc(t)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="muted">… and {len(demos) - limit:,} more</p>' if len(demos) > limit else ""
    return f'<table class="demos"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{more}'


def _diff_html(diff: list[tuple[str, str]]) -> str:
    cls = {" ": "dl", "-": "dl del", "+": "dl add", "…": "dl gap"}
    out = []
    for tag, line in diff:
        c = cls[tag] + (" role" if line.startswith("── ") and tag == " " else "")
        out.append(f'<div class="{c}">{esc(line) if line else "&#8203;"}</div>')
    return '<div class="diff">' + "".join(out) + "</div>"


def _module_html(c: dict[str, Any]) -> str:
    adds = sum(1 for t, _ in c["diff"] if t == "+")
    dels = sum(1 for t, _ in c["diff"] if t == "-")
    status = (f'<span class="tag changed">changed: +{adds} −{dels} prompt lines</span>' if c["changed"]
              else '<span class="tag same">unchanged</span>')
    out = [f'<div class="module" data-module="{esc(c["name"])}"><div class="head"><h3>{esc(c["name"])}</h3>'
           f'<span class="tag">{esc(c["kind"])}</span><span class="muted mono">{esc(c["lm"])}</span>'
           f'<span class="muted">{esc(", ".join(c["inputs"]))} → {esc(", ".join(c["outputs"]))}</span>{status}</div>'
           '<div class="body">']
    if c["instruction_after"] != c["instruction_before"]:
        out.append('<div class="label">Instruction (compiled)</div>'
                   f'<pre class="instr">{esc(c["instruction_after"])}</pre>'
                   '<div class="label">Instruction (uncompiled)</div>'
                   f'<pre class="instr old">{esc(c["instruction_before"])}</pre>')
    else:
        out.append(f'<div class="label">Instruction (unchanged)</div><pre class="instr">{esc(c["instruction_after"])}</pre>')
    if c["knn"] is not None:
        knn = c["knn"]
        out.append(f'<div class="label">Demos: the {knn["k"]} nearest of a pool of {len(knn["pool"]):,}, per input</div>'
                   f'<p class="muted" style="margin:0 0 6px">nearest by {esc(", ".join(knn["fields"]))}</p>'
                   + _demos_table(knn["pool"], c["inputs"] + c["outputs"], 20))
    elif c["demos"]:
        out.append(f'<div class="label">Demos ({len(c["demos"])}, was {c["demos_before"]})</div>'
                   + _demos_table(c["demos"], c["inputs"] + c["outputs"]))
    else:
        was = f" (was {c['demos_before']})" if c["demos_before"] else ""
        out.append(f'<div class="label">Demos</div><p class="muted" style="margin:0">none{was}</p>')
    out.append(f'<details{" open" if c["changed"] else ""}><summary>Prompt before → after compiling '
               '(system message and demo turns; the last user turn is filled per input)</summary>'
               + _diff_html(c["diff"]) + "</details>")
    out.append("</div></div>")
    return "".join(out)


def write_report(path: str | Path, program=None, **kw) -> Path:
    """Write `build_report(program, **kw)` to `path` (atomically); return the path."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    from .reply_parser import scrub
    from .secrets import redact
    text = redact(build_report(program, **kw))      # rows, replies and errors may echo a key
    text = scrub(text)       # a lone surrogate (a cut emoji pair in a row read from a file) shows as U+FFFD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ============================================================================ the command line
def _is_run(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def default_output(path: str | Path) -> Path:
    """`x.compiled.json` -> `x.report.html`; `rows.jsonl` -> `rows.report.html`."""
    path = Path(path)
    name = path.name
    for suffix in (".compiled.json", ".jsonl", ".ndjson", ".json", ".pipe"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".report.html")
    return path.with_name(name + ".report.html")


def cmd_report(args) -> int:
    """`pipec report`: returns the exit status (0 written, 1 bad input, 2 usage)."""
    from .cli import UsageError, _load, guard_output
    src = Path(args.file)
    if not src.is_file():
        raise UsageError(f"no such file: {src}")
    if args.eval_rows and args.data:
        raise UsageError("give either --eval (rows already scored) or --data (evaluate now), not both")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    out = Path(args.output) if args.output else default_output(src)
    if out.resolve() in {src.resolve(), *(Path(x).resolve() for x in (args.eval_rows, args.data) if x)}:
        raise UsageError("--output must not overwrite an input")
    guard_output(out, "report")          # nor a file that is not an earlier report
    kw: dict[str, Any] = {"title": args.title, "source": str(src)}
    if _is_run(src):
        if args.eval_rows or args.data:
            raise UsageError(f"{src} is an eval run already; --eval and --data go with an artifact or a .pipe file")
        if args.lm or args.metric:
            raise UsageError("--lm and --metric go with --data")
    elif args.eval_rows and not os.path.isfile(args.eval_rows):
        raise UsageError(f"no such file: {args.eval_rows}")
    elif args.data and not os.path.isfile(args.data):
        raise UsageError(f"no such file: {args.data}")
    program = None
    try:
        if _is_run(src):
            kw.update(rows=read_eval_rows(src), data=str(src), source=None)
        else:
            program = _load(args)
            if args.eval_rows:
                kw.update(rows=read_eval_rows(args.eval_rows), data=str(args.eval_rows))
            elif args.data:
                kw.update(_evaluate(program, args))
        write_report(out, program, **kw)
    except ReportError as err:
        print(f"pipec report: error: {err}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as err:
        print(f"pipec report: error: cannot write {out}: {err.strerror or err}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if program is not None:
            program.close()
    rows = _rows_of(kw.get("rows"))
    print(f"wrote {out}" + (f", {len(rows):,} eval rows" if rows is not None else ""))
    return EXIT_OK


def _evaluate(program, args) -> dict[str, Any]:
    """Run the evaluation for `--data`; the report's keyword arguments."""
    from .cli import eval_metric
    from .dataset import DatasetError, load_examples
    from .evaluate import evaluate
    from .metrics import MetricError
    from .progress import Progress
    program.approve_running()            # evaluating runs the program: an untrusted artifact needs approval
    try:
        metric = eval_metric(program, args.metric)
        examples = load_examples(args.data, program, metric.fields)
    except (DatasetError, MetricError) as err:
        raise ReportError(str(err)) from None
    bar = Progress(len(examples), program.stats, enabled=args.progress)
    started = time.perf_counter()
    try:
        result = evaluate(program, examples, metric, args.concurrency, progress=bar)
    except MetricError as err:           # the metric returned something other than a score: no report of it
        bar.finish()
        raise ReportError(str(err)) from None
    seconds = time.perf_counter() - started
    bar.finish()
    return {"rows": result, "data": str(args.data), "eval_stats": program.stats, "eval_seconds": seconds}
