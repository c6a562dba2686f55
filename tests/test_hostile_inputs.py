"""Hostile inputs on a shared classroom server: decompression bombs, random and mutated bytes fed to every reader
of uploaded files, run files asking for huge models, the face detector under concurrent sessions, durable writes.

What a user (or the instructor) would check: each input gives a dataset or a run, or a plain-sentence error of the
lab's own kinds (DataError, RunFileError); never another exception, never a partial dataset or run in the store;
memory stays bounded whatever the upload.
"""
from __future__ import annotations

import functools
import gzip
import io
import itertools
import json
import os
import queue
import re
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, cli_env
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import fercore.models
from fercore.cli import cmd_data_import
from fercore.config import ConfigError, RunConfig
from fercore.data.dataset import DataError
from fercore.data.decompress import MAX_RATIO, gunzip_capped
from fercore.data.sources import load_source, write_challenge_csv
from fercore.data.synthetic import make_synthetic
from fercore.jobs.runfile import (
    RunFileError,
    ensure_starter,
    import_run,
    probs_to_file,
    save_checkpoint,
)
from fercore.models import build_model
from fercore.predict import faces
from fercore.store import RunStore
from fercore.store.entities import RunStatus
from fercore.teach.sweeps import start_sweep

# 40 examples per reader keep the suite quick; FER_FUZZ_EXAMPLES=2000 hunts longer
FUZZ = settings(max_examples=int(os.environ.get("FER_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
TINY = RunConfig(name="tiny", data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,),
                 batch_size=32, epochs=1, tta="none")
HEADER = b"emotion,pixels,Usage\n"
ROW = b"3," + b" ".join([b"255"] * 2304) + b",Training\n"   # one valid 9.2 kB row, the bomb's payload
_names = itertools.count()


def is_sentence(msg: str) -> bool:
    """A plain sentence: ends like one, no exception class names, no 'unexpected error' fallback."""
    return (isinstance(msg, str) and 10 < len(msg) < 700 and msg.rstrip().endswith((".", ")."))
            and not re.search(r"Traceback|Unexpected error|\b[A-Z]\w*(Error|Exception)\b", msg))


def files_below(*folders: Path) -> list[str]:
    return sorted(str(p) for f in folders if f.exists() for p in f.rglob("*") if p.is_file()
                  and not p.name.startswith("runs.db"))


# --- decompression bombs ---------------------------------------------------------------------------------

def gzip_bomb(path: Path, expanded: int = 1_600_000_000) -> Path:
    """A FER2013-looking .csv.gz of one row repeated to `expanded` bytes (1.6 GB: 172,710 rows) in under 2 MB,
    ~850:1. Built as a multi-member gzip (one compressed 16 MB block written again and again), which `gzip -d`
    and Python read exactly like a single member, in a fraction of a second instead of ten."""
    block = ROW * (16 * 1024 ** 2 // len(ROW))
    member = gzip.compress(block, 9)
    with open(path, "wb") as f:
        f.write(gzip.compress(HEADER + block, 9))
        for _ in range(expanded // len(block) - 1):
            f.write(member)
    return path


PEAK_SCRIPT = r"""
import json, resource, sys, time
from argparse import Namespace
from fercore.cli import cmd_data_import, main
from fercore.data.dataset import DataError
from fercore.store import RunStore

def peak_mb():
    # VmHWM, this process's own peak: getrusage's ru_maxrss would report the forking pytest process's RSS
    # (~750 MB here; Linux carries it across exec)
    try:
        status = open("/proc/self/status").read()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

store = RunStore(sys.argv[2])
figures = {"peak_before_mb": peak_mb()}
t0 = time.perf_counter()
try:   # what `data import` does, before torch is imported (by the command below), so the peak is the import's
    cmd_data_import(Namespace(src=sys.argv[1], name=None), store)
except DataError:
    pass
figures.update(seconds=time.perf_counter() - t0, peak_mb=peak_mb())
figures["code"] = main(["data", "import", sys.argv[1], "--db", sys.argv[2], "--json"])   # the command itself
print(json.dumps(figures))
"""


def import_in_a_process(path: Path, db: str) -> tuple[dict, dict]:
    """`data import PATH --json` in a fresh process; returns (its JSON answer, its peak memory figures)."""
    p = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path), db], capture_output=True, text=True,
                       cwd=REPO, env=cli_env(), timeout=300)
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith(("{", "["))]
    return lines[-2], lines[-1]


