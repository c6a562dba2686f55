"""Starting a worker on demand: the one place that decides whether to (ensure_worker), and says what it did.

ensure_worker() starts one detached worker when runs are queued and none is alive, unless the instructor runs
the workers themselves (FER_AUTOSTART_WORKER=0: `python -m fercore worker` on a GPU server, say) or the caller
was told not to (`--no-worker`). The CLI (`train --queue`, `runs resume`, `lesson start`, `sweep start`) and
the pages only call it and print its sentence, so what they say follows what it did. That worker exits after
IDLE_EXIT_S seconds with an empty queue ($FER_WORKER_IDLE_EXIT_S), so it never lingers after a class.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fercore.jobs.liveness import live_workers, pid_alive, reap
from fercore.store import RunStore
from fercore.store.entities import RunStatus

AUTOSTART_ENV = "FER_AUTOSTART_WORKER"
SPAWN_GRACE_S = 30.0       # how long a freshly spawned worker has to register before another may be spawned
IDLE_EXIT_S = 300.0        # a worker started by ensure_worker exits after this long with nothing to do
IDLE_EXIT_ENV = "FER_WORKER_IDLE_EXIT_S"
REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_MACHINE_CORES = 4   # at most this many cores and no GPU: a worker the app starts leaves one core to the app
START_HINT = "start one with `python -m fercore worker`"

log = logging.getLogger("fercore.worker")


@dataclass(frozen=True)
class WorkerStart:
    """What ensure_worker did, and why; true when it started a worker."""
    started: bool
    why: str   # started / alive / starting / nothing queued / off / not asked

    def __bool__(self) -> bool:
        return self.started

    def sentence(self, runs: int = 1) -> str:
        """What to tell the person who queued `runs` run(s)."""
        it = "it" if runs == 1 else "them"
        return {"started": f"A worker was started to train {it}.",
                "alive": f"A worker is running and will train {it}.",
                "starting": f"A worker is starting and will train {it}.",
                "off": f"No worker was started ({AUTOSTART_ENV}=0); {START_HINT} to train {it}.",
                "not asked": f"No worker was started (--no-worker); {START_HINT} to train {it}.",
                }.get(self.why, "")


def autostart_enabled() -> bool:
    """FER_AUTOSTART_WORKER=0: the instructor runs workers themselves, so nothing starts one."""
    return os.environ.get(AUTOSTART_ENV, "1").strip() != "0"


def ensure_worker(store: RunStore, allowed: bool = True) -> WorkerStart:
    """Start one detached worker if runs are queued, none is alive, and starting one is allowed (by
    FER_AUTOSTART_WORKER and by the caller's `allowed`, i.e. not `--no-worker`).

    A lock file in the artifacts folder (created with O_EXCL, holding the new worker's pid) keeps two
    callers (two browser tabs, a lesson and the CLI) from both starting one while the first new worker
    is still importing torch and has not registered yet."""
    if not autostart_enabled():
        return WorkerStart(False, "off")
    if not allowed:
        return WorkerStart(False, "not asked")
    reap(store)
    if store.counts()[RunStatus.QUEUED] == 0:
        return WorkerStart(False, "nothing queued")
    if live_workers(store):
        return WorkerStart(False, "alive")
    lock = store.artifacts / "worker.spawn.lock"
    fd = _take_lock(lock)
    if fd is None:
        return WorkerStart(False, "starting")
    try:
        if live_workers(store):   # one registered while we were taking the lock
            os.close(fd)
            fd = None
            lock.unlink(missing_ok=True)
            return WorkerStart(False, "alive")
        proc = _spawn_worker(store)
        os.write(fd, str(proc.pid).encode())
        log.info("started a worker process (pid %d)", proc.pid)
        return WorkerStart(True, "started")
    finally:
        if fd is not None:
            os.close(fd)


def _take_lock(lock: Path) -> int | None:
    for _ in range(2):
        try:
            return os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_fresh(lock):
                return None
            lock.unlink(missing_ok=True)   # a worker that died or registered long ago: take it over
    return None


def _lock_is_fresh(lock: Path) -> bool:
    try:
        age = time.time() - lock.stat().st_mtime
        text = lock.read_text().strip()
    except FileNotFoundError:
        return False
    if age > SPAWN_GRACE_S:
        return False
    return not text.isdigit() or pid_alive(int(text))   # empty: the spawner is writing it right now


def app_worker_threads(cores: int | None = None, gpu: bool | None = None) -> int | None:
    """CPU threads for a worker the app starts: on a small machine without a GPU, all cores but one, so that the
    app stays responsive (pages, face detection, explanations) while the worker trains; None (torch's default,
    every core) where training runs on a GPU or the machine has cores to spare."""
    cores = cores or os.cpu_count() or 1
    if gpu is None:
        import torch
        gpu = torch.cuda.is_available()
    if gpu or cores > SMALL_MACHINE_CORES:
        return None
    return max(1, cores - 1)


def worker_env(store: RunStore) -> dict:
    """The environment of a worker process this one starts: FER_* settings travel with it, and the database and
    artifact root it must use (not --db: a URL may carry a password, and `ps` shows arguments to all)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["FER_DB_URL"] = store.url
    env["FER_ARTIFACTS"] = str(store.artifacts)   # the worker's working directory is not the caller's
    return env


def _spawn_worker(store: RunStore) -> subprocess.Popen:
    env = worker_env(store)
    env.setdefault(IDLE_EXIT_ENV, str(IDLE_EXIT_S))
    out = open(store.artifacts / "worker.log", "ab")
    detach = ({"start_new_session": True} if os.name == "posix" else
              {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP})
    try:
        threads = app_worker_threads()
        return subprocess.Popen([sys.executable, "-m", "fercore", "worker",
                                 *(["--threads", str(threads)] if threads else [])], cwd=REPO_ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **detach)
    finally:
        out.close()   # the child keeps its own copy of the file descriptor
