"""Classify-page work: find the faces of an upload once, score them with each chosen run, explain them.

Detection is cached per image (by content), probabilities per (run, faces), attributions per (run, face, class,
method), so changing the method or adding a run redoes only what changed: a method switch recomputes one map per
face and run, never the detection or the classification. The photo is kept in the session so that it is still
there after a visit to another page. One lock serialises use of the shared cached
networks: attribution briefly changes a model's flags, and two sessions must not interleave there.

A whole class at once (issue 25): the CPU work of a photo (finding faces, scoring, explaining) runs in at most
WORK_SLOTS photos at a time per process, one per two cores, so that thirty students uploading together wait in
line and are answered in turn, instead of thirty script threads slowing each other down until none finishes.
Networks and face detectors are loaded once per process (state._predictor, fercore.predict.faces' pool),
never per session.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image

MODEL_LOCK = threading.Lock()
WORK_SLOTS = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) // 2))   # photos worked on at once
DISPLAY_SIDE = 288      # faces are shown (and explained over) at this size
PHOTO = "_classify_photo"   # (name, bytes, from the camera) of the photo on show, kept across pages
MAX_SHOWN_SIDE = 1200   # the boxed photo is reduced to this for display


@dataclass
class Detection:
    boxed: np.ndarray           # the photo with numbered boxes, RGB uint8 (reduced for display)
    boxes: list
    crops: np.ndarray           # (n, 48, 48) uint8 faces as the networks see them
    fallback_whole_image: bool
    notes: list
    seconds: float
    size: tuple                 # the photo's size after EXIF rotation


@st.cache_data(max_entries=16, show_spinner="Finding faces...")
def detect(image_bytes: bytes) -> Detection:
    """Load an upload safely (ImageError with a plain sentence otherwise) and find its faces."""
    from fercore.predict.faces import draw_boxes, find_faces
    from fercore.predict.images import load_image
    t0 = time.perf_counter()
    with WORK_SLOTS:
        img = load_image(image_bytes)
        found = find_faces(img, size=48)
    seconds = time.perf_counter() - t0
    # no face found: the photo as it is (a numbered box would claim a face); the page says what was scored
    boxed = draw_boxes(img, [] if found.fallback_whole_image else found.boxes)
    boxed.thumbnail((MAX_SHOWN_SIDE, MAX_SHOWN_SIDE))
    return Detection(np.asarray(boxed), list(found.boxes), found.crops, bool(found.fallback_whole_image),
                     list(found.notes), seconds, img.size)


@st.cache_data(max_entries=256, show_spinner=False)
def scores(run_id: int, checkpoint: str, crops: np.ndarray) -> tuple[np.ndarray, float]:
    """Class probabilities of every face for one run, and the seconds they took (when first computed)."""
    from fercore.ui import state
    pred = state._predictor(state.db_url(), run_id, checkpoint)
    t0 = time.perf_counter()
    with WORK_SLOTS, MODEL_LOCK:
        probs = pred.probs(crops)
    return probs, time.perf_counter() - t0


def keep_photo(upload, from_camera: bool) -> tuple[str, bytes, bool] | None:
    """The photo to show: a new upload or camera shot (kept in the session), else the one kept from before."""
    if upload is not None:
        st.session_state[PHOTO] = (upload.name, upload.getvalue(), from_camera)
    return st.session_state.get(PHOTO)


def forget_photo() -> None:
    st.session_state.pop(PHOTO, None)


@st.cache_data(max_entries=256, show_spinner=False)
def explain(run_id: int, checkpoint: str, crop: np.ndarray, target: int,
            method: str) -> tuple[np.ndarray, str | None, float]:
    """The attribution overlay (RGB uint8, DISPLAY_SIDE square) of one face for one class, its note (a blank
    Grad-CAM explained), and its seconds."""
    from fercore.predict.predictor import explain_face
    from fercore.ui import state
    pred = state._predictor(state.db_url(), run_id, checkpoint)
    t0 = time.perf_counter()
    with WORK_SLOTS, MODEL_LOCK:
        heat, note = explain_face(pred, crop, target, method, side=DISPLAY_SIDE)
    return heat, note, time.perf_counter() - t0


def enlarge(crop: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(crop).resize((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BICUBIC))


def overlay_colours(n: int = 11) -> np.ndarray:
    """The overlay's colour map sampled at n points from low to high, as (n, 3) RGB."""
    import cv2
    ramp = np.linspace(0, 255, n).astype(np.uint8)[None, :]
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0]

