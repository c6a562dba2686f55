"""Lessons: each is a set of runs differing in one setting, with an explanation, an honest estimate and a
summary computed from what the runs showed."""
from __future__ import annotations

import pytest

from fercore.config import RunConfig
from fercore.errors import NotFound
from fercore.store import RunStore
from fercore.store.entities import RunStatus
from fercore.teach.lessons import LESSONS, get_lesson, lesson_configs, lesson_status, list_lessons, start_lesson

REQUIRED = {"learning_rate", "epochs", "dropout", "batchnorm", "activation", "augmentation", "batch_size",
            "transfer", "input_channels", "class_weights", "loss", "grad_clip", "lr_schedule"}


@pytest.fixture
def store(tmp_path):
    return RunStore(str(tmp_path / "runs.db"))


def test_the_twelve_classic_lessons_exist():
    assert len(LESSONS) >= 12 and REQUIRED <= set(LESSONS)


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_runs_differ_only_in_the_factor(name):
    lesson = LESSONS[name]
    configs = lesson_configs(name, data="synthetic", epochs=None, fraction=0.5, classes=("happy", "sad", "neutral"))
    assert len(configs) == len(lesson.values) >= 2
    allowed = set(lesson.fields) | {"name"}
    for a in configs:
        for b in configs:
            assert set(a.diff(b)) <= allowed, (name, a.diff(b))
    varied = set().union(*(a.diff(b) for a in configs for b in configs)) - {"name"}
    assert varied, f"{name}: its runs are all the same"
    for c, v in zip(configs, lesson.values):
        assert c.name == f"lesson-{name}-{lesson.label(v)}"
        assert c.data == "synthetic" and c.data_fraction == 0.5 and c.classes == ("happy", "sad", "neutral")
    paragraphs = lesson.explanation.split("\n\n")
    assert len(paragraphs) == 2 and all(len(p) > 80 for p in paragraphs)


def test_run_names_read_like_the_lesson():
    names = [c.name for c in lesson_configs("dropout")]
    assert names == ["lesson-dropout-0", "lesson-dropout-0.25", "lesson-dropout-0.5"]
    assert [c.name for c in lesson_configs("batchnorm")] == ["lesson-batchnorm-off", "lesson-batchnorm-on"]


def test_epochs_override_changes_every_lesson_but_the_epochs_lesson():
    assert {c.epochs for c in lesson_configs("dropout", epochs=3)} == {3}
    assert [c.epochs for c in lesson_configs("epochs", epochs=3)] == [8, 100]
    assert [c.lr for c in lesson_configs("learning_rate")] == [0.01, 0.001]
    assert all(c.optimizer == "adam" for c in lesson_configs("learning_rate"))


def test_list_lessons_json_with_estimates():
    lessons = list_lessons(data="synthetic")
    assert {l["name"] for l in lessons} >= REQUIRED
    for l in lessons:
        assert {"name", "title", "factor", "values", "explanation", "runs", "estimate"} <= set(l)
        assert all(RunConfig.from_dict(r) for r in l["runs"])          # each is a loadable config
        est = l["estimate"]
        assert est["images"] > 0 and est["seconds_gpu"] <= est["seconds_cpu"]
    by_name = {l["name"]: l for l in lessons}
    # 8 + 100 epochs over the 1,680 synthetic training faces
    assert by_name["epochs"]["estimate"]["images"] == 108 * 1680
    full = list_lessons(data="fer2013")
    fer = {l["name"]: l["estimate"] for l in full}
    assert fer["dropout"]["images"] == 3 * 30 * 28709 and "FER2013" in fer["dropout"]["basis"]
    half = {l["name"]: l["estimate"] for l in list_lessons(data="fer2013", fraction=0.5, epochs=2)}
    assert half["dropout"]["images"] == 3 * 2 * int(28709 * 0.5)
    assert half["dropout"]["seconds_cpu"] < fer["dropout"]["seconds_cpu"] / 10
    # a ResNet at 64 px costs more per image than the small CNN
    assert fer["transfer"]["seconds_cpu"] / fer["transfer"]["images"] > \
        fer["learning_rate"]["seconds_cpu"] / fer["learning_rate"]["images"]


def test_unknown_lesson_is_a_plain_error_listing_the_names(store):
    with pytest.raises(NotFound, match="no lesson named 'dropot'.*dropout"):
        get_lesson("dropot")
    with pytest.raises(NotFound, match="learning_rate"):
        start_lesson(store, "nope")
    with pytest.raises(NotFound, match="no dataset named"):
        start_lesson(store, "dropout", data="no-such-data")


def val_evaluation(acc: float, k: int = 4, per: int = 1000) -> dict:
    """A balanced k-class evaluation scoring `acc` (the majority baseline is 1/k)."""
    hits = round(acc * per)
    cm = [[hits if j == i else (per - hits if j == (i + 1) % k else 0) for j in range(k)] for i in range(k)]
    classes = ["angry", "happy", "sad", "neutral"][:k]
    per_class = {c: {"precision": acc, "recall": hits / per, "f1": acc, "support": per} for c in classes}
    return {"accuracy": hits / per, "n": k * per, "classes": classes, "confusion": cm, "per_class": per_class}


