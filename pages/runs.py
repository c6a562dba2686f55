"""Runs: every run in a sortable, filterable table; select rows to compare, cancel or delete them;
live curves of the runs training now; the diagnosis and details of one run; share runs as files."""
from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from fercore import charts, fmt
from fercore.auth import Action, may, safe_name
from fercore.jobs import policy, spawn
from fercore.store.entities import RunStatus
from fercore.ui import signin, state, tables
from fercore.ui.draw import chart
from fercore.ui.report_buttons import report_buttons

state.require_app(__file__)
st.title("Runs")
store = state.get_store()
user = signin.user()
runs = store.list_runs()   # (the live table and the detail below re-read the store themselves)


@st.fragment(run_every=2)
def training_now() -> None:
    running = store.list_runs(status=RunStatus.RUNNING)
    if not running:
        return
    st.subheader("Training now")
    for r in running:
        done, text = fmt.run_progress(r)
        st.progress(done, text=f"{fmt.plain(r.name)}: {text}")
        eps = store.epochs(r.id)
        if eps:
            a, b = st.columns(2)
            chart(charts.learning_curves([(r.name, eps)], "loss", chart_height=240), f"live-loss-{r.id}", a)
            chart(charts.learning_curves([(r.name, eps)], "acc", chart_height=240), f"live-acc-{r.id}", b)


if not runs:
    st.info("No runs yet. Queue one on the Train page, or start a lesson on the Lessons page.")
    st.stop()

# --- the table --------------------------------------------------------------------------------------------
TABLE, TABLE_IDS = "runs_table", "_runs_table_ids"   # the table's widget key; the run ids of its rows last drawn
GO_COMPARE = "_runs_go_compare"                      # the runs whose Compare button was pressed
if st.session_state.get(GO_COMPARE):
    st.switch_page("pages/compare.py", query_params={"runs": ",".join(map(str, st.session_state.pop(GO_COMPARE)))})


def _ticked_rows(ids: list[int]) -> None:
    """A selection is a list of row positions, and positions move when a run is queued (the newest is on top), one
    is deleted or a filter changes: move the ticks along, so the same runs stay ticked and none silently points at
    another run."""
    before = st.session_state.get(TABLE_IDS)
    current = st.session_state.get(TABLE)
    rows = list(current["selection"]["rows"]) if current else []
    if before is not None and before != ids and rows:
        kept = [before[i] for i in rows if i < len(before)]
        st.session_state[TABLE] = {"selection": {"rows": [ids.index(i) for i in kept if i in ids], "columns": []}}
    st.session_state[TABLE_IDS] = ids


def _options(key: str, column) -> list:
    """A filter's choices: the values in the table, and those picked before (the table changes under them)."""
    return sorted(set(column.dropna()) | set(st.session_state.get(key) or []))


@st.fragment(run_every=3)
def runs_table() -> None:
    """Re-read from the store every 3 s, so runs that start or end show up by themselves; ticking a row reruns
    this part only."""
    runs = store.list_runs()
    if state.active_runs_changed(runs):   # a run started or ended: the whole app reruns, so that the sidebar's
        st.rerun()                        # queue line is read with this table, not up to 5 s before it
    df = tables.runs_frame(runs, store.user_names())
    if st.toggle("Mine only", key="runs_mine", help="Only the runs you queued or imported."):
        df = df[[r.owner == user.id for r in runs]]
    f1, f2, f3, f4 = st.columns([2, 2, 2, 3])
    statuses = f1.multiselect("Status", [str(s) for s in RunStatus], placeholder="any status", key="runs_status")
    datasets = f2.multiselect("Dataset", _options("runs_dataset", df["dataset"]), placeholder="any dataset",
                              key="runs_dataset")
    archs = f3.multiselect("Architecture", _options("runs_arch", df["arch"]), placeholder="any architecture",
                           key="runs_arch")
    text = f4.text_input("Name or group contains", placeholder="e.g. lesson-lr", key="runs_text")
    view = tables.filter_runs(df, statuses, datasets, archs, text).reset_index(drop=True)
    ids = [int(i) for i in view["id"]]
    st.caption(f"{len(view)} of {len(df)} runs. Click a column header to sort; tick rows to select them.")
    _ticked_rows(ids)
    event = st.dataframe(tables.as_points(view, tables.ACCURACY_COLUMNS), key=TABLE, on_select="rerun",
                         selection_mode="multi-row", hide_index=True, placeholder="-",
                         column_config={**tables.points_columns(),
                                        "min val loss": st.column_config.NumberColumn(format="%.4f"),
                                        "duration (s)": st.column_config.NumberColumn(format="%.0f s")})
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    selection_actions([ids[i] for i in rows if i < len(ids)], {r.id: r for r in runs})


def selection_actions(selected: list[int], by_id: dict) -> None:
    """Compare, delete or cancel the ticked runs."""
    a, b, c = st.columns([2, 3, 2])
    if a.button(f"Compare selected ({len(selected)})", type="primary", disabled=not selected):
        # Leave from a full run of the page, not from this fragment's run: a page switched to from inside a
        # fragment is drawn and then blanked by the browser (Streamlit 1.67; tests/test_walk.py walks it).
        st.session_state["compare_ids"] = st.session_state[GO_COMPARE] = selected[:8]
        st.rerun(scope="app")
    others = [by_id[i].name for i in selected if not may(user, Action.DELETE, by_id[i].owner)]
    allowed = not others   # the store refuses the others anyway (fercore.auth): no control for them here
    with b:   # the confirmation is tied to the runs ticked: ticking others asks again
        sure = st.checkbox(f"Yes, move the {len(selected)} selected run(s) to the trash",
                           key=f"sure-{'-'.join(map(str, selected))}", disabled=not selected or not allowed)
        if st.button("Delete", disabled=not (selected and sure and allowed)):
            busy = [by_id[i].name for i in selected if by_id[i].status == RunStatus.RUNNING]
            if busy:
                st.warning(f"{', '.join(busy)} {'is' if len(busy) == 1 else 'are'} training; cancel first, then "
                           "delete.")
            else:
                with state.shown_errors("Deleting runs"):
                    for rid in selected:
                        store.delete_run(rid, by=user)
                    st.rerun()
    active = [i for i in selected if by_id[i].status.active]
    if c.button(f"Cancel selected ({len(active)})", disabled=not (active and allowed)):
        with state.shown_errors("Cancelling runs"):
            policy.cancel_runs(store, active, by=user)
            st.rerun(scope="fragment")
    if not allowed:
        st.caption(f"{len(others)} of the ticked runs belong to someone else: you may cancel and delete your own "
                   "runs only.")


