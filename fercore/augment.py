"""Batched augmentation on the device: a uint8 batch (N, H, W) in, a normalised float batch (N, 1, S, S) out.

The whole dataset lives on the device as uint8, so a batch is augmented where it already is, with a
handful of tensor operations for the whole batch and no loop over images (the reason the lab's training
loop outruns a DataLoader with per-image PIL transforms). Every random draw comes from the generator
passed in, so the same seed gives the same batch.

Training steps, in order (each a no-op when its strengths in the config are zero):
  blur      Gaussian blur with probability config.blur, sigma 0.1-1.5 px at the source resolution
  geometry  flip, rotation, shift and zoom as one affine matrix per image, applied together with the
            resize to config.image_size by a single grid_sample
  erasing   a random rectangle of noise with probability config.erasing
Evaluation only resizes. Then pixels are normalised by config.normalize.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fercore.config import RunConfig
from fercore.errors import ConfigError

BatchTransform = Callable[..., torch.Tensor]   # (uint8 (N, H, W), generator=None) -> float (N, 1, S, S)

BLUR_SIGMA = (0.1, 1.5)
BLUR_RADIUS = math.ceil(3 * BLUR_SIGMA[1])        # the kernel covers +-3 sigma of the widest blur
ERASE_AREA = (0.02, 0.33)                         # fraction of the image (torchvision's RandomErasing)
ERASE_LOG_RATIO = (math.log(0.3), math.log(3.3))  # height/width of the rectangle


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=like.device) * (hi - lo) + lo


def random_blur(x: torch.Tensor, config: RunConfig, size: int, gen: torch.Generator | None) -> torch.Tensor:
    """Blur a random subset, each image with its own sigma, as one grouped separable convolution.

    Images that are not chosen get a one-tap identity kernel instead of being indexed out: selecting a
    subset would need the chosen count on the host, a GPU sync per batch.
    """
    if config.blur <= 0:
        return x
    n = x.shape[0]
    chosen = torch.rand(n, generator=gen, device=x.device) < config.blur
    sigma = _uniform(n, *BLUR_SIGMA, x, gen)
    taps = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-taps ** 2 / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = torch.where(chosen[:, None], kernel, (taps == 0).to(x.dtype).expand(n, -1))
    # The batch becomes the channels of one image so that each image meets its own kernel (groups=n).
    y = F.pad(x.transpose(0, 1), (BLUR_RADIUS,) * 4, mode="replicate")
    y = F.conv2d(y, kernel.view(n, 1, 1, -1), groups=n)
    y = F.conv2d(y, kernel.view(n, 1, -1, 1), groups=n)
    return y.transpose(0, 1)


def random_geometry(x: torch.Tensor, config: RunConfig, size: int, gen: torch.Generator | None) -> torch.Tensor:
    """Flip, rotate, shift and zoom each image by its own affine matrix and resize to `size`, in one pass."""
    n = x.shape[0]
    if not (config.rotation or config.shift or config.zoom):
        if config.hflip > 0:   # flip alone needs no resampling
            flip = torch.rand(n, generator=gen, device=x.device) < config.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return resize(x, size)
    flip = torch.where(torch.rand(n, generator=gen, device=x.device) < config.hflip, -1.0, 1.0)
    angle = _uniform(n, -config.rotation, config.rotation, x, gen) * (math.pi / 180)
    scale = _uniform(n, 1 - config.zoom, 1 + config.zoom, x, gen)
    # Grid coordinates span -1..1, so a shift by a fraction f of the image is 2f.
    tx = _uniform(n, -config.shift, config.shift, x, gen) * 2
    ty = _uniform(n, -config.shift, config.shift, x, gen) * 2
    # theta maps output coordinates to where they are read in the input: zooming in (scale > 1) reads a
    # smaller region; the flip mirrors x before the rotation.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([cos * flip, -sin, tx, sin * flip, cos, ty], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    # "border" repeats the edge pixels into the corners a rotation uncovers (Keras' fill_mode="nearest").
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_erasing(x: torch.Tensor, config: RunConfig, size: int, gen: torch.Generator | None) -> torch.Tensor:
    """Replace a random rectangle by uniform noise in a random subset of images, with one mask for the batch."""
    if config.erasing <= 0:
        return x
    n, _, h, w = x.shape
    chosen = torch.rand(n, generator=gen, device=x.device) < config.erasing
    area = _uniform(n, *ERASE_AREA, x, gen) * (h * w)
    ratio = torch.exp(_uniform(n, *ERASE_LOG_RATIO, x, gen))
    eh = torch.sqrt(area * ratio).clamp(1, h)
    ew = torch.sqrt(area / ratio).clamp(1, w)
    top = torch.rand(n, generator=gen, device=x.device) * (h - eh)
    left = torch.rand(n, generator=gen, device=x.device) * (w - ew)
    rows = torch.arange(h, device=x.device, dtype=x.dtype)
    cols = torch.arange(w, device=x.device, dtype=x.dtype)
    in_rows = (rows >= top[:, None].floor()) & (rows < (top + eh)[:, None].floor())
    in_cols = (cols >= left[:, None].floor()) & (cols < (left + ew)[:, None].floor())
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]
    noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 255
    return torch.where(mask[:, None], noise, x)


TRAIN_STEPS = (random_blur, random_geometry, random_erasing)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    # Bilinear without antialiasing samples exactly where an identity grid_sample does, so evaluation
    # sees the same resize as training.
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def normalisation(scheme: str, mean: float, std: float) -> tuple[float, float]:
    """(scale, offset) with normalised = pixel * scale + offset, for pixels in 0..255.

    mean and std are the dataset's pixel statistics as fractions of 255 (0..1).
    """
    if scheme == "standard" and not (0.0 <= mean <= 1.0):
        raise ValueError(f"mean and std must be fractions of 255 (0..1); got mean {mean}.")
    std = std if std > 0 else 1.0   # a blank dataset has no spread to divide by
    return NORMALISATIONS[scheme](float(mean), float(std))


NORMALISATIONS: dict[str, Callable[[float, float], tuple[float, float]]] = {
    "unit": lambda mean, std: (1 / 255, 0.0),                       # 0..1
    "sym": lambda mean, std: (1 / 127.5, -1.0),                     # -1..1
    "standard": lambda mean, std: (1 / (255 * std), -mean / std),   # (x/255 - mean) / std
}


def augment_pixels(images: torch.Tensor, config: RunConfig, train: bool,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, S, S) pixels in 0..255, augmented when `train`."""
    x = images.unsqueeze(1).float()
    size = config.image_size
    if x.shape[0] == 0:
        return x.new_zeros((0, 1, size, size))
    if not train:
        return resize(x, size)
    for step in TRAIN_STEPS:
        x = step(x, config, size, generator)
    return x.clamp_(0, 255)


