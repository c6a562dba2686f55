"""Presets: named recipes, each a set of changes to RunConfig's defaults.

The lab's own from-scratch recipes (`default`, `best`, `cpu-starter`) and the set-ups of the published
student reports on FER2013 that the lessons and the Train form start from.
"""
from __future__ import annotations

from fercore.config import RunConfig, applies, config_field, config_fields
from fercore.errors import ConfigError

# --- presets: the set-ups of the published student reports, and the lab's own recipes -------------
# Each is a dict of changes to RunConfig's defaults; `describe` says where it comes from.
PRESETS: dict[str, dict] = {
    "default": {
        "describe": "The lab's default from-scratch recipe: a VGG-style 4-block CNN (2 convs per block), "
                    "SGD with one-cycle, label smoothing, crop/rotation/erasing, flip TTA.",
        "config": dict(arch="custom", conv_blocks=4, filters=(64, 128, 256, 512), convs_per_block=2,
                       batchnorm=True, activation="relu", conv_dropout=0.1, fc_units=(512,), fc_dropout=0.4,
                       hflip=0.5, rotation=10.0, shift=0.1, zoom=0.1, erasing=0.25, optimizer="sgd", lr=0.05,
                       momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=128, epochs=40,
                       schedule="onecycle", cycle_momentum=True,
                       label_smoothing=0.1, tta="flip"),
    },
    "best": {
        "describe": "The lab's strongest from-scratch recipe: wider VGG-style CNN, mixup, longer one-cycle "
                    "schedule, ten-crop TTA.",
        "config": dict(arch="custom", conv_blocks=4, filters=(96, 192, 384, 768), convs_per_block=2,
                       conv_dropout=0.1, fc_units=(1024,), fc_dropout=0.5, hflip=0.5, rotation=15.0,
                       shift=0.1, zoom=0.15, erasing=0.4, mixup=0.2, optimizer="sgd", lr=0.05, momentum=0.9,
                       nesterov=True, weight_decay=5e-4, batch_size=128, epochs=120, schedule="onecycle",
                       cycle_momentum=True, label_smoothing=0.1, tta="tencrop"),
    },
    "cpu-starter": {
        "describe": "A VGG-style CNN for machines without a GPU: the shipped starter model's recipe (28 epochs on the "
                    "full FER2013 take about 78 minutes on a 2-core CPU with the machine to itself). Narrow first "
                    "block (24 filters at 48x48, where the cost is) and a wide last one (320 at 6x6).",
        "config": dict(arch="custom", conv_blocks=4, filters=(24, 64, 128, 320), convs_per_block=2,
                       conv_dropout=0.05, fc_units=(256,), fc_dropout=0.3, hflip=0.5, rotation=10.0,
                       shift=0.08, zoom=0.08, erasing=0.2, optimizer="adamw", lr=3e-3, weight_decay=5e-4,
                       batch_size=128, epochs=28, schedule="onecycle", cycle_momentum=True,
                       label_smoothing=0.1, tta="tencrop"),
    },
    "report-3class-hns": {
        "describe": "Report: 3-class happy/neutral/sad CNN (Conv+LeakyReLU+MaxPool, FC with dropout and "
                    "BatchNorm, blur/flip/rotation, 8 epochs, batch 32, lr 0.01 vs 0.001).",
        "config": dict(classes=("happy", "neutral", "sad"), conv_blocks=3, filters=(32, 64, 128),
                       convs_per_block=1, activation="leaky_relu", batchnorm=True, conv_dropout=0.0,
                       fc_units=(128,), fc_dropout=0.5, blur=0.3, hflip=0.5, rotation=10.0, optimizer="adam",
                       lr=1e-3, batch_size=32, epochs=8),
    },
    "report-3class-ahn": {
        "describe": "Report: 3-class angry/happy/neutral CNN (4 conv blocks with BN, LeakyReLU, dropout, "
                    "flip/rotation, Adam 1e-3, gradient clipping, batch 128, 20 epochs; reported 81-82 %).",
        "config": dict(classes=("angry", "happy", "neutral"), conv_blocks=4, filters=(32, 64, 128, 256),
                       convs_per_block=1, activation="leaky_relu", batchnorm=True, conv_dropout=0.25,
                       fc_units=(256,), fc_dropout=0.5, hflip=0.5, rotation=10.0, optimizer="adam", lr=1e-3,
                       grad_clip=1.0, batch_size=128, epochs=20),
    },
    "report-7class-4block": {
        "describe": "Report: 7-class 4-block CNN, dropout 0.25, lr 5e-4 and ReduceLROnPlateau "
                    "(reported ~57-69 %).",
        "config": dict(conv_blocks=4, filters=(64, 128, 256, 512), convs_per_block=1, conv_dropout=0.25,
                       fc_units=(256, 512), fc_dropout=0.25, optimizer="adam", lr=5e-4, schedule="plateau",
                       batch_size=64, epochs=30),
    },
    "report-4class-transfer": {
        "describe": "Report: 4-class happy/sad/neutral/surprise transfer study (VGG16/ResNet101/EfficientNet-B2, "
                    "frozen vs unfrozen, RGB vs grayscale). This preset is the ResNet101 unfrozen RGB arm.",
        "config": dict(classes=("happy", "sad", "neutral", "surprise"), arch="resnet101", transfer="unfrozen",
                       input_mode="rgb", image_size=96, optimizer="adam", lr=1e-4, batch_size=64, epochs=10,
                       fc_units=(256,), fc_dropout=0.5),
    },
    "report-7class-vgg16-weighted": {
        "describe": "Report: 7-class VGG16 with class weights, rotation/shift/zoom, Adam 1e-5, early stopping "
                    "and ReduceLROnPlateau (reported 55.8-68.3 %).",
        "config": dict(arch="vgg16", transfer="unfrozen", image_size=48, class_weights=True, rotation=15.0,
                       shift=0.1, zoom=0.1, optimizer="adam", lr=1e-5, batch_size=32, epochs=30,
                       early_stopping=5, schedule="plateau", fc_units=(256,), fc_dropout=0.5),
    },
    "report-7class-vggstyle": {
        "describe": "Report: 7-class VGG-style CNN with class weights, rotation/shift/zoom, batch 32, Adam 1e-5, "
                    "early stopping and ReduceLROnPlateau.",
        "config": dict(conv_blocks=4, filters=(64, 128, 256, 512), convs_per_block=2, conv_dropout=0.25,
                       fc_units=(512, 256), fc_dropout=0.5, class_weights=True, rotation=15.0, shift=0.1,
                       zoom=0.1, optimizer="adam", lr=1e-5, batch_size=32, epochs=30, early_stopping=5,
                       schedule="plateau"),
    },
}


