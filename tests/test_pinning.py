"""Freezing parts of a module (issue 15, item 5): its instruction and demos written in the .pipe file
and pinned, so that no optimizer changes them.

    module classify = Predict(Classify, instruction: "...",
                              demos: [{utterance: "...", intent: book_restaurant}], pin: [instruction, demos])

Checked here: what parses and checks (and what does not, beyond the golden fixtures in
tests/fixtures/diagnostics/modules/demo_errors and pin_errors), that an uncompiled program sends the
written demos, that every optimizer the registry finds leaves pinned parts as written (in what it
scores and in the artifact), that the compile enforces pins whatever an optimizer returns, that a pin
on one part leaves the other free to tune, that optimizers spend nothing on pinned parts, and that
`pipec inspect` and the report show pins.
"""
from __future__ import annotations

import hashlib
import json
import textwrap

import pytest
from conftest import first_user_value, system_of

import pipec
import pipec.optimizers as optimizers_pkg
from pipec.dsl import check, parse
from pipec.html_report import build_report
from pipec.inspection import inspect_program, render_inspection
from pipec.modules import ModuleSpec, kinds
from pipec.dsl.types import STR, Type
from pipec.optimizers import get_optimizer, optimizers
from pipec.optimizers.propose import SYSTEM as PROPOSER_SYSTEM
from pipec.registry import catalogue

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

INTENT = """
    signature Classify {
        "Classify the intent of the user's utterance."
        in  utterance: str "what the user said"
        out intent: enum(add_to_playlist, book_restaurant, get_weather, play_music)
    }
    module classify = Predict(Classify,
        instruction: "Name the intent of the utterance.",
        demos: [
            {utterance: "Table for two at 8 tonight", intent: book_restaurant},
            {utterance: "Will it snow in Oslo?", intent: "get_weather"},
        ],
        pin: [instruction, demos])
    pipeline intent(utterance: str) -> (intent) {
        c = classify(utterance: utterance)
        return intent = c.intent
    }
"""


def diagnostics(text: str) -> list[str]:
    f, syntax = parse(textwrap.dedent(text), "x.pipe")
    _, diags = check([f], catalogue())
    return [d.message for d in syntax + diags]


# ------------------------------------------------------------------ parse and check

def test_every_written_shape_checks_clean():
    """Enum values as names or strings, an int for a float, optional fields left out, nested records
    and lists, trailing commas, reasoning for the kinds that show it, pins as names or strings, a pin
    of something not written, and no demos at all."""
    text = """
        record Slot { name: str  value: str? }
        signature Parse {
            "Parse the request."
            in  utterance: str
            in  turn: int?
            out intent: enum(book, weather, "small talk")
            out confidence: float
            out slots: list[Slot]
        }
        module a = Predict(Parse, demos: [
            {utterance: "Table for two", intent: book, confidence: 1, slots: [{name: "party", value: "2"}],},
            {utterance: "hi", turn: 3, intent: "small talk", confidence: 0.25, slots: []},
        ], pin: [instruction, demos])
        module b = ChainOfThought(Parse, demos: [{utterance: "Rain?", reasoning: "asks about the weather",
                                                  intent: weather, confidence: 0.9, slots: [{name: "kind"}]}],
                                  pin: demos)
        module c = Majority(Parse, demos: [{utterance: "x", reasoning: "y", intent: book, confidence: 1, slots: []}])
        module d = Refine(Parse, demos: [], pin: ["instruction"])
        module e = Persona(Parse, demos: [{utterance: "x", intent: book, confidence: 1, slots: []}])
        module f = Decompose(Parse, pin: [demos])
        pipeline p(utterance: str) -> (a, b, c, d, e, f) {
            return a = a(utterance: utterance).intent, b = b(utterance: utterance).intent,
                   c = c(utterance: utterance).intent, d = d(utterance: utterance).intent,
                   e = e(utterance: utterance).intent, f = f(utterance: utterance).intent
        }
    """
    assert diagnostics(text) == []


