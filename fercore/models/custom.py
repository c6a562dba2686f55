"""The configurable custom CNN, and the layers it shares with the new heads of the ImageNet nets.

Blocks of (conv -> BatchNorm -> activation) x convs_per_block, then pooling and dropout; then a fully
connected classifier. Modules are named so that per-layer reports read like the config:
`features.block2.conv1`, `classifier.fc1`, `classifier.out`.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fercore.config import RunConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}

POOLING: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _kaiming(weight: torch.Tensor) -> None:
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


def _xavier(weight: torch.Tensor) -> None:
    nn.init.xavier_uniform_(weight)


def _small_normal(weight: torch.Tensor) -> None:
    # The classic "small random numbers" init; deep nets train badly with it (a lesson on vanishing signals).
    nn.init.normal_(weight, mean=0.0, std=0.01)


# config.init -> how a conv/linear weight is drawn; None keeps PyTorch's (or torchvision's) own init.
INITIALISERS = {"default": None, "kaiming": _kaiming, "xavier": _xavier, "normal": _small_normal}


def initialise_weights(module: nn.Module, scheme: str) -> None:
    """Re-draw the conv and linear weights inside `module` by `scheme` (config.init); biases start at 0."""
    draw = INITIALISERS[scheme]
    if draw is None:
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            draw(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def fc_block(in_features: int, widths: tuple[int, ...], num_classes: int, dropout: float,
             activation: str = "relu", batchnorm: bool = False) -> nn.Sequential:
    """flatten -> (fc_i -> [bn_i] -> act_i -> [drop_i]) for each width -> out."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width_in = in_features
    for i, width in enumerate(widths, start=1):
        layers.append((f"fc{i}", nn.Linear(width_in, width, bias=not batchnorm)))
        if batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm1d(width)))
        layers.append((f"act{i}", ACTIVATIONS[activation]()))
        if dropout > 0:
            layers.append((f"drop{i}", nn.Dropout(dropout)))
        width_in = width
    layers.append(("out", nn.Linear(width_in, num_classes)))
    return nn.Sequential(OrderedDict(layers))


def block_filters(config: RunConfig) -> list[int]:
    """Filters of each conv block: config.filters, its last value repeated for the remaining blocks."""
    given = [int(f) for f in config.filters]
    return [given[min(i, len(given) - 1)] for i in range(config.conv_blocks)]


def conv_block(in_channels: int, out_channels: int, config: RunConfig) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    for i in range(1, config.convs_per_block + 1):
        # A conv followed by BatchNorm needs no bias: BN's shift replaces it.
        layers.append((f"conv{i}", nn.Conv2d(in_channels, out_channels, config.kernel_size,
                                             padding=config.kernel_size // 2, bias=not config.batchnorm)))
        if config.batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm2d(out_channels)))
        layers.append((f"act{i}", ACTIVATIONS[config.activation]()))
        in_channels = out_channels
    layers.append(("pool", POOLING[config.pooling](2)))
    if config.conv_dropout > 0:
        layers.append(("drop", nn.Dropout(config.conv_dropout)))
    return nn.Sequential(OrderedDict(layers))


class CustomCNN(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def saliency_target_layer(self) -> nn.Module:
        """The activation after the last conv: its output is the last feature map (for Grad-CAM)."""
        return [m for name, m in self.features[-1].named_children() if name.startswith("act")][-1]


def build_custom_cnn(config: RunConfig, num_classes: int, pretrained: bool = True) -> CustomCNN:
    """The custom CNN of `config` for 1-channel (N, 1, S, S) input; `pretrained` is ignored (none exist)."""
    filters = block_filters(config)
    blocks, in_channels = [], 1
    for i, out_channels in enumerate(filters, start=1):
        blocks.append((f"block{i}", conv_block(in_channels, out_channels, config)))
        in_channels = out_channels
    side = config.image_size // (2 ** config.conv_blocks)   # each 2x2 pooling floors the side
    classifier = fc_block(filters[-1] * side * side, tuple(config.fc_units), num_classes, config.fc_dropout,
                          config.activation, config.batchnorm)
    model = CustomCNN(nn.Sequential(OrderedDict(blocks)), classifier)
    initialise_weights(model, config.init)
    return model

