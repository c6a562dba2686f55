"""The training loop: options of the config space do what they say."""
import numpy as np
import pytest

from fercore.data.sources import load_source
from fercore.train import Cancelled, Recorder, TrainingDiverged, fit


@pytest.fixture(scope="module")
def faces():
    return load_source("synthetic:420")


class Collect(Recorder):
    def __init__(self, cancel_after=None):
        self.epochs, self.batches, self.evals, self.cancel_after = [], 0, {}, cancel_after

    def on_batch(self, progress):
        self.batches += 1
        assert 0 < progress["batch"] <= progress["batches"] and progress["eta_s"] >= 0
        return self.cancel_after is not None and self.batches >= self.cancel_after

    def on_epoch(self, rec):
        self.epochs.append(rec)

    def on_evaluation(self, split, ev):
        self.evals[split] = ev


def test_learns_the_synthetic_faces_and_is_deterministic(faces, tiny):
    cfg = tiny.replace(epochs=3, filters=(16, 32), fc_units=(32,))
    a, b = fit(cfg, faces), fit(cfg, faces)
    assert [e["train_loss"] for e in a.epochs] == [e["train_loss"] for e in b.epochs]
    assert a.evaluations["val"]["accuracy"] > 1.5 / 7, "well above chance after 3 epochs"
    assert a.epochs[-1]["train_loss"] < a.epochs[0]["train_loss"]


def test_checkpoint_is_chosen_on_val_and_test_evaluated_once(faces, tiny):
    rec = Collect()
    res = fit(tiny.replace(epochs=3), faces, rec)
    best = max(range(3), key=lambda i: rec.epochs[i]["val_acc"]) + 1
    assert res.best_epoch == best
    assert set(rec.evals) == {"val", "test"}
    assert rec.evals["val"]["accuracy"] == pytest.approx(rec.epochs[best - 1]["val_acc"], abs=1e-6)


def test_early_stopping_stops_after_patience(faces, tiny):
    res = fit(tiny.replace(epochs=30, lr=1e-7, early_stopping=2), faces)
    assert res.stopped_early and len(res.epochs) < 30


@pytest.mark.parametrize("changes", [
    dict(optimizer="sgd", nesterov=True, schedule="onecycle"),
    dict(optimizer="adamw", schedule="cosine", weight_decay=1e-4),
    dict(schedule="plateau", plateau_patience=1),
    dict(loss="mse", class_weights=True),
    dict(label_smoothing=0.1, grad_clip=1.0, mixup=0.2, erasing=0.5, blur=0.5, shift=0.1, zoom=0.1),
    dict(tta="tencrop", normalize="sym"),
    dict(activation="leaky_relu", batchnorm=False, pooling="avg", init="kaiming"),
])
def test_every_option_trains(faces, tiny, changes):
    res = fit(tiny.replace(epochs=1, **changes), faces)
    assert np.isfinite(res.epochs[0]["train_loss"])
    assert res.evaluations["test"]["tta"] == changes.get("tta", "none")


def test_schedules_change_the_learning_rate(faces, tiny):
    lrs = [e["lr"] for e in fit(tiny.replace(epochs=3, schedule="cosine"), faces).epochs]
    assert lrs[0] > lrs[1] > lrs[2]


def test_grad_norms_and_dead_units_are_recorded(faces, tiny):
    e = fit(tiny.replace(epochs=1), faces).epochs[0]
    assert e["grad_norms"] and all(v >= 0 for v in e["grad_norms"].values())
    assert e["dead_units"] and all(0 <= v <= 1 for v in e["dead_units"].values())


def test_cancel_stops_within_a_batch(faces, tiny, monkeypatch):
    import fercore.train as t
    clock = iter(np.arange(0, 1e6, 2.0))   # every batch looks 2 s later: the recorder is asked each batch
    monkeypatch.setattr(t.time, "perf_counter", lambda: next(clock))
    rec = Collect(cancel_after=2)
    with pytest.raises(Cancelled):
        fit(tiny.replace(epochs=5), faces, rec)
    assert rec.batches == 2


def test_nan_loss_raises_diverged_with_a_reason(faces, tiny):
    rec = Collect()
    with pytest.raises(TrainingDiverged, match="learning rate"):
        fit(tiny.replace(optimizer="sgd", lr=100.0, momentum=0.9, batchnorm=False, epochs=5), faces, rec)
    assert rec.epochs and np.isnan(rec.epochs[-1]["train_loss"]), "the diverged epoch is still recorded"


def test_random_split_and_fraction(faces, tiny):
    rec = Collect()
    res = fit(tiny.replace(epochs=1, split="random", split_ratios=(0.7, 0.3), data_fraction=0.5), faces, rec)
    assert "test" not in res.evaluations and res.evaluations["val"]["n"] == pytest.approx(0.3 * 420, abs=8)


def test_class_weights_favour_the_rare_class(tiny):
    """With a 10:1 imbalance, weighting the loss raises recall of the rare class."""
    ds = load_source("synthetic:700")
    keep = (ds.labels != 1) | (np.arange(len(ds)) % 10 == 0)   # disgust kept at 1 in 10
    from fercore.data.dataset import FERDataset
    small = FERDataset("imb", "t", ds.classes, ds.images[keep], ds.labels[keep], ds.split[keep], True)
    cfg = tiny.replace(epochs=4, classes=("disgust", "happy", "sad"), filters=(16, 32), fc_units=(32,))
    plain = fit(cfg, small).probs["val"].argmax(1)
    weighted = fit(cfg.replace(class_weights=True), small).probs["val"].argmax(1)
    assert (weighted == 0).sum() >= (plain == 0).sum()
