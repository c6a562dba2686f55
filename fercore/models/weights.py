"""The pretrained ImageNet weights files: which ones the lab uses, where they live, and how they get there.

PRETRAINED is the table (arch -> PretrainedWeights). It is derived from the torchvision weights enum
members that backbones.BACKBONES loads (today each is its builder's `get_model_weights(arch).DEFAULT`),
so what is listed, fetched and imported is exactly what training reads. The files live where torchvision
looks for them: torch.hub.get_dir()/checkpoints ($TORCH_HOME/hub/checkpoints).

Three ways the files are handled, none of them during training (workers never download):
  fetch      download.pytorch.org, after a 3 s reachability check, with a read timeout
  import     a file, a folder or a zip (a USB stick): only files whose name AND sha256 prefix match an entry
  preflight  missing_weights(configs) / require_weights(configs) before any run is queued
A file is accepted only if its sha256 starts with the hash in its name (torch.hub's check_hash convention:
resnet18-f37072fd.pth). It is written to a temporary file next to its destination, fsynced and moved into
place with os.replace, so the cache never holds half a file. Loading stays torch.load(weights_only=True).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

import torch

from fercore.auth import PERSONAL, Action, User, require
from fercore.config import RunConfig
from fercore.errors import UserError
from fercore.models.backbones import BACKBONES, TRANSFER_MODES

HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")   # torch.hub.HASH_REGEX, with its 8-character minimum
DOWNLOAD_ADDRESS = ("download.pytorch.org", 443)   # probed before a download (tests point it elsewhere)
PROBE_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0   # a download that stalls this long fails; a slow but moving one goes on
MIB = 1 << 20
MAX_FOLDER_FILES = 10_000
CLI = "python -m fercore weights"


class WeightsError(UserError, ValueError):
    """A plain sentence: weights missing, the download site unreachable, or a file refused."""


@dataclass(frozen=True)
class PretrainedWeights:
    arch: str
    label: str       # "ResNet18_Weights.IMAGENET1K_V1"
    url: str
    size_mb: float   # torchvision's meta["_file_size"], in MiB

    @property
    def file_name(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    @property
    def sha256_prefix(self) -> str:
        return HASH_IN_NAME.search(self.file_name).group(1)

    @property
    def path(self) -> Path:
        return checkpoints_dir() / self.file_name

    def present(self) -> bool:
        return self.path.is_file()

    @property
    def max_bytes(self) -> int:
        """A copy stops here: a file much larger than torchvision's cannot be it (and may be a zip bomb)."""
        return int(self.size_mb * MIB * 1.05) + MIB


def _entry(arch: str, weights) -> PretrainedWeights:
    return PretrainedWeights(arch, f"{type(weights).__name__}.{weights.name}", weights.url,
                             float(weights.meta["_file_size"]))


PRETRAINED: dict[str, PretrainedWeights] = {arch: _entry(arch, spec.weights) for arch, spec in BACKBONES.items()}


def checkpoints_dir() -> Path:
    """Where torch.hub keeps downloaded weights and torchvision looks for them."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_table() -> list[dict]:
    """Every entry with whether its file is here (`weights list --json`)."""
    return [{"arch": e.arch, "weights": e.label, "file": e.file_name, "size_mb": e.size_mb, "url": e.url,
             "sha256_prefix": e.sha256_prefix, "present": e.present(), "path": str(e.path)}
            for e in PRETRAINED.values()]


def unknown_archs(archs: Iterable[str]) -> list[str]:
    return [a for a in archs if a not in PRETRAINED]


# --- preflight: before anything is queued -----------------------------------------------------------------
def missing_weights(configs: Iterable[RunConfig]) -> list[str]:
    """The architectures among `configs` that start from ImageNet weights not on this machine (each once)."""
    archs = dict.fromkeys(c.arch for c in configs if c.arch in PRETRAINED and TRANSFER_MODES[c.transfer].pretrained)
    return [a for a in archs if not PRETRAINED[a].present()]


def missing_sentence(archs: list[str], subject: str = "This run", ending: str = ".") -> str:
    entries = [PRETRAINED[a] for a in archs]
    files = ", ".join(f"{e.label} ({e.file_name})" for e in entries)
    return (f"{subject} needs the ImageNet weights {files}, which are not in {checkpoints_dir()}: download them "
            f"with `{CLI} fetch {' '.join(archs)}` on a machine with internet, or bring the files and run "
            f"`{CLI} import PATH` (or use Pretrained weights on the Train page){ending}")


def require_weights(configs: Iterable[RunConfig], subject: str = "This run") -> None:
    """Refuse (WeightsError) when `configs` need ImageNet weights that are missing."""
    missing = missing_weights(configs)
    if missing:
        raise WeightsError(missing_sentence(missing, subject, "; nothing was queued."))


# --- fetch -------------------------------------------------------------------------------------------------
Progress = Callable[[PretrainedWeights, int, int | None], None]   # (entry, bytes so far, total or None)


def probe_address() -> tuple[str, int]:
    """download.pytorch.org:443, or the HTTPS proxy urllib would go through."""
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(DOWNLOAD_ADDRESS[0]):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname, parsed.port or 443
    return DOWNLOAD_ADDRESS


def can_reach_downloads(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection within `timeout` seconds. Run in a thread because a name lookup has no timeout."""
    reached = []

    def connect():
        try:
            with socket.create_connection(probe_address(), timeout=timeout):
                reached.append(True)
        except (OSError, ValueError):
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout + 0.5)
    return bool(reached)


