"""Strategy search: a module may declare alternative kinds, `one_of(Predict, ChainOfThought,
Majority(n: 5))(Task)`, and the compile chooses one per module, jointly with instructions and demos,
within a bound on LM calls per input.

Every LM here is a `pipec.ScriptedLM`. The toy task sums two numbers, and the scripted "model" gets it
right only when its reply has room to reason (a `reasoning` field in the reply schema, as
ChainOfThought and Majority ask for), or, for `voters_only`, only when it samples at a temperature (as
Majority does): so which alternative wins is known, and so is what each costs.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import first_user_value
from tampering import reseal

import pipec
import pipec.optimizers as optimizers_pkg
from pipec.artifact import ArtifactError, Choice
from pipec.dsl import ast as A
from pipec.dsl.diagnostics import PipeError
from pipec.dsl.loader import load as load_source
from pipec.dsl.parser import parse
from pipec.html_report import build_report
from pipec.inspection import inspect_program, render_inspection
from pipec.modules import kinds
from pipec.optimize import open_session
from pipec.registry import catalogue
from pipec.report_svg import cost_front
from pipec.settings import CompileConfig, SettingsError

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

ROOT = Path(__file__).resolve().parent.parent
PIPE = """
    signature Sum { "Add the two numbers." in question: str "like 3+4" out answer: str "the sum" }
    module solve = one_of(Predict, Majority(n: 3, temperature: 0.7), ChainOfThought)(Sum)
    pipeline adder(question: str) -> (answer) {
        s = solve(question: question)
        return answer = s.answer
    }
"""
ROWS = [{"question": f"{i}+{2 * i + 1}", "answer": str(3 * i + 1)} for i in range(24)]
TRAIN, VAL = ROWS[:12], ROWS[12:]


def right(request) -> str:
    a, b = first_user_value(request, "question").split("+")
    return str(int(a) + int(b))


def reasoners(request):
    """Right only when the reply reasons first (ChainOfThought, Majority); wrong when asked directly."""
    if "reasoning" in (request.schema or {}).get("properties", {}):
        return {"reasoning": "add the two numbers", "answer": right(request)}
    return {"answer": "?"}


def voters_only(request):
    """Right only when sampling at a temperature: Majority's samples, not the greedy alternatives."""
    props = (request.schema or {}).get("properties", {})
    answer = right(request) if request.params.get("temperature", 0) > 0 else "?"
    return {"reasoning": "add", "answer": answer} if "reasoning" in props else {"answer": answer}


def load(write_pipe, rule, text=PIPE, **kw):
    lm = pipec.ScriptedLM(rule=rule)
    return pipec.load(write_pipe(text), lm=lm, cache=False, **kw), lm


def predictor_calls(pred) -> list[str]:
    return [r.predictor for r in pred.trace if not r.model.startswith("tool:") and r.model != "map"]


# ---------------------------------------------------------------------------- the language
def test_one_of_parses_its_alternatives_and_common_options():
    f, diags = parse("module solve = one_of(Predict, Majority(n: 3, temperature: 0.7), Majority(n: 9))"
                     "(Sum, lm: local, temperature: 0)", "m.pipe")
    assert diags == []
    [m] = f.items
    assert m.kind == A.ONE_OF and m.signature == "Sum"
    assert [(a.label, a.kind) for a in m.alternatives] == [("Predict", "Predict"), ("Majority", "Majority"),
                                                           ("Majority_2", "Majority")]
    # The common options apply to every alternative; an alternative's own option overrides one.
    options = {label: {o.name: o.value for o in d.options} for label, d in m.variants()}
    assert options["Predict"] == {"lm": A.Ref("local"), "temperature": 0}
    assert options["Majority"] == {"lm": A.Ref("local"), "temperature": 0.7, "n": 3}
    assert options["Majority_2"] == {"lm": A.Ref("local"), "temperature": 0, "n": 9}
    assert (m.kind_span.col, m.kind_span.end_col) == (16, 22)          # diagnostics point at `one_of`


def test_one_of_stays_an_ordinary_name_elsewhere():
    f, diags = parse("signature one_of { in one_of: str out a: str }\nmodule m = Predict(one_of)\n"
                     "pipeline p(one_of: str) -> (a) { return a = m(one_of: one_of).a }", "m.pipe")
    assert diags == [] and [type(i).__name__ for i in f.items] == ["Signature", "ModuleDecl", "Pipeline"]


