"""Issue 16, the classroom walk: what a teacher and students stumbled on, each checked as they would see it
(the app under AppTest, as in test_app.py, and the figures as plain Plotly objects)."""
from __future__ import annotations

import io
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from test_app import REPO, epoch_record, open_page  # noqa: E402

from fercore.config import RunConfig  # noqa: E402
from fercore.store import RunStore  # noqa: E402
from fercore.store.entities import RunStatus  # noqa: E402

TINY = RunConfig(data="synthetic:420", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,),
                 batch_size=32, epochs=4, tta="none")


def add_real_dataset(store: RunStore, tmp_path: Path, name: str):
    """A tiny FER2013-style CSV stored as a (non-synthetic) dataset."""
    from fercore.data.sources import load_source, write_challenge_csv
    rng = np.random.default_rng(len(name))
    path = tmp_path / f"{name}.csv"
    write_challenge_csv(rng.integers(0, 255, (28, 48, 48)), np.arange(28) % 7, [0] * 14 + [1] * 7 + [2] * 7, path)
    return store.add_dataset(load_source(str(path)), name)


def add_run(store: RunStore, name: str, status: RunStatus, epochs: int = 0, error: str | None = None):
    run = store.create_run(TINY.replace(name=name), status=RunStatus.RUNNING if epochs else status)
    for e in range(1, epochs + 1):
        store.add_epoch(run.id, epoch_record(e, 1.6 - 0.2 * e, 0.3 + 0.05 * e))
    if epochs and status != RunStatus.RUNNING:
        store.set_status(run.id, status, error)
    return store.get_run(run.id)


def chart_keys(at) -> set[str]:
    from streamlit.elements.lib.utils import user_key_from_element_id
    return {user_key_from_element_id(c.proto.id) for c in at.get("echarts_chart")}


def button(at, label: str):
    return next(b for b in at.button if b.label.startswith(label))


@pytest.fixture
def app_env(monkeypatch):
    """AppTest runs in this process: point it at a test database and keep it from starting workers."""
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")
    return lambda db_path: monkeypatch.setenv("FER_DB_URL", str(db_path))


@pytest.fixture
def on_device(monkeypatch):
    """Pretend this machine trains on a GPU (or not): the pages ask state.training_device()."""
    from fercore.ui import state

    def use(gpu: bool):
        monkeypatch.setattr(state, "training_device", lambda: "GPU: Test card" if gpu else "CPU (no GPU found)")
    return use


# --- 1. FER2013 from the Data page ------------------------------------------------------------------------
def test_the_full_fer2013_csv_fits_the_upload_cap_and_the_page_says_so(app_env, tmp_path):
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] >= 300, "fer2013.csv is 287 MB"
    app_env(tmp_path / "runs.db")
    at = open_page("pages/data.py")
    assert "300 MB" in at.file_uploader(key="data_upload").label


