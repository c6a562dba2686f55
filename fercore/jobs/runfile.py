"""Run files: a whole run (config, curves, evaluations, weights) in one file, and the shipped starter.

The format is a torch file holding only tensors, strings, numbers and lists, so it loads with
`torch.load(weights_only=True)`: a crafted file whose pickle would run code is refused by torch's
restricted unpickler before anything runs. Students share runs with `runs export` / `runs import`;
the shipped starter model is such a file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fercore.auth import PERSONAL, SYSTEM, Action, User, require, validate_name
from fercore.errors import RunFileError
from fercore.safeio import atomic_path
from fercore.store.entities import Run, RunStatus

STARTER_FILE = Path(__file__).resolve().parents[2] / "models" / "starter.fer.pt"
CHECKPOINT_NAMES = ("load_model", "read_run_file", "save_checkpoint")


def __getattr__(name: str):
    """The checkpoint functions, re-exported on first use: importing this module (to open the store and register
    the starter) must not import torch, so that a server's first page does not wait for it."""
    if name in CHECKPOINT_NAMES:
        from fercore.models import checkpoint
        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



# --- whole runs: export / import ----------------------------------------------------------------------
def export_run(store, run, out_path: Path) -> Path:
    info = store.get_run(run, epochs=True)
    if info.status != RunStatus.FINISHED or not info.checkpoint:
        raise RunFileError(f"Run {info.name!r} has no trained weights to export (status {info.status}).")
    from fercore.models.checkpoint import load_model, read_run_file, save_checkpoint  # torch: only when needed
    content = read_run_file(Path(info.checkpoint))
    evals = {s: store.evaluation(info.id, s, full=True) for s in ("val", "test")}
    keep = ("name", "status", "dataset", "dataset_fingerprint", "classes", "created_at", "started_at", "finished_at",
            "device", "n_params", "summary")
    record = {k: v for k, v in info.to_json(epochs=True).items() if k in keep}
    record["epochs"] = list(info.epochs)
    probs = {}
    for split, ev in evals.items():   # the file carries the probabilities, not a path of this machine
        if ev and ev.probs_path and Path(ev.probs_path).is_file():
            probs[split] = np.load(ev.probs_path, allow_pickle=False)
    record["evaluations"] = {s: {k: v for k, v in e.to_json(full=True).items() if k != "probs_path"}
                             for s, e in evals.items() if e}
    model, _ = load_model(Path(info.checkpoint))
    save_checkpoint(Path(out_path), model, content["config"], content["classes"], content["mean"],
                    content["std"], record, probs=probs)
    return Path(out_path)


def import_run(store, path: Path, name: str | None = None, by: User | None = None) -> dict:
    """Add a shared run to the store, owned by `by`. All or nothing: a file that fails anywhere (weights that do
    not fit, a damaged record) leaves no run behind, neither a half one nor one stuck in `running`. The file may
    name a dataset, never a path: a path (which the Compare page would otherwise open) is refused."""
    require(by or PERSONAL, Action.IMPORT_RUN)
    from fercore.models.checkpoint import load_model, save_checkpoint  # torch: not for a server's first page
    model, content = load_model(Path(path))   # the weights are checked before the store is touched
    rec, config = content["record"], content["config"]
    _names_no_path(rec.get("dataset"), config.data)
    name = validate_name(name or rec.get("name") or Path(path).stem, "run name")
    config = config.replace(name=name)
    run = store.create_run(config, status=RunStatus.RUNNING, classes=content["classes"], by=by, limits=False)
    rid = run.id
    try:
        ckpt = store.run_dir(rid) / "checkpoint.pt"
        save_checkpoint(ckpt, model, config, content["classes"], content["mean"], content["std"], rec)
        for e in rec.get("epochs", []):
            store.add_epoch(rid, e)
        for split, ev in (rec.get("evaluations") or {}).items():
            ev = {k: v for k, v in ev.items() if k != "probs_path"}   # older files: another machine's path
            if split in content["probs"] and len(content["probs"][split]) == len(ev.get("targets") or []):
                ev["probs_path"] = probs_to_file(store.run_dir(rid) / f"probs_{split}.npy", content["probs"][split])
            store.add_evaluation(rid, ev, split=split, dataset=ev.get("dataset"))
        store.update_run(rid, checkpoint=str(ckpt), device=rec.get("device"), n_params=rec.get("n_params"),
                         dataset=rec.get("dataset") or config.data,
                         dataset_fingerprint=rec.get("dataset_fingerprint"),
                         progress={"imported_from": str(Path(path).name)})
        store.set_status(rid, RunStatus.FINISHED)
        times = _recorded_times(rec)
        if times:   # its training time, not the moment of the import
            store.update_run(rid, **times)
    except Exception as e:
        store.discard_run(rid)
        if isinstance(e, OSError):
            raise   # a full disk or a permission problem is not the file's fault; the caller says what it is
        raise RunFileError(f"{Path(path).name} is damaged: its recorded epochs or evaluations are invalid.") \
            from None
    return store.get_run(rid)


def _names_no_path(*specs) -> None:
    """A run file may name a dataset (a name in the store, `synthetic...`), never a file or folder of the server."""
    for spec in specs:
        if spec and (any(c in str(spec) for c in "/\\~") or str(spec).startswith(".")):
            raise RunFileError(f"The run file names its dataset by a path ({str(spec)[:80]!r}); a run file may only "
                               "name a dataset, so it was not imported.")


def _recorded_times(rec: dict) -> dict:
    """started_at / finished_at of an exported run's record, where both are readable timestamps."""
    from datetime import datetime
    try:
        times = {k: datetime.fromisoformat(rec[k]) for k in ("started_at", "finished_at")}
    except (KeyError, TypeError, ValueError):
        return {}
    return times if times["started_at"] <= times["finished_at"] else {}


def ensure_starter(store) -> Run | None:
    """Register the shipped starter model as the run `starter` in a brand-new database, once: a flag in the
    database remembers it was done, so a starter its owner deleted stays deleted. A database that has runs but
    no flag (made before the flag existed) is not new: its starter, if any, is its owner's business."""
    if not STARTER_FILE.exists() or not store.claim_flag("starter_registered"):
        return None
    if store.list_runs(limit=1):
        return None
    try:
        run = import_run(store, STARTER_FILE, name="starter", by=SYSTEM)
        store.set_starter(run.id, by=SYSTEM)
        return store.get_run(run.id)
    except BaseException:
        store.release_flag("starter_registered")   # a full disk, say: the next command tries again
        raise


def probs_to_file(path: Path, probs: np.ndarray, guard=None) -> str:
    with atomic_path(path, guard=guard) as tmp:
        np.save(tmp, probs.astype(np.float16))
    return str(path)
