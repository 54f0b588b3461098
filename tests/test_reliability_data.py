"""Malformed data and artifacts: every bad row, file and artifact is a clear error naming the place.

* batch inputs (JSONL): broken lines, non-objects, missing inputs, wrong types, odd encodings;
* datasets for eval and compile (JSONL and CSV): broken rows, wrong column counts, missing labels;
* compiled artifacts: truncated at many offsets, single bytes changed at many positions, every field
  replaced by values of the wrong type or deleted, unknown format versions.

Each case is checked through the Python API (the exception type and a message that starts with the
file name and names the line or the field) and through the command line (exit status, message, and
no traceback). The CLI runs in-process through `pipec.cli.main` with LMs bound to a ScriptedLM, and as
a real subprocess where no LM call is needed.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import pipec
from pipec.artifact import FORMAT_VERSION
from tampering import reseal
from pipec import cli
from pipec.artifact import ArtifactError
from pipec.batch import run_jsonl
from pipec.dataset import DatasetError, load_examples, read_examples

from fault_server import pipec_cli, record_figure

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TOY = """
signature Flip { "Reverse the word." in q: str out a: str }
module m = Predict(Flip)
pipeline toy(q: str) -> (a) {
    r = m(q: q)
    return a = r.a
}
compile toy {
    trainset = "train.jsonl"
    metric = exact_match(a)
    optimizer = labeled_fewshot(max_labeled: 3)
}
"""

TYPED = """
record P { x: int  y: int }
signature T { "Describe." in n: int in tags: list[str] in mood: enum(happy, sad) in p: P out a: str }
module m = Predict(T)
pipeline typed(n: int, tags: list[str], mood: enum(happy, sad), p: P) -> (a) {
    r = m(n: n, tags: tags, mood: mood, p: p)
    return a = r.a
}
"""
GOOD_TYPED = {"n": 1, "tags": ["a"], "mood": "happy", "p": {"x": 1, "y": 2}}
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "lemon", "sugar", "house", "green"]
DEEP = "[" * 100_000 + "]" * 100_000


def flip_rule(request):
    """Reverse the `q` of the last user message (lines split on newlines only, as pipec writes them)."""
    for content in reversed([m["content"] for m in request.messages if m["role"] == "user"]):
        for line in content.split("\n"):
            if line.startswith("q: "):
                return {"a": line[3:][::-1]}
    return {"a": "ok"}


@pytest.fixture
def lm(monkeypatch):
    """Every LM the CLI builds is this ScriptedLM."""
    lm = pipec.ScriptedLM(rule=flip_rule)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    return lm


@pytest.fixture
def project(tmp_path):
    (tmp_path / "toy.pipe").write_text(TOY, encoding="utf-8")
    (tmp_path / "typed.pipe").write_text(TYPED, encoding="utf-8")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"q": w, "a": w[::-1]}) + "\n" for w in WORDS))
    return tmp_path


def read_jsonl(path: Path) -> list[dict]:
    """Records split on newlines only (str.splitlines would also split on U+2028 inside a record)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def main(capsys, *args) -> tuple[int, str, str]:
    """`pipec ARGS` in-process: the exit status and output. Any exception escaping is a traceback."""
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def no_traceback(run) -> None:
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.stderr[-3000:]