def offline_sentence(entries: list[PretrainedWeights]) -> str:
    archs, files = " ".join(e.arch for e in entries), ", ".join(e.file_name for e in entries)
    return (f"This machine cannot reach {DOWNLOAD_ADDRESS[0]} (no internet, or a firewall): on a machine with "
            f"internet run `{CLI} fetch {archs}`, copy {files} from its torch hub checkpoints folder (`{CLI} "
            f"list` shows it) to a USB stick, and import here with `{CLI} import PATH` or the Train page's "
            "Pretrained weights panel.")


def fetch_weights(archs: Iterable[str], progress: Progress | None = None) -> list[PretrainedWeights]:
    """Download the missing files of `archs` into the hub cache; returns the entries downloaded."""
    todo = [PRETRAINED[a] for a in dict.fromkeys(archs) if not PRETRAINED[a].present()]
    if todo and not can_reach_downloads():
        raise WeightsError(offline_sentence(todo))
    for entry in todo:
        download(entry, progress)
    return todo


def download(entry: PretrainedWeights, progress: Progress | None = None) -> Path:
    request = urllib.request.Request(entry.url, headers={"User-Agent": "fercore"})
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            on_bytes = (lambda n: progress(entry, n, total)) if progress else None
            return install(response, entry, on_bytes)
    except (urllib.error.URLError, OSError) as e:   # HTTPError, timeouts and resets are all OSErrors
        reason = getattr(e, "reason", None) or e
        raise WeightsError(f"Downloading {entry.file_name} from {urlparse(entry.url).hostname} failed ({reason}); "
                           f"try again, or import the file with `{CLI} import PATH`.") from None


# --- writing a verified file into the cache ----------------------------------------------------------------
def hash_stream(stream: BinaryIO, entry: PretrainedWeights, name: str, out: BinaryIO | None = None,
                on_bytes: Callable[[int], None] | None = None) -> str:
    """The sha256 of `stream` (copied to `out` on the way), refusing past entry.max_bytes."""
    digest, n = hashlib.sha256(), 0
    while chunk := stream.read(MIB):
        n += len(chunk)
        if n > entry.max_bytes:
            raise WeightsError(f"{name} is larger than the {entry.size_mb:.0f} MB file {entry.label}, so it "
                               "cannot be it; it was not installed.")
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        if on_bytes:
            on_bytes(n)
    return digest.hexdigest()


def wrong_hash_sentence(name: str, entry: PretrainedWeights, digest: str) -> str:
    return (f"{name} is named like {entry.label} but its sha256 begins {digest[:8]}, not {entry.sha256_prefix}: "
            "it is damaged or a different file, so it was refused.")


def install(stream: BinaryIO, entry: PretrainedWeights, on_bytes: Callable[[int], None] | None = None,
            name: str | None = None) -> Path:
    """Copy `stream` to entry.path through a temporary file: hash-checked, fsynced, then os.replace."""
    folder = checkpoints_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.file_name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = hash_stream(stream, entry, name or entry.file_name, out, on_bytes)
            out.flush()
            os.fsync(out.fileno())
        if not digest.startswith(entry.sha256_prefix):
            raise WeightsError(wrong_hash_sentence(name or entry.file_name, entry, digest))
        os.replace(tmp, entry.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return entry.path


# --- import: a file, a folder or a zip of them -------------------------------------------------------------
Opener = Callable[[], BinaryIO]


@dataclass
class ImportReport:
    imported: list[PretrainedWeights] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)   # one sentence per file with a known name that failed
    ignored: list[str] = field(default_factory=list)   # names that are no weights file of the lab

    def to_dict(self) -> dict:
        return {"imported": [{"arch": e.arch, "weights": e.label, "file": e.file_name, "path": str(e.path)}
                             for e in self.imported], "refused": self.refused, "ignored": self.ignored}


def entry_for_file(name: str) -> PretrainedWeights | None:
    return next((e for e in PRETRAINED.values() if e.file_name == name), None)


def not_weights_sentence(name: str) -> str:
    return (f"{name} is not one of the torchvision ImageNet weights files the lab uses "
            f"({', '.join(e.file_name for e in PRETRAINED.values())}); keep the original file name, which carries "
            "its checksum, and nothing was imported.")