def check(write_pipe, text):
    loaded = load_source(write_pipe(text), catalogue())
    return [d.message for d in loaded.diagnostics]


def test_every_alternative_is_checked_against_its_own_kind(write_pipe):
    messages = check(write_pipe, """
        signature S { in q: str out a: str }
        module m = one_of(Predict(rationale: "x"), Majority(n: 0), ChainOfThought(rationale: 3))(S, temprature: 1)
        pipeline p(q: str) -> (a) { return a = m(q: q).a }
    """)
    assert messages == [
        "unknown option 'rationale' for Predict alternative of one_of module m",
        "option 'n' of Majority alternative of one_of module m must be at least 1",
        "option 'rationale' of ChainOfThought alternative of one_of module m must be a string",
        "unknown option 'temprature' for one_of module m"]


def test_a_kinds_own_static_checks_run_for_its_alternative(write_pipe):
    messages = check(write_pipe, """
        signature S { in q: str out a: str }
        module m = one_of(Predict, Majority(field: nope))(S)
        pipeline p(q: str) -> (a) { return a = m(q: q).a }
    """)
    assert messages == ["option 'field' of Majority module m names 'nope', which is not an output of S"]


def test_common_demos_fit_every_alternative_and_go_to_each(write_pipe):
    """ChainOfThought and Majority take demos of the same fields (reasoning first): written once after
    the signature, every alternative gets them, and a pin covers every alternative's predictors."""
    prog, _ = load(write_pipe, reasoners, """
        signature S { in q: str out a: str }
        module m = one_of(ChainOfThought, Majority(n: 3))(S,
            demos: [{q: "1+1", reasoning: "one and one", a: "2"}], pin: [demos])
        pipeline p(q: str) -> (a) { return a = m(q: q).a }
    """)
    every = prog.predictors(every=True)
    assert sorted(every) == ["m.ChainOfThought", "m.Majority.reason"]
    for p in every.values():
        assert p.demos == [{"q": "1+1", "reasoning": "one and one", "a": "2"}] and p.pinned == {"demos"}


def test_an_alternative_may_have_demos_of_its_own(write_pipe):
    prog, _ = load(write_pipe, reasoners, """
        signature S { in q: str out a: str }
        module m = one_of(Predict(demos: [{q: "1+1", a: "2"}]), ChainOfThought)(S)
        pipeline p(q: str) -> (a) { return a = m(q: q).a }
    """)
    every = prog.predictors(every=True)
    assert every["m.Predict"].demos == [{"q": "1+1", "a": "2"}] and every["m.ChainOfThought"].demos == []


def test_the_example_checks_clean():
    path = ROOT / "examples" / "strategy.pipe"
    loaded = load_source(path, catalogue())
    assert loaded.diagnostics == []
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=reasoners), cache=False)
    assert prog.strategies() == {"resolve": "Predict"}


# ---------------------------------------------------------------------------- running
def test_the_uncompiled_program_runs_the_first_alternative(write_pipe):
    prog, lm = load(write_pipe, reasoners)
    pred = prog(question="2+5")
    assert pred.answer == "?" and predictor_calls(pred) == ["solve.Predict"]
    assert prog.strategies() == {"solve": "Predict"} and list(prog.predictors()) == ["solve.Predict"]
    assert list(prog.predictors(every=True)) == ["solve.Predict", "solve.Majority.reason", "solve.ChainOfThought"]
    assert all("reasoning" not in (r.schema or {}).get("properties", {}) for r in lm.requests)


def test_choosing_an_alternative_runs_it(write_pipe):
    prog, lm = load(write_pipe, reasoners)
    prog.choose({"solve": "Majority"})
    pred = prog(question="2+5")
    assert pred.answer == "7" and predictor_calls(pred) == ["solve.Majority.reason"] * 3
    with pytest.raises(ValueError, match="no alternative 'Majority_9'; its alternatives: Predict, Majority, "
                                         "ChainOfThought"):
        prog.choose({"solve": "Majority_9"})


@pytest.fixture
def sandbox_or_weaker(monkeypatch):
    import pipec.sandbox
    status = pipec.sandbox.sandbox_status()
    if not (status.ok and status.mode == "bwrap"):
        monkeypatch.setenv("PIPEC_SANDBOX", "process")


