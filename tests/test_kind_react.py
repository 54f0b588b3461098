"""ReAct: thought / action / observation steps over declared tools, then an extract call.

Scripted LMs tell the step predictor's requests from the extract's by the reply schema's keys; tools
are small Python modules written beside the .pipe file.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import first_user_value, system_of, run_example

import pipec
from pipec.modules.tool_use import fill_args

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")


TOOLS = '''
CALLS = []

def search(query, k=2):
    """Passages about the query."""
    CALLS.append(("search", query))
    if "offline" in query:
        raise RuntimeError("index offline")
    return [f"passage about {query}", "Gustave Eiffel was born in 1832."][:k]

def calculate(expression):
    """Evaluate arithmetic."""
    CALLS.append(("calculate", expression))
    return eval(expression, {"__builtins__": {}})   # test-only

def shout(text, /):
    """Upper-case the text."""
    CALLS.append(("shout", text))
    return text.upper()

def add(a, b):
    """Add two integers."""
    CALLS.append(("add", a, b))
    return a + b
'''

PIPE = """
    signature Answer {{
        "Answer the question."
        in  question: str
        out answer: str
    }}
    tool search(query: str) -> list[str] = python("{m}:search")
    tool calculate(expression: str) -> float = python("{m}:calculate")
    tool add(a: int, b: int) -> int = python("{m}:add")
    module agent = ReAct(Answer, tools: [{tools}]{opts})
    pipeline p(question: str) -> (answer, trajectory: str) {{
        r = agent(question: question)
        return answer = r.answer, trajectory = r.trajectory
    }}
"""


@pytest.fixture
def make(write_pipe, tool_module):
    """make(lm, tools="search, calculate, add", opts="") -> (program, tool module)."""
    def build(lm, tools="search, calculate, add", opts="", pipe=PIPE):
        name = tool_module(TOOLS)
        path = write_pipe(pipe.format(m=name, tools=tools, opts=f", {opts}" if opts else ""))
        prog = pipec.load(path, lm=lm, cache=False)
        prog.tool(tools.split(",")[0].strip())      # the tool module as pipec imports it, to read its calls
        return prog, sys.modules[name]
    return build


def keys(request) -> list[str]:
    return list(request.schema["properties"])


def is_step(request) -> bool:
    return keys(request) == ["thought", "action", "action_input"]


def step(action, arg=None, thought="thinking"):
    return {"thought": thought, "action": action, "action_input": arg}


def scripted(steps, answer="42", lm_cls=pipec.ScriptedLM, **kw):
    """Steps in order (the last one repeats), then the extract's answer."""
    todo = list(steps)

    def rule(request):
        if is_step(request):
            return todo.pop(0) if len(todo) > 1 else todo[0]
        return {"answer": answer}
    return lm_cls(rule=rule, **kw)


def predictors(pred) -> list[str]:
    return [r.predictor for r in pred.trace]


# ---------------------------------------------------------------------------- control flow
def test_steps_call_tools_append_observations_then_extract(make):
    lm = scripted([step("search", {"query": "Eiffel"}, "find the birth year"),
                   step("calculate", "1889 - 1832", "subtract"),
                   step("finish", None, "done")], answer="57")
    prog, tools = make(lm)
    pred = prog(question="How old was Eiffel when the tower opened?")
    assert pred.ok, pred.error
    assert pred.answer == "57"
    assert predictors(pred) == ["agent.react", "search", "agent.react", "calculate", "agent.react", "agent.extract"]
    assert tools.CALLS == [("search", "Eiffel"), ("calculate", "1889 - 1832")]
    assert len(lm.requests) == 4
    # Each step reads the trajectory so far; the extract reads all of it.
    assert first_user_value(lm.requests[0], "trajectory") == "(no steps yet)"
    second = lm.requests[1].messages[-1]["content"]
    assert "Thought 1: find the birth year\nAction 1: search\nAction input 1: {\"query\": \"Eiffel\"}\n" \
           "Observation 1: [\"passage about Eiffel\", \"Gustave Eiffel was born in 1832.\"]" in second
    assert "Observation 2: 57" in lm.requests[2].messages[-1]["content"]
    assert not is_step(lm.requests[3])
    assert pred.trajectory in lm.requests[3].messages[-1]["content"]
    assert pred.trajectory.endswith("Thought 3: done\nAction 3: finish")
    assert pred.trajectory.count("Observation") == 2


