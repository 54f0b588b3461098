"""Which hosted providers pipec's direct client (`openai_compat.py`) talks to, and where, with which key.

Most providers litellm knows speak OpenAI's `/chat/completions` with a bearer key; for them litellm
adds only client time (at concurrency 32 a batch through it needed about twice the wall time of a
bare HTTP client; see BENCHMARKS.md), so `backend_for` sends them to the direct client and keeps
litellm for the rest (Anthropic, Gemini, Bedrock, Vertex, Cohere, ...) and for any lm declared with
`client: "litellm"`.

What is decided where:
- at `load`, without importing litellm (start-up stays light): whether an id takes the direct path,
  from its provider prefix and the sets below;
- at the first call, from litellm's own knowledge: the provider's base URL (and the variable that
  overrides it, e.g. GROQ_API_BASE), the model name sent on the wire, how sampling options map to the
  provider's (`map_openai_params`: Mistral's `random_seed`, OpenAI's reasoning models'
  `max_completion_tokens`), whether the model takes a JSON schema, and its price;
- at every call: the key, from the provider's usual variable (or `api_key_env`), never stored.

The sets and the key-variable names are a table because litellm keeps that knowledge in code paths
that also read the keys; tests/test_providers.py checks them against litellm, provider by provider,
so an upgrade that adds a provider or renames a variable fails a test instead of drifting.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

# litellm providers whose chat endpoint is `{base}/chat/completions` with `Authorization: Bearer`;
# base URL and wire model come from `litellm.get_llm_provider`.
GENERIC = frozenset("""
    groq nvidia_nim cerebras baseten sambanova ai21_chat volcengine codestral mistral deepseek tencent
    deepinfra perplexity xinference xai zai together_ai fireworks_ai empower friendliai github litellm_proxy
    hosted_vllm llamafile lm_studio galadriel novita meta_llama publicai synthetic tensormesh apertis nano-gpt
    poe chutes parasail libertai featherless_ai nscale nebius dashscope qwencloud qwen_ai_platform modelscope
    v0 helicone morph lambda_ai inception hyperbolic wandb pinstripes darkbloom meta cognition cortecs scx-ai
    prism reka abliteration aihubmix assemblyai charity_engine crusoe empiriolabs gmi llamagate neosantara
    scaleway veniceai xiaomi_mimo