def as_alternatives(kind: str, folder: Path) -> tuple[Path, str]:
    """The kind's contract example (tests/test_kinds_contract.py) copied into `folder`, with the first
    module of the kind rewritten as `one_of(Kind(options), Kind(options, one more))(Signature)`: two
    alternatives of the same kind, so the pipeline reads the same extra outputs from either."""
    from test_kinds_contract import require_example
    source_path = require_example(kind)
    shutil.copytree(source_path.parent, folder, dirs_exist_ok=True)
    path = folder / source_path.name
    text = path.read_text(encoding="utf-8")
    loaded = load_source(path, catalogue())
    decl = next(m for m in loaded.program.modules.values() if m.kind == kind and m.span.file == str(path))
    lines = text.split("\n")

    def offset(line, col):
        return sum(len(x) + 1 for x in lines[:line - 1]) + col - 1
    start, sig_end = offset(decl.kind_span.line, decl.kind_span.col), offset(decl.signature_span.end_line,
                                                                            decl.signature_span.end_col)
    end = offset(decl.span.end_line, decl.span.end_col)
    rest = text[sig_end:end - 1].strip().strip(",").strip()
    names = {o.name for o in decl.options}
    extra = 'instruction: "Take care."' if "instruction" not in names else "max_tokens: 77"
    second = f"{rest}, {extra}" if rest else extra
    path.write_text(text[:start] + f"one_of({kind}({rest}), {kind}({second}))({decl.signature})" + text[end:],
                    encoding="utf-8")
    return path, decl.name


@pytest.mark.parametrize("kind", sorted(kinds()))
def test_any_kind_can_be_an_alternative_and_keeps_the_kinds_contract(kind, tmp_path, sandbox_or_weaker):
    """The kinds contract's naming rule for alternatives: a one_of module M's alternative with label L
    is a module named `M.L`, so its predictors are `M.L` or `M.L.<part>`; every LM call of M comes from
    a predictor M lists; and the calls stay within the bound `pipec inspect` gives for the alternative
    the program runs."""
    from test_kinds_contract import STYLES, lm_records, sample_value, worst_case
    path, name = as_alternatives(kind, tmp_path / "examples")
    lm = pipec.ScriptedLM(rule=worst_case(STYLES[0]))
    prog = pipec.load(path, lm=lm, cache=False)
    prog.choose({name: f"{kind}_2"})
    module = prog.modules[name]
    names = [p.name for p in module.predictors()]
    assert names and all(n == f"{name}.{kind}_2" or n.startswith(f"{name}.{kind}_2.") for n in names), names
    assert len(prog.predictors(every=True)) == len({p.name for m in prog.modules.values() for p in m.every_predictor()})
    inputs = {n: sample_value(t) for n, t in prog.checked.pipelines[prog.name].params.items()}
    pred = prog(**inputs)
    report = inspect_program(prog)
    assert len(lm.requests) <= report["max_lm_calls"]
    made = [r for r in lm_records(pred) if r.module == name]
    assert made and {r.predictor for r in made} <= set(names)


# ---------------------------------------------------------------------------- compiling
def compile_adder(write_pipe, rule, text=PIPE, **kw):
    prog, lm = load(write_pipe, rule, text)
    kw.setdefault("options", {"instructions": 0, "first_rung": 4})
    return prog.compile(TRAIN, VAL, "exact_match(answer)", seed=0, **kw), lm


def test_compile_chooses_the_alternative_that_scores_better_and_the_cheaper_of_equals(write_pipe):
    """Majority and ChainOfThought both reason, so both score 1.0; Majority makes three calls per
    row and ChainOfThought one: the cheaper wins, though the file lists Majority first."""
    compiled, _ = compile_adder(write_pipe, reasoners)
    assert compiled.strategies() == {"solve": "ChainOfThought"}
    assert compiled.report.baseline_score == 0.0 and compiled.report.compiled_score == 1.0
    verdict = compiled.report.trials[-1].note
    assert verdict.startswith("auto chose solve: ChainOfThought, zero-shot: 1.000 on 12 validation rows")
    # Tied with ChainOfThought on every row (never clearly worse, so never out), Majority loses the
    # tie to the cheaper program; its trial says what it cost.
    [majority] = [t for t in compiled.report.trials if t.note.startswith("auto: solve: Majority")]
    assert majority.note == "auto: solve: Majority, zero-shot: 1.000 on 12 rows, beaten by solve: ChainOfThought, zero-shot"
    assert majority.calls_per_row == 3.0 and majority.tokens_per_row > 0
    assert compiled.report.trials[-1].calls_per_row == 1.0 and compiled.report.trials[-1].tokens_per_row > 0
    assert list(compiled.params()) == ["solve.ChainOfThought"]
    assert compiled(question="20+41").answer == "61"


