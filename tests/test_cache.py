"""The LM cache: hits skip the LM, anything that changes the request misses, corruption is a miss."""
from __future__ import annotations

import multiprocessing
import os
import types

import pytest
from conftest import count_rule

import pipec
from pipec.lm import hosted

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

COUNT_T = """
    lm main = "scripted/lm" ({options})
    signature S {{ "{instruction}" in q: str out n: {out} }}
    module m = Predict(S)
    pipeline count(q: str) -> (n) {{
        r = m(q: q)
        return n = r.n
    }}
"""


@pytest.fixture
def make_pipe(write_pipe):
    def make(options="temperature: 0", instruction="Count the letters.", out="int"):
        return write_pipe(COUNT_T.format(options=options, instruction=instruction, out=out), "count.pipe")
    return make


def cached_lm(**kw):
    return pipec.ScriptedLM(rule=count_rule, cacheable=True, **kw)


def run(path, cache_dir, q="hello", lm=None, **kw):
    lm = lm or cached_lm()
    prog = pipec.load(path, lm=lm, cache=cache_dir, **kw)
    try:
        return prog(q=q), lm, prog
    finally:
        prog.close()


def test_hit_makes_no_lm_call_and_returns_same_outputs(make_pipe, tmp_path):
    path, cache = make_pipe(), tmp_path / "cache"
    first, lm1, _ = run(path, cache)
    assert len(lm1.requests) == 1 and first.n == 5
    second, lm2, prog2 = run(path, cache)              # a new Program: the hit comes from disk
    assert lm2.requests == []
    assert second.outputs() == first.outputs() and type(second.n) is int
    assert second.trace[0].cache_hit and second.trace[0].raw == first.trace[0].raw
    assert second.lm_calls == 0
    assert prog2.stats.cache_hits == 1 and prog2.stats.calls == 0


def test_hit_within_one_program(make_pipe, tmp_path):
    lm = cached_lm()
    prog = pipec.load(make_pipe(), lm=lm, cache=tmp_path / "c")
    a, b = prog(q="abc"), prog(q="abc")
    prog.close()
    assert a == b and len(lm.requests) == 1 and b.trace[0].cache_hit


def test_an_unparseable_reply_is_not_replayed_from_the_cache(make_pipe, tmp_path):
    """A reply that did not parse may be a transient fault: a rerun asks again instead of replaying it."""
    path, cache = make_pipe(), tmp_path / "cache"
    first, lm1, _ = run(path, cache, lm=pipec.ScriptedLM(["many", {"n": 7}], cacheable=True))
    assert first.n == 7 and len(lm1.requests) == 2
    second, lm2, _ = run(path, cache, lm=pipec.ScriptedLM([{"n": 8}], cacheable=True))
    assert second.n == 8 and len(lm2.requests) == 1
    assert [r.cache_hit for r in second.trace] == [False]
    third, lm3, _ = run(path, cache, lm=pipec.ScriptedLM([], cacheable=True))
    assert third.n == 8 and lm3.requests == [] and [r.cache_hit for r in third.trace] == [True]


def test_cache_false_bypasses(make_pipe, tmp_path):
    path = make_pipe()
    lm = cached_lm()
    prog = pipec.load(path, lm=lm, cache=False)
    prog(q="abc")
    prog(q="abc")
    assert len(lm.requests) == 2
    assert prog.cache is None


def test_uncacheable_backend_is_never_cached(make_pipe, tmp_path):
    path, cache = make_pipe(), tmp_path / "cache"
    run(path, cache, lm=pipec.ScriptedLM(rule=count_rule, cacheable=False))
    _, lm2, _ = run(path, cache, lm=pipec.ScriptedLM(rule=count_rule, cacheable=False))
    assert len(lm2.requests) == 1


@pytest.mark.parametrize("change", [
    {"options": "temperature: 0.5"},
    {"options": "temperature: 0, max_tokens: 10"},
    {"instruction": "Count the letters, carefully."},
    {"out": "float"},                                    # a different reply schema
])
def test_request_changes_miss(make_pipe, tmp_path, change):
    cache = tmp_path / "cache"
    run(make_pipe(), cache)
    _, lm, _ = run(make_pipe(**change), cache)
    assert len(lm.requests) == 1


def test_different_input_or_model_misses(make_pipe, tmp_path):
    path, cache = make_pipe(), tmp_path / "cache"
    run(path, cache, q="abc")
    _, lm, _ = run(path, cache, q="abd")
    assert len(lm.requests) == 1
    _, lm, _ = run(path, cache, q="abc", lm=cached_lm(model="scripted/other"))
    assert len(lm.requests) == 1
    _, lm, _ = run(path, cache, q="abc")
    assert lm.requests == []


@pytest.mark.parametrize("garbage", ["not json", b"\x00\xffbinary", '{"v": 999, "text": "x"}', '{"v": 1}',
                                     '["a list"]', 42, '{"v": 1, "text": "{\\"n\\": 1}", "pt": "many"}'])
def test_corrupt_entry_is_a_miss(make_pipe, tmp_path, garbage):
    import diskcache
    path, cache = make_pipe(), tmp_path / "cache"
    run(path, cache, q="abc")
    with diskcache.Cache(str(cache)) as dc:
        keys = list(dc.iterkeys())
        assert len(keys) == 1
        dc.set(keys[0], garbage)
    pred, lm, _ = run(path, cache, q="abc")
    assert pred.ok and pred.n == 3
    assert len(lm.requests) == 1                       # a miss: asked again
    assert not pred.trace[0].cache_hit
    pred, lm, _ = run(path, cache, q="abc")            # and the entry was rewritten
    assert lm.requests == [] and pred.n == 3


