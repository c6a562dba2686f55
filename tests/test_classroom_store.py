"""Issue 22, enforced in fercore: owners, forged requests refused, the trash, ids never reused, immutable
dataset versions, the audit log, limits and the fair-share claim order. Each test runs on SQLite and on a real
PostgreSQL (conftest's any_db)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fercore.auth import Forbidden, Limits, Role, User
from fercore.config import RunConfig
from fercore.data.synthetic import make_synthetic
from fercore.errors import NotFound
from fercore.jobs.policy import cancel_runs, resume_run
from fercore.store import RunStore
from fercore.store.entities import RunStatus

A = User("student:a", "Student A", Role.STUDENT)
B = User("student:b", "Student B", Role.STUDENT)
C = User("student:c", "Student C", Role.STUDENT)
TEACH = User("instructor", "Instructor", Role.INSTRUCTOR)
CFG = RunConfig(data="synthetic:70", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,),
                batch_size=32, epochs=2, tta="none")


@pytest.fixture
def store(any_db) -> RunStore:
    s = RunStore(any_db)
    for u in (A, B, C, TEACH):
        s.sign_in(u, "test")
    return s


def finished_run(store: RunStore, by: User, name: str):
    """A finished run with an epoch, an evaluation and a weights file, as a worker leaves it."""
    run = store.create_run(CFG.replace(name=name), status=RunStatus.RUNNING, by=by)
    store.add_epoch(run.id, {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4})
    ckpt = store.run_dir(run.id) / "checkpoint.pt"
    ckpt.write_bytes(b"weights")
    store.add_evaluation(run.id, {"accuracy": 0.4, "n": 10, "classes": ["a"], "confusion": [[1]],
                                  "per_class": {}}, split="val")
    store.update_run(run.id, checkpoint=str(ckpt))
    store.set_status(run.id, RunStatus.FINISHED)
    return store.get_run(run.id)


def test_runs_record_their_owner_and_a_forged_request_of_another_student_is_refused(store):
    run = store.create_run(CFG, by=A)
    assert run.owner == A.id and store.list_runs(owner=A.id)[0].id == run.id
    with pytest.raises(Forbidden, match="Student B may not cancel"):
        store.request_cancel(run.id, by=B)
    with pytest.raises(Forbidden, match="Student B may not cancel"):
        cancel_runs(store, [run.id], by=B)
    with pytest.raises(Forbidden, match="Student B may not delete"):
        store.delete_run(run.id, by=B)
    assert store.get_run(run.id).status == RunStatus.QUEUED   # nothing happened
    assert cancel_runs(store, [run.id], by=A)[0].status == RunStatus.CANCELLED
    done = finished_run(store, A, "a-done")
    (store.run_dir(done.id) / "resume.pt").write_bytes(b"state")
    store.set_status(done.id, RunStatus.FAILED, "stopped")
    with pytest.raises(Forbidden, match="Student B may not resume"):
        resume_run(store, done.id, by=B)
    assert resume_run(store, done.id, by=TEACH).status == RunStatus.QUEUED


def test_a_deleted_run_goes_to_the_trash_and_comes_back_with_its_epochs_and_weights(store):
    run = finished_run(store, A, "mine")
    with pytest.raises(Forbidden):
        store.delete_run(run.id, by=B)
    store.delete_run(run.id, by=A)
    assert run.id not in [r.id for r in store.list_runs()]
    with pytest.raises(NotFound, match="the instructor can restore it"):
        store.get_run(run.id)
    assert [r.id for r in store.trash()[0]] == [run.id]
    with pytest.raises(Forbidden, match="Only the instructor may restore"):
        store.restore_run(run.id, by=A)
    back = store.restore_run(run.id, by=TEACH)
    assert back.id == run.id and back.val.accuracy == 0.4
    assert len(store.epochs(run.id)) == 1 and Path(back.checkpoint).read_bytes() == b"weights"


def test_run_and_dataset_ids_are_never_reused_even_after_the_trash_is_emptied(store):
    ids = [store.create_run(CFG, by=A).id for _ in range(3)]
    store.delete_run(ids[-1], by=A)
    with pytest.raises(Forbidden, match="Only the instructor may empty the trash"):
        store.empty_trash(by=A)
    store.empty_trash(by=TEACH)
    assert not store.run_dir(ids[-1], create=False).exists()
    with pytest.raises(NotFound, match="trash emptied"):
        store.get_run(ids[-1])
    new = store.create_run(CFG, by=B)
    assert new.id > ids[-1]   # a saved link to run ids[-1] never opens B's run
    first = store.add_dataset(make_synthetic(70, seed=1), "one", by=A)
    store.delete_dataset("one", by=TEACH)
    store.empty_trash(by=TEACH)
    store.add_dataset(make_synthetic(70, seed=2), "two", by=A)
    with store._session() as s:
        from sqlalchemy import select

        from fercore.store.schema import DatasetRow
        assert s.scalar(select(DatasetRow.id).where(DatasetRow.name == "two")) > 1
    assert first.version == 1


def test_datasets_are_immutable_a_new_import_is_a_new_version_and_old_runs_keep_theirs(store):
    v1 = store.add_dataset(make_synthetic(70, seed=1), "fer", by=A)
    v2 = store.add_dataset(make_synthetic(70, seed=2), "fer", by=B)   # B "re-imports" A's dataset
    assert v2.version == 2 and v2.fingerprint != v1.fingerprint and v2.owner == B.id
    assert store.dataset_info("fer").fingerprint == v2.fingerprint
    assert store.dataset_info("fer@v1").fingerprint == v1.fingerprint   # the old one stays
    assert [d.name for d in store.list_datasets()] == ["fer"]
    assert {d.name for d in store.list_datasets(versions=True)} == {"fer", "fer@v1"}
    # a run that started on v1 resumes on v1
    assert store.load_dataset("fer", fingerprint=v1.fingerprint).fingerprint() == v1.fingerprint
    assert store.add_dataset(make_synthetic(70, seed=2), "fer", by=A).version == 2   # same images: no new version
    with pytest.raises(Forbidden, match="Only the instructor may delete a dataset"):
        store.delete_dataset("fer", by=A)
    store.delete_dataset("fer", by=TEACH)
    assert store.dataset_info("fer") is None
    assert [d.name for d in store.trash()[1]] == ["fer"]
    assert store.restore_dataset("fer", by=TEACH).version == 2


def test_the_audit_log_lists_who_did_what(store):
    run = store.create_run(CFG.replace(name="logged"), by=A)
    store.request_cancel(run.id, by=A)
    store.delete_run(run.id, by=A)
    store.restore_run(run.id, by=TEACH)
    store.add_dataset(make_synthetic(70, seed=3), "faces", by=B)
    store.set_limits(Limits(epochs=10), by=TEACH)
    with pytest.raises(Forbidden):
        store.set_limits(Limits(epochs=1000), by=B)
    log = [(e.user_name, e.action, e.object) for e in reversed(store.audit_log())]
    assert [x for x in log if x[1] != "sign in"] == [
        ("Student A", "queue", f"run {run.id} (logged)"), ("Student A", "cancel", f"run {run.id} (logged)"),
        ("Student A", "delete", f"run {run.id} (logged)"), ("Instructor", "restore", f"run {run.id} (logged)"),
        ("Student B", "import", "faces v1".join(["dataset ", ""])), ("Instructor", "change limits", "class limits")]
    assert ("Student A", "sign in", "Student A") in log
    assert store.limits().epochs == 10


def test_limits_are_enforced_when_queueing(store):
    store.set_limits(Limits(active_runs=2, epochs=5), by=TEACH)
    store.create_run(CFG, by=A)
    store.create_run(CFG, by=A)
    with pytest.raises(Forbidden, match="limit is 2"):
        store.create_run(CFG, by=A)
    with pytest.raises(Forbidden, match="Epochs 50"):
        store.create_run(CFG.replace(epochs=50), by=B)
    store.create_run(CFG.replace(epochs=50), by=TEACH)   # the instructor is not limited
    from fercore.teach.sweeps import start_sweep
    with pytest.raises(Forbidden, match="200 trials"):
        start_sweep(store, CFG, {"lr": [1e-3, 1e-2]}, trials=200, by=B)


def test_the_claim_order_interleaves_students_and_serves_the_instructor_first(store):
    for i in range(5):
        for u in (A, B, C):
            store.create_run(CFG.replace(name=f"{u.name[-1]}{i}"), by=u)
    store.create_run(CFG.replace(name="T"), by=TEACH)
    order = []
    while (run := store.claim_next_run(worker_id=1)) is not None:
        order.append(run.name)
    assert order[0] == "T"
    assert order[1:] == [f"{x}{i}" for i in range(5) for x in "ABC"]


def test_fair_share_counts_work_done_recently(store):
    for i in range(2):
        finished_run(store, A, f"a-done{i}")
    store.create_run(CFG.replace(name="a-next"), by=A)
    store.create_run(CFG.replace(name="b-first"), by=B)
    assert store.claim_next_run(worker_id=1).name == "b-first"   # A trained twice in the last hour


def test_db_copy_keeps_owners_people_and_the_audit_log(store, tmp_path):
    from fercore.store.copy import copy_store
    run = store.create_run(CFG.replace(name="owned"), by=A)
    dst = RunStore(str(tmp_path / "copy.db"))
    copy_store(store, dst)
    assert dst.get_run(run.id).owner == A.id
    assert {u["id"] for u in dst.list_users()} >= {A.id, B.id, TEACH.id}
    assert ("Student A", "queue") in {(e.user_name, e.action) for e in dst.audit_log()}
