"""Accidents during training and at start-up: a full disk, a diverging loss, a GPU out of memory, a training
process killed with -9, several processes opening a new or older database at once.

Each time the run ends with a clear status and reason, its finished epochs stay, no half-written file is left,
and the next run proceeds.
"""
from __future__ import annotations

import errno
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_env

import fercore.train
from fercore.cli import main
from fercore.config import RunConfig
from fercore.data.dataset import FERDataset
from fercore.jobs.liveness import reap
from fercore.jobs.runfile import read_run_file
from fercore.jobs.worker import run_worker
from fercore.store import RunStore
from fercore.store.entities import RunStatus
from fercore.store.queue import lease_seconds
from fercore.store.schema import SCHEMA_VERSION, Base

TINY = RunConfig(data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,), batch_size=32,
                 epochs=2, lr=3e-3, tta="none")


def queue(store: RunStore, n: int, **changes) -> list[int]:
    return [store.create_run(TINY.replace(name=f"run{i}", **changes), status=RunStatus.QUEUED).id for i in range(n)]


def once_in_the_second_epoch(monkeypatch, fault) -> dict:
    """Make the training loss call `fault(loss)` once, in the first batch after the first epoch of the next run
    ends; later runs train normally. Returns the state, so a test can check that the fault fired."""
    state = {"epochs_ended": 0, "fired": False}
    real_loss, real_dead_units = fercore.train.compute_loss, fercore.train.dead_unit_fractions

    def dead_units(*a, **kw):   # called once at the end of every epoch
        state["epochs_ended"] += 1
        return real_dead_units(*a, **kw)

    def loss(*a, **kw):
        value = real_loss(*a, **kw)
        if state["epochs_ended"] >= 1 and not state["fired"]:
            state["fired"] = True
            return fault(value)
        return value

    monkeypatch.setattr(fercore.train, "dead_unit_fractions", dead_units)
    monkeypatch.setattr(fercore.train, "compute_loss", loss)
    return state


def run_dir_files(store: RunStore, run_id: int) -> set[str]:
    return {p.name for p in store.run_dir(run_id, create=False).iterdir()}


# --- faults while training: the worker fails the run, keeps its epochs, goes on ----------------------------

@pytest.mark.parametrize("target, epochs, left", [
    ("checkpoint.pt", [1, 2], {"train.log", "resume.pt"}),   # the final checkpoint; the state to resume from stays
    ("resume.pt", [1], {"train.log"}),                        # the training state saved after epoch 1
])
def test_disk_full_while_saving_a_checkpoint(db, monkeypatch, target, epochs, left):
    store = RunStore(db)
    full, after = queue(store, 2)
    real_save = torch.save
    failed = []

    def save_on_a_full_disk(obj, f, *a, **kw):
        if failed or target not in Path(f).name:
            return real_save(obj, f, *a, **kw)
        failed.append(str(f))
        Path(f).write_bytes(b"the first half of a checkpoint")   # what a full disk leaves mid-write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)   # whichever module saves it
    assert run_worker(store, once=True, poll_s=0.2) == 2 and failed
    run = store.get_run(full, epochs=True)
    assert run.status == RunStatus.FAILED and "disk is full" in run.error and "epochs are kept" in run.error
    assert [e["epoch"] for e in run.epochs] == epochs and all(e["val_acc"] is not None for e in run.epochs)
    assert run.checkpoint is None and run_dir_files(store, full) == left   # no half-written or temporary file
    nxt = store.get_run(after)
    assert nxt.status == RunStatus.FINISHED and read_run_file(Path(nxt.checkpoint))["classes"]
    assert run_dir_files(store, after) >= {"checkpoint.pt"} and "resume.pt" not in run_dir_files(store, after)
    assert store.integrity_ok()


def test_disk_full_while_importing_a_dataset_leaves_no_half_file(db, monkeypatch, capfd):
    store = RunStore(db)
    real_save = FERDataset.save

    def save_on_a_full_disk(self, path, *a, **kw):
        Path(path).write_bytes(b"PK half an npz")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FERDataset, "save", save_on_a_full_disk)
    code = main(["data", "import", "synthetic:140", "--db", db, "--json"])
    out, err = capfd.readouterr()
    assert code != 0 and "Traceback" not in out + err
    assert "disk is full" in json.loads(out)["error"]
    assert store.list_datasets() == [] and list((store.artifacts / "datasets").iterdir()) == []
    monkeypatch.setattr(FERDataset, "save", real_save)   # space freed: the same import now works
    assert main(["data", "import", "synthetic:140", "--db", db, "--json"]) == 0
    assert [d.name for d in store.list_datasets()] == ["synthetic:140:0"]