def test_a_call_bound_keeps_an_expensive_alternative_out(write_pipe):
    """Only Majority's sampled calls answer right; its bound is 6 calls per row. Under
    max_calls_per_row = 4 it is never scored (no request at a temperature), and the compile keeps a
    program within the bound; without the bound, Majority wins."""
    bounded, lm = compile_adder(write_pipe, voters_only, max_calls_per_row=4)
    task = [r for r in lm.requests if "instruction" not in (r.schema or {}).get("properties", {})]   # not the proposer's
    assert task and all(r.params.get("temperature", 0) == 0 for r in task)
    assert bounded.strategies()["solve"] != "Majority" and inspect_program(bounded)["max_lm_calls"] <= 4
    assert bounded.report.max_calls_per_row == 4
    free, _ = compile_adder(write_pipe, voters_only)
    assert free.strategies() == {"solve": "Majority"} and free.report.compiled_score == 1.0
    assert "max_calls_per_row" not in free.artifact.model_dump(mode="json")["report"]


def test_a_bound_the_uncompiled_program_breaks_is_a_usage_error_before_any_call(write_pipe):
    text = PIPE.replace("one_of(Predict, Majority(n: 3, temperature: 0.7), ChainOfThought)",
                        "one_of(Majority(n: 5), Predict)")
    prog, lm = load(write_pipe, reasoners, text)
    with pytest.raises(SettingsError) as err:
        prog.compile(TRAIN, VAL, "exact_match(answer)", max_calls_per_row=4)
    assert "the uncompiled program may make 10 LM calls per input, over max_calls_per_row 4" in str(err.value)
    assert "put a cheaper alternative first" in str(err.value) and lm.requests == []


