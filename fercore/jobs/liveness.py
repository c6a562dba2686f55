"""Liveness: the heartbeat that keeps a run's lease, the watchdog, and the reaper that takes runs whose lease ended.

Heartbeat. A thread of its own (with its own database connection) renews the lease of the attempt its process
trains (store.renew_lease) every HEARTBEAT_S seconds, writing the latest progress the training thread handed it
(so a locked database never stalls a training step) and bringing back a cancel request; it also beats the
worker's row. It beats whatever the training loop is doing, so a long epoch or a slow evaluation never looks dead.
When the renewal is refused, another attempt owns the run: the training thread learns it at its next report and
stops, writing nothing more (lease.Attempt).

Reaping. A run whose lease expired on the database's clock (its process died, froze, or lost the database for
longer than a lease), or whose worker process is gone from this machine (checked by pid, so a `kill -9` is noticed
at once rather than after the lease), is taken and handed to the interrupt policy (policy.end_interrupted): queued
again to resume after its last finished epoch, each epoch recorded once. Every worker reaps at start and between
runs, and the app reaps on page load. A reaper that finds nothing expired writes nothing.

Watchdog. A process can be alive with a hung training loop (a deadlock, a stuck GPU call): its heartbeat goes on,
so the lease never ends. The store stamps every report of the loop (progress_at), and the heartbeat fails its run
when its progress has not moved for STALL_MINUTES (FER_STALL_MINUTES, `worker --stall-minutes`; 0 turns it off),
with a sentence saying so and its epochs kept, then ends its own process: the hung thread cannot be stopped any
other way, and a new worker takes the queue on. fit() reports no batches while it evaluates, so the window must
exceed the longest evaluation: raise it for ten-crop TTA of a big ImageNet net on a CPU.

Several machines. A worker is known by its host and pid: a pid is only checked for workers of this host
(this_host(): $FER_HOSTNAME, else the machine's name); every time is the database's, never a host's own clock.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path

from fercore.jobs.lease import Attempt, Cause
from fercore.jobs.policy import WORKER_STOPPED, end_interrupted, tell_sweep
from fercore.store import LeaseLost, RunStore, Worker
from fercore.store.entities import RunStatus
from fercore.store.queue import lease_seconds

HEARTBEAT_S = 2.0          # how often the heartbeat renews its run's lease and beats its worker's row
STALE_AFTER_S = 15.0       # a worker row not beaten for this long belongs to a worker that is gone
HOST_ENV = "FER_HOSTNAME"   # the name this machine's workers register under (two servers with one hostname)
STALL_MINUTES = 30.0       # a run whose loop reported no batch or epoch for this long is failed (the watchdog)
STALL_ENV = "FER_STALL_MINUTES"
EXIT_STALLED = 3           # exit status of a process the watchdog ended
STALLED = "training stalled"

log = logging.getLogger("fercore.worker")


class Heartbeat(threading.Thread):
    """Renews the lease of `attempt` (the run this process trains, if any) and beats the worker's row. It is also
    the watchdog: a run whose progress stood still for stall_s seconds is failed, and on_stall(run_id) (by default:
    end this process, whose training thread hangs) is called."""

    def __init__(self, url: str, worker_id: int | None, interval: float | None = None,
                 stall_s: float | None = None, on_stall=None):
        super().__init__(name="fercore-heartbeat", daemon=True)
        self.url, self.worker_id, self.interval = url, worker_id, interval or heartbeat_interval()
        self.stall_s, self.on_stall = stall_s, on_stall or (lambda run_id: exit_hung_process())
        self.attempt: Attempt | None = None
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
            self._halted.wait(self.interval)
        if store is not None:
            store.engine.dispose()

    def _beat(self, store: RunStore) -> None:
        att = self.attempt
        if att is not None and att.lost is None and not att.ended:
            try:
                cancel = store.renew_lease(att.run_id, att.token, att.take_progress())
            except LeaseLost as e:
                att.lost = e
                log.warning("%s; the run stops at its next report and writes nothing more", e)
            else:
                if cancel is None:   # the run ended under this lease a moment ago
                    att.ended = True
                else:
                    att.cancel_requested = cancel
                    self._watch(store, att)
        if self.worker_id is not None:
            busy = att is not None and att.lost is None and not att.ended
            store.worker_heartbeat(self.worker_id, "busy" if busy else "idle", att.run_id if busy else None)

    def _watch(self, store: RunStore, att: Attempt) -> None:
        if not self.stall_s or not store.fail_stalled_run(att.run_id, att.token, self.stall_s,
                                                          stalled_reason(self.stall_s)):
            return
        log.error("run %d failed: %s", att.run_id, stalled_reason(self.stall_s))
        tell_sweep(store, store.get_run(att.run_id))
        if self.worker_id is not None:   # this worker is done: its one thread that trains hangs
            store.worker_heartbeat(self.worker_id, "stopped", None)
        self.on_stall(att.run_id)


@contextmanager
def heartbeat_while(store: RunStore, attempt: Attempt):
    """Keep the lease of a run the caller trains in the foreground (`train` without --queue, execute_run called
    directly) while it trains; the watchdog watches its progress too."""
    beat = Heartbeat(store.url, None, stall_s=stall_seconds())
    beat.attempt = attempt
    beat.start()
    try:
        yield beat
    finally:
        beat.halt()


def heartbeat_interval() -> float:
    """A quarter of the lease at most, so three beats can be missed (a busy database, a loaded machine)."""
    return min(HEARTBEAT_S, lease_seconds() / 4)


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
    so the process ends (its run is already failed, its worker row stopped)."""
    log.error("the training loop hung; this process exits (status %d)", EXIT_STALLED)
    print("error: the training stalled and was stopped; `runs show RUN` gives the reason.", file=sys.stderr)
    for handler in logging.getLogger("fercore.worker").handlers + logging.getLogger("fercore.worker.run").handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(EXIT_STALLED)


