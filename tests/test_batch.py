"""Batch runs: order, isolation of bad rows, bounded concurrency, resumable JSONL output."""
from __future__ import annotations

import json

import pytest
from conftest import SlowLM, count_rule, first_user_value, read_jsonl

import pipec
from pipec.batch import run_jsonl

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")


def load(path, lm):
    return pipec.load(path, lm=lm, cache=False)


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def lm_kinds():
    return [pytest.param(lambda **kw: pipec.ScriptedLM(rule=count_rule, **kw), id="inline"),
            pytest.param(lambda **kw: SlowLM(rule=count_rule, delay=0.01, **kw), id="asyncio")]


# ---------------------------------------------------------------------------- run_batch
def test_run_batch_keeps_input_order(count_pipe):
    # Later rows answer sooner, so completion order is the reverse of input order.
    lm = SlowLM(rule=count_rule, delay_fn=lambda r: 0.1 - 0.01 * len(first_user_value(r, "q")))
    rows = [{"q": "x" * i} for i in range(1, 9)]
    preds = load(count_pipe, lm).run_batch(rows, concurrency=8)
    assert [p.n for p in preds] == list(range(1, 9))
    assert lm.max_in_flight == 8


@pytest.mark.parametrize("make_lm", lm_kinds())
def test_a_bad_row_fails_alone(count_pipe, make_lm):
    lm = make_lm()
    rows = [{"q": "aa"}, {"q": "bad row"}, {"x": 1}, {"q": "k"}, {"q": "abc", "id": 7}]
    preds = load(count_pipe, lm).run_batch(rows, concurrency=2)
    assert [p.ok for p in preds] == [True, False, False, True, True]
    assert [p.n for p in preds if p.ok] == [2, 1, 3]
    assert "did not parse" in preds[1].error and preds[1].raw == "I cannot count that."
    assert "missing input 'q'" in preds[2].error
    assert len(lm.requests) == 1 + 2 + 0 + 1 + 1


@pytest.mark.parametrize("concurrency", [1, 3])
def test_run_batch_respects_concurrency(count_pipe, concurrency):
    lm = SlowLM(rule=count_rule, delay=0.03)
    preds = load(count_pipe, lm).run_batch([{"q": "x" * i} for i in range(1, 10)], concurrency=concurrency)
    assert all(p.ok for p in preds)
    assert lm.max_in_flight == concurrency


def test_arun_batch_runs_on_the_callers_loop_and_keeps_order(count_pipe):
    # run_batch called inside a loop blocks it (it runs on a worker thread's loop); arun_batch awaits on
    # the caller's loop, so other tasks (a server's requests, a ticker here) go on meanwhile.
    import asyncio
    lm = SlowLM(rule=count_rule, delay_fn=lambda r: 0.05 - 0.005 * len(first_user_value(r, "q")))
    prog = load(count_pipe, lm)
    rows = [{"q": "x" * i} for i in range(1, 10)] + [{"x": 1}]

    async def main(batch):
        ticks = []

        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.001)
        task = asyncio.create_task(ticker())
        preds = await batch()
        during = len(ticks)
        task.cancel()
        return preds, during

    preds, during = asyncio.run(main(lambda: prog.arun_batch(rows, concurrency=3)))
    assert [p.n for p in preds[:-1]] == list(range(1, 10)) and "missing input 'q'" in preds[-1].error
    assert lm.max_in_flight == 3 and during > 0

    async def blocking():
        return prog.run_batch(rows, concurrency=3)
    _, during = asyncio.run(main(blocking))
    assert during == 0


def test_run_batch_empty(count_pipe):
    assert load(count_pipe, pipec.ScriptedLM()).run_batch([]) == []


# ---------------------------------------------------------------------------- run_jsonl
@pytest.fixture
def rows_file(tmp_path):
    return write_rows(tmp_path / "rows.jsonl", [{"q": "aa"}, {"q": "bbb", "id": 2}, {"q": "c"}])


def test_run_jsonl_writes_one_record_per_row(count_pipe, rows_file, tmp_path):
    out = tmp_path / "out" / "res.jsonl"                 # parent folder is created
    summary = run_jsonl(load(count_pipe, pipec.ScriptedLM(rule=count_rule)), rows_file, out, concurrency=2)
    recs = read_jsonl(out)
    assert sorted(r["line"] for r in recs) == [1, 2, 3]
    by_line = {r["line"]: r for r in recs}
    assert by_line[1]["outputs"] == {"n": 2} and by_line[1]["ok"] is True and by_line[1]["error"] is None
    assert by_line[2]["inputs"] == {"q": "bbb", "id": 2}     # extra keys ride along
    assert all(r["lm_calls"] == 1 and r["key"] for r in recs)
    assert (summary.total, summary.ran, summary.failed, summary.resumed, summary.skipped) == (3, 3, 0, 0, [])
    assert out.read_text().endswith("\n")


