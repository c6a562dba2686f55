"""Carry one stored run from `running` to `finished` / `failed` / `cancelled`, resuming where it stopped.

Used by the foreground `train` command and by the background worker alike: resolve the dataset, call
fit() with a recorder that writes every epoch to the store as it finishes and saves the loop's whole
state after it (`resume.pt`, atomically), save the checkpoint chosen on val, store the evaluations, and
turn every failure into a status with a plain reason (the traceback goes to the run's log only).

Every write is made under the lease of the attempt (lease.Attempt): a write after another attempt took the run is
refused by the store (LeaseLost), and the attempt stops there, writing nothing more. Files are written under a
temporary name of their own and renamed into place only while the lease holds (store.holding_lease).

A run that stopped early (its worker died or was stopped, it was cancelled, the machine rebooted) keeps
`resume.pt`; executing it again continues after its last finished epoch, and the epochs after that one are
redone, unless its dataset changed since, which it refuses with a sentence (policy.changed_dataset).
"""
from __future__ import annotations

import logging
import traceback
from contextlib import nullcontext

import torch

from fercore.data import resolve
from fercore.errors import DataError, is_user_error, user_message
from fercore.jobs.lease import Attempt, Cause, Interrupted
from fercore.jobs.liveness import heartbeat_while
from fercore.jobs.policy import RESUME_FILE, changed_dataset, end_interrupted, resume_path
from fercore.jobs.runfile import probs_to_file, save_checkpoint
from fercore.safeio import atomic_path
from fercore.store import LeaseLost, Run, RunStatus, RunStore
from fercore.train import Cancelled, Recorder, device_name, fit, pick_device

log = logging.getLogger("fercore.runner")
CHECKPOINT_FILE = "checkpoint.pt"
CTRL_C_IN_FOREGROUND = "stopped with Ctrl-C; the finished epochs are kept and `runs resume` continues it"


class StoreRecorder(Recorder):
    """Writes the epochs, evaluations and the resumable state of one attempt at a run as they happen, each under
    its lease; hands live progress to the heartbeat, which writes it off the training thread."""

    def __init__(self, store: RunStore, attempt: Attempt, logger: logging.Logger | None = None,
                 budget_s: float | None = None):
        self.store, self.attempt, self.run_id, self.log = store, attempt, attempt.run_id, logger or log
        self.budget_s, self.elapsed_s, self.budget_hit = budget_s, 0.0, False   # the class's per-run time budget

    def on_start(self, info: dict) -> None:
        self.store.update_run(self.run_id, lease=self.attempt.token, device=info["device"],
                              n_params=info.get("n_params"), classes=info["classes"],
                              dataset_fingerprint=info.get("fingerprint"),
                              progress={"phase": "training", "n_train": info["n_train"], "n_val": info["n_val"],
                                        "n_test": info["n_test"]})
        self.log.info("training on %s: %d train / %d val / %d test images, %s parameters", info["device"],
                      info["n_train"], info["n_val"], info["n_test"], info.get("n_params"))

    def on_batch(self, progress: dict) -> bool:
        self.elapsed_s = float(progress.get("elapsed_s") or 0.0)
        self.attempt.hand_progress({"phase": "training", **progress})
        return self.attempt.check()

    def on_epoch(self, rec: dict) -> None:
        self.store.add_epoch(self.run_id, rec, lease=self.attempt.token)
        self.log.info("epoch %d: train loss %s acc %s, val loss %s acc %s, %.1fs", rec["epoch"],
                      _fmt(rec["train_loss"]), _fmt(rec["train_acc"]), _fmt(rec["val_loss"]),
                      _fmt(rec["val_acc"]), rec["seconds"])

    def on_checkpoint(self, state: dict) -> None:
        # written after the epoch's row: a crash between the two redoes that epoch, and its row is replaced
        with atomic_path(self.store.run_dir(self.run_id) / RESUME_FILE, guard=self.holding) as tmp:
            torch.save(state, tmp)

    def on_final_evaluation(self, images: int, tta: str) -> None:
        self.store.set_progress(self.run_id, {"phase": "evaluating", "images": images, "tta": tta})

    def out_of_time(self) -> bool:
        self.budget_hit = self.budget_hit or (self.budget_s is not None and self.elapsed_s >= self.budget_s)
        return self.budget_hit

    def on_evaluation(self, split: str, ev: dict) -> None:
        self.log.info("%s accuracy %.4f on %d images (tta %s)", split, ev["accuracy"], ev["n"], ev["tta"])

    def holding(self):
        return self.store.holding_lease(self.run_id, self.attempt.token)


