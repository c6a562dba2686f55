"""Data sources: what a user importing FER2013 (or something that only looks like it) would check."""
from __future__ import annotations

import gzip
import io
import lzma
import os
import tarfile
import time
import zipfile

import numpy as np
import pytest
from conftest import needs_shared
from PIL import Image

from fercore.config import EMOTIONS
from fercore.data.dataset import DataError
from fercore.data.sources import load_source, load_trainval_block, write_challenge_csv
from fercore.data.synthetic import make_synthetic

HEADER = b"emotion,pixels,Usage\n"


@pytest.fixture
def small():
    """21 random faces, 3 per class, spread over the three Usage values."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (21, 48, 48), dtype=np.uint8)
    images[0, 0, :3] = (0, 9, 255)     # one-, two- and three-digit values at the start of a row
    labels = np.arange(21) % 7
    usage = ["Training"] * 14 + ["PublicTest"] * 4 + ["PrivateTest"] * 3
    return images, labels, usage


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def row(label=3, pixels=None, usage="Training") -> bytes:
    pixels = " ".join(["7"] * 2304) if pixels is None else pixels
    return f"{label},{pixels},{usage}\n".encode()


def save_image(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def image_bytes(array, fmt="PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


# --- FER2013 challenge CSV

def test_shared_sample_csv_has_200_faces_per_class_in_train_and_val(cache_dir):
    path = needs_shared("fer2013-sample.csv")
    ds = load_source(str(path), cache_dir=cache_dir)
    assert len(ds) == 1400 and ds.classes == list(EMOTIONS)
    counts = ds.class_counts()
    assert all(counts["train"][c] + counts["val"][c] == 200 for c in EMOTIONS)
    assert ds.split_counts() == {"train": 1246, "val": 154, "test": 0}
    assert counts["val"]["angry"] == 24 and counts["train"]["neutral"] == 185
    first = path.read_bytes().split(b"\n")[1].split(b",")
    assert ds.labels[0] == int(first[0])
    assert ds.images[0].ravel()[:8].tolist() == [int(v) for v in first[1].split()[:8]]


@pytest.mark.parametrize("file_name, columns", [
    ("fer2013.csv", ("emotion", "pixels", "Usage")),
    ("fer2013.csv.gz", ("emotion", "pixels", "Usage")),
    ("icml_face_data.csv", ("emotion", " Usage", " pixels")),
])
def test_challenge_csv_variants_round_trip(tmp_path, cache_dir, small, file_name, columns):
    images, labels, usage = small
    path = write_challenge_csv(images, labels, usage, tmp_path / file_name, columns=columns)
    if file_name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    ds = load_source(str(path), cache_dir=cache_dir)
    assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)
    assert ds.split_counts() == {"train": 14, "val": 4, "test": 3}
    assert ds.name == "fer2013" or ds.name == "icml_face_data"
    assert not ds.synthetic


def test_csv_without_usage_puts_everything_in_train_and_says_so(tmp_path, cache_dir, small):
    images, labels, usage = small
    path = write_challenge_csv(images, labels, usage, tmp_path / "train.csv", columns=("emotion", "pixels"))
    ds = load_source(str(path), name="kaggle-train", cache_dir=cache_dir)
    assert ds.split_counts() == {"train": 21, "val": 0, "test": 0}
    assert ds.name == "kaggle-train" and "random split" in ds.notes[0]


def test_csv_inside_zip_and_tar_gz(tmp_path, cache_dir, small):
    images, labels, usage = small
    csv = write_challenge_csv(images, labels, usage, tmp_path / "fer2013.csv").read_bytes()
    with zipfile.ZipFile(tmp_path / "download.zip", "w") as zf:
        zf.writestr("fer2013.csv", csv)
        zf.writestr("README.txt", "hello")
    with tarfile.open(tmp_path / "fer2013.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("fer2013/fer2013.csv")
        info.size = len(csv)
        tf.addfile(info, io.BytesIO(csv))
    for archive in ("download.zip", "fer2013.tar.gz"):
        ds = load_source(str(tmp_path / archive), cache_dir=cache_dir)
        assert np.array_equal(ds.images, images) and ds.split_counts()["test"] == 3


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"),
    (b"label,image,split\n" + row(), "does not look like a FER2013 CSV"),
    (HEADER, "no images"),
    (HEADER + row() + row(pixels=" ".join(["7"] * 2303)), "line 3 has 2303 pixel values"),
    (HEADER + row(label=7), "line 2: the emotion '7' is not a FER2013 code"),
    (HEADER + row(label="happy"), "the emotion 'happy'"),
    (HEADER + row(pixels="12 abc" + " 7" * 2302), "'abc' is not a whole number"),
    (HEADER + row(pixels="1.5" + " 7" * 2303), "'1.5' is not a whole number"),
    (HEADER + row(pixels="256" + " 7" * 2303), "outside 0-255"),
    (HEADER + row(pixels="-1" + " 7" * 2303), "outside 0-255"),
    (HEADER + row(usage="Holdout"), "unknown Usage 'Holdout'"),
    (HEADER + row().replace(b",Training", b",x,Training"), "expected 3 comma-separated fields"),
    (HEADER.replace(b"\n", b"\r\n") + row() + row(), "mixes Windows (CRLF) and Unix (LF)"),
])
def test_malformed_csv_gives_a_plain_sentence_and_no_cache_entry(tmp_path, cache_dir, content, expected):
    path = tmp_path / "fer2013.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_source(str(path), cache_dir=cache_dir)
    assert expected in str(err.value) and "fer2013.csv" in str(err.value)
    assert not cache_dir.exists() or not list(cache_dir.iterdir())


def test_windows_line_endings_and_excel_bom_are_fine(tmp_path, cache_dir):
    path = tmp_path / "fer2013.csv"
    rows = HEADER + row(label=1) + row(label=2, usage="PublicTest")
    path.write_bytes(b"\xef\xbb\xbf" + rows.replace(b"\n", b"\r\n"))
    ds = load_source(str(path), cache_dir=cache_dir)
    assert ds.labels.tolist() == [1, 2] and ds.split.tolist() == [0, 1] and (ds.images == 7).all()


def test_missing_path_and_unknown_format(tmp_path, cache_dir):
    with pytest.raises(DataError, match=r"^No file or folder at .*nowhere\.csv\.$"):
        load_source(str(tmp_path / "nowhere.csv"), cache_dir=cache_dir)
    (tmp_path / "weights.bin").write_bytes(os.urandom(100))
    with pytest.raises(DataError, match="Supported: a FER2013 CSV"):
        load_source(str(tmp_path / "weights.bin"), cache_dir=cache_dir)


# --- image folders and zips

def build_image_tree(root):
    """train/Happy, train/sad, Validation/happy, test/SAD: case and split names as people write them."""
    gray = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))
    save_image(root / "train" / "Happy" / "a.png", gray)
    save_image(root / "train" / "Happy" / "b.jpg", gray)
    save_image(root / "train" / "sad" / "c.jpeg", np.zeros((120, 90, 3), np.uint8) + 200)   # colour, not 48x48
    save_image(root / "Validation" / "happy" / "d.png", gray)
    save_image(root / "test" / "SAD" / "e.png", 255 - gray)
    (root / "test" / "SAD" / "notes.txt").write_text("not an image")
    return gray


def test_image_folder_with_split_and_class_folders(tmp_path, cache_dir):
    gray = build_image_tree(tmp_path / "faces")
    ds = load_source(str(tmp_path / "faces"), cache_dir=cache_dir)
    assert ds.classes == ["happy", "sad"]             # FER2013 code order, not folder order
    assert ds.split_counts() == {"train": 3, "val": 1, "test": 1}
    assert ds.class_counts()["train"] == {"happy": 2, "sad": 1}
    assert ds.images.shape == (5, 48, 48)
    assert np.array_equal(ds.images[ds.split == 2][0], 255 - gray)     # PNG: exact pixels
    assert abs(int(ds.images[(ds.split == 0) & (ds.labels == 1)].mean()) - 200) <= 2   # colour -> gray, resized


def test_zip_gives_the_same_dataset_as_the_folder(tmp_path, cache_dir):
    build_image_tree(tmp_path / "faces")
    with zipfile.ZipFile(tmp_path / "faces.zip", "w") as zf:
        for file in (tmp_path / "faces").rglob("*"):
            zf.write(file, "faces/" + file.relative_to(tmp_path / "faces").as_posix())
        zf.writestr("__MACOSX/faces/train/Happy/._a.png", b"resource fork")
    folder = load_source(str(tmp_path / "faces"), cache_dir=cache_dir)
    archive = load_source(str(tmp_path / "faces.zip"), cache_dir=cache_dir)
    assert archive.classes == folder.classes and archive.notes == []
    for field in ("images", "labels", "split"):
        assert np.array_equal(getattr(archive, field), getattr(folder, field))


def test_class_folders_without_splits_are_all_train_sorted_by_name(tmp_path, cache_dir):
    for cls in ("zebra", "Apple", "mango"):
        save_image(tmp_path / "pics" / cls / "x.png", np.full((48, 48), 9, np.uint8))
    ds = load_source(str(tmp_path / "pics"), cache_dir=cache_dir)
    assert ds.classes == ["apple", "mango", "zebra"] and ds.split_counts()["train"] == 3


def test_unknown_split_folder_names_are_refused(tmp_path, cache_dir):
    for split in ("fold1", "fold2"):
        save_image(tmp_path / "pics" / split / "happy" / "x.png", np.zeros((48, 48), np.uint8))
    with pytest.raises(DataError, match="fold1, fold2 are not split names"):
        load_source(str(tmp_path / "pics"), cache_dir=cache_dir)


def test_unreadable_and_oversized_images_are_skipped_and_counted(tmp_path, cache_dir):
    root = tmp_path / "pics"
    for i in range(2):
        save_image(root / "happy" / f"ok{i}.png", np.zeros((48, 48), np.uint8))
    (root / "happy" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (root / "happy" / "truncated.png").write_bytes(image_bytes(np.zeros((48, 48), np.uint8))[:40])
    Image.new("1", (9000, 9000)).save(root / "happy" / "bomb.png")    # 81 M pixels in a few kB
    ds = load_source(str(root), cache_dir=cache_dir)
    assert len(ds) == 2
    assert ds.notes[0].startswith("3 unreadable images skipped")


def test_zip_with_parent_and_absolute_paths_writes_nothing_and_counts_them(tmp_path, cache_dir):
    png = image_bytes(np.zeros((48, 48), np.uint8))
    work = tmp_path / "work"
    work.mkdir()
    with zipfile.ZipFile(work / "evil.zip", "w") as zf:
        zf.writestr("train/happy/ok.png", png)
        zf.writestr("../../escaped/happy/evil.png", png)
        zf.writestr("/abs/happy/evil.png", png)
    before = sorted(p for p in tmp_path.rglob("*") if cache_dir not in p.parents)
    ds = load_source(str(work / "evil.zip"), cache_dir=cache_dir)
    assert len(ds) == 1 and ds.notes == ["2 zip entries with absolute or ../ paths ignored."]
    after = sorted(p for p in tmp_path.rglob("*") if cache_dir not in p.parents and p != cache_dir)
    assert after == before
    assert not (tmp_path / "escaped").exists()


def test_zip_declaring_a_huge_size_is_refused(tmp_path, cache_dir):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/happy/a.png", image_bytes(np.zeros((48, 48), np.uint8)))
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = (3 * 1024 ** 3).to_bytes(4, "little")    # uncompressed size: 3 GB
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="zip bomb"):
        load_source(str(path), cache_dir=cache_dir)
    assert not cache_dir.exists() or not list(cache_dir.iterdir())


def test_real_fer2013_image_folder_split_counts(cache_dir):
    """The val folder alone (3,589 images, a second): the root folder name gives the split.
    The full 32,298-image folder loads in ~5 s on 2 cores; that is measured by hand, not in CI."""
    val = needs_shared("fer2013-images") / "val"
    ds = load_source(str(val), cache_dir=cache_dir)
    assert ds.split_counts() == {"train": 0, "val": 3589, "test": 0}
    assert ds.classes == list(EMOTIONS)
    assert ds.class_counts()["val"] == {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "sad": 653,
                                        "surprise": 415, "neutral": 607}
    assert ds.notes == []


# --- cache

def test_second_load_comes_from_the_cache_and_a_change_invalidates_it(tmp_path, cache_dir, small):
    images, labels, usage = small
    path = write_challenge_csv(np.repeat(images, 40, axis=0), np.repeat(labels, 40), np.repeat(usage, 40),
                               tmp_path / "fer2013.csv")
    t0 = time.perf_counter()
    first = load_source(str(path), cache_dir=cache_dir)
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = load_source(str(path), name="again", cache_dir=cache_dir)
    cached_s = time.perf_counter() - t0
    assert second.fingerprint() == first.fingerprint() and second.name == "again"
    assert cached_s < parse_s
    assert len(list(cache_dir.glob("*.npz"))) == 1

    data = path.read_bytes().replace(b"\n3,", b"\n4,", 1)
    path.write_bytes(data)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    third = load_source(str(path), cache_dir=cache_dir)
    assert not np.array_equal(third.labels, first.labels)
    assert len(list(cache_dir.glob("*.npz"))) == 1      # the stale entry was replaced, not kept


def test_cache_dir_defaults_to_env(tmp_path, monkeypatch, small):
    images, labels, usage = small
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "envcache"))
    load_source(str(write_challenge_csv(images, labels, usage, tmp_path / "fer2013.csv")))
    assert len(list((tmp_path / "envcache").glob("*.npz"))) == 1


# --- synthetic faces

def test_synthetic_is_deterministic_balanced_and_labelled_synthetic():
    a, b, c = make_synthetic(700, seed=1), make_synthetic(700, seed=1), make_synthetic(700, seed=2)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.split, b.split)
    assert not np.array_equal(a.images, c.images)
    assert a.synthetic and a.source == "synthetic" and a.classes == list(EMOTIONS)
    assert a.images.shape == (700, 48, 48) and a.images.std() > 20
    assert np.bincount(a.labels).tolist() == [100] * 7
    assert a.split_counts() == {"train": 560, "val": 70, "test": 70}


def test_synthetic_specs_through_load_source():
    ds = load_source("synthetic:140:3")
    assert len(ds) == 140 and ds.name == "synthetic:140:3" and ds.synthetic
    assert np.array_equal(ds.images, make_synthetic(140, 3).images)
    t0 = time.perf_counter()
    assert len(load_source("synthetic")) == 2100
    assert time.perf_counter() - t0 < 3     # ~0.5 s; generous for a shared CI machine
    with pytest.raises(DataError, match="synthetic:N:SEED"):
        load_source("synthetic:lots")


def test_a_small_cnn_learns_synthetic_expressions_in_two_epochs():
    torch = pytest.importorskip("torch")
    from torch import nn
    torch.manual_seed(0)
    ds = make_synthetic(1400, seed=5)

    def standardised(split):
        x, y = ds.arrays(split)
        x = torch.tensor(x).float()[:, None]
        return (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1), torch.tensor(y)

    (x, y), (xv, yv) = standardised("train"), standardised("val")
    model = nn.Sequential(*[layer for c_in, c_out in ((1, 8), (8, 16), (16, 16)) for layer in (
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))],
        nn.Flatten(), nn.Linear(16 * 36, 7))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(2):
        for idx in torch.randperm(len(y)).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    assert acc > 0.5     # chance is 1/7; typically ~0.8


# --- helpers for the GPU and benchmark scripts

def test_trainval_block_reads_pixels_labels_and_splits(tmp_path, small):
    images, labels, _ = small
    (tmp_path / "fer2013-trainval-u8.xz").write_bytes(lzma.compress(images.tobytes()))
    np.savez(tmp_path / "fer2013-trainval-labels.npz", y_train=labels[:15].astype(np.uint8),
             y_val=labels[15:].astype(np.uint8), classes=np.array(EMOTIONS))
    ds = load_trainval_block(tmp_path)
    assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)
    assert ds.split_counts() == {"train": 15, "val": 6, "test": 0} and ds.classes == list(EMOTIONS)
    with pytest.raises(DataError, match="No fer2013-trainval-u8.xz"):
        load_trainval_block(tmp_path / "elsewhere")


def test_written_csv_is_the_plain_challenge_layout(tmp_path, small):
    images, labels, usage = small
    lines = write_challenge_csv(images, labels, usage, tmp_path / "f.csv").read_bytes().split(b"\n")
    assert lines[0] == b"emotion,pixels,Usage" and lines[-1] == b""
    label, pixels, use = lines[1].split(b",")
    assert label == b"0" and use == b"Training"
    assert pixels.split(b" ")[:3] == [b"0", b"9", b"255"] and len(pixels.split(b" ")) == 2304
    gz = write_challenge_csv(images, labels, usage, tmp_path / "f.csv.gz")
    assert gzip.decompress(gz.read_bytes()) == (tmp_path / "f.csv").read_bytes()
