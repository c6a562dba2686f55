"""What the Compare page shows of stored evaluations: the most confused cell, its images, a mosaic.
(The ensemble of runs is engine code: fercore.teach.ensemble.)"""
from __future__ import annotations

import numpy as np


def most_confused_cell(cm) -> tuple[int, int]:
    """(true, predicted) of the largest off-diagonal count; (0, 1) for a perfect matrix."""
    m = np.asarray(cm, dtype=float).copy()
    if m.shape[0] < 2:
        return 0, 0
    np.fill_diagonal(m, -1)
    t, p = np.unravel_index(int(m.argmax()), m.shape)
    return int(t), int(p)


def cell_indices(ev, true_idx: int, pred_idx: int) -> np.ndarray:
    """Positions in the evaluated split whose true class is `true_idx` and prediction `pred_idx`."""
    t = np.asarray(ev.targets, dtype=np.int64)
    p = np.asarray(ev.predictions, dtype=np.int64)
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
