"""Fallback lms and per-lm retry policy, against real loopback servers (`fault_server.py`).

`lm robust = fallback(primary, backup)` sends each call to `primary` (with its own retries and
backoff) and, when that fails in a way another LM might not, to `backup`. Two fault-injecting
OpenAI-compatible servers stand for the two providers, and every test counts the requests each one
received: what was retried, what fell back, what failed at once. The error classes are checked on
both clients pipec has for such a server: the direct one (`lm/openai_compat.py`, which `backend_for`
picks) and litellm's (`lm/hosted.py`, passed in with `lms=`).
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import pipec
from pipec.context import auth_failures
from pipec.lm.base import LMRequest, TransientLMError

from fault_server import FaultPlan, FaultServer, field_value, pipec_cli

pytestmark = pytest.mark.usefixtures("isolated_env")

PRIMARY_KEY = "sk-fb1-0123456789abcdefghij"
BACKUP_KEY = "sk-fb2-9876543210zyxwvutsr"

PIPE = """
lm primary = "openai/primary-model" (api_base: "{primary}", api_key_env: "PIPEC_PRIMARY_KEY", num_retries: {retries},
                                     backoff: {backoff}, timeout: 10)
lm backup  = "openai/backup-model" (api_base: "{backup}", api_key_env: "PIPEC_BACKUP_KEY", num_retries: 1, backoff: 0,
                                    timeout: 10)
lm robust  = fallback(primary, backup)

signature Parity {{
    "Say whether the number in the text is even or odd."
    in  text: str
    out parity: enum(even, odd)
}}

module m = Predict(Parity, lm: {lm})

pipeline parity(text: str) -> (parity) {{
    r = m(text: text)
    return parity = r.parity
}}
"""


def parity_of(text: str) -> str:
    return "even" if int(text.split()[-1]) % 2 == 0 else "odd"


def answer(body: dict):
    return {"parity": parity_of(field_value(body, "text"))}


def always(kind: str) -> FaultPlan:
    return FaultPlan(rate=1.0, kinds=(kind,), retry_after="0")


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("PIPEC_PRIMARY_KEY", PRIMARY_KEY)
    monkeypatch.setenv("PIPEC_BACKUP_KEY", BACKUP_KEY)


@pytest.fixture
def servers():
    """(primary, backup): a clean server each; a test sets `primary.plan` to the fault it wants."""
    with FaultServer(answer) as primary, FaultServer(answer) as backup:
        yield primary, backup


def write(folder: Path, primary: FaultServer, backup: FaultServer, retries=2, backoff=0, lm="robust") -> Path:
    path = folder / "parity.pipe"
    path.write_text(PIPE.format(primary=primary.base, backup=backup.base, retries=retries, backoff=backoff, lm=lm),
                    encoding="utf-8")
    return path


def load(path: Path, client: str, primary: FaultServer, retries=2, **kw):
    """The program with `primary` on the direct client (as declared) or on litellm's."""
    lms = None
    if client == "litellm":
        from pipec.lm.hosted import HostedLM
        lm = HostedLM("openai/primary-model", api_base=primary.base, api_key_env="PIPEC_PRIMARY_KEY", timeout=10,
                      num_retries=retries)
        lm.backoff = 0
        lms = {"primary": lm}
    return pipec.load(path, lms=lms, cache=kw.pop("cache", False), **kw)


CLIENTS = ["direct", "litellm"]


