"""LM backends behind one interface: the embedded model, a direct OpenAI-compatible client, litellm, and a
scripted LM for tests."""
from __future__ import annotations

from .base import (FREE, SAMPLING, AuthLMError, BadRequestLMError, ContextWindowLMError, LMBackend, LMError, LMReply,
                   LMRequest, Price, TransientLMError)
from .providers import is_direct
from .scripted import ScriptedLM

DEFAULT_MODEL = "local/smollm2"


def backend_for(model: str, options: dict | None = None) -> LMBackend:
    """Build the backend for an LM id and its declared options: the embedded model for `local/...`, the
    direct client for OpenAI-compatible providers (`providers.is_direct`), litellm for the rest and for
    any lm declared with `client: "litellm"`.

    >>> backend_for("local/smollm2").model
    'local/smollm2'
    >>> [type(backend_for(m, o)).__name__ for m, o in [("groq/llama-3.1-8b-instant", {}),
    ...     ("anthropic/claude-3-5-haiku", {}), ("openai/gpt-4o-mini", {"client": "litellm"})]]
    ['OpenAICompatLM', 'HostedLM', 'HostedLM']
    """
    options = options or {}
    if options.get("api_key_env"):
        from ..secrets import declare_secret_env
        declare_secret_env(str(options["api_key_env"]))
    if model.startswith("local/"):
        from .local import LocalLM
        backend: LMBackend = LocalLM(model.split("/", 1)[1], n_ctx=int(options.get("n_ctx", 2048)),
                                     n_threads=int(options["n_threads"]) if "n_threads" in options else None,
                                     seed=int(options.get("seed", 0)))
        if options.get("structured") == "text":
            backend.structured = "text"
    elif options.get("client", "auto") != "litellm" and is_direct(model):
        # An OpenAI-compatible endpoint (a server of your own, OpenAI, Azure, Groq, Together, ...): a
        # direct, pooled client; litellm adds nothing here and costs throughput at high concurrency
        # (see BENCHMARKS.md). `client: "litellm"` keeps litellm for any lm.
        from .openai_compat import OpenAICompatLM
        backend = OpenAICompatLM.from_options(model, options)
    else:
        from .hosted import HostedLM
        backend = HostedLM(model, api_base=options.get("api_base"), api_key_env=options.get("api_key_env"),
                           timeout=float(options.get("timeout", 60.0)), num_retries=int(options.get("num_retries", 3)),
                           structured=str(options.get("structured", "auto")), rpm=options.get("rpm"))
    if options.get("cache") is False:
        backend.cacheable = False
    if "backoff" in options:
        backend.backoff = float(options["backoff"])
    if "input_price" in options or "output_price" in options:
        # The checker makes sure both are given; the lm's max_tokens bounds replies that name none.
        backend.declared_price = Price.per_million(options.get("input_price", 0), options.get("output_price", 0),
                                                   options.get("max_tokens"))
    return backend


__all__ = ["AuthLMError", "BadRequestLMError", "ContextWindowLMError", "LMBackend", "LMError", "LMReply", "LMRequest",
           "TransientLMError", "ScriptedLM", "backend_for", "DEFAULT_MODEL", "SAMPLING", "Price", "FREE"]
