"""The embedded model's thread count: llama.cpp's threads spin while they wait for each other, so a
thread without a core of its own stalls the rest (on 2 cores with a second model process running, 2
threads took 0.8 s a call and up to 5.3 s, 1 thread 0.45 s: see `pipec.lm.local`). The default is
the cores not already busy; `n_threads` on the lm sets it. A fake llama_cpp.Llama records what it
was built with, so no model is loaded."""
from __future__ import annotations

import json

import pytest

import pipec
from pipec.lm import local

pytestmark = pytest.mark.usefixtures("isolated_env")
llama_cpp = pytest.importorskip("llama_cpp")

PIPE = """
lm small = "local/smollm2" (temperature: 0{opts})
signature S {{ "Label it." in text: str  out label: enum(a, b) }}
module m = Predict(S)
pipeline p(text: str) -> (label) {{ return label = m(text: text).label }}
"""


class FakeLlama:
    built: list[dict] = []

    def __init__(self, **kwargs):
        FakeLlama.built.append(kwargs)

    def create_chat_completion(self, **kwargs):
        return {"choices": [{"message": {"content": json.dumps({"label": "b"})}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3}}

    def close(self):
        pass


@pytest.fixture
def fake_llama(monkeypatch):
    FakeLlama.built = []
    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    monkeypatch.setattr(local, "_loaded", {})
    return FakeLlama


def threads_used(write_pipe, opts: str = "") -> int:
    pred = pipec.load(write_pipe(PIPE.format(opts=opts)), cache=False)(text="x")
    assert pred.ok and pred.label == "b", pred.error
    return FakeLlama.built[-1]["n_threads"]


def test_the_default_leaves_out_the_cores_other_processes_keep_busy(write_pipe, fake_llama, monkeypatch):
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(local.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert threads_used(write_pipe) == 2                       # a quiet machine: every core
    monkeypatch.setattr(local, "_loaded", {})
    monkeypatch.setattr(local.os, "getloadavg", lambda: (1.3, 1.0, 0.8))
    assert threads_used(write_pipe) == 1                       # another model process on one of the two


def test_n_threads_on_the_lm_sets_it_up_to_the_cores(write_pipe, fake_llama, monkeypatch):
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(local.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads_used(write_pipe, ", n_threads: 3") == 3
    monkeypatch.setattr(local, "_loaded", {})
    assert threads_used(write_pipe, ", n_threads: 100000") == 8     # a hostile file cannot start 100,000 threads


def test_n_threads_below_one_is_refused_when_loading(write_pipe):
    with pytest.raises(pipec.PipeError, match="n_threads"):
        pipec.load(write_pipe(PIPE.format(opts=", n_threads: 0")))
