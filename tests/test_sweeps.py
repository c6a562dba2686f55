"""Sweeps: grid / random / Bayesian search queued as runs of one group, and plain errors for bad spaces."""
from __future__ import annotations

import pytest

from fercore.config import RunConfig
from fercore.store import RunStore
from fercore.store.entities import RunStatus
from fercore.teach.sweeps import SweepError, best_trial, on_run_finished, start_sweep, sweep_table

BASE = RunConfig(data="synthetic:420", conv_blocks=2, filters=(8, 16), epochs=2)
SPACE = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "conv_dropout": [0, 0.25, 0.5],
         "batch_size": [32, 64, 128]}


@pytest.fixture
def store(tmp_path):
    return RunStore(str(tmp_path / "runs.db"))


def finish(store, run, val_acc: float, status: RunStatus = RunStatus.FINISHED):
    store.add_epoch(run.id, {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0,
                                "val_acc": val_acc})
    store.set_status(run.id, status)
    return store.get_run(run.id)


def test_grid_is_the_cartesian_product_of_choices(store):
    space = {"conv_dropout": [0, 0.25, 0.5], "batch_size": [32, 64]}
    sweep = start_sweep(store, BASE, space, method="grid", trials=100, name="g1")
    assert len(sweep["runs"]) == 6
    got = {(r.config.conv_dropout, r.config.batch_size) for r in sweep["runs"]}
    assert got == {(d, b) for d in (0.0, 0.25, 0.5) for b in (32, 64)}
    assert [r.name for r in sweep["runs"]] == [f"g1-t{i}" for i in range(1, 7)]
    assert all(r.group_kind == "sweep" and r.group_name == "g1" and r.status == RunStatus.QUEUED
               for r in sweep["runs"])
    # every other setting is the base config's
    for r in sweep["runs"]:
        diff = r.config.diff(BASE)
        assert set(diff) <= {"conv_dropout", "batch_size", "name"}


def test_grid_is_capped_by_trials_and_ranges_become_points(store):
    sweep = start_sweep(store, BASE, {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "batch_size": [32, 64]},
                        method="grid", trials=4, name="g2")
    assert sweep["grid_size"] == 6 and len(sweep["runs"]) == 4 and "6 combinations" in sweep["note"]
    lrs = sorted({r.config.lr for r in store.list_runs(group_name="g2")})
    assert lrs == pytest.approx([1e-4, 1e-3])   # the first 4 of 3 log-spaced lrs x 2 batch sizes


def test_random_draws_are_reproducible_and_inside_the_space(store):
    a = start_sweep(store, BASE, SPACE, method="random", trials=6, name="r1")
    b = start_sweep(store, BASE, SPACE, method="random", trials=6, name="r2")
    def params(s):
        return [(r.config.lr, r.config.conv_dropout, r.config.batch_size) for r in s["runs"]]
    assert params(a) == params(b) and len(params(a)) == 6
    assert len(set(params(a))) > 1
    for lr, drop, bs in params(a):
        assert 1e-4 <= lr <= 1e-2 and drop in (0, 0.25, 0.5) and bs in (32, 64, 128)
    c = start_sweep(store, BASE, SPACE, method="random", trials=6, name="r3", seed=1)
    assert params(c) != params(a)


def test_integer_range_gives_integers(store):
    sweep = start_sweep(store, BASE, {"epochs": {"low": 2, "high": 9}}, method="random", trials=5, name="ri")
    assert all(isinstance(r.config.epochs, int) and 2 <= r.config.epochs <= 9 for r in sweep["runs"])


