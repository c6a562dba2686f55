"""Sweeps: grid, random and Bayesian search over run settings, queued as the runs of one group.

A sweep is a base config, a search space and a trial budget. Its runs are ordinary queued runs
(group_kind "sweep", group_name the sweep's name, run names "<sweep>-t<i>"), so the worker, the run
table and the comparison treat them like any other. The space and method are kept in a small JSON
file in the store's artifacts folder, so the worker can continue a Bayesian sweep.

Space format (the CLI's `--space` JSON): a list is a set of choices, a dict a range:
    {"lr": {"low": 1e-4, "high": 1e-2, "log": true}, "conv_dropout": [0, 0.25, 0.5], "batch_size": [32, 64]}
A range is integer when both ends are integers. `[low, high, "log"]` is accepted as a log range too.

Bayesian search uses Optuna's TPE sampler: a first batch from its random start-up phase is queued at
once; then, whenever a run ends and the sweep has nothing left in the queue, `on_run_finished` (called
by the worker) rebuilds the study in memory from the store and asks for the next trial, until the
budget is spent. No Optuna database is needed.
"""
from __future__ import annotations

import itertools
import json
import math
import random
import re
import uuid
from dataclasses import dataclass, fields
from pathlib import Path

from fercore.auth import SYSTEM, User
from fercore.config import ConfigError, RunConfig
from fercore.errors import SweepError
from fercore.safeio import write_text_atomic
from fercore.store import TrialExists
from fercore.store.entities import Run, RunStatus

METHODS = ("grid", "random", "bayes")
BAYES_FIRST_BATCH = 4          # runs queued at once: TPE's random start-up phase, trained in parallel or in turn
GRID_POINTS = 3                # a range in a grid becomes this many evenly (or log-evenly) spaced values
MAX_DRAWS = 200                # random draws tried before giving up on a space whose draws are all invalid
UNSWEEPABLE = ("name", "preset", "data")   # bookkeeping, or a change of dataset rather than of a setting
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")



@dataclass(frozen=True)
class Choice:
    values: tuple

    def grid(self) -> list:
        return list(self.values)

    def draw(self, rng: random.Random):
        return rng.choice(self.values)

    def spec(self):
        return list(self.values)


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def grid(self) -> list:
        if self.log:
            pts = [math.exp(math.log(self.low) + i * (math.log(self.high) - math.log(self.low)) / (GRID_POINTS - 1))
                   for i in range(GRID_POINTS)]
        else:
            pts = [self.low + i * (self.high - self.low) / (GRID_POINTS - 1) for i in range(GRID_POINTS)]
        return sorted({self._tidy(p) for p in pts})

    def draw(self, rng: random.Random):
        if self.log:
            return self._tidy(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.integer:
            return rng.randint(int(self.low), int(self.high))
        return self._tidy(rng.uniform(self.low, self.high))

    def _tidy(self, x: float):
        """Round to 4 significant digits (0.002346, not 0.0023456789), kept inside the range."""
        if self.integer:
            return int(min(max(round(x), self.low), self.high))
        return min(max(float(f"{x:.4g}"), self.low), self.high)

    def spec(self):
        cast = int if self.integer else float
        return {"low": cast(self.low), "high": cast(self.high), "log": self.log}


# --- the search space ---------------------------------------------------------------------------------
def parse_space(space: dict, base: RunConfig) -> dict[str, Choice | Range]:
    """Validate a space against RunConfig and turn it into Choice/Range objects, with plain errors."""
    if not isinstance(space, dict) or not space:
        raise SweepError('The sweep space is empty; give at least one setting, e.g. '
                         '{"lr": {"low": 1e-4, "high": 1e-2, "log": true}, "conv_dropout": [0, 0.25, 0.5]}.')
    known = {f.name for f in fields(RunConfig)} - set(UNSWEEPABLE)
    out: dict[str, Choice | Range] = {}
    for name, spec in space.items():
        if name not in known:
            raise SweepError(f"{name!r} is not a setting a sweep can vary; use run config field names such as "
                             "lr, batch_size, conv_dropout, weight_decay (see `train --help`).")
        param = _parse_param(name, spec)
        for value in _endpoints(param):
            try:
                base.replace(**{name: value})
            except ConfigError as e:
                raise SweepError(f"The sweep space for {name} allows {value!r}, which is not valid: {e}") from None
        out[name] = param
    return out


def _parse_param(name: str, spec) -> Choice | Range:
    if isinstance(spec, list) and len(spec) == 3 and spec[2] in ("log", "linear") and _numbers(spec[:2]):
        spec = {"low": spec[0], "high": spec[1], "log": spec[2] == "log"}   # the CLI help's [lo, hi, "log"]
    if isinstance(spec, list):
        if not spec:
            raise SweepError(f"The sweep space gives {name} an empty list of choices.")
        return Choice(tuple(tuple(v) if isinstance(v, list) else v for v in spec))
    if isinstance(spec, dict):
        extra = set(spec) - {"low", "high", "log"}
        if extra or "low" not in spec or "high" not in spec:
            raise SweepError(f'The range for {name} must look like {{"low": 0.0001, "high": 0.01, "log": true}}'
                             f"{' (unknown key ' + ', '.join(sorted(extra)) + ')' if extra else ''}.")
        low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
        if not _numbers([low, high]) or not low < high:
            raise SweepError(f"The range for {name} needs two numbers with low < high, not {low!r} and {high!r}.")
        if log and low <= 0:
            raise SweepError(f"A log range for {name} must start above 0, not at {low}.")
        integer = isinstance(low, int) and isinstance(high, int)
        return Range(float(low), float(high), log, integer)
    raise SweepError(f"The sweep space for {name} must be a list of choices or a range "
                     f'{{"low": ..., "high": ...}}, not {spec!r}.')


def _numbers(xs) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)


