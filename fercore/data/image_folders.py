"""Image folders and zips of FER images: <split>/<class>/<image> or <class>/<image>.

Zips are read in memory (never extracted), entries with `..` or absolute paths are skipped and counted,
declared sizes are capped (zip bombs), and every image is size-checked before it is decoded."""
from __future__ import annotations

import io
import os
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fercore.config import EMOTIONS
from fercore.data import cache
from fercore.data.dataset import DataError, FERDataset
from fercore.data.decompress import ARCHIVE_ERRORS, describe

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Usage values and split folder names (compared in lower case) -> split code
SPLIT_NAMES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "publictest": 1,
               "test": 2, "testing": 2, "privatetest": 2}
CLASS_ALIASES = {"anger": "angry", "disgusted": "disgust", "fearful": "fear", "happiness": "happy",
                 "sadness": "sad", "surprised": "surprise"}
MAX_ARCHIVE_BYTES = 2 * 1024 ** 3    # declared uncompressed total of a zip
MAX_IMAGE_BYTES = 32 * 1024 ** 2
MAX_IMAGE_PIXELS = 50_000_000        # a 7000x7000 photo; more is a decompression bomb, not a face
MAX_IMAGES = 150_000                 # FER2013 has 35,887; 150,000 48x48 faces are 346 MB of pixels
FAST_DECODE_MAX_PIXELS = 1024 * 1024  # bigger images go to PIL, which decodes JPEGs at a reduced scale
DECODE_THREADS = min(8, os.cpu_count() or 2)

# --- image folders and zips: <split>/<class>/<image> or <class>/<image>

def load_image_folder(path: Path, name: str) -> FERDataset:
    root = str(path)
    entries = [(tuple(rel.split("/")), os.path.join(root, rel)) for rel, _ in cache.walk_files(path)
               if rel.lower().endswith(IMAGE_SUFFIXES) and not any(is_hidden(p) for p in rel.split("/"))]
    return images_to_dataset(entries, read_image_file, path.resolve().name, str(path), name,
                             str(path.resolve()), notes=[])


def read_image_file(file: str) -> bytes:
    with open(file, "rb") as f:
        data = f.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise DataError("image file too large")
    return data


