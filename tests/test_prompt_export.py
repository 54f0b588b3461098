"""`pipec export --prompts`: the exported prompts are the ones pipec sends, byte for byte.

The Python export is checked against what `pipec.ScriptedLM` receives (messages, reply schema,
sampling parameters), for every predictor of the checked-in artifacts (per-input nearest demos) and
of a compiled multi-predictor program, in a subprocess that cannot import pipec (`python -I -S`).
An end-to-end test (marked e2e) sends the exported requests to the embedded model through llama-cpp
directly and gets pipec's replies.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipec
from pipec.lm.local import LocalLM
from pipec.prompt_export import ExportError, export_prompts

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

ROOT = Path(__file__).resolve().parent.parent
INTENT = ROOT / "examples" / "intent.compiled.json"
SUPPORT = ROOT / "examples" / "support.compiled.json"
HOSTILE = '"""); open("PWNED", "w")  #'
REAL_LLAMA = LocalLM._llama                 # the e2e test loads the model, which the unit tests refuse
HOSTILE_2 = "'''); __import__('os').system('touch PWNED2')  # \\ \x1b[31m"

# The exported module, run where pipec cannot be imported; prints request(...) of every case as JSON.
ISOLATED = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("pipec") is None, "pipec is importable here"
sys.path.insert(0, sys.argv[1])
import exported_prompts as m
cases = json.load(open(sys.argv[2], encoding="utf-8"))
out = [m.request(c["name"], **c["inputs"]) for c in cases]
third_party = sorted({k.split(".")[0] for k in sys.modules} & {"pipec", "pydantic", "lark", "litellm"})
assert not third_party, third_party
print(json.dumps(out))
"""

MULTI = """
signature Summ {
    "Summarize the customer's message in a few words."
    in  message: str "what the customer wrote"
    out summary: str "a few words"
}
signature Route {
    "Route the summary to the team that handles it."
    in  summary: str
    in  urgent: bool? "whether the customer said it is urgent"
    out team: enum(billing, shipping, other)
}
signature Note {
    "Write a one-line note for the team."
    in  message: str
    in  team: str
    out note: str
}
module summarize = ChainOfThought(Summ, rationale: "one short sentence",
    demos: [{message: "Refund my order", reasoning: "It asks for money back.", summary: "refund request"}],
    pin: [demos])
module route = Majority(Route, n: 3)
module note = ZeroShotCoT(Note)

