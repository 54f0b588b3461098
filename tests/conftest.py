"""Shared fixtures for the runtime, batch, cache, reply-parser and CLI tests.

Everything here is offline and fast: LMs are `pipec.ScriptedLM` (in-process) or `SlowLM`, a
non-inline subclass that sleeps on asyncio so that the executor's concurrency can be observed.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

import pipec

REPO = Path(__file__).resolve().parent.parent

# Artifacts that tests compile are recorded as trusted (see pipec.trust): in a store of the test
# session's own, never the user's. Set before any test runs, so subprocesses inherit it too.
_TRUST_DIR = tempfile.mkdtemp(prefix="pipec-test-trust-")
os.environ["PIPEC_TRUST_DIR"] = _TRUST_DIR

_tool_counter = itertools.count()


# Not autouse: other test files share this conftest. Ours opt in with
#     pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")
@pytest.fixture
def isolated_env(tmp_path_factory, monkeypatch):
    """Never touch the user's cache or color settings; never read real API keys."""
    monkeypatch.setenv("PIPEC_CACHE_DIR", str(tmp_path_factory.mktemp("default-cache")))
    monkeypatch.setenv("NO_COLOR", "1")
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def no_embedded_model(monkeypatch):
    """These tests are offline and fast: a test that reaches the embedded model is a test bug."""
    from pipec.lm import local

    def refuse(self):
        raise AssertionError("a unit test tried to load the embedded model; pass lm=ScriptedLM(...)")
    monkeypatch.setattr(local.LocalLM, "_llama", refuse)


@pytest.fixture
def write_pipe(tmp_path):
    """write_pipe(text, name="p.pipe") -> Path of a .pipe file in tmp_path (text is dedented)."""
    def write(text: str, name: str = "p.pipe") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).strip() + "\n", encoding="utf-8")
        return path
    return write


@pytest.fixture
def disk_fault(monkeypatch):
    """disk_fault(directory, method, fault): make `diskcache.Cache.<method>` call `fault(real, self, *args,
    **kwargs)` for the caches in `directory` only.

    The patch is process-wide, and a cache another test left open may still be writing on its I/O
    thread; scoping the fault keeps that cache's writes (and warnings) out of this test.
    """
    import diskcache

    def install(directory, method: str, fault):
        real = getattr(diskcache.Cache, method)
        mine = str(Path(directory))

        def patched(self, *args, **kwargs):
            # Before __init__ has run, the directory is its first argument.
            where = getattr(self, "_directory", None) or (args[0] if args else kwargs.get("directory", ""))
            if str(Path(where)) != mine:
                return real(self, *args, **kwargs)
            return fault(real, self, *args, **kwargs)
        monkeypatch.setattr(diskcache.Cache, method, patched)
    return install


@pytest.fixture
def tool_module(tmp_path):
    """tool_module(source) -> a unique importable module name, written beside the .pipe files."""
    names = []

    def make(source: str) -> str:
        name = f"pipec_test_tools_{next(_tool_counter)}_{abs(hash(str(tmp_path))) % 10**8}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        names.append(name)
        return name
    yield make
    for name in names:
        sys.modules.pop(name, None)


def first_user_value(request, field: str) -> str:
    """The value of `field: value` in the last user message that has it (demos come earlier)."""
    users = [m["content"] for m in request.messages if m["role"] == "user"]
    for content in reversed(users):
        for line in content.splitlines():
            if line.startswith(field + ": "):
                return line[len(field) + 2:]
    raise KeyError(field)


def system_of(request) -> str:
    return request.messages[0]["content"]


class SlowLM(pipec.ScriptedLM):
    """A non-inline scripted LM: each call sleeps `delay` seconds on asyncio and tracks how many
    calls are in flight at once (`max_in_flight`)."""

    inline = False

    def __init__(self, *args, delay: float = 0.2, delay_fn=None, **kw):
        super().__init__(*args, **kw)
        self.delay = delay
        self.delay_fn = delay_fn
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    async def acomplete(self, request):
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_fn(request) if self.delay_fn else self.delay)
            return self.complete(request)
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def slow_lm_cls():
    return SlowLM


