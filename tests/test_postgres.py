"""The lab on PostgreSQL, where a department keeps its runs: every command against a real server, the schema
created and upgraded by several processes at once, and claims that never wait for each other.
(The store's and the queue's own tests run on PostgreSQL too: test_config_store, test_jobs.)"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, inspect, text

from fercore.cli import main
from fercore.config import RunConfig
from fercore.store import RunStore
from fercore.store.entities import RunStatus
from fercore.store.schema import SCHEMA_VERSION, Base

pytestmark = pytest.mark.slow   # browser / PostgreSQL / load: `pytest -m 'not slow'` skips it


@pytest.fixture
def db(pg_server, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("FER_ARTIFACTS", str(tmp_path / "artifacts"))
    return pg_server.create_database()


def cli(capsys, *argv) -> dict | list:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_every_command_works_with_a_plain_postgresql_url(db, tiny, tmp_path, monkeypatch, capsys):
    """FER_DB_URL=postgresql://... (no driver named: psycopg 3 is the one installed) for the whole workflow."""
    monkeypatch.setenv("FER_DB_URL", db.replace("postgresql+psycopg://", "postgresql://"))
    assert cli(capsys, "data", "import", "synthetic:420", "--name", "faces")["splits"]["train"] > 0
    assert [d["name"] for d in cli(capsys, "data", "list")] == ["faces"]
    flags = ["--data", "faces", "--conv-blocks", "2", "--filters", "8,16", "--convs-per-block", "1", "--fc-units", "16",
             "--batch-size", "32", "--epochs", "2", "--tta", "none"]
    run = cli(capsys, "train", *flags, "--name", "pg-run", "--device", "cpu")
    assert run["status"] == "finished" and run["test"]["n"] > 0, run
    shown = cli(capsys, "runs", "show", "pg-run")
    assert [e["epoch"] for e in shown["epochs"]] == [1, 2] and shown["test"]["accuracy"] == run["test"]["accuracy"]
    assert {r["name"] for r in cli(capsys, "runs", "list")} == {"pg-run", "starter"}
    assert "findings" in cli(capsys, "runs", "diagnose", "pg-run")
    assert cli(capsys, "evaluate", "pg-run", "--data", "faces", "--split", "test")["n"] == run["test"]["n"]
    face = tmp_path / "face.png"
    Image.fromarray((np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8)).save(face)
    [pred] = cli(capsys, "predict", "pg-run", str(face))
    assert pred["faces"] and sum(pred["faces"][0]["probs"].values()) == pytest.approx(1, abs=1e-3)
    cli(capsys, "runs", "export", "pg-run", str(tmp_path / "pg-run.fer.pt"))
    imported = cli(capsys, "runs", "import", str(tmp_path / "pg-run.fer.pt"), "--name", "shared")
    assert cli(capsys, "runs", "show", "shared")["epochs"] == shown["epochs"]
    queued = cli(capsys, "train", *flags, "--queue", "--no-worker")
    assert queued["status"] == "queued" and queued["id"] > imported["id"]
    assert cli(capsys, "runs", "cancel", str(queued["id"]))["status"] == "cancelled"
    assert cli(capsys, "runs", "delete", str(queued["id"]))["deleted"]
    sweep = cli(capsys, "sweep", "start", *flags, "--method", "grid", "--trials", "2", "--no-worker",
                "--space", '{"lr": [0.001, 0.003]}')
    assert len(sweep["runs"]) == 2
    assert len(cli(capsys, "lesson", "start", "augmentation", "--epochs", "1", "--no-worker")) >= 2
    assert main(["runs", "show", "99999999999", "--json"]) == 2   # beyond PostgreSQL's integer: "no such run"
    assert "no run" in json.loads(capsys.readouterr().out)["error"]


