"""RolePlay: a task specifier, then a user role and an assistant role prompting each other under
inception prompts until the user role says the task is done; the answer extracted (CAMEL, Li et al.
2023)."""
from __future__ import annotations


import pytest
from conftest import first_user_value, system_of, first_tries_unparsable

import pipec
from pipec.modules.role_play import DONE_TOKEN

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

SRC = """
    signature Itinerary {
        "Plan a one-day city visit."
        in  request: str
        out plan: str
    }
    module plan = RolePlay(Itinerary%s)
    pipeline p(request: str) -> (plan, transcript: str) {
        r = plan(request: request)
        return plan = r.plan, transcript = r.transcript
    }
"""
ROLES = ', assistant: "Travel Agent", user: "Traveller"'


def part(request) -> str:
    keys = list(request.schema["properties"])
    return {"task": "specify", "task_done": "user", "solution": "assistant"}.get(keys[0], "answer")


class Script:
    """The specified task; the user role's turns as instructions (None: done); the assistant's solutions
    numbered by turn; the extracted plan. "garbage" does not parse; a retry gets its call's first reply."""

    def __init__(self, turns, task="Rainy Paris with kids: indoor sights, lunch, one museum.", plan="the plan"):
        self.queues = {"specify": [task], "user": list(turns), "answer": [plan]}
        self.last: dict[str, object] = {}
        self.solutions = 0

    def __call__(self, request):
        which = part(request)
        if which == "assistant":
            self.solutions += 1
            return {"solution": f"solution {self.solutions}"}
        if not request.messages[-1]["content"].startswith("Your reply could not be used"):
            self.last[which] = self.queues[which].pop(0)
        reply = self.last[which]
        if reply == "garbage":
            return "{}"
        if which == "specify":
            return {"task": reply}
        if which == "answer":
            return {"plan": reply}
        return {"task_done": reply is None, "instruction": reply or ""}


def load(write_pipe, lm, options=ROLES):
    return pipec.load(write_pipe(SRC % options), lm=lm, cache=False)


def predictors(pred) -> list[str]:
    return [r.predictor for r in pred.trace]


# ---------------------------------------------------------------------------- control flow
def test_specify_then_the_roles_take_turns_until_the_user_role_is_done(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["List indoor sights.", "Pick a lunch spot.", None]))
    pred = load(write_pipe, lm)(request="A rainy Saturday in Paris with two children")
    assert pred.ok, pred.error
    assert pred.plan == "the plan"
    assert predictors(pred) == ["plan.specify", "plan.user", "plan.assistant", "plan.user", "plan.assistant",
                                "plan.user", "plan.answer"]
    task = "Rainy Paris with kids: indoor sights, lunch, one museum."
    assert pred.transcript == (f"Task: {task}\n\n"
                               "Traveller: List indoor sights.\n\nTravel Agent: solution 1\n\n"
                               "Traveller: Pick a lunch spot.\n\nTravel Agent: solution 2\n\n"
                               f"Traveller: {DONE_TOKEN}")
    specify, user1, assistant1, user2, assistant2, user3, answer = lm.requests
    assert "Travel Agent will help Traveller to complete: Plan a one-day city visit." in system_of(specify)
    assert specify.messages[-1]["content"] == "request: A rainy Saturday in Paris with two children"
    # Inception prompting: each role's system message states its role, the other's, and the task.
    assert system_of(user1).startswith("Never forget you are the Traveller and I am the Travel Agent.")
    assert system_of(assistant1).startswith("Never forget you are the Travel Agent and I am the Traveller.")
    assert all(f"Here is the task: {task}\nNever forget our task!" in system_of(r)
               for r in (user1, assistant1, user2, assistant2, user3))
    # The roles read the inputs and the conversation; the assistant also the instruction to answer.
    assert user1.messages[-1]["content"] == ("request: A rainy Saturday in Paris with two children\n"
                                             "conversation: (nothing yet)")
    assert first_user_value(assistant1, "instruction") == "List indoor sights."
    assert "Travel Agent: solution 1" in user2.messages[-1]["content"]
    assert "Traveller: Pick a lunch spot." in user3.messages[-1]["content"]
    # The answer is extracted from the inputs, the task and the conversation.
    assert first_user_value(answer, "task") == task
    assert "Travel Agent: solution 2" in answer.messages[-1]["content"]
    assert list(answer.schema["properties"]) == ["plan"]


