"""The checkpoint format: a network's weights with the config, classes and normalisation that rebuild it.

A torch file holding only tensors, strings, numbers and lists, so it loads with
`torch.load(weights_only=True)`: a crafted file whose pickle would run code is refused by torch's
restricted unpickler before anything runs. A run file (fercore.jobs.runfile) is such a checkpoint
with the run's record added.
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

from fercore.config import RunConfig
from fercore.errors import ConfigError, RunFileError
from fercore.safeio import replace_durably

FORMAT = "fercore-run/1"
MAX_RUN_FILE_PARAMS = 200_000_000   # 800 MB of float32 weights; the biggest recipe (ResNet101 + head) is ~45 million


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
    from fercore.models.registry import build_model  # here: torchvision costs seconds `data list` need not pay
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
    from fercore.models.registry import build_model
    with torch.device("meta"):   # shapes only: no memory, no random init (a fixed-size ImageNet backbone aside)
        model = build_model(RunConfig.from_dict(json.loads(config_json)), num_classes, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def count_parameters(config: RunConfig, num_classes: int) -> int:
    """How many weights the network `config` describes has, without allocating them."""
    return _count_parameters(config.to_json(), num_classes)
