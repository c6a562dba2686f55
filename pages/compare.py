"""Compare: 2-8 runs side by side. Learning curves, config diff, confusion matrices and their
difference, per-class metrics, misclassified examples, gradient norms, an ensemble, diagnosis, CSV."""
from __future__ import annotations

import numpy as np
import streamlit as st

from fercore import figures, fmt
from fercore.teach.ensemble import ensemble
from fercore.ui import analysis, cached, state, tables
from fercore.ui.draw import chart
from fercore.ui.report_buttons import report_buttons

state.require_app(__file__)
st.title("Compare runs")
store = state.get_store()
all_runs = store.list_runs()
by_id = {r.id: r for r in all_runs}
if not all_runs:
    st.info("No runs yet. Train a few on the Train page or start a lesson, then compare them here.")
    st.stop()


def _ids(text) -> list[int]:
    parts = str(text or "").replace(" ", "").split(",")
    return [int(p) for p in parts if p.isdigit() and int(p) in by_id][:8]


# The selection arrives from the Runs or Lessons page as ?runs=1,2,3 (shareable) or in session state.
wanted = _ids(st.query_params.get("runs")) or [i for i in st.session_state.get("compare_ids", []) if i in by_id]
# (Streamlit drops a widget's state when its page is left: restore it from the plain copy or the link.)
if "compare_pick" not in st.session_state or st.session_state.get("_compare_applied") != wanted:
    st.session_state["compare_pick"] = wanted
ids = st.multiselect("Runs to compare (2-8)", list(by_id), key="compare_pick", max_selections=8,
                     format_func=lambda i: fmt.run_label(by_id[i]), placeholder="pick runs, or select them on Runs")
st.session_state["compare_ids"] = st.session_state["_compare_applied"] = ids
if ids:
    st.query_params["runs"] = ",".join(map(str, ids))   # a shareable link to this comparison
else:
    st.query_params.pop("runs", None)
if not ids:
    st.info("Pick two to eight runs above (or tick them in the Runs table and press Compare).")
    st.stop()
if len(ids) == 1:
    st.caption("One run picked: its own views are shown; pick another to compare.")

runs = [store.get_run(i, epochs=True) for i in ids]
labels = {r.id: f"{r.id} · {r.name}" for r in runs}
by_run = {r.id: r for r in runs}

st.table(tables.compare_table(runs))

# --- learning curves and config diff ---------------------------------------------------------------------
st.subheader("Learning curves")
smoothing = st.slider("Smoothing", 0.0, 0.9, 0.0, 0.1, help="Exponential moving average of each curve.")
series = [(labels[r.id], r.epochs) for r in runs if r.epochs]
if series:
    left, right = st.columns(2)
    chart(cached.learning_curves(runs, labels, "loss", smoothing), "curves-loss", left)
    chart(cached.learning_curves(runs, labels, "acc", smoothing), "curves-acc", right)
    st.caption("Dashed: train. Solid: validation. One colour per run.")
else:
    st.caption("No epochs recorded yet.")

st.subheader("What differs")
diff = tables.config_diff_frame(runs)
if diff.empty:
    st.caption("The configs are identical (only names differ)." if len(runs) > 1 else "")
else:
    st.table(diff.astype(str))

# --- detail views ------------------------------------------------------------------------------------------
VIEWS = ["Confusion", "Per class", "Mistakes", "Gradients", "Ensemble", "Diagnosis"]
view = st.segmented_control("Detail", VIEWS, default="Confusion", key="compare_view") or "Confusion"
# Runs trained on data without a test split (the shared FER2013 folder has train and PublicTest only) were
# evaluated on val alone: offer val then, and say which split every number comes from.
has_test = any(r.test for r in runs)   # get_run carries each run's test evaluation summary
split = st.radio("Evaluated on", ["test", "val"], index=0 if has_test else 1, horizontal=True,
                 key="compare_split", help="test: each run's held-out test split, evaluated once with its best "
                                           "checkpoint. val: the split checkpoints were chosen on (optimistic).")
evals = {r.id: store.evaluation(r.id, split, full=True) for r in runs}
tested = [r for r in runs if evals.get(r.id)]
NONE_EVALUATED = f"None of these runs has a {split} evaluation yet."


def confusion_view() -> None:
    if not tested:
        st.info(NONE_EVALUATED)
        return
    normal = st.radio("Show", ["row-normalised", "counts"], horizontal=True) == "row-normalised"
    cols = st.columns(2)
    for i, r in enumerate(tested):
        ev = evals[r.id]
        chart(cached.confusion_heatmap(r, ev, normal, f"{labels[r.id]}: {fmt.pct(ev.accuracy)} {ev.split}"),
              f"cm-{r.id}", cols[i % 2])
    same = [r for r in tested if evals[r.id].classes == evals[tested[0].id].classes]
    if len(same) >= 2:
        st.markdown("**Difference of two** (row-normalised, B minus A)")
        a, b = st.columns(2)
        ra = a.selectbox("A", [r.id for r in same], format_func=labels.get, index=0)
        rb = b.selectbox("B", [r.id for r in same], format_func=labels.get, index=1)
        chart(cached.confusion_difference(by_run[ra], evals[ra], by_run[rb], evals[rb],
                                          f"{labels[rb]} minus {labels[ra]}"), "cm-diff")


