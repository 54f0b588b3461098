"""Golden tests for every diagnostic the .pipe front end produces, and for common syntax mistakes.

The fixtures in `tests/fixtures/diagnostics/` are grouped by what finds their diagnostics, one
folder per stage of the front end: `syntax/` (the parser: dsl/parser.py, dsl/syntax_errors.py),
`imports/` (the loader: dsl/loader.py), and one per check pass, named after its module in
dsl/checks/ (`declarations/`, `records/`, `lms/`, ..., `tests/`). Each `<stage>/<name>.pipe` is
checked the way `pipec check` checks it (loader plus checker, rendered by `render_all`, paths
relative to the repository root) and compared with `<stage>/<name>.expected`. A fixture spanning
several files lives in a folder: `<stage>/<name>/main.pipe` is checked and compared with
`<stage>/<name>/main.expected`. A stage's `data/` folder holds the files its fixtures' compile
blocks name. Paths in a golden leave out the stage folder (`tests/fixtures/diagnostics/<name>.pipe`):
where a fixture is filed is not what it tests, so filing it elsewhere never rewrites its golden.

The grouping is checked, not just followed. Every diagnostic records what found it
(`Diagnostic.origin`: "syntax", "imports", or the pass's module name; never rendered), and a
fixture belongs to the earliest stage that finds any of its diagnostics, in the order the front end
runs them: syntax, imports, then the passes of `pipec.dsl.checker.PASSES` in order (the checks a
walk combines in the order it lists them; `check_passes` names them). When one stage finds them
all, that is the stage. When several do, it is the one of them that runs first: "the pass of the
first diagnostic" with first meaning in running order, not in the file, so moving a declaration
within a fixture never refiles it. So several_errors (one syntax error among check errors) is under
syntax/, import_cycle (a type error in an imported file besides the cycle) under imports/, and
no_outputs (a signature without outputs, a pipeline without outputs) under signatures/. Every pass
in `PASSES` has a folder with a fixture, so a new pass arrives with its golden file, and no file
sits outside a stage's folder.

Run with PIPEC_UPDATE_GOLDEN=1 to rewrite the expected files, then read the diff: a golden is only
useful if a person has judged it right. A fixture filed under the wrong stage fails
`test_filed_under_the_stage_that_finds_it`, which names the folder to `git mv` it to.
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
from pipec.dsl.checker import PASSES, check_passes
from pipec.dsl.parser import _lark, _mistake_index
from pipec.dsl.syntax_errors import KNOWN_MISTAKES, match_mistake

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "diagnostics"
UPDATE = os.environ.get("PIPEC_UPDATE_GOLDEN") == "1"
# The stages of the front end in the order they run, each a folder of fixtures.
STAGES = ("syntax", "imports", *dict.fromkeys(name for run in PASSES for name in check_passes(run)))


def _cases() -> list[Path]:
    """Every fixture's main file, relative to the root: `<stage>/<name>.pipe`, or
    `<stage>/<name>/main.pipe` for a fixture spanning several files."""
    files = [f for f in FIXTURES.rglob("*.pipe")
             if f.parent.parent == FIXTURES or (f.name == "main.pipe" and f.parent.parent.parent == FIXTURES)]
    return [f.relative_to(ROOT) for f in sorted(files)]


def _name(rel: Path) -> str:
    return rel.parent.name if rel.name == "main.pipe" else rel.stem


def _stage(rel: Path) -> str:
    """The stage folder a fixture is filed under."""
    return (ROOT / rel).relative_to(FIXTURES).parts[0]


def _id(rel: Path) -> str:
    return f"{_stage(rel)}/{_name(rel)}"


def _fixture(name: str) -> Path:
    """The one fixture called `name`, whichever stage it is filed under."""
    [rel] = [r for r in _cases() if _name(r) == name]
    return rel


def _as_golden(text: str, rel: Path) -> str:
    """Rendered diagnostics as a golden shows them: paths without the fixture's stage folder."""
    base = FIXTURES.relative_to(ROOT).as_posix()
    return text.replace(f"{base}/{_stage(rel)}/", f"{base}/")


def _render(rel: Path) -> str:
    loaded = load(rel, catalogue())
    return _as_golden(render_all(loaded.diagnostics, loaded.sources) + "\n", rel)


@pytest.fixture
def at_root(monkeypatch):
    """Paths in diagnostics are shown as given, so check from the repository root like a user would."""
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("rel", _cases(), ids=_id)
def test_golden(rel: Path, at_root):
    got = _render(rel)
    expected = rel.with_suffix(".expected")
    if UPDATE:
        expected.write_text(got, encoding="utf-8")
    assert expected.exists(), f"no golden for {rel}; run with PIPEC_UPDATE_GOLDEN=1 and review it"
    assert got == expected.read_text(encoding="utf-8")


