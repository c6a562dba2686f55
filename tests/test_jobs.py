"""Background training with real worker processes: the queue, two workers, kill -9, cancel, auto-start, workers
on several hosts. Every test runs on SQLite and on PostgreSQL (conftest's any_db)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from conftest import REPO, cli_env

from fercore.cli import main
from fercore.config import RunConfig
from fercore.jobs.liveness import live_workers, reap, worker_status
from fercore.jobs.spawn import ensure_worker
from fercore.store import RunStore
from fercore.store.entities import RunStatus
from fercore.store.runstore import now

LONG = 500   # epochs of a run that is still training when the test acts on it
RESUMED = 20   # epochs of a run whose worker is killed after its first epoch: the next worker resumes and ends it


@pytest.fixture
def db(any_db):
    return any_db


@pytest.fixture
def procs():
    """Worker processes started by a test; none outlives it."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def env(**extra) -> dict:
    e = cli_env()
    e["OMP_NUM_THREADS"] = "1"   # two workers on a 2-core machine: no thread oversubscription
    e.update({k: str(v) for k, v in extra.items()})
    return e


def start_worker(procs, db: str, *args: str, **extra_env) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "fercore", "worker", "--db", db, "--json", *args], cwd=REPO,
                         env=env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def finish(p: subprocess.Popen, timeout: float = 60) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return json.loads(out)