def test_nan_loss_fails_the_run_naming_the_learning_rate_and_keeps_the_finished_epoch(db, monkeypatch):
    store = RunStore(db)
    diverged, after = queue(store, 2)
    fault = once_in_the_second_epoch(monkeypatch, lambda loss: loss * float("nan"))
    assert run_worker(store, once=True, poll_s=0.2) == 2 and fault["fired"]
    run = store.get_run(diverged, epochs=True)
    assert run.status == RunStatus.FAILED and "learning rate" in run.error and "epoch 2" in run.error
    assert "NaN or infinite" in run.error and "epochs are kept" in run.error
    first, second = run.epochs   # epoch 1 as it finished; epoch 2 recorded as where it diverged (curves end there)
    assert first["epoch"] == 1 and first["train_loss"] is not None and first["val_acc"] is not None
    assert second["epoch"] == 2 and second["train_loss"] is None and second["val_acc"] is None
    assert run.checkpoint is None and run.test is None
    assert store.get_run(after).status == RunStatus.FINISHED


def test_gpu_out_of_memory_fails_the_run_suggesting_a_smaller_batch_and_the_worker_goes_on(db, monkeypatch):
    store = RunStore(db)
    too_big, after = queue(store, 2)

    def out_of_memory(_loss):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")

    fault = once_in_the_second_epoch(monkeypatch, out_of_memory)
    assert run_worker(store, once=True, poll_s=0.2) == 2 and fault["fired"]
    run = store.get_run(too_big, epochs=True)
    assert run.status == RunStatus.FAILED and "smaller batch" in run.error and "Tried to allocate" not in run.error
    assert [e["epoch"] for e in run.epochs] == [1]
    nxt = store.get_run(after, epochs=True)
    assert nxt.status == RunStatus.FINISHED and len(nxt.epochs) == 2 and nxt.test.n > 0


# --- a foreground training process killed with -9 ----------------------------------------------------------