def test_there_are_enough_fixtures():
    stages = [_stage(r) for r in _cases()]
    assert stages.count("syntax") >= 15
    assert len(stages) >= 60


# ------------------------------------------------------------------ fixtures filed by stage

@pytest.mark.parametrize("rel", _cases(), ids=_id)
def test_filed_under_the_stage_that_finds_it(rel: Path, at_root):
    """Each diagnostic's origin is a stage, and the fixture sits under the earliest stage among them
    (all of them, unless the fixture shows several stages' diagnostics: see the module docstring)."""
    diags = load(rel, catalogue()).diagnostics
    found = [f"{d.span.line}:{d.span.col} {d.origin or '(no origin)'}: {d.message}" for d in diags]
    assert diags, f"{rel} shows no diagnostic"
    origins = {d.origin for d in diags}
    assert origins <= set(STAGES), f"diagnostics of unknown origin in {rel}:\n" + "\n".join(found)
    first = min(origins, key=STAGES.index)
    assert _stage(rel) == first, \
        f"{rel} belongs under {first}/ (git mv it there); its diagnostics:\n" + "\n".join(found)


def test_every_pass_has_a_fixture_folder():
    """A new pass in `PASSES` arrives with a folder of fixtures showing what it reports."""
    filed = {_stage(r) for r in _cases()}
    missing = [f"{name}/ (for {run.__name__})" for run in PASSES for name in check_passes(run) if name not in filed]
    assert not missing, "passes without golden fixtures: " + ", ".join(missing)
    assert {"syntax", "imports"} <= filed


def test_nothing_sits_outside_a_stage_folder():
    """Every file is a fixture's under a stage's folder: `<stage>/<name>.pipe` and its `.expected`, a
    file in a multi-file fixture's folder `<stage>/<name>/` (the one with a main.pipe), or a data file
    in `<stage>/data/` (no .pipe there: it would be a fixture nothing checks)."""
    stray = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_dir():
            continue
        stage, *rest = path.relative_to(FIXTURES).parts
        if stage not in STAGES or not rest:
            ok = False
        elif len(rest) == 1:
            ok = path.suffix == ".pipe" or (path.suffix == ".expected" and path.with_suffix(".pipe").is_file())
        elif rest[0] == "data":
            ok = path.suffix != ".pipe"
        else:
            ok = (FIXTURES / stage / rest[0] / "main.pipe").is_file()
        if not ok:
            stray.append(path.relative_to(ROOT).as_posix())
    assert not stray, f"files outside a stage folder ({', '.join(STAGES)}) or no fixture's: {stray}"


def test_several_errors_are_reported_in_one_run(at_root):
    """Recovery: one broken declaration costs one diagnostic and the rest is still checked."""
    loaded = load(_fixture("several_errors"), catalogue())
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
    rel = _fixture("unknown_signature")
    run = _pipec("check", rel.as_posix())
    assert run.returncode == 1
    assert _as_golden(run.stderr, rel) == (ROOT / rel).with_suffix(".expected").read_text(encoding="utf-8")


def test_cli_exits_0_on_warnings_only():
    rel = _fixture("unused_input")
    run = _pipec("check", rel.as_posix())
    assert run.returncode == 0, run.stderr
    assert _as_golden(run.stderr, rel) == (ROOT / rel).with_suffix(".expected").read_text(encoding="utf-8")
    assert _pipec("check", "--werror", rel.as_posix()).returncode == 1


def test_cli_exits_2_for_a_missing_file():
    run = _pipec("check", "tests/fixtures/diagnostics/no_such_file.pipe")
    assert run.returncode == 2
    assert "no_such_file.pipe" in run.stderr


def test_cli_json_gives_file_line_col():
    rel = _fixture("syntax_missing_arrow").as_posix()
    run = _pipec("check", "--format", "json", rel)
    assert run.returncode == 1
    [d] = json.loads(run.stdout)
    assert (d["file"], d["line"], d["col"], d["severity"]) == (rel, 7, 33, "error")
    assert d["message"] == "missing '->' before the pipeline outputs"


def test_cli_reports_imported_files_by_their_own_path():
    rel = _fixture("import_cycle")
    run = _pipec("check", "--format", "json", rel.as_posix())
    files = {d["file"] for d in json.loads(run.stdout)}
    assert (rel.parent / "a.pipe").as_posix() in files


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
    singles = sorted((r for r in _cases() if r.name != "main.pipe"), key=lambda r: r.name)   # as before grouping
    seeds += [(ROOT / r).read_text(encoding="utf-8") for r in singles[::4]]
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
