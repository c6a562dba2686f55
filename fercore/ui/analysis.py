"""Numbers the Compare page derives from stored evaluations: ensembles, misclassified cells.

Everything here reads what training stored (test predictions, targets, the .npy probabilities);
nothing is re-evaluated, so a comparison of eight runs costs milliseconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_probs(ev: dict | None) -> np.ndarray | None:
    """The stored probabilities of an evaluation (float16 .npy, rows in the split's order), or None if missing."""
    path = (ev or {}).get("probs_path")
    if not path or not Path(path).is_file():
        return None
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError):
        return None


def test_set_key(run: dict) -> tuple:
    """Runs with the same key were tested on the same images in the same order (class subset included)."""
    c = run.get("config") or {}
    ratios = tuple(c.get("split_ratios") or ()) if c.get("split") == "random" else ()
    seed = c.get("split_seed") if c.get("split") == "random" else None
    return (run.get("dataset") or c.get("data"), tuple(run.get("classes") or ()), c.get("split"), ratios, seed)


def ensemble(runs: list[dict], evaluations: dict[int, dict], split: str = "test") -> dict:
    """Average the `split` probabilities of the runs evaluated on the same images.

    Returns {"members": [run ids], "accuracy", "individual": {id: acc}, "n", "left_out": {id: reason}}
    or {"error": sentence} when fewer than two runs can be combined."""
    left_out, usable = {}, []
    for r in runs:
        ev = evaluations.get(r["id"])
        probs = load_probs(ev)
        if ev is None:
            left_out[r["id"]] = f"no {split} evaluation"
        elif probs is None:
            left_out[r["id"]] = f"its stored {split} probabilities are missing (an imported or older run)"
        elif len(probs) != len(ev.get("targets") or []):
            left_out[r["id"]] = "its probabilities do not match its predictions"
        else:
            usable.append((r, ev, probs))
    groups: dict[tuple, list] = {}
    for item in usable:
        groups.setdefault(test_set_key(item[0]), []).append(item)
    if not groups:
        return {"error": f"None of the selected runs has stored {split} probabilities to combine.", "left_out": left_out}
    best = max(groups.values(), key=len)
    for key, items in groups.items():
        if items is not best:
            for r, _, _ in items:
                left_out[r["id"]] = "it was evaluated on other images (dataset, classes or split differ)"
    targets = np.asarray(best[0][1]["targets"])
    members = [(r, ev, p) for r, ev, p in best if np.array_equal(np.asarray(ev["targets"]), targets)]
    for r, ev, _ in best:
        if all(r is not m[0] for m in members):
            left_out[r["id"]] = f"its {split} labels differ from the others'"
    if len(members) < 2:
        return {"error": "An ensemble needs at least two runs evaluated on the same images (same dataset, classes "
                         "and split).", "left_out": left_out}
    avg = np.mean([p for _, _, p in members], axis=0)
    return {"members": [r["id"] for r, _, _ in members], "n": int(len(targets)),
            "accuracy": float((avg.argmax(1) == targets).mean()),
            "individual": {r["id"]: float(ev["accuracy"]) for r, ev, _ in members}, "left_out": left_out}


def most_confused_cell(cm) -> tuple[int, int]:
    """(true, predicted) of the largest off-diagonal count; (0, 1) for a perfect matrix."""
    m = np.asarray(cm, dtype=float).copy()
    if m.shape[0] < 2:
        return 0, 0
    np.fill_diagonal(m, -1)
    t, p = np.unravel_index(int(m.argmax()), m.shape)
    return int(t), int(p)


def cell_indices(ev: dict, true_idx: int, pred_idx: int) -> np.ndarray:
    """Positions in the test split whose true class is `true_idx` and prediction `pred_idx`."""
    t = np.asarray(ev.get("targets") or [], dtype=np.int64)
    p = np.asarray(ev.get("predictions") or [], dtype=np.int64)
    if len(t) != len(p):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((t == true_idx) & (p == pred_idx))


def mosaic(images: np.ndarray, columns: int = 10, scale: int = 2, gap: int = 2) -> np.ndarray:
    """Tile (n, H, W) uint8 images into one picture, each upscaled by `scale` (nearest) with a white gap."""
    n = len(images)
    if n == 0:
        return np.full((8, 8), 255, np.uint8)
    h, w = images.shape[1] * scale, images.shape[2] * scale
    rows = (n + columns - 1) // columns
    cols = min(columns, n)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = np.kron(img, np.ones((scale, scale),
                                                                                                  np.uint8))
    return out
