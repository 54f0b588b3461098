"""`map` over a list: checks, parallel and ordered execution, the bound, projection, rendering."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

import pipec
from pipec import ScriptedLM
from pipec.inspection import inspect_program, max_calls
from pipec.render import render

pytestmark = pytest.mark.usefixtures("isolated_env")

PIPE = """
signature Plan { "Split the question." in question: str out questions: list[str] }
signature Solve { "Solve one step." in question: str in earlier: list[str] out answer: str }
signature Join { "Join." in answers: list[str] in question: str out answer: str }
module plan = Predict(Plan)
module solve = Predict(Solve)
module join = Predict(Join)
pipeline p(question: str) -> (answer, steps) {
    pl = plan(question: question)
    solved = map q in pl.questions ordered max 3 { solve(question: q, earlier: earlier.answer) }
    j = join(answers: solved.answer, question: question)
    return answer = j.answer, steps = solved.answer
}
"""

PARALLEL = """
signature Plan { "Split the question." in question: str out questions: list[str] }
signature Solve { "Solve one step." in question: str in context: str out answer: str }
module plan = Predict(Plan)
module solve = Predict(Solve)
pipeline p(question: str) -> (answers) {
    pl = plan(question: question)
    answers = map q in pl.questions max 4 { solve(question: q, context: question) }
    return answers = answers.answer
}
"""


def rule(n_questions=3):
    def answer(req):
        system, user = req.messages[0]["content"], req.messages[-1]["content"]
        if system.startswith("Split"):
            return {"questions": [f"q{i}" for i in range(1, n_questions + 1)]}
        if system.startswith("Solve"):
            q = user.split("question: ")[1].split("\n")[0]
            return {"answer": f"a-{q}"}
        return {"answer": "joined:" + user.split("answers: ")[1].split("\n")[0]}
    return answer


def test_ordered_map_passes_earlier_results_and_projects_fields(write_pipe):
    lm = ScriptedLM(rule=rule(3))
    prog = pipec.load(write_pipe(PIPE), lm=lm, cache=False)
    pred = prog(question="big")
    assert pred.ok, pred.error
    assert pred.steps == ["a-q1", "a-q2", "a-q3"]
    assert pred.answer == 'joined:["a-q1", "a-q2", "a-q3"]'
    solves = [r for r in lm.requests if r.messages[0]["content"].startswith("Solve")]
    earlier = [json.loads(r.messages[-1]["content"].split("earlier: ")[1]) for r in solves]
    assert earlier == [[], ["a-q1"], ["a-q1", "a-q2"]]


def test_the_bound_caps_items_and_says_so_in_the_trace(write_pipe):
    lm = ScriptedLM(rule=rule(5))
    prog = pipec.load(write_pipe(PIPE), lm=lm, cache=False)
    pred = prog(question="big")
    assert pred.steps == ["a-q1", "a-q2", "a-q3"]
    notes = [r.error for r in pred.trace if r.model == "map"]
    assert notes == ["5 items, ran the first 3 (the map's bound)"]
    assert pred.lm_calls == 5          # plan + 3 solves + join; the note is not an LM call


def test_static_bound_counts_map_bodies_times_their_bound(write_pipe):
    prog = pipec.load(write_pipe(PIPE), lm=ScriptedLM(rule=rule()), cache=False)
    assert max_calls(prog) == 2 + 3 * 2 + 2
    report = inspect_program(prog)
    assert report["max_lm_calls"] == 10
    assert any(site.get("map") == "q" and site["bound"] == 3 for site in report["calls"])


class SlowLM(ScriptedLM):
    inline = False

    async def acomplete(self, request):
        await asyncio.sleep(0.5)
        return self.complete(request)


def test_unordered_map_runs_items_concurrently(write_pipe):
    prog = pipec.load(write_pipe(PARALLEL), lm=SlowLM(rule=rule(4)), cache=False)
    start = time.perf_counter()
    pred = prog(question="big")
    elapsed = time.perf_counter() - start
    assert pred.answers == ["a-q1", "a-q2", "a-q3", "a-q4"]
    assert elapsed < 0.5 * 3.5, elapsed         # plan, then four solves together: about 2 latencies, not 5


def test_a_failing_item_fails_the_row_naming_the_body_node(write_pipe):
    def answer(req):
        user = req.messages[-1]["content"]
        if "q2" in user:
            return pipec.LMError("the provider refused this one")
        return rule(3)(req)
    prog = pipec.load(write_pipe(PARALLEL), lm=ScriptedLM(rule=answer), cache=False)
    pred = prog(question="big")
    assert not pred.ok and pred.error.startswith("solve#") and "refused this one" in pred.error


def test_graph_renders_map_bodies(write_pipe):
    prog = pipec.load(write_pipe(PIPE), lm=ScriptedLM(rule=rule()), cache=False)
    mermaid = render(prog.graph, "mermaid")
    assert "subgraph" in mermaid and "end" in mermaid
    text = render(prog.graph, "text")
    assert "map q in pl.questions ordered max 3 {" in text
    dot = render(prog.graph, "dot")
    assert "subgraph cluster_" in dot


@pytest.mark.parametrize("body, message", [
    ("x = map q in question max 3 { solve(question: q, context: q) }", "map needs a list to go over"),
    ("x = map q in pl.questions max 0 { solve(question: q, context: q) }", "bound of a map must be"),
    ("x = map question in pl.questions max 2 { solve(question: question, context: question) }",
     "hides another value"),
    ("x = map q in pl.questions max 2 { solve(question: q, context: q) }\n    y = x.answr", "have no field 'answr'"),
])
def test_map_checks(write_pipe, body, message):
    src = PARALLEL.replace("answers = map q in pl.questions max 4 { solve(question: q, context: question) }\n    "
                           "return answers = answers.answer",
                           body + "\n    return answers = pl.questions")
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src), lm=ScriptedLM(rule=rule()), cache=False)
    assert message in str(err.value)


def test_a_map_without_a_bound_gets_a_friendly_syntax_error(write_pipe):
    src = PARALLEL.replace("max 4 ", "")
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src), lm=ScriptedLM(rule=rule()), cache=False)
    assert "a map needs a bound" in str(err.value)


def test_bootstrap_gives_the_map_body_module_demos(write_pipe):
    lm = ScriptedLM(rule=rule(2), cacheable=True)
    prog = pipec.load(write_pipe(PIPE), lm=lm, cache=None or False)
    rows = [{"question": f"x{i}", "answer": 'joined:["a-q1", "a-q2"]'} for i in range(6)]
    compiled = prog.compile(trainset=rows[:4], valset=rows[4:], metric="exact_match(answer)",
                            optimizer="bootstrap_fewshot", options={"max_demos": 2, "max_labeled": 0})
    demos = compiled.params()["solve"].demos
    assert demos and all(set(d) == {"question", "earlier", "answer"} for d in demos)
