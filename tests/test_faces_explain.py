"""Faces are found where they are (or the whole image is used, and said so); explanations are
well-formed heat maps that leave the model as it was."""
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fercore.predict.explain import METHODS, ExplainError, attribute, overlay
from fercore.predict.faces import detect_faces, detector_problem, draw_boxes, face_crops, find_faces

FER_HAPPY = Path(__file__).resolve().parents[2] / "shared/datasets/fer2013-images/train/happy"


def fer_faces(n: int) -> list[Image.Image]:
    if not FER_HAPPY.is_dir():
        pytest.skip("../shared is not available")
    return [Image.open(p).convert("RGB") for p in sorted(FER_HAPPY.glob("*.jpg"))[:n]]


# --- faces ------------------------------------------------------------------------------------

def test_face_detector_is_available():
    # Without it every photo silently becomes "whole image"; OpenCV 5 wheels ship no cascade.
    assert detector_problem() is None, detector_problem()


def test_image_without_a_face_falls_back_to_its_centre_square():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (6, 9, 3)), np.ones((50, 50, 1))).astype(np.uint8)
    img = Image.fromarray(smooth)                                   # 450 x 300 colour blocks
    result = find_faces(img)
    assert result.fallback_whole_image and result.notes
    assert result.boxes == [(75, 0, 300, 300)]
    assert result.crops.shape == (1, 48, 48) and result.crops.dtype == np.uint8


def test_fer_faces_pasted_into_a_photo_are_found_in_the_right_place():
    if detector_problem():
        pytest.fail(detector_problem())
    found = 0
    for face in fer_faces(8):
        canvas = Image.new("RGB", (1000, 700), (128, 128, 128))
        canvas.paste(face.resize((480, 480), Image.Resampling.BICUBIC), (400, 120))
        result = find_faces(canvas)
        if result.fallback_whole_image:
            continue
        found += 1
        x, y, w, h = max(result.boxes, key=lambda b: b[2] * b[3])
        assert 400 <= x + w / 2 <= 880 and 120 <= y + h / 2 <= 600     # centre on the face
        assert 0.6 * 480 <= w <= 1.4 * 480
        assert result.crops.shape == (len(result.boxes), 48, 48)
    # Haar finds ~80% of upscaled FER2013 faces (measured on 50 random ones; 7 of these first 8).
    assert found >= 5


def test_a_face_in_profile_is_found_turned_either_way():
    """The frontal cascade misses this FER2013 face turned to one side; the profile cascade finds it, and its
    mirror image (turned the other way) through the mirrored pass, with the box mapped back."""
    from fercore.predict import faces
    path = FER_HAPPY.parent.parent / "train/angry/Training_10290703.jpg"
    if not path.exists():
        pytest.skip("../shared is not available")
    face = Image.open(path).convert("RGB").resize((240, 240), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (600, 320), (128, 128, 128))
    canvas.paste(face, (60, 40))
    mirrored = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for img, face_x in ((canvas, 60), (mirrored, 300)):
        with faces._borrowed_detector() as frontal:
            assert faces._boxes(frontal, np.asarray(img.convert("L"))) == [], "the frontal cascade alone misses it"
        result = find_faces(img)
        assert not result.fallback_whole_image and len(result.boxes) == 1
        x, y, w, h = result.boxes[0]
        assert face_x <= x + w / 2 <= face_x + 240 and 40 <= y + h / 2 <= 280     # centre on the face
        assert 0.7 * 240 <= w <= 1.3 * 240
    (x, y, w, h), (mx, my, mw, mh) = find_faces(canvas).boxes[0], find_faces(mirrored).boxes[0]
    assert (mx, my, mw, mh) == (600 - x - w, y, w, h), "the mirror's box is the mirror of the box"


def test_two_faces_are_numbered_left_to_right():
    if detector_problem():
        pytest.fail(detector_problem())
    left, right = fer_faces(2)
    canvas = Image.new("RGB", (1200, 500), (128, 128, 128))
    canvas.paste(right.resize((400, 400)), (700, 50))
    canvas.paste(left.resize((400, 400)), (50, 50))
    boxes = detect_faces(canvas)
    if len(boxes) != 2:
        pytest.skip("the cascade missed one of these two FER faces")
    assert boxes[0][0] < boxes[1][0]
    assert boxes[0][0] < 450 < boxes[1][0]


def test_detection_on_a_12_megapixel_photo_is_quick():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
    detect_faces(img)                                       # first call loads the cascade
    start = time.perf_counter()
    boxes = detect_faces(img)
    assert time.perf_counter() - start < 1.5                # ~0.1 s idle; generous for busy CI
    assert all(0 <= x and 0 <= y and x + w <= 4000 and y + h <= 3000 for x, y, w, h in boxes)


