"""Honest time estimates for a set of runs before they start: a simple cost model, not a measurement."""
from __future__ import annotations

from fercore.config import EMOTIONS, RunConfig

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


def train_images(config: RunConfig, store=None) -> tuple[int, str]:
    """Training images per epoch for this config, and where the number comes from."""
    counts, basis = None, ""
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