def execute_run(store: RunStore, run_id: int, device: str | None = None, logger: logging.Logger | None = None,
                attempt: Attempt | None = None, ctrl_c: Cause = Cause.OWNER) -> Run:
    """Train (or resume) a run that is already marked `running`. `attempt`: the lease a worker's claim gave it
    (its heartbeat keeps it); without one the run is taken in the foreground, with a heartbeat of its own.
    `ctrl_c`: what a KeyboardInterrupt means (the owner's Ctrl-C on `train`; a worker passes WORKER_STOPPED and
    gets it raised again). Returns the final run; never raises for a problem with the run itself (that becomes
    its status and error)."""
    logger = logger or log
    beat = nullcontext()
    if attempt is None:
        attempt = Attempt(run_id, store.take_lease(run_id))
        beat = heartbeat_while(store, attempt)
    with beat:
        try:
            _train(store, store.get_run(run_id), device, logger, attempt)
        except LeaseLost as e:
            logger.warning("%s; stopping (fenced writes refused in this process: %d)", e, store.refused_writes)
            log.warning("%s; stopping", e)
        except Cancelled:
            end_interrupted(store, run_id, Cause.OWNER, lease=attempt.token)
        except Interrupted as e:
            _end(store, run_id, e.cause, attempt, logger)
        except KeyboardInterrupt:
            _end(store, run_id, ctrl_c, attempt, logger, CTRL_C_IN_FOREGROUND if ctrl_c == Cause.OWNER else None)
            if ctrl_c != Cause.OWNER:
                raise
        except Exception as e:   # noqa: BLE001 - every failure becomes the run's status with a sentence
            _fail(store, run_id, e, attempt, logger)
        finally:
            attempt.ended = True   # its heartbeat stops renewing: what this attempt had to write is written
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return store.get_run(run_id)


def _train(store: RunStore, run: Run, device: str | None, logger: logging.Logger, attempt: Attempt) -> None:
    # the version it started on, though a newer one was imported under its name since
    dataset = resolve(run.config.data, store, fingerprint=run.dataset_fingerprint)
    dev = pick_device(device)
    state = load_resume_state(store, run, logger, attempt)
    if state is not None and (sentence := changed_dataset(run, dataset.fingerprint())):
        raise DataError(sentence)
    store.update_run(run.id, lease=attempt.token, device=device_name(dev), dataset=run.config.data)
    recorder = StoreRecorder(store, attempt, logger, budget_s=store.time_budget_s(run))
    result = fit(run.config, dataset, recorder, dev, resume=state)
    finish(store, run, result, attempt, budget_hit=recorder.budget_hit)


def _end(store: RunStore, run_id: int, cause: Cause, attempt: Attempt, logger: logging.Logger,
         detail: str | None = None) -> None:
    try:
        run = end_interrupted(store, run_id, cause, lease=attempt.token, detail=detail)
        logger.info("run %d stopped (%s): now %s", run_id, cause, run.status)
    except LeaseLost as e:
        logger.warning("%s; stopping", e)


def _fail(store: RunStore, run_id: int, e: Exception, attempt: Attempt, logger: logging.Logger) -> None:
    if not is_user_error(e):
        logger.error("unexpected error:\n%s", traceback.format_exc())
    reason = user_message(e)
    if not is_user_error(e) and type(e).__name__ != "OutOfMemoryError":
        reason = f"Training stopped on an unexpected error: {reason}"
    logger.error("run failed: %s", reason)
    try:
        store.set_status(run_id, RunStatus.FAILED, f"{reason} The finished epochs are kept.", lease=attempt.token)
    except LeaseLost as lost:
        logger.warning("%s; stopping", lost)


def load_resume_state(store: RunStore, run: Run, logger: logging.Logger, attempt: Attempt) -> dict | None:
    """The loop state saved after the run's last finished epoch, if any; the epoch rows after it are dropped
    (they are redone; all of them when there is no state, as after a crash inside the first epoch)."""
    path = resume_path(store, run.id)
    state = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
    store.truncate_epochs(run.id, after=int(state["epoch"]) if state else 0, lease=attempt.token)
    if state:
        logger.info("resuming after epoch %d", state["epoch"])
    return state


def finish(store: RunStore, run: Run, result, attempt: Attempt, budget_hit: bool = False) -> None:
    """Save the chosen checkpoint and the evaluations, mark the run finished, and drop its resume state; each
    file lands and each row is written only while the attempt holds the run."""
    folder, lease = store.run_dir(run.id), attempt.token

    def holding():
        return store.holding_lease(run.id, lease)

    ckpt = folder / CHECKPOINT_FILE
    with atomic_path(ckpt, guard=holding) as tmp:
        save_checkpoint(tmp, result.model, run.config, result.classes, result.mean, result.std)
    for split, ev in result.evaluations.items():
        ev["probs_path"] = probs_to_file(folder / f"probs_{split}.npy", result.probs[split], guard=holding)
    store.finish_run(run.id, result.evaluations, run.config.data, lease, checkpoint=str(ckpt),
                     budget_stopped=budget_hit, progress={"phase": "done", "best_epoch": result.best_epoch,
                               "stopped_early": result.stopped_early, "budget_stopped": budget_hit})
    (folder / RESUME_FILE).unlink(missing_ok=True)   # a finished run keeps only its final checkpoint


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"
