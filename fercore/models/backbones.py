"""The torchvision ImageNet networks, adapted to 1-channel faces and to a transfer mode.

Each network becomes a `TransferNet`: the torchvision model with its ImageNet classifier removed
(`backbone`, giving pooled features) and a new classifier (`head`). Pretrained weights come from
torchvision's weights API but are never downloaded here: a class machine may have no internet, and a
run that silently trained from random weights would teach the wrong lesson. A missing file raises
`WeightsUnavailable` saying which file to put where.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import WeightsEnum

from fercore.config import RunConfig
from fercore.errors import WeightsUnavailable
from fercore.models.custom import fc_block, initialise_weights


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., nn.Module]   # the torchvision builder
    weights: WeightsEnum              # the ImageNet weights used by the transfer modes
    first_conv: str                   # replaced by a 1-channel conv for input_mode "gray"
    classifier: str                   # the ImageNet classifier, removed
    saliency_layer: str               # the module whose output is the last conv feature map (Grad-CAM)
    global_pool: str | None = None    # a pooling to replace by global average pooling


BACKBONES: dict[str, Backbone] = {
    # VGG's 7x7 adaptive pool would copy the 1x1 map of a 48px face 49 times into a 25088-wide vector;
    # global average pooling gives the 512 features a new head needs (Keras' pooling="avg").
    "vgg16": Backbone(tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1, "features.0", "classifier", "features.28",
                      global_pool="avgpool"),
    "resnet18": Backbone(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, "conv1", "fc", "layer4"),
    "resnet50": Backbone(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2, "conv1", "fc", "layer4"),
    "resnet101": Backbone(tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V2, "conv1", "fc", "layer4"),
    "efficientnet_b0": Backbone(tvm.efficientnet_b0, tvm.EfficientNet_B0_Weights.IMAGENET1K_V1, "features.0.0",
                                "classifier", "features.8"),
    "efficientnet_b2": Backbone(tvm.efficientnet_b2, tvm.EfficientNet_B2_Weights.IMAGENET1K_V1, "features.0.0",
                                "classifier", "features.8"),
}


@dataclass(frozen=True)
class TransferMode:
    pretrained: bool        # start the backbone from ImageNet weights
    freeze_backbone: bool   # backbone weights and BatchNorm statistics stay as loaded
    fc_block: bool          # new head: config.fc_units FC block (True) or a single Linear (False)


TRANSFER_MODES: dict[str, TransferMode] = {
    "scratch": TransferMode(pretrained=False, freeze_backbone=False, fc_block=True),
    "head": TransferMode(pretrained=True, freeze_backbone=True, fc_block=False),
    "frozen": TransferMode(pretrained=True, freeze_backbone=True, fc_block=True),
    "unfrozen": TransferMode(pretrained=True, freeze_backbone=False, fc_block=True),
}


class TransferNet(nn.Module):
    """backbone (pooled features) -> head; takes (N, 1, S, S) and adapts the channel itself."""

    def __init__(self, backbone: nn.Module, head: nn.Module, repeat_gray: bool, freeze_backbone: bool,
                 saliency_layer: str):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.repeat_gray = repeat_gray
        self.backbone_frozen = freeze_backbone
        self.saliency_layer = saliency_layer
        if freeze_backbone:
            backbone.requires_grad_(False)
            backbone.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat_gray:
            x = x.expand(-1, 3, -1, -1)   # a view: the gray channel seen as R, G and B
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> TransferNet:
        # A frozen feature extractor must not drift: its BatchNorm keeps using (and keeping) the
        # ImageNet running statistics, and its dropout stays off, whatever mode the trainer sets.
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def saliency_target_layer(self) -> nn.Module:
        return self.backbone.get_submodule(self.saliency_layer)


def build_transfer_net(arch: str, config: RunConfig, num_classes: int, pretrained: bool = True) -> TransferNet:
    """The ImageNet network `arch` in config.transfer mode with config.input_mode adaptation.

    pretrained=False builds the same architecture without reading the ImageNet weights: for restoring a
    saved checkpoint, which carries every weight itself.
    """
    spec, mode = BACKBONES[arch], TRANSFER_MODES[config.transfer]
    if mode.pretrained and pretrained:
        net = load_pretrained(spec)
    else:
        net = build_random(spec)
    if config.input_mode == "gray":
        old = net.get_submodule(spec.first_conv)
        net.set_submodule(spec.first_conv, gray_first_conv(old, sum_kernels=mode.pretrained))
    in_features = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1].out_channels  # pooled width
    widths = tuple(config.fc_units) if mode.fc_block else ()
    head = fc_block(in_features, widths, num_classes, config.fc_dropout)
    initialise_weights(head, config.init)
    if not mode.pretrained:
        initialise_weights(net, config.init)   # from scratch every layer is new
    return TransferNet(net, head, repeat_gray=config.input_mode == "rgb", freeze_backbone=mode.freeze_backbone,
                       saliency_layer=spec.saliency_layer)


def build_random(spec: Backbone) -> nn.Module:
    """The backbone with torchvision's random init, without initialising the classifier it drops.

    VGG16's ImageNet classifier holds 120 of its 138 million weights: drawing them only to throw them
    away costs seconds on every scratch build and every checkpoint restore. Without it, only convs and
    BatchNorms are left, and all three families draw those alike (He normal, fan_out; BN 1 and 0).
    """
    with torch.device("meta"):
        net = spec.build(weights=None)
    _remove_classifier(net, spec)
    known = (nn.Conv2d, nn.BatchNorm2d)
    if any(not isinstance(m, known) for m in net.modules() if any(True for _ in m.parameters(recurse=False))):
        net = spec.build(weights=None)   # a layer kind whose init we do not know: let torchvision draw it
        _remove_classifier(net, spec)
        return net
    net.to_empty(device="cpu")
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()   # weight 1, bias 0, running statistics reset
    return net


def _remove_classifier(net: nn.Module, spec: Backbone) -> None:
    net.set_submodule(spec.classifier, nn.Identity())
    if spec.global_pool:
        net.set_submodule(spec.global_pool, nn.AdaptiveAvgPool2d(1))


def gray_first_conv(conv: nn.Conv2d, sum_kernels: bool) -> nn.Conv2d:
    """A 1-channel copy of an RGB conv.

    Summing the pretrained R, G and B kernels (timm's in_chans=1) gives exactly the response the RGB conv
    had to a gray image copied to 3 channels, at a third of the first layer's cost. From scratch, the first
    input channel's kernels are kept: they are drawn like torchvision's own init for that conv.
    """
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        w = conv.weight.sum(dim=1, keepdim=True) if sum_kernels else conv.weight[:, :1]
        new.weight.copy_(w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def weights_file(weights: WeightsEnum) -> Path:
    """Where torch.hub keeps (and torchvision looks for) the downloaded file of `weights`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def fetch_command(weights: WeightsEnum) -> str:
    builder = weights.__class__.__name__.split("_Weights")[0].lower()
    return f"python -m fercore weights fetch {builder}"


def load_pretrained(spec: Backbone) -> nn.Module:
    """The torchvision model with its ImageNet weights from the torch.hub cache, classifier removed."""
    weights = spec.weights
    path = weights_file(weights)
    label = f"{weights.__class__.__name__}.{weights.name}"
    if not path.is_file():
        raise WeightsUnavailable(
            f"The pretrained weights {label} are not on this machine: put the file {path.name} into the folder "
            f"{path.parent} (run `{fetch_command(weights)}` where there is internet, then `python -m fercore "
            "weights import PATH` here with the file), or use transfer mode 'scratch'.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        raise WeightsUnavailable(f"The weights file {path} for {label} cannot be read ({e}); delete it and "
                                 f"fetch it again with `{fetch_command(weights)}`.") from None
    # Built on the meta device, the model skips its random init (seconds for VGG16); the file's tensors
    # then become its parameters. The ImageNet classifier is dropped before loading: it is replaced anyway.
    with torch.device("meta"):
        net = spec.build(weights=None)
    _remove_classifier(net, spec)
    dropped = spec.classifier + "."
    state = {k: v for k, v in state.items() if not k.startswith(dropped)} if isinstance(state, dict) else state
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsUnavailable(f"The file {path} does not hold the weights {label} ({first_line}); delete it "
                                 f"and fetch it again with `{fetch_command(weights)}`.") from None
    left_on_meta = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left_on_meta:   # a torchvision change added state the file does not carry
        raise WeightsUnavailable(f"The weights {label} do not cover {', '.join(left_on_meta[:3])} of this "
                                 "torchvision version's model.")
    return net
