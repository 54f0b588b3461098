"""Golden tests for every diagnostic the .pipe front end produces, and for common syntax mistakes.

Each `tests/fixtures/diagnostics/<name>.pipe` is checked the way `pipec check` checks it (loader plus
checker, rendered by `render_all`, paths relative to the repository root) and compared with
`<name>.expected`. A fixture spanning several files lives in a folder: `<name>/main.pipe` is checked
and compared with `<name>/main.expected`.

Run with PIPEC_UPDATE_GOLDEN=1 to rewrite the expected files, then read the diff: a golden is only
useful if a person has judged it right.
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipec.registry import catalogue
from pipec.dsl import check, load, parse, render_all
from pipec.dsl.parser import _lark, _mistake_index
from pipec.dsl.syntax_errors import KNOWN_MISTAKES, match_mistake

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "diagnostics"
UPDATE = os.environ.get("PIPEC_UPDATE_GOLDEN") == "1"


def _cases() -> list[Path]:
    """Every fixture's main file: `<name>.pipe` at the top level, `<name>/main.pipe` in folders."""
    files = sorted(FIXTURES.glob("*.pipe")) + sorted(FIXTURES.glob("*/main.pipe"))
    return [f.relative_to(ROOT) for f in files]


def _name(rel: Path) -> str:
    return rel.parent.name if rel.name == "main.pipe" else rel.stem


def _render(rel: Path) -> str:
    loaded = load(rel, catalogue())
    return render_all(loaded.diagnostics, loaded.sources) + "\n"


@pytest.fixture
def at_root(monkeypatch):
    """Paths in diagnostics are shown as given, so check from the repository root like a user would."""
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("rel", _cases(), ids=_name)
def test_golden(rel: Path, at_root):
    got = _render(rel)
    expected = rel.with_suffix(".expected")
    if UPDATE:
        expected.write_text(got, encoding="utf-8")
    assert expected.exists(), f"no golden for {rel}; run with PIPEC_UPDATE_GOLDEN=1 and review it"
    assert got == expected.read_text(encoding="utf-8")


def test_there_are_enough_fixtures():
    names = [_name(r) for r in _cases()]
    assert len([n for n in names if n.startswith("syntax_")]) >= 15
    assert len(names) >= 60


def test_several_errors_are_reported_in_one_run(at_root):
    """Recovery: one broken declaration costs one diagnostic and the rest is still checked."""
    loaded = load(Path("tests/fixtures/diagnostics/several_errors.pipe"), catalogue())
    places = sorted((d.span.line, d.span.col, d.severity[0]) for d in loaded.diagnostics)
    assert places == [(2, 45, "e"), (6, 12, "e"), (17, 17, "e"), (23, 14, "e"), (27, 28, "w"), (29, 45, "e"),
                      (30, 5, "w"), (31, 5, "e"), (31, 21, "e"), (36, 26, "e"), (40, 5, "e"), (40, 54, "e")]


# ------------------------------------------------------------------ the table of syntax mistakes

@pytest.mark.parametrize("label", list(KNOWN_MISTAKES), ids=lambda label: label.split("|")[0][:40])
def test_every_known_mistake_fails_and_matches_its_own_entry(label):
    """An example that parses, or that an earlier entry shadows, would make the table lie."""
    for example in KNOWN_MISTAKES[label]:
        with pytest.raises(Exception) as info:
            _lark().parse(example)
        assert match_mistake(info.value, _mistake_index()) == label, example


# ------------------------------------------------------------------ the command line

def _pipec(*args: str) -> subprocess.CompletedProcess:
    """Run the installed `pipec` script (or `python -m pipec` where there is none) from the repository root."""
    script = Path(sys.executable).with_name("pipec")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pipec"]
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_cli_exits_1_on_errors_and_prints_the_golden():
    run = _pipec("check", "tests/fixtures/diagnostics/unknown_signature.pipe")
    assert run.returncode == 1
    assert run.stderr == (FIXTURES / "unknown_signature.expected").read_text(encoding="utf-8")


def test_cli_exits_0_on_warnings_only():
    run = _pipec("check", "tests/fixtures/diagnostics/unused_input.pipe")
    assert run.returncode == 0, run.stderr
    assert run.stderr == (FIXTURES / "unused_input.expected").read_text(encoding="utf-8")
    assert _pipec("check", "--werror", "tests/fixtures/diagnostics/unused_input.pipe").returncode == 1


def test_cli_exits_2_for_a_missing_file():
    run = _pipec("check", "tests/fixtures/diagnostics/no_such_file.pipe")
    assert run.returncode == 2
    assert "no_such_file.pipe" in run.stderr


