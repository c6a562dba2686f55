"""The live webcam view (fercore/ui/live.py): only the newest frame is processed, faces are boxed and labelled on the
frame, the chart's average moves smoothly, no public STUN server is asked; and, in Chromium with a fake camera, the
video shows boxes, the chart updates, the processed frame rate is on the page and Freeze hands a frame to the full
Classify view."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
from browserkit import (
    CHROMIUM_ARGS,
    REPO,
    camera_clip,
    chromium_or_skip,
    face_photo,
    free_port,
    start_app,
    stop,
    wait_fully_drawn,
)
from PIL import Image

from fercore.ui import live


@pytest.fixture
def starter_feed(db):
    from fercore.jobs.runfile import ensure_starter
    from fercore.predict.predictor import load_predictor
    from fercore.store import RunStore
    store = RunStore(db)
    run = ensure_starter(store)
    feed = live.LiveFeed()
    feed.use(load_predictor(store, run.id), run.name)
    return feed


def _photo(tmp_path, index=0) -> np.ndarray:
    return np.asarray(Image.open(face_photo(tmp_path / f"f{index}.jpg", index=index)).convert("RGB"))


def _saturated(rgb: np.ndarray) -> int:
    """Pixels of a strong colour: the photos are grey, the boxes and labels are coloured."""
    return int(((rgb.max(axis=2).astype(int) - rgb.min(axis=2)) > 100).sum())


def test_a_frame_comes_back_with_its_face_boxed_and_the_chart_gets_its_probabilities(tmp_path, starter_feed):
    photo = _photo(tmp_path)
    out = starter_feed.process(photo)
    assert out.shape == photo.shape and _saturated(photo) == 0
    assert _saturated(out) > 500, "a coloured box and label drawn around the face"
    now = starter_feed.snapshot()
    assert now["faces"] == 1 and now["processed"] == 1 and now["run"] == "starter"
    assert set(now["probs"]) == set(starter_feed.predictor.classes)
    assert sum(now["probs"].values()) == pytest.approx(1.0, abs=1e-4)


def test_only_the_newest_of_the_waiting_frames_is_processed(tmp_path, starter_feed):
    import asyncio

    import av
    frames = [av.VideoFrame.from_ndarray(np.full((480, 640, 3), 128, np.uint8), format="rgb24") for _ in range(3)]
    frames.append(av.VideoFrame.from_ndarray(np.ascontiguousarray(_photo(tmp_path)[:480, :640]), format="rgb24"))
    out = asyncio.run(live.frames_callback(starter_feed)(frames))
    assert len(out) == 1 and starter_feed.snapshot()["processed"] == 1, "three frames dropped, one processed"
    assert starter_feed.snapshot()["faces"] == 1, "the newest frame (the face), not the first (grey)"
    assert _saturated(out[0].to_ndarray(format="rgb24")) > 500
    # a frame arriving sooner than 1 / MAX_FPS after the last is not processed: the last result stays on screen
    starter_feed.last_at = time.monotonic()
    assert asyncio.run(live.frames_callback(starter_feed)(frames[-1:])) == []
    assert starter_feed.snapshot()["processed"] == 1


def test_the_chart_average_moves_by_time_not_by_frames():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.allclose(live.smoothed(None, a, 0.1), a), "the first value is taken as it is"
    one_step = live.smoothed(a, b, 0.2)
    two_steps = live.smoothed(live.smoothed(a, b, 0.1), b, 0.1)
    assert np.allclose(one_step, two_steps), "the same time passed gives the same average at any frame rate"
    assert 0.2 < one_step[1] < 0.6, "it moves part of the way, so a one-frame flicker does not show"
    assert live.smoothed(a, b, 10.0)[1] > 0.99, "and catches up within seconds"


def test_the_frame_rate_counts_recent_frames_only(starter_feed):
    now = time.monotonic()
    starter_feed.done.extend([now - 5.0, now - 1.0, now - 0.5, now])
    assert starter_feed.fps() == pytest.approx(2 / 1.0, rel=0.05)


def test_no_public_stun_server_is_asked_unless_secrets_name_one(monkeypatch):
    assert live.rtc_configuration() == {"iceServers": []}
    import streamlit as st

    class Secrets(dict):
        pass
    monkeypatch.setattr(st, "secrets", Secrets(ice_servers=[{"urls": ["stun:lab.example:3478"]}]))
    assert live.rtc_configuration() == {"iceServers": [{"urls": ["stun:lab.example:3478"]}]}


# --- in Chromium, with a fake camera ----------------------------------------------------------------------------
VIDEO_PIXELS_JS = """() => { const v = document.querySelector('video');
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 100) n++; }
  return {width: c.width, height: c.height, coloured: n}; }"""


def start_live(page, base: str):
    """Open Classify, switch the webcam on and start the live video; returns the component's frame."""
    page.goto(f"{base}/")
    page.get_by_text("What does the model see?").wait_for()
    wait_fully_drawn(page)
    page.get_by_text("Use the webcam instead").click()
    page.frame_locator("iframe[title*=webrtc]").get_by_role("button", name="Start the live video").click()
    return next(f for f in page.frames if "webrtc" in f.url)


