"""`pipec report`: one self-contained HTML page that shows a compile and an evaluation.

The page has no network dependency at all: styles, the script and the data are inline, the graph
and the score chart are inline SVG drawn here, so it opens from disk (or an e-mail attachment) as it
is. It shows

- the pipeline graph, laid out in columns by `Graph.levels()` (map bodies drawn inside their map),
  each node with its module kind and LM;
- the score over the compile's trials (each trial a point, the best-so-far as a line) against the
  baseline and the compiled score;
- score against cost, when trials measured theirs (`Trial.calls_per_row`): each candidate's score
  against its LM calls per row, the front of those no other beats on both, the chosen one starred;
- the lineage of an evolutionary search, when the compile had one (`report.lineage`): the
  candidates as a tree, the frontier and the chosen one marked;
- per module: the final instruction and demos, and a line diff of the prompt prefix (system message
  and demo turns) before and after compiling;
- the eval table: every row with inputs, expected, got, the metric's feedback (a column when any row
  has some), pass/fail and, on failures, the raw reply; filterable to failures and by text. Rows are
  embedded as JSON and drawn lazily (only the rows in view exist in the DOM), so a 10,000-row run
  opens and filters at once;
- the numbers: LM requests, tokens, cost, wall time when known, seed, versions.

The data path: `pipec.report_data` reads and summarizes what the page shows (eval rows, each
module's prompt before and after compiling), `pipec.report_svg` lays out the graph and the chart,
and this module assembles the page around them, with the stylesheet and the table's script read
from the package's files `report_assets/report.css` and `report_assets/report.js` (once, when the
first page is built).

Python: `write_report(path, program, rows=...)`, `build_report(...)` (the HTML text), and
`read_eval_rows(path)` for the JSONL that `pipec eval --output` writes. Command line:
`pipec report ARTIFACT_OR_RUN [--eval ROWS.jsonl | --data ROWS.jsonl] -o report.html` (the command
is `pipec.cli.cmd_report`).

Only the standard library is imported at module level; the command line loads this module only
when it writes a report.
"""
from __future__ import annotations

import json
import math
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

from .report_data import (ReportError, as_text, clip, esc, eval_summary, line_diff, module_cards, read_eval_rows,
                          rows_of, stats_dict)
from .report_svg import chart_svg, front_svg, graph_svg, lineage_svg
from .version import __version__

__all__ = ["ReportError", "build_report", "default_output", "line_diff", "read_eval_rows", "write_report"]


# ============================================================================ the stylesheet and the script
@cache
def _asset(name: str) -> str:
    """The text of `report_assets/NAME`: package data beside this module, in a wheel's install and in
    an editable one alike (pyproject.toml's package-data); read on first use, then kept."""
    from importlib.resources import files
    return (files(__package__) / "report_assets" / name).read_text(encoding="utf-8")