def test_the_camel_termination_token_or_an_empty_instruction_ends_the_conversation(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["Step one.", f"{DONE_TOKEN}"]))
    pred = load(write_pipe, lm)(request="q")
    assert predictors(pred) == ["plan.specify", "plan.user", "plan.assistant", "plan.user", "plan.answer"]

    lm = pipec.ScriptedLM(rule=Script([""]))
    pred = load(write_pipe, lm)(request="q")
    assert predictors(pred) == ["plan.specify", "plan.user", "plan.answer"]
    assert pred.transcript.endswith(f"Traveller: {DONE_TOKEN}")


def test_done_before_any_solution_does_not_end_the_conversation(write_pipe):
    def rule(request):
        which = part(request)
        if which == "user":
            return {"task_done": True, "instruction": "Pick a museum."}
        return {"specify": {"task": "t"}, "assistant": {"solution": "The Louvre."}, "answer": {"plan": "p"}}[which]
    lm = pipec.ScriptedLM(rule=rule)
    pred = load(write_pipe, lm)(request="q")
    assert predictors(pred) == ["plan.specify", "plan.user", "plan.assistant", "plan.user", "plan.answer"]
    assert pred.transcript == \
        f"Task: t\n\nTraveller: Pick a museum.\n\nTravel Agent: The Louvre.\n\nTraveller: {DONE_TOKEN}"


def test_max_turns_bounds_the_conversation(write_pipe):
    lm = pipec.ScriptedLM(rule=Script([f"Step {i}." for i in range(9)]))
    pred = load(write_pipe, lm, ROLES + ", max_turns: 2")(request="q")
    assert predictors(pred) == ["plan.specify"] + ["plan.user", "plan.assistant"] * 2 + ["plan.answer"]
    assert "Step 2." not in pred.transcript


def test_without_specify_the_instruction_is_the_task_and_default_roles_play(write_pipe):
    lm = pipec.ScriptedLM(rule=Script([None]))
    prog = load(write_pipe, lm, ", specify: false")
    pred = prog(request="q")
    assert predictors(pred) == ["plan.user", "plan.answer"]
    assert "plan.specify" not in prog.predictors()
    assert system_of(lm.requests[0]).startswith("Never forget you are the User and I am the Assistant.")
    assert "Here is the task: Plan a one-day city visit.\n" in system_of(lm.requests[0])
    assert pred.transcript.startswith("Task: Plan a one-day city visit.\n\n")


@pytest.mark.parametrize("options, expected", [(ROLES, 2 * (1 + 2 * 4 + 1)), (", max_turns: 1", 8),
                                               (", max_turns: 3, specify: false", 2 * (2 * 3 + 1))])
def test_max_calls_is_the_worst_case_and_is_reached(write_pipe, options, expected):
    def answer(request, n):
        which = part(request)
        if which == "user":
            return {"task_done": False, "instruction": f"do {n}"}
        return {{"specify": "task", "assistant": "solution"}.get(which, "plan"): f"r{n}"}
    lm = pipec.ScriptedLM(rule=first_tries_unparsable(answer))
    prog = load(write_pipe, lm, options)
    pred = prog(request="q")
    assert pred.ok, pred.error
    assert prog.modules["plan"].max_calls() == expected == len(lm.requests) == pred.lm_calls


# ---------------------------------------------------------------------------- bad replies
def test_an_unreadable_specification_falls_back_to_the_instruction(write_pipe):
    lm = pipec.ScriptedLM(rule=Script([None], task="garbage"))
    pred = load(write_pipe, lm)(request="q")
    assert pred.ok and pred.transcript.startswith("Task: Plan a one-day city visit.")
    assert "Here is the task: Plan a one-day city visit." in system_of(lm.requests[2])


