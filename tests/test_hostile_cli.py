"""Hostile and odd inputs through the command line: photos for `predict`/`explain`, datasets for `data import`,
shared run files for `runs import`.

What a user (or a script) would check: a bad input exits non-zero with {"error": "a plain sentence"}, a valid
one gives a result, no traceback anywhere, nothing written outside the lab's folders, no code from a file
ever runs, a failed import adds no dataset or run and leaves no half-written file, the database stays intact.

Each family of inputs goes through a real `python -m fercore ... --json` process (the bombs, the escaping zip,
the pickled code among them); the rest of each family goes through the same entry point, `fercore.cli.main`,
in this process with the file descriptors captured, because every CLI process pays seconds of torch imports.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED, cli_env
from PIL import Image

from fercore.cli import main
from fercore.config import EMOTIONS, RunConfig
from fercore.jobs.execute import execute_run
from fercore.jobs.runfile import ensure_starter
from fercore.store import RunStore
from fercore.store.entities import RunStatus

TINY = RunConfig(name="tiny", data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,),
                 batch_size=32, epochs=1, tta="none")


# --- running the CLI --------------------------------------------------------------------------------

def fercore(*args: str, db: str) -> tuple[int, object]:
    """Run `python -m fercore ARGS --db DB --json` as a user would; returns (exit status, parsed stdout)."""
    p = subprocess.run([sys.executable, "-m", "fercore", *args, "--db", db, "--json"], capture_output=True,
                       text=True, cwd=REPO, env=cli_env(), timeout=180)
    assert "Traceback" not in p.stdout + p.stderr, (args, p.stdout, p.stderr)
    return p.returncode, json.loads(p.stdout)   # stdout is exactly one JSON document, error or result


def fercore_here(capfd, *args: str, db: str, quiet: bool = False) -> tuple[int, object]:
    """The same entry point (`python -m fercore` is `sys.exit(main())`) in this process; capfd also sees what
    C libraries such as OpenCV print. quiet: nothing at all may appear on stderr (no library warnings)."""
    code = main([*args, "--db", db, "--json"])
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (args, out, err)
    assert not (quiet and err), (args, err)
    return code, json.loads(out)


def is_sentence(msg: str) -> bool:
    """A plain sentence: ends like one, no exception class names, no 'unexpected error' fallback."""
    return (isinstance(msg, str) and 10 < len(msg) < 600 and msg.rstrip().endswith((".", ")."))
            and not re.search(r"Traceback|Unexpected error|\b[A-Z]\w*(Error|Exception)\b", msg))


def assert_refused(code: int, out, *fragments: str) -> str:
    assert code != 0, out
    assert isinstance(out, dict) and set(out) == {"error"}, out
    msg = out["error"]
    assert is_sentence(msg), msg
    for fragment in fragments:
        assert fragment.lower() in msg.lower(), (fragment, msg)
    return msg


def listing(*folders: Path) -> list[str]:
    """Every file below the folders but the database's own: to show that nothing appeared or vanished."""
    return sorted(str(p) for f in folders if f.exists() for p in f.rglob("*")
                  if p.is_file() and not p.name.startswith("runs.db"))


# --- photos -------------------------------------------------------------------------------------------

def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def exif_rotated(img: Image.Image) -> bytes:
    """A JPEG stored sideways with EXIF orientation 6 ("rotate 90 degrees clockwise to view"): shown, it is `img`."""
    stored = img.transpose(Image.Transpose.ROTATE_90)    # counter-clockwise; the viewer turns it back
    exif = stored.getexif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", exif=exif, quality=95)


def bad_photos() -> dict[str, tuple[bytes, str]]:
    """file name -> (content, what the refusal must say)."""
    jpeg = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)), "JPEG")
    return {
        "not-an-image.jpg": (b"Dear students, the exam is on Monday.\n", "not an image"),
        "empty.png": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "bomb.png": (encode(Image.new("1", (15000, 15000)), "PNG"), "megapixel"),   # 225 MP in 27 kB
    }


