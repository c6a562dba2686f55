"""FERDataset: uint8 face images, integer labels, class names and a split per image.

Every source (CSV, image folder, zip, synthetic) produces one of these; everything downstream
(training, evaluation, the Data page) consumes it. Splits are stored as one small code per image
so that subsets and re-splits are cheap array operations.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fercore.config import RunConfig
from fercore.data import copies
from fercore.errors import DataError

SPLITS = ("train", "val", "test")



@dataclass
class FERDataset:
    name: str
    source: str
    classes: list[str]
    images: np.ndarray          # (N, H, W) uint8
    labels: np.ndarray          # (N,) int64, index into classes
    split: np.ndarray           # (N,) uint8, index into SPLITS
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)   # e.g. "3 unreadable images skipped"
    # copy groups found so far ("exact"/"near" -> a group id per image), kept through class subsets
    _copy_groups: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.split = np.asarray(self.split, dtype=np.uint8)
        if self.images.ndim != 3:
            raise DataError("Images must be a stack of grayscale pictures (N, H, W).")
        if not (len(self.images) == len(self.labels) == len(self.split)):
            raise DataError("Images, labels and splits have different lengths.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def split_counts(self) -> dict[str, int]:
        return {s: int((self.split == i).sum()) for i, s in enumerate(SPLITS)}

    def class_counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: count}}"""
        out = {}
        for i, s in enumerate(SPLITS):
            lab = self.labels[self.split == i]
            counts = np.bincount(lab, minlength=len(self.classes))
            out[s] = {c: int(n) for c, n in zip(self.classes, counts)}
        return out

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in SPLITS:
            raise DataError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
        m = self.split == SPLITS.index(split)
        return self.images[m], self.labels[m]

    def fingerprint(self) -> str:
        """Content hash: the same images, labels, splits and class names give the same id."""
        h = hashlib.blake2b(digest_size=12)
        h.update("|".join(self.classes).encode())
        for a in (self.images, self.labels, self.split):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def copy_groups(self, near: bool = True) -> np.ndarray:
        """A group id per image: images with one id are copies of one image, pixel for pixel or (with `near`) near
        copies too (fercore.data.copies). Computed once per dataset."""
        if "exact" not in self._copy_groups:
            self._copy_groups["exact"] = copies.exact_groups(copies.pixel_hashes(self.images))
        if near and "near" not in self._copy_groups:
            self._copy_groups["near"] = copies.near_groups(self.images, self._copy_groups["exact"])
        return self._copy_groups["near" if near else "exact"]

    # --- derived datasets
    def subset_classes(self, classes: list[str] | tuple[str, ...]) -> FERDataset:
        """Keep only the named classes, relabelled 0..k-1 in the given order."""
        if not classes:
            return self
        missing = [c for c in classes if c not in self.classes]
        if missing:
            raise DataError(f"The dataset {self.name!r} has no class {', '.join(missing)}; "
                            f"its classes are {', '.join(self.classes)}.")
        old = np.array([self.classes.index(c) for c in classes])
        remap = np.full(len(self.classes), -1, dtype=np.int64)
        remap[old] = np.arange(len(classes))
        new_labels = remap[self.labels]
        keep = new_labels >= 0
        return FERDataset(self.name, self.source, list(classes), self.images[keep], new_labels[keep],
                          self.split[keep], self.synthetic, list(self.notes),
                          {k: g[keep] for k, g in self._copy_groups.items()})

    def resplit(self, ratios: tuple[float, ...], seed: int, copies_kept: str = "near") -> FERDataset:
        """Stratified random split of all images with the given train/val(/test) ratios. `copies_kept`: "near"
        puts every copy of an image, exact or near, in one split, "exact" only pixel-identical ones, "ignore" splits
        image by image (as the lab did before: runs stored then keep their split)."""
        rng = np.random.default_rng(seed)
        r = np.asarray(ratios, dtype=float) / sum(ratios)
        bounds = np.cumsum(r)[:-1]
        if copies_kept == "ignore":
            split = np.zeros(len(self), dtype=np.uint8)
            for c in range(len(self.classes)):
                idx = np.flatnonzero(self.labels == c)
                rng.shuffle(idx)
                cuts = np.round(bounds * len(idx)).astype(int)
                for s, part in enumerate(np.split(idx, cuts)):
                    split[part] = s
            return self._with_split(split)
        units = self._copy_units(np.ones(len(self), dtype=bool), copies_kept)
        part = np.zeros(units.n, dtype=np.uint8)
        for g in units.by_class(rng):
            size = units.sizes[g]
            middle = np.cumsum(size) - size / 2   # a group goes where its middle image falls
            part[g] = np.searchsorted(bounds * size.sum(), middle, side="right")
        return self._with_split(units.spread(part, self.split))

    def carve_val(self, fraction: float, seed: int, copies_kept: str = "near") -> FERDataset:
        """Move a stratified `fraction` of the training images to val; test (the source's own) is untouched.
        `copies_kept` as in `resplit`: with "near" or "exact", copies of one training image move together."""
        rng = np.random.default_rng(seed)
        split = self.split.copy()
        if copies_kept == "ignore":
            for c in range(len(self.classes)):
                idx = np.flatnonzero((self.labels == c) & (self.split == 0))
                n = int(round(len(idx) * fraction))
                split[rng.choice(idx, size=min(n, max(len(idx) - 1, 0)), replace=False)] = 1
            return self._with_split(split)
        units = self._copy_units(self.split == 0, copies_kept)
        to_val = np.zeros(units.n, dtype=bool)
        for g in units.by_class(rng):
            size = units.sizes[g]
            chosen = np.cumsum(size) - size / 2 < round(size.sum() * fraction)
            if chosen.all():
                chosen[-1] = False   # one group at least stays in train
            to_val[g] = chosen
        return self._with_split(units.spread(to_val.astype(np.uint8), split))

    def _copy_units(self, eligible: np.ndarray, copies_kept: str) -> CopyUnits:
        return CopyUnits(self.copy_groups(near=copies_kept == "near"), self.labels, eligible, len(self.classes))

    def _with_split(self, split: np.ndarray) -> FERDataset:
        return FERDataset(self.name, self.source, list(self.classes), self.images, self.labels, split,
                          self.synthetic, list(self.notes), dict(self._copy_groups))

    def fraction_of_train(self, fraction: float, seed: int) -> FERDataset:
        """Keep a stratified fraction of the training images (val and test untouched)."""
        if fraction >= 1.0:
            return self
        rng = np.random.default_rng(seed)
        keep = self.split != 0
        for c in range(len(self.classes)):
            idx = np.flatnonzero((self.labels == c) & (self.split == 0))
            n = max(1, int(round(len(idx) * fraction))) if len(idx) else 0
            keep[rng.choice(idx, size=n, replace=False)] = True
        return FERDataset(self.name, self.source, list(self.classes), self.images[keep], self.labels[keep],
                          self.split[keep], self.synthetic, list(self.notes))

    # --- persistence: one .npz, loaded without pickle
    def save(self, path) -> None:
        np.savez(path, images=self.images, labels=self.labels, split=self.split,
                 classes=np.array(self.classes), meta=np.array([self.name, self.source, str(int(self.synthetic))]),
                 notes=np.array(self.notes if self.notes else [""]))

    @classmethod
    def load(cls, path) -> FERDataset:
        with np.load(path, allow_pickle=False) as z:
            name, source, synthetic = [str(x) for x in z["meta"]]
            notes = [str(x) for x in z["notes"] if str(x)]
            return cls(name, source, [str(c) for c in z["classes"]], z["images"], z["labels"], z["split"],
                       synthetic == "1", notes)