def wait_for(check, timeout: float = 30, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def queue(store: RunStore, config, n: int = 1, **changes) -> list[int]:
    return [store.create_run(config.replace(**changes), status=RunStatus.QUEUED).id for _ in range(n)]


def exited(pid: int) -> bool:
    """Reap our own child if it ended (ensure_worker's worker is a child of the test process)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def epochs_done(store: RunStore, rid: int) -> int:
    return len(store.epochs(rid))


def test_worker_once_trains_two_queued_runs_and_logs_them(db, tiny, capsys, procs):
    store = RunStore(db)
    ids = queue(store, tiny)
    [broken] = queue(store, tiny, data="no-such-dataset")   # fails; the worker goes on with the next run
    ids += queue(store, tiny)
    assert finish(start_worker(procs, db, "--once"))["trained"] == 3
    run = store.get_run(broken)
    assert run.status == RunStatus.FAILED and "no-such-dataset" in run.error
    for rid in ids:
        run = store.get_run(rid, epochs=True)
        assert run.status == RunStatus.FINISHED, run.error
        assert [e["epoch"] for e in run.epochs] == [1, 2]
        assert run.test.n > 0 and run.worker_id is not None
        assert main(["runs", "log", str(rid), "--db", db]) == 0
        log = capsys.readouterr().out
        assert "epoch 2:" in log and "test accuracy" in log and "ended: finished" in log


@pytest.mark.slow   # several worker processes
def test_two_workers_never_claim_the_same_run(db, tiny, procs):
    from fercore.data import resolve
    store = RunStore(db)
    resolve(tiny.data, store)   # imported once here, so the workers race for runs, not for the import
    ids = queue(store, tiny, 6)
    workers = [start_worker(procs, db, "--once") for _ in range(2)]
    trained = [finish(p)["trained"] for p in workers]
    assert sum(trained) == 6 and min(trained) >= 1, trained
    for rid in ids:
        run = store.get_run(rid, epochs=True)
        assert run.status == RunStatus.FINISHED and len(run.epochs) == 2
        claims = open(run.log_path).read().count("claimed by worker")
        assert claims == 1, f"run {rid} was claimed {claims} times"
    assert len({store.get_run(r).worker_id for r in ids}) == 2


@pytest.mark.slow   # several worker processes
def test_killed_worker_run_is_resumed_by_the_next_worker_and_trains_each_epoch_once(db, tiny, procs):
    from fercore.jobs.execute import resume_path
    store = RunStore(db)
    [rid] = queue(store, tiny, epochs=RESUMED)
    # two workers start together: one takes the run and is killed, the other is "the next worker"
    workers = [start_worker(procs, db, FER_WORKER_IDLE_EXIT_S=60) for _ in range(2)]
    wait_for(lambda: len(worker_status(store)["alive"]) == 2, 60, "both workers to register")
    wait_for(lambda: resume_path(store, rid).is_file(), 60, "the first epoch's saved training state")
    first = store.get_run(rid)
    pid = next(w.pid for w in worker_status(store)["alive"] if w.id == first.worker_id)
    victim = next(p for p in workers if p.pid == pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    killed = store.get_run(rid, epochs=True)   # the survivor may already have taken it over: not asserted here
    assert killed.status.active, "the run ended before the kill"
    t0 = time.monotonic()
    wait_for(lambda: store.get_run(rid).attempts == 2, 15, "the next worker to take the run over")
    assert time.monotonic() - t0 < 10
    wait_for(lambda: store.get_run(rid).status.final, 300, "the resumed run to end")
    run = store.get_run(rid, epochs=True)
    assert run.status == RunStatus.FINISHED, run.error
    assert run.attempts == 2 and run.worker_id != first.worker_id and run.test.n > 0
    assert [e["epoch"] for e in run.epochs] == list(range(1, RESUMED + 1))   # each epoch exactly once
    log = open(run.log_path, encoding="utf-8").read()
    assert log.count("claimed by worker") == 2 and "ended: finished" in log
    resumed_after = int(log.split("resuming after epoch ")[1].split()[0])
    assert 1 <= resumed_after <= len(killed.epochs)
    # the epochs finished before the kill are kept as they were, not trained again
    assert run.epochs[:resumed_after] == killed.epochs[:resumed_after]
    assert not resume_path(store, rid).exists()   # a finished run keeps only its final checkpoint
    survivor = next(p for p in workers if p is not victim)
    survivor.send_signal(signal.SIGTERM)
    assert finish(survivor)["trained"] == 1
    assert worker_status(store)["alive"] == []


def test_cancel_stops_a_running_run_within_seconds_and_a_queued_one_never_starts(db, tiny, procs, capsys):
    store = RunStore(db)
    running, waiting = queue(store, tiny, 2, epochs=LONG)
    p = start_worker(procs, db, "--once")
    wait_for(lambda: epochs_done(store, running) >= 1, 60, "the first epoch")
    assert main(["runs", "cancel", str(waiting), "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    t0 = time.monotonic()
    assert main(["runs", "cancel", str(running), "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "running"   # asked; the worker stops it
    wait_for(lambda: store.get_run(running).status == RunStatus.CANCELLED, 15, "the cancel")
    assert time.monotonic() - t0 < 15
    assert finish(p)["trained"] == 1
    run = store.get_run(running, epochs=True)
    assert run.status == RunStatus.CANCELLED and len(run.epochs) >= 1 and run.test is None and run.val is None
    never = store.get_run(waiting, epochs=True)
    assert never.status == RunStatus.CANCELLED and never.started_at is None and never.epochs == ()


def test_ensure_worker_starts_one_worker_that_trains_and_stops_cleanly(db, tiny, monkeypatch):
    from fercore.jobs.policy import resume_path
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("FER_WORKER_IDLE_EXIT_S", "60")   # a safety net: the test stops it long before
    store = RunStore(db)
    assert not ensure_worker(store)   # nothing queued: no worker
    short, long_ = queue(store, tiny)[0], queue(store, tiny, epochs=LONG)[0]
    assert ensure_worker(store)
    pid = int((store.artifacts / "worker.spawn.lock").read_text())   # known at once, so the test can stop it
    try:
        assert not ensure_worker(store)   # a second caller right after: the new worker is still starting
        assert wait_for(lambda: worker_status(store)["alive"], 30, "the worker to register")[0].pid == pid
        assert not ensure_worker(store)
        wait_for(lambda: store.get_run(short).status == RunStatus.FINISHED, 60, "the first run")
        wait_for(lambda: epochs_done(store, long_) >= 1, 60, "the long run's first epoch")
        os.kill(pid, signal.SIGTERM)   # an instructor stops the lab: the run must not stay `running`
        wait_for(lambda: exited(pid), 30, "the worker to exit")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    run = store.get_run(long_, epochs=True)
    # its owner did not cancel it: queued again to resume from its last finished epoch (policy.end_interrupted)
    assert run.status == RunStatus.QUEUED and run.error.startswith("worker stopped during attempt 1")
    assert "shut down" in run.error and "cancelled" not in run.error
    assert len(run.epochs) >= 1 and resume_path(store, long_).is_file()
    assert store.list_workers() == [] and worker_status(store) == {"alive": [], "queued": 1, "running": 0}
    assert reap(store) == []
    assert (store.artifacts / "worker.log").exists()


def ended_pid() -> int:
    """The id of a process that has ended (on this machine)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_pid_is_checked_only_on_its_own_host_other_hosts_by_heartbeat(db, monkeypatch):
    """Workers of two GPU servers share the database: this host's reaper fails the run of its own dead worker at
    once, but a pid of the other server means nothing here; that server's run fails only when its heartbeat stops."""
    monkeypatch.setenv("FER_HOSTNAME", "gpu-a")
    store = RunStore(db)
    pid = ended_pid()
    here, there = store.register_worker(pid, "cuda:0", "gpu-a"), store.register_worker(pid, "cuda:0", "gpu-b")
    runs = {}
    for worker, host in ((here, "gpu-a"), (there, "gpu-b")):
        runs[host] = store.create_run(RunConfig(name=host), status=RunStatus.RUNNING).id
        store.update_run(runs[host], worker_id=worker, heartbeat_at=now(), lease_token=1,
                         lease_expires_at=now() + timedelta(seconds=60))
    assert reap(store) == [runs["gpu-a"]]
    assert store.get_run(runs["gpu-a"]).error.startswith("worker stopped")
    assert store.get_run(runs["gpu-b"]).status == RunStatus.RUNNING
    assert [w.host for w in live_workers(store)] == ["gpu-b"]
    assert reap(store) == []
    store.update_run(runs["gpu-b"], lease_expires_at=now() - timedelta(seconds=1))   # gpu-b went silent
    assert reap(store) == [runs["gpu-b"]]
    assert store.get_run(runs["gpu-b"]).error.startswith("worker stopped")


@pytest.mark.slow   # several worker processes
def test_a_worker_per_device_share_the_queue_and_stop_together_on_sigterm(db, tiny, tmp_path):
    """What `worker --gpus all` does with cuda:0..N-1, here with two CPU workers: each claims its own runs, and a
    SIGTERM to the starter stops both, their runs queued again to resume and their epochs kept."""
    from fercore.jobs.pool import start_workers
    store = RunStore(db)
    ids = queue(store, tiny, 3, epochs=1)
    res = start_workers(store, ["cpu", "cpu"], once=True)
    assert res["trained"] == 3 and [w["exit_code"] for w in res["workers"]] == [0, 0], res
    assert all(store.get_run(r).status == RunStatus.FINISHED for r in ids)

    long_runs = queue(store, tiny, 2, epochs=LONG)
    err = open(tmp_path / "pool.err", "w+")
    starter = subprocess.Popen([sys.executable, "-c", "import json; from fercore.store import RunStore; "
                                "from fercore.jobs.pool import start_workers; "
                                f"print(json.dumps(start_workers(RunStore({db!r}), ['cpu', 'cpu'])))"],
                               cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        wait_for(lambda: all(epochs_done(store, r) >= 1 for r in long_runs), 90, "both long runs to train")
        starter.send_signal(signal.SIGTERM)
        out, _ = starter.communicate(timeout=60)
    finally:
        if starter.poll() is None:
            starter.kill()
        err.close()
    assert starter.returncode == 0, (tmp_path / "pool.err").read_text()
    assert [w["exit_code"] for w in json.loads(out)["workers"]] == [0, 0]
    for rid in long_runs:
        run = store.get_run(rid, epochs=True)
        assert run.status == RunStatus.QUEUED and run.error.startswith("worker stopped during attempt 1") and run.epochs
    assert worker_status(store)["alive"] == []


def test_gpus_all_says_so_on_a_machine_without_a_gpu(db, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["worker", "--gpus", "all", "--once", "--db", db, "--json"]) == 2
    assert "no GPU" in json.loads(capsys.readouterr().out)["error"]


def test_gpus_all_starts_one_worker_per_gpu_that_share_the_queue(db, tiny, procs):
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no GPU on this machine")
    store = RunStore(db)
    ids = queue(store, tiny, 2 * torch.cuda.device_count())
    p = subprocess.Popen([sys.executable, "-m", "fercore", "worker", "--gpus", "all", "--once", "--db", db, "--json"],
                         cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    out = finish(p, timeout=300)
    assert [w.device for w in out["workers"]] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert out["trained"] == len(ids)
    assert all(store.get_run(r).status == RunStatus.FINISHED for r in ids)


def test_a_worker_the_app_starts_leaves_a_core_to_the_app_on_a_small_cpu_machine(db, tiny, monkeypatch):
    from fercore.jobs import spawn as worker
    assert worker.app_worker_threads(cores=2, gpu=False) == 1
    assert worker.app_worker_threads(cores=4, gpu=False) == 3
    assert worker.app_worker_threads(cores=1, gpu=False) == 1, "one core: the worker still gets it"
    assert worker.app_worker_threads(cores=16, gpu=False) is None, "cores to spare: torch's default"
    assert worker.app_worker_threads(cores=2, gpu=True) is None, "training runs on the GPU"
    started = []

    class FakePopen:
        pid = 4242

        def __init__(self, args, **kwargs):
            started.append(args)
    monkeypatch.setattr(worker.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(worker, "app_worker_threads", lambda: 1)
    store = RunStore(db)
    queue(store, tiny)
    assert ensure_worker(store)
    assert started[0][-3:] == ["worker", "--threads", "1"]


def test_worker_threads_sets_the_training_threads_and_refuses_zero(db, capsys):
    import torch

    from fercore.cli import main
    before = torch.get_num_threads()
    try:
        assert main(["--db", db, "worker", "--once", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert main(["--db", db, "worker", "--once", "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
