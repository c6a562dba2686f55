"""Durable file writes: every file the lab writes is, after a crash or a power cut, either its old content or
its complete new content, never empty or half written.

Writing to a temporary name and renaming it into place (os.replace) is atomic for other processes, but not for
the disk: without an fsync the rename can reach the disk before the data does, and a power cut then leaves an
empty file under the final name. So the data is fsync'd before the rename, and the folder after it (so the
rename itself survives). One helper, used by everything that saves run files, datasets, cache entries,
probabilities, sweep specs and attribution maps.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to the disk (a file written by a library that took a path, not a file object)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new name in `folder` durable. Not every platform can open a folder (Windows cannot):
    there the rename is as durable as the platform makes it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass   # some file systems refuse fsync on a folder; the data itself is already on the disk
    finally:
        os.close(fd)


def replace_durably(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a fully written temporary file into place: its data on the disk first, then the rename."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextmanager
def atomic_path(path: str | os.PathLike, guard=None):
    """Yield a temporary path next to `path` (same suffix, so writers that pick a format by the name still
    do); when the block ends without an error, the file written there replaces `path` durably. On an error
    (a full disk, a failing writer) nothing changes at `path` and no temporary file is left. `guard`: a context
    manager factory the rename runs inside (a worker's lease: the file lands only while it owns the run); each
    call has a temporary name of its own, so two writers never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_file(tmp)
        with guard() if guard else nullcontext():
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))
