"""The data audit: what a dataset repeats, exactly or nearly, what is blank, how its classes balance.

FER2013 repeats itself: the image folder has 1,236 extra copies of training images inside train,
280 PublicTest (val) images that are pixel-for-pixel training images (a few with another label) and
11 blank training images; beyond those, near copies (the same photo re-saved, re-cropped or brightened,
fercore.data.copies). A val image the network has seen in training scores as memorisation, not
generalisation, so every val figure is inflated and checkpoint selection partly rewards memorising.
`audit` counts these at import; `dedupe` drops cross-split copies from val/test (exact ones, or near ones
too), and blank images. Copies inside one split stay: the random splits keep them together instead.
"""
from __future__ import annotations

import numpy as np

from fercore.data import copies
from fercore.data.dataset import SPLITS, FERDataset

BLANK_SPREAD = 2   # max - min grey level at or below which an image is blank (uniform): no face to see
DEDUPE_MODES = ("exact", "near")


def blank_mask(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    if not len(flat):
        return np.zeros(0, dtype=bool)
    return (flat.max(axis=1).astype(np.int16) - flat.min(axis=1)) <= BLANK_SPREAD


def audit(ds: FERDataset, examples: int = 6) -> dict:
    """Counts of within-split copies, cross-split copies (and how many carry another label), blank images
    and the class balance; `pairs` holds a few (index, index) examples of cross-split copies to show;
    `near_duplicates` the same for near copies that are not pixel-identical."""
    exact, near = ds.copy_groups(near=False), ds.copy_groups(near=True)
    within, cross, pairs = _copies_by_split(ds, exact, np.zeros(len(ds), dtype=bool), examples)
    near_within, near_cross, near_pairs = _copies_by_split(ds, near, _in_earlier_split(ds, exact), examples)
    near_within = {s: n - within[s] for s, n in near_within.items()}   # beyond the exact copies
    blank = blank_mask(ds.images)
    return {
        "n": int(len(ds)),
        "unique": int(len(np.unique(exact))),
        "duplicates_within": within,
        "duplicates_across": cross,
        "blank": {s: int((blank & (ds.split == i)).sum()) for i, s in enumerate(SPLITS) if (ds.split == i).any()},
        "class_balance": ds.class_counts(),
        "pairs": pairs,
        "near_duplicates": {"within": near_within, "across": near_cross, "pairs": near_pairs,
                            "extra": int(len(np.unique(exact)) - len(np.unique(near))),
                            "hash_bits": copies.NEAR_BITS, "correlation": copies.NEAR_CORRELATION},
    }


def _copies_by_split(ds: FERDataset, group: np.ndarray, skip: np.ndarray, examples: int):
    """Per split, the extra copies inside it; per (split, earlier split), its images that are not `skip`ped
    and have a copy in the earlier one, with how many carry another label; and a few such pairs."""
    within: dict[str, int] = {}
    cross: dict[str, dict] = {}
    pairs: list[list[int]] = []
    first_in = {}   # split -> {group id: its first image in that split}
    for si, split in enumerate(SPLITS):
        idx = np.flatnonzero(ds.split == si)
        if not len(idx):
            continue
        ids, first = np.unique(group[idx], return_index=True)
        first_in[split] = dict(zip(ids.tolist(), idx[first].tolist()))
        within[split] = int(len(idx) - len(ids))
        for earlier in SPLITS[:si]:
            other = first_in.get(earlier, {})
            hits = [(i, other[g]) for i, g in zip(idx.tolist(), group[idx].tolist()) if g in other and not skip[i]]
            if not hits:
                continue
            relabelled = sum(int(ds.labels[i] != ds.labels[j]) for i, j in hits)
            cross[f"{split}_in_{earlier}"] = {"n": len(hits), "other_label": relabelled}
            pairs += [[int(j), int(i)] for i, j in hits[:max(examples - len(pairs), 0)]]
    return within, cross, pairs


def _in_earlier_split(ds: FERDataset, group: np.ndarray) -> np.ndarray:
    """Whether each image has a copy (same group) in an earlier split (train before val before test)."""
    out = np.zeros(len(ds), dtype=bool)
    seen = np.zeros(0, dtype=group.dtype)
    for si in range(len(SPLITS)):
        mask = ds.split == si
        out[mask] = np.isin(group[mask], seen)
        seen = np.union1d(seen, group[mask])
    return out


def dedupe(ds: FERDataset, mode: str = "exact") -> tuple[FERDataset, list[str]]:
    """Drop val/test images whose pixels appear in an earlier split (train, or train/val for test), with `mode`
    "near" also those that are near copies of one, and blank images from every split. Returns the smaller dataset
    and one note per kind of drop."""
    blank = blank_mask(ds.images)
    identical = _in_earlier_split(ds, ds.copy_groups(near=False))   # blank ones too: the audit counts them
    near = np.zeros(len(ds), dtype=bool)
    if mode == "near":
        near = _in_earlier_split(ds, ds.copy_groups(near=True)) & ~blank & ~identical
    notes = [f"dropped {int(blank.sum())} blank (uniform) images"] if blank.any() else []
    for si, split in enumerate(SPLITS[1:], start=1):
        here = ds.split == si
        if (identical & here).any():   # the audit's count of cross-split copies; a blank copy is one image
            also_blank = int((identical & here & blank).sum())
            notes.append(f"dropped {int((identical & here).sum())} {split} images identical to images of an "
                         "earlier split" + (f" ({also_blank} of them blank, counted among the blank ones too)"
                                            if also_blank else ""))
        if (near & here).any():
            notes.append(f"dropped {int((near & here).sum())} {split} images that are near copies of images of "
                         "an earlier split")
    keep = ~(blank | identical | near)
    out = FERDataset(ds.name, ds.source, list(ds.classes), ds.images[keep], ds.labels[keep], ds.split[keep],
                     ds.synthetic, list(ds.notes) + notes)
    return out, notes


def audit_sentence(report: dict) -> str:
    """The audit in one line, as `data import` prints it and the reports show it."""
    within = ", ".join(f"{n} in {s}" for s, n in report["duplicates_within"].items() if n) or "none"
    across = ", ".join(f"{d['n']} {k.replace('_in_', ' images also in ')} ({d['other_label']} with another label)"
                       for k, d in report["duplicates_across"].items()) or "none"
    blank = ", ".join(f"{n} in {s}" for s, n in report["blank"].items() if n) or "none"
    text = f"duplicate copies within a split: {within}; across splits: {across}; blank images: {blank}."
    near = report.get("near_duplicates")
    if near:
        near_within = ", ".join(f"{n} in {s}" for s, n in near["within"].items() if n) or "none"
        near_across = ", ".join(f"{d['n']} {k.replace('_in_', ' images near copies of ')}"
                                for k, d in near["across"].items()) or "none"
        text += (f"\n  near copies (dHash within {near['hash_bits']} bits and pixel correlation at least "
                 f"{near['correlation']}), beyond the identical ones: {near['extra']} in all; within a split: "
                 f"{near_within}; across splits: {near_across}.")
    return text