# A diamond: a and b are independent, c reads both; plus typed outputs of every kind.
DIAMOND = """
    record Point { x: int  y: int  label: str? }
    signature Summ { "Summarize the text." in text: str out summary: str }
    signature Count { in text: str out n: int  out tags: list[str] }
    signature Judge {
        "Judge the summary."
        in summary: str
        in n: int
        out verdict: enum(good, bad, so_so)
        out score: float?
        out p: Point
        out flag: bool
    }
    module a = Predict(Summ)
    module b = ChainOfThought(Count)
    module c = Predict(Judge)
    pipeline diamond(text: str) -> (verdict, summary, n, tags, score, p, flag, why) {
        x = a(text: text)
        y = b(text: text)
        z = c(summary: x.summary, n: y.n)
        return verdict = z.verdict, summary = x.summary, n = y.n, tags = y.tags, score = z.score,
               p = z.p, flag = z.flag, why = y.reasoning
    }
"""

DIAMOND_REPLY = {"summary": "short", "reasoning": "counted words", "n": "3", "tags": "a, b",
                 "verdict": "So So", "score": None, "p": {"X": "1", "y": 2}, "flag": "yes"}


def diamond_rule(request):
    """Answer every module of DIAMOND from one reply object (extra keys are ignored by the parser)."""
    return dict(DIAMOND_REPLY)


@pytest.fixture
def diamond(write_pipe):
    return write_pipe(DIAMOND, "diamond.pipe")


# One module with an int output: a non-JSON reply cannot be taken as the answer.
COUNT = """
    signature S { "Count the letters." in q: str out n: int }
    module m = Predict(S)
    pipeline count(q: str) -> (n) {
        r = m(q: q)
        return n = r.n
    }
"""


def count_rule(request):
    """Reply with the length of the `q` input; q starting with 'bad' gets an unparseable reply."""
    q = first_user_value(request, "q")
    if q.startswith("bad"):
        return "I cannot count that."
    return {"n": len(q)}


@pytest.fixture
def count_pipe(write_pipe):
    return write_pipe(COUNT, "count.pipe")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a test imported the source folders by their own names (`compiler.cache_io`
    rather than `pipec.cache_io`): that is a second copy of the module, and a monkeypatch applied to
    it silently misses the code under test."""
    shutil.rmtree(_TRUST_DIR, ignore_errors=True)
    stray = sorted(m for m in sys.modules if m.split(".")[0] in ("compiler", "dsl", "optimizers"))
    if stray:
        print(f"\nERROR: tests imported source folders as top-level modules: {', '.join(stray)}; "
              "import them through pipec", file=sys.stderr)
        session.exitstatus = 1


def first_tries_unparsable(answer):
    """A ScriptedLM rule for worst-case bounds: every call's first try gets "{}" (which does not parse),
    and its retry (which repeats the call's first messages) gets `answer(request, n)`, `n` counting the
    distinct calls so far."""
    seen: set[str] = set()

    def rule(request):
        key = json.dumps(request.messages[:2])
        if key not in seen:
            seen.add(key)
            return "{}"
        return answer(request, len(seen))
    return rule


def run_example(example: str, tmp_path, *inputs: str, trace: bool = False) -> dict:
    """`pipec run examples/<example> --json [--trace] --input ...` on the embedded model, in a fresh
    cache: the run's JSON result (it must exit 0). Skipped without llama-cpp-python."""
    import subprocess
    import time
    pytest.importorskip("llama_cpp", reason="the embedded model needs pipec[local]")
    env = {**os.environ, "PIPEC_CACHE_DIR": str(tmp_path), "NO_COLOR": "1"}
    args = [sys.executable, "-m", "pipec", "run", f"examples/{example}", "--json", *(["--trace"] if trace else [])]
    for given in inputs:
        args += ["--input", given]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    print(f"{example} on the embedded model: {time.perf_counter() - start:.1f} s")
    return json.loads(proc.stdout)
