"""Lab reports (`python -m fercore report`): one self-contained HTML file that opens offline with every chart drawn,
shows user text as text, and whose "Reproduce" commands recreate the runs with the same configs."""
from __future__ import annotations

import base64
import gzip
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from browserkit import open_offline

from fercore.store.entities import RunStatus

HOSTILE = '<img src=x onerror="alert(1)">&amp;'   # names are validated now; a database from before keeps such names
SPICY = "lr 0.01: flip_off-v2.b"   # every character a run name may use


# --- runs made by hand (no training): the fast tests -----------------------------------------------------------
def made_up_run(store, name: str, lr: float, acc: float, seed: int, classes=("angry", "happy", "sad")):
    """A finished run with curves, gradient norms and a test evaluation right on about `acc` of 60 images."""
    from fercore.config import RunConfig
    from fercore.metrics import evaluation_record
    cfg = RunConfig(data="synthetic:420", classes=tuple(classes), epochs=3, lr=lr, name=f"run-{seed}")
    run = store.create_run(cfg, status=RunStatus.RUNNING, classes=classes)
    store.update_run(run.id, name=name, config=cfg.replace(name=name))   # as an older database may hold it
    for e in range(1, 4):
        store.add_epoch(run.id, {"epoch": e, "train_loss": 1.2 - 0.2 * e, "train_acc": acc - 0.1 + 0.05 * e,
                                 "val_loss": 1.3 - 0.1 * e, "val_acc": acc - 0.12 + 0.04 * e, "lr": lr, "seconds": 1.0,
                                 "grad_norms": {"features.0": 0.5 / e, "classifier.3": 0.2}})
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(len(classes)), 20)
    probs = rng.dirichlet(np.ones(len(classes)), size=len(targets)).astype(np.float32)
    right = rng.random(len(targets)) < acc
    probs[right, targets[right]] += 2.0
    probs /= probs.sum(axis=1, keepdims=True)
    store.add_evaluation(run.id, evaluation_record(probs, targets, list(classes)), "test", cfg.data)
    store.add_evaluation(run.id, evaluation_record(probs, targets, list(classes)), "val", cfg.data)
    store.set_status(run.id, RunStatus.FINISHED)
    return store.get_run(run.id)