# ====================================================================== batch inputs
BAD_LINES = [
    ('{"q": "apple"', "invalid JSON"),                         # truncated object
    ('{"q": "apple"} trailing', "invalid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('"just a string"', "expected a JSON object, got str"),
    ("42", "expected a JSON object, got int"),
    ("null", "expected a JSON object, got NoneType"),
    ("{'q': 'single quotes'}", "invalid JSON"),
    ('{"text": "no q here"}', "missing input 'q'"),
]


def _batch_file(path: Path) -> tuple[list[str], dict[int, str]]:
    """Good rows and bad lines interleaved; returns the good words and {line: expected reason}."""
    lines, bad, good = [], {}, []
    for i, w in enumerate(WORDS):
        lines.append(json.dumps({"q": w, "id": i}))
        good.append(w)
        if i < len(BAD_LINES):
            lines.append(BAD_LINES[i][0])
            bad[len(lines)] = BAD_LINES[i][1]
        if i % 4 == 0:
            lines.append("   ")                              # blank lines are not rows
    lines.append(json.dumps({"q": "x" * 1_000_000}))         # a 1 MB row is fine
    good.append("x" * 1_000_000)
    lines.append('{"q": null}')                               # present but null: a failed row, not a skipped one
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return good, bad


def _check_batch_output(out: Path, good: list[str], skipped: list[str], bad: dict[int, str], src: Path):
    recs = read_jsonl(out)
    [null] = [r for r in recs if r["inputs"]["q"] is None]
    assert not null["ok"] and "missing input 'q'" in null["error"] and null["lm_calls"] == 0
    recs.remove(null)
    assert sorted(r["inputs"]["q"] for r in recs) == sorted(good)
    assert all(r["ok"] and r["outputs"]["a"] == r["inputs"]["q"][::-1] for r in recs)
    assert len({r["line"] for r in recs}) == len(recs)           # none twice
    assert len(skipped) == len(bad)
    for line, reason in bad.items():
        [msg] = [s for s in skipped if s.startswith(f"{src}:{line}: ")]
        assert reason in msg, msg


def test_batch_bad_lines_are_skipped_by_line_number_and_the_rest_runs_api(project, tmp_path):
    src, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    good, bad = _batch_file(src)
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    summary = run_jsonl(prog, src, out, concurrency=4)
    assert (summary.ran, summary.failed) == (len(good) + 1, 1)
    _check_batch_output(out, good, summary.skipped, bad, src)
    record_figure("data.batch_bad_lines", rows=len(good) + len(bad) + 1, bad_lines=len(bad), answered=len(good),
                  failed=summary.failed, skipped=len(summary.skipped), lost=0)


def test_batch_bad_lines_cli(project, tmp_path, lm, capsys):
    src, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    good, bad = _batch_file(src)
    rc, stdout, err = main(capsys, "run", project / "toy.pipe", "--inputs", src, "--output", out, "--no-cache")
    assert rc == 1                                      # skipped rows make the run fail...
    skipped = [line[len("skipped: "):] for line in err.splitlines() if line.startswith("skipped: ")]
    _check_batch_output(out, good, skipped, bad, src)   # ...but every good row is answered
    assert f"wrote {len(good) + 1} rows to {out}; 1 failed, {len(bad)} skipped" in err


WRONG_TYPES = [
    ({"n": "abc"}, "input 'n': expected a number"),
    ({"n": 1.5}, "input 'n': expected a whole number"),
    ({"n": True}, "input 'n'"),
    ({"mood": "angry"}, "input 'mood': 'angry' is not one of"),
    ({"p": {"x": "no", "y": 1}}, "input 'p'"),
    ({"p": [1, 2]}, "input 'p': expected an object"),
    ({"p": "point"}, "input 'p'"),
]


def test_batch_rows_of_the_wrong_type_are_recorded_failed_naming_the_input(project, tmp_path):
    src, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    rows = [GOOD_TYPED] + [{**GOOD_TYPED, **patch} for patch, _ in WRONG_TYPES] + [GOOD_TYPED]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prog = pipec.load(project / "typed.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    summary = run_jsonl(prog, src, out)
    recs = {r["line"]: r for r in read_jsonl(out)}
    assert sorted(recs) == list(range(1, len(rows) + 1))
    assert recs[1]["ok"] and recs[len(rows)]["ok"]
    for i, (_, fragment) in enumerate(WRONG_TYPES, 2):
        assert not recs[i]["ok"] and fragment in recs[i]["error"], recs[i]
        assert recs[i]["lm_calls"] == 0                  # no LM call is spent on a row that cannot run
    assert summary.failed == len(WRONG_TYPES)
    preds = prog.run_batch(rows)                          # the API: the same, in input order
    assert [p.ok for p in preds] == [True] + [False] * len(WRONG_TYPES) + [True]


@pytest.mark.parametrize("value", ["1e999", "1" + "0" * 400, "-1e999"])
def test_batch_row_with_an_out_of_range_number_fails_alone(project, tmp_path, value):
    src, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    good = json.dumps(GOOD_TYPED)
    without_n = {k: v for k, v in GOOD_TYPED.items() if k != "n"}      # (a key twice is refused on its own)
    src.write_text(good + "\n" + json.dumps(without_n)[:-1] + ', "n": ' + value + "}\n" + good + "\n")
    prog = pipec.load(project / "typed.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    summary = run_jsonl(prog, src, out)
    recs = {r["line"]: r for r in read_jsonl(out)}
    assert recs[1]["ok"] and recs[3]["ok"] and not recs[2]["ok"]
    assert "input 'n'" in recs[2]["error"] and summary.failed == 1


@pytest.mark.parametrize("row", [None, 5, ["q"], "quiz"], ids=["none", "int", "list", "str"])
def test_run_batch_with_a_row_that_is_not_a_dict_fails_alone(project, row):
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    preds = prog.run_batch([{"q": "ab"}, row, {"q": "cd"}])
    assert [p.ok for p in preds] == [True, False, True]
    assert preds[1].error


def test_batch_line_that_is_not_utf8_is_skipped_by_number(project, tmp_path, lm, capsys):
    src, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b'{"q": "ab"}\n{"q": "caf\xe9"}\n{"q": "cd"}\n')
    rc, _, err = main(capsys, "run", project / "toy.pipe", "--inputs", src, "--output", out, "--no-cache")
    assert rc == 1 and f"skipped: {src}:2: " in err
    assert sorted(r["line"] for r in read_jsonl(out)) == [1, 3]


def test_batch_deeply_nested_row_is_skipped_by_number(project, tmp_path):
    src, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"q": "ab"}\n{"q": ' + DEEP + '}\n{"q": "cd"}\n')
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    summary = run_jsonl(prog, src, out)
    assert summary.ran == 2 and len(summary.skipped) == 1 and summary.skipped[0].startswith(f"{src}:2: ")


def test_batch_utf8_bom_and_odd_text_are_fine(project, tmp_path):
    src, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    words = ["漢字", "é\u0301", "\U0001f600", "tab\there", "nul\x00byte", "line\u2028sep", "q" * 10]
    src.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps({"q": w}, ensure_ascii=False) + "\n" for w in words).encode())
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    summary = run_jsonl(prog, src, out)
    recs = read_jsonl(out)
    assert summary.ran == len(words) and not summary.skipped
    assert sorted(r["outputs"]["a"] for r in recs) == sorted(w[::-1] for w in words)