@pytest.mark.slow   # a killed process and a lease to expire
def test_killed_foreground_training_is_requeued_by_reap_and_resumed_by_the_next_worker(db, tmp_path):
    from fercore.jobs.policy import resume_path
    store = RunStore(db)
    epochs = 30   # the kill comes after the first epoch; the next worker resumes the run and ends it
    stderr = open(tmp_path / "train.stderr", "w+")   # a file, not a pipe: a full pipe would stall the trainer
    p = subprocess.Popen([sys.executable, "-m", "fercore", "train", "--data", "synthetic:140", "--conv-blocks", "2",
                          "--filters", "4,8", "--convs-per-block", "1", "--fc-units", "8", "--batch-size", "32",
                          "--tta", "none", "--epochs", str(epochs), "--name", "victim", "--db", db, "--json"],
                         cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            victim = [r for r in store.list_runs() if r.name == "victim"]   # not the shipped starter
            if victim and resume_path(store, victim[0].id).is_file():   # its first epoch and its saved state
                break
            time.sleep(0.1)
        assert p.poll() is None, (tmp_path / "train.stderr").read_text()
        rid = store.resolve("victim")
        assert store.get_run(rid).status == RunStatus.RUNNING and reap(store) == []   # alive: never reaped
        assert store.get_run(rid).attempts == 1
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
        stderr.close()
    kept = store.epochs(rid)
    assert 1 <= len(kept) < epochs
    killed_at = time.monotonic()
    while store.get_run(rid).status == RunStatus.RUNNING and time.monotonic() - killed_at < lease_seconds() + 15:
        reap(store)   # what every worker and every page load does
        time.sleep(0.5)
    waited = time.monotonic() - killed_at
    run = store.get_run(rid, epochs=True)
    # its heartbeat stopped: queued again, to go on from its saved state rather than stay `running` or start over
    assert run.status == RunStatus.QUEUED and run.error.startswith("worker stopped during attempt 1"), run
    assert waited <= lease_seconds() + 5, f"the dead run stayed `running` for {waited:.0f} s"
    assert list(run.epochs) == kept   # the finished epochs stay
    saved = torch.load(resume_path(store, rid), map_location="cpu", weights_only=True)["epoch"]
    assert saved in (len(kept), len(kept) - 1)   # killed after an epoch's row and state, or between the two
    [nxt] = queue(store, 1, epochs=1)   # the lab goes on: the next worker resumes the run, then trains the new one
    assert run_worker(store, once=True, poll_s=0.2) == 2
    run = store.get_run(rid, epochs=True)
    assert run.status == RunStatus.FINISHED and run.test.n > 0 and run.attempts == 2, run.error
    assert [e["epoch"] for e in run.epochs] == list(range(1, epochs + 1))   # each epoch exactly once
    assert run.epochs[:saved] == tuple(kept[:saved])   # the epochs before the kill were not trained again
    assert not resume_path(store, rid).exists()
    assert store.get_run(nxt).status == RunStatus.FINISHED
    assert store.integrity_ok()


# --- the database: created and upgraded in place, by several processes at once -----------------------------

def open_at_once(path: Path, n: int = 6) -> list[str]:
    """n threads (each its own connection, as separate processes would have) open the database together;
    returns the errors they met."""
    start, errors = threading.Barrier(n), []

    def open_store():
        start.wait()
        try:
            RunStore(str(path)).engine.dispose()
        except Exception as e:   # noqa: BLE001 - the test reports whatever went wrong
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=open_store) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def schema_of(path: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(path)
    try:
        return sorted(con.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    finally:
        con.close()


def make_old_database(path: Path) -> None:
    """A runs.db from before epochs had grad_norms/extra, runs had summaries, and there was a schema version."""
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE runs (id INTEGER PRIMARY KEY, name VARCHAR(200), status VARCHAR(16), config JSON,
                           created_at DATETIME);
        CREATE TABLE epochs (id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id), epoch INTEGER,
                             train_loss FLOAT, train_acc FLOAT, val_loss FLOAT, val_acc FLOAT);
        INSERT INTO runs (name, status, config, created_at) VALUES ('old', 'finished', '{}', '2025-01-01 00:00:00');
        INSERT INTO epochs (run_id, epoch, train_loss, train_acc, val_loss, val_acc) VALUES (1, 1, 1.5, 0.4, 1.6, 0.35);
        INSERT INTO epochs (run_id, epoch, train_loss, train_acc, val_loss, val_acc) VALUES (1, 2, 1.2, 0.5, 1.4, 0.45);
    """)
    con.commit()
    con.close()


def test_a_new_database_opened_by_several_processes_at_once_is_created_once(tmp_path):
    reference = tmp_path / "alone.db"
    RunStore(str(reference)).engine.dispose()
    for attempt in range(3):   # the race is timing-dependent: try it a few times
        path = tmp_path / f"together{attempt}.db"
        assert open_at_once(path) == []
        assert schema_of(path) == schema_of(reference)
        assert RunStore(str(path)).integrity_ok()


def test_an_older_database_is_upgraded_in_place_even_by_several_processes_at_once(tmp_path):
    reference = tmp_path / "new.db"
    RunStore(str(reference)).engine.dispose()
    path = tmp_path / "old.db"
    make_old_database(path)
    assert open_at_once(path) == []
    assert schema_of(path) == schema_of(reference)   # every table, column's table, and index is there
    con = sqlite3.connect(path)
    columns = {t.name: {r[1] for r in con.execute(f"PRAGMA table_info({t.name})")} for t in Base.metadata.sorted_tables}
    con.close()
    assert all(columns[t.name] >= {c.name for c in t.columns} for t in Base.metadata.sorted_tables)
    store = RunStore(str(path))
    assert store.schema_version() == SCHEMA_VERSION
    old = store.get_run("old", epochs=True)
    assert [(e["epoch"], e["val_acc"]) for e in old.epochs] == [(1, 0.35), (2, 0.45)]   # no epoch lost
    assert old.status == RunStatus.FINISHED
    rid = store.create_run(TINY.replace(name="new"), status=RunStatus.RUNNING).id
    store.add_epoch(rid, {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5, "grad_norms": {"fc": 0.1}})
    assert store.get_run(rid, epochs=True).epochs[0]["grad_norms"] == {"fc": 0.1}
    assert store.integrity_ok()


def test_a_database_from_a_newer_version_keeps_its_version(tmp_path):
    """Opening a newer lab's runs.db with this one must not write an older version number into it."""
    newer = SCHEMA_VERSION + 1
    path = tmp_path / "newer.db"
    RunStore(str(path)).engine.dispose()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    con.commit()
    con.close()
    assert RunStore(str(path)).schema_version() == newer


def test_sessions_importing_the_same_dataset_at_once_all_succeed(tmp_path):
    """Two students import the same file at the same moment (app sessions are threads of one process; workers
    that meet a run's data on first use are processes): every import succeeds, one dataset and one file result."""
    from fercore.data.sources import load_source
    ds = load_source("synthetic:140")
    for attempt in range(3):   # the race is timing-dependent: try it a few times
        db = str(tmp_path / f"lab{attempt}.db")
        stores = [RunStore(db) for _ in range(4)]
        start, errors = threading.Barrier(len(stores)), []

        def import_it(store, start=start, errors=errors):
            start.wait()
            try:
                store.add_dataset(ds, "faces")
            except Exception as e:   # noqa: BLE001 - the test reports whatever went wrong
                errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=import_it, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert [d.name for d in stores[0].list_datasets()] == ["faces"]
        assert [p.name for p in (stores[0].artifacts / "datasets").iterdir()] == [f"{ds.fingerprint()}.npz"]
        assert len(stores[0].load_dataset("faces")) == len(ds)
