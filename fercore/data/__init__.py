"""Data: sources (CSV, image folder, zip, synthetic) -> FERDataset -> splits and class subsets."""
from .dataset import SPLITS, DataError, FERDataset, prepare_for_run

__all__ = ["FERDataset", "DataError", "SPLITS", "prepare_for_run"]