class CopyUnits:
    """The units a split moves: each group of copies among the `eligible` images (the images a split may move),
    stratified by the class of the group's first image (a copy with another label goes with its group)."""

    def __init__(self, group_ids: np.ndarray, labels: np.ndarray, eligible: np.ndarray, n_classes: int):
        self.members = np.flatnonzero(eligible)
        _, first, self.of_member = np.unique(group_ids[self.members], return_index=True, return_inverse=True)
        self.of_member = self.of_member.ravel()
        self.n = len(first)
        self.sizes = np.bincount(self.of_member, minlength=self.n)
        self.label = labels[self.members[first]]
        self.n_classes = n_classes

    def by_class(self, rng: np.random.Generator):
        """Per class, its groups in a random order (empty classes skipped)."""
        for c in range(self.n_classes):
            g = np.flatnonzero(self.label == c)
            if len(g):
                rng.shuffle(g)
                yield g

    def spread(self, part_of_group: np.ndarray, split: np.ndarray) -> np.ndarray:
        """`split` with each eligible image set to its group's part."""
        out = split.copy()
        out[self.members] = part_of_group[self.of_member]
        return out


def prepare_for_run(ds: FERDataset, config: RunConfig) -> FERDataset:
    """Apply a run config's data settings: class subset, split mode, training fraction. Training and every
    later evaluation of the run call this, so a run's val and test are always the same rows."""
    if config.split != "usage" and config.split_copies != "ignore":
        ds.copy_groups(near=config.split_copies == "near")   # found once on the whole dataset (a page's cached one)
    if config.classes:
        ds = ds.subset_classes(config.classes)
    if config.split == "random":
        ds = ds.resplit(config.split_ratios, config.split_seed, config.split_copies)
    elif config.split == "val_from_train":
        ds = ds.carve_val(config.val_fraction, config.split_seed, config.split_copies)
    counts = ds.split_counts()
    if counts["train"] == 0:
        raise DataError(f"The dataset {ds.name!r} has no training images; use a random split (split=random).")
    if config.data_fraction < 1.0:
        ds = ds.fraction_of_train(config.data_fraction, config.seed)
    return ds