def test_a_server_that_is_down_is_one_sentence(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FER_ARTIFACTS", str(tmp_path))
    assert main(["runs", "list", "--db", "postgresql://lab:secret@127.0.0.1:1/fer", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error.startswith("Could not reach the database") and "secret" not in error


def test_a_claim_skips_a_run_another_worker_holds_instead_of_waiting(db):
    """FOR UPDATE SKIP LOCKED: while one worker's claim holds the oldest queued run, another worker's claim takes
    the next one at once (a plain conditional update would wait for the first worker's transaction)."""
    store = RunStore(db)
    first, second = (store.create_run(RunConfig(name=n)).id for n in ("first", "second"))
    worker = store.register_worker(1, "cpu", "gpu-a")
    other = create_engine(store.url)
    got = {}
    with other.begin() as con:
        con.execute(text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": first})   # a claim in progress
        t = threading.Thread(target=lambda: got.update(run=store.claim_next_run(worker)), daemon=True)
        t0 = time.monotonic()
        t.start()
        t.join(timeout=10)
        waited = time.monotonic() - t0
        assert not t.is_alive(), "the claim waited for the other worker's lock"
    t.join()
    other.dispose()
    assert got["run"].id == second and waited < 5
    assert store.claim_next_run(worker).id == first
    assert store.claim_next_run(worker) is None


def open_at_once(url: str, n: int = 6) -> list[str]:
    """n threads (each with its own connections, as separate processes would have) open the database together."""
    start, errors = threading.Barrier(n), []

    def open_store():
        start.wait()
        try:
            RunStore(url).engine.dispose()
        except Exception as e:   # noqa: BLE001 - the test reports whatever went wrong
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=open_store) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def columns_of(url: str) -> dict[str, set[str]]:
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}
    finally:
        engine.dispose()


def test_a_new_database_opened_by_several_processes_at_once_is_created_once(pg_server, db):
    for attempt in range(3):   # the race is timing-dependent: try it a few times
        url = pg_server.create_database()
        assert open_at_once(url) == []
        assert columns_of(url) == {t.name: {c.name for c in t.columns} for t in Base.metadata.sorted_tables}
        assert RunStore(url).schema_version() == SCHEMA_VERSION


def test_an_older_database_is_upgraded_in_place_even_by_several_processes_at_once(db):
    engine = create_engine(db)
    with engine.begin() as con:   # before epochs had grad_norms/extra, runs summaries, and there was a version
        con.execute(text("CREATE TABLE runs (id SERIAL PRIMARY KEY, name VARCHAR(200), status VARCHAR(16), "
                         "config JSON, created_at TIMESTAMP)"))
        con.execute(text("CREATE TABLE epochs (id SERIAL PRIMARY KEY, run_id INTEGER REFERENCES runs(id), "
                         "epoch INTEGER, train_loss FLOAT, train_acc FLOAT, val_loss FLOAT, val_acc FLOAT)"))
        con.execute(text("INSERT INTO runs (name, status, config, created_at) VALUES "
                         "('old', 'finished', '{}', '2025-01-01 00:00:00')"))
        con.execute(text("INSERT INTO epochs (run_id, epoch, train_loss, train_acc, val_loss, val_acc) VALUES "
                         "(1, 1, 1.5, 0.4, 1.6, 0.35), (1, 2, 1.2, 0.5, 1.4, 0.45)"))
    engine.dispose()
    assert open_at_once(db) == []
    columns = columns_of(db)
    assert all(columns[t.name] >= {c.name for c in t.columns} for t in Base.metadata.sorted_tables)
    store = RunStore(db)
    assert store.schema_version() == SCHEMA_VERSION
    old = store.get_run("old", epochs=True)
    assert [(e["epoch"], e["val_acc"]) for e in old.epochs] == [(1, 0.35), (2, 0.45)]   # no epoch lost
    rid = store.create_run(RunConfig(name="new"), status=RunStatus.RUNNING).id
    store.add_epoch(rid, {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5, "grad_norms": {"fc": 0.1}})
    assert store.get_run(rid, epochs=True).epochs[0]["grad_norms"] == {"fc": 0.1}
