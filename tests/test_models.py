"""The model zoo: shapes, what trains in each transfer mode, gray input, and offline pretrained weights.

Pretrained weights are faked: a random state dict with the keys and shapes of torchvision's ImageNet file
is saved under the file name torchvision expects, in a private torch hub folder.
"""
import pytest
import torch
import torchvision
from torch import nn

from fercore.config import ARCHS, TRANSFER_MODES, ConfigError, RunConfig
from fercore.models import (
    ARCH_BUILDERS,
    WeightsUnavailable,
    build_model,
    gradient_layers,
    model_info,
    saliency_target_layer,
    trainable_parameters,
)
from fercore.models.backbones import BACKBONES, weights_file

IMAGENET_ARCHS = [a for a in ARCHS if a != "custom"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny: threads only add overhead, and on a busy CPU OpenMP's spin-waiting makes a
    # 2-thread forward pass of ResNet18 40x slower than a 1-thread one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fake_imagenet_state(arch: str) -> dict:
    """A state dict shaped like torchvision's ImageNet file for `arch`, with random (He-scaled) weights.

    Drawn tensor by tensor from a meta-device model, which skips torchvision's slow init (seconds for
    VGG16). The ImageNet classifier, which the model zoo drops, is stored as one repeated zero so the
    file stays small (VGG16's classifier alone is 400 MB).
    """
    with torch.device("meta"):
        shapes = torchvision.models.get_model(arch).state_dict()
    dropped = BACKBONES[arch].classifier + "."
    state = {}
    for name, t in shapes.items():
        if name.startswith(dropped):
            state[name] = torch.zeros((), dtype=t.dtype).expand(t.shape)
        elif t.dim() > 1:
            state[name] = torch.randn(t.shape) * (2 / t[0].numel()) ** 0.5
        elif name.endswith(("running_var", "weight")):
            state[name] = 1 + 0.1 * torch.rand(t.shape)
        else:   # biases, running means, num_batches_tracked
            state[name] = (0.1 * torch.randn(t.shape)).to(t.dtype)
    return state


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory):
    """A torch hub folder; `ensure(arch)` saves fake ImageNet weights for `arch` into it (once)."""
    root = tmp_path_factory.mktemp("hub")

    def ensure(arch: str):
        path = root / "checkpoints" / weights_file(BACKBONES[arch].weights).name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(0)
            torch.save(fake_imagenet_state(arch), path)
        return path

    return root, ensure


@pytest.fixture
def hub(fake_hub, monkeypatch):
    root, ensure = fake_hub
    monkeypatch.setenv("TORCH_HOME", str(root.parent))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)   # restored after the test
    torch.hub.set_dir(str(root))
    return ensure


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub"


def config(arch="custom", **kw) -> RunConfig:
    base = dict(arch=arch, fc_units=(16,), image_size=32) if arch != "custom" else \
        dict(conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,))
    return RunConfig(**{**base, **kw})


def one_step(model: nn.Module, image_size: int, num_classes: int = 3) -> torch.Tensor:
    """A training step on a batch of 3; returns the loss."""
    model.train()
    optimiser = torch.optim.SGD(trainable_parameters(model), lr=0.1)
    x = torch.randn(3, 1, image_size, image_size)
    logits = model(x)
    assert logits.shape == (3, num_classes)
    loss = nn.functional.cross_entropy(logits, torch.arange(3) % num_classes)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return loss


def test_registry_has_every_architecture_of_the_config():
    assert set(ARCH_BUILDERS) == set(ARCHS)


# --- custom CNN --------------------------------------------------------------------------------

@pytest.mark.parametrize("blocks, size", [(1, 48), (3, 48), (5, 48), (4, 32), (2, 40)])
def test_custom_cnn_any_depth_and_size(blocks, size):
    c = RunConfig(conv_blocks=blocks, filters=(4, 8), convs_per_block=2, fc_units=(8, 8), image_size=size)
    model = build_model(c, 5)
    one_step(model, size, num_classes=5)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 * blocks
    assert [m.out_channels for m in convs[::2]] == [4, 8, 8, 8, 8][:blocks]   # last filter count repeats
    assert convs[0].in_channels == 1


def test_custom_cnn_names_read_like_the_config():
    model = build_model(config(convs_per_block=2, fc_units=(32, 16)), 3)
    names = [n for n, _ in gradient_layers(model)]
    assert names == ["features.block1.conv1", "features.block1.conv2", "features.block2.conv1",
                     "features.block2.conv2", "classifier.fc1", "classifier.fc2", "classifier.out"]
    assert saliency_target_layer(model) is model.features.block2.act2


@pytest.mark.parametrize("activation, cls", [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("elu", nn.ELU),
                                             ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh)])
