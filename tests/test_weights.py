"""Pretrained ImageNet weights: listed from torchvision's enums, fetched only when the site answers (offline:
one sentence within seconds), imported only when name and checksum match, and checked before anything is
queued. Everything here is offline: the "valid" file is a tiny state dict a test registry entry points at."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision

from fercore.cli import main
from fercore.config import RunConfig
from fercore.models import weights
from fercore.models.weights import PRETRAINED, PretrainedWeights, missing_weights
from fercore.store import RunStatus

ARCHS = {"vgg16", "resnet18", "resnet50", "resnet101", "efficientnet_b0", "efficientnet_b2"}
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def cli(capsys, *args) -> tuple[int, object]:
    code = main([*args, "--json"])
    out = capsys.readouterr().out.strip()
    return code, json.loads(out) if out else None


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty $TORCH_HOME; returns the checkpoints folder torchvision would read."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)   # so torch.hub.get_dir() follows $TORCH_HOME
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def tiny_weights(tmp_path, monkeypatch, hub) -> tuple[Path, PretrainedWeights]:
    """A small real state dict saved under a torch.hub-style name carrying its sha256 prefix, and the
    resnet18 registry entry pointed at it."""
    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.randn(4, 3, 3, 3)}, buf)
    data = buf.getvalue()
    name = f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    source = tmp_path / "usb" / name
    source.parent.mkdir()
    source.write_bytes(data)
    entry = PretrainedWeights("resnet18", "Tiny_Weights.TEST", f"http://127.0.0.1:9/models/{name}", 0.01)
    monkeypatch.setitem(PRETRAINED, "resnet18", entry)
    return source, entry


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- list ----------------------------------------------------------------------------------------------
def test_list_shows_the_six_backbones_from_torchvision_and_none_present(hub, capsys):
    code, rows = cli(capsys, "weights", "list")
    assert code == 0 and {r["arch"] for r in rows} == ARCHS and len(rows) == 6
    for r in rows:
        default = torchvision.models.get_model_weights(r["arch"]).DEFAULT   # what torchvision users get
        assert r["weights"] == f"{type(default).__name__}.{default.name}"
        assert r["file"] == Path(default.url).name and r["size_mb"] == default.meta["_file_size"]
        assert torch.hub.HASH_REGEX.search(r["file"]).group(1) == r["sha256_prefix"]
        assert r["present"] is False and Path(r["path"]) == hub / r["file"]
    assert next(r for r in rows if r["arch"] == "resnet18")["weights"] == "ResNet18_Weights.IMAGENET1K_V1"


# --- fetch -------------------------------------------------------------------------------------------------
def test_fetch_offline_fails_within_seconds_with_one_sentence(hub, capsys, monkeypatch):
    monkeypatch.setattr(weights, "DOWNLOAD_ADDRESS", ("127.0.0.1", closed_port()))

    def no_download(*a, **k):
        raise AssertionError("nothing may be downloaded when the site cannot be reached")
    monkeypatch.setattr(weights.urllib.request, "urlopen", no_download)
    start = time.monotonic()
    code, out = cli(capsys, "weights", "fetch", "resnet18")
    assert time.monotonic() - start < 20
    assert code != 0
    error = out["error"]
    assert "\n" not in error and error.endswith(".") and error.count(". ") == 0, error
    assert "cannot reach" in error and "weights import" in error and "resnet18-f37072fd.pth" in error
    assert files_in(hub) == []


class Serve(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A local web server standing in for download.pytorch.org; yields a function url(name)."""
    root = tmp_path / "site"
    (root / "models").mkdir(parents=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Serve(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(weights, "DOWNLOAD_ADDRESS", server.server_address)
    yield root / "models", lambda name: f"http://127.0.0.1:{server.server_address[1]}/models/{name}"
    server.shutdown()


def test_fetch_downloads_with_progress_and_checks_the_hash(tiny_weights, site, hub, monkeypatch):
    source, entry = tiny_weights
    folder, url = site
    (folder / source.name).write_bytes(source.read_bytes())
    entry = PretrainedWeights("resnet18", entry.label, url(source.name), entry.size_mb)
    monkeypatch.setitem(PRETRAINED, "resnet18", entry)
    seen = []
    assert weights.fetch_weights(["resnet18"], lambda e, done, total: seen.append((done, total))) == [entry]
    assert (hub / source.name).read_bytes() == source.read_bytes() and files_in(hub) == [source.name]
    assert seen[-1] == (source.stat().st_size, source.stat().st_size)
    assert weights.fetch_weights(["resnet18"]) == [], "a present file is not downloaded again"

    (hub / source.name).unlink()
    (folder / source.name).write_bytes(b"not the file")   # a damaged download is refused, nothing is left
    with pytest.raises(weights.WeightsError, match="sha256"):
        weights.fetch_weights(["resnet18"])
    assert files_in(hub) == []


# --- import -------------------------------------------------------------------------------------------------
def test_import_of_a_correctly_named_file_with_the_wrong_hash_is_refused(hub, tmp_path, capsys):
    fake = tmp_path / "resnet18-f37072fd.pth"
    fake.write_bytes(b"x" * 1000)
    code, out = cli(capsys, "weights", "import", str(fake))
    assert code != 0 and "sha256" in out["error"] and "\n" not in out["error"]
    assert files_in(hub) == []


def test_import_of_a_misnamed_file_is_refused(tiny_weights, hub, tmp_path, capsys):
    source, _ = tiny_weights
    renamed = tmp_path / "resnet18.pth"
    renamed.write_bytes(source.read_bytes())
    code, out = cli(capsys, "weights", "import", str(renamed))
    assert code != 0 and "original file name" in out["error"]
    assert files_in(hub) == []


def test_import_of_a_valid_file_installs_it_where_torchvision_reads(tiny_weights, hub, capsys):
    source, entry = tiny_weights
    code, out = cli(capsys, "weights", "import", str(source))
    assert code == 0 and [r["file"] for r in out["imported"]] == [source.name] and out["refused"] == []
    assert files_in(hub) == [source.name], "no temporary file is left"
    assert torch.equal(torch.load(hub / source.name, weights_only=True)["conv1.weight"],
                       torch.load(source, weights_only=True)["conv1.weight"])
    code, rows = cli(capsys, "weights", "list")
    assert next(r for r in rows if r["arch"] == "resnet18")["present"] is True


def test_import_of_a_file_larger_than_torchvisions_is_refused(tiny_weights, hub, tmp_path, capsys):
    source, _ = tiny_weights
    big = tmp_path / "big" / source.name
    big.parent.mkdir()
    big.write_bytes(source.read_bytes() + bytes(2 << 20))   # past the entry's size cap: never copied whole
    code, out = cli(capsys, "weights", "import", str(big))
    assert code != 0 and "larger than" in out["error"] and files_in(hub) == []


def test_zip_import_takes_the_weights_and_ignores_the_rest(tiny_weights, hub, tmp_path, capsys):
    source, _ = tiny_weights
    stick = tmp_path / "stick.zip"
    with zipfile.ZipFile(stick, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(source, f"hub/checkpoints/{source.name}")
        z.writestr("README.txt", "weights for the lab")
    code, out = cli(capsys, "weights", "import", str(stick))
    assert code == 0 and [r["file"] for r in out["imported"]] == [source.name]
    assert out["ignored"] == ["README.txt"] and files_in(hub) == [source.name]


def test_hostile_zips_are_refused_and_nothing_is_written(tiny_weights, hub, tmp_path, capsys):
    source, _ = tiny_weights
    escape = tmp_path / "escape.zip"
    with zipfile.ZipFile(escape, "w") as z:
        z.write(source, source.name)
        z.write(source, f"../../{source.name}")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(source.name, bytes(50 << 20))   # 50 MB of zeros under the name of a 10 kB file
    for archive, words in ((escape, "unsafe path"), (bomb, "claims")):
        code, out = cli(capsys, "weights", "import", str(archive))
        assert code != 0 and words in out["error"], out
    assert files_in(hub) == [] and not (tmp_path.parent / source.name).exists()


# --- preflight: nothing is queued without the weights -----------------------------------------------------
def test_missing_weights_lists_only_pretrained_archs_once(hub):
    configs = [RunConfig(), RunConfig(arch="resnet18", transfer="scratch"), RunConfig(arch="resnet18",
               transfer="frozen"), RunConfig(arch="resnet18", transfer="head"), RunConfig(arch="vgg16",
               transfer="unfrozen")]
    assert missing_weights(configs) == ["resnet18", "vgg16"]
    assert missing_weights(configs[:2]) == []


def user_runs(db: str) -> list[dict]:
    from fercore.store import RunStore
    return [r for r in RunStore(db).list_runs() if r.name != "starter"]


def test_the_transfer_lesson_and_a_transfer_run_are_refused_without_weights(hub, db, capsys):
    code, out = cli(capsys, "lesson", "start", "transfer", "--no-worker", "--db", db)
    assert code != 0
    for words in ("resnet18-f37072fd.pth", "weights fetch resnet18", "weights import", "nothing was queued"):
        assert words in out["error"], out
    for queue in (["--queue", "--no-worker"], []):   # queued or in the foreground
        code, out = cli(capsys, "train", "--arch", "resnet18", "--transfer", "frozen", *queue, "--db", db)
        assert code != 0 and "resnet18-f37072fd.pth" in out["error"]
    assert user_runs(db) == []


def test_with_the_weights_present_the_transfer_lesson_queues_its_four_runs(hub, db, capsys):
    path = PRETRAINED["resnet18"].path   # presence is all the preflight checks; the worker verifies the file
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stand-in")
    code, out = cli(capsys, "lesson", "start", "transfer", "--no-worker", "--db", db)
    assert code == 0, out
    runs = user_runs(db)
    assert len(out) == 4 and sorted(r.config.transfer for r in runs) == ["frozen", "head", "scratch",
                                                                               "unfrozen"]
    assert {r.status for r in runs} == {RunStatus.QUEUED}


# --- the Train page ----------------------------------------------------------------------------------------
def test_train_page_offers_the_weights_instead_of_queueing_and_imports_an_upload(tiny_weights, hub, tmp_path,
                                                                                monkeypatch):
    from streamlit.testing.v1 import AppTest
    source, _ = tiny_weights
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")
    monkeypatch.setenv("FER_DB_URL", str(tmp_path / "runs.db"))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="cfg_arch").set_value("resnet18").run()
    at.selectbox(key="cfg_transfer").set_value("frozen").run()
    assert not at.exception
    assert any(source.name in w.value and "weights fetch resnet18" in w.value for w in at.warning)
    assert [b for b in at.button if b.label == "Queue this run"][0].disabled
    monkeypatch.setattr(weights, "DOWNLOAD_ADDRESS", ("127.0.0.1", closed_port()))
    at.button(key="weights-fetch-train").click().run()
    assert not at.exception and len(at.error) == 1 and "cannot reach" in at.error[0].value
    at.file_uploader(key="weights_upload").upload(source.name, source.read_bytes(), "application/octet-stream").run()
    at.button(key="weights-import-upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert files_in(hub) == [source.name]
    assert not [b for b in at.button if b.label == "Queue this run"][0].disabled, "the run can be queued now"
