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
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from fercore.config import EMOTIONS
from fercore.data import cache
from fercore.data.dataset import SPLITS, DataError, FERDataset
from fercore.data.decompress import (
    ARCHIVE_ERRORS,
    MAX_EXPANDED_BYTES,
    describe,
    gunzip_capped,
    open_maybe_gzipped,
    refuse_expansion,
)
from fercore.data.image_folders import (
    IMAGE_SUFFIXES,
    SPLIT_NAMES,
    dataset_name,
    load_image_folder,
    load_image_zip,
    zip_members,
)
from fercore.data.synthetic import make_synthetic

PIXELS_PER_IMAGE = 48 * 48
MAX_CSV_BYTES = MAX_EXPANDED_BYTES   # the real fer2013.csv is 287 MB; anything much bigger is not FER2013
MAX_LINE_BYTES = 1024 ** 2           # a FER2013 row is ~9 kB; a longer line is not one (and is not held whole)
ROWS_PER_BLOCK = 4096
SPLIT_TO_USAGE = {0: "Training", 1: "PublicTest", 2: "PrivateTest"}
CSV_FILE_NAMES = ("fer2013.csv", "icml_face_data.csv")   # preferred when an archive holds several CSVs


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
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise DataError(f"{path} is {size / 1e6:,.0f} MB, too large to be a FER2013 CSV (that is 287 MB).")
    with open(path, "rb") as raw:
        stream = open_maybe_gzipped(raw, str(path), "file")
        return read_challenge_csv(stream, str(path), dataset_name(path), str(path.resolve()))


def parse_challenge_csv(data: bytes, where: str, name: str, source: str) -> FERDataset:
    """Parse a FER2013 challenge CSV held in memory."""
    return read_challenge_csv(io.BytesIO(data), where, name, source)


def read_challenge_csv(stream, where: str, name: str, source: str) -> FERDataset:
    """Parse the FER2013 challenge CSV from a binary stream, line by line: memory holds the images parsed so far,
    never the text (a 287 MB fer2013.csv is 83 MB of pixels). Rows are split in Python (35,887 of them) but each
    row's 2,304 pixel values are parsed by numpy in C, which is what makes a full import take seconds."""
    lines = csv_lines(stream, where)
    first = next(lines, None)
    if first is None or (not first[1].strip() and all(not line.strip() for _, line in lines)):
        raise DataError(f"{where} is empty.")
    header = first[1]
    columns = [c.decode("utf-8", "replace").strip().strip('"').strip().lower() for c in header.split(b",")]
    if "emotion" not in columns or "pixels" not in columns:
        first_line = header[:80].decode("utf-8", "replace")
        raise DataError(f"{where} does not look like a FER2013 CSV: its first line is {first_line!r}, "
                        "but the columns emotion, pixels and (optionally) Usage are expected.")
    label_col, pixel_col = columns.index("emotion"), columns.index("pixels")
    usage_col = columns.index("usage") if "usage" in columns else None
    blocks: list[np.ndarray] = []     # rows arrive one by one: fill fixed-size blocks, join them once at the end
    labels, split = [], []
    for line_no, line in lines:
        fields = line.split(b",")
        if len(fields) != len(columns):
            if not line.strip():
                continue    # blank lines carry nothing; skipping them is what a spreadsheet would do
            raise DataError(f"{where}, line {line_no}: expected {len(columns)} comma-separated fields, "
                            f"found {len(fields)}.")
        if len(labels) % ROWS_PER_BLOCK == 0:
            blocks.append(np.empty((ROWS_PER_BLOCK, PIXELS_PER_IMAGE), dtype=np.uint8))
        blocks[-1][len(labels) % ROWS_PER_BLOCK] = parse_pixels(fields[pixel_col], where, line_no)
        labels.append(parse_label(fields[label_col], where, line_no))
        split.append(parse_usage(fields[usage_col], where, line_no) if usage_col is not None else 0)
    n = len(labels)
    if n == 0:
        raise DataError(f"{where} has a header line but no images.")
    notes = [] if usage_col is not None else [
        "The CSV has no Usage column, so every image is in train; use a random split to train on it."]
    blocks[-1] = blocks[-1][:n - ROWS_PER_BLOCK * (len(blocks) - 1)]
    images = np.concatenate(blocks)   # exactly n rows: no unused block memory stays attached to the dataset
    del blocks
    return FERDataset(name, source, list(EMOTIONS), images.reshape(n, 48, 48), np.array(labels, dtype=np.int64),
                      np.array(split, dtype=np.uint8), notes=notes)


