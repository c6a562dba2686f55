"""Safe image loading: any upload (path, bytes or file object) -> an upright 8-bit RGB PIL image.

Uploads are hostile until proven otherwise: not images, empty, truncated, decompression bombs,
exotic modes (CMYK, 16-bit, palette with transparency). Every refusal is an `ImageError` whose
message is a plain sentence for the UI and the CLI. Nothing here changes PIL's global settings
(no `ImageFile.LOAD_TRUNCATED_IMAGES`, no `Image.MAX_IMAGE_PIXELS`).
"""
from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fercore.errors import ImageError

MAX_PIXELS = 60_000_000       # refuse anything bigger before decoding a single pixel
MAX_FILE_BYTES = 100_000_000  # a real photo is a few MB; never read a huge file into memory
MAX_SIDE = 4096               # photos whose longest side is above this are reduced ...
REDUCED_SIDE = 2048           # ... to this, which is plenty for 48x48 face crops

# Only well-trodden decoders: e.g. EPS would hand the file to Ghostscript. (Multi-picture JPEGs
# from phones open through "JPEG" and come back as MPO.)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")

NOT_AN_IMAGE = "This file is not an image we can read (JPEG, PNG or WebP)."
CORRUPT = "The image is truncated or corrupt."



def load_image(src: str | Path | bytes | BinaryIO) -> Image.Image:
    """Decode `src` into an upright RGB image, reduced if huge.

    The returned image's `info["original_size"]` is the (width, height) after EXIF rotation and
    before any reduction, so callers can map boxes back to the file's own pixels.
    """
    data = _read_bytes(src)
    img = _open_checked(data)
    original_size = _oriented_size(img)
    too_big = max(img.size) > MAX_SIDE
    if too_big and img.format in ("JPEG", "MPO"):
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: a 48 MP photo then costs what a 3 MP one does.
        scale = REDUCED_SIDE / max(img.size)
        img.draft("RGB", (int(img.width * scale), int(img.height * scale)))
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # PIL's ways of saying "bad data"
        raise ImageError(CORRUPT) from e
    img = _upright(img)
    img = to_rgb(img)
    if too_big:
        img.thumbnail((REDUCED_SIDE, REDUCED_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    img.info["original_size"] = original_size
    return img


def to_gray_u8(img: Image.Image) -> np.ndarray:
    """(H, W) uint8 grayscale, the way FER2013 stores faces."""
    if img.mode != "L":
        img = to_rgb(img).convert("L")
    return np.asarray(img, dtype=np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: transparency on white, high bit depths scaled, not clipped."""
    convert = _MODE_TO_RGB.get(img.mode, _plain_convert)
    return convert(img)


# --- reading and opening ------------------------------------------------------------------

def _read_bytes(src: str | Path | bytes | BinaryIO) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    elif isinstance(src, (str, Path)):
        data = _read_path(Path(src))
    elif hasattr(src, "read"):
        data = src.read(MAX_FILE_BYTES + 1)
    else:
        raise ImageError("Give an image as a file path, bytes or an open file.")
    if not data:
        raise ImageError("The file is empty.")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"The file is larger than {MAX_FILE_BYTES // 1_000_000} MB; "
                         "no photo needs that much.")
    return data


def _read_path(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"The file is larger than {MAX_FILE_BYTES // 1_000_000} MB; "
                             "no photo needs that much.")
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"There is no file at {path}.") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a folder, not an image file.") from None
    except PermissionError:
        raise ImageError(f"{path} cannot be read (permission denied).") from None


def _open_checked(data: bytes) -> Image.Image:
    """Open lazily (header only) and refuse bombs before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # PIL warns above ~89 MP and raises above ~179 MP; both mean "too big" to us.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(_bomb_message_from_pil(str(e))) from None
    except UnidentifiedImageError:
        raise ImageError(NOT_AN_IMAGE) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(CORRUPT) from e
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(CORRUPT)
    if w * h > MAX_PIXELS:
        raise ImageError(f"The image is {w}x{h} pixels, larger than the "
                         f"{MAX_PIXELS // 1_000_000}-megapixel limit.")
    return img


def _bomb_message_from_pil(text: str) -> str:
    match = re.search(r"\((\d+) pixels\)", text)
    size = f"about {int(match.group(1)) // 1_000_000} megapixels" if match else "too many pixels"
    return f"The image has {size}, larger than the {MAX_PIXELS // 1_000_000}-megapixel limit."


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not sink an otherwise good photo
        orientation = 1
    return (img.height, img.width) if orientation in (5, 6, 7, 8) else img.size


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # same reason: keep the pixels, lose only the rotation hint
        return img


# --- mode conversion, one entry per PIL mode ------------------------------------------------

def _plain_convert(img: Image.Image) -> Image.Image:
    return img.convert("RGB")


def _keep(img: Image.Image) -> Image.Image:
    return img


def _on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _palette(img: Image.Image) -> Image.Image:
    return _on_white(img) if "transparency" in img.info else img.convert("RGB")


def _high_bit_depth(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit int / float) gray -> 8 bit. PIL's own convert("L") clips at 255."""
    values = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16"):
        scaled = values / 257.0                       # 0..65535 -> 0..255, exactly
    elif values.size and values.min() >= 0 and values.max() <= 255 and img.mode != "F":
        scaled = values                               # already 8-bit data in a wide container
    elif values.size and values.min() >= 0 and values.max() <= 65535 and img.mode != "F":
        scaled = values / 257.0                       # 16-bit data opened as mode "I"
    else:
        finite = values[np.isfinite(values)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / max(high - low, 1e-12))
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


_MODE_TO_RGB: dict[str, Callable[[Image.Image], Image.Image]] = {
    "RGB": _keep,
    "RGBA": _on_white,
    "RGBa": _on_white,
    "LA": _on_white,
    "La": _on_white,
    "PA": _on_white,
    "P": _palette,
    "I;16": _high_bit_depth,
    "I;16L": _high_bit_depth,
    "I;16B": _high_bit_depth,
    "I;16N": _high_bit_depth,
    "I": _high_bit_depth,
    "F": _high_bit_depth,
    # "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX": PIL's own conversion is right.
}
