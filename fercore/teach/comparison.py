"""What a comparison of runs tabulates: the settings that differ and the per-class metrics, as pandas frames.

The Compare page (through fercore.ui.tables) and the lab reports (fercore.report) show the same tables from here.
"""
from __future__ import annotations

import pandas as pd

from fercore.config import RunConfig
from fercore.store import Evaluation, Run


def run_column(run: Run) -> str:
    """How a run heads a column or a row of a comparison: '12 · lesson-lr-0.01'."""
    return f"{run.id} · {run.name}"


def config_diff_frame(runs: list[Run]) -> pd.DataFrame:
    """Settings that differ between the runs (rows) by run (columns); empty when all agree."""
    return config_frame(runs, only_differences=True)


def config_frame(runs: list[Run], only_differences: bool = False) -> pd.DataFrame:
    """Every setting (rows) by run (columns), or only those that differ (the run's name never counts)."""
    defaults = RunConfig().to_dict()
    configs = [r.config.to_dict() for r in runs]
    keys = [k for k in defaults if not only_differences or
            (k != "name" and any(_show(c[k]) != _show(configs[0][k]) for c in configs[1:]))]
    data = {run_column(r): [_show(c[k]) for k in keys] for r, c in zip(runs, configs)}
    return pd.DataFrame(data, index=pd.Index(keys, name="setting"), dtype=object)   # 28 stays 28, not 28.0


def per_class_frame(runs: list[Run], evaluations: dict[int, Evaluation] | None = None) -> pd.DataFrame:
    """Long format: run, class, precision, recall, f1, support (from `evaluations[run id]`, by default each
    run's scored evaluation: test when it has one, else val)."""
    rows = []
    for r in runs:
        ev = evaluations.get(r.id) if evaluations is not None else r.scored
        for cls, m in (ev.per_class if ev else {}).items():
            rows.append({"run": run_column(r), "class": cls, **{k: m.get(k) for k in
                                                                  ("precision", "recall", "f1", "support")}})
    return pd.DataFrame(rows, columns=["run", "class", "precision", "recall", "f1", "support"])


def _show(v):
    """Lists shown as text, so that they compare and display as one cell."""
    return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
