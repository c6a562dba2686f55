"""Sources: turn FER2013 in the forms people download into a FERDataset.

`load_source` recognises
- the challenge CSV `fer2013.csv` (emotion,pixels,Usage), gzipped or not, the `icml_face_data.csv`
  variant (`emotion, Usage, pixels`), also inside a .zip or .tar.gz;
- an image folder or .zip laid out as `<split>/<class>/<image>` or `<class>/<image>`;
- the word `synthetic` (`synthetic:N`, `synthetic:N:SEED`): drawn faces, see synthetic.py.
A file or folder is parsed once; later loads of the unchanged source come from the .npz cache.
"""
from __future__ import annotations

import gzip
import io
import lzma
import os
import struct
import tarfile
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..config import EMOTIONS
from . import cache
from .dataset import SPLITS, DataError, FERDataset
from .synthetic import make_synthetic

PIXELS_PER_IMAGE = 48 * 48
MAX_CSV_BYTES = 2 * 1024 ** 3        # the real fer2013.csv is 287 MB; anything this big is not FER2013
SPLIT_TO_USAGE = {0: "Training", 1: "PublicTest", 2: "PrivateTest"}
CSV_FILE_NAMES = ("fer2013.csv", "icml_face_data.csv")   # preferred when an archive holds several CSVs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Usage values and split folder names (compared in lower case) -> split code
SPLIT_NAMES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "publictest": 1,
               "test": 2, "testing": 2, "privatetest": 2}
CLASS_ALIASES = {"anger": "angry", "disgusted": "disgust", "fearful": "fear", "happiness": "happy",
                 "sadness": "sad", "surprised": "surprise"}
MAX_ARCHIVE_BYTES = 2 * 1024 ** 3    # declared uncompressed total of a zip
MAX_IMAGE_BYTES = 32 * 1024 ** 2
MAX_IMAGE_PIXELS = 50_000_000        # a 7000x7000 photo; more is a decompression bomb, not a face
FAST_DECODE_MAX_PIXELS = 1024 * 1024  # bigger images go to PIL, which decodes JPEGs at a reduced scale
DECODE_THREADS = min(8, os.cpu_count() or 2)


def load_source(src: str, name: str | None = None, cache_dir: str | Path | None = None) -> FERDataset:
    """A FERDataset from a FER2013 CSV (.csv/.csv.gz), an image folder, a .zip, or `synthetic[:N[:SEED]]`."""
    text = str(src).strip()
    if text.lower().split(":")[0] == "synthetic":
        ds = load_synthetic(text)
    else:
        path = Path(text).expanduser()
        if not text or not path.exists():
            raise DataError(f"No file or folder at {text}.")
        entry = cache.cache_entry(path, cache_dir)
        ds = cache.read_cached(entry)
        if ds is None:
            ds = LOADERS[source_kind(path)](path)
            cache.write_cached(ds, entry)
    if name:
        ds.name = name
    return ds


def source_kind(path: Path) -> str:
    """Which loader reads `path`, judged by content where a file's name could mislead."""
    if path.is_dir():
        return "folder"
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" and path.name.lower().endswith((".tar.gz", ".tgz")):
        return "tar"
    if head[:2] == b"\x1f\x8b" or path.suffix.lower() in (".csv", ".txt") or b"emotion" in head.lower():
        return "csv"
    raise DataError(f"{path} is not a format we can import. Supported: a FER2013 CSV (.csv or .csv.gz), "
                    "a folder or .zip of images in <split>/<class>/ or <class>/ folders, or the word synthetic.")


def load_synthetic(text: str) -> FERDataset:
    parts = text.split(":")
    try:
        n, seed = int(parts[1]) if len(parts) > 1 else 2100, int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        n = seed = None
    if len(parts) > 3 or n is None or not 7 <= n <= 200_000:
        raise DataError(f"{text!r} is not a synthetic data set we can make; write synthetic, synthetic:N "
                        "or synthetic:N:SEED with N from 7 to 200000.")
    ds = make_synthetic(n, seed)
    ds.name = "synthetic" if len(parts) == 1 else f"synthetic:{n}:{seed}"
    return ds


