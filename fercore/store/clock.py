"""The store's clock: naive UTC datetimes, as every timestamp column holds them."""
from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
