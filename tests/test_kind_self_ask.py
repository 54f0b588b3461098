"""SelfAsk: "Are follow up questions needed here:", "Follow up:", "Intermediate answer:", "So the final
answer is:" as structured calls (ask, intermediate, final), optionally answering from a tool.

Scripted LMs tell the three predictors apart by the reply schema's keys.
"""
from __future__ import annotations

import sys

import pytest
from conftest import first_user_value, system_of, run_example

import pipec

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")


TOOLS = '''
CALLS = []

def search(query, k=2):
    """Passages about the query."""
    CALLS.append(query)
    if "offline" in query:
        raise RuntimeError("index offline")
    return [f"passage about {query}"]

def pair(a, b):
    return a + b
'''

PIPE = """
    signature Answer {{
        "Answer the question."
        in  question: str
        out answer: str
    }}
    tool search(query: str) -> list[str] = python("{m}:search")
    module sa = SelfAsk(Answer{opts})
    pipeline p(question: str) -> (answer, transcript: str) {{
        r = sa(question: question)
        return answer = r.answer, transcript = r.transcript
    }}
"""


@pytest.fixture
def make(write_pipe, tool_module):
    """make(lm, opts="") -> (program, tool module)."""
    def build(lm, opts="", pipe=PIPE):
        name = tool_module(TOOLS)
        prog = pipec.load(write_pipe(pipe.format(m=name, opts=f", {opts}" if opts else "")), lm=lm, cache=False)
        prog.tool("search")              # the tool module as pipec imports it, to read its calls
        return prog, sys.modules[name]
    return build


def role(request) -> str:
    k = list(request.schema["properties"])
    return {"follow_up_needed": "ask", "intermediate_answer": "intermediate"}.get(k[0], "final")


def scripted(questions, answers=None, final="Dijon", lm_cls=pipec.ScriptedLM, **kw):
    """Ask replies with the given follow-ups in turn (None: no more needed); intermediate answers in turn."""
    qs, ans = list(questions), list(answers or [f"answer {i}" for i in range(1, 10)])

    def rule(request):
        r = role(request)
        if r == "ask":
            q = qs.pop(0) if qs else None
            return {"follow_up_needed": q is not None, "follow_up": q}
        if r == "intermediate":
            return {"intermediate_answer": ans.pop(0)}
        return {"answer": final}
    return lm_cls(rule=rule, **kw)


def predictors(pred) -> list[str]:
    return [r.predictor for r in pred.trace]


# ---------------------------------------------------------------------------- control flow
def test_follow_ups_are_asked_answered_from_the_tool_and_composed(make):
    lm = scripted(["Who designed the Eiffel Tower?", "Where was Gustave Eiffel born?", None],
                  ["Gustave Eiffel", "Dijon"])
    prog, tools = make(lm, "tool: search")
    pred = prog(question="Where was the designer of the Eiffel Tower born?")
    assert pred.ok, pred.error
    assert pred.answer == "Dijon"
    assert predictors(pred) == ["sa.ask", "search", "sa.intermediate", "sa.ask", "search", "sa.intermediate",
                                "sa.ask", "sa.final"]
    assert tools.CALLS == ["Who designed the Eiffel Tower?", "Where was Gustave Eiffel born?"]
    assert pred.transcript == ("Are follow up questions needed here: Yes.\n"
                               "Follow up: Who designed the Eiffel Tower?\n"
                               "Intermediate answer: Gustave Eiffel\n"
                               "Follow up: Where was Gustave Eiffel born?\n"
                               "Intermediate answer: Dijon")
    ask1, inter1, ask2, inter2, ask3, final = lm.requests
    assert first_user_value(ask1, "transcript") == "(none yet)"
    assert first_user_value(inter1, "follow_up") == "Who designed the Eiffel Tower?"
    assert first_user_value(inter1, "search_results") == '["passage about Who designed the Eiffel Tower?"]'
    assert "Intermediate answer: Gustave Eiffel" in ask2.messages[-1]["content"]
    assert "Follow up: Where was Gustave Eiffel born?" not in inter2.messages[-1]["content"]   # it is the field
    assert pred.transcript in ask3.messages[-1]["content"]
    assert pred.transcript in final.messages[-1]["content"]


def test_prompts_carry_the_papers_scaffold(make):
    lm = scripted(["q1?", None])
    prog, _ = make(lm, "tool: search")
    prog(question="q")
    ask, inter, _, final = lm.requests
    assert "- follow_up_needed: Are follow up questions needed here:" in system_of(ask)
    assert "- follow_up: Follow up: the next follow-up question" in system_of(ask)
    assert "- intermediate_answer: Intermediate answer:" in system_of(inter)
    assert "from the results search returned for it" in system_of(inter)
    assert "So the final answer is:" in system_of(final)
    assert all(system_of(r).startswith("Answer the question.") for r in lm.requests)
    assert list(final.schema["properties"]) == ["answer"]