""".split())
# Resolved here: litellm resolves their URL and key inline in `completion`, not in `get_llm_provider`.
SPECIAL = frozenset({"openai", "azure", "openrouter", "ollama", "ollama_chat"})
DIRECT = GENERIC | SPECIAL

# Providers litellm calls OpenAI-compatible that stay on litellm, and why (checked complete by the tests).
VIA_LITELLM = {
    "anyscale": "retired; litellm no longer resolves it",
    "ai21": "litellm's legacy AI21 id (ai21_chat is the chat API)",
    "azure_ai": "URL and key header depend on the kind of Azure AI endpoint",
    "github_copilot": "OAuth device login",
    "chatgpt": "OAuth device login",
    "ragflow": "its own model-id format and URL",
    "cometapi": "its URL comes from its litellm config, not a base URL",
    "aiml": "litellm has no chat config for it",
    "docker_model_runner": "engine path in the URL",
    "moonshot": "litellm rewrites the request body",
    "vercel_ai_gateway": "litellm rewrites the request body",
    "edenai": "litellm rewrites the request body",
    "clarifai": "litellm rewrites the request body",
    "sail": "litellm rewrites the request body",
    "sarvam": "its own key header",
}

# Key variables where litellm's is not `<PROVIDER>_API_KEY`, in the order litellm reads them.
KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "azure": ("AZURE_OPENAI_API_KEY", "AZURE_API_KEY"),
    "openrouter": ("OPENROUTER_API_KEY", "OR_API_KEY"),
    "ollama": ("OLLAMA_API_KEY",),
    "ollama_chat": ("OLLAMA_API_KEY",),
    "together_ai": ("TOGETHER_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_TOKEN"),
    "friendliai": ("FRIENDLIAI_API_KEY", "FRIENDLI_TOKEN"),
    "ai21_chat": ("AI21_API_KEY",),
    "meta_llama": ("LLAMA_API_KEY",),
    "lambda_ai": ("LAMBDA_API_KEY",),
    "tensormesh": ("TENSORMESH_INFERENCE_API_KEY",),
    "apertis": ("STIMA_API_KEY",),
    "nano-gpt": ("NANOGPT_API_KEY",),
    "scx-ai": ("SCX_API_KEY",),
    "veniceai": ("VENICE_AI_API_KEY",),
    "scaleway": ("SCW_SECRET_KEY",),
}
# Servers people run themselves: a key is sent when its variable is set, and none is needed.
SELF_HOSTED = frozenset({"ollama", "ollama_chat", "hosted_vllm", "lm_studio", "llamafile", "xinference",
                         "litellm_proxy"})
# Where the base URL comes from when litellm's resolver does not say (variables read in this order).
_BASES = {
    "openai": (("OPENAI_BASE_URL", "OPENAI_API_BASE"), "https://api.openai.com/v1"),
    "openrouter": (("OPENROUTER_API_BASE",), "https://openrouter.ai/api/v1"),
    "ollama": (("OLLAMA_API_BASE",), "http://localhost:11434"),
    "ollama_chat": (("OLLAMA_API_BASE",), "http://localhost:11434"),
    "azure": (("AZURE_API_BASE",), None),
}


def provider_of(model: str) -> str:
    """The provider prefix of an lm id (`openai` for a bare model name, as litellm assumes).

    >>> provider_of("groq/llama-3.1-8b-instant"), provider_of("gpt-4o-mini")
    ('groq', 'openai')
    """
    return model.split("/", 1)[0] if "/" in model else "openai"


def is_direct(model: str) -> bool:
    """Whether the direct client serves this lm id (decided without importing litellm).

    >>> is_direct("groq/llama-3.1-8b-instant"), is_direct("azure/my-gpt4o"), is_direct("anthropic/claude-3-5-haiku")
    (True, True, False)
    """
    return provider_of(model) in DIRECT


def key_variables(provider: str) -> tuple[str, ...]:
    """The environment variables a provider's key is read from, first set one wins.

    >>> key_variables("groq"), key_variables("azure")
    (('GROQ_API_KEY',), ('AZURE_OPENAI_API_KEY', 'AZURE_API_KEY'))
    """
    if provider in KEY_VARIABLES:
        return KEY_VARIABLES[provider]
    return (provider.upper().replace("-", "_") + "_API_KEY",)


@dataclass
class Endpoint:
    """Where one lm's requests go: the full chat-completions URL, the model name sent, how the key is
    sent and read, and how sampling options are renamed for the provider.

    >>> e = resolve("openai/qwen2.5", "http://127.0.0.1:8000/v1")
    >>> e.url, e.wire_model, e.self_hosted, e.key_variables
    ('http://127.0.0.1:8000/v1/chat/completions', 'qwen2.5', True, ('OPENAI_API_KEY',))
    """

    provider: str
    wire_model: str
    url: str
    key_variables: tuple[str, ...]
    key_required: bool
    self_hosted: bool                     # structured `auto` is json_object, as llama.cpp and vLLM take it
    key_header: str = "authorization"     # Azure: "api-key"
    _config: object = field(default=None, repr=False)  # litellm's chat config, for `map_params`
    _mapped: dict = field(default_factory=dict, repr=False)

    def map_params(self, params: dict) -> dict:
        """Sampling options as the provider names them (litellm's `map_openai_params`), computed once per
        distinct set of options: a batch sends the same ones with every request.

        >>> resolve("openai/m", "http://h/v1").map_params({"temperature": 0, "seed": 3})
        {'temperature': 0, 'seed': 3}
        """
        if self._config is None or not params:
            return params
        key = json.dumps(params, sort_keys=True, default=str)
        got = self._mapped.get(key)
        if got is None:
            try:
                mapped = self._config.map_openai_params(dict(params), {}, self.wire_model, drop_params=False)
            except Exception as err:  # litellm's UnsupportedParamsError: the provider would refuse it
                from ..secrets import redact
                from .base import request_error
                said = redact(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")[:300]
                raise request_error(f"{self.provider}/{self.wire_model}", said, False) from None
            got = {k: v for k, v in mapped.items() if k != "extra_body"}
            got.update(mapped.get("extra_body") or {})     # what the OpenAI SDK does with extra_body
            if len(self._mapped) < 256:
                self._mapped[key] = got
        return got


class EndpointError(ValueError):
    """The provider's endpoint cannot be worked out (no base URL for a server only the user knows)."""


def resolve(model: str, api_base: str | None = None) -> Endpoint:
    """The endpoint of a direct-path lm id (see `is_direct`). `openai/...` with an `api_base` (a server
    of your own) needs nothing from litellm; every other id asks litellm once, at the first call.

    >>> resolve("ollama_chat/llama3.2", "http://gpu-box:11434").url
    'http://gpu-box:11434/v1/chat/completions'
    """
    provider = provider_of(model)
    name = model.split("/", 1)[1] if "/" in model else model
    keys = key_variables(provider)
    if provider == "openai" and api_base:
        return Endpoint(provider, name, _chat_url(api_base), keys, False, True)
    if provider not in DIRECT:
        raise EndpointError(f"{model}: provider {provider!r} is not served by the direct client")
    if provider in SPECIAL:
        variables, default = _BASES[provider]
        base = api_base or next((os.environ[v] for v in variables if os.environ.get(v)), default)
        if not base:
            raise EndpointError(f"{model}: no endpoint: set {' or '.join(variables)} or the lm's api_base")
        config = _chat_config(provider, name) if provider in ("openai", "azure", "openrouter") else None
        if provider == "azure":
            version = os.environ.get("AZURE_API_VERSION") or _litellm().AZURE_DEFAULT_API_VERSION
            url = f"{base.rstrip('/')}/openai/deployments/{name}/chat/completions?api-version={version}"
            return Endpoint(provider, name, url, keys, True, False, "api-key", config)
        if provider.startswith("ollama"):
            base = base.rstrip("/")
            return Endpoint(provider, name, _chat_url(base if base.endswith("/v1") else base + "/v1"), keys, False,
                            True)
        return Endpoint(provider, name, _chat_url(base), keys, True, False, _config=config)
    litellm = _litellm()
    wire, _provider, _key, base = litellm.get_llm_provider(model, api_base=api_base)
    del _key            # litellm reads the key with the URL; pipec reads it per call, never keeps it
    base = api_base or base
    if not base:
        raise EndpointError(f"{model}: no endpoint: set {provider.upper()}_API_BASE or the lm's api_base")
    if provider == "fireworks_ai":
        # Fireworks names models accounts/fireworks/models/<name>; litellm completes a short name.
        from litellm.llms.fireworks_ai.common_utils import resolve_fireworks_resource_name
        wire = resolve_fireworks_resource_name(wire)
    return Endpoint(provider, wire, _chat_url(base), keys, provider not in SELF_HOSTED, provider in SELF_HOSTED,
                    _config=_chat_config(provider, wire))


def _chat_url(base: str) -> str:
    return base.rstrip("/") + "/chat/completions"


def _chat_config(provider: str, model: str):
    """litellm's chat config for the provider (None when it has none): its parameter mapping."""
    try:
        from litellm.types.utils import LlmProviders
        from litellm.utils import ProviderConfigManager
        return ProviderConfigManager.get_provider_chat_config(model=model, provider=LlmProviders(provider))
    except Exception:  # noqa: BLE001 - no mapping known: options are sent as written
        return None


def _litellm():
    from .hosted import _lib
    return _lib()
