"""Face detection and 48x48 grayscale crops, with OpenCV's Haar cascades (no download needed).

The frontal-face cascade looks first; where it finds nothing, the profile-face cascade looks at the
image and at its mirror (it knows faces turned one way only). FER2013 faces are tight crops, so a
photo in which no face is found falls back to its centre square, and says so. Boxes are (x, y, w, h)
in the pixels of the image given, sorted left to right, so "face 1" is the leftmost person in the
picture, in the UI and in `predict` JSON alike.
"""
from __future__ import annotations

import functools
import queue
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Box = tuple[int, int, int, int]   # x, y, w, h

# Detector settings, chosen on upscaled FER2013 faces pasted on a gray canvas (see the tests):
# histogram equalisation lowered the hit rate there, and minNeighbors=4 keeps false boxes rare.
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 4
MIN_FACE = 24                 # pixels at detection scale: the cascade's own window
MIN_DETECT_SIDE = 192         # tiny images (a 48x48 FER crop) are enlarged so the window fits
# A Haar box spans brows to lower lip; a FER2013 crop is ~5% wider (measured: box = 0.955 of the
# crop on 200 upscaled FER images), taking in more forehead and chin.
BOX_MARGIN = 0.05
OVERLAP_TO_MERGE = 0.5        # share of the smaller box covered by the larger one

CASCADE_FILES = (             # first one found wins
    "haarcascade_frontalface_default.xml",
    "lbpcascade_frontalface_improved.xml",
    "lbpcascade_frontalface.xml",
)
# Faces turned to one side (OpenCV's profile cascade was trained on one direction; the mirror gives the other).
# On 1,200 FER2013 faces pasted on a canvas it found 41 of the 261 the frontal cascade missed, with no box on 60
# face-free images (noise, blocks, blurred texture) at minNeighbors=4.
PROFILE_CASCADE_FILES = ("haarcascade_profileface.xml", "lbpcascade_profileface.xml")
NO_FACE = "No face found: the whole image was scored as one face."


@dataclass
class FaceResult:
    boxes: list[Box]
    crops: np.ndarray                     # (n, size, size) uint8, one per box
    fallback_whole_image: bool
    notes: list[str] = field(default_factory=list)   # plain sentences for the UI


def detect_faces(img: Image.Image, max_side: int = 640) -> list[Box]:
    """Faces in `img` as (x, y, w, h) in its own pixels, left to right: frontal ones, else faces in profile
    (turned either way). [] when none is found or when this OpenCV has no cascade (see `detector_problem`)."""
    if _detector() is None:
        return []

    longest = max(img.size)
    scale = min(1.0, max_side / longest) if longest > MIN_DETECT_SIDE else MIN_DETECT_SIDE / longest
    small = img if scale == 1.0 else _resized(img, scale)
    gray = np.asarray(small.convert("L"))
    with _borrowed_detector() as detector:
        found = _boxes(detector, gray)
    if not found and _profile_detector() is not None:
        mirrored = np.ascontiguousarray(gray[:, ::-1])
        with _borrowed(_idle_profile_detectors, _new_profile_detector) as detector:
            found = _boxes(detector, gray) + [_unmirrored(box, gray.shape[1]) for box in _boxes(detector, mirrored)]
    boxes = [_to_original(box, scale, img.size) for box in found]
    boxes = _merge_overlaps(boxes)
    return sorted(boxes, key=lambda b: (b[0], b[1]))


def _boxes(detector, gray: np.ndarray) -> list:
    found = detector.detectMultiScale(gray, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                      minSize=(MIN_FACE, MIN_FACE))
    return [tuple(int(v) for v in box) for box in np.asarray(found).reshape(-1, 4)]


def _unmirrored(box, width: int) -> tuple:
    """A box found in the mirrored image, in the image's own pixels."""
    x, y, w, h = box
    return (width - x - w, y, w, h)


def face_crops(img: Image.Image, boxes: list[Box], size: int = 48) -> np.ndarray:
    """(n, size, size) uint8 grayscale: the square around each box, moved or shrunk to lie inside
    the image so a face at the border is never stretched."""
    crops = np.empty((len(boxes), size, size), dtype=np.uint8)
    for i, box in enumerate(boxes):
        x, y, side = _square_inside(box, img.size)
        face = img.crop((x, y, x + side, y + side)).convert("L")
        crops[i] = np.asarray(face.resize((size, size), Image.Resampling.LANCZOS))
    return crops


def find_faces(img: Image.Image, size: int = 48) -> FaceResult:
    """Every face, or the centre square of the whole image when none is found."""
    boxes = detect_faces(img)
    if boxes:
        return FaceResult(boxes, face_crops(img, boxes, size), fallback_whole_image=False)
    width, height = img.size
    side = min(width, height)
    whole = ((width - side) // 2, (height - side) // 2, side, side)
    problem = detector_problem()
    note = f"{problem} The whole image was scored as one face." if problem else NO_FACE
    return FaceResult([whole], face_crops(img, [whole], size), fallback_whole_image=True,
                      notes=[note])


def draw_boxes(img: Image.Image, boxes: list[Box], labels: list[str] | None = None) -> Image.Image:
    """A copy of `img` with numbered boxes (and "1: happy"-style labels) for display."""
    out = img.convert("RGB")          # always a copy
    draw = ImageDraw.Draw(out)
    longest = max(out.size)
    line = max(2, round(longest / 300))
    font = _font(max(12, round(longest / 35)))
    for i, (x, y, w, h) in enumerate(boxes):
        colour = _BOX_COLOURS[i % len(_BOX_COLOURS)]
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=line)
        text = f"{i + 1}" if not labels or i >= len(labels) else f"{i + 1}: {labels[i]}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = line
        label_h = bottom - top + 2 * pad
        label_y = y - label_h if y - label_h >= 0 else y        # above the box unless at the top
        draw.rectangle((x, label_y, x + right - left + 2 * pad, label_y + label_h), fill=colour)
        draw.text((x + pad - left, label_y + pad - top), text, fill="white", font=font)
    return out


