"""`pipec eval A B --lm x --lm y --data rows`: every program x LM pair scored on the same rows, in one
table; with `--baseline A`, each other program's per-row wins and losses against A on the same LM, and
a failing exit status when one scores more than `--max-drop` below it (a CI gate).

Cells run one after another, each with the eval's row concurrency, so the LM load is bounded by
`--concurrency` whatever the size of the matrix; they share the LM cache (a program and LM already
scored on a row costs nothing the second time). The metric is the same for every cell: `--metric`,
else the first program's (its artifact's, or its compile block's). With `--otel`, the cells'
OpenTelemetry spans: `pipec.otel.export(cells)`, one `eval` span per cell with a run per row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cell:
    """One program on one LM: its eval result, wall time and LM usage."""

    program: str                      # the file as given
    lm: str                           # the LM id it ran on, or "as declared"
    result: Any                       # pipec.evaluate.EvalResult
    seconds: float
    calls: int = 0
    cache_hits: int = 0
    tokens: int = 0
    cost: float = 0.0
    pipeline: str | None = None       # the pipeline's name: its runs' OpenTelemetry spans say it (`pipec.otel`)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.result.rows)


@dataclass
class Versus:
    """A cell against the baseline program on the same LM, row by row (rows matched by where they are
    in the data file)."""

    baseline: Cell
    wins: list[str] = field(default_factory=list)       # rows it passes and the baseline does not
    losses: list[str] = field(default_factory=list)     # rows the baseline passes and it does not

    def drop(self, cell: Cell) -> float:
        return self.baseline.result.score - cell.result.score


def versus(baseline: Cell, cell: Cell) -> Versus:
    """Per-row wins and losses of `cell` against `baseline`.

    >>> from types import SimpleNamespace as NS
    >>> rows = lambda *ok: NS(rows=[NS(where=f"d:{i + 1}", passed=p) for i, p in enumerate(ok)], score=sum(ok) / len(ok))
    >>> v = versus(Cell("a", "m", rows(True, False, True), 0), Cell("b", "m", rows(True, True, False), 0))
    >>> v.wins, v.losses
    (['d:2'], ['d:3'])
    """
    base = {r.where: r.passed for r in baseline.result.rows}
    out = Versus(baseline)
    for r in cell.result.rows:
        before = base.get(r.where)
        if before is None:
            continue
        if r.passed and not before:
            out.wins.append(r.where)
        elif before and not r.passed:
            out.losses.append(r.where)
    return out


def compare_all(cells: list[Cell], baseline: str | None) -> dict[int, Versus]:
    """For each cell (by index) of a program other than `baseline`, its `Versus` against the baseline
    program's cell on the same LM."""
    if baseline is None:
        return {}
    base = {c.lm: c for c in cells if c.program == baseline}
    return {i: versus(base[c.lm], c) for i, c in enumerate(cells) if c.program != baseline and c.lm in base}


def regressions(cells: list[Cell], against: dict[int, Versus], max_drop: float) -> list[str]:
    """One line per cell that scores more than `max_drop` below its baseline.

    >>> from types import SimpleNamespace as NS
    >>> a, b = Cell("a", "m", NS(score=0.9, rows=[]), 0), Cell("b", "m", NS(score=0.8, rows=[]), 0)
    >>> regressions([a, b], {1: Versus(a)}, 0.05)
    ['b on m: 0.800, 0.100 below a (0.900); more than the 0.050 allowed']
    >>> regressions([a, b], {1: Versus(a)}, 0.1)
    []
    """
    out = []
    for i, v in sorted(against.items()):
        cell = cells[i]
        if v.drop(cell) > max_drop + 1e-9:
            out.append(f"{cell.program} on {cell.lm}: {cell.result.score:.3f}, {v.drop(cell):.3f} below "
                       f"{v.baseline.program} ({v.baseline.result.score:.3f}); more than the {max_drop:.3f} allowed")
    return out


def render(cells: list[Cell], against: dict[int, Versus], *, data: str, metric: str, fmt: str = "text",
           show: int = 10) -> str:
    """The matrix as a table (`fmt` "text" for a terminal, "markdown" for a pull-request comment),
    then the rows each compared cell won and lost, at most `show` of each."""
    header = ["program", "lm", "score", "passed", "failed", "LM calls", "tokens", "cost", "time"]
    if against:
        header.append("vs baseline")
    rows = []
    for i, c in enumerate(cells):
        n = len(c.result.rows)
        row = [c.program, c.lm, f"{c.result.score:.3f}", f"{c.passed}/{n}", str(c.result.failures),
               f"{c.calls} (+{c.cache_hits} cached)", str(c.tokens), f"${c.cost:.4f}", f"{c.seconds:.1f}s"]
        if against:
            v = against.get(i)
            row.append("baseline" if v is None and any(c is w.baseline for w in against.values()) else
                       "" if v is None else f"{-v.drop(c):+.3f} ({len(v.wins)} won, {len(v.losses)} lost)")
        rows.append(row)
    count = len(cells[0].result.rows) if cells else 0
    title = f"{metric} on {data} ({count} rows)"
    if fmt == "markdown":
        lines = [f"**{_md(title)}**", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" if k < 2 else "---:" for k in range(len(header))) + "|"]
        lines += ["| " + " | ".join(_md(x) for x in row) + " |" for row in rows]
    else:
        widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
        fit = lambda r: "  ".join(x.ljust(w) if k < 2 else x.rjust(w) for k, (x, w) in enumerate(zip(r, widths)))
        lines = [title, fit(header)] + [fit(r) for r in rows]
    for i, v in sorted(against.items()):
        c = cells[i]
        for label, which in (("won", v.wins), ("lost", v.losses)):
            if which and show:
                listed = ", ".join(which[:show]) + (f", ... ({len(which) - show} more)" if len(which) > show else "")
                text = f"{c.program} on {c.lm} {label} against {v.baseline.program}: {listed}"
                lines.append(("- " + _md(text)) if fmt == "markdown" else "  " + text)
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Text for a Markdown table cell or line: pipes and backticks cannot break the table."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("\n", " ")
