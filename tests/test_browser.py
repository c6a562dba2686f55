"""A real browser against `streamlit run`: upload a face on Classify and see probabilities and a saliency map.

Needs Debian's chromium (/usr/bin/chromium) and the `playwright` package; skips, saying which is
missing, otherwise. The screenshot is left in pytest's tmp folder for a human to look at.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from fercore.store.entities import Run, RunStatus

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SHARED = REPO.parent / "shared" / "datasets" / "fer2013-images"


def chromium_or_skip():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -r requirements-dev.txt)")
    return sync_playwright, (CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trained_db(path: Path) -> Run:
    from fercore.config import RunConfig
    from fercore.jobs.execute import execute_run
    from fercore.store import RunStore
    store = RunStore(str(path))
    cfg = RunConfig(data="synthetic:420", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,),
                    batch_size=32, epochs=1, lr=3e-3, tta="none", name="tiny")
    run = execute_run(store, store.create_run(cfg, status=RunStatus.RUNNING).id, device="cpu")
    assert run.status == RunStatus.FINISHED, run.error
    return run


def face_photo(path: Path) -> Path:
    """A 'photo': a real FER2013 face (or a synthetic one without ../shared) enlarged on a grey background."""
    faces = sorted((SHARED / "train" / "happy").glob("*.jpg"))[:1] if SHARED.exists() else []
    if faces:
        face = Image.open(faces[0]).convert("L")
    else:
        from fercore.data.sources import load_source
        face = Image.fromarray(load_source("synthetic:70").images[3])
    photo = Image.new("RGB", (480, 360), (128, 128, 128))
    photo.paste(face.resize((240, 240), Image.Resampling.BICUBIC).convert("RGB"), (120, 60))
    photo.save(path, "JPEG", quality=92)
    return path


def start_app(db: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, FER_DB_URL=str(db), FER_AUTOSTART_WORKER="0",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                if r.read() == b"ok":
                    return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: {proc.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("streamlit did not answer within 30 s")


def test_upload_a_face_and_see_probabilities_and_saliency(tmp_path):
    sync_playwright, chromium = chromium_or_skip()
    from fercore.jobs.runfile import ensure_starter
    from fercore.store import RunStore
    starter = ensure_starter(RunStore(str(tmp_path / "runs.db")))   # a brand-new database registers it
    tiny = trained_db(tmp_path / "runs.db")
    photo = face_photo(tmp_path / "face.jpg")
    port = free_port()
    server = start_app(tmp_path / "runs.db", port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--headless"])
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
            bars = page.locator(".js-plotly-plot").filter(has_text="neutral")   # a class name on the bar chart
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
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