def test_cli_json_gives_file_line_col():
    run = _pipec("check", "--format", "json", "tests/fixtures/diagnostics/syntax_missing_arrow.pipe")
    assert run.returncode == 1
    [d] = json.loads(run.stdout)
    assert (d["file"], d["line"], d["col"], d["severity"]) == \
        ("tests/fixtures/diagnostics/syntax_missing_arrow.pipe", 7, 33, "error")
    assert d["message"] == "missing '->' before the pipeline outputs"


def test_cli_reports_imported_files_by_their_own_path():
    run = _pipec("check", "--format", "json", "tests/fixtures/diagnostics/import_cycle/main.pipe")
    files = {d["file"] for d in json.loads(run.stdout)}
    assert "tests/fixtures/diagnostics/import_cycle/a.pipe" in files


# ------------------------------------------------------------------ no input produces a traceback

_TOKEN = re.compile(r'"""[\s\S]*?"""|"[^"\n]*"|\w+|\S')
_JUNK = list('{}()[]:=,."\'?+-#\\\n') + ["in ", "out ", "->", '"""', "return ", "list[", "enum(", "é", "\t"]


def _mutate(rng: random.Random, source: str) -> str:
    """Delete, duplicate or swap random tokens, drop a character, or insert a plausible stray one."""
    for _ in range(rng.randint(1, 4)):
        spans = [m.span() for m in _TOKEN.finditer(source)]
        op = rng.randrange(5)
        if op == 0 and spans:
            a, b = rng.choice(spans)
            source = source[:a] + source[b:]
        elif op == 1 and spans:
            a, b = rng.choice(spans)
            source = source[:a] + source[a:b] + " " + source[a:]
        elif op == 2 and len(spans) > 1:
            (a, b), (c, d) = sorted(rng.sample(spans, 2))
            source = source[:a] + source[c:d] + source[b:c] + source[a:b] + source[d:]
        elif op == 3 and source:
            i = rng.randrange(len(source))
            source = source[:i] + source[i + 1:]
        else:
            i = rng.randrange(len(source) + 1)
            source = source[:i] + rng.choice(_JUNK) + source[i:]
    return source


def _front_end(source: str) -> str:
    file, syntax = parse(source, "m.pipe")
    _, semantic = check([file], catalogue())
    return render_all(syntax + semantic, {"m.pipe": source})


def test_random_mutations_never_raise():
    seeds = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.pipe"))]
    seeds += [p.read_text(encoding="utf-8") for p in sorted(FIXTURES.glob("*.pipe"))[::4]]
    rng = random.Random(20240611)
    _front_end(seeds[0])    # build the parser tables outside the timing
    for _ in range(400):
        source = _mutate(rng, rng.choice(seeds))
        start = time.thread_time()          # CPU time: a busy machine does not count against the input
        try:
            _front_end(source)
        except Exception as err:   # pragma: no cover - the failure message is the point
            pytest.fail(f"{type(err).__name__}: {err} on input:\n{source}")
        assert time.thread_time() - start < 1.0, source


def test_arbitrary_text_never_raises():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    pieces = list("abin_: =(){}[]\"'#,.+->?\n0123456789é\x0c") + [
        "signature ", "pipeline ", "module ", "lm ", "test ", "compile ", "record ", "tool ", "import ",
        "return ", "enum(", "list[", '"""', "in ", "out ", "str", "Predict(", "->", "=="]

    @hypothesis.settings(max_examples=200, deadline=1000, database=None, derandomize=True)
    @hypothesis.given(st.lists(st.sampled_from(pieces), max_size=60).map("".join))
    def run(source):
        _front_end(source)

    run()


def test_deep_nesting_is_a_diagnostic_not_a_crash():
    deep = "pipeline p(x: str) -> (a) { y = " + "[" * 3000 + "]" * 3000 + "\n return a = y }"
    assert "nested too deeply" in _front_end(deep)
    chain = "".join(f"v{i} = v{i + 1}\n" for i in range(3000))
    long = "pipeline p(x: str) -> (a) {\n" + chain + "v3000 = x\n return a = v0 }"
    assert "too deeply" in _front_end(long)
    records = "".join(f"record R{i} {{ x: R{i + 1} }}\n" for i in range(3000)) + "record R3000 { x: str }\n"
    assert "too deeply" in _front_end(records)


def test_odd_characters_keep_the_caret_aligned():
    # A form feed in a description must not shift line numbers; wide characters must not shift the caret.
    source = 'signature S { "a\x0cb" in q: str out a: str }\nlm a = "local/漢字" (temprature: 1)\n'
    text = _front_end(source)
    assert "m.pipe:2:20: error: unknown option 'temprature' for lm a" in text
    # 19 characters before the option, two of them two columns wide: the caret sits at column 22.
    assert ' 2 | lm a = "local/漢字" (temprature: 1)\n   | ' + " " * 21 + "^~~~~~~~~~~~~\n" in text
