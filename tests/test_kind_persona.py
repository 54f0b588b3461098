"""Persona: an expert identity written for the input, then the answer under it (ExpertPrompting)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import system_of

import pipec

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
ROOT = Path(__file__).resolve().parent.parent

SRC = """
    signature Advice {
        "Answer the question with practical advice."
        in  question: str
        out answer: str
    }
    module advise = Persona(Advice%s)
    pipeline p(question: str) -> (answer, expert: str) {
        a = advise(question: question)
        return answer = a.answer, expert = a.persona
    }
"""
BOTANIST = "You are a botanist who has grown desert plants for twenty years."


def pipe(write_pipe, options=""):
    return write_pipe(SRC % options)


def rule(request):
    if list(request.schema["properties"]) == ["persona"]:
        return {"persona": BOTANIST}
    return {"answer": "Water it every two weeks."}


def test_identity_first_then_the_answer_under_it(write_pipe):
    lm = pipec.ScriptedLM(rule=rule)
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="How often should I water a cactus?")
    assert pred.ok, pred.error
    assert pred.outputs() == {"answer": "Water it every two weeks.", "expert": BOTANIST}
    assert [r.predictor for r in pred.trace] == ["advise.persona", "advise.answer"]
    persona, answer = lm.requests
    # The identity call is tailored to the input and knows the task.
    assert persona.messages[-1]["content"] == "question: How often should I water a cactus?"
    assert 'starting with "You are"' in system_of(persona)
    assert "The task: Answer the question with practical advice." in system_of(persona)
    assert list(persona.schema["properties"]) == ["persona"]
    # The answer call's system message starts with that identity, then the usual instruction and fields.
    assert system_of(answer).startswith(BOTANIST + "\n\nAnswer the question with practical advice.")
    assert answer.messages[-1]["content"] == "question: How often should I water a cactus?"
    assert list(answer.schema["properties"]) == ["answer"]


def test_expert_option_guides_the_identity(write_pipe):
    lm = pipec.ScriptedLM(rule=rule)
    pipec.load(pipe(write_pipe, ', expert: "a horticulturist"'), lm=lm, cache=False)(question="q")
    assert "The expert should be a horticulturist." in system_of(lm.requests[0])


def test_identity_goes_before_the_demos(write_pipe):
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    prog.apply({"advise.answer": {"instruction": "Answer the question with practical advice.",
                                  "demos": [{"question": "Best soil?", "answer": "Sandy, well drained."}]}})
    prog(question="q")
    msgs = lm.requests[1].messages
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"].startswith(BOTANIST) and msgs[1]["content"] == "question: Best soil?"


def test_worst_case_calls_equal_max_calls(write_pipe):
    lm = pipec.ScriptedLM(["{}", {"persona": BOTANIST}, "{}", {"answer": "Rarely."}])
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    pred = prog(question="q")
    assert pred.ok and pred.answer == "Rarely."
    assert len(lm.requests) == pred.lm_calls == prog.modules["advise"].max_calls() == 4
    # The retry of the answer call keeps the identity in its system message.
    assert system_of(lm.requests[3]).startswith(BOTANIST)


def test_a_failing_identity_call_is_a_recorded_failure(write_pipe):
    lm = pipec.ScriptedLM(["{}", "{}"])
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(question="q")
    assert not pred.ok and "a (advise): reply did not parse" in pred.error
    assert len(lm.requests) == 2                    # the answer call never ran


@pytest.mark.parametrize("options, message", [
    (", expert: 3", "option 'expert' of Persona module advise must be a string"),
    (", max_tokens: 0", "option 'max_tokens' of Persona module advise must be at least 1"),
    (", trigger: \"x\"", "unknown option 'trigger' for Persona module advise"),
])
def test_bad_options_are_load_errors(write_pipe, options, message):
    with pytest.raises(pipec.PipeError, match=message):
        pipec.load(pipe(write_pipe, options), lm=pipec.ScriptedLM(rule=rule), cache=False)


def test_a_signature_field_named_persona_clashes(write_pipe):
    path = write_pipe("""
        signature S { in persona: str out a: str }
        module m = Persona(S)
        pipeline p(persona: str) -> (a) { r = m(persona: persona) return a = r.a }
    """)
    with pytest.raises(pipec.PipeError, match="Persona adds an output named 'persona'"):
        pipec.load(path, lm=pipec.ScriptedLM(rule=rule), cache=False)


def test_bootstrap_gives_both_calls_demos(write_pipe):
    rows = [{"question": f"question {i}", "answer": f"answer {i}"} for i in range(8)]

    def expert(request):
        q = request.messages[-1]["content"].split(": ", 1)[1]
        if list(request.schema["properties"]) == ["persona"]:
            return {"persona": f"You are the expert on {q}."}
        return {"answer": q.replace("question", "answer")}

    prog = pipec.load(pipe(write_pipe), lm=pipec.ScriptedLM(rule=expert), cache=False)
    compiled = prog.compile(rows[:6], rows[6:], "exact_match(answer)", "bootstrap_fewshot", budget=200,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert len(params["advise.persona"].demos) == len(params["advise.answer"].demos) == 2
    for d in params["advise.persona"].demos:
        assert d == {"question": d["question"], "persona": f"You are the expert on {d['question']}."}
    for d in params["advise.answer"].demos:
        assert d["answer"] == d["question"].replace("question", "answer")
    assert compiled.report.compiled_score == 1.0


@pytest.mark.e2e
def test_e2e_runs_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipec", "run", "examples/persona.pipe", "--json", "--trace",
         "--input", "question=How often should I water a cactus?"],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["outputs"]["answer"] and out["outputs"]["expert"]
    persona, answer = out["trace"]
    assert (persona["predictor"], answer["predictor"]) == ("advise.persona", "advise.answer")
    assert answer["messages"][0]["content"].startswith(out["outputs"]["expert"])
    print(f"persona e2e: {elapsed:.1f} s")