def make_batch_transform(config: RunConfig, mean: float, std: float, train: bool) -> BatchTransform:
    """The function the trainer applies to each uint8 batch already on the device.

    transform(images uint8 (N, H, W), generator=None) -> float32 (N, 1, S, S), S = config.image_size.
    The generator must live on the images' device; it makes the augmentation reproducible.
    """
    scale, offset = normalisation(config.normalize, mean, std)

    def transform(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return augment_pixels(images, config, train, generator).mul_(scale).add_(offset)

    return transform


# --- test-time augmentation ---------------------------------------------------------------------

def _flip_views(x: torch.Tensor) -> list[torch.Tensor]:
    return [x, x.flip(-1)]


def _ten_crop_views(x: torch.Tensor, fraction: float = 0.9) -> list[torch.Tensor]:
    """Four corner crops and the centre crop of `fraction` of the side, resized back, and their mirrors."""
    n, _, s, _ = x.shape
    c = max(1, round(fraction * s))
    m = (s - c) // 2
    crops = [x[..., :c, :c], x[..., :c, s - c:], x[..., s - c:, :c], x[..., s - c:, s - c:], x[..., m:m + c, m:m + c]]
    views = list(resize(torch.cat(crops), s).split(n))   # one resize for all five crops
    return views + [v.flip(-1) for v in views]


TTA_VIEWS: dict[str, Callable[[torch.Tensor], list[torch.Tensor]]] = {
    "none": lambda x: [x],
    "flip": _flip_views,
    "tencrop": _ten_crop_views,
}


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a normalised batch (N, 1, S, S) whose predictions evaluation averages (config.tta)."""
    if mode not in TTA_VIEWS:
        raise ConfigError(f"Unknown test-time augmentation {mode!r}; use one of {', '.join(TTA_VIEWS)}.")
    return TTA_VIEWS[mode](x)


# --- the Data page's preview ---------------------------------------------------------------------

def preview(config: RunConfig, images: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` training-time augmentations for display: uint8 (n, S, S), before normalisation.

    The images are used in turn, so one image gives n variants of itself and n images one variant each.
    """
    stack = np.asarray(images, dtype=np.uint8)
    if stack.ndim == 2:
        stack = stack[None]
    if len(stack) == 0 or n <= 0:
        return np.zeros((0, config.image_size, config.image_size), dtype=np.uint8)
    batch = torch.from_numpy(stack[np.arange(n) % len(stack)])
    generator = torch.Generator().manual_seed(int(seed))
    pixels = augment_pixels(batch, config, train=True, generator=generator)
    return pixels[:, 0].round().to(torch.uint8).numpy()
