"""Using a trained run: classify faces in photos, explain them, evaluate on any dataset."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fercore.augment import make_batch_transform
from fercore.config import RunConfig
from fercore.data.dataset import DataError, FERDataset
from fercore.errors import RunFileError, UserError
from fercore.metrics import evaluation_record
from fercore.models.checkpoint import load_model
from fercore.safeio import atomic_path
from fercore.store.entities import RunStatus
from fercore.train import EVAL_PRECISION, predict_probs


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
    if info.status != RunStatus.FINISHED or not info.checkpoint:
        raise RunFileError(f"Run {info.name!r} has no trained model yet (status {info.status}).")
    if not Path(info.checkpoint).exists():
        raise RunFileError(f"The checkpoint of run {info.name!r} is missing ({info.checkpoint}).")
    model, content = load_model(Path(info.checkpoint))
    return Predictor(info, model, content["config"], content["classes"], content["mean"], content["std"])


def classify_faces(pred: Predictor, img) -> dict:
    """Faces of a PIL image with class probabilities: the `predict` JSON shape (without `image`)."""
    from fercore.predict.faces import find_faces
    found = find_faces(img, size=48)
    probs = pred.probs(found.crops)
    faces = []
    for box, p in zip(found.boxes, probs):
        d = {c: float(v) for c, v in zip(pred.classes, p)}
        faces.append({"box": [int(v) for v in box], "probs": d, "top": max(d, key=d.get)})
    return {"faces": faces, "fallback_whole_image": bool(found.fallback_whole_image), "crops": found.crops}


def predict_image(pred: Predictor, path: Path) -> dict:
    from fercore.predict.images import ImageError, load_image
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


def explain_face(pred: Predictor, crop: np.ndarray, target: int, method: str,
                 side: int = 288) -> tuple[np.ndarray, str | None]:
    """The attribution of one face for one class painted over the face enlarged to `side` pixels (RGB uint8),
    and a note when the map needed explaining (see `attribution_map`)."""
    from PIL import Image

    from fercore.predict.explain import overlay
    attr, note = attribution_map(pred, crop, target, method)
    face = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC))
    return overlay(face, attr), note


def attribution_map(pred: Predictor, crop: np.ndarray, target: int, method: str) -> tuple[np.ndarray, str | None]:
    """The (S, S) unit-range attribution of one face for one class, and a note when it needs explaining.
    Integrated Gradients and Occlusion start from a black face
    (pixel value 0, normalised as the network sees it). Grad-CAM weighs the last feature map (after its ReLU:
    tested to give face-shaped maps on FER2013 faces, tests/test_explain_readable.py); where that is blank (no
    positive gradient there) it weighs the same map before its ReLU, and the note says so."""
    from fercore.models import saliency_target_layer
    from fercore.predict.explain import attribute, pre_activation
    x = pred.input_tensor(crop)
    black = float(pred.input_tensor(np.zeros_like(crop)).flatten()[0])
    layers = [None]
    if method == "gradcam":
        last = saliency_target_layer(pred.model)
        layers = [last] + [m for m in (pre_activation(pred.model, last),) if m is not None]
    note = None
    for depth, layer in enumerate(layers):
        attr = attribute(pred.model, x, target, method, target_layer=layer, baseline=black)
        if float(attr.max()) > 0:
            if depth:
                note = ("Grad-CAM after the last layer's ReLU was blank for this class, so this map weighs the same "
                        "layer before its ReLU (where evidence against the class is not yet cut off).")
            break
    else:
        if method == "gradcam":
            note = ("Grad-CAM is blank for this class: the last feature map holds no positive evidence for it. "
                    "Saliency or Occlusion still show what moves the score.")
    return attr, note


def explain_image(pred: Predictor, path: Path, method: str, out: Path, face: int = 1) -> dict:
    from PIL import Image

    from fercore.predict.images import load_image
    img = load_image(path)
    res = classify_faces(pred, img)
    if not 1 <= face <= len(res["faces"]):
        raise UserError(f"The image has {len(res['faces'])} face(s); choose --face between 1 and "
                        f"{len(res['faces'])}.")
    crop = res["crops"][face - 1]
    top = res["faces"][face - 1]["top"]
    boxes_in_file_pixels(res["faces"], img)
    t0 = time.perf_counter()
    heat, note = explain_face(pred, crop, pred.classes.index(top), method)
    out = Path(out)
    with atomic_path(out) as tmp:   # same suffix: PIL picks the format by it
        Image.fromarray(heat).save(tmp)
    return {"image": str(path), "face": face, "box": res["faces"][face - 1]["box"], "top": top,
            "method": method, "out": str(out), "note": note, "seconds": time.perf_counter() - t0}


def evaluate_run(store, run, data: str, split: str = "test", tta: str | None = None) -> dict:
    """Evaluate a saved run on any dataset; classes are matched by name (a subset model sees its subset).

    On the run's own dataset (same content), the images are split exactly as the run's training split them
    (fercore.data.prepare_for_run), so `--split test` scores the run's own test rows and never an image it
    trained on. On another dataset, the source's own split is scored. `scored` in the result says which."""
    from fercore.data import prepare_for_run, resolve
    pred = load_predictor(store, run)
    ds = resolve(data, store)
    own = pred.run.dataset_fingerprint is not None and ds.fingerprint() == pred.run.dataset_fingerprint
    if own:
        ds = prepare_for_run(ds, pred.config)
        scored = f"the run's own {split} split ({pred.config.split} split of {data})"
    else:
        ds = match_classes(ds, pred.classes)
        scored = f"the {split} split of {data} as the source defines it (not the dataset this run trained on)"
    x, y = ds.arrays(split)
    if len(x) == 0:
        raise DataError(f"The dataset {data!r} has no {split} images of the classes {', '.join(pred.classes)}"
                        + (" in this run's split." if own else "."))
    tta = tta or pred.config.tta
    probs = pred.probs(x, tta)
    ev = evaluation_record(probs, y, pred.classes, tta)
    ev.update(dataset=data, split=split, scored=scored, own_split=own, precision=EVAL_PRECISION)
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
