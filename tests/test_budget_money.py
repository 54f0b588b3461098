"""Issue 15, item 6: a compile's budget in dollars as well as LM calls.

`budget = usd(2.50)` (or `[300, usd(2.50)]`, `--budget-usd 2.50`, `compile(budget_usd=2.5)`) bounds
what the compile's LM calls cost. A call is admitted only if its worst case fits the money left; its
real cost is charged when it comes back; cache hits are free. Prices come from the lm declaration
(`input_price`, `output_price`), litellm's price map for hosted models (read offline), or are zero
for local models; a dollar budget over an LM nobody can price is an error before the compile starts.

Every LM here is a ScriptedLM with a declared price, or a hosted model whose requests never leave
the process, so the file runs offline in seconds.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SlowLM, first_user_value

import pipec
from pipec import cli
from pipec.lm import LMReply, LMRequest, Price

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

ROOT = Path(__file__).resolve().parent.parent

TOY = """
    lm paid = "acme/flip-model" (max_tokens: 20)
    signature Flip { "Reverse the word." in q: str out a: str }
    module m = Predict(Flip)
    pipeline toy(q: str) -> (a) {
        r = m(q: q)
        return a = r.a
    }
"""
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "lemon", "sugar",
         "house", "green", "bread", "chair", "water", "light"]
ROWS = [{"q": w, "a": w[::-1]} for w in WORDS]
TRAIN, VAL = ROWS[:10], ROWS[10:]
OPTIMIZERS = ["labeled_fewshot", "bootstrap_fewshot", "random_search", "knn_fewshot", "mipro"]
# A dear model, so that a handful of calls costs whole cents: $1,000 / $2,000 per million tokens.
DEAR = Price.per_million(1000.0, 2000.0)


def flip_rule(request):
    """Right only with demos in the prompt (so optimizers have something to find)."""
    q = first_user_value(request, "q")
    demos = any(m["role"] == "assistant" for m in request.messages[1:-1])
    return {"a": q[::-1] if demos else q}


class PricedLM(pipec.ScriptedLM):
    """A scripted LM that keeps, apart from pipec's own accounting, what each reply it sent cost."""

    def __init__(self, rule=flip_rule, price: Price | None = DEAR, **kw):
        super().__init__(rule=rule, price=price, **kw)
        self.costs: list[float] = []

    def complete(self, request: LMRequest) -> LMReply:
        reply = super().complete(request)
        self.costs.append(self._price.cost(reply.prompt_tokens, reply.completion_tokens) if self._price else 0.0)
        return reply


class SlowPricedLM(SlowLM):
    """A non-inline priced LM: rows run concurrently on asyncio, so admissions race."""

    def __init__(self, **kw):
        super().__init__(rule=flip_rule, price=DEAR, delay=0.01, **kw)
        self.costs: list[float] = []

    def complete(self, request):
        reply = super().complete(request)
        self.costs.append(DEAR.cost(reply.prompt_tokens, reply.completion_tokens))
        return reply


class WorstCaseSlowLM(SlowLM):
    """Every reply costs exactly its worst case (a prompt of one token per byte, a reply as long as
    max_tokens allows): the calls in flight together could overshoot unless each holds its worst case."""

    def __init__(self, **kw):
        super().__init__(rule=flip_rule, price=DEAR, delay=0.02, **kw)
        self.costs: list[float] = []

    def complete(self, request):
        from pipec.lm.base import prompt_bound
        reply = super().complete(request)
        reply = LMReply(reply.text, prompt_bound(request), request.params["max_tokens"])
        self.costs.append(DEAR.cost(reply.prompt_tokens, reply.completion_tokens))
        return reply


@pytest.fixture
def toy(write_pipe):
    return write_pipe(TOY, "toy.pipe")


def compile_toy(path, lm, optimizer="bootstrap_fewshot", **kw):
    prog = pipec.load(path, lm=lm, cache=kw.pop("cache", False))
    return prog.compile(TRAIN, VAL, "exact_match(a)", optimizer, **kw)


def main(*args):
    return cli.main([str(a) for a in args])


