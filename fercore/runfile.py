"""Run files: a checkpoint, and a whole run (config, curves, evaluations, weights) in one file.

The format is a torch file holding only tensors, strings, numbers and lists, so it loads with
`torch.load(weights_only=True)`: a crafted file whose pickle would run code is refused by torch's
restricted unpickler before anything runs. Students share runs with `runs export` / `runs import`;
the shipped starter model is such a file.
"""
from __future__ import annotations

import functools
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, RunConfig
from .safeio import atomic_path, replace_durably

FORMAT = "fercore-run/1"
MAX_RUN_FILE_PARAMS = 200_000_000   # 800 MB of float32 weights; the biggest recipe (ResNet101 + head) is ~45 million
STARTER_FILE = Path(__file__).resolve().parent.parent / "models" / "starter.fer.pt"


class RunFileError(ValueError):
    """A run or checkpoint file that cannot be used; the message is a plain sentence."""


def save_checkpoint(path: Path, model: torch.nn.Module, config: RunConfig, classes: list[str], mean: float,
                    std: float, record: dict | None = None, half: bool = False,
                    probs: dict[str, np.ndarray] | None = None) -> None:
    """`probs`: an exported run's stored class probabilities per evaluated split, so that an ensemble on
    another machine can use them."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": config.to_json(), "classes": list(classes), "mean": float(mean),
               "std": float(std), "state_dict": state, "record": json.dumps(record or {}),
               "probs": {k: torch.from_numpy(np.asarray(v, dtype=np.float16)) for k, v in (probs or {}).items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        replace_durably(tmp, path)   # a full disk mid-save or a power cut leaves the old file, never half a file
    finally:
        tmp.unlink(missing_ok=True)


def read_run_file(path: Path) -> dict:
    """The file's contents, validated; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"No run file at {path}.")
    refuse_zip_bomb(path)
    try:
        with warnings.catch_warnings():   # torch warns about odd pickles on stderr; our sentence says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch's UnpicklingError for code, or a zip/format error for junk
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "Unpickling" in type(e).__name__:
            raise RunFileError(f"{path.name} contains Python objects other than weights, which FER Lab refuses "
                               "to load (it could run code). Export the run again with `runs export`.") from None
        raise RunFileError(f"{path.name} is not a FER Lab run file (it could not be read as one).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RunFileError(f"{path.name} is not a FER Lab run file (format {FORMAT} expected).")
    try:
        config = RunConfig.from_dict(json.loads(payload["config"]))
        record = json.loads(payload.get("record") or "{}")
        classes = [str(c) for c in payload["classes"]]
        mean, std = float(payload["mean"]), float(payload["std"])
        assert isinstance(record, dict) and isinstance(payload["classes"], (list, tuple)) and len(classes) >= 2
        state = payload["state_dict"]
        assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
        probs = payload.get("probs") or {}
        assert isinstance(probs, dict) and all(k in ("val", "test") and isinstance(v, torch.Tensor) and v.ndim == 2
                                               and v.shape[1] == len(classes) for k, v in probs.items())
    except (KeyError, ValueError, AssertionError, ConfigError, TypeError):
        raise RunFileError(f"{path.name} is damaged: its config, classes or weights are missing or invalid.") \
            from None
    return {"config": config, "classes": classes, "mean": mean, "std": std, "state_dict": state, "record": record,
            "probs": {k: v.float().numpy() for k, v in probs.items()}}


def refuse_zip_bomb(path: Path) -> None:
    """torch.save stores a file's entries uncompressed, so a run file never expands much beyond its own size;
    torch.load would inflate deflated ones, so a crafted 200 kB file could fill gigabytes of memory."""
    try:
        with zipfile.ZipFile(path) as zf:
            expanded = sum(member.file_size for member in zf.infolist())
    except Exception:   # noqa: BLE001 - whatever a damaged zip makes zipfile raise
        with open(path, "rb") as f:
            if f.read(2) != b"PK":
                return   # not a zip at all: torch.load says it is not a run file
        # a zip whose sizes cannot be read must not reach torch's own zip reader, which would inflate it unchecked
        raise RunFileError(f"{path.name} is not a FER Lab run file (it could not be read as one).") from None
    size = path.stat().st_size
    if expanded > 2 * size + 1024 ** 2:
        raise RunFileError(f"{path.name} would expand to {expanded / 1e6:,.0f} MB from {size / 1e6:,.1f} MB; "
                           "FER Lab refuses it as a possible zip bomb (run files are not compressed).")


def load_model(path: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network of a run file and load its weights (no pretrained download needed). The network's
    size is checked first, without building it: a small file must not make the lab allocate a huge model."""
    content = read_run_file(path)
    from .models import build_model   # here, not at the top: torchvision costs seconds `data list` need not pay
    refuse_huge_model(Path(path).name, content)
    model = build_model(content["config"], len(content["classes"]), pretrained=False)
    state = {k: v.float() if v.is_floating_point() else v for k, v in content["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise RunFileError(f"{Path(path).name}: the weights do not fit the network its config describes.") from None
    model.eval()
    return model, content


def refuse_huge_model(name: str, content: dict) -> None:
    """The network a run file's config describes must be of a size the lab loads, and the file must carry its
    weights. Both are known before anything is allocated: the network is counted on PyTorch's meta device."""
    n_params = count_parameters(content["config"], len(content["classes"]))
    if n_params > MAX_RUN_FILE_PARAMS:
        raise RunFileError(f"{name} describes a network of {n_params / 1e6:,.0f} million weights; FER Lab loads at "
                           f"most {MAX_RUN_FILE_PARAMS / 1e6:,.0f} million (ResNet101 has 43 million).")
    carried = sum(v.numel() for v in content["state_dict"].values())
    if n_params > carried:
        raise RunFileError(f"{name}: the weights do not fit the network its config describes "
                           f"({carried:,} values for {n_params:,} weights).")


@functools.lru_cache(maxsize=64)
def _count_parameters(config_json: str, num_classes: int) -> int:
    from .models import build_model
    with torch.device("meta"):   # shapes only: no memory, no random init (a fixed-size ImageNet backbone aside)
        model = build_model(RunConfig.from_dict(json.loads(config_json)), num_classes, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def count_parameters(config: RunConfig, num_classes: int) -> int:
    """How many weights the network `config` describes has, without allocating them."""
    return _count_parameters(config.to_json(), num_classes)


# --- whole runs: export / import ----------------------------------------------------------------------
def export_run(store, run, out_path: Path) -> Path:
    info = store.get_run(run, epochs=True)
    if info["status"] != "finished" or not info.get("checkpoint"):
        raise RunFileError(f"Run {info['name']!r} has no trained weights to export (status {info['status']}).")
    content = read_run_file(Path(info["checkpoint"]))
    evals = {s: store.evaluation(info["id"], s, full=True) for s in ("val", "test")}
    record = {k: info[k] for k in ("name", "status", "dataset", "dataset_fingerprint", "classes", "created_at",
                                   "started_at", "finished_at", "device", "n_params", "summary")}
    record["epochs"] = info["epochs"]
    probs = {}
    for split, ev in evals.items():   # the file carries the probabilities, not a path of this machine
        path = Path(ev.pop("probs_path", None) or "") if ev else None
        if path and path.is_file():
            probs[split] = np.load(path, allow_pickle=False)
    record["evaluations"] = {s: e for s, e in evals.items() if e}
    model, _ = load_model(Path(info["checkpoint"]))
    save_checkpoint(Path(out_path), model, content["config"], content["classes"], content["mean"],
                    content["std"], record, probs=probs)
    return Path(out_path)


def import_run(store, path: Path, name: str | None = None) -> dict:
    """Add a shared run to the store. All or nothing: a file that fails anywhere (weights that do not fit,
    a damaged record) leaves no run behind, neither a half one nor one stuck in `running`."""
    model, content = load_model(Path(path))   # the weights are checked before the store is touched
    rec, config = content["record"], content["config"]
    name = name or rec.get("name") or Path(path).stem
    config = config.replace(name=name)
    run = store.create_run(config, status="running", classes=content["classes"])
    rid = run["id"]
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
        store.set_status(rid, "finished")
        times = _recorded_times(rec)
        if times:   # its training time, not the moment of the import
            store.update_run(rid, **times)
    except Exception as e:
        store.delete_run(rid)
        if isinstance(e, OSError):
            raise   # a full disk or a permission problem is not the file's fault; the caller says what it is
        raise RunFileError(f"{Path(path).name} is damaged: its recorded epochs or evaluations are invalid.") \
            from None
    return store.get_run(rid)


def _recorded_times(rec: dict) -> dict:
    """started_at / finished_at of an exported run's record, where both are readable timestamps."""
    from datetime import datetime
    try:
        times = {k: datetime.fromisoformat(rec[k]) for k in ("started_at", "finished_at")}
    except (KeyError, TypeError, ValueError):
        return {}
    return times if times["started_at"] <= times["finished_at"] else {}


def ensure_starter(store) -> dict | None:
    """Register the shipped starter model as the run `starter` in a brand-new database, once: a flag in the
    database remembers it was done, so a starter its owner deleted stays deleted. A database that has runs but
    no flag (made before the flag existed) is not new: its starter, if any, is its owner's business."""
    if not STARTER_FILE.exists() or not store.claim_flag("starter_registered"):
        return None
    if store.list_runs(limit=1):
        return None
    try:
        return import_run(store, STARTER_FILE, name="starter")
    except BaseException:
        store.release_flag("starter_registered")   # a full disk, say: the next command tries again
        raise


def probs_to_file(path: Path, probs: np.ndarray) -> str:
    with atomic_path(path) as tmp:
        np.save(tmp, probs.astype(np.float16))
    return str(path)
