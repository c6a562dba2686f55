"""Carry one stored run from `running` to `finished` / `failed` / `cancelled`, resuming where it stopped.

Used by the foreground `train` command and by the background worker alike: resolve the dataset, call
fit() with a recorder that writes every epoch to the store as it finishes and saves the loop's whole
state after it (`resume.pt`, atomically), save the checkpoint chosen on val, store the evaluations, and
turn every failure into a status with a plain reason (the traceback goes to the run's log only).

A run that stopped early (its worker died, it was cancelled, the machine rebooted) keeps `resume.pt`;
executing it again continues after its last finished epoch, and the epochs after that one are redone.
"""
from __future__ import annotations

import logging
import traceback
from pathlib import Path

import torch

from fercore.data import resolve
from fercore.errors import is_user_error, user_message
from fercore.jobs.runfile import probs_to_file, save_checkpoint
from fercore.safeio import atomic_path
from fercore.store import Run, RunStatus, RunStore
from fercore.train import Cancelled, Recorder, device_name, fit, pick_device

log = logging.getLogger("fercore.runner")
RESUME_FILE = "resume.pt"
CHECKPOINT_FILE = "checkpoint.pt"


def resume_path(store: RunStore, run_id: int) -> Path:
    return store.run_dir(run_id, create=False) / RESUME_FILE


def can_resume(store: RunStore, run: Run) -> bool:
    return run.status.resumable and resume_path(store, run.id).is_file()


class StoreRecorder(Recorder):
    """Writes progress, epochs, evaluations and the resumable state of one run as they happen."""

    def __init__(self, store: RunStore, run_id: int, logger: logging.Logger | None = None):
        self.store, self.run_id, self.log = store, run_id, logger or log

    def on_start(self, info: dict) -> None:
        self.store.update_run(self.run_id, device=info["device"], n_params=info.get("n_params"),
                              classes=info["classes"], dataset_fingerprint=info.get("fingerprint"),
                              progress={"phase": "training", "n_train": info["n_train"], "n_val": info["n_val"],
                                        "n_test": info["n_test"]})
        self.log.info("training on %s: %d train / %d val / %d test images, %s parameters", info["device"],
                      info["n_train"], info["n_val"], info["n_test"], info.get("n_params"))

    def on_batch(self, progress: dict) -> bool:
        return self.store.set_progress(self.run_id, {"phase": "training", **progress})

    def on_epoch(self, rec: dict) -> None:
        self.store.add_epoch(self.run_id, rec)
        self.log.info("epoch %d: train loss %s acc %s, val loss %s acc %s, %.1fs", rec["epoch"],
                      _fmt(rec["train_loss"]), _fmt(rec["train_acc"]), _fmt(rec["val_loss"]),
                      _fmt(rec["val_acc"]), rec["seconds"])

    def on_checkpoint(self, state: dict) -> None:
        # written after the epoch's row: a crash between the two redoes that epoch, and its row is replaced
        with atomic_path(self.store.run_dir(self.run_id) / RESUME_FILE) as tmp:
            torch.save(state, tmp)

    def on_evaluation(self, split: str, ev: dict) -> None:
        self.log.info("%s accuracy %.4f on %d images (tta %s)", split, ev["accuracy"], ev["n"], ev["tta"])


def execute_run(store: RunStore, run_id: int, device: str | None = None,
                logger: logging.Logger | None = None) -> Run:
    """Train (or resume) a run that is already marked `running`. Returns the final run; never raises for a
    problem with the run itself (that becomes its status and error)."""
    logger = logger or log
    run = store.get_run(run_id)
    try:
        dataset = resolve(run.config.data, store)
        dev = pick_device(device)
        state = load_resume_state(store, run_id, logger)
        store.update_run(run_id, device=device_name(dev), dataset=run.config.data)
        result = fit(run.config, dataset, StoreRecorder(store, run_id, logger), dev, resume=state)
        finish(store, run, result)
    except Cancelled:
        store.set_status(run_id, RunStatus.CANCELLED, "cancelled by its owner; the finished epochs are kept and "
                                                      "`runs resume` continues it")
    except Exception as e:   # noqa: BLE001 - every failure becomes the run's status with a sentence
        if not is_user_error(e):
            logger.error("unexpected error:\n%s", traceback.format_exc())
        reason = user_message(e)
        if not is_user_error(e) and type(e).__name__ != "OutOfMemoryError":
            reason = f"Training stopped on an unexpected error: {reason}"
        logger.error("run failed: %s", reason)
        store.set_status(run_id, RunStatus.FAILED, f"{reason} The finished epochs are kept.")
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return store.get_run(run_id)


def load_resume_state(store: RunStore, run_id: int, logger: logging.Logger) -> dict | None:
    """The loop state saved after the run's last finished epoch, if any; the epoch rows after it are dropped
    (they are redone)."""
    path = resume_path(store, run_id)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    store.truncate_epochs(run_id, after=int(state["epoch"]))
    logger.info("resuming after epoch %d", state["epoch"])
    return state


def finish(store: RunStore, run: Run, result) -> None:
    """Save the chosen checkpoint and the evaluations, mark the run finished, and drop its resume state."""
    folder = store.run_dir(run.id)
    ckpt = folder / CHECKPOINT_FILE
    save_checkpoint(ckpt, result.model, run.config, result.classes, result.mean, result.std)
    for split, ev in result.evaluations.items():
        ev["probs_path"] = probs_to_file(folder / f"probs_{split}.npy", result.probs[split])
        store.add_evaluation(run.id, ev, split=split, dataset=run.config.data)
    store.update_run(run.id, checkpoint=str(ckpt), progress={"phase": "done", "best_epoch": result.best_epoch,
                                                             "stopped_early": result.stopped_early})
    store.set_status(run.id, RunStatus.FINISHED)
    (folder / RESUME_FILE).unlink(missing_ok=True)   # a finished run keeps only its final checkpoint


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"
