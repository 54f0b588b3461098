"""`pipec test`: run the `test` blocks of a .pipe file against its pipelines."""
from __future__ import annotations

from dataclasses import dataclass

from .dsl import ast as A
from .reply_parser import normalize_value


@dataclass
class CaseResult:
    test: str
    span: A.Span
    passed: bool
    detail: str


def _literal(e):
    if isinstance(e, A.Literal):
        return e.value
    if isinstance(e, A.ListLit):
        return [_literal(x) for x in e.items]
    raise ValueError("test values must be literals")


def _holds(op: str, got, want) -> bool:
    if op == "==":
        return normalize_value(got) == normalize_value(want)
    if op == "!=":
        return normalize_value(got) != normalize_value(want)
    if op == "contains":
        if isinstance(got, list):
            return normalize_value(want) in [normalize_value(x) for x in got]
        return str(want).lower() in str(got).lower()
    if op == "in":
        return normalize_value(got) in [normalize_value(x) for x in want]
    raise ValueError(op)


def run_tests(programs_by_pipeline, tests: list[A.TestBlock], name_filter: str | None = None) -> list[CaseResult]:
    """Run every case of every test block (optionally those whose name contains `name_filter`)."""
    results = []
    for block in tests:
        if name_filter and name_filter not in block.name:
            continue
        for case in block.cases:
            program = programs_by_pipeline(case.call.callee)
            args = {}
            params = [n for n, _, _ in program.inputs]
            for i, a in enumerate(case.call.args):
                args[a.name or params[i]] = _literal(a.value)
            pred = program(**args)
            if not pred.ok:
                results.append(CaseResult(block.name, case.span, False, f"the pipeline failed: {pred.error}"))
                continue
            failures = []
            for a in case.assertions:
                got = pred[a.left.name]
                want = _literal(a.right)
                if not _holds(a.op, got, want):
                    failures.append(f"expected {a.left.name} {a.op} {want!r}, got {got!r}")
            results.append(CaseResult(block.name, case.span, not failures, "; ".join(failures)))
    return results
