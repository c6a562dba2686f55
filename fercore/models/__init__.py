"""The model zoo: `build_model(config, num_classes)` and what the lab asks of a model.

    registry.py   the table of architectures, build_model, parameter counts, gradient/saliency layers
    custom.py     the configurable custom CNN (and the FC block the ImageNet heads share)
    backbones.py  torchvision ImageNet nets: transfer modes, gray input, offline pretrained weights
    weights.py    the ImageNet weights files: list, fetch, checked import, the preflight before queueing
"""
from fercore.models.backbones import WeightsUnavailable
from fercore.models.registry import (
                                     ARCH_BUILDERS,
                                     build_model,
                                     gradient_layers,
                                     model_info,
                                     saliency_target_layer,
                                     trainable_parameters,
)

__all__ = ["ARCH_BUILDERS", "WeightsUnavailable", "build_model", "gradient_layers", "model_info",
           "saliency_target_layer", "trainable_parameters"]
