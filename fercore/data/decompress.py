"""Bounded decompression: an upload may expand only so far, and only so fast, before it is refused.

The real fer2013.csv is 287 MB, and a CSV of pixel values compresses about 3:1 (the shared sample and
drawn faces alike: 2.5 to 3.4 with gzip -1 to -9). A decompression bomb is the opposite: 1.6 GB of one repeated
row in a 2 MB .csv.gz (800:1). Every compressed source is therefore read as a stream through `capped`, which
counts what comes out and refuses, with a sentence, as soon as the output passes MAX_EXPANDED_BYTES or outgrows
the input read so far by more than MAX_RATIO. The refusal comes after a few megabytes, long before any line is
split, and nothing is held in memory but one buffer: the callers parse from the stream.
"""
from __future__ import annotations

import gzip
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable

from .dataset import DataError

MAX_EXPANDED_BYTES = 400 * 1024 ** 2   # fer2013.csv is 287 MB; a source that expands beyond this is not FER2013
MAX_RATIO = 50                          # real CSVs compress ~3:1; 50:1 is far outside any of them
RATIO_GRACE_BYTES = 16 * 1024 ** 2     # a small file may compress well (blank images): no ratio check below this
READ_CHUNK = 1024 ** 2
# What the zip, tar and gzip readers raise on a damaged or crafted archive (bad headers, impossible offsets,
# unsupported or encrypted entries, bad CRCs, truncation); a DataError is raised before any of these is caught.
ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, OSError,
                  EOFError, NotImplementedError, RuntimeError, ValueError, struct.error, OverflowError)


class CountingReader:
    """The bytes a decompressor has consumed from its compressed input, for the ratio check."""

    def __init__(self, raw):
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data


class CappedReader(io.RawIOBase):
    """A decompressing stream that refuses to expand too far or too fast.

    `packed()` says how many compressed bytes have been consumed so far (None: not compressed, no ratio check).
    Any failure of the decompressor (a truncated or corrupt file) becomes a DataError naming `where`."""

    def __init__(self, stream, where: str, kind: str, packed: Callable[[], int] | None = None,
                 limit: int = MAX_EXPANDED_BYTES):
        super().__init__()
        self.stream, self.where, self.kind, self.packed, self.limit = stream, where, kind, packed, limit
        self.expanded = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.stream.read(min(len(buffer), READ_CHUNK))
        except DataError:
            raise
        except Exception as e:   # noqa: BLE001 - whatever a decompressor raises on damaged input
            raise DataError(f"{self.where} is not a readable {self.kind} ({describe(e)}).") from None
        n = len(data)
        buffer[:n] = data
        self.expanded += n
        refuse_expansion(self.where, self.expanded, self.packed() if self.packed else None, self.limit)
        return n


def refuse_expansion(where: str, expanded: int, packed: int | None, limit: int = MAX_EXPANDED_BYTES) -> None:
    """Raise the sentence if `expanded` bytes (from `packed` compressed ones) is too much; used on a stream as it
    flows and on the sizes an archive declares."""
    if expanded > limit:
        raise DataError(f"{where} expands to more than {limit // 1024 ** 2} MB; the real FER2013 CSV is 287 MB, "
                        "so FER Lab refuses it as too large (or a decompression bomb). Nothing was imported.")
    if packed is not None and expanded > RATIO_GRACE_BYTES and expanded > MAX_RATIO * max(packed, 1):
        raise DataError(f"{where} expands more than {MAX_RATIO}:1 (to over {_size(expanded)} from {_size(packed)}); "
                        "a FER2013 CSV compresses about 3:1, so FER Lab refuses it as a possible decompression bomb. "
                        "Nothing was imported.")


def capped(stream, where: str, kind: str = "file", packed: Callable[[], int] | None = None,
           limit: int = MAX_EXPANDED_BYTES) -> io.BufferedReader:
    """`stream`'s bytes as a buffered, line-readable stream that stops at the caps."""
    return io.BufferedReader(CappedReader(stream, where, kind, packed, limit), buffer_size=READ_CHUNK)


def gunzip_capped(raw, where: str, limit: int = MAX_EXPANDED_BYTES) -> io.BufferedReader:
    """The decompressed content of the gzip data `raw` yields, capped in size and ratio."""
    counted = CountingReader(raw)
    return capped(gzip.GzipFile(fileobj=counted, mode="rb"), where, "gzip file", lambda: counted.count, limit)


def open_maybe_gzipped(raw, where: str, kind: str, packed: Callable[[], int] | None = None,
                       limit: int = MAX_EXPANDED_BYTES) -> io.BufferedReader:
    """`raw` (a peekable binary stream: a file, a zip or tar member) as capped text, gunzipped if it starts with
    the gzip magic (a .csv.gz, or a .csv.gz inside a zip)."""
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return gunzip_capped(raw, where, limit)
    return capped(raw, where, kind, packed, limit)


def _size(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{max(n, 1) / 1e3:,.0f} kB"


def describe(e: Exception) -> str:
    """A decompressor's complaint, without its exception class."""
    text = str(e).strip().rstrip(".") or "it ends too early"
    return text[:120]
