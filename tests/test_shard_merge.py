"""Sharded batch runs (`pipec run --shard K/N`) and `pipec merge`."""
from __future__ import annotations

import json

import pytest

import pipec
import pipec.program
from pipec import ScriptedLM
from pipec.cli import main

pytestmark = pytest.mark.usefixtures("isolated_env")

PIPE = """
signature Echo { "Echo." in text: str out label: str }
module echo = Predict(Echo)
pipeline p(text: str) -> (label) { e = echo(text: text) return label = e.label }
"""


@pytest.fixture
def scripted(monkeypatch):
    lm = ScriptedLM(rule=lambda req: {"label": req.messages[-1]["content"].split("text: ")[1].upper()})
    monkeypatch.setattr(pipec.program, "backend_for", lambda model, options=None: lm)
    return lm


def test_shards_partition_the_rows_and_merge_back_in_order(tmp_path, write_pipe, scripted, capsys):
    pipe = write_pipe(PIPE)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row{i}"}) + "\n" for i in range(1, 11)))
    parts = []
    for k in (1, 2, 3):
        out = tmp_path / f"part{k}.jsonl"
        assert main(["run", str(pipe), "--inputs", str(rows), "--output", str(out), "--shard", f"{k}/3",
                     "--no-cache"]) == 0
        parts.append(out)
    lines = [sorted(json.loads(x)["line"] for x in p.read_text().splitlines()) for p in parts]
    assert lines == [[1, 4, 7, 10], [2, 5, 8], [3, 6, 9]]
    merged = tmp_path / "all.jsonl"
    assert main(["merge", *map(str, parts), "--inputs", str(rows), "--output", str(merged)]) == 0
    recs = [json.loads(x) for x in merged.read_text().splitlines()]
    assert [r["line"] for r in recs] == list(range(1, 11))
    assert [r["outputs"]["label"] for r in recs] == [f"ROW{i}" for i in range(1, 11)]
    assert len(scripted.requests) == 10


def test_merge_refuses_missing_duplicated_and_stale_rows(tmp_path, write_pipe, scripted, capsys):
    pipe = write_pipe(PIPE)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row{i}"}) + "\n" for i in range(1, 7)))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    main(["run", str(pipe), "--inputs", str(rows), "--output", str(a), "--shard", "1/2", "--no-cache"])
    merged = tmp_path / "all.jsonl"
    assert main(["merge", str(a), "--inputs", str(rows), "--output", str(merged)]) == 1
    err = capsys.readouterr().err
    assert "3 rows missing (input lines 2, 4, 6)" in err and not merged.exists()
    main(["run", str(pipe), "--inputs", str(rows), "--output", str(b), "--shard", "2/2", "--no-cache"])
    assert main(["merge", str(a), str(b), str(a), "--inputs", str(rows), "--output", str(merged)]) == 1
    assert "answered more than once (lines 1, 3, 5)" in capsys.readouterr().err
    rows.write_text(rows.read_text().replace("row4", "changed"))
    assert main(["merge", str(a), str(b), "--inputs", str(rows), "--output", str(merged)]) == 1
    assert "different input content (lines 4)" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "2-3"])
def test_bad_shard_is_a_usage_error(tmp_path, write_pipe, scripted, bad, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a"}\n')
    assert main(["run", str(write_pipe(PIPE)), "--inputs", str(rows), "--shard", bad]) == 2
    assert "--shard expects K/N" in capsys.readouterr().err
