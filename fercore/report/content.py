"""What a report says, gathered from the store: everything is read, nothing is trained or re-evaluated.

`build_report(store, runs, lesson=...)` returns a `Report`: plain data, charts as Plotly figures (from
fercore.figures: the same data, colours and scales as the pages' ECharts charts) and tables as pandas frames
(fercore.teach.comparison, as Compare shows them), which fercore.report.html lays out
and fercore.report.export writes as files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
import plotly.graph_objects as go

import fercore
from fercore import figures, fmt
from fercore.errors import UsageError
from fercore.store import Evaluation, Run
from fercore.store.entities import RunStatus
from fercore.teach.comparison import config_diff_frame, config_frame, per_class_frame, run_column
from fercore.teach.diagnosis import diagnose
from fercore.teach.ensemble import ensemble

MAX_RUNS = 8   # as on Compare: beyond eight, colours repeat and the charts stop being readable


@dataclass
class Chart:
    slug: str            # a file name for --figures, and the element id in the HTML
    title: str
    figure: go.Figure
    caption: str = ""


@dataclass
class Table:
    slug: str
    title: str
    frame: pd.DataFrame
    index: bool = False   # whether the frame's index is a column worth showing (the config tables' settings)


@dataclass
class Report:
    title: str
    created: str
    makers: list[str]
    version: str
    runs: list[Run]
    split: str                                  # the split every comparison chart reads
    datasets: list[dict]
    tables: dict[str, Table]
    sections: dict[str, list[Chart]]            # section title -> its charts, in order
    ensemble: dict
    diagnosis: dict[str, list[dict] | None]     # run column -> findings (None: no epoch to read yet)
    lesson: dict | None = None
    gallery: list[dict] = field(default_factory=list)
    reproduce: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def charts(self) -> list[Chart]:
        return [c for charts in self.sections.values() for c in charts]


def build_report(store, run_refs=(), lesson: str | None = None, gallery: bool = True) -> Report:
    """A report of the runs named (ids or names) and/or of a lesson's run group (its group name, as the Lessons
    page shows it): the lesson's question, what to watch for and its finding are added."""
    from fercore.report.gallery import mistakes_gallery
    from fercore.report.reproduce import reproduce_commands
    runs = _runs(store, run_refs, lesson)
    lesson = lesson or _common_lesson(runs)
    about = lesson_section(store, lesson) if lesson else None
    split = "test" if all(r.test for r in runs) else "val"
    evals = {r.id: store.evaluation(r.id, split, full=True) for r in runs}
    report = Report(
        title=f"Lesson: {about['question']}" if about else " vs ".join(r.name for r in runs),
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        makers=sorted({o for r in runs if (o := getattr(r, "owner", None))}), version=fercore.__version__,
        runs=runs, split=split, datasets=datasets_section(store, runs), tables=_tables(runs, evals),
        sections=_sections(runs, evals), ensemble=ensemble(runs, evals, split),
        diagnosis={run_column(r): diagnose(r) if r.epochs else None for r in runs}, lesson=about,
        reproduce=reproduce_commands(store, runs))
    report.gallery = mistakes_gallery(store, runs, evals, split) if gallery else []
    report.notes = [f"{r.label} is {r.status}: its numbers are those of the epochs it finished."
                    for r in runs if r.status != RunStatus.FINISHED]
    return report


def _runs(store, run_refs, lesson: str | None) -> list[Run]:
    refs = list(dict.fromkeys(store.resolve(r) for r in run_refs))
    if lesson:
        from fercore.teach.lessons import lesson_status
        refs += [r.id for r in lesson_status(store, lesson)["runs"] if r.id not in refs]
    if not refs:
        raise UsageError("Name at least one run (id or name) or a lesson's run group (--lesson).")
    if len(refs) > MAX_RUNS:
        raise UsageError(f"A report compares at most {MAX_RUNS} runs, not {len(refs)}; pick the ones that matter.")
    return [store.get_run(i, epochs=True) for i in refs]


