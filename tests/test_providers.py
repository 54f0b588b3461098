"""Hosted OpenAI-compatible providers on the direct client: routing, URLs, key variables and headers,
prices, the `client: "litellm"` escape hatch, and the provider table checked against litellm's own
knowledge (so a litellm upgrade that adds a provider or renames a variable fails here)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pipec
from openai_stub import StubServer
from pipec.lm import AuthLMError, BadRequestLMError, LMRequest, backend_for
from pipec.lm import providers as P
from pipec.lm.hosted import HostedLM
from pipec.lm.openai_compat import OpenAICompatLM

KEY = "sk-test-secret-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent
# Variables that would point a provider elsewhere or lend it a key: cleared for every test.
ENV = ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY", "AZURE_API_BASE", "AZURE_API_VERSION", "AZURE_API_KEY",
       "AZURE_OPENAI_API_KEY", "GROQ_API_KEY", "GROQ_API_BASE", "TOGETHER_API_KEY", "TOGETHER_AI_API_KEY",
       "TOGETHERAI_API_KEY", "TOGETHER_AI_TOKEN", "MISTRAL_API_KEY", "OPENROUTER_API_KEY", "OR_API_KEY",
       "OPENROUTER_API_BASE", "OLLAMA_API_BASE", "OLLAMA_API_KEY", "HOSTED_VLLM_API_BASE", "DEEPSEEK_API_BASE")

PIPE = """
lm remote = "{model}" ({options})

signature Classify {{
    "Classify the text."
    in  text: str
    out label: enum(positive, negative)
}}

module classify = Predict(Classify)

pipeline label(text: str) -> (label) {{
    c = classify(text: text)
    return label = c.label
}}
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def pipe(tmp_path, model: str, options: str = "num_retries: 0") -> Path:
    path = tmp_path / "remote.pipe"
    path.write_text(PIPE.format(model=model, options=options))
    return path


def request(**params) -> LMRequest:
    return LMRequest([{"role": "user", "content": "great"}], None, params)


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


# ---------------------------------------------------------------------------- routing
@pytest.mark.parametrize("model", [
    "openai/gpt-4o-mini", "azure/my-gpt4o", "groq/llama-3.1-8b-instant", "together_ai/meta-llama/Llama-3-8b",
    "fireworks_ai/llama-v3p1-8b-instruct", "deepseek/deepseek-chat", "mistral/mistral-small-latest",
    "openrouter/openai/gpt-4o", "hosted_vllm/qwen2.5", "ollama/llama3.2", "ollama_chat/llama3.2", "xai/grok-2",
    "perplexity/sonar", "cerebras/llama3.1-8b", "deepinfra/meta-llama/Llama-3-8b", "nvidia_nim/meta/llama3"])
def test_openai_compatible_providers_take_the_direct_client(model):
    direct, hosted = backend_for(model, {}), backend_for(model, {"client": "litellm"})
    assert isinstance(direct, OpenAICompatLM) and isinstance(hosted, HostedLM)
    assert direct.describe() == hosted.describe() == model          # one cache identity: entries carry over


@pytest.mark.parametrize("model", ["anthropic/claude-3-5-haiku", "gemini/gemini-1.5-flash", "bedrock/anthropic.claude",
                                   "vertex_ai/gemini-pro", "cohere/command-r", "azure_ai/mistral-large",
                                   "github_copilot/gpt-4o"])
def test_other_providers_stay_on_litellm(model):
    assert isinstance(backend_for(model, {"api_base": "http://127.0.0.1:9"}), HostedLM)


@pytest.mark.parametrize("model, url, keys", [
    ("groq/llama-3.1-8b-instant", "https://api.groq.com/openai/v1/chat/completions", ("GROQ_API_KEY",)),
    ("together_ai/meta-llama/Llama-3-8b", "https://api.together.ai/v1/chat/completions",
     ("TOGETHER_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_TOKEN")),
    ("deepseek/deepseek-chat", "https://api.deepseek.com/beta/chat/completions", ("DEEPSEEK_API_KEY",)),
    ("mistral/mistral-small-latest", "https://api.mistral.ai/v1/chat/completions", ("MISTRAL_API_KEY",)),
    ("xai/grok-2", "https://api.x.ai/v1/chat/completions", ("XAI_API_KEY",)),
    ("fireworks_ai/llama-v3p1-8b-instruct", "https://api.fireworks.ai/inference/v1/chat/completions",
     ("FIREWORKS_AI_API_KEY",)),
    ("openrouter/openai/gpt-4o", "https://openrouter.ai/api/v1/chat/completions", ("OPENROUTER_API_KEY", "OR_API_KEY")),
    ("openai/gpt-4o-mini", "https://api.openai.com/v1/chat/completions", ("OPENAI_API_KEY",)),
    ("ollama_chat/llama3.2", "http://localhost:11434/v1/chat/completions", ("OLLAMA_API_KEY",)),
])
def test_endpoints_come_from_litellms_knowledge(model, url, keys):
    e = P.resolve(model)
    assert (e.url, e.key_variables, e.key_header) == (url, keys, "authorization")


