"""Issue 23, part 3: a lesson states its finding only when every run learned something and the difference beats
the run-to-run noise; otherwise it says the runs are too short to tell and which settings would. The summary and the
diagnosis read the same predicate, so they never contradict each other. Built from real short runs on synthetic
faces (the fakes of test_lessons.py cover each lesson's wording)."""
from __future__ import annotations

import pytest

from fercore.jobs.execute import execute_run
from fercore.store import RunStore
from fercore.teach.diagnosis import diagnose, learned_something
from fercore.teach.lessons import get_lesson, lesson_status, start_lesson
from fercore.teach.summaries import finding


def run_lesson(tmp_path, name: str, data: str, epochs: int) -> dict:
    store = RunStore(str(tmp_path / "runs.db"))
    runs = start_lesson(store, name, data=data, epochs=epochs, classes=("happy", "sad"))
    for _ in runs:
        execute_run(store, store.claim_next_run(worker_id=1, device="cpu").id, device="cpu")
    status = lesson_status(store, runs[0].group_name)
    status["runs"] = [store.get_run(r.id, epochs=True) for r in status["runs"]]
    return status


def assert_summary_and_diagnosis_agree(status: dict) -> None:
    for run in status["runs"]:
        kinds = {f["kind"] for f in diagnose(run)}
        assert ("learned_nothing" in kinds) == (learned_something(run) is False), run.name
        if status["finding"].stated:
            assert "learned_nothing" not in kinds, "a stated finding over a run the diagnosis calls empty"


def test_one_epoch_runs_are_too_short_to_tell_and_say_what_would_tell(tmp_path, one_thread):
    status = run_lesson(tmp_path, "activation", "synthetic:700", epochs=1)
    found = status["finding"]
    assert status["done"] and not found.stated
    assert found.text.startswith("Too short to tell") and "single point" in found.text
    assert "To tell, run the lesson again with 15 epochs" in found.text and "on this machine's CPU" in found.text
    assert found.split == "test", "synthetic faces have a test split, and the rule reads it"
    assert "As expected" not in found.text
    assert_summary_and_diagnosis_agree(status)
    again = finding(get_lesson("activation"), status["runs"])   # the public rule, from the runs alone
    assert again.stated == found.stated and again.text.startswith("Too short to tell")


@pytest.mark.slow
def test_runs_that_learned_state_the_finding_against_their_noise(tmp_path, one_thread):
    status = run_lesson(tmp_path, "activation", "synthetic:2100", epochs=8)   # ~1.5 min on a busy 2-core CPU
    found = status["finding"]
    assert all(learned_something(r) for r in status["runs"])
    assert found.stated and found.noise is not None and "last 3 epochs" in found.noise_basis
    assert found.text.startswith("Test accuracy: activation relu") and "Too short" not in found.text
    assert_summary_and_diagnosis_agree(status)