def test_crops_are_square_and_stay_inside_the_image():
    img = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (100, 1)))   # gray ramp
    img = img.convert("RGB")
    crops = face_crops(img, [(190, 10, 30, 30), (0, 0, 150, 150)], size=24)
    assert crops.shape == (2, 24, 24)
    # the box hanging off the right edge is moved inside: its crop ends at the brightest column
    assert crops[0, :, -1].min() >= 190
    # the box taller than the image is shrunk to a 100 px square around its centre (x 25..124)
    assert abs(int(crops[1, 0, 0]) - 25) <= 4 and abs(int(crops[1, 0, -1]) - 124) <= 4


def test_draw_boxes_returns_a_new_image_with_the_boxes_drawn():
    img = Image.new("RGB", (300, 200), (128, 128, 128))
    out = draw_boxes(img, [(20, 40, 80, 80), (180, 40, 80, 80)], ["happy", "sad"])
    assert out is not img and out.size == img.size
    assert np.asarray(img).std() == 0                       # the original is untouched
    drawn = np.asarray(out)
    assert (drawn[119, 20:100] != 128).any()                # bottom edge of box 1
    assert (drawn[60:100, 180] != 128).any()                # left edge of box 2


# --- explanations -----------------------------------------------------------------------------

def tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Dropout(0.3), nn.Flatten(), nn.Linear(16 * 12 * 12, 7))


@pytest.fixture
def face_input() -> torch.Tensor:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:48, :48]
    face = 0.5 + 0.4 * np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / 200.0)
    face += 0.05 * rng.standard_normal((48, 48))
    return torch.tensor(face, dtype=torch.float32)[None, None] * 2 - 1


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_gives_a_unit_heat_map_and_leaves_the_model_alone(method, face_input):
    model = tiny_cnn()
    model.train()                                            # as a training loop might leave it
    model[0].weight.requires_grad_(False)                   # e.g. a frozen first layer
    target = int(model.eval()(face_input).argmax())
    model.train()
    heat = attribute(model, face_input, target, method, target_layer=model[3])
    assert heat.shape == (48, 48) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert heat.max() == pytest.approx(1.0) and heat.std() > 0
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    assert model[0].weight.requires_grad is False and model[3].weight.requires_grad is True
    assert face_input.grad is None and not face_input.requires_grad


def test_gradcam_defaults_to_the_last_conv_and_methods_agree_on_shape(face_input):
    model = tiny_cnn().eval()
    with torch.inference_mode():                            # a UI may hold inference tensors
        frozen_input = face_input.clone()
    heat = attribute(model, frozen_input, 3, "gradcam")
    assert heat.shape == (48, 48) and heat.max() > 0


def test_saliency_is_zero_where_the_model_cannot_look(face_input):
    # a model that only sees the top-left quarter: no attribution may land elsewhere
    model = nn.Sequential(nn.Flatten(), nn.Linear(48 * 48, 7))
    with torch.no_grad():
        mask = torch.zeros(48, 48)
        mask[:24, :24] = 1
        model[1].weight.mul_(mask.flatten())
    for method in ("saliency", "ig", "occlusion"):
        heat = attribute(model, face_input, 2, method)
        assert heat[:24, :24].max() > 0.5, method
        assert heat[30:, 30:].max() < 1e-4, method     # occlusion: float noise of batching


def test_every_method_is_quick_on_a_48x48_face(face_input):
    model = tiny_cnn().eval()
    for method in METHODS:
        attribute(model, face_input, 1, method)            # warm-up: captum's first import
        start = time.perf_counter()
        attribute(model, face_input, 1, method)
        assert time.perf_counter() - start < 1.0, method


def test_unknown_method_is_a_plain_error(face_input):
    with pytest.raises(ExplainError, match="Unknown attribution method 'lime'"):
        attribute(tiny_cnn(), face_input, 0, "lime")


def test_overlay_is_an_rgb_picture_of_the_face_size():
    face = np.full((120, 100), 90, dtype=np.uint8)
    heat = np.zeros((48, 48), dtype=np.float32)
    heat[:24] = 1.0                                         # top half hot
    out = overlay(face, heat, alpha=0.5)
    assert out.shape == (120, 100, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[10, 50], out[110, 50])    # top and bottom differ
    assert list(out[110, 50]) == [90, 90, 90], "where the map is cold the face shows as it is (its outline stays)"
    assert out[10, 50, 0] > out[10, 50, 2]                  # hot is red
    assert np.array_equal(overlay(face, heat, alpha=0.0)[..., 0], face)