def test_no_follow_up_needed_goes_straight_to_the_final_answer(make):
    lm = scripted([None], final="Paris")
    prog, tools = make(lm, "tool: search")
    pred = prog(question="What is the capital of France?")
    assert predictors(pred) == ["sa.ask", "sa.final"]
    assert tools.CALLS == []
    assert pred.answer == "Paris"
    assert pred.transcript == "Are follow up questions needed here: No."


def test_needed_without_a_question_ends_the_questioning(make):
    lm = pipec.ScriptedLM(rule=lambda r: {"follow_up_needed": True, "follow_up": " "} if role(r) == "ask"
                          else {"answer": "x"})
    prog, _ = make(lm)
    pred = prog(question="q")
    assert predictors(pred) == ["sa.ask", "sa.final"]
    assert pred.transcript == "Are follow up questions needed here: No."


def test_without_a_tool_the_model_answers_its_own_follow_ups(make):
    lm = scripted(["q1?", None])
    prog, tools = make(lm)
    pred = prog(question="q")
    assert predictors(pred) == ["sa.ask", "sa.intermediate", "sa.ask", "sa.final"]
    assert tools.CALLS == []
    assert "search_results" not in lm.requests[1].messages[-1]["content"]
    assert "search_results" not in system_of(lm.requests[1])


def test_max_followups_bounds_the_questions(make):
    lm = pipec.ScriptedLM(rule=lambda r: {"follow_up_needed": True, "follow_up": "more?"} if role(r) == "ask"
                          else {"intermediate_answer": "a", "answer": "x"})
    prog, tools = make(lm, "tool: search, max_followups: 2")
    pred = prog(question="q")
    assert predictors(pred) == ["sa.ask", "search", "sa.intermediate", "sa.ask", "search", "sa.intermediate",
                                "sa.final"]
    assert pred.transcript.count("Follow up:") == 2


def test_default_bound_is_three_follow_ups(make):
    lm = pipec.ScriptedLM(rule=lambda r: {"follow_up_needed": True, "follow_up": "more?"} if role(r) == "ask"
                          else {"intermediate_answer": "a", "answer": "x"})
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.transcript.count("Follow up:") == 3
    assert len(lm.requests) == 7


@pytest.mark.parametrize("max_followups", [1, 3])
def test_max_calls_equals_the_calls_made_in_the_worst_case(make, max_followups):
    """Worst case: every follow-up is needed, and every reply needs its retry."""
    def rule(request):
        if not request.messages[-1]["content"].startswith("Your reply could not be used"):
            return ""
        return {"ask": {"follow_up_needed": True, "follow_up": "more?"}, "intermediate": {"intermediate_answer": "a"},
                "final": {"answer": "x"}}[role(request)]
    lm = pipec.ScriptedLM(rule=rule)
    prog, _ = make(lm, f"tool: search, max_followups: {max_followups}")
    pred = prog(question="q")
    assert pred.ok
    assert len(lm.requests) == prog.modules["sa"].max_calls() == 2 * (2 * max_followups + 1)
    assert pred.lm_calls == len(lm.requests)


def test_a_failing_tool_gives_the_answerer_its_error(make):
    lm = scripted(["offline question", None])
    prog, _ = make(lm, "tool: search")
    pred = prog(question="q")
    assert pred.ok
    assert first_user_value(lm.requests[1], "search_results") == \
        "error: tool search raised RuntimeError: index offline"
    assert next(r for r in pred.trace if r.predictor == "search").error == "RuntimeError: index offline"


def test_an_unreadable_ask_ends_the_questioning_and_the_final_answer_still_comes(make):
    lm = pipec.ScriptedLM(rule=lambda r: "" if role(r) == "ask" else {"answer": "fallback"})
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.ok and pred.answer == "fallback"
    assert predictors(pred) == ["sa.ask", "sa.ask", "sa.final"]
    assert pred.transcript == "(none yet)"


def test_an_unreadable_intermediate_answer_ends_the_questioning(make):
    lm = pipec.ScriptedLM(rule=lambda r: {"ask": {"follow_up_needed": True, "follow_up": "q1?"},
                                          "intermediate": "", "final": {"answer": "x"}}[role(r)])
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.ok
    assert predictors(pred) == ["sa.ask", "sa.intermediate", "sa.intermediate", "sa.final"]
    assert pred.transcript.endswith("Follow up: q1?\nIntermediate answer: (no answer)")


def test_a_failing_final_answer_is_a_recorded_failure(make):
    lm = scripted([None], final="not a number")
    prog, _ = make(lm, pipe=PIPE.replace("out answer: str", "out answer: int"))
    pred = prog(question="q")
    assert not pred.ok
    assert "sa" in pred.error and "did not parse" in pred.error
    assert predictors(pred) == ["sa.ask", "sa.final", "sa.final"]


def test_runs_on_asyncio_with_a_non_inline_lm(make, slow_lm_cls):
    lm = scripted(["q1?", None], lm_cls=slow_lm_cls, delay=0.01)
    prog, _ = make(lm, "tool: search")
    assert not prog.inline
    pred = prog(question="q")
    assert pred.ok and predictors(pred) == ["sa.ask", "search", "sa.intermediate", "sa.ask", "sa.final"]


