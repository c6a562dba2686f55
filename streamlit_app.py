"""FER Lab: `streamlit run streamlit_app.py`.

Navigation and the sidebar's status (database, training device, worker and queue). Each workflow
is one thin page in pages/ over fercore; shared view code lives in fercore/ui.
"""
from __future__ import annotations

import streamlit as st

from fercore.ui import state

st.set_page_config(page_title="FER Lab", page_icon=":material/sentiment_satisfied:", layout="wide")

PAGES = [
    st.Page("pages/classify.py", title="Classify", icon=":material/face:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/lessons.py", title="Lessons", icon=":material/school:"),
]


@st.fragment(run_every=state.SIDEBAR_REFRESH_S)
def queue_status() -> None:
    """The queue in one line (state.worker_snapshot reaps dead workers' runs and starts a worker for queued runs)."""
    with state.shown_errors("Checking the workers"):
        ws = state.worker_snapshot()
        st.caption(f"Queue: {ws['queued']} waiting, {ws['running']} training")


@st.fragment(run_every=state.SIDEBAR_REFRESH_S)
def workers() -> None:
    """Which workers are alive, where and on what (for the instructor)."""
    with state.shown_errors("Checking the workers"):
        alive = state.worker_snapshot()["alive"]
        if alive:
            st.markdown(f":green[●] **{len(alive)} worker{'s' if len(alive) > 1 else ''} running**")
            st.caption("  \n".join(f"pid {w.pid} on {w.host}, {w.device or 'cpu'}, {w.status}"
                                    + (f" (run {w.current_run})" if w.current_run else "") for w in alive))
        else:
            st.markdown(":gray[○] **No worker running**" + (" (one starts when a run is queued)"
                                                           if state.autostart_worker() else
                                                           " (start one with `python -m fercore worker`)"))


def sidebar() -> None:
    store = state.get_store()
    st.markdown("### FER Lab")
    st.caption(f"Training device: {state.training_device()}")
    queue_status()
    with st.expander("Instructor", icon=":material/admin_panel_settings:"):
        st.caption(f"Database: `{store.db_path}`")
        workers()
        if state.instructor_password() is not None:
            st.text_input("Instructor password", type="password", key="instructor_password_given",
                          help="Deleting and cancelling runs is reserved to the instructor.")
            if st.session_state.get("instructor_password_given"):
                st.caption("Unlocked." if state.may_manage_runs() else ":red[Wrong password.]")


nav = st.navigation(PAGES)
wanted = state.app_ran()
if wanted:
    page, query = wanted
    st.switch_page(page, query_params=query or None)
try:
    state.get_store()
except Exception as e:   # noqa: BLE001 - a wrong FER_DB_URL or an unreadable file: say so, do not crash
    st.error(f"The run database {state.db_url()} could not be opened ({type(e).__name__}: {e}). "
             "Check FER_DB_URL or the file's permissions.")
    st.stop()
with st.sidebar:
    sidebar()
nav.run()
