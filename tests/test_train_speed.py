"""The training step's machinery (issue 25): the bf16 path runs where the CPU has no native bf16 too (forced on), the
optimiser is fused on the CPU, per-layer gradient norms come from one foreach kernel, and the TTA views of a few
faces go through the network in one pass."""
import torch

import fercore.train as train
from fercore.augment import make_batch_transform
from fercore.config import RunConfig
from fercore.data.sources import load_source
from fercore.models import build_model, gradient_layers
from fercore.train import Recorder, fit, layer_grad_norms, make_optimizer, predict_probs


class Seen(Recorder):
    def on_start(self, info):
        self.device = info["device"]

    def on_epoch(self, record):
        self.record = record


def test_the_bf16_path_trains_when_forced_on_even_without_native_bf16(tiny, monkeypatch):
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert train.uses_amp(tiny, torch.device("cpu"))
    dtypes = set()
    real_build = train.build_model

    def build_and_watch(config, k):
        model = real_build(config, k)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype) if _m.training else None)
        return model

    monkeypatch.setattr(train, "build_model", build_and_watch)
    seen = Seen()
    result = fit(tiny.replace(epochs=1), load_source("synthetic:420"), recorder=seen, device="cpu")
    assert seen.device.startswith("cpu (bf16"), seen.device
    assert dtypes == {torch.bfloat16}, "the training step's convolutions ran under bf16 autocast"
    assert torch.isfinite(torch.tensor(seen.record["train_loss"])) and 0 <= result.evaluations["val"]["accuracy"] <= 1
    assert set(seen.record["grad_norms"]) == {name for name, _ in gradient_layers(result.model)}
    assert all(v > 0 for v in seen.record["grad_norms"].values())


def test_the_optimiser_is_fused_on_the_cpu():
    params = [torch.nn.Parameter(torch.zeros(3))]
    for name in ("sgd", "adam", "adamw"):
        opt = make_optimizer(RunConfig(optimizer=name), params, torch.device("cpu"))
        assert opt.defaults["fused"] is True, name


def test_layer_grad_norms_match_each_layers_own_norm_and_skip_frozen_layers(tiny):
    model = build_model(tiny, 3)
    model(torch.randn(4, 1, 48, 48)).sum().backward()
    layers = gradient_layers(model)
    layers[0][1].weight.grad = None   # a frozen layer: no gradient
    norms = layer_grad_norms(layers, torch.device("cpu"))
    assert norms[0] == 0
    for (_, m), n in zip(layers[1:], norms[1:]):
        assert torch.isclose(n, m.weight.grad.norm())


def test_ten_crop_views_of_a_few_faces_go_through_the_network_once(tiny):
    model = build_model(tiny, 3).eval()
    calls = []
    model.register_forward_hook(lambda _m, i, _o: calls.append(i[0].shape[0]))
    faces = torch.randint(0, 255, (2, 48, 48), dtype=torch.uint8)
    tf = make_batch_transform(tiny, 0.5, 0.25, train=False)
    together = predict_probs(model, faces, tf, 256, False, "tencrop")
    assert calls == [20], "ten views of two faces in one batch"
    calls.clear()
    one_by_one = predict_probs(model, faces, tf, 4, False, "tencrop")   # the views do not fit: one pass per view
    assert calls == [2] * 10
    assert torch.allclose(together, one_by_one, atol=1e-6) and torch.allclose(together.sum(1), torch.ones(2))