# ====================================================================== datasets (eval / compile)
def _jsonl_dataset(path: Path) -> dict[int, str]:
    lines = [json.dumps({"q": w, "a": w[::-1]}) for w in WORDS[:4]]
    bad = {
        '{"q": "x", "a": ': "invalid JSON",
        '["q", "a"]': "expected a JSON object, got list",
        '{"q": "nolabel"}': "missing label 'a' that the metric scores",
        '{"a": "noinput"}': "missing input 'q'",
        '{"q": null, "a": "x"}': "missing input 'q'",
    }
    where = {}
    for text, reason in bad.items():
        lines.append(text)
        where[len(lines)] = reason
    path.write_text("\n".join(lines) + "\n")
    return where


def test_dataset_problems_are_all_reported_with_file_and_line_api(project, tmp_path):
    data = tmp_path / "d.jsonl"
    where = _jsonl_dataset(data)
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    with pytest.raises(DatasetError) as info:
        load_examples(data, prog, ["a"])
    problems = info.value.problems
    assert len(problems) == len(where)
    for line, reason in where.items():
        [msg] = [p for p in problems if p.startswith(f"{data}:{line}: ")]
        assert reason in msg, msg
    with pytest.raises(DatasetError) as info:           # the compile path reports the same, before any LM call
        prog.compile(data, data, "exact_match(a)", "labeled_fewshot")
    assert len(info.value.problems) >= len(where)


def test_dataset_problems_cli_eval_and_compile(project, tmp_path, lm, capsys):
    data = tmp_path / "d.jsonl"
    where = _jsonl_dataset(data)
    rc, out, err = main(capsys, "eval", project / "toy.pipe", "--data", data, "--no-cache")
    assert rc == 1 and lm.requests == []
    assert err.startswith("pipec eval: error: ")
    for line in where:
        assert f"{data}:{line}: " in err
    rc, out, err = main(capsys, "compile", project / "toy.pipe", "--trainset", data, "--no-cache")
    assert rc == 1 and lm.requests == []
    assert all(f"{data}:{line}: " in err for line in where)