def test_the_path_tab_says_how_to_add_a_folder_and_a_refused_path_says_it_too(app_env, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    add_real_dataset(RunStore(str(tmp_path / "scratch.db")), tmp_path, "x")   # writes tmp_path/x.csv
    (outside / "fer2013.csv").write_bytes((tmp_path / "x.csv").read_bytes())
    app_env(tmp_path / "runs.db")
    at = open_page("pages/data.py")
    assert any("FER_DATA_DIRS" in c.value and "before starting the app" in c.value for c in at.caption)
    at.text_input(key="data_path").set_value(str(outside / "fer2013.csv")).run()
    button(at, "Import from the path").click().run()
    assert not at.exception and "FER_DATA_DIRS" in at.error[0].value
    assert RunStore(str(tmp_path / "runs.db")).list_datasets() == []

    monkeypatch.setenv("FER_DATA_DIRS", str(outside))   # what the instructor does, then restarts the app
    at = open_page("pages/data.py")
    assert any(str(outside) in c.value for c in at.caption), "the added folder is listed"
    at.text_input(key="data_path").set_value(str(outside / "fer2013.csv")).run()
    button(at, "Import from the path").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [d.splits for d in RunStore(str(tmp_path / "runs.db")).list_datasets()] == \
        [{"train": 14, "val": 7, "test": 7}]


# --- 2. the Train form ---------------------------------------------------------------------------------------
def test_train_form_opens_on_the_newest_real_dataset_and_follows_a_later_import(app_env, on_device, tmp_path):
    from fercore.data.sources import load_source
    on_device(False)
    store = RunStore(str(tmp_path / "runs.db"))
    app_env(tmp_path / "runs.db")
    at = open_page("pages/train.py")
    assert at.selectbox(key="cfg_data").value == "synthetic", "nothing imported yet"

    add_real_dataset(store, tmp_path, "fer-old")
    add_real_dataset(store, tmp_path, "fer-new")
    store.add_dataset(load_source("synthetic:70"), "synthetic")
    at.switch_page("pages/data.py").run()
    at.switch_page("pages/train.py").run()
    assert at.selectbox(key="cfg_data").value == "fer-new", "the newest real dataset, not the newer synthetic one"
    assert not at.exception

    fresh = open_page("pages/train.py")
    assert fresh.selectbox(key="cfg_data").value == "fer-new", "a new session opens on it too"
    fresh.selectbox(key="cfg_data").set_value("fer-old").run()
    add_real_dataset(store, tmp_path, "fer-newest")
    fresh.run()
    assert fresh.selectbox(key="cfg_data").value == "fer-old", "a dataset the user picked stays picked"


def test_changing_the_preset_keeps_the_dataset_classes_and_data_fraction(app_env, on_device, tmp_path):
    from fercore.presets import PRESETS, preset_config
    on_device(False)
    store = RunStore(str(tmp_path / "runs.db"))
    add_real_dataset(store, tmp_path, "fer")
    app_env(tmp_path / "runs.db")
    at = open_page("pages/train.py")
    at.selectbox(key="cfg_data").set_value("fer").run()
    at.multiselect(key="cfg_classes").set_value(["angry", "happy"]).run()
    at.number_input(key="cfg_data_fraction").set_value(0.25).run()
    at.selectbox(key="train_preset").set_value("best").run()
    assert at.number_input(key="cfg_epochs").value == preset_config("best").epochs, "the preset was applied"
    assert at.selectbox(key="cfg_data").value == "fer"
    assert at.multiselect(key="cfg_classes").value == ["angry", "happy"]
    assert at.number_input(key="cfg_data_fraction").value == 0.25

    assert "classes" in PRESETS["report-3class-hns"]["config"]
    at.selectbox(key="train_preset").set_value("report-3class-hns").run()
    assert at.multiselect(key="cfg_classes").value == ["happy", "neutral", "sad"], "a preset that sets classes wins"
    assert at.selectbox(key="cfg_data").value == "fer" and at.number_input(key="cfg_data_fraction").value == 0.25
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.switch_page("pages/data.py").run()
    at.switch_page("pages/train.py").run()
    assert at.selectbox(key="train_preset").value == "report-3class-hns", "the picker survives a visit elsewhere"
    assert at.selectbox(key="cfg_data").value == "fer" and at.number_input(key="cfg_data_fraction").value == 0.25


@pytest.mark.parametrize("gpu", [False, True])
def test_the_form_starts_from_the_devices_recipe_and_shows_gpu_settings_only_on_a_gpu(app_env, on_device, tmp_path,
                                                                                       gpu):
    on_device(gpu)
    app_env(tmp_path / "runs.db")
    at = open_page("pages/train.py")
    recipe = "default" if gpu else "cpu-starter"
    assert at.selectbox(key="train_preset").value == recipe
    assert at.selectbox(key="train_preset").options[1] == recipe, "the device's recipe is offered first"
    boxes = {c.key for c in at.checkbox}
    assert "cfg_cycle_momentum" in boxes
    gpu_only = {"cfg_amp", "cfg_compile"}
    assert gpu_only & boxes == (gpu_only if gpu else set()), "amp and compile only where a GPU trains"
    assert not at.exception and not at.error


# --- 3. Runs ----------------------------------------------------------------------------------------------------
def runs_db(tmp_path) -> tuple[str, dict]:
    store = RunStore(str(tmp_path / "runs.db"))
    runs = {"done": add_run(store, "done", RunStatus.FINISHED, epochs=3),
            "broken": add_run(store, "broken", RunStatus.FAILED, epochs=1, error="The loss became nan."),
            "waiting": add_run(store, "waiting", RunStatus.QUEUED)}
    return str(tmp_path / "runs.db"), runs


def test_runs_table_keeps_the_ticked_run_when_runs_start_or_end(app_env, tmp_path):
    path, runs = runs_db(tmp_path)
    app_env(path)
    at = open_page("pages/runs.py")
    table = at.dataframe[0]
    assert table.proto.placeholder == "-", "empty cells read '-', not 'None'"
    ids = [int(i) for i in table.value["id"]]
    ticked = runs["done"].id
    at.session_state["runs_table"] = {"selection": {"rows": [ids.index(ticked)], "columns": []}}   # a tick
    at.run()
    assert button(at, "Compare selected").label == "Compare selected (1)"

    store = RunStore(path)
    store.set_status(runs["waiting"].id, RunStatus.RUNNING)                    # one starts...
    newer = [store.create_run(TINY.replace(name=f"new-{i}"), status=RunStatus.QUEUED).id for i in range(2)]
    at.run()                                                                   # ...two arrive on top
    shown = [int(i) for i in at.dataframe[0].value["id"]]
    assert shown[:2] == newer[::-1] and ids.index(ticked) != shown.index(ticked), "the rows moved"
    assert "running" in set(at.dataframe[0].value["status"]), "the table updated by itself"
    button(at, "Compare selected (1)").click().run()
    assert at.session_state["compare_ids"] == [ticked], "the same run is still ticked"


def test_the_detail_shows_a_finished_runs_curves_and_claims_nothing_for_a_queued_run(app_env, tmp_path):
    path, runs = runs_db(tmp_path)
    app_env(path)
    at = open_page("pages/runs.py")
    at.selectbox(key="diagnose_run").set_value(runs["done"].id).run()
    assert {"detail-loss", "detail-acc"} <= chart_keys(at), "a finished run shows its learning curves"
    at.selectbox(key="diagnose_run").set_value(runs["waiting"].id).run()
    assert not any("Nothing unusual" in s.value for s in at.success)
    assert any("comes with its first epoch" in c.value for c in at.caption)
    assert not chart_keys(at) & {"detail-loss", "detail-acc"}, "no curves for a run that has none"
    at.selectbox(key="diagnose_run").set_value(runs["broken"].id).run()
    assert any("The loss became nan." in e.value for e in at.error)
    assert not at.exception


# --- 4. Lessons ----------------------------------------------------------------------------------------------
def test_lesson_options_survive_a_visit_to_another_page(app_env, tmp_path):
    app_env(tmp_path / "runs.db")
    at = open_page("pages/lessons.py")
    at.number_input(key="lesson_epochs").set_value(3).run()
    at.select_slider(key="lesson_fraction").set_value(0.25).run()
    at.multiselect(key="lesson_classes").set_value(["happy", "sad"]).run()
    at.switch_page("pages/train.py").run()
    at.switch_page("pages/lessons.py").run()
    assert at.number_input(key="lesson_epochs").value == 3
    assert at.select_slider(key="lesson_fraction").value == 0.25
    assert at.multiselect(key="lesson_classes").value == ["happy", "sad"]
    assert not at.exception


def test_a_lesson_shows_why_a_run_failed_before_the_others_end(app_env, tmp_path):
    from fercore.teach.lessons import LESSONS, start_lesson
    store = RunStore(str(tmp_path / "runs.db"))
    runs = start_lesson(store, next(iter(LESSONS)), data="synthetic:420", epochs=1)
    store.set_status(runs[0].id, RunStatus.FAILED, "The machine ran out of memory in epoch 1.")
    app_env(tmp_path / "runs.db")
    at = open_page("pages/lessons.py")
    assert any(f"{runs[0].name} failed: The machine ran out of memory" in e.value for e in at.error)
    assert not at.exception


# --- 5. no face -------------------------------------------------------------------------------------------
def test_a_photo_without_a_face_says_one_thing(app_env, tmp_path):
    from fercore.jobs.runfile import STARTER_FILE
    if not STARTER_FILE.exists():
        pytest.skip("models/starter.fer.pt is not in this checkout")
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.integers(0, 256, (6, 9, 3)), np.ones((50, 50, 1))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(blocks).save(buf, "PNG")
    app_env(tmp_path / "runs.db")
    at = open_page("pages/classify.py")
    at.file_uploader(key="classify_upload").upload("wall.png", buf.getvalue(), "image/png").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [w.value for w in at.warning] == ["No face found: the whole image was scored as one face."]
    captions = [c for img in at.image for c in img.captions]
    assert not any("face(s), numbered" in c for c in captions)
    assert "Face 1" not in [h.value for h in at.subheader]


# --- 6. polish ------------------------------------------------------------------------------------------------
def test_learning_curves_of_eight_runs_keep_their_plot_height():
    from fercore import figures
    one = figures.learning_curves([("a", [epoch_record(e, 1.0, 0.5) for e in (1, 2)])], "acc")
    eight = figures.learning_curves([(f"{i} · lesson-run-{i}", [epoch_record(e, 1.0, 0.5) for e in (1, 2)])
                                     for i in range(8)], "acc")
    for fig in (one, eight):
        legend = fig.layout.legend
        assert legend.orientation == "h" and legend.yanchor == "bottom" and legend.y <= 0, "below the plot"
    plot_height = [f.layout.height - f.layout.margin.t - f.layout.margin.b for f in (one, eight)]
    assert plot_height[1] >= plot_height[0], "the legend's rows add height instead of taking the plot's"
    assert sum(bool(t.showlegend) for t in eight.data) == 8, "one legend entry per run"


def test_gradient_norm_charts_share_one_labelled_log_scale():
    from fercore import figures
    small = [{"epoch": 1, "grad_norms": {"a": 1e-4}}, {"epoch": 2, "grad_norms": {"a": 1e-3}}]
    large = [{"epoch": 1, "grad_norms": {"a": 10.0, "b": None}}]
    shared = figures.gradient_norm_range([small, large])
    assert shared[0] < -4 and shared[1] > 1
    fig = figures.gradient_norms(small, "run", shared)
    assert fig.layout.yaxis.title.text == "weight-gradient L2 norm, log scale" and fig.layout.yaxis.type == "log"
    assert list(fig.layout.yaxis.range) == shared
    assert figures.gradient_norm_range([[{"epoch": 1}]]) is None


def test_pixel_statistics_columns_fit(app_env, tmp_path):
    add_real_dataset(RunStore(str(tmp_path / "runs.db")), tmp_path, "fer")
    app_env(tmp_path / "runs.db")
    at = open_page("pages/data.py")
    stats = next(d for d in at.dataframe if "mean" in d.value.columns)
    assert list(stats.value.columns) == ["split", "mean", "std", "dark %", "bright %"]
    assert not at.exception


def test_the_sidebar_keeps_internals_in_an_instructor_section_and_a_fresh_lab_says_where_to_start(app_env,
                                                                                                    tmp_path):
    from fercore.jobs.runfile import STARTER_FILE
    app_env(tmp_path / "runs.db")
    at = open_page("pages/classify.py")
    instructor = next(e for e in at.sidebar.expander if e.label == "Instructor")
    assert any("Database" in c.value for c in instructor.caption)
    assert not any("Database" in c.value for c in at.sidebar.caption if c not in instructor.caption)
    assert any(c.value.startswith("Queue:") for c in at.sidebar.caption), "the queue stays in view"
    hint = "Upload a photo to try the starter model; import FER2013 on the Data page to train your own."
    if STARTER_FILE.exists():
        assert hint in [i.value for i in at.info]
    add_run(RunStore(str(tmp_path / "runs.db")), "mine", RunStatus.FINISHED, epochs=1)
    at.run()
    assert hint not in [i.value for i in at.info], "only while the starter is all there is"
