"""Data: sources (CSV, image folder, zip, synthetic) -> FERDataset -> splits and class subsets."""
from .dataset import SPLITS, DataError, FERDataset, prepare_for_run
from .sources import load_source, load_trainval_block, write_challenge_csv
from .synthetic import make_synthetic

__all__ = ["FERDataset", "DataError", "SPLITS", "prepare_for_run", "load_source", "load_trainval_block",
           "write_challenge_csv", "make_synthetic"]
