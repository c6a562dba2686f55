"""The live webcam on the Classify page: every frame's faces boxed and labelled on the video, the largest face's
probabilities as a smoothed bar chart, the processed frame rate, and "Freeze" to hand a frame to the full view.

The video travels over WebRTC (streamlit-webrtc, aiortc on the server). Its frames are handled off the script
thread, in streamlit-webrtc's processing thread of each session: that thread takes only the newest frame that has
arrived (the ones it was too slow for are dropped, never queued), so the picture stays live when the CPU is behind.
A `LiveFeed` per browser session is what the two threads share; the network and the face detectors are the
process's shared ones (fercore.ui.state, fercore.predict.faces), never copied per session.

No internet is needed: with no ICE servers configured the browser and the server meet by their own addresses,
which works on one LAN. Other networks set `ice_servers` in .streamlit/secrets.toml (a list like
[{urls = ["stun:stun.example.org:3478"]}]). When streamlit-webrtc is missing, or the browser cannot connect, the
snapshot camera (st.camera_input) is offered instead, with the reason.
"""
from __future__ import annotations

import io
import logging
import math
import threading
import time
import traceback
from collections import deque

import numpy as np
import streamlit as st
from PIL import Image

log = logging.getLogger("fercore.ui")
LIVE_DETECT_SIDE = 320    # frames are searched for faces at this size: a webcam face is large, and it is 4x cheaper
MAX_FPS = 15.0            # at most this many frames a second per session, so one class shares the CPU
SMOOTHING_S = 0.4         # time constant of the bar chart's moving average (seconds)
FPS_WINDOW_S = 2.0        # the frame rate shown is over this many seconds
CHART_EVERY_S = 0.4       # the bar chart redraws this often while the video plays
CONNECT_TIMEOUT_S = 20.0  # a connection not playing after this long is taken as failed
FEED, FROZEN, MODE = "_live_feed", "_live_frozen", "classify_live_mode"
FAILED, SWITCH, SIGNALLING_SINCE = "_live_failed", "_live_switch", "_live_signalling_since"
LIVE, SNAPSHOT = "Live video", "Snapshot"


class LiveFeed:
    """What the video thread and the page share for one browser session (all under one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.predictor = None          # set by the page: the chosen run's shared network
        self.run_name = ""
        self.smoothed: np.ndarray | None = None   # the largest face's probabilities, averaged over time
        self.smoothed_at = 0.0
        self.classes: list[str] = []
        self.faces = 0
        self.newest: np.ndarray | None = None       # the newest frame as it came (RGB), for Freeze
        self.done: deque[float] = deque()            # when each recent frame finished
        self.last_at = 0.0
        self.took: deque[tuple] = deque(maxlen=30)   # (wall, CPU) seconds of each of the last frames
        self.processed = 0
        self.error: str | None = None

    def use(self, predictor, run_name: str) -> None:
        with self.lock:
            if predictor is not self.predictor:
                self.predictor, self.run_name, self.smoothed = predictor, run_name, None

    def due(self, now: float) -> bool:
        """Whether a frame arriving now should be processed (at most MAX_FPS a second)."""
        return now - self.last_at >= 1.0 / MAX_FPS

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """The frame with every face boxed and labelled by the chosen run; updates the chart's state."""
        from fercore.predict.faces import detect_faces, draw_boxes, face_crops
        from fercore.ui.classify import MODEL_LOCK
        started, cpu_started = time.monotonic(), time.thread_time()
        with self.lock:
            self.newest, self.last_at, predictor = rgb, started, self.predictor
        one_torch_thread()
        img = Image.fromarray(rgb)
        boxes = detect_faces(img, max_side=LIVE_DETECT_SIDE)
        labels, probs = [], None
        if boxes and predictor is not None:
            with MODEL_LOCK:   # shared with the Classify page's attributions (fercore.ui.classify)
                probs = predictor.probs(face_crops(img, boxes), tta="none")
            labels = [f"{predictor.classes[int(p.argmax())]} {p.max():.0%}" for p in probs]
        out = np.asarray(draw_boxes(img, boxes, labels)) if boxes else rgb
        self._record(boxes, probs, predictor, started, time.thread_time() - cpu_started)
        return out

    def _record(self, boxes, probs, predictor, started: float, cpu_s: float) -> None:
        now = time.monotonic()
        with self.lock:
            self.processed += 1
            self.took.append((now - started, cpu_s))
            self.faces = len(boxes)
            self.done.append(now)
            while self.done and now - self.done[0] > FPS_WINDOW_S:
                self.done.popleft()
            self.error = None
            if probs is None or predictor is not self.predictor:
                return
            largest = max(range(len(boxes)), key=lambda i: boxes[i][2] * boxes[i][3])
            self.smoothed = smoothed(self.smoothed, probs[largest], now - self.smoothed_at)
            self.smoothed_at, self.classes = now, list(predictor.classes)

    def fps(self) -> float:
        """Frames processed per second over the last FPS_WINDOW_S."""
        with self.lock:
            now = time.monotonic()
            recent = [t for t in self.done if now - t <= FPS_WINDOW_S]
            if len(recent) < 2:
                return 0.0
            return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def snapshot(self) -> dict:
        with self.lock:
            return {"probs": None if self.smoothed is None else dict(zip(self.classes, map(float, self.smoothed))),
                    "faces": self.faces, "processed": self.processed,
                    "ms_per_frame": 1000 * np.median(self.took, axis=0) if self.took else None,
                    "run": self.run_name, "error": self.error}

    def newest_jpeg(self) -> bytes | None:
        with self.lock:
            frame = self.newest
        if frame is None:
            return None
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=92)
        return buf.getvalue()


