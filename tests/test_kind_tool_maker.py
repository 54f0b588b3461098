"""ToolMaker (LATM, Cai et al. 2023): the maker writes a tool from the demos, verified in the sandbox,
retried at most `max_attempts` times; the use part writes one call, which the sandbox runs; the
tool's source is the `M.tool` part's instruction, so params (and a saved artifact) carry it. A compile
makes the tool once from training rows, checks it on held-out ones the maker never sees, and the
artifact carries it: running it never asks the maker, and from elsewhere needs approval of the code;
`pipec inspect` and the report show it. Uncompiled, rows that find no tool at once make it once."""
from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest

import pipec
import pipec.sandbox
from pipec.inspection import inspect_program
from pipec.prompt import retry_message

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model", "sandbox_or_weaker")
_STATUS = pipec.sandbox.sandbox_status()


@pytest.fixture
def sandbox_or_weaker(monkeypatch):
    if not (_STATUS.ok and _STATUS.mode == "bwrap"):
        monkeypatch.setenv("PIPEC_SANDBOX", "process")


SRC = """
    signature Mul {
        "Multiply the two numbers in the question."
        in  question: str
        out answer: int
    }
    module m = ToolMaker(Mul OPTIONS, demos: [{question: "3 times 4", answer: 12}, {question: "5 times 6", answer: 30}])
    pipeline p(question: str) -> (answer, tool, call) {
        r = m(question: question)
        return answer = r.answer, tool = r.tool, call = r.call
    }
"""
GOOD = {"tool": "def mul(a: int, b: int) -> int:\n    \"Product.\"\n    return a * b", "calls": ["mul(3, 4)", "mul(5, 6)"]}
WRONG = {"tool": "def mul(a, b):\n    return a + b", "calls": ["mul(3, 4)", "mul(5, 6)"]}


def part(request) -> str:
    system = request.messages[0]["content"]
    return "make" if "reusable Python tool" in system else "use" if "Write only the call" in system else "answer"


def load(write_pipe, replies, options=""):
    lm = pipec.ScriptedLM(replies=replies)
    return pipec.load(write_pipe(SRC.replace(" OPTIONS", options)), lm=lm, cache=False), lm


def test_the_tool_is_made_verified_in_the_sandbox_and_called(write_pipe):
    prog, lm = load(write_pipe, [GOOD, {"call": "mul(7, 8)"}])
    pred = prog(question="7 times 8")
    assert pred.ok, pred.error
    assert pred.answer == 56 and pred.call == "mul(7, 8)" and pred.tool == GOOD["tool"]
    assert [part(r) for r in lm.requests] == ["make", "use"]
    runs = [json.loads(r.raw) for r in pred.trace if r.predictor == "m.sandbox"]
    assert [r["value"] for r in runs] == [[12, 30], 56]           # verified on both demos, then run
    # the use part sees the tool's api and, as demos, the maker's verified calls
    assert "def mul(a: int, b: int) -> int:" in lm.requests[1].messages[-1]["content"]
    assert [d["call"] for d in prog.modules["m"].use.demos] == ["mul(3, 4)", "mul(5, 6)"]


def test_the_tool_is_cached_on_the_module(write_pipe):
    prog, lm = load(write_pipe, [GOOD, {"call": "mul(7, 8)"}, {"call": "mul(2, 9)"}])
    assert prog(question="7 times 8").answer == 56
    pred = prog(question="2 times 9")
    assert pred.answer == 18 and [part(r) for r in lm.requests] == ["make", "use", "use"]


def test_a_wrong_tool_goes_back_with_its_failure_and_is_replaced(write_pipe):
    prog, lm = load(write_pipe, [WRONG, GOOD, {"call": "mul(7, 8)"}])
    pred = prog(question="7 times 8")
    assert pred.ok and pred.answer == 56 and pred.tool == GOOD["tool"], pred.error
    assert [part(r) for r in lm.requests] == ["make", "make", "use"]
    feedback = lm.requests[1].messages[-1]["content"]
    assert "a + b" in feedback and "example 1: mul(3, 4) gave 7, expected 12" in feedback


def test_wrong_tools_are_dropped_after_max_attempts(write_pipe):
    prog, lm = load(write_pipe, [WRONG, WRONG, WRONG], ", max_attempts: 2")
    pred = prog(question="7 times 8")
    assert not pred.ok and "no tool passed the examples after 2 attempt(s)" in pred.error
    assert [part(r) for r in lm.requests] == ["make", "make"]
    assert prog.modules["m"].tool.instruction == ""                # nothing kept


