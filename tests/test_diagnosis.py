"""Diagnosis: real runs with known pathologies are named (trained on tiny synthetic data on the CPU),
and the checks behave on handmade epoch records."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from fercore.config import RunConfig
from fercore.store.entities import Evaluation, Run, RunStatus
from fercore.teach.diagnosis import diagnose


def kinds(findings, severity=None):
    return {f["kind"] for f in findings if severity is None or f["severity"] == severity}


def by_kind(findings, kind):
    return next(f for f in findings if f["kind"] == kind)


# --- real runs -------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets gain nothing from threads, and on a busy CI machine extra threads make them crawl."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_faces():
    from fercore.data.synthetic import make_synthetic
    return make_synthetic(n=420, seed=0)   # 336 train / 42 val / 42 test, 7 classes


def train(config, dataset):
    """fit() like the worker does, collecting the epochs even when training diverges."""
    from fercore.train import Recorder, TrainingDiverged, fit

    class Collect(Recorder):
        def __init__(self):
            self.epochs = []

        def on_epoch(self, record):
            self.epochs.append(record)

    rec = Collect()
    run = Run(id=1, name="x", status=RunStatus.FINISHED, config=config, classes=tuple(dataset.classes))
    try:
        result = fit(config, dataset, rec, device="cpu")
    except TrainingDiverged as e:
        return replace(run, status=RunStatus.FAILED, error=str(e)), rec.epochs, None
    test = result.evaluations.get("test")
    return replace(run, classes=tuple(result.classes)), result.epochs, test and evaluation(test, split="test")


def evaluation(record: dict, split: str = "test") -> Evaluation:
    """An evaluation record (fit's, or handmade: classes and confusion at least) as the store returns it."""
    return Evaluation(split=split, accuracy=record.get("accuracy", 0.0), n=record.get("n", 0),
                      classes=tuple(record["classes"]), confusion=tuple(map(tuple, record["confusion"])),
                      per_class=record.get("per_class", {}), tta=record.get("tta", "none"))


def test_lr_20_with_sgd_is_named_divergence(tiny_faces):
    cfg = RunConfig(data="synthetic", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,),
                    image_size=32, hflip=0.0, rotation=0.0, optimizer="sgd", lr=20.0, batch_size=32, epochs=3,
                    tta="none", amp=False)
    run, epochs, test = train(cfg, tiny_faces)
    findings = diagnose(run, epochs, test)
    assert "divergence" in kinds(findings, "warning"), findings
    msg = by_kind(findings, "divergence")["message"]
    assert "20" in msg and ("NaN" in msg or "rose" in msg or "chance" in msg)


@pytest.mark.slow   # long training
def test_100_epochs_on_200_images_is_named_overfitting_with_the_epoch(tiny_faces):
    # ~200 training faces, no regularisation at all, a 32 px input to keep 100 epochs at a few seconds
    cfg = RunConfig(data="synthetic", conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(64,),
                    batchnorm=False, conv_dropout=0.0, fc_dropout=0.0, hflip=0.0, rotation=0.0, shift=0.0,
                    zoom=0.0, erasing=0.0, image_size=32, data_fraction=0.6, batch_size=32, epochs=100, lr=3e-3,
                    tta="none", amp=False)
    run, epochs, test = train(cfg, tiny_faces)
    assert len(epochs) == 100
    findings = diagnose(run, epochs, test)
    over = by_kind(findings, "overfitting")
    assert over["severity"] == "warning", findings
    turn = over["evidence"]["epoch"]
    assert 1 <= turn < 90 and f"epoch {turn}" in over["message"]
    val_loss = [e["val_loss"] for e in epochs]
    assert val_loss[-1] > min(val_loss) * 1.1                 # it really did turn up
    assert over["evidence"]["gap_end"] > 0.2                   # and train accuracy ran away from val


def test_ten_layer_sigmoid_net_is_named_vanishing_gradients(tiny_faces):
    cfg = RunConfig(data="synthetic", conv_blocks=5, filters=(8,), convs_per_block=2, batchnorm=False,
                    activation="sigmoid", conv_dropout=0.0, fc_units=(16,), fc_dropout=0.0, image_size=32,
                    optimizer="sgd", lr=0.01, batch_size=32, epochs=2, tta="none", amp=False)
    run, epochs, test = train(cfg, tiny_faces)
    findings = diagnose(run, epochs, test)
    assert "vanishing_gradients" in kinds(findings, "warning"), findings
    ev = by_kind(findings, "vanishing_gradients")["evidence"]
    assert ev.get("ratio", 0) < 1e-3 or ev.get("max_norm", 1) < 1e-6


