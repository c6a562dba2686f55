"""RunConfig: the one description of a training run.

The form builds it, the CLI parses into it, the store keeps it as JSON, the trainer reads it and
the comparison diffs it. Adding a setting means adding a field here (with its help text and
allowed values) and using it where it matters; the CLI flags and the form read this table.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from fercore.errors import ConfigError

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 codes 0-6

ARCHS = ("custom", "vgg16", "resnet18", "resnet50", "resnet101", "efficientnet_b0", "efficientnet_b2")
TRANSFER_MODES = ("scratch", "head", "frozen", "unfrozen")
SPLIT_MODES = ("usage", "random", "val_from_train")
# Upper bounds of the custom CNN's and the FC block's sizes: far above any recipe (the widest preset has 768 filters
# and 1024 units), low enough that a typo or a crafted config cannot ask for billions of weights per layer.
MAX_FILTERS = 2048
MAX_FC_UNITS = 8192
MAX_LAYERS = 8
# Settings added since runs were first stored, whose default is not what the lab did before them: a config stored
# without one is read with the old behaviour, so that an old run's val and test stay the rows it was scored on.
STORED_BEFORE = {"split_copies": "ignore"}



CUSTOM = {"arch": ("custom",)}                   # `applies` conditions: a field matters only when these hold
IMAGENET = {"arch": ARCHS[1:]}
AUGMENTS = ("hflip", "rotation", "shift", "zoom", "blur", "erasing", "mixup")   # 0 = that augmentation is off
# What "augmentation on" sets when a config had none (the lessons' `augmentation on` arm, minus the zoom cost).
AUGMENTATION_ON = {"hflip": 0.5, "rotation": 10.0, "shift": 0.1, "zoom": 0.1}


def _f(default, label: str, help: str, choices: tuple | None = None, lo: float | None = None,
       hi: float | None = None, group: str = "optimisation", applies: dict | None = None, basic: bool = False,
       labels: dict | None = None):
    """A RunConfig field with its metadata: a readable `label` and `help`; allowed values (`choices`, with
    readable `labels`, or `lo`..`hi`); the form's `group`; `basic`: on the Train form's first view (what a
    student decides) rather than under Advanced; `applies`: {field: allowed values}, all of which must hold for
    the setting to matter (the form hides it otherwise, `--help` says when it applies)."""
    meta = {"label": label, "help": help, "choices": choices, "lo": lo, "hi": hi, "group": group,
            "applies": applies or {}, "basic": basic, "labels": labels or {}}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda d=tuple(default): d, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    # --- data
    data: str = _f("synthetic", "Dataset", "Dataset name (see `data list`) or a path to import.", group="data",
                   basic=True)
    classes: tuple = _f((), "Classes", "Class subset, e.g. happy,neutral,sad. Empty means all classes.",
                        group="data", basic=True)
    split: str = _f("usage", "How to split", "usage: the source's own splits (FER2013 Usage); random: a stratified "
                    "random split of everything (split_ratios); val_from_train: the source's own test kept, a "
                    "stratified val (val_fraction) carved out of train only, for downloads that ship train/test "
                    "only.", choices=SPLIT_MODES, group="data",
                    labels={"usage": "the source's own splits", "random": "a random split of everything",
                            "val_from_train": "own test kept, val carved from train"})
    split_ratios: tuple = _f((0.8, 0.1, 0.1), "Train/val/test ratios",
                             "Train/val/test ratios for a random split (2 or 3 numbers).", group="data",
                             applies={"split": ("random",)})
    val_fraction: float = _f(0.1, "Share carved out as val",
                             "Share of the training images carved out as val (split=val_from_train).",
                             lo=0.01, hi=0.5, group="data", applies={"split": ("val_from_train",)})
    split_seed: int = _f(0, "Split seed", "Seed of the random split or of the carved val.", lo=0, group="data",
                         applies={"split": ("random", "val_from_train")})
    split_copies: str = _f("near", "Copies of one image", "How the random and val_from_train splits treat copies of "
                           "one image: near: every copy, pixel-identical or near (re-saved, re-cropped), lands in one "
                           "split; exact: only pixel-identical copies kept together; ignore: image by image, so copies "
                           "leak across splits (runs from before this setting keep it).",
                           choices=("near", "exact", "ignore"), group="data",
                           applies={"split": ("random", "val_from_train")},
                           labels={"near": "kept together, near copies too", "exact": "identical copies kept together",
                                   "ignore": "split image by image (copies leak)"})
    data_fraction: float = _f(1.0, "Share of the training images",
                              "Fraction of the training images to use (for quick CPU runs).",
                              lo=0.001, hi=1.0, group="data", basic=True)
    # --- architecture
    arch: str = _f("custom", "Model", "Network architecture: the lab's configurable CNN trained from scratch, or a "
                   "network pretrained on ImageNet photos.", choices=ARCHS, group="architecture", basic=True,
                   labels={"custom": "Custom CNN", "vgg16": "VGG16 (ImageNet)", "resnet18": "ResNet18 (ImageNet)",
                           "resnet50": "ResNet50 (ImageNet)", "resnet101": "ResNet101 (ImageNet)",
                           "efficientnet_b0": "EfficientNet-B0 (ImageNet)",
                           "efficientnet_b2": "EfficientNet-B2 (ImageNet)"})
    conv_blocks: int = _f(4, "Conv blocks", "Custom CNN: number of conv blocks (each ends in pooling).", lo=1, hi=8,
                          group="architecture", applies=CUSTOM)
    filters: tuple = _f((64, 128, 256, 512), "Filters per block",
                        "Custom CNN: filters per block (the last value repeats).", group="architecture",
                        applies=CUSTOM)
    convs_per_block: int = _f(2, "Convs per block", "Custom CNN: conv layers in each block.", lo=1, hi=4,
                              group="architecture", applies=CUSTOM)
    kernel_size: int = _f(3, "Kernel size", "Custom CNN: convolution kernel size.", choices=(3, 5, 7),
                          group="architecture", applies=CUSTOM)
    batchnorm: bool = _f(True, "BatchNorm", "Custom CNN: BatchNorm after each conv and FC layer.",
                         group="architecture", applies=CUSTOM)
    activation: str = _f("relu", "Activation", "Custom CNN: activation function.",
                         choices=("relu", "leaky_relu", "elu", "sigmoid", "tanh"), group="architecture",
                         applies=CUSTOM)
    pooling: str = _f("max", "Pooling", "Custom CNN: pooling at the end of each block.", choices=("max", "avg"),
                      group="architecture", applies=CUSTOM)
    conv_dropout: float = _f(0.25, "Dropout after conv blocks", "Custom CNN: dropout after each conv block.",
                             lo=0.0, hi=0.9, group="architecture", applies=CUSTOM)
    fc_units: tuple = _f((256,), "Fully connected widths", "Widths of the fully connected layers (of the custom "
                         "CNN, or of the new FC block on an ImageNet net).", group="architecture",
                         applies={"transfer": ("scratch", "frozen", "unfrozen")})
    fc_dropout: float = _f(0.5, "Dropout in the FC part",
                           "Dropout in the fully connected part (also the new head of ImageNet nets).",
                           lo=0.0, hi=0.9, group="architecture")
    init: str = _f("default", "Weight initialisation", "Weight initialisation of trainable new layers.",
                   choices=("default", "kaiming", "xavier", "normal"), group="architecture")
    # --- transfer (ImageNet nets)
    transfer: str = _f("scratch", "Pretrained weights", "scratch: random init; head: only a new linear classifier "
                       "trains; frozen: pretrained features frozen, a new FC block trains; unfrozen: everything "
                       "trains (fine-tuned).", choices=TRANSFER_MODES, group="transfer", applies=IMAGENET,
                       basic=True, labels={"scratch": "not used (from scratch)", "head": "frozen, new classifier only",
                                           "frozen": "frozen, new FC block trains",
                                           "unfrozen": "fine-tuned (everything trains)"})
    input_mode: str = _f("rgb", "Gray input as", "rgb: grayscale copied to 3 channels; gray: first conv summed to "
                         "1 channel.", choices=("rgb", "gray"), group="transfer", applies=IMAGENET,
                         labels={"rgb": "copied to 3 channels", "gray": "1-channel first conv"})
    image_size: int = _f(48, "Image size (px)", "Input size the images are resized to (ImageNet nets like 96-224).",
                         lo=32, hi=320, group="transfer")
    # --- preprocessing and augmentation
    normalize: str = _f("standard", "Pixel scaling", "Pixel scaling: unit 0..1, sym -1..1, standard (dataset "
                        "mean/std).", choices=("unit", "sym", "standard"), group="augmentation",
                        labels={"unit": "0..1", "sym": "-1..1", "standard": "dataset mean/std"})
    hflip: float = _f(0.5, "Flip probability", "Probability of a horizontal flip.", lo=0.0, hi=1.0,
                      group="augmentation")
    rotation: float = _f(10.0, "Rotation (degrees)", "Maximum rotation in degrees.", lo=0.0, hi=90.0,
                         group="augmentation")
    shift: float = _f(0.0, "Shift", "Maximum shift as a fraction of the image size.", lo=0.0, hi=0.5,
                      group="augmentation")
    zoom: float = _f(0.0, "Zoom", "Maximum zoom in/out as a fraction (random resized crop).", lo=0.0, hi=0.5,
                     group="augmentation")
    blur: float = _f(0.0, "Blur probability", "Probability of a Gaussian blur (sigma 0.1-1.5).", lo=0.0, hi=1.0,
                     group="augmentation")
    erasing: float = _f(0.0, "Erasing probability", "Probability of random erasing of a patch.", lo=0.0, hi=1.0,
                        group="augmentation")
    mixup: float = _f(0.0, "Mixup alpha", "Mixup alpha (0 = off).", lo=0.0, hi=2.0, group="augmentation")
    tta: str = _f("none", "Test-time augmentation", "Test-time augmentation used by evaluation.",
                  choices=("none", "flip", "tencrop"), group="augmentation",
                  labels={"none": "none", "flip": "flip (2 views)", "tencrop": "ten crops"})
    # --- optimisation
    optimizer: str = _f("adam", "Optimiser", "Optimiser.", choices=("adam", "adamw", "sgd"),
                        labels={"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"})
    lr: float = _f(1e-3, "Learning rate", "Learning rate (peak rate for one-cycle).", lo=1e-7, hi=100.0, basic=True)
    momentum: float = _f(0.9, "Momentum", "SGD momentum.", lo=0.0, hi=0.999, applies={"optimizer": ("sgd",)})
    nesterov: bool = _f(False, "Nesterov momentum", "SGD with Nesterov momentum.", applies={"optimizer": ("sgd",)})
    weight_decay: float = _f(0.0, "Weight decay", "Weight decay.", lo=0.0, hi=1.0)
    batch_size: int = _f(128, "Batch size", "Batch size.", lo=1, hi=4096)
    epochs: int = _f(20, "Epochs", "Maximum number of epochs.", lo=1, hi=1000, basic=True)
    schedule: str = _f("constant", "Learning-rate schedule", "Learning-rate schedule.",
                       choices=("constant", "plateau", "cosine", "onecycle"),
                       labels={"constant": "constant", "plateau": "lower on a plateau", "cosine": "cosine decay",
                               "onecycle": "one-cycle"})
    plateau_patience: int = _f(3, "Plateau patience (epochs)",
                               "ReduceLROnPlateau: epochs without val improvement before the LR drops.",
                               lo=1, hi=100, applies={"schedule": ("plateau",)})
    plateau_factor: float = _f(0.5, "Plateau factor", "ReduceLROnPlateau: factor the LR is multiplied by.",
                               lo=0.01, hi=0.99, applies={"schedule": ("plateau",)})
    early_stopping: int = _f(0, "Early stopping patience",
                             "Stop after this many epochs without val-accuracy improvement (0 = off).", lo=0, hi=1000)
    grad_clip: float = _f(0.0, "Gradient clipping", "Clip the gradient norm to this value (0 = off).", lo=0.0,
                          hi=1000.0)
    label_smoothing: float = _f(0.0, "Label smoothing", "Label smoothing of the cross-entropy.", lo=0.0, hi=0.5,
                                applies={"loss": ("ce",)})
    class_weights: bool = _f(False, "Class weights", "Weight the loss by inverse class frequency (for imbalance).")
    loss: str = _f("ce", "Loss", "Loss: cross-entropy, or mean squared error on one-hot targets.",
                   choices=("ce", "mse"), labels={"ce": "cross-entropy", "mse": "mean squared error"})
    seed: int = _f(0, "Random seed", "Random seed of initialisation, shuffling and augmentation.", lo=0)
    cycle_momentum: bool = _f(False, "Cycle momentum", "One-cycle: also cycle the momentum (SGD) or Adam's beta1 "
                              "inversely to the learning rate; off keeps the configured momentum.",
                              applies={"schedule": ("onecycle",)})
    amp: bool = _f(True, "Mixed precision", "Mixed precision (bf16 autocast) on a GPU, and on a CPU that computes "
                   "bf16 natively (AVX-512 BF16 or AMX); elsewhere fp32.")
    compile: bool = _f(False, "torch.compile", "torch.compile the network (slow first epoch; helps larger nets on a "
                       "GPU, measured no gain for the small CNNs on a CPU).")
    # --- bookkeeping
    name: str = _f("", "Run name", "Run name (optional).", group="run", basic=True)
    preset: str = _f("", "Preset", "Preset the config started from (informational).", group="run")

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            meta = f.metadata
            if meta.get("choices") and v not in meta["choices"]:
                raise ConfigError(f"{f.name} must be one of {', '.join(map(str, meta['choices']))}, not {v!r}.")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if meta.get("lo") is not None and v < meta["lo"]:
                    raise ConfigError(f"{f.name} must be at least {meta['lo']}, not {v}.")
                if meta.get("hi") is not None and v > meta["hi"]:
                    raise ConfigError(f"{f.name} must be at most {meta['hi']}, not {v}.")
        if not self.filters or any(int(x) < 1 for x in self.filters):
            raise ConfigError("filters must be a list of positive numbers of channels.")
        if len(self.filters) > MAX_LAYERS or any(int(x) > MAX_FILTERS for x in self.filters):
            raise ConfigError(f"filters may list at most {MAX_LAYERS} blocks of at most {MAX_FILTERS} channels each, "
                              f"not {','.join(map(str, self.filters))}.")
        if any(int(x) < 1 for x in self.fc_units):
            raise ConfigError("fc_units must be positive widths.")
        if len(self.fc_units) > MAX_LAYERS or any(int(x) > MAX_FC_UNITS for x in self.fc_units):
            raise ConfigError(f"fc_units may list at most {MAX_LAYERS} layers of at most {MAX_FC_UNITS} units each, "
                              f"not {','.join(map(str, self.fc_units))}.")
        if self.split == "random":
            r = self.split_ratios
            if len(r) not in (2, 3) or any(x <= 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
                raise ConfigError("split_ratios must be 2 or 3 positive numbers summing to 1, e.g. 0.8,0.1,0.1.")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError("classes lists a class twice.")
        if self.classes and len(self.classes) < 2:
            raise ConfigError("A class subset needs at least 2 classes.")
        if self.arch == "custom" and self.transfer != "scratch":
            raise ConfigError("The custom CNN has no pretrained weights: use transfer mode 'scratch'.")
        if self.arch == "custom":
            min_side = self.image_size // (2 ** self.conv_blocks)
            if min_side < 1:
                raise ConfigError(f"{self.conv_blocks} pooling blocks shrink a {self.image_size}px image to "
                                  "nothing; use fewer blocks or a larger image size.")

    # --- conversions
    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"Unknown config setting(s): {', '.join(unknown)}.")
        return cls(**{k: coerce(known[k], v) for k, v in d.items()})

    @classmethod
    def from_stored(cls, d: dict) -> RunConfig:
        """A config as an older version of the lab stored it: settings it no longer has are dropped, settings
        added since take their defaults, or what the lab did before them (STORED_BEFORE)."""
        known = {f.name for f in fields(cls)}
        return cls.from_dict({**STORED_BEFORE, **{k: v for k, v in d.items() if k in known}})

    def replace(self, **changes) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def diff(self, other: RunConfig) -> dict[str, tuple[Any, Any]]:
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def config_fields():
    """The fields with their metadata, for the CLI and the Train form."""
    return fields(RunConfig)


def config_field(name: str) -> dataclasses.Field:
    return next(f for f in fields(RunConfig) if f.name == name)


def applies(f: dataclasses.Field | str, values) -> bool:
    """Whether a setting matters for a config (a RunConfig or a form's raw {field: value}): every condition of
    its `applies` metadata holds. A setting that does not apply keeps its value but changes nothing."""
    f = config_field(f) if isinstance(f, str) else f
    get = values.get if isinstance(values, dict) else lambda k, d=None: getattr(values, k, d)
    return all(str(get(k, field_default(config_field(k)))) in {str(v) for v in allowed}
               for k, allowed in f.metadata["applies"].items())


def applies_text(f: dataclasses.Field) -> str:
    """'only when optimizer is sgd', for `--help` and the form's help ('' when the setting always applies)."""
    return "; ".join(f"only when {k.replace('_', ' ')} is {' or '.join(map(str, allowed))}"
                     for k, allowed in f.metadata["applies"].items())


def augmentation_on(values) -> bool:
    """Whether a config (or a form's raw values) augments its training images at all."""
    get = values.get if isinstance(values, dict) else lambda k, d=None: getattr(values, k, d)
    return any(float(get(k, 0) or 0) > 0 for k in AUGMENTS)


def field_default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn a value from JSON, a CLI string or a form into the field's type, with a plain error."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            items = list(value)
            if f.name in ("filters", "fc_units"):
                return tuple(int(x) for x in items)
            if f.name == "split_ratios":
                return tuple(float(x) for x in items)
            return tuple(str(x) for x in items)
        if isinstance(default, int):
            fv = float(value)
            if fv != int(fv):
                raise ValueError(value)
            return int(fv)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):   # OverflowError: an infinite number where an int belongs
        raise ConfigError(f"{f.name} got {value!r}, which is not a valid {type(default).__name__}.") from None