def test_on_failure_answer_lets_the_lm_answer(write_pipe):
    prog, lm = load(write_pipe, [WRONG, {"answer": 56}], ", max_attempts: 1, on_failure: \"answer\"")
    pred = prog(question="7 times 8")
    assert pred.ok and pred.answer == 56 and pred.tool == "" and pred.call == ""
    assert [part(r) for r in lm.requests] == ["make", "answer"]


@pytest.mark.parametrize("options, expected", [("", 8), (", max_attempts: 1", 4), (", max_attempts: 5", 12)])
def test_max_calls_is_the_bound(write_pipe, options, expected):
    prog, _ = load(write_pipe, [], options)
    assert prog.modules["m"].max_calls() == expected


def test_the_worst_case_makes_exactly_max_calls(write_pipe):
    """Every reply first unparseable, the retries valid: attempts 1 and 2 wrong, attempt 3 right, then the call."""
    script = iter([WRONG, WRONG, GOOD, {"call": "mul(7, 8)"}])
    retry = retry_message("\0", []).split("\0")[0]

    def rule(request):
        return next(script) if request.messages[-1]["content"].startswith(retry) else "{}"
    lm = pipec.ScriptedLM(rule=rule)
    prog = pipec.load(write_pipe(SRC.replace(" OPTIONS", "")), lm=lm, cache=False)
    bound = prog.modules["m"].max_calls()
    pred = prog(question="7 times 8")
    assert pred.ok and pred.answer == 56, pred.error
    assert len(lm.requests) == pred.lm_calls == bound == 8
    assert prog.modules["m"].max_calls() == 2           # with its tool, a call only writes the call


def test_the_tool_is_in_params_and_a_loaded_program_does_not_make_it_again(write_pipe):
    prog, lm = load(write_pipe, [GOOD, {"call": "mul(7, 8)"}])
    prog(question="7 times 8")
    params = prog.params()
    assert params["m.tool"].instruction == GOOD["tool"]
    state = json.loads(json.dumps({k: v.model_dump() for k, v in params.items()}))   # as an artifact stores it
    fresh, lm2 = load(write_pipe, [{"call": "mul(6, 7)"}])
    fresh.apply(state)
    pred = fresh(question="6 times 7")
    assert pred.ok and pred.answer == 42 and [part(r) for r in lm2.requests] == ["use"]


def test_a_tool_failing_on_an_input_fails_the_call(write_pipe):
    prog, _ = load(write_pipe, [GOOD, {"call": "mul(7)"}])
    pred = prog(question="7 times 8")
    assert not pred.ok and "the tool failed on this input" in pred.error and "TypeError" in pred.error


def test_without_a_sandbox_it_refuses(write_pipe, monkeypatch, tmp_path):
    monkeypatch.delenv("PIPEC_SANDBOX", raising=False)
    monkeypatch.setenv("PIPEC_BWRAP", str(tmp_path / "no-bwrap"))
    prog, lm = load(write_pipe, [GOOD, GOOD, GOOD])
    pred = prog(question="7 times 8")
    assert not pred.ok and "bubblewrap" in pred.error, pred.error
    assert len(lm.requests) == 1                                    # not retried: no fault of the tool


def test_clashing_field_names_are_caught(write_pipe):
    src = SRC.replace("out answer: int", "out call: int").replace("answer: 12", "call: 12").replace(
        "answer: 30", "call: 30").replace("answer = r.answer, ", "")
    with pytest.raises(Exception, match="field named 'call'"):
        pipec.load(write_pipe(src.replace(" OPTIONS", "").replace("-> (answer, ", "-> (")), lm=pipec.ScriptedLM(),
                   cache=False)


def test_the_maker_runs_on_its_own_lm(write_pipe):
    src = SRC.replace(" OPTIONS", ", maker: strong").replace("signature Mul", 'lm strong = "openai/gpt-4o"\n    signature Mul')
    prog = pipec.load(write_pipe(src), lm=pipec.ScriptedLM(), cache=False)
    m = prog.modules["m"]
    assert m.make.lm == "strong" and m.use.lm != "strong"
    assert [p.name for p in m.predictors()] == ["m.tool", "m.make", "m.use"]
    assert "instruction" in m.tool.pinned                           # no optimizer rewrites the tool's source


# ------------------------------------------------------------------------------ made at compile time
TOOL = 'def mul(a: int, b: int) -> int:\n    "The product (a <em>times</em> b)."\n    return a * b'
TRAIN = [{"question": f"{a} times {b}", "answer": a * b} for a, b in [(2, 7), (4, 9), (6, 3), (8, 5), (7, 7), (9, 4)]]
VAL = [{"question": "6 times 7", "answer": 42}, {"question": "3 times 8", "answer": 24}]
WRITTEN = {"3 times 4", "5 times 6"}
PAIR = re.compile(r"question: (\d+) times (\d+)")


