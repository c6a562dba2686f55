"""Which dataset a spec names: the one answer every caller (trainer, pages, lessons, estimates) uses.

A spec is a dataset's name in the store, the word `synthetic` (`synthetic:N[:SEED]`), or a path to a
source (CSV, folder, zip) that is imported on first use. The store is passed in (anything with
`dataset_info`, `load_dataset` and `add_dataset`), so this module does not depend on it.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from fercore.auth import safe_name
from fercore.data.dataset import FERDataset
from fercore.errors import DataError, NotFound


def is_synthetic(spec: str) -> bool:
    return str(spec).strip().lower().split(":")[0] == "synthetic"


def names_something(spec: str, store) -> bool:
    """Whether `resolve` would find a dataset for the spec, without loading or importing anything."""
    return bool(spec) and (store.dataset_info(spec) is not None or is_synthetic(spec)
                           or Path(spec).expanduser().exists())


def require(spec: str, store) -> None:
    """Refuse, with a sentence, a spec that names no dataset (before queueing runs that would fail)."""
    if not names_something(spec, store):
        raise NotFound(f"There is no dataset named {spec!r} and no file or folder at that path; import it on the "
                       "Data page or with `python -m fercore data import`, or use `synthetic`.")


# Imports decode tens of thousands of images and hold them in memory: two at a time per process, the rest wait.
IMPORT_SLOTS = 2
_import_slots = threading.BoundedSemaphore(IMPORT_SLOTS)


@contextmanager
def import_slot(on_wait=None):
    """Hold one of the IMPORT_SLOTS while importing; `on_wait()` is called first when all are taken."""
    if not _import_slots.acquire(blocking=False):
        if on_wait is not None:
            on_wait()
        _import_slots.acquire()
    try:
        yield
    finally:
        _import_slots.release()


def import_dataset(src: str, store, name: str | None = None, dedupe: bool | str = False, source: str | None = None,
                   by=None, on_wait=None):
    """Read a source, audit it (fercore.data.audit: exact and near copies within and across splits, blank images),
    drop cross-split copies and blanks when `dedupe` ("exact" or True: pixel-identical copies; "near": near copies
    too), and store it with its audit. Returns the stored DatasetInfo.
    `source`: where it came from, as the datasets table shows it, when `src` is a temporary copy (an upload).
    `by`: who imports it (fercore.auth.User; the store checks they may and records them as its owner). At most
    IMPORT_SLOTS imports run at once; `on_wait()` is called when this one has to wait for a slot."""
    with import_slot(on_wait):
        return _import_dataset(src, store, name, dedupe, source, by)


def _import_dataset(src: str, store, name, dedupe: bool | str, source, by):
    from fercore.data import audit as audit_mod
    from fercore.data.sources import load_source  # here: sources pull in PIL
    mode = dedupe_mode(dedupe)
    ds = load_source(src)
    name = name or safe_name(ds.name)
    if source:
        ds.source = source
    report = audit_mod.audit(ds)
    dropped: list[str] = []
    if mode:
        ds, dropped = audit_mod.dedupe(ds, mode)
    return store.add_dataset(ds, name, audit={**report, "deduplicated": bool(mode), "dedupe": mode,
                                              "dropped": dropped}, by=by)


def dedupe_mode(dedupe: bool | str | None) -> str | None:
    """None (keep every image), "exact" or "near", from a flag (True means exact) or a mode's name."""
    if dedupe in (None, False, "", "none"):
        return None
    if dedupe is True or dedupe == "exact":
        return "exact"
    if dedupe == "near":
        return "near"
    raise DataError(f"--dedupe takes exact or near, not {dedupe!r}.")


def resolve(spec: str, store, keep: bool = True, fingerprint: str | None = None) -> FERDataset:
    """The dataset a spec names. A name in the store is loaded (with `fingerprint`, the version of that name with
    those images); `synthetic[...]` is drawn and a path imported, and both are added to the store under their name
    when `keep` (so runs can refer to them later)."""
    if store.dataset_info(spec) is not None:
        return store.load_dataset(spec, fingerprint=fingerprint)
    require(spec, store)
    from fercore.data.sources import load_source  # here: sources pull in PIL
    ds = load_source(spec)
    name = spec if is_synthetic(spec) else safe_name(ds.name)
    if not keep:
        ds.name = name
        return ds
    store.add_dataset(ds, name)
    return store.load_dataset(name)