def preset_config(name: str, **overrides) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"There is no preset named {name!r}; choose one of {', '.join(PRESETS)}.")
    return RunConfig.from_dict({**PRESETS[name]["config"], "preset": name, **overrides})


def device_preset(on_gpu: bool) -> str:
    """The lab's recipe for a machine: `default` where a GPU trains, the starter's `cpu-starter` on a CPU."""
    return "default" if on_gpu else "cpu-starter"


def describe_config(config: RunConfig, preset: str) -> str:
    """The preset's description while the config still is that preset (what to train on aside), else
    'Based on preset X, changed: ...' naming each setting that now differs and matters."""
    if preset not in PRESETS:
        return ""
    sets = PRESETS[preset]["config"]
    own = {f.name for f in config_fields() if f.metadata["group"] == "data" and f.name not in sets}
    changed = [k for k in preset_config(preset).diff(config) if k not in own | {"name", "preset"}
               and applies(k, config)]
    if not changed:
        return PRESETS[preset]["describe"]
    base = preset_config(preset)
    return f"Based on preset {preset}, changed: " + ", ".join(
        f"{_label(k).lower()} {_shown(k, getattr(config, k))} (was {_shown(k, getattr(base, k))})"
        for k in changed) + "."


def _label(name: str) -> str:
    return config_field(name).metadata["label"]


def _shown(name: str, value) -> str:
    labels = config_field(name).metadata["labels"]
    if isinstance(value, tuple):
        return ", ".join(map(str, value)) or "all"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(labels.get(value, f"{value:g}" if isinstance(value, float) else value))
