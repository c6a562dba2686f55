"""The Streamlit app under AppTest: every page renders with an empty database and with one a class
would have after a while, and a user's mistakes come back as a sentence, never a traceback."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from fercore.store.entities import Evaluation, Run, RunStatus

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "streamlit_app.py")
PAGES = {"pages/classify.py": "What does the model see?", "pages/data.py": "Data", "pages/train.py": "Train a model",
         "pages/runs.py": "Runs", "pages/compare.py": "Compare runs", "pages/lessons.py": "Lessons"}
TINY = dict(data="synthetic:420", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,), batch_size=32,
            epochs=1, lr=3e-3, tta="none")


# --- a database like a class's after a while ------------------------------------------------------------
def make_lab_db(path) -> dict:
    """One really trained tiny run; two made-up finished runs tested on the same images (curves, gradient
    norms, evaluations, stored probabilities); a failed run; a running run with progress; a queued lesson.
    Returns {"store", "trained", "fakes", "running"}."""
    from fercore.config import RunConfig
    from fercore.jobs.execute import execute_run
    from fercore.store import RunStore
    from fercore.teach.lessons import start_lesson

    store = RunStore(str(path))
    cfg = RunConfig(**TINY, name="tiny")
    trained = execute_run(store, store.create_run(cfg, status=RunStatus.RUNNING).id, device="cpu")
    assert trained.status == RunStatus.FINISHED, trained.error
    ev = store.evaluation(trained.id, "test", full=True)
    fakes = [fake_run(store, cfg.replace(name=f"fake-{i}", lr=lr), ev, acc, seed=i)
             for i, (lr, acc) in enumerate([(1e-2, 0.55), (1e-4, 0.4)])]
    failed = store.create_run(cfg.replace(name="diverged", lr=50.0), status=RunStatus.RUNNING)
    store.add_epoch(failed.id, {"epoch": 1, "train_loss": float("nan"), "lr": 50.0})
    store.set_status(failed.id, RunStatus.FAILED, "The training loss became nan in epoch 1.")
    running = store.create_run(cfg.replace(name="training-now", epochs=4), status=RunStatus.RUNNING)
    store.add_epoch(running.id, epoch_record(1, 0.6, 0.35))
    store.set_progress(running.id, {"phase": "training", "epoch": 2, "epochs": 4, "batch": 5, "batches": 10,
                                       "eta_s": 42.0})
    start_lesson(store, _first_lesson(), data="synthetic:420", epochs=1)
    return {"store": store, "trained": trained, "fakes": fakes, "running": running}


def _first_lesson() -> str:
    from fercore.teach.lessons import LESSONS
    return next(iter(LESSONS))


def epoch_record(epoch: int, loss: float, acc: float) -> dict:
    return {"epoch": epoch, "train_loss": loss, "train_acc": acc + 0.05, "val_loss": loss + 0.1, "val_acc": acc,
            "lr": 1e-3, "seconds": 1.0, "images_per_s": 300.0,
            "grad_norms": {"features.0": 0.5 / epoch, "classifier.3": 0.2}, "dead_units": {"features.2": 0.1}}


def fake_run(store, cfg, real_ev: Evaluation, acc: float, seed: int) -> Run:
    """A finished run whose test predictions are right on about `acc` of the real run's test images."""
    from fercore.jobs.runfile import probs_to_file
    from fercore.metrics import evaluation_record
    run = store.create_run(cfg, status=RunStatus.RUNNING, classes=real_ev.classes)
    for e in range(1, 5):
        store.add_epoch(run.id, epoch_record(e, 1.8 - 0.2 * e, acc - 0.1 + 0.03 * e))
    rng = np.random.default_rng(seed)
    targets = np.asarray(real_ev.targets)
    k = len(real_ev.classes)
    probs = rng.dirichlet(np.ones(k), size=len(targets)).astype(np.float32)
    right = rng.random(len(targets)) < acc
    probs[right, targets[right]] += 2.0
    probs /= probs.sum(axis=1, keepdims=True)
    ev = evaluation_record(probs, targets, list(real_ev.classes))
    ev["probs_path"] = probs_to_file(store.run_dir(run.id) / "probs_test.npy", probs)
    store.add_evaluation(run.id, ev, "test", cfg.data)
    store.set_status(run.id, RunStatus.FINISHED)
    return store.get_run(run.id)


@pytest.fixture(scope="module")
def lab_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("lab") / "runs.db"
    info = make_lab_db(path)
    info["path"] = str(path)
    return info


