"""Instructor: who is signed in, each student's runs and share of the queue, the class limits, the trash, the
audit log, the folders the lab may read, the workers, and the starter model. Students never see this page in
the navigation, and fercore refuses them each of its actions too."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from fercore import fmt
from fercore.auth import Action, Forbidden, Limits, require
from fercore.jobs import liveness
from fercore.store.entities import RunStatus
from fercore.ui import signin, state, tables

state.require_app(__file__)
st.title("Instructor")
store = state.get_store()
user = signin.user()
try:
    require(user, Action.SEE_CLASS)
except Forbidden as e:
    st.error(str(e))
    st.stop()
names = store.user_names()

# --- the class ------------------------------------------------------------------------------------------------
st.subheader("Who is here")
users = store.list_users()
if users:
    st.dataframe(pd.DataFrame(users).rename(columns={"last_seen": "last seen (UTC)"}), hide_index=True)
else:
    st.caption("Nobody has signed in yet" + (" (personal mode: nobody needs to)." if
                                             state.class_settings().mode == "personal" else "."))

st.subheader("Runs and share of the queue")
by_owner = store.runs_by_owner()
waiting = sum(c.get(RunStatus.QUEUED, 0) + c.get(RunStatus.RUNNING, 0) for c in by_owner.values()) or 1
st.dataframe(pd.DataFrame([{"owner": tables.owner_name(o, names), **{str(s): c.get(s, 0) for s in RunStatus},
                            "share of the queue": 100 * (c.get(RunStatus.QUEUED, 0) + c.get(RunStatus.RUNNING, 0))
                            / waiting} for o, c in sorted(by_owner.items())]),
             hide_index=True, column_config={"share of the queue": st.column_config.NumberColumn(format="%.0f %%")})
st.caption("Workers take the next run in turns across students: whoever has the least running and finished in the "
           "last hour goes first; the instructor's runs go before all.")

# --- limits ---------------------------------------------------------------------------------------------------
st.subheader("Limits for students")
limits = store.limits()
with st.form("limits"):
    cols = st.columns(3)
    values = {}
    for i, (key, label) in enumerate(Limits.LABELS.items()):
        current = getattr(limits, key)
        values[key] = cols[i % 3].number_input(label.capitalize(), min_value=1 if key != "run_minutes" else 0.5,
                                               value=current, step=1 if key != "run_minutes" else 5.0, key=f"lim_{key}")
    if st.form_submit_button("Save the limits", type="primary"):
        with state.shown_errors("Saving the limits"):
            store.set_limits(Limits.from_dict(values), by=user)
            st.success("Saved; they apply to what is queued from now on.")

# --- the trash ------------------------------------------------------------------------------------------------
st.subheader("Trash")
runs, datasets = store.trash()
if not runs and not datasets:
    st.caption("The trash is empty.")
else:
    if runs:
        st.dataframe(tables.runs_frame(runs, names)[["id", "name", "status", "owner", "accuracy", "dataset"]],
                     hide_index=True)
        pick = st.selectbox("Run to restore", [r.id for r in runs], key="trash_run",
                            format_func=lambda i: next(fmt.run_label(r) for r in runs if r.id == i))
        if st.button("Restore the run", icon=":material/restore_from_trash:"):
            with state.shown_errors("Restoring the run"):
                run = store.restore_run(pick, by=user)
                st.success(f"Restored run {run.id} ({fmt.plain(run.name)}) with its epochs and weights.")
    if datasets:
        st.dataframe(pd.DataFrame([{"name": d.name, "version": d.version, "owner": tables.owner_name(d.owner, names),
                                    "images": sum(d.splits.values()), "deleted": d.deleted_at} for d in datasets]),
                     hide_index=True)
        name = st.selectbox("Dataset to restore", [d.name for d in datasets], key="trash_dataset")
        if st.button("Restore the dataset"):
            with state.shown_errors("Restoring the dataset"):
                info = store.restore_dataset(name, by=user)
                st.success(f"Restored dataset {fmt.plain(info.name)}.")
    sure = st.checkbox("Yes, remove everything in the trash for good", key="trash_sure")
    if st.button("Empty the trash", type="primary", disabled=not sure):
        with state.shown_errors("Emptying the trash"):
            out = store.empty_trash(by=user)
            st.success(f"Removed {len(out['runs'])} run(s) and {len(out['datasets'])} dataset(s) for good.")

# --- the starter model ----------------------------------------------------------------------------------------
st.subheader("Starter model")
finished = [r for r in store.list_runs(status=RunStatus.FINISHED) if r.checkpoint]
if finished:
    current = next((r.id for r in finished if r.starter), None)
    pick = st.selectbox("The model Classify shows first to everyone", [r.id for r in finished], key="starter_pick",
                        index=[r.id for r in finished].index(current) if current in [r.id for r in finished] else 0,
                        format_func=lambda i: next(f"{fmt.run_label(r)} · {fmt.accuracy_label(r)}"
                                                   for r in finished if r.id == i))
    if pick != current and st.button("Make it the starter"):
        with state.shown_errors("Choosing the starter"):
            store.set_starter(pick, by=user)
            st.rerun()

# --- the record -----------------------------------------------------------------------------------------------
st.subheader("Audit log")
log = store.audit_log(300)
st.dataframe(pd.DataFrame([e.to_json() for e in log], columns=["at", "user_name", "action", "object", "detail"])
             .rename(columns={"at": "when (UTC)", "user_name": "who"}), hide_index=True)

# --- the machine ----------------------------------------------------------------------------------------------
st.subheader("Folders the lab may read from")
st.dataframe(pd.DataFrame({"folder": [str(r) for r in state.allowed_roots()]}), hide_index=True)
st.caption("Add one with the environment variable FER_DATA_DIRS (several separated by the system's path separator) "
           "before starting the app.")
st.subheader("Workers")
alive = liveness.worker_status(store)["alive"]
if alive:
    st.dataframe(pd.DataFrame([w.to_json() for w in alive]), hide_index=True)
else:
    st.caption("No worker running.")
st.caption(f"Database: {store.db_path}")
