"""What the browser tests and the browser benchmark share: Debian's chromium through Playwright, a Streamlit
server on a free port over a given database, a tiny trained run, a face photo, and "fully drawn".

Needs Debian's chromium (/usr/bin/chromium) and the `playwright` package; `chromium_or_skip` skips a test,
saying which is missing.
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

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SHARED = REPO.parent / "shared" / "datasets" / "fer2013-images"
# The flags Debian's chromium needs here: no sandbox as root, no GPU, and none of its calls home (this machine's
# closed network refuses them, many at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--headless", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Fully drawn: the script has finished (no "Running..." icon, no element left stale from the run before), no
# skeleton or spinner is left, and every chart on the page is drawn: an ECharts chart (the pages') says so with
# aria-busy="false" over its canvas, a Plotly chart (the reports') with its SVG; and every image has loaded.
FULLY_DRAWN_JS = """() => {
  if (document.querySelector('[data-testid=stStatusWidgetRunningIcon], [data-stale=true], [data-testid=stSkeleton], '
                             + '[data-testid=stSpinner]'))
    return false;
  for (const c of document.querySelectorAll('[data-testid=stPlotlyChart]')) {
    if (!c.querySelector('.main-svg')) return false; }
  for (const c of document.querySelectorAll('[data-testid=stEChartsChart]')) {
    if (c.getAttribute('aria-busy') !== 'false' || !c.querySelector('canvas, svg')) return false; }
  for (const img of document.querySelectorAll('[data-testid=stImage] img')) {
    if (!img.complete || !img.naturalWidth) return false; }
  return document.querySelector('[data-testid=stApp]') !== null;
}"""


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


def chromium_or_skip():
    import pytest
    if not chromium_path():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -r requirements-dev.txt)")
    return sync_playwright, chromium_path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny(store, name: str = "tiny", **changes):
    """A finished one-epoch run of a tiny CNN on synthetic faces (evaluated on val and test)."""
    from fercore.config import RunConfig
    from fercore.jobs.execute import execute_run
    from fercore.store.entities import RunStatus
    cfg = RunConfig(data="synthetic:420", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,),
                    batch_size=32, epochs=1, lr=3e-3, tta="none", name=name).replace(**changes)
    run = execute_run(store, store.create_run(cfg, status=RunStatus.RUNNING).id, device="cpu")
    assert run.status == RunStatus.FINISHED, run.error
    return run


def face_photo(path: Path, index: int = 0) -> Path:
    """A 'photo': a real FER2013 face (or a synthetic one without ../shared) enlarged on a grey background."""
    faces = sorted((SHARED / "train" / "happy").glob("*.jpg"))[index:index + 1] if SHARED.exists() else []
    if faces:
        face = Image.open(faces[0]).convert("L")
    else:
        from fercore.data.sources import load_source
        face = Image.fromarray(load_source("synthetic:70").images[3 + index])
    photo = Image.new("RGB", (480, 360), (128, 128, 128))
    photo.paste(face.resize((240, 240), Image.Resampling.BICUBIC).convert("RGB"), (120, 60))
    photo.save(path, "JPEG", quality=92)
    return path


def camera_clip(path: Path, seconds: float = 4.0, fps: int = 15, size: tuple[int, int] = (640, 480)) -> Path:
    """A y4m clip for Chromium's fake camera (--use-file-for-fake-video-capture): real FER2013 faces of several
    classes (synthetic ones without ../shared), one a second, enlarged on a grey background, drifting a little."""
    import numpy as np
    classes = ["happy", "surprise", "sad", "angry"]
    faces = [sorted((SHARED / "train" / c).glob("*.jpg"))[:1] for c in classes] if SHARED.exists() else []
    if faces and all(faces):
        gray = [np.asarray(Image.open(f[0]).convert("L")) for f in faces]
    else:
        from fercore.data.sources import load_source
        gray = list(load_source("synthetic:70").images[:4])
    width, height = size
    side = height // 2
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(int(seconds * fps)):
            y = np.full((height, width), 128, np.uint8)
            face = np.asarray(Image.fromarray(gray[(i // fps) % len(gray)]).resize((side, side), Image.BICUBIC))
            dx = int(20 * np.sin(i / fps * 2 * np.pi / 3))
            y[height // 4:height // 4 + side, (width - side) // 2 + dx:(width + side) // 2 + dx] = face
            out.write(b"FRAME\n" + y.tobytes() + np.full(width * height // 2, 128, np.uint8).tobytes())
    return path


def start_app(db: Path, port: int, *streamlit_args: str, **env_changes: str) -> subprocess.Popen:
    """`streamlit run streamlit_app.py` over `db` (no worker unless env_changes allow one), with any further
    `streamlit_args` (e.g. `--secrets.files PATH`); waits for its health check."""
    env = dict(os.environ, FER_DB_URL=str(db), FER_AUTOSTART_WORKER="0",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_changes)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false", *streamlit_args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
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
    raise RuntimeError("streamlit did not answer within 60 s")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


# The page's own clock (tests/bench_browser.py): from the user's action (the first pointer press, key, or file chosen
# after `arm_page_clock`; or the navigation itself, at 0) to the moment the page last became fully drawn, in the
# page's performance.now() time, so a timing holds no test-harness round trips. Polled every 20 ms. Armed once per
# action: a widget's own later events (a select's change after its rerun) must not move the start.
PAGE_CLOCK_JS = """(() => {
  const drawn = FULLY_DRAWN;
  const clock = window.__ferClock = {action: 0, armed: false, drawnSince: null};
  for (const type of ['pointerdown', 'keydown', 'input', 'change'])
    document.addEventListener(type, () => {
      if (clock.armed) { clock.action = performance.now(); clock.armed = false; } }, true);
  setInterval(() => {
    if (!drawn()) clock.drawnSince = null;
    else if (clock.drawnSince === null) clock.drawnSince = performance.now();
  }, 20);
})();""".replace("FULLY_DRAWN", FULLY_DRAWN_JS)


def arm_page_clock(page) -> None:
    """The next user event on the page starts its clock (PAGE_CLOCK_JS)."""
    page.evaluate("() => { if (window.__ferClock) window.__ferClock.armed = true; }")


def page_clock_seconds(page) -> float | None:
    """Seconds from the last action to the page fully drawn by PAGE_CLOCK_JS (installed with add_init_script), or
    None when the page never left its drawn state in between (a change faster than the 20 ms polling)."""
    clock = page.evaluate("() => window.__ferClock || null")
    if not clock or clock["drawnSince"] is None or clock["drawnSince"] <= clock["action"]:
        return None
    return (clock["drawnSince"] - clock["action"]) / 1000


def wait_fully_drawn(page, timeout_ms: int = 60_000) -> None:
    """Until the page is fully drawn (FULLY_DRAWN_JS) and stays so for two animation frames' worth of polling."""
    page.wait_for_function(FULLY_DRAWN_JS, timeout=timeout_ms, polling=50)
    page.wait_for_timeout(100)
    page.wait_for_function(FULLY_DRAWN_JS, timeout=timeout_ms, polling=50)


