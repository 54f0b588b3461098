"""Re3 (Yang et al. 2022): a plan, then per passage candidates drafted with the plan and the story so far,
reranked for coherence and relevance, the best edited; the passages make the text."""
from __future__ import annotations

import pytest

import pipec
from pipec.modules.re3 import CONTEXT_CHARS, NOTHING_YET

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TEXT = """
    signature Story {
        "Write a short story from the idea."
        in  idea: str
        out story: str
    }
    module write = Re3(Story{opts})
    pipeline p(idea: str) -> (story, plan: str, passages: list[str]) {
        w = write(idea: idea)
        return story = w.story, plan = w.plan, passages = w.passages
    }
"""
PARTS = {("premise", "outline"): "plan", ("passage",): "draft", ("coherent", "relevant"): "rerank",
         ("edited",): "edit"}


def load(write_pipe, lm, opts="", text=TEXT):
    return pipec.load(write_pipe(text.replace("{opts}", opts)), lm=lm, cache=False)


def part(request) -> str:
    return PARTS[tuple(request.schema["properties"])]


def asked(request) -> str:
    """The user message with the inputs (a retry adds a later one asking again)."""
    return [m["content"] for m in request.messages if m["role"] == "user"
            and not m["content"].startswith("Your reply could not be used")][-1]


class Story:
    """Replies by part: the plan's outline, drafts named `P<passage>.<sample>`, rerank labels per draft, edits."""

    def __init__(self, outline=("the map", "the voyage", "home"), labels=None, edit=lambda t: {"edited": f"edited {t}"},
                 draft=None):
        self.outline, self.labels, self.edit = list(outline), labels or {}, edit
        self.draft = draft or (lambda n, sample: {"passage": f"P{n}.{sample}"})

    def __call__(self, request):
        which = part(request)
        if which == "plan":
            return {"premise": "A keeper finds a map.", "outline": self.outline}
        n = int(asked(request).split("passage_plan: ")[1].split(".")[0])
        if which == "draft":
            return self.draft(n, request.sample)
        passage = asked(request).split("\npassage: ")[1]
        if which == "rerank":
            coherent, relevant = self.labels.get(passage, ("likely", "likely"))
            return {"coherent": coherent, "relevant": relevant}
        return self.edit(passage)


def text_reply(f):
    return lambda n, sample: {"passage": f(n, sample)}


def test_plan_then_drafts_reranked_and_the_best_edited_per_passage(write_pipe):
    lm = pipec.ScriptedLM(rule=Story(labels={"P1.1": ("sure", "sure"), "P1.0": ("likely", "impossible"),
                                             "P2.0": ("sure", "likely"), "P2.1": ("likely", "likely")},
                                     draft=text_reply(lambda n, s: f"P{n}.{s}"),
                                     edit=lambda t: {"edited": f"{t} (edited)"}))
    prog = load(write_pipe, lm, ", max_passages: 2, candidates: 2, sample_temperature: 1.1")
    pred = prog(idea="a lighthouse keeper")
    assert pred.ok, pred.error
    plan = "Premise: A keeper finds a map.\nOutline:\n1. the map\n2. the voyage"     # the third point is cut
    assert pred.outputs() == {"story": "P1.1 (edited)\n\nP2.0 (edited)", "plan": plan,
                              "passages": ["P1.1 (edited)", "P2.0 (edited)"]}
    assert [r.predictor for r in pred.trace] == ["write.plan"] + [
        "write.draft", "write.draft", "write.rerank", "write.rerank", "write.edit"] * 2
    plan_rec, d10, d11, r10, r11, e1, d20, d21, r20, r21, e2 = pred.trace
    assert plan_rec.inputs == {"idea": "a lighthouse keeper"}
    first = {"idea": "a lighthouse keeper", "plan": plan, "story_so_far": NOTHING_YET, "passage_plan": "1. the map"}
    second = {**first, "story_so_far": "P1.1 (edited)", "passage_plan": "2. the voyage"}
    # Drafts see the inputs, the plan, the story so far (edited passages only) and their point.
    assert d10.inputs == d11.inputs == first and d20.inputs == d21.inputs == second
    # Each candidate is rated with the same context; the best (summed labels) is edited.
    assert [r10.inputs["passage"], r11.inputs["passage"]] == ["P1.0", "P1.1"]
    assert r10.inputs == {**first, "passage": "P1.0"} and r21.inputs == {**second, "passage": "P2.1"}
    assert e1.inputs == {**first, "passage": "P1.1"} and e2.inputs == {**second, "passage": "P2.0"}
    # Drafts are numbered independent samples at the sample temperature; reranks and edits are not.
    drafts = [r for r in lm.requests if part(r) == "draft"]
    assert [r.sample for r in drafts] == [0, 1, 0, 1] and {r.params["temperature"] for r in drafts} == {1.1}
    others = [r for r in lm.requests if part(r) in ("rerank", "edit", "plan")]
    assert all(r.sample == 0 and r.params.get("temperature") != 1.1 for r in others)
    assert "coherently" in lm.requests[3].messages[0]["content"]


