"""The litellm path against a real loopback OpenAI-compatible server: retries, keys, concurrency."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import pipec
from openai_stub import StubServer

KEY = "sk-test-secret-key-0123456789abcdef"

PIPE = """
lm remote = "openai/stub-model" (api_base: "{base}", api_key_env: "PIPEC_TEST_KEY", num_retries: 3, timeout: 10,
                                 client: "litellm")

signature Classify {{
    "Classify the text."
    in  text: str
    out label: enum(positive, negative)
}}

module a = Predict(Classify)
module b = Predict(Classify)
module both = Predict(Classify)

pipeline diamond(text: str) -> (label) {{
    x = a(text: text)
    y = b(text: text)
    z = both(text: x.label + " " + y.label)
    return label = z.label
}}
"""


@pytest.fixture
def pipe_for(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPEC_TEST_KEY", KEY)

    def write(server: StubServer) -> Path:
        p = tmp_path / "remote.pipe"
        p.write_text(PIPE.format(base=server.base))
        return p
    return write


def test_rate_limit_and_server_error_are_retried_then_the_row_succeeds(pipe_for, tmp_path):
    with StubServer(default={"label": "positive"}) as server:
        server.script.extend([(429, {"retry-after": "0.2"}), (500, {})])
        prog = pipec.load(pipe_for(server), cache=tmp_path / "cache")
        start = time.perf_counter()
        pred = prog(text="great")
        assert pred.ok, pred.error
        assert pred.label == "positive"
        assert len(server.requests) == 5          # 2 faults + 3 module calls
        assert time.perf_counter() - start >= 0.2  # Retry-After was honored
        assert all({k.lower(): v for k, v in h.items()}.get("authorization") == f"Bearer {KEY}" for h in server.headers)


def test_persistent_failure_is_a_recorded_failure_naming_the_model_without_the_key(pipe_for):
    with StubServer(default=(500, {})) as server:
        prog = pipec.load(pipe_for(server), cache=False)
        for b in prog._backends.values():
            b.max_retries = 1
        pred = prog(text="meh")
        assert not pred.ok
        assert "openai/stub-model" in pred.error and "gave up after 2 attempts" in pred.error
        assert KEY not in pred.error


def test_independent_nodes_run_concurrently_over_http(pipe_for):
    with StubServer(default={"label": "negative"}, latency=1.0) as server:
        prog = pipec.load(pipe_for(server), cache=False)
        prog(text="warm up litellm")             # first call pays litellm's import and client setup
        start = time.perf_counter()
        pred = prog(text="bad")
        elapsed = time.perf_counter() - start
        assert pred.label == "negative"
        assert elapsed < 2.6, elapsed            # x and y overlap: about 2 latencies, not 3
        assert server.max_in_flight >= 2


def test_keys_never_reach_the_cache_or_the_trace(pipe_for, tmp_path):
    cache = tmp_path / "cache"
    with StubServer(default={"label": "positive"}) as server:
        prog = pipec.load(pipe_for(server), cache=cache)
        pred = prog(text="fine")
        prog.close()
    assert pred.ok
    assert KEY not in repr([r.to_dict() for r in pred.trace])
    for f in cache.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_batch_over_http_is_bounded_by_concurrency(pipe_for, tmp_path):
    with StubServer(default={"label": "positive"}, latency=0.05) as server:
        prog = pipec.load(pipe_for(server), cache=False)
        preds = prog.run_batch([{"text": f"row {i}"} for i in range(12)], concurrency=3)
        assert all(p.ok for p in preds)
        # each row has two concurrent nodes, so at most 2 x 3 requests are in flight
        assert 2 <= server.max_in_flight <= 6


def test_client_litellm_keeps_litellm_for_an_openai_compatible_lm(pipe_for):
    """The pipeline above declares `client: "litellm"`: its lm is HostedLM although the direct client
    serves `openai/...` at an api_base otherwise (tests/test_providers.py covers the routing)."""
    from pipec.lm.hosted import HostedLM
    with StubServer(default={"label": "positive"}) as server:
        prog = pipec.load(pipe_for(server), cache=False)
        assert all(isinstance(b, HostedLM) for b in prog._backends.values())
        assert prog(text="fine").ok
        assert len(server.requests) == 3


def test_the_cost_is_litellms_own_price_of_the_reply(monkeypatch):
    """litellm prices each reply as it returns it; pricing it a second time cost as much CPU as the
    rest of the client's work per call, which showed at high concurrency."""
    from types import SimpleNamespace

    import litellm

    from pipec.lm.hosted import HostedLM

    def never(**kw):
        raise AssertionError("priced twice")
    monkeypatch.setattr(litellm, "completion_cost", never)
    choice = SimpleNamespace(message=SimpleNamespace(content='{"label": "positive"}'), finish_reason="stop")
    usage = SimpleNamespace(prompt_tokens=12, completion_tokens=3)
    lm = HostedLM("openai/gpt-4o-mini")
    priced = SimpleNamespace(choices=[choice], usage=usage, _hidden_params={"response_cost": 0.0125})
    unpriced = SimpleNamespace(choices=[choice], usage=usage, _hidden_params={"response_cost": None})
    assert lm._reply(priced).cost == 0.0125
    reply = lm._reply(unpriced)
    assert (reply.cost, reply.text, reply.prompt_tokens, reply.completion_tokens) == (0.0, '{"label": "positive"}', 12, 3)
