"""Refine / RCI: answer, then critique and revise for at most `rounds` rounds, stopping early on a check
tool or on the critique's verdict (Kim et al.; Self-Refine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import system_of, first_tries_unparsable

import pipec

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
ROOT = Path(__file__).resolve().parent.parent

SIG = """
    signature Tagline {
        "Write a tagline for the product."
        in  product: str
        out tagline: str
    }
"""
PIPELINE = """
    pipeline p(product: str) -> (tagline, critiques: list[str]) {
        w = write(product: product)
        return tagline = w.tagline, critiques = w.critiques
    }
"""
TOOLS = """
    CALLS = []

    def short(tagline):
        CALLS.append({"tagline": tagline})
        return len(tagline) <= 12

    def broken(tagline):
        raise ValueError("no verdict today")
"""


def pipe(write_pipe, options="", tools=""):
    return write_pipe(SIG + tools + f"\n    module write = Refine(Tagline{options})\n" + PIPELINE)


def with_check(write_pipe, tool_module, options=", check: short", fn="short"):
    """A .pipe file with a declared check tool; returns it and the name of the tool's Python module."""
    mod = tool_module(TOOLS)
    return pipe(write_pipe, options, f'\n    tool {fn}(tagline: str) -> bool = python("{mod}:{fn}")\n'), mod


def load_with_tools(path, mod, lm):
    """Load, then the tool module as pipec imported it (beside the .pipe file), to read what it was called with."""
    prog = pipec.load(path, lm=lm, cache=False)
    prog.tool(next(iter(prog.checked.tools)))       # loading imports nothing; the first run would
    return prog, sys.modules[mod]


def asked(request) -> str:
    """The user message with the inputs (a retry adds a later one asking again)."""
    return [m["content"] for m in request.messages if m["role"] == "user"
            and not m["content"].startswith("Your reply could not be used")][-1]


def which(request) -> str:
    props = list(request.schema["properties"])
    if props == ["critique", "done"]:
        return "critique"
    return "revise" if "critique:" in asked(request) else "answer"


class Script:
    """Replies per predictor from lists: `answer` and `revise` give taglines, `critique` gives (text, done)."""

    def __init__(self, answer, critiques, revisions):
        self.answer, self.critiques, self.revisions = list(answer), list(critiques), list(revisions)

    def __call__(self, request):
        part = which(request)
        if part == "answer":
            return {"tagline": self.answer.pop(0)}
        if part == "critique":
            text, done = self.critiques.pop(0)
            return {"critique": text, "done": done}
        return {"tagline": self.revisions.pop(0)}


def test_answer_critique_revise_until_the_critique_is_satisfied(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["Bottles!"], [("too vague", False), ("good now", True)],
                                      ["Cold for 24 hours."]))
    pred = pipec.load(pipe(write_pipe, ", rounds: 3"), lm=lm, cache=False)(product="a steel bottle")
    assert pred.ok, pred.error
    assert pred.outputs() == {"tagline": "Cold for 24 hours.", "critiques": ["too vague", "good now"]}
    assert [r.predictor for r in pred.trace] == ["write.answer", "write.critique", "write.revise", "write.critique"]
    answer, critique, revise, critique2 = lm.requests
    assert answer.messages[-1]["content"] == "product: a steel bottle"
    # The critique sees the inputs and the current answer, and gives problems and a verdict.
    assert critique.messages[-1]["content"] == "product: a steel bottle\ntagline: Bottles!"
    assert "Find the problems with it" in system_of(critique)
    assert "The task: Write a tagline for the product." in system_of(critique)
    # The revision sees the inputs, the draft and the critique.
    assert revise.messages[-1]["content"] == "product: a steel bottle\ndraft_tagline: Bottles!\ncritique: too vague"
    assert list(revise.schema["properties"]) == ["tagline"]
    assert critique2.messages[-1]["content"] == "product: a steel bottle\ntagline: Cold for 24 hours."


