"""The worker: claim queued runs and train them, one after another, until told to stop.

The queue is the `runs` table itself: `train --queue`, lessons and sweeps insert runs with status `queued`; a worker
(`python -m fercore worker`) claims the next one with a lease (RunStore.claim_next_run), trains it with
execute.execute_run while its heartbeat keeps the lease (liveness.py), and goes on to the next. Every worker reaps
at start and between runs (liveness.reap), so no run stays `running` after its worker died.

Stopping. SIGTERM or SIGINT (Ctrl-C) stops a worker cleanly: a run in progress stops at its next report (within a
second or two) and is queued again to resume after its last finished epoch (policy.end_interrupted), because its
owner did not cancel it; the worker row becomes `stopped`. A second Ctrl-C exits at once (the run is requeued the
same way first).

Jobs' other modules: lease.py (one attempt's hold on a run), policy.py (interrupts, cancel, resume, sweeps),
liveness.py (heartbeat, watchdog, reaper), execute.py (one run), spawn.py (starting a worker on demand), pool.py
(one worker per GPU), runfile.py (run files).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback

from fercore.errors import ConfigError
from fercore.jobs.execute import execute_run
from fercore.jobs.lease import Attempt, Cause
from fercore.jobs.liveness import Heartbeat, reap, stall_seconds, this_host
from fercore.jobs.policy import tell_sweep
from fercore.jobs.spawn import IDLE_EXIT_ENV
from fercore.store import LeaseLost, Run, RunStore

log = logging.getLogger("fercore.worker")
run_log = logging.getLogger("fercore.worker.run")   # one logger; its file handler is swapped per run


def run_worker(store: RunStore, once: bool = False, device: str | None = None, poll_s: float = 2.0,
               idle_exit_s: float | None = None, stall_minutes: float | None = None,
               threads: int | None = None) -> int:
    """Claim and train queued runs until the queue is empty (once=True), a SIGTERM/SIGINT arrives, or
    the queue stayed empty for idle_exit_s seconds. Returns the number of runs trained. stall_minutes: the
    watchdog's window (default: $FER_STALL_MINUTES, else 30; 0 turns it off). threads: the CPU
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
    beat = Heartbeat(store.url, worker_id, stall_s=stall_seconds(stall_minutes))
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
            train_claimed_run(store, run, str(dev), worker_id, beat, stop)
            trained += 1
            idle_since = time.monotonic()
    finally:
        beat.halt()
        restore_signals()
        store.worker_heartbeat(worker_id, "stopped", None)
        log.info("worker %d stopped after %d run(s); fenced writes refused: %d", worker_id, trained,
                 store.refused_writes)
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


def train_claimed_run(store: RunStore, run: Run, device: str, worker_id: int, beat: Heartbeat,
                      stop: threading.Event | None = None) -> Run | None:
    """Train one run this worker has claimed, logging to <run_dir>/train.log. Never raises but for a second
    Ctrl-C: whatever goes wrong becomes the run's status, and the worker goes on with the next run."""
    attempt = Attempt(run.id, run.lease_token, stop)
    handler, final = None, None
    beat.attempt = attempt
    log.info("run %d (%s) claimed (attempt %d)", run.id, run.name, run.lease_token)
    try:
        handler = _log_to_run_file(store, run.id)
        store.update_run(run.id, lease=attempt.token, log_path=handler.baseFilename)
        store.worker_heartbeat(worker_id, "busy", run.id)
        run_log.info("run %d (%s) claimed by worker %d (pid %d) on %s, attempt %d", run.id, run.name, worker_id,
                     os.getpid(), device, attempt.token)
        final = execute_run(store, run.id, device=device, logger=run_log, attempt=attempt,
                            ctrl_c=Cause.WORKER_STOPPED)
        if attempt.lost is None and final.lease_token == attempt.token:   # this attempt ended it
            run_log.info("run %d ended: %s%s", run.id, final.status, f" ({final.error})" if final.error else "")
            log.info("run %d ended: %s", run.id, final.status)
            tell_sweep(store, final)
    except LeaseLost as e:   # taken from this worker before it began (a long pause right after the claim)
        log.warning("%s; stopping", e)
    except Exception:   # a store or logging failure around the run; the run itself never raises
        log.error("run %d: unexpected error in the worker:\n%s", run.id, traceback.format_exc())
    finally:
        beat.attempt = None
        if handler is not None:
            run_log.removeHandler(handler)
            handler.close()
        try:
            store.worker_heartbeat(worker_id, "idle", None)
        except Exception:
            log.warning("could not update the worker row:\n%s", traceback.format_exc())
    return final


def _log_to_run_file(store: RunStore, run_id: int) -> logging.FileHandler:
    handler = logging.FileHandler(store.run_dir(run_id) / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    run_log.addHandler(handler)
    run_log.setLevel(logging.INFO)
    run_log.propagate = False   # the run's lines go to its file, not into the worker's own log
    return handler


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