pipeline triage(message: str, urgent: bool?) -> (team, note) {
    s = summarize(message: message)
    r = route(summary: s.summary, urgent: urgent)
    n = note(message: message, team: r.team)
    return team = r.team, note = n.note
}
"""
WORDS = {"refund": "billing", "charged": "billing", "invoice": "billing", "parcel": "shipping",
         "delivery": "shipping", "package": "shipping"}
MESSAGES = ["Please refund my last order", "My parcel never arrived", "Where is my package", "I was charged twice",
            "Invoice is wrong", "Hello there", "Delivery was late", "What are your hours"]


def team_of(text: str) -> str:
    return next((t for w, t in WORDS.items() if w in text.lower()), "other")


def multi_rule(request):
    props = (request.schema or {}).get("properties", {})
    user = request.messages[-1]["content"]
    if "summary" in props:
        return {"reasoning": "short", "summary": user.split("message: ", 1)[-1][:40]}
    if "team" in props:
        return {"reasoning": "by keyword", "team": team_of(user)}
    if "note" in props:
        return {"note": "see " + user[:20]}
    return {"reasoning": "thinking it over"}


@pytest.fixture(scope="module")
def multi_artifact(tmp_path_factory) -> Path:
    """A compiled ChainOfThought + Majority + ZeroShotCoT program: four predictors, one with a written
    demo, three with per-input nearest demos."""
    folder = tmp_path_factory.mktemp("multi")
    (folder / "multi.pipe").write_text(MULTI, encoding="utf-8")
    rows = [{"message": f"{m} #{i}", "urgent": i % 2 == 0, "team": team_of(m)} for i in range(4) for m in MESSAGES]
    prog = pipec.load(folder / "multi.pipe", lm=pipec.ScriptedLM(rule=multi_rule), cache=False)
    compiled = prog.compile(rows[:20], rows[20:], "exact_match(team)", optimizer="knn_fewshot", seed=0)
    out = folder / "multi.compiled.json"
    compiled.save(out)
    return out


def sent(artifact: Path, inputs: list[dict], rule) -> tuple[list[dict], list[dict]]:
    """Run pipec on each input with a ScriptedLM: the cases (predictor and the values it was called
    with, from the trace) and what the LM received for each (messages, schema, params)."""
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(artifact, lm=lm, cache=False)
    records = []
    for values in inputs:
        pred = prog(**values)
        assert pred.ok, pred.error
        records += [r for r in pred.trace if r.predictor]
    assert len(records) == len(lm.requests)
    cases, expected = [], []
    for rec, req in zip(records, lm.requests):
        assert rec.messages == req.messages            # the trace pairs with what the LM got
        cases.append({"name": rec.predictor, "inputs": rec.inputs})
        expected.append({"messages": req.messages, "schema": req.schema, "params": req.params})
    return cases, expected


def run_isolated(tmp_path: Path, text: str, cases: list[dict]) -> list[dict]:
    folder = tmp_path / "isolated"
    folder.mkdir(exist_ok=True)
    (folder / "exported_prompts.py").write_text(text, encoding="utf-8")
    (folder / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED, str(folder), str(folder / "cases.json")],
                          cwd=folder, capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def load_module(path: Path, name: str = "exported_prompts_inproc"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(path: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]


# ------------------------------------------------------------------ (a) the exact messages pipec sends
@pytest.mark.parametrize("artifact, data, reply", [
    (INTENT, "intent_test.jsonl", {"intent": "play_music"}),
    (SUPPORT, "triage_test.jsonl", {"team": "other"}),
])
def test_python_export_renders_what_pipec_sends_on_the_example_artifacts(tmp_path, artifact, data, reply):
    inputs = [{k: v for k, v in row.items() if k in ("utterance", "message")}
              for row in rows(ROOT / "examples" / "data" / data, 8)]
    inputs.append({next(iter(inputs[0])): "ünïcode {braces} \"quotes\"\nand a second line"})
    cases, expected = sent(artifact, inputs, lambda request: reply)
    got = run_isolated(tmp_path, export_prompts(artifact, format="python"), cases)
    assert got == expected
    # Per-input demos: the inputs got different demos from the pool, and the export picked the same.
    assert len({json.dumps(e["messages"][1:-1]) for e in expected}) > 3


def test_python_export_renders_what_pipec_sends_for_every_predictor_of_a_compiled_program(tmp_path, multi_artifact):
    inputs = [{"message": "My parcel is late again", "urgent": True}, {"message": "Refund the double charge"},
              {"message": "Hello, what are your hours?", "urgent": False}]
    cases, expected = sent(multi_artifact, inputs, multi_rule)
    assert {c["name"] for c in cases} == {"summarize", "route.reason", "note.reason", "note.extract"}
    assert sum(c["name"] == "route.reason" for c in cases) == 9          # n: 3 samples per input
    got = run_isolated(tmp_path, export_prompts(multi_artifact, format="python"), cases)
    assert got == expected


def test_a_reply_that_does_not_parse_gets_the_exported_retry(tmp_path):
    from pipec.dsl.types import Type
    from pipec.reply_parser import ReplyError, parse_reply
    lm = pipec.ScriptedLM(["no json here", {"intent": "get_weather"}])
    prog = pipec.load(INTENT, lm=lm, cache=False)
    assert prog(utterance="Rain in Oslo?").ok
    first, retry = lm.requests
    with pytest.raises(ReplyError) as err:
        parse_reply("no json here", [("intent", Type("enum", values=(
            "add_to_playlist", "book_restaurant", "get_weather", "play_music")))], False)
    (tmp_path / "m.py").write_text(export_prompts(INTENT, format="python"), encoding="utf-8")
    module = load_module(tmp_path / "m.py")
    assert module.render("classify", utterance="Rain in Oslo?") == first.messages
    assert module.retry_messages("classify", first.messages, "no json here", str(err.value)) == retry.messages


def test_a_text_backend_gets_no_schema_and_the_export_says_so(write_pipe):
    path = write_pipe('signature S { "Echo." in q: str out a: str } module m = Predict(S) '
                      'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
    lm = pipec.ScriptedLM(rule=lambda r: {"a": "x"}, structured="text")
    prog = pipec.load(path, lm=lm, cache=False)
    prog(q="hi")
    module = {}
    exec(export_prompts(prog, format="python"), module)
    assert module["request"]("m", q="hi") == {"messages": lm.requests[0].messages, "schema": None,
                                              "params": lm.requests[0].params}
    assert lm.requests[0].schema is None
    spec = json.loads(export_prompts(prog, format="json"))["predictors"]["m"]
    assert spec["schema_sent"] is False and spec["schema"]["required"] == ["a"]
    assert spec["system"].endswith('Reply with one JSON object with the key "a" and nothing else.')


def test_every_member_of_an_ensemble_is_exported(write_pipe):
    path = write_pipe('signature S { "Echo." in q: str out a: str } module m = Predict(S) '
                      'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
    lm = pipec.ScriptedLM(rule=lambda r: {"a": "x"})
    prog = pipec.load(path, lm=lm, cache=False)
    prog.set_ensemble([{"m": {"instruction": "First.", "demos": []}},
                       {"m": {"instruction": "Second.", "demos": [{"q": "hi", "a": "ho"}]}}])
    prog(q="hello")
    module = {}
    exec(export_prompts(prog, format="python"), module)
    assert module["names"]() == ["m", "m@2"]
    rendered = [module["render"](name, q="hello") for name in ("m", "m@2")]
    assert sorted(map(json.dumps, rendered)) == sorted(json.dumps(r.messages) for r in lm.requests)


def test_a_prompt_that_is_not_a_template_over_its_inputs_is_refused(monkeypatch):
    from pipec.modules.base import Predictor
    real = Predictor.messages
    monkeypatch.setattr(Predictor, "messages",
                        lambda self, values: real(self, {k: str(v).upper() for k, v in values.items()}))
    with pytest.raises(ExportError, match="predictor classify: its prompt is not a template over its inputs"):
        export_prompts(INTENT, format="python")


# ------------------------------------------------------------------ (b) json and text
def test_json_export_holds_the_templates_demos_pool_and_schema(multi_artifact):
    doc = json.loads(export_prompts(multi_artifact, format="json"))
    prog = pipec.load(multi_artifact, cache=False)
    preds = prog.predictors()
    assert doc["format"] == "pipec-prompts" and doc["pipeline"] == "triage"
    assert doc["artifact_fingerprint"] == prog.artifact.fingerprint
    assert list(doc["predictors"]) == list(preds)
    for name, spec in doc["predictors"].items():
        p = preds[name]
        assert spec["system"] == p.prefix_for([])[0]["content"]
        assert spec["schema"] == p.schema and spec["schema_sent"] is True      # the embedded model: a grammar
        assert spec["structured"] == "grammar" and spec["params"] == p.params
    summarize = doc["predictors"]["summarize"]
    assert summarize["knn"] is None and summarize["pinned"] == ["demos"]
    assert summarize["demos"] == [[{"role": "user", "content": "message: Refund my order"},
                                   {"role": "assistant", "content": json.dumps(
                                       {"reasoning": "It asks for money back.", "summary": "refund request"})}]]
    assert summarize["user"] == ["message: ", {"slot": "message"}]
    route = doc["predictors"]["route.reason"]
    assert route["user"] == ["summary: ", {"slot": "summary"}, "\nurgent: ", {"slot": "urgent"}]
    assert route["inputs"][1] == {"name": "urgent", "type": "bool?",
                                  "description": "whether the customer said it is urgent", "optional": True}
    assert route["knn"]["k"] == 3 and route["knn"]["fields"] == ["summary", "urgent"]
    assert len(route["knn"]["pool"]) == len(route["knn"]["demos"]) == len(preds["route.reason"].knn.demos) > 0
    assert route["knn"]["demos"][0] == preds["route.reason"].prefix_for([route["knn"]["pool"][0]])[1:]
    extract = doc["predictors"]["note.extract"]
    assert extract["user"] == ["message: ", {"slot": "message"}, "\nteam: ", {"slot": "team"}, "\nreasoning: ",
                               {"slot": "reasoning"}, "\n\nTherefore, the answer is"]
    assert extract["retry"][1] == {"slot": "error"}


def test_text_export_shows_the_templates_demos_pool_and_schema(multi_artifact):
    text = export_prompts(multi_artifact)
    prog = pipec.load(multi_artifact, cache=False)
    preds = prog.predictors()
    assert text.startswith("# pipec prompt export: pipeline triage")
    for name, p in preds.items():
        assert f"== {name} (" in text
        assert p.prefix_for([])[0]["content"] in text
        assert json.dumps(p.schema, ensure_ascii=False) in text
    assert "--- user\nsummary: {summary}\nurgent: {urgent}\n" in text
    assert "--- user (demo 1)\nmessage: Refund my order\n--- assistant (demo 1)\n" in text
    assert "message: {message}\nteam: {team}\nreasoning: {reasoning}\n\nTherefore, the answer is" in text
    assert "sent as a llama.cpp grammar" in text
    pool = preds["note.reason"].knn.demos
    assert f"--- knn pool: {len(pool)} demos" in text
    assert f"--- user (pool demo {len(pool) - 1})\nmessage: {pool[-1]['message']}\nteam: {pool[-1]['team']}" in text


def test_a_persona_answer_says_what_heads_its_system_message(write_pipe):
    path = write_pipe('signature S { "Advise." in q: str out a: str } module m = Persona(S) '
                      'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
    doc = json.loads(export_prompts(path, format="json"))
    assert "note" not in doc["predictors"]["m.persona"]
    assert "the identity that m.persona wrote" in doc["predictors"]["m.answer"]["note"]


# ------------------------------------------------------------------ (c) hostile text stays text
def test_hostile_text_in_instructions_demos_and_pools_stays_text(tmp_path, write_pipe):
    def pipe_string(s):                     # a .pipe string literal: its escapes are JSON's
        return json.dumps(s)
    path = write_pipe(f'''
        signature S {{ {pipe_string("Classify. " + HOSTILE)} in q: str {pipe_string(HOSTILE_2)} out a: str }}
        module m = Predict(S, demos: [{{q: {pipe_string(HOSTILE)}, a: {pipe_string(HOSTILE_2)}}}])
        pipeline p(q: str) -> (a) {{ return a = m(q: q).a }}
    ''')
    rows_ = [{"q": f"{HOSTILE} {i}", "a": HOSTILE_2} for i in range(6)]
    lm = pipec.ScriptedLM(rule=lambda r: {"a": HOSTILE_2})
    prog = pipec.load(path, lm=lm, cache=False)
    compiled = prog.compile(rows_[:4], rows_[4:], "exact_match(a)", optimizer="knn_fewshot", seed=0)
    artifact = tmp_path / "hostile.compiled.json"
    compiled.save(artifact)
    inputs = [{"q": HOSTILE}, {"q": HOSTILE_2 + '\n"""'}]
    for source in (path, artifact):           # written demos; a knn pool of hostile rows
        cases, expected = sent(source, inputs, lambda r: {"a": "x"})
        text = export_prompts(source, format="python")
        got = run_isolated(tmp_path, text, cases)
        assert got == expected
        assert any(HOSTILE in m["content"] for g in got for m in g["messages"][1:])
        assert not (tmp_path / "isolated" / "PWNED").exists() and not (tmp_path / "isolated" / "PWNED2").exists()
    pool = json.loads(export_prompts(artifact, format="json"))["predictors"]["m"]["knn"]["pool"]
    assert pool[0]["q"] == f"{HOSTILE} 0"
    assert "\x1b" not in export_prompts(artifact) and "\\x1b[31m" in export_prompts(artifact)   # no terminal escapes


