"""Issue 23's screenshots in chromium (a script, not a test): the Train form (first view and Advanced), Classify
with each explanation method on a real FER2013 face, and a lesson summary in both cases (finding stated; too short
to tell), from real short runs on synthetic faces.

    python tests/shots_r23.py OUT_DIR [--db DB]   (with --db, an existing database from an earlier call is reused)
"""
from __future__ import annotations

import argparse
import sys
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
    wait_fully_drawn,
)


def build_db(db: Path) -> None:
    """Two activation lessons on synthetic happy/sad faces: 1 epoch (too short to tell) and 8 epochs (stated)."""
    import torch

    from fercore.jobs.execute import execute_run
    from fercore.jobs.runfile import ensure_starter
    from fercore.store import RunStore
    from fercore.teach.lessons import start_lesson
    torch.set_num_threads(1)
    store = RunStore(str(db))
    ensure_starter(store)
    for data, epochs in (("synthetic:700", 1), ("synthetic:2100", 8)):
        for _ in start_lesson(store, "activation", data=data, epochs=epochs, classes=("happy", "sad")):
            execute_run(store, store.claim_next_run(worker_id=1, device="cpu").id, device="cpu")


def shoot(out: Path, db: Path) -> None:
    from playwright.sync_api import sync_playwright

    from fercore.predict import ATTRIBUTION_METHODS as METHODS
    port = free_port()
    server = start_app(db, port)
    base = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2000})   # Streamlit scrolls inside
            page.set_default_timeout(180_000)
            page.goto(f"{base}/train")
            page.get_by_text("Start from a preset").wait_for()
            wait_fully_drawn(page)
            page.screenshot(path=str(out / "1-train-first-view.png"), full_page=True)
            page.get_by_text("Advanced settings").click()
            page.get_by_role("tab", name="Optimisation").click()
            wait_fully_drawn(page)
            page.screenshot(path=str(out / "2-train-advanced.png"), full_page=True)

            page.goto(f"{base}/")
            page.get_by_text("Upload a photo with one or more faces").wait_for()
            photo = face_photo(out / "face.jpg", index=2)
            page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(photo))
            page.locator("[data-testid=stImage]").filter(has_text="Saliency for").first.wait_for()
            wait_fully_drawn(page)
            box = page.locator("[data-testid=stSelectbox]").filter(has_text="Explanation")
            for i, method in enumerate(["saliency", "ig", "gradcam", "occlusion"]):
                if i:
                    box.click()
                    page.get_by_role("option", name=METHODS[method], exact=True).click()
                page.locator("[data-testid=stImage]").filter(has_text=f"{METHODS[method]} for").first.wait_for()
                wait_fully_drawn(page)
                page.screenshot(path=str(out / f"3-classify-{method}.png"), full_page=True)
                page.locator("[data-testid=stMain]").screenshot(path=str(out / f"3-classify-{method}-main.png"))

            page.goto(f"{base}/lessons")
            page.get_by_text("Your lessons").wait_for()
            wait_fully_drawn(page)
            page.get_by_text("Your lessons").scroll_into_view_if_needed()
            page.screenshot(path=str(out / "4-lessons-summaries.png"), full_page=True)
            browser.close()
    finally:
        stop(server)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--db", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.db or args.out / "runs.db"
    if not db.exists():
        build_db(db)
    shoot(args.out, db)


if __name__ == "__main__":
    main()