def _endpoints(param: Choice | Range) -> list:
    if isinstance(param, Choice):
        return list(param.values)
    return [param._tidy(param.low), param._tidy(param.high)]


# --- starting a sweep -------------------------------------------------------------------------------------
def start_sweep(store, base: RunConfig, space: dict, method: str = "random", trials: int = 8,
                name: str | None = None, seed: int | None = None, by: User | None = None) -> dict:
    """Queue a sweep's runs: the grid (capped at `trials`), `trials` random draws, or Bayes' first batch.
    Draws are seeded (by default with the base config's seed), so the same call queues the same runs."""
    seed = base.seed if seed is None else int(seed)
    if method not in METHODS:
        raise SweepError(f"The sweep method must be one of {', '.join(METHODS)}, not {method!r}.")
    if not isinstance(trials, int) or trials < 1:
        raise SweepError(f"A sweep needs at least 1 trial, not {trials!r}.")
    params = parse_space(space, base)
    store.check_sweep(by, trials)   # the trial count first: before drawing anything
    name = name or f"sweep-{uuid.uuid4().hex[:6]}"
    if not NAME_PATTERN.match(name):
        raise SweepError(f"The sweep name {name!r} may use only letters, digits, '.', '_' and '-' (80 at most).")
    if store.list_runs(group_name=name, limit=1):
        raise SweepError(f"A sweep or lesson named {name!r} already exists; choose another name.")
    spec = {"name": name, "method": method, "trials": trials, "seed": seed,
            "space": {k: p.spec() for k, p in params.items()}}
    write_text_atomic(_spec_path(store, name), json.dumps(spec, indent=1))
    out = {"name": name, "method": method, "space": spec["space"], "trials": trials}
    if method == "grid":
        combos = list(itertools.product(*(p.grid() for p in params.values())))
        out["grid_size"] = len(combos)
        if len(combos) > trials:
            out["note"] = f"The grid has {len(combos)} combinations; only the first {trials} were queued."
        picks = [dict(zip(params, c)) for c in combos[:trials]]
    elif method == "random":
        picks = _random_picks(base, params, trials, seed)
    else:
        picks = []
        for _ in range(min(trials, BAYES_FIRST_BATCH)):
            picks.append(_bayes_pick(store, name, base, params, seed, pending=picks))
    store.check_sweep(by, trials, [base.replace(**p) for p in picks])   # each trial's settings
    out["runs"] = [_queue(store, name, base, i, p, by=by) for i, p in enumerate(picks, start=1)]
    return out


