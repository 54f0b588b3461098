"""Decompose (least-to-most prompting): plan sub-questions, solve them in order, compose the outputs.

Scripted LMs answer by predictor (told apart by their system messages), so each test can check the
order of calls, what every prompt carried, the bounds, and failures.
"""
from __future__ import annotations

import json

import pytest
from conftest import first_user_value, system_of, run_example

import pipec

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")


BUILTIN = """
    signature Problem { "Solve the word problem." in question: str out answer: int }
    module solve = Decompose(Problem{opts})
    pipeline p(question: str) -> (answer, steps: list[str], step_answers: list[str]) {
        s = solve(question: question)
        return answer = s.answer, steps = s.steps, step_answers = s.step_answers
    }
"""

WITH_SOLVER = """
    signature Problem { "Solve the word problem." in question: str out answer: int }
    signature Step { "Answer the sub-question." {step_fields} }
    module step = Predict(Step)
    module solve = Decompose(Problem, solver: step{opts})
    pipeline p(question: str) -> (answer, steps: list[str]) {
        s = solve(question: question)
        return answer = s.answer, steps = s.steps
    }
"""

PLAN = ["How many rolls are baked?", "How many are left after selling 20?"]
ANSWERS = {"How many rolls are baked?": "36", "How many are left after selling 20?": "16"}


def role(request) -> str:
    """Which inner predictor a request comes from, by its system message."""
    system = system_of(request)
    if "Break it down into at most" in system:
        return "plan"
    if "Answer one sub-question of a larger problem" in system:
        return "solve"
    if "The problem was broken into sub-questions" in system:
        return "compose"
    if system.startswith("Answer the sub-question."):
        return "step"
    raise AssertionError(system)


def rule_for(plan):
    def rule(request):
        r = role(request)
        if r == "plan":
            return {"steps": plan}
        if r == "solve":
            return {"answer": ANSWERS.get(first_user_value(request, "subquestion"), "?")}
        if r == "step":
            return {"answer": ANSWERS.get(first_user_value(request, "question").splitlines()[-1]
                                          .removeprefix("Now answer: "), "?")}
        return {"answer": 16}
    return rule


def load(write_pipe, lm, opts="", text=BUILTIN, **fmt):
    src = text.replace("{opts}", opts)
    for k, v in fmt.items():
        src = src.replace("{" + k + "}", v)
    return pipec.load(write_pipe(src), lm=lm, cache=False)


def test_plans_solves_in_order_with_earlier_answers_then_composes(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for(PLAN))
    prog = load(write_pipe, lm)
    out = prog(question="3 trays of 12 rolls, 20 sold. How many left?")
    assert out.ok, out.error
    assert out.answer == 16
    assert out.steps == PLAN and out.step_answers == ["36", "16"]
    assert [role(r) for r in lm.requests] == ["plan", "solve", "solve", "compose"]
    assert [rec.predictor for rec in out.trace] == ["solve.plan", "solve.solve", "solve.solve", "solve.compose"]
    first, second = lm.requests[1], lm.requests[2]
    assert first_user_value(first, "solved") == "(none yet)"
    assert first_user_value(first, "subquestion") == PLAN[0]
    user = second.messages[-1]["content"]          # the second step sees the first one and its answer
    assert "solved: 1. Q: How many rolls are baked?\nA: 36" in user
    assert first_user_value(second, "subquestion") == PLAN[1]
    assert first_user_value(second, "question").startswith("3 trays")       # and the original problem
    compose = lm.requests[3].messages[-1]["content"]
    assert "1. Q: How many rolls are baked?\nA: 36\n2. Q: How many are left after selling 20?\nA: 16" in compose
    assert "at most 4 simpler sub-questions" in system_of(lm.requests[0])     # the default bound


def test_max_steps_bounds_the_plan_and_blank_steps_are_skipped(write_pipe):
    plan = ["  ", "a?", "", "b?", "c?", "d?", "e?"]
    lm = pipec.ScriptedLM(rule=rule_for(plan))
    out = load(write_pipe, lm, ", max_steps: 2")(question="q")
    assert out.ok and out.steps == ["a?", "b?"]
    assert [role(r) for r in lm.requests] == ["plan", "solve", "solve", "compose"]
    assert "at most 2 simpler sub-questions" in system_of(lm.requests[0])


def test_an_empty_plan_composes_from_the_inputs_alone(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for([]))
    out = load(write_pipe, lm)(question="q")
    assert out.ok and out.steps == [] and out.step_answers == [] and out.answer == 16
    assert [role(r) for r in lm.requests] == ["plan", "compose"]
    assert first_user_value(lm.requests[1], "solved") == "(none yet)"


def retry_everything(rule):
    """The worst case: every first reply is empty (unparseable); the retry gets the real answer."""
    def wrapped(request):
        if request.messages[-1]["content"].startswith("Your reply could not be used"):
            return rule(request)
        return ""
    return wrapped


