"""Misclassified faces of each run with a saliency overlay: a handful per confused pair.

Reads the run's stored predictions of the report's split and the exact rows its training held out
(fercore.data.prepare_for_run), and explains the predicted class with Captum's Saliency (fercore.predict).
Images travel as data: URIs, so the report needs no file beside it.
"""
from __future__ import annotations

import base64
import io

import numpy as np

from fercore.errors import NotFound, UserError, user_message
from fercore.store import Evaluation, Run

PAIRS = 3          # the most confused (true, predicted) pairs of each run
PER_PAIR = 4       # faces shown per pair
OVERLAY_SIDE = 96  # pixels of the saliency overlay (the face is drawn at the same size by the page)


def mistakes_gallery(store, runs: list[Run], evals: dict[int, Evaluation | None], split: str) -> list[dict]:
    """Per run: {"run", "note", "pairs": [{"true", "pred", "count", "faces": [{"face", "overlay", "p"}]}]}."""
    return [_run_gallery(store, r, evals.get(r.id), split) for r in runs]


def _run_gallery(store, run: Run, ev: Evaluation | None, split: str) -> dict:
    from fercore.predict.predictor import load_predictor
    out = {"run": f"{run.id} · {run.name}", "note": "", "pairs": []}
    try:
        images = _split_images(store, run, ev, split)
    except UserError as e:
        out["note"] = user_message(e)
        return out
    try:
        pred = load_predictor(store, run.id)
    except UserError as e:
        out["note"] = f"No saliency: {e}"
        return out
    targets, predictions = np.asarray(ev.targets), np.asarray(ev.predictions)
    for t, p, count in confused_pairs(ev.confusion):
        idx = np.flatnonzero((targets == t) & (predictions == p))[:PER_PAIR]
        out["pairs"].append({"true": ev.classes[t], "pred": ev.classes[p], "count": count,
                             "faces": [_face(pred, images[i], p) for i in idx]})
    if not out["pairs"]:
        out["note"] = f"No {split} image was misclassified."
    return out


def _split_images(store, run: Run, ev: Evaluation | None, split: str) -> np.ndarray:
    """The run's `split` images in the order of its stored predictions; NotFound with a sentence if not here."""
    name = run.dataset or run.config.data
    if ev is None or not ev.predictions:
        raise NotFound(f"Run {run.label} has no stored {split} predictions, so its mistakes cannot be shown.")
    info = store.dataset_info(name)
    if info is None:
        raise NotFound(f"The dataset {name!r} is not in this database, so the faces run {run.label} got wrong "
                          "cannot be shown.")
    if run.dataset_fingerprint and info.fingerprint != run.dataset_fingerprint:
        raise NotFound(f"The dataset {name!r} changed since run {run.label} trained, so its mistakes cannot be "
                          "shown.")
    from fercore.data import prepare_for_run
    images, labels = prepare_for_run(store.load_dataset(name), run.config).arrays(split)
    if len(images) != len(ev.targets) or not np.array_equal(labels, np.asarray(ev.targets)):
        raise NotFound(f"The {split} images of {name!r} no longer match run {run.label}'s stored predictions.")
    return images


def confused_pairs(confusion, top: int = PAIRS) -> list[tuple[int, int, int]]:
    """(true, predicted, count) of the largest off-diagonal cells, largest first, zero counts left out."""
    m = np.asarray(confusion, dtype=np.int64).copy()
    np.fill_diagonal(m, 0)
    order = np.argsort(-m, axis=None, kind="stable")[:top]
    return [(int(t), int(p), int(m[t, p])) for t, p in zip(*np.unravel_index(order, m.shape)) if m[t, p] > 0]


def _face(pred, crop: np.ndarray, predicted: int) -> dict:
    from fercore.predict.predictor import explain_face
    heat, _ = explain_face(pred, crop, predicted, "saliency", side=OVERLAY_SIDE)
    p = float(pred.probs(crop[None])[0][predicted])
    return {"face": data_uri(crop, "PNG"), "overlay": data_uri(heat, "JPEG"), "p": p}


def data_uri(pixels: np.ndarray, kind: str) -> str:
    """A data: URI of an image (PNG keeps a 48-pixel face exact; JPEG keeps a colour overlay small)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, kind, **({"quality": 88} if kind == "JPEG" else {}))
    return f"data:image/{kind.lower()};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