def test_undeclared_one_parameter_tool_is_accepted(write_pipe, tool_module):
    name = tool_module(TOOLS)
    path = write_pipe(f"""
        signature Answer {{ in question: str out answer: str }}
        tool search = python("{name}:search")
        module sa = SelfAsk(Answer, tool: search)
        pipeline p(question: str) -> (answer) {{
            r = sa(question: question)
            return answer = r.answer
        }}
    """)
    prog = pipec.load(path, lm=scripted(["q1?", None]), cache=False)
    assert prog(question="q").ok
    assert sys.modules[name].CALLS == ["q1?"]


# ---------------------------------------------------------------------------- static checks
def load_error(write_pipe, tool_module, module_line, sig="in question: str out answer: str"):
    name = tool_module(TOOLS)
    path = write_pipe(f"""
        signature Answer {{ {sig} }}
        tool search(query: str) -> list[str] = python("{name}:search")
        tool pair(a: str, b: str) -> str = python("{name}:pair")
        tool raw_pair = python("{name}:pair")
        tool count(n: int) -> str = python("{name}:search")
        {module_line}
        pipeline p(question: str) -> (answer) {{
            r = sa(question: question)
            return answer = r.answer
        }}
    """)
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(path, lm=pipec.ScriptedLM([]), cache=False)
    return str(err.value)


@pytest.mark.parametrize("module_line, message", [
    ("module sa = SelfAsk(Answer, tool: serch)", "unknown tool 'serch'"),
    ("module sa = SelfAsk(Answer, tool: [search])", "option 'tool' of SelfAsk module sa must be the name of a tool"),
    ("module sa = SelfAsk(Answer, tool: pair)",
     "SelfAsk tool pair must take exactly one required parameter (the follow-up question); it takes 2 required parameters"),
    ("module sa = SelfAsk(Answer, tool: count)",
     "SelfAsk tool count: its parameter 'n' is int, but the follow-up question is text"),
    ("module sa = SelfAsk(Answer, tool: raw_pair)",
     "SelfAsk tool raw_pair has no declared parameters and its function takes 2 required parameters (a, b)"),
    ("module sa = SelfAsk(Answer, max_followups: 0)", "option 'max_followups' of SelfAsk module sa must be at least 1"),
    ('module sa = SelfAsk(Answer, max_followups: "3")',
     "option 'max_followups' of SelfAsk module sa must be an integer"),
    ("module sa = SelfAsk(Answer, max_follow_ups: 2)", "unknown option 'max_follow_ups' for SelfAsk module sa"),
])
def test_bad_options_are_refused_at_load(write_pipe, tool_module, module_line, message):
    assert message in load_error(write_pipe, tool_module, module_line)


def test_signature_fields_that_clash_with_inner_fields_are_refused(write_pipe, tool_module):
    text = load_error(write_pipe, tool_module, "module sa = SelfAsk(Answer)",
                      sig="in question: str in follow_up: str out answer: str")
    assert "signature Answer has an input named 'follow_up', which SelfAsk's inner steps use" in text
    text = load_error(write_pipe, tool_module, "module sa = SelfAsk(Answer)",
                      sig="in question: str out answer: str out transcript: str")
    assert "SelfAsk adds an output named 'transcript'" in text


# ---------------------------------------------------------------------------- compiling
def test_bootstrap_fewshot_gives_every_inner_predictor_demos(make):
    def rule(request):
        r = role(request)
        q = first_user_value(request, "question")
        if r == "ask":
            done = "Intermediate answer" in first_user_value(request, "transcript")
            return {"follow_up_needed": not done, "follow_up": None if done else f"what is {q}?"}
        if r == "intermediate":
            return {"intermediate_answer": q.upper()}
        return {"answer": q.upper()}
    prog, _ = make(pipec.ScriptedLM(rule=rule), "tool: search")
    rows = [{"question": w, "answer": w.upper()} for w in ["alpha", "beta", "gamma", "delta"]]
    compiled = prog.compile(trainset=rows, valset=rows, metric="exact_match(answer)", optimizer="bootstrap_fewshot",
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"sa.ask", "sa.intermediate", "sa.final"}
    assert all(len(params[n].demos) == 2 for n in params)
    asks = params["sa.ask"].demos
    assert {d["follow_up_needed"] for d in asks} <= {True, False} and any(d["follow_up_needed"] for d in asks)
    assert all("search_results" in d and "follow_up" in d for d in params["sa.intermediate"].demos)
    assert all("Intermediate answer:" in d["transcript"] for d in params["sa.final"].demos)


# ---------------------------------------------------------------------------- the example, end to end
@pytest.mark.e2e
def test_example_runs_on_the_embedded_model_through_the_cli(tmp_path):
    out = run_example("self_ask.pipe", tmp_path, "question=In which region was the designer of the Eiffel Tower born?")
    assert out["ok"] and isinstance(out["outputs"]["answer"], str)
    assert out["outputs"]["transcript"].startswith("Are follow up questions needed here:")