def finish(store, run, accs, train_accs=None, status=RunStatus.FINISHED, error=None, test=None):
    """Epoch records with these val accuracies, and the evaluation a finished run has (val at its last one)."""
    for i, acc in enumerate(accs, start=1):
        store.add_epoch(run.id, {"epoch": i, "train_loss": 1.0 / i, "train_acc": (train_accs or accs)[i - 1],
                                    "val_loss": 1.0, "val_acc": acc, "seconds": 1.0})
    if accs and status == RunStatus.FINISHED:
        store.add_evaluation(run.id, val_evaluation(accs[-1]), split="val")
    if test:
        store.add_evaluation(run.id, test)
    store.set_status(run.id, status, error)


def test_start_lesson_queues_a_group_and_summarises_when_done(store):
    runs = start_lesson(store, "learning_rate", data="synthetic", epochs=2, fraction=0.5)
    assert [r.name for r in runs] == ["lesson-learning_rate-0.01", "lesson-learning_rate-0.001"]
    group = runs[0].group_name
    assert group.startswith("learning_rate-") and all(r.group_name == group for r in runs)
    assert all(r.group_kind == "lesson" and r.status == RunStatus.QUEUED for r in runs)
    other = start_lesson(store, "learning_rate")
    assert other[0].group_name != group                      # each start is its own group
    status = lesson_status(store, group)
    assert status["lesson"] == "learning_rate" and not status["done"] and status["summary"] is None
    finish(store, runs[0], [0.45, 0.46, 0.47])
    finish(store, runs[1], [0.50, 0.54, 0.551])
    status = lesson_status(store, group)
    assert status["done"] and len(status["runs"]) == 2
    s = status["summary"]
    assert "47.0%" in s and "55.1%" in s and "As expected" in s and "lr 0.001" in s and status["finding"].stated


def test_summary_says_so_when_the_runs_contradict_the_lesson(store):
    runs = start_lesson(store, "learning_rate")
    finish(store, runs[0], [0.50, 0.55, 0.60])     # 0.01 wins this time
    finish(store, runs[1], [0.40, 0.44, 0.45])
    s = lesson_status(store, runs[0].group_name)["summary"]
    assert "did NOT show the expected direction" in s and "15.0 points" in s


def test_summary_mentions_failed_runs(store):
    runs = start_lesson(store, "learning_rate")
    finish(store, runs[0], [], status=RunStatus.FAILED, error="The training loss became nan in epoch 1.")
    finish(store, runs[1], [0.4, 0.5, 0.5])
    s = lesson_status(store, runs[0].group_name)["summary"]
    assert "lr 0.01 failed" in s and "nan" in s and "As expected" in s


def test_dropout_summary_reads_the_gap(store):
    runs = start_lesson(store, "dropout")
    for run, gap in zip(runs, (0.30, 0.15, 0.05)):
        finish(store, run, [0.5, 0.55, 0.55], train_accs=[0.6, 0.6, 0.55 + gap])
    s = lesson_status(store, runs[0].group_name)["summary"]
    assert "30.0 points" in s and "5.0 points" in s and "As expected, more dropout narrows the gap" in s


def test_class_weights_summary_reads_disgust_recall(store):
    def evaluation(disgust_recall_hits):
        classes = ["angry", "disgust", "happy"]
        cm = [[40, 0, 10], [10 - disgust_recall_hits, disgust_recall_hits, 0], [5, 0, 45]]
        per = {c: {"precision": 0.5, "recall": cm[i][i] / sum(cm[i]), "f1": 0.5, "support": sum(cm[i])}
               for i, c in enumerate(classes)}
        return {"accuracy": 0.7, "n": 110, "classes": classes, "confusion": cm, "per_class": per}
    runs = start_lesson(store, "class_weights")
    finish(store, runs[0], [0.5, 0.6, 0.6], test=evaluation(0))
    finish(store, runs[1], [0.5, 0.6, 0.6], test=evaluation(6))
    s = lesson_status(store, runs[0].group_name)["summary"]
    assert "disgust" in s and "0.0%" in s and "60.0%" in s and "As expected" in s


def test_estimate_cost_table_matches_torchvision_metadata():
    from fercore.models.backbones import BACKBONES
    from fercore.teach.estimate import IMAGENET_GMACS
    assert IMAGENET_GMACS == {name: b.weights.meta["_ops"] for name, b in BACKBONES.items()}


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_every_lesson_run_builds_a_working_network(name):
    import torch

    from fercore.models import build_model
    for cfg in lesson_configs(name, classes=("happy", "sad", "neutral")):
        model = build_model(cfg, 3, pretrained=False).eval()   # the ImageNet files are not needed to build
        with torch.no_grad():
            out = model(torch.zeros(2, 1, cfg.image_size, cfg.image_size))
        assert out.shape == (2, 3)


def test_a_lesson_trains_end_to_end_and_is_summarised(store, one_thread):
    from fercore.jobs.execute import execute_run
    runs = start_lesson(store, "loss", data="synthetic:420", epochs=1, fraction=0.2, classes=("happy", "sad"))
    for _ in runs:
        claimed = store.claim_next_run(worker_id=1, device="cpu")
        execute_run(store, claimed.id, device="cpu")
    status = lesson_status(store, runs[0].group_name)
    assert status["done"] and [r.status for r in status["runs"]] == [RunStatus.FINISHED, RunStatus.FINISHED]
    s = status["summary"]
    assert "loss ce" in s and "loss mse" in s and "%" in s
    assert s.startswith("Too short to tell") and "single point" in s and not status["finding"].stated, \
        "one epoch cannot carry a finding"