# ============================================================================ formatting helpers
def _fmt_int(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _fmt_budget(calls: int | None, usd: float | None) -> str:
    """A compile's budget as the report shows it.

    >>> _fmt_budget(300, 2.5), _fmt_budget(None, 0.5), _fmt_budget(None, None)
    ('300 calls · $2.50', '$0.5000', 'none')
    """
    parts = ([f"{calls:,} calls"] if calls is not None else []) + ([_fmt_cost(usd)] if usd is not None else [])
    return " · ".join(parts) or "none"


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


# ============================================================================ the page
def build_report(program=None, *, rows=None, data: str | None = None, source: str | None = None,
                 title: str | None = None, eval_stats=None, eval_seconds: float | None = None,
                 compile_stats=None, compile_seconds: float | None = None, compile_spent: float | None = None) -> str:
    """The report page as one HTML string.

    `program` is a loaded program (compiled or not), or None for an eval-only report; `rows` the
    eval rows (an EvalResult, RowResults, or dicts as `pipec eval --output` writes them); `data`
    names the eval data; `source` the artifact or file the report is about. Stats and seconds of
    the eval and of the compile are shown when given (the artifact itself records no wall time),
    and so are the dollars the compile's LM calls cost (`compile_spent`: the artifact records the
    work's cost, the same with a warm cache, not what this run paid).
    """
    rows = rows_of(rows)
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
                 ("budget", _fmt_budget(report.budget, report.budget_usd)),
                 ("train / val rows", f"{report.trainset:,} / {report.valset:,}")]
        cs = stats_dict(compile_stats)
        if cs is not None:
            cards.insert(1, ("calls made / cached", f"{cs['calls']:,} / {cs['cache_hits']:,}"))
            if compile_spent is not None:
                cards.insert(2, ("spent", _fmt_cost(compile_spent) + (f" of {_fmt_cost(report.budget_usd)}"
                                                                      if report.budget_usd is not None else "")))
        groups.append(("Compile", cards))
    if summary is not None:
        es = stats_dict(eval_stats)
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
        opts = ", ".join(f"{k}={as_text(v)}" for k, v in sorted(report.options.items()))
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
        if any(t.calls_per_row is not None for t in report.trials):
            toc.append(("front", "Score against cost"))
            body.append('<section id="front"><h2>Score against cost</h2><div class="box">' + front_svg(report)
                        + '</div><div class="legend"><span><i style="background:var(--accent);border-color:'
                        'var(--accent);border-radius:50%"></i>candidate (whole valset)</span><span><i style="'
                        'background:#fff;border-color:var(--accent);border-radius:50%"></i>candidate (part of it)'
                        '</span><span><i style="background:var(--accent);border-color:var(--accent);height:3px">'
                        '</i>front: no other scores as well for fewer LM calls</span><span>★ chosen</span>'
                        '<span>hover a point for its trial, tokens per row and note</span></div></section>')

    # ---- lineage
    if report is not None and report.lineage:
        toc.append(("lineage", "Lineage"))
        body.append('<section id="lineage"><h2>Lineage</h2><div class="box">' + lineage_svg(report) + "</div>"
                    '<div class="legend"><span><i style="background:#fff;border-color:#8c959f"></i>candidate '
                    '(number · valset score; an arrow from each parent)</span><span><i style="background:#fff;'
                    'border-color:var(--accent);border-width:2px"></i>on the final Pareto frontier</span><span>'
                    '<i style="background:#fff;border-color:var(--pass);border-width:2px"></i>chosen ★</span>'
                    "<span>hover a candidate for the instruction its reflection wrote</span></div></section>")

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
        # The feedback column only when some row has feedback: rows an older pipec wrote have none.
        fb = any(r["feedback"] for r in rows)
        body.append(
            '<section id="eval"><h2>Evaluation</h2>'
            f'<div class="misses">{summary["rows"]:,} rows · {summary["passed"]:,} passed · {summary["failed"]:,} failed'
            f' ({summary["errors"]:,} without outputs) · mean score {summary["score"]:.3f}'
            + (f" · wrong fields on failing rows: {misses}" if misses else "") + "</div>"
            '<div class="evbar"><label><input type="checkbox" id="ev-failures"> failures only</label>'
            '<input type="search" id="ev-search" placeholder="Search inputs, expected, got, '
            + ("feedback, " if fb else "") + 'replies" '
            'aria-label="filter rows by text"><span class="count" id="ev-count"></span></div>'
            f'<div class="vt{" fb" if fb else ""}" id="ev-scroll"><div class="hdr"><div class="num">#</div>'
            '<div>where</div><div>inputs</div><div>expected</div><div>got</div>'
            + ("<div>feedback</div>" if fb else "") + '<div class="num">score</div><div>result</div></div>'
            '<div class="canvas" id="ev-canvas"></div></div>'
            '<div id="ev-detail" aria-live="polite"></div>'
            '<p class="muted" style="font-size:12px">Click a row for its full inputs, outputs'
            + (", the metric's feedback" if fb else "") + ' and, on failures, the raw reply.</p>'
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
            f"<title>{esc(name)} · pipec report</title><style>\n{_asset('report.css')}</style></head><body>"
            + header + toc_html + "<main>" + "".join(body) + footer + "</main>"
            + (f"<script>\n{_asset('report.js')}</script>" if rows is not None else "") + "</body></html>\n")


