"""MIPRO: joint Bayesian search over every predictor's instruction and demo set (optuna TPE).

Three stages, after DSPy's MIPROv2:

1. Demo sets per predictor: always the empty one (for small models demos can hurt, and the search
   must be free to say so), labeled rows, bootstrapped sets of different seeds and sizes, and per-input
   nearest demos (knn: the k training rows most like each input; on a 7-label intent task they beat
   every fixed demo set by 25 points, and a search without them cannot find that).
2. Instruction candidates per predictor: the original instruction first, then proposals written by
   the proposer LM from a summary of the data, the signature and bootstrapped demos (`propose.py`).
   What the .pipe file pins is not searched: a pinned instruction or demo set is the only candidate.
3. TPE picks (instruction index, demo set index) for every predictor. A trial scores the choice on a
   minibatch of the valset drawn by seed, in two halves: the first half's score goes to a pruner, so
   hopeless trials stop early. Every few trials and at the end, the configuration with the best mean
   minibatch score that has no full score yet is scored on the whole valset. The result is the
   configuration with the best FULL valset score: minibatches only steer the search.

Stages 1 and 2 are stored in the optuna study's user attributes, and every score in its trials, so a
compile on a storage URL resumes where it stopped (finished trials count towards `trials`) and other
workers share the same candidates. What each trial and full scoring puts in the report is stored
with it, so `--finalize` reports the study's trials, whichever worker ran them.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from typing import TYPE_CHECKING

from pipec.session import KnnState, Mode, OptionSpec, fingerprint

from .base import Optimizer
from .bootstrap_fewshot import BootstrapFewShot
from .knn_fewshot import KNNFewShot
from .labeled_fewshot import LabeledFewShot
from .propose import Proposer, propose_instructions, summarize_data
from .study_storage import HEARTBEAT_SECONDS, fail_stale, heartbeat, make_storage, study_lock

if TYPE_CHECKING:
    from pipec.session import PredictorState

FULL_EVERY = 5                 # trials between full-valset scorings of the best minibatch configuration
SPLIT_AT = 4                   # minibatches this large are scored in two halves, so the pruner can stop early
PROPOSAL_SHARE = 4             # proposals may use at most 1/PROPOSAL_SHARE of the budget left when they start
SPACE_ATTR = "pipec:space"
FULL_ATTR = "pipec:full:"      # + configuration key -> full valset score
FULL_NOTE_ATTR = "pipec:full-note:"   # + configuration key -> {"after": finished trials, "note": ...} of a full scoring
RECORD_ATTR = "pipec:record"   # a trial's report line: {"score", "full", "note"}


class MIPRO(Optimizer):
    """compile block: `optimizer = mipro(trials: 12, instructions: 4, minibatch: 25, max_demos: 4, k: 3)`"""

    name = "mipro"
    doc = "joint TPE search over proposed instructions and demo sets (bootstrapped, labeled, per-input nearest), scored on minibatches"
    options = {**BootstrapFewShot.options,
               "trials": OptionSpec("int", "search trials (finished trials of a resumed study count)", minimum=1),
               "instructions": OptionSpec("int", "instruction candidates (and demo sets) per predictor, the "
                                                 "original instruction included", minimum=1),
               "minibatch": OptionSpec("int", "valset rows a trial is scored on", minimum=1),
               "k": OptionSpec("int", "demos per input of the nearest-demos candidate (0: none)", minimum=0)}
    defaults = {**BootstrapFewShot.defaults, "trials": 12, "instructions": 4, "minibatch": 25, "k": 3}
    shares_studies = True

    def optimize(self, session):
        optuna = _optuna()
        seed = self.opts.get("seed", session.seed)
        session.expect_trials(self.opts["trials"])
        study = open_study(optuna, session, self.space_settings(), seed)
        plan = Spend(session)
        mode = session.mode
        # One process builds the candidates; the others wait for them and reuse them.
        with study_lock(study, session.storage):
            space = Space.load(study, session, self.space_settings())
            if space is None:
                if mode == Mode.FINALIZE:
                    raise ValueError(f"study '{study.study_name}' has no candidates yet: run workers first")
                space = build_space(session, self.opts, seed, plan)
                study.set_user_attr(SPACE_ATTR, {"settings": self.space_settings(), **space.to_json()})
        search = Search(optuna, session, study, space, self.opts, seed, plan)
        if mode == Mode.WORKER:
            return search.work()
        if mode == Mode.FINALIZE:
            return search.finalize()
        return search.run()

    def space_settings(self) -> dict[str, Any]:
        """The settings that shape the candidates (everything but `trials`): a study's identity."""
        return {k: v for k, v in self.settings().items() if k != "trials"}


