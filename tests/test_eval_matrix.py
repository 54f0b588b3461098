"""`pipec eval A B --lm x --lm y`: every program on every LM in one table, and `--baseline` as a CI gate."""
from __future__ import annotations

import json

import pytest
from conftest import first_user_value, system_of

import pipec
from pipec import cli

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

PIPE = """
signature Echo {{ "{instruction}" in q: str out a: str }}
module echo = Predict(Echo)
pipeline p(q: str) -> (a) {{ e = echo(q: q) return a = e.a }}
"""
ROWS = [{"q": f"word{i}", "a": f"WORD{i}"} for i in range(10)]


def answer(request, model: str):
    """The 'careful' instruction is right on every row; the 'quick' one misses rows 6 to 9. The 'weak'
    model also misses rows 0 and 1 whatever it is told."""
    q = first_user_value(request, "q")
    n = int(q[4:])
    wrong = (n >= 6 and "quick" in system_of(request)) or (model == "weak/model" and n < 2)
    return {"a": "?" if wrong else q.upper()}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    seen = {}

    def backend_for(model, options=None):
        lm = seen.setdefault(model, pipec.ScriptedLM(rule=lambda r, m=model: answer(r, m), model=model, cacheable=True))
        return lm
    monkeypatch.setattr("pipec.program.backend_for", backend_for)
    careful, quick = tmp_path / "careful.pipe", tmp_path / "quick.pipe"
    careful.write_text(PIPE.format(instruction="Uppercase it, careful."))
    quick.write_text(PIPE.format(instruction="Uppercase it, quick."))
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return careful, quick, data, seen


def run(*args):
    return cli.main([str(a) for a in args] + ["--metric", "exact_match(a)"])


def test_every_program_on_every_lm_in_one_table(setup, capsys):
    careful, quick, data, seen = setup
    assert run("eval", careful, quick, "--lm", "good/model", "--lm", "weak/model", "--data", data, "--no-cache",
               "--no-progress") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"exact_match(a) on {data} (10 rows)" or out[0].endswith(f"on {data} (10 rows)")
    table = {(line.split()[0], line.split()[1]): line.split()[2] for line in out[2:6]}
    assert table == {(str(careful), "good/model"): "1.000", (str(careful), "weak/model"): "0.800",
                     (str(quick), "good/model"): "0.600", (str(quick), "weak/model"): "0.400"}
    assert sorted(seen) == ["good/model", "weak/model"]
    assert len(seen["good/model"].requests) == 20 and len(seen["weak/model"].requests) == 20


def test_baseline_lists_wins_and_losses_and_fails_on_a_regression(setup, capsys):
    careful, quick, data, _ = setup
    rc = run("eval", careful, quick, "--lm", "good/model", "--data", data, "--no-cache", "--baseline", careful,
             "--no-progress")
    captured = capsys.readouterr()
    assert rc == 1
    assert "-0.400 (0 won, 4 lost)" in captured.out
    assert f"{quick} on good/model lost against {careful}: {data}:7, {data}:8, {data}:9, {data}:10" in captured.out
    assert f"pipec eval: regression: {quick} on good/model: 0.600, 0.400 below {careful} (1.000)" in captured.err
    # The other way round it is an improvement, and the gate passes.
    assert run("eval", careful, quick, "--data", data, "--no-cache", "--baseline", quick, "--lm", "good/model",
               "--no-progress") == 0
    assert "+0.400 (4 won, 0 lost)" in capsys.readouterr().out
    # A drop within --max-drop passes.
    assert run("eval", careful, quick, "--lm", "good/model", "--data", data, "--no-cache", "--baseline", careful,
               "--max-drop", "0.5", "--no-progress") == 0


def test_markdown_for_a_pull_request_comment(setup, capsys):
    careful, quick, data, _ = setup
    run("eval", careful, quick, "--lm", "good/model", "--data", data, "--no-cache", "--baseline", careful,
        "--format", "markdown", "--no-progress")
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| program | lm | score | passed |") and out[3].startswith("|---|---|---:|")
    assert out[4].startswith(f"| {careful} | good/model | 1.000 | 10/10 |") and out[4].endswith("| baseline |")
    assert out[5].startswith(f"| {quick} | good/model | 0.600 | 6/10 |")
    assert out[6].startswith(f"- {quick} on good/model lost against {careful}:")


def test_rows_are_written_with_their_program_and_lm_and_the_cache_is_shared(setup, tmp_path, capsys):
    careful, quick, data, seen = setup
    out = tmp_path / "rows.out.jsonl"
    cache = tmp_path / "cache"
    assert run("eval", careful, "--lm", "good/model", "--lm", "weak/model", "--data", data, "--cache-dir", cache,
               "-o", out, "--no-progress") == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 and {(r["program"], r["lm"]) for r in rows} == {(str(careful), "good/model"),
                                                                          (str(careful), "weak/model")}
    before = {m: len(lm.requests) for m, lm in seen.items()}
    assert run("eval", careful, "--lm", "good/model", "--lm", "weak/model", "--data", data, "--cache-dir", cache,
               "--no-progress") == 0
    assert {m: len(lm.requests) for m, lm in seen.items()} == before          # every cell a cache hit
    assert "0 (+10 cached)" in capsys.readouterr().out


def test_one_program_on_one_lm_is_the_plain_eval(setup, capsys):
    careful, _, data, _ = setup
    assert run("eval", careful, "--lm", "good/model", "--data", data, "--no-cache", "--no-progress") == 0
    assert capsys.readouterr().out.startswith(f"p on {data}: exact_match(a) = 1.000 (10/10 passed")


@pytest.mark.parametrize("extra,message", [
    (["--baseline", "other.pipe"], "--baseline other.pipe is not one of the files"),
    (["--report", "r.html"], "--report writes one program on one LM"),
])
def test_usage_errors(setup, capsys, extra, message):
    careful, quick, data, _ = setup
    assert run("eval", careful, quick, "--data", data, "--no-cache", *extra) == 2
    assert message in capsys.readouterr().err
