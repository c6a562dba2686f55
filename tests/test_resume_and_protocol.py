"""No lost work, numbers a class can trust: resume after an interruption, the evaluation protocol, the data
audit, and the loop's bookkeeping (mixup accuracy, losses on one criterion, one-cycle momentum, macro-F1)."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_shared

from fercore.cli import main
from fercore.config import RunConfig
from fercore.data.audit import audit, dedupe
from fercore.data.dataset import FERDataset, prepare_for_run
from fercore.data.sources import load_source
from fercore.jobs.execute import RESUME_FILE, execute_run
from fercore.metrics import evaluation_record, macro_f1
from fercore.store import RunStatus, RunStore
from fercore.train import Cancelled, Recorder, device_name, fit, make_optimizer, make_scheduler, uses_amp


@pytest.fixture(scope="module")
def faces():
    return load_source("synthetic:420")


class StopAfter(Recorder):
    """Saves every checkpoint to a file, as the runner does, and cancels the run once `epochs` epochs have ended
    (an interruption)."""

    def __init__(self, epochs: int, folder: Path):
        self.epochs, self.folder, self.states = epochs, folder, []

    def on_checkpoint(self, state):
        path = self.folder / f"resume-{state['epoch']}.pt"
        torch.save(state, path)   # the tensors are live: the next batch changes them
        self.states.append(path)

    def on_batch(self, progress):
        return len(self.states) >= self.epochs


def test_an_interrupted_run_resumed_ends_with_the_same_weights(faces, tiny, tmp_path):
    cfg = tiny.replace(epochs=4, conv_dropout=0.2, mixup=0.2, schedule="onecycle", erasing=0.3, rotation=10.0)
    whole = fit(cfg, faces)
    stop = StopAfter(2, tmp_path)
    with pytest.raises(Cancelled):
        fit(cfg, faces, stop)
    state = torch.load(stop.states[-1], weights_only=True)
    resumed = fit(cfg, faces, resume=state)
    assert [e["epoch"] for e in resumed.epochs] == [3, 4]
    assert [e["train_loss"] for e in resumed.epochs] == [e["train_loss"] for e in whole.epochs[2:]]
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.evaluations["val"]["accuracy"] == whole.evaluations["val"]["accuracy"]


def test_a_cancelled_run_resumes_from_its_last_epoch_and_finishes_with_each_epoch_once(db, tiny):
    store = RunStore(db)
    run = store.create_run(tiny.replace(epochs=3, name="interrupted"), status=RunStatus.RUNNING)
    from fercore.jobs import execute

    class CancelAfterTwo(execute.StoreRecorder):
        def on_batch(self, progress):
            super().on_batch(progress)
            return progress["epoch"] == 3   # the owner cancels during the third epoch

    real = execute.StoreRecorder
    execute.StoreRecorder = CancelAfterTwo
    try:
        stopped = execute_run(store, run.id)
    finally:
        execute.StoreRecorder = real
    assert stopped.status == RunStatus.CANCELLED
    assert (store.run_dir(run.id) / RESUME_FILE).is_file()
    assert main(["--db", db, "runs", "resume", "interrupted", "--no-worker"]) == 0
    assert store.get_run(run.id).status == RunStatus.QUEUED
    store.claim_next_run(store.register_worker(1, "cpu"))
    done = execute_run(store, run.id)
    assert done.status == RunStatus.FINISHED and done.attempts == 1
    assert [e["epoch"] for e in store.epochs(run.id)] == [1, 2, 3]
    assert done.val is not None and not (store.run_dir(run.id) / RESUME_FILE).exists(), "pruned to the final one"


def test_resume_refuses_a_run_without_saved_state(db, tiny, capsys):
    store = RunStore(db)
    run = store.create_run(tiny.replace(name="never-started"))
    store.set_status(run.id, RunStatus.FAILED, "boom")
    assert main(["--db", db, "--json", "runs", "resume", "never-started"]) == 2
    assert "no saved training state" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]


# --- the evaluation protocol ------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["usage", "random", "val_from_train"])
def test_evaluate_scores_exactly_the_runs_own_split_and_never_a_training_image(db, tiny, split, capsys):
    """For every split mode, `evaluate RUN --split test|val` on the run's dataset scores the rows the run held
    out, and none of them is a training image of the run."""
    data = "synthetic:210:3"
    assert main(["--db", db, "train", "--data", data, "--epochs", "1", "--conv-blocks", "2", "--filters", "8,16",
                 "--convs-per-block", "1", "--fc-units", "16", "--batch-size", "32", "--split", split,
                 "--name", f"r-{split}", "--json"]) == 0
    capsys.readouterr()
    store = RunStore(db)
    run = store.get_run(f"r-{split}")
    ds = prepare_for_run(store.load_dataset(data), run.config)
    train_hashes = {x.tobytes() for x in ds.arrays("train")[0]}
    for part in ("val", "test"):
        x, _ = ds.arrays(part)
        if not len(x):
            continue
        assert main(["--db", db, "--json", "evaluate", f"r-{split}", "--data", data, "--split", part]) == 0
        ev = json.loads(capsys.readouterr().out)
        assert ev["n"] == len(x) and ev["own_split"] and "own" in ev["scored"]
        assert not train_hashes & {img.tobytes() for img in x}
    if split == "val_from_train":   # the source's own test is kept whole
        assert ds.split_counts()["test"] == store.load_dataset(data).split_counts()["test"]


def test_val_from_train_carves_a_stratified_val_and_keeps_the_test():
    rng = np.random.default_rng(0)
    n = 700
    ds = FERDataset("d", "x", ["a", "b"], rng.integers(0, 255, (n, 8, 8)), np.arange(n) % 2,
                    np.r_[np.zeros(600), np.full(100, 2)])
    out = prepare_for_run(ds, RunConfig(split="val_from_train", val_fraction=0.2, split_seed=1))
    assert out.split_counts() == {"train": 480, "val": 120, "test": 100}
    assert out.class_counts()["val"] == {"a": 60, "b": 60}


# --- the data audit -----------------------------------------------------------------------------------------
def test_audit_finds_copies_across_and_within_splits_and_blanks_and_dedupe_drops_them():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (10, 8, 8), dtype=np.uint8)
    imgs[1] = imgs[0]                      # a copy inside train
    imgs[7] = imgs[2]                      # a val image that is a train image ...
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0])   # ... with another label (2 is class 1, 7 class 0)
    imgs[8] = 128                          # a blank val image
    split = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    imgs[9] = imgs[6]                      # a test image that is a val image
    ds = FERDataset("d", "x", ["a", "b"], imgs, labels, split)
    report = audit(ds)
    assert report["duplicates_within"]["train"] == 1
    assert report["duplicates_across"]["val_in_train"] == {"n": 1, "other_label": 1}
    assert report["duplicates_across"]["test_in_val"] == {"n": 1, "other_label": 0}
    assert report["blank"] == {"train": 0, "val": 1, "test": 0}
    clean, notes = dedupe(ds)
    assert clean.split_counts() == {"train": 6, "val": 1, "test": 0} and len(notes) == 3


def test_fer2013_import_reports_its_duplicates_and_dedupe_drops_them(db, capsys):
    folder = needs_shared("fer2013-images")
    assert main(["--db", db, "--json", "data", "import", str(folder), "--name", "fer", "--dedupe"]) == 0
    out = json.loads(capsys.readouterr().out)
    a = out["audit"]
    assert a["duplicates_within"]["train"] == 1236
    assert a["duplicates_across"]["val_in_train"]["n"] == 280
    assert a["blank"] == {"train": 11, "val": 1}
    assert out["splits"] == {"train": 28698, "val": 3309, "test": 0}
    assert any("identical to images of an earlier split" in n for n in out["notes"])


# --- the loop's bookkeeping ------------------------------------------------------------------------------
def test_mixup_accuracy_counts_both_labels_by_lambda(faces, tiny):
    res = fit(tiny.replace(epochs=1, mixup=0.4), faces)
    assert 0.0 <= res.epochs[0]["train_acc"] <= 1.0
    from fercore.train import _hits
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert float(_hits(logits, torch.tensor([0, 0]), (0.7, torch.tensor([1, 1])))) == pytest.approx(0.7 + 0.3)


def test_val_loss_uses_the_train_losss_criterion(faces, tiny):
    """With heavy label smoothing both losses include it: an untrained net's val loss sits near the train loss,
    not far below it as plain NLL on smoothed training would."""
    from fercore.train import compute_loss, val_metrics
    cfg = tiny.replace(label_smoothing=0.3)
    probs = torch.full((4, 7), 1 / 7)
    y = torch.tensor([0, 1, 2, 3])
    got = val_metrics(cfg, probs, y, None)["val_loss"]
    assert got == pytest.approx(float(compute_loss(cfg, torch.log(probs), y, 7, None)))


def test_onecycle_keeps_the_momentum_unless_asked():
    params = [torch.nn.Parameter(torch.zeros(2))]
    cfg = RunConfig(optimizer="sgd", momentum=0.8, schedule="onecycle", epochs=2)
    opt = make_optimizer(cfg, params)
    make_scheduler(cfg, opt, 10)
    assert opt.param_groups[0]["momentum"] == 0.8
    opt2 = make_optimizer(cfg.replace(cycle_momentum=True), params)
    make_scheduler(cfg.replace(cycle_momentum=True), opt2, 10)
    assert opt2.param_groups[0]["momentum"] != 0.8


def test_macro_f1_averages_only_classes_with_support():
    ev = evaluation_record(np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]), np.array([0, 1]), ["a", "b", "c"])
    assert ev["macro_f1"] == pytest.approx(1.0) == macro_f1(ev["per_class"])


def test_cpu_precision_follows_the_instruction_set():
    cpu = torch.device("cpu")
    assert device_name(cpu, amp=False).startswith("cpu (fp32, ")
    assert uses_amp(RunConfig(amp=False), cpu) is False
    from fercore.train import cpu_has_bf16
    assert uses_amp(RunConfig(), cpu) == cpu_has_bf16()


def test_the_training_step_reads_no_device_scalar():
    """No host sync per step on a GPU: inside the step loop of train_one_epoch, nothing turns a tensor into a
    Python number (float(), int(), bool(), .item(), .tolist(), .cpu()) except the once-a-second report."""
    tree = ast.parse(Path(__file__).resolve().parents[1].joinpath("fercore/train.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "train_one_epoch")
    loop = next(n for n in ast.walk(fn) if isinstance(n, ast.For))
    report = next(n for n in ast.walk(loop) if isinstance(n, ast.If) and "REPORT_EVERY_S" in ast.unparse(n.test))
    in_report = {id(n) for n in ast.walk(report)}
    syncs = [ast.unparse(n) for n in ast.walk(loop) if id(n) not in in_report and isinstance(n, ast.Call)
             and ((isinstance(n.func, ast.Name) and n.func.id in ("float", "int", "bool"))
                  or (isinstance(n.func, ast.Attribute) and n.func.attr in ("item", "tolist", "cpu", "numpy")))]
    assert syncs == ["float(torch.distributions.Beta(config.mixup, config.mixup).sample())"], syncs


def test_a_run_that_answers_happy_to_most_faces_is_diagnosed_from_val():
    """A run with val only (the shared FER2013 folder): the lr-0.01 symptom, 'predicts happy for most faces'
    and 'never predicts disgust', read from val and saying so."""
    from fercore.store import Evaluation, Run
    from fercore.teach.diagnosis import diagnose
    classes = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    cm = [[10, 0, 2, 30, 3, 1, 4], [1, 0, 0, 5, 0, 0, 0], [3, 0, 8, 30, 4, 2, 3], [2, 0, 1, 80, 1, 2, 4],
          [3, 0, 2, 35, 9, 0, 5], [1, 0, 2, 20, 0, 18, 1], [2, 0, 1, 40, 3, 1, 12]]
    val = Evaluation(split="val", accuracy=0.4, n=sum(map(sum, cm)), classes=classes,
                     confusion=tuple(map(tuple, cm)), per_class={})
    run = Run(id=7, name="lr-0.01", status=RunStatus.FINISHED, config=RunConfig(lr=0.01), classes=classes, val=val,
              epochs=({"epoch": 1, "train_loss": 1.8, "val_loss": 1.7, "train_acc": 0.3, "val_acc": 0.35},))
    found = {f["kind"]: f["message"] for f in diagnose(run)}
    assert "predicts happy for most faces" in found["dominant_class"] and "on val" in found["dominant_class"]
    assert "never predicts disgust" in found["never_predicted"] and "val images" in found["never_predicted"]


def test_explanations_start_from_black_and_a_blank_gradcam_says_why(faces, tiny, monkeypatch):
    from fercore.predict import explain, predictor
    res = fit(tiny.replace(epochs=1, normalize="standard"), faces)
    pred = predictor.Predictor(None, res.model.eval(), tiny, res.classes, res.mean, res.std)
    seen = []
    real = explain.attribute

    def spy(model, x, target, method, target_layer=None, baseline=0.0):
        seen.append((method, baseline, target_layer))
        return real(model, x, target, method, target_layer=target_layer, baseline=baseline)

    monkeypatch.setattr(explain, "attribute", spy)
    crop = faces.images[0]
    predictor.explain_face(pred, crop, 0, "ig")
    black = float(pred.input_tensor(np.zeros_like(crop)).flatten()[0])
    assert seen[-1][1] == pytest.approx(black) and black < -1.0, "a black face in normalised space, not 0 (grey)"
    seen.clear()
    blank_at_last = {"n": 0}

    def blank_first(model, x, target, method, target_layer=None, baseline=0.0):
        seen.append(target_layer)
        blank_at_last["n"] += 1
        if blank_at_last["n"] == 1:
            return np.zeros(x.shape[-2:], dtype=np.float32)   # no positive gradient at the last conv layer
        return real(model, x, target, method, target_layer=target_layer, baseline=baseline)

    monkeypatch.setattr(explain, "attribute", blank_first)
    heat, note = predictor.explain_face(pred, crop, 0, "gradcam")
    assert len(seen) == 2 and seen[0] is not seen[1] and "blank" in note and "before its ReLU" in note
    assert heat.shape == (288, 288, 3)
