"""The runtime as a user sees it: typed outputs, traces, retries, concurrency, failures, tools, inputs."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import DIAMOND_REPLY, SlowLM, count_rule, diamond_rule, system_of

import pipec
from pipec.lm.base import LMError, TransientLMError

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")


def load(path, lm, **kw):
    return pipec.load(path, lm=lm, cache=False, **kw)


# ---------------------------------------------------------------------------- typed outputs and trace
def test_outputs_are_typed_per_signature(diamond):
    prog = load(diamond, pipec.ScriptedLM(rule=diamond_rule))
    pred = prog(text="one two three")
    assert pred.ok, pred.error
    assert pred.outputs() == {"verdict": "so_so", "summary": "short", "n": 3, "tags": ["a", "b"], "score": None,
                              "p": {"x": 1, "y": 2, "label": None}, "flag": True, "why": "counted words"}
    assert type(pred.n) is int and pred.flag is True
    assert pred["verdict"] == pred.verdict == "so_so"


def test_trace_records_every_call(diamond):
    lm = pipec.ScriptedLM(rule=diamond_rule)
    pred = load(diamond, lm)(text="one two three")
    assert [(r.node, r.module) for r in pred.trace] == [("x", "a"), ("y", "b"), ("z", "c")]
    for rec, req in zip(pred.trace, lm.requests):
        assert rec.messages == req.messages
        assert [m["role"] for m in rec.messages] == ["system", "user"]
        assert json.loads(rec.raw) == DIAMOND_REPLY
        assert rec.error is None and rec.attempt == 1 and not rec.cache_hit
        assert rec.model == "scripted/lm"
        assert rec.prompt_tokens > 0 and rec.completion_tokens > 0
        assert rec.latency_ms >= 0
    assert pred.trace[0].parsed == {"summary": "short"}
    assert pred.trace[1].parsed == {"reasoning": "counted words", "n": 3, "tags": ["a", "b"]}
    assert set(pred.trace[2].parsed) == {"verdict", "score", "p", "flag"}
    d = pred.trace[0].to_dict()
    assert {"node", "messages", "raw", "parsed", "latency_ms", "prompt_tokens", "completion_tokens", "error"} <= set(d)
    assert pred.lm_calls == 3


def test_trace_latency_is_measured(count_pipe):
    lm = SlowLM(rule=count_rule, delay=0.05)
    pred = load(count_pipe, lm)(q="abcd")
    assert pred.n == 4
    assert 40 <= pred.trace[0].latency_ms < 1000


def test_upstream_values_flow_into_downstream_messages(diamond):
    lm = pipec.ScriptedLM(rule=diamond_rule)
    load(diamond, lm)(text="hello world")
    assert lm.requests[0].messages[1]["content"] == "text: hello world"
    judge = lm.requests[2]
    assert system_of(judge).startswith("Judge the summary.")
    assert judge.messages[1]["content"] == "summary: short\nn: 3"


def test_stats_count_calls_and_tokens(diamond):
    prog = load(diamond, pipec.ScriptedLM(rule=diamond_rule))
    prog(text="a")
    prog(text="b")
    assert prog.stats.calls == 6
    assert prog.stats.tokens > 0 and prog.stats.cache_hits == 0


def test_schema_sent_unless_backend_wants_text(count_pipe):
    lm = pipec.ScriptedLM(rule=count_rule)
    load(count_pipe, lm)(q="abc")
    assert lm.requests[0].schema == {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    text_lm = pipec.ScriptedLM(rule=count_rule, structured="text")
    load(count_pipe, text_lm)(q="abc")
    assert text_lm.requests[0].schema is None
    assert '"n"' in system_of(text_lm.requests[0])     # the format is still asked for in the prompt


# ---------------------------------------------------------------------------- parse retry
def test_parse_failure_retries_once_with_the_error_shown(count_pipe):
    lm = pipec.ScriptedLM(["I think it is several.", {"n": 5}])
    pred = load(count_pipe, lm)(q="hello")
    assert pred.ok and pred.n == 5
    assert len(lm.requests) == 2
    first, retry = lm.requests[0].messages, lm.requests[1].messages
    assert retry[:len(first)] == first
    assert retry[len(first)] == {"role": "assistant", "content": "I think it is several."}
    follow = retry[len(first) + 1]
    assert follow["role"] == "user"
    assert "field 'n'" in follow["content"] and "expected a number" in follow["content"]
    assert '"n"' in follow["content"]
    assert [r.attempt for r in pred.trace] == [1, 2]
    assert pred.trace[0].error and "field 'n'" in pred.trace[0].error
    assert pred.trace[1].error is None and pred.trace[1].parsed == {"n": 5}


def test_second_parse_failure_fails_the_prediction(count_pipe):
    lm = pipec.ScriptedLM(["no idea", "still no idea", {"n": 1}])
    pred = load(count_pipe, lm)(q="hello")
    assert not pred.ok
    assert len(lm.requests) == 2                       # exactly one retry
    assert pred.raw == "still no idea"
    assert pred.node == "r"
    assert pred.error.startswith("r (m):") and "did not parse" in pred.error
    with pytest.raises(AttributeError, match="failed"):
        pred.n
    d = pred.to_dict()
    assert d["ok"] is False and d["outputs"] is None and d["raw"] == "still no idea" and d["node"] == "r"


# ---------------------------------------------------------------------------- LM errors
def test_transient_errors_are_retried(count_pipe):
    lm = pipec.ScriptedLM([TransientLMError("rate limited", retry_after=0), TransientLMError("timeout", retry_after=0),
                           {"n": 2}])
    pred = load(count_pipe, lm)(q="hi")
    assert pred.ok and pred.n == 2
    assert len(lm.requests) == 3


def test_transient_errors_give_up_and_are_reported(count_pipe):
    lm = pipec.ScriptedLM([TransientLMError("rate limited", retry_after=0)] * 4 + [{"n": 2}])
    pred = load(count_pipe, lm)(q="hi")
    assert not pred.ok
    assert len(lm.requests) == 4                       # max_retries = 3
    assert "r (m)" in pred.error and "rate limited" in pred.error and "4 attempts" in pred.error


def test_transient_backoff_grows(count_pipe, monkeypatch):
    delays = []
    monkeypatch.setattr(time, "sleep", delays.append)
    lm = pipec.ScriptedLM([TransientLMError("busy")] * 3 + [{"n": 2}])
    pred = load(count_pipe, lm)(q="hi")
    assert pred.ok
    assert len(delays) == 3
    for got, base in zip(delays, (0.5, 1.0, 2.0)):
        assert base <= got <= base * 1.25


def test_retry_after_is_honoured(count_pipe, monkeypatch):
    delays = []
    monkeypatch.setattr(time, "sleep", delays.append)
    lm = pipec.ScriptedLM([TransientLMError("429", retry_after=7.0), {"n": 2}])
    assert load(count_pipe, lm)(q="hi").ok
    assert len(delays) == 1 and 7.0 <= delays[0] <= 7.0 * 1.25


def test_permanent_lm_error_is_not_retried(count_pipe):
    lm = pipec.ScriptedLM([LMError("invalid model"), {"n": 2}])
    pred = load(count_pipe, lm)(q="hi")
    assert not pred.ok and len(lm.requests) == 1
    assert pred.error == "r (m): invalid model"


def test_transient_errors_retried_on_asyncio(count_pipe):
    lm = SlowLM([TransientLMError("reset", retry_after=0.01), {"n": 3}], delay=0.01)
    pred = load(count_pipe, lm)(q="abc")
    assert pred.ok and pred.n == 3 and len(lm.requests) == 2


def test_trace_records_the_lm_error(count_pipe):
    lm = pipec.ScriptedLM([LMError("invalid model")])
    pred = load(count_pipe, lm)(q="hi")
    assert pred.trace[-1].error and "invalid model" in pred.trace[-1].error


# ---------------------------------------------------------------------------- concurrency
def test_independent_nodes_run_concurrently(diamond):
    lm = SlowLM(rule=diamond_rule, delay=0.5)
    prog = load(diamond, lm)
    assert not prog.inline
    start = time.perf_counter()
    pred = prog(text="one two three")
    elapsed = time.perf_counter() - start
    assert pred.ok, pred.error
    assert pred.verdict == "so_so" and pred.n == 3
    assert lm.max_in_flight == 2
    assert 0.95 <= elapsed < 1.3, elapsed             # two sleeps (a‖b, then c), not three (1.5 s)


def test_inline_program_runs_without_event_loop(diamond):
    prog = load(diamond, pipec.ScriptedLM(rule=diamond_rule))
    assert prog.inline
    assert prog(text="x").ok


def test_call_from_inside_an_event_loop(diamond):
    prog = load(diamond, SlowLM(rule=diamond_rule, delay=0.01))

    async def main():
        return prog(text="sync call in a loop"), await prog.acall(text="async call")

    a, b = asyncio.run(main())
    assert a.ok and b.ok and a.verdict == b.verdict == "so_so"


def _fail_count(request):
    if system_of(request).startswith("Produce the outputs"):     # module b (Count) has no instruction
        return "no idea"
    return diamond_rule(request)


@pytest.mark.parametrize("lm_factory", [lambda: pipec.ScriptedLM(rule=_fail_count),
                                        lambda: SlowLM(rule=_fail_count, delay=0.02)], ids=["inline", "asyncio"])
def test_downstream_of_failed_node_does_not_run(diamond, lm_factory):
    lm = lm_factory()
    pred = load(diamond, lm)(text="t")
    assert not pred.ok
    assert pred.node == "y" and pred.error.startswith("y (b):")
    assert pred.raw == "no idea"
    assert not any(system_of(r).startswith("Judge") for r in lm.requests)
    assert sum(system_of(r).startswith("Produce") for r in lm.requests) == 2     # b and its one retry


def test_unused_node_still_runs(write_pipe):
    path = write_pipe("""
        signature S { in q: str out n: int }
        module m = Predict(S)
        module side = Predict(S, instruction: "Side effect.")
        pipeline p(q: str) -> (n) {
            r = m(q: q)
            s = side(q: q)
            return n = r.n
        }
    """)
    lm = pipec.ScriptedLM(rule=lambda r: {"n": 1})
    prog = load(path, lm)
    assert any("never used" in w.message for w in prog.warnings)
    assert prog(q="x").n == 1
    assert len(lm.requests) == 2 and system_of(lm.requests[1]).startswith("Side effect.")


# ---------------------------------------------------------------------------- tools
TOOLS = """
    import asyncio

    def join(a, b, sep="-"):
        return f"{a}{sep}{b}"

    def add(a, b):
        return str(a + b)          # a string: the declared return type coerces it

    def boom(x):
        raise RuntimeError("kaboom " + str(x))

    def words(text):
        return "not a list of ints"

    async def ajoin(a, b):
        await asyncio.sleep(0.01)
        return a + "|" + b