# ====================================================================== what is retried, what falls back
@pytest.mark.parametrize("client", CLIENTS)
def test_server_errors_are_retried_then_the_next_lm_answers(tmp_path, keys, servers, client):
    primary, backup = servers
    primary.plan = always("500")
    prog = load(write(tmp_path, primary, backup, retries=2), client, primary)
    pred = prog(text="row 7")
    assert pred.ok, pred.error
    assert pred.parity == "odd"
    assert primary.count() == 3 and backup.count() == 1          # the first and 2 retries, then the backup
    [rec] = pred.trace
    assert (rec.lm, rec.model, rec.error) == ("backup", "openai/backup-model", None)
    [failed] = rec.fell_back
    assert failed.startswith("primary: openai/primary-model: ") and "gave up after 3 attempts" in failed, failed


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("status", ["401", "403"])
def test_a_refused_key_is_not_retried_and_the_next_lm_answers(tmp_path, keys, servers, client, status):
    primary, backup = servers
    primary.plan = always(status)
    prog = load(write(tmp_path, primary, backup, retries=3), client, primary, retries=3)
    preds = prog.run_batch([{"text": f"row {i}"} for i in range(5)], concurrency=1)
    assert all(p.ok and p.parity == parity_of(f"row {i}") for i, p in enumerate(preds)), [p.error for p in preds]
    # One request, never retried; after it the key is known to be refused and the primary is skipped.
    assert primary.count() == 1 and backup.count() == 5
    for p in preds:
        [failed] = p.trace[0].fell_back
        assert failed.startswith("primary: openai/primary-model: authentication failed"), failed
        assert "PIPEC_PRIMARY_KEY" in failed and "not retried" in failed
        assert PRIMARY_KEY not in json.dumps(p.to_dict(trace=True))
    # The fallback answered, so no run or eval is failed for the refused key.
    assert auth_failures(prog._backends.values()) == []


def test_a_missing_key_sends_nothing_and_the_next_lm_answers(tmp_path, keys, servers, monkeypatch):
    primary, backup = servers
    monkeypatch.delenv("PIPEC_PRIMARY_KEY")
    pred = load(write(tmp_path, primary, backup, retries=3), "direct", primary)(text="row 2")
    assert pred.ok and pred.parity == "even", pred.error
    assert primary.count() == 0 and backup.count() == 1
    assert "environment variable PIPEC_PRIMARY_KEY is not set" in pred.trace[0].fell_back[0]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_bad_request_fails_at_once_without_retries_or_fallback(tmp_path, keys, servers, client):
    primary, backup = servers
    primary.plan = always("400")
    pred = load(write(tmp_path, primary, backup, retries=3), client, primary, retries=3)(text="row 1")
    assert not pred.ok
    assert primary.count() == 1 and backup.count() == 0
    assert pred.error.startswith("r (m): openai/primary-model: bad request (") and "'seed'" in pred.error, pred.error
    assert "not retried, and no fallback is tried" in pred.error
    assert pred.trace[0].lm == "primary" and pred.trace[0].fell_back == []


@pytest.mark.parametrize("client", CLIENTS)
def test_a_prompt_over_the_context_window_is_not_retried_and_falls_back(tmp_path, keys, servers, client):
    primary, backup = servers
    primary.plan = always("context_window")
    pred = load(write(tmp_path, primary, backup, retries=3), client, primary, retries=3)(text="row 4")
    assert pred.ok and pred.parity == "even", pred.error
    assert primary.count() == 1 and backup.count() == 1
    [failed] = pred.trace[0].fell_back
    assert failed.startswith("primary: openai/primary-model: the prompt does not fit its context window ("), failed
    assert "maximum context length is 2048" in failed and "not retried" in failed


@pytest.mark.parametrize("client", CLIENTS)
def test_without_a_fallback_a_context_window_error_fails_at_once(tmp_path, keys, servers, client):
    primary, backup = servers
    primary.plan = always("context_window")
    pred = load(write(tmp_path, primary, backup, retries=3, lm="primary"), client, primary, retries=3)(text="row 4")
    assert not pred.ok and primary.count() == 1 and backup.count() == 0
    assert "openai/primary-model: the prompt does not fit its context window" in pred.error, pred.error


def test_when_every_lm_fails_the_error_names_each_and_why(tmp_path, keys, servers):
    primary, backup = servers
    primary.plan, backup.plan = always("500"), always("503")
    pred = load(write(tmp_path, primary, backup, retries=1), "direct", primary)(text="row 5")
    assert not pred.ok
    assert primary.count() == 2 and backup.count() == 2              # each: the first attempt and its one retry
    assert pred.error.startswith("r (m): fallback robust: every lm it tries failed: primary: openai/primary-model: "
                                 "HTTP 500"), pred.error
    assert "; backup: openai/backup-model: HTTP 503" in pred.error and pred.error.count("gave up after 2 attempts") == 2