# ============================================================================ the syntax and its checks
def checked_budget(write_pipe, budget: str):
    """The compile block's budget as the compile reads it: (calls, dollars)."""
    path = write_pipe(TOY + f"""
        compile toy {{
            trainset = "train.jsonl"
            metric = exact_match(a)
            budget = {budget}
        }}
    """, "b.pipe")
    from pipec.settings import CompileConfig
    prog = pipec.load(path, lm=PricedLM(), cache=False)
    config = CompileConfig.for_program(prog)
    return config.budget, config.budget_usd


@pytest.mark.parametrize("text,bounds", [
    ("300", (300, None)),
    ("usd(2.50)", (None, 2.5)),
    ("usd(3)", (None, 3.0)),
    ("[300, usd(2.50)]", (300, 2.5)),
    ("[usd(0.25), 40]", (40, 0.25)),
])
def test_a_budget_is_calls_dollars_or_both(write_pipe, text, bounds):
    assert checked_budget(write_pipe, text) == bounds


@pytest.mark.parametrize("text,message,caret", [
    ("0", "setting 'budget' must be at least 1", "0"),
    ("-3", "setting 'budget' must be at least 1", "-3"),
    ("2.5", "setting 'budget' counts LM calls: a whole number, not 2.5", "2.5"),
    ('"$2.50"', "setting 'budget' must be a whole number of LM calls or usd(AMOUNT)", '"$2.50"'),
    ("usd(0)", "a dollar budget must be more than $0, not 0", "0"),
    ("usd(-1.5)", "a dollar budget must be more than $0, not -1.5", "-1.5"),
    ('usd("2.50")', "usd takes one amount in dollars", 'usd("2.50")'),
    ("usd()", "usd takes one amount in dollars", "usd()"),
    ("usd(1, 2)", "usd takes one amount in dollars", "usd(1, 2)"),
    ("usd(amount: 2)", "usd takes one amount in dollars", "usd(amount: 2)"),
    ("usd(true)", "usd takes one amount in dollars", "usd(true)"),
    ("eur(3)", "unknown budget unit 'eur'", "eur"),
    ("[]", "setting 'budget' is an empty list", "[]"),
    ("[300, 400]", "setting 'budget' gives LM calls twice", "400"),
    ("[usd(1), usd(2)]", "setting 'budget' gives dollars twice", "usd(2)"),
    ("[[300]]", "setting 'budget' must be a whole number of LM calls or usd(AMOUNT)", "[300]"),
    ("lots", "setting 'budget' must be a whole number of LM calls or usd(AMOUNT)", "lots"),
])
def test_a_bad_budget_is_a_checker_error_at_its_place(write_pipe, text, message, caret):
    path = write_pipe(TOY + f"""
        compile toy {{
            trainset = "train.jsonl"
            metric = exact_match(a)
            budget = {text}
        }}
    """, "b.pipe")
    with pytest.raises(pipec.PipeError) as exc:
        pipec.load(path, cache=False)
    err = str(exc.value)
    found = re.search(r"^(\S+):(\d+):(\d+): error: " + re.escape(message) + "$", err, re.M)
    assert found, err
    line = path.read_text().splitlines()[int(found.group(2)) - 1]
    col = int(found.group(3)) - 1
    assert found.group(1) == str(path) and line[col:col + len(caret)] == caret, (err, line)
    assert err.rstrip().endswith("1 error, 0 warnings"), err


def test_the_hints_say_how_to_write_dollars(write_pipe):
    for text, hint in (("2.5", "for dollars write usd(2.5)"), ('"$2.50"', "write usd(2.5), without quotes"),
                       ("usd(0)", "usd(0.50) allows fifty cents"), ("uds(2)", "did you mean 'usd'?")):
        path = write_pipe(TOY + f'compile toy {{ trainset = "t.jsonl" metric = exact_match(a) budget = {text} }}',
                          "h.pipe")
        with pytest.raises(pipec.PipeError, match=re.escape(hint)):
            pipec.load(path, cache=False)