def test_an_unreadable_role_turn_ends_the_conversation_and_the_answer_still_comes(write_pipe):
    lm = pipec.ScriptedLM(rule=Script(["Step one.", "garbage"]))
    pred = load(write_pipe, lm)(request="q")
    assert pred.ok and pred.plan == "the plan"
    assert predictors(pred)[-3:] == ["plan.user", "plan.user", "plan.answer"]
    assert pred.transcript.endswith("Travel Agent: solution 1")

    lm = pipec.ScriptedLM(rule=lambda r: "{}" if part(r) == "assistant" else
                          {"specify": {"task": "t"}, "user": {"task_done": False, "instruction": "Go."},
                           "answer": {"plan": "p"}}[part(r)])
    pred = load(write_pipe, lm)(request="q")
    assert pred.ok and pred.plan == "p"
    assert pred.transcript.endswith("Traveller: Go.\n\nTravel Agent: (no usable reply)")


def test_an_unreadable_answer_is_a_recorded_failure(write_pipe):
    lm = pipec.ScriptedLM(rule=Script([None], plan="garbage"))
    pred = load(write_pipe, lm)(request="q")
    assert not pred.ok and pred.error.startswith("r (plan): reply did not parse, even after a retry")


# ---------------------------------------------------------------------------- static checks and parts
@pytest.mark.parametrize("options, message", [
    (", max_turns: 0", "option 'max_turns' of RolePlay module plan must be at least 1"),
    (", assistant: Agent", "option 'assistant' of RolePlay module plan must be a string"),
    (", specify: 1", "option 'specify' of RolePlay module plan must be true or false"),
])
def test_bad_options_are_load_errors(write_pipe, options, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM(), options)
    assert message in str(err.value)


def test_inner_fields_do_not_shadow_the_signatures(write_pipe):
    src = (SRC % "").replace("in  request: str", "in  request: str\n        in  task: str") \
                    .replace("plan(request: request)", "plan(request: request, task: request)")
    lm = pipec.ScriptedLM(rule=lambda r: {"task_2": "t"} if "task_2" in r.schema["properties"] else
                          {"task_done": True, "instruction": ""} if "task_done" in r.schema["properties"] else
                          {"plan": "p"})
    prog = pipec.load(write_pipe(src), lm=lm, cache=False)
    assert prog(request="q").ok
    assert [n for n, _, _ in prog.predictors()["plan.answer"].inputs] == ["request", "task", "task_2", "conversation"]


def test_bootstrap_gives_the_roles_demos_and_the_task_stays_in_the_system_message(write_pipe):
    rows = [{"request": f"r{i}", "plan": f"P{i}"} for i in range(6)]

    def rule(request):
        which = part(request)
        text = request.messages[-1]["content"]
        r = text.splitlines()[0].removeprefix("request: ")
        if which == "specify":
            return {"task": f"plan for {r}"}
        if which == "user":
            done = "solution" in text
            return {"task_done": done, "instruction": "" if done else f"draft {r}"}
        if which == "assistant":
            return {"solution": f"solution P{r[1:]}"}
        return {"plan": text.split("solution ")[1].splitlines()[0]}
    prog = load(write_pipe, pipec.ScriptedLM(rule=rule))
    compiled = prog.compile(rows[:4], rows[4:], "exact_match(plan)", "bootstrap_fewshot", budget=300,
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert {n: len(params[n].demos) for n in params} == \
        {"plan.specify": 2, "plan.user": 2, "plan.assistant": 2, "plan.answer": 2}
    lm = pipec.ScriptedLM(rule=rule)
    run = load(write_pipe, lm)
    run.apply(params)
    assert run(request="r9").plan == "P9"
    user = next(r for r in lm.requests if part(r) == "user")
    assert [m["role"] for m in user.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "Here is the task: plan for r9" in system_of(user)
