"""Issue 22, the audit's other findings, each checked where it is enforced: the database password, paths from
stored data and run files, names as plain text, imports two at a time, weights for the instructor, and the
per-run time budget."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from fercore.auth import Forbidden, Limits, Role, User
from fercore.config import RunConfig
from fercore.errors import PathRefused, RunFileError, UserError
from fercore.store import RunStore, redact_url
from fercore.store.entities import RunStatus

STUDENT = User("student:ana", "Ana", Role.STUDENT)
TEACH = User("instructor", "Instructor", Role.INSTRUCTOR)
URL = "postgresql://fer:s3cret-pw@127.0.0.1:1/fer"


# --- the database URL ------------------------------------------------------------------------------------------
def test_the_database_url_is_never_shown_with_its_password(monkeypatch):
    assert "s3cret-pw" not in redact_url(URL) and "127.0.0.1" in redact_url(URL)
    assert redact_url("/home/t/runs.db") == "/home/t/runs.db"
    from fercore.ui import state
    monkeypatch.setenv("FER_DB_URL", URL)
    # a malformed URL's error quotes the URL whole; the outage message must still hide the password
    sentence = state.database_problem(ValueError(f"Could not parse SQLAlchemy URL from string '{URL}'"))
    assert "s3cret-pw" not in sentence and "could not be opened" in sentence


def test_the_app_s_outage_message_hides_the_password(monkeypatch):
    from streamlit.testing.v1 import AppTest
    from test_app import APP
    monkeypatch.setenv("FER_DB_URL", URL)   # nothing listens on port 1: the outage
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")
    at = AppTest.from_file(APP, default_timeout=90).run()
    shown = " ".join(e.value for e in at.error)
    assert "could not be opened" in shown and "s3cret-pw" not in shown


# --- paths from stored data and run files ------------------------------------------------------------------------
def test_a_path_from_stored_data_goes_through_the_allowed_folders_check(tmp_path, monkeypatch):
    from fercore.ui import state
    monkeypatch.setenv("FER_DB_URL", str(tmp_path / "runs.db"))
    secret = Path("/etc/passwd")
    with pytest.raises(PathRefused, match="outside the folders"):
        state.get_dataset(str(secret))   # what Compare's mistakes view asks for a run whose dataset is a path


def test_the_working_directory_is_not_an_allowed_folder_in_a_class(monkeypatch, tmp_path):
    from fercore.auth import identity
    from fercore.ui import state
    monkeypatch.delenv("FER_DATA_DIRS", raising=False)
    assert Path.cwd().resolve() in state.allowed_roots()   # personal mode: as before
    monkeypatch.setattr(state, "class_settings", lambda: identity.settings_from({"fer_class": {"class_code": "x"}}))
    assert Path.cwd().resolve() not in state.allowed_roots()
    monkeypatch.setenv("FER_DATA_DIRS", str(Path.cwd()))
    assert Path.cwd().resolve() in state.allowed_roots()   # listed on purpose


def test_a_run_file_may_name_a_dataset_never_a_path(tmp_path, tiny):
    from fercore.jobs.runfile import import_run
    from fercore.models import build_model
    from fercore.models.checkpoint import save_checkpoint
    store = RunStore(str(tmp_path / "runs.db"))
    model = build_model(tiny, 7)
    for spec in ("/etc/passwd", "../../secrets.toml", "~/.ssh/id_rsa"):
        path = tmp_path / "crafted.fer.pt"
        save_checkpoint(path, model, tiny.replace(data=spec), list("abcdefg"), 0.5, 0.2, {"dataset": spec})
        with pytest.raises(RunFileError, match="may only name a dataset"):
            import_run(store, path, by=STUDENT)
    assert store.list_runs() == []


# --- names ---------------------------------------------------------------------------------------------------------
def test_run_and_dataset_names_are_validated_by_the_store(tmp_path, tiny):
    from fercore.data.synthetic import make_synthetic
    store = RunStore(str(tmp_path / "runs.db"))
    with pytest.raises(UserError, match="may only use letters"):
        store.create_run(tiny.replace(name="[win](http://evil.example)"), by=STUDENT)
    with pytest.raises(UserError, match="at most 100"):
        store.add_dataset(make_synthetic(70), "x" * 101, by=STUDENT)


def test_user_text_is_shown_as_plain_text_never_markdown():
    from fercore.fmt import plain
    for hostile in ("[click](http://evil.example)", "![t](http://t.example/p.png)", ":red[alarm]", "$x^2$",
                    "<img src=x>", "**bold**", "www.evil.example"):
        shown = plain(hostile)
        assert re.search(r"(?<!\\)[\[\]()<>:$*]", shown) is None, shown   # each one escaped
        assert "www.e" not in shown
    assert plain("training-now_2") == "training-now\\_2"


def test_the_app_shows_a_zip_folder_name_as_plain_text(tmp_path, monkeypatch):
    """A file named like a Markdown image in a zip: the import's note names it, escaped."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image
    from streamlit.testing.v1 import AppTest
    from test_app import APP
    monkeypatch.setenv("FER_DB_URL", str(tmp_path / "runs.db"))
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")
    data = tmp_path / "faces.zip"
    with zipfile.ZipFile(data, "w") as z:
        for split in ("train", "test"):
            for cls in ("happy", "sad"):
                for i in range(3):
                    buf = io.BytesIO()
                    Image.fromarray(np.full((48, 48), 40 * i + 10, np.uint8)).save(buf, "PNG")
                    z.writestr(f"{split}/{cls}/{i}.png", buf.getvalue())
        z.writestr("train/happy/![x](https:evil.example).png", b"not an image")
    monkeypatch.setenv("FER_DATA_DIRS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page("pages/data.py").run()
    at.text_input(key="data_path").set_value(str(data)).run()
    next(b for b in at.button if b.label == "Import from the path").click().run()
    notes = [m.value for m in at.info if "unreadable" in m.value]
    assert notes and "![x](" not in notes[0] and "\\!\\[x\\]" in notes[0], notes


# --- imports two at a time -------------------------------------------------------------------------------------
def test_imports_run_two_at_a_time_and_the_third_waits_with_a_message():
    from fercore.data import lookup
    release = threading.Event()
    holding = []

    def hold():
        with lookup.import_slot():
            holding.append(1)
            release.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(lookup.IMPORT_SLOTS)]
    for t in threads:
        t.start()
    while len(holding) < lookup.IMPORT_SLOTS:
        time.sleep(0.01)
    told, ran = [], []

    def third():
        with lookup.import_slot(on_wait=lambda: told.append("wait")):
            ran.append(1)

    t3 = threading.Thread(target=third)
    t3.start()
    t3.join(0.3)
    assert told == ["wait"] and not ran, "the third import waits, and is told so"
    release.set()
    t3.join(5)
    assert ran == [1]
    for t in threads:
        t.join()