# --- FER2013 challenge CSV

def load_csv_file(path: Path) -> FERDataset:
    if path.stat().st_size > MAX_CSV_BYTES:
        raise DataError(f"{path} is {path.stat().st_size / 1e9:.1f} GB, too large to be a FER2013 CSV.")
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gunzip_capped(data, path)
    return parse_challenge_csv(data, str(path), dataset_name(path), str(path.resolve()))


def gunzip_capped(data: bytes, where) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(MAX_CSV_BYTES + 1)
    except (OSError, EOFError) as e:
        raise DataError(f"{where} is not a readable gzip file ({e}).") from None
    if len(out) > MAX_CSV_BYTES:
        raise DataError(f"{where} expands to more than {MAX_CSV_BYTES // 1024 ** 3} GB; that is not a FER2013 CSV.")
    return out


def parse_challenge_csv(data: bytes, where: str, name: str, source: str) -> FERDataset:
    """Parse the FER2013 challenge CSV. Rows are split in Python (35,887 of them) but each row's
    2,304 pixel values are parsed by numpy in C, which is what makes a full import take seconds."""
    lines = split_lines(data, where)
    del data
    columns = [c.decode("utf-8", "replace").strip().strip('"').strip().lower() for c in lines[0].split(b",")]
    if "emotion" not in columns or "pixels" not in columns:
        first = lines[0][:80].decode("utf-8", "replace")
        raise DataError(f"{where} does not look like a FER2013 CSV: its first line is {first!r}, "
                        "but the columns emotion, pixels and (optionally) Usage are expected.")
    label_col, pixel_col = columns.index("emotion"), columns.index("pixels")
    usage_col = columns.index("usage") if "usage" in columns else None
    images = np.empty((len(lines) - 1, PIXELS_PER_IMAGE), dtype=np.uint8)
    labels = np.empty(len(lines) - 1, dtype=np.int64)
    split = np.zeros(len(lines) - 1, dtype=np.uint8)
    n = 0
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split(b",")
        if len(fields) != len(columns):
            if not line.strip():
                continue    # blank lines carry nothing; skipping them is what a spreadsheet would do
            raise DataError(f"{where}, line {line_no}: expected {len(columns)} comma-separated fields, "
                            f"found {len(fields)}.")
        images[n] = parse_pixels(fields[pixel_col], where, line_no)
        labels[n] = parse_label(fields[label_col], where, line_no)
        if usage_col is not None:
            split[n] = parse_usage(fields[usage_col], where, line_no)
        n += 1
    if n == 0:
        raise DataError(f"{where} has a header line but no images.")
    notes = [] if usage_col is not None else [
        "The CSV has no Usage column, so every image is in train; use a random split to train on it."]
    return FERDataset(name, source, list(EMOTIONS), images[:n].reshape(n, 48, 48), labels[:n], split[:n],
                      notes=notes)