def test_a_gzip_bomb_is_refused_in_bounded_memory_and_nothing_is_stored(tmp_path, db):
    bomb = gzip_bomb(tmp_path / "fer2013.csv.gz")
    assert bomb.stat().st_size < 2 * 1024 ** 2
    store = RunStore(db)
    ensure_starter(store)   # the command registers it in a new database; that is not the upload's doing
    watched = [store.artifacts, Path(os.environ["FER_CACHE_DIR"])]
    before = files_below(*watched)
    answer, figures = import_in_a_process(bomb, db)
    print(f"gzip bomb ({bomb.stat().st_size / 1e6:.2f} MB -> 1.6 GB): {figures}")
    assert figures["code"] != 0 and is_sentence(answer["error"]), answer
    assert "decompression bomb" in answer["error"] and "Nothing was imported" in answer["error"]
    assert figures["peak_mb"] < 600, figures                          # the issue measured 4.4 GB
    assert figures["peak_mb"] - figures["peak_before_mb"] < 150, figures
    assert figures["seconds"] < 30, figures
    assert store.list_datasets() == [] and files_below(*watched) == before


def archive_bombs(folder: Path) -> dict[str, Path]:
    """A 64 MB CSV of one row, ~1000:1, as a zip member, a .csv.gz inside a zip, and a .tar.gz member."""
    csv = HEADER + ROW * (64 * 1024 ** 2 // len(ROW))
    with zipfile.ZipFile(folder / "kaggle.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fer2013.csv", csv)
    with zipfile.ZipFile(folder / "nested.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("fer2013.csv.gz", gzip.compress(csv, 9))
    with tarfile.open(folder / "fer2013.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("fer2013/fer2013.csv")
        info.size = len(csv)
        tf.addfile(info, io.BytesIO(csv))
    return {p.name: p for p in (folder / "kaggle.zip", folder / "nested.zip", folder / "fer2013.tar.gz")}


def test_zip_and_tar_bombs_holding_a_csv_are_refused_with_a_sentence(tmp_path, db):
    store = RunStore(db)
    for name, path in archive_bombs(tmp_path).items():
        with pytest.raises(DataError) as err:
            cmd_data_import(Namespace(src=str(path), name=None), store)
        assert is_sentence(str(err.value)) and "decompression bomb" in str(err.value), (name, str(err.value))
    assert store.list_datasets() == [] and files_below(store.artifacts) == []


def test_sizes_beyond_the_cap_are_refused_before_reading(tmp_path):
    big = tmp_path / "fer2013.csv"
    with open(big, "wb") as f:   # sparse: 401 MB that take no disk
        f.write(HEADER)
        f.truncate(401 * 1024 ** 2)
    with pytest.raises(DataError, match="too large to be a FER2013 CSV"):
        load_source(str(big))
    # a stream is cut at its cap however well or badly it compresses
    data = gzip.compress(os.urandom(3 * 1024 ** 2), 1)
    with pytest.raises(DataError, match=r"expands to more than 2 MB.*Nothing was imported\.$"):
        gunzip_capped(io.BytesIO(data), "upload.csv.gz", limit=2 * 1024 ** 2).read()


def test_real_csvs_pass_the_ratio_cap(tmp_path):
    """Drawn faces compress best of the CSVs we know (3.4:1); 21 MB of them is past the cap's grace."""
    ds = make_synthetic(2500, 0)
    text = write_challenge_csv(ds.images, ds.labels, ds.split, tmp_path / "faces.csv").read_bytes()
    path = tmp_path / "faces.csv.gz"
    path.write_bytes(gzip.compress(text, 6))   # gzip's default level
    assert len(text) > 16 * 1024 ** 2 and len(text) / path.stat().st_size < MAX_RATIO / 10
    loaded = load_source(str(path))
    assert np.array_equal(loaded.images, ds.images) and np.array_equal(loaded.labels, ds.labels)


def test_an_image_archive_with_too_many_images_is_refused_before_decoding(tmp_path, monkeypatch):
    """Each 48x48 face costs 2.3 kB decoded: a zip of millions of tiny images would fill the memory."""
    import fercore.data.image_folders as image_folders
    monkeypatch.setattr(image_folders, "MAX_IMAGES", 3)
    monkeypatch.setattr(image_folders, "decode_images", lambda *a: pytest.fail("decoded before counting"))
    path = tmp_path / "faces.zip"
    path.write_bytes(small_image_zip())
    with pytest.raises(DataError, match=r"holds 4 images; FER Lab imports at most 3 "):
        load_source(str(path))


# --- random and mutated bytes: a dataset, or a sentence and nothing stored -----------------------------------

INSERTS = [b",", b"\r", b"\n", b"\r\n", b" ", b"256", b"-1", b'"', b"\xef\xbb\xbf", b"\x00", b"PK\x03\x04",
           b"\x1f\x8b", b"..", b"/"]


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """`original` with 1-4 flips, deletions, insertions (of random bytes or of characters that matter to CSVs,
    zips and pickles), duplications or a truncation."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "delete", "insert", "insert", "duplicate", "truncate"]))
        if kind == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[i:i] = draw(st.one_of(st.sampled_from(INSERTS), st.binary(min_size=1, max_size=16)))
        elif kind == "duplicate":
            data[i:i] = data[i:i + draw(st.integers(1, 256))]
        else:
            del data[i:]
    return bytes(data)


@functools.lru_cache(maxsize=1)
def small_csv() -> bytes:
    """Three rows of random faces, one per Usage value."""
    rng = np.random.default_rng(0)
    rows = [b"%d,%s,%s\n" % (label, b" ".join(b"%d" % v for v in rng.integers(0, 256, 2304)), usage)
            for label, usage in ((0, b"Training"), (3, b"PublicTest"), (6, b"PrivateTest"))]
    return HEADER + b"".join(rows)


def small_png(shift: int = 0) -> bytes:
    png = io.BytesIO()
    Image.fromarray(np.roll(np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1)), shift, axis=1)).save(png, "PNG")
    return png.getvalue()


def small_image_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, name in enumerate(["train/happy/a.png", "train/sad/b.png", "val/happy/c.png", "val/sad/d.png"]):
            zf.writestr(name, small_png(i * 7))
    return buf.getvalue()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One store for all the examples of a test: what one failed import leaves behind would show in the next."""
    root = tmp_path_factory.mktemp("fuzz")
    return Namespace(root=root, store=RunStore(str(root / "runs.db")))


def fresh_file(lab, name: str, data: bytes) -> Path:
    """A new folder per example: the dataset cache knows a file by path, size and time, which a mutation
    written to the same name within a clock tick could share."""
    folder = lab.root / f"upload-{next(_names)}"
    folder.mkdir()
    (folder / name).write_bytes(data)
    return folder / name


def import_or_sentence(lab, path: Path) -> None:
    """What `data import` (and the Data page) do with an upload, checked: a whole dataset or a sentence."""
    names = [d.name for d in lab.store.list_datasets()]
    stored = files_below(lab.store.artifacts / "datasets")
    try:
        out, _ = cmd_data_import(Namespace(src=str(path), name=f"upload-{next(_names)}"), lab.store)
    except DataError as e:
        event("refused: " + re.sub(r".*?(is|has|does|holds|expands|line \d+:?)\b", r"\1", str(e), count=1)[:40])
        assert is_sentence(str(e)), str(e)
        assert [d.name for d in lab.store.list_datasets()] == names
        assert files_below(lab.store.artifacts / "datasets") == stored
        return
    event("imported")
    ds = lab.store.load_dataset(out["name"])
    assert len(ds) == out["rows"] > 0 and ds.images.shape == (len(ds), 48, 48) and ds.images.dtype == np.uint8
    assert len(ds.labels) == len(ds.split) == len(ds) and set(ds.labels.tolist()) <= set(range(len(ds.classes)))
    assert set(ds.split.tolist()) <= {0, 1, 2}


def wrapped(csv: bytes, container: str) -> tuple[str, bytes]:
    """The CSV as a user would upload it: plain, gzipped, in a Kaggle-style zip, or in the original .tar.gz."""
    if container == "gz":
        return "fer2013.csv.gz", gzip.compress(csv, 6, mtime=0)
    buf = io.BytesIO()
    if container == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("fer2013.csv", csv)
        return "download.zip", buf.getvalue()
    if container == "tar":
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            info = tarfile.TarInfo("fer2013/fer2013.csv")
            info.size = len(csv)
            tf.addfile(info, io.BytesIO(csv))
        return "fer2013.tar.gz", buf.getvalue()
    return "fer2013.csv", csv


@FUZZ
@pytest.mark.slow   # fuzz
@given(csv=st.one_of(st.binary(max_size=4000), mutated(small_csv())),
       container=st.sampled_from(["csv", "gz", "zip", "tar"]),
       data=st.data())
def test_the_csv_reader_gives_a_dataset_or_a_sentence(lab, csv, container, data):
    name, content = wrapped(csv, container)
    if container != "csv" and data.draw(st.booleans(), label="damage the container instead"):
        content = data.draw(mutated(wrapped(small_csv(), container)[1]), label="damaged container")
    import_or_sentence(lab, fresh_file(lab, name, content))


@FUZZ
@pytest.mark.slow   # fuzz
@given(data=st.one_of(st.binary(max_size=4000).map(lambda b: b"PK\x03\x04" + b), mutated(small_image_zip())))
def test_the_image_zip_reader_gives_a_dataset_or_a_sentence(lab, data):
    import_or_sentence(lab, fresh_file(lab, "faces.zip", data))


@FUZZ
@pytest.mark.slow   # fuzz
@given(data=st.one_of(st.binary(max_size=2000), mutated(small_png())), good=st.booleans())
def test_the_image_folder_reader_gives_a_dataset_or_a_sentence(lab, data, good):
    folder = lab.root / f"folder-{next(_names)}"
    for rel, content in {"train/happy/a.png": data, "train/sad/b.jpg": data[::-1]}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    if good:   # one readable image beside the damaged ones
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(folder / "train" / "sad" / "ok.png")
    import_or_sentence(lab, folder)


# --- run files -------------------------------------------------------------------------------------------------

class Blob(bytes):
    """Bytes that print short in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def genuine_run_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("runfile") / "tiny.fer.pt"
    model = build_model(TINY, 7, pretrained=False)
    record = {"name": "tiny", "epochs": [{"epoch": 1, "train_loss": 1.9, "val_acc": 0.2}], "evaluations": {}}
    save_checkpoint(path, model, TINY, ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"], 0.5,
                    0.25, record)
    return Blob(path.read_bytes())


def import_run_or_sentence(lab, path: Path) -> None:
    """What `runs import` (and the Runs page) do with a shared file, checked: a whole run or a sentence."""
    runs = [(r.id, r.status) for r in lab.store.list_runs()]
    files = files_below(lab.store.artifacts)
    try:
        run = import_run(lab.store, path, name=f"shared-{next(_names)}")
    except RunFileError as e:
        event("refused: " + str(e).split(" ", 1)[1][:40])
        assert is_sentence(str(e)), str(e)
        assert [(r.id, r.status) for r in lab.store.list_runs()] == runs   # no half run, none `running`
        assert files_below(lab.store.artifacts) == files
        return
    event("imported")
    assert run.status == RunStatus.FINISHED and Path(run.checkpoint).is_file()
    assert len(lab.store.list_runs()) == len(runs) + 1


@FUZZ
@pytest.mark.slow   # fuzz
@given(data=st.data())
def test_the_run_file_reader_gives_a_run_or_a_sentence_on_mutated_bytes(lab, genuine_run_file, data):
    content = data.draw(st.one_of(st.binary(max_size=2000), mutated(genuine_run_file)))
    import_run_or_sentence(lab, fresh_file(lab, "shared.fer.pt", content))


def payload_changes():
    """Changes to a run file's fields that a byte flip rarely reaches: odd types, odd sizes, odd JSON."""
    anything = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 12, 10 ** 12), st.floats(), st.text(max_size=20),
                         st.lists(st.integers(-3, 3), max_size=4), st.just({}))
    config_changes = st.dictionaries(st.sampled_from(["filters", "fc_units", "conv_blocks", "kernel_size", "arch",
                                                      "image_size", "transfer", "input_mode", "unknown"]),
                                     st.one_of(anything, st.sampled_from([[2048] * 8, [8192] * 8, "resnet101", 320,
                                                                          [1], "gray"])), max_size=3)
    return st.fixed_dictionaries({}, optional={
        "config": config_changes,
        "classes": st.one_of(anything, st.lists(st.text(max_size=5), max_size=12)),
        "mean": anything, "std": anything,
        "record": st.one_of(anything, st.just("[1, 2]"), st.just('{"epochs": [{"epoch": "x"}]}'),
                            st.just('{"epochs": [[1]], "evaluations": {"val": 3}}')),
        "state_dict": st.sampled_from(["drop-one", "wrong-shape", "not-tensors", "empty"]),
        "probs": st.sampled_from(["wrong-width", "not-a-dict", "bad-split"]),
    })


@FUZZ
@pytest.mark.slow   # fuzz
@given(changes=payload_changes())
def test_the_run_file_reader_gives_a_run_or_a_sentence_on_odd_content(lab, genuine_run_file, changes):
    payload = torch.load(io.BytesIO(genuine_run_file), weights_only=True)
    for key, value in changes.items():
        if key == "config":
            payload["config"] = json.dumps({**json.loads(payload["config"]), **value}, default=str)
        elif key == "state_dict":
            sd = payload["state_dict"]
            first = next(iter(sd))
            payload["state_dict"] = {"drop-one": {k: v for k, v in sd.items() if k != first},
                                     "wrong-shape": {**sd, first: torch.zeros(3)},
                                     "not-tensors": {k: 1.0 for k in sd}, "empty": {}}[value]
        elif key == "probs":
            payload["probs"] = {"wrong-width": {"val": torch.zeros(4, 3)}, "not-a-dict": [1],
                                "bad-split": {"train": torch.zeros(4, 7)}}[value]
        else:
            payload[key] = value
    path = lab.root / f"odd-{next(_names)}.fer.pt"
    torch.save(payload, path)
    import_run_or_sentence(lab, path)


def devices_of_builds(monkeypatch) -> list[str]:
    """Record the default device of every build_model call (meta: shapes only, nothing allocated)."""
    seen, real = [], fercore.models.build_model

    def recording(*a, **kw):
        seen.append(str(torch.get_default_device()))
        return real(*a, **kw)

    monkeypatch.setattr(fercore.models, "build_model", recording)
    return seen


@pytest.mark.parametrize("changes, words", [
    # 6.9 billion weights: within every per-setting bound, refused by its size
    (dict(conv_blocks=8, filters=[2048] * 8, convs_per_block=4, kernel_size=7, image_size=320), "million weights"),
    # 100 million weights: a size the lab could load, but the file carries the weights of a tiny network
    (dict(conv_blocks=4, filters=[64, 128, 256, 512], fc_units=[8192, 8192]), "do not fit"),
])
def test_a_run_file_asking_for_a_huge_model_is_refused_before_it_is_built(db, genuine_run_file, tmp_path,
                                                                         monkeypatch, changes, words):
    store = RunStore(db)
    payload = torch.load(io.BytesIO(genuine_run_file), weights_only=True)
    payload["config"] = json.dumps({**json.loads(payload["config"]), **changes})
    path = tmp_path / "huge.fer.pt"
    torch.save(payload, path)
    assert path.stat().st_size < 100_000
    builds = devices_of_builds(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(RunFileError) as err:
        import_run(store, path)
    assert words in str(err.value) and is_sentence(str(err.value)), str(err.value)
    assert time.perf_counter() - t0 < 20 and set(builds) <= {"meta"}, builds   # counted, never allocated
    assert store.list_runs() == []


def test_config_sizes_have_upper_bounds_with_plain_errors():
    for changes, words in [(dict(filters=(4096,)), "at most 2048 channels"), (dict(fc_units=(10_000,)), "at most 8192"),
                           (dict(fc_units=(16,) * 9), "at most 8 layers"),
                           (dict(filters=(8,) * 9), "at most 8 blocks")]:
        with pytest.raises(ConfigError, match=words):
            RunConfig(**changes)
    assert RunConfig(filters=(2048,), fc_units=(8192,)).filters == (2048,)


# --- the face detector under concurrent sessions ----------------------------------------------------------------

class RecordingCascade:
    """Stands in for cv2.CascadeClassifier and notices when two threads use one object at the same time."""
    made: list = []
    lock = threading.Lock()

    def __init__(self, _path):
        self.in_use, self.overlaps = 0, 0
        with RecordingCascade.lock:
            RecordingCascade.made.append(self)

    def empty(self) -> bool:
        return False

    def detectMultiScale(self, gray, **_kw):   # OpenCV's name
        with RecordingCascade.lock:
            self.in_use += 1
            self.overlaps += self.in_use > 1
        time.sleep(0.005)   # OpenCV releases the GIL while it detects: another thread may come in meanwhile
        with RecordingCascade.lock:
            self.in_use -= 1
        return np.array([[10, 10, 40, 40]])


@pytest.fixture
def recording_cascade(monkeypatch):
    RecordingCascade.made = []
    monkeypatch.setattr(faces, "_cascade_class", lambda: RecordingCascade)
    monkeypatch.setattr(faces, "_cascade_path", lambda: Path("frontalface.xml"))
    monkeypatch.setattr(faces, "_idle_detectors", queue.SimpleQueue())
    faces._detector.cache_clear()
    yield RecordingCascade
    faces._detector.cache_clear()


def test_concurrent_sessions_never_share_a_face_detector(recording_cascade):
    img = Image.new("RGB", (320, 240), (128, 128, 128))
    start, results, errors = threading.Barrier(8), [], []

    def session():
        start.wait()
        try:
            results.extend(faces.detect_faces(img) for _ in range(10))
        except Exception as e:   # noqa: BLE001 - the test reports whatever went wrong
            errors.append(repr(e))

    threads = [threading.Thread(target=session) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(results) == 80 and all(r == results[0] for r in results)
    assert sum(c.overlaps for c in recording_cascade.made) == 0
    assert 1 < len(recording_cascade.made) <= 9   # sessions detected in parallel, each on its own classifier


# --- durable writes ---------------------------------------------------------------------------------------------

def test_every_file_the_lab_writes_is_fsynced_before_its_rename(db, tmp_path, monkeypatch):
    """A power cut must not leave an empty run file, dataset or spec: data on the disk first, then the rename,
    then the folder's entry."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                  real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), real_replace(a, b))[1])
    store = RunStore(db)
    ds = load_source("synthetic:140")
    store.add_dataset(ds, "faces")                                                  # the dataset's arrays
    csv = write_challenge_csv(ds.images[:7], ds.labels[:7], [0] * 7, tmp_path / "upload.csv")
    load_source(str(csv))                                                           # the dataset cache
    ckpt = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(ckpt, build_model(TINY, 7, pretrained=False), TINY, list("abcdefg"), 0.5, 0.2)   # run files
    probs = probs_to_file(tmp_path / "run" / "probs_val.npy", np.ones((3, 7)))       # stored probabilities
    start_sweep(store, TINY, {"lr": [0.01, 0.1]}, method="grid", trials=2, name="s")  # a sweep's spec
    written = [Path(store.dataset_info("faces").path), ckpt, Path(probs), store.artifacts / "sweeps" / "s.json",
               next(Path(os.environ["FER_CACHE_DIR"]).glob("*.npz"))]
    for final in written:
        [(i, src)] = [(i, e[1]) for i, e in enumerate(events) if e[0] == "replace" and Path(e[2]) == final]
        assert ("fsync", src) in events[:i], f"{final.name}: renamed before its data was on the disk"
        assert ("fsync", str(final.parent)) in events[i:], f"{final.name}: its folder entry was not synced"
