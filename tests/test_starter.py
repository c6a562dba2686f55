"""The shipped starter model: registered in any new database, loadable, and as good as its model card says."""
import pytest
from conftest import needs_shared

from fercore.jobs.runfile import STARTER_FILE, ensure_starter, read_run_file
from fercore.predict.predictor import evaluate_run, load_predictor
from fercore.store import RunStore
from fercore.store.entities import RunStatus


def test_starter_is_registered_once_in_a_new_database(db):
    assert STARTER_FILE.exists(), "models/starter.fer.pt must ship with the repository"
    assert STARTER_FILE.stat().st_size < 20e6
    store = RunStore(db)
    run = ensure_starter(store)
    assert run.name == "starter" and run.status == RunStatus.FINISHED
    assert ensure_starter(store) is None and len(store.list_runs()) == 1
    full = store.get_run("starter", epochs=True)
    assert full.classes == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert len(full.epochs) == full.config.epochs
    assert full.duration_s > 3600 and full.device.startswith("cpu"), "its training time, not the import's"
    assert full.accuracy == store.evaluation("starter", "val").accuracy > 0.66, \
        "the model card says 66.2 % on the deduplicated PublicTest (ten-crop TTA)"
    assert full.config.tta == "tencrop" and full.config.filters == (24, 64, 128, 320)
    content = read_run_file(STARTER_FILE)
    assert content["record"]["dataset_fingerprint"], "the model card's dataset is identified"
    assert load_predictor(store, "starter").probs(content_faces(4)).shape == (4, 7)


def content_faces(n):
    import numpy as np
    return (np.random.default_rng(0).random((n, 48, 48)) * 255).astype(np.uint8)


@pytest.mark.slow   # real FER2013 rows
def test_starter_on_real_fer2013_public_test_rows(db):
    """The shared sample's PublicTest rows are val images: the starter must match its recorded val accuracy."""
    csv = needs_shared("fer2013-sample.csv")
    store = RunStore(db)
    ensure_starter(store)
    ev = evaluate_run(store, "starter", str(csv), split="val")
    assert ev["n"] > 100
    recorded = store.evaluation("starter", "val").accuracy
    assert ev["accuracy"] == pytest.approx(recorded, abs=0.1)   # a class-balanced sample, so only roughly


def test_a_deleted_starter_stays_deleted(db, capsys):
    """Only a brand-new database registers the starter; deleting it is the owner's choice, kept by the next command."""
    import json

    from fercore.cli import main

    def names():
        assert main(["runs", "list", "--db", db, "--json"]) == 0
        return [r["name"] for r in json.loads(capsys.readouterr().out)]

    assert names() == ["starter"]
    assert main(["runs", "delete", "starter", "--db", db, "--json"]) == 0
    capsys.readouterr()
    assert names() == [] and names() == []
    assert ensure_starter(RunStore(db)) is None


def test_a_database_with_runs_but_no_flag_is_not_new(db, tiny):
    """A database made before the flag existed: its starter, if any, was registered (and maybe deleted) already."""
    store = RunStore(db)
    store.create_run(tiny.replace(name="mine"), status=RunStatus.FINISHED)
    assert ensure_starter(store) is None and [r.name for r in store.list_runs()] == ["mine"]


def test_the_instructor_password_is_never_committed():
    import subprocess

    from conftest import REPO
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    assert subprocess.run(["git", "check-ignore", "-q", ".streamlit/secrets.toml"], cwd=REPO).returncode == 0


def test_the_starter_is_a_flag_so_a_run_file_named_starter_changes_no_ones_default(db, tmp_path):
    """Issue 22: importing a run file named `starter` made every new session preselect it (Classify picked the newest
    run *named* starter). The starter is a flag on a run that only the instructor sets."""
    from fercore.auth import Forbidden, Role, User
    from fercore.jobs.runfile import export_run, import_run
    store = RunStore(db)
    shipped = ensure_starter(store)
    assert [r.id for r in store.list_runs() if r.starter] == [shipped.id]
    student = User("s-ada", "Ada", Role.STUDENT)
    store.sign_in(student, "class code")
    copy = import_run(store, export_run(store, shipped.id, tmp_path / "starter.fer.pt"), name="starter", by=student)
    assert copy.name == "starter" and not copy.starter
    assert [r.id for r in store.list_runs() if r.starter] == [shipped.id], "the shipped run stays the default"
    with pytest.raises(Forbidden):
        store.set_starter(copy.id, by=student)   # a forged request: only the instructor picks the default