def test_custom_cnn_activation(activation, cls):
    model = build_model(config(activation=activation), 3)
    assert sum(isinstance(m, cls) for m in model.modules()) == 3   # 2 conv blocks + 1 FC layer


def test_custom_cnn_switches():
    plain = build_model(config(batchnorm=False, conv_dropout=0.0, fc_dropout=0.0, pooling="avg"), 3)
    kinds = {type(m) for m in plain.modules()}
    assert nn.BatchNorm2d not in kinds and nn.Dropout not in kinds and nn.AvgPool2d in kinds
    assert plain.features.block1.conv1.bias is not None        # no BN: the conv keeps its bias
    full = build_model(config(batchnorm=True, conv_dropout=0.3, fc_dropout=0.5), 3)
    assert isinstance(full.features.block1.bn1, nn.BatchNorm2d) and full.features.block1.conv1.bias is None
    assert isinstance(full.classifier.bn1, nn.BatchNorm1d) and full.classifier.drop1.p == 0.5
    assert full.features.block1.drop.p == 0.3 and isinstance(full.features.block1.pool, nn.MaxPool2d)
    assert build_model(config(kernel_size=5), 3).features.block1.conv1.kernel_size == (5, 5)


def test_custom_cnn_init_schemes_differ():
    def first_weight_std(init):
        torch.manual_seed(0)
        return build_model(config(init=init, filters=(64, 64)), 3).features.block2.conv1.weight.std().item()
    fan_in = 64 * 9
    assert first_weight_std("normal") == pytest.approx(0.01, rel=0.1)
    assert first_weight_std("kaiming") == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    assert first_weight_std("xavier") == pytest.approx((2 / (fan_in + 64 * 9)) ** 0.5, rel=0.1)
    assert first_weight_std("default") == pytest.approx((1 / (3 * fan_in)) ** 0.5, rel=0.1)


def test_custom_cnn_every_parameter_trains_and_info_counts_them():
    model = build_model(config(), 3)
    before = [p.detach().clone() for p in model.parameters()]
    one_step(model, 48)
    assert all(p.grad is not None for p in model.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    info = model_info(model)
    assert info["n_params"] == info["n_trainable"] == sum(p.numel() for p in model.parameters()) > 0


def test_build_model_rejects_fewer_than_two_classes():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model(config(), 1)


# --- ImageNet nets ---------------------------------------------------------------------------------

def check_transfer_mode(arch: str, mode: str, model: nn.Module) -> None:
    """One optimiser step; the right parameters get gradients; a frozen backbone does not move at all."""
    backbone_params = dict(model.backbone.named_parameters())
    backbone_before = {n: p.detach().clone() for n, p in backbone_params.items()}
    bn_before = {n: b.detach().clone() for n, b in model.backbone.named_buffers()}
    loss = one_step(model, 32)
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.head.parameters())
    frozen = mode in ("head", "frozen")
    if frozen:
        assert all(p.grad is None and not p.requires_grad for p in backbone_params.values())
        assert all(torch.equal(backbone_before[n], p) for n, p in backbone_params.items())
        assert all(torch.equal(bn_before[n], b) for n, b in model.backbone.named_buffers())   # BN stats kept
        assert model.training and not any(m.training for m in model.backbone.modules())
        assert model_info(model)["n_trainable"] == sum(p.numel() for p in model.head.parameters())
        assert [n for n, _ in gradient_layers(model)] == [f"head.{n}" for n, m in model.head.named_modules()
                                                           if isinstance(m, nn.Linear)]
    else:
        assert all(p.grad is not None for p in backbone_params.values())
        assert model_info(model)["n_trainable"] == model_info(model)["n_params"]
        assert not all(torch.equal(backbone_before[n], p) for n, p in backbone_params.items())
        assert 3 <= len(gradient_layers(model)) <= 16
    if mode == "scratch":   # the init build_random reproduces covers every layer left after the classifier
        kinds = {type(m) for m in model.backbone.modules() if any(True for _ in m.parameters(recurse=False))}
        assert kinds <= {nn.Conv2d, nn.BatchNorm2d}
    head_linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert len(head_linears) == (1 if mode == "head" else 2)   # a new Linear, or the FC block (16) + out
    assert isinstance(saliency_target_layer(model), nn.Module)


def check_gray_first_conv(arch: str, model: nn.Module, weights_path) -> None:
    spec = BACKBONES[arch]
    conv = model.backbone.get_submodule(spec.first_conv)
    rgb = torch.load(weights_path, weights_only=True)[spec.first_conv + ".weight"]
    assert conv.in_channels == 1 and rgb.shape[1] == 3
    assert torch.allclose(conv.weight, rgb.sum(dim=1, keepdim=True))