def one_torch_thread() -> None:
    """One face at 48x48 is too small to split between threads, and on a busy CPU OpenMP's spin-waiting made it
    300 times slower (5 ms became 1.7-5 s a frame, measured in this thread with the machine's load at 11). The setting
    is this thread's own: the page's threads keep theirs."""
    import torch
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def smoothed(previous: np.ndarray | None, new: np.ndarray, gap: float) -> np.ndarray:
    """Exponential moving average in time, not in frames (so it looks the same at 5 and at 15 fps): a value `gap`
    seconds after the last one moves the average by 1 - exp(-gap / SMOOTHING_S) of the way; the first is taken."""
    new = np.asarray(new, dtype=float)
    if previous is None or previous.shape != new.shape:
        return new
    weight = 1.0 - math.exp(-max(gap, 0.0) / SMOOTHING_S)
    return (1.0 - weight) * previous + weight * new


def frames_callback(feed: LiveFeed):
    """streamlit-webrtc's queued-frames callback: of the frames that arrived while the last one was processed, only
    the newest is processed; the others are dropped. Returning no frame keeps the last processed one on screen."""
    import av

    async def newest_only(frames):
        if not feed.due(time.monotonic()):
            return []
        try:
            out = feed.process(frames[-1].to_ndarray(format="rgb24"))
        except Exception as e:   # noqa: BLE001 - a frame that fails must not end the stream; the page shows why
            from fercore.errors import user_message
            with feed.lock:
                feed.error = user_message(e)
            return [frames[-1]]
        return [av.VideoFrame.from_ndarray(out, format="rgb24")]
    return newest_only


# --- the view ------------------------------------------------------------------------------------------------
def rtc_configuration() -> dict:
    """ICE servers from secrets (`ice_servers`), else none: on one LAN the browser and server connect directly, and
    no public STUN server is asked (a classroom may have no internet)."""
    try:
        servers = st.secrets.get("ice_servers")
    except Exception:   # noqa: BLE001 - no secrets file at all is the normal case
        servers = None
    return {"iceServers": [dict(s) for s in servers] if servers else []}


def webrtc_problem() -> str | None:
    """Why the live video cannot run in this installation, or None."""
    try:
        import streamlit_webrtc  # noqa: F401
    except ImportError as e:
        return f"The live video needs the streamlit-webrtc package, which is not installed here ({e.name})."
    return None


def webcam(runs: list) -> io.BytesIO | None:
    """The webcam part of Classify: live video with the first of `runs` (or the snapshot camera). Returns a frozen
    frame or a snapshot as an upload the page handles like a photo (every chosen run, explanations), or None."""
    options = [SNAPSHOT] if webrtc_problem() else [LIVE, SNAPSHOT]
    if st.session_state.pop(SWITCH, False):   # the live connection failed on the last run: offer the snapshot
        st.session_state[MODE] = SNAPSHOT
    mode = st.segmented_control("Webcam", options, default=options[0], key=MODE,
                                help="Live video: predictions on every frame, over WebRTC. Snapshot: one photo "
                                     "at a time (works wherever the browser can use the camera).") or options[0]
    if mode == SNAPSHOT:
        problem = webrtc_problem() or st.session_state.get(FAILED)
        if problem:
            st.caption(f"The snapshot camera instead of live video: {problem}")
        shot = st.camera_input("Take a photo", key="classify_camera")
        return as_upload(shot.getvalue(), "snapshot.jpg") if shot else None
    if not runs:
        st.caption("Pick a model to classify the live video.")
        return None
    from fercore.ui import state
    predictor = state.get_predictor(runs[0])
    try:
        return _live(runs[0], predictor)
    except Exception as e:   # noqa: BLE001 - the live video is optional: the snapshot camera still works
        from fercore.errors import user_message
        log.error("the live video could not start:\n%s", traceback.format_exc())
        st.session_state[FAILED] = f"the live video could not start here ({user_message(e)})"
        st.session_state[SWITCH] = True
        st.rerun()


