"""The compiled artifact as a user sees it: save, load, run with the tuned demos, no secrets inside,
clear errors for damaged files, and portability (sources are embedded)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import first_user_value

import pipec
from tampering import reseal
from pipec import cli
from pipec.artifact import FORMAT_VERSION, ArtifactError, read_artifact

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TOY = """
    signature Flip { "Answer." in q: str out a: str }
    module m = Predict(Flip)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "lemon", "sugar", "house", "green"]
ROWS = [{"q": w, "a": w[::-1]} for w in WORDS]
TRAIN, VAL = ROWS[:8], ROWS[8:]


def has_demos(request) -> bool:
    return any(m["role"] == "assistant" for m in request.messages[1:-1])


def flip_rule(request):
    q = first_user_value(request, "q")
    return {"a": q[::-1] if has_demos(request) else "?"}


def compile_and_save(path, out, optimizer="labeled_fewshot", **kw):
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", optimizer, seed=1, **kw)
    return compiled, compiled.save(out)


@pytest.fixture
def toy(write_pipe):
    return write_pipe(TOY, "toy.pipe")


@pytest.fixture
def artifact(toy):
    compiled, path = compile_and_save(toy, toy.parent / "toy.compiled.json", options={"max_labeled": 3})
    return path


def pipec_cmd(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "pipec", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


# ---------------------------------------------------------------------------- save and load
def test_loaded_artifact_runs_with_the_tuned_demos(toy, artifact):
    art = json.loads(artifact.read_text())
    assert art["format"] == "pipec-compiled" and art["format_version"] == FORMAT_VERSION
    demos = art["predictors"]["m"]["demos"]
    assert len(demos) == 3 and all(d["a"] == d["q"][::-1] for d in demos)
    assert art["sources"]["main"] == "toy.pipe" and art["sources"]["files"]["toy.pipe"] == toy.read_text()

    lm = pipec.ScriptedLM(rule=flip_rule)
    prog = pipec.load(artifact, lm=lm, cache=False)
    assert prog.report.compiled_score == 1.0 and prog.report.optimizer == "labeled_fewshot"
    assert prog(q="violet").a == "teloiv"
    msgs = lm.requests[0].messages
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    for i, demo in enumerate(demos):
        assert msgs[1 + 2 * i]["content"] == f"q: {demo['q']}"
        assert json.loads(msgs[2 + 2 * i]["content"]) == {"a": demo["a"]}
    assert msgs[-1]["content"] == "q: violet"
    assert {k: v.model_dump() for k, v in prog.params().items()} == art["predictors"]


def test_the_source_file_is_not_needed_to_run_an_artifact(toy, artifact):
    toy.write_text("this is not a pipe file any more")
    prog = pipec.load(artifact, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    assert prog(q="apple").a == "elppa"


def test_resaving_a_loaded_artifact_is_byte_identical(artifact, tmp_path):
    prog = pipec.load(artifact, lm=pipec.ScriptedLM(rule=flip_rule), cache=False)
    again = prog.save(artifact.parent / "again.compiled.json")
    assert again.read_bytes() == artifact.read_bytes()


COMMON = """
    signature Flip { "Answer." in q: str out a: str }
"""
MAIN_WITH_IMPORT = """
    import "lib/common.pipe"
    module m = Predict(Flip)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""


@pytest.mark.parametrize("out", ["toy.compiled.json", "build/out/toy.compiled.json"])
def test_artifact_moved_alone_to_another_folder_still_loads(write_pipe, tmp_path, tmp_path_factory, out):
    (tmp_path / "lib").mkdir()
    write_pipe(COMMON, "lib/common.pipe")
    main = write_pipe(MAIN_WITH_IMPORT, "toy.pipe")
    compiled, saved = compile_and_save(main, tmp_path / out)
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "deep" / "moved.json"
    elsewhere.parent.mkdir()
    shutil.copy(saved, elsewhere)
    shutil.rmtree(tmp_path)                      # nothing of the project is left
    lm = pipec.ScriptedLM(rule=flip_rule)
    prog = pipec.load(elsewhere, lm=lm, cache=False)
    assert prog(q="apple").a == "elppa"
    assert len(lm.requests[0].messages) == 2 * 4 + 2      # the 4 default labeled demos came along


def test_knn_artifact_picks_demos_per_input(toy, tmp_path):
    compiled, path = compile_and_save(toy, tmp_path / "knn.json", "knn_fewshot", options={"k": 1})
    art = json.loads(path.read_text())
    pool = art["predictors"]["m"]["knn"]["pool"]
    assert art["predictors"]["m"]["demos"] == [] and {d["q"] for d in pool} == set(WORDS[:8])
    lm = pipec.ScriptedLM(rule=flip_rule)
    prog = pipec.load(path, lm=lm, cache=False)
    prog(q="tigers")
    prog(q="pianos")
    assert lm.requests[0].messages[1]["content"] == "q: tiger"
    assert lm.requests[1].messages[1]["content"] == "q: piano"


# ---------------------------------------------------------------------------- no secrets
SECRET_PIPE = """
    lm x = "openai/m" (api_key_env: "MY_KEY", temperature: 0)
    signature Flip { "Answer." in q: str out a: str }
    module m = Predict(Flip, lm: x)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""


def test_artifact_never_contains_an_api_key_value(write_pipe, tmp_path, monkeypatch):
    secrets = ["sk-openai-secret-value-0123456789", "my-custom-secret-value-9876543210"]
    monkeypatch.setenv("OPENAI_API_KEY", secrets[0])
    monkeypatch.setenv("MY_KEY", secrets[1])
    path = write_pipe(SECRET_PIPE, "secret.pipe")
    cache = tmp_path / "cache"
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=flip_rule), cache=cache)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "bootstrap_fewshot")
    out = compiled.save(tmp_path / "secret.compiled.json")
    text = out.read_text()
    art = json.loads(text)
    assert art["lms"]["x"] == {"model": "openai/m", "options": {"api_key_env": "MY_KEY", "temperature": 0}}
    written = [text] + [p.read_text(errors="replace") for p in (cache / "compiled").iterdir()]
    for blob in written:
        for s in secrets:
            assert s not in blob


