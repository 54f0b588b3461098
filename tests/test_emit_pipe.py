"""The compiled program as .pipe source (`pipec compile --emit pipe`, `pipec export --pipe`): it checks
clean, sends exactly the messages the artifact sends, and compiling it again starts from its demos."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import first_user_value

import pipec
from pipec.dsl import ast as A
from pipec.dsl.format import check_formatted
from pipec.dsl.parser import parse
from pipec.emit_pipe import literal, program_as_pipe

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = sorted((ROOT / "examples").glob("*.compiled.json"))
UTTERANCES = ["Table for two at 8 tonight", "Play some jazz in the kitchen", "My parcel never arrived",
              "I was charged twice for order 1142", "Will it rain in Paris tomorrow?", "Add Queen to Road Trip",
              "The app crashes when I log in", "Who do I talk to about a partnership?"]


def fill(request):
    """A reply with every field of the request's schema: enough for any kind to run."""
    props = (request.schema or {}).get("properties", {})
    out = {}
    for name, spec in props.items():
        kind = spec.get("type")
        out[name] = (spec["enum"][len(request.messages) % len(spec["enum"])] if "enum" in spec else
                     True if kind == "boolean" else 1 if kind in ("integer", "number") else
                     [] if kind == "array" else f"{name} {len(request.messages)}")
    return out


def fill_demo(program, predictor: str) -> dict:
    """A demo with every field of a predictor, of the right type."""
    p = program.predictors()[predictor]
    return {n: (t.values[0] if t.kind == "enum" else True if t.kind == "bool" else 1 if t.kind in ("int", "float")
                else [] if t.kind == "list" else f"{n} text") for n, t, _ in p.inputs + p.outputs}


def emitted(program, tmp_path, name="compiled.pipe") -> Path:
    path = tmp_path / name
    path.write_text(program_as_pipe(program, path), encoding="utf-8")
    return path


def messages_of(lm) -> list:
    return [r.messages for r in lm.requests]


@pytest.mark.parametrize("artifact", ARTIFACTS, ids=lambda p: p.name)
def test_every_example_artifact_as_pipe_checks_clean_and_sends_the_same_messages(artifact, tmp_path):
    lm_a, lm_b = pipec.ScriptedLM(rule=fill), pipec.ScriptedLM(rule=fill)
    compiled = pipec.load_compiled(artifact, lm=lm_a, cache=False, trust=True)
    path = emitted(compiled, tmp_path)
    text = path.read_text()
    assert check_formatted(text)
    assert text.startswith(f"# Compiled by pipec {pipec.__version__} from {artifact.name.replace('.compiled.json', '.pipe')}")
    assert f"artifact fingerprint {compiled.artifact.fingerprint}" in text
    again = pipec.load(path, lm=lm_b, cache=False)
    assert again.warnings == []
    assert {n: (p.instruction, p.demos, p.knn and (p.knn.k, p.knn.demos)) for n, p in again.predictors().items()} == \
        {n: (p.instruction, p.demos, p.knn and (p.knn.k, p.knn.demos)) for n, p in compiled.predictors().items()}
    [field] = [n for n, _, _ in compiled.inputs]
    for text_in in UTTERANCES:
        assert again(**{field: text_in}).outputs() == compiled(**{field: text_in}).outputs()
    assert messages_of(lm_b) == messages_of(lm_a) and len(lm_a.requests) == len(UTTERANCES)
    # The compile block's data paths are re-rooted to where the file was written.
    block = next(i for i in parse(text, "x")[0].items if isinstance(i, A.CompileBlock))
    trainset = next(s.value.value for s in block.settings if s.name == "trainset")
    assert (tmp_path / trainset).resolve() == (ROOT / "examples" / "data" / Path(trainset).name).resolve()


# ---------------------------------------------------------------------------- kinds with parts, one_of
SUM = """
    signature Sum { "Add the two numbers." in question: str "like 3+4" out answer: str "the sum" }
    module solve = one_of(Predict, ChainOfThought(temperature: 0))(Sum)
    module check = Refine(Sum, rounds: 1)
    pipeline adder(question: str) -> (answer) {
        s = solve(question: question)
        c = check(question: question + " = " + s.answer)
        return answer = c.answer
    }
"""
ROWS = [{"question": f"{i}+{2 * i + 1}", "answer": str(3 * i + 1)} for i in range(24)]
TRAIN, VAL = ROWS[:12], ROWS[12:]


