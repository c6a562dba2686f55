"""The run store: datasets, runs, epochs, evaluations, workers. The only code that writes SQL."""
from .runstore import ACTIVE, STATUSES, NotFound, RunStore, TrialExists, default_db

__all__ = ["RunStore", "NotFound", "TrialExists", "STATUSES", "ACTIVE", "default_db"]