def csv_lines(stream, where: str):
    """(line number, line without its ending) for every line of `stream`, checking line endings as they come:
    one kind throughout, Unix (LF) or Windows (CRLF), and no stray carriage returns (CR)."""
    ending = None
    for line_no, line in enumerate(iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b""), start=1):
        if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]     # the UTF-8 mark Excel puts in front of CSVs it saves
        if len(line) > MAX_LINE_BYTES:
            raise DataError(f"{where}, line {line_no} is longer than {MAX_LINE_BYTES // 1024 ** 2} MB; a FER2013 "
                            "row is about 9 kB, so this is not a FER2013 CSV.")
        kind = "crlf" if line.endswith(b"\r\n") else "lf" if line.endswith(b"\n") else None
        body = line[:-2] if kind == "crlf" else line[:-1] if kind == "lf" else line
        ending = ending or kind
        if (kind and kind != ending) or (b"\r" in body and ending == "crlf"):
            raise DataError(f"{where} mixes Windows (CRLF) and Unix (LF) line endings; "
                            "save it again with one kind of line ending.")
        if b"\r" in body:
            raise DataError(f"{where} has carriage returns (CR) that are not Windows line endings; "
                            "save it again with Unix (LF) or Windows (CRLF) line endings.")
        yield line_no, body


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
                where = f"{path}: {member.filename}"
                refuse_expansion(where, member.file_size, member.compress_size)   # what it declares, first
                with zf.open(member) as raw:   # zipfile never yields more than the declared size
                    stream = open_maybe_gzipped(raw, where, "zip file", lambda: member.compress_size)
                    return read_challenge_csv(stream, where, dataset_name(path), str(path.resolve()))
    except DataError:
        raise
    except ARCHIVE_ERRORS as e:
        raise DataError(f"{path} is not a readable zip file ({describe(e)}).") from None
    return load_image_zip(path, dataset_name(path))


def load_tar(path: Path) -> FERDataset:
    """The original challenge download, fer2013.tar.gz, holds fer2013/fer2013.csv. The archive is read as a
    stream, twice: once to list its members, once to parse the CSV, each time capped like a .csv.gz."""
    try:
        csvs = [(i, m.name) for i, (m, _) in enumerate(tar_members(path)) if m.name.lower().endswith(".csv")]
        if not csvs:
            raise DataError(f"{path} holds no CSV file.")
        index, name = pick_csv(csvs, lambda m: m[1])
        for i, (_, stream) in enumerate(tar_members(path)):
            if i == index:
                where = f"{path}: {name}"
                return read_challenge_csv(stream, where, dataset_name(path), str(path.resolve()))
    except DataError:
        raise
    except ARCHIVE_ERRORS as e:
        raise DataError(f"{path} is not a readable .tar.gz file ({describe(e)}).") from None
    raise DataError(f"{path} changed while it was being read; import it again.")


def tar_members(path: Path):
    """(member, a stream of its content, readable while it is the current member) for each file in a .tar.gz,
    in order. The whole decompressed archive is capped, so no member can expand beyond the caps either."""
    with open(path, "rb") as raw, tarfile.open(fileobj=gunzip_capped(raw, str(path)), mode="r|") as tf:
        for member in tf:
            if member.isfile():
                yield member, tf.extractfile(member)


def pick_csv(members, name_of):
    for wanted in CSV_FILE_NAMES:
        for m in members:
            if name_of(m).replace("\\", "/").lower().rsplit("/", 1)[-1] == wanted:
                return m
    if len(members) == 1:
        return members[0]
    raise DataError("The archive holds several CSV files and none is named fer2013.csv or icml_face_data.csv: "
                    + ", ".join(name_of(m) for m in members[:5]) + ".")


LOADERS = {
    "csv": load_csv_file,
    "folder": lambda path: load_image_folder(path, dataset_name(path)),
    "zip": load_zip,
    "tar": load_tar,
}


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
