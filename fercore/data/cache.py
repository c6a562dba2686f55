"""Dataset cache: a parsed source saved as one .npz, so the second load of a file is near-instant.

An entry is valid while the source is unchanged: same absolute path, size and modification time
(for a folder: the same files with the same sizes and times). One entry is kept per source path;
a newer version replaces the older. Entries are written to a temporary file and renamed into
place, so an interrupted or failed import never leaves a half-written entry behind (fsync'd, so not even
after a power cut).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from fercore.data.dataset import FERDataset
from fercore.safeio import replace_durably

CACHE_VERSION = "2"   # bump when a loader's output or what it accepts changes, so old entries are not reused


def default_cache_dir() -> Path:
    return Path(os.environ.get("FER_CACHE_DIR") or Path.home() / ".cache" / "fercore")


def cache_entry(source: Path, cache_dir: str | Path | None = None) -> Path:
    """Where the cached dataset for this version of `source` lives (it may not exist yet)."""
    source = source.resolve()
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    return folder / f"{short_hash(str(source))}-{short_hash(source_version(source))}.npz"


def read_cached(entry: Path) -> FERDataset | None:
    if not entry.is_file():
        return None
    try:
        return FERDataset.load(entry)
    except Exception:   # an unreadable entry is only a cache miss: the source is parsed again
        return None


def write_cached(ds: FERDataset, entry: Path) -> Path | None:
    """Save `ds` as `entry` and drop older entries of the same source; returns None when the cache
    folder cannot be written (the import itself still succeeded, it just will not be faster next time)."""
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".partial-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            ds.save(f)
        replace_durably(tmp, entry)
    except OSError:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        return None
    path_prefix = entry.name.split("-")[0]
    for old in entry.parent.glob(f"{path_prefix}-*.npz"):
        if old != entry:
            old.unlink(missing_ok=True)
    return entry


def source_version(source: Path) -> str:
    """Changes whenever the source's content may have changed."""
    if source.is_dir():
        files = (f"{rel}|{st.st_size}|{st.st_mtime_ns}" for rel, st in walk_files(source))
        return CACHE_VERSION + "\n" + "\n".join(files)
    st = source.stat()
    return f"{CACHE_VERSION}|{st.st_size}|{st.st_mtime_ns}"


def walk_files(folder: Path, prefix: str = ""):
    """(relative path, stat) of every file below `folder`, in a stable order, without following links."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            yield from walk_files(Path(e.path), prefix + e.name + "/")
        elif e.is_file():
            yield prefix + e.name, e.stat()


def short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
