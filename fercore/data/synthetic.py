"""Synthetic faces: a built-in demo set with learnable expressions, so tests and offline demos need
no download.

Each image is a cartoon face (head ellipse, eyes, brows, mouth) drawn with numpy on a coordinate
grid. Nuisance factors (position, scale, tilt, skin tone, background, lighting, noise) vary at
random; the expression lives in a few shape parameters per class (mouth curvature and openness,
brow height and slant, eye openness), with jitter so that neighbouring classes overlap a little
and the task is learnable but not trivial. Whole batches are drawn at once, so 2,100 faces take
a fraction of a second.
"""
from __future__ import annotations

import numpy as np

from fercore.config import EMOTIONS
from fercore.data.dataset import FERDataset

# Per class, in FER2013 code order: (mouth curve, mouth open, mouth half-width, mouth tilt,
# brow raise, brow slant, eye openness). Face units: the head is 1 wide (half-width) and ~1.25
# tall, v grows downwards. curve > 0 = corners up (smile); slant > 0 = inner brow ends down (frown).
EXPRESSIONS = {
    "angry":    (-0.06, 0.00, 0.30, 0.00, -0.10, 0.22, 0.60),
    "disgust":  (-0.06, 0.03, 0.34, 0.18, -0.06, 0.08, 0.45),
    "fear":     (-0.06, 0.15, 0.46, 0.00, 0.12, -0.14, 1.40),
    "happy":    (0.22, 0.07, 0.46, 0.00, 0.04, 0.00, 0.70),
    "sad":      (-0.20, 0.00, 0.36, 0.00, 0.00, -0.18, 0.80),
    "surprise": (0.00, 0.36, 0.22, 0.00, 0.22, 0.00, 1.60),
    "neutral":  (0.00, 0.00, 0.36, 0.00, 0.00, 0.00, 1.00),
}
EXPRESSION_TABLE = np.array([EXPRESSIONS[c] for c in EMOTIONS], dtype=np.float32)
JITTER = np.array([0.04, 0.035, 0.05, 0.04, 0.05, 0.05, 0.18], dtype=np.float32)  # std per parameter
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
CHUNK = 512  # images drawn per batch: bounds memory for large n


def make_synthetic(n: int = 2100, seed: int = 0, size: int = 48) -> FERDataset:
    """n procedurally drawn size x size faces, balanced over the 7 FER2013 emotions, split 80/10/10
    per class; the same (n, seed, size) always gives identical arrays."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(EMOTIONS))
    params = draw_face_params(labels, rng)
    images = np.empty((n, size, size), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        part = {k: v[start:start + CHUNK] for k, v in params.items()}
        images[start:start + CHUNK] = render_faces(part, size, rng)
    split = stratified_split(labels, SPLIT_FRACTIONS, rng)
    return FERDataset("synthetic", "synthetic", list(EMOTIONS), images, labels, split, synthetic=True,
                      notes=["Procedurally drawn cartoon faces, not real photos."])


def draw_face_params(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image drawing parameters as (n, 1, 1) arrays, ready to broadcast over the pixel grid."""
    n = len(labels)
    expr = EXPRESSION_TABLE[labels] + rng.normal(size=(n, EXPRESSION_TABLE.shape[1])).astype(np.float32) * JITTER
    u = lambda lo, hi: rng.uniform(lo, hi, n).astype(np.float32)  # noqa: E731 - local shorthand
    p = {
        "cx": u(0.42, 0.58), "cy": u(0.45, 0.57),        # head centre, fraction of the image
        "scale": u(0.28, 0.38),                           # head half-width, fraction of the image
        "tilt": u(-0.2, 0.2),                             # radians
        "skin": u(90, 215), "background": u(10, 245), "gradient": u(-60, 60),
        "light": u(-0.35, 0.35),                          # side lighting across the face
        "hair": u(-1.3, -0.55), "hair_tone": u(0.15, 0.6),
        "eye_x": u(0.33, 0.43), "eye_y": u(-0.28, -0.14), "mouth_y": u(0.42, 0.58),
        "noise": u(2, 10),
        "flip": rng.choice(np.array([-1.0, 1.0], dtype=np.float32), n),   # mirrors the disgust sneer
    }
    names = ("curve", "open", "width", "sneer", "brow_raise", "brow_slant", "eye_open")
    p.update({name: expr[:, i] for i, name in enumerate(names)})
    p["open"] = np.maximum(p["open"], 0)
    p["eye_open"] = np.clip(p["eye_open"], 0.25, 2.0)
    return {k: v.reshape(n, 1, 1) for k, v in p.items()}


