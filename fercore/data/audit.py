"""The data audit: what a dataset repeats, what is blank, how its classes balance.

FER2013 repeats itself: the image folder has 1,236 extra copies of training images inside train,
280 PublicTest (val) images that are pixel-for-pixel training images (a few with another label) and
11 blank training images. A val image the network has seen in training scores as memorisation, not
generalisation, so every val figure is inflated and checkpoint selection partly rewards memorising.
`audit` counts these at import; `dedupe` drops cross-split copies from val/test, and blank images.
"""
from __future__ import annotations

import hashlib

import numpy as np

from fercore.data.dataset import SPLITS, FERDataset

BLANK_SPREAD = 2   # max - min grey level at or below which an image is blank (uniform): no face to see


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """One 16-byte digest per image of its exact pixels (equal digests = identical images)."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat], dtype="S16")


def blank_mask(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    if not len(flat):
        return np.zeros(0, dtype=bool)
    return (flat.max(axis=1).astype(np.int16) - flat.min(axis=1)) <= BLANK_SPREAD


def _first_index(hashes: np.ndarray) -> dict[bytes, int]:
    first: dict[bytes, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(bytes(h), i)
    return first


def audit(ds: FERDataset, hashes: np.ndarray | None = None, examples: int = 6) -> dict:
    """Counts of within-split copies, cross-split copies (and how many carry another label), blank images
    and the class balance; `pairs` holds a few (index, index) examples of cross-split copies to show."""
    hashes = pixel_hashes(ds.images) if hashes is None else hashes
    first = _first_index(hashes)   # the earliest image with those pixels, in dataset order
    blank = blank_mask(ds.images)
    within: dict[str, int] = {}
    cross: dict[str, dict] = {}
    pairs: list[list[int]] = []
    # where each hash occurs per split, for "this val image is also in train"
    seen_in = {s: {} for s in SPLITS}
    for i, h in enumerate(hashes):
        seen_in[SPLITS[ds.split[i]]].setdefault(bytes(h), i)
    for si, split in enumerate(SPLITS):
        idx = np.flatnonzero(ds.split == si)
        if not len(idx):
            continue
        hs = [bytes(hashes[i]) for i in idx]
        within[split] = len(hs) - len(set(hs))
        for earlier in SPLITS[:si]:
            other = seen_in[earlier]
            hits = [(i, other[h]) for i, h in zip(idx, hs) if h in other]
            if not hits:
                continue
            relabelled = sum(int(ds.labels[i] != ds.labels[j]) for i, j in hits)
            cross[f"{split}_in_{earlier}"] = {"n": len(hits), "other_label": relabelled}
            pairs += [[int(j), int(i)] for i, j in hits[:examples - len(pairs)] if len(pairs) < examples]
    return {
        "n": int(len(ds)),
        "unique": int(len(first)),
        "duplicates_within": within,
        "duplicates_across": cross,
        "blank": {s: int((blank & (ds.split == i)).sum()) for i, s in enumerate(SPLITS) if (ds.split == i).any()},
        "class_balance": ds.class_counts(),
        "pairs": pairs,
    }


def dedupe(ds: FERDataset, hashes: np.ndarray | None = None) -> tuple[FERDataset, list[str]]:
    """Drop val/test images whose pixels appear in an earlier split (train, or train/val for test), and blank
    images from every split. Returns the smaller dataset and one note per kind of drop."""
    hashes = pixel_hashes(ds.images) if hashes is None else hashes
    keep = ~blank_mask(ds.images)
    notes = []
    if (~keep).any():
        notes.append(f"dropped {int((~keep).sum())} blank (uniform) images")
    earlier: set[bytes] = set()
    for si, split in enumerate(SPLITS):
        idx = np.flatnonzero(ds.split == si)
        hs = [bytes(hashes[i]) for i in idx]
        if si > 0:
            dup = np.array([h in earlier for h in hs], dtype=bool)
            if dup.any():   # the audit's count of cross-split copies; a blank copy is one image, dropped once
                also_blank = int((dup & ~keep[idx]).sum())
                keep[idx[dup]] = False
                notes.append(f"dropped {int(dup.sum())} {split} images identical to images of an earlier split"
                             + (f" ({also_blank} of them blank, counted among the blank ones too)" if also_blank
                                else ""))
        earlier.update(hs)
    out = FERDataset(ds.name, ds.source, list(ds.classes), ds.images[keep], ds.labels[keep], ds.split[keep],
                     ds.synthetic, list(ds.notes) + notes)
    return out, notes