def test_ties_keep_the_earlier_candidate_and_duplicates_are_ranked_once(write_pipe):
    lm = pipec.ScriptedLM(rule=Story(outline=["one"], draft=text_reply(lambda n, s: ["same", "Same ", "other"][s]),
                                     edit=lambda t: {"edited": t}))
    pred = load(write_pipe, lm, ", candidates: 3")(idea="x")
    assert pred.story == "same"
    assert [r.inputs["passage"] for r in pred.trace if r.predictor == "write.rerank"] == ["same", "other"]


def test_the_story_so_far_is_summarized_by_the_plan_once_it_is_long(write_pipe):
    long = "w" * (CONTEXT_CHARS // 2 + 10)
    lm = pipec.ScriptedLM(rule=Story(draft=text_reply(lambda n, s: f"{n}{long}"), edit=lambda t: {"edited": t}))
    pred = load(write_pipe, lm, ", max_passages: 3, candidates: 1")(idea="x")
    assert pred.passages == [f"1{long}", f"2{long}", f"3{long}"]
    shown = [r.inputs["story_so_far"] for r in pred.trace if r.predictor == "write.draft"]
    assert shown[1] == f"1{long}"                       # short enough: the whole story
    assert shown[2] == ("Summary of the story before the last passage, by the plan:\n1. the map\n\n"
                        f"Last passage:\n2{long}")


@pytest.mark.parametrize("opts, calls", [
    (", max_passages: 3, candidates: 2", 2 * (1 + 3 * (2 + 2 + 1))),
    (", max_passages: 2, candidates: 3, edit: false", 2 * (1 + 2 * (3 + 3))),
    (", max_passages: 2, candidates: 1", 2 * (1 + 2 * (1 + 1))),
    ("", 2 * (1 + 4 * (3 + 3 + 1))),                     # defaults: 4 passages, 3 candidates, edit
])
def test_max_calls_is_reached_when_every_first_reply_fails_to_parse(write_pipe, opts, calls):
    inner = Story(outline=[f"point {i}" for i in range(6)], draft=text_reply(lambda n, s: f"P{n}.{s}"),
                  edit=lambda t: {"edited": t + "!"})

    def rule(request):
        if request.messages[-1]["content"].startswith("Your reply could not be used"):
            return inner(request)
        return "{}"
    lm = pipec.ScriptedLM(rule=rule)
    prog = load(write_pipe, lm, opts)
    assert prog.modules["write"].max_calls() == calls
    pred = prog(idea="x")
    assert pred.ok, pred.error
    assert len(lm.requests) == calls
    names = {p.name for p in prog.modules["write"].predictors()}
    assert ("write.rerank" in names) == ("candidates: 1" not in opts)
    assert ("write.edit" in names) == ("edit: false" not in opts)


def test_a_bad_reply_drops_a_candidate_or_skips_an_edit(write_pipe):
    def draft(n, sample):
        return "{}" if (n, sample) == (1, 0) else {"passage": f"P{n}.{sample}"}

    def edit(t):
        return "{}" if t.startswith("P2") else {"edited": f"{t} (edited)"}
    lm = pipec.ScriptedLM(rule=Story(draft=draft, edit=edit))
    pred = load(write_pipe, lm, ", max_passages: 2, candidates: 2")(idea="x")
    assert pred.ok, pred.error
    # Passage 1: one draft left, nothing to rerank; passage 2: its edit failed, the draft is kept.
    assert pred.passages == ["P1.1 (edited)", "P2.0"]
    assert [r.predictor for r in pred.trace if r.error is None] == [
        "write.plan", "write.draft", "write.edit", "write.draft", "write.draft", "write.rerank", "write.rerank"]


def test_a_failed_rerank_counts_zero(write_pipe):
    def rule(request):
        if part(request) == "rerank" and "passage: P1.0" in asked(request):
            return "{}"
        return Story(outline=["one"], draft=text_reply(lambda n, s: f"P{n}.{s}"),
                     edit=lambda t: {"edited": t})(request)
    pred = load(write_pipe, pipec.ScriptedLM(rule=rule), ", candidates: 2")(idea="x")
    assert pred.ok and pred.story == "P1.1"


def test_the_story_ends_when_every_draft_of_a_passage_fails(write_pipe):
    lm = pipec.ScriptedLM(rule=Story(draft=lambda n, s: "{}" if n == 2 else {"passage": f"P{n}.{s}"},
                                     edit=lambda t: {"edited": t}))
    pred = load(write_pipe, lm, ", max_passages: 3, candidates: 2")(idea="x")
    assert pred.ok, pred.error
    assert pred.passages == ["P1.0"] and pred.story == "P1.0"
    assert not any("passage_plan: 3." in asked(r) for r in lm.requests)     # no passage after the gap


@pytest.mark.parametrize("story, message", [
    (Story(draft=lambda n, s: "{}"), "every draft of the first passage failed"),
    (Story(draft=lambda n, s: {"passage": "  "}), "every draft of the first passage failed"),
    (Story(outline=["", " "]), "the plan has no outline points"),
])
def test_the_module_fails_only_when_nothing_can_be_written(write_pipe, story, message):
    pred = load(write_pipe, pipec.ScriptedLM(rule=story), ", candidates: 2")(idea="x")
    assert not pred.ok and message in pred.error


def test_a_plan_that_does_not_parse_fails_the_row(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda request: "not json")
    pred = load(write_pipe, lm)(idea="x")
    assert not pred.ok and "did not parse" in pred.error and len(lm.requests) == 2


@pytest.mark.parametrize("opts, message", [
    (", max_passages: 0", "option 'max_passages' of Re3 module write must be at least 1"),
    (", candidates: 0", "option 'candidates' of Re3 module write must be at least 1"),
    (', candidates: "2"', "option 'candidates' of Re3 module write must be an integer"),
    (', edit: "yes"', "option 'edit' of Re3 module write must be"),
    (", sample_temperature: -1", "option 'sample_temperature' of Re3 module write must be at least 0"),
])
def test_bad_options_are_rejected_when_loading(write_pipe, opts, message):
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), opts)
    assert message in str(err.value)


@pytest.mark.parametrize("outs", ["out story: int", "out story: str\n        out title: str"])
def test_the_signature_needs_one_str_output(write_pipe, outs):
    text = TEXT.replace("out story: str", outs).replace(
        "pipeline p(idea: str) -> (story, plan: str, passages: list[str]) {\n        w = write(idea: idea)\n"
        "        return story = w.story, plan = w.plan, passages = w.passages",
        "pipeline p(idea: str) -> (plan: str) {\n        w = write(idea: idea)\n        return plan = w.plan")
    with pytest.raises(pipec.PipeError) as err:
        load(write_pipe, pipec.ScriptedLM([]), text=text)
    assert "Re3 module write writes one long text, but signature Story has the outputs" in str(err.value)