@pytest.mark.parametrize("options,message", [
    ("input_price: 0.15", "lm paid declares input_price without output_price"),
    ("output_price: 0.6", "lm paid declares output_price without input_price"),
    ("input_price: -1, output_price: 0.6", "option 'input_price' of lm paid must be at least 0"),
    ('input_price: "cheap", output_price: 0.6', "option 'input_price' of lm paid must be a number"),
    ("input_price: 0.15, output_price: [1]", "option 'output_price' of lm paid must be a number"),
])
def test_a_declared_price_is_checked(write_pipe, options, message):
    path = write_pipe(TOY.replace("(max_tokens: 20)", f"(max_tokens: 20, {options})"), "p.pipe")
    with pytest.raises(pipec.PipeError) as exc:
        pipec.load(path, cache=False)
    assert re.search(rf"p\.pipe:1:\d+: error: {re.escape(message)}", str(exc.value)), str(exc.value)


def test_a_declared_price_is_what_the_lm_costs(write_pipe):
    path = write_pipe(TOY.replace("(max_tokens: 20)", "(max_tokens: 20, input_price: 0.15, output_price: 0.6)"))
    backend = pipec.load(path, cache=False).backend("paid")
    assert backend.price() == Price(0.15e-6, 0.6e-6, 20, "declared")


# ============================================================================ the bound is never exceeded
def unbounded_spend(toy, optimizer) -> float:
    lm = PricedLM()
    compile_toy(toy, lm, optimizer, seed=3)
    return sum(lm.costs)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_tight_dollar_budget_is_never_exceeded(toy, optimizer):
    full = unbounded_spend(toy, optimizer)
    for share in (0.05, 0.2, 0.5):
        usd = round(full * share, 4)
        lm = PricedLM()
        compiled = compile_toy(toy, lm, optimizer, seed=3, budget_usd=usd)
        paid = sum(lm.costs)
        assert paid <= usd, (optimizer, usd, paid)
        assert compiled.compile_result.spent == pytest.approx(paid)        # pipec's account agrees with ours
        assert compiled.report.budget_usd == usd
        assert set(compiled.params()) == {"m"}                              # a whole program all the same
        assert compiled.report.compiled_score >= compiled.report.baseline_score or \
            compiled.report.trials[-1].note.startswith("kept the uncompiled program")


def test_a_dollar_budget_that_affords_little_stops_the_compile_early(toy):
    lm = PricedLM()
    compiled = compile_toy(toy, lm, "random_search", seed=1, budget_usd=0.5)
    assert compiled.compile_result.spent == pytest.approx(sum(lm.costs))
    unbounded = PricedLM()
    compile_toy(toy, unbounded, "random_search", seed=1)
    assert 0 < len(lm.requests) < len(unbounded.requests)
    assert sum(lm.costs) <= 0.5 < sum(unbounded.costs)


def test_concurrent_calls_never_overshoot_together(toy):
    """Eight rows at once, each admitted against the money left minus what the others hold."""
    for usd in (0.1, 0.3, 0.45, 0.7):
        lm = SlowPricedLM()
        compiled = compile_toy(toy, lm, "labeled_fewshot", budget_usd=usd, concurrency=8)
        assert sum(lm.costs) <= usd, (usd, sum(lm.costs))
        assert compiled.compile_result.spent == pytest.approx(sum(lm.costs))


def test_calls_in_flight_hold_their_worst_case(toy):
    """When replies cost their worst case, eight concurrent admissions against the same money left
    would spend up to eight times it: each call holds its worst case until it is charged."""
    probe = WorstCaseSlowLM()
    compile_toy(toy, probe, "labeled_fewshot", concurrency=8, budget=1)
    one = probe.costs[0]
    for calls in (1.5, 2.5, 4.5):
        lm = WorstCaseSlowLM()
        compiled = compile_toy(toy, lm, "labeled_fewshot", budget_usd=round(one * calls, 6), concurrency=8)
        assert len(lm.requests) == int(calls) and sum(lm.costs) <= one * calls
        assert compiled.compile_result.spent == pytest.approx(sum(lm.costs))


