"""Copies of one image: exact (the same pixels) and near (the same photo re-saved, re-cropped a little, brightened).

Exact copies share a digest of their pixels. Near copies are found in two steps: a difference hash (dHash, 64
bits: is each cell of an 8x9 area-averaged thumbnail brighter than its left neighbour) proposes the pairs whose
hashes differ in at most NEAR_BITS bits, and the pixels confirm them (correlation at least NEAR_CORRELATION).
The hash alone is not enough for aligned 48x48 faces: at 4 differing bits most pairs on FER2013 are two
different people with the same pose (looked at by eye); with the pixel check nearly all are one photo.

dHash is computed here, batched in numpy, rather than with the `imagehash` package (which we tried): that one
takes one PIL image at a time (2 s for FER2013's 32,298 images for dHash, 11 s for pHash on the project's
loaded 2-core machine), while the whole stack here takes well under a second, which is what lets every split
keep near copies together (FERDataset.copy_groups) without slowing a run's start or an import.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np

HASH_SIDE = 8          # an 8x8 grid of left-right comparisons: 64 bits
NEAR_BITS = 5          # candidate near copies: dHashes that differ in at most this many of 64 bits ...
NEAR_CORRELATION = 0.9   # ... confirmed when their pixels correlate at least this much (Pearson, 0..1)
MAX_BUCKET = 2048      # a band value shared by more images than this is no evidence of a copy (e.g. flat images)


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """One 16-byte digest per image of its exact pixels (equal digests = identical images)."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat], dtype="S16")


def _area_sums(x: np.ndarray, n_out: int) -> np.ndarray:
    """Sum of the last axis over `n_out` equal cells (edges may fall inside a pixel: it counts by the share
    covered), from a running sum: no matrix product, so no BLAS threads to fight over a busy machine's cores."""
    n_in = x.shape[-1]
    running = np.concatenate([np.zeros(x.shape[:-1] + (1,), x.dtype), np.cumsum(x, axis=-1)], axis=-1)
    edges = np.arange(n_out + 1) * (n_in / n_out)
    whole = np.minimum(edges.astype(int), n_in - 1)
    upto = running[..., whole] + (edges - whole) * x[..., whole]     # the sum over [0, edge)
    return np.diff(upto, axis=-1)


def dhashes(images: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """The 64-bit difference hash of each image of an (N, H, W) uint8 stack, as uint64: each row of an 8x9
    area-averaged thumbnail, is each cell brighter than the one to its left."""
    weights = 1 << np.arange(HASH_SIDE * HASH_SIDE, dtype=np.uint64)
    out = np.empty(len(images), dtype=np.uint64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk]
        m, h, w = x.shape
        if h % HASH_SIDE == 0:    # 48 rows: 8 bands of 6 whole rows, summed as integers (the fast path)
            rows = x.reshape(m, HASH_SIDE, h // HASH_SIDE, w).sum(axis=2, dtype=np.int64)
        else:
            rows = _area_sums(x.transpose(0, 2, 1).astype(np.int64), HASH_SIDE).transpose(0, 2, 1)
        thumb = _area_sums(rows, HASH_SIDE + 1)                                        # (m, 8, 9)
        bits = (thumb[:, :, 1:] > thumb[:, :, :-1]).reshape(len(x), -1)
        out[start:start + chunk] = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return out


def near_pairs(hashes: np.ndarray, max_bits: int = NEAR_BITS) -> np.ndarray:
    """(i, j) with i < j for every pair whose hashes differ in at most `max_bits` bits, as an (M, 2) array.
    Pigeonhole: deal the 64 bits into max_bits + 1 bands; two hashes that close agree exactly on one band at
    least, so only images that share a band value are compared. Each band takes every (max_bits + 1)-th bit, so
    it samples the whole thumbnail: a band of one region (a plain background) would put thousands in a bucket."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n_bands = max_bits + 1
    found = []
    for band in range(n_bands):
        key = np.zeros(len(hashes), dtype=np.uint64)
        for j, bit in enumerate(range(band, 64, n_bands)):
            key |= ((hashes >> np.uint64(bit)) & np.uint64(1)) << np.uint64(j)
        order = np.argsort(key, kind="stable")
        starts = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        for size in np.unique(sizes[(sizes > 1) & (sizes <= MAX_BUCKET)]):
            members = order[starts[sizes == size][:, None] + np.arange(size)]    # (buckets, size)
            a, b = _pairs_of(int(size))
            in_bucket = hashes[members]
            bucket, pair = np.nonzero(np.bitwise_count(in_bucket[:, a] ^ in_bucket[:, b]) <= max_bits)
            i, j = members[bucket, a[pair]], members[bucket, b[pair]]
            found.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0).astype(np.int64)


@functools.lru_cache(maxsize=256)
def _pairs_of(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(size, k=1)


def correlations(images: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Pearson correlation of the pixels of each pair (0 where an image is flat)."""
    involved, at = np.unique(pairs, return_inverse=True)
    x = images[involved].reshape(len(involved), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    at = at.reshape(pairs.shape)
    return np.einsum("ij,ij->i", x[at[:, 0]], x[at[:, 1]])


def groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """A group id per item (the smallest index in its group), joining every pair transitively (union-find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs.tolist():
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def exact_groups(hashes: np.ndarray) -> np.ndarray:
    """A group id per image: the index of the first image with the same pixels."""
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def near_copy_pairs(images: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """(i, j), i < j, for every pair of images that are near copies of each other and not pixel-identical; one
    image of each exact group (`exact`: exact_groups ids) stands for its copies."""
    firsts = np.unique(exact)
    pairs = firsts[near_pairs(dhashes(images)[firsts])]
    return pairs[correlations(images, pairs) >= NEAR_CORRELATION] if len(pairs) else pairs


def near_groups(images: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """A group id per image (the smallest index in its group): exact copies (`exact`) and near copies joined,
    transitively."""
    return groups(len(images), near_copy_pairs(images, exact))[exact]