def detector_problem() -> str | None:
    """A plain sentence when face detection cannot run here, else None."""
    import cv2

    if _cascade_class() is None:
        return (f"Face detection is unavailable: OpenCV {cv2.__version__} has no Haar cascade "
                "detector (OpenCV 5 moved it out; install opencv-python-headless<5).")
    if _cascade_path() is None:
        return (f"Face detection is unavailable: OpenCV {cv2.__version__} ships no face cascade "
                "file (install opencv-python-headless<5).")
    if _detector() is None:
        return "Face detection is unavailable: the face cascade file could not be loaded."
    return None


# --- the detector -----------------------------------------------------------------------------

def _cascade_class():
    import cv2

    # OpenCV 4 has it at the top level; OpenCV 5 moved it to the contrib module xobjdetect.
    return getattr(cv2, "CascadeClassifier", None) or getattr(
        getattr(cv2, "xobjdetect", None), "CascadeClassifier", None)


def _cascade_folders() -> list[Path]:
    import cv2

    folders = []
    if getattr(getattr(cv2, "data", None), "haarcascades", None):
        folders.append(Path(cv2.data.haarcascades))
    # Debian/Ubuntu's opencv-data package, for a system OpenCV.
    for root in ("/usr/share/opencv4", "/usr/share/opencv5", "/usr/local/share/opencv4"):
        folders += [Path(root) / "haarcascades", Path(root) / "lbpcascades"]
    return folders


def _find_cascade(names) -> Path | None:
    for name in names:
        for folder in _cascade_folders():
            if (folder / name).is_file():
                return folder / name
    return None


@functools.lru_cache(maxsize=1)
def _cascade_path() -> Path | None:
    return _find_cascade(CASCADE_FILES)


@functools.lru_cache(maxsize=1)
def _profile_cascade_path() -> Path | None:
    return _find_cascade(PROFILE_CASCADE_FILES)


@functools.lru_cache(maxsize=1)
def _detector():
    """A loaded classifier, or None when this OpenCV cannot detect faces. It also starts the pool below."""
    return _first_into(_idle_detectors, _new_detector)


@functools.lru_cache(maxsize=1)
def _profile_detector():
    """A loaded profile-face classifier, or None when this OpenCV ships none (then frontal faces only)."""
    return _first_into(_idle_profile_detectors, _new_profile_detector)


def _first_into(pool, load):
    """Load one classifier and put it in its pool (None when it cannot be loaded)."""
    detector = load()
    if detector is not None:
        pool.put(detector)
    return detector


def _new_detector():
    return _load_cascade(_cascade_path())


def _new_profile_detector():
    return _load_cascade(_profile_cascade_path())


def _load_cascade(path: Path | None):
    cascade_class = _cascade_class()
    if cascade_class is None or path is None:
        return None
    detector = cascade_class(str(path))
    return None if detector.empty() else detector


# A CascadeClassifier keeps scratch state per call, so one object must never run in two threads at once, and every
# Streamlit session is a thread. Each detection borrows an idle classifier (another is loaded, in a few ms, when
# all are busy) and returns it after: sessions never share one, yet detect in parallel (OpenCV releases the GIL).
# One pool per cascade.
_idle_detectors: queue.SimpleQueue = queue.SimpleQueue()
_idle_profile_detectors: queue.SimpleQueue = queue.SimpleQueue()


def _borrowed_detector():
    return _borrowed(_idle_detectors, _new_detector)


@contextmanager
def _borrowed(pool: queue.SimpleQueue, load):
    try:
        detector = pool.get_nowait()
    except queue.Empty:
        detector = load()
    try:
        yield detector
    finally:
        pool.put(detector)


# --- geometry ---------------------------------------------------------------------------------

def _resized(img: Image.Image, scale: float) -> Image.Image:
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # reducing_gap makes a 12 MP -> 640 px reduction a quick integer reduce plus a small resample
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _to_original(box, scale: float, image_size: tuple[int, int]) -> Box:
    x, y, w, h = (float(v) / scale for v in box)
    grow = BOX_MARGIN / 2
    x, y, w, h = x - w * grow, y - h * grow, w * (1 + BOX_MARGIN), h * (1 + BOX_MARGIN)
    width, height = image_size
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def _merge_overlaps(boxes: list[Box]) -> list[Box]:
    """Drop a box mostly inside a larger one (the cascade sometimes fires on a face and again on
    part of it)."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b[2] * b[3], reverse=True):
        if all(_overlap_of_smaller(box, other) < OVERLAP_TO_MERGE for other in kept):
            kept.append(box)
    return kept


def _overlap_of_smaller(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, min(a[2] * a[3], b[2] * b[3]))


def _square_inside(box: Box, image_size: tuple[int, int]) -> tuple[int, int, int]:
    x, y, w, h = box
    width, height = image_size
    side = max(1, min(max(w, h), width, height))
    cx, cy = x + w / 2, y + h / 2
    left = int(min(max(0, round(cx - side / 2)), width - side))
    top = int(min(max(0, round(cy - side / 2)), height - side))
    return left, top, side


_BOX_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#9a6324")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):     # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()