def test_a_call_that_fits_once_the_calls_in_flight_are_charged_waits_for_them(toy):
    """Eight calls' worst cases do not fit $1.30 at once, but what they really cost does: calls wait
    for the ones in flight instead of failing their rows, and the compile is the unbounded one."""
    unbounded = SlowPricedLM()
    compile_toy(toy, unbounded, "labeled_fewshot", concurrency=8)
    worst = max(DEAR.worst_case(r) for r in unbounded.requests)
    assert 8 * worst > 1.3 > sum(unbounded.costs) + worst
    lm = SlowPricedLM()
    compiled = compile_toy(toy, lm, "labeled_fewshot", budget_usd=1.3, concurrency=8)
    assert lm.max_in_flight > 1 and len(lm.requests) == len(unbounded.requests)
    assert compiled.compile_result.spent == pytest.approx(sum(unbounded.costs))


# ============================================================================ both bounds: whichever comes first
def test_with_both_bounds_the_call_bound_can_stop_first(toy):
    lm = PricedLM()
    compiled = compile_toy(toy, lm, "bootstrap_fewshot", budget=12, budget_usd=1000.0)
    assert len(lm.requests) <= 12
    assert sum(lm.costs) < 1000.0 / 10           # the dollars were nowhere near the limit
    assert (compiled.report.budget, compiled.report.budget_usd) == (12, 1000.0)


def test_with_both_bounds_the_dollar_bound_can_stop_first(toy):
    lm = PricedLM()
    compiled = compile_toy(toy, lm, "bootstrap_fewshot", budget=10_000, budget_usd=0.4)
    assert sum(lm.costs) <= 0.4
    assert len(lm.requests) < 100                 # the calls were nowhere near the limit
    assert compiled.compile_result.stats.calls == len(lm.requests)


def test_a_flag_for_one_bound_keeps_the_files_other_bound(write_pipe):
    """`--budget 500` over a file's `[300, usd(2.50)]` must not lift the spending limit."""
    path = write_pipe(TOY + """
        compile toy { trainset = "t.jsonl" metric = exact_match(a) budget = [300, usd(2.50)] }
    """, "f.pipe")
    from pipec.settings import CompileConfig
    prog = pipec.load(path, lm=PricedLM(), cache=False)
    assert (CompileConfig.for_program(prog, budget=500).budget_usd) == 2.5
    config = CompileConfig.for_program(prog, budget_usd=1.0)
    assert (config.budget, config.budget_usd) == (300, 1.0)


# ============================================================================ cache hits are free
def test_cache_hits_cost_nothing_and_are_never_refused(toy, tmp_path):
    cache = tmp_path / "lm-cache"
    first = PricedLM(cacheable=True)
    warm = compile_toy(toy, first, "bootstrap_fewshot", seed=4, cache=str(cache), budget_usd=100.0)
    assert warm.compile_result.spent == pytest.approx(sum(first.costs)) and sum(first.costs) > 0
    # A budget below one call's worst case: every call would be refused, but every request is cached.
    again = PricedLM(cacheable=True)
    compiled = compile_toy(toy, again, "bootstrap_fewshot", seed=4, cache=str(cache), budget_usd=0.0001)
    assert again.requests == [] and compiled.compile_result.spent == 0
    assert not compiled.compile_result.cache_hit              # a new compile (its budget differs), all LM hits
    assert compiled.compile_result.stats.cache_hits > 0
    assert (compiled.report.baseline_score, compiled.report.compiled_score) == \
        (warm.report.baseline_score, warm.report.compiled_score)


# ============================================================================ progress and what the compile records
def test_the_progress_line_shows_the_spend_of_the_budget(toy, capsys):
    lm = PricedLM()
    compiled = compile_toy(toy, lm, "labeled_fewshot", budget_usd=2.5, progress=True)
    err = capsys.readouterr().err
    shown = re.findall(r"\$(\d+\.\d\d) of \$2\.50", err)
    assert shown, err
    assert float(shown[-1]) == pytest.approx(compiled.compile_result.spent, abs=0.005)
    assert all(float(a) <= float(b) for a, b in zip(shown, shown[1:]))       # the spend only grows


def test_without_a_dollar_budget_the_progress_line_is_as_before(toy, capsys):
    compile_toy(toy, PricedLM(), "labeled_fewshot", budget=50, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"\d+/50 LM calls \(0 cached\) \S+ tokens \$\d+\.\d{4}", err) and " of $" not in err


