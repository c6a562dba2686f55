"""Data: sources (CSV, folders, zips, synthetic) -> FERDataset; the audit; which dataset a spec names."""
from fercore.data.dataset import SPLITS, FERDataset, prepare_for_run
from fercore.data.lookup import import_dataset, is_synthetic, require, resolve
from fercore.errors import DataError

__all__ = ["FERDataset", "DataError", "SPLITS", "prepare_for_run", "resolve", "import_dataset", "require",
           "is_synthetic"]