def load_image_zip(path: Path, name: str) -> FERDataset:
    """Members are read into memory one by one (never extracted to disk)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members, unsafe = zip_members(zf, str(path))
            entries = [(tuple(p for p in m.filename.replace("\\", "/").split("/") if p), m)
                       for m in members if m.filename.lower().endswith(IMAGE_SUFFIXES)]
            notes = [f"{unsafe} zip entries with absolute or ../ paths ignored."] if unsafe else []
            return images_to_dataset(entries, lambda m: read_zip_member(zf, m), dataset_name(path), str(path),
                                     name, str(path.resolve()), notes)
    except DataError:
        raise
    except ARCHIVE_ERRORS as e:
        raise DataError(f"{path} is not a readable zip file ({describe(e)}).") from None


def read_zip_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    if member.file_size > MAX_IMAGE_BYTES:
        raise DataError("image file too large")
    return zf.read(member)      # zipfile reads at most the declared file_size


def zip_members(zf: zipfile.ZipFile, where: str) -> tuple[list[zipfile.ZipInfo], int]:
    """The zip's regular files minus hidden ones (macOS `__MACOSX/`, `._x`), and how many entries
    were dropped for an absolute or `..` path. Refuses archives that would expand absurdly."""
    members, unsafe = [], 0
    for m in zf.infolist():
        name = m.filename.replace("\\", "/")
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or ":" in parts[0]:
            unsafe += 1
        elif not m.is_dir() and not any(is_hidden(p) for p in parts if p):
            members.append(m)
    declared = sum(m.file_size for m in members)
    packed = sum(m.compress_size for m in members)
    if declared > MAX_ARCHIVE_BYTES or (declared > 100 * 1024 ** 2 and declared > 100 * packed):
        raise DataError(f"{where} would expand to {declared / 1e9:.1f} GB from {packed / 1e6:.1f} MB; "
                        "refusing it as a possible zip bomb.")
    return members, unsafe


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def images_to_dataset(entries, read, root_name: str, where: str, name: str, source: str,
                      notes: list[str]) -> FERDataset:
    """entries: (path parts below the root, what `read` needs to fetch the bytes) per image file."""
    if not entries:
        raise DataError(f"{where} holds no .jpg, .jpeg or .png images.")
    if len(entries) > MAX_IMAGES:
        raise DataError(f"{where} holds {len(entries):,} images; FER Lab imports at most {MAX_IMAGES:,} "
                        "(FER2013 has 35,887), so that the lab's memory stays bounded.")
    loose = sum(len(parts) < 2 for parts, _ in entries)
    entries = sorted((e for e in entries if len(e[0]) >= 2), key=lambda e: e[0])  # same order from a folder or zip
    if not entries:
        raise DataError(f"The images in {where} are not in class folders; put them in <class>/ folders "
                        "(angry/, happy/, ...), optionally inside train/, val/ and test/.")
    if loose:
        notes.append(f"{loose} images outside class folders ignored.")
    split = split_codes([parts[-3] if len(parts) >= 3 else root_name for parts, _ in entries], where)
    class_names = [CLASS_ALIASES.get(parts[-2].lower(), parts[-2].lower()) for parts, _ in entries]
    present = set(class_names)
    classes = [c for c in EMOTIONS if c in present] + sorted(present - set(EMOTIONS))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in class_names], dtype=np.int64)

    decoded = decode_images([ref for _, ref in entries], read)
    ok = np.array([img is not None for img in decoded], dtype=bool)
    if not ok.any():
        raise DataError(f"None of the {len(entries)} images in {where} could be read.")
    if not ok.all():
        example = "/".join(entries[int(np.flatnonzero(~ok)[0])][0])
        notes.append(f"{int((~ok).sum())} unreadable images skipped (for example {example}).")
    images = np.stack([img for img in decoded if img is not None])
    return FERDataset(name, source, classes, images, labels[ok], split[ok], notes=notes)


def split_codes(folder_names: list[str], where: str) -> np.ndarray:
    """Split per image from its split folder's name. One unknown name for all images is just the
    folder that holds the class folders (everything is train); several unknown names are ambiguous."""
    distinct = {f.lower() for f in folder_names}
    unknown = sorted(d for d in distinct if d not in SPLIT_NAMES)
    if unknown and len(distinct) == 1:
        return np.zeros(len(folder_names), dtype=np.uint8)
    if unknown:
        raise DataError(f"{where}: the folders {', '.join(unknown)} are not split names we know; name split "
                        "folders train, val and test (or training, validation, valid, PublicTest, PrivateTest).")
    return np.array([SPLIT_NAMES[f.lower()] for f in folder_names], dtype=np.uint8)


def decode_images(refs: list, read) -> list[np.ndarray | None]:
    """Decode in a thread pool (OpenCV releases the GIL while decoding), in batches to keep the
    per-task overhead small; None marks an image that could not be read."""
    def decode_batch(batch):
        out = []
        for ref in batch:
            try:
                out.append(decode_gray(read(ref)))
            except Exception:   # any failure (corrupt, truncated, encrypted, too large) = unreadable
                out.append(None)
        return out

    batches = [refs[i:i + 256] for i in range(0, len(refs), 256)]
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        return [img for part in pool.map(decode_batch, batches) for img in part]


def decode_gray(data: bytes, size: int = 48) -> np.ndarray:
    """Image bytes -> size x size uint8 grayscale, EXIF orientation applied, centre-cropped to a
    square if needed. Raises on anything that is not a readable image."""
    width_height = declared_size(data)
    gray = None
    if width_height and width_height[0] * width_height[1] <= FAST_DECODE_MAX_PIXELS:
        gray = decode_with_opencv(data)
    if gray is None:
        gray = decode_with_pil(data, size)
    if gray.shape != (size, size):
        gray = np.asarray(ImageOps.fit(Image.fromarray(gray), (size, size), Image.Resampling.BILINEAR))
    return gray


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or baseline/progressive JPEG header, or None if not found.
    A few struct reads, so the size of a small image can be checked before OpenCV decodes it."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:      # fill byte before a marker
            i += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        else:
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def decode_with_opencv(data: bytes) -> np.ndarray | None:
    """OpenCV decodes a small image ~6x faster than PIL and lets other threads run meanwhile
    (32,298 FER JPEGs: ~5 s instead of ~15 s on 2 cores). Same EXIF and 16-bit handling as PIL."""
    try:
        import cv2
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    except Exception:   # no OpenCV, or it cannot read this: PIL gets its turn
        return None


def decode_with_pil(data: bytes, size: int) -> np.ndarray:
    """The pixel count is checked from the header, before anything is decoded."""
    with Image.open(io.BytesIO(data)) as im:
        if im.width * im.height > MAX_IMAGE_PIXELS:
            raise DataError("image too large")
        im.draft("L", (size, size))     # JPEG: decode straight to gray at a reduced scale
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I"):     # 16/32-bit gray: scale down rather than clip at 255
            values = np.asarray(im)
            return (values / 257 if values.max() > 255 else values).clip(0, 255).astype(np.uint8)
        if im.mode not in ("L", "RGB"):  # CMYK, palette, alpha, 1-bit: go through RGB
            im = im.convert("RGB")
        return np.asarray(im.convert("L"), dtype=np.uint8)


def dataset_name(path: Path) -> str:
    name = path.resolve().name
    for suffix in (".csv.gz", ".tar.gz", ".tgz", ".csv", ".zip", ".gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name