def test_max_calls_is_the_calls_made_in_the_worst_case(write_pipe):
    plan = ["a?", "b?", "c?", "d?", "e?"]
    lm = pipec.ScriptedLM(rule=retry_everything(rule_for(plan)))
    prog = load(write_pipe, lm, ", max_steps: 3")
    assert prog.modules["solve"].max_calls() == 2 + 3 * 2 + 2
    out = prog(question="q")
    assert out.ok, out.error
    assert len(lm.requests) == prog.modules["solve"].max_calls() == 10
    # with a solver module, each step costs the solver's worst case
    lm2 = pipec.ScriptedLM(rule=retry_everything(rule_for(plan)))
    prog2 = load(write_pipe, lm2, ", max_steps: 3", WITH_SOLVER, step_fields="in question: str out answer: str")
    assert prog2.modules["solve"].max_calls() == 2 + 3 * 2 + 2
    assert prog2(question="q").ok
    assert len(lm2.requests) == 10
    from pipec.inspection import inspect_program       # `pipec inspect` counts the solver's calls too
    assert inspect_program(prog2)["max_lm_calls"] == 10


def test_a_step_that_does_not_parse_fails_the_row_with_a_recorded_error(write_pipe):
    def rule(request):
        if role(request) == "solve" and first_user_value(request, "subquestion") == PLAN[1]:
            return ""                                   # the second step never parses
        return rule_for(PLAN)(request)
    lm = pipec.ScriptedLM(rule=rule)
    out = load(write_pipe, lm)(question="q")
    assert not out.ok
    assert "step 2 ('How many are left after selling 20?')" in out.error and "did not parse" in out.error
    assert [r.predictor for r in out.trace] == ["solve.plan", "solve.solve", "solve.solve", "solve.solve"]
    assert out.trace[-1].error and out.trace[-1].attempt == 2
    assert not any(role(r) == "compose" for r in lm.requests)


def test_solver_module_answers_each_step_with_the_earlier_steps_as_context(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for(PLAN))
    prog = load(write_pipe, lm, text=WITH_SOLVER,
                step_fields="in context: list[str] in question: str out answer: str")
    assert sorted(prog.predictors()) == ["solve.compose", "solve.plan", "step"]     # no built-in solve
    out = prog(question="3 trays")
    assert out.ok, out.error
    assert [role(r) for r in lm.requests] == ["plan", "step", "step", "compose"]
    assert [r.predictor for r in out.trace] == ["solve.plan", "step", "step", "solve.compose"]
    assert first_user_value(lm.requests[1], "context") == "[]"
    assert first_user_value(lm.requests[1], "question") == PLAN[0]
    assert first_user_value(lm.requests[2], "context") == json.dumps(["Q: How many rolls are baked?\nA: 36"])
    assert first_user_value(lm.requests[2], "question") == PLAN[1]
    assert out.steps == PLAN and out.answer == 16


def test_solver_without_context_gets_the_earlier_steps_in_the_question(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for(PLAN))
    prog = load(write_pipe, lm, text=WITH_SOLVER, step_fields="in query: str out answer: str  out note: str?")
    def step_rule(request):          # the only str input takes the sub-question, whatever its name
        if role(request) == "step":
            return {"answer": "x", "note": None}
        return rule_for(PLAN)(request)
    lm.rule = step_rule
    assert prog(question="q").ok
    steps = [r for r in lm.requests if role(r) == "step"]
    assert steps[0].messages[-1]["content"] == f"query: {PLAN[0]}"
    assert steps[1].messages[-1]["content"] == (
        "query: Earlier sub-questions and their answers:\nQ: How many rolls are baked?\nA: x\n"
        f"Now answer: {PLAN[1]}")


def test_solver_passes_along_inputs_it_shares_by_name(write_pipe):
    src = """
        signature Problem { "Solve." in question: str in unit: str out answer: int }
        signature Step { "Answer the sub-question." in question: str in unit: str in hint: str? out answer: str }
        module step = Predict(Step)
        module solve = Decompose(Problem, solver: step)
        pipeline p(question: str, unit: str) -> (answer) {
            s = solve(question: question, unit: unit)
            return answer = s.answer
        }
    """
    lm = pipec.ScriptedLM(rule=rule_for(["a?"]))
    assert pipec.load(write_pipe(src), lm=lm, cache=False)(question="q", unit="rolls").ok
    step = next(r for r in lm.requests if role(r) == "step")
    assert step.messages[-1]["content"] == "question: a?\nunit: rolls\nhint: (none)"


# ---------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("opts, message", [
    (", max_steps: 0", "option 'max_steps' of Decompose module solve must be at least 1"),
    (", max_steps: 2.5", "option 'max_steps' of Decompose module solve must be an integer"),
    (', solver: "step"', "option 'solver' of Decompose module solve must be the name of a module declaration"),
    (", solver: nothing", "unknown module 'nothing'"),
    (", solver: solve", "module cycle: solve -> solve"),
    (", steps: 3", "unknown option 'steps' for Decompose module solve"),
])
def test_bad_options_are_rejected_when_loading(write_pipe, opts, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), opts)
    assert message in str(err.value)