# --- handmade epoch records ----------------------------------------------------------------------------------
def epochs_from(train_loss, val_loss, train_acc=None, val_acc=None, **extra):
    n = len(train_loss)
    train_acc = train_acc or [0.5] * n
    val_acc = val_acc or [0.45] * n
    return [{"epoch": i + 1, "train_loss": train_loss[i], "train_acc": train_acc[i], "val_loss": val_loss[i],
             "val_acc": val_acc[i], "lr": 1e-3, "seconds": 1.0, "grad_norms": {}, **extra} for i in range(n)]


RUN = Run(id=1, name="handmade", status=RunStatus.FINISHED,
          config=RunConfig(lr=1e-3, optimizer="adam", activation="relu"),
          classes=("angry", "happy", "sad"))


def test_overfitting_found_at_the_turn_despite_noise():
    n = 40
    val = [1.5 - 0.05 * i if i < 12 else 0.9 + 0.03 * (i - 12) for i in range(n)]
    val = [v + (0.04 if i % 2 else -0.04) for i, v in enumerate(val)]     # epoch-to-epoch noise
    train = [1.5 * 0.93 ** i for i in range(n)]
    tacc = [min(0.99, 0.4 + 0.02 * i) for i in range(n)]
    vacc = [min(0.62, 0.4 + 0.02 * i) for i in range(n)]
    f = by_kind(diagnose(RUN, epochs_from(train, val, tacc, vacc), None), "overfitting")
    assert f["severity"] == "warning" and 10 <= f["evidence"]["epoch"] <= 14
    assert "gap" in f["message"] and "epoch" in f["message"]


def test_noisy_but_flat_val_loss_is_not_overfitting():
    n = 30
    val = [1.0 + (0.05 if i % 3 == 0 else -0.03) for i in range(n)]
    train = [1.2 - 0.005 * i for i in range(n)]
    assert "overfitting" not in kinds(diagnose(RUN, epochs_from(train, val), None))


def test_nan_loss_is_divergence_with_its_epoch():
    run = replace(RUN, status=RunStatus.FAILED, config=RunConfig(lr=20.0, optimizer="sgd"),
                  error="The training loss became nan in epoch 2 (batch 3); the learning rate (20) is probably "
                        "too high")
    ep = epochs_from([2.0], [1.9]) + [{"epoch": 2, "train_loss": None, "train_acc": None, "val_loss": None,
                                       "val_acc": None, "grad_norms": {}}]
    findings = diagnose(run, ep, None)
    d = by_kind(findings, "divergence")
    assert d["evidence"]["epoch"] == 2 and "NaN in epoch 2" in d["message"] and "20" in d["message"]
    assert "failed" in kinds(findings)


def test_rising_training_loss_is_divergence():
    train = [1.0, 0.9, 0.95, 1.2, 1.6, 2.2]
    assert "divergence" in kinds(diagnose(RUN, epochs_from(train, train), None))


def test_chance_level_names_overshoot_or_underfitting_by_learning_rate():
    flat = epochs_from([1.1] * 5, [1.1] * 5, [0.34] * 5, [0.33, 0.35, 0.34, 0.33, 0.35])
    high = replace(RUN, config=RUN.config.replace(lr=0.05))
    assert "divergence" in kinds(diagnose(high, flat, None))
    low = diagnose(RUN, flat, None)
    assert "underfitting" in kinds(low) and "divergence" not in kinds(low)


def test_zigzag_validation_is_oscillation_and_smooth_is_not():
    acc = [0.3, 0.5, 0.32, 0.52, 0.3, 0.55, 0.33, 0.5]
    loss = [1.0] * len(acc)
    assert "oscillation" in kinds(diagnose(RUN, epochs_from(loss, loss, val_acc=acc), None))
    smooth = [0.3 + 0.03 * i for i in range(8)]
    assert "oscillation" not in kinds(diagnose(RUN, epochs_from(loss, loss, val_acc=smooth), None))


