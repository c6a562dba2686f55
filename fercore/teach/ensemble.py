"""An ensemble of runs: their stored class probabilities averaged, scored on the images they share.

Reads only what training stored (predictions, targets, the .npy probabilities of each evaluation); nothing
is re-evaluated, so an ensemble of eight runs costs milliseconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fercore.metrics import ensemble_probs
from fercore.store import Evaluation, Run


def load_probs(ev: Evaluation | None) -> np.ndarray | None:
    """The stored probabilities of an evaluation (float16 .npy, rows in the split's order), or None if missing."""
    path = ev.probs_path if ev else None
    if not path or not Path(path).is_file():
        return None
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError):
        return None


def test_set_key(run: Run) -> tuple:
    """Runs with the same key were evaluated on the same images in the same order (class subset included). The
    dataset counts by its content (fingerprint), not its name: the same images imported under two names match."""
    c = run.config
    ratios = c.split_ratios if c.split == "random" else ()
    val_fraction = c.val_fraction if c.split == "val_from_train" else None
    seed = c.split_seed if c.split != "usage" else None
    return (run.dataset_fingerprint or run.dataset or c.data, tuple(run.classes), c.split, ratios, val_fraction, seed)


def ensemble(runs: list[Run], evaluations: dict[int, Evaluation], split: str = "test") -> dict:
    """Average the `split` probabilities of the runs evaluated on the same images.

    Returns {"members": [run ids], "accuracy", "individual": {id: acc}, "n", "left_out": {id: reason}}
    or {"error": sentence} when fewer than two runs can be combined."""
    left_out, usable = {}, []
    for r in runs:
        ev = evaluations.get(r.id)
        probs = load_probs(ev)
        if ev is None:
            left_out[r.id] = f"no {split} evaluation"
        elif probs is None:
            left_out[r.id] = f"its stored {split} probabilities are missing (an imported or older run)"
        elif len(probs) != len(ev.targets or []):
            left_out[r.id] = "its probabilities do not match its predictions"
        else:
            usable.append((r, ev, probs))
    groups: dict[tuple, list] = {}
    for item in usable:
        groups.setdefault(test_set_key(item[0]), []).append(item)
    if not groups:
        return {"error": f"None of the selected runs has stored {split} probabilities to combine.",
                "left_out": left_out}
    best = max(groups.values(), key=len)
    for key, items in groups.items():
        if items is not best:
            for r, _, _ in items:
                left_out[r.id] = "it was evaluated on other images (dataset, classes or split differ)"
    targets = np.asarray(best[0][1].targets)
    members = [(r, ev, p) for r, ev, p in best if np.array_equal(np.asarray(ev.targets), targets)]
    for r, ev, _ in best:
        if all(r is not m[0] for m in members):
            left_out[r.id] = f"its {split} labels differ from the others'"
    if len(members) < 2:
        return {"error": "An ensemble needs at least two runs evaluated on the same images (same dataset, classes "
                         "and split).", "left_out": left_out}
    avg = ensemble_probs([p for _, _, p in members])
    return {"members": [r.id for r, _, _ in members], "n": int(len(targets)),
            "accuracy": float((avg.argmax(1) == targets).mean()),
            "individual": {r.id: float(ev.accuracy) for r, ev, _ in members}, "left_out": left_out}