def _live(run, predictor) -> io.BytesIO | None:
    from streamlit_webrtc import WebRtcMode, webrtc_streamer
    feed = st.session_state.setdefault(FEED, LiveFeed())
    feed.use(predictor, run.name)
    ctx = webrtc_streamer(key="classify_live", mode=WebRtcMode.SENDRECV, rtc_configuration=rtc_configuration(),
                          media_stream_constraints={"video": {"width": 640, "height": 480}, "audio": False},
                          queued_video_frames_callback=frames_callback(feed), async_processing=True,
                          translations={"start": "Start the live video", "stop": "Stop"})
    _watch_connection(ctx.state)
    if ctx.state.playing:
        live_chart(feed)
        if st.button("Freeze", icon=":material/photo_camera:", key="live_freeze",
                     help="Take the current frame into the full view below: all chosen models, explanations."):
            st.session_state[FROZEN] = feed.newest_jpeg()
    elif not ctx.state.signalling:
        st.caption(f"Press start: {run.name} classifies every face live (the first model picked; a frozen frame "
                   "goes to all of them). Browsers open the camera only on a https:// address or on localhost.")
    frozen = st.session_state.get(FROZEN)
    if frozen:
        if st.button("Clear the frozen frame", key="live_unfreeze"):
            st.session_state.pop(FROZEN, None)
            st.rerun()
        return as_upload(frozen, "live-frame.jpg")
    return None


def as_upload(data: bytes, name: str) -> io.BytesIO:
    """A frame or a snapshot shaped like an uploaded file (getvalue() and a name), for the page's photo path."""
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def _watch_connection(state) -> None:
    """Note when a connection was asked for and never played (the browser and the server found no network path),
    so the page falls back to the snapshot camera and says why."""
    since = st.session_state.get(SIGNALLING_SINCE)
    if state.playing:
        st.session_state.pop(SIGNALLING_SINCE, None)
        st.session_state.pop(FAILED, None)
    elif state.signalling and since is None:
        st.session_state[SIGNALLING_SINCE] = time.monotonic()
    elif state.signalling:
        _connect_timer()
    elif since is not None:   # asked, never played, now stopped: the connection failed
        _failed()


@st.fragment(run_every=2)
def _connect_timer() -> None:
    since = st.session_state.get(SIGNALLING_SINCE)
    if since is not None and time.monotonic() - since > CONNECT_TIMEOUT_S:
        _failed()


def _failed() -> None:
    st.session_state.pop(SIGNALLING_SINCE, None)
    st.session_state[FAILED] = ("the browser could not open a live video connection to this server (WebRTC found "
                                "no network path; on another network the instructor sets `ice_servers` in "
                                ".streamlit/secrets.toml).")
    st.session_state[SWITCH] = True
    st.rerun(scope="app")


@st.fragment(run_every=CHART_EVERY_S)
def live_chart(feed: LiveFeed) -> None:
    """The largest face's smoothed probabilities and the processed frame rate, redrawn a few times a second."""
    from fercore import charts
    from fercore.ui.draw import chart
    now = feed.snapshot()
    fps = feed.fps()
    cost = "" if now["ms_per_frame"] is None else ", {:.0f} ms each, {:.0f} ms of CPU".format(*now["ms_per_frame"])
    st.caption(f"**{fps:.1f} frames/s processed** ({now['processed']} so far{cost}) · {now['faces']} face(s) in "
               f"view · model {now['run']} "
               f"(one view per face live; Freeze for the model's full test-time augmentation)")
    if now["error"]:
        st.warning(f"Frames could not be classified: {now['error']}")
    if now["probs"]:
        top = max(now["probs"], key=now["probs"].get)
        chart(charts.probability_bars(now["probs"], f"largest face: {top}"), "live-bars")
