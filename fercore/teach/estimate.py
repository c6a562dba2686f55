"""Honest time estimates for a set of runs before they start: a simple cost model, not a measurement."""
from __future__ import annotations

from fercore.config import EMOTIONS, RunConfig
from fercore.fmt import duration

# Training images per class of the datasets a class usually picks (FER2013 Training split; the synthetic
# set is balanced, 80 % of its images train). Unknown names are assumed FER2013-sized.
FER2013_TRAIN = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171,
                 "neutral": 4965}
FER2013_VAL_SHARE = 3589 / 28709
# Effective training throughput, FLOPs per second, and a fixed cost per optimiser step (kernel launches,
# the optimiser, Python). The lessons' small CNN trained at 26-56 GFLOP/s on a shared 2-core laptop-class CPU
# (batch 4-128), so 30 is a slightly pessimistic middle; the GPU numbers are conservative guesses for small
# 48-96 px nets, which use a small part of a modern GPU.
RATES = {"cpu": {"flops": 30e9, "step_s": 0.004}, "gpu": {"flops": 20e12, "step_s": 0.003}}
# Multiply-adds of one 224 px forward pass, from torchvision's weights metadata (`meta["_ops"]`), copied
# here so that `lesson list` does not import torchvision (seconds on a laptop).
IMAGENET_GMACS = {"vgg16": 15.47, "resnet18": 1.814, "resnet50": 4.089, "resnet101": 7.801,
                  "efficientnet_b0": 0.386, "efficientnet_b2": 1.088}
BACKWARD_FACTOR = 3.0   # forward + backward ~ 3 forward passes when every layer trains


def train_class_counts(config: RunConfig, store=None) -> tuple[dict, str]:
    """Training images per class of the whole dataset (before `data_fraction`), for the config's classes, and
    where the numbers come from."""
    info = store.dataset_info(config.data) if store is not None else None
    if info:
        counts, basis = dict(info.class_counts["train"]), f"dataset {config.data!r}"
    elif config.data.startswith("synthetic"):
        n = int(config.data.split(":")[1]) if ":" in config.data else 2100
        counts, basis = {c: 0.8 * n / len(EMOTIONS) for c in EMOTIONS}, f"synthetic ({n} faces)"
    else:
        counts, basis = FER2013_TRAIN, "assumed FER2013-sized (28,709 training images)"
    if config.classes:
        counts = {c: v for c, v in counts.items() if c in config.classes}
    return counts, basis


def train_images(config: RunConfig, store=None) -> tuple[int, str]:
    """Training images per epoch for this config, and where the number comes from."""
    counts, basis = train_class_counts(config, store)
    return int(sum(counts.values()) * config.data_fraction), basis


def forward_flops(config: RunConfig) -> float:
    """FLOPs of one forward pass of one image."""
    if config.arch != "custom":
        return 2 * IMAGENET_GMACS[config.arch] * 1e9 * (config.image_size / 224) ** 2
    side, cin, flops = config.image_size, 1, 0.0
    filters = list(config.filters) + [config.filters[-1]] * config.conv_blocks
    for block in range(config.conv_blocks):
        for _ in range(config.convs_per_block):
            flops += 2 * config.kernel_size ** 2 * cin * filters[block] * side * side
            cin = filters[block]
        side //= 2
    width = cin * max(side, 1) ** 2
    for units in list(config.fc_units) + [7]:
        flops += 2 * width * units
        width = units
    return flops


def estimate_runs(configs: list[RunConfig], store=None) -> dict:
    """{"images", "seconds_cpu", "seconds_gpu", "basis"} for training all configs one after the other."""
    images, seconds, basis = 0, {"cpu": 0.0, "gpu": 0.0}, ""
    for c in configs:
        n, basis = train_images(c, store)
        seen = n * c.epochs
        images += seen
        fwd = forward_flops(c)
        train_cost = fwd * (1.2 if c.transfer in ("head", "frozen") else BACKWARD_FACTOR)
        val_images = n / max(c.data_fraction, 1e-9) * FER2013_VAL_SHARE * c.epochs
        steps = c.epochs * max(1, n // max(c.batch_size, 1))
        for kind, rate in RATES.items():
            seconds[kind] += (seen * train_cost + val_images * fwd) / rate["flops"] + steps * rate["step_s"]
    return {"images": int(images), "seconds_cpu": round(seconds["cpu"]), "seconds_gpu": round(seconds["gpu"]),
            "basis": basis + "; a rough cost model, not a measurement"}


# --- settings that cannot teach anything ---------------------------------------------------------------------
# A few hundred faces per class is where a small CNN on FER2013 starts to beat always answering the largest
# class; with 28 images (0.001 of FER2013) the network answers one class for everything.
MIN_IMAGES_PER_CLASS = 200
# A learning curve needs a few points to show a trend (falling, flattening, turning up); one epoch is one dot.
MIN_CURVE_EPOCHS = 3


def teaching_warnings(config: RunConfig, store=None, on_gpu: bool = False) -> list[str]:
    """Plain sentences, each with its fix, about settings whose run cannot show a student anything: too few
    training images per class, too few epochs for a curve. The Train form and `train` both show them."""
    out = []
    counts, basis = train_class_counts(config, store)
    full = sum(counts.values())
    per_class = full * config.data_fraction / max(len(counts), 1)
    device = "GPU" if on_gpu else "CPU"
    if counts and per_class < MIN_IMAGES_PER_CLASS:
        need = min(1.0, MIN_IMAGES_PER_CLASS * len(counts) / max(full, 1))
        fixed = config.replace(data_fraction=round(need + 0.005, 2) if need < 1 else 1.0)
        seconds = estimate_runs([fixed], store)["seconds_gpu" if on_gpu else "seconds_cpu"]
        fix = (f"set the share of the training images to at least {fixed.data_fraction:g} (about {duration(seconds)} "
               f"for {config.epochs} epoch{'' if config.epochs == 1 else 's'} on this {device})" if need < 1 else
               "use a larger dataset or fewer classes (this one has fewer than that even in full)")
        out.append(f"Only about {per_class:,.0f} training images per class ({basis}, share {config.data_fraction:g}): "
                   f"too few for a network to learn expressions, so it will likely answer one class for everything. "
                   f"To learn something, {fix}.")
    if config.epochs < MIN_CURVE_EPOCHS:
        fixed = config.replace(epochs=MIN_CURVE_EPOCHS)
        seconds = estimate_runs([fixed], store)["seconds_gpu" if on_gpu else "seconds_cpu"]
        points = "a single point" if config.epochs == 1 else f"only {config.epochs} points"
        out.append(f"With {config.epochs} epoch{'' if config.epochs == 1 else 's'} each learning curve is {points}, "
                   "which cannot show whether the model is still learning or overfitting. "
                   f"Train at least {MIN_CURVE_EPOCHS} epochs "
                   f"(about {duration(seconds)} on this {device}).")
    return out
