"""Evaluation numbers: confusion matrix, per-class precision/recall/F1, and the evaluation record."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are the true class, columns the predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_metrics(cm: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)}


def evaluation_record(probs: np.ndarray, targets: np.ndarray, classes: list[str], tta: str = "none") -> dict:
    """The stored evaluation: accuracy, confusion, per-class metrics, predictions (the `evaluate` JSON shape)."""
    preds = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(targets, preds, len(classes))
    n = int(len(targets))
    per_class = per_class_metrics(cm, classes)
    return {"accuracy": float((preds == targets).mean()) if n else 0.0, "n": n, "classes": list(classes),
            "confusion": cm.tolist(), "per_class": per_class,
            "macro_f1": macro_f1(per_class),
            "predictions": preds.tolist(), "targets": np.asarray(targets).tolist(), "tta": tta}


def macro_f1(per_class: dict[str, dict]) -> float:
    """Mean F1 over the classes that have images in this split: a class with no support has no F1 to average."""
    f1 = [m["f1"] for m in per_class.values() if m["support"] > 0]
    return float(np.mean(f1)) if f1 else 0.0


def ensemble_probs(probs: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    """The (weighted) mean of several runs' class probabilities for the same images."""
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=float)
    return np.tensordot(w / w.sum(), np.stack(probs), axes=1)


def public_evaluation(ev: dict) -> dict:
    """The evaluation without the per-image lists (for JSON output)."""
    return {k: v for k, v in ev.items() if k not in ("predictions", "targets", "probs_path")}