def test_wire_models_are_litellms():
    assert P.resolve("fireworks_ai/llama-v3p1-8b-instruct").wire_model == \
        "accounts/fireworks/models/llama-v3p1-8b-instruct"
    assert P.resolve("openrouter/openai/gpt-4o").wire_model == "openai/gpt-4o"
    assert P.resolve("together_ai/meta-llama/Llama-3-8b").wire_model == "meta-llama/Llama-3-8b"


def test_a_server_only_the_user_knows_needs_a_base(monkeypatch):
    lm = backend_for("hosted_vllm/qwen2.5", {})
    with pytest.raises(pipec.lm.LMError, match="HOSTED_VLLM_API_BASE or the lm's api_base"):
        lm.complete(request())
    with pytest.raises(pipec.lm.LMError, match="AZURE_API_BASE or the lm's api_base"):
        backend_for("azure/dep", {}).complete(request())
    monkeypatch.setenv("HOSTED_VLLM_API_BASE", "http://gpu:8000/v1")
    assert P.resolve("hosted_vllm/qwen2.5").url == "http://gpu:8000/v1/chat/completions"


def test_resolution_is_lazy_load_and_help_import_no_litellm(tmp_path):
    """Routing is decided without litellm; it is asked only at the first call."""
    path = pipe(tmp_path, "groq/llama-3.1-8b-instant")
    probe = (f"import sys, pipec\nprog = pipec.load({str(path)!r}, cache=False)\n"
             "print(type(prog._backends['remote']).__name__, 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["OpenAICompatLM", "False"]


# ---------------------------------------------------------------------------- a real server on loopback
def test_groq_id_at_an_api_base_gets_groqs_key_as_a_bearer(tmp_path, monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    with StubServer(default={"label": "positive"}) as server:
        prog = pipec.load(pipe(tmp_path, "groq/bench-model", f'api_base: "{server.base}"'), cache=tmp_path / "c")
        pred = prog(text="great")
        assert pred.ok, pred.error
        assert prog(text="great").trace[0].cache_hit            # cached like any lm's replies
        assert server.paths == ["/v1/chat/completions"]
        assert server.requests[0]["model"] == "bench-model"
        assert lower(server.headers[0])["authorization"] == f"Bearer {KEY}"


def test_azure_deployment_url_api_version_and_api_key_header(tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_API_KEY", KEY)
    monkeypatch.setenv("AZURE_API_VERSION", "2024-10-21")
    with StubServer(default={"label": "negative"}) as server:
        monkeypatch.setenv("AZURE_API_BASE", server.root)
        pred = pipec.load(pipe(tmp_path, "azure/my-gpt4o"), cache=False)(text="bad")
        assert pred.ok, pred.error
        assert server.paths == ["/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"]
        headers = lower(server.headers[0])
        assert headers["api-key"] == KEY and "authorization" not in headers


def test_openai_without_api_base_follows_openai_base_url(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with StubServer(default={"label": "positive"}) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base)
        pred = pipec.load(pipe(tmp_path, "openai/gpt-4o-mini"), cache=False)(text="great")
        assert pred.ok, pred.error
        assert server.paths == ["/v1/chat/completions"] and server.requests[0]["model"] == "gpt-4o-mini"
        # litellm says gpt-4o-mini takes a JSON schema, so `auto` asks for one
        assert server.requests[0]["response_format"]["type"] == "json_schema"
        assert lower(server.headers[0])["authorization"] == f"Bearer {KEY}"
    with StubServer(default={"label": "positive"}) as server:      # the older variable litellm also reads
        monkeypatch.delenv("OPENAI_BASE_URL")
        monkeypatch.setenv("OPENAI_API_BASE", server.base)
        assert pipec.load(pipe(tmp_path, "openai/gpt-4o-mini"), cache=False)(text="great").ok
        assert len(server.requests) == 1


def test_sampling_options_are_renamed_as_the_provider_wants(monkeypatch):
    """Mistral takes `random_seed`, not `seed` (litellm's parameter mapping)."""
    monkeypatch.setenv("MISTRAL_API_KEY", KEY)
    with StubServer(default={"label": "positive"}) as server:
        lm = backend_for("mistral/mistral-small-latest", {"api_base": server.base})
        lm.complete(request(temperature=0, max_tokens=8, seed=7))
        body = server.requests[0]
        assert (body["random_seed"], body["temperature"], body["max_tokens"]) == (7, 0, 8) and "seed" not in body


def test_a_parameter_the_model_refuses_is_a_bad_request_without_a_request(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with StubServer(default={"label": "positive"}) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base)
        with pytest.raises(BadRequestLMError, match="o3-mini.*temperature"):
            backend_for("openai/o3-mini", {}).complete(request(temperature=0))
        assert server.requests == []


# ---------------------------------------------------------------------------- keys
def test_a_missing_key_names_the_providers_variable_and_sends_nothing(tmp_path):
    with StubServer(default={"label": "positive"}) as server:
        lm = backend_for("groq/llama-3.1-8b-instant", {"api_base": server.base})
        with pytest.raises(AuthLMError, match="GROQ_API_KEY is not set") as err:
            lm.complete(request())
        assert err.value.variable == "GROQ_API_KEY" and server.requests == []
        pred = pipec.load(pipe(tmp_path, "together_ai/x", f'api_base: "{server.base}"'), cache=False)(text="a")
        assert not pred.ok and "TOGETHER_API_KEY or TOGETHER_AI_API_KEY" in pred.error
        assert server.requests == []


def test_a_key_set_later_under_any_of_the_providers_spellings_is_tried(tmp_path, monkeypatch):
    """A missing key fails every later call at once until one of the provider's variables changes."""
    with StubServer(default={"label": "positive"}) as server:
        prog = pipec.load(pipe(tmp_path, "together_ai/x", f'api_base: "{server.base}"'), cache=False)
        assert not prog(text="a").ok and not prog(text="b").ok
        monkeypatch.setenv("TOGETHER_AI_TOKEN", KEY)            # the fourth spelling litellm reads
        pred = prog(text="c")
        assert pred.ok, pred.error
        assert len(server.requests) == 1 and lower(server.headers[0])["authorization"] == f"Bearer {KEY}"


def test_a_refused_key_names_the_variable_it_came_from(monkeypatch):
    monkeypatch.setenv("TOGETHERAI_API_KEY", KEY)        # litellm's third spelling
    with StubServer(default=(401, {})) as server:
        lm = backend_for("together_ai/x", {"api_base": server.base})
        with pytest.raises(AuthLMError) as err:
            lm.complete(request())
        assert err.value.variable == "TOGETHERAI_API_KEY" and "set TOGETHERAI_API_KEY" in str(err.value)
        assert KEY not in str(err.value)
        assert lower(server.headers[0])["authorization"] == f"Bearer {KEY}"


def test_api_key_env_wins_and_self_hosted_servers_need_no_key(monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", "sk-not-this-one-0123456789")
    monkeypatch.setenv("MY_GROQ", KEY)
    with StubServer(default={"label": "positive"}) as server:
        backend_for("groq/x", {"api_base": server.base, "api_key_env": "MY_GROQ"}).complete(request())
        backend_for("hosted_vllm/qwen", {"api_base": server.base}).complete(request())
        monkeypatch.setenv("OLLAMA_API_BASE", server.root)
        backend_for("ollama_chat/llama3.2", {}).complete(request())
        assert lower(server.headers[0])["authorization"] == f"Bearer {KEY}"
        assert "authorization" not in lower(server.headers[1]) and "authorization" not in lower(server.headers[2])
        assert server.paths[2] == "/v1/chat/completions" and server.requests[2]["model"] == "llama3.2"


# ---------------------------------------------------------------------------- cost and structured output
def test_a_direct_reply_is_priced_from_litellms_price_map(tmp_path, monkeypatch):
    from pipec.lm.hosted import list_price
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    price = list_price("openai/gpt-4o-mini")
    with StubServer(default={"label": "positive"}) as server:     # 11 prompt and 5 reply tokens
        monkeypatch.setenv("OPENAI_BASE_URL", server.base)
        prog = pipec.load(pipe(tmp_path, "openai/gpt-4o-mini"), cache=False)
        pred = prog(text="great")
        assert pred.ok, pred.error
        assert prog.stats.cost == pytest.approx(11 * price.input + 5 * price.output) and prog.stats.cost > 0
        declared = pipec.load(pipe(tmp_path, "openai/gpt-4o-mini", "input_price: 1000000, output_price: 2000000"),
                              cache=False)
        assert declared(text="great").ok
        assert declared.stats.cost == pytest.approx(11 * 1.0 + 5 * 2.0)


def test_structured_auto_follows_litellm_per_model():
    assert backend_for("openai/gpt-4o-mini", {}).structured == "json_schema"
    assert backend_for("groq/some-unknown-model", {}).structured == "text"
    assert backend_for("hosted_vllm/qwen", {}).structured == "json_object"      # a server of your own
    assert backend_for("openai/qwen", {"api_base": "http://127.0.0.1:9/v1"}).structured == "json_object"
    assert backend_for("groq/x", {"structured": "json_object"}).structured == "json_object"


# ---------------------------------------------------------------------------- the client option
def test_client_option_is_checked_statically(tmp_path):
    with pytest.raises(pipec.PipeError, match="option 'client' of lm remote must be one of: auto, litellm"):
        pipec.load(pipe(tmp_path, "groq/x", 'client: "fast"'), cache=False)
    prog = pipec.load(pipe(tmp_path, "groq/x", 'client: "litellm"'), cache=False)
    assert isinstance(prog._backends["remote"], HostedLM)


# ---------------------------------------------------------------------------- the table against litellm
def test_every_openai_compatible_provider_litellm_lists_is_routed_on_purpose():
    import litellm
    from litellm.llms.openai_like.json_loader import JSONProviderRegistry
    known = set(litellm.openai_compatible_providers) | set(JSONProviderRegistry.list_providers())
    unplaced = known - P.GENERIC - set(P.VIA_LITELLM)
    assert not unplaced, f"litellm lists OpenAI-compatible providers pipec does not place: {sorted(unplaced)}"
    assert not P.DIRECT & set(P.VIA_LITELLM)
    from litellm.types.utils import LlmProviders
    providers = {p.value for p in LlmProviders}
    gone = [n for n in P.DIRECT if n not in providers and not JSONProviderRegistry.exists(n)]
    assert not gone, f"providers litellm no longer knows: {gone}"


def test_key_variables_are_the_ones_litellm_reads(monkeypatch):
    """For each provider resolved through litellm, each variable in the table alone makes litellm
    find the key (what litellm's `get_llm_provider` reads, provider by provider)."""
    import litellm
    wrong = []
    for provider in sorted(P.GENERIC):
        names = P.key_variables(provider)
        for name in names:
            for other in names:
                monkeypatch.delenv(other, raising=False)
            monkeypatch.setenv(name, "sentinel-key-value")
            got = litellm.get_llm_provider(f"{provider}/m")[2]
            # A server of your own may take no key at all (litellm reads none for xinference).
            if got != "sentinel-key-value" and not (provider in P.SELF_HOSTED and got is None):
                wrong.append((provider, name))
        for other in names:
            monkeypatch.delenv(other, raising=False)
    assert not wrong, f"litellm reads another variable for: {wrong}"


@pytest.mark.parametrize("model, setup", [
    ("openrouter/openai/gpt-4o", {"OPENROUTER_API_BASE": "{base}", "OR_API_KEY": KEY}),
    ("azure/dep", {"AZURE_API_BASE": "{root}", "AZURE_API_VERSION": "2024-10-21", "AZURE_OPENAI_API_KEY": KEY}),
    ("openai/gpt-4o-mini", {"OPENAI_BASE_URL": "{base}", "OPENAI_API_KEY": KEY}),
    ("groq/llama-3.1-8b-instant", {"GROQ_API_BASE": "{base}", "GROQ_API_KEY": KEY}),
])
def test_the_direct_client_sends_what_litellm_sends(model, setup, monkeypatch):
    """The providers resolved in this module (not by litellm's resolver) checked against a real litellm
    call: same path and query, same key header, same model on the wire."""
    import litellm
    seen = {}
    for side in ("litellm", "direct"):
        with StubServer(default="hello") as server:
            for k, v in setup.items():
                monkeypatch.setenv(k, v.format(base=server.base, root=server.root))
            if side == "litellm":
                try:
                    litellm.completion(model=model, messages=[{"role": "user", "content": "hi"}], num_retries=0)
                except Exception:  # noqa: BLE001 - only the request matters (litellm 1.106 fails reading
                    pass           # groq's reply: "'ModelResponse' object has no attribute 'service_tier'")
            else:
                backend_for(model, {}).complete(LMRequest([{"role": "user", "content": "hi"}]))
            h = lower(server.headers[0])
            seen[side] = (server.paths[0], h.get("authorization"), h.get("api-key"), server.requests[0]["model"])
    assert seen["direct"] == seen["litellm"], json.dumps(seen)