def per_class_view() -> None:
    frame = tables.per_class_frame(tested, evals)
    if frame.empty:
        st.info(NONE_EVALUATED)
        return
    metric = st.radio("Metric", ["f1", "precision", "recall"], horizontal=True)
    chart(cached.per_class_bars(tested, split, frame, metric), "per-class")
    metrics = ("precision", "recall", "f1")
    st.dataframe(tables.as_points(frame, metrics), hide_index=True, column_config=tables.points_columns(metrics))


def mistakes_view() -> None:
    if not tested:
        st.info(NONE_EVALUATED)
        return
    rid = st.selectbox("Run", [r.id for r in tested], format_func=labels.get, key="mistakes_run")
    run, ev = next(r for r in runs if r.id == rid), evals[rid]
    classes = ev.classes
    t0, p0 = analysis.most_confused_cell(ev.confusion)
    a, b = st.columns(2)
    true_c = a.selectbox("True class", classes, index=t0, key=f"mt-{rid}")
    pred_c = b.selectbox("Predicted as", classes, index=p0, key=f"mp-{rid}")
    idx = analysis.cell_indices(ev, classes.index(true_c), classes.index(pred_c))
    st.caption(f"{len(idx)} {split} image(s) of class {true_c} predicted as {pred_c}.")
    if not len(idx):
        return
    with state.shown_errors(f"Loading the {split} images"):
        images, labels_ = state.run_split_images(run, split)
        if len(images) != len(ev.targets) or not np.array_equal(labels_, np.asarray(ev.targets)):
            st.warning(f"The dataset's {split} images no longer match this run's stored predictions (the dataset was "
                       "re-imported or changed), so its mistakes cannot be shown.")
            return
        shown = idx[:60]
        st.image(analysis.mosaic(images[shown], columns=12), caption=f"the first {len(shown)} of {len(idx)}")


def gradients_view() -> None:
    with_grads = [r for r in runs if any(e.get("grad_norms") for e in r.epochs)]
    if not with_grads:
        st.info("No gradient norms recorded for these runs.")
        return
    cols = st.columns(2)
    shared = figures.gradient_norm_range([r.epochs for r in with_grads])   # one scale: heights compare across runs
    for i, r in enumerate(with_grads):
        chart(cached.gradient_norms(r, labels[r.id], shared), f"grad-{r.id}", cols[i % 2])
    st.caption("Per-layer weight-gradient norms, first layers light, last layers dark, on one log scale for all "
               "runs. Lines falling towards zero in the first layers mean vanishing gradients; a steep climb means "
               "exploding ones.")


def ensemble_view() -> None:
    res = ensemble(runs, evals, split)
    if "error" in res:
        st.warning(res["error"])
    else:
        best = max(res["individual"].values())
        st.metric(f"Ensemble {split} accuracy (averaged probabilities)", fmt.pct(res["accuracy"]),
                  delta=f"{(res['accuracy'] - best) * 100:+.1f} points vs the best member")
        st.write(", ".join(f"{labels[i]}: {fmt.pct(a)}" for i, a in res["individual"].items())
                 + f" on {res['n']} {split} images.")
    for rid, why in res["left_out"].items():
        st.caption(f"{labels[rid]} left out: {why}.")


def diagnosis_view() -> None:
    from fercore.teach.diagnosis import diagnose
    for r in runs:
        with st.expander(labels[r.id], expanded=len(runs) <= 3):
            if not r.epochs:   # nothing to read yet: claim nothing
                st.caption(f"No epochs yet ({r.status}).")
                continue
            with state.shown_errors("The diagnosis"):
                findings = diagnose(r)
                for f in findings:
                    st.markdown(f"- **{f['kind'].replace('_', ' ')}**: {f['message']}")
                if not findings:
                    st.caption("Nothing unusual so far." if r.status.active else "Nothing unusual found.")


RENDER = {"Confusion": confusion_view, "Per class": per_class_view, "Mistakes": mistakes_view,
          "Gradients": gradients_view, "Ensemble": ensemble_view, "Diagnosis": diagnosis_view}
with state.shown_errors(f"The {view} view"):
    RENDER[view]()

st.divider()
st.download_button("Download this comparison as CSV", tables.comparison_csv(runs), file_name="comparison.csv",
                   mime="text/csv")
report_buttons(store, ids, key="compare")
