"""The checkpoint format: a network's weights with the config, classes and normalisation that rebuild it.

A torch file holding only tensors, strings, numbers and lists, so it loads with
`torch.load(weights_only=True)`: a crafted file whose pickle would run code is refused by torch's
restricted unpickler before anything runs. A run file (fercore.jobs.runfile) is such a checkpoint
with the run's record added.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from fercore.config import RunConfig
from fercore.errors import ConfigError, RunFileError

FORMAT = "fercore-run/1"


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
        os.replace(tmp, path)   # a full disk mid-save leaves the old file, never half a file
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
        state = payload["state_dict"]
        assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
        probs = payload.get("probs") or {}
        assert isinstance(probs, dict) and all(k in ("val", "test") and isinstance(v, torch.Tensor) and v.ndim == 2
                                               and v.shape[1] == len(classes) for k, v in probs.items())
    except (KeyError, ValueError, AssertionError, ConfigError, TypeError):
        raise RunFileError(f"{path.name} is damaged: its config, classes or weights are missing or invalid.") \
            from None
    return {"config": config, "classes": classes, "mean": float(payload["mean"]), "std": float(payload["std"]),
            "state_dict": state, "record": record,
            "probs": {k: v.float().numpy() for k, v in probs.items()}}


def refuse_zip_bomb(path: Path) -> None:
    """torch.save stores a file's entries uncompressed, so a run file never expands much beyond its own size;
    torch.load would inflate deflated ones, so a crafted 200 kB file could fill gigabytes of memory."""
    try:
        with zipfile.ZipFile(path) as zf:
            expanded = sum(member.file_size for member in zf.infolist())
    except (zipfile.BadZipFile, OSError):
        return   # not a zip at all: torch.load says it is not a run file
    size = path.stat().st_size
    if expanded > 2 * size + 1024 ** 2:
        raise RunFileError(f"{path.name} would expand to {expanded / 1e6:,.0f} MB from {size / 1e6:,.1f} MB; "
                           "FER Lab refuses it as a possible zip bomb (run files are not compressed).")


def load_model(path: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network of a run file and load its weights (no pretrained download needed)."""
    content = read_run_file(path)
    from fercore.models.registry import build_model  # here: torchvision costs seconds `data list` need not pay
    model = build_model(content["config"], len(content["classes"]), pretrained=False)
    state = {k: v.float() if v.is_floating_point() else v for k, v in content["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise RunFileError(f"{Path(path).name}: the weights do not fit the network its config describes.") from None
    model.eval()
    return model, content