def _trials_table(report) -> str:
    if not report.trials:
        return ""
    cost = any(t.calls_per_row is not None for t in report.trials)    # columns only when a trial measured it

    def measured(v):
        return f'<td class="r">{"—" if v is None else f"{v:g}"}</td>' if cost else ""
    rows = "".join(f"<tr><td class=\"r\">{t.number}</td><td class=\"r\">{t.score:.3f}</td>"
                   f"<td>{'full valset' if t.full else 'minibatch'}</td>{measured(t.calls_per_row)}"
                   f"{measured(t.tokens_per_row)}<td>{esc(t.note)}</td></tr>"
                   for t in sorted(report.trials, key=lambda t: t.number))
    return (f"<details><summary>All {len(report.trials)} trials</summary><table class=\"demos trials\"><thead><tr>"
            "<th>trial</th><th>score</th><th>scored on</th>"
            + ("<th>LM calls / row</th><th>tokens / row</th>" if cost else "") + "<th>note</th></tr></thead>"
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
            t = as_text(d.get(k, ""))
            cells.append(f'<td title="{esc(t)}">{esc(clip(t, 240))}</td>' if len(t) > 240 else f"<td>{esc(t)}</td>")
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
    status = ('<span class="tag">Python tool</span>' if c.get("code") else
              f'<span class="tag changed">changed: +{adds} −{dels} prompt lines</span>' if c["changed"]
              else '<span class="tag same">unchanged</span>')
    out = [(f'<div class="module" data-module="{esc(c["name"])}"><div class="head"><h3>{esc(c["name"])}</h3>'
            f'<span class="tag">{esc(c["kind"])}</span><span class="muted mono">{esc(c["lm"])}</span>'
            f'<span class="muted">{esc(", ".join(c["inputs"]))} → {esc(", ".join(c["outputs"]))}</span>{status}</div>'
            '<div class="body">')]
    pinned = set(c.get("pinned") or ())      # what the .pipe file pins: the compile could not change it
    if c.get("code"):                        # code, not a prompt: no LM is sent it, so no prompt diff either
        out.append('<div class="label">Tool (Python code the module carries; it runs in the sandbox)</div>'
                   f'<pre class="instr code">{esc(c["code"])}</pre></div></div>')
        return "".join(out)
    if "instruction" in pinned:
        out.append(f'<div class="label">Instruction (pinned)</div><pre class="instr">{esc(c["instruction_after"])}</pre>')
    elif c["instruction_after"] != c["instruction_before"]:
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
    elif c["demos"] and "demos" in pinned:
        out.append(f'<div class="label">Demos ({len(c["demos"])}, pinned)</div>'
                   + _demos_table(c["demos"], c["inputs"] + c["outputs"]))
    elif c["demos"]:
        out.append(f'<div class="label">Demos ({len(c["demos"])}, was {c["demos_before"]})</div>'
                   + _demos_table(c["demos"], c["inputs"] + c["outputs"]))
    else:
        was = " (pinned)" if "demos" in pinned else f" (was {c['demos_before']})" if c["demos_before"] else ""
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



def default_output(path: str | Path) -> Path:
    """`x.compiled.json` -> `x.report.html`; `rows.jsonl` -> `rows.report.html`."""
    path = Path(path)
    name = path.name
    for suffix in (".compiled.json", ".jsonl", ".ndjson", ".json", ".pipe"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".report.html")
    return path.with_name(name + ".report.html")