LIGHT = ["resnet18", "efficientnet_b0"]
HEAVY = [a for a in IMAGENET_ARCHS if a not in LIGHT]   # seconds each to construct on a CPU


@pytest.mark.parametrize("mode", TRANSFER_MODES)
@pytest.mark.parametrize("arch", LIGHT)
def test_transfer_modes_light_archs(hub, arch, mode):
    path = hub(arch)
    check_transfer_mode(arch, mode, build_model(config(arch, transfer=mode), 3))
    if mode != "scratch":
        check_gray_first_conv(arch, build_model(config(arch, transfer=mode, input_mode="gray"), 3), path)


@pytest.mark.parametrize("arch", HEAVY)
def test_transfer_modes_heavy_archs(hub, arch):
    path = hub(arch)
    for mode in TRANSFER_MODES:
        check_transfer_mode(arch, mode, build_model(config(arch, transfer=mode), 3))
    check_gray_first_conv(arch, build_model(config(arch, transfer="frozen", input_mode="gray"), 3), path)


@pytest.mark.parametrize("arch", LIGHT)
def test_gray_input_gives_the_same_features_as_rgb(hub, arch):
    """Summing the RGB kernels is exact: a gray image seen as RGB gives the same pooled features."""
    hub(arch)
    rgb = build_model(config(arch, transfer="frozen", input_mode="rgb"), 3).eval()
    gray = build_model(config(arch, transfer="frozen", input_mode="gray"), 3).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rgb.backbone(x.expand(-1, 3, -1, -1)), gray.backbone(x), atol=1e-4, rtol=1e-4)
    scratch_gray = build_model(config(arch, transfer="scratch", input_mode="gray"), 3)
    assert scratch_gray.backbone.get_submodule(BACKBONES[arch].first_conv).in_channels == 1
    one_step(scratch_gray, 32)


def test_pretrained_weights_are_really_loaded(hub):
    path = hub("resnet18")
    model = build_model(config("resnet18", transfer="unfrozen"), 3)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(model.backbone.layer3[1].conv2.weight, saved["layer3.1.conv2.weight"])
    assert torch.equal(model.backbone.bn1.running_var, saved["bn1.running_var"])


@pytest.mark.parametrize("arch", IMAGENET_ARCHS)
def test_missing_weights_name_the_file_and_the_folder(empty_hub, arch):
    weights = BACKBONES[arch].weights
    with pytest.raises(WeightsUnavailable) as err:
        build_model(config(arch, transfer="frozen"), 3)
    message = str(err.value)
    assert weights_file(weights).name in message and str(empty_hub / "checkpoints") in message
    assert f"{type(weights).__name__}.{weights.name}" in message and "\n" not in message
    assert isinstance(err.value, RuntimeError)


def test_scratch_and_restoring_need_no_weights_file(empty_hub):
    build_model(config("resnet18", transfer="scratch"), 3)
    build_model(config("resnet18", transfer="head"), 3, pretrained=False)
    assert not (empty_hub / "checkpoints").exists()   # nothing was downloaded


def test_a_checkpoint_restores_without_the_imagenet_file(hub, tmp_path):
    hub("resnet18")
    c = config("resnet18", transfer="frozen", input_mode="gray")
    trained = build_model(c, 3).eval()
    torch.hub.set_dir(str(tmp_path / "no-weights-here"))
    restored = build_model(c, 3, pretrained=False)
    restored.load_state_dict(trained.state_dict())
    restored.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(trained(x), restored(x))
    assert model_info(restored) == model_info(trained)


def test_broken_weights_file_is_a_plain_error(empty_hub):
    path = weights_file(BACKBONES["resnet18"].weights)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="cannot be read"):
        build_model(config("resnet18", transfer="head"), 3)
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsUnavailable, match="does not hold the weights"):
        build_model(config("resnet18", transfer="head"), 3)


@pytest.mark.parametrize("arch", LIGHT)
def test_scratch_init_matches_torchvision(arch):
    """Scratch backbones are drawn like torchvision's own (build_random skips only the dropped classifier)."""
    torch.manual_seed(0)
    ours = build_model(config(arch, transfer="scratch"), 3).backbone.state_dict()
    theirs = torchvision.models.get_model(arch).state_dict()
    for name, t in ours.items():
        if t.dtype.is_floating_point and t.numel() > 100:
            assert t.std().item() == pytest.approx(theirs[name].std().item(), rel=0.2, abs=1e-6), name
            mean_tolerance = 5 * t.std().item() / t.numel() ** 0.5 + 1e-6
            assert abs(t.mean().item() - theirs[name].mean().item()) <= mean_tolerance, name
