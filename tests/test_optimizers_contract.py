"""The contract every optimizer the registry finds (`pipec.optimizers.optimizers()`) keeps:

- it returns parameters only for predictors the program has (a dict, or a list of dicts for an ensemble);
- it never makes more LM calls than the budget, and every call it makes is counted;
- the same seed gives the same result, byte for byte;
- it records at least one trial, and the reported score is what the compiled program really scores;
- demos come from the trainset, never from the valset it is scored on;
- unknown options are a clear error before any LM call, and its options are the ones the checker knows;
- it touches nothing of the compile session beyond the `pipec.session.Session` interface.
"""
from __future__ import annotations

import hashlib
import json

import pytest
from conftest import first_user_value

import pipec
from pipec.dataset import Example
from pipec.evaluate import evaluate
from pipec.metrics import Metric
from pipec.optimizers import get_optimizer, optimizers
from pipec.registry import catalogue
import pipec.optimizers as optimizers_pkg

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

CHAIN = """
    signature Extract { "Find the keyword." in text: str out keyword: str }
    signature Answer { "Answer from the keyword." in keyword: str out a: str }
    module first = Predict(Extract)
    module second = ChainOfThought(Answer)
    pipeline chain(text: str) -> (a) {
        k = first(text: text)
        r = second(keyword: k.keyword)
        return a = r.a
    }
"""
ROWS = [{"text": f"please handle {'easy' if i % 2 else 'hard'}{i}", "a": f"{'easy' if i % 2 else 'hard'}{i}"[::-1]}
        for i in range(16)]
TRAIN, VAL = ROWS[:10], ROWS[10:]


def has_demos(request) -> bool:
    return any(m["role"] == "assistant" for m in request.messages[1:-1])


def rule(request):
    """`first` finds the last word; `second` reverses it, zero-shot only for 'easy' words; instruction
    proposals (mipro) get a deterministic, prompt-dependent instruction."""
    props = (request.schema or {}).get("properties", {})
    if "instruction" in props:
        digest = hashlib.sha256(json.dumps(request.messages).encode()).hexdigest()[:6]
        return {"instruction": f"Reverse the keyword carefully ({digest})."}
    if "keyword" in props:
        word = first_user_value(request, "text").split()[-1]
        return {"keyword": word}
    kw = first_user_value(request, "keyword")
    ok = kw.startswith("easy") or has_demos(request)
    return {"reasoning": f"reverse {kw}", "a": kw[::-1] if ok else "?"}


NAMES = sorted(optimizers())


@pytest.fixture(params=NAMES)
def optimizer(request):
    return request.param


@pytest.fixture
def chain(write_pipe):
    return write_pipe(CHAIN, "chain.pipe")


# Small settings so every optimizer finishes fast on the toy task.
SMALL = {"mipro": {"trials": 4, "instructions": 2, "minibatch": 3}, "random_search": {"candidates": 3},
         "ensemble": {"size": 2}}


def small_options(name):
    spec = set(get_optimizer(name).options)
    return {k: v for k, v in SMALL.get(name, {}).items() if k in spec}


def compile_chain(path, name, *, lm=None, **kw):
    lm = lm or pipec.ScriptedLM(rule=rule)
    prog = pipec.load(path, lm=lm, cache=False)
    kw.setdefault("options", small_options(name))
    return prog.compile(TRAIN, VAL, "exact_match(a)", name, seed=kw.pop("seed", 0), **kw), lm


@pytest.fixture
def spy(monkeypatch):
    """Record what each optimizer's `optimize` returns."""
    seen = []
    real = optimizers_pkg.get_optimizer

    def get(name):
        cls = real(name)

        class Spy(cls):
            def optimize(self, session):
                out = super().optimize(session)
                seen.append(out)
                return out
        Spy.name = cls.name
        return Spy
    monkeypatch.setattr(optimizers_pkg, "get_optimizer", get)
    return seen


