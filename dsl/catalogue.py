"""What the checker needs to know about things defined outside the language.

Module kinds, metrics and optimizers live in the compiler; the checker only needs their option
specs. The compiler builds a `Catalogue` from its registries and hands it to `check`, so `dsl`
imports nothing from the rest of pipec.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .types import Type


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option: its value type and a one-line doc.

    Types: str int float number bool list, and names of declarations: lm lms tool tools module modules;
    `budget` is the compile block's own (LM calls, dollars, or both).
    """

    type: str
    doc: str = ""
    choices: tuple = ()
    minimum: float | None = None


@dataclass(frozen=True, slots=True)
class KindSpec:
    """A module kind as the checker sees it.

    `extra_outputs` are fields the kind adds to its signature's outputs (ChainOfThought's reasoning);
    they can be read from a call's result like any other output.
    """

    name: str
    options: dict[str, OptionSpec]
    extra_outputs: tuple[tuple[str, Type, str], ...] = ()
    doc: str = ""
    # Kind-specific static checks: validate(module_decl, checked_program) -> [(message, hint), ...]
    validate: Callable | None = None
    # Fields a written demo (`demos: [...]`) gives besides the signature's (ChainOfThought's reasoning);
    # None when the kind takes no written demos (no predictor of it answers the signature directly).
    demo_fields: tuple[tuple[str, Type, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A metric or optimizer usable in a compile block: `name(fields..., option: value)`."""

    name: str
    options: dict[str, OptionSpec] = field(default_factory=dict)
    field_args: bool = False        # positional arguments name pipeline outputs
    doc: str = ""


# Options every `lm` declaration may carry. Keys are never written here: `api_key_env` names the
# environment variable that holds one, so a .pipe file can be shared and committed safely.
LM_OPTIONS: dict[str, OptionSpec] = {
    "temperature": OptionSpec("number", "sampling temperature", minimum=0),
    "max_tokens": OptionSpec("int", "upper bound on reply tokens", minimum=1),
    "top_p": OptionSpec("number", "nucleus sampling", minimum=0),
    "seed": OptionSpec("int", "sampling seed where the provider supports one"),
    "stop": OptionSpec("list", "stop sequences"),
    "api_base": OptionSpec("str", "base URL of an OpenAI-compatible server"),
    "api_key_env": OptionSpec("str", "name of the environment variable holding the API key"),
    "timeout": OptionSpec("number", "seconds before a request is abandoned and retried", minimum=0),
    "num_retries": OptionSpec("int", "retries after the first attempt, on timeouts, rate limits, server errors and "
                                     "dropped connections (never on a refused key, a bad request or a prompt over "
                                     "the context window)", minimum=0),
    "backoff": OptionSpec("number", "seconds before the first retry (default 0.5), doubled for each next one up to "
                                    "30 s, plus up to 25% jitter; a server's Retry-After wins", minimum=0),
    "structured": OptionSpec("str", "how to ask for structured output",
                             choices=("auto", "json_schema", "json_object", "text")),
    "cache": OptionSpec("bool", "whether replies are cached"),
    "client": OptionSpec("str", "how requests are sent: auto (OpenAI-compatible providers through pipec's direct "
                                "client, the rest through litellm) or litellm (always litellm)",
                         choices=("auto", "litellm")),
    "rpm": OptionSpec("int", "requests per minute across the process", minimum=1),
    "n_ctx": OptionSpec("int", "context window of the embedded model", minimum=256),
    "n_threads": OptionSpec("int", "threads of the embedded model, at most its cores (default: the cores not already busy, at most 4)",
                            minimum=1),
    "input_price": OptionSpec("number", "dollars per million prompt tokens (with output_price), for a dollar "
                                        "budget when litellm does not know the model", minimum=0),
    "output_price": OptionSpec("number", "dollars per million reply tokens (with input_price)", minimum=0),
}

# What a fallback lm (`lm robust = fallback(gpt, local) (...)`) may set: sampling, over each of its lms'
# own. Everything else (endpoint, key, retries, backoff, rate, prices) belongs to the lms it names, each
# tried with its own.
FALLBACK_OPTIONS: dict[str, OptionSpec] = {
    name: LM_OPTIONS[name] for name in ("temperature", "max_tokens", "top_p", "seed", "stop")}


@dataclass(slots=True)
class Catalogue:
    """Everything named from outside the language: module kinds, metrics, optimizers, tool loaders."""

    kinds: dict[str, KindSpec] = field(default_factory=dict)
    metrics: dict[str, FunctionSpec] = field(default_factory=dict)
    optimizers: dict[str, FunctionSpec] = field(default_factory=dict)
    tool_loaders: tuple[str, ...] = ("python",)
    compile_settings: dict[str, OptionSpec] = field(default_factory=lambda: {
        "trainset": OptionSpec("str", "JSONL or CSV file of training rows"),
        "valset": OptionSpec("str", "JSONL or CSV file of validation rows"),
        "metric": OptionSpec("metric", "how a prediction is scored"),
        "optimizer": OptionSpec("optimizer", "the search strategy"),
        "seed": OptionSpec("int", "seed for every random choice"),
        "budget": OptionSpec("budget", "most LM calls, dollars, or both: 300, usd(2.50), [300, usd(2.50)]"),
        "teacher": OptionSpec("lm", "LM that runs the program while bootstrapping demos"),
        "proposer": OptionSpec("lm", "LM that proposes instructions"),
        "concurrency": OptionSpec("int", "parallel evaluations", minimum=1),
        "max_calls_per_row": OptionSpec("int", "most LM calls one input may make, as `pipec inspect` bounds them: "
                                               "one_of alternatives that would exceed it are not considered", minimum=1),
    })