def adder(request):
    """Right only when reasoning is asked for (so ChainOfThought wins the strategy search); Refine's
    parts answer and critique in kind."""
    props = (request.schema or {}).get("properties", {})
    text = first_user_value(request, "question") or ""
    a, b = text.split(" = ")[0].split("+")
    out = fill(request)
    if "answer" in props:
        if text.count("=") and "reasoning" not in props:
            out["answer"] = text.split(" = ")[1]          # Refine passes on what it was given
        else:
            out["answer"] = str(int(a) + int(b)) if "reasoning" in props else "?"
    return out


@pytest.fixture
def compiled_adder(write_pipe):
    lm = pipec.ScriptedLM(rule=adder)
    prog = pipec.load(write_pipe(SUM), lm=lm, cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(answer)", optimizer="auto", seed=0,
                            options={"instructions": 1, "first_rung": 4, "reflect": 0})
    compiled.lm = lm
    return compiled


def test_a_chosen_alternative_and_inner_parts_are_written_and_run_the_same(compiled_adder, tmp_path):
    compiled = compiled_adder
    assert compiled.strategies() == {"solve": "ChainOfThought"}
    # What a compile may leave on a kind's inner predictors: a new instruction, fixed demos, a pool.
    from pipec.artifact import KnnState
    params = compiled.params()
    critique, answer = params["check.critique"], params["check.answer"]
    answer_fields = [n for n, _, _ in compiled.predictors()["check.answer"].inputs]
    params["check.critique"] = critique.model_copy(update={"instruction": "Be strict about sums.", "demos": [
        {**fill_demo(compiled, "check.critique"), "question": "1+3 = 4"}]})
    params["check.answer"] = answer.model_copy(update={"knn": KnnState(k=1, fields=answer_fields, pool=[
        {"question": "1+3 = 4", "answer": "4"}, {"question": "2+5 = 7", "answer": "7"}])})
    compiled.apply(params)
    text = program_as_pipe(compiled, tmp_path / "adder.pipe")
    tree, diags = parse(text, "x.pipe")
    assert diags == []
    decls = {i.name: i for i in tree.items if isinstance(i, A.ModuleDecl)}
    assert decls["solve"].kind == "ChainOfThought" and not decls["solve"].alternatives
    assert [o.name for o in decls["solve"].options][:1] == ["temperature"]
    parts = {f.name: {o.name: o.value for o in f.value.fields}
             for f in next(o for o in decls["check"].options if o.name == "parts").value.fields}
    assert sorted(parts) == ["answer", "critique"]          # revise kept what its kind gives it
    assert parts["critique"]["instruction"] == "Be strict about sums." and len(parts["critique"]["demos"]) == 1
    assert parts["answer"]["nearest"] == 1 and len(parts["answer"]["demos"]) == 2
    path = tmp_path / "adder.pipe"
    path.write_text(text)
    lm_b = pipec.ScriptedLM(rule=adder)
    again = pipec.load(path, lm=lm_b, cache=False)
    before = len(compiled.lm.requests)
    for row in VAL:
        assert again(question=row["question"]).outputs() == compiled(question=row["question"]).outputs()
    assert messages_of(lm_b) == [r.messages for r in compiled.lm.requests[before:]]


def test_compiling_the_written_program_again_starts_from_its_demos(compiled_adder, tmp_path, write_pipe):
    path = compiled_adder.save_pipe(tmp_path / "adder.pipe")
    again = pipec.load(path, lm=pipec.ScriptedLM(rule=adder), cache=False)
    recompiled = again.compile(TRAIN, VAL, "exact_match(answer)", optimizer="labeled_fewshot", seed=0)
    assert recompiled.report.baseline_score == compiled_adder.report.compiled_score == 1.0
    plain = pipec.load(write_pipe(SUM), lm=pipec.ScriptedLM(rule=adder), cache=False)
    assert plain.compile(TRAIN, VAL, "exact_match(answer)", optimizer="labeled_fewshot",
                         seed=0).report.baseline_score == 0.0