# --- weights ---------------------------------------------------------------------------------------------------
def test_weights_import_is_for_the_instructor_only(tmp_path):
    from fercore.models.weights import import_upload, import_weights
    (tmp_path / "resnet18-f37072fd.pth").write_bytes(b"not really")
    with pytest.raises(Forbidden, match="Only the instructor may import pretrained weights"):
        import_weights(tmp_path, by=STUDENT)
    with pytest.raises(Forbidden):
        import_upload("resnet18-f37072fd.pth", b"x", by=STUDENT)


# --- the per-run time budget ----------------------------------------------------------------------------------------
def test_a_student_run_that_reaches_its_time_budget_stops_at_its_best_checkpoint(tmp_path, tiny):
    from fercore.jobs.execute import execute_run
    store = RunStore(str(tmp_path / "runs.db"))
    store.sign_in(STUDENT)
    store.set_limits(Limits(run_minutes=0.0001), by=TEACH)   # under a second: the first epoch passes it
    config: RunConfig = tiny.replace(epochs=4)
    run = store.create_run(config, status=RunStatus.RUNNING, by=STUDENT)
    done = execute_run(store, run.id, device="cpu")
    assert done.status == RunStatus.FINISHED and done.budget_stopped
    assert len(store.epochs(run.id)) == 1 and Path(done.checkpoint).is_file() and done.val is not None
    teacher_run = store.create_run(tiny.replace(epochs=2), status=RunStatus.RUNNING, by=TEACH)
    assert not execute_run(store, teacher_run.id, device="cpu").budget_stopped   # no budget for the instructor


# --- the Instructor page ---------------------------------------------------------------------------------------
def test_the_instructor_page_restores_from_the_trash_and_refuses_students(tmp_path, monkeypatch, tiny):
    from streamlit.testing.v1 import AppTest
    from test_app import APP
    db = tmp_path / "runs.db"
    monkeypatch.setenv("FER_DB_URL", str(db))
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")
    store = RunStore(str(db))
    run = store.create_run(tiny.replace(name="gone"), status=RunStatus.FINISHED)
    store.delete_run(run.id)
    at = AppTest.from_file(APP, default_timeout=90).run()   # personal mode: the one user is the instructor
    at.switch_page("pages/instructor.py").run()
    assert not at.exception and not at.error
    next(b for b in at.button if b.label == "Restore the run").click().run()
    assert store.get_run(run.id).name == "gone" and any("Restored run" in s.value for s in at.success)
    student = AppTest.from_file(APP, default_timeout=90)
    student.secrets["fer_class"] = {"class_code": "c1", "instructor_password": "pw"}
    student.run()
    student.text_input(key="signin_code").set_value("c1")
    student.text_input(key="signin_name").set_value("Ana")
    next(b for b in student.button if b.label == "Sign in").click().run()
    assert any("Ana" in m.value for m in student.sidebar.markdown)
    student.switch_page("pages/instructor.py").run()   # a typed URL: the page refuses, and shows nothing
    assert "Only the instructor may see the instructor page" in student.error[0].value
    assert not student.get("dataframe")
    with pytest.raises(Forbidden):   # and what the page does, fercore refuses a student anyway
        store.set_limits(Limits(), by=STUDENT)