def _common_lesson(runs: list[Run]) -> str | None:
    """The lesson run group all the runs belong to, if they are one lesson's runs."""
    groups = {(r.group_kind, r.group_name) for r in runs}
    kind, name = next(iter(groups))
    return name if len(groups) == 1 and kind == "lesson" and name else None


# --- the dataset ----------------------------------------------------------------------------------------------
def datasets_section(store, runs: list[Run]) -> list[dict]:
    """Each dataset the runs trained on: its fingerprint, split modes, class counts per split and the audit."""
    out = []
    for name in dict.fromkeys(r.dataset or r.config.data for r in runs):
        mine = [r for r in runs if (r.dataset or r.config.data) == name]
        info = store.dataset_info(name)
        d = {"name": name, "fingerprint": mine[0].dataset_fingerprint, "runs": [r.label for r in mine],
             "split_modes": sorted({_split_mode(r) for r in mine}), "info": info, "counts": None,
             "audit": "", "meaning": "", "warnings": []}
        if info is None:
            d["warnings"].append(f"The dataset {name!r} is not in this database, so its class counts and audit "
                                 "cannot be shown (the runs may have been imported from files).")
        else:
            d["counts"] = pd.DataFrame(info.class_counts).fillna(0).astype(int)
            d["counts"].index.name = "class"
            if info.audit.get("duplicates_within") is not None:
                from fercore.data.audit import audit_sentence
                d["audit"] = audit_sentence(info.audit)
                d["meaning"] = audit_meaning(info.audit)
            stale = [r.label for r in mine if r.dataset_fingerprint and r.dataset_fingerprint != info.fingerprint]
            if stale:
                d["warnings"].append(f"The dataset named {name!r} here (fingerprint {info.fingerprint}) is not the "
                                     f"data {', '.join(stale)} trained on (fingerprint {mine[0].dataset_fingerprint}).")
        out.append(d)
    return out


def _split_mode(run: Run) -> str:
    c = run.config
    if c.split == "random":
        return f"random {'/'.join(f'{x:g}' for x in c.split_ratios)} (seed {c.split_seed})"
    if c.split == "val_from_train":
        return f"val_from_train ({c.val_fraction:g} of train as val, seed {c.split_seed})"
    return "usage (the source's own splits)"


def audit_meaning(audit: dict) -> str:
    """One sentence on what the audit's duplicates mean for the numbers in the report."""
    across = sum(d.get("n", 0) for d in (audit.get("duplicates_across") or {}).values())
    if audit.get("deduplicated"):
        return (f"The dataset was imported with --dedupe: the {across} val/test images that copy a training image "
                "(and blank images) were dropped, so val and test accuracy count only faces the networks never "
                "trained on.") if across else "The dataset was imported with --dedupe; no image repeats across splits."
    if across:
        return (f"{across} val/test images are pixel-for-pixel copies of training images: a network scores them "
                "from memory, so val/test accuracy here is somewhat inflated (import with --dedupe to drop them).")
    return "No image repeats across splits, so val and test accuracy count only faces the networks never saw."


# --- tables and charts ----------------------------------------------------------------------------------------
def _tables(runs: list[Run], evals: dict[int, Evaluation | None]) -> dict[str, Table]:
    rows = []
    for r in runs:
        ev = r.scored
        macro = ev.macro_f1 if ev and ev.macro_f1 is not None else _macro_f1(ev)
        rows.append({"run": run_column(r), **({"owner": r.owner or "-"} if hasattr(r, "owner") else {}),
                     "status": str(r.status), "dataset": r.dataset or r.config.data, "device": r.device or "-",
                     "time": fmt.duration(r.duration_s), "parameters": f"{r.n_params:,}" if r.n_params else "-",
                     "accuracy": fmt.accuracy_label(r),
                     "macro-F1": f"{fmt.pct(macro)} ({ev.split})" if ev else "-",
                     "epochs": r.summary.get("epochs_done", len(r.epochs or ()))})
    per_class = per_class_frame([r for r in runs if evals.get(r.id)], evals)
    return {"runs": Table("runs", "Runs", pd.DataFrame(rows)),
            "config_diff": Table("config-differences", "Settings that differ", config_diff_frame(runs), index=True),
            "config": Table("config-all", "Every setting", config_frame(runs), index=True),
            "per_class": Table("per-class", "Per-class precision, recall and F1", per_class)}


