"""FER Lab: `streamlit run streamlit_app.py`.

Navigation and the sidebar's status (database, training device, worker and queue). Each workflow
is one thin page in pages/ over fercore; shared view code lives in fercore/ui.
"""
from __future__ import annotations

import streamlit as st

from fercore.auth import Action, may
from fercore.ui import signin, state, warmup

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
    st.caption(f"Training device: {warmup.training_device_label()}")   # here: it updates once torch is in


@st.fragment(run_every=state.SIDEBAR_REFRESH_S)
def workers() -> None:
    """Which workers are alive, where and on what (for the instructor)."""
    from fercore.jobs import spawn
    with state.shown_errors("Checking the workers"):
        alive = state.worker_snapshot()["alive"]
        if alive:
            st.markdown(f":green[●] **{len(alive)} worker{'s' if len(alive) > 1 else ''} running**")
            st.caption("  \n".join(f"pid {w.pid} on {w.host}, {w.device or 'cpu'}, {w.status}"
                                    + (f" (run {w.current_run})" if w.current_run else "") for w in alive))
        else:
            st.markdown(":gray[○] **No worker running**" + (" (one starts when a run is queued)"
                                                           if spawn.autostart_enabled() else
                                                           " (start one with `python -m fercore worker`)"))


def sidebar(user) -> None:
    st.markdown("### FER Lab")
    signin.sidebar(user)
    queue_status()
    if user.is_instructor:
        with st.expander("Instructor", icon=":material/admin_panel_settings:"):
            st.caption(f"Database: `{state.get_store().db_path}`")   # never with its password
            workers()


def open_store_or_stop() -> None:
    try:
        state.get_store()
    except Exception as e:   # noqa: BLE001 - a wrong FER_DB_URL or an unreadable file: say so, do not crash
        st.error(state.database_problem(e))
        st.stop()


if signin.settings().mode != "personal":
    open_store_or_stop()   # a class's sign-in needs the database; personal mode draws nothing before st.navigation
user = signin.gate()   # personal mode: at once; in a class: the sign-in form until someone signs in
# Registered for everyone, so that a link to it works; in the menu for the instructor only; the page refuses
# anyone else, and fercore each of its actions.
nav = st.navigation(PAGES + [st.Page("pages/instructor.py", title="Instructor", icon=":material/admin_panel_settings:",
                                     visibility="visible" if may(user, Action.SEE_CLASS) else "hidden")])
wanted = state.app_ran()
if wanted:
    page, query = wanted
    st.switch_page(page, query_params=query or None)
open_store_or_stop()
with st.sidebar:
    sidebar(user)
try:
    nav.run()
finally:   # once the first page of a fresh server has run, the rest warms up behind it (fercore/ui/warmup.py)
    warmup.start()
