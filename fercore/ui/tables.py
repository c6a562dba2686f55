"""pandas frames of runs and comparisons, as the Runs and Compare pages show and export them."""
from __future__ import annotations

import pandas as pd

from fercore.config import RunConfig
from fercore.store import Evaluation, Run

# Run-table columns: the best/last/min of each metric, not just the last value.
# "accuracy" is the accuracy of a run (Run.accuracy: its chosen checkpoint on val, with its TTA), the one
# number every table, chip and title shows; the per-epoch best/last val accuracy are without TTA.
RUN_COLUMNS = ["id", "name", "status", "owner", "dataset", "arch", "transfer", "classes", "accuracy", "test acc",
               "best val acc", "last val acc", "min val loss", "epochs", "duration (s)", "device", "group", "created"]


# owners that are not people who signed in
OWNER_NAMES = {"local": "you", "cli": "command line", "system": "FER Lab", "instructor": "instructor"}


def owner_name(owner: str, names: dict | None = None) -> str:
    return (names or {}).get(owner) or OWNER_NAMES.get(owner, owner)


def runs_frame(runs: list[Run], owners: dict | None = None) -> pd.DataFrame:
    """`owners`: user id -> display name (RunStore.user_names())."""
    rows = []
    for r in runs:
        cfg, s = r.config, r.summary
        rows.append({
            "id": r.id, "name": r.name, "owner": owner_name(r.owner, owners), "status": str(r.status),
            "dataset": r.dataset or cfg.data,
            "arch": cfg.arch, "transfer": cfg.transfer, "classes": ", ".join(cfg.classes) or "all",
            "accuracy": r.accuracy, "test acc": r.test_accuracy,
            "best val acc": s.get("best_val_acc"), "last val acc": s.get("last_val_acc"),
            "min val loss": s.get("min_val_loss"), "epochs": s.get("epochs_done", 0), "duration (s)": r.duration_s,
            "device": r.device or "", "group": r.group_name or "", "created": r.created_at,
        })
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    numeric = ["accuracy", "best val acc", "last val acc", "min val loss", "test acc", "duration (s)"]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    return df


def as_points(df: pd.DataFrame, columns) -> pd.DataFrame:
    """Accuracy-like columns (0..1) as percentage points, for display with `POINTS_FORMAT`."""
    out = df.copy()
    for c in columns:
        if c in out:
            out[c] = pd.to_numeric(out[c], errors="coerce") * 100
    return out


POINTS_FORMAT = "%.1f %%"
ACCURACY_COLUMNS = ("accuracy", "test acc", "best val acc", "last val acc")


def points_columns(columns=ACCURACY_COLUMNS) -> dict:
    """st.dataframe column_config showing `as_points` columns as '57.3 %'."""
    import streamlit as st
    return {c: st.column_config.NumberColumn(c, format=POINTS_FORMAT) for c in columns}


def filter_runs(df: pd.DataFrame, statuses=(), datasets=(), archs=(), text: str = "") -> pd.DataFrame:
    if statuses:
        df = df[df["status"].isin(statuses)]
    if datasets:
        df = df[df["dataset"].isin(datasets)]
    if archs:
        df = df[df["arch"].isin(archs)]
    if text.strip():
        t = text.strip().lower()
        hit = df["name"].str.lower().str.contains(t, regex=False) | df["group"].str.lower().str.contains(t, regex=False)
        df = df[hit]
    return df


def config_diff_frame(runs: list[Run]) -> pd.DataFrame:
    """Settings that differ between the runs (rows) by run (columns); empty when all agree."""
    defaults = RunConfig().to_dict()
    configs = [r.config.to_dict() for r in runs]
    keys = [k for k in defaults if k != "name" and any(_show(c[k]) != _show(configs[0][k]) for c in configs[1:])]
    data = {f"{r.id} · {r.name}": [_show(c[k]) for k in keys] for r, c in zip(runs, configs)}
    return pd.DataFrame(data, index=pd.Index(keys, name="setting"))


def per_class_frame(runs: list[Run], evaluations: dict[int, Evaluation] | None = None) -> pd.DataFrame:
    """Long format: run, class, precision, recall, f1, support (from `evaluations[run id]`, by default each
    run's scored evaluation: test when it has one, else val)."""
    rows = []
    for r in runs:
        ev = evaluations.get(r.id) if evaluations is not None else r.scored
        for cls, m in (ev.per_class if ev else {}).items():
            rows.append({"run": f"{r.id} · {r.name}", "class": cls, **{k: m.get(k) for k in
                                                                            ("precision", "recall", "f1", "support")}})
    return pd.DataFrame(rows, columns=["run", "class", "precision", "recall", "f1", "support"])


def comparison_csv(runs: list[Run]) -> str:
    """One row per run: metrics, every differing setting, per-class F1: what a report table needs."""
    base = runs_frame(runs).set_index("id")
    diff = config_diff_frame(runs).T
    diff.index = [r.id for r in runs]
    f1 = {r.id: {f"f1 {c}": m.get("f1") for c, m in (r.scored.per_class if r.scored else {}).items()}
          for r in runs}
    out = base.join(diff.add_prefix("config "), how="left").join(pd.DataFrame.from_dict(f1, orient="index"),
                                                               how="left")
    return out.reset_index(names="id").to_csv(index=False)


def _show(v):
    """Lists shown as text, so that they compare and display as one cell."""
    return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