"""


def tool_pipe(write_pipe, mod, body, decls):
    return write_pipe(f"""
        signature S {{ in q: str out n: int }}
        module m = Predict(S)
        {decls.replace("MOD", mod)}
        {body}
    """)


def test_tool_positional_and_named_args(write_pipe, tool_module):
    mod = tool_module(TOOLS)
    path = tool_pipe(write_pipe, mod, """
        pipeline p(q: str) -> (joined, total) {
            r = m(q: q)
            j = join(q, r.n, sep: "+")
            t = add(r.n, b: 10)
            return joined = j, total = t
        }""", 'tool join = python("MOD:join")\n        tool add(a: int, b: int) -> int = python("MOD:add")')
    lm = pipec.ScriptedLM(rule=lambda r: {"n": 5})
    pred = load(path, lm)(q="hi")
    assert pred.ok, pred.error
    assert pred.joined == "hi+5"
    assert pred.total == 15 and type(pred.total) is int
    tools = [r for r in pred.trace if r.model.startswith("tool:")]
    assert [r.node for r in tools] == ["j", "t"]
    assert tools[0].model == f"tool:{mod}:join"
    assert json.loads(tools[0].messages[0]["content"]) == {"#0": "hi", "#1": 5, "sep": "+"}
    assert json.loads(tools[1].messages[0]["content"]) == {"a": 5, "b": 10}
    assert tools[1].parsed == {"result": 15}
    assert pred.lm_calls == 1                          # tools are not LM calls


@pytest.mark.parametrize("lm_factory", [lambda: pipec.ScriptedLM(rule=lambda r: {"n": 5}),
                                        lambda: SlowLM(rule=lambda r: {"n": 5}, delay=0.01)], ids=["inline", "asyncio"])
def test_tool_exception_is_a_recorded_failure(write_pipe, tool_module, lm_factory):
    mod = tool_module(TOOLS)
    path = tool_pipe(write_pipe, mod, """
        pipeline p(q: str) -> (out) {
            r = m(q: q)
            b = boom(r.n)
            return out = b
        }""", 'tool boom = python("MOD:boom")')
    pred = load(path, lm_factory())(q="hi")
    assert not pred.ok
    assert pred.node == "b"
    assert "b (boom)" in pred.error and "RuntimeError" in pred.error and "kaboom 5" in pred.error
    assert pred.trace[-1].error == "RuntimeError: kaboom 5"


def test_tool_result_of_wrong_type_fails(write_pipe, tool_module):
    mod = tool_module(TOOLS)
    path = tool_pipe(write_pipe, mod, """
        pipeline p(q: str) -> (out) {
            w = words(q)
            return out = w
        }""", 'tool words(text: str) -> list[int] = python("MOD:words")')
    pred = load(path, pipec.ScriptedLM())(q="hi")
    assert not pred.ok and "does not fit its declared type" in pred.error


def test_async_tool_on_asyncio(write_pipe, tool_module):
    mod = tool_module(TOOLS)
    path = tool_pipe(write_pipe, mod, """
        pipeline p(q: str) -> (out) {
            r = m(q: q)
            a = ajoin(q, "x")
            return out = a
        }""", 'tool ajoin = python("MOD:ajoin")')
    pred = load(path, SlowLM(rule=lambda r: {"n": 1}, delay=0.01))(q="hi")
    assert pred.ok and pred.out == "hi|x"


def test_async_tool_with_inline_lm(write_pipe, tool_module):
    mod = tool_module(TOOLS)
    path = tool_pipe(write_pipe, mod, """
        pipeline p(q: str) -> (out) {
            r = m(q: q)
            a = ajoin(q, "x")
            return out = a
        }""", 'tool ajoin = python("MOD:ajoin")')
    pred = load(path, pipec.ScriptedLM(rule=lambda r: {"n": 1}))(q="hi")
    assert pred.ok, pred.error
    assert pred.out == "hi|x"


def test_unimportable_tool_is_a_load_error(write_pipe):
    path = write_pipe("""
        signature S { in q: str out n: int }
        module m = Predict(S)
        tool t = python("no_such_module_xyz:fn")
        pipeline p(q: str) -> (n) {
            r = m(q: q)
            x = t(q)
            return n = r.n
        }
    """)
    with pytest.raises(pipec.PipeError, match="no_such_module_xyz"):
        load(path, pipec.ScriptedLM())


# ---------------------------------------------------------------------------- prompts: instruction, demos
def test_instruction_and_field_descriptions_in_system_message(write_pipe):
    path = write_pipe("""
        signature S {
            "Classify the sentiment."
            in text: str "the review"
            out label: enum(pos, neg) "the sentiment"
        }
        module plain = Predict(S)
        module terse = Predict(S, instruction: "Answer tersely.")
        pipeline p(text: str) -> (a, b) {
            x = plain(text: text)
            y = terse(text: text)
            return a = x.label, b = y.label
        }
    """)
    lm = pipec.ScriptedLM(rule=lambda r: {"label": "pos"})
    assert load(path, lm)(text="great").a == "pos"
    s1, s2 = system_of(lm.requests[0]), system_of(lm.requests[1])
    assert s1.startswith("Classify the sentiment.")
    assert "- text: the review" in s1
    assert "- label: the sentiment (one of: pos, neg)" in s1
    assert s2.startswith("Answer tersely.") and "Classify the sentiment." not in s2


def test_demos_appear_as_message_pairs(count_pipe):
    lm = pipec.ScriptedLM(rule=count_rule)
    prog = load(count_pipe, lm)
    pred_ = prog.modules["m"].predictors()[0]
    pred_.demos = [{"q": "abc", "n": 3}, {"q": "hello", "n": 5}]
    pred_.rebuild()
    assert prog(q="xy").n == 2
    msgs = lm.requests[0].messages
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == "q: abc" and json.loads(msgs[2]["content"]) == {"n": 3}
    assert msgs[3]["content"] == "q: hello" and json.loads(msgs[4]["content"]) == {"n": 5}
    assert msgs[5]["content"] == "q: xy"


def test_chain_of_thought_asks_for_reasoning_first(diamond):
    lm = pipec.ScriptedLM(rule=diamond_rule)
    load(diamond, lm)(text="x")
    cot = lm.requests[1]
    assert list(cot.schema["properties"]) == ["reasoning", "n", "tags"]
    assert '"reasoning", "n", "tags"' in system_of(cot)


def test_module_and_lm_sampling_options_reach_the_request(write_pipe):
    path = write_pipe("""
        lm main = "scripted/main" (temperature: 0.7, max_tokens: 64)
        lm other = "scripted/other"
        default lm = main
        signature S { in q: str out n: int }
        module hot = Predict(S)
        module cold = Predict(S, lm: other, temperature: 0)
        pipeline p(q: str) -> (a, b) {
            x = hot(q: q)
            y = cold(q: q)
            return a = x.n, b = y.n
        }
    """)
    main_lm, other_lm = pipec.ScriptedLM(rule=lambda r: {"n": 1}), pipec.ScriptedLM(rule=lambda r: {"n": 2})
    pred = pipec.load(path, lms={"main": main_lm, "other": other_lm}, cache=False)(q="z")
    assert (pred.a, pred.b) == (1, 2)
    assert main_lm.requests[0].params == {"temperature": 0.7, "max_tokens": 64}
    assert other_lm.requests[0].params == {"temperature": 0}


# ---------------------------------------------------------------------------- inputs
TYPED_INPUTS = """
    record Point { x: int  y: int }
    signature S { in k: int  in f: float  in b: bool  in mode: enum(fast, slow)  in p: Point  in hint: str?
                  out n: int }
    module m = Predict(S)
    pipeline p(k: int, f: float, b: bool, mode: enum(fast, slow), p: Point, hint: str?) -> (n, k2) {
        r = m(k: k, f: f, b: b, mode: mode, p: p, hint: hint)
        return n = r.n, k2 = k
    }