def test_rounds_bound_the_loop_and_max_calls_is_the_worst_case(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["v0"], [("meh", False)] * 2, ["v1", "v2"]))
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)          # default: 2 rounds
    pred = prog(product="x")
    assert pred.tagline == "v2" and pred.critiques == ["meh", "meh"]
    assert [r.predictor for r in pred.trace] == ["write.answer"] + ["write.critique", "write.revise"] * 2
    assert prog.modules["write"].max_calls() == 10

    inner = Script(["v0"], [("meh", False)] * 2, ["v1", "v2"])
    lm = pipec.ScriptedLM(rule=first_tries_unparsable(lambda request, n: inner(request)))
    prog = pipec.load(pipe(write_pipe), lm=lm, cache=False)
    pred = prog(product="x")
    assert pred.ok and pred.tagline == "v2"
    assert len(lm.requests) == pred.lm_calls == prog.modules["write"].max_calls() == 10


def test_stop_on_done_false_runs_every_round(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["v0"], [("fine", True)] * 2, ["v1", "v2"]))
    pred = pipec.load(pipe(write_pipe, ", stop_on_done: false"), lm=lm, cache=False)(product="x")
    assert pred.tagline == "v2" and len(lm.requests) == 5


def test_a_revision_that_changes_nothing_ends_refinement(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["Same old."], [("dull", False)] * 3, ["Same old."] * 3))
    pred = pipec.load(pipe(write_pipe, ", rounds: 3"), lm=lm, cache=False)(product="x")
    assert pred.tagline == "Same old." and pred.critiques == ["dull"]
    assert [r.predictor for r in pred.trace] == ["write.answer", "write.critique", "write.revise"]


def test_a_passing_check_stops_before_any_critique(write_pipe, tool_module):
    path, mod = with_check(write_pipe, tool_module)
    lm = pipec.ScriptedLM(rule=Script(["Stay cold."], [], []))
    prog, tools = load_with_tools(path, mod, lm)
    pred = prog(product="x")
    assert pred.ok and pred.tagline == "Stay cold." and pred.critiques == []
    assert tools.CALLS == [{"tagline": "Stay cold."}]      # the outputs, as keyword arguments
    assert len(lm.requests) == 1 and pred.lm_calls == 1
    assert [r.predictor for r in pred.trace] == ["write.answer", "short"]


def test_the_check_stops_refinement_once_a_revision_passes(write_pipe, tool_module):
    path, mod = with_check(write_pipe, tool_module, ", check: short, rounds: 3")
    lm = pipec.ScriptedLM(rule=Script(["A very long tagline indeed"], [("too long", False)], ["Stay cold."]))
    prog, tools = load_with_tools(path, mod, lm)
    pred = prog(product="x")
    assert pred.tagline == "Stay cold." and pred.critiques == ["too long"]
    assert [c["tagline"] for c in tools.CALLS] == ["A very long tagline indeed", "Stay cold."]
    assert [r.predictor for r in pred.trace] == ["write.answer", "short", "write.critique", "write.revise", "short"]
    # The critique is told that the check failed.
    assert lm.requests[1].messages[-1]["content"].endswith(
        "check_result: short returned false: the answer does not pass this check")


def test_a_failed_check_is_not_overruled_by_the_critique(write_pipe, tool_module):
    path, mod = with_check(write_pipe, tool_module)
    lm = pipec.ScriptedLM(rule=Script(["A very long tagline indeed"], [("looks fine", True)] * 2,
                                      ["Still a long tagline", "Also far too long"]))
    prog, tools = load_with_tools(path, mod, lm)
    pred = prog(product="x")
    assert pred.tagline == "Also far too long" and len(lm.requests) == 5
    assert len(tools.CALLS) == 2                            # checked before each round's critique


def test_a_failing_check_tool_is_a_recorded_failure(write_pipe, tool_module):
    path, _ = with_check(write_pipe, tool_module, ", check: broken", fn="broken")
    lm = pipec.ScriptedLM(rule=Script(["x"], [], []))
    pred = pipec.load(path, lm=lm, cache=False)(product="x")
    assert not pred.ok and pred.error == "w (write): tool broken raised ValueError: no verdict today"


def test_a_failing_critique_is_a_recorded_failure(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda r: {"tagline": "x"} if which(r) == "answer" else "")
    pred = pipec.load(pipe(write_pipe), lm=lm, cache=False)(product="x")
    assert not pred.ok and pred.error.startswith("w (write): reply did not parse, even after a retry")
    assert [r.predictor for r in pred.trace] == ["write.answer", "write.critique", "write.critique"]