# ---------------------------------------------------------------------------- values from elsewhere
def test_hostile_strings_in_an_artifact_stay_strings(write_pipe, tmp_path):
    """An artifact from someone else writes what it likes into instructions and demos; the .pipe file
    holds it as string literals, never as syntax: no extra declaration, the same values read back."""
    evil = '"}) \nmodule evil = Predict(Classify)\n# """ \\u0000 \x00 \x1b[31m \ud800 é 🙂'
    prog = pipec.load(write_pipe("""
        signature Classify { "Label it." in text: str out label: enum(pos, neg) }
        module classify = Predict(Classify)
        pipeline p(text: str) -> (label) { c = classify(text: text) return label = c.label }
    """), lm=pipec.ScriptedLM(rule=fill), cache=False)
    compiled = prog.compile([{"text": "a", "label": "pos"}] * 4, [{"text": "b", "label": "pos"}] * 2,
                            "exact_match(label)", optimizer="labeled_fewshot", seed=0)
    params = compiled.params()
    params["classify"] = params["classify"].model_copy(update={
        "instruction": evil, "demos": [{"text": evil, "label": "pos"}]})
    compiled.apply(params)
    text = program_as_pipe(compiled, tmp_path / "x.pipe")
    tree, diags = parse(text, "x.pipe")
    assert diags == []
    assert [i.name for i in tree.items if isinstance(i, A.ModuleDecl)] == ["classify"]
    [decl] = [i for i in tree.items if isinstance(i, A.ModuleDecl)]
    opts = {o.name: o.value for o in decl.options}
    want = evil.replace("\ud800", "\ufffd")          # a lone surrogate cannot be stored in a file at all
    assert opts["instruction"] == want and opts["demos"][0].fields[0].value == want


def test_literal_reads_back_as_the_same_value():
    for value in ["plain", 'q"uote\\slash', "tab\tnew\nline\rcr", "\x01\x7f é 🙂", 3, -2.5, 1e-07, True, False,
                  ["a", 1, [2.0]], {"a": {"b": [True]}}]:
        tree, diags = parse(f"lm x = \"m\" (v: {literal(value)})", "x.pipe")
        assert diags == [], (value, diags)
        assert A.plain(tree.items[0].options[0].value) == value
    with pytest.raises(ValueError, match="cannot be written"):
        literal(float("nan"))
    with pytest.raises(ValueError, match="field name"):
        literal({"not a name": 1})


def test_an_uncompiled_program_or_an_ensemble_is_refused(write_pipe):
    prog = pipec.load(write_pipe(SUM), lm=pipec.ScriptedLM(rule=adder), cache=False)
    with pytest.raises(ValueError, match="only a compiled program"):
        program_as_pipe(prog)


# ---------------------------------------------------------------------------- the command line
def test_cli_compile_emit_pipe_writes_the_program_beside_the_artifact(tmp_path, monkeypatch, capsys):
    import shutil
    from pipec import cli
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.compiled.*"))
    lm = pipec.ScriptedLM(rule=fill)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    src = tmp_path / "examples" / "support.pipe"
    out = tmp_path / "out" / "support.compiled.json"
    assert cli.main(["compile", str(src), "--no-cache", "--budget", "60", "-o", str(out), "--emit", "pipe"]) == 0
    pipe = out.with_name("support.compiled.pipe")
    assert f"wrote {pipe}" in capsys.readouterr().out
    assert cli.main(["check", str(pipe)]) == 0
    art = json.loads(out.read_text())
    assert f"artifact fingerprint {art['fingerprint']}" in pipe.read_text()
    # A file that is not an earlier compiled .pipe is never written over.
    pipe.write_text("my notes")
    assert cli.main(["compile", str(src), "--no-cache", "--budget", "60", "-o", str(out), "--emit", "pipe"]) == 2
    assert pipe.read_text() == "my notes"


def test_cli_export_pipe_writes_an_artifact_as_source(tmp_path, capsys):
    from pipec import cli
    art = ROOT / "examples" / "support.compiled.json"
    out = tmp_path / "support.pipe"
    assert cli.main(["export", str(art), "--pipe", "-o", str(out)]) == 0
    assert out.read_text() == program_as_pipe(pipec.load_compiled(art, cache=False), out)
    assert cli.main(["check", str(out)]) == 0
    assert cli.main(["export", str(art), "--pipe", "-o", str(out)]) == 2          # never over an existing file
    assert cli.main(["export", str(art), "--pipe"]) == 0
    assert capsys.readouterr().out.endswith(program_as_pipe(pipec.load_compiled(art, cache=False)))
    assert cli.main(["export", str(ROOT / "examples" / "support.pipe"), "--pipe"]) == 1
    assert "only a compiled program" in capsys.readouterr().err