def good_photos() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """file name -> (content, (width, height) as displayed). Smooth pictures: no face, so the whole-image
    fallback gives a box we can predict exactly."""
    gray16 = np.tile(np.linspace(0, 65535, 40), (30, 1)).astype(np.uint16)
    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    ramp = np.tile(np.linspace(0, 255, 6000, dtype=np.uint8), (4000, 1))
    return {
        "cmyk.jpg": (encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"), (40, 30)),
        "rgba.png": (encode(Image.new("RGBA", (40, 30), (200, 10, 10, 90)), "PNG"), (40, 30)),
        "palette.png": (encode(palette, "PNG", transparency=0), (40, 30)),
        "gray16.png": (encode(Image.fromarray(gray16), "PNG"), (40, 30)),
        "one-pixel.png": (encode(Image.new("RGB", (1, 1), (90, 60, 30)), "PNG"), (1, 1)),
        "exif-rotated.jpg": (exif_rotated(Image.new("RGB", (40, 60), (0, 0, 255))), (40, 60)),
        "huge.jpg": (encode(Image.fromarray(ramp), "JPEG", quality=80), (6000, 4000)),   # 24 MP, reduced to work on
    }


def expected_fallback_box(width: int, height: int) -> list[int]:
    side = min(width, height)
    return [(width - side) // 2, (height - side) // 2, side, side]


def face_photo_rotated_by_exif() -> tuple[bytes, tuple[int, int, int, int]] | None:
    """A portrait photo with a FER2013 face, stored sideways with an EXIF rotation: the face is only
    detectable in the displayed orientation. None without ../shared."""
    from fercore.predict.faces import detect_faces
    from fercore.predict.images import load_image
    folder = SHARED / "fer2013-images" / "train" / "happy"
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.jpg"))[:8]:
        canvas = Image.new("RGB", (600, 900), (128, 128, 128))
        canvas.paste(Image.open(path).convert("RGB").resize((360, 360), Image.Resampling.BICUBIC), (120, 400))
        data = exif_rotated(canvas)
        if detect_faces(load_image(data)):   # Haar finds most upscaled FER faces, not all: take one it finds
            return data, (120, 400, 360, 360)
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A database with one tiny trained run `tiny`, and a folder of good, odd and bad photos."""
    root = tmp_path_factory.mktemp("lab")
    db = str(root / "runs.db")
    store = RunStore(db)
    run = store.create_run(TINY, status=RunStatus.RUNNING)
    assert execute_run(store, run.id).status == RunStatus.FINISHED
    photos = root / "photos"
    photos.mkdir()
    bad, good = bad_photos(), good_photos()
    for name, (data, _) in {**bad, **good}.items():
        (photos / name).write_bytes(data)
    face = face_photo_rotated_by_exif()
    if face:
        (photos / "exif-face.jpg").write_bytes(face[0])
    return SimpleNamespace(db=db, store=store, photos=photos, bad=bad, good=good, face=face and face[1])


def test_predict_answers_each_photo_of_a_batch_with_faces_or_a_sentence(lab):
    names = [*lab.bad, *lab.good] + (["exif-face.jpg"] if lab.face else [])
    before = listing(lab.photos)
    code, out = fercore("predict", "tiny", *(str(lab.photos / n) for n in names), db=lab.db)
    assert code == 0, out   # some photos were good: the batch succeeds, each bad one says why
    assert [r["image"] for r in out] == [str(lab.photos / n) for n in names]
    results = dict(zip(names, out))
    for name, (_, fragment) in lab.bad.items():
        r = results[name]
        assert set(r) == {"image", "error"} and is_sentence(r["error"]) and fragment in r["error"].lower(), r
    for name, (_, (width, height)) in lab.good.items():
        r = results[name]
        assert "error" not in r and r["fallback_whole_image"] is True, (name, r)
        [face] = r["faces"]
        assert abs(sum(face["probs"].values()) - 1) < 1e-4 and face["top"] == max(face["probs"], key=face["probs"].get)
        # the box is in the pixels of the photo as displayed: EXIF rotation applied, a huge photo's reduction undone
        assert np.abs(np.subtract(face["box"], expected_fallback_box(width, height))).max() <= 3, (name, face["box"])
    if lab.face:
        r = results["exif-face.jpg"]
        assert r["fallback_whole_image"] is False, "the face is only visible in the displayed orientation"
        x, y, w, h = max((f["box"] for f in r["faces"]), key=lambda b: b[2] * b[3])
        fx, fy, fw, fh = lab.face
        assert abs(x + w / 2 - (fx + fw / 2)) < fw / 4 and abs(y + h / 2 - (fy + fh / 2)) < fh / 4, r["faces"]
    assert listing(lab.photos) == before


def test_predict_with_only_bad_photos_fails_naming_each_one(lab, capfd):
    paths = [str(lab.photos / n) for n in [*lab.bad, "no-such-photo.jpg"]]
    code, out = fercore_here(capfd, "predict", "tiny", *paths, db=lab.db)
    msg = assert_refused(code, out, "no file at", *(fragment for _, fragment in lab.bad.values()))
    assert all(p in msg for p in paths)


def test_explain_refuses_every_bad_photo(lab, tmp_path, capfd):
    for name, (_, fragment) in lab.bad.items():
        out_png = tmp_path / f"{name}.map.png"
        code, out = fercore_here(capfd, "explain", "tiny", str(lab.photos / name), "--out", str(out_png), db=lab.db)
        assert_refused(code, out, fragment)
        assert not out_png.exists()


def test_explain_maps_a_face_of_an_exif_rotated_photo(lab, tmp_path):
    out_png = tmp_path / "map.png"
    code, out = fercore("explain", "tiny", str(lab.photos / "exif-rotated.jpg"), "--method", "gradcam",
                        "--out", str(out_png), db=lab.db)
    assert code == 0, out
    assert out["box"] == expected_fallback_box(40, 60) and out["face"] == 1 and out["top"] in EMOTIONS
    with Image.open(out_png) as heat:
        assert heat.mode == "RGB" and min(heat.size) > 0


def test_explain_works_for_every_odd_but_valid_photo(lab, tmp_path, capfd):
    for name in lab.good:
        code, out = fercore_here(capfd, "explain", "tiny", str(lab.photos / name), "--method", "saliency", "--out",
                                 str(tmp_path / f"{name}.png"), db=lab.db)
        assert code == 0 and Path(out["out"]).is_file(), (name, out)
    code, out = fercore_here(capfd, "explain", "tiny", str(lab.photos / "cmyk.jpg"), "--face", "3", "--out",
                             str(tmp_path / "x.png"), db=lab.db)
    assert_refused(code, out, "1 face")


def test_a_mistyped_command_is_a_json_sentence_too(lab, capfd):
    code, out = fercore("explain", "tiny", "x.png", "--method", "magic", "--out", "x.png", db=lab.db)
    assert_refused(code, out, "invalid choice", "magic")
    code, out = fercore_here(capfd, "predict", db=lab.db)
    assert_refused(code, out, "required")


def test_the_lab_database_is_intact_after_all_those_photos(lab):
    assert lab.store.integrity_ok()
    assert [r.name for r in lab.store.list_runs() if r.name != "starter"] == ["tiny"]


# --- datasets -----------------------------------------------------------------------------------------

PIXELS = " ".join(["7"] * 2304)
HEADER = "emotion,pixels,Usage\n"


def png48(value: int = 0) -> bytes:
    return encode(Image.fromarray(np.full((48, 48), value, np.uint8)), "PNG")


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def zip_bomb(path: Path) -> Path:
    """One 'image' of 110 MB of zeros deflated to ~100 kB: honest sizes, absurd ratio."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("train/happy/a.png", "w") as f:
        chunk = bytes(1 << 20)
        for _ in range(110):
            f.write(chunk)
    return path


BAD_CSVS = {   # file name -> (content, what the refusal must say)
    "wrong-header.csv": ("label,image,split\n0," + PIXELS + ",Training\n", "does not look like a FER2013 CSV"),
    "pixel-count.csv": (HEADER + "0," + " ".join(["7"] * 2300) + ",Training\n", "2300 pixel values"),
    "label-range.csv": (HEADER + "9," + PIXELS + ",Training\n", "not a FER2013 code"),
    "not-numbers.csv": (HEADER + "0,7 seven" + " 7" * 2302 + ",Training\n", "'seven' is not a whole number"),
    "empty.csv": ("", "is empty"),
    "mixed-endings.csv": (HEADER.replace("\n", "\r\n") + "0," + PIXELS + ",Training\n", "line endings"),
}
BAD_ZIPS = {   # file name -> (builder(path), what the refusal must say)
    "no-class-folders.zip": (lambda p: write_zip(p, {"a.png": png48(), "b.png": png48(9)}), "not in class folders"),
    "only-unreadable.zip": (lambda p: write_zip(p, {"train/happy/a.jpg": b"not a jpeg",
                                                    "train/sad/b.png": png48()[:40]}), "could be read"),
    "zip-bomb.zip": (zip_bomb, "zip bomb"),
}


def build_bad_dataset(name: str, folder: Path) -> tuple[Path, str]:
    path = folder / name
    if name in BAD_CSVS:
        text, fragment = BAD_CSVS[name]
        path.write_bytes(text.encode())
        return path, fragment
    build, fragment = BAD_ZIPS[name]
    return build(path), fragment


@pytest.fixture
def fresh(db):
    """An empty lab database (with the starter run, if one ships, already in it)."""
    store = RunStore(db)
    ensure_starter(store)
    return store


IN_A_PROCESS = {"wrong-header.csv", "zip-bomb.zip"}


@pytest.mark.parametrize("name", [*BAD_CSVS, *BAD_ZIPS])
def test_a_bad_dataset_is_refused_and_leaves_nothing_behind(name, fresh, db, tmp_path, capfd):
    folder = tmp_path / "upload"
    folder.mkdir()
    path, fragment = build_bad_dataset(name, folder)
    watched = [tmp_path, Path(os.environ["FER_CACHE_DIR"])]   # the upload, the lab's artifacts, the dataset cache
    before = listing(*watched)
    args = ("data", "import", str(path))
    code, out = fercore(*args, db=db) if name in IN_A_PROCESS else fercore_here(capfd, *args, db=db)
    assert_refused(code, out, fragment)
    assert fresh.list_datasets() == []
    assert listing(*watched) == before   # no dataset file, no temporary file, no cache entry
    assert fresh.integrity_ok()


def test_a_zip_with_unreadable_images_imports_the_rest_and_says_how_many_were_skipped(fresh, db, tmp_path, capfd):
    path = write_zip(tmp_path / "faces.zip", {"train/happy/a.png": png48(10), "train/happy/b.png": png48(20),
                                               "train/happy/broken.jpg": b"\xff\xd8\xff not really",
                                               "train/sad/c.png": png48(30), "train/sad/cut.png": png48(40)[:50]})
    code, out = fercore_here(capfd, "data", "import", str(path), "--name", "faces", db=db)
    assert code == 0, out
    assert out["splits"] == {"train": 3, "val": 0, "test": 0}
    assert any(note.startswith("2 unreadable images skipped") for note in out["notes"]), out["notes"]
    assert [d.name for d in fresh.list_datasets()] == ["faces"]


def test_a_zip_with_escaping_paths_writes_nothing_outside(fresh, db, tmp_path):
    tag = f"fer-escaped-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    path = write_zip(work / "evil.zip", {"train/happy/ok.png": png48(), f"../../{tag}/happy/evil.png": png48(),
                                         f"../../../../../../../../{tag}/happy/evil.png": png48(),
                                         f"/{tag}/happy/evil.png": png48(), f"C:/{tag}/happy/evil.png": png48()})
    watched = [tmp_path, Path(db).parent]
    before = listing(*watched)
    code, out = fercore("data", "import", str(path), "--name", "evil", db=db)
    assert code == 0, out
    assert out["splits"]["train"] == 1 and "4 zip entries with absolute or ../ paths ignored." in out["notes"]
    new = set(listing(*watched)) - set(before)
    assert all("_artifacts" in p for p in new), new   # only the lab's own dataset file appeared
    for root in {Path("/"), REPO, REPO.parent, Path.cwd(), *work.parents}:
        assert not (root / tag).exists(), root