@pytest.mark.parametrize("options, message", [
    (", rounds: 0", "option 'rounds' of Refine module write must be at least 1"),
    (", check: nosuch", "unknown tool 'nosuch'"),
    (', check: "short"', "option 'check' of Refine module write must be the name of a tool declaration"),
    (", stop_on_done: 1", "option 'stop_on_done' of Refine module write must be true or false"),
])
def test_bad_options_are_load_errors(write_pipe, tool_module, options, message):
    path, _ = with_check(write_pipe, tool_module, options)
    with pytest.raises(pipec.PipeError, match=message):
        pipec.load(path, lm=pipec.ScriptedLM(rule=Script([], [], [])), cache=False)


@pytest.mark.parametrize("decl, ret, message", [
    (None, " -> bool", "the check tool short of Refine module write does not declare its parameters"),
    ("text: str", " -> bool", "its parameter list lacks tagline and has text, which is not output of Tagline"),
    ("tagline: int", " -> bool", "parameter 'tagline' of the check tool short does not take the output 'tagline: str'"),
    ("tagline: str", " -> str", "the check tool short of Refine module write returns str, not bool"),
])
def test_the_check_tool_must_fit_the_outputs(write_pipe, tool_module, decl, ret, message):
    mod = tool_module(TOOLS + "\n    def short2(text):\n        return True\n")
    target = "short2" if decl == "text: str" else "short"
    sig = "" if decl is None else f"({decl}){ret}"
    path = pipe(write_pipe, ", check: short", f'\n    tool short{sig} = python("{mod}:{target}")\n')
    with pytest.raises(pipec.PipeError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        pipec.load(path, lm=pipec.ScriptedLM(rule=Script([], [], [])), cache=False)
    if decl is None:
        assert "tool short(tagline: str) -> bool" in str(err.value)


@pytest.mark.parametrize("field", ["in critique: str", "out done: bool", "in draft_x: str", "out critiques: str"])
def test_field_names_the_kind_uses_are_refused(write_pipe, field):
    path = write_pipe(f"""
        signature S {{ in q: str out a: str {field} }}
        module m = Refine(S)
        pipeline p(q: str) -> (a) {{ r = m(q: q) return a = r.a }}
    """)
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(path, lm=pipec.ScriptedLM(rule=Script([], [], [])), cache=False)
    name = field.split()[1].rstrip(":")
    assert f"'{name}'" in str(err.value)


def test_bootstrap_gives_answer_critique_and_revise_demos(write_pipe):
    rows = [{"product": f"p{i}", "tagline": f"T{i}"} for i in range(8)]

    def solver(request):
        product = request.messages[-1]["content"].splitlines()[0].split(": ", 1)[1]
        part = which(request)
        if part == "answer":
            return {"tagline": "draft"}
        if part == "critique":
            done = "tagline: draft" not in request.messages[-1]["content"]
            return {"critique": "fine" if done else "not specific", "done": done}
        return {"tagline": "T" + product[1:]}

    prog = pipec.load(pipe(write_pipe), lm=pipec.ScriptedLM(rule=solver), cache=False)
    compiled = prog.compile(rows[:6], rows[6:], "exact_match(tagline)", "bootstrap_fewshot", budget=300,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert {n: len(params[n].demos) for n in ("write.answer", "write.critique", "write.revise")} == \
        {"write.answer": 2, "write.critique": 2, "write.revise": 2}
    for d in params["write.revise"].demos:
        assert d == {"product": d["product"], "draft_tagline": "draft", "critique": "not specific",
                     "tagline": "T" + d["product"][1:]}


@pytest.mark.e2e
def test_e2e_runs_on_the_embedded_model():
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipec", "run", "examples/refine.pipe", "--json", "--trace",
         "--input", "product=a reusable water bottle that keeps drinks cold for 24 hours"],
        cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["outputs"]["tagline"]
    names = [r["predictor"] for r in out["trace"] if r["attempt"] == 1]
    assert names[:2] == ["write.answer", "fits"]
    assert names.count("write.revise") <= 2
    print(f"refine e2e: {elapsed:.1f} s")