# ====================================================================== retry policy
def test_num_retries_and_backoff_are_honoured(tmp_path, keys, servers):
    """`num_retries: 2, backoff: 1`: three attempts, waiting at least 1 s and then 2 s (the default
    backoff, 0.5 s, would wait half that; jitter only lengthens a wait), then the backup. Lower bounds
    only: a busy machine is slower, never faster."""
    primary, backup = servers
    primary.plan = always("503")
    prog = load(write(tmp_path, primary, backup, retries=2, backoff=1), "direct", primary)
    start = time.perf_counter()
    pred = prog(text="row 9")
    elapsed = time.perf_counter() - start
    assert pred.ok and pred.parity == "odd", pred.error
    recs = primary.records()
    assert len(recs) == 3 and backup.count() == 1
    waits = [b.arrived - a.finished for a, b in zip(recs, recs[1:])]
    assert waits[0] >= 1.0 - 0.02 and waits[1] >= 2.0 - 0.02, waits
    assert elapsed < 60


def test_backoff_zero_retries_at_once(tmp_path, keys, servers):
    primary, backup = servers
    primary.plan = FaultPlan(script={0: "503", 1: "503"}, retry_after="0")
    pred = load(write(tmp_path, primary, backup, retries=2, backoff=0), "direct", primary)(text="row 3")
    assert pred.ok and primary.count() == 3 and backup.count() == 0       # the third attempt answered
    assert pred.trace[0].lm == "primary" and pred.trace[0].fell_back == []


# ====================================================================== trace, cache, budget, bound
def test_pipec_run_trace_names_the_lm_that_answered(tmp_path, keys, servers):
    primary, backup = servers
    primary.plan = always("500")
    path = write(tmp_path, primary, backup, retries=0)
    env = {"PIPEC_PRIMARY_KEY": PRIMARY_KEY, "PIPEC_BACKUP_KEY": BACKUP_KEY}
    run = pipec_cli("run", path, "--input", "text=row 3", "--trace", "--no-cache", env=env)
    assert run.returncode == 0, run.stderr
    assert "[1] node r (m), predictor m, lm backup (openai/backup-model): " in run.stderr, run.stderr
    assert "--- lm primary failed\nopenai/primary-model: HTTP 500 from " in run.stderr
    as_json = pipec_cli("run", path, "--input", "text=row 3", "--trace", "--json", "--no-cache", env=env)
    [rec] = json.loads(as_json.stdout)["trace"]
    assert rec["lm"] == "backup" and rec["model"] == "openai/backup-model" and rec["fell_back"][0].startswith("primary: ")
    assert PRIMARY_KEY not in run.stderr + as_json.stdout + as_json.stderr


def test_an_answer_is_cached_under_the_lm_that_gave_it(tmp_path, keys, servers):
    primary, backup = servers
    primary.plan = always("500")
    cache = tmp_path / "cache"
    path = write(tmp_path, primary, backup, retries=0)
    first = load(path, "direct", primary, cache=cache)(text="row 6")
    assert first.ok and (primary.count(), backup.count()) == (1, 1)
    # Again through the fallback: the backup's cached answer, without asking the primary first.
    again = load(path, "direct", primary, cache=cache)(text="row 6")
    assert again.ok and again.trace[0].cache_hit and again.trace[0].lm == "backup"
    # The backup asked directly the same question: the same entry, so it was the backup's answer.
    direct = pipec.load(write(tmp_path, primary, backup, retries=0, lm="backup"), cache=cache)(text="row 6")
    assert direct.ok and direct.trace[0].cache_hit
    # The primary asked directly was never answered: nothing of the backup's is served as its answer.
    primary.plan = FaultPlan()
    own = pipec.load(write(tmp_path, primary, backup, retries=0, lm="primary"), cache=cache)(text="row 6")
    assert own.ok and not own.trace[0].cache_hit
    assert (primary.count(), backup.count()) == (2, 1)


