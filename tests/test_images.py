"""Every upload a student might throw at the Classify page: good, odd and hostile."""
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from fercore.predict.images import ImageError, load_image, to_gray_u8


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (1-bit gray) but carries almost no data: a bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# --- refusals: each one a plain sentence, never a traceback ---------------------------------

@pytest.mark.parametrize("payload", [
    np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    b"emotion,pixels,Usage\n0,1 2 3,Training\n",
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",  # EPS would run Ghostscript
], ids=["random-bytes", "csv-text", "eps"])
def test_non_images_are_refused_with_a_sentence(payload):
    with pytest.raises(ImageError, match="not an image"):
        load_image(payload)


def test_text_file_on_disk_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_empty_file_and_empty_bytes_are_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    for src in (path, str(path), b"", io.BytesIO(b"")):
        with pytest.raises(ImageError, match="empty"):
            load_image(src)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(ImageError, match="no file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_truncated_jpeg_is_refused():
    data = encode(noise_rgb(256, 256), "JPEG", quality=90)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_truncated_png_is_refused():
    data = encode(noise_rgb(128, 128), "PNG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    start = time.perf_counter()
    with pytest.raises(ImageError, match="60-megapixel limit"):
        load_image(png_header_only(15000, 15000))      # PIL's own bomb guard fires first
    with pytest.raises(ImageError, match="9000x8000 pixels, larger than the 60-megapixel limit"):
        load_image(png_header_only(9000, 8000))        # under PIL's guard, over ours
    assert time.perf_counter() - start < 1.0


# --- odd but valid images come back as upright 8-bit RGB -------------------------------------

def test_huge_jpeg_is_reduced_quickly():
    data = encode(noise_rgb(8200, 300), "JPEG", quality=80)
    start = time.perf_counter()
    img = load_image(data)
    assert time.perf_counter() - start < 1.0
    assert img.mode == "RGB" and max(img.size) <= 2048 and max(img.size) >= 1024
    assert img.info["original_size"] == (8200, 300)
    assert abs(img.width / img.height - 8200 / 300) < 0.5


def test_huge_png_is_reduced():
    img = load_image(encode(Image.new("L", (5000, 40), 77), "PNG"))
    assert img.size == (2048, 16) and img.info["original_size"] == (5000, 40)
    assert np.asarray(img)[0, 0].tolist() == [77, 77, 77]


def test_exif_orientation_is_honoured():
    src = Image.new("RGB", (60, 40), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 10, 10))             # red mark in the stored top-left corner
    exif = src.getexif()
    exif[0x0112] = 6                                     # "rotate 90 degrees clockwise to view"
    img = load_image(encode(src, "JPEG", exif=exif, quality=95))
    assert img.size == (40, 60)
    assert img.info["original_size"] == (40, 60)
    rgb = np.asarray(img).astype(int)
    assert rgb[3, -4, 0] > 200 and rgb[3, -4, 2] < 60    # the mark is now top-right
    assert rgb[3, 3, 2] > 200                            # and top-left is blue


def test_cmyk_jpeg_becomes_rgb():
    red_in_cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    img = load_image(encode(red_in_cmyk, "JPEG", quality=95))
    r, g, b = np.asarray(img)[8, 8].astype(int)
    assert img.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_rgba_is_composited_on_white():
    src = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    src.putpixel((0, 0), (255, 0, 0, 255))
    rgb = np.asarray(load_image(encode(src, "PNG")))
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[1, 3].tolist() == [255, 255, 255]        # transparent black shows as white


def test_la_is_composited_on_white():
    src = Image.new("LA", (3, 1), (0, 0))
    src.putpixel((0, 0), (10, 255))
    rgb = np.asarray(load_image(encode(src, "PNG")))
    assert rgb[0, 0].tolist() == [10, 10, 10] and rgb[0, 2].tolist() == [255, 255, 255]


def test_palette_with_transparency():
    src = Image.new("P", (2, 1), 0)
    src.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    src.putpixel((1, 0), 1)
    rgb = np.asarray(load_image(encode(src, "PNG", transparency=0)))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [0, 200, 0]
    gif = np.asarray(load_image(encode(src, "GIF")))    # no transparency: palette colours kept
    assert gif[0, 1].tolist() == [0, 200, 0]


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 256, 1000, 32768, 40000, 65535]], dtype=np.uint16)
    img = load_image(encode(Image.fromarray(values), "PNG"))
    gray = to_gray_u8(img)[0]
    assert gray.tolist() == [0, 1, 4, 128, 156, 255]      # v * 255 / 65535, rounded; PIL clips


def test_one_bit_image():
    src = Image.new("1", (8, 8), 0)
    src.putpixel((7, 7), 1)
    rgb = np.asarray(load_image(encode(src, "PNG")))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[7, 7].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_one_pixel_image(fmt):
    img = load_image(encode(Image.new("RGB", (1, 1), (200, 100, 50)), fmt))
    assert img.size == (1, 1) and img.mode == "RGB"


def test_webp_from_path_and_file_object(tmp_path):
    data = encode(Image.new("RGB", (30, 20), (10, 200, 30)), "WEBP", lossless=True)
    path = tmp_path / "face.webp"
    path.write_bytes(data)
    for src in (path, str(path), io.BytesIO(data)):
        img = load_image(src)
        assert img.size == (30, 20) and np.asarray(img)[5, 5].tolist() == [10, 200, 30]


def test_fer2013_sample_loads_as_48x48_gray(tmp_path):
    from pathlib import Path
    folder = Path(__file__).resolve().parents[2] / "shared/datasets/fer2013-images/train/happy"
    if not folder.is_dir():
        pytest.skip("../shared is not available")
    path = sorted(folder.glob("*.jpg"))[0]
    gray = to_gray_u8(load_image(path))
    assert gray.shape == (48, 48) and gray.dtype == np.uint8
    assert np.abs(gray.astype(int) - np.asarray(Image.open(path).convert("L"), int)).max() <= 1
