"""What happens to a run that stops before its end, and to the runs its owner cancels or resumes: one place.

The interrupt policy (end_interrupted), written once for every way a run can be stopped:

| what stopped it                                   | the run becomes                                         |
| ------------------------------------------------- | ------------------------------------------------------- |
| its owner: Cancel, `runs cancel`, Ctrl-C on `train` | CANCELLED, resumable (`runs resume`)                  |
| its worker was stopped (SIGTERM, Ctrl-C)          | QUEUED again, to resume after its last finished epoch   |
| its worker died or froze past its lease (reaped)  | QUEUED again, the same way                              |
| either of the last two, after MAX_ATTEMPTS claims | FAILED, saying it stopped that many times (it may be    |
|                                                   | what takes its workers down)                            |

A run that had not finished its first epoch has nothing to resume from and starts again.

A worker's own shutdown never reads as its owner's cancel. Every change is written under the lease of the attempt
that ends the run (none for the reaper, which changes only a run it took itself), so an attempt that lost the run
changes nothing.
"""
from __future__ import annotations

import logging
import traceback
from pathlib import Path

from fercore.auth import PERSONAL, Action, User, require
from fercore.errors import DataError, UserError
from fercore.jobs.lease import Cause
from fercore.store import Run, RunStatus, RunStore

MAX_ATTEMPTS = 3           # a run whose worker stopped or died this many times is left failed
WORKER_STOPPED = "worker stopped"
RESUME_FILE = "resume.pt"
OWNER_CANCELLED = "cancelled by its owner; the finished epochs are kept and `runs resume` continues it"

log = logging.getLogger("fercore.worker")


def resume_path(store: RunStore, run_id: int) -> Path:
    return store.run_dir(run_id, create=False) / RESUME_FILE


def can_resume(store: RunStore, run: Run) -> bool:
    return run.status.resumable and resume_path(store, run.id).is_file()


def end_interrupted(store: RunStore, run_id: int, cause: Cause, lease: int | None = None,
                    detail: str | None = None) -> Run:
    """Apply the interrupt policy (see the module's table) to a run stopped for `cause`. `lease`: the token of the
    attempt that stopped it (None: the reaper, which already marked the run failed). `detail` replaces the default
    sentence for the cause."""
    run = store.get_run(run_id)
    if cause == Cause.OWNER:
        store.set_status(run_id, RunStatus.CANCELLED, detail or OWNER_CANCELLED, lease=lease)
        return store.get_run(run_id)
    what = detail or ("the worker was shut down" if cause == Cause.WORKER_STOPPED else "its worker died")
    resumable = resume_path(store, run_id).is_file()
    if run.attempts >= MAX_ATTEMPTS:
        status, error = RunStatus.FAILED, (f"{WORKER_STOPPED}: {what}; it stopped {run.attempts} times, so it is "
                                           "left failed (it may be what takes its workers down); the finished epochs "
                                           "are kept and `runs resume` tries once more")
    else:
        status = RunStatus.QUEUED
        error = (f"{WORKER_STOPPED} during attempt {run.attempts} ({what}); resuming from its last finished epoch"
                 if resumable else f"{WORKER_STOPPED} during attempt {run.attempts} ({what}); starting it again")
    store.set_status(run_id, status, error, lease=lease, expect=RunStatus.FAILED if lease is None else None)
    return store.get_run(run_id)


def changed_dataset(run: Run, fingerprint: str) -> str | None:
    """The sentence refusing to resume a run whose dataset now holds other images, or None when it is the same."""
    if not run.dataset_fingerprint or fingerprint == run.dataset_fingerprint:
        return None
    return (f"Run {run.label} cannot resume: the dataset {run.config.data!r} it trained on has changed since "
            f"(its images, labels or splits differ: fingerprint {fingerprint[:8]}, was "
            f"{run.dataset_fingerprint[:8]}), so it would not continue where it stopped. Import the original data "
            "under that name again to resume it, or train it again as a new run.")


def resume_run(store: RunStore, run, by: User | None = None) -> Run:
    """`runs resume RUN` and the Runs page's button: queue a failed or cancelled run to continue from its last
    checkpoint (its owner or the instructor), unless the version of the dataset it trained on is gone
    (execute_run checks that again when it resumes)."""
    run = store.get_run(run)
    require(by or PERSONAL, Action.RESUME, run.owner, what=f"run {run.label}")
    if not run.status.resumable:
        raise UserError(f"Run {run.label} is {run.status}; only a failed or cancelled run can be resumed.")
    if not can_resume(store, run):
        raise UserError(f"Run {run.label} has no saved training state to resume from (it stopped before its first "
                        "epoch ended, or it was trained by an older version); queue it again instead.")
    info = store.dataset_info(run.config.data, fingerprint=run.dataset_fingerprint)
    if info is not None and (sentence := changed_dataset(run, info.fingerprint)):
        raise DataError(sentence)
    store.set_status(run.id, RunStatus.QUEUED, f"resumed by hand after: {run.error or run.status}")
    store.record(by, "resume", f"run {run.id} ({run.name})")
    return store.get_run(run.id)


def cancel_runs(store: RunStore, runs: list[int | str], by: User | None = None) -> list[Run]:
    """Cancel runs: a queued one at once, a running one at its worker's next heartbeat (the worker then ends it
    `cancelled`). A sweep whose trial was cancelled goes on with its next trial, as after any trial that ended; but
    when one call cancels several trials of a sweep and none is left to come, its owner is stopping the sweep (the
    Runs page's "Cancel selected"), and it stops instead of queueing new trials."""
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
            tell_sweep(store, run)
    return out


def tell_sweep(store: RunStore, run: Run) -> None:
    """A Bayesian sweep queues its next trial when one ends; a failure there must not stop the caller."""
    if run.group_kind != "sweep" or not run.status.final:
        return
    try:
        from fercore.teach.sweeps import on_run_finished
        queued = on_run_finished(store, run)
        if queued:
            log.info("sweep %s queued run(s) %s", run.group_name, [r.id for r in queued])
    except Exception:
        log.warning("the sweep could not react to run %d:\n%s", run.id, traceback.format_exc())