class Elements(HTMLParser):
    """The tags of a page with their attributes, and the text of each <script> by id."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._script = [], {}, None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs).get("id", f"#{len(self.scripts)}")
            self.scripts[self._script] = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self.scripts[self._script] += data


@pytest.fixture
def two_made_up_runs(db):
    from fercore.store import RunStore
    store = RunStore(db)
    return store, [made_up_run(store, "base", 1e-3, 0.7, 0), made_up_run(store, HOSTILE, 1e-2, 0.5, 1)]


def test_report_is_one_offline_file_with_every_chart_and_user_text_escaped(two_made_up_runs):
    from fercore.report import build_report, render_html
    store, runs = two_made_up_runs
    report = build_report(store, [r.id for r in runs])
    html = render_html(report)
    page = Elements()
    page.feed(html)
    # nothing is fetched: no external script, stylesheet, image or frame
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith(("data:", "#")), (tag, attrs)
    assert not re.search(r"https?://", html.replace(page.scripts["plotlyjs-gz"], ""))
    # plotly.js exactly once, inline
    js = gzip.decompress(base64.b64decode(page.scripts["plotlyjs-gz"])).decode()
    import plotly.offline
    assert js == plotly.offline.get_plotlyjs() and html.count("plotlyjs-gz") == 2   # the element and its reader
    # every chart has its figure, and the charts are the pages' own (curves, gradients, confusion x2 + difference)
    charts = [a for t, a in page.tags if t == "div" and "chart" in a.get("class", "").split()]
    assert len(charts) == len(report.charts) >= 2 + 2 + 2 * 2 + 1 + 3
    for c in charts:
        assert json.loads(page.scripts[c["data-spec"]])["data"], c
    # user text is text: the hostile name only ever appears escaped
    assert HOSTILE not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&amp;amp;" in html
    # what differs is lr (and the name is not a setting that "differs")
    assert list(report.tables["config_diff"].frame.index) == ["lr"]
    assert "test" in report.tables["runs"].frame["macro-F1"].iloc[0]


def test_reproduce_commands_parse_back_to_the_same_configs(two_made_up_runs):
    from fercore.cli import build_parser, config_from_args
    from fercore.report import build_report, render_html
    from fercore.report.reproduce import command_lines
    store, runs = two_made_up_runs
    html = render_html(build_report(store, [r.id for r in runs], gallery=False))
    blocks = re.findall(r'<pre class="reproduce">(.*?)</pre>', html, re.S)
    commands = command_lines(unescape("\n".join(blocks)))
    trains = [c for c in commands if c[3] == "train"]
    assert len(trains) == 2
    for argv, run in zip(trains, runs):
        assert config_from_args(build_parser().parse_args(argv[3:])) == run.config


def test_figures_without_a_browser_still_write_the_tables_and_say_why(two_made_up_runs, tmp_path, monkeypatch):
    from fercore.report import build_report, export
    store, runs = two_made_up_runs
    monkeypatch.setattr(export, "export_browser", lambda: None)
    out = export.write_figures(build_report(store, [r.id for r in runs], gallery=False), tmp_path / "figs")
    assert not out.images and "No Chrome or Chromium" in out.note
    assert {"runs.csv", "config-differences.csv", "config-all.csv", "per-class.csv"} <= set(out.tables)
    per_class = (tmp_path / "figs" / "per-class.csv").read_text()
    assert per_class.count("\n") == 1 + 2 * 3   # header, 3 classes x 2 runs


def test_report_refuses_what_it_cannot_build(db, tmp_path):
    from fercore.cli import main
    assert main(["report", "-o", str(tmp_path / "r.html"), "--db", db, "--json"]) == 2
    assert main(["report", "no-such-run", "-o", str(tmp_path / "r.html"), "--db", db, "--json"]) == 2
    assert main(["report", "starter", "-o", str(tmp_path), "--db", db, "--json"]) == 2


def test_a_lesson_still_queued_reports_no_finding_and_claims_nothing(db):
    from fercore.report import build_report, render_html
    from fercore.store import RunStore
    from fercore.teach.lessons import start_lesson
    store = RunStore(db)
    group = start_lesson(store, "dropout", data="synthetic:420", epochs=1)[0].group_name
    report = build_report(store, lesson=group)
    assert report.title == "Lesson: Dropout: 0 vs 0.25 vs 0.5" and report.lesson["finding"] is None
    assert not report.charts and set(report.diagnosis.values()) == {None}
    assert len(report.notes) == 3 and all("queued" in n for n in report.notes)
    html = render_html(report)
    assert "there is no finding" in html and "Nothing unusual found" not in html


# --- really trained runs, opened in chromium with the network blocked: the slow tests ----------------------------
def face_folder(root: Path) -> Path:
    """A tiny image-folder dataset (train/val/test of synthetic faces, PNG) as a user would import it."""
    from PIL import Image

    from fercore.data.sources import load_source
    ds = load_source("synthetic:350")
    for i, (img, label, split) in enumerate(zip(ds.images, ds.labels, ds.split)):
        folder = root / ("train", "val", "test")[split] / ds.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    return root


TINY_FLAGS = ["--conv-blocks", "2", "--filters", "8,16", "--convs-per-block", "1", "--fc-units", "16",
              "--batch-size", "32", "--tta", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A database with two tiny runs trained on an imported folder, and a finished learning-rate lesson."""
    from fercore.cli import main
    from fercore.jobs.worker import run_worker
    from fercore.store import RunStore
    from fercore.teach.lessons import start_lesson
    root = tmp_path_factory.mktemp("lab")
    db = str(root / "runs.db")
    faces = face_folder(root / "faces")
    assert main(["data", "import", str(faces), "--name", "faces", "--dedupe", "--db", db]) == 0
    assert main(["train", "--data", "faces", "--epochs", "1", "--lr", "0.003", "--name", "plain", *TINY_FLAGS,
                 "--db", db]) == 0
    assert main(["train", "--data", "faces", "--epochs", "2", "--lr", "0.01", "--hflip", "0", "--name", SPICY,
                 *TINY_FLAGS, "--db", db]) == 0
    store = RunStore(db)
    lesson = start_lesson(store, "learning_rate", data="synthetic:420", epochs=1, fraction=0.5)
    run_worker(store, once=True, device="cpu", threads=1)
    assert all(store.get_run(r.id).status == RunStatus.FINISHED for r in lesson)
    runs = [store.get_run(n) for n in ("plain", SPICY)]
    return {"db": db, "root": root, "runs": runs, "group": lesson[0].group_name, "faces": faces}