def session_interface() -> set[str]:
    """Every name the `Session` protocol declares: its attributes, properties and methods."""
    from pipec.session import Session
    names = set(getattr(Session, "__annotations__", {}))
    names |= {n for n, v in vars(Session).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    return names


class OnlyTheInterface:
    """A session that lets an optimizer use what `Session` declares and nothing else: reaching past it
    (the program, its graph, the config, another optimizer's internals through the session) fails."""

    def __init__(self, session, allowed: set[str], reached: list[str]):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_reached", reached)

    def __getattr__(self, name):
        if name not in self._allowed:
            self._reached.append(name)
            raise AttributeError(f"{name!r} is not part of pipec.session.Session")
        return getattr(self._session, name)

    def __setattr__(self, name, value):
        self._reached.append(f"{name} (written)")
        raise AttributeError(f"an optimizer may not set {name!r} on the session")


def members(params):
    return params if isinstance(params, list) else [params]


# ---------------------------------------------------------------------------- the contract
def test_uses_nothing_of_the_session_beyond_its_interface(chain, optimizer, monkeypatch):
    allowed, reached = session_interface(), []
    assert {"evaluate", "ask", "predictors", "valset", "record"} <= allowed     # the proxy reads the protocol
    real = optimizers_pkg.get_optimizer

    def get(name):
        cls = real(name)

        class Narrow(cls):
            def optimize(self, session):
                return super().optimize(OnlyTheInterface(session, allowed, reached))
        Narrow.name = cls.name
        return Narrow
    monkeypatch.setattr(optimizers_pkg, "get_optimizer", get)
    compiled, _ = compile_chain(chain, optimizer)
    assert not reached, f"{optimizer} reached past the Session interface: {sorted(set(reached))}"
    assert compiled.report.compiled_score is not None


def test_returns_params_only_for_existing_predictors(chain, optimizer, spy):
    compiled, _ = compile_chain(chain, optimizer)
    assert len(spy) == 1
    params, score = spy[0]
    assert score is None or 0.0 <= score <= 1.0
    sets = members(params)
    assert sets, "an optimizer must return at least one parameter set"
    for s in sets:
        assert set(s) <= {"first", "second"}, set(s)
        for state in s.values():
            assert isinstance(state.instruction, str) and state.instruction.strip()
            assert isinstance(state.demos, list)
    assert set(compiled.params()) == {"first", "second"}


@pytest.mark.parametrize("budget", [2, 7, 13, 30])
def test_respects_the_budget(chain, optimizer, budget):
    compiled, lm = compile_chain(chain, optimizer, budget=budget)
    assert len(lm.requests) <= budget
    assert compiled.report.lm_requests <= budget
    assert compiled(text="please handle easy7").ok               # still a runnable program


def test_counts_every_lm_call_it_makes(chain, optimizer):
    compiled, lm = compile_chain(chain, optimizer)
    assert compiled.report.lm_requests == len(lm.requests) > 0
    assert compiled.report.tokens > 0


def test_deterministic_for_a_seed(chain, optimizer, tmp_path):
    blobs = []
    for i in range(2):
        compiled, _ = compile_chain(chain, optimizer, seed=5)
        blobs.append(compiled.save(chain.parent / f"c{i}.json").read_bytes())
    assert blobs[0] == blobs[1]


def test_records_at_least_one_trial_and_reports_a_true_score(chain, optimizer):
    compiled, _ = compile_chain(chain, optimizer)
    r = compiled.report
    assert len(r.trials) >= 1
    assert [t.number for t in r.trials] == list(range(1, len(r.trials) + 1))
    assert r.baseline_score == 0.5                       # easy rows pass zero-shot
    assert r.compiled_score >= r.baseline_score
    fresh = evaluate(compiled, [Example(dict(x), f"row {i}") for i, x in enumerate(VAL)], Metric.parse("exact_match(a)"))
    assert fresh.score == pytest.approx(r.compiled_score)


def test_demos_come_from_the_trainset_only(chain, optimizer, spy):
    compile_chain(chain, optimizer)
    params, _ = spy[0]
    train_texts = {r["text"] for r in TRAIN}
    train_words = {t.split()[-1] for t in train_texts}
    for s in members(params):
        for name, state in s.items():
            pool = list(state.demos) + (list(state.knn.pool) if state.knn is not None else [])
            for d in pool:
                if "text" in d:
                    assert d["text"] in train_texts, (name, d)
                if "keyword" in d:
                    assert d["keyword"] in train_words, (name, d)


def test_unknown_options_are_a_clear_error_before_any_lm_call(chain, optimizer):
    lm = pipec.ScriptedLM(rule=rule)
    with pytest.raises(ValueError) as exc:
        compile_chain(chain, optimizer, lm=lm, options={"max_demoz": 2})
    msg = str(exc.value)
    assert f"unknown option 'max_demoz' for optimizer {optimizer}" in msg
    assert "did you mean 'max_demos'?" in msg or "known options:" in msg
    assert lm.requests == []


def test_options_match_what_the_checker_accepts(optimizer):
    """A compile block (and `--option`, and `compile(options=...)`) is checked against the checker's
    catalogue; the optimizer is built from its own options. Any difference in names, types, minimums or
    choices is a value the checker lets through that the optimizer cannot take, or the other way round."""
    spec, own = catalogue().optimizers[optimizer].options, get_optimizer(optimizer).options
    assert set(spec) == set(own)
    assert {k: (o.type, o.minimum, o.choices) for k, o in spec.items()} == \
        {k: (o.type, o.minimum, o.choices) for k, o in own.items()}


def test_every_spec_option_is_accepted(chain, optimizer):
    """Every option the checker accepts can be passed (with a value in range) without an error."""
    values = {"int": 2, "number": 0.5, "str": "x", "bool": True}
    spec = catalogue().optimizers[optimizer].options
    cls = get_optimizer(optimizer)
    accepted = {k: values.get(o.type, 2) for k, o in spec.items() if k in cls.options}
    cls(**accepted)                                     # does not raise


def test_every_file_is_one_optimizer_named_after_it_and_helpers_are_none():
    """The registry knows the names from the file names alone; that holds only while each file of
    optimizers/ is one optimizer of its own name, or a helper listed in HELPERS."""
    import importlib
    import pkgutil
    from pipec.optimizers import HELPERS, Optimizer, names
    for info in pkgutil.iter_modules(optimizers_pkg.__path__):
        mod = importlib.import_module(f"pipec.optimizers.{info.name}")
        own = [v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, Optimizer) and v.name
               and v.__module__ == mod.__name__]
        if info.name in HELPERS:
            assert not own, f"{info.name}.py is listed as a helper but defines {own}"
        else:
            assert [c.name for c in own] == [info.name], f"{info.name}.py must define one optimizer {info.name!r}"
    assert set(names()) == set(optimizers())


def test_checking_a_compile_block_imports_only_the_optimizer_it_names(write_pipe):
    import subprocess
    import sys
    path = write_pipe(CHAIN + '\ncompile chain { trainset = "t.jsonl" metric = exact_match(a) optimizer = labeled_fewshot }\n',
                      "lazy.pipe")
    (path.parent / "t.jsonl").write_text('{"text": "x", "a": "x"}\n')
    code = ("import sys, pipec; pipec.load(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('pipec.optimizers.')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['pipec.optimizers.base', 'pipec.optimizers.labeled_fewshot']"
