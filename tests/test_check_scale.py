"""`pipec check` stays linear in the size of the program (issue 13).

No test here times anything in absolute terms. Costs are counted (characters handed to lark,
difflib comparisons, diagnostics rendered) or, where only time says it, compared as a ratio of CPU
time between a program and one four times its size (4 when linear, 16 when quadratic; the test
allows 8, the best of three runs each). Sizes are small enough for the suite; `bench/bench_check.py`
measures the real rates on files up to the 1 MiB cap.
"""
from __future__ import annotations

import difflib
import json
import time
from pathlib import Path

import pytest

from pipec.registry import catalogue
from pipec.dsl import Diagnostic, check, load, parse, render_all
from pipec.dsl.ast import Span
from pipec.dsl.parser import _lark

from fault_server import pipec_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def lark_reads(monkeypatch) -> list[int]:
    """The length of every text handed to lark's parser, in order."""
    lark = _lark()
    real = lark.parse
    seen: list[int] = []

    def counting(text, *args, **kwargs):
        seen.append(len(text))
        return real(text, *args, **kwargs)

    monkeypatch.setattr(lark, "parse", counting)
    return seen


def _broken(n: int) -> str:
    """`n` broken declarations (a missing ':'), each between two that parse."""
    return "".join(f"signature S{i} {{ in q: str out a: str }}\nsignature B{i} {{ in q str out a: str }}\n"
                   for i in range(n)) + "signature Last { in q: str out a: str }\n"


# ------------------------------------------------------------------ parsing


def test_many_syntax_errors_cost_linear_parsing(lark_reads):
    """Recovery used to parse all that was left of the file after each broken declaration, padded
    with the newlines before it: k errors cost k times the file. Now each piece is read a few times."""
    read = {}
    for n in (200, 800):
        source = _broken(n)
        lark_reads.clear()
        file, diags = parse(source, "m.pipe")
        assert len(diags) == n and all(d.message == "missing ':' between the field name and its type" for d in diags)
        assert len(file.items) == n + 1
        assert file.broken_names == {f"B{i}" for i in range(n)}
        read[n] = sum(lark_reads)
        assert read[n] < 6 * len(source), (n, read[n], len(source))
    assert read[800] / read[200] < 8


def test_a_broken_declaration_reports_its_own_line_numbers():
    """Pieces are parsed without padding: every span is moved to its place in the file."""
    source = _broken(3) + "pipeline p(q: str) -> (a) {\n    r = m(q: q\n    return a = r.a\n}\n"
    _, diags = parse(source, "m.pipe")
    assert [(d.span.line, d.span.col) for d in diags][:3] == [(2, 21), (4, 21), (6, 21)]
    assert diags[-1].message == "unclosed '('" and (diags[-1].span.line, diags[-1].span.col) == (9, 10)
    assert "before the 'return' at line 10" in diags[-1].hint


def test_a_list_nested_100000_deep_is_refused_before_lark_reads_it(lark_reads):
    deep = "pipeline p(x: str) -> (a) {\n    y = " + "[" * 100_000 + "x" + "]" * 100_000 + "\n    return a = y\n}\n"
    good = "".join(f"signature S{i} {{ in q: str out a: str }}\n" for i in range(2_000))
    source = good + deep + good.replace("signature S", "signature T")
    file, diags = parse(source, "m.pipe")
    assert [d.message for d in diags] == ["this declaration is nested too deeply to read"]
    # The caret is on the first bracket past the limit (the pipeline's `{` is the first of 128); the
    # 4,000 signatures around it still parse.
    assert (diags[0].span.line, diags[0].span.col) == (2_002, 9 + 127)
    assert len(file.items) == 4_000 and file.broken_names == {"p"}
    assert sum(lark_reads) < 2 * len(good) * 2, "the deep declaration went to lark, or the rest was read again"


@pytest.mark.parametrize("kind", ["list", "type", "call"])
def test_nesting_up_to_the_limit_parses(kind):
    """`MAX_NESTING` brackets open at once, the declaration's own `{` included; one more is refused."""
    from pipec.dsl.parser import MAX_NESTING

    def source(n):
        return {
            "list": "pipeline p(x: str) -> (a) { y = " + "[" * n + "x" + "]" * n + "\n return a = y }\n",
            "type": "signature S { in q: " + "list[" * n + "str" + "]" * n + " out a: str }\n",
            "call": "pipeline p(x: str) -> (a) { y = " + "m(q: " * n + "x" + ")" * n + "\n return a = y }\n",
        }[kind]

    assert parse(source(MAX_NESTING - 1), "m.pipe")[1] == []
    assert [d.message for d in parse(source(MAX_NESTING), "m.pipe")[1]] == \
        ["this declaration is nested too deeply to read"]