@pytest.mark.slow
def test_a_report_of_two_runs_opens_offline_and_its_commands_recreate_the_runs(lab, tmp_path):
    from fercore.cli import main
    from fercore.report.reproduce import command_lines
    from fercore.store import RunStore
    out = tmp_path / "two.html"
    assert main(["report", "plain", str(lab["runs"][1].id), "-o", str(out), "--figures", str(tmp_path / "figs"),
                 "--db", lab["db"]]) == 0
    seen = open_offline(out)
    assert not seen["error"] and not seen["refused"], seen
    assert seen["charts"] == seen["drawn"] >= 9, seen
    assert seen["faces"] > 0 and "Reproduce" in seen["headings"]
    # every chart also as PNG and SVG, every table as CSV
    figs = {p.name for p in (tmp_path / "figs").iterdir()}
    assert {"curves-loss.png", "curves-loss.svg", "per-class.csv", "config-differences.csv"} <= figs
    assert sum(n.endswith(".svg") for n in figs) == sum(n.endswith(".png") for n in figs) == seen["charts"]
    # the commands, run on the same data in a new database, recreate both runs with the same configs
    fresh = str(tmp_path / "again.db")
    commands = command_lines(seen["reproduce"])
    assert [c[3] for c in commands] == ["data", "train", "train"], commands
    for argv in commands:
        assert main([*argv[3:], "--db", fresh]) == 0, argv
    again = RunStore(fresh)
    for run in lab["runs"]:
        twin = again.get_run(run.name)
        assert twin.config == run.config and twin.dataset_fingerprint == run.dataset_fingerprint


@pytest.mark.slow
def test_a_report_of_a_finished_lesson_states_its_finding_and_opens_offline(lab, tmp_path):
    from fercore.cli import main
    from fercore.store import RunStore
    from fercore.teach.lessons import lesson_status
    out = tmp_path / "lesson.html"
    assert main(["report", "--lesson", lab["group"], "-o", str(out), "--no-mistakes", "--db", lab["db"]]) == 0
    seen = open_offline(out)
    assert not seen["error"] and not seen["refused"], seen
    assert seen["charts"] == seen["drawn"] >= 9 and "The lesson" in seen["headings"], seen
    status = lesson_status(RunStore(lab["db"]), lab["group"])
    html = out.read_text()
    assert status["done"] and status["title"] in html
    from markupsafe import escape
    assert str(escape(status["summary"])) in html   # the finding by the lesson summaries' own rule


def test_the_pages_download_builds_the_report_on_click_and_a_failure_is_a_sentence(two_made_up_runs):
    """What the "Download report" and "Figures (zip)" buttons hand over (their deferred data)."""
    import io
    import zipfile

    from fercore.ui import report_buttons
    store, runs = two_made_up_runs
    page = report_buttons._report_html(store, [r.id for r in runs], None).decode()
    assert page.startswith("<!DOCTYPE html>") and "base vs &lt;img" in page and 'class="reproduce"' in page
    refused = report_buttons._report_html(store, [9999], None).decode()
    assert "could not be built" in refused and "9999" in refused and "Traceback" not in refused
    names = zipfile.ZipFile(io.BytesIO(report_buttons._figures_zip(store, [9999], None))).namelist()
    assert names == ["README.txt"]


@pytest.mark.slow
def test_download_report_on_compare_hands_over_the_report(lab, tmp_path):
    from browserkit import CHROMIUM_ARGS, chromium_or_skip, free_port, start_app, stop
    sync_playwright, chromium = chromium_or_skip()
    ids = [r.id for r in lab["runs"]]
    port = free_port()
    server = start_app(Path(lab["db"]), port, FER_AUTOSTART_WORKER="0")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.goto(f"http://127.0.0.1:{port}/compare?runs={ids[0]},{ids[1]}", timeout=120_000)
            button = page.get_by_role("button", name="Download report")
            button.wait_for(timeout=120_000)   # a loaded machine: the first page of a fresh server is slow
            with page.expect_download(timeout=120_000) as download:
                button.click()
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            browser.close()
    finally:
        stop(server)
    assert saved.name == f"fer-report-runs-{ids[0]}-{ids[1]}.html"
    html = saved.read_text()
    assert f"plain vs {SPICY}" in html and 'class="reproduce"' in html and "plotlyjs-gz" in html
