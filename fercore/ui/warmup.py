"""The server warms up in the background, once per process, so that no student pays for the imports and the loads.

Streamlit runs no app code before its first visitor, so the warm-up starts when the first page of a fresh server
has been drawn (streamlit_app.py starts it after the page ran): that page itself needs neither torch nor a model
(the sidebar says "checking..." for the training device until torch is in), and everything a class waits on
next is loaded behind it: torch, the training device, the chart builders, the store, the starter model's
network with a first prediction and a first explanation (captum, the first backward pass), the face detectors,
and the live video's WebRTC stack. The shared objects land in the process's caches (fercore.ui.state,
fercore.predict.faces), the same ones the pages use, never a copy.
"""
from __future__ import annotations

import logging
import threading
import time

import streamlit as st

log = logging.getLogger("fercore.ui")
_done: dict[str, float] = {}    # step -> seconds it took (only steps that finished)
_lock = threading.Lock()
THREAD = "fer-warmup"


@st.cache_resource(show_spinner=False)
def start() -> threading.Thread:
    """Start the warm-up thread (once per process: a cached resource)."""
    from fercore.ui import state
    # the caches warn that this thread has no page to draw on: it has none on purpose
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: threading.current_thread().name != THREAD)
    thread = threading.Thread(target=warm_up, args=(state.db_url(),), name=THREAD, daemon=True)
    thread.start()
    return thread


def warm_up(url: str) -> dict[str, float]:
    """Every step in turn, each timed; a step that fails is logged and skipped (the page that needs it will then
    load it itself, and show its error there)."""
    for name, step in STEPS:
        t0 = time.perf_counter()
        try:
            step(url)
        except Exception:   # noqa: BLE001 - warming up must never take the server down
            log.warning("warm-up step %r failed", name, exc_info=True)
            continue
        with _lock:
            _done[name] = time.perf_counter() - t0
    log.info("warmed up: %s", ", ".join(f"{k} {v:.2f} s" for k, v in _done.items()))
    return dict(_done)


def finished() -> dict[str, float]:
    with _lock:
        return dict(_done)


def training_device_label() -> str:
    """The training device once the warm-up has torch in, else a note: the first page never waits for torch."""
    if "torch" not in finished():
        return "checking..."
    from fercore.ui import state
    return state.training_device()


def _torch(url: str) -> None:
    import torch  # noqa: F401


def _device(url: str) -> None:
    from fercore.ui import state
    state.training_device()


def _charts(url: str) -> None:
    import pandas  # noqa: F401

    from fercore import charts  # noqa: F401
    from fercore.ui import tables  # noqa: F401


def _starter(url: str) -> None:
    """The store, the starter's network (the run the Classify page starts with), a first prediction and a first
    saliency map on a blank face."""
    import numpy as np

    from fercore.predict.predictor import explain_face
    from fercore.store.entities import RunStatus
    from fercore.ui import classify, state
    store = state._store(url)
    runs = [r for r in store.list_runs(status=RunStatus.FINISHED) if r.checkpoint and r.name == "starter"]
    if not runs:
        return
    pred = state._predictor(url, int(runs[0].id), str(runs[0].checkpoint))
    face = np.full((1, 48, 48), 128, np.uint8)
    with classify.MODEL_LOCK:
        pred.probs(face)
        explain_face(pred, face[0], 0, "saliency", side=classify.DISPLAY_SIDE)


def _detectors(url: str) -> None:
    import numpy as np
    from PIL import Image

    from fercore.predict.faces import detect_faces
    detect_faces(Image.fromarray(np.full((240, 320), 128, np.uint8)))   # loads both cascades into their pools


def _webrtc(url: str) -> None:
    """aiortc and av, the heavy part of the live video. Not streamlit_webrtc itself: it declares its component when
    imported, and declared from this thread the browser never got the component (measured in bench_browser)."""
    import importlib.util
    if importlib.util.find_spec("aiortc") and importlib.util.find_spec("av"):
        import aiortc  # noqa: F401
        import av  # noqa: F401


STEPS = [("torch", _torch), ("training device", _device), ("charts", _charts), ("starter model", _starter),
         ("face detectors", _detectors), ("live video", _webrtc)]