"""
GOOD = {"k": 3, "f": 0.5, "b": True, "mode": "fast", "p": {"x": 1, "y": 2}}


@pytest.fixture
def typed(write_pipe):
    lm = pipec.ScriptedLM(rule=lambda r: {"n": 1})
    return load(write_pipe(TYPED_INPUTS), lm), lm


def test_inputs_are_coerced(typed):
    prog, lm = typed
    pred = prog(k="3", f="2.5", b="yes", mode="Fast", p='{"x": "1", "y": 2}')
    assert pred.ok and pred.k2 == 3 and type(pred.k2) is int
    assert lm.requests[0].messages[-1]["content"] == (
        'k: 3\nf: 2.5\nb: true\nmode: fast\np: {"x": 1, "y": 2}\nhint: (none)')


@pytest.mark.parametrize("missing", ["k", "f", "b", "mode", "p"])
def test_missing_input_raises_naming_it(typed, missing):
    prog, lm = typed
    values = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ValueError, match=f"missing input '{missing}'"):
        prog(**values)
    assert lm.requests == []


@pytest.mark.parametrize("name,value,fragment", [
    ("k", "three", "expected a number"),
    ("k", 2.5, "whole number"),
    ("k", True, "boolean"),
    ("f", "fast", "expected a number"),
    ("b", "perhaps", "true or false"),
    ("mode", "medium", "not one of"),
    ("p", {"x": 1}, "missing 'y'"),
    ("p", [1, 2], "object"),
])
def test_ill_typed_input_raises_naming_it(typed, name, value, fragment):
    prog, lm = typed
    with pytest.raises(ValueError) as err:
        prog(**{**GOOD, name: value})
    assert f"input '{name}'" in str(err.value) and fragment in str(err.value)
    assert lm.requests == []


def test_several_input_problems_reported_together(typed):
    prog, _ = typed
    with pytest.raises(ValueError) as err:
        prog(k="x", f=1.0, b=True, mode="fast")
    assert "input 'k'" in str(err.value) and "missing input 'p'" in str(err.value)


def test_list_for_int_input_is_refused(typed):
    prog, _ = typed
    with pytest.raises(ValueError, match="input 'k'"):
        prog(**{**GOOD, "k": [1, 2]})


def test_optional_input_may_be_given(typed):
    prog, lm = typed
    assert prog(**GOOD, hint="look left").ok
    assert lm.requests[0].messages[-1]["content"].endswith("hint: look left")


def test_unknown_pipeline_name(count_pipe):
    with pytest.raises(ValueError, match="no pipeline 'cuont'"):
        pipec.load(count_pipe, "cuont", lm=pipec.ScriptedLM(), cache=False)


def test_prediction_repr_and_equality(count_pipe):
    prog = load(count_pipe, pipec.ScriptedLM(rule=count_rule))
    a, b = prog(q="abc"), prog(q="xyz")
    assert a == b and repr(a) == "Prediction(n=3)"
