"""Captum attributions as plain arrays: which pixels of a face made the model say what it said.

`attribute(model, x, target, method)` returns an (H, W) float32 map in [0, 1] for any method in
`METHODS`; `overlay(face, attribution)` paints it on the face for display. The model is left as
it was found: same train/eval mode, same requires_grad flags, no .grad written on parameters.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fercore.errors import ExplainError
from fercore.predict import ATTRIBUTION_METHODS

METHODS = ATTRIBUTION_METHODS

# Costs are counted in forward passes, ~15 ms each on one busy laptop core for a 2M-parameter CNN
# at 48x48, and the Classify page promises an answer in about a second on a CPU (a method switch in 0.4 s).
# SmoothGrad (captum's NoiseTunnel) averages the gradient maps of noisy copies of the face: the speckle of a single
# gradient cancels out. Measured on 21 FER2013 val faces with the starter (one thread, a 2-core CPU at load ~13):
# Saliency 40 ms, roughness 0.24 (mean absolute neighbour difference of the unit-range map); SmoothGrad 8 samples
# 175 ms / 0.18, 16 samples 340 ms / 0.15, 24 samples 725 ms / 0.14. 16 samples is where the gain flattens; on a
# machine to itself that is ~60 ms. Noise of 0.3 in normalised units is ~9 % of the input's range.
SMOOTHGRAD_SAMPLES = 16
SMOOTHGRAD_STDEV = 0.3
# Integrated Gradients with SmoothGrad: 4 noisy copies x 4 steps costs what 16 plain steps did (404 vs 330 ms at
# the load above); its map was as smooth as plain IG's (roughness 0.22 vs 0.21: IG's grad x input is speckled by
# the input itself), so the noise stays small.
IG_SMOOTH_SAMPLES, IG_STEPS, IG_STDEV = 4, 4, 0.15
OCCLUSION_WINDOW = 4          # patch side = image side / 4: an eye or the mouth (12 px at 48)
OCCLUSION_STRIDE = 8          # step = image side / 8: 7 x 7 = 49 overlapping patches at 48
OCCLUSION_BATCH = 64          # occluded copies evaluated per forward pass
ROBUST_MAX_PERCENTILE = 99.5  # one hot pixel must not wash out the rest of a gradient map



def attribute(model: nn.Module, x: torch.Tensor, target: int, method: str,
              target_layer: nn.Module | None = None, baseline: float = 0.0) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much each input pixel matters for class `target`.

    x: (1, C, H, W), already normalised as the model expects. baseline: the value, in that
    normalised space, that stands for "no information" in Integrated Gradients and Occlusion;
    pass the normalised value of a black pixel for a black baseline (0.0 is exactly that for
    0..1 normalisation).
    target_layer: the conv layer Grad-CAM looks at; default the model's last Conv2d.
    """
    if method not in _ATTRIBUTORS:
        raise ExplainError(f"Unknown attribution method '{method}'; choose one of "
                           f"{', '.join(METHODS)}.")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ExplainError("Explain one image at a time: the input must be shaped (1, C, H, W).")
    # A clone made here is an ordinary tensor even if x came from torch.inference_mode().
    x = x.detach().clone()
    with _model_left_untouched(model), torch.enable_grad():
        raw = _ATTRIBUTORS[method](model, x, int(target), target_layer, float(baseline))
    heat = raw.detach().float().sum(dim=(0, 1)).cpu().numpy()     # channels -> one map
    return _to_unit_range(heat)


