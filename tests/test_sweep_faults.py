"""Sweeps survive faults: a trial that fails, is reaped or is cancelled before it starts still advances its sweep;
two workers finishing trials at the same moment queue the next trial once; cancelling every trial still to come
stops the sweep instead of feeding it."""
from __future__ import annotations

import threading
from datetime import timedelta

import fercore.teach.sweeps
from fercore.config import RunConfig
from fercore.jobs.liveness import reap
from fercore.jobs.policy import cancel_runs
from fercore.jobs.worker import run_worker
from fercore.store import RunStore
from fercore.store.entities import RunStatus
from fercore.store.runstore import now
from fercore.teach.sweeps import list_sweeps, on_run_finished, start_sweep

BASE = RunConfig(data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,), epochs=1,
                 batch_size=32, tta="none")
SPACE = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "conv_dropout": [0, 0.25, 0.5]}


def finish(store: RunStore, run: dict, val_acc: float = 0.4) -> dict:
    store.add_epoch(run.id, {"epoch": 1, "train_loss": 1.0, "val_acc": val_acc})
    store.set_status(run.id, RunStatus.FINISHED)
    return store.get_run(run.id)


def trials(store: RunStore, name: str) -> list[tuple[int, str]]:
    return sorted((r.trial, r.status) for r in store.list_runs(group_name=name))


def test_a_reaped_trial_advances_its_sweep(db):
    store = RunStore(db)
    sweep = start_sweep(store, BASE, SPACE, method="bayes", trials=6, name="reaped")
    for run in sweep["runs"][:3]:
        finish(store, run)
    last = store.claim_next_run(worker_id=99)   # its worker then dies: no heartbeat any more
    store.update_run(last.id, attempts=3)   # for the third time: it is left failed, not queued again
    store.update_run(last.id, lease_expires_at=now() - timedelta(seconds=5))   # its lease ran out
    assert reap(store) == [last.id]
    assert trials(store, "reaped") == [(1, "finished"), (2, "finished"), (3, "finished"), (4, "failed"), (5, "queued")]
    assert reap(store) == [] and len(trials(store, "reaped")) == 5   # reaping again queues nothing more


def test_a_trial_cancelled_before_it_started_advances_its_sweep(db):
    store = RunStore(db)
    sweep = start_sweep(store, BASE, SPACE, method="bayes", trials=6, name="skipped")
    for run in sweep["runs"][:3]:
        finish(store, run)
    [cancelled] = cancel_runs(store, [sweep["runs"][3].id])
    assert cancelled.status == RunStatus.CANCELLED
    assert trials(store, "skipped")[3:] == [(4, "cancelled"), (5, "queued")]
    assert cancel_runs(store, [cancelled.id])[0].status == RunStatus.CANCELLED and len(trials(store, "skipped")) == 5


def test_failing_trials_advance_their_sweep_in_the_worker_until_the_budget_is_spent(db):
    store = RunStore(db)
    start_sweep(store, BASE.replace(data="no-such-dataset"), SPACE, method="bayes", trials=6, name="doomed")
    assert run_worker(store, once=True, poll_s=0.1) == 6   # four queued at once, two more as trials failed
    assert trials(store, "doomed") == [(i, "failed") for i in range(1, 7)]
    assert all("no-such-dataset" in r.error for r in store.list_runs(group_name="doomed"))
    [info] = list_sweeps(store)
    assert info["done"] and info["runs"] == 6


def test_two_workers_finishing_trials_at_once_queue_the_next_trial_once(db, monkeypatch):
    store = RunStore(db)
    sweep = start_sweep(store, BASE, SPACE, method="bayes", trials=8, name="raced")
    for run in sweep["runs"][:2]:
        finish(store, run)
    done = [finish(store, run) for run in sweep["runs"][2:]]   # two workers end trials 3 and 4 together
    both_decided = threading.Barrier(2, timeout=30)
    real_pick = fercore.teach.sweeps._bayes_pick

    def pick_then_wait(*a, **kw):   # both have read the sweep and chosen settings before either queues them
        pick = real_pick(*a, **kw)
        both_decided.wait()
        return pick

    monkeypatch.setattr(fercore.teach.sweeps, "_bayes_pick", pick_then_wait)
    results, errors = {}, []

    def worker(run):
        try:
            results[run.id] = on_run_finished(RunStore(db), run)   # each worker has its own connection
        except Exception as e:   # noqa: BLE001 - the test reports whatever went wrong
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(run,)) for run in done]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(len(queued) for queued in results.values()) == [0, 1]
    assert trials(store, "raced") == [(1, "finished"), (2, "finished"), (3, "finished"), (4, "finished"),
                                      (5, "queued")]
    assert [r.name for r in store.list_runs(group_name="raced")].count("raced-t5") == 1


def test_cancelling_every_trial_still_to_come_stops_the_sweep(db):
    store = RunStore(db)
    sweep = start_sweep(store, BASE, SPACE, method="bayes", trials=8, name="stopped")
    finish(store, sweep["runs"][0])
    running = store.claim_next_run(worker_id=1)
    rest = [r.id for r in sweep["runs"][2:]]
    out = cancel_runs(store, [running.id, *rest])
    assert [r.status for r in out] == ["running", "cancelled", "cancelled"]   # the running one at its next batch
    store.set_status(running.id, RunStatus.CANCELLED, "cancelled by its owner")   # what its worker then does
    assert on_run_finished(store, store.get_run(running.id)) == []
    assert len(store.list_runs(group_name="stopped")) == 4
    assert [s["done"] for s in list_sweeps(store)] == [True]
