"""The run store: datasets, runs, epochs, evaluations, workers. The only code that writes SQL."""
from .dialects import DatabaseUnreachable
from .runstore import ACTIVE, STATUSES, NotFound, RunStore, default_db

__all__ = ["RunStore", "NotFound", "DatabaseUnreachable", "STATUSES", "ACTIVE", "default_db"]