def test_a_long_chain_is_a_diagnostic_not_a_crash():
    chain = "pipeline p(x: str) -> (a) { y = x" + " + x" * 20_000 + "\n return a = y }\n"
    _, diags = parse(chain, "m.pipe")
    assert [d.message for d in diags] == ["this declaration is nested too deeply to read"]


def test_parsing_does_not_depend_on_the_callers_stack():
    """The tree used to be built recursively: called deep in a stack, a 60-deep list was 'too deep'."""
    import sys
    source = "pipeline p(x: str) -> (a) { y = " + "[" * 60 + "x" + "]" * 60 + "\n return a = y }\n"

    def at_depth(k: int):
        return at_depth(k - 1) if k else parse(source, "m.pipe")

    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    _, diags = at_depth(sys.getrecursionlimit() - depth - 80)
    assert diags == []


def test_a_chain_of_1500_imports_loads(tmp_path):
    """The loader followed imports recursively: past a few hundred files, declarations were reported
    'nested too deeply', and a longer chain raised RecursionError."""
    n = 1_500
    for i in range(n):
        (tmp_path / f"f{i}.pipe").write_text(f'import "f{i + 1}.pipe"\nsignature S{i} {{ in q: str out a: str }}\n')
    (tmp_path / f"f{n}.pipe").write_text("signature Last { in q: str out a: str }\n")
    loaded = load(tmp_path / "f0.pipe", catalogue())
    assert loaded.diagnostics == []
    assert len(loaded.program.signatures) == n + 1
    # A cycle at the end of the chain names only the files on the loop.
    (tmp_path / f"f{n}.pipe").write_text(f'import "f{n - 2}.pipe"\n')
    [d] = load(tmp_path / "f0.pipe", catalogue()).diagnostics
    loop = [tmp_path / f"f{k}.pipe" for k in (n - 2, n - 1, n, n - 2)]
    assert d.message == "import cycle: " + " -> ".join(map(str, loop))


# ------------------------------------------------------------------ did you mean


def _misspelled(n: int) -> str:
    """`n` declared modules, and a pipeline whose `n` lines each misspell one module or one value."""
    modules = "".join(f"module step_{i} = Predict(S)\n" for i in range(n))
    body = "".join(f"    answer_{i} = stpe_{i}(q: q)\n" if i % 2 == 0 else f"    answer_{i} = step_{i}(q: answr_{i - 1}.a)\n"
                   for i in range(n))
    return f"signature S {{ in q: str out a: str }}\n{modules}pipeline p(q: str) -> (a) {{\n{body}    return a = q\n}}\n"


@pytest.fixture
def comparisons(monkeypatch) -> list[int]:
    """How many times difflib compares two names (its three ratios: each a pass over a name)."""
    count = [0]
    for method in ("real_quick_ratio", "quick_ratio", "ratio"):
        real = getattr(difflib.SequenceMatcher, method)

        def counting(self, _real=real):
            count[0] += 1
            return _real(self)

        monkeypatch.setattr(difflib.SequenceMatcher, method, counting)
    return count


def test_did_you_mean_work_is_linear_in_the_number_of_unknown_names(comparisons):
    """Each unknown name used to be compared with every declared name: 30,000 of each took minutes."""
    work = {}
    for n in (300, 1200):
        file, syntax = parse(_misspelled(n), "m.pipe")
        comparisons[0] = 0
        _, diags = check([file], catalogue())
        work[n] = comparisons[0]
        errors = [d for d in diags if d.severity == "error"]
        assert len(errors) == n
        hints = {d.message: d.hint for d in errors}
        assert hints["unknown module or tool 'stpe_0'"] == "did you mean 'step_0'?"
        assert hints[f"unknown name 'answr_{n - 2}'"] == f"did you mean 'answer_{n - 2}'?"
    assert work[1200] / work[300] < 8, work


def test_small_namespaces_keep_difflibs_suggestions():
    """Under `Names.SMALL` candidates every one is compared, as before: hints on hand-written programs
    are unchanged (the golden tests hold them)."""
    from pipec.dsl.diagnostics import Names, closest
    names = ["question", "context", "answer_text", "Classify"]
    assert closest("answer", names) == "answer_text"       # not one edit away: only difflib finds it
    assert closest("classify", names) == "Classify"
    big = Names(names + [f"filler_{i}" for i in range(Names.SMALL)])
    assert big.closest("classify") == "Classify" and big.closest("contxt") == "context"


# ------------------------------------------------------------------ the checker's other passes


