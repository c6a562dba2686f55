"""Issue 23's rough edges, each as a user saw it: repeated accuracy ticks, two counts of the dropped images, the
ensemble refusing the same images under another name, "about 1 s left" during the final evaluation, the weights
panel's "Unexpected error", and the sidebar calling a worker busy with a run the table shows finished. (The photo
kept across pages and the webcam's "no face" are in test_explain_readable.py.)"""
from __future__ import annotations

import os

import numpy as np

from fercore.config import RunConfig
from fercore.store import RunStore
from fercore.store.entities import RunStatus


def test_accuracy_ticks_read_differently_over_a_narrow_span():
    from fercore import figures
    epochs = [{"epoch": e, "train_acc": 0.212 + 0.003 * e, "val_acc": 0.210 + 0.002 * e} for e in (1, 2, 3, 4)]
    fig = figures.learning_curves([("run", epochs)], "acc")
    fmt = fig.layout.yaxis.tickformat
    digits = int(fmt[1])
    lo, hi = 0.212, 0.224
    ticks = [f"{v * 100:.{digits}f} %" for v in np.linspace(lo, hi, 5)]
    assert len(set(ticks)) == 5, ticks   # '.0%' read 21 %, 21 %, 22 %, 22 %, 22 %
    wide = figures.learning_curves([("run", [{"epoch": 1, "val_acc": 0.2}, {"epoch": 2, "val_acc": 0.6}])], "acc")
    assert wide.layout.yaxis.tickformat == ".0%"


def test_the_import_note_counts_the_cross_split_copies_as_the_audit_does():
    from fercore.data.audit import audit, dedupe
    from fercore.data.dataset import FERDataset
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, (6, 48, 48), dtype=np.uint8)
    train[0] = 128                                          # a blank training image ...
    val = np.concatenate([train[:3], rng.integers(0, 255, (2, 48, 48), dtype=np.uint8)])   # ... copied into val
    ds = FERDataset("fer", "test", ["angry", "happy"], np.concatenate([train, val]), np.zeros(11, dtype=np.int64),
                    np.array([0] * 6 + [1] * 5))
    copies = audit(ds)["duplicates_across"]["val_in_train"]["n"]
    _, notes = dedupe(ds)
    assert copies == 3 and any(n.startswith(f"dropped {copies} val images identical") for n in notes), notes


def test_the_ensemble_matches_datasets_by_their_images_not_their_names(tmp_path):
    from fercore.jobs.runfile import probs_to_file
    from fercore.metrics import evaluation_record
    from fercore.teach.ensemble import ensemble
    store = RunStore(str(tmp_path / "runs.db"))
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 60)
    runs = []
    for name in ("fer2013", "fer2013-again"):
        run = store.create_run(RunConfig(data=name, classes=("angry", "happy", "sad")), status=RunStatus.RUNNING,
                               classes=["angry", "happy", "sad"])
        store.update_run(run.id, dataset_fingerprint="same-pixels")
        probs = rng.dirichlet(np.ones(3), size=60).astype(np.float32)
        ev = evaluation_record(probs, targets, ["angry", "happy", "sad"])
        ev["probs_path"] = probs_to_file(store.run_dir(run.id) / "probs_test.npy", probs)
        store.add_evaluation(run.id, ev, "test", name)
        store.set_status(run.id, RunStatus.FINISHED)
        runs.append(store.get_run(run.id))
    res = ensemble(runs, {r.id: store.evaluation(r.id, "test", full=True) for r in runs})
    assert "error" not in res and sorted(res["members"]) == sorted(r.id for r in runs), res


def test_the_final_evaluation_is_named_instead_of_an_eta(tiny):
    from fercore import fmt
    from fercore.data.sources import load_source
    from fercore.train import Recorder, fit
    seen = []

    class Spy(Recorder):
        def on_final_evaluation(self, images, tta):
            seen.append(("final", images, tta))

        def on_evaluation(self, split, evaluation):
            seen.append((split,))
    fit(tiny.replace(epochs=1), load_source("synthetic:420"), Spy())
    assert seen[0][0] == "final" and seen[0][1] > 0 and [s[0] for s in seen[1:]] == ["val", "test"]
    class Running:
        config = tiny
        progress = {"phase": "evaluating", "images": 168, "tta": "tencrop"}
    done, text = fmt.run_progress(Running)
    assert done == 1.0 and text.startswith("final evaluation") and "left" not in text
    Running.progress = {"phase": "training", "epoch": 2, "epochs": 4, "batch": 5, "batches": 10, "eta_s": 42.0}
    assert fmt.run_progress(Running) == (0.375, "epoch 2/4, batch 5/10, about 42 s left")


def test_the_offline_weights_sentence_reaches_the_page_as_it_is():
    from fercore.errors import user_message
    from fercore.models.weights import PRETRAINED, WeightsError, offline_sentence
    sentence = offline_sentence([PRETRAINED["resnet18"]])
    assert user_message(WeightsError(sentence)) == sentence, "not 'Unexpected error (WeightsError: ...)'"


def test_the_sidebar_never_calls_a_worker_busy_with_a_finished_run(tmp_path):
    from fercore.jobs.liveness import worker_status
    store = RunStore(str(tmp_path / "runs.db"))
    run = store.create_run(RunConfig(), status=RunStatus.RUNNING)
    wid = store.register_worker(os.getpid(), "cpu")
    store.worker_heartbeat(wid, "busy", run.id)
    status = worker_status(store)
    assert status["running"] == 1 and status["alive"][0].current_run == run.id
    store.set_status(run.id, RunStatus.FINISHED)   # the worker's next heartbeat has not come yet
    status = worker_status(store)
    assert status["running"] == 0 and status["alive"][0].current_run is None and status["alive"][0].status == "idle"