def _random_picks(base: RunConfig, params: dict, trials: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    picks = []
    for _ in range(MAX_DRAWS * trials):
        p = {k: v.draw(rng) for k, v in params.items()}
        if _valid(base, p):
            picks.append(p)
            if len(picks) == trials:
                return picks
    raise SweepError("Almost every draw from this space gives an invalid run config; narrow the ranges.")


def _queue(store, sweep: str, base: RunConfig, i: int, params: dict, by: User | None = None,
           owner: str | None = None) -> dict:
    try:
        config = base.replace(**params, name=f"{sweep}-t{i}")
    except ConfigError as e:
        raise SweepError(f"Trial {i} of sweep {sweep} ({_fmt(params)}) is not a valid run: {e}") from None
    return store.queue_trial(config, sweep, i, by=by, owner=owner)


def _valid(base: RunConfig, params: dict) -> bool:
    try:
        base.replace(**params)
        return True
    except ConfigError:
        return False


# --- Bayesian search with Optuna's TPE ----------------------------------------------------------------------
def on_run_finished(store, run: Run) -> list[Run]:
    """Called wherever a sweep run reaches its final status (the worker at its end, the reaper that fails it,
    a cancel before it started): a Bayesian sweep queues its next trial until the budget is spent. Returns the
    runs queued (none for other runs and other methods). Safe to call twice for one run, and from two workers at
    once: the store queues a trial number once (TrialExists for the second)."""
    if run.group_kind != "sweep" or not run.group_name or run.status.active:
        return []
    spec = load_spec(store, run.group_name)
    if spec is None or spec["method"] != "bayes" or spec.get("stopped"):
        return []
    runs = _sweep_runs(store, spec["name"])
    # Ask only when the sweep has nothing left in the queue: then each proposal sees every result but those
    # still training, and the worker never waits for one.
    if len(runs) >= spec["trials"] or any(r.status == RunStatus.QUEUED for r in runs):
        return []
    base = runs[0].config
    params = parse_space(spec["space"], base)
    pick = _bayes_pick(store, spec["name"], base, params, spec.get("seed", 0))
    try:
        return [_queue(store, spec["name"], base, len(runs) + 1, pick, by=SYSTEM, owner=runs[0].owner)]
    except TrialExists:   # another worker queued this trial a moment ago
        return []


def stop_sweep(store, name: str) -> None:
    """No further trials: its owner cancelled every trial still to come (a Bayesian sweep would otherwise
    queue a new one when the last cancelled trial ends)."""
    spec = load_spec(store, name)
    if spec is not None and not spec.get("stopped"):
        write_text_atomic(_spec_path(store, name), json.dumps({**spec, "stopped": True}, indent=1))


def _bayes_pick(store, sweep: str, base: RunConfig, params: dict, seed: int, pending=()) -> dict:
    """Ask TPE for the next settings given every trial the store knows (and `pending` picks not yet stored)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: _distribution(p) for k, p in params.items()}
    runs = _sweep_runs(store, sweep)
    # A fresh seed per trial count: the rebuilt study's random start-up draws must not repeat earlier ones.
    sampler = optuna.samplers.TPESampler(seed=seed + len(runs) + len(pending), n_startup_trials=BAYES_FIRST_BATCH,
                                         constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for r in runs:
        values = {k: _to_optuna(getattr(r.config, k)) for k in params}
        if all(_in_choices(dists[k], v) for k, v in values.items()):   # a run outside the space teaches nothing
            study.add_trial(_frozen_trial(r, values, dists, store))
    for p in pending:
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                                  params={k: _to_optuna(v) for k, v in p.items()},
                                                  distributions=dists))
    for _ in range(MAX_DRAWS):
        trial = study.ask(dists)
        pick = {k: _from_optuna(params[k], v) for k, v in trial.params.items()}
        if _valid(base, pick):
            return pick
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    raise SweepError("Almost every setting TPE proposes gives an invalid run config; narrow the ranges.")


def _frozen_trial(run: Run, values: dict, dists: dict, store):
    """A stored run as an Optuna trial: finished -> its best val accuracy; failed -> pruned at its last epoch
    (worse than any finished trial, so TPE steers away); queued/running -> running; cancelled -> failed."""
    from optuna.trial import TrialState, create_trial
    status = run.status
    acc = run.summary.get("best_val_acc")
    if status == RunStatus.FINISHED and acc is not None:
        return create_trial(state=TrialState.COMPLETE, value=float(acc), params=values, distributions=dists)
    if RunStatus(status).active:
        return create_trial(state=TrialState.RUNNING, params=values, distributions=dists)
    if status == RunStatus.FAILED:
        curve = {int(e["epoch"]): float(e["val_acc"]) for e in store.epochs(run.id) if e.get("val_acc") is not None}
        return create_trial(state=TrialState.PRUNED, params=values, distributions=dists, intermediate_values=curve)
    return create_trial(state=TrialState.FAIL, params=values, distributions=dists)


def _distribution(p: Choice | Range):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    if isinstance(p, Choice):
        return CategoricalDistribution([_to_optuna(v) for v in p.values])
    if p.integer:
        return IntDistribution(int(p.low), int(p.high), log=p.log)
    return FloatDistribution(p.low, p.high, log=p.log)


def _in_choices(dist, value) -> bool:
    from optuna.distributions import CategoricalDistribution
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    return isinstance(value, (int, float)) and dist.low <= value <= dist.high


def _to_optuna(v):
    """Optuna's categorical choices must be scalars: a tuple choice (filters, fc_units) travels as JSON text."""
    return json.dumps(list(v)) if isinstance(v, (list, tuple)) else v


def _from_optuna(param: Choice | Range, v):
    if isinstance(param, Choice) and isinstance(v, str) and v.startswith("["):
        return tuple(json.loads(v))
    return int(v) if isinstance(param, Range) and param.integer else v


# --- reading a sweep back --------------------------------------------------------------------------------
def load_spec(store, name: str) -> dict | None:
    path = _spec_path(store, name, create=False)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sweep_table(store, name: str) -> list[dict]:
    """One row per trial: {"trial", "id", "name", "status", "params": {setting: value}, "best_val_acc",
    "test_acc"}, in trial order (for the sweep view's table and parallel-coordinates chart)."""
    runs = _sweep_runs(store, name)
    if not runs:
        raise SweepError(f"There is no sweep named {name!r}.")
    spec = load_spec(store, name)
    swept = list(spec["space"]) if spec else _varying_fields(runs)
    return [{"trial": i, "id": r.id, "name": r.name, "status": str(r.status),
             "params": {k: getattr(r.config, k) for k in swept},
             "best_val_acc": r.summary.get("best_val_acc"),
             "test_acc": r.test_accuracy} for i, r in enumerate(runs, start=1)]


def best_trial(store, name: str) -> dict | None:
    """The finished trial with the highest best val accuracy (None while none has finished)."""
    done = [row for row in sweep_table(store, name)
            if row["status"] == RunStatus.FINISHED and row["best_val_acc"] is not None]
    return max(done, key=lambda row: row["best_val_acc"]) if done else None


def list_sweeps(store) -> list[dict]:
    """Every sweep in the store: {"name", "method", "trials", "runs", "finished", "done"}."""
    groups: dict[str, list[Run]] = {}
    for r in store.list_runs():
        if r.group_kind == "sweep" and r.group_name:
            groups.setdefault(r.group_name, []).append(r)
    out = []
    for name, runs in sorted(groups.items()):
        spec = load_spec(store, name) or {}
        finished = sum(r.status == RunStatus.FINISHED for r in runs)
        active = any(r.status.active for r in runs)
        trials = spec.get("trials", len(runs))
        out.append({"name": name, "method": spec.get("method"), "trials": trials, "runs": len(runs),
                    "finished": finished, "done": not active and (spec.get("method") != "bayes" or len(runs) >= trials
                                                or bool(spec.get("stopped")))})
    return out


def _sweep_runs(store, name: str) -> list[Run]:
    return sorted(store.list_runs(group_name=name), key=lambda r: r.id)


def _varying_fields(runs: list[Run]) -> list[str]:
    first = runs[0].config.to_dict()
    return [k for k in first if k != "name" and any(r.config.to_dict()[k] != first[k] for r in runs[1:])]


def _spec_path(store, name: str, create: bool = True) -> Path:
    folder = Path(store.artifacts) / "sweeps"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.json"


def _fmt(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
