"""SkeletonOfThought: a skeleton call, every point expanded in parallel, then joined.

Scripted LMs answer by predictor (told apart by their system messages). The parallel expansion is
shown with `SlowLM`, a non-inline scripted LM that sleeps on asyncio and counts calls in flight.
"""
from __future__ import annotations

import json
import time

import pytest
from conftest import SlowLM, first_user_value, system_of, run_example

import pipec
from pipec.inspection import inspect_program

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")


TEXT = """
    signature Explain { "Explain the topic." in topic: str out answer: str }
    module explain = SkeletonOfThought(Explain{opts})
    pipeline p(topic: str) -> (answer, points: list[str]) {
        e = explain(topic: topic)
        return answer = e.answer, points = e.points
    }
"""

TYPED = """
    signature Review { "Review the product." in product: str out verdict: enum(buy, skip) out summary: str }
    module review = SkeletonOfThought(Review{opts})
    pipeline p(product: str) -> (verdict, summary, points: list[str]) {
        r = review(product: product)
        return verdict = r.verdict, summary = r.summary, points = r.points
    }
"""

POINTS = ["light bends", "blue scatters most", "so the sky looks blue"]


def role(request) -> str:
    system = system_of(request)
    if "Give only its skeleton" in system:
        return "skeleton"
    if "Write only the point given" in system:
        return "expand"
    if "A draft answer was written point by point" in system:
        return "join"
    raise AssertionError(system)


def rule_for(points):
    def rule(request):
        r = role(request)
        if r == "skeleton":
            return {"points": points}
        if r == "expand":
            point = first_user_value(request, "point")
            return {"expansion": f"About {point.split('. ', 1)[1]}."}
        user = next(m["content"] for m in reversed(request.messages) if m["content"].startswith("product: "))
        lines = user.split("draft: ", 1)[1].splitlines()
        return {"verdict": "buy", "summary": f"draft had {len(lines)}"}
    return rule


def load(write_pipe, lm, opts="", text=TEXT):
    return pipec.load(write_pipe(text.replace("{opts}", opts)), lm=lm, cache=False)


def test_skeleton_then_one_expansion_per_point_then_concatenation(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for(POINTS))
    prog = load(write_pipe, lm)
    out = prog(topic="why is the sky blue")
    assert out.ok, out.error
    assert [role(r) for r in lm.requests] == ["skeleton", "expand", "expand", "expand"]      # no join call
    assert out.points == POINTS
    assert out.answer == ("1. light bends About light bends.\n2. blue scatters most About blue scatters most.\n"
                          "3. so the sky looks blue About so the sky looks blue.")
    for i, request in enumerate(lm.requests[1:]):        # each expansion sees the whole skeleton and its point
        assert first_user_value(request, "skeleton") == json.dumps(POINTS)
        assert first_user_value(request, "point") == f"{i + 1}. {POINTS[i]}"
        assert first_user_value(request, "topic") == "why is the sky blue"
    assert "at most 5 points" in system_of(lm.requests[0])                        # the default bound
    assert sorted(prog.predictors()) == ["explain.expand", "explain.skeleton"]
    assert prog.modules["explain"].max_calls() == 2 * (1 + 5)


def test_max_points_bounds_the_skeleton_and_blank_points_are_skipped(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for(["", "a", "  ", "b", "c", "d"]))
    out = load(write_pipe, lm, ", max_points: 2")(topic="t")
    assert out.ok and out.points == ["a", "b"]
    assert [role(r) for r in lm.requests] == ["skeleton", "expand", "expand"]
    assert "at most 2 points" in system_of(lm.requests[0])


def test_expansions_run_in_parallel_and_join_in_skeleton_order(write_pipe):
    points = ["first", "second", "third", "fourth"]
    # later points answer sooner, so completion order is the reverse of the skeleton's
    delays = {"1. first": 0.8, "2. second": 0.6, "3. third": 0.4, "4. fourth": 0.2}

    def delay(request):
        return delays[first_user_value(request, "point")] if role(request) == "expand" else 0.05
    lm = SlowLM(rule=rule_for(points), delay_fn=delay)
    prog = load(write_pipe, lm)
    assert not prog.inline                          # a non-inline LM: the row runs on asyncio
    start = time.perf_counter()
    out = prog(topic="t")
    elapsed = time.perf_counter() - start
    assert out.ok, out.error
    assert lm.max_in_flight == 4                    # every point in flight at once
    assert elapsed < 0.05 + 0.8 + 0.6, elapsed      # ~0.85 s, against 2.05 s one after another
    assert [line.split(" ")[1] for line in out.answer.splitlines()] == points
    expands = [rec for rec in out.trace if rec.predictor == "explain.expand"]
    assert len(expands) == 4


def test_typed_outputs_are_filled_by_a_join_call_on_the_draft(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for(POINTS))
    prog = load(write_pipe, lm, text=TYPED)
    out = prog(product="a kettle")
    assert out.ok, out.error
    assert [role(r) for r in lm.requests] == ["skeleton", "expand", "expand", "expand", "join"]
    assert out.verdict == "buy" and out.summary == "draft had 3" and out.points == POINTS
    draft = lm.requests[-1].messages[-1]["content"]
    assert "draft: 1. light bends About light bends.\n2. blue scatters most" in draft
    assert sorted(prog.predictors()) == ["review.expand", "review.join", "review.skeleton"]
    assert prog.modules["review"].max_calls() == 2 * (1 + 5 + 1)