def test_run_jsonl_writes_results_as_they_finish(count_pipe, tmp_path):
    src = write_rows(tmp_path / "rows.jsonl", [{"q": "a"}, {"q": "bb"}, {"q": "ccc"}])
    out = tmp_path / "out.jsonl"
    seen_when_third_ran = []

    def rule(request):
        if first_user_value(request, "q") == "ccc":
            seen_when_third_ran.append(len(read_jsonl(out)))
        return count_rule(request)

    run_jsonl(load(count_pipe, pipec.ScriptedLM(rule=rule)), src, out, concurrency=1)
    assert seen_when_third_ran == [2]


def test_run_jsonl_records_in_finishing_order(count_pipe, tmp_path):
    src = write_rows(tmp_path / "rows.jsonl", [{"q": "slow"}, {"q": "f"}])
    lm = SlowLM(rule=count_rule, delay_fn=lambda r: 0.2 if first_user_value(r, "q") == "slow" else 0.01)
    run_jsonl(load(count_pipe, lm), src, tmp_path / "out.jsonl", concurrency=2)
    assert [r["line"] for r in read_jsonl(tmp_path / "out.jsonl")] == [2, 1]


def test_failed_row_is_recorded(count_pipe, tmp_path):
    src = write_rows(tmp_path / "rows.jsonl", [{"q": "bad"}, {"q": "ok"}])
    summary = run_jsonl(load(count_pipe, pipec.ScriptedLM(rule=count_rule)), src, tmp_path / "o.jsonl")
    by_line = {r["line"]: r for r in read_jsonl(tmp_path / "o.jsonl")}
    assert by_line[1]["ok"] is False and by_line[1]["outputs"] is None
    assert by_line[1]["node"] == "r" and by_line[1]["raw"] == "I cannot count that."
    assert "r (m)" in by_line[1]["error"] and by_line[1]["lm_calls"] == 2
    assert by_line[2]["ok"] is True
    assert (summary.ran, summary.failed) == (2, 1)


def test_unreadable_and_incomplete_rows_are_reported_with_line_numbers(count_pipe, tmp_path):
    src = write_rows(tmp_path / "rows.jsonl", [
        {"q": "aa"},            # 1
        "not json",             # 2
        {"x": 1},               # 3 missing input
        "[1, 2]",               # 4 not an object
        "",                     # 5 blank: ignored
        '{"q": "abc"',          # 6 torn JSON
        {"q": "abcd"},          # 7
    ])
    reported = []
    lm = pipec.ScriptedLM(rule=count_rule)
    summary = run_jsonl(load(count_pipe, lm), src, tmp_path / "o.jsonl", on_skip=reported.append)
    assert reported == summary.skipped
    assert len(summary.skipped) == 4
    assert summary.skipped[0].startswith(f"{src}:2: invalid JSON")
    assert summary.skipped[1] == f"{src}:3: missing input 'q'"
    assert summary.skipped[2].startswith(f"{src}:4: expected a JSON object")
    assert summary.skipped[3].startswith(f"{src}:6: invalid JSON")
    assert sorted(r["line"] for r in read_jsonl(tmp_path / "o.jsonl")) == [1, 7]
    assert len(lm.requests) == 2


def test_resume_skips_finished_rows_without_lm_calls(count_pipe, rows_file, tmp_path):
    out = tmp_path / "out.jsonl"
    lm = pipec.ScriptedLM(rule=count_rule)
    prog = load(count_pipe, lm)
    run_jsonl(prog, rows_file, out)
    first = out.read_text()
    calls = len(lm.requests)
    summary = run_jsonl(prog, rows_file, out)
    assert len(lm.requests) == calls                   # no LM call for finished rows
    assert (summary.resumed, summary.ran) == (3, 0)
    assert out.read_text() == first


def test_resume_runs_only_new_rows(count_pipe, rows_file, tmp_path):
    out = tmp_path / "out.jsonl"
    lm = pipec.ScriptedLM(rule=count_rule)
    prog = load(count_pipe, lm)
    run_jsonl(prog, rows_file, out)
    with open(rows_file, "a") as fh:
        fh.write(json.dumps({"q": "dddd"}) + "\n")
    before = len(lm.requests)
    summary = run_jsonl(prog, rows_file, out)
    assert len(lm.requests) == before + 1
    assert (summary.resumed, summary.ran) == (3, 1)
    assert sorted(r["line"] for r in read_jsonl(out)) == [1, 2, 3, 4]


def test_resume_reruns_a_row_whose_content_changed(count_pipe, rows_file, tmp_path):
    out = tmp_path / "out.jsonl"
    lm = pipec.ScriptedLM(rule=count_rule)
    prog = load(count_pipe, lm)
    run_jsonl(prog, rows_file, out)
    write_rows(rows_file, [{"q": "aa"}, {"q": "changed"}, {"q": "c"}])
    before = len(lm.requests)
    summary = run_jsonl(prog, rows_file, out)
    assert len(lm.requests) == before + 1 and summary.ran == 1
    assert [r["outputs"] for r in read_jsonl(out) if r["line"] == 2][-1] == {"n": 7}


