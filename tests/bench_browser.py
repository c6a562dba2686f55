"""The live-class speed goals of issue 16, timed in Debian's chromium (a benchmark, not a test: timings vary
with the machine and its load, so they are reported, never asserted).

    python tests/bench_browser.py [--repeat 5] [--runs 9] [--json timings.json]

On a fresh database of `--runs` runs (the shipped starter and tiny CNNs trained here on the synthetic faces,
12 epochs each), with a Streamlit server started as the README does, it times from the user's action to the
page fully drawn (no script running, no stale element, every Plotly chart drawn; tests/browserkit.py):

  compare      open Compare on two runs (a shared link: a page load, the websocket, the script, the charts)
               goal <= 3 s
  upload       choose a photo on Classify until its faces, probabilities and saliency map are drawn
               goal <= 1.5 s for the first photo of a server, <= 1 s after
  method       switch the explanation method of a shown photo until the new maps are drawn; goal <= 0.4 s

Each is measured `--repeat` times (new photos for uploads, each method in turn); the first compare and the
first upload are also reported on their own (a cold server).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from browserkit import (  # noqa: E402
    CHROMIUM_ARGS,
    chromium_path,
    face_photo,
    free_port,
    start_app,
    stop,
    train_tiny,
    wait_fully_drawn,
)

GOALS = {"compare": 3.0, "upload_first": 1.5, "upload": 1.0, "method": 0.4}   # method: issue 25's goal


def build_db(db: Path, n_runs: int) -> list[int]:
    """The starter and n_runs - 1 tiny runs; returns the ids of two tiny runs that differ in the learning rate."""
    from fercore.jobs.runfile import ensure_starter
    from fercore.store import RunStore
    store = RunStore(str(db))
    ensure_starter(store)
    ids = [train_tiny(store, f"lr-{lr:g}", lr=lr, epochs=12, data="synthetic:700").id
           for lr in [3e-3, 3e-2, 1e-3, 1e-2, 3e-4, 1e-4, 3e-1, 1e-1][:max(n_runs - 1, 2)]]
    return ids[:2]


def timed(action, done) -> float:
    t0 = time.perf_counter()
    action()
    done()
    return time.perf_counter() - t0


def bench_compare(page, base: str, ids: list[int], repeat: int) -> list[float]:
    url = f"{base}/compare?runs={ids[0]},{ids[1]}"

    def drawn():
        page.get_by_text("Learning curves").wait_for()
        page.locator("[data-testid=stPlotlyChart] .main-svg").first.wait_for()
        wait_fully_drawn(page)
    return [timed(lambda: page.goto(url), drawn) for _ in range(repeat + 1)]


PHOTO_SRC_JS = "() => document.querySelector('[data-testid=stMain] [data-testid=stImage] img')?.getAttribute('src')"


def bench_upload(page, base: str, photos: list[Path]) -> list[float]:
    page.goto(f"{base}/")
    page.get_by_text("Upload a photo with one or more faces").wait_for()
    wait_fully_drawn(page)
    upload = page.locator("[data-testid=stFileUploader] input[type=file]")
    caption = page.locator("[data-testid=stImage]").filter(has_text="Saliency for")
    out = []
    for photo in photos:
        before = page.evaluate(PHOTO_SRC_JS)   # the boxed photo shown (None at first): this photo's replaces it

        def shown(before=before):
            page.wait_for_function(f"(b) => {{ const s = ({PHOTO_SRC_JS})(); return s && s !== b; }}", arg=before)
            caption.first.wait_for()
            wait_fully_drawn(page)
        out.append(timed(lambda p=photo: upload.set_input_files(str(p)), shown))
    return out


def bench_method(page, repeat: int) -> list[float]:
    from fercore.predict import ATTRIBUTION_METHODS as METHODS
    box = page.locator("[data-testid=stSelectbox]").filter(has_text="Explanation")
    order = [m for m in METHODS if m != "saliency"] + ["saliency"]
    out = []
    for k in range(repeat):
        method = order[k % len(order)]

        def pick(m=method):
            box.click()
            page.get_by_role("option", name=METHODS[m], exact=True).click()

        def shown(m=method):
            page.locator("[data-testid=stImage]").filter(has_text=f"{METHODS[m]} for").first.wait_for()
            wait_fully_drawn(page)
        out.append(timed(pick, shown))
    return out


def summary(name: str, xs: list[float]) -> dict:
    goal = GOALS[name]
    return {"n": len(xs), "median_s": round(statistics.median(xs), 3), "max_s": round(max(xs), 3),
            "goal_s": goal, "meets_goal": statistics.median(xs) <= goal, "all_s": [round(x, 3) for x in xs]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--runs", type=int, default=9, help="runs in the database (the starter and tiny CNNs)")
    ap.add_argument("--json", type=Path, help="also write the timings here")
    ap.add_argument("--only", default="compare,upload,method",
                    help="which to time, e.g. upload,method (method needs upload: it switches on the shown photo)")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ids = build_db(tmp / "runs.db", args.runs)
        photos = [face_photo(tmp / f"face{i}.jpg", index=i) for i in range(args.repeat + 1)]
        port = free_port()
        server = start_app(tmp / "runs.db", port)
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                only = set(args.only.split(",")) | ({"upload"} if "method" in args.only else set())
                compare = bench_compare(page, base, ids, args.repeat) if "compare" in only else []
                uploads = bench_upload(page, base, photos) if "upload" in only else []
                methods = bench_method(page, args.repeat) if "method" in only else []
                browser.close()
        finally:
            stop(server)
    timings = {"compare_first": ("compare", compare[:1]), "compare": ("compare", compare[1:]),
               "upload_first": ("upload_first", uploads[:1]), "upload": ("upload", uploads[1:]),
               "method": ("method", methods)}
    out = {"runs_in_db": args.runs, **{k: summary(goal, xs) for k, (goal, xs) in timings.items() if xs}}
    for name, s in out.items():
        if isinstance(s, dict):
            print(f"{name:14s} median {s['median_s']:6.2f} s  max {s['max_s']:6.2f} s  goal {s['goal_s']} s  "
                  f"{'met' if s['meets_goal'] else 'NOT met'}  ({s['n']} timings)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
