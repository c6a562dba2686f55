"""The run store: datasets, runs, epochs, evaluations, workers. The only code that writes SQL.

Callers get frozen entities (`Run`, `Evaluation`, `DatasetInfo`, `Worker`), never ORM rows.
"""
from fercore.errors import NotFound
from fercore.store.dialects import DatabaseUnreachable, redact_url
from fercore.store.entities import DatasetInfo, Evaluation, Run, RunStatus, Worker
from fercore.store.queue import LeaseLost
from fercore.store.runstore import RunStore, TrialExists, default_db

__all__ = ["RunStore", "NotFound", "TrialExists", "DatabaseUnreachable", "RunStatus", "Run", "Evaluation",
           "DatasetInfo", "Worker", "default_db", "redact_url",
           "LeaseLost"]
