"""The two drawings of a `pipec report` page, as inline SVG laid out here (no script, no network):

- `graph_svg(program)`: the pipeline graph in columns by `Graph.levels()`: inputs, then the nodes
  level by level (each module with its kind and LM, each map with its body drawn inside it), then
  outputs; an edge that skips columns is routed around the boxes in between;
- `front_svg(report)`: each measured trial's score against its LM calls per row, and the front of
  those no other beats on both (`cost_front`);
- `chart_svg(report)`: the score over a compile's trials against the baseline and compiled scores;
- `lineage_svg(report)`: the candidates of an evolutionary search (`report.lineage`) as a tree, each
  in the column of its generation, with an arrow from each parent.

Only the standard library is imported at module level (see `pipec.html_report`).
"""
from __future__ import annotations

import itertools
import math

from .report_data import clip, esc


def _text_width(text: str, size: float = 12.0) -> float:
    """A rough width in px of sans-serif text (no font metrics offline; errs on the wide side)."""
    wide = sum(1 for c in text if c.isupper() or c in "mwMW@%")
    return (len(text) * 0.56 + wide * 0.18) * size


# ============================================================================ the graph
NODE_H, GAP_X, GAP_Y, PAD, HEADER, PILL_H = 46, 64, 18, 14, 26, 28


class _Box:
    __slots__ = ("h", "inner", "inner_w", "key", "kind", "parent", "sub", "tip", "title", "w", "x", "y")

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
        kind = mod.describe() or type(mod).__name__
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
                box = _Box(n.id, "map", 0, 0, clip(title, 60), "", tip)
                inner_cols = _boxes_for(program, n.body, box, out)
                iw, ih = _layout(inner_cols)
                box.inner, box.inner_w = inner_cols, iw
                box.w = max(iw + 2 * PAD, _text_width(box.title, 11.5) + 2 * PAD, 140)
                box.h = HEADER + ih + PAD
            else:
                t, s = clip(title, 40), clip(sub, 44)
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
        shown = clip(text, 28)
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



# ============================================================================ score against cost
def cost_front(trials) -> list:
    """The trials on the score-against-cost front: scored on the whole valset with a measured cost,
    and beaten by no other such trial that scores at least as well for at most as many LM calls per
    row (better in one of the two); cheapest first.

    >>> from types import SimpleNamespace as T
    >>> pts = [T(number=1, score=0.5, calls_per_row=1.0, full=True), T(number=2, score=0.5, calls_per_row=2.0, full=True),
    ...        T(number=3, score=0.9, calls_per_row=5.0, full=True), T(number=4, score=0.9, calls_per_row=1.5, full=False)]
    >>> [t.number for t in cost_front(pts)]
    [1, 3]
    """
    measured = [t for t in trials if t.full and t.calls_per_row is not None]
    front = [t for t in measured if not any(
        o.score >= t.score and o.calls_per_row <= t.calls_per_row and (o.score, -o.calls_per_row) != (t.score, -t.calls_per_row)
        for o in measured)]
    front.sort(key=lambda t: (t.calls_per_row, -t.score, t.number))
    out, seen = [], set()
    for t in front:                     # equal points: the earliest trial stands for them
        if (t.score, t.calls_per_row) not in seen:
            seen.add((t.score, t.calls_per_row))
            out.append(t)
    return out