def _macro_f1(ev: Evaluation | None) -> float | None:
    f1 = [m.get("f1") for m in (ev.per_class if ev else {}).values() if m.get("f1") is not None]
    return sum(f1) / len(f1) if f1 else None


def _sections(runs: list[Run], evals: dict[int, Evaluation | None]) -> dict[str, list[Chart]]:
    series = [(run_column(r), list(r.epochs)) for r in runs if r.epochs]
    curves = [Chart(f"curves-{m}", f"Learning curves: {name}", figures.learning_curves(series, m),
                    "Dashed: train. Solid: validation. One colour per run.") for m, name in
              (("loss", "loss"), ("acc", "accuracy"))] if series else []
    with_grads = [r for r in runs if any(e.get("grad_norms") for e in r.epochs or ())]
    shared = figures.gradient_norm_range([list(r.epochs) for r in with_grads])
    grads = [Chart(f"gradients-{r.id}", f"Gradient norms: {run_column(r)}",
                   figures.gradient_norms(list(r.epochs), run_column(r), shared),
                   "Per-layer weight-gradient norms, first layers light, last dark, one log scale for all runs.")
             for r in with_grads]
    evaluated = [r for r in runs if evals.get(r.id)]
    confusion = []
    for normal, kind in ((False, "counts"), (True, "row-normalised")):
        confusion += [Chart(f"confusion-{kind}-{r.id}", f"Confusion ({kind}): {run_column(r)}",
                            figures.confusion_heatmap(evals[r.id].confusion, evals[r.id].classes, normal,
                                                      f"{run_column(r)}: {fmt.pct(evals[r.id].accuracy)}"))
                      for r in evaluated]
    confusion += _differences(evaluated, evals)
    frame = per_class_frame(evaluated, evals)
    per_class = [Chart(f"per-class-{m}", f"Per-class {m}", figures.per_class_bars(frame, m))
                 for m in ("f1", "precision", "recall")] if not frame.empty else []
    return {"Learning curves": curves, "Gradient norms": grads, "Confusion matrices": confusion,
            "Per class": per_class}


def _differences(evaluated: list[Run], evals: dict) -> list[Chart]:
    """Each run against the first of the same classes: row-normalised B minus A."""
    if not evaluated:
        return []
    base = evaluated[0]
    same = [r for r in evaluated[1:] if evals[r.id].classes == evals[base.id].classes]
    return [Chart(f"confusion-difference-{base.id}-{r.id}", f"Difference: {run_column(r)} minus {run_column(base)}",
                  figures.confusion_difference(evals[base.id].confusion, evals[r.id].confusion,
                                               evals[base.id].classes, f"{run_column(r)} minus {run_column(base)}"),
                  "Row-normalised; blue where the second run puts more of a true class, red where fewer.")
            for r in same]


# --- the lesson ---------------------------------------------------------------------------------------------
def lesson_section(store, group: str) -> dict:
    """The lesson's question, what to watch for (and why), and its finding from these runs' numbers."""
    from fercore.teach.lessons import get_lesson, lesson_status
    status = lesson_status(store, group)
    lesson = get_lesson(status["lesson"])
    watch, _, why = lesson.explanation.partition("\n\n")
    return {"group": group, "name": lesson.name, "question": lesson.title, "watch": watch, "why": why,
            "done": status["done"], "finding": lesson_finding(status)}


def lesson_finding(status: dict) -> str | None:
    """The finding of a lesson, by the same rule as the Lessons page's summary (one adapter, so the rule has one
    home: fercore.teach.summaries through fercore.teach.lessons.lesson_status)."""
    return status["summary"] if status["done"] else None