# ------------------------------------------------------------------ (e) the command line
def cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipec", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_cli_writes_stdout_by_default_and_a_file_with_o(tmp_path, capsys):
    from pipec.cli import main
    assert main(["export", str(INTENT), "--prompts", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == json.loads(export_prompts(INTENT, format="json", source=str(INTENT)))
    target = tmp_path / "intent_prompts.py"
    assert main(["export", str(INTENT), "--prompts", "-f", "python", "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text(encoding="utf-8") == export_prompts(INTENT, format="python", source=str(INTENT))
    assert load_module(target, "intent_prompts").names() == ["classify"]


def test_cli_never_clobbers_without_force_and_force_replaces_only_an_export(tmp_path, capsys):
    from pipec.cli import main
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert main(["export", str(INTENT), "--prompts", "-o", str(notes)]) == 2
    assert "exists; it was not changed (--force replaces an earlier export)" in capsys.readouterr().err
    assert main(["export", str(INTENT), "--prompts", "-o", str(notes), "--force"]) == 2
    assert "holds something other than a pipec prompt export" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"
    earlier = tmp_path / "prompts.txt"
    assert main(["export", str(SUPPORT), "--prompts", "-o", str(earlier)]) == 0
    assert main(["export", str(INTENT), "--prompts", "-o", str(earlier)]) == 2
    assert "pipeline support" in earlier.read_text()
    assert main(["export", str(INTENT), "--prompts", "-f", "json", "-o", str(earlier), "--force"]) == 0
    assert json.loads(earlier.read_text())["pipeline"] == "intent"
    copy = tmp_path / "copy.compiled.json"
    copy.write_bytes(INTENT.read_bytes())
    assert main(["export", str(copy), "--prompts", "-o", str(copy), "--force"]) == 2     # never the artifact read
    assert copy.read_bytes() == INTENT.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.compiled.json", "notes.txt", "prompts.txt"]


def test_cli_without_a_mode_names_the_modes():
    proc = cli("export", str(INTENT))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("pipec export: error: say what to export: --prompts (")
    proc = cli("export", "--help")
    assert "--prompts" in proc.stdout and "--format" in proc.stdout


@pytest.mark.parametrize("content, status, message", [
    (None, 2, "pipec export: error: no such file: "),
    ('{"format": "pipec-compiled", "format_version": 2, "pipel', 1, "not a JSON document (truncated or damaged?)"),
    ('{"format": "pipec-compiled", "format_version": 2}', 1, "invalid artifact at"),
])
def test_cli_says_in_one_line_what_is_wrong_with_the_artifact(tmp_path, content, status, message):
    path = tmp_path / "broken.compiled.json"
    if content is not None:
        path.write_text(content)
    proc = cli("export", str(path), "--prompts", "-f", "python")
    assert proc.returncode == status and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert message in proc.stderr


def test_an_artifact_from_elsewhere_exports_without_approval_and_runs_nothing(tmp_path, write_pipe, tool_module):
    marker = tmp_path / "imported.txt"
    mod = tool_module(f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
                      "def shout(text: str) -> str:\n    return text.upper()\n")
    path = write_pipe(f'''
        tool shout(text: str) -> str = python("{mod}:shout")
        signature S {{ "Echo." in q: str out a: str }}
        module m = Predict(S)
        pipeline p(q: str) -> (a) {{ loud = shout(text: q) return a = m(q: loud).a }}
    ''')
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=lambda r: {"a": "X"}), cache=False)
    compiled = prog.compile([{"q": "a", "a": "X"}] * 4, [{"q": "b", "a": "X"}] * 2, "exact_match(a)",
                            optimizer="labeled_fewshot", seed=0)
    artifact = tmp_path / "p.compiled.json"
    compiled.save(artifact)
    marker.unlink()                          # the compile ran the tool; the export must not
    elsewhere = {"PIPEC_TRUST_DIR": str(tmp_path / "empty-trust-store")}
    proc = cli("export", str(artifact), "--prompts", "-f", "json", env=elsewhere, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)["predictors"]) == ["m"] and not marker.exists()
    refused = cli("run", str(artifact), "--input", "q=hi", env=elsewhere, cwd=tmp_path)
    assert refused.returncode == 2 and "was not compiled on this machine" in refused.stderr and not marker.exists()


# ------------------------------------------------------------------ (d) the same replies from the model
@pytest.mark.e2e
def test_exported_prompts_get_pipecs_replies_from_the_embedded_model(tmp_path, monkeypatch):
    """The exported requests, sent to SmolLM2 through llama-cpp directly (the model file, context and
    threads pipec uses; its sampling parameters; the reply schema as a llama.cpp grammar, as pipec
    sends it), get the replies pipec got."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    monkeypatch.setattr(LocalLM, "_llama", REAL_LLAMA)
    from pipec.lm.local import model_path
    (tmp_path / "intent_prompts.py").write_text(export_prompts(INTENT, format="python"), encoding="utf-8")
    exported = load_module(tmp_path / "intent_prompts.py", "intent_prompts_e2e")
    prog = pipec.load(INTENT, cache=False, trust=True)
    llama = llama_cpp.Llama(model_path=model_path("smollm2"), n_ctx=2048, n_threads=max(1, min(4, os.cpu_count() or 1)),
                            seed=0, verbose=False)
    try:
        utterances = [row["utterance"] for row in rows(ROOT / "examples" / "data" / "intent_test.jsonl", 4)]
        replies = set()
        for utterance in utterances:
            pred = prog(utterance=utterance)
            request = exported.request("classify", utterance=utterance)
            assert request["messages"] == pred.trace[0].messages
            reply = llama.create_chat_completion(
                messages=request["messages"], temperature=float(request["params"]["temperature"]),
                max_tokens=int(request["params"]["max_tokens"]),
                grammar=llama_cpp.LlamaGrammar.from_json_schema(json.dumps(request["schema"]), verbose=False))
            assert reply["choices"][0]["message"]["content"] == pred.trace[0].raw, utterance
            replies.add(pred.trace[0].raw)
        assert len(replies) > 1                  # not one constant answer: the demos steer it
    finally:
        llama.close()
        prog.close()