# --- lab reports (fercore.report) --------------------------------------------------------------------------
def open_offline(html_path: Path, screenshot: Path | None = None) -> dict:
    """Open a report in chromium with every request that would leave the page aborted (and counted); wait for the
    charts. Returns the charts, the charts with an SVG drawn, the requests refused, the faces shown, the
    Reproduce text, the seconds to the first screen drawn and to every chart drawn, and the CPU
    seconds of the renderer's main thread and process (the page's own cost, apart from waiting for a CPU)."""
    sync_playwright, chromium = chromium_or_skip()
    refused = []

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            return r.continue_()
        refused.append(r.request.url)
        return r.abort()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", route)
        page.on("request", lambda req: None if req.url.startswith(("file:", "data:")) else refused.append(req.url))
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")   # CPU time: what the page costs, apart from waiting for a CPU
        t0 = time.perf_counter()
        page.goto(html_path.resolve().as_uri())
        failed = "document.getElementById('js-error').textContent !== ''"
        page.wait_for_function(f"document.body.dataset.firstScreenDrawn === 'true' || {failed}", timeout=60_000)
        first_screen = time.perf_counter() - t0
        page.wait_for_function(f"document.body.dataset.chartsDrawn === 'true' || {failed}", timeout=60_000)
        seconds = time.perf_counter() - t0
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        out = page.evaluate("""() => ({
            error: document.getElementById('js-error').textContent,
            charts: document.querySelectorAll('.chart').length,
            drawn: [...document.querySelectorAll('.chart')].filter(c => c.querySelector('.main-svg')).length,
            faces: [...document.querySelectorAll('.face img')].filter(i => i.complete && i.naturalWidth > 0).length,
            reproduce: [...document.querySelectorAll('pre.reproduce')].map(p => p.innerText).join('\\n'),
            headings: [...document.querySelectorAll('h2')].map(h => h.innerText)})""")
        if screenshot:
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {**out, "refused": refused, "seconds": seconds, "first_screen": first_screen,
            "cpu_s": metrics.get("ThreadTime"), "process_cpu_s": metrics.get("ProcessTime")}
