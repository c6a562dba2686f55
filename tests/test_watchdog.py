"""The watchdog: a run whose process is alive but whose training loop hangs (a deadlock, a stuck GPU call) keeps a
fresh heartbeat, so only its progress can tell. A run whose progress stood still for the window is failed with a
sentence, its epochs kept, and the hung process ends so the queue goes on."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta

from conftest import REPO, cli_env

from fercore.config import RunConfig
from fercore.jobs import liveness as jobs
from fercore.jobs.lease import Attempt
from fercore.jobs.liveness import EXIT_STALLED, STALLED, Heartbeat, stall_seconds
from fercore.jobs.worker import run_worker
from fercore.store import RunStatus, RunStore
from fercore.store.runstore import now
from fercore.teach.sweeps import start_sweep

TINY = RunConfig(data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,), batch_size=32,
                 epochs=3, lr=3e-3, tta="none")

# A worker whose training loop deadlocks in its second epoch: the first epoch ends normally, then the loss never
# comes back. Only the watchdog can notice: the heartbeat thread beats on.
HUNG_WORKER = r"""
import sys, threading
import fercore.train
from fercore.cli import main
from fercore.store.entities import RunStatus

real_loss, real_dead_units = fercore.train.compute_loss, fercore.train.dead_unit_fractions
epochs_ended = [0]

def dead_units(*a, **kw):   # called once at the end of every epoch
    epochs_ended[0] += 1
    return real_dead_units(*a, **kw)

def loss(*a, **kw):
    if epochs_ended[0] >= 1:
        threading.Event().wait()   # hangs forever
    return real_loss(*a, **kw)

fercore.train.dead_unit_fractions, fercore.train.compute_loss = dead_units, loss
sys.exit(main(["worker", "--once", "--db", sys.argv[1], "--stall-minutes", sys.argv[2], "--json"]))
"""


def test_a_hung_training_loop_is_failed_with_its_epochs_kept_and_the_queue_goes_on(db, tmp_path):
    store = RunStore(db)
    hung = store.create_run(TINY.replace(name="hung"), status=RunStatus.QUEUED).id
    after = store.create_run(TINY.replace(name="after", epochs=1), status=RunStatus.QUEUED).id
    window_s = 6.0
    with open(tmp_path / "worker.err", "w+") as err:
        p = subprocess.Popen([sys.executable, "-c", HUNG_WORKER, db, str(window_s / 60)], cwd=REPO, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=err)
        try:
            code = p.wait(timeout=180)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        err.seek(0)
        log = err.read()
    assert code == EXIT_STALLED, log   # the hung process ended itself
    run = store.get_run(hung, epochs=True)
    assert run.status == RunStatus.FAILED and run.error.startswith(STALLED), run.error
    assert "6 seconds" in run.error and "epochs are kept" in run.error
    assert [e["epoch"] for e in run.epochs] == [1] and run.epochs[0]["val_acc"] is not None
    assert run.cancel_requested   # were the loop ever to wake up, it would stop at its next batch
    assert [w.status for w in store.list_workers()] == []   # the worker row says stopped
    assert store.get_run(after).status == RunStatus.QUEUED
    assert run_worker(store, once=True, poll_s=0.2) == 1 and store.get_run(after).status == RunStatus.FINISHED


def running_run(store: RunStore, config: RunConfig = TINY, **changes) -> int:
    rid = store.create_run(config.replace(**changes), status=RunStatus.RUNNING).id
    store.add_epoch(rid, {"epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "val_loss": 1.6, "val_acc": 0.35})
    return rid


def watch(store: RunStore, rid: int, stall_s: float, stalled: list) -> Heartbeat:
    beat = Heartbeat(store.url, None, interval=0.1, stall_s=stall_s,
                     on_stall=stalled.append)   # instead of ending this test process
    beat.attempt = Attempt(rid, store.get_run(rid).lease_token)
    beat.start()
    return beat


def test_the_heartbeat_fails_a_run_whose_progress_stands_still_not_one_that_moves(db):
    store = RunStore(db)
    still, moving = running_run(store, name="still"), running_run(store, name="moving")
    stop = threading.Event()

    def training_loop():   # reports a batch now and then, like fit() does every second
        batch = 0
        while not stop.is_set():
            batch += 1
            store.set_progress(moving, {"phase": "training", "epoch": 2, "batch": batch})
            time.sleep(0.2)

    loop = threading.Thread(target=training_loop)
    loop.start()
    stalled_still, stalled_moving = [], []
    beats = [watch(store, still, 1.0, stalled_still), watch(store, moving, 1.0, stalled_moving)]
    try:
        deadline = time.monotonic() + 20
        while not stalled_still and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)   # the moving run has now lived more than a window past the still one's failure
    finally:
        stop.set()
        loop.join()
        for b in beats:
            b.halt()
    assert stalled_still == [still] and stalled_moving == []
    run = store.get_run(still, epochs=True)
    assert run.status == RunStatus.FAILED and run.error.startswith(STALLED) and "1 second " in run.error
    assert [e["epoch"] for e in run.epochs] == [1]
    assert store.get_run(moving).status == RunStatus.RUNNING


def test_a_stalled_sweep_trial_advances_its_sweep(db):
    store = RunStore(db)
    sweep = start_sweep(store, TINY, {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}, method="bayes", trials=5,
                        name="watched")
    for run in sweep["runs"][:3]:
        store.add_epoch(run.id, {"epoch": 1, "val_acc": 0.3})
        store.set_status(run.id, RunStatus.FINISHED)
    last = store.claim_next_run(worker_id=1)
    store.update_run(last.id, progress_at=now() - timedelta(minutes=5))
    stalled = []
    beat = watch(store, last.id, 60.0, stalled)
    try:
        deadline = time.monotonic() + 20
        while not stalled and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        beat.halt()
    assert stalled == [last.id] and store.get_run(last.id).status == RunStatus.FAILED
    assert [(r.trial, r.status) for r in store.list_runs(group_name="watched")][:1] == [(5, "queued")]


def test_the_window_comes_from_the_flag_then_the_environment(monkeypatch):
    monkeypatch.delenv(jobs.STALL_ENV, raising=False)
    assert stall_seconds() == 30 * 60
    monkeypatch.setenv(jobs.STALL_ENV, "2.5")
    assert stall_seconds() == 150 and stall_seconds(1) == 60
    monkeypatch.setenv(jobs.STALL_ENV, "0")
    assert stall_seconds() is None   # off
    monkeypatch.setenv(jobs.STALL_ENV, "soon")
    assert stall_seconds() == 30 * 60


def test_the_worker_flag_is_documented():
    from fercore.cli import build_parser
    worker = build_parser()._subparsers._group_actions[0].choices["worker"]
    assert "--stall-minutes" in worker.format_help() and "FER_STALL_MINUTES" in worker.format_help()
