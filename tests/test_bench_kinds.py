"""bench/kinds.py (the new module kinds' table in BENCHMARKS.md) on scripted LMs and two rows each, so
the script cannot rot between real runs: calls come from the traces, the bound is `pipec inspect`'s,
scores count, and the table renders into its own section of BENCHMARKS.md."""
from __future__ import annotations

import doctest
import json
import re
import sys
from pathlib import Path

import pipec.sandbox
import pytest
from pipec import ScriptedLM

BENCH = Path(__file__).resolve().parent.parent / "bench"
pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
_SANDBOX = pipec.sandbox.sandbox_status()

LIES = [{"question": "Question: Ann tells the truth. Bo says Ann lies. Does Bo tell the truth?", "answer": "No"},
        {"question": "Question: Cy lies. Di says Cy lies. Does Di tell the truth?", "answer": "Yes"}]
ARITH = [{"question": "((1 + 2) * (3 - 5)) =", "answer": -6}, {"question": "((4 * -2) - (7 + 1)) =", "answer": -16},
         {"question": "((9 - 3) * 2) =", "answer": 12}, {"question": "((2 * 2 * 2) + (-1 - 1)) =", "answer": 6},
         {"question": "((0 + 5) * (5 - 0)) =", "answer": 25}]


@pytest.fixture
def kinds(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("kinds", None)
    import kinds as module
    return module


def cell(kinds, kind, task=None):
    return next(c for c in kinds.CELLS if c.kind == kind and (task is None or c.task == task))


def test_calls_are_counted_from_the_traces_and_stay_within_the_bound(kinds, tmp_path):
    lm = kinds.scripted_lm()          # a well-formed reply to every part, as the Re3 row uses
    res = kinds.run_cell(cell(kinds, "CumulativeReasoning"), LIES, tmp_path, lm=lm)
    assert res.rows == 2 and res.failed == 0
    assert sum(res.calls) == len(lm.requests)          # every request the LM saw, and nothing else
    assert all(3 <= c <= res.bound for c in res.calls)  # at least propose, verify, report
    assert res.bound == 18                               # 2 * max_steps * (2 + verifiers), as `pipec inspect` says
    assert res.scripted_calls == sum(res.calls)


def test_scores_count_matches_and_a_failed_row_counts_as_wrong(kinds, tmp_path):
    yes = kinds.run_cell(cell(kinds, "Predict", "web_of_lies"), LIES, tmp_path,
                         lm=ScriptedLM(rule=lambda r: {"answer": "Yes"}))
    assert (yes.correct, yes.failed, yes.calls, yes.bound, yes.score) == (1, 0, [1, 1], 2, 0.5)
    broken = kinds.run_cell(cell(kinds, "Predict", "web_of_lies"), LIES, tmp_path, lm=ScriptedLM(rule=lambda r: "I cannot say."))
    # Every reply unreadable: each row makes its retry, reaching the static worst case exactly.
    assert (broken.correct, broken.failed, broken.calls, broken.bound) == (0, 2, [2, 2], 2)
    assert "did not parse" in broken.errors[0]


def test_tool_maker_row_scripts_the_maker_only(kinds, tmp_path, monkeypatch):
    if not (_SANDBOX.ok and _SANDBOX.mode == "bwrap"):
        monkeypatch.setenv("PIPEC_SANDBOX", "process")

    def user(request):          # the tool's user copies the input's expression into a call of the tool
        asked = request.messages[-1]["content"]
        expression = re.search(r"\(\(.*=", asked).group(0)
        return {"call": f"evaluate({json.dumps(expression)})"}
    lm = ScriptedLM(rule=user)
    res = kinds.run_cell(cell(kinds, "ToolMaker"), ARITH[:2], tmp_path, lm=lm, train=ARITH[2:])
    assert res.correct == 2 and res.failed == 0
    assert res.calls == [2, 1]                     # the maker's one call falls on the first row
    assert len(lm.requests) == 2                   # the row's own LM wrote the calls; the maker stayed scripted
    assert res.scripted_calls == 3 and res.bound == 6


def test_optimizer_cell_compiles_first_and_counts_the_compile_apart(kinds, tmp_path):
    lm = kinds.scripted_lm()
    res = kinds.run_cell(cell(kinds, "auto_cot"), ARITH[:2], tmp_path, lm=lm, train=ARITH, dev=ARITH[:2])
    assert res.compile_calls > 0 and re.fullmatch(r"\d\.\d\d -> \d\.\d\d", res.compile_dev)
    assert res.compile_calls + sum(res.calls) == len(lm.requests)
    assert res.calls == [1, 1] and res.bound == 2


def test_table_renders_each_kind_beside_its_baselines_and_flags_a_broken_bound(kinds):
    R = kinds.CellResult
    results = {"web_of_lies/Predict": R("web_of_lies/Predict", "Predict", "web_of_lies", 2, correct=1, calls=[1, 1], bound=2),
               "web_of_lies/ChainOfThought": R("web_of_lies/ChainOfThought", "ChainOfThought", "web_of_lies", 2,
                                               correct=2, calls=[1, 2], bound=2),
               "web_of_lies/CumulativeReasoning": R("web_of_lies/CumulativeReasoning", "CumulativeReasoning",
                                                    "web_of_lies", 2, correct=0, failed=1, calls=[3, 19], bound=18,
                                                    errors=["r (m): reply did not parse"])}
    text = kinds.render(results, ".venv/bin/python bench/kinds.py --rows 2", {"commit": "abc"}, 2)
    line = next(x for x in text.splitlines() if x.startswith("| CumulativeReasoning |"))
    cols = [c.strip() for c in line.strip("|").split("|")]
    assert cols[1:7] == ["web_of_lies (2)", "0.00 (0/2)", "0.50 (1/2)", "1.00 (2/2)", "11.00 / 19",
                         "18 **(over the bound!)**"]
    assert cols[7] == "1.000 / 1.500" and cols[8] == "1"
    assert "reply did not parse" in text and "bench/kinds.py --rows 2" in text
    assert not any(x.startswith("| AMA |") for x in text.splitlines())      # a kind not run has no line


def test_render_writes_its_section_of_benchmarks_and_run_all_keeps_it(kinds, tmp_path, monkeypatch):
    monkeypatch.setattr(kinds, "RESULTS", tmp_path / "kinds.json")
    monkeypatch.setattr(kinds, "OUT", tmp_path / "kinds.md")
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\n## Start-up\n\nkept\n\n## Notes\n\n- n\n")
    monkeypatch.setattr(kinds, "BENCHMARKS", bench_md)
    R = kinds.CellResult
    ran = {k: kinds.config_of(cell(kinds, k, "sentiment"), 3) for k in ("AMA", "Predict", "ChainOfThought")}
    critic = kinds.config_of(cell(kinds, "CRITIC", "multistep_arithmetic_two"), 3)
    kinds.save({"sentiment/AMA": R("sentiment/AMA", "AMA", "sentiment", 3, correct=2, calls=[4, 4, 5], bound=8,
                                   config=ran["AMA"], measured="def, 2026-12-05 06:40 UTC"),
                "multistep_arithmetic_two/CRITIC": R("multistep_arithmetic_two/CRITIC", "CRITIC",
                                                     "multistep_arithmetic_two", 3, correct=1, calls=[3, 3, 4],
                                                     bound=18, config=critic),
                "sentiment/Predict": R("sentiment/Predict", "Predict", "sentiment", 3, correct=3, calls=[1, 1, 1],
                                       bound=2, config=ran["Predict"]),
                # run with other settings (an older max_tokens, say): never shown as this script's
                "sentiment/ChainOfThought": R("sentiment/ChainOfThought", "ChainOfThought", "sentiment", 3, correct=1,
                                              calls=[1, 1, 1], bound=2, config="0" * 16)}, {"commit": "abc"})
    assert kinds.main(["--rows", "3", "--only", "AMA", "--render", "--write-benchmarks"]) == 0
    doc = bench_md.read_text()
    assert doc.index("## Start-up") < doc.index(kinds.BEGIN) < doc.index("## New module kinds on the embedded model") \
        < doc.index(kinds.END) < doc.index("## Notes")
    assert "| AMA | sentiment (3) | 0.67 (2/3) | 1.00 (3/3) | - | 4.333 / 5 | 8 |" in doc
    assert "bench/kinds.py --rows 3 --write-benchmarks\n" in doc      # the command that measures every cell
    assert "- commit: abc" in doc          # the run's own commit, not the render's
    # --only reran AMA: the table still shows every saved kind, and says which cell was measured apart.
    assert "| CRITIC | multistep_arithmetic_two (3) | 0.33 (1/3) |" in doc
    assert "- measured apart, with `--only`: `sentiment/AMA` (def, 2026-12-05 06:40 UTC)" in doc
    assert "/tmp" not in doc.split(kinds.BEGIN)[1] and str(tmp_path) not in doc
    # A second render replaces the section rather than adding one.
    assert kinds.main(["--rows", "3", "--only", "AMA", "--render", "--write-benchmarks"]) == 0
    assert bench_md.read_text().count(kinds.BEGIN) == 1
    # Cells saved for another --rows are not mixed in.
    assert kinds.main(["--rows", "4", "--only", "AMA", "--render"]) == 0
    assert "| AMA |" not in (tmp_path / "kinds.md").read_text()
    import run_all
    assert (kinds.BEGIN, kinds.END) in run_all.KEPT_SECTIONS


def test_unknown_kind_is_refused(kinds, capsys):
    with pytest.raises(SystemExit) as exc:
        kinds.main(["--only", "Reflxion", "--render"])
    assert exc.value.code == 2 and "unknown kind(s) Reflxion" in capsys.readouterr().err
    assert {c.task for c in kinds.cells_for(["Reflexion"])} == {"multistep_arithmetic_two"}


def test_no_task_is_held_out(kinds):
    sys.path.insert(0, str(BENCH))
    import real_data
    assert not {t.source for t in kinds.TASKS.values()} & real_data.HELD_OUT


def test_docstring_examples(kinds):
    result = doctest.testmod(kinds, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 3
