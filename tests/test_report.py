"""Lab reports (`python -m fercore report`): one self-contained HTML file that opens offline with every chart drawn,
shows user text as text, and whose "Reproduce" commands recreate the runs with the same configs."""
from __future__ import annotations

import base64
import gzip
import json
import re
from html import unescape
from html.parser import HTMLParser

import numpy as np
import pytest

from fercore.store.entities import RunStatus

HOSTILE = '<img src=x onerror="alert(1)">&amp;'


# --- runs made by hand (no training): the fast tests -----------------------------------------------------------
def made_up_run(store, name: str, lr: float, acc: float, seed: int, classes=("angry", "happy", "sad")):
    """A finished run with curves, gradient norms and a test evaluation right on about `acc` of 60 images."""
    from fercore.config import RunConfig
    from fercore.metrics import evaluation_record
    cfg = RunConfig(data="synthetic:420", classes=tuple(classes), epochs=3, lr=lr, name=name)
    run = store.create_run(cfg, status=RunStatus.RUNNING, classes=classes)
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
