"""One owner per run at a time: leases with fencing, the reaper, cancel and claim as single statements, the
interrupt policy, resume refusing changed data, one artifact folder per database, and one worker-start policy.

The store's tests run on SQLite and on PostgreSQL (conftest's any_db); those that start processes run on SQLite."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_env
from sqlalchemy import create_engine, text

from fercore.cli import main
from fercore.config import RunConfig
from fercore.jobs import execute, spawn
from fercore.jobs.execute import execute_run
from fercore.jobs.lease import Attempt
from fercore.jobs.liveness import reap
from fercore.jobs.policy import can_resume, resume_path
from fercore.safeio import atomic_path
from fercore.store import LeaseLost, RunStatus, RunStore
from fercore.store.runstore import now

TINY = RunConfig(data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,), batch_size=32,
                 epochs=4, lr=3e-3, tta="none")
TRAIN_FLAGS = ["--conv-blocks", "2", "--filters", "4,8", "--convs-per-block", "1", "--fc-units", "8",
               "--batch-size", "32", "--tta", "none"]


def snapshot(store: RunStore) -> list:
    """Everything the reaper could change: every run (but its running time, which grows) and every worker row."""
    runs = [{k: v for k, v in r.to_json().items() if k != "duration_s"} for r in store.list_runs()]
    return runs + [w.to_json() for w in store.list_workers()]


def wait_for(check, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- fencing ---------------------------------------------------------------------------------------------
def test_a_worker_whose_lease_was_taken_writes_nothing_more(any_db, monkeypatch, caplog):
    """The run's lease is taken (reaped and claimed by another worker) right after its first epoch was saved: the
    first attempt stops at its next report, and not one epoch, evaluation, status or file of it lands later."""
    store = RunStore(any_db)
    rid = store.create_run(TINY.replace(name="stolen"), status=RunStatus.RUNNING).id
    thief = store.register_worker(4242, "cpu", "elsewhere")
    real_checkpoint = execute.StoreRecorder.on_checkpoint

    def checkpoint_then_lose_the_run(self, state):
        real_checkpoint(self, state)
        if state["epoch"] == 1:   # another worker takes the run over, as after a reap
            store.set_status(rid, RunStatus.QUEUED, "reaped")
            assert store.claim_next_run(thief, "cpu").lease_token == self.attempt.token + 1

    monkeypatch.setattr(execute.StoreRecorder, "on_checkpoint", checkpoint_then_lose_the_run)
    refused = store.refused_writes
    with caplog.at_level("WARNING"):
        run = execute_run(store, rid, device="cpu")
    assert run.status == RunStatus.RUNNING and run.worker_id == thief and run.lease_token == 2   # the thief's
    assert [e["epoch"] for e in store.epochs(rid)] == [1]
    assert run.val is None and run.test is None and run.checkpoint is None
    assert not (store.run_dir(rid) / "checkpoint.pt").exists()
    assert torch.load(resume_path(store, rid), weights_only=True)["epoch"] == 1
    assert store.refused_writes > refused
    assert f"lost the lease on run {rid} (taken by attempt 2)" in caplog.text


def test_a_file_lands_only_while_its_writer_holds_the_lease(any_db):
    store = RunStore(any_db)
    rid = store.create_run(TINY, status=RunStatus.RUNNING).id
    token = store.take_lease(rid)
    target = store.run_dir(rid) / "resume.pt"
    with atomic_path(target, guard=lambda: store.holding_lease(rid, token)) as tmp:
        tmp.write_text("mine")
    store.take_lease(rid)   # a newer attempt
    with pytest.raises(LeaseLost), atomic_path(target, guard=lambda: store.holding_lease(rid, token)) as tmp:
        tmp.write_text("stale")
    assert target.read_text() == "mine" and [p.name for p in target.parent.iterdir()] == ["resume.pt"]


def test_a_locked_database_never_stalls_a_training_step(db):
    """The loop's progress goes to the heartbeat, which writes it with its lease: a step never waits on the lock."""
    import sqlite3

    from fercore.jobs.liveness import Heartbeat
    store = RunStore(db)
    rid = store.create_run(TINY, status=RunStatus.RUNNING).id
    attempt = Attempt(rid, store.take_lease(rid))
    recorder = execute.StoreRecorder(store, attempt)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")   # another process holds the write lock
    try:
        t0 = time.monotonic()
        assert recorder.on_batch({"epoch": 1, "batch": 3, "batches": 4}) is False
        took = time.monotonic() - t0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert took < 0.5, f"a training step waited {took:.1f} s for the database"
    beat = Heartbeat(store.url, None, interval=0.1)
    beat.attempt = attempt
    beat.start()
    try:
        wait_for(lambda: store.get_run(rid).progress.get("batch") == 3, 20, "the heartbeat to write the progress")
    finally:
        beat.halt()