def test_the_artifact_records_the_dollar_bound_only_when_there_is_one(toy):
    with_usd = compile_toy(toy, PricedLM(), "labeled_fewshot", budget_usd=2.5).artifact
    without = compile_toy(toy, PricedLM(), "labeled_fewshot", budget=40).artifact
    assert json.loads(with_usd.dumps())["report"]["budget_usd"] == 2.5
    # An artifact without a dollar budget has the shape it had before dollar budgets, so the content
    # fingerprints of artifacts written then still verify.
    assert "budget_usd" not in json.loads(without.dumps())["report"]
    from pipec.artifact import read_artifact
    assert read_artifact(ROOT / "examples" / "intent.compiled.json").report.budget_usd is None


def test_the_html_report_shows_the_spend_next_to_the_calls(toy):
    from pipec.html_report import build_report
    compiled = compile_toy(toy, PricedLM(), "labeled_fewshot", budget=300, budget_usd=2.5)
    done = compiled.compile_result
    page = build_report(compiled, compile_stats=done.stats, compile_spent=done.spent)
    assert "300 calls · $2.50" in page
    spent = f"${done.spent:.4f} of $2.50" if done.spent < 1 else f"${done.spent:,.2f} of $2.50"
    assert spent in page, spent
    assert "spent" not in build_report(compiled)         # no compile stats, no spend card


# ============================================================================ a refusal is the call budget's refusal
def test_a_dollar_refusal_behaves_like_the_call_budgets(toy):
    """Evaluate marks the scoring incomplete, the proposer's ask says the budget is spent, the compile
    still returns a program no worse than the uncompiled one."""
    from pipec.budget import BudgetExhausted
    from pipec.optimize import open_session
    from pipec.settings import CompileConfig
    lm = PricedLM()
    prog = pipec.load(toy, lm=lm, cache=False)
    session = open_session(prog, CompileConfig(TRAIN, VAL, "exact_match(a)", budget_usd=0.3))
    result = session.evaluate(session.baseline())
    assert result.incomplete and 0 < len(lm.requests) < len(VAL)
    assert any(BudgetExhausted.MARK in (r.error or "") for r in result.rows)
    asked = len(lm.requests)
    answer = session.ask(LMRequest([{"role": "user", "content": "x" * 400}], params={"max_tokens": 200}))
    assert answer.budget_spent and answer.text is None and len(lm.requests) == asked
    assert session.out_of_budget
    # As with a call budget that runs out in the baseline: a compiled program all the same.
    compiled = compile_toy(toy, PricedLM(), "bootstrap_fewshot", budget_usd=0.3)
    assert set(compiled.params()) == {"m"} and 0.0 <= compiled.report.compiled_score <= 1.0


def test_a_timeout_is_charged_its_worst_case_a_refused_key_nothing():
    """The provider may have run a request whose reply never came; it never ran one it refused."""
    from pipec.aio import run_coroutine
    from pipec.budget import Budget
    from pipec.context import RowContext, Runtime
    from pipec.lm import AuthLMError, LMError, TransientLMError

    def timed_out(request):
        err = TransientLMError("acme: Timeout")
        err.may_be_billed = True
        return err

    request = LMRequest([{"role": "user", "content": "hello"}], params={"max_tokens": 10})
    worst = DEAR.worst_case(request)
    for rule, charged in ((timed_out, worst), (lambda r: AuthLMError("acme: no key", "ACME_KEY"), 0.0),
                          (lambda r: TransientLMError("acme: rate limited"), 0.0)):
        lm = pipec.ScriptedLM(rule=rule, price=DEAR)
        lm.max_retries = 0
        budget = Budget(None, usd=1.0)
        row = RowContext(Runtime({"x": lm}, None, budget=budget), inline=True)
        with pytest.raises(LMError):
            run_coroutine(row.node("n", "m").complete("m", "x", request))
        assert budget.spent == pytest.approx(charged) and budget.reserved == 0