@pytest.mark.parametrize("module, expected", [
    ('Predict(S, demos: [{q: "x"}])', "demo 1 of module m lacks 'a'"),
    ('Predict(S, demos: [{q: "x", a: "y", z: 1}])', "demo 1 of module m has no field 'z'"),
    ('Predict(S, demos: [{q: x, a: "y"}])', "demo 1 of module m: 'q' must be a string, not the name 'x'"),
    ('Predict(S, demos: [{q: "x", a: "y"}, 4])', "demo 2 of module m must be a record of field values, not the number 4"),
    ('ChainOfThought(S, demos: [{q: "x", a: "y"}])', "demo 1 of module m lacks 'reasoning'"),
    ('Predict(S, demos: [{q: "x", reasoning: "r", a: "y"}])', "demo 1 of module m has no field 'reasoning'"),
    ('ZeroShotCoT(S, demos: [])', "ZeroShotCoT module m takes no written demos"),
    ('Predict(S, pin: [demo])', "module m has no part 'demo' to pin"),
    ('Predict(S, pin: [demos, demos])', "'demos' is pinned twice in module m"),
    ('Predict(S, pin: true)', "option 'pin' of Predict module m must name what to pin"),
    ('Predict(S, demos: "x")', "option 'demos' of Predict module m must be a list of demos"),
])
def test_bad_demos_and_pins_are_reported(module, expected):
    text = f"""
        signature S {{ in q: str out a: str }}
        module m = {module}
        pipeline p(q: str) -> (a) {{ return a = m(q: q).a }}
    """
    assert diagnostics(text) == [expected]


def test_a_json_style_record_is_a_syntax_error_with_its_fix():
    f, diags = parse('module m = Predict(S, demos: [{"q": "x"}])', "x.pipe")
    assert [(d.message, d.span.line, d.span.col) for d in diags] == [
        ("a record's fields are written `name: value`, names unquoted", 1, 32)]
    assert "{question:" in diags[0].hint


def test_pinning_a_part_does_not_name_a_module_called_like_it(write_pipe):
    """`pin: [demos]` names a part; a module that happens to be called `demos` is not pulled in."""
    path = write_pipe("""
        signature S { in q: str out a: str }
        module demos = Predict(S)
        module m = Predict(S, pin: [demos])
        pipeline p(q: str) -> (a) { return a = m(q: q).a }
    """)
    prog = pipec.load(path, lm=pipec.ScriptedLM([]), cache=False)
    assert list(prog.modules) == ["m"]


# ------------------------------------------------------------------ the kinds' demo parts

DEMO_KINDS = sorted(name for name, cls in kinds().items() if cls.demo_parts)


def test_the_kinds_that_answer_the_signature_take_written_demos():
    assert {"Predict", "ChainOfThought", "Majority", "Refine", "Persona"} <= set(DEMO_KINDS)


@pytest.mark.parametrize("kind", DEMO_KINDS)
def test_demo_parts_answer_the_signature(kind):
    """A part that takes written demos has exactly the fields the checker checks a demo against: the
    signature's inputs, then the kind's demo extras and the signature's outputs; and the written
    demos land on those parts only."""
    cls = kinds()[kind]
    inputs, outputs = [("q", STR, "")], [("a", STR, "")]
    extras = {n: "why" for n, _, _ in cls.demo_extras}
    demo = {"q": "2+2?", **extras, "a": "4"}
    module = cls(ModuleSpec("m", "Answer.", inputs, outputs, {"demos": [demo], "pin": ["demos"]}, "lm", {}))
    module.install_written()
    parts = {p.name: p for p in module.predictors()}
    names = {f"m.{part}" if part else "m" for part in cls.demo_parts}
    assert names <= set(parts)
    for name, p in parts.items():
        # ToolMaker's `tool` part holds the made tool's source as its instruction, always pinned: no
        # optimizer may replace code with prose.
        assert p.pinned == ({"demos", "instruction"} if (kind, name) == ("ToolMaker", "m.tool") else {"demos"})
        if name in names:
            assert [n for n, _, _ in p.inputs] == ["q"]
            assert [n for n, _, _ in p.outputs] == [*extras, "a"]
            assert p.demos == [demo]
        else:
            assert p.demos == []


# ------------------------------------------------------------------ running uncompiled