# --- the reaper -----------------------------------------------------------------------------------------
def test_the_reaper_takes_only_expired_leases_and_writes_nothing_otherwise(any_db):
    """A worker whose host clock runs minutes behind writes old-looking times; its lease, on the database's clock,
    is still valid, so the reaper leaves it (and writes nothing at all). Once the lease expires, it takes the run."""
    store = RunStore(any_db)
    rid = store.create_run(TINY.replace(name="skewed")).id
    worker = store.register_worker(os.getpid(), "cpu")
    assert store.claim_next_run(worker, "cpu").id == rid
    store.update_run(rid, heartbeat_at=now() - timedelta(minutes=10), progress_at=now() - timedelta(minutes=10))
    before = snapshot(store)
    assert reap(store) == [] and snapshot(store) == before
    store.update_run(rid, lease_expires_at=now() - timedelta(seconds=1))
    assert reap(store) == [rid]
    run = store.get_run(rid)
    assert run.status == RunStatus.QUEUED and run.error.startswith("worker stopped during attempt 1")
    assert "starting it again" in run.error and reap(store) == []   # nothing saved yet: it starts over


def test_a_reaped_run_with_saved_state_is_requeued_until_it_took_three_workers_down(any_db):
    store = RunStore(any_db)
    rid = store.create_run(TINY.replace(name="crashy")).id
    worker = store.register_worker(os.getpid(), "cpu")
    errors = []
    for attempt in (1, 2, 3):
        assert store.claim_next_run(worker, "cpu").attempts == attempt
        resume_path(store, rid).parent.mkdir(parents=True, exist_ok=True)
        resume_path(store, rid).write_bytes(b"state")
        store.update_run(rid, lease_expires_at=now() - timedelta(seconds=1))
        assert reap(store) == [rid]
        errors.append(store.get_run(rid))
    assert [r.status for r in errors] == [RunStatus.QUEUED, RunStatus.QUEUED, RunStatus.FAILED]
    assert errors[0].error.startswith("worker stopped during attempt 1")
    assert "stopped 3 times" in errors[2].error and "left failed" in errors[2].error


# --- cancel and claim: one statement each -------------------------------------------------------------------
def test_a_cancel_during_a_claim_asks_the_worker_instead_of_showing_cancelled(any_db):
    """A claim holds the run's row (its transaction has not committed yet) when its owner cancels it: the cancel
    waits for it and then asks the worker to stop; it never marks `cancelled` a run that a worker trains."""
    store = RunStore(any_db)
    rid = store.create_run(TINY.replace(name="raced")).id
    other = create_engine(store.url)
    got = {}
    try:
        with other.begin() as con:   # what a claim does, not committed yet
            con.execute(text("UPDATE runs SET status = 'running', attempts = 1, lease_token = 1 WHERE id = :id"),
                        {"id": rid})
            t = threading.Thread(target=lambda: got.update(run=store.request_cancel(rid)), daemon=True)
            t.start()
            time.sleep(1.0)   # the cancel is now waiting for the claim's lock
        t.join(timeout=30)
    finally:
        other.dispose()
    run = store.get_run(rid)
    assert run.status == RunStatus.RUNNING and run.cancel_requested and got["run"].status == RunStatus.RUNNING