def front_svg(report) -> str:
    """Score against cost: every trial with a measured cost (`Trial.calls_per_row`) as a point at its
    LM calls per row and its score (hollow when it was scored on part of the valset only), the
    front of trials no other beats on both as a step line, the chosen program starred, and the
    compile's `max_calls_per_row` (a static worst case, which no measured mean exceeds) as a dashed line."""
    trials = sorted((t for t in report.trials if t.calls_per_row is not None), key=lambda t: t.number)
    W, H, L, R, T, B = 860, 290, 52, 150, 18, 40
    pw, ph = W - L - R, H - T - B
    scores = [t.score for t in trials] + [report.compiled_score]
    top, bottom = max(1.0, max(scores)), min(0.0, min(scores))
    bound = getattr(report, "max_calls_per_row", None)
    hi = max([t.calls_per_row for t in trials] + ([bound] if bound else []) + [1.0])
    x_hi = hi * 1.08 + 0.2

    def X(c):
        return L + c / x_hi * pw

    def Y(s):
        return T + (top - s) / (top - bottom) * ph

    out = [(f'<svg id="front-svg" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="score against LM calls per row" width="{W}" height="{H}" viewBox="0 0 {W} {H}">')]
    for i in range(6):
        s = bottom + (top - bottom) * i / 5
        out.append(f'<line class="grid" x1="{L}" x2="{L + pw}" y1="{Y(s):.1f}" y2="{Y(s):.1f}"/>'
                   f'<text class="tick" x="{L - 8}" y="{Y(s) + 4:.1f}" text-anchor="end">{s:.1f}</text>')
    step = max(1, math.ceil(x_hi / 10))
    for c in range(0, int(x_hi) + 1, step):
        out.append(f'<text class="tick" x="{X(c):.1f}" y="{T + ph + 18}" text-anchor="middle">{c}</text>')
    out.append(f'<text class="axis" x="{L + pw / 2:.1f}" y="{H - 4}" text-anchor="middle">LM calls per row '
               f'(measured, cache hits included)</text><text class="axis" x="14" y="{T + ph / 2:.1f}" '
               f'text-anchor="middle" transform="rotate(-90 14 {T + ph / 2:.1f})">score</text>')
    if bound:
        out.append(f'<line class="ref ref-baseline" x1="{X(bound):.1f}" x2="{X(bound):.1f}" y1="{T}" y2="{T + ph}">'
                   f'<title>max_calls_per_row {bound}: the most LM calls one input may make</title></line>'
                   f'<text class="ref-label ref-label-baseline" x="{X(bound) + 6:.1f}" y="{T + 12}">bound {bound}</text>')
    front = cost_front(trials)
    if front:
        d = f"M{X(front[0].calls_per_row):.1f},{Y(front[0].score):.1f}"
        for t in front[1:]:
            d += f" H{X(t.calls_per_row):.1f} V{Y(t.score):.1f}"
        out.append(f'<path class="best front" d="{d}"><title>the front: no other candidate scores as well '
                   f'for fewer LM calls</title></path>')
    chosen = trials[-1] if trials and report.trials and report.trials[-1] is trials[-1] else None
    on_front = {id(t) for t in front}
    for t in trials:
        cls = "pt" if t.full else "pt pt-mini"
        tip = (f"trial {t.number}: {t.score:.3f}{' (part of the valset)' if not t.full else ''}, "
               f"{t.calls_per_row:g} LM calls and {t.tokens_per_row or 0:g} tokens per row"
               + (" · on the front" if id(t) in on_front else "") + (" · chosen" if t is chosen else "")
               + (f" — {t.note}" if t.note else ""))
        big = id(t) in on_front or t is chosen
        out.append(f'<circle class="{cls}{" pt-front" if id(t) in on_front else ""}" data-trial="{t.number}" '
                   f'cx="{X(t.calls_per_row):.1f}" cy="{Y(t.score):.1f}" r="{6 if big else 4.5}">'
                   f'<title>{esc(tip)}</title></circle>')
    if chosen is not None:
        x, y = X(chosen.calls_per_row), Y(chosen.score)
        out.append(f'<text class="ref-label ref-label-compiled chosen" x="{x + 8:.1f}" y="{y - 8:.1f}">★ chosen'
                   f'</text>')
    if not trials:
        out.append(f'<text class="tick" x="{L + pw / 2:.1f}" y="{T + ph / 2:.1f}" text-anchor="middle">'
                   'no trial measured its cost</text>')
    out.append("</svg>")
    return "".join(out)


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

    out = [(f'<svg id="chart-svg" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="score over trials" width="{W}" height="{H}" viewBox="0 0 {W} {H}">')]
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
        for _, (x1, y1) in itertools.pairwise(pts):
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


# ============================================================================ the lineage
LIN_W, LIN_H, LIN_GAP_X, LIN_GAP_Y = 172, 46, 56, 14