# --- reaping ---------------------------------------------------------------------------------------------
def reap(store: RunStore) -> list[int]:
    """Take every `running` run whose lease expired on the database's clock or whose worker process is gone from
    this machine, and apply the interrupt policy to it (queued again to resume, or failed). Returns their ids.
    A pid means something only on its own host: workers of other machines are judged by their lease alone."""
    dead = [w.id for w in store.list_workers() if w.host == this_host() and not pid_alive(w.pid)]
    reason = f"{WORKER_STOPPED}: its process ended or stopped answering while the run was training"
    taken = store.reap_runs_of_workers(dead, reason) + store.reap_expired_leases(reason)
    store.stop_silent_workers(STALE_AFTER_S)
    for rid in taken:
        run = end_interrupted(store, rid, Cause.CRASH)
        log.info("run %d: %s; %s", rid, WORKER_STOPPED, "queued again" if run.status == RunStatus.QUEUED
                 else "left failed")
        tell_sweep(store, run)
    return taken


def this_host() -> str:
    """The host name this machine's workers register under: $FER_HOSTNAME, else the machine's own name."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as ended)."""
    if os.name != "posix":
        return True   # no cheap, safe check: rely on the lease
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


def live_workers(store: RunStore) -> list[Worker]:
    """Workers whose heartbeat is recent (database clock) and, on this machine, whose process still runs."""
    here = this_host()
    return [w for w in store.list_workers(alive_within_s=STALE_AFTER_S) if w.host != here or pid_alive(w.pid)]


def worker_status(store: RunStore) -> dict:
    """For the sidebar: the live workers and how many runs wait and train. The training count and each worker's
    current run come from one read of the running runs, so a worker whose run has just finished (its heartbeat
    row not yet updated) is not shown busy with it while the Runs table says finished."""
    counts = store.counts()
    running = {r.id for r in store.list_runs(status=RunStatus.RUNNING)}
    alive = [w if w.current_run is None or w.current_run in running else
             dataclasses.replace(w, status="idle", current_run=None) for w in live_workers(store)]
    return {"alive": alive, "queued": counts[RunStatus.QUEUED], "running": len(running)}