def _wide_signature(n: int) -> str:
    """A signature with `n` optional inputs and outputs, called and read `n` times."""
    fields = "".join(f"    in i{k}: str?\n    out o{k}: str\n" for k in range(n))
    calls = "".join(f"    r{k} = m(i{k}: q)\n    v{k} = r{k}.o{k}\n" for k in range(n))
    used = " + ".join(f"v{k}" for k in range(0, n, max(1, n // 50)))
    return (f"signature S {{\n{fields}}}\nmodule m = Predict(S)\n"
            f"pipeline p(q: str) -> (a) {{\n{calls}    return a = {used}\n}}\n")


def _many_tests(n: int) -> str:
    params = ", ".join(f"x{k}: str?" for k in range(n))
    cases = "".join(f'    p(q: "x", x{k}: "v") -> a == "y"\n' for k in range(n))
    return (f"signature S {{ in q: str out a: str }}\nmodule m = Predict(S)\n"
            f"pipeline p(q: str, {params}) -> (a) {{\n    r = m(q: q)\n    return a = r.a\n}}\n"
            f'test "t" {{\n    p(q: "x") -> a == "y"\n{cases}}}\n')


def _mismatches(n: int) -> str:
    """`n` type mismatches whose hints quote the source (a snippet each)."""
    steps = "".join(f'    r{k} = m(q: "x{k}")\n    s{k} = m(q: r{k}.a)\n' for k in range(n))
    return ("signature S { in q: list[str] out a: str }\nmodule m = Predict(S)\n"
            f"pipeline p(q: str) -> (a) {{\n{steps}    return a = q\n}}\n")


def _cpu(source: str) -> float:
    file, _ = parse(source, "m.pipe")
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        check([file], catalogue())
        best = min(best, time.thread_time() - start)
    return best


@pytest.mark.parametrize("make, n", [(_wide_signature, 400), (_many_tests, 1_500), (_mismatches, 1_500),
                                     (_misspelled, 500)], ids=["wide-signature", "many-tests", "mismatches",
                                                                 "misspelled"])
def test_checking_time_grows_linearly(make, n):
    """CPU time for a program four times bigger: about 4 when linear, 16 when quadratic."""
    small, big = _cpu(make(n)), _cpu(make(4 * n))
    assert big / small < 8, (small, big)


# ------------------------------------------------------------------ how many diagnostics are shown


def _diag(severity: str, line: int) -> Diagnostic:
    return Diagnostic(severity, f"{severity} on line {line}", Span("a.pipe", line, 1, line, 2))


def test_render_all_shows_50_and_counts_the_rest():
    diags = [_diag("error", i) for i in range(1, 121)]
    text = render_all(diags, {})
    lines = text.split("\n")
    assert len(lines) == 52
    assert lines[:50] == [f"a.pipe:{i}:1: error: error on line {i}" for i in range(1, 51)]
    assert lines[50] == "... and 70 more (70 errors, 0 warnings) not shown; `pipec check --format json` lists them all"
    assert lines[51] == "120 errors, 0 warnings"
    assert len(render_all(diags, {}, limit=None).split("\n")) == 121
    assert render_all(diags[:50], {}).split("\n")[-1] == "50 errors, 0 warnings"


def test_warnings_never_hide_an_error():
    """Errors are chosen first, then printed with the warnings in source order."""
    diags = [_diag("warning", i) for i in range(1, 61)] + [_diag("error", i) for i in range(100, 110)]
    lines = render_all(diags, {}).split("\n")
    shown = [line for line in lines if line.startswith("a.pipe:")]
    assert shown == [f"a.pipe:{i}:1: warning: warning on line {i}" for i in range(1, 41)] + \
        [f"a.pipe:{i}:1: error: error on line {i}" for i in range(100, 110)]
    assert lines[-2] == "... and 20 more (0 errors, 20 warnings) not shown; `pipec check --format json` lists them all"


def test_only_the_shown_diagnostics_are_rendered(monkeypatch):
    source = "x\n" * 500_000
    rendered = []
    real = Diagnostic._render
    monkeypatch.setattr(Diagnostic, "_render", lambda self, lines, color: rendered.append(1) or real(self, lines, color))
    diags = [_diag("error", i) for i in range(1, 30_001)]
    text = render_all(diags, {"a.pipe": source})
    assert len(rendered) == 50 and text.endswith("30000 errors, 0 warnings")


def test_cli_prints_50_and_json_lists_all(tmp_path):
    path = tmp_path / "many.pipe"
    path.write_text(_misspelled(120), encoding="utf-8")
    run = pipec_cli("check", path, timeout=60)
    assert run.returncode == 1
    headlines = [line for line in run.stderr.split("\n") if line.startswith(str(path))]
    assert len(headlines) == 50
    assert "... and 190 more (70 errors, 120 warnings) not shown" in run.stderr
    assert run.stderr.rstrip().endswith("120 errors, 120 warnings")
    listed = json.loads(pipec_cli("check", "--format", "json", path, timeout=60).stdout)
    assert len(listed) == 240 and sum(d["severity"] == "error" for d in listed) == 120