def memorize(pairs) -> str:
    """A tool right on exactly the examples it was made from, and on nothing else."""
    table = {(int(a), int(b)): int(a) * int(b) for a, b in pairs}
    return f"def mul(a: int, b: int) -> int:\n    return {table!r}.get((a, b), 0)"


def scripted(tools):
    """The maker writes `tools` in turn (the last again when they run out), a str or a function of the
    example pairs it was shown, with one call per example; the use part calls mul on its question."""
    tools = list(tools)

    def rule(request):
        text = request.messages[-1]["content"]
        if part(request) == "make":
            pairs = PAIR.findall(text)
            tool = tools.pop(0) if len(tools) > 1 else tools[0]
            return {"tool": tool(pairs) if callable(tool) else tool, "calls": [f"mul({a}, {b})" for a, b in pairs]}
        if part(request) == "use":
            a, b = PAIR.findall(text)[-1]
            return {"call": f"mul({a}, {b})"}
        raise AssertionError("only the maker and the use part are asked")
    return pipec.ScriptedLM(rule=rule)


def compile_with(write_pipe, tools, options="", optimizer="labeled_fewshot", src=SRC):
    lm = scripted(tools)
    prog = pipec.load(write_pipe(src.replace(" OPTIONS", options)), lm=lm, cache=False)
    return prog.compile(TRAIN, VAL, "exact_match(answer)", optimizer), lm


def questions(request) -> set[str]:
    return {f"{a} times {b}" for a, b in PAIR.findall(request.messages[-1]["content"])}


@pytest.mark.parametrize("optimizer", ["labeled_fewshot", "bootstrap_fewshot", "random_search"])
def test_compile_makes_the_tool_from_training_rows_and_checks_it_on_held_out_ones(write_pipe, optimizer):
    compiled, lm = compile_with(write_pipe, [TOOL], optimizer=optimizer)
    assert compiled.params()["m.tool"].instruction == TOOL
    makes = [r for r in lm.requests if part(r) == "make"]
    assert len(makes) == 1                  # once for the whole compile: the baseline and every candidate use it
    shown = questions(makes[0])
    held_out = {r["question"] for r in TRAIN} - shown
    assert WRITTEN <= shown and len(shown - WRITTEN) == 4 and len(held_out) == 2   # a third of the trainset held out
    maker_text = "\n".join(m["content"] for r in makes for m in r.messages)
    assert not any(q in maker_text for q in held_out | {r["question"] for r in VAL})
    used = [questions(r) for r in lm.requests if part(r) == "use"]
    first_val = next(i for i, q in enumerate(used) if q & {r["question"] for r in VAL})
    assert held_out == set().union(*used[:first_val])      # checked on the held-out rows, before any scoring
    assert compiled.modules["m"].max_calls() == 2           # a compiled call only writes the tool's call


def test_max_calls_per_row_is_checked_against_the_program_the_compile_prepares(write_pipe):
    # Uncompiled, a call may ask the maker (bound 8); the compile makes the tool first, so what it scores
    # and emits makes the use call alone (bound 2): a bound of 2 is kept, not refused before the compile.
    from pipec.settings import SettingsError
    lm = scripted([TOOL])
    prog = pipec.load(write_pipe(SRC.replace(" OPTIONS", "")), lm=lm, cache=False)
    assert inspect_program(prog)["max_lm_calls"] == 8
    compiled = prog.compile(TRAIN, VAL, "exact_match(answer)", "bootstrap_fewshot", max_calls_per_row=2)
    assert compiled.params()["m.tool"].instruction == TOOL and inspect_program(compiled)["max_lm_calls"] == 2
    with pytest.raises(SettingsError, match="may make 2 LM calls per input, over max_calls_per_row 1"):
        prog.compile(TRAIN, VAL, "exact_match(answer)", "bootstrap_fewshot", max_calls_per_row=1)


def test_labeled_fewshot_keeps_the_use_parts_demos_from_the_tools_making(write_pipe):
    # No training row has the `use` part's `call` field: labeled demos cannot replace the verified calls.
    compiled, _ = compile_with(write_pipe, [TOOL])
    calls = [d["call"] for d in compiled.params()["m.use"].demos]
    assert calls and all(re.fullmatch(r"mul\(\d+, \d+\)", c) for c in calls)


