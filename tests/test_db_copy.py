"""`db copy`: a class's runs.db moves to the department's PostgreSQL server and shows the same runs there, with
files that no longer depend on the old folder; a second copy into a database with runs is refused or merged."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fercore.cli import main
from fercore.jobs.worker import run_worker
from fercore.store import RunStore
from fercore.store.entities import RunStatus

PATHS = ("checkpoint", "log_path")   # where the files are: the one thing a copy changes


def cli(capsys, *argv):
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def fail(capsys, *argv) -> str:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 2, out
    return json.loads(out)["error"]


def without_paths(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in PATHS}


@pytest.fixture
def lab(tmp_path, tiny, capsys) -> str:
    """A class's SQLite database: the starter, a trained tiny run, a failed one and a queued one."""
    db = str(tmp_path / "class" / "runs.db")
    flags = ["--data", tiny.data, "--conv-blocks", "2", "--filters", "8,16", "--convs-per-block", "1",
             "--fc-units", "16", "--batch-size", "32", "--epochs", "2", "--tta", "none", "--db", db]
    assert cli(capsys, "train", *flags, "--name", "tiny", "--device", "cpu")["status"] == "finished"
    from fercore.store import RunStatus, RunStore
    store = RunStore(db)
    broken = store.create_run(tiny.replace(name="broken"), status=RunStatus.RUNNING)
    store.set_status(broken.id, RunStatus.FAILED, "The dataset went missing; the finished epochs are kept.")
    cli(capsys, "train", *flags, "--name", "waiting", "--queue", "--no-worker")
    return db


@pytest.mark.slow   # PostgreSQL
def test_copy_from_sqlite_to_postgresql_shows_the_same_runs(lab, pg_server, tmp_path, capsys, monkeypatch):
    pg = pg_server.create_database()
    shared = tmp_path / "shared-mount"
    monkeypatch.setenv("FER_ARTIFACTS", str(shared))   # the department's artifact root, for the commands after the copy
    res = cli(capsys, "db", "copy", lab, pg, "--artifacts", str(shared))
    assert res["runs"] == 4 and res["datasets"] == 1 and res["epochs"] > 0
    assert res["run_ids"] == {str(i): i for i in range(1, 5)}   # ids kept: `runs show 2` is the same run

    shutil.rmtree(tmp_path / "class" / "runs_artifacts")   # the old folder is gone: the copy stands alone
    before = {r["id"]: r for r in cli(capsys, "runs", "list", "--db", lab)}
    after = {r["id"]: r for r in cli(capsys, "runs", "list", "--db", pg)}
    assert {i: without_paths(r) for i, r in after.items()} == {i: without_paths(r) for i, r in before.items()}
    for rid in before:
        a, b = (cli(capsys, "runs", "show", str(rid), "--db", db) for db in (lab, pg))
        assert without_paths(b) == without_paths(a)
        for k in PATHS:
            assert (a[k] is None) == (b[k] is None)
            if b[k]:
                assert b[k].startswith(str(shared)) and (shared / "runs" / str(rid)).is_dir()
    assert cli(capsys, "data", "list", "--db", pg) == [{**d, "path": str(shared / "datasets" / Path(d["path"]).name)}
                                                       for d in cli(capsys, "data", "list", "--db", lab)]

    # the copied files work: the trained run predicts from its copied checkpoint, the queued run trains on the
    # copied dataset, and new runs get new ids
    tiny = cli(capsys, "runs", "show", "tiny", "--db", pg)
    ev = cli(capsys, "evaluate", "tiny", "--data", tiny["dataset"], "--split", "test", "--db", pg)
    assert ev["accuracy"] == pytest.approx(tiny["test"]["accuracy"])
    store = RunStore(pg)
    assert run_worker(store, once=True, device="cpu", poll_s=0.1) == 1
    assert store.get_run("waiting").status == RunStatus.FINISHED
    assert cli(capsys, "train", "--name", "next", "--queue", "--no-worker", "--db", pg)["id"] == 5


@pytest.mark.slow   # PostgreSQL
def test_a_destination_with_runs_is_refused_unless_merged(lab, pg_server, tmp_path, capsys, monkeypatch):
    pg = pg_server.create_database()
    dst_files = tmp_path / "dst"
    monkeypatch.setenv("FER_ARTIFACTS", str(dst_files))
    cli(capsys, "db", "copy", lab, pg, "--artifacts", str(dst_files))
    error = fail(capsys, "db", "copy", lab, pg, "--artifacts", str(dst_files))
    assert "already holds 4 run(s)" in error and "--merge" in error
    assert len(cli(capsys, "runs", "list", "--db", pg)) == 4   # nothing changed

    res = cli(capsys, "db", "copy", lab, pg, "--artifacts", str(dst_files), "--merge")
    assert res["datasets"] == 0 and res["datasets_shared"] == 1
    assert [r["name"] for r in res["skipped_runs"]] == ["starter"]   # the destination has its own
    assert res["run_ids"] == {"2": 5, "3": 6, "4": 7}
    runs = {r["id"]: r for r in cli(capsys, "runs", "list", "--db", pg)}
    assert sorted(runs) == [1, 2, 3, 4, 5, 6, 7]
    assert without_paths(runs[5]) | {"id": 2} == without_paths(runs[2]) | {"id": 2}
    copied = cli(capsys, "runs", "show", "5", "--db", pg)
    assert copied["checkpoint"] == str(dst_files / "runs" / "5" / "checkpoint.pt")
    assert copied["epochs"] == cli(capsys, "runs", "show", "2", "--db", pg)["epochs"]


def test_copy_refuses_a_missing_source_and_a_source_still_training(tmp_path, tiny, capsys):
    assert "no database at" in fail(capsys, "db", "copy", str(tmp_path / "typo.db"), str(tmp_path / "new.db"))
    assert not (tmp_path / "typo.db").exists()
    src = RunStore(str(tmp_path / "src.db"))
    src.create_run(tiny, status=RunStatus.RUNNING)
    assert "training in the source" in fail(capsys, "db", "copy", str(tmp_path / "src.db"), str(tmp_path / "new.db"))