runs_table()
training_now()


# --- one run in detail --------------------------------------------------------------------------------
@st.fragment
def run_detail() -> None:
    """The diagnosis, curves and settings of one run; picking another reruns this part only."""
    st.subheader("One run in detail")
    by_id = {r.id: r for r in store.list_runs()}
    if not by_id:
        return
    if st.session_state.get("diagnose_run") not in by_id:   # first visit, or its run was deleted: the newest ended
        st.session_state["diagnose_run"] = next((i for i, r in by_id.items() if r.status.final), next(iter(by_id)))
    rid = st.selectbox("Run", list(by_id), format_func=lambda i: fmt.run_label(by_id[i]), key="diagnose_run")
    run = store.get_run(rid, epochs=True)
    if run.scored:
        st.markdown(f"**Accuracy: {fmt.accuracy_label(run)}** (its chosen checkpoint, tta {run.scored.tta}"
                    + (f", {run.scored.precision}" if run.scored.precision else "") + ")")
    if run.error:
        st.error(f"{fmt.plain(run.name)} {run.status}: {fmt.plain(run.error)}")
    if run.budget_stopped:
        st.info("Stopped at the class's time budget for one run; its best checkpoint so far was kept.",
                icon=":material/timer:")
    if policy.can_resume(store, run) and may(user, Action.RESUME, run.owner) and st.button(
            f"Resume {fmt.plain(run.name)} from its last finished epoch", key="resume_run"):
        with state.shown_errors("Resuming the run"):
            policy.resume_run(store, run.id, by=user)
            st.toast(f"{fmt.plain(run.name)} queued to resume. {spawn.ensure_worker(store).sentence()}")
            st.rerun()
    diagnosis(run)
    if run.epochs and run.status != RunStatus.RUNNING:   # a running run's curves are live above
        a, b = st.columns(2)
        chart(charts.learning_curves([(run.name, run.epochs)], "loss", chart_height=280), "detail-loss", a)
        chart(charts.learning_curves([(run.name, run.epochs)], "acc", chart_height=280), "detail-acc", b)
        st.caption("Dashed: train. Solid: validation.")
    with st.expander("Config, timing and files"):
        st.write(f"Device {run.device or '-'}, {run.n_params or '-'} parameters, "
                 f"{fmt.duration(run.duration_s)}, created {run.created_at}.")
        st.json(run.config.to_dict(), expanded=False)
    if run.epochs:
        report_buttons(store, [run.id], key="run")


def diagnosis(run) -> None:
    """What the run's curves, gradients and confusion matrix say; nothing claimed before there is something."""
    if not run.epochs:
        if run.status.active:
            st.caption(f"{fmt.plain(run.name)} is {run.status}: its diagnosis comes with its first epoch.")
        return
    with state.shown_errors("The diagnosis"):
        from fercore.teach.diagnosis import diagnose
        findings = diagnose(run)
        if run.scored:
            st.caption(f"Read from the run's {run.scored.split} evaluation and its curves.")
        icons = {"error": ":material/error:", "warning": ":material/warning:", "info": ":material/info:"}
        for f in findings:
            st.markdown(f"{icons.get(f['severity'], ':material/info:')} **{f['kind'].replace('_', ' ')}**: "
                        f"{f['message']}")
        if not findings and run.status.active:
            st.caption(f"Nothing unusual so far; {fmt.plain(run.name)} is still {run.status}.")
        elif not findings:
            st.success("Nothing unusual found in this run's curves, gradients and confusion matrix.")


run_detail()

# --- sharing runs between machines ---------------------------------------------------------------------
with st.expander("Share a run as a file (export / import)"):
    finished = {r.id: r for r in runs if r.status == RunStatus.FINISHED and r.checkpoint}
    if finished:
        pick = st.selectbox("Finished run to export", list(finished), format_func=lambda i: fmt.run_label(finished[i]))
        if st.button("Prepare the run file"):
            with state.shown_errors("Exporting the run"):
                from fercore.jobs.runfile import export_run
                with tempfile.TemporaryDirectory() as tmp:
                    path = export_run(store, pick, Path(tmp) / f"{finished[pick].name}.fer.pt")
                    st.session_state["export_file"] = (path.name, path.read_bytes())
        if st.session_state.get("export_file"):
            name, data = st.session_state["export_file"]
            st.download_button(f"Download {fmt.plain(name)}", data, file_name=name, mime="application/octet-stream")
    up = st.file_uploader("Import a run file (.pt) someone exported", type=["pt"], key="run_import")
    if up is not None and st.button("Import it"):
        with state.shown_errors("Importing the run"):
            from fercore.jobs.runfile import import_run
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "upload.fer.pt"
                path.write_bytes(up.getvalue())
                new = import_run(store, path, name=safe_name(Path(up.name).name.split(".")[0], "run"), by=user)
            st.success(f"Imported run {new.id} ({fmt.plain(new.name)}).")