def test_a_cancelled_run_is_never_claimed_and_a_claim_takes_each_run_once(any_db):
    store = RunStore(any_db)
    ids = [store.create_run(TINY.replace(name=f"r{i}")).id for i in range(6)]
    workers = [store.register_worker(1000 + i, "cpu") for i in range(3)]
    start, claimed = threading.Barrier(4), []

    def claim(w):
        start.wait()
        while (run := store.claim_next_run(w)) is not None:
            claimed.append(run.id)

    def cancel():
        start.wait()
        for rid in ids[::2]:
            store.request_cancel(rid)

    threads = [threading.Thread(target=claim, args=(w,)) for w in workers] + [threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(claimed) == len(set(claimed))
    for run in store.get_runs(ids):
        if run.status == RunStatus.CANCELLED:
            assert run.id not in claimed and run.attempts == 0 and run.worker_id is None
        else:
            assert run.status == RunStatus.RUNNING and run.id in claimed and run.attempts == 1
            assert run.cancel_requested == (run.id in ids[::2])


# --- the interrupt policy ---------------------------------------------------------------------------------
def start_cli(db: str, tmp_path: Path, *args: str) -> tuple[subprocess.Popen, object]:
    err = open(tmp_path / "stderr.txt", "w+")
    # Ctrl-C as at a terminal, even when the tests themselves run in the background (`nohup pytest &`), where the
    # shell ignores SIGINT for them and their children: Python raises KeyboardInterrupt only if it starts with SIG_DFL
    p = subprocess.Popen([sys.executable, "-m", "fercore", *args, "--db", db], cwd=REPO, env=cli_env(),
                         stdout=subprocess.PIPE, stderr=err, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return p, err


@pytest.mark.slow
def test_sigterm_to_a_worker_requeues_its_run_to_resume(db, tmp_path):
    store = RunStore(db)
    rid = store.create_run(TINY.replace(name="shut-down", epochs=500)).id
    p, err = start_cli(db, tmp_path, "worker", "--json")
    try:
        wait_for(lambda: resume_path(store, rid).is_file(), 120, "the first epoch")
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        err.close()
    assert p.returncode == 0 and json.loads(out)["trained"] == 1
    run = store.get_run(rid, epochs=True)
    assert run.status == RunStatus.QUEUED and run.error.startswith("worker stopped during attempt 1"), run.error
    assert "cancelled" not in run.error and not run.cancel_requested and run.epochs


@pytest.mark.slow
def test_ctrl_c_on_a_foreground_train_cancels_the_run_which_can_resume(db, tmp_path):
    store = RunStore(db)
    p, err = start_cli(db, tmp_path, "train", "--data", "synthetic:140", *TRAIN_FLAGS, "--epochs", "500",
                       "--name", "interrupted", "--json")
    try:
        wait_for(lambda: any(r.name == "interrupted" and resume_path(store, r.id).is_file()
                             for r in store.list_runs()), 120, "the first epoch")
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
        err.seek(0)
        stderr = err.read()
    finally:
        if p.poll() is None:
            p.kill()
        err.close()
    run = store.get_run("interrupted")
    assert run.status == RunStatus.CANCELLED and "Ctrl-C" in run.error and can_resume(store, run), run.error
    assert p.returncode != 0 and "Traceback" not in stderr and "cancelled" in json.loads(out)["error"]
    assert reap(store) == [] and store.get_run(run.id).status == RunStatus.CANCELLED   # not reaped and resumed


def test_a_stop_asked_of_the_worker_is_never_its_owners_cancel(db, monkeypatch):
    """SIGTERM reaches the training thread through the attempt: the run is requeued, not `cancelled by its owner`."""
    store = RunStore(db)
    rid = store.create_run(TINY.replace(name="stopping")).id
    claimed = store.claim_next_run(store.register_worker(os.getpid(), "cpu"), "cpu")
    stop = threading.Event()
    real_checkpoint = execute.StoreRecorder.on_checkpoint

    def checkpoint_then_sigterm(self, state):
        real_checkpoint(self, state)
        stop.set()

    monkeypatch.setattr(execute.StoreRecorder, "on_checkpoint", checkpoint_then_sigterm)
    run = execute_run(store, rid, device="cpu", attempt=Attempt(rid, claimed.lease_token, stop))
    assert run.status == RunStatus.QUEUED and "shut down" in run.error and "owner" not in run.error
    assert [e["epoch"] for e in store.epochs(rid)] == [1] and not run.cancel_requested


# --- resume refuses changed data ---------------------------------------------------------------------------
def test_resume_refuses_a_dataset_whose_images_changed_with_a_sentence(db, monkeypatch, capsys):
    from fercore.data.sources import load_source
    store = RunStore(db)
    store.add_dataset(load_source("synthetic:140"), "faces")
    rid = store.create_run(TINY.replace(name="moved", data="faces"), status=RunStatus.RUNNING).id
    monkeypatch.setattr(execute.StoreRecorder, "on_batch", lambda self, progress: progress["epoch"] > 1)
    assert execute_run(store, rid, device="cpu").status == RunStatus.CANCELLED
    monkeypatch.undo()
    # re-imported under the same name: other images, a new version; the run's own version stays, so it resumes on it
    store.add_dataset(load_source("synthetic:140:7"), "faces")
    old = [d for d in store.list_datasets(versions=True) if d.name != "faces"]
    assert len(old) == 1 and old[0].fingerprint == store.get_run(rid).dataset_fingerprint
    assert store.dataset_info("faces", fingerprint=old[0].fingerprint).fingerprint == old[0].fingerprint
    store.delete_dataset(old[0].name)   # ... until the version it trained on is gone
    assert main(["runs", "resume", "moved", "--db", db, "--no-worker", "--json"]) == 2
    said = json.loads(capsys.readouterr().out)["error"]
    assert "cannot resume" in said and "'faces'" in said and "has changed" in said and "Traceback" not in said
    store.set_status(rid, RunStatus.QUEUED)   # queued anyway (an older version, a script): the worker refuses
    store.claim_next_run(store.register_worker(os.getpid(), "cpu"), "cpu")
    run = execute_run(store, rid, device="cpu")
    assert run.status == RunStatus.FAILED and "changed since this run started" in run.error
    assert len(store.epochs(rid)) == 1


# --- one artifact folder per database ----------------------------------------------------------------------
@pytest.mark.slow
def test_two_postgresql_databases_get_artifact_folders_of_their_own(pg_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one, two = pg_server.create_database(), pg_server.create_database()
    a, b = RunStore(one), RunStore(two)
    assert a.artifacts != b.artifacts and a.artifacts.parent == b.artifacts.parent == tmp_path / "fer_artifacts"
    assert RunStore(one).artifacts == a.artifacts   # stored in the database: the same folder every time
    assert a.artifacts.name.startswith(one.rsplit("/", 1)[1])
    ra, rb = a.create_run(RunConfig(name="x")).id, b.create_run(RunConfig(name="x")).id
    assert ra == rb and a.run_dir(ra) != b.run_dir(rb)   # run 1 of each class no longer collides
    with a.engine.begin() as con:   # a database from before: runs, and no folder of its own recorded
        con.execute(text("DELETE FROM meta WHERE key = 'artifacts_folder'"))
    assert RunStore(one).artifacts == tmp_path / "fer_artifacts"   # keeps the folder its files are in
    monkeypatch.setenv("FER_ARTIFACTS", str(tmp_path / "shared"))
    assert RunStore(two).artifacts == tmp_path / "shared"


# --- one worker-start policy -------------------------------------------------------------------------------
@pytest.fixture
def spawned(monkeypatch) -> list:
    """Workers ensure_worker would start (recorded, not started)."""
    started = []

    class FakeWorker:
        pid = os.getpid()   # alive, as a worker still importing torch would be

    monkeypatch.setattr(spawn, "_spawn_worker", lambda store: started.append(store.url) or FakeWorker())
    return started


def test_no_command_starts_a_worker_under_autostart_0_and_each_says_so(db, monkeypatch, capsys, spawned):
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")
    base = ["--db", db]
    assert main(["train", "--queue", "--data", "synthetic:140", *TRAIN_FLAGS, "--epochs", "1", *base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["worker"] == "off"
    assert main(["train", "--queue", "--data", "synthetic:140", *TRAIN_FLAGS, "--epochs", "1", *base]) == 0
    assert "No worker was started (FER_AUTOSTART_WORKER=0)" in capsys.readouterr().out
    assert main(["lesson", "start", "augmentation", "--data", "synthetic:140", "--epochs", "1", *base]) == 0
    assert "No worker was started (FER_AUTOSTART_WORKER=0)" in capsys.readouterr().out
    assert main(["sweep", "start", "--data", "synthetic:140", *TRAIN_FLAGS, "--epochs", "1", "--method", "grid",
                 "--trials", "2", "--space", '{"lr": [0.001, 0.003]}', *base]) == 0
    assert "No worker was started (FER_AUTOSTART_WORKER=0)" in capsys.readouterr().out
    store = RunStore(db)
    rid = store.list_runs(status=RunStatus.QUEUED)[0].id
    store.request_cancel(rid)
    resume_path(store, rid).parent.mkdir(parents=True, exist_ok=True)
    resume_path(store, rid).write_bytes(b"state")
    assert main(["runs", "resume", str(rid), *base]) == 0
    assert "No worker was started (FER_AUTOSTART_WORKER=0)" in capsys.readouterr().out
    assert spawned == []


def test_with_autostart_on_the_words_follow_what_ensure_worker_did(db, monkeypatch, capsys, spawned):
    monkeypatch.delenv("FER_AUTOSTART_WORKER", raising=False)
    flags = ["train", "--queue", "--data", "synthetic:140", *TRAIN_FLAGS, "--epochs", "1", "--db", db]
    assert main(flags) == 0
    assert "A worker was started to train it." in capsys.readouterr().out and len(spawned) == 1
    assert main(flags) == 0   # the first one is still starting: none more
    assert "A worker is starting and will train it." in capsys.readouterr().out and len(spawned) == 1
    assert main([*flags, "--no-worker"]) == 0
    assert "No worker was started (--no-worker)" in capsys.readouterr().out and len(spawned) == 1