def test_a_tool_right_on_training_but_wrong_on_held_out_rows_goes_back_to_the_maker(write_pipe):
    compiled, lm = compile_with(write_pipe, [memorize, TOOL])
    makes = [r for r in lm.requests if part(r) == "make"]
    assert len(makes) == 2 and compiled.params()["m.tool"].instruction == TOOL
    feedback = makes[1].messages[-1]["content"]
    held_out = {r["question"] for r in TRAIN} - questions(makes[0])
    assert "on 2 of 2 other instances of the task, which you are not shown, it gave a wrong value" in feedback
    assert not any(q in feedback for q in held_out)          # the maker learns how many failed, never which


def test_a_one_of_alternative_makes_its_tool_at_compile_time_too(write_pipe):
    src = SRC.replace("ToolMaker(Mul OPTIONS,", "one_of(ToolMaker, Predict)(Mul,").replace(
        "-> (answer, tool, call)", "-> (answer)").replace(", tool = r.tool, call = r.call", "")
    compiled, lm = compile_with(write_pipe, [TOOL], src=src)
    assert compiled.params()["m.ToolMaker.tool"].instruction == TOOL
    assert sum(part(r) == "make" for r in lm.requests) == 1


def test_max_attempts_bounds_the_makers_tries_at_compile_time(write_pipe):
    with pytest.raises(ValueError, match="could not make its tool at compile time: no tool passed the examples "
                                         "after 2 attempt.*wrong on 2 of 2 held-out rows"):
        compile_with(write_pipe, [memorize], ", max_attempts: 2")


def test_the_artifact_carries_the_tool_and_running_it_never_asks_the_maker(write_pipe, tmp_path):
    compiled, _ = compile_with(write_pipe, [TOOL])
    path = compiled.save(tmp_path / "p.compiled.json")
    assert json.loads(path.read_text())["predictors"]["m.tool"]["instruction"] == TOOL
    lm = scripted([AssertionError])
    loaded = pipec.load(path, lm=lm, cache=False)
    preds = loaded.run_batch([{"question": "6 times 7"}, {"question": "11 times 3"}, {"question": "2 times 2"}])
    assert [p.answer for p in preds] == [42, 33, 4] and all(p.tool == TOOL for p in preds)
    assert [part(r) for r in lm.requests] == ["use"] * 3


def test_with_on_failure_answer_a_compile_without_a_tool_answers_and_never_asks_the_maker(write_pipe, tmp_path):
    compiled, _ = compile_with(write_pipe, [memorize], ', max_attempts: 1, on_failure: "answer"')
    source = compiled.params()["m.tool"].instruction
    assert source.startswith("# no tool: ") and "held-out" in source
    lm = pipec.ScriptedLM(rule=lambda r: {"answer": 42} if part(r) == "answer" else AssertionError(part(r)))
    loaded = pipec.load(compiled.save(tmp_path / "p.compiled.json"), lm=lm, cache=False)
    pred = loaded(question="6 times 7")
    assert pred.ok and pred.answer == 42 and pred.tool == ""
    assert [part(r) for r in lm.requests] == ["answer"] and loaded.modules["m"].code() == {}


def test_an_artifact_from_elsewhere_runs_its_tool_only_once_approved(write_pipe, tmp_path, monkeypatch):
    compiled, _ = compile_with(write_pipe, [TOOL])
    path = compiled.save(tmp_path / "p.compiled.json")
    assert pipec.load(path, lm=scripted([TOOL]), cache=False)(question="6 times 7").answer == 42   # compiled here
    monkeypatch.setenv("PIPEC_TRUST_DIR", str(tmp_path / "another-machine"))
    for allow in ((), ("code",), ("m",), ("code:m.make",)):
        lm = scripted([TOOL])
        with pytest.raises(pipec.ApprovalRequired) as err:
            pipec.load(path, lm=lm, cache=False, allow=allow)(question="6 times 7")
        assert "code m.tool: runs Python code the file carries (3 lines), in the sandbox" in str(err.value)
        assert "--allow code:m.tool" in str(err.value) and lm.requests == []
    for approved in ({"allow": ["code:m.tool"]}, {"trust": True}):
        assert pipec.load(path, lm=scripted([TOOL]), cache=False, **approved)(question="6 times 7").answer == 42


def test_pipec_run_refuses_the_tool_of_an_artifact_from_elsewhere(write_pipe, tmp_path, monkeypatch, capsys):
    from pipec import cli
    compiled, _ = compile_with(write_pipe, [TOOL])
    path = compiled.save(tmp_path / "p.compiled.json")
    monkeypatch.setenv("PIPEC_TRUST_DIR", str(tmp_path / "another-machine"))
    lm = scripted([TOOL])
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    assert cli.main(["run", str(path), "--input", "question=6 times 7"]) == 2
    assert "--allow code:m.tool" in capsys.readouterr().err and lm.requests == []
    assert cli.main(["run", str(path), "--input", "question=6 times 7", "--allow", "code:m.tool"]) == 0
    assert "answer: 42" in capsys.readouterr().out