def overlay(face_u8: np.ndarray, attribution: np.ndarray, alpha: float = 0.75,
            colormap: str = "jet") -> np.ndarray:
    """(H, W, 3) uint8 RGB: the grayscale face with the attribution as a coloured heat map whose opacity grows
    with the attribution (up to `alpha`), so the face and its outline stay visible where the map is low."""
    import cv2

    if colormap not in _COLORMAPS:
        raise ExplainError(f"Unknown colour map '{colormap}'; choose one of "
                           f"{', '.join(_COLORMAPS)}.")
    face = np.asarray(face_u8, dtype=np.uint8)
    height, width = face.shape[:2]
    heat = cv2.resize(np.asarray(attribution, dtype=np.float32), (width, height),
                      interpolation=cv2.INTER_LINEAR)
    heat_u8 = np.clip(np.rint(heat * 255), 0, 255).astype(np.uint8)
    heat_rgb = cv2.cvtColor(cv2.applyColorMap(heat_u8, getattr(cv2, _COLORMAPS[colormap])),
                            cv2.COLOR_BGR2RGB)
    face_rgb = np.repeat(face[..., None], 3, axis=2) if face.ndim == 2 else face[..., :3]
    weight = (alpha * np.clip(heat, 0.0, 1.0))[..., None]
    mixed = (1 - weight) * face_rgb.astype(np.float32) + weight * heat_rgb.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def pre_activation(model: nn.Module, layer: nn.Module) -> nn.Module | None:
    """The module that feeds an activation layer (its BatchNorm or conv): the same feature map before the ReLU
    zeroes what argues against a class. None when `layer` is not an activation right after a conv or BatchNorm."""
    modules = list(model.modules())
    if layer not in modules or isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)):
        return None
    before = modules[modules.index(layer) - 1]
    return before if isinstance(before, (nn.Conv2d, nn.BatchNorm2d)) else None


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The deepest Conv2d: where Grad-CAM still sees space but already sees meaning."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ExplainError("Grad-CAM needs a convolutional layer and this model has none.")
    return convs[-1]


# --- one function per method ------------------------------------------------------------------

def _saliency(model, x, target, layer, baseline):
    from captum.attr import NoiseTunnel, Saliency

    return NoiseTunnel(Saliency(model)).attribute(
        x.requires_grad_(), nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES,
        nt_samples_batch_size=SMOOTHGRAD_SAMPLES, stdevs=SMOOTHGRAD_STDEV, target=target, abs=True)


def _integrated_gradients(model, x, target, layer, baseline):
    from captum.attr import IntegratedGradients, NoiseTunnel

    attributions = NoiseTunnel(IntegratedGradients(model)).attribute(
        x.requires_grad_(), nt_type="smoothgrad", nt_samples=IG_SMOOTH_SAMPLES, nt_samples_batch_size=IG_SMOOTH_SAMPLES,
        stdevs=IG_STDEV, baselines=baseline, target=target, n_steps=IG_STEPS,
        internal_batch_size=IG_SMOOTH_SAMPLES * IG_STEPS)
    return attributions.abs()   # evidence for or against the class both mean "this pixel matters"


def _gradcam(model, x, target, layer, baseline):
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(model, layer or last_conv_layer(model)).attribute(
        x.requires_grad_(), target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")


def _occlusion(model, x, target, layer, baseline):
    from captum.attr import Occlusion

    height, width = x.shape[-2:]
    window = (x.shape[1], max(1, height // OCCLUSION_WINDOW), max(1, width // OCCLUSION_WINDOW))
    stride = (x.shape[1], max(1, height // OCCLUSION_STRIDE), max(1, width // OCCLUSION_STRIDE))
    with torch.no_grad():
        attributions = Occlusion(model).attribute(
            x, sliding_window_shapes=window, strides=stride, baselines=baseline, target=target,
            perturbations_per_eval=OCCLUSION_BATCH)
    return attributions.abs()


_ATTRIBUTORS: dict[str, Callable[..., torch.Tensor]] = {
    "saliency": _saliency,
    "ig": _integrated_gradients,
    "gradcam": _gradcam,
    "occlusion": _occlusion,
}

_COLORMAPS = {"jet": "COLORMAP_JET", "turbo": "COLORMAP_TURBO", "inferno": "COLORMAP_INFERNO",
              "viridis": "COLORMAP_VIRIDIS", "hot": "COLORMAP_HOT"}


# --- helpers ----------------------------------------------------------------------------------

class _model_left_untouched:
    """Eval mode and frozen parameters for the attribution, then everything as it was.

    Freezing the parameters means autograd computes only the input gradients captum asks for,
    and a caller's optimizer never finds stray .grad values from an explanation.
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.grads = [(p, p.grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in self.flags:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p, flag in self.flags:
            p.requires_grad_(flag)
        for p, grad in self.grads:
            p.grad = grad
        self.model.train(self.was_training)
        return False


def _to_unit_range(heat: np.ndarray) -> np.ndarray:
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    heat = heat - min(0.0, float(heat.min()))       # all methods give >= 0; guard anyway
    top = float(np.percentile(heat, ROBUST_MAX_PERCENTILE))
    if top <= 0:
        top = float(heat.max())
    if top <= 0:
        return np.zeros_like(heat, dtype=np.float32)
    return np.clip(heat / top, 0.0, 1.0).astype(np.float32)