@pytest.fixture
def app_env(monkeypatch):
    """AppTest runs in this process: point it at a test database and keep it from starting workers."""
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")

    def use(db_path: str):
        monkeypatch.setenv("FER_DB_URL", str(db_path))
    return use


def open_page(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if page != "pages/classify.py":
        at.switch_page(page).run()
    return at


def assert_clean(at: AppTest, page: str) -> None:
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    assert PAGES[page] in [t.value for t in at.title], f"{page} did not render its title"


def face_png(side: int = 256) -> bytes:
    """A synthetic face (the kind the tiny run learned) enlarged like a photo."""
    from fercore.data.sources import load_source
    face = load_source("synthetic:70").images[3]
    buf = io.BytesIO()
    Image.fromarray(face).resize((side, side), Image.Resampling.BICUBIC).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


# --- every page, both databases ------------------------------------------------------------------------------
def test_every_page_renders_with_an_empty_database(app_env, tmp_path):
    app_env(tmp_path / "empty.db")
    for page in PAGES:
        at = open_page(page)
        assert_clean(at, page)
    classify = open_page("pages/classify.py")
    from fercore.jobs.runfile import STARTER_FILE
    if STARTER_FILE.exists():   # the shipped model is registered on first open and preselected
        picker = classify.multiselect(key="classify_runs")
        assert len(picker.value) == 1 and picker.options[0].startswith("starter")
    else:
        assert any("No trained model" in w.value for w in classify.warning)


def test_every_page_renders_with_runs(app_env, lab_db):
    app_env(lab_db["path"])
    # The fake running run has no worker: beat its heart now, or the app reaps it once 15 s have passed.
    lab_db["store"].set_progress(lab_db["running"].id, {"phase": "training", "epoch": 2, "epochs": 4, "batch": 5,
                                                        "batches": 10, "eta_s": 42.0})
    runs = open_page("pages/runs.py")
    table = runs.dataframe[0].value
    assert set(table["name"]) >= {"tiny", "fake-0", "fake-1", "diverged", "training-now"}
    assert "best val acc" in table.columns and "test acc" in table.columns
    tiny = table[table["name"] == "tiny"].iloc[0]   # the number people read is test, and the table says so
    assert tiny["scored on"] == "test" and tiny["accuracy"] == tiny["test acc"] and tiny["val acc"] > 0
    assert any("training-now" in p.text for p in runs.get("progress")), "live progress of the running run"
    for page in PAGES:
        at = open_page(page)
        assert_clean(at, page)
    classify = open_page("pages/classify.py")
    picker = classify.multiselect(key="classify_runs")
    assert any(o.startswith("tiny") for o in picker.options), "the trained run is offered"
    assert not any(o.startswith("fake") for o in picker.options), "runs without weights are not"
    assert len(picker.value) == 1, "one model (the starter, else the newest) is preselected"


def test_classify_shows_probabilities_and_an_explanation(app_env, lab_db):
    app_env(lab_db["path"])
    at = open_page("pages/classify.py")
    at.multiselect(key="classify_runs").set_value([lab_db["trained"].id]).run()
    at.file_uploader(key="classify_upload").upload("face.png", face_png(), "image/png").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    charts = at.get("echarts_chart")
    assert charts, "a probability chart per face and run"
    bars = json.loads(charts[0].proto.spec)
    assert len(bars["yAxis"]["data"]) == len(bars["series"][0]["data"]) >= 2, "one bar per class, named"
    assert len(at.image) >= 3, "the boxed photo, the face and its attribution map"
    for method in ("gradcam", "occlusion"):
        at.selectbox(key="classify_method").set_value(method).run()
        assert not at.exception and not at.error, (method, [e.value for e in at.error])


def test_classify_says_when_an_upload_is_not_an_image(app_env, lab_db):
    app_env(lab_db["path"])
    at = open_page("pages/classify.py")
    at.file_uploader(key="classify_upload").upload("photo.jpg", b"this is not a jpeg", "image/jpeg").run()
    assert not at.exception
    assert at.error and "image" in at.error[0].value.lower()


# --- user errors are sentences --------------------------------------------------------------------------------
def test_import_from_a_path_outside_the_allowed_folders_is_refused(app_env, tmp_path):
    app_env(tmp_path / "runs.db")
    at = open_page("pages/data.py")
    at.text_input(key="data_path").set_value("/etc/passwd").run()
    at.button[[b.label for b in at.button].index("Import from the path")].click().run()
    assert not at.exception
    assert at.error and "outside the folders" in at.error[0].value
    from fercore.store import RunStore
    assert RunStore(str(tmp_path / "runs.db")).list_datasets() == []


def test_upload_of_a_broken_csv_is_refused_and_a_good_one_imports(app_env, tmp_path):
    from fercore.data.sources import write_challenge_csv
    from fercore.store import RunStore
    app_env(tmp_path / "runs.db")
    at = open_page("pages/data.py")
    at.file_uploader(key="data_upload").upload("fer2013.csv", b"emotion,pixels,Usage\n3,1 2 3,Training\n",
                                               "text/csv").run()
    at.button[[b.label for b in at.button].index("Import the upload")].click().run()
    assert not at.exception and at.error, "a wrong pixel count is a sentence"
    assert RunStore(str(tmp_path / "runs.db")).list_datasets() == []

    rng = np.random.default_rng(0)
    good = tmp_path / "fer2013.csv"
    write_challenge_csv(rng.integers(0, 255, (28, 48, 48)), np.arange(28) % 7, [0] * 14 + [1] * 7 + [2] * 7, good)
    at.file_uploader(key="data_upload").set_value(("fer2013.csv", good.read_bytes(), "text/csv")).run()
    at.button[[b.label for b in at.button].index("Import the upload")].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [(d.splits, d.source) for d in RunStore(str(tmp_path / "runs.db")).list_datasets()] == \
        [({"train": 14, "val": 7, "test": 7}, "upload: fer2013.csv")], "an upload, not its deleted temporary copy"
    assert not at.exception, "the dataset views (balance, samples, statistics, augmentation) render"
    assert at.get("echarts_chart") and at.image


def test_train_form_queues_a_valid_run_and_refuses_an_invalid_one(app_env, tmp_path):
    from fercore.store import RunStore
    app_env(tmp_path / "runs.db")
    import torch
    at = open_page("pages/train.py")
    from fercore.presets import preset_config
    start = "default" if torch.cuda.is_available() else "cpu-starter"
    assert at.selectbox(key="train_preset").value == start, "the Train page opens with this device's recipe"
    assert at.number_input(key="cfg_lr").value == preset_config(start).lr
    other = "cpu-starter" if start == "default" else "default"
    at.text_input(key="cfg_filters").set_value("8, x").run()
    assert not at.exception and at.error and "filters" in at.error[0].value
    queue = at.button[[b.label for b in at.button].index("Queue this run")]
    assert queue.disabled
    at.text_input(key="cfg_filters").set_value("8, 16").run()
    at.selectbox(key="train_preset").set_value(other).run()
    epochs = preset_config(other).epochs
    assert epochs != preset_config(start).epochs and at.number_input(key="cfg_epochs").value == epochs, \
        "the preset filled the form"
    at.button[[b.label for b in at.button].index("Queue this run")].click().run()
    assert not at.exception and at.success
    runs = [r for r in RunStore(str(tmp_path / "runs.db")).list_runs() if r.name != "starter"]
    assert [(r.status, r.config.preset, r.config.epochs) for r in runs] == \
        [(RunStatus.QUEUED, other, epochs)]
    assert any("per epoch" in m.value for m in at.markdown), "an estimate of the time per epoch"


def test_class_code_sign_in_guards_cancel(app_env, lab_db):
    """Issue 22: in a class, nothing renders before sign-in; a student sees no Cancel for a run that is not theirs
    (the instructor's running run), the instructor does. The old top-level `instructor_password` still works."""
    app_env(lab_db["path"])
    at = AppTest.from_file(APP, default_timeout=90)
    at.secrets["fer_class"] = {"class_code": "owl-7", "instructor_password": "owl"}
    at.run()
    assert not at.exception and not at.get("dataframe"), "no page before signing in"
    at.text_input(key="signin_code").set_value("wrong")
    at.text_input(key="signin_name").set_value("Ana")
    next(b for b in at.button if b.label == "Sign in").click().run()
    assert "class code is not right" in at.error[0].value
    sign_in_student = AppTest.from_file(APP, default_timeout=90)
    sign_in_student.secrets["fer_class"] = {"class_code": "owl-7", "instructor_password": "owl"}
    sign_in_student.run()
    sign_in_student.text_input(key="signin_code").set_value("owl-7")
    sign_in_student.text_input(key="signin_name").set_value("Ana")
    next(b for b in sign_in_student.button if b.label == "Sign in").click().run()
    assert not sign_in_student.exception and any("Ana" in m.value for m in sign_in_student.sidebar.markdown)
    sign_in_student.switch_page("pages/train.py").run()
    assert not [b for b in sign_in_student.button if b.label == "Cancel"], "no control for another's run"
    teacher = AppTest.from_file(APP, default_timeout=90)
    teacher.secrets["instructor_password"] = "owl"   # the older single setting: class mode without a code
    teacher.run()
    teacher.text_input(key="signin_password").set_value("owl")
    next(b for b in teacher.button if b.label == "Sign in as the instructor").click().run()
    teacher.switch_page("pages/train.py").run()
    assert [b for b in teacher.button if b.label == "Cancel"], "the instructor may cancel every run"


# --- the comparison --------------------------------------------------------------------------------------------
def test_compare_renders_every_view_of_the_selected_runs(app_env, lab_db):
    app_env(lab_db["path"])
    ids = [lab_db["trained"].id] + [r.id for r in lab_db["fakes"]]
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.session_state["compare_ids"] = ids
    at.switch_page("pages/compare.py").run()
    assert at.multiselect(key="compare_pick").value == ids
    assert "lr" in at.table[1].value.index, "the config diff shows the one setting that differs"
    assert list(at.table[0].value["id"].astype(int)) == ids, "the summary: one row per run, in the order picked"
    for view in ("Confusion", "Per class", "Mistakes", "Gradients", "Ensemble", "Diagnosis"):
        at.segmented_control(key="compare_view").set_value(view).run()
        assert not at.exception and not at.error, (view, [e.value for e in at.exception], [e.value for e in at.error])
        if view == "Ensemble":
            assert at.metric and "%" in at.metric[0].value
    assert at.get("download_button")


def test_lessons_page_starts_a_lesson_and_refuses_a_bad_sweep_space(app_env, tmp_path):
    from fercore.store import RunStore
    app_env(tmp_path / "runs.db")
    at = open_page("pages/lessons.py")
    start = [b for b in at.button if b.label == "Start this lesson"]
    assert len(start) >= 12, "every lesson has a start button"
    start[0].click().run()
    assert not at.exception and at.success
    assert RunStore(str(tmp_path / "runs.db")).counts()[RunStatus.QUEUED] >= 2
    at.text_area(key="sweep_space").set_value("{not json").run()
    at.button[[b.label for b in at.button].index("Queue the sweep")].click().run()
    assert not at.exception and at.error and "JSON" in at.error[0].value
    at.text_area(key="sweep_space").set_value('{"conv_dropout": [0.0, 0.5]}').run()
    at.selectbox(key="sweep_method").set_value("grid").run()
    at.text_input(key="sweep_name").set_value("drop").run()
    at.button[[b.label for b in at.button].index("Queue the sweep")].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Sweep drop: 2 run(s) queued" in m.value for m in at.success)
    table = next(d.value for d in at.dataframe if "trial" in d.value.columns)
    assert list(table["run"]) == ["drop-t1", "drop-t2"] and set(table["status"]) == {"queued"}


def test_compare_falls_back_to_val_for_runs_without_a_test_split(app_env, tmp_path):
    """The shared FER2013 folder has no test split, so the starter has a val evaluation only: Compare must
    show its confusion matrix and per-class metrics on val, and say so, rather than nothing."""
    from fercore.jobs.runfile import STARTER_FILE, ensure_starter, import_run
    from fercore.store import RunStore
    store = RunStore(str(tmp_path / "runs.db"))
    ids = [ensure_starter(store).id, import_run(store, STARTER_FILE, name="starter-copy").id]
    app_env(tmp_path / "runs.db")
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.session_state["compare_ids"] = ids
    at.switch_page("pages/compare.py").run()
    assert at.radio(key="compare_split").value == "val", "no run has a test evaluation: val is chosen"
    assert not at.exception and not at.info, [i.value for i in at.info]
    assert len(at.get("echarts_chart")) >= 4, "two learning-curve charts and two confusion matrices"
    at.segmented_control(key="compare_view").set_value("Per class").run()
    assert not at.exception and not at.info and at.dataframe
    at.segmented_control(key="compare_view").set_value("Ensemble").run()
    assert not at.exception and not at.error
    assert at.metric and at.metric[0].label.startswith("Ensemble val accuracy"), \
        "the run file carried the val probabilities, so imported runs form an ensemble"
    assert all(str(tmp_path) in store.evaluation(i, "val", full=True).probs_path for i in ids)