CSV_CASES = {
    "extra column": (b"q,a\napple,elppa\nriver,revir,extra\n", "3: more values than header columns"),
    "missing column": (b"q,a\napple,elppa\nriver\n", "3: fewer values than header columns"),
    "no header": (b"", "1: no header row"),
    "not utf-8": (b"q,a\ncaf\xe9,x\n", "cannot read"),
    "missing label column": (b"q\napple\n", "2: missing label 'a'"),
    "missing input column": (b"a\nelppa\n", "2: missing input 'q'"),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_csv_dataset_problems_name_the_file_and_line(project, tmp_path, case, lm, capsys):
    data = tmp_path / "d.csv"
    content, fragment = CSV_CASES[case]
    data.write_bytes(content)
    prog = pipec.load(project / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    with pytest.raises(DatasetError) as info:
        load_examples(data, prog, ["a"])
    assert any(p.startswith(f"{data}:") and fragment in p for p in info.value.problems), info.value.problems
    rc, out, err = main(capsys, "eval", project / "toy.pipe", "--data", data, "--metric", "exact_match(a)", "--no-cache")
    assert rc == 1 and f"{data}" in err and fragment in err


def test_csv_quirks_that_are_fine(project, tmp_path):
    data = tmp_path / "d.csv"
    data.write_bytes(b'\xef\xbb\xbfq,a\r\n"multi\nline",x\r\n"with ""quotes""",y\r\nnul\x00byte,z\r\n')
    rows = read_examples(data)
    assert [r.values["q"] for r in rows] == ["multi\nline", 'with "quotes"', "nul\x00byte"]


def test_csv_with_a_huge_cell_is_a_dataset_error_or_reads(project, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("q,a\napple,elppa\n" + "x" * 200_000 + ",y\n")
    try:
        rows = read_examples(data)
    except DatasetError as err:
        assert f"{data}:3" in str(err)
    else:
        assert len(rows) == 2


def test_jsonl_dataset_deeply_nested_row_is_a_dataset_error(project, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "ab", "a": "ba"}\n{"q": ' + DEEP + ', "a": "x"}\n')
    with pytest.raises(DatasetError) as info:
        read_examples(data)
    assert f"{data}:2: " in str(info.value)


def test_dataset_out_of_range_number_is_a_dataset_error(project, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{**GOOD_TYPED, "a": "x"}, {k: v for k, v in GOOD_TYPED.items() if k != "n"} | {"a": "x"}]
    data.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:-1] + ', "n": 1e999}\n')
    prog = pipec.load(project / "typed.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    with pytest.raises(DatasetError) as info:
        load_examples(data, prog, ["a"])
    assert f"{data}:2: input 'n'" in str(info.value)


# ====================================================================== compiled artifacts
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A fixed-demo artifact, a knn one and an ensemble one, compiled on a scripted LM."""
    folder = tmp_path_factory.mktemp("artifacts")
    (folder / "toy.pipe").write_text(TOY, encoding="utf-8")
    rows = [{"q": w, "a": w[::-1]} for w in WORDS]
    out = {}
    for name, optimizer, options in [("fixed", "labeled_fewshot", {"max_labeled": 3}), ("knn", "knn_fewshot", {"k": 2}),
                                     ("ensemble", "ensemble", {"size": 2, "candidates": 3})]:
        prog = pipec.load(folder / "toy.pipe", lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
        compiled = prog.compile(rows[:8], rows[8:], "exact_match(a)", optimizer, seed=1, options=options)
        out[name] = compiled.save(folder / f"{name}.compiled.json").read_bytes()
    return out


def load_outcome(path: Path) -> str:
    """'error' (an ArtifactError naming the file), 'ran' (loaded, and one row ran to a Prediction), or
    'known bug' (the ValueError of test_artifact_naming_an_unknown_pipeline_is_refused)."""
    try:
        prog = pipec.load(path, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    except ArtifactError as err:
        assert str(err).startswith(f"{path}: "), str(err)
        return "error"
    except ValueError as err:
        if "no pipeline" in str(err):
            return "known bug"
        raise
    pred = prog(q="apple")                                # answered or a recorded failure, never an exception
    assert isinstance(pred, pipec.Prediction)
    return "ran"


def test_truncated_artifacts_are_refused_naming_the_file(artifacts, tmp_path):
    counts = {"error": 0, "ran": 0, "known bug": 0}
    for name, blob in artifacts.items():
        cut_points = sorted({int(len(blob) * k / 80) for k in range(80)} | {1, 2, len(blob) - 2, len(blob) - 1})
        for cut in cut_points:
            path = tmp_path / f"{name}-{cut}.compiled.json"
            path.write_bytes(blob[:cut])
            outcome = load_outcome(path)
            counts[outcome] += 1
            if outcome == "ran":                          # only trailing whitespace may go
                assert blob[cut:].strip() == b"", cut
            else:
                assert "not a JSON document" in str(_error(path)) or cut == 0
    record_figure("artifact.truncated", tried=sum(counts.values()), refused=counts["error"], loaded=counts["ran"])
    assert counts["error"] >= 240


def _error(path: Path) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        pipec.load(path, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    return info.value


def test_changed_bytes_are_refused_or_harmless(artifacts, tmp_path):
    rng = random.Random(11)
    counts = {"error": 0, "ran": 0, "known bug": 0}
    for i in range(450):
        name = rng.choice(list(artifacts))
        blob = bytearray(artifacts[name])
        pos = rng.randrange(len(blob))
        blob[pos] = rng.choice([ord(c) for c in '{}[]",:0 x\\'] + [0x00, 0xff, 0x80, blob[pos] ^ 0x20])
        path = tmp_path / f"flip-{i}.compiled.json"
        path.write_bytes(bytes(blob))
        counts[load_outcome(path)] += 1
    record_figure("artifact.byte_changes", tried=sum(counts.values()), refused=counts["error"], loaded_and_ran=counts["ran"],
                  known_bug=counts["known bug"])
    assert counts["error"] > counts["ran"] / 4


WRONG_VALUES = [None, 0, -1, 1e308, "", "x" * 10, [], [1, "a"], {}, {"unexpected": 1}, True]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:2]):
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value, delete=False):
    for p in path[:-1]:
        doc = doc[p]
    if delete:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


def test_every_field_of_the_wrong_type_or_missing_is_refused_or_harmless(artifacts, tmp_path):
    """Each field of the artifact, replaced by values of other types or deleted: an ArtifactError naming
    the file (and for schema problems, the field), or an artifact that still loads and runs."""
    counts = {"error": 0, "ran": 0, "known bug": 0}
    i = 0
    escaped: list[str] = []
    for name in ("fixed", "knn", "ensemble"):
        doc = json.loads(artifacts[name])
        paths = [p for p in _paths(doc) if p and p[0] != "graph" and not (p[0] == "sources" and len(p) > 2)]
        for path in paths:
            for value in WRONG_VALUES + ["<delete>"]:
                tampered = json.loads(artifacts[name])
                if value == "<delete>" and isinstance(path[-1], int):
                    continue
                _set(tampered, path, value, delete=value == "<delete>")
                file = tmp_path / f"field-{i}.compiled.json"
                i += 1
                file.write_text(json.dumps(reseal(tampered)))      # past the fingerprint, to the checks behind it
                try:
                    counts[load_outcome(file)] += 1
                except (AssertionError, ArtifactError):
                    raise
                except Exception as err:        # collected, so that the report lists every place at once
                    escaped.append(f"{name} {'.'.join(map(str, path))} = {value!r}: {type(err).__name__}: {err}")
    record_figure("artifact.fields", tried=i, refused=counts["error"], loaded_and_ran=counts["ran"],
                  known_bug=counts["known bug"], escaped=len(escaped))
    assert not escaped, "\n".join(escaped[:20])


def test_schema_errors_name_the_field(artifacts, tmp_path):
    doc = json.loads(artifacts["fixed"])
    doc["predictors"]["m"]["demos"] = "not a list"
    path = tmp_path / "a.compiled.json"
    path.write_text(json.dumps(doc))
    assert "invalid artifact at 'predictors.m.demos'" in str(_error(path))
    doc = json.loads(artifacts["knn"])
    doc["predictors"]["m"]["knn"]["k"] = 0
    path.write_text(json.dumps(doc))
    assert "invalid artifact at 'predictors.m.knn.k'" in str(_error(path))


VERSIONS = {"next": (FORMAT_VERSION + 1, "newer than this pipec"), "999": (999, "upgrade pipec"), "0": (0, "unknown artifact format version 0"),
            "-1": (-1, "unknown artifact format version -1"), "string": ("1", "no format version"),
            "float": (1.5, "no format version"), "null": (None, "no format version"), "missing": ("<delete>", "no format version")}


@pytest.mark.parametrize("case", list(VERSIONS))
def test_unknown_format_versions_are_refused(artifacts, tmp_path, case, lm, capsys):
    value, fragment = VERSIONS[case]
    doc = json.loads(artifacts["fixed"])
    if value == "<delete>":
        del doc["format_version"]
    else:
        doc["format_version"] = value
    path = tmp_path / "v.compiled.json"
    path.write_text(json.dumps(doc))
    err = _error(path)
    assert str(err).startswith(f"{path}: ") and fragment in str(err)
    rc, out, stderr = main(capsys, "run", path, "-i", "q=x", "--no-cache")
    assert rc == 1 and out == "" and f"pipec run: error: {path}: " in stderr and fragment in stderr


@pytest.mark.parametrize("fmt", ["pipec-compiled-v2", "PIPEC-COMPILED", "", None])
def test_unknown_format_names_are_refused(artifacts, tmp_path, fmt):
    doc = json.loads(artifacts["fixed"])
    doc["format"] = fmt
    path = tmp_path / "f.compiled.json"
    path.write_text(json.dumps(doc))
    assert "not a pipec compiled artifact" in str(_error(path))


def test_ensemble_member_with_an_unknown_predictor_is_refused(artifacts, tmp_path):
    # Members written by hand: on this always-right LM an ensemble only ties its best member, and an
    # ensemble is kept only when it scores strictly higher (it multiplies the calls per input).
    doc = json.loads(artifacts["fixed"])
    doc["ensemble"] = [dict(doc["predictors"]), dict(doc["predictors"])]
    path = tmp_path / "ok.compiled.json"
    path.write_text(json.dumps(reseal(doc)))
    assert pipec.load(path, lm=pipec.ScriptedLM(rule=flip_rule), cache=False).members     # a valid ensemble loads
    doc["ensemble"][0]["nope"] = doc["ensemble"][0].pop("m")
    path = tmp_path / "e.compiled.json"
    path.write_text(json.dumps(reseal(doc)))
    assert "nope" in str(_error(path))


def test_artifact_naming_an_unknown_pipeline_is_refused(artifacts, tmp_path, lm, capsys):
    doc = json.loads(artifacts["fixed"])
    doc["pipeline"] = "nope"
    path = tmp_path / "p.compiled.json"
    path.write_text(json.dumps(reseal(doc)))
    rc, out, err = main(capsys, "run", path, "-i", "q=x", "--no-cache")
    assert rc == 1 and f"pipec run: error: {path}: " in err
    assert "nope" in str(_error(path))


def test_deeply_nested_artifact_is_refused(tmp_path):
    path = tmp_path / "deep.compiled.json"
    path.write_text('{"format": "pipec-compiled", "format_version": 1, "x": ' + DEEP + "}")
    assert "not a JSON document" in str(_error(path)) or "invalid artifact" in str(_error(path))


# ---------------------------------------------------------------------- the real command line, no LM needed
def _damaged(artifacts, tmp_path) -> dict[str, Path]:
    blob = artifacts["fixed"]
    cases = {"truncated": blob[: len(blob) // 2], "empty": b"", "binary": bytes(range(256)),
             "newer version": blob.replace(b'"format_version": %d' % FORMAT_VERSION, b'"format_version": 7'),
             "edited source": blob.replace(b"Reverse the word.", b"Reverse the world."),
             "a list": b"[1, 2, 3]"}
    out = {}
    for name, data in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.compiled.json"
        path.write_bytes(data)
        out[name] = path
    return out


def test_cli_commands_on_damaged_artifacts_exit_1_naming_the_file(artifacts, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "apple", "a": "elppa"}\n')
    checked = 0
    for i, (name, path) in enumerate(_damaged(artifacts, tmp_path).items()):
        commands = [["run", path, "-i", "q=x"], ["eval", path, "--data", data], ["inspect", path], ["graph", path]]
        for command in commands if i % 2 == 0 else commands[:1]:
            run = pipec_cli(*command, "--no-cache" if command[0] in ("run", "eval") else "--pipeline=toy")
            no_traceback(run)
            assert run.returncode == 1, (name, command, run.stderr)
            assert f"pipec {command[0]}: error: {path}: " in run.stderr, (name, run.stderr)
            checked += 1
    record_figure("artifact.cli_damaged", commands=checked, exit_1_no_traceback=checked)