def live_caption(page) -> str:
    return page.locator("[data-testid=stCaptionContainer]").filter(has_text="frames/s processed").inner_text()


def fps_on_page(page) -> tuple[float, int]:
    """The processed frame rate the page shows, and the frames processed so far."""
    found = re.search(r"([\d.]+) frames/s processed \((\d+) so far", live_caption(page))
    return float(found.group(1)), int(found.group(2))


@pytest.mark.slow
def test_live_video_in_chromium_boxes_faces_updates_the_chart_and_freezes_into_the_full_view(tmp_path):
    sync_playwright, chromium = chromium_or_skip()
    from fercore.jobs.runfile import ensure_starter
    from fercore.store import RunStore
    ensure_starter(RunStore(str(tmp_path / "runs.db")))
    clip = camera_clip(tmp_path / "camera.y4m", seconds=4)
    port = free_port()
    server = start_app(tmp_path / "runs.db", port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS + [
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={clip}"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)   # a busy shared machine; the frame rate is the benchmark's
            video = start_live(page, f"http://127.0.0.1:{port}")
            page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stEChartsChart]')].some("
                                   "c => (c.getAttribute('aria-label') || '').includes('largest face'))")
            deadline = time.monotonic() + 30
            pixels = video.evaluate(VIDEO_PIXELS_JS)
            while (not pixels or pixels["coloured"] < 200) and time.monotonic() < deadline:
                page.wait_for_timeout(500)
                pixels = video.evaluate(VIDEO_PIXELS_JS)
            titles, chart = set(), page.locator("[data-testid=stEChartsChart][aria-label*='largest face']")
            for _ in range(12):   # the chart is redrawn as the clip's faces change (.first: the one a redraw replaces)
                titles.add(chart.first.get_attribute("aria-label"))
                page.wait_for_timeout(500)
            fps, processed = fps_on_page(page)
            caption = live_caption(page)
            page.get_by_role("button", name="Freeze").click()
            page.get_by_text("Face 1", exact=True).wait_for()
            page.get_by_text("Saliency for").first.wait_for()
            text = page.inner_text("body")
            browser.close()
        assert pixels and pixels["width"] == 640 and pixels["height"] == 480
        assert pixels["coloured"] > 200, "boxes and labels drawn on the grey clip"
        assert "1 face(s) in view" in caption and "model starter" in caption
        assert processed >= 3 and fps >= 0, "frames processed (the rate is a benchmark figure: bench_browser.py)"
        assert len(titles) >= 2, "the chart was redrawn"
        assert "Traceback" not in text and "Clear the frozen frame" in text
    finally:
        stop(server)


# --- the page's webcam part under AppTest --------------------------------------------------------------------
@pytest.fixture
def classify_with_webcam(db, monkeypatch):
    """Classify with the webcam switched on, over a database holding the starter."""
    from streamlit.testing.v1 import AppTest

    from fercore.jobs.runfile import ensure_starter
    from fercore.store import RunStore
    ensure_starter(RunStore(db))
    monkeypatch.setenv("FER_DB_URL", db)
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")

    def open_(**state):
        at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
        at.session_state["classify_use_camera"] = True
        for k, v in state.items():
            at.session_state[k] = v
        return at.run()
    return open_


def test_a_frozen_frame_goes_to_the_full_classify_view(classify_with_webcam, tmp_path, monkeypatch):
    import types

    import streamlit_webrtc
    stopped = types.SimpleNamespace(state=types.SimpleNamespace(playing=False, signalling=False))
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", lambda **kw: stopped)   # AppTest has no WebRTC
    frame = (tmp_path / "f.jpg")
    face_photo(frame)
    at = classify_with_webcam(**{live.FROZEN: frame.read_bytes()})
    assert not at.exception, [e.value for e in at.exception]
    assert at.segmented_control(key=live.MODE).options == [live.LIVE, live.SNAPSHOT]
    assert "**Face 1**" in [m.value for m in at.markdown], "faces, bars and explanations of the frozen frame"
    assert "Why? Where each model's answer comes from" in [h.value for h in at.subheader]
    assert any(b.label == "Clear the frozen frame" for b in at.button)


def test_without_streamlit_webrtc_the_snapshot_camera_is_offered_with_the_reason(classify_with_webcam, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "streamlit_webrtc", None)   # import fails as if not installed
    at = classify_with_webcam()
    assert not at.exception, [e.value for e in at.exception]
    assert at.segmented_control(key=live.MODE).options == [live.SNAPSHOT]
    assert any("needs the streamlit-webrtc package" in c.value for c in at.caption)
    assert at.get("camera_input"), "the snapshot camera"


def test_a_connection_that_never_played_falls_back_to_the_snapshot_camera(classify_with_webcam, monkeypatch):
    import types

    import streamlit_webrtc
    stopped = types.SimpleNamespace(state=types.SimpleNamespace(playing=False, signalling=False))
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", lambda **kw: stopped)
    at = classify_with_webcam(**{live.SIGNALLING_SINCE: time.monotonic() - 60})   # asked, and now stopped
    assert not at.exception, [e.value for e in at.exception]
    assert at.segmented_control(key=live.MODE).value == live.SNAPSHOT
    assert any("could not open a live video connection" in c.value for c in at.caption)
    assert at.get("camera_input")