def test_step_prompt_lists_tools_with_their_docs_and_the_schema_constrains_actions(make):
    lm = scripted([step("finish")])
    prog, _ = make(lm)
    prog(question="q")
    system = system_of(lm.requests[0])
    assert "- search(query: str) -> list[str]: Passages about the query." in system
    assert "- calculate(expression: str) -> float: Evaluate arithmetic." in system
    assert "- add(a: int, b: int) -> int: Add two integers." in system
    assert "- finish: the task is complete" in system
    assert system.startswith("Answer the question.")
    schema = lm.requests[0].schema
    assert schema["properties"]["action"]["enum"] == ["search", "calculate", "add", "finish"]
    assert schema["required"] == ["thought", "action"]
    shapes = schema["properties"]["action_input"]["anyOf"]
    assert {"type": "string"} in shapes
    assert {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"], "additionalProperties": False} in shapes
    # The extract answers the signature from the inputs and the trajectory.
    assert keys(lm.requests[1]) == ["answer"]
    assert "trajectory" in lm.requests[1].messages[-1]["content"]


def test_finish_at_the_first_step_goes_straight_to_extract(make):
    lm = scripted([step("finish", "42", "I know it")])
    prog, tools = make(lm)
    pred = prog(question="q")
    assert predictors(pred) == ["agent.react", "agent.extract"]
    assert tools.CALLS == []
    assert pred.trajectory == "Thought 1: I know it\nAction 1: finish\nAction input 1: 42"


def test_max_steps_bounds_the_loop(make):
    lm = scripted([step("search", "again")])          # never finishes
    prog, tools = make(lm, opts="max_steps: 2")
    pred = prog(question="q")
    assert pred.ok
    assert predictors(pred) == ["agent.react", "search", "agent.react", "search", "agent.extract"]
    assert len(tools.CALLS) == 2
    assert "Observation 2" in pred.trajectory and "Thought 3" not in pred.trajectory


def test_default_bound_is_five_steps(make):
    lm = scripted([step("search", "again")])
    prog, tools = make(lm)
    pred = prog(question="q")
    assert len(tools.CALLS) == 5
    assert prog.modules["agent"].max_calls() == 12


@pytest.mark.parametrize("max_steps", [1, 3])
def test_max_calls_equals_the_calls_made_in_the_worst_case(make, max_steps):
    """Worst case: every reply needs its retry, no step finishes, the extract runs."""
    def rule(request):
        retry = request.messages[-1]["content"].startswith("Your reply could not be used")
        if not retry:
            return ""                                   # no reply at all: even a lone text field is missing
        return step("search", "x") if is_step(request) else {"answer": "a"}
    lm = pipec.ScriptedLM(rule=rule)
    prog, _ = make(lm, tools="search", opts=f"max_steps: {max_steps}")
    pred = prog(question="q")
    assert pred.ok
    assert len(lm.requests) == prog.modules["agent"].max_calls() == 2 * max_steps + 2
    assert pred.lm_calls == len(lm.requests)


def test_a_failing_tool_is_an_observation_not_a_crash(make):
    lm = scripted([step("search", {"query": "offline index"}), step("finish")])
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.ok, pred.error
    assert "Observation 1: error: tool search raised RuntimeError: index offline" in pred.trajectory
    tool_rec = next(r for r in pred.trace if r.predictor == "search")
    assert tool_rec.error == "RuntimeError: index offline"
    assert "error: tool search raised RuntimeError" in lm.requests[1].messages[-1]["content"]


@pytest.mark.parametrize("arg, observation", [
    ({"a": 1}, "error: add needs 'b'"),
    ({"x": 1, "y": 2}, "error: add has no parameter 'x', 'y'; its parameters: a, b"),
    ("3 4", "error: add takes a, b: give action_input as an object with those keys"),
    ({"a": "three", "b": 4}, "error: argument 'a' of add: expected a number, got 'three'"),
    ({"a": 1, "b": 2, "c": 3}, "error: add has no parameter 'c'; its parameters: a, b"),
])
def test_arguments_that_do_not_fit_are_observations_and_the_tool_is_not_called(make, arg, observation):
    lm = scripted([step("add", arg), step("finish")])
    prog, tools = make(lm)
    pred = prog(question="q")
    assert pred.ok
    assert f"Observation 1: {observation}" in pred.trajectory
    assert tools.CALLS == []


def test_arguments_are_coerced_to_the_declared_types(make):
    lm = scripted([step("add", {"a": "3", "b": 4.0}), step("finish")])
    prog, tools = make(lm)
    pred = prog(question="q")
    assert tools.CALLS == [("add", 3, 4)]
    assert "Observation 1: 7" in pred.trajectory


def test_fill_args_accepts_a_string_or_a_lone_misnamed_key_for_one_parameter():
    from pipec.dsl.types import INT, STR
    params = [("query", STR, True), ("k", INT, False)]
    assert fill_args("search", params, "eiffel") == {"query": "eiffel"}
    assert fill_args("search", params, {"q": "eiffel"}) == {"query": "eiffel"}
    assert fill_args("search", params, {"query": "eiffel", "k": "2"}) == {"query": "eiffel", "k": 2}
    with pytest.raises(ValueError, match="search needs 'query'"):
        fill_args("search", params, None)
    assert fill_args("now", [], None) == {}


def test_a_step_that_cannot_be_read_ends_the_loop_and_the_extract_still_answers(make):
    def rule(request):
        return "I will not answer in JSON" if is_step(request) else {"answer": "fallback"}
    lm = pipec.ScriptedLM(rule=rule)
    prog, _ = make(lm)
    pred = prog(question="q")
    assert pred.ok and pred.answer == "fallback"
    assert predictors(pred) == ["agent.react", "agent.react", "agent.extract"]
    assert all(r.error for r in pred.trace[:2])
    assert pred.trajectory == "(no steps yet)"


def test_a_failing_extract_is_a_recorded_failure(make):
    def rule(request):
        return step("finish") if is_step(request) else "no JSON"
    prog, _ = make(pipec.ScriptedLM(rule=rule), pipe=PIPE.replace("out answer: str", "out answer: int"))
    pred = prog(question="q")
    assert not pred.ok
    assert "agent" in pred.error and "did not parse" in pred.error
    assert predictors(pred) == ["agent.react", "agent.extract", "agent.extract"]


def test_runs_on_asyncio_with_a_non_inline_lm(make, slow_lm_cls):
    lm = scripted([step("search", "x"), step("finish")], lm_cls=slow_lm_cls, delay=0.01)
    prog, _ = make(lm)
    assert not prog.inline
    pred = prog(question="q")
    assert pred.ok and pred.answer == "42"
    assert predictors(pred) == ["agent.react", "search", "agent.react", "agent.extract"]


def test_undeclared_one_parameter_tool_takes_a_string(write_pipe, tool_module):
    name = tool_module(TOOLS)
    path = write_pipe(f"""
        signature Answer {{ in question: str out answer: str }}
        tool search = python("{name}:search")
        module agent = ReAct(Answer, tools: [search])
        pipeline p(question: str) -> (answer, trajectory: str) {{
            r = agent(question: question)
            return answer = r.answer, trajectory = r.trajectory
        }}
    """)
    lm = scripted([step("search", "eiffel"), step("search", {"query": "tower", "k": 1}), step("finish")])
    prog = pipec.load(path, lm=lm, cache=False)
    pred = prog(question="q")
    assert pred.ok
    assert sys.modules[name].CALLS == [("search", "eiffel"), ("search", "tower")]
    assert "- search(query, k=2): Passages about the query." in system_of(lm.requests[0])
    assert 'Observation 2: ["passage about tower"]' in pred.trajectory


def test_undeclared_positional_only_tool_gets_its_argument_positionally(write_pipe, tool_module):
    name = tool_module(TOOLS)
    path = write_pipe(f"""
        signature Answer {{ in question: str out answer: str }}
        tool shout = python("{name}:shout")
        module agent = ReAct(Answer, tools: [shout])
        pipeline p(question: str) -> (answer, trajectory: str) {{
            r = agent(question: question)
            return answer = r.answer, trajectory = r.trajectory
        }}
    """)
    lm = scripted([step("shout", "hi"), step("shout", {"text": "there"}), step("finish")])
    pred = pipec.load(path, lm=lm, cache=False)(question="q")
    assert sys.modules[name].CALLS == [("shout", "hi"), ("shout", "there")]
    assert "Observation 1: HI" in pred.trajectory and "Observation 2: THERE" in pred.trajectory


# ---------------------------------------------------------------------------- static checks
def load_error(write_pipe, tool_module, module_line, sig="in question: str out answer: str", tools_src=TOOLS,
               extra=""):
    name = tool_module(tools_src)
    path = write_pipe(f"""
        signature Answer {{ {sig} }}
        tool search(query: str) -> list[str] = python("{name}:search")
        tool add(a: int, b: int) -> int = python("{name}:add")
        tool raw_add = python("{name}:add")
        tool finish(x: str) -> str = python("{name}:search")
        {extra}
        {module_line}
        pipeline p(question: str) -> (answer) {{
            r = agent(question: question)
            return answer = r.answer
        }}
    """)
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(path, lm=pipec.ScriptedLM([]), cache=False)
    return str(err.value)


@pytest.mark.parametrize("module_line, message", [
    ("module agent = ReAct(Answer)", "ReAct module agent needs a `tools` option naming the tools it may call"),
    ("module agent = ReAct(Answer, tools: [])", "option 'tools' of ReAct module agent needs at least 1 name"),
    ("module agent = ReAct(Answer, tools: [serch])", "unknown tool 'serch'"),
    ("module agent = ReAct(Answer, tools: search)", "option 'tools' of ReAct module agent must be a list of tool names"),
    ("module agent = ReAct(Answer, tools: [search, search])", "ReAct module agent names tool search more than once"),
    ("module agent = ReAct(Answer, tools: [search, finish])",
     "ReAct module agent: a tool named 'finish' clashes with the action that ends the loop"),
    ("module agent = ReAct(Answer, tools: [raw_add])",
     "ReAct tool raw_add has no declared parameters and its function takes 2 required parameters (a, b)"),
    ("module agent = ReAct(Answer, tools: [search], max_steps: 0)",
     "option 'max_steps' of ReAct module agent must be at least 1"),
    ("module agent = ReAct(Answer, tools: [search], max_steps: 2.5)",
     "option 'max_steps' of ReAct module agent must be an integer"),
    ("module agent = ReAct(Answer, tools: [search], max_step: 2)", "unknown option 'max_step' for ReAct module agent"),
])
def test_bad_options_are_refused_at_load(write_pipe, tool_module, module_line, message):
    assert message in load_error(write_pipe, tool_module, module_line)


def test_declared_parameters_that_need_an_object_get_a_hint_to_declare_them(write_pipe, tool_module):
    text = load_error(write_pipe, tool_module, "module agent = ReAct(Answer, tools: [raw_add])")
    assert "declare them with their types: `tool raw_add(a: T, b: T) -> T" in text


def test_signature_fields_that_clash_with_the_step_or_the_trajectory_are_refused(write_pipe, tool_module):
    text = load_error(write_pipe, tool_module, "module agent = ReAct(Answer, tools: [search])",
                      sig="in question: str in action: str out answer: str")
    assert "signature Answer has an input named 'action', which ReAct's steps reply with" in text
    text = load_error(write_pipe, tool_module, "module agent = ReAct(Answer, tools: [search])",
                      sig="in question: str out answer: str out trajectory: str")
    assert "ReAct adds an output named 'trajectory'" in text


def test_pipec_check_reports_the_kind_checks(write_pipe, tool_module):
    name = tool_module(TOOLS)
    path = write_pipe(f"""
        signature Answer {{ in question: str out answer: str }}
        tool raw_add = python("{name}:add")
        module agent = ReAct(Answer, tools: [raw_add])
        pipeline p(question: str) -> (answer) {{
            r = agent(question: question)
            return answer = r.answer
        }}
    """)
    proc = subprocess.run([sys.executable, "-m", "pipec", "check", str(path)], cwd=path.parent,
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 1
    assert "ReAct tool raw_add has no declared parameters" in proc.stderr


# ---------------------------------------------------------------------------- compiling
def test_bootstrap_fewshot_gives_the_step_and_the_extract_demos(make):
    def rule(request):
        if is_step(request):
            traj = first_user_value(request, "trajectory")
            return step("finish") if "Observation" in traj else step("search", first_user_value(request, "question"))
        return {"answer": first_user_value(request, "question").upper()}
    prog, _ = make(pipec.ScriptedLM(rule=rule))
    rows = [{"question": w, "answer": w.upper()} for w in ["alpha", "beta", "gamma", "delta"]]
    compiled = prog.compile(trainset=rows, valset=rows, metric="exact_match(answer)", optimizer="bootstrap_fewshot",
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"agent.react", "agent.extract"}
    steps = params["agent.react"].demos
    assert len(steps) == 2 and {d["action"] for d in steps} == {"search"}
    assert all("trajectory" in d and "thought" in d for d in steps)
    extracts = params["agent.extract"].demos
    assert len(extracts) == 2 and all("Observation 1" in d["trajectory"] and d["answer"] == d["question"].upper()
                                      for d in extracts)


# ---------------------------------------------------------------------------- the example, end to end
@pytest.mark.e2e
def test_example_runs_on_the_embedded_model_through_the_cli(tmp_path):
    out = run_example("react.pipe", tmp_path, "question=Where was the chief engineer of the Golden Gate Bridge born?")
    assert out["ok"] and isinstance(out["outputs"]["answer"], str)
    assert out["outputs"]["trajectory"].startswith("Thought 1:")