# ============================================================================ prices: litellm's map, local, unknown
def test_litellm_prices_are_read_without_the_network():
    """In a fresh process whose sockets refuse to connect and whose environment does not ask litellm
    for its local map: importing litellm through pipec, and pricing a model, opens no connection."""
    probe = """
import json, socket
attempts = []
def refuse(*args, **kw):
    attempts.append(repr(args[:2]))
    raise OSError("no network in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from pipec.lm.hosted import HostedLM, list_price, _lib
price = HostedLM("openai/gpt-4o-mini").price()
entry = _lib().model_cost["gpt-4o-mini"]
print(json.dumps({"attempts": attempts, "input": price.input, "output": price.output, "max_output": price.max_output,
                  "map": [entry["input_cost_per_token"], entry["output_cost_per_token"]],
                  "unknown": list_price("acme/unheard-of") is None}))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["attempts"] == []
    assert [seen["input"], seen["output"]] == seen["map"] and seen["max_output"] > 0 and seen["unknown"]


@pytest.fixture
def offline_hosted(monkeypatch):
    """Hosted LMs answer from a rule in this process (litellm is only asked for prices), and any
    attempt to open a connection fails the test."""
    from pipec.lm.hosted import HostedLM
    from pipec.lm.openai_compat import OpenAICompatLM       # OpenAI-compatible providers' direct client
    opened = []

    def refuse(*args, **kw):
        opened.append(args[:2])
        raise OSError("no network in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    sent = []

    def complete(self, request):
        sent.append(request)
        text = json.dumps(flip_rule(request))
        return LMReply(text, prompt_tokens=100, completion_tokens=10)

    async def acomplete(self, request):
        return complete(self, request)
    for cls in (HostedLM, OpenAICompatLM):
        monkeypatch.setattr(cls, "complete", complete)
        monkeypatch.setattr(cls, "acomplete", acomplete)
    yield sent
    assert opened == []


def test_a_hosted_models_calls_are_charged_at_litellms_price(write_pipe, offline_hosted):
    from pipec.lm.hosted import list_price
    path = write_pipe(TOY.replace('"acme/flip-model"', '"openai/gpt-4o-mini"'), "hosted.pipe")
    prog = pipec.load(path, cache=False)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot", budget_usd=1.0)
    price = list_price("openai/gpt-4o-mini")
    assert offline_hosted and compiled.compile_result.stats.calls == len(offline_hosted)
    assert compiled.compile_result.spent == pytest.approx(len(offline_hosted) * price.cost(100, 10))
    assert compiled.report.cost == pytest.approx(compiled.compile_result.spent)


def test_a_hosted_models_price_runs_out_like_any_other(write_pipe, offline_hosted):
    path = write_pipe(TOY.replace('"acme/flip-model"', '"openai/gpt-4o-mini"'), "hosted.pipe")
    prog = pipec.load(path, cache=False)
    per_call = Price.per_million(0.15, 0.6).cost(100, 10)
    compiled = prog.compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot", budget_usd=per_call * 3.5)
    assert len(offline_hosted) <= 3 and compiled.compile_result.spent <= per_call * 3.5


def test_local_models_are_free_under_a_dollar_budget(write_pipe, monkeypatch):
    from pipec.lm.local import LocalLM
    monkeypatch.setattr(LocalLM, "complete", lambda self, request: LMReply(json.dumps(flip_rule(request)), 500, 50))
    path = write_pipe(TOY.replace('"acme/flip-model" (max_tokens: 20)', '"local/smollm2"'), "local.pipe")
    compiled = pipec.load(path, cache=False).compile(TRAIN, VAL, "exact_match(a)", "bootstrap_fewshot",
                                                      budget_usd=0.01)
    done = compiled.compile_result
    assert done.stats.calls > len(VAL) and done.spent == 0 and compiled.report.compiled_score == 1.0


def test_a_model_without_a_price_and_a_dollar_budget_is_an_error_before_any_call(write_pipe):
    from pipec.settings import SettingsError
    path = write_pipe(TOY, "unknown.pipe")
    prog = pipec.load(path, cache=False)                  # acme/flip-model: litellm has no price for it
    with pytest.raises(SettingsError) as exc:
        prog.compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot", budget_usd=2.5)
    err = exc.value.render()
    assert re.search(r"unknown\.pipe:1:4: error: the dollar budget \(\$2\.50\) cannot be enforced: no price is "
                     r"known for acme/flip-model, the pipeline's LM", err), err
    assert "declare its price on the lm, like `input_price: 0.15, output_price: 0.60`" in err
    # Without a dollar budget the same program compiles (a call budget needs no price).
    lm = pipec.ScriptedLM(rule=flip_rule, price=None)
    assert pipec.load(path, lm=lm, cache=False).compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot",
                                                        budget=40).report is not None


def test_a_scripted_lm_without_a_price_is_refused_the_same_way(toy):
    from pipec.settings import SettingsError
    lm = pipec.ScriptedLM(rule=flip_rule, price=None)
    with pytest.raises(SettingsError, match=r"toy\.pipe:1:4: error: the dollar budget \(\$1\.00\) cannot be enforced"):
        compile_toy(toy, lm, "labeled_fewshot", budget_usd=1.0)
    assert lm.requests == []


def test_a_priced_model_with_no_bound_on_its_replies_is_an_error(write_pipe):
    from pipec.settings import SettingsError
    path = write_pipe(TOY.replace("(max_tokens: 20)", "(input_price: 1, output_price: 2)"), "open.pipe")
    prog = pipec.load(path, lm=None, cache=False)
    with pytest.raises(SettingsError, match=r"open\.pipe:1:4: error: the dollar budget cannot bound a reply of "
                                            r"acme/flip-model, the pipeline's LM: nothing limits its length"):
        prog.compile(TRAIN, VAL, "exact_match(a)", "labeled_fewshot", budget_usd=1.0)


def test_a_teacher_named_by_id_without_a_price_is_named_at_its_flag(toy):
    from pipec.settings import SettingsError
    prog = pipec.load(toy, lm=PricedLM(), cache=False)
    with pytest.raises(SettingsError) as exc:
        prog.compile(TRAIN, VAL, "exact_match(a)", "bootstrap_fewshot", budget_usd=1.0, teacher="acme/big-teacher")
    assert "no price is known for acme/big-teacher, the teacher LM" in exc.value.render()


# ============================================================================ the command line
@pytest.fixture
def project(toy, tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAIN), encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in VAL), encoding="utf-8")
    toy.write_text(toy.read_text() + """
