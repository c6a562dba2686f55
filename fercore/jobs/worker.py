"""Background training: the worker loop, heartbeats, crash recovery, and starting a worker on demand.

The queue is the `runs` table itself: `train --queue`, lessons and sweeps insert runs with status
`queued`; a worker (`python -m fercore worker`) claims the oldest one atomically
(RunStore.claim_next_run), trains it with fercore.jobs.execute.execute_run, and goes on to the next.

Liveness. A worker registers a row in the `workers` table and a heartbeat thread beats it every
HEARTBEAT_S seconds, together with the heartbeat of the run it is training, so a long epoch or a slow
evaluation never looks dead. A run whose heartbeat is older than STALE_AFTER_S, or whose worker
process is gone from this machine (checked by pid, so a `kill -9` is noticed at once rather than
after the timeout), is reaped: every run saves its whole training state after each epoch (resume.pt),
so the reaped run is queued again and the next worker continues it after its last finished epoch, each
epoch recorded once (requeue_to_resume). A run that stopped before its first epoch ended, or that took
MAX_ATTEMPTS workers down, stays *failed* with the reason "worker stopped"; its finished epochs stay.
Every worker reaps at start and between runs, and the app calls reap() on page load, so no run stays
`running` after its worker died.

Stopping. SIGTERM or SIGINT (Ctrl-C) stops a worker cleanly: a run in progress is stopped within a
batch or two (through the same cancel flag the owner's cancel uses) and marked *failed* with the
reason "worker stopped", like a crash, because its owner did not cancel it; the worker row becomes
`stopped`. A second Ctrl-C exits at once (the run is then reaped as above).

Several machines. A worker is known by its host and pid (the `workers` table): a pid is only checked for
workers of this host (this_host(): $FER_HOSTNAME, else the machine's name), the workers of other GPU servers
sharing a PostgreSQL database only by their heartbeat. `worker --gpus all` starts one worker per GPU
(worker_pool.py).

Watchdog. A process can be alive with a hung training loop (a deadlock, a stuck GPU call): its heartbeat thread
goes on beating, so the checks above never fire. The store therefore stamps every batch and epoch the loop reports
(progress_at), and the heartbeat thread of the process that trains a run (a worker, or `train` in the foreground)
fails that run when its progress has not moved for STALL_MINUTES (FER_STALL_MINUTES, `worker --stall-minutes`;
0 turns it off), with a sentence saying so and its epochs kept, then ends its own process: the hung thread cannot be
stopped any other way, and a new worker takes the queue on (ensure_worker, or whoever started the first one).
fit() reports no batches while it evaluates (val after each epoch, val and test at the end, with TTA), so the window
must exceed the longest evaluation: raise it for ten-crop TTA of a big ImageNet net on a CPU.

Sweeps. Whenever a sweep's run reaches its final status (finished, failed, cancelled; ended by its worker, failed
by the reaper or the watchdog, or cancelled before it started) the sweep is told, so a Bayesian sweep queues its
next trial; the store queues each trial number once, however many processes tell it at the same moment.

Starting. ensure_worker() starts one detached worker when runs are queued and none is alive (one
worker per GPU by default). That worker exits after IDLE_EXIT_S seconds with an empty queue (read
from the environment variable FER_WORKER_IDLE_EXIT_S), so it never lingers after a class.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from fercore.auth import PERSONAL, Action, User, require
from fercore.errors import ConfigError, UserError
from fercore.store import Run, RunStore, Worker
from fercore.store.entities import RunStatus
from fercore.store.runstore import now

HEARTBEAT_S = 2.0          # how often a worker beats its own row and its run's
STALE_AFTER_S = 15.0       # a heartbeat older than this means the worker is gone
SPAWN_GRACE_S = 30.0       # how long a freshly spawned worker has to register before another may be spawned
IDLE_EXIT_S = 300.0        # a worker started by ensure_worker exits after this long with nothing to do
IDLE_EXIT_ENV = "FER_WORKER_IDLE_EXIT_S"
HOST_ENV = "FER_HOSTNAME"   # the name this machine's workers register under (two servers with one hostname)
WORKER_STOPPED = "worker stopped"
MAX_ATTEMPTS = 3           # a run whose worker died this many times is left failed
REPO_ROOT = Path(__file__).resolve().parents[2]
STALL_MINUTES = 30.0       # a run whose loop reported no batch or epoch for this long is failed (the watchdog)
STALL_ENV = "FER_STALL_MINUTES"
EXIT_STALLED = 3           # exit status of a process the watchdog ended
STALLED = "training stalled"

log = logging.getLogger("fercore.worker")
run_log = logging.getLogger("fercore.worker.run")   # one logger; its file handler is swapped per run


# --- the worker ------------------------------------------------------------------------------------------
def run_worker(store: RunStore, once: bool = False, device: str | None = None, poll_s: float = 2.0,
               idle_exit_s: float | None = None, stall_minutes: float | None = None,
               threads: int | None = None) -> int:
    """Claim and train queued runs until the queue is empty (once=True), a SIGTERM/SIGINT arrives, or
    the queue stayed empty for idle_exit_s seconds. Returns the number of runs trained. stall_minutes: the
    watchdog's window (default: $FER_STALL_MINUTES, else STALL_MINUTES; 0 turns it off). threads: the CPU
    threads training may use (default: torch's, one per core)."""
    import torch  # torch is imported only by code that trains

    from fercore.train import device_name
    _log_to_stderr()
    if threads:
        torch.set_num_threads(threads)
    if idle_exit_s is None and os.environ.get(IDLE_EXIT_ENV):
        idle_exit_s = float(os.environ[IDLE_EXIT_ENV])
    dev = worker_device(device)
    label = device_name(dev)
    worker_id = store.register_worker(os.getpid(), label, this_host())
    stop = threading.Event()
    beat = Heartbeat(store.url, worker_id, stop, stall_s=stall_seconds(stall_minutes))
    beat.start()
    restore_signals = _stop_on_signals(stop)
    log.info("worker %d (pid %d) on %s of %s started", worker_id, os.getpid(), label, this_host())
    trained, idle_since = 0, time.monotonic()
    try:
        while not stop.is_set():
            try:
                reap(store)
                run = store.claim_next_run(worker_id, label)
            except Exception:   # the database is briefly unreachable or locked: try again after a pause
                log.warning("could not reach the queue:\n%s", traceback.format_exc())
                stop.wait(poll_s)
                continue
            if run is None:
                if once or (idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s):
                    break
                stop.wait(poll_s)
                continue
            train_claimed_run(store, run, str(dev), worker_id, beat)
            trained += 1
            idle_since = time.monotonic()
    finally:
        beat.halt()
        restore_signals()
        store.worker_heartbeat(worker_id, "stopped", None)
        log.info("worker %d stopped after %d run(s)", worker_id, trained)
    return trained


def worker_device(device: str | None):
    """The torch device a worker trains on (default: the GPU if there is one), or a plain sentence for a
    device this machine does not have (`--device cuda:3`, a typo)."""
    import torch

    from fercore.train import pick_device
    try:
        dev = pick_device(device)
    except RuntimeError:
        raise ConfigError(f"{device!r} is not a device; use cpu, cuda or cuda:N.") from None
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if dev.type == "cuda" and (dev.index or 0) >= have:
        raise ConfigError(f"There is no GPU {dev} on this machine ({have} found); use --device cpu"
                         + (f" or cuda:0 to cuda:{have - 1}." if have else "."))
    return dev


def train_claimed_run(store: RunStore, run: dict, device: str, worker_id: int, beat: Heartbeat) -> dict:
    """Train one run this worker has claimed, logging to <run_dir>/train.log. Never raises: whatever
    goes wrong becomes the run's status, and the worker goes on with the next run."""
    from fercore.jobs.execute import execute_run
    run_id, handler, final = run.id, None, None
    beat.current_run = run_id
    log.info("run %d (%s) claimed", run_id, run.name)
    try:
        log_path = store.run_dir(run_id) / "train.log"
        handler = logging.FileHandler(log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        run_log.addHandler(handler)
        run_log.setLevel(logging.INFO)
        run_log.propagate = False   # the run's lines go to its file, not into the worker's own log
        store.update_run(run_id, log_path=str(log_path))
        store.worker_heartbeat(worker_id, "busy", run_id)
        run_log.info("run %d (%s) claimed by worker %d (pid %d) on %s", run_id, run.name, worker_id,
                     os.getpid(), device)
        final = execute_run(store, run_id, device=device, logger=run_log)
        if beat.interrupted_run == run_id and final.status == RunStatus.CANCELLED:
            # our own shutdown stopped it, not its owner: say so, like a crash would
            store.set_status(run_id, RunStatus.FAILED, f"{WORKER_STOPPED}: the worker was shut down while the run "
                                               "was training; the finished epochs are kept")
            final = store.get_run(run_id)
        run_log.info("run %d ended: %s%s", run_id, final.status, f" ({final.error})" if final.error else "")
        log.info("run %d ended: %s", run_id, final.status)
    except KeyboardInterrupt:   # a second Ctrl-C: leave at once, but leave no run `running` behind
        _fail_quietly(store, run_id, f"{WORKER_STOPPED}: the worker was interrupted; the finished epochs are kept")
        raise
    except Exception as e:   # a store or logging failure around the run; the run itself never raises
        log.error("run %d: unexpected error in the worker:\n%s", run_id, traceback.format_exc())
        final = _fail_quietly(store, run_id, f"The worker hit an unexpected error: {type(e).__name__}: {e}")
    finally:
        beat.current_run = None
        if handler is not None:
            run_log.removeHandler(handler)
            handler.close()
        try:
            store.worker_heartbeat(worker_id, "idle", None)
        except Exception:
            log.warning("could not update the worker row:\n%s", traceback.format_exc())
    if final and final.group_kind == "sweep":
        _tell_sweep(store, final)
    return final


def _fail_quietly(store: RunStore, run_id: int, reason: str) -> dict | None:
    try:
        if store.get_run(run_id).status == RunStatus.RUNNING:
            store.set_status(run_id, RunStatus.FAILED, reason)
        return store.get_run(run_id)
    except Exception:
        log.error("could not mark run %d failed:\n%s", run_id, traceback.format_exc())
        return None


def _tell_sweep(store: RunStore, run: dict) -> None:
    """A Bayesian sweep queues its next trial when one ends; a failure there must not stop the worker."""
    try:
        from fercore.teach.sweeps import on_run_finished
        queued = on_run_finished(store, run)
        if queued:
            log.info("sweep %s queued run(s) %s", run.group_name, [r.id for r in queued])
    except Exception:
        log.warning("the sweep could not react to run %d:\n%s", run.id, traceback.format_exc())


class Heartbeat(threading.Thread):
    """Beats the worker row and the current run's heartbeat from a thread of its own (with its own
    database connection), so a run is alive as long as its worker process is, whatever the training
    loop is doing. On a stop request it asks the current run to stop at its next batch. It is also the
    watchdog: a current run whose progress stood still for stall_s seconds is failed, and on_stall(run_id)
    (by default: end this process, whose training thread hangs) is called."""

    def __init__(self, url: str, worker_id: int | None, stop_requested: threading.Event,
                 interval: float = HEARTBEAT_S, stall_s: float | None = None, on_stall=None):
        super().__init__(name="fercore-heartbeat", daemon=True)
        self.url, self.worker_id, self.stop_requested, self.interval = url, worker_id, stop_requested, interval
        self.stall_s, self.on_stall = stall_s, on_stall or (lambda run_id: exit_hung_process())
        self.current_run: int | None = None
        self.interrupted_run: int | None = None   # the run we asked to stop because the worker is stopping
        self._halted = threading.Event()

    def halt(self) -> None:
        self._halted.set()
        self.join(timeout=10)

    def run(self) -> None:
        store = None
        while not self._halted.is_set():
            try:
                store = store or RunStore(self.url)
                self._beat(store)
            except Exception:   # a locked or unreachable database: try again at the next beat
                log.warning("heartbeat failed:\n%s", traceback.format_exc())
            self._sleep()
        if store is not None:
            store.engine.dispose()

    def _beat(self, store: RunStore) -> None:
        rid = self.current_run
        if rid is not None:
            store.update_run(rid, heartbeat_at=now())
            if self.stall_s and store.fail_stalled_runs(self.stall_s, stalled_reason(self.stall_s), run_id=rid):
                log.error("run %d failed: %s", rid, stalled_reason(self.stall_s))
                _tell_sweep(store, store.get_run(rid))
                if self.worker_id is not None:   # this worker is done: its one thread that trains hangs
                    store.worker_heartbeat(self.worker_id, "stopped", None)
                self.on_stall(rid)
                return
            if self.stop_requested.is_set() and self.interrupted_run != rid:
                run = store.get_run(rid)
                if run.status == RunStatus.RUNNING and not run.cancel_requested:
                    store.update_run(rid, cancel_requested=True)
                    self.interrupted_run = rid
        if self.worker_id is not None:
            store.worker_heartbeat(self.worker_id, "busy" if rid is not None else "idle", rid)

    def _sleep(self) -> None:
        """Wait one interval, waking early for a stop request so the current run is told at once."""
        deadline = time.monotonic() + self.interval
        while time.monotonic() < deadline and not self._halted.is_set():
            if self.stop_requested.is_set() and self.current_run not in (None, self.interrupted_run):
                return
            time.sleep(0.1)


def stall_seconds(minutes: float | None = None) -> float | None:
    """The watchdog's window in seconds: `minutes`, else $FER_STALL_MINUTES, else STALL_MINUTES; None when 0 (off)."""
    if minutes is None:
        try:
            minutes = float(os.environ.get(STALL_ENV) or STALL_MINUTES)
        except ValueError:
            log.warning("%s=%r is not a number of minutes; using %g", STALL_ENV, os.environ[STALL_ENV], STALL_MINUTES)
            minutes = STALL_MINUTES
    return minutes * 60.0 if minutes > 0 else None


def stalled_reason(stall_s: float) -> str:
    n, unit = (stall_s / 60, "minute") if stall_s >= 60 else (stall_s, "second")
    window = f"{n:g} {unit}{'' if n == 1 else 's'}"
    return (f"{STALLED}: no batch or epoch finished for {window} although its process was alive, so it was "
            f"stopped (the limit is {STALL_ENV} or `worker --stall-minutes`); the finished epochs are kept")


def exit_hung_process() -> None:
    """The watchdog's last step: this process's training thread hangs and cannot be stopped from another thread,
    so the process ends (its run is already failed, its worker row stopped); ensure_worker starts a fresh worker
    for the rest of the queue."""
    log.error("the training loop hung; this process exits (status %d)", EXIT_STALLED)
    print("error: the training stalled and was stopped; `runs show RUN` gives the reason.", file=sys.stderr)
    for handler in [*log.handlers, *run_log.handlers]:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(EXIT_STALLED)


@contextmanager
def heartbeat_while(store: RunStore, run_id: int):
    """Keep a run's heartbeat fresh while the caller trains it in the foreground (`train` without --queue),
    so a long evaluation is not mistaken for a dead run by reap(); the watchdog watches its progress too."""
    beat = Heartbeat(store.url, None, threading.Event(), stall_s=stall_seconds())
    beat.current_run = run_id
    beat.start()
    try:
        yield
    finally:
        beat.halt()


def _stop_on_signals(stop: threading.Event):
    """SIGTERM/SIGINT set `stop`; a second one exits at once. Returns a function restoring the old handlers."""
    def handler(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:   # not the main thread (a worker run inside a test or a notebook thread)
            pass
    return lambda: [signal.signal(s, h) for s, h in old.items()]


def _log_to_stderr() -> None:
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


# --- crash recovery --------------------------------------------------------------------------------------
def reap(store: RunStore) -> list[int]:
    """Fail every `running` run whose worker is gone (its process ended on this machine, or its heartbeat
    is older than STALE_AFTER_S); their epochs stay. Returns the ids of the runs failed.
    A pid means something only on its own host: workers of other machines are judged by their heartbeat alone."""
    failed = []
    dead = [w for w in store.list_workers() if w.host == this_host() and not pid_alive(w.pid)]
    if dead:
        ids = {w.id for w in dead}
        for run in store.list_runs(status=RunStatus.RUNNING):
            if run.worker_id in ids:
                store.set_status(run.id, RunStatus.FAILED, f"{WORKER_STOPPED}: its process ended while the run was "
                                                      "training; the finished epochs are kept")
                failed.append(run.id)
        for w in dead:
            store.worker_heartbeat(w.id, "stopped", None)
    failed += store.reap_stale_runs(STALE_AFTER_S)
    for rid in failed:
        if requeue_to_resume(store, rid):
            log.info("run %d: %s; queued again to resume from its last epoch", rid, WORKER_STOPPED)
        else:
            log.info("run %d failed: %s", rid, WORKER_STOPPED)
            run = store.get_run(rid)
            if run.group_kind == "sweep":
                _tell_sweep(store, run)
    return failed


def requeue_to_resume(store: RunStore, run_id: int) -> bool:
    """Queue a run whose worker died again, so the next worker resumes it after its last finished epoch; a run
    that already took MAX_ATTEMPTS workers down stays failed (it would only take the next one down too)."""
    from fercore.jobs.execute import can_resume
    run = store.get_run(run_id)
    if run.attempts >= MAX_ATTEMPTS or not can_resume(store, run):
        return False
    store.set_status(run_id, RunStatus.QUEUED, f"{WORKER_STOPPED} during attempt {run.attempts}; resuming from "
                                               "its last finished epoch")
    return True


def resume_run(store: RunStore, run, by: User | None = None) -> Run:
    """`runs resume RUN` and the Runs page's button: queue a failed or cancelled run to continue from its last
    checkpoint (its owner or the instructor)."""
    from fercore.jobs.execute import can_resume
    run = store.get_run(run)
    require(by or PERSONAL, Action.RESUME, run.owner, what=f"run {run.label}")
    if not run.status.resumable:
        raise UserError(f"Run {run.label} is {run.status}; only a failed or cancelled run can be resumed.")
    if not can_resume(store, run):
        raise UserError(f"Run {run.label} has no saved training state to resume from (it stopped before its first "
                        "epoch ended, or it was trained by an older version); queue it again instead.")
    store.set_status(run.id, RunStatus.QUEUED, f"resumed by hand after: {run.error or run.status}")
    store.record(by, "resume", f"run {run.id} ({run.name})")
    return store.get_run(run.id)


def this_host() -> str:
    """The host name this machine's workers register under: $FER_HOSTNAME, else the machine's own name."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


# --- cancelling --------------------------------------------------------------------------------------------
def cancel_runs(store: RunStore, runs: list[int | str], by: User | None = None) -> list[Run]:
    """Cancel runs: a queued one at once, a running one at its next batch (its worker then ends it `cancelled`).
    A sweep whose trial was cancelled goes on with its next trial, as after any trial that ended; but when one
    call cancels several trials of a sweep and none is left to come, its owner is stopping the sweep (the Runs
    page's "Cancel selected"), and it stops instead of queueing new trials."""
    ids = [store.resolve(r) for r in runs]
    sweeps = {}
    for rid in ids:
        run = store.get_run(rid)
        require(by or PERSONAL, Action.CANCEL, run.owner, what=f"run {run.label}")   # all or none
        if run.group_kind == "sweep" and run.status.active:
            sweeps.setdefault(run.group_name, set()).add(rid)
    out = [store.request_cancel(rid, by=by) for rid in ids]
    from fercore.teach.sweeps import stop_sweep
    for name, chosen in sweeps.items():
        others = [r for r in store.list_runs(group_name=name) if r.status.active and r.id not in chosen]
        if len(chosen) > 1 and not others:
            stop_sweep(store, name)
    for run in out:
        if run.group_kind == "sweep" and run.status == RunStatus.CANCELLED:
            _tell_sweep(store, run)
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as ended)."""
    if os.name != "posix":
        return True   # no cheap, safe check: rely on the heartbeat timeout
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --- status and starting a worker ------------------------------------------------------------------------
def live_workers(store: RunStore) -> list[Worker]:
    """Workers whose heartbeat is recent and, on this machine, whose process still runs."""
    here = this_host()
    return [w for w in store.list_workers(alive_within_s=STALE_AFTER_S)
            if w.host != here or pid_alive(w.pid)]


def worker_status(store: RunStore) -> dict:
    """For the sidebar: the live workers and how many runs wait and train."""
    counts = store.counts()
    return {"alive": live_workers(store), "queued": counts[RunStatus.QUEUED], "running": counts[RunStatus.RUNNING]}


def ensure_worker(store: RunStore) -> bool:
    """Start one detached worker if runs are queued and no worker is alive. Returns True if one was started.

    A lock file in the artifacts folder (created with O_EXCL, holding the new worker's pid) keeps two
    callers (two browser tabs, a lesson and the CLI) from both starting one while the first new worker
    is still importing torch and has not registered yet."""
    reap(store)
    if store.counts()[RunStatus.QUEUED] == 0 or live_workers(store):
        return False
    lock = store.artifacts / "worker.spawn.lock"
    fd = _take_lock(lock)
    if fd is None:
        return False
    try:
        if live_workers(store):   # one registered while we were taking the lock
            os.close(fd)
            fd = None
            lock.unlink(missing_ok=True)
            return False
        proc = _spawn_worker(store)
        os.write(fd, str(proc.pid).encode())
        log.info("started a worker process (pid %d)", proc.pid)
        return True
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


SMALL_MACHINE_CORES = 4   # at most this many cores and no GPU: a worker the app starts leaves one core to the app


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


def _spawn_worker(store: RunStore) -> subprocess.Popen:
    env = dict(os.environ)   # FER_* settings (cache folder, artifacts) travel with it
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault(IDLE_EXIT_ENV, str(IDLE_EXIT_S))
    env["FER_DB_URL"] = store.url   # not --db: a URL may carry a password, and `ps` shows arguments to all
    env["FER_ARTIFACTS"] = str(store.artifacts)   # the worker's working directory is not the caller's
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
