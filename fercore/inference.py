"""Using a trained run: classify faces in photos, explain them, evaluate on any dataset."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import make_batch_transform
from .config import RunConfig
from .data.dataset import DataError, FERDataset
from .metrics import evaluation_record
from .runfile import RunFileError, load_model
from .safeio import atomic_path
from .train import predict_probs


@dataclass
class Predictor:
    """A loaded run: its network (eval mode, CPU), classes and preprocessing."""
    run: dict
    model: torch.nn.Module
    config: RunConfig
    classes: list[str]
    mean: float
    std: float

    def __post_init__(self):
        self.transform = make_batch_transform(self.config, self.mean, self.std, train=False)

    def probs(self, crops_u8: np.ndarray, tta: str | None = None) -> np.ndarray:
        """Class probabilities for (n, H, W) uint8 face crops (the run's TTA unless told otherwise)."""
        x = torch.from_numpy(np.ascontiguousarray(crops_u8))
        return predict_probs(self.model, x, self.transform, 256, False, tta or self.config.tta).numpy()

    def input_tensor(self, crop_u8: np.ndarray) -> torch.Tensor:
        """One crop as the normalised (1, 1, S, S) tensor the network sees."""
        return self.transform(torch.from_numpy(np.ascontiguousarray(crop_u8))[None], None)


def load_predictor(store, run) -> Predictor:
    info = store.get_run(run)
    if info["status"] != "finished" or not info.get("checkpoint"):
        raise RunFileError(f"Run {info['name']!r} has no trained model yet (status {info['status']}).")
    if not Path(info["checkpoint"]).exists():
        raise RunFileError(f"The checkpoint of run {info['name']!r} is missing ({info['checkpoint']}).")
    model, content = load_model(Path(info["checkpoint"]))
    return Predictor(info, model, content["config"], content["classes"], content["mean"], content["std"])


def classify_faces(pred: Predictor, img) -> dict:
    """Faces of a PIL image with class probabilities: the `predict` JSON shape (without `image`)."""
    from .faces import find_faces
    found = find_faces(img, size=48)
    probs = pred.probs(found.crops)
    faces = []
    for box, p in zip(found.boxes, probs):
        d = {c: float(v) for c, v in zip(pred.classes, p)}
        faces.append({"box": [int(v) for v in box], "probs": d, "top": max(d, key=d.get)})
    return {"faces": faces, "fallback_whole_image": bool(found.fallback_whole_image), "crops": found.crops}


def predict_image(pred: Predictor, path: Path) -> dict:
    from .images import ImageError, load_image
    try:
        img = load_image(path)
    except (ImageError, OSError) as e:
        return {"image": str(path), "error": str(e) if isinstance(e, ImageError) else f"Cannot read {path}: {e}"}
    out = classify_faces(pred, img)
    out.pop("crops")
    boxes_in_file_pixels(out["faces"], img)
    return {"image": str(path), **out}


def boxes_in_file_pixels(faces: list[dict], img) -> None:
    """Map boxes from the copy load_image reduced (a 48-megapixel photo is worked on at 2048 pixels) back to
    the pixels of the photo as displayed, which is what a script cropping the file by `box` expects."""
    width = img.info.get("original_size", img.size)[0]
    if width != img.width:
        scale = width / img.width
        for face in faces:
            face["box"] = [int(round(v * scale)) for v in face["box"]]


def explain_image(pred: Predictor, path: Path, method: str, out: Path, face: int = 1) -> dict:
    from PIL import Image

    from .explain import attribute, overlay
    from .images import load_image
    from .models import saliency_target_layer
    img = load_image(path)
    res = classify_faces(pred, img)
    if not 1 <= face <= len(res["faces"]):
        raise ValueError(f"The image has {len(res['faces'])} face(s); choose --face between 1 and "
                         f"{len(res['faces'])}.")
    crop = res["crops"][face - 1]
    top = res["faces"][face - 1]["top"]
    boxes_in_file_pixels(res["faces"], img)
    t0 = time.perf_counter()
    attr = attribute(pred.model, pred.input_tensor(crop), pred.classes.index(top), method,
                     target_layer=saliency_target_layer(pred.model) if method == "gradcam" else None)
    heat = overlay(np.asarray(Image.fromarray(crop).resize((192, 192))), attr)
    out = Path(out)
    with atomic_path(out) as tmp:   # same suffix: PIL picks the format by it
        Image.fromarray(heat).save(tmp)
    return {"image": str(path), "face": face, "box": res["faces"][face - 1]["box"], "top": top,
            "method": method, "out": str(out), "seconds": time.perf_counter() - t0}


def evaluate_run(store, run, data: str, split: str = "test", tta: str | None = None) -> dict:
    """Evaluate a saved run on any dataset; classes are matched by name (a subset model sees its subset)."""
    from .runner import open_dataset
    pred = load_predictor(store, run)
    ds = open_dataset(store, data)
    ds = match_classes(ds, pred.classes)
    x, y = ds.arrays(split)
    if len(x) == 0:
        raise DataError(f"The dataset {data!r} has no {split} images of the classes {', '.join(pred.classes)}.")
    tta = tta or pred.config.tta
    probs = pred.probs(x, tta)
    ev = evaluation_record(probs, y, pred.classes, tta)
    ev["dataset"] = data
    ev["split"] = split
    return ev


def match_classes(ds: FERDataset, classes: list[str]) -> FERDataset:
    """The images of `ds` whose class is one of `classes`, relabelled in that order."""
    have = {c.lower(): c for c in ds.classes}
    common = [c for c in classes if c.lower() in have]
    if not common:
        raise DataError(f"The dataset has none of the run's classes ({', '.join(classes)}); "
                        f"its classes are {', '.join(ds.classes)}.")
    sub = ds.subset_classes([have[c.lower()] for c in common])
    # relabel into the run's class order (a class the dataset lacks simply has no images)
    remap = np.array([classes.index(c) for c in common])
    return FERDataset(sub.name, sub.source, list(classes), sub.images, remap[sub.labels], sub.split, sub.synthetic)