compile toy {
    trainset = "train.jsonl"
    valset = "dev.jsonl"
    metric = exact_match(a)
    optimizer = labeled_fewshot(max_labeled: 2)
}
""", encoding="utf-8")
    return toy


@pytest.fixture
def cli_lm(monkeypatch):
    lm = PricedLM()
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    return lm


@pytest.mark.parametrize("value,message", [
    ("0", "a dollar budget must be more than $0, not 0"),
    ("-1", "a dollar budget must be more than $0, not -1"),
    ("abc", "usd takes one amount in dollars"),
    ("true", "usd takes one amount in dollars"),
])
def test_a_bad_budget_usd_flag_is_a_usage_error_under_the_flag(project, cli_lm, capsys, value, message):
    assert main("compile", project, "--no-cache", "--budget-usd", value) == 2
    err = capsys.readouterr().err
    assert re.search(r"^command line:1:\d+: error: " + re.escape(message), err, re.M), err
    line, under = [ln for ln in err.splitlines() if ln.startswith((" 1 | ", "   | "))][:2]
    assert "--budget-usd" in line and line[under.index("^"):].startswith(value if value != "abc" else "abc"), err
    assert cli_lm.requests == []


def test_both_flags_compile_and_the_summary_says_what_was_spent(project, cli_lm, capsys):
    assert main("compile", project, "--no-cache", "--budget", "300", "--budget-usd", "2.5") == 0
    out = capsys.readouterr().out
    r = json.loads(project.with_name("toy.compiled.json").read_text())["report"]
    assert (r["budget"], r["budget_usd"]) == (300, 2.5)
    spent = re.search(r"LM calls made \(0 cache hits\), \$(\d+\.\d\d) spent of \$2\.50", out)
    assert spent, out
    assert float(spent.group(1)) == pytest.approx(sum(cli_lm.costs), abs=0.005) and sum(cli_lm.costs) <= 2.5


def test_the_budget_usd_flag_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main("compile", "--help")
    assert "--budget-usd DOLLARS" in capsys.readouterr().out