@pytest.mark.parametrize("fields, message", [
    ("in a: str in b: str out answer: str", "solver step of Decompose module solve has no input for the sub-question"),
    ("in question: int out answer: str", "takes the sub-question in 'question', which is int, not str"),
    ("in question: str in context: int out answer: str", "has an input 'context' of type int"),
    ("in question: str in day: str out answer: str",
     "solver step of Decompose module solve needs input 'day', which Decompose module solve cannot give it"),
    ("in question: str out a: str out b: str", "has several outputs and none is called 'answer'"),
])
def test_solver_contract_is_checked_statically(write_pipe, fields, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), text=WITH_SOLVER, step_fields=fields)
    assert message in str(err.value)


def test_solver_sharing_an_input_with_another_type_is_rejected(write_pipe):
    src = """
        signature Problem { "Solve." in question: str in n: str out answer: int }
        signature Step { "Answer." in question: str in n: int out answer: str }
        module step = Predict(Step)
        module solve = Decompose(Problem, solver: step)
        pipeline p(question: str, n: str) -> (answer) {
            s = solve(question: question, n: n)
            return answer = s.answer
        }
    """
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src), lm=pipec.ScriptedLM([]), cache=False)
    assert "needs input 'n' as int, but signature Problem has it as str" in str(err.value)


def test_inner_field_names_avoid_the_signatures_fields(write_pipe):
    src = """
        signature S { "Solve." in subquestion: str in solved: str out answer: str }
        module solve = Decompose(S)
        pipeline p(subquestion: str, solved: str) -> (answer) {
            s = solve(subquestion: subquestion, solved: solved)
            return answer = s.answer
        }
    """
    prog = pipec.load(write_pipe(src), lm=pipec.ScriptedLM([]), cache=False)
    preds = prog.predictors()
    assert [n for n, _, _ in preds["solve.solve"].inputs] == ["subquestion", "solved", "solved_2", "subquestion_2"]
    assert [n for n, _, _ in preds["solve.solve"].outputs] == ["answer"]      # the signature's outputs are not here
    assert [n for n, _, _ in preds["solve.compose"].inputs] == ["subquestion", "solved", "solved_2"]


# ---------------------------------------------------------------------------- compiling
def test_bootstrap_fewshot_gives_every_inner_predictor_demos(write_pipe):
    def rule(request):
        r = role(request)
        q = first_user_value(request, "question")
        if r == "plan":
            return {"steps": [f"first part of {q}?", f"second part of {q}?"]}
        if r == "solve":
            return {"answer": "ok"}
        return {"answer": len(q)}
    lm = pipec.ScriptedLM(rule=rule)
    prog = load(write_pipe, lm)
    rows = [{"question": "x" * n, "answer": n} for n in range(1, 7)]
    compiled = prog.compile(trainset=rows[:4], valset=rows[4:], metric="exact_match(answer)",
                            optimizer="bootstrap_fewshot", options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"solve.plan", "solve.solve", "solve.compose"}
    for name in params:
        assert len(params[name].demos) == 2, name
    assert params["solve.plan"].demos[0]["steps"][0].startswith("first part of")
    assert params["solve.solve"].demos[0]["answer"] == "ok" and "subquestion" in params["solve.solve"].demos[0]
    assert "solved" in params["solve.compose"].demos[0]
    lm.requests.clear()
    assert compiled(question="xyz").answer == 3
    assert any(m["role"] == "assistant" for m in lm.requests[1].messages[1:-1])    # the solve prompt has demos


def test_bootstrap_fewshot_gives_the_solver_module_demos_from_its_steps(write_pipe):
    def rule(request):
        r = role(request)
        if r == "plan":
            return {"steps": ["one?", "two?"]}
        if r == "step":
            return {"answer": "fine"}
        return {"answer": len(first_user_value(request, "question"))}
    lm = pipec.ScriptedLM(rule=rule)
    prog = load(write_pipe, lm, text=WITH_SOLVER, step_fields="in context: list[str] in question: str out answer: str")
    rows = [{"question": "x" * n, "answer": n} for n in range(1, 6)]
    compiled = prog.compile(trainset=rows[:3], valset=rows[3:], metric="exact_match(answer)",
                            optimizer="bootstrap_fewshot", options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == {"solve.plan", "step", "solve.compose"}
    assert all(len(p.demos) == 2 for p in params.values())
    assert [d["question"] for d in params["step"].demos] == ["one?", "two?"]
    assert params["step"].demos[1]["context"] == ["Q: one?\nA: fine"]


# ---------------------------------------------------------------------------- end to end
@pytest.mark.e2e
def test_example_runs_on_the_embedded_model_through_the_cli(tmp_path):
    out = run_example("decompose.pipe", tmp_path,
                      "question=Tom has 5 apples and buys 7 more. How many apples does he have?")["outputs"]
    assert isinstance(out["answer"], int)
    assert 1 <= len(out["steps"]) <= 3 and len(out["step_answers"]) == len(out["steps"])
