"""pandas frames of runs and comparisons, as the Runs and Compare pages show and export them."""
from __future__ import annotations

import pandas as pd

from fercore.store import Run
from fercore.teach.comparison import config_diff_frame, per_class_frame

__all__ = ["config_diff_frame", "per_class_frame"]   # the Compare page's tables, shared with the reports

# Run-table columns: the best/last/min of each metric, not just the last value.
# "accuracy" is the accuracy of a run (Run.accuracy: its chosen checkpoint with its TTA, on test where the run has
# one, else on val), the one number every table, chip and title shows, and "scored on" says which split it is;
# "test acc" and "val acc" are both final evaluations; the per-epoch best/last val accuracy are without TTA.
RUN_COLUMNS = ["id", "name", "status", "owner", "dataset", "arch", "transfer", "classes", "accuracy", "scored on",
               "test acc", "val acc", "best val acc", "last val acc", "min val loss", "epochs", "duration (s)",
               "device",
               "group", "created"]


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
            "accuracy": r.accuracy, "scored on": r.accuracy_split or "", "test acc": r.test_accuracy,
            "val acc": r.val_accuracy,
            "best val acc": s.get("best_val_acc"), "last val acc": s.get("last_val_acc"),
            "min val loss": s.get("min_val_loss"), "epochs": s.get("epochs_done", 0), "duration (s)": r.duration_s,
            "device": r.device or "", "group": r.group_name or "", "created": r.created_at,
        })
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    numeric = ["accuracy", "best val acc", "last val acc", "min val loss", "test acc", "val acc", "duration (s)"]
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
ACCURACY_COLUMNS = ("accuracy", "test acc", "val acc", "best val acc", "last val acc")


def points_columns(columns=ACCURACY_COLUMNS) -> dict:
    """st.dataframe column_config showing `as_points` columns as '57.3 %'."""
    import streamlit as st
    return {c: st.column_config.NumberColumn(c, format=POINTS_FORMAT) for c in columns}


def compare_table(runs: list[Run]):
    """The Compare page's summary of its 2-8 runs as a styled frame for st.table: plain HTML the page draws at once,
    where st.dataframe's grid costs a fresh tab about 0.3 s of loading before its first chart (issue 25)."""
    df = as_points(runs_frame(runs).drop(columns=["created", "device", "group"]), ACCURACY_COLUMNS)
    formats = {**{c: "{:.1f}\u00a0%" for c in ACCURACY_COLUMNS}, "min val loss": "{:.4f}",
               "duration (s)": "{:.0f}\u00a0s"}   # (no-break spaces: a number never wraps from its unit)
    return df.style.format(formats, na_rep="-").hide(axis="index")


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