def lineage_svg(report) -> str:
    """The lineage of an evolutionary search: each candidate a box (its number, valset score, and
    what made it: a root's description, the predictor a reflection rewrote, or a merge) in the column
    of its generation (a root 0, a child one more than its furthest parent), an arrow from each
    parent; the candidates on the final Pareto frontier are outlined, the chosen one in green.
    Hovering a box shows the instruction a reflection wrote and the minibatch scores."""
    nodes = sorted(report.lineage, key=lambda n: n.id)
    by_id = {n.id: n for n in nodes}
    depth: dict[int, int] = {}
    for n in nodes:                       # parents come before their children (ids grow)
        depth[n.id] = 1 + max((depth.get(p, 0) for p in n.parents if p in by_id), default=-1)
    columns: dict[int, list] = {}
    for n in nodes:
        columns.setdefault(depth[n.id], []).append(n)
    pos: dict[int, tuple[float, float]] = {}
    for d, col in columns.items():
        for k, n in enumerate(col):
            pos[n.id] = (d * (LIN_W + LIN_GAP_X), k * (LIN_H + LIN_GAP_Y))
    margin = 12
    width = (max(columns, default=0) + 1) * (LIN_W + LIN_GAP_X) - LIN_GAP_X
    height = max((len(c) for c in columns.values()), default=1) * (LIN_H + LIN_GAP_Y) - LIN_GAP_Y
    edges, boxes = [], []
    for n in nodes:
        x2, y2 = pos[n.id][0], pos[n.id][1] + LIN_H / 2
        for p in n.parents:
            if p not in pos:
                continue
            x1, y1 = pos[p][0] + LIN_W, pos[p][1] + LIN_H / 2
            dx = max((x2 - x1) / 2, 20)
            how = f"reflection on {n.predictor}" if n.how == "reflection" else n.how
            edges.append(f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{x1 + dx:.1f},{y1:.1f} {x2 - dx:.1f},{y2:.1f} '
                         f'{x2 - 1:.1f},{y2:.1f}" marker-end="url(#lin-arrow)">'
                         f"<title>{p} → {n.id}: {esc(how)}</title></path>")
        x, y = pos[n.id]
        if n.how == "reflection":
            sub = f"rewrote {n.predictor}"
        elif n.how == "merge":
            sub = "merge of " + " + ".join(str(p) for p in n.parents)
        else:
            sub = n.note or n.how
        tip = [f"candidate {n.id}: valset {n.score:.3f}" + (f", trial {n.trial}" if n.trial else ""),
               f"leads {n.leads} validation row{'s' * (n.leads != 1)}" if n.leads else "off the final frontier"]
        if n.minibatch:
            tip.append(f"{'minibatch' if n.how == 'reflection' else 'judged on'}: {n.minibatch[0]:.3f} (parent) → "
                       f"{n.minibatch[-1]:.3f}")
        if n.instruction:
            tip.append(f"{n.predictor}'s new instruction: {n.instruction}")
        if n.chosen:
            tip.append("chosen")
        cls = "node cand" + (" cand-front" if n.leads else "") + (" cand-chosen" if n.chosen else "")
        boxes.append(f'<g class="{cls}" data-candidate="{n.id}"><title>{esc(chr(10).join(tip))}</title>'
                     f'<rect x="{x:.1f}" y="{y:.1f}" width="{LIN_W}" height="{LIN_H}" rx="8"/>'
                     f'<text class="node-title" x="{x + 12:.1f}" y="{y + 19:.1f}">#{n.id} · {n.score:.3f}'
                     f'{" ★" if n.chosen else ""}</text>'
                     f'<text class="node-sub" x="{x + 12:.1f}" y="{y + 35:.1f}">{esc(clip(sub, 26))}</text></g>')
    w, h = width + 2 * margin, height + 2 * margin
    return (f'<svg id="lineage-svg" class="graph lineage" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="lineage of {len(nodes)} candidates" width="{w:.0f}" height="{h:.0f}" '
            f'viewBox="{-margin} {-margin} {w:.0f} {h:.0f}">'
            '<defs><marker id="lin-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrow-head"/></marker></defs>'
            + "".join(edges) + "".join(boxes) + "</svg>")