def _optuna():
    """optuna, imported on first use (never at `import pipec`) and quiet."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def study_name(session, space_settings: dict[str, Any], seed: int) -> str:
    """A name that changes with everything the candidates and scores depend on, except `trials`,
    so that asking for more trials resumes the same study.

    Example: `study_name(session, {"instructions": 4}, 0)` → 'pipec-mipro-intent-3f2a…'
    """
    who = session.identity
    digest = fingerprint(who.sources, who.pipeline, [e.values for e in session.trainset],
                         [e.values for e in session.valset], session.metric.text, space_settings, seed,
                         who.lms, who.teacher, who.proposer)
    return f"pipec-mipro-{who.pipeline}-{digest[:16]}"


def open_study(optuna, session, space_settings: dict[str, Any], seed: int):
    """An in-memory study, or one loaded or created in `config.storage` (a URL) to resume and share.

    Workers of one study seed their samplers differently (by process), or they would all propose
    the same configurations at once; a single compile stays deterministic for its seed.
    """
    name = session.study or study_name(session, space_settings, seed)
    sampler_seed = seed if session.mode == Mode.SINGLE else hash((seed, os.uname().nodename, os.getpid())) % (2 ** 31)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=4)
    # Prune only trials whose first half lands in the bottom quarter: minibatch halves are noisy.
    pruner = optuna.pruners.PercentilePruner(25.0, n_startup_trials=4, n_warmup_steps=0)
    storage = make_storage(optuna, session.storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # optuna's experimental-feature warnings are not the user's concern
        if session.mode == Mode.FINALIZE:
            try:
                return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
            except KeyError:
                raise ValueError(f"no study '{name}' in {session.storage}: run workers first") from None
        return optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                   direction="maximize", load_if_exists=session.storage is not None)


@dataclass
class Space:
    """The candidates: per predictor, instructions (index 0 the original) and demo sets (index 0 the
    uncompiled one: empty unless the .pipe file writes demos), then its per-input nearest demos, if
    any (`knn`: the `KnnState` as JSON; demo index `len(demo_sets[name])` stands for it)."""

    instructions: dict[str, list[str]]
    demo_sets: dict[str, list[list[dict]]]
    knn: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"instructions": self.instructions, "demo_sets": self.demo_sets, "knn": self.knn}

    @classmethod
    def load(cls, study, session, settings: dict[str, Any]) -> "Space | None":
        """The space stored in the study by an earlier run or another worker, if any."""
        stored = study.user_attrs.get(SPACE_ATTR)
        if stored is None:
            return None
        names = sorted(session.predictors())
        if stored.get("settings") != settings or sorted(stored.get("instructions", {})) != names:
            raise ValueError(f"optuna study '{study.study_name}' was made with other settings or predictors "
                             f"({stored.get('settings')}); name another study")
        return cls(stored["instructions"], stored["demo_sets"], stored.get("knn", {}))

    def distributions(self, optuna) -> dict[str, Any]:
        out = {}
        for name in sorted(self.instructions):
            out[f"{name}/instruction"] = optuna.distributions.CategoricalDistribution(
                list(range(len(self.instructions[name]))))
            choices = len(self.demo_sets[name]) + (name in self.knn)
            out[f"{name}/demos"] = optuna.distributions.CategoricalDistribution(list(range(choices)))
        return out

    def params(self, base: dict[str, PredictorState], config: dict[str, int]) -> dict[str, PredictorState]:
        """The predictor states a configuration stands for."""
        out = {}
        for name, st in base.items():
            if name not in self.instructions:
                out[name] = st
                continue
            instruction = self.instructions[name][config[f"{name}/instruction"]]
            index = config[f"{name}/demos"]
            if index == len(self.demo_sets[name]):
                knn = KnnState.model_validate(self.knn[name])
                out[name] = st.model_copy(update={"instruction": instruction, "demos": [], "knn": knn})
            else:
                out[name] = st.model_copy(update={"instruction": instruction, "demos": self.demo_sets[name][index],
                                                  "knn": None})
        return out

    def describe(self, config: dict[str, int]) -> str:
        """A short note for the report, e.g. 'classify: instruction 2, 3 demos'."""
        parts = []
        for name in sorted(self.instructions):
            index = config[f"{name}/demos"]
            if index == len(self.demo_sets[name]):
                shown = f"{self.knn[name]['k']} nearest demos per input"
            else:
                demos = len(self.demo_sets[name][index])
                shown = f"{demos} demo{'s' * (demos != 1)}"
            parts.append(f"{name}: instruction {config[f'{name}/instruction']}, {shown}")
        return "; ".join(parts)

    def baseline_config(self) -> dict[str, int]:
        return {k: 0 for name in sorted(self.instructions) for k in (f"{name}/instruction", f"{name}/demos")}


def config_key(config: dict[str, int]) -> str:
    """A configuration as a stable string (dict keys of stored full scores).

    >>> config_key({"b/demos": 1, "a/instruction": 0})
    'a/instruction=0,b/demos=1'
    """
    return ",".join(f"{k}={config[k]}" for k in sorted(config))


class Spend:
    """Budget planning: an estimate of LM calls per valset row, so the search keeps enough budget
    for the final full-valset scoring instead of running out in the middle of it."""

    def __init__(self, session):
        self.session = session
        # At least one call per module call; `observe` raises the estimate with what evaluations cost.
        self.floor = max(1, session.module_calls)
        self.calls = 0
        self.rows = 0

    def per_row(self) -> float:
        observed = self.calls / self.rows if self.rows else 0.0
        return max(float(self.floor), observed)

    def observe(self, calls: int, rows: int) -> None:
        self.calls += calls
        self.rows += rows

    def affords(self, rows: int) -> bool:
        """Whether scoring `rows` more rows (estimated) fits in what is left of the budget."""
        remaining = self.session.calls_left
        return remaining is None or remaining >= math.ceil(self.per_row() * rows)


def build_space(session, opts: dict[str, Any], seed: int, plan: Spend) -> Space:
    """Demo sets first (proposals are grounded in them), then instruction candidates."""
    session.phase("demo sets")
    demo_sets = build_demo_sets(session, opts, seed, plan)
    knn = build_knn(session, opts, plan) if opts["k"] else {}
    session.phase("proposing")
    instructions = build_instructions(session, opts["instructions"], demo_sets, seed)
    return Space(instructions, demo_sets, knn)


def build_demo_sets(session, opts: dict[str, Any], seed: int, plan: Spend) -> dict[str, list[list[dict]]]:
    """Per predictor: the uncompiled demos (none, unless the .pipe file writes some), the empty set, a
    labeled set, and bootstrapped sets of different seeds and sizes. A predictor whose demos the file
    pins has its written demos as its only set.

    Bootstrapping stops early when the rest of the budget is needed to score trials and the winner.
    """
    views = session.predictors()
    names = sorted(views)
    base = session.baseline()
    # Index 0 is the uncompiled program's, so the all-zeros configuration is the baseline the compile scored.
    sets: dict[str, list[list[dict]]] = {n: [list(base[n].demos)] for n in names}
    for n in names:
        if [] not in sets[n] and "demos" not in views[n].pinned:
            sets[n].append([])

    def add(params):
        for n in names:
            demos = list(params[n].demos)
            if demos and demos not in sets[n] and "demos" not in views[n].pinned:
                sets[n].append(demos)

    if opts["max_labeled"] > 0:
        add(LabeledFewShot(max_labeled=opts["max_labeled"]).labeled(session))
    if opts["max_demos"] > 0:
        boot = BootstrapFewShot(**{k: v for k, v in opts.items() if k in BootstrapFewShot.options})
        reserve = len(session.valset) + 2 * min(opts["minibatch"], len(session.valset))
        for i in range(max(1, opts["instructions"] - 2)):
            if session.out_of_budget or not plan.affords(reserve + len(session.trainset)):
                break
            rng = session.rng(f"mipro:{seed}:demos:{i}")
            size = opts["max_demos"] if i == 0 else rng.randint(1, opts["max_demos"])
            add(boot.bootstrap(session, rng, max_demos=size, max_labeled=size))
    return sets


def build_knn(session, opts: dict[str, Any], plan: Spend) -> dict[str, dict[str, Any]]:
    """Per predictor, its per-input nearest demos (`KnnState` as JSON), as `knn_fewshot` builds them:
    a pool of labeled training rows, or of bootstrapped traces for a predictor whose fields the rows do
    not label. Those teacher runs are spent only if the budget leaves enough to score trials and the
    winner; a predictor whose demos the file pins has none.

    Labeled pools cost no LM call, so a budget that paid for nothing else still gets the candidate."""
    views = session.predictors()
    labeled = LabeledFewShot(max_labeled=1).labeled(session)
    needs_teacher = any(not labeled[n].demos for n in views if "demos" not in views[n].pinned)
    reserve = len(session.valset) + 2 * min(opts["minibatch"], len(session.valset))
    if needs_teacher and (session.out_of_budget or not plan.affords(reserve + len(session.trainset))):
        return {}
    params = KNNFewShot(k=opts["k"]).knn_params(session)
    return {n: params[n].knn.model_dump() for n in sorted(views) if params[n].knn is not None}


def build_instructions(session, count: int, demo_sets: dict[str, list[list[dict]]], seed: int) -> dict[str, list[str]]:
    """Per predictor: the original instruction, then up to `count - 1` distinct proposals (none for an
    instruction the .pipe file pins: its proposals would cost calls and never be used)."""
    base = session.baseline()
    predictors = session.predictors()
    remaining = session.calls_left
    proposer = Proposer(session, calls=None if remaining is None else remaining // PROPOSAL_SHARE)
    fields = list(session.input_names) + list(session.metric.fields)
    summary = summarize_data(session.trainset, fields)
    out = {}
    for name in sorted(predictors):
        rng = session.rng(f"mipro:{seed}:propose:{name}")
        if "instruction" in predictors[name].pinned:
            out[name] = [base[name].instruction]
            continue
        out[name] = propose_instructions(predictors[name], base[name].instruction, count, demo_sets[name],
                                         summary, rng, proposer)
    return out


class Search:
    """The TPE loop over configurations, with minibatch trials and periodic full-valset scoring."""

    def __init__(self, optuna, session, study, space: Space, opts: dict[str, Any], seed: int, plan: Spend):
        self.optuna, self.session, self.study, self.space = optuna, session, study, space
        self.trials = opts["trials"]
        self.seed = seed
        self.plan = plan
        self.size = min(opts["minibatch"], len(session.valset))
        self.whole = self.size >= len(session.valset)       # a "minibatch" that is the valset is a full score
        self.distributions = space.distributions(optuna)
        self.mini: dict[str, list] = {}        # key -> [config, score sum, rows]: mean minibatch score
        self.full: dict[str, float] = {}       # key -> full valset score
        self._load()

    def _load(self) -> None:
        """Known scores: the baseline's (compile scored it already), and a resumed study's full and
        minibatch scores (other workers' too, when reloaded)."""
        self.mini.clear()
        baseline = getattr(self.session, "baseline_score", None)
        if baseline is not None:
            self.full[config_key(self.space.baseline_config())] = float(baseline)
        for key, value in sorted(self.study.user_attrs.items()):
            if key.startswith(FULL_ATTR):
                self.full[key[len(FULL_ATTR):]] = float(value)
        for t in self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.COMPLETE,)):
            rows = t.user_attrs.get("rows")
            if rows and set(t.params) == set(self.distributions):
                self._add_mini(dict(t.params), t.value, rows)

    def finished(self) -> int:
        states = (self.optuna.trial.TrialState.COMPLETE, self.optuna.trial.TrialState.PRUNED)
        return len(self.study.get_trials(deepcopy=False, states=states))

    def counts(self) -> dict[str, int]:
        TS = self.optuna.trial.TrialState
        out = {"finished": 0, "running": 0, "waiting": 0, "failed": 0}
        for t in self.study.get_trials(deepcopy=False):
            if t.state in (TS.COMPLETE, TS.PRUNED):
                out["finished"] += 1
            elif t.state == TS.RUNNING:
                out["running"] += 1
            elif t.state == TS.WAITING:
                out["waiting"] += 1
            elif t.state == TS.FAIL:
                out["failed"] += 1
        return out

    def claim(self):
        """Under the study lock: a trial to run (a re-queued one first), or None when the study's
        trials are all finished or taken by other workers."""
        with study_lock(self.study, self.session.storage):
            fail_stale(self.optuna, self.study)
            if not self.study.trials:
                self.study.enqueue_trial(self.space.baseline_config())     # the uncompiled program is trial 0
            c = self.counts()
            if not c["waiting"] and c["finished"] + c["running"] >= self.trials:
                return None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # "heartbeat is meant for optimize()": we beat ourselves
                return self.study.ask(self.distributions)

    def run(self) -> tuple[dict[str, PredictorState], float | None]:
        """Run the missing trials, score the best on the full valset, return the best full score."""
        session = self.session
        session.phase("search")
        self.recover_crashed()
        done = self.finished()
        while done < self.trials and not session.out_of_budget:
            if not self.plan.affords(self.size + (0 if self.whole else len(session.valset))):
                break                     # keep what the final full scoring needs
            trial = self.claim()
            if trial is None or self.trial(trial) is None:
                break                     # every trial is taken, or the budget ran out inside the trial
            done += 1
            if done % FULL_EVERY == 0 and done < self.trials:
                self.score_best()
        self.score_best()
        return self.best()

    def recover_crashed(self) -> None:
        """A single compile owns its study: trials left RUNNING belong to an earlier run that died, so
        fail them and queue their configurations again (workers wait for heartbeats instead)."""
        if self.session.storage is None:
            return
        TS = self.optuna.trial.TrialState
        for t in self.study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
            try:
                self.study.tell(t.number, state=TS.FAIL)
            except Exception:
                continue                  # finished meanwhile, or already failed
            self.study.enqueue_trial(dict(t.params), skip_if_exists=False)

    def work(self) -> tuple[dict[str, PredictorState], float | None]:
        """A worker: claim and run trials until the study has its trials; no final scoring."""
        session = self.session
        session.phase("worker")
        ran = 0
        while not session.out_of_budget:
            if not self.plan.affords(self.size):
                break
            trial = self.claim()
            if trial is None:
                c = self.counts()
                if c["finished"] >= self.trials or not (c["running"] or c["waiting"]):
                    break
                # Trials are still running elsewhere; if their worker died, its heartbeat goes stale
                # and the next claim re-queues the trial, so wait rather than leave it orphaned.
                time.sleep(max(1.0, HEARTBEAT_SECONDS / 2))
                continue
            trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
            if self.trial(trial) is None:
                break
            ran += 1
            if ran % FULL_EVERY == 0:
                self.score_best()
        session.report_worker(ran)
        return self.best()

    def finalize(self) -> tuple[dict[str, PredictorState], float | None]:
        """Once every trial is finished: report the study's trials, make sure the best configuration
        has a full score, return it."""
        with study_lock(self.study, self.session.storage):
            fail_stale(self.optuna, self.study)
        c = self.counts()
        if c["finished"] < self.trials or c["running"] or c["waiting"]:
            raise ValueError(f"study '{self.study.study_name}' is not done: {c['finished']} of {self.trials} trials "
                             f"finished, {c['running']} running, {c['waiting']} waiting; wait for the workers")
        self.replay()
        self.score_best()
        return self.best()

    def replay(self) -> None:
        """Record the study's finished trials (every worker's, in trial order) and its full-valset
        scorings (each after the trials that were finished when it was made), as a single compile
        records its own: the report of `--finalize` is the study's."""
        TS = self.optuna.trial.TrialState
        trials = sorted(self.study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.PRUNED)), key=lambda t: t.number)
        attrs = self.study.user_attrs
        fulls = sorted((v.get("after", 0), k[len(FULL_NOTE_ATTR):], v.get("note", ""))
                       for k, v in attrs.items() if k.startswith(FULL_NOTE_ATTR) and isinstance(v, dict))
        fulls = [(after, attrs[FULL_ATTR + key], note) for after, key, note in fulls if FULL_ATTR + key in attrs]
        done = 0
        for t in trials:
            line = t.user_attrs.get(RECORD_ATTR) or self._line_of(t)
            if line is not None:
                self.session.record(float(line["score"]), full=bool(line["full"]), note=str(line["note"]))
            done += 1
            while fulls and fulls[0][0] <= done:
                _, score, note = fulls.pop(0)
                self.session.record(float(score), full=True, note=note)
        for _, score, note in fulls:
            self.session.record(float(score), full=True, note=note)

    def _line_of(self, t) -> dict[str, Any] | None:
        """The report line of a trial stored without one (by an older pipec), from its scores."""
        if not set(self.distributions) <= set(t.params):
            return None
        note = f"trial {t.number + 1}: {self.space.describe({k: t.params[k] for k in self.distributions})}"
        if t.state == self.optuna.trial.TrialState.PRUNED:
            first = t.intermediate_values.get(0)
            return None if first is None else {"score": first, "full": False, "note": f"{note} (pruned)"}
        rows = t.user_attrs.get("rows")
        if t.value is None or rows is None:
            return None
        if rows == 0:
            return {"score": t.value, "full": True, "note": f"{note} (full score known)"}
        full = rows >= len(self.session.valset)
        return {"score": t.value, "full": full, "note": note + ("" if full else f" (minibatch of {rows})")}

    def trial(self, trial) -> str | None:
        """Score one claimed trial's configuration; None when the budget ran out."""
        with heartbeat(self.optuna, self.study, trial):
            return self._trial(trial)

    def _trial(self, trial) -> str | None:
        TrialState = self.optuna.trial.TrialState
        config = {k: trial.params[k] for k in self.distributions}
        key, note = config_key(config), f"trial {trial.number + 1}: {self.space.describe(config)}"
        if key in self.full:              # already scored on the full valset: no LM call needed
            trial.set_user_attr("rows", 0)
            self._line(trial, self.full[key], True, f"{note} (full score known)")
            self.study.tell(trial, self.full[key])
            self.session.record(self.full[key], full=True, note=f"{note} (full score known)")
            return "known"
        params = self.space.params(self.session.baseline(), config)
        rows = self.minibatch(trial.number)
        parts = [rows[:len(rows) // 2], rows[len(rows) // 2:]] if len(rows) >= SPLIT_AT else [rows]
        total = 0.0
        for step, part in enumerate(parts):
            result = self.evaluate(params, part)
            if result.incomplete:
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            total += result.score * len(part)
            if step == 0 and len(parts) > 1:
                trial.report(result.score, 0)
                if trial.should_prune():
                    note = f"{note} (pruned after {len(part)} rows)"
                    self._line(trial, result.score, False, note)
                    self.study.tell(trial, state=TrialState.PRUNED)
                    self.session.record(result.score, full=False, note=note)
                    return "pruned"
        score = total / len(rows)
        note += "" if self.whole else f" (minibatch of {len(rows)})"
        trial.set_user_attr("rows", len(rows))
        self._line(trial, score, self.whole, note)
        self.study.tell(trial, score)
        self._add_mini(config, score, len(rows))
        if self.whole:
            self._set_full(key, score)
        self.session.record(score, full=self.whole, note=note)
        return "scored"

    def _line(self, trial, score: float, full: bool, note: str) -> None:
        """Store the report line of a trial with it (before it is told: a finished trial is read-only)."""
        if self.session.storage is not None:
            trial.set_user_attr(RECORD_ATTR, {"score": round(score, 6), "full": full, "note": note})

    def minibatch(self, number: int) -> list:
        """The rows trial `number` is scored on: drawn by seed, so a rerun scores the same rows."""
        valset = self.session.valset
        if self.whole:
            return list(valset)
        return self.session.rng(f"mipro:{self.seed}:minibatch:{number}").sample(list(valset), self.size)

    def evaluate(self, params, rows):
        before = self.session.calls_used
        result = self.session.evaluate(params, rows)
        self.plan.observe(self.session.calls_used - before, len(rows))
        return result

    def score_best(self) -> None:
        """Score on the full valset the configuration with the best mean minibatch score not yet scored."""
        if self.session.storage is not None:
            self._load()                  # other workers' trials and full scores
        pending = [(total / rows, i, key, config, rows)
                   for i, (key, (config, total, rows)) in enumerate(self.mini.items()) if key not in self.full and rows]
        if not pending or not self.plan.affords(len(self.session.valset)):
            return
        mean, _, key, config, rows = max(pending, key=lambda p: (p[0], -p[1]))      # ties: the earliest seen
        best = max(self.full.values(), default=None)
        # A minibatch mean is within about 0.5/sqrt(rows) of the true score (the binomial worst case):
        # a candidate further below the best full score than that is not worth a full scoring.
        if best is not None and mean + 0.5 / math.sqrt(rows) < best:
            return
        self.session.phase("full eval")
        result = self.evaluate(self.space.params(self.session.baseline(), config), list(self.session.valset))
        self.session.phase("search")
        if result.incomplete:
            return
        self._set_full(key, result.score)
        note = f"full valset: {self.space.describe(config)}"
        if self.session.storage is not None:
            self.study.set_user_attr(FULL_NOTE_ATTR + key, {"after": self.finished(), "note": note})
        self.session.record(result.score, full=True, note=note)

    def best(self) -> tuple[dict[str, PredictorState], float | None]:
        """The configuration with the best full valset score (ties: the one scored first)."""
        if not self.full:
            return self.session.baseline(), None
        key = max(self.full, key=lambda k: self.full[k])      # max keeps the first of equal scores
        return self.space.params(self.session.baseline(), _parse_key(key)), self.full[key]

    def _add_mini(self, config: dict[str, int], score: float, rows: int) -> None:
        entry = self.mini.setdefault(config_key(config), [config, 0.0, 0])
        entry[1] += score * rows
        entry[2] += rows

    def _set_full(self, key: str, score: float) -> None:
        self.full[key] = score
        self.study.set_user_attr(FULL_ATTR + key, score)


def _parse_key(key: str) -> dict[str, int]:
    """The configuration a `config_key` stands for.

    >>> _parse_key("a/instruction=0,b/demos=1")
    {'a/instruction': 0, 'b/demos': 1}
    """
    return {k: int(v) for k, v in (item.rsplit("=", 1) for item in key.split(","))}


__all__ = ["MIPRO", "Space", "Search", "study_name", "config_key"]
