"""Carry one stored run from `running` to `finished` / `failed` / `cancelled`.

Used by the foreground `train` command and by the background worker alike: load the dataset, call
fit() with a recorder that writes every epoch to the store as it finishes, save the checkpoint chosen
on val, store the evaluations, and turn every failure into a status with a plain reason.
"""
from __future__ import annotations

import logging
import traceback
from pathlib import Path

import torch

from .config import ConfigError, RunConfig
from .data.dataset import DataError, FERDataset
from .runfile import probs_to_file, save_checkpoint
from .store import NotFound, RunStore
from .train import Cancelled, Recorder, TrainingDiverged, device_name, fit, pick_device

log = logging.getLogger("fercore.runner")


def open_dataset(store: RunStore, spec: str) -> FERDataset:
    """A dataset by its name in the store, or imported from a path / the word `synthetic` on first use."""
    if store.dataset_info(spec) is not None:
        return store.load_dataset(spec)
    from .data.sources import load_source   # imported here: sources pull in PIL/pandas
    if spec.startswith("synthetic") or Path(spec).expanduser().exists():
        ds = load_source(spec)
        name = spec if spec.startswith("synthetic") else ds.name
        store.add_dataset(ds, name)
        return store.load_dataset(name)
    raise NotFound(f"There is no dataset named {spec!r} and no file or folder at that path; "
                   "see `python -m fercore data list`, or import one with `data import`.")


class StoreRecorder(Recorder):
    """Writes progress, epochs and evaluations of one run to the store as they happen."""

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

    def on_evaluation(self, split: str, ev: dict) -> None:
        self.log.info("%s accuracy %.4f on %d images (tta %s)", split, ev["accuracy"], ev["n"], ev["tta"])


def execute_run(store: RunStore, run_id: int, device: str | None = None,
                logger: logging.Logger | None = None) -> dict:
    """Train a run that is already marked `running`. Returns the final run dict; never raises for
    a problem with the run itself (that becomes its status and error)."""
    logger = logger or log
    run = store.get_run(run_id)
    try:
        config = RunConfig.from_dict(run["config"])
        dataset = open_dataset(store, config.data)
        dev = pick_device(device)
        store.update_run(run_id, device=device_name(dev), dataset=config.data)
        result = fit(config, dataset, StoreRecorder(store, run_id, logger), dev)
        folder = store.run_dir(run_id)
        ckpt = folder / "checkpoint.pt"
        save_checkpoint(ckpt, result.model, config, result.classes, result.mean, result.std)
        for split, ev in result.evaluations.items():
            ev["probs_path"] = probs_to_file(folder / f"probs_{split}.npy", result.probs[split])
            store.add_evaluation(run_id, ev, split=split, dataset=config.data)
        store.update_run(run_id, checkpoint=str(ckpt), progress={"phase": "done", "best_epoch": result.best_epoch,
                                                                 "stopped_early": result.stopped_early})
        store.set_status(run_id, "finished")
    except Cancelled:
        store.set_status(run_id, "cancelled", "cancelled by its owner; the finished epochs are kept")
    except (ConfigError, DataError, NotFound, TrainingDiverged) as e:
        _fail(store, run_id, str(e), logger)
    except torch.OutOfMemoryError:
        _fail(store, run_id, "The GPU ran out of memory; try a smaller batch size or image size.", logger)
    except OSError as e:
        reason = "The disk is full" if getattr(e, "errno", None) == 28 else f"A file operation failed ({e})"
        _fail(store, run_id, f"{reason}; the finished epochs are kept.", logger)
    except Exception as e:   # an unexpected bug: keep the traceback in the run's log, a sentence in the UI
        logger.error("unexpected error:\n%s", traceback.format_exc())
        from .models import WeightsUnavailable
        msg = str(e) if isinstance(e, WeightsUnavailable) else f"Training stopped on an unexpected error: " \
                                                                 f"{type(e).__name__}: {e}"
        _fail(store, run_id, msg, logger)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return store.get_run(run_id)


def _fail(store: RunStore, run_id: int, reason: str, logger: logging.Logger) -> None:
    logger.error("run failed: %s", reason)
    store.set_status(run_id, "failed", reason)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"