def test_join_call_can_be_forced_for_a_single_str_output(write_pipe):
    def rule(request):
        if role(request) == "join":
            return {"answer": "rewritten"}
        return rule_for(POINTS)(request)
    lm = pipec.ScriptedLM(rule=rule)
    out = load(write_pipe, lm, ', join: "call"')(topic="t")
    assert out.ok and out.answer == "rewritten"
    assert [role(r) for r in lm.requests][-1] == "join"


def retry_everything(rule):
    """The worst case: every first reply is empty (unparseable); the retry gets the real answer."""
    def wrapped(request):
        if request.messages[-1]["content"].startswith("Your reply could not be used"):
            return rule(request)
        return ""
    return wrapped


@pytest.mark.parametrize("text, opts", [(TEXT, ", max_points: 3"), (TYPED, ", max_points: 3"), (TEXT, ', join: "call"')])
def test_max_calls_is_the_calls_made_in_the_worst_case(write_pipe, text, opts):
    points = ["p1", "p2", "p3", "p4", "p5", "p6"]
    def rule(request):
        if role(request) == "join" and text is TEXT:
            return {"answer": "joined"}
        return rule_for(points)(request)
    lm = pipec.ScriptedLM(rule=retry_everything(rule))
    prog = load(write_pipe, lm, opts, text)
    out = prog(topic="t") if text is TEXT else prog(product="t")
    assert out.ok, out.error
    module = next(iter(prog.modules.values()))
    assert len(lm.requests) == module.max_calls() == inspect_program(prog)["max_lm_calls"]


def test_a_failed_expansion_fails_the_row_after_the_others_finish(write_pipe):
    def rule(request):
        if role(request) == "expand" and first_user_value(request, "point").startswith("2."):
            return ""
        return rule_for(POINTS)(request)
    lm = pipec.ScriptedLM(rule=rule)
    out = load(write_pipe, lm)(topic="t")
    assert not out.ok
    assert "point 2 ('blue scatters most')" in out.error and "did not parse" in out.error
    assert [rec.predictor for rec in out.trace].count("explain.expand") == 4      # 1, 2, its retry, 3
    assert [rec.attempt for rec in out.trace if rec.error] == [1, 2]


def test_an_empty_skeleton_fails_the_row(write_pipe):
    lm = pipec.ScriptedLM(rule=rule_for([" "]))
    out = load(write_pipe, lm)(topic="t")
    assert not out.ok and "the skeleton has no points" in out.error
    assert len(lm.requests) == 1


@pytest.mark.parametrize("text, opts, message", [
    (TEXT, ", max_points: 0", "option 'max_points' of SkeletonOfThought module explain must be at least 1"),
    (TEXT, ', max_points: "3"', "option 'max_points' of SkeletonOfThought module explain must be an integer"),
    (TEXT, ', join: "merge"', "option 'join' of SkeletonOfThought module explain must be one of: auto, concatenate, call"),
    (TYPED, ', join: "concatenate"', "SkeletonOfThought module review cannot concatenate its expansions into the "
                                     "outputs of signature Review: that needs exactly one output of type str"),
])
def test_bad_options_are_rejected_when_loading(write_pipe, text, opts, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), opts, text)
    assert message in str(err.value)


def test_concatenate_is_rejected_for_a_single_non_str_output(write_pipe):
    src = TEXT.replace("out answer: str", "out answer: int").replace("{opts}", ', join: "concatenate"')
    with pytest.raises(pipec.PipeError) as err:
        pipec.load(write_pipe(src), lm=pipec.ScriptedLM([]), cache=False)
    assert "cannot concatenate" in str(err.value)


@pytest.mark.parametrize("text", [TEXT, TYPED])
def test_bootstrap_fewshot_gives_every_inner_predictor_demos(write_pipe, text):
    def rule(request):
        if role(request) == "join":
            return {"verdict": "buy" if first_user_value(request, "product").startswith("b") else "skip",
                    "summary": "ok"}
        return rule_for(["x", "y"])(request)
    lm = pipec.ScriptedLM(rule=rule)
    prog = load(write_pipe, lm, text=text)
    if text is TEXT:
        rows = [{"topic": w, "answer": "1. x About x.\n2. y About y."} for w in ["a", "b", "c", "d", "e"]]
        metric = "exact_match(answer)"
    else:
        rows = [{"product": w, "verdict": "buy" if w.startswith("b") else "skip"} for w in ["bag", "cup", "box", "pen"]]
        metric = "exact_match(verdict)"
    compiled = prog.compile(trainset=rows[:3], valset=rows[3:], metric=metric, optimizer="bootstrap_fewshot",
                            options={"max_demos": 2, "max_labeled": 0})
    params = compiled.params()
    assert set(params) == set(prog.predictors())
    for name in params:
        assert len(params[name].demos) == 2, name
    name = next(iter(prog.modules))
    assert params[f"{name}.skeleton"].demos[0]["points"] == ["x", "y"]
    assert params[f"{name}.expand"].demos[0]["expansion"] in ("About x.", "About y.")


@pytest.mark.e2e
def test_example_runs_on_the_embedded_model_through_the_cli(tmp_path):
    out = run_example("skeleton_of_thought.pipe", tmp_path, "question=How can I sleep better?")["outputs"]
    assert 1 <= len(out["points"]) <= 3
    assert out["answer"].startswith("1. ")
    assert len(out["answer"].splitlines()) >= len(out["points"])