def test_inspect_shows_the_tools_source_and_the_compiled_bound(write_pipe, tmp_path, monkeypatch, capsys):
    from pipec import cli
    compiled, _ = compile_with(write_pipe, [TOOL])
    path = compiled.save(tmp_path / "p.compiled.json")
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "at most 2 LM calls per input" in out
    assert f"[m.tool] Python code this module carries and runs in the sandbox (never sent to an LM)\n--- code\n{TOOL}\n" in out
    assert "[m.use]" in out and "[m.tool] lm:" not in out        # the tool is shown as code, not as a prompt
    assert cli.main(["inspect", str(path), "--json"]) == 0
    site = json.loads(capsys.readouterr().out)["calls"][0]
    assert site["code"] == {"m.tool": TOOL} and site["max_lm_calls"] == 2
    assert cli.main(["inspect", str(tmp_path / "p.pipe")]) == 0    # uncompiled: the maker may still be asked
    assert "at most 8 LM calls per input" in capsys.readouterr().out


def test_exported_prompts_list_the_tool_as_code_not_as_a_prompt(write_pipe, tmp_path):
    from pipec.prompt_export import export_prompts
    compiled, _ = compile_with(write_pipe, [TOOL])
    path = compiled.save(tmp_path / "p.compiled.json")
    doc = json.loads(export_prompts(path, format="json"))
    assert "m.tool" not in doc["predictors"] and set(doc["predictors"]) == {"m.make", "m.use"}
    assert doc["code"] == {"m.tool": TOOL}
    text = export_prompts(path, format="text")
    assert "== m.tool (Python code the module carries and runs in pipec's sandbox; never sent to an LM) ==\n" \
           + TOOL in text and "== m.tool (ToolMaker" not in text
    module: dict = {}
    exec(compile(export_prompts(path, format="python"), "export.py", "exec"), module)
    assert module["CODE"] == {"m.tool": TOOL} and "m.tool" not in module["names"]()


def test_the_report_shows_the_tools_source_escaped(write_pipe):
    from pipec.html_report import build_report
    compiled, _ = compile_with(write_pipe, [TOOL])
    page = build_report(compiled)
    module = page[page.index('data-module="m.tool"'):]
    module = module[:module.index('<div class="module"') if '<div class="module"' in module else None]
    assert "Tool (Python code the module carries; it runs in the sandbox)" in module
    assert '<pre class="instr code">def mul(a: int, b: int) -&gt; int:\n    &quot;The product (a &lt;em&gt;times&lt;/em&gt; b).&quot;' in module
    assert "<em>" not in page


# ------------------------------------------------------------------------------ made once under concurrency
class GatedMaker(pipec.ScriptedLM):
    """The maker's reply waits until a second request for a tool arrives (or a while passes), so rows
    that could both ask the maker have every chance to; `makers` counts the requests for a tool."""

    def __init__(self, inline: bool):
        super().__init__(rule=scripted([TOOL]).rule)
        self.inline = self.blocking = inline          # inline: rows run in threads; else on asyncio
        self.makers = 0
        self.second = threading.Event()
        self._lock = threading.Lock()

    def _count(self, request) -> bool:
        if part(request) != "make":
            return False
        with self._lock:
            self.makers += 1
            if self.makers > 1:
                self.second.set()
        return True

    def complete(self, request):
        if self.inline and self._count(request):
            self.second.wait(2)
        return super().complete(request)

    async def acomplete(self, request):
        if self._count(request):
            for _ in range(200):
                if self.second.is_set():
                    break
                await asyncio.sleep(0.01)
        return super().complete(request)


@pytest.mark.parametrize("inline", [False, True], ids=["asyncio", "threads"])
def test_rows_that_find_no_tool_at_once_make_it_once(write_pipe, inline):
    lm = GatedMaker(inline)
    prog = pipec.load(write_pipe(SRC.replace(" OPTIONS", "")), lm=lm, cache=False)
    preds = prog.run_batch([{"question": f"{n} times 3"} for n in range(2, 6)], concurrency=4)
    assert [p.answer for p in preds] == [6, 9, 12, 15], [p.error for p in preds]
    assert lm.makers == 1 and sum(part(r) == "use" for r in lm.requests) == 4
