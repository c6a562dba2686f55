"""A real browser against `streamlit run`: upload a face on Classify and see probabilities and a saliency map.

Needs Debian's chromium (/usr/bin/chromium) and the `playwright` package; skips, saying which is
missing, otherwise. The screenshot is left in pytest's tmp folder for a human to look at.
"""
from __future__ import annotations

import pytest
from browserkit import CHROMIUM_ARGS, chromium_or_skip, face_photo, free_port, start_app, stop, train_tiny

pytestmark = pytest.mark.slow   # browser / PostgreSQL / load: `pytest -m 'not slow'` skips it


def test_upload_a_face_and_see_probabilities_and_saliency(tmp_path):
    sync_playwright, chromium = chromium_or_skip()
    from fercore.jobs.runfile import ensure_starter
    from fercore.store import RunStore
    starter = ensure_starter(RunStore(str(tmp_path / "runs.db")))   # a brand-new database registers it
    tiny = train_tiny(RunStore(str(tmp_path / "runs.db")))
    photo = face_photo(tmp_path / "face.jpg")
    port = free_port()
    server = start_app(tmp_path / "runs.db", port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # A shared link to a comparison, opened first on a fresh server, still gets the app's sidebar and
            # navigation, and the runs the link names.
            page.goto(f"http://127.0.0.1:{port}/compare?runs={tiny.id},{starter.id}", timeout=30_000)
            page.get_by_text("FER Lab", exact=True).wait_for(timeout=30_000)
            assert "Classify" in page.locator("[data-testid=stSidebarNav]").inner_text()
            page.get_by_text(f"{starter.id} · starter (finished)").first.wait_for(timeout=30_000)
            page.get_by_text("Learning curves").wait_for(timeout=30_000)
            page.goto(f"http://127.0.0.1:{port}/", timeout=30_000)
            page.get_by_text("What does the model see?").wait_for(timeout=30_000)
            page.locator("input[type=file]").first.set_input_files(str(photo))
            page.get_by_text("Face 1", exact=True).wait_for(timeout=30_000)
            page.get_by_text("Saliency for").first.wait_for(timeout=30_000)
            bars = page.locator("[data-testid=stEChartsChart][aria-label*=neutral]")   # a class on the bar chart
            bars.first.wait_for(timeout=15_000)
            saliency = page.locator("[data-testid=stImage] img").count()
            page.wait_for_timeout(500)
            page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)
            text = page.inner_text("body")
            browser.close()
        assert "Traceback" not in text
        assert "Face 1" in text and "Saliency for" in text
        assert saliency >= 3, "the boxed photo, the face crop and its saliency map"
        assert (tmp_path / "classify.png").stat().st_size > 10_000
    finally:
        stop(server)