def test_unusable_cache_directory_degrades_to_no_cache(make_pipe, tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    pred, lm, _ = run(make_pipe(), not_a_dir, q="abc")
    assert pred.ok and pred.n == 3 and len(lm.requests) == 1


def test_default_cache_dir_honours_env(make_pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("PIPEC_CACHE_DIR", str(tmp_path / "envcache"))
    run(make_pipe(), True)
    assert (tmp_path / "envcache").is_dir() and any((tmp_path / "envcache").rglob("*.db"))


# ---------------------------------------------------------------------------- secrets
SECRET = "sk-test-secret-123456789"

HOSTED = """
    lm remote = "openai/gpt-4o-mini" (api_key_env: "OPENAI_API_KEY", temperature: 0, client: "litellm"{extra})
    signature S {{ in q: str out n: int }}
    module m = Predict(S)
    pipeline p(q: str) -> (n) {{
        r = m(q: q)
        return n = r.n
    }}
"""


class FakeLiteLLM:
    """Stands in for litellm: records each call's kwargs; fails with the key in the message on 'fail'."""

    def __init__(self, reply=lambda kw: '{"n": 4}'):
        self.calls = []
        self.reply = reply

    def supports_response_schema(self, model):
        return True

    def completion_cost(self, completion_response):
        return 0.0001

    def _response(self, text):
        msg = types.SimpleNamespace(content=text)
        usage = types.SimpleNamespace(prompt_tokens=11, completion_tokens=3)
        return types.SimpleNamespace(choices=[types.SimpleNamespace(message=msg)], usage=usage)

    async def acompletion(self, **kw):
        self.calls.append(kw)
        if "fail" in kw["messages"][-1]["content"]:
            raise RuntimeError(f"Incorrect API key provided: {kw.get('api_key')}")
        return self._response(self.reply(kw))

    def completion(self, **kw):
        raise AssertionError("hosted calls go through acompletion")


def _files_containing(directory, needle: bytes):
    hits = []
    for root, _, files in os.walk(directory):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                if needle in fh.read():
                    hits.append(f)
    return hits


def test_api_key_never_reaches_cache_or_outputs(write_pipe, tmp_path, monkeypatch):
    from pipec.batch import run_jsonl
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    fake = FakeLiteLLM()
    monkeypatch.setattr(hosted, "_litellm", fake)
    cache = tmp_path / "cache"
    prog = pipec.load(write_pipe(HOSTED.format(extra="")), cache=cache)
    pred = prog(q="hello")
    assert pred.ok and pred.n == 4
    assert fake.calls[0]["api_key"] == SECRET           # the key did reach the provider...
    failed = prog(q="fail please")
    assert not failed.ok
    assert SECRET not in failed.error and "***" in failed.error     # ...but not the error message
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "again"}\n{"q": "fail again"}\n')
    run_jsonl(prog, rows, tmp_path / "out.jsonl", with_trace=True)
    prog.close()
    assert SECRET not in (tmp_path / "out.jsonl").read_text()
    assert any(cache.iterdir())
    assert _files_containing(cache, SECRET.encode()) == []
    pred2 = pipec.load(write_pipe(HOSTED.format(extra="")), cache=cache)(q="hello")
    assert pred2.trace[0].cache_hit and len(fake.calls) == 4         # hello, fail, again, fail again


def test_different_api_base_does_not_share_entries(write_pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    fake = FakeLiteLLM(reply=lambda kw: '{"n": %d}' % (1 if "one" in kw["api_base"] else 2))
    monkeypatch.setattr(hosted, "_litellm", fake)
    cache = tmp_path / "cache"
    # Through litellm (`client: "litellm"` in HOSTED), whose calls FakeLiteLLM records.
    src = HOSTED.replace('"openai/gpt-4o-mini"', '"hosted_vllm/gpt-4o-mini"')
    a = pipec.load(write_pipe(src.format(extra=', api_base: "http://one.invalid/v1"'), "a.pipe"), cache=cache)
    b = pipec.load(write_pipe(src.format(extra=', api_base: "http://two.invalid/v1"'), "b.pipe"), cache=cache)
    assert a(q="x").n == 1
    assert b(q="x").n == 2


# ---------------------------------------------------------------------------- processes
def _worker(path, cache_dir, start, shared, out):
    try:
        lm = pipec.ScriptedLM(rule=count_rule, cacheable=True)
        prog = pipec.load(path, lm=lm, cache=cache_dir)
        qs = ["p" * i for i in range(start, start + 15)] + ["shared" + "s" * i for i in range(shared)]
        preds = prog.run_batch([{"q": q} for q in qs], concurrency=4)
        prog.close()
        out.put((start, all(p.ok for p in preds), [p.n for p in preds]))
    except BaseException as err:                       # report, never hang the parent
        out.put((start, False, repr(err)))


def test_two_processes_share_a_cache_dir(make_pipe, tmp_path):
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:
        pytest.skip("needs fork")
    path, cache = make_pipe(), tmp_path / "cache"
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(path), str(cache), start, 15, out)) for start in (1, 100)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert all(ok for _, ok, _ in results), results
    # Every entry either process wrote is readable by a third one, with no LM call.
    lm = pipec.ScriptedLM(rule=count_rule, cacheable=True)
    prog = pipec.load(path, lm=lm, cache=cache)
    qs = ["p" * i for i in range(1, 16)] + ["p" * i for i in range(100, 115)] + ["shared" + "s" * i for i in range(15)]
    preds = prog.run_batch([{"q": q} for q in qs])
    prog.close()
    assert lm.requests == []
    assert [p.n for p in preds] == [len(q) for q in qs]