def render_faces(p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    n = len(p["cx"])
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = grid[None, None, :], grid[None, :, None]
    px = p["scale"] * size                       # pixels per face unit: turns distances into pixels
    cos, sin = np.cos(p["tilt"]), np.sin(p["tilt"])
    dx, dy = (x - p["cx"]) / p["scale"], (y - p["cy"]) / p["scale"]
    fu, fv = cos * dx + sin * dy, -sin * dx + cos * dy  # face coordinates

    img = p["background"] + p["gradient"] * (y - 0.5) + np.zeros((n, size, size), np.float32)
    head = soft(np.sqrt(fu ** 2 + (fv / 1.25) ** 2) - 1, px)
    skin = p["skin"] * (1 + p["light"] * fu * 0.5)
    img = paint(img, head, skin)
    img = paint(img, head * soft(fv - (p["hair"] + 0.12 * np.cos(3 * fu)), px), p["skin"] * p["hair_tone"])

    eye_u = np.abs(fu) - p["eye_x"]
    eye_v = fv - p["eye_y"]
    eye_h = 0.085 * p["eye_open"]
    img = paint(img, soft(np.sqrt((eye_u / 0.15) ** 2 + (eye_v / eye_h) ** 2) - 1, px * eye_h), skin * 1.25 + 20)
    iris = np.sqrt(eye_u ** 2 + eye_v ** 2) - np.minimum(0.07, eye_h)
    img = paint(img, soft(iris, px), 25)

    # Brows: a thick segment from the inner end (|u| = 0.12) to the outer end (|u| = 0.62)
    brow_y = p["eye_y"] - 0.2 - p["brow_raise"]
    t = np.clip((np.abs(fu) - 0.12) / 0.5, 0, 1)
    brow_line = brow_y + p["brow_slant"] * (1 - t) - p["brow_slant"] * 0.3 * t
    brow = np.maximum(np.abs(fv - brow_line) - 0.05, np.abs(np.abs(fu) - 0.37) - 0.25)
    img = paint(img, soft(brow, px), skin * 0.25)

    # Mouth: the upper lip follows a parabola (centre below the corners for a smile), the lower lip
    # the same parabola opened by `open`; a closed mouth is a dark line.
    mu = fu / p["width"]
    inside = np.clip(1 - mu ** 2, 0, 1)
    top = p["mouth_y"] + p["curve"] * inside - p["curve"] + p["flip"] * p["sneer"] * mu
    bottom = top + p["open"] * np.sqrt(inside)
    mouth = np.maximum(np.maximum(top - 0.05 - fv, fv - bottom - 0.05), np.abs(mu) - 1)
    img = paint(img, soft(mouth, px), np.where(p["open"] > 0.05, 15, skin * 0.3))

    img += rng.standard_normal(img.shape, dtype=np.float32) * p["noise"]
    return np.clip(img, 0, 255).astype(np.uint8)


def soft(signed_distance: np.ndarray, pixels_per_unit) -> np.ndarray:
    """Coverage of a shape given its signed distance (negative inside): a one-pixel soft edge
    keeps features antialiased at 48x48."""
    return np.clip(0.5 - signed_distance * pixels_per_unit, 0, 1)


def paint(img: np.ndarray, coverage: np.ndarray, colour) -> np.ndarray:
    return img + coverage * (colour - img)


def stratified_split(labels: np.ndarray, fractions, rng: np.random.Generator) -> np.ndarray:
    split = np.zeros(len(labels), dtype=np.uint8)
    bounds = np.cumsum(fractions)[:-1]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for s, part in enumerate(np.split(idx, np.round(bounds * len(idx)).astype(int))):
            split[part] = s
    return split
