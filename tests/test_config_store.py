"""The run config and the run store: what a user (or a script) would check. The store's tests run on SQLite and
on PostgreSQL (conftest's any_db)."""
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from fercore.config import ConfigError, RunConfig
from fercore.presets import PRESETS, preset_config
from fercore.store import NotFound, RunStore
from fercore.store.entities import RunStatus
from fercore.store.runstore import now


@pytest.fixture
def db(any_db):
    return any_db


def test_config_round_trips_through_json_and_validates():
    c = RunConfig(classes=("happy", "neutral", "sad"), lr=0.01, filters=(32, 64))
    assert RunConfig.from_dict(c.to_dict()) == c
    assert c.diff(c.replace(lr=0.001)) == {"lr": (0.01, 0.001)}
    with pytest.raises(ConfigError, match="arch must be one of"):
        RunConfig(arch="alexnet")
    with pytest.raises(ConfigError, match="lr must be at least"):
        RunConfig(lr=-1)
    with pytest.raises(ConfigError, match="custom CNN has no pretrained"):
        RunConfig(arch="custom", transfer="frozen")
    with pytest.raises(ConfigError, match="Unknown config setting"):
        RunConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ConfigError, match="not a valid int"):
        RunConfig.from_dict({"epochs": "ten"})


def test_every_preset_is_a_valid_config():
    for name in PRESETS:
        c = preset_config(name)
        assert c.preset == name
    assert preset_config("report-3class-hns").classes == ("happy", "neutral", "sad")
    with pytest.raises(ConfigError, match="no preset named"):
        preset_config("nope")


def test_store_records_runs_epochs_and_summary(db):
    store = RunStore(db)
    run = store.create_run(RunConfig(name="a"), status=RunStatus.RUNNING)
    for e, (vl, va) in enumerate([(1.2, 0.4), (1.0, 0.5), (1.1, 0.45)], start=1):
        store.add_epoch(run.id, {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.3 + e / 10, "val_loss": vl,
                                    "val_acc": va, "grad_norms": {"fc": 0.1}, "dead_units": {"relu": 0.0}})
    got = store.get_run("a", epochs=True)
    assert [e["epoch"] for e in got.epochs] == [1, 2, 3]
    assert got.epochs[0]["dead_units"] == {"relu": 0.0}
    assert got.summary["best_val_acc"] == 0.5 and got.summary["last_val_acc"] == 0.45
    assert got.summary["min_val_loss"] == 1.0
    with pytest.raises(NotFound):
        store.get_run("missing")
    assert store.integrity_ok()


def test_a_diverged_epoch_keeps_its_row_and_an_infinite_gradient_norm(db):
    """PostgreSQL's JSON has no NaN or Infinity; the diagnosis of exploding gradients needs the infinity."""
    store = RunStore(db)
    run = store.create_run(RunConfig(name="diverged"), status=RunStatus.RUNNING)
    store.add_epoch(run.id, {"epoch": 1, "train_loss": float("nan"), "val_acc": 0.2,
                                "grad_norms": {"fc": float("inf"), "out": -float("inf"), "conv": 2.0}})
    [e] = store.epochs(run.id)
    assert e["train_loss"] is None and e["val_acc"] == 0.2
    assert e["grad_norms"] == {"fc": float("inf"), "out": -float("inf"), "conv": 2.0}


def test_claim_is_atomic_and_in_order(db):
    store = RunStore(db)
    ids = [store.create_run(RunConfig(name=f"r{i}")).id for i in range(3)]
    w = store.register_worker(1, "cpu")
    claimed = [store.claim_next_run(w).id for _ in range(3)]
    assert claimed == ids
    assert store.claim_next_run(w) is None


def test_cancel_queued_run_and_stale_heartbeat_reaped(db):
    store = RunStore(db)
    q = store.create_run(RunConfig(name="q"))
    assert store.request_cancel(q.id).status == RunStatus.CANCELLED
    r = store.create_run(RunConfig(name="r"), status=RunStatus.RUNNING)
    store.add_epoch(r.id, {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5})
    store.update_run(r.id, lease_expires_at=now() + timedelta(seconds=60))
    assert store.reap_expired_leases("worker stopped") == []
    store.update_run(r.id, lease_expires_at=now() - timedelta(seconds=1))
    assert store.reap_expired_leases("worker stopped") == [r.id]
    got = store.get_run(r.id, epochs=True)
    assert got.status == RunStatus.FAILED and "worker stopped" in got.error and len(got.epochs) == 1