def test_the_bound_in_a_compile_block_is_pointed_at(write_pipe):
    text = PIPE.replace("one_of(Predict, Majority(n: 3, temperature: 0.7), ChainOfThought)",
                        "one_of(Majority(n: 5), Predict)") + (
        '\n    compile adder { trainset = "t.jsonl" metric = exact_match(answer) max_calls_per_row = 4 }\n')
    path = write_pipe(text)
    (path.parent / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    prog = pipec.load(path, lm=pipec.ScriptedLM(rule=reasoners), cache=False)
    with pytest.raises(SettingsError) as err:
        prog.compile()
    line = next(i for i, x in enumerate(text.strip("\n").split("\n"), 1) if "max_calls_per_row" in x)
    assert re.search(rf"p\.pipe:{line}:\d+: error: the uncompiled program may make 10 LM calls", err.value.render())


def test_the_compile_enforces_the_bound_whatever_an_optimizer_returns(write_pipe, monkeypatch):
    """An optimizer that returns a choice over max_calls_per_row gets the uncompiled program instead,
    and a trial says why."""
    real = optimizers_pkg.get_optimizer

    def get(name):
        cls = real(name)

        class Greedy(cls):
            def optimize(self, session):
                return {**session.baseline(), "solve": Choice(alternative="Majority")}, None
        Greedy.name = cls.name
        return Greedy
    monkeypatch.setattr(optimizers_pkg, "get_optimizer", get)
    text = PIPE.replace("Majority(n: 3, temperature: 0.7)", "Majority(n: 5, temperature: 0.7)")
    compiled, _ = compile_adder(write_pipe, voters_only, text, max_calls_per_row=6)
    assert compiled.strategies() == {"solve": "Predict"}
    assert compiled.report.trials[-1].note == ("kept the uncompiled program: auto's program may make 10 LM calls "
                                               "per input (solve: Majority), over max_calls_per_row 6")


def test_other_optimizers_keep_the_first_alternative(write_pipe):
    compiled, _ = compile_adder(write_pipe, reasoners, optimizer="labeled_fewshot", options={})
    assert compiled.strategies() == {"solve": "Predict"} and list(compiled.params()) == ["solve.Predict"]
    assert compiled.params()["solve.Predict"].demos        # it tuned the alternative that runs


def test_the_session_lists_alternatives_and_scores_under_a_choice(write_pipe):
    """What a strategy-aware optimizer sees (`pipec.session.Session.strategies` and `under`)."""
    prog, lm = load(write_pipe, reasoners)
    session = open_session(prog, CompileConfig.for_program(prog, trainset=TRAIN, valset=VAL,
                                                           metric="exact_match(answer)", max_calls_per_row=6))
    listed = session.strategies()["solve"]
    assert [(a.label, a.kind, a.max_calls, a.row_calls, a.predictors) for a in listed] == [
        ("Predict", "Predict", 2, 2, ("solve.Predict",)),
        ("Majority", "Majority", 6, 6, ("solve.Majority.reason",)),
        ("ChainOfThought", "ChainOfThought", 2, 2, ("solve.ChainOfThought",))]
    assert list(session.predictors()) == ["solve.Predict"] and list(session.baseline()) == ["solve.Predict"]
    view = session.under({"solve": "ChainOfThought"})
    assert list(view.predictors()) == ["solve.ChainOfThought"]
    assert view.baseline()["solve"] == Choice(alternative="ChainOfThought")
    assert [a.label for a in view.strategies()["solve"]][0] == "ChainOfThought"     # what it runs comes first
    # A parameter set that makes no choice runs the view's; evaluate measures what each row costs.
    scored = view.evaluate({"solve.ChainOfThought": session.baseline()["solve.Predict"]}, session.valset[:3])
    assert scored.score == 1.0 and scored.calls_per_row == 1.0 and [r.calls for r in scored.rows] == [1, 1, 1]
    assert session.evaluate(session.baseline(), session.valset[:3]).score == 0.0
    tight = open_session(prog, CompileConfig.for_program(prog, trainset=TRAIN, valset=VAL,
                                                         metric="exact_match(answer)", max_calls_per_row=4))
    assert [a.label for a in tight.strategies()["solve"]] == ["Predict", "ChainOfThought"]
    with pytest.raises(ValueError, match="no alternative 'Nope'"):
        session.under({"solve": "Nope"})


def test_auto_rebuilds_the_winning_demo_family_for_an_alternatives_own_predictors(write_pipe):
    """What auto races for an alternative besides its zero-shot program: the demo family that won on
    the first alternative, built anew for the alternative's predictors (ChainOfThought's bootstrapped
    demos carry its reasoning), carrying the choice."""
    from pipec.optimizers.auto import Auto, Race
    prog, lm = load(write_pipe, reasoners)
    session = open_session(prog, CompileConfig.for_program(prog, trainset=TRAIN, valset=VAL,
                                                           metric="exact_match(answer)"))
    auto = Auto(max_demos=2)
    race = Race(session, list(session.valset), 4)
    view = session.under({"solve": "ChainOfThought"})
    booted = auto.rebuild(view, ("bootstrap", 2), race, "solve: ChainOfThought")
    assert booted["solve"] == Choice(alternative="ChainOfThought")
    demos = booted["solve.ChainOfThought"].demos
    assert len(demos) == 2 and all(set(d) == {"question", "reasoning", "answer"} for d in demos)
    assert {d["question"] for d in demos} <= {r["question"] for r in TRAIN}
    labeled = auto.rebuild(session.under({"solve": "Predict"}), ("labeled",), race, "solve: Predict")
    assert len(labeled["solve.Predict"].demos) == 2 and labeled["solve"] == Choice(alternative="Predict")
    assert auto.rebuild(view, ("zero-shot",), race, "solve: ChainOfThought") is None


# ---------------------------------------------------------------------------- the artifact
@pytest.fixture
def saved(write_pipe, tmp_path):
    compiled, _ = compile_adder(write_pipe, reasoners)
    return compiled.save(tmp_path / "adder.compiled.json")


def test_the_artifact_keeps_the_choice_and_runs_it(saved, tmp_path):
    doc = json.loads(saved.read_text())
    assert doc["strategies"] == {"solve": "ChainOfThought"} and list(doc["predictors"]) == ["solve.ChainOfThought"]
    lm = pipec.ScriptedLM(rule=reasoners)
    again = pipec.load_compiled(saved, lm=lm, cache=False)
    assert again.strategies() == {"solve": "ChainOfThought"}
    pred = again(question="7+8")
    assert pred.answer == "15" and predictor_calls(pred) == ["solve.ChainOfThought"]
    assert again.save(tmp_path / "again.json").read_bytes() == saved.read_bytes()


def test_an_artifact_choosing_an_alternative_the_sources_lack_is_refused(saved, tmp_path):
    doc = json.loads(saved.read_text())
    doc["strategies"] = {"solve": "TreeOfThought"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(reseal(doc)))
    with pytest.raises(ArtifactError, match="module solve has no alternative 'TreeOfThought'"):
        pipec.load_compiled(bad, cache=False)


def test_artifacts_without_strategies_keep_their_fingerprints():
    """Artifacts of programs without one_of modules, and those written before them, have no
    `strategies`: they load and verify as before (the checked-in examples)."""
    for path in sorted((ROOT / "examples").glob("*.compiled.json")):
        doc = json.loads(path.read_text())
        assert "strategies" not in doc
        prog = pipec.load_compiled(path, lm=pipec.ScriptedLM(), cache=False)
        assert prog.strategies() == {} and prog.artifact.dumps() == path.read_text()


def test_inspect_shows_the_bound_of_each_alternative_then_of_the_chosen_one(write_pipe, saved, capsys):
    prog, _ = load(write_pipe, reasoners)
    report = inspect_program(prog)
    [site] = report["calls"]
    assert [(a["label"], a["max_lm_calls"], a["running"]) for a in site["alternatives"]] == [
        ("Predict", 2, True), ("Majority", 6, False), ("ChainOfThought", 2, False)]
    assert report["max_lm_calls"] == 2 and report["dearest_lm_calls"] == 6
    text = render_inspection(report)
    assert "  Majority: at most 6 LM calls\n" in text and "a compile may choose others: at most 6 LM calls" in text
    from pipec import cli
    assert cli.main(["inspect", str(saved)]) == 0
    out = capsys.readouterr().out
    assert ("== s = solve (ChainOfThought, chosen by the compile from one_of Predict, Majority, ChainOfThought), "
            "at most 2 LM calls ==") in out
    assert "[solve.ChainOfThought]" in out and "solve.Predict" not in out


def test_inspect_marks_alternatives_over_the_compile_blocks_bound():
    text = render_inspection(inspect_program(pipec.load(ROOT / "examples" / "strategy.pipe", cache=False,
                                                        lm=pipec.ScriptedLM())))
    assert ("  Majority_2 (Majority): at most 14 LM calls (the pipeline: 14, over the compile block's "
            "max_calls_per_row 8: never chosen)") in text
    assert "  Majority: at most 6 LM calls\n" in text


# ---------------------------------------------------------------------------- the report
def test_the_report_draws_score_against_cost(saved):
    prog = pipec.load_compiled(saved, lm=pipec.ScriptedLM(rule=reasoners), cache=False)
    trials = prog.report.trials
    front = cost_front(trials)
    assert [(t.score, t.calls_per_row) for t in front] == [(0.0, 1.0), (1.0, 1.0)][1:]   # one call per row buys 1.0
    html = build_report(prog)
    assert '<section id="front"><h2>Score against cost</h2>' in html
    svg = html[html.index('<svg id="front-svg"'):]
    svg = svg[:svg.index("</svg>")]
    measured = [t for t in trials if t.calls_per_row is not None]
    assert svg.count("<circle") == len(measured) >= 4
    assert "★ chosen" in svg and "pt-front" in svg
    assert "3 LM calls and" in svg           # Majority's point says what it cost
    assert "<th>LM calls / row</th><th>tokens / row</th>" in html


def test_a_report_without_measured_trials_has_no_front(write_pipe):
    compiled, _ = compile_adder(write_pipe, reasoners, optimizer="labeled_fewshot", options={})
    html = build_report(compiled)
    assert 'id="front"' not in html and "LM calls / row" not in html


def test_the_front_renders_in_a_browser(saved, tmp_path):
    from browser.cdp import Browser, find_chromium
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium installed")
    from pipec.html_report import write_report
    out = write_report(tmp_path / "report.html", pipec.load_compiled(saved, lm=pipec.ScriptedLM(), cache=False))
    with Browser.launch(chromium) as browser:
        page = browser.new_page(width=1280, height=900)
        page.goto(out.resolve().as_uri())
        page.wait_until("document.readyState === 'complete'")
        size = page.evaluate("(() => { const r = document.querySelector('#front-svg').getBoundingClientRect(); "
                             "return [r.width, r.height, document.querySelectorAll('#front-svg circle').length]; })()")
        assert size[0] > 400 and size[1] > 150 and size[2] >= 4, size
        assert page.evaluate("document.querySelector('#front-svg path.front') !== null")
        assert page.console_errors() == []