# --- run files shared between machines -------------------------------------------------------------------

class Exploit:
    """Unpickling this would run code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def genuine_payload(lab) -> dict:
    return torch.load(lab.store.get_run("tiny").checkpoint, map_location="cpu", weights_only=True)


def crafted_run_files(lab, folder: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """file name -> (path, what the refusal must say)."""
    files = {}

    def save(name, payload, fragment):
        torch.save(payload, folder / name)
        files[name] = (folder / name, fragment)

    genuine = genuine_payload(lab)
    save("pickled-code.fer.pt", {**genuine, "record": Exploit(marker)}, "refuses")
    (folder / "plain-pickle.pt").write_bytes(pickle.dumps(Exploit(marker)))   # not even a torch zip
    files["plain-pickle.pt"] = (folder / "plain-pickle.pt", "refuses")
    save("wrong-format.fer.pt", {**genuine, "format": "somebody-else/3"}, "not a FER Lab run file")
    save("wrong-shapes.fer.pt", {**genuine, "state_dict": {k: torch.zeros(3) for k in genuine["state_dict"]}},
         "do not fit")
    save("damaged-record.fer.pt", {**genuine, "record": json.dumps({"epochs": [{"epoch": "one"}]})}, "damaged")
    write_zip(folder / "not-torch.fer.pt", {"data.pkl": b"hello", "version": b"3"})
    files["not-torch.fer.pt"] = (folder / "not-torch.fer.pt", "not a FER Lab run file")
    # a genuine run carrying 20 MB of zeros, its entries deflated: torch.load would inflate it (a real bomb
    # would be gigabytes), though torch.save never compresses
    padded = folder / "padded.pt"
    torch.save({**genuine, "padding": torch.zeros(5_000_000)}, padded)
    with zipfile.ZipFile(padded) as zin, \
            zipfile.ZipFile(folder / "zip-bomb.fer.pt", "w", zipfile.ZIP_DEFLATED) as zout:
        for member in zin.infolist():
            zout.writestr(member.filename, zin.read(member))
    padded.unlink()
    files["zip-bomb.fer.pt"] = (folder / "zip-bomb.fer.pt", "zip bomb")
    return files


def test_crafted_run_files_are_refused_nothing_runs_and_no_run_is_added(lab, fresh, db, tmp_path, capfd):
    marker = tmp_path / "PWNED"
    files = crafted_run_files(lab, tmp_path, marker)
    runs_before = [r.id for r in fresh.list_runs()]
    files_before = listing(fresh.artifacts)
    for name, (path, fragment) in files.items():
        args = ("runs", "import", str(path))
        code, out = (fercore(*args, db=db) if name == "pickled-code.fer.pt" else
                     fercore_here(capfd, *args, db=db, quiet=True))
        assert_refused(code, out, fragment)
        assert not marker.exists(), f"{name}: code from the file ran"
    assert [r.id for r in fresh.list_runs()] == runs_before   # not even a failed or `running` leftover
    assert listing(fresh.artifacts) == files_before
    assert fresh.integrity_ok()
    # the genuine article still imports
    good = tmp_path / "good.fer.pt"
    torch.save(genuine_payload(lab), good)
    code, out = fercore_here(capfd, "runs", "import", str(good), "--name", "shared", db=db)
    assert code == 0 and out["status"] == "finished", out