def import_weights(path: Path, by: User | None = None) -> ImportReport:
    """Import the weights files at `path`: one file, a folder (searched recursively) or a .zip of them. The
    weights are shared by every user of the machine: the instructor's to import."""
    require(by or PERSONAL, Action.IMPORT_WEIGHTS)
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"There is no file or folder at {path}.")
    if path.is_dir():
        return import_all(folder_sources(path), str(path))
    if is_zip_name(path.name):
        with open_zip(path, path.name) as archive:
            return import_all(zip_sources(archive), str(path))
    return import_one(path.name, lambda: open(path, "rb"))


def import_upload(name: str, data: bytes, by: User | None = None) -> ImportReport:
    """Import an uploaded file (a weights file or a .zip of them) held in memory (the instructor's to do)."""
    require(by or PERSONAL, Action.IMPORT_WEIGHTS)
    if is_zip_name(name):
        with open_zip(io.BytesIO(data), name) as archive:
            return import_all(zip_sources(archive), name)
    return import_one(name, lambda: io.BytesIO(data))


def is_zip_name(name: str) -> bool:
    # by name, not content: torch.save writes zip archives too, so a weights file would pass for a zip
    return name.lower().endswith(".zip")


def open_zip(file, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsError(f"{name} is not a readable zip ({e}); nothing was imported.") from None


def import_one(name: str, opener: Opener) -> ImportReport:
    """A single file the user named: anything but a valid weights file is an error."""
    report = check_and_install([(name, opener)])
    if not report.imported:
        raise WeightsError(report.refused[0] if report.refused else not_weights_sentence(name))
    return report


def import_all(sources: Iterable[tuple[str, Opener]], where: str) -> ImportReport:
    """The good files of a folder or zip; others are reported. An error when none was good."""
    report = check_and_install(sources)
    if report.imported:
        return report
    if report.refused:
        more = f" ({len(report.refused) - 1} more refused)" if len(report.refused) > 1 else ""
        raise WeightsError(report.refused[0].rstrip(".") + more + ".")
    raise WeightsError(f"{where} holds no torchvision ImageNet weights file the lab uses "
                       f"({', '.join(e.file_name for e in PRETRAINED.values())}); nothing was imported.")


def check_and_install(sources: Iterable[tuple[str, Opener]]) -> ImportReport:
    report = ImportReport()
    for name, opener in sources:
        entry = entry_for_file(name.replace("\\", "/").rsplit("/", 1)[-1])
        if entry is None:
            report.ignored.append(name)
            continue
        problem = import_file(name, opener, entry)
        if problem:
            report.refused.append(problem)
        else:
            report.imported.append(entry)
    return report


def import_file(name: str, opener: Opener, entry: PretrainedWeights) -> str | None:
    """Check the file's hash without writing, then install it (checked again while copying). None, or why not."""
    try:
        with opener() as f:
            digest = hash_stream(f, entry, name)
        if not digest.startswith(entry.sha256_prefix):
            return wrong_hash_sentence(name, entry, digest)
        with opener() as f:
            install(f, entry, name=name)
    except WeightsError as e:
        return str(e)
    except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:   # unreadable, bad CRC, odd zip
        return f"{name} could not be read ({e}), so it was not imported."
    return None


def folder_sources(folder: Path) -> Iterator[tuple[str, Opener]]:
    for i, p in enumerate(sorted(folder.rglob("*"))):
        if i >= MAX_FOLDER_FILES:
            raise WeightsError(f"{folder} holds more than {MAX_FOLDER_FILES:,} files; point to the folder that "
                               "holds the weights files.")
        if p.is_file():
            yield str(p), (lambda p=p: open(p, "rb"))


def zip_sources(archive: zipfile.ZipFile) -> list[tuple[str, Opener]]:
    """The zip's files, checked before any is read. Members never become paths (a known file goes to its own
    name in the cache), yet a zip with `..` or absolute paths is hostile and refused as a whole."""
    infos = archive.infolist()
    if len(infos) > MAX_FOLDER_FILES:
        raise WeightsError(f"The zip holds {len(infos):,} files, more than the {MAX_FOLDER_FILES:,} a weights "
                           "archive needs; nothing was imported.")
    sources = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/") or ":" in name.split("/")[0]:
            raise WeightsError(f"The zip holds a file with an unsafe path ({info.filename}); nothing was imported.")
        if info.is_dir():
            continue
        entry = entry_for_file(name.rsplit("/", 1)[-1])
        if entry is not None and info.file_size > entry.max_bytes:   # as declared; hash_stream caps the real size
            raise WeightsError(f"{info.filename} in the zip claims {info.file_size:,} bytes, far more than the "
                               f"{entry.size_mb:.0f} MB of {entry.label}; nothing was imported.")
        sources.append((info.filename, lambda info=info: archive.open(info)))
    return sources