def test_torn_last_line_is_truncated_and_redone(count_pipe, rows_file, tmp_path):
    out = tmp_path / "out.jsonl"
    lm = pipec.ScriptedLM(rule=count_rule)
    prog = load(count_pipe, lm)
    run_jsonl(prog, rows_file, out, concurrency=1)
    lines = out.read_text().splitlines(keepends=True)
    torn_line = json.loads(lines[-1])["line"]
    out.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])      # killed mid-write
    before = len(lm.requests)
    summary = run_jsonl(prog, rows_file, out, concurrency=1)
    assert len(lm.requests) == before + 1
    assert (summary.resumed, summary.ran) == (2, 1)
    recs = read_jsonl(out)                              # every line parses again
    assert sorted(r["line"] for r in recs) == [1, 2, 3]
    assert [r for r in recs if r["line"] == torn_line][0]["ok"] is True


def test_failed_rows_are_kept_on_plain_resume(count_pipe, tmp_path):
    src = write_rows(tmp_path / "rows.jsonl", [{"q": "aa"}, {"q": "bad"}])
    out = tmp_path / "out.jsonl"
    lm = pipec.ScriptedLM(rule=count_rule)
    prog = load(count_pipe, lm)
    run_jsonl(prog, src, out)
    before = len(lm.requests)
    summary = run_jsonl(prog, src, out)
    assert len(lm.requests) == before and summary.resumed == 2


def _fixed_after_first_run():
    fixed = {"on": False}

    def rule(request):
        q = first_user_value(request, "q")
        if q.startswith("bad") and not fixed["on"]:
            return "I cannot count that."
        return {"n": len(q)}
    return fixed, rule


@pytest.mark.parametrize("make_lm", [pipec.ScriptedLM, lambda rule: SlowLM(rule=rule, delay=0.01)],
                         ids=["inline", "asyncio"])
def test_retry_failed_reruns_only_failed_rows(count_pipe, tmp_path, make_lm):
    src = write_rows(tmp_path / "rows.jsonl", [{"q": "aa"}, {"q": "bad1"}, {"q": "ccc"}, {"q": "bad22"}])
    out = tmp_path / "out.jsonl"
    fixed, rule = _fixed_after_first_run()
    lm = make_lm(rule=rule)
    prog = load(count_pipe, lm)
    first = run_jsonl(prog, src, out)
    assert first.failed == 2
    fixed["on"] = True
    before = len(lm.requests)
    summary = run_jsonl(prog, src, out, retry_failed=True)
    rerun = [first_user_value(r, "q") for r in lm.requests[before:]]
    assert sorted(rerun) == ["bad1", "bad22"]
    assert (summary.resumed, summary.ran, summary.failed) == (2, 2, 0)
    recs = read_jsonl(out)
    assert sorted(r["line"] for r in recs) == [1, 2, 3, 4]       # failed records replaced, not duplicated
    assert all(r["ok"] for r in recs)
    assert {r["line"]: r["outputs"]["n"] for r in recs} == {1: 2, 2: 4, 3: 3, 4: 5}


def test_retry_failed_when_every_row_failed(count_pipe, tmp_path):
    src = write_rows(tmp_path / "rows.jsonl", [{"q": "bad1"}, {"q": "bad2"}])
    out = tmp_path / "out.jsonl"
    fixed, rule = _fixed_after_first_run()
    prog = load(count_pipe, pipec.ScriptedLM(rule=rule))
    run_jsonl(prog, src, out)
    fixed["on"] = True
    run_jsonl(prog, src, out, retry_failed=True)
    recs = read_jsonl(out)
    assert sorted(r["line"] for r in recs) == [1, 2]
    assert all(r["ok"] for r in recs)


def test_run_jsonl_respects_concurrency(count_pipe, tmp_path):
    src = write_rows(tmp_path / "rows.jsonl", [{"q": "x" * i} for i in range(1, 13)])
    lm = SlowLM(rule=count_rule, delay=0.03)
    summary = run_jsonl(load(count_pipe, lm), src, tmp_path / "out.jsonl", concurrency=4)
    assert summary.ran == 12 and summary.failed == 0
    assert lm.max_in_flight == 4


def test_run_jsonl_with_trace(count_pipe, rows_file, tmp_path):
    out = tmp_path / "out.jsonl"
    run_jsonl(load(count_pipe, pipec.ScriptedLM(rule=count_rule)), rows_file, out, with_trace=True)
    rec = read_jsonl(out)[0]
    assert len(rec["trace"]) == 1
    assert rec["trace"][0]["messages"][-1]["content"].startswith("q: ")
    assert json.loads(rec["trace"][0]["raw"])["n"] == rec["outputs"]["n"]