def test_an_uncompiled_program_sends_the_written_instruction_and_demos(write_pipe):
    lm = pipec.ScriptedLM([{"intent": "play_music"}])
    prog = pipec.load(write_pipe(INTENT), lm=lm, cache=False)
    assert prog(utterance="Play some jazz").intent == "play_music"
    messages = lm.requests[0].messages
    assert messages[0]["content"].startswith("Name the intent of the utterance.")
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("user", "utterance: Table for two at 8 tonight"), ("assistant", '{"intent": "book_restaurant"}'),
        ("user", "utterance: Will it snow in Oslo?"), ("assistant", '{"intent": "get_weather"}'),
        ("user", "utterance: Play some jazz")]


def test_a_chain_of_thought_demo_shows_its_reasoning(write_pipe):
    path = write_pipe("""
        signature Add { in x: int  in y: int  out sum: float }
        module add = ChainOfThought(Add, demos: [{x: 2, y: 3, reasoning: "2 plus 3 is 5", sum: 5}])
        pipeline p(x: int, y: int) -> (sum) { return sum = add(x: x, y: y).sum }
    """)
    lm = pipec.ScriptedLM([{"reasoning": "1 and 1", "sum": 2}])
    pipec.load(path, lm=lm, cache=False)(x=1, y=1)
    demo = lm.requests[0].messages[1:3]
    assert demo[0]["content"] == "x: 2\ny: 3"
    # The written 5 is a float, as a parsed reply would be.
    assert json.loads(demo[1]["content"]) == {"reasoning": "2 plus 3 is 5", "sum": 5.0}
    assert isinstance(json.loads(demo[1]["content"])["sum"], float)


def test_inspect_shows_what_is_pinned(write_pipe):
    prog = pipec.load(write_pipe(INTENT), lm=pipec.ScriptedLM([]), cache=False)
    report = inspect_program(prog)
    [predictor] = report["calls"][0]["predictors"]
    assert predictor["pinned"] == ["demos", "instruction"]
    assert len(predictor["messages"]) == 6          # system, two demos, the input
    assert "[classify] lm: scripted/lm  structured output: json_schema  pinned: demos, instruction" in \
        render_inspection(report)


# ------------------------------------------------------------------ compiling

CHAIN = """
    signature Extract { "Find the keyword." in text: str out keyword: str }
    signature Answer { "Answer from the keyword." in keyword: str out a: str }
    module first = Predict(Extract, instruction: "Take the last word.",
                           demos: [{text: "please handle easy1", keyword: "easy1"}], pin: [PIN])
    module second = ChainOfThought(Answer)
    pipeline chain(text: str) -> (a) {
        k = first(text: text)
        r = second(keyword: k.keyword)
        return a = r.a
    }
"""
WRITTEN_INSTRUCTION = "Take the last word."
WRITTEN_DEMOS = [{"text": "please handle easy1", "keyword": "easy1"}]
ROWS = [{"text": f"please handle {'easy' if i % 2 else 'hard'}{i}", "a": f"{'easy' if i % 2 else 'hard'}{i}"[::-1]}
        for i in range(16)]
TRAIN, VAL = ROWS[:10], ROWS[10:]


def chain(write_pipe, pin: str = "instruction, demos", written: bool = True):
    text = CHAIN.replace("PIN", pin)
    if not written:
        text = text.replace('instruction: "Take the last word.",\n', "").replace(
            '                           demos: [{text: "please handle easy1", keyword: "easy1"}], ', "")
    return write_pipe(text, "chain.pipe")


def is_proposal(request) -> bool:
    return system_of(request) == PROPOSER_SYSTEM


def has_demos(request) -> bool:
    return any(m["role"] == "assistant" for m in request.messages[1:-1])


def rule(request):
    """Proposals are deterministic instructions that mention "carefully"; `first` takes the last word
    (only "carefully" when `careful` is set: see `careful_rule`); `second` reverses it, zero-shot only
    for 'easy' words, always with demos or a careful instruction."""
    props = (request.schema or {}).get("properties", {})
    if is_proposal(request):
        digest = hashlib.sha256(json.dumps(request.messages).encode()).hexdigest()[:6]
        return {"instruction": f"Work through it carefully ({digest})."}
    if "keyword" in props:
        return {"keyword": first_user_value(request, "text").split()[-1]}
    kw = first_user_value(request, "keyword")
    ok = kw.startswith("easy") or has_demos(request) or "carefully" in system_of(request)
    return {"reasoning": f"reverse {kw}", "a": kw[::-1] if ok else "?"}