def test_a_spent_budget_is_not_passed_to_the_next_lm(write_pipe):
    from pipec.budget import Budget, BudgetExhausted
    from pipec.context import RowContext
    failing = pipec.ScriptedLM([TransientLMError("injected 503", retry_after=0)] * 3, model="openai/a")
    spare = pipec.ScriptedLM([{"a": "fine"}], model="openai/b")
    path = write_pipe('lm a = "openai/a"\nlm b = "openai/b"\nlm f = fallback(a, b)\n'
                      'signature S { in q: str out a: str }\nmodule m = Predict(S, lm: f)\n'
                      'pipeline p(q: str) -> (a) {\n r = m(q: q)\n return a = r.a\n}\n')
    prog = pipec.load(path, lms={"a": failing, "b": spare}, cache=False)
    row = RowContext(prog.runtime(budget=Budget(2)), inline=True)
    request = LMRequest([{"role": "user", "content": "q: x"}])
    # Raised as the budget's own error (a compile stops on it), not as one more lm that failed.
    with pytest.raises(BudgetExhausted):
        asyncio.run(row.node("r", "m").complete("m", "f", request))
    assert len(failing.requests) == 2 and spare.requests == []


def test_inspect_bounds_requests_with_retries_and_fallbacks(tmp_path, keys, servers):
    primary, backup = servers
    path = write(tmp_path, primary, backup, retries=3)
    from pipec.inspection import inspect_program
    report = inspect_program(pipec.load(path, cache=False))
    # 2 calls (one parse retry); each call at most 4 attempts on the primary, then 2 on the backup.
    assert (report["max_lm_calls"], report["max_lm_requests"]) == (2, 2 * (4 + 2))
    run = pipec_cli("inspect", path)
    assert run.returncode == 0, run.stderr
    assert "at most 2 LM calls per input" in run.stdout and "at most 12 LM requests per input" in run.stdout
    assert "[m] lm: fallback(primary, backup)" in run.stdout


# ====================================================================== the Python API: overrides, sampling
SAMPLED = """
lm a = "openai/a" (temperature: 0.7, max_tokens: 64, seed: 3)
lm b = "local/smollm2" (temperature: 0.2, max_tokens: 32)
lm inner = fallback(a, b) (temperature: 0)
lm outer = fallback(inner, c)
lm c = "openai/c"
signature S { in q: str out a: str }
module m = Predict(S, lm: outer, max_tokens: 16)
pipeline p(q: str) -> (a) {
    r = m(q: q)
    return a = r.a
}
"""


def test_overrides_reach_the_lms_a_fallback_tries_and_each_gets_its_own_sampling(write_pipe):
    fail = TransientLMError("injected 503", retry_after=0)
    a = pipec.ScriptedLM([fail], model="openai/a")
    b = pipec.ScriptedLM([fail], model="local/b", structured="text")
    c = pipec.ScriptedLM([{"a": "from c"}], model="openai/c")
    for lm in (a, b, c):
        lm.max_retries, lm.backoff = 0, 0
    prog = pipec.load(write_pipe(SAMPLED), lms={"a": a, "b": b, "c": c}, cache=False)
    pred = prog(q="x")
    assert pred.ok and pred.a == "from c", pred.error
    assert [r.split(":")[0] for r in pred.trace[0].fell_back] == ["a", "b"]      # nested fallbacks, in order
    # The lm's own sampling, under the fallback's (inner: temperature 0) and the module's (max_tokens 16).
    assert a.requests[0].params == {"temperature": 0, "max_tokens": 16, "seed": 3}
    assert b.requests[0].params == {"temperature": 0, "max_tokens": 16}
    assert c.requests[0].params == {"max_tokens": 16}
    assert a.requests[0].schema is not None and b.requests[0].schema is None       # b takes no schema
    # `lm=` replaces every lm, the fallbacks too; `lms=` may replace a fallback as a whole.
    whole = pipec.ScriptedLM([{"a": "one lm"}] * 2)
    assert pipec.load(write_pipe(SAMPLED), lm=whole, cache=False)(q="x").a == "one lm"
    assert pipec.load(write_pipe(SAMPLED), lms={"outer": whole}, cache=False)(q="x").a == "one lm"
