"""Runs: every run in a sortable, filterable table; select rows to compare, cancel or delete them;
live curves of the runs training now; the diagnosis and details of one run; share runs as files."""
from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from fercore import fmt
from fercore.jobs import worker
from fercore.store.entities import RunStatus
from fercore.ui import figures, state, tables

state.require_app(__file__)
st.title("Runs")
store = state.get_store()
runs = store.list_runs()


@st.fragment(run_every=2)
def training_now() -> None:
    running = store.list_runs(status=RunStatus.RUNNING)
    if not running:
        return
    st.subheader("Training now")
    for r in running:
        p = r.progress or {}
        epochs = p.get("epochs") or r.config.epochs or 1
        done = (max(p.get("epoch", 1), 1) - 1 + p.get("batch", 0) / max(p.get("batches", 1), 1)) / epochs
        st.progress(min(max(done, 0.0), 1.0), text=f"{r.name}: epoch {p.get('epoch', '-')}/{epochs}, "
                                                   f"about {fmt.duration(p.get('eta_s'))} left")
        eps = store.epochs(r.id)
        if eps:
            a, b = st.columns(2)
            a.plotly_chart(figures.learning_curves([(r.name, eps)], "loss", height=240), key=f"live-loss-{r.id}")
            b.plotly_chart(figures.learning_curves([(r.name, eps)], "acc", height=240), key=f"live-acc-{r.id}")


if not runs:
    st.info("No runs yet. Queue one on the Train page, or start a lesson on the Lessons page.")
    st.stop()

# --- the table --------------------------------------------------------------------------------------------
df = tables.runs_frame(runs)
f1, f2, f3, f4 = st.columns([2, 2, 2, 3])
statuses = f1.multiselect("Status", sorted(df["status"].unique()), placeholder="any status")
datasets = f2.multiselect("Dataset", sorted(df["dataset"].dropna().unique()), placeholder="any dataset")
archs = f3.multiselect("Architecture", sorted(df["arch"].dropna().unique()), placeholder="any architecture")
text = f4.text_input("Name or group contains", placeholder="e.g. lesson-lr")
view = tables.filter_runs(df, statuses, datasets, archs, text).reset_index(drop=True)
st.caption(f"{len(view)} of {len(df)} runs. Click a column header to sort; tick rows to select them.")
# A selection is a list of row positions: the table gets a new key whenever its rows change (a filter, a delete,
# a run queued by someone else), so that a selection never silently points at a different run.
table_key = f"runs_table-{hash(tuple(view['id']))}"
event = st.dataframe(tables.as_points(view, tables.ACCURACY_COLUMNS), key=table_key, on_select="rerun",
                     selection_mode="multi-row", hide_index=True,
                     column_config={**tables.points_columns(),
                                    "min val loss": st.column_config.NumberColumn(format="%.4f"),
                                    "duration (s)": st.column_config.NumberColumn(format="%.0f s")})
rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
selected = [int(view.iloc[i]["id"]) for i in rows if i < len(view)]
by_id = {r.id: r for r in runs}

# --- actions on the selection ---------------------------------------------------------------------------
a, b, c = st.columns([2, 3, 2])
if a.button(f"Compare selected ({len(selected)})", type="primary", disabled=not selected):
    st.session_state["compare_ids"] = selected[:8]
    st.switch_page("pages/compare.py", query_params={"runs": ",".join(map(str, selected[:8]))})
allowed = state.may_manage_runs()
with b:
    sure = st.checkbox(f"Yes, delete the {len(selected)} selected run(s) and their files", key=f"sure-{table_key}",
                       disabled=not selected or not allowed)
    if st.button("Delete", disabled=not (selected and sure and allowed)):
        busy = [by_id[i].name for i in selected if by_id[i].status == RunStatus.RUNNING]
        if busy:
            st.warning(f"{', '.join(busy)} {'is' if len(busy) == 1 else 'are'} training; cancel first, then delete.")
        else:
            with state.shown_errors("Deleting runs"):
                for rid in selected:
                    store.delete_run(rid)
                st.rerun()
active = [i for i in selected if by_id[i].status.active]
if c.button(f"Cancel selected ({len(active)})", disabled=not (active and allowed)):
    with state.shown_errors("Cancelling runs"):
        worker.cancel_runs(store, active)
        st.rerun()
if not allowed:
    st.caption(state.LOCKED_NOTE)

training_now()

# --- one run in detail --------------------------------------------------------------------------------
st.subheader("Diagnosis")
choices = selected or [int(i) for i in view["id"]]
if choices:
    rid = st.selectbox("Run", choices, format_func=lambda i: fmt.run_label(by_id[i]), key="diagnose_run")
    run = store.get_run(rid, epochs=True)
    if run.error:
        st.error(f"{run.name} {run.status}: {run.error}")
    with state.shown_errors("The diagnosis"):
        from fercore.teach.diagnosis import diagnose
        findings = diagnose(run)
        icons = {"error": ":material/error:", "warning": ":material/warning:", "info": ":material/info:"}
        for f in findings:
            st.markdown(f"{icons.get(f['severity'], ':material/info:')} **{f['kind'].replace('_', ' ')}**: "
                        f"{f['message']}")
        if not findings:
            st.success("Nothing unusual found in this run's curves, gradients and confusion matrix.")
    with st.expander("Config, timing and files"):
        st.write(f"Device {run.device or '-'}, {run.n_params or '-'} parameters, "
                 f"{fmt.duration(run.duration_s)}, created {run.created_at}.")
        st.json(run.config.to_dict(), expanded=False)

# --- sharing runs between machines ---------------------------------------------------------------------
with st.expander("Share a run as a file (export / import)"):
    finished = [r for r in runs if r.status == RunStatus.FINISHED and r.checkpoint]
    if finished:
        pick = st.selectbox("Finished run to export", [r.id for r in finished],
                            format_func=lambda i: fmt.run_label(by_id[i]))
        if st.button("Prepare the run file"):
            with state.shown_errors("Exporting the run"):
                from fercore.jobs.runfile import export_run
                with tempfile.TemporaryDirectory() as tmp:
                    path = export_run(store, pick, Path(tmp) / f"{by_id[pick].name}.fer.pt")
                    st.session_state["export_file"] = (path.name, path.read_bytes())
        if st.session_state.get("export_file"):
            name, data = st.session_state["export_file"]
            st.download_button(f"Download {name}", data, file_name=name, mime="application/octet-stream")
    up = st.file_uploader("Import a run file (.pt) someone exported", type=["pt"], key="run_import")
    if up is not None and st.button("Import it"):
        with state.shown_errors("Importing the run"):
            from fercore.jobs.runfile import import_run
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "upload.fer.pt"
                path.write_bytes(up.getvalue())
                new = import_run(store, path, name=Path(up.name).name.split(".")[0] or None)
            st.success(f"Imported run {new.id} ({new.name}).")