def test_old_database_is_upgraded_in_place(db):
    """A database made by an older version (missing columns, tables and the version row) opens and gains them."""
    url = db if "://" in db else f"sqlite:///{db}"
    engine = create_engine(url)
    key = "SERIAL PRIMARY KEY" if engine.dialect.name == "postgresql" else "INTEGER PRIMARY KEY"
    with engine.begin() as con:
        con.execute(text(f"CREATE TABLE runs (id {key}, name VARCHAR(200), status VARCHAR(16), config JSON, "
                         "created_at TIMESTAMP)"))
        con.execute(text("INSERT INTO runs (name, status, config, created_at) VALUES ('old', 'finished', '{}', "
                         "'2025-01-01 00:00:00')"))
    engine.dispose()
    store = RunStore(db)
    assert store.schema_version() >= 1
    run = store.get_run("old")
    # an old run's config takes today's defaults, except where the lab did otherwise then (its split kept)
    assert run.status == RunStatus.FINISHED and run.summary == {} and run.config == RunConfig(split_copies="ignore")
    store.update_run(run.id, progress={"phase": "done"})
    assert store.get_run("old").progress == {"phase": "done"}
    new = store.create_run(RunConfig(name="new"), status=RunStatus.RUNNING)   # ids go on after the old rows
    store.add_epoch(new.id, {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5, "grad_norms": {"fc": 0.1}})
    assert new.id == run.id + 1 and store.get_run("new", epochs=True).epochs[0]["grad_norms"] == {"fc": 0.1}
    assert store.integrity_ok()


def test_entities_are_frozen_and_their_json_keeps_the_cli_shapes(db):
    """What leaves the store is typed and read-only; to_json() gives PRODUCT.md's shapes."""
    import dataclasses
    import json

    from fercore.data.synthetic import make_synthetic
    store = RunStore(db)
    run = store.create_run(RunConfig(name="shape", classes=("happy", "sad")), status=RunStatus.RUNNING)
    store.add_epoch(run.id, {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4})
    for split, acc in (("val", 0.4), ("test", 0.35)):
        store.add_evaluation(run.id, {"accuracy": acc, "n": 2, "classes": ["happy", "sad"],
                                      "confusion": [[1, 0], [1, 0]],
                                      "per_class": {"happy": {"recall": 1.0, "support": 1},
                                                    "sad": {"recall": 0.0, "support": 1}},
                                      "tta": "flip", "predictions": [0, 0], "targets": [0, 1]}, split=split)
    store.set_status(run.id, RunStatus.FINISHED)
    got = store.get_run(run.id, epochs=True)
    assert isinstance(got.config, RunConfig) and got.status is RunStatus.FINISHED
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.name = "renamed"
    assert got.accuracy == 0.35 and got.accuracy_split == "test" and got.scored.split == "test"   # test, val beside
    assert got.val_accuracy == 0.4 and got.test_accuracy == 0.35
    shown = json.loads(json.dumps(got.to_json(epochs=True)))
    assert {"id", "name", "status", "config", "classes", "epochs", "test"} <= set(shown)
    assert shown["status"] == "finished" and shown["config"]["classes"] == ["happy", "sad"]
    assert set(shown["epochs"][0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc"}
    assert set(shown["test"]) >= {"accuracy", "confusion", "per_class"} and "predictions" not in shown["test"]
    assert store.evaluation(run.id, "test", full=True).to_json(full=True)["predictions"] == [0, 0]
    listed = [r.to_json() for r in store.list_runs()]
    assert "epochs" not in listed[0] and listed[0]["id"] == run.id

    info = store.add_dataset(make_synthetic(14, 0), "tiny")
    ds_json = json.loads(json.dumps(info.to_json()))
    assert ds_json["name"] == "tiny" and set(ds_json["splits"]) == {"train", "val", "test"}
    assert store.dataset_info("tiny") == info and store.list_datasets()[0].name == "tiny"