def split_lines(data: bytes, where: str) -> list[bytes]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]     # the UTF-8 mark Excel puts in front of CSVs it saves
    if not data.strip():
        raise DataError(f"{where} is empty.")
    crlf, lf, cr = data.count(b"\r\n"), data.count(b"\n"), data.count(b"\r")
    if crlf and (crlf != lf or cr != crlf):
        raise DataError(f"{where} mixes Windows (CRLF) and Unix (LF) line endings; "
                        "save it again with one kind of line ending.")
    if cr and not crlf:
        raise DataError(f"{where} has carriage returns (CR) that are not Windows line endings; "
                        "save it again with Unix (LF) or Windows (CRLF) line endings.")
    lines = data.split(b"\r\n" if crlf else b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def parse_pixels(field: bytes, where: str, line_no: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():     # older numpy warns (newer raises) on a non-number
            warnings.simplefilter("error")
            values = np.fromstring(field.strip(b' "'), dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):
        bad = next((t for t in field.strip(b' "').split() if not t.isdigit()), field[:20])
        raise DataError(f"{where}, line {line_no}: the pixel value {bad.decode('utf-8', 'replace')!r} "
                        "is not a whole number.") from None
    if values.size != PIXELS_PER_IMAGE:
        raise DataError(f"{where}, line {line_no} has {values.size} pixel values; FER2013 images have "
                        f"{PIXELS_PER_IMAGE} (48x48).")
    if (values >> 8).any():    # any bit above the lowest 8 (or a sign) means outside 0-255
        raise DataError(f"{where}, line {line_no} has pixel values outside 0-255.")
    return values


def parse_label(field: bytes, where: str, line_no: int) -> int:
    try:
        label = int(field.strip(b' "'))
    except ValueError:
        label = -1
    if not 0 <= label < len(EMOTIONS):
        codes = ", ".join(f"{i} {c}" for i, c in enumerate(EMOTIONS))
        raise DataError(f"{where}, line {line_no}: the emotion {field.strip().decode('utf-8', 'replace')!r} "
                        f"is not a FER2013 code ({codes}).")
    return label


def parse_usage(field: bytes, where: str, line_no: int) -> int:
    split = SPLIT_NAMES.get(field.strip(b' "').decode("utf-8", "replace").lower())
    if split is None:
        raise DataError(f"{where}, line {line_no}: unknown Usage {field.strip().decode('utf-8', 'replace')!r}; "
                        "expected Training, PublicTest or PrivateTest.")
    return split


# --- archives holding a CSV

def load_zip(path: Path) -> FERDataset:
    """A .zip of images, or a .zip holding the FER2013 CSV (how many Kaggle downloads arrive)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members, _ = zip_members(zf, str(path))
            csvs = [m for m in members if m.filename.lower().endswith((".csv", ".csv.gz"))]
            if csvs and not any(m.filename.lower().endswith(IMAGE_SUFFIXES) for m in members):
                member = pick_csv(csvs, lambda m: m.filename)
                if member.file_size > MAX_CSV_BYTES:
                    raise DataError(f"{path}: {member.filename} is too large to be a FER2013 CSV.")
                data = zf.read(member)
                if data[:2] == b"\x1f\x8b":
                    data = gunzip_capped(data, f"{path}: {member.filename}")
                return parse_challenge_csv(data, f"{path}: {member.filename}", dataset_name(path),
                                           str(path.resolve()))
    except zipfile.BadZipFile as e:
        raise DataError(f"{path} is not a readable zip file ({e}).") from None
    return load_image_zip(path, dataset_name(path))


def load_tar(path: Path) -> FERDataset:
    """The original challenge download, fer2013.tar.gz, holds fer2013/fer2013.csv."""
    try:
        with tarfile.open(path, "r:gz") as tf:
            csvs = [m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(".csv")]
            if not csvs:
                raise DataError(f"{path} holds no CSV file.")
            member = pick_csv(csvs, lambda m: m.name)
            if member.size > MAX_CSV_BYTES:
                raise DataError(f"{path}: {member.name} is too large to be a FER2013 CSV.")
            data = tf.extractfile(member).read()    # read into memory; nothing is written to disk
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .tar.gz file ({e}).") from None
    return parse_challenge_csv(data, f"{path}: {member.name}", dataset_name(path), str(path.resolve()))


def pick_csv(members, name_of):
    for wanted in CSV_FILE_NAMES:
        for m in members:
            if name_of(m).replace("\\", "/").lower().rsplit("/", 1)[-1] == wanted:
                return m
    if len(members) == 1:
        return members[0]
    raise DataError("The archive holds several CSV files and none is named fer2013.csv or icml_face_data.csv: "
                    + ", ".join(name_of(m) for m in members[:5]) + ".")


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
    except zipfile.BadZipFile as e:
        raise DataError(f"{path} is not a readable zip file ({e}).") from None


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


LOADERS = {
    "csv": load_csv_file,
    "folder": lambda path: load_image_folder(path, dataset_name(path)),
    "zip": load_zip,
    "tar": load_tar,
}


def dataset_name(path: Path) -> str:
    name = path.resolve().name
    for suffix in (".csv.gz", ".tar.gz", ".tgz", ".csv", ".zip", ".gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


# --- helpers for benchmarks, tests and the GPU scripts

def write_challenge_csv(images: np.ndarray, labels: np.ndarray, usage, path,
                        columns: tuple[str, ...] = ("emotion", "pixels", "Usage")) -> Path:
    """Write images in the FER2013 challenge CSV layout (gzipped when `path` ends in .gz).
    `columns` sets header names and order, e.g. ("emotion", " Usage", " pixels") for the icml variant.
    Pixel text is built for many rows at once: each value's digits come from a 256-entry table."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), -1)
    labels = np.asarray(labels).astype(np.int64)
    usage = [SPLIT_TO_USAGE.get(u, u) if isinstance(u, (int, np.integer)) else str(u) for u in usage]
    if not len(images) == len(labels) == len(usage):
        raise DataError("Images, labels and usage have different lengths.")
    order = [c.strip().lower() for c in columns]
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(",".join(columns).encode() + b"\n")
        for start in range(0, len(images), 2048):
            text, ends = pixel_text(images[start:start + 2048])
            begin = 0
            for i, end in enumerate(ends, start=start):
                field = {"emotion": b"%d" % labels[i], "pixels": text[begin:end - 1], "usage": usage[i].encode()}
                f.write(b",".join(field[c] for c in order) + b"\n")
                begin = end
    return path


def pixel_text(rows: np.ndarray) -> tuple[bytes, np.ndarray]:
    """'v v v ... v ' for each row, all rows concatenated, and the end offset of each row."""
    table = np.zeros((256, 4), dtype=np.uint8)      # each value as up to 3 digits + a space, 0-padded
    for v in range(256):
        digits = b"%d " % v
        table[v, :len(digits)] = np.frombuffer(digits, dtype=np.uint8)
    chars = table[rows].reshape(-1)
    text = chars[chars != 0].tobytes()
    ends = np.cumsum((rows >= 10).sum(1) + (rows >= 100).sum(1) + 2 * rows.shape[1])
    return text, ends


def load_trainval_block(shared_dir) -> FERDataset:
    """FER2013 train + val (PublicTest) from the shared raw block: fer2013-trainval-u8.xz holds
    32,298 48x48 uint8 images, train first, grouped by class; the labels .npz holds y_train, y_val
    and the class names."""
    shared_dir = Path(shared_dir)
    folder = next((d for d in (shared_dir, shared_dir / "datasets")
                   if (d / "fer2013-trainval-u8.xz").is_file()), None)
    if folder is None:
        raise DataError(f"No fer2013-trainval-u8.xz in {shared_dir}.")
    labels_file = folder / "fer2013-trainval-labels.npz"
    if not labels_file.is_file():
        raise DataError(f"No fer2013-trainval-labels.npz next to the pixel block in {folder}.")
    with np.load(labels_file, allow_pickle=False) as z:
        y_train, y_val, classes = z["y_train"], z["y_val"], [str(c) for c in z["classes"]]
    images = np.frombuffer(lzma.decompress((folder / "fer2013-trainval-u8.xz").read_bytes()), dtype=np.uint8)
    images = images.reshape(-1, 48, 48)
    if len(images) != len(y_train) + len(y_val):
        raise DataError(f"The pixel block in {folder} holds {len(images)} images but the labels name "
                        f"{len(y_train) + len(y_val)}.")
    split = np.repeat(np.array([SPLITS.index("train"), SPLITS.index("val")], dtype=np.uint8),
                      [len(y_train), len(y_val)])
    return FERDataset("fer2013-trainval", str(folder / "fer2013-trainval-u8.xz"), classes, images,
                      np.concatenate([y_train, y_val]).astype(np.int64), split)
