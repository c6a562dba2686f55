"""One entry point, `build_model`, and the table of architectures it looks names up in.

Also the questions the rest of the lab asks of any model: how big is it, what trains, which layers
have their gradient norms recorded, which layer Grad-CAM looks at.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from torch import nn

from fercore.config import ConfigError, RunConfig
from fercore.errors import ExplainError
from fercore.models.backbones import BACKBONES, build_transfer_net
from fercore.models.custom import build_custom_cnn

# A builder takes (config, num_classes, pretrained=True) and returns a model taking (N, 1, S, S) floats.
Builder = Callable[..., nn.Module]

ARCH_BUILDERS: dict[str, Builder] = {
    "custom": build_custom_cnn,
    **{arch: partial(build_transfer_net, arch) for arch in BACKBONES},
}


def build_model(config: RunConfig, num_classes: int, *, pretrained: bool = True) -> nn.Module:
    """The network `config` describes, with `num_classes` outputs.

    pretrained=False skips reading ImageNet weights (the architecture is the same): use it to restore a
    saved checkpoint, whose state dict carries every weight, on a machine without the ImageNet files.
    """
    builder = ARCH_BUILDERS.get(config.arch)
    if builder is None:
        raise ConfigError(f"There is no architecture named {config.arch!r}; choose one of {', '.join(ARCH_BUILDERS)}.")
    if num_classes < 2:
        raise ConfigError(f"A classifier needs at least 2 classes, not {num_classes}.")
    return builder(config, num_classes, pretrained=pretrained)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser should update (frozen backbones are left out)."""
    return [p for p in model.parameters() if p.requires_grad]


def model_info(model: nn.Module) -> dict:
    return {"n_params": sum(p.numel() for p in model.parameters()),
            "n_trainable": sum(p.numel() for p in trainable_parameters(model))}


def gradient_layers(model: nn.Module, max_layers: int = 16) -> list[tuple[str, nn.Module]]:
    """The trainable conv and linear layers whose weight-gradient norms the trainer records each epoch.

    Every linear layer (the classifier) is listed; conv layers are sampled evenly from the first to the
    last when there are too many (ResNet101 has 104), so a chart stays readable and still shows how the
    gradient changes with depth.
    """
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad]
    conv = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    room = max(max_layers - (len(layers) - len(conv)), 2)
    if len(conv) > room:
        dropped = set(conv) - {conv[i] for i in np.linspace(0, len(conv) - 1, room).round().astype(int)}
        layers = [(n, m) for n, m in layers if n not in dropped]
    return layers


def saliency_target_layer(model: nn.Module) -> nn.Module:
    """The module whose output is the last convolutional feature map: what Grad-CAM weighs."""
    own = getattr(model, "saliency_target_layer", None)
    if callable(own):
        return own()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ExplainError("This model has no convolutional layer for Grad-CAM.")
    return convs[-1]