def test_bayes_queues_a_first_batch_then_one_trial_per_finished_run(store):
    sweep = start_sweep(store, BASE, SPACE, method="bayes", trials=7, name="b1")
    assert len(sweep["runs"]) == 4
    assert len({r.config.lr for r in sweep["runs"]}) == 4   # distinct start-up draws
    # nothing new while the sweep still has queued runs
    first = finish(store, sweep["runs"][0], 0.40)
    assert on_run_finished(store, first) == []
    for run, acc in zip(sweep["runs"][1:], (0.55, 0.30, 0.62)):
        last = finish(store, run, acc)
    new = on_run_finished(store, last)
    assert len(new) == 1 and new[0].name == "b1-t5" and new[0].status == RunStatus.QUEUED
    assert new[0].group_kind == "sweep" and new[0].group_name == "b1"
    # a failed trial counts against the budget and the search goes on
    last = finish(store, new[0], 0.2, status=RunStatus.FAILED)
    new = on_run_finished(store, last)
    assert [r.name for r in new] == ["b1-t6"]
    last = finish(store, new[0], 0.5)
    new = on_run_finished(store, last)
    assert [r.name for r in new] == ["b1-t7"]
    last = finish(store, new[0], 0.5)
    assert on_run_finished(store, last) == []          # the budget of 7 is spent
    assert len(store.list_runs(group_name="b1")) == 7
    for r in store.list_runs(group_name="b1"):
        assert 1e-4 <= r.config.lr <= 1e-2 and r.config.batch_size in (32, 64, 128)


def test_on_run_finished_ignores_other_runs(store):
    run = store.create_run(BASE, status=RunStatus.FINISHED)
    assert on_run_finished(store, run) == []
    sweep = start_sweep(store, BASE, SPACE, method="random", trials=2, name="r9")
    assert on_run_finished(store, finish(store, sweep["runs"][0], 0.5)) == []


def test_sweep_table_and_best_trial(store):
    sweep = start_sweep(store, BASE, {"conv_dropout": [0, 0.5]}, method="grid", trials=2, name="t1")
    assert best_trial(store, "t1") is None
    finish(store, sweep["runs"][0], 0.41)
    finish(store, sweep["runs"][1], 0.63)
    table = sweep_table(store, "t1")
    assert [(row["trial"], row["params"], row["status"], row["best_val_acc"]) for row in table] == [
        (1, {"conv_dropout": 0.0}, "finished", 0.41), (2, {"conv_dropout": 0.5}, "finished", 0.63)]
    assert best_trial(store, "t1")["name"] == "t1-t2"


@pytest.mark.parametrize("space, words", [
    ({}, "empty"),
    ({"learning_rate": [0.1]}, "'learning_rate' is not a setting"),
    ({"lr": []}, "empty list"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "low < high"),
    ({"lr": {"low": 0, "high": 0.01, "log": True}}, "above 0"),
    ({"lr": {"low": 1e-4, "hi": 0.01}}, "must look like"),
    ({"optimizer": ["adam", "rmsprop"]}, "optimizer must be one of"),
    ({"batch_size": "64"}, "list of choices or a range"),
    ({"name": ["a", "b"]}, "not a setting"),
])
def test_invalid_space_is_a_plain_error(store, space, words):
    with pytest.raises(SweepError, match=words.replace("(", r"\(")):
        start_sweep(store, BASE, space, method="random", trials=2)
    assert store.list_runs() == []


def test_bad_method_trials_and_duplicate_name(store):
    with pytest.raises(SweepError, match="grid, random, bayes"):
        start_sweep(store, BASE, SPACE, method="annealing", trials=2)
    with pytest.raises(SweepError, match="at least 1 trial"):
        start_sweep(store, BASE, SPACE, method="grid", trials=0)
    start_sweep(store, BASE, SPACE, method="grid", trials=1, name="dup")
    with pytest.raises(SweepError, match="already exists"):
        start_sweep(store, BASE, SPACE, method="grid", trials=1, name="dup")
    with pytest.raises(SweepError, match="letters, digits"):
        start_sweep(store, BASE, SPACE, method="grid", trials=1, name="../evil")


def test_cli_log_range_form_is_accepted(store):
    sweep = start_sweep(store, BASE, {"lr": [1e-4, 1e-2, "log"]}, method="random", trials=3, name="c1")
    assert all(1e-4 <= r.config.lr <= 1e-2 for r in sweep["runs"])