def careful_rule(request):
    """As `rule`, but `first` finds the keyword only under a proposed ("carefully") instruction."""
    if "keyword" in (request.schema or {}).get("properties", {}) and not is_proposal(request):
        if "carefully" not in system_of(request):
            return {"keyword": "?"}
    return rule(request)


# Small settings so every optimizer finishes fast on the toy task (options it does not take are dropped).
SMALL = {"trials": 4, "instructions": 2, "minibatch": 3, "candidates": 3, "size": 2}


def small(name: str) -> dict:
    spec = get_optimizer(name).options
    return {k: v for k, v in SMALL.items() if k in spec}


def requests_of(lm, field: str) -> list:
    """The requests a predictor sent, recognised by an output field of its reply schema."""
    return [r for r in lm.requests if not is_proposal(r) and field in (r.schema or {}).get("properties", {})]


def assert_written(params) -> None:
    """`first`'s parameters as the file writes them."""
    st = params["first"]
    st = st if isinstance(st, dict) else st.model_dump()
    assert (st["instruction"], st["demos"], st.get("knn")) == (WRITTEN_INSTRUCTION, WRITTEN_DEMOS, None)


@pytest.mark.parametrize("name", sorted(optimizers()))
def test_no_optimizer_changes_what_is_pinned(name, write_pipe):
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(chain(write_pipe), lm=lm, cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", name, seed=0, options=small(name), budget=600)
    assert_written(compiled.params())
    assert_written(compiled.artifact.predictors)
    for member in compiled.members:                   # an ensemble's every member too
        assert_written(member)
    # And every candidate it scored (the teacher's runs included) ran `first` as written.
    sent = requests_of(lm, "keyword")
    assert sent
    written_turns = [{"role": "user", "content": "text: please handle easy1"},
                     {"role": "assistant", "content": '{"keyword": "easy1"}'}]
    for request in sent:
        assert system_of(request).startswith(WRITTEN_INSTRUCTION)
        assert request.messages[1:-1] == written_turns


@pytest.fixture
def rogue(monkeypatch):
    """Make `labeled_fewshot` return parameters that change everything: another instruction, other
    demos and a per-input pool for every predictor, as one set or as an ensemble of two."""
    real = optimizers_pkg.get_optimizer
    shape = {"ensemble": False}

    def get(name):
        cls = real(name)

        class Rogue(cls):
            def optimize(self, session):
                from pipec.session import KnnState
                hacked = {}
                for n, view in session.predictors().items():
                    fields = [f for f, _, _ in view.inputs + view.outputs]
                    demo = {f: "HACKED" for f in fields}
                    hacked[n] = session.baseline()[n].model_copy(update={
                        "instruction": "HACKED: work through it carefully.", "demos": [demo],
                        "knn": KnnState(k=1, fields=[f for f, _, _ in view.inputs], pool=[demo])})
                params = [hacked, dict(hacked)] if shape["ensemble"] else hacked
                result = session.evaluate(params)
                return params, result.score
        Rogue.name = cls.name
        return Rogue
    monkeypatch.setattr(optimizers_pkg, "get_optimizer", get)
    return shape


@pytest.mark.parametrize("ensemble", [False, True], ids=["one set", "ensemble"])
def test_the_compile_restores_pinned_parts_whatever_an_optimizer_returns(rogue, ensemble, write_pipe):
    rogue["ensemble"] = ensemble
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(chain(write_pipe), lm=lm, cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot", seed=0)
    assert not any("HACKED" in json.dumps(r.messages) for r in requests_of(lm, "keyword"))
    sets = compiled.members or [compiled.params()]
    assert len(sets) == (2 if ensemble else 1)
    for params in [*sets, compiled.artifact.predictors]:
        assert_written(params)
    # What is not pinned is the optimizer's: `second` keeps the rogue's instruction.
    assert all(p["second"].instruction.startswith("HACKED") for p in sets)


def test_a_pinned_instruction_leaves_demos_to_tune(write_pipe):
    """`first` pins only its instruction (none written: the signature's); bootstrapping gives it demos.
    Proposals are never asked for it, only for `second`."""
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(chain(write_pipe, pin="instruction", written=False), lm=lm, cache=False)
    boot = prog.compile(TRAIN, VAL, "exact_match(a)", "bootstrap_fewshot", seed=0)
    assert boot.params()["first"].instruction == "Find the keyword."
    assert boot.params()["first"].demos                # tuned

    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(chain(write_pipe, pin="instruction", written=False), lm=lm, cache=False)
    prog.compile(TRAIN, VAL, "exact_match(a)", "mipro", seed=0, options=small("mipro"))
    proposals = [r for r in lm.requests if is_proposal(r)]
    assert proposals
    assert all("Answer from the keyword." in r.messages[1]["content"] for r in proposals)


def test_pinned_demos_leave_the_instruction_to_tune(write_pipe):
    """`first` pins its written demos; mipro finds the proposed instruction that makes it right, and
    searches no other demo set for it."""
    lm = pipec.ScriptedLM(rule=careful_rule)
    prog = pipec.load(chain(write_pipe, pin="demos"), lm=lm, cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "mipro", seed=0,
                            options={"trials": 8, "instructions": 2, "minibatch": 6})
    first = compiled.params()["first"]
    assert first.demos == WRITTEN_DEMOS
    assert "carefully" in first.instruction            # tuned
    assert compiled.report.compiled_score > compiled.report.baseline_score
    notes = [t.note for t in compiled.report.trials if "first:" in t.note]
    assert notes and all("first: instruction" in n and ", 1 demo;" in n for n in notes)


def test_pinning_demos_that_are_not_written_keeps_none(write_pipe):
    prog = pipec.load(chain(write_pipe, pin="demos", written=False), lm=pipec.ScriptedLM(rule=rule), cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "bootstrap_fewshot", seed=0)
    assert compiled.params()["first"].demos == []
    assert compiled.params()["second"].demos           # the other module is tuned as usual


def test_pinned_parts_cost_no_bootstrapping(write_pipe):
    """With every predictor's demos pinned there is nothing to bootstrap: no training row is ever run."""
    path = write_pipe("""
        signature Extract { "Find the keyword." in text: str out keyword: str }
        module first = Predict(Extract, demos: [{text: "please handle easy1", keyword: "easy1"}], pin: [demos])
        pipeline p(text: str) -> (keyword) { return keyword = first(text: text).keyword }
    """)
    lm = pipec.ScriptedLM(rule=rule)
    rows = [{"text": r["text"], "keyword": r["text"].split()[-1]} for r in ROWS]
    prog = pipec.load(path, lm=lm, cache=False)
    compiled = prog.compile(rows[:10], rows[10:], "exact_match(keyword)", "bootstrap_fewshot", seed=0)
    assert compiled.params()["first"].demos == WRITTEN_DEMOS
    train = {r["text"] for r in rows[:10]}
    assert not [r for r in lm.requests if first_user_value(r, "text") in train]


def test_changing_a_pin_compiles_again(write_pipe, tmp_path):
    """Pins are in the .pipe text, and the compile fingerprint covers the sources."""
    cache = tmp_path / "cache"
    path = chain(write_pipe)
    again = lambda: pipec.load(path, lm=pipec.ScriptedLM(rule=rule), cache=cache).compile(
        TRAIN, VAL, "exact_match(a)", "bootstrap_fewshot", seed=0)
    assert not again().compile_result.cache_hit
    assert again().compile_result.cache_hit
    path.write_text(path.read_text().replace("pin: [instruction, demos]", "pin: [demos]"))
    assert not again().compile_result.cache_hit


def test_an_artifact_keeps_pins_and_the_report_marks_them(write_pipe, tmp_path):
    prog = pipec.load(chain(write_pipe), lm=pipec.ScriptedLM(rule=rule), cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "bootstrap_fewshot", seed=0)
    saved = compiled.save(tmp_path / "chain.compiled.json")
    loaded = pipec.load_compiled(saved, lm=pipec.ScriptedLM(rule=rule), cache=False)
    assert_written(loaded.params())
    assert loaded.predictors()["first"].pinned == {"instruction", "demos"}
    page = build_report(loaded)
    assert "Instruction (pinned)" in page and "Demos (1, pinned)" in page
    assert page.count("pinned)") == 2                  # the two labels above: `second` is not pinned


# ---------------------------------------------------------------------------- nearest: and parts:
ECHO = """
    signature Echo { "Echo it." in q: str out a: str }
    module m = Predict(Echo, demos: [{q: "the weather in Paris", a: "W"}, {q: "play a song", a: "S"},
                                     {q: "book a table", a: "B"}], nearest: 1)
    module r = Refine(Echo, rounds: 1, parts: {critique: {instruction: "Be harsh.", demos: [{q: "x", a: "y",
                      critique: "too short", done: false}]}})
    pipeline p(q: str) -> (a) { x = m(q: q) y = r(q: x.a) return a = y.a }
"""


def echo_rule(request):
    props = (request.schema or {}).get("properties", {})
    return {n: (False if s.get("type") == "boolean" else "ok") for n, s in props.items()}


def test_nearest_gives_each_input_the_written_demos_most_like_it(write_pipe):
    lm = pipec.ScriptedLM(rule=echo_rule)
    prog = pipec.load(write_pipe(ECHO), lm=lm, cache=False)
    prog(q="what is the weather in Rome")
    shown = [m["content"] for m in lm.requests[0].messages[1:-1] if m["role"] == "user"]
    assert shown == ["q: the weather in Paris"]
    lm.requests.clear()
    prog(q="please play my song")
    assert [m["content"] for m in lm.requests[0].messages[1:-1] if m["role"] == "user"] == ["q: play a song"]


def test_parts_set_an_inner_predictors_instruction_and_demos(write_pipe):
    prog = pipec.load(write_pipe(ECHO), lm=pipec.ScriptedLM(rule=echo_rule), cache=False)
    critique = prog.predictors()["r.critique"]
    assert critique.instruction == "Be harsh." and critique.demos[0]["critique"] == "too short"
    assert critique.demos[0]["done"] is False
    assert prog.predictors()["r.answer"].instruction == "Echo it."


@pytest.mark.parametrize("options,message", [
    ("nearest: 2", "option 'nearest' of module m picks from its written demos, and it has none"),
    ("parts: 3", "option 'parts' of module m must be a record of parts"),
    ("parts: {critique: \"x\"}", "part 'critique' of module m must be a record of its options, not a string"),
    ("parts: {critique: {instuction: \"x\"}}", "part 'critique' of module m has no option 'instuction'"),
    ("parts: {critique: {nearest: 2}}", "part 'critique' of module m: 'nearest' picks from the part's written demos"),
    ("parts: {critique: {demos: [1]}}", "part 'critique' of module m: 'demos' must be a list of records"),
])
def test_nearest_and_parts_are_checked(options, message):
    src = f'signature S {{ "Do." in q: str out a: str }}\nmodule m = Refine(S, {options})\n' \
          'pipeline p(q: str) -> (a) { return a = m(q: q).a }\n'
    from pipec.dsl.loader import load as load_source
    messages = [d.message for d in load_source("m.pipe", catalogue(), source=src).diagnostics]
    assert any(message in m for m in messages), messages


def test_a_part_the_kind_does_not_have_is_an_error_at_its_declaration(write_pipe):
    from pipec.dsl.diagnostics import PipeError
    path = write_pipe('signature S { "Do." in q: str out a: str }\n'
                      'module m = Refine(S, parts: {critic: {instruction: "x"}})\n'
                      'pipeline p(q: str) -> (a) { return a = m(q: q).a }\n')
    with pytest.raises(PipeError) as err:
        pipec.load(path, lm=pipec.ScriptedLM(rule=echo_rule), cache=False)
    text = err.value.render()
    assert f"{path}:2:1: error: Refine module m has no part 'critic' (its parts: answer, critique, revise)" in text
