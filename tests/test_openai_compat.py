"""The direct OpenAI-compatible backend against the loopback stub: body, keys, retries, errors, pooling."""
from __future__ import annotations

import time

import pytest

import pipec
from openai_stub import StubServer
from pipec.lm import LMError, LMRequest, TransientLMError
from pipec.lm.openai_compat import OpenAICompatLM

KEY = "sk-test-secret-key-0123456789abcdef"

PIPE = """
signature Classify {
    "Classify the text."
    in  text: str
    out label: enum(positive, negative)
}

module classify = Predict(Classify)

pipeline label(text: str) -> (label) {
    c = classify(text: text)
    return label = c.label
}
"""


@pytest.fixture
def pipe(tmp_path):
    p = tmp_path / "label.pipe"
    p.write_text(PIPE)
    return p


def backend(server: StubServer, **kw) -> OpenAICompatLM:
    kw.setdefault("api_key_env", "PIPEC_TEST_KEY")
    return OpenAICompatLM("openai/stub-model", server.base, **kw)


def request(schema=None, **params) -> LMRequest:
    return LMRequest([{"role": "user", "content": "great"}], schema, params)


def test_body_sampling_and_key_header(monkeypatch):
    monkeypatch.setenv("PIPEC_TEST_KEY", KEY)
    with StubServer(default={"label": "positive"}) as server:
        lm = backend(server)
        reply = lm.complete(request(temperature=0, max_tokens=16, seed=3))
        assert reply.text == '{"label": "positive"}'
        assert (reply.prompt_tokens, reply.completion_tokens) == (11, 5)
        body = server.requests[0]
        assert body["model"] == "stub-model"
        assert body["messages"] == [{"role": "user", "content": "great"}]
        assert (body["temperature"], body["max_tokens"], body["seed"]) == (0, 16, 3)
        assert "response_format" not in body                 # no schema asked for
        headers = {k.lower(): v for k, v in server.headers[0].items()}
        assert headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("mode, expected", [
    ("auto", {"type": "json_object", "schema": {"type": "object"}}),
    ("json_object", {"type": "json_object", "schema": {"type": "object"}}),
    ("json_schema", {"type": "json_schema", "json_schema": {"name": "reply", "schema": {"type": "object"},
                                                            "strict": False}}),
    ("text", None),
])
def test_structured_modes(mode, expected, monkeypatch):
    monkeypatch.setenv("PIPEC_TEST_KEY", KEY)
    with StubServer(default={"label": "positive"}) as server:
        backend(server, structured=mode).complete(request(schema={"type": "object"}))
        assert server.requests[0].get("response_format") == expected


def test_key_is_read_at_call_time_and_a_missing_one_is_named(monkeypatch):
    monkeypatch.delenv("PIPEC_TEST_KEY", raising=False)
    with StubServer(default={"label": "positive"}) as server:
        lm = backend(server)
        with pytest.raises(LMError, match="PIPEC_TEST_KEY is not set"):
            lm.complete(request())
        assert server.requests == []
        monkeypatch.setenv("PIPEC_TEST_KEY", KEY)
        assert lm.complete(request()).text


def test_rate_limit_and_server_error_are_retried_by_the_runtime(pipe, monkeypatch):
    monkeypatch.setenv("PIPEC_TEST_KEY", KEY)
    with StubServer(default={"label": "negative"}) as server:
        server.script.extend([(429, {"retry-after": "0.2"}), (503, {})])
        prog = pipec.load(pipe, lm=backend(server), cache=False)
        start = time.perf_counter()
        pred = prog(text="bad")
        assert pred.ok, pred.error
        assert pred.label == "negative"
        assert len(server.requests) == 3
        assert time.perf_counter() - start >= 0.2          # Retry-After honoured


def test_errors_name_the_model_never_the_key(pipe, monkeypatch):
    monkeypatch.setenv("PIPEC_TEST_KEY", KEY)
    with StubServer(default=(500, {})) as server:
        lm = backend(server, num_retries=1)
        with pytest.raises(TransientLMError) as err:
            lm.complete(request())
        assert "openai/stub-model" in str(err.value) and "HTTP 500" in str(err.value)
        pred = pipec.load(pipe, lm=lm, cache=False)(text="meh")
        assert not pred.ok
        assert "openai/stub-model" in pred.error and "gave up after 2 attempts" in pred.error
        assert KEY not in pred.error


def test_client_errors_are_not_retried(monkeypatch):
    monkeypatch.setenv("PIPEC_TEST_KEY", KEY)
    with StubServer(default=(400, {})) as server:
        with pytest.raises(LMError) as err:
            backend(server).complete(request())
        assert not isinstance(err.value, TransientLMError)
        assert len(server.requests) == 1


def test_unreachable_server_is_transient():
    lm = OpenAICompatLM("openai/nowhere", "http://127.0.0.1:9/v1", timeout=2)
    with pytest.raises(TransientLMError, match="openai/nowhere"):
        lm.complete(request())


def test_a_batch_reaches_its_concurrency_through_one_pool(pipe, monkeypatch):
    monkeypatch.setenv("PIPEC_TEST_KEY", KEY)
    with StubServer(default={"label": "positive"}, latency=0.5) as server:
        prog = pipec.load(pipe, lm=backend(server), cache=False)
        start = time.perf_counter()
        preds = prog.run_batch([{"text": f"row {i}"} for i in range(16)], concurrency=8)
        elapsed = time.perf_counter() - start
        assert all(p.ok for p in preds)
        assert 6 <= server.max_in_flight <= 8              # concurrent, and bounded by the batch
        assert elapsed < 2.5, elapsed                      # 2 waves of 0.5 s, not 16


def test_describe_matches_the_litellm_path_so_caches_carry_over(monkeypatch):
    from pipec.lm.hosted import HostedLM
    lm = OpenAICompatLM("openai/m", "http://127.0.0.1:8000/v1")
    assert lm.describe() == HostedLM("openai/m", api_base="http://127.0.0.1:8000/v1").describe()


def test_from_options():
    lm = OpenAICompatLM.from_options("openai/m", {"api_base": "http://h/v1/", "timeout": 5, "num_retries": 1,
                                                  "structured": "text", "api_key_env": "K"})
    assert (lm.url, lm.timeout, lm.max_retries, lm.structured, lm.api_key_env) == (
        "http://h/v1/chat/completions", 5.0, 1, "text", "K")
    with pytest.raises(ValueError):
        OpenAICompatLM("openai/m", "http://h/v1", structured="grammar")
