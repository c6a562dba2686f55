"""Resume is exact: the snapshot a run leaves after each epoch carries nothing tied to the device that wrote it,
and it knows when early stopping has ended the run."""
import json
from pathlib import Path

import pytest
import torch

from fercore.data.sources import load_source
from fercore.train import Cancelled, Recorder, fit


@pytest.fixture(scope="module")
def faces():
    return load_source("synthetic:420")


class Snapshots(Recorder):
    """Saves every snapshot as the runner does (torch.save, loaded back on the CPU); stops the run once `stop_after`
    epochs have ended (a cancel), or crashes in the final evaluation when `crash_at_evaluation`."""

    def __init__(self, folder: Path, stop_after: int | None = None, crash_at_evaluation: bool = False):
        self.folder, self.stop_after, self.crash_at_evaluation, self.paths = folder, stop_after, crash_at_evaluation, []

    def on_checkpoint(self, state):
        self.paths.append(self.folder / f"resume-{state['epoch']}.pt")
        torch.save(state, self.paths[-1])

    def on_batch(self, progress):
        return self.stop_after is not None and len(self.paths) >= self.stop_after

    def on_evaluation(self, split, evaluation):
        if self.crash_at_evaluation:
            raise RuntimeError("the power went out")

    def last(self) -> dict:
        return torch.load(self.paths[-1], map_location="cpu", weights_only=True)


def test_the_snapshot_holds_no_device_specific_random_state(faces, tiny, tmp_path):
    cfg = tiny.replace(epochs=3, conv_dropout=0.2, mixup=0.2, erasing=0.3)
    snaps = Snapshots(tmp_path, stop_after=1)
    with pytest.raises(Cancelled):
        fit(cfg, faces, snaps)
    rng = snaps.last()["rng"]
    assert json.loads(json.dumps(rng)) == rng, "plain numbers, the same on every device"
    assert not any(isinstance(v, torch.Tensor) for v in rng.values())


def test_a_snapshot_written_on_a_gpu_resumes_on_the_cpu(faces, tiny, tmp_path):
    """A CUDA generator's state is 16 bytes (seed and offset), a CPU one's 5,056: a run requeued from a GPU
    worker to a CPU worker used to fail with 'Expected a CPUGeneratorImplState of size 5056 but found 16'. The
    snapshot below is what a GPU worker wrote then; the CPU resumes it and trains on as from its own."""
    cfg = tiny.replace(epochs=3, conv_dropout=0.2, erasing=0.3)
    whole = fit(cfg, faces)
    snaps = Snapshots(tmp_path, stop_after=1)
    with pytest.raises(Cancelled):
        fit(cfg, faces, snaps)
    native = fit(cfg, faces, resume=snaps.last())
    state = snaps.last()   # loaded again: a resumed fit trains on in the tensors it was handed
    state["rng"] = {"torch": torch.get_rng_state(), "generator": torch.zeros(16, dtype=torch.uint8),
                    "cuda": torch.zeros(16, dtype=torch.uint8)}
    from_gpu = fit(cfg, faces, resume=state)
    assert [e["epoch"] for e in from_gpu.epochs] == [2, 3]
    for k, v in whole.model.state_dict().items():   # exact on one device, whatever the snapshot carried
        assert torch.equal(v, native.model.state_dict()[k]) and torch.equal(v, from_gpu.model.state_dict()[k]), k


def test_a_crash_right_after_an_early_stop_trains_no_further_epoch(faces, tiny, tmp_path):
    # no BatchNorm and a vanishing learning rate: val accuracy cannot improve after epoch 1, so patience 1 stops
    # the run after epoch 2 of 6
    cfg = tiny.replace(epochs=6, early_stopping=1, lr=1e-7, batchnorm=False)
    whole = fit(cfg, faces)
    assert whole.stopped_early and [e["epoch"] for e in whole.epochs] == [1, 2]
    snaps = Snapshots(tmp_path, crash_at_evaluation=True)
    with pytest.raises(RuntimeError, match="power"):
        fit(cfg, faces, snaps)
    state = snaps.last()
    assert state["epoch"] == 2 and state["stopped_early"]
    resumed = fit(cfg, faces, resume=state)
    assert resumed.epochs == [] and resumed.stopped_early and resumed.best_epoch == whole.best_epoch
    assert resumed.evaluations["val"]["confusion"] == whole.evaluations["val"]["confusion"]