def test_gradient_norms_vanishing_exploding_and_healthy():
    def with_norms(norms):
        return epochs_from([1.0, 0.9, 0.8], [1.0, 0.95, 0.9], grad_norms=norms)
    layers = ["block1.conv1", "block2.conv1", "block3.conv1", "fc1", "out"]
    vanishing = dict(zip(layers, [1e-8, 3e-8, 1e-5, 1e-2, 2e-2]))
    f = diagnose(RUN, with_norms(vanishing), None)
    assert "vanishing_gradients" in kinds(f) and "block1.conv1" in by_kind(f, "vanishing_gradients")["message"]
    exploding = dict(zip(layers, [5e4, 1e4, 10.0, 1.0, 1.0]))
    assert "exploding_gradients" in kinds(diagnose(RUN, with_norms(exploding), None))
    infinite = dict(zip(layers, [math.inf, 1.0, 1.0, 1.0, 1.0]))
    assert "exploding_gradients" in kinds(diagnose(RUN, with_norms(infinite), None))
    healthy = dict(zip(layers, [0.05, 0.08, 0.1, 0.2, 0.3]))
    assert not kinds(diagnose(RUN, with_norms(healthy), None)) & {"vanishing_gradients", "exploding_gradients"}


def test_dead_activations():
    ep = epochs_from([1.0, 0.9], [1.0, 0.9], dead_units={"features.block1.act1": 0.1, "features.block2.act1": 0.8})
    f = by_kind(diagnose(RUN, ep, None), "dead_activations")
    assert "features.block2.act1" in f["message"] and "80%" in f["message"]
    ep = epochs_from([1.0, 0.9], [1.0, 0.9], dead_units={"a": 0.1})
    assert "dead_activations" not in kinds(diagnose(RUN, ep, None))


def test_never_predicted_and_confused_pairs_from_the_confusion_matrix():
    test = evaluation({"classes": ["angry", "happy", "sad"], "accuracy": 0.6,
                       "confusion": [[0, 20, 30],      # angry: never predicted, mostly taken for sad
                                     [0, 90, 10],
                                     [0, 15, 85]]})
    f = diagnose(RUN, epochs_from([1.0, 0.9], [1.0, 0.9]), test)
    never = by_kind(f, "never_predicted")
    assert never["evidence"]["classes"] == ["angry"] and "angry (50 test images)" in never["message"]
    pairs = by_kind(f, "confused_pairs")["evidence"]["pairs"]
    assert (pairs[0]["true"], pairs[0]["predicted"]) == ("angry", "sad") and pairs[0]["share"] == pytest.approx(0.6)
    assert ("happy", "sad") not in {(p["true"], p["predicted"]) for p in pairs}   # 10 % is below the threshold


def test_a_healthy_run_gets_no_warning():
    n = 15
    train = [1.6 * 0.9 ** i for i in range(n)]
    val = [1.6 * 0.93 ** i + 0.3 for i in range(n)]
    tacc = [0.3 + 0.03 * i for i in range(n)]
    vacc = [0.3 + 0.025 * i for i in range(n)]
    ep = epochs_from(train, val, tacc, vacc, grad_norms={"c1": 0.1, "c2": 0.2, "fc": 0.3, "out": 0.5},
                     dead_units={"act1": 0.05})
    test = evaluation({"classes": ["angry", "happy", "sad"], "confusion": [[40, 5, 5], [4, 44, 2], [6, 4, 40]]})
    assert kinds(diagnose(RUN, ep, test), "warning") == set()


def test_empty_or_running_runs_do_not_crash():
    empty = Run(id=1, name="empty", status=RunStatus.QUEUED, config=RunConfig())
    assert diagnose(empty) == [] and diagnose(empty, [], None) == []
    running = replace(empty, status=RunStatus.RUNNING)
    no_confusion = Evaluation(split="val", accuracy=0.0, n=0, classes=(), confusion=(), per_class={})
    assert diagnose(running, epochs_from([1.0], [1.0]), no_confusion) == []



def test_diagnose_reads_the_runs_own_epochs_and_scores_test_else_val():
    """diagnose(run) alone uses run.epochs and run.scored: test when the run has it, else val, and says which."""
    cm = [[0, 20, 30], [0, 90, 10], [0, 15, 85]]
    val = evaluation({"classes": ["angry", "happy", "sad"], "confusion": cm}, split="val")
    run = replace(RUN, epochs=tuple(epochs_from([1.0, 0.9], [1.0, 0.9])), val=val)
    never = by_kind(diagnose(run), "never_predicted")
    assert "angry (50 val images)" in never["message"] and "On val" in never["message"]
    assert "test" not in never["message"]
    assert by_kind(diagnose(run), "confused_pairs")["evidence"]["split"] == "val"
    healthy = evaluation({"classes": ["angry", "happy", "sad"], "confusion": [[40, 5, 5], [4, 44, 2], [6, 4, 40]]})
    with_test = replace(run, test=healthy)
    assert "never_predicted" not in kinds(diagnose(with_test))          # test wins over val
    assert "never_predicted" in kinds(diagnose(with_test, evaluation=val))