# ---------------------------------------------------------------------------- damaged artifacts
def _damage(kind, path):
    text = path.read_text()
    art = json.loads(text)
    if kind == "truncated":
        path.write_text(text[: len(text) // 2])
        return "not a JSON document"
    if kind == "edited source":
        art["sources"]["files"]["toy.pipe"] = art["sources"]["files"]["toy.pipe"].replace('"Answer."', '"Lie."')
    elif kind == "wrong type":
        art["report"]["seed"] = "seven"
        path.write_text(json.dumps(art))
        return "invalid artifact at 'report.seed'"
    elif kind == "demos not a list":
        art["predictors"]["m"]["demos"] = "none"
        path.write_text(json.dumps(art))
        return "invalid artifact at 'predictors.m.demos'"
    elif kind == "newer version":
        art["format_version"] = 99
        path.write_text(json.dumps(art))
        return "format version 99 is newer than this pipec"
    elif kind == "version zero":
        art["format_version"] = 0
        path.write_text(json.dumps(art))
        return "unknown artifact format version 0"
    elif kind == "not an artifact":
        path.write_text(json.dumps({"q": "apple", "a": "elppa"}))
        return "not a pipec compiled artifact"
    elif kind == "a list":
        path.write_text("[1, 2]")
        return "not a pipec compiled artifact"
    elif kind == "unknown predictor":
        art["predictors"]["n"] = art["predictors"].pop("m")
        path.write_text(json.dumps(reseal(art)))
        return "no predictor 'n'"
    elif kind == "edited demo":
        art["predictors"]["m"]["demos"][0]["a"] = "planted"
        path.write_text(json.dumps(art))
        return "does not match its fingerprint"
    elif kind == "edited metric":
        art["report"]["metric"] = 'python("planted:score")'
        path.write_text(json.dumps(art))
        return "does not match its fingerprint"
    elif kind == "unknown key":
        art["report"]["secret_sauce"] = 1
        path.write_text(json.dumps(art))
        return "invalid artifact at 'report.secret_sauce'"
    path.write_text(json.dumps(art))
    return "do not match their fingerprint"


DAMAGE = ["truncated", "edited source", "wrong type", "demos not a list", "newer version", "version zero",
          "not an artifact", "a list", "unknown predictor", "unknown key", "edited demo", "edited metric"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_artifact_is_a_clear_error_naming_the_file(artifact, kind):
    fragment = _damage(kind, artifact)
    with pytest.raises(ArtifactError) as exc:
        pipec.load(artifact, lm=pipec.ScriptedLM([]), cache=False)
    msg = str(exc.value)
    assert msg.startswith(f"{artifact}: ") and fragment in msg, msg


@pytest.mark.parametrize("kind", ["truncated", "edited source", "wrong type", "newer version", "not an artifact",
                                  "unknown predictor"])
def test_cli_run_on_a_damaged_artifact_exits_1_without_traceback(artifact, kind):
    fragment = _damage(kind, artifact)
    rc, out, err = pipec_cmd("run", artifact, "-i", "q=apple", "--no-cache")
    assert rc == 1, (out, err)
    assert "Traceback" not in err and out == ""
    assert f"pipec run: error: {artifact}: " in err and fragment in err


def test_newer_version_message_says_to_upgrade(artifact):
    _damage("newer version", artifact)
    with pytest.raises(ArtifactError, match="upgrade pipec"):
        read_artifact(artifact)


def test_missing_artifact_file(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        read_artifact(tmp_path / "nope.json")
    rc, out, err = pipec_cmd("run", tmp_path / "nope.json", "-i", "q=x")
    assert rc == 2 and "no such file" in err and "Traceback" not in err


def test_cli_inspect_an_artifact_shows_its_demos(artifact):
    rc, out, err = pipec_cmd("inspect", artifact)
    assert rc == 0, err
    demos = json.loads(artifact.read_text())["predictors"]["m"]["demos"]
    for d in demos:
        assert f"q: {d['q']}" in out and json.dumps({"a": d["a"]}) in out


def test_cli_run_an_artifact_uses_its_demos(artifact, monkeypatch, capsys):
    lm = pipec.ScriptedLM(rule=flip_rule)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    assert cli.main(["run", str(artifact), "-i", "q=violet", "--no-cache"]) == 0
    assert capsys.readouterr().out == "a: teloiv\n"
    assert has_demos(lm.requests[0])
