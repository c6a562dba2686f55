"""Batched augmentation: what a user would check on the Data page's preview and in training batches."""
import numpy as np
import pytest
import torch

from fercore.augment import make_batch_transform, preview, tta_views
from fercore.config import RunConfig

PLAIN = dict(hflip=0.0, rotation=0.0, shift=0.0, zoom=0.0, blur=0.0, erasing=0.0)
EVERYTHING = dict(hflip=0.5, rotation=15.0, shift=0.1, zoom=0.15, blur=0.5, erasing=0.5)


def faces(n=16, size=48, seed=0) -> torch.Tensor:
    """Images with structure (a left-right gradient plus noise), so flips and blurs are visible."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, size).expand(size, size)
    return (ramp + torch.rand(n, size, size, generator=g) * 55).to(torch.uint8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("image_size", [48, 32, 96])
@pytest.mark.parametrize("train", [True, False])
def test_shape_and_dtype(image_size, train):
    config = RunConfig(image_size=image_size, **EVERYTHING)
    out = make_batch_transform(config, 0.5, 0.25, train)(faces(), gen())
    assert out.shape == (16, 1, image_size, image_size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_same_seed_same_batch_other_seed_other_batch():
    transform = make_batch_transform(RunConfig(**EVERYTHING), 0.5, 0.25, train=True)
    x = faces()
    a, b, c = transform(x, gen(1)), transform(x, gen(1)), transform(x, gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_eval_is_deterministic_and_ignores_augmentation_settings():
    x = faces()
    a = make_batch_transform(RunConfig(**EVERYTHING), 0.5, 0.25, train=False)(x, gen(1))
    b = make_batch_transform(RunConfig(**PLAIN), 0.5, 0.25, train=False)(x, gen(2))
    assert torch.equal(a, b)


def test_no_augmentation_gives_the_plain_normalised_image():
    x = faces()
    out = make_batch_transform(RunConfig(normalize="standard", **PLAIN), 0.4, 0.2, train=True)(x, gen())
    expected = (x.float() / 255 - 0.4) / 0.2
    assert torch.allclose(out[:, 0], expected, atol=1e-5)


def test_flip_with_probability_one_mirrors_every_image():
    x = faces()
    for extra in ({}, {"shift": 1e-9}):   # the flip-only path and the affine path
        out = make_batch_transform(RunConfig(normalize="unit", **{**PLAIN, "hflip": 1.0, **extra}), 0.5, 0.25,
                                   train=True)(x, gen())
        assert torch.allclose(out[:, 0] * 255, x.flip(-1).float(), atol=1e-2)


def test_rotation_moves_pixels_but_keeps_the_range():
    x = faces()
    out = make_batch_transform(RunConfig(normalize="unit", **{**PLAIN, "rotation": 30.0}), 0.5, 0.25,
                               train=True)(x, gen())
    assert (out[:, 0] * 255 - x.float()).abs().mean() > 5
    assert out.min() >= 0 and out.max() <= 1


def test_erasing_replaces_a_rectangle():
    x = torch.full((8, 48, 48), 128, dtype=torch.uint8)
    out = make_batch_transform(RunConfig(normalize="unit", **{**PLAIN, "erasing": 1.0}), 0.5, 0.25,
                               train=True)(x, gen())
    changed = (out[:, 0] * 255 - 128).abs() > 1e-3
    for img in changed:   # every image has a changed patch, and it is a rectangle
        rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        box = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.95 and img.sum() == box.sum()


def test_blur_smooths_noise():
    x = faces(seed=3)
    plain = make_batch_transform(RunConfig(normalize="unit", **PLAIN), 0.5, 0.25, train=True)(x, gen())
    blurred = make_batch_transform(RunConfig(normalize="unit", **{**PLAIN, "blur": 1.0}), 0.5, 0.25,
                                   train=True)(x, gen())
    roughness = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean(dim=(1, 2, 3))   # noqa: E731
    # sigma is drawn from 0.1 (barely visible) to 1.5, so every image is at most as rough, most much smoother
    assert (roughness(blurred) <= roughness(plain) + 1e-6).all()
    assert (roughness(blurred) < 0.7 * roughness(plain)).float().mean() > 0.5


@pytest.mark.parametrize("scheme, lo, hi", [("unit", 0.0, 1.0), ("sym", -1.0, 1.0)])
def test_normalisation_ranges(scheme, lo, hi):
    x = torch.zeros(4, 48, 48, dtype=torch.uint8)
    x[:, :, 24:] = 255
    out = make_batch_transform(RunConfig(normalize=scheme, **EVERYTHING), 0.5, 0.25, train=True)(x, gen())
    assert out.min() >= lo and out.max() <= hi
    plain = make_batch_transform(RunConfig(normalize=scheme), 0.5, 0.25, train=False)(x, gen())
    assert plain.min() == lo and plain.max() == hi


def test_standard_normalisation_uses_dataset_statistics():
    x = faces(n=64)
    mean, std = (x.float() / 255).mean().item(), (x.float() / 255).std().item()
    out = make_batch_transform(RunConfig(normalize="standard"), mean, std, train=False)(x)
    assert abs(out.mean().item()) < 1e-3 and abs(out.std().item() - 1) < 1e-3
    with pytest.raises(ValueError, match="fractions of 255"):
        make_batch_transform(RunConfig(normalize="standard"), 120.0, 60.0, train=False)


def test_empty_batch():
    out = make_batch_transform(RunConfig(image_size=32, **EVERYTHING), 0.5, 0.25, True)(
        torch.zeros(0, 48, 48, dtype=torch.uint8), gen())
    assert out.shape == (0, 1, 32, 32)


def test_tta_views():
    x = torch.randn(3, 1, 48, 48)
    assert len(tta_views(x, "none")) == 1 and torch.equal(tta_views(x, "none")[0], x)
    flip = tta_views(x, "flip")
    assert len(flip) == 2 and torch.equal(flip[1], x.flip(-1))
    ten = tta_views(x, "tencrop")
    assert len(ten) == 10 and all(v.shape == x.shape for v in ten)
    assert torch.allclose(ten[5], ten[0].flip(-1))
    assert not torch.allclose(ten[0], ten[3])   # top-left and bottom-right crops differ
    with pytest.raises(ValueError):
        tta_views(x, "twelvecrop")


def test_preview_is_displayable_and_reproducible():
    images = faces(n=3).numpy()
    config = RunConfig(image_size=64, **EVERYTHING)
    a, b = preview(config, images, 8, seed=5), preview(config, images, 8, seed=5)
    assert a.shape == (8, 64, 64) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, preview(config, images, 8, seed=6))
    one = preview(RunConfig(**PLAIN), images[0], 2, seed=0)    # a single (H, W) image works too
    assert np.array_equal(one[0], images[0]) and np.array_equal(one[1], images[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_cuda_with_a_device_generator():
    transform = make_batch_transform(RunConfig(image_size=64, **EVERYTHING), 0.5, 0.25, train=True)
    x = faces().cuda()
    a = transform(x, torch.Generator(device="cuda").manual_seed(0))
    b = transform(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.is_cuda and a.shape == (16, 1, 64, 64) and torch.equal(a, b)
