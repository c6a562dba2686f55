"""Lessons: one-click factor experiments with their explanation and an honest time estimate; the
status and "what the runs showed" of started lessons; hyperparameter sweeps with their best trial."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from fercore import charts, fmt
from fercore.config import EMOTIONS, RunConfig
from fercore.jobs import spawn
from fercore.store.entities import RunStatus
from fercore.teach.estimate import teaching_warnings
from fercore.ui import form, signin, state, tables, weights_panel
from fercore.ui.draw import chart
from fercore.ui.report_buttons import report_buttons

state.require_app(__file__)
st.title("Lessons")
st.caption("Each lesson is a few runs that differ in one setting. Start one, watch the curves on the Runs page, "
           "and read what the runs showed here when they are done.")
store = state.get_store()
datasets = [d.name for d in store.list_datasets()]


def start_worker() -> str:
    return " " + spawn.ensure_worker(store).sentence(runs=2)


# --- options shared by every lesson (kept while the user visits other pages) ---------------------------------
a, b, c, d = st.columns([2, 1, 2, 3])
data_options = list(dict.fromkeys(datasets + ["synthetic"]))
FRACTIONS = [0.05, 0.1, 0.25, 0.5, 1.0]
state.restore("lesson_data", data_options[0], data_options)
state.restore("lesson_epochs", 0)
state.restore("lesson_fraction", 1.0, FRACTIONS)
data = a.selectbox("Dataset", data_options, key="lesson_data",
                   help="Full FER2013 on a GPU shows the effects clearly; a fraction or the synthetic set suits a CPU.")
epochs = b.number_input("Epochs", 0, 500, help="0 keeps each lesson's own number of epochs.", key="lesson_epochs")
fraction = c.select_slider("Share of the training images", FRACTIONS, key="lesson_fraction",
                           help="A fraction trains much faster, with noisier results.")
info = store.dataset_info(data)
class_options = info.classes if info else list(EMOTIONS)
state.restore("lesson_classes", [], class_options)
classes = d.multiselect("Classes", class_options, key="lesson_classes", placeholder="all classes")
for key in ("lesson_data", "lesson_epochs", "lesson_fraction", "lesson_classes"):
    state.keep(key)
gpu = state.has_gpu()

lessons = []
with state.shown_errors("Listing the lessons"):
    from fercore.teach.lessons import list_lessons, start_lesson
    lessons = list_lessons(data=data, epochs=int(epochs) or None, fraction=fraction if fraction < 1 else None,
                           store=store)

for les in lessons:
    est = les["estimate"]
    here = est["seconds_gpu"] if gpu else est["seconds_cpu"]
    with st.expander(f"**{les['title']}**: {les['factor']} = {' vs '.join(les['values'])} "
                     f"({len(les['runs'])} runs, about {fmt.duration(here)} here)"):
        st.markdown(les["explanation"])
        for warning in teaching_warnings(RunConfig.from_dict(les["runs"][0]), store, gpu):   # e.g. 1-dot curves
            st.warning(warning, icon=":material/school:")
        st.caption(f"Estimated training time for all {len(les['runs'])} runs: {fmt.duration(est['seconds_gpu'])} on "
                   f"a GPU, {fmt.duration(est['seconds_cpu'])} on a CPU ({est['images']:,} images seen; "
                   f"{est['basis']}). This machine trains on its {'GPU' if gpu else 'CPU'}.")
        missing = weights_panel.missing_weights_notice([RunConfig.from_dict(c) for c in les["runs"]],
                                                       f"lesson-{les['name']}", "This lesson")
        if st.button("Start this lesson", key=f"start-{les['name']}", type="primary", disabled=missing):
            with state.shown_errors("Starting the lesson"):
                runs = start_lesson(store, les["name"], data=data, epochs=int(epochs) or None,
                                    fraction=fraction if fraction < 1 else None, classes=tuple(classes),
                                    by=signin.user())
                st.success(f"Queued {len(runs)} runs: {', '.join(fmt.plain(r.name) for r in runs)}." + start_worker())


@st.fragment(run_every=3)
def started_lessons() -> None:
    from fercore.teach.lessons import lesson_status
    groups = list(dict.fromkeys(r.group_name for r in store.list_runs() if r.group_kind == "lesson"
                                and r.group_name))
    if not groups:
        return
    st.subheader("Your lessons")
    for g in groups[:10]:
        with state.shown_errors(f"Reading lesson {g}"):
            s = lesson_status(store, g)
            runs = s["runs"]
            ended = sum(r.status in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED) for r in runs)
            with st.container(border=True):
                st.markdown(f"**{s['title']}** · `{g}` · {ended}/{len(runs)} runs ended")
                st.progress(ended / max(len(runs), 1))
                st.caption(" · ".join(f"{r.name}: {r.status}" + (
                    f" {fmt.headline_accuracy(r)}" if r.scored else
                    f" (best val so far {fmt.pct(r.summary.get('best_val_acc'))})" if r.summary.get("best_val_acc")
                    else "") for r in runs))
                for r in runs:   # a failure is news at once, not when the whole lesson has ended
                    if r.status == RunStatus.FAILED and r.error:
                        st.error(f"{r.name} failed: {r.error}", icon=":material/error:")
                if s["done"] and s["finding"].stated:
                    st.markdown(f"**What the runs showed.** {s['summary']}")
                elif s["done"]:   # "Too short to tell: ...", with the settings that would tell
                    st.info(s["summary"], icon=":material/hourglass_empty:")
                if s["done"]:
                    report_buttons(store, [], key=f"lesson-{g}", lesson=g)
                st.page_link("pages/compare.py", label="Compare these runs", icon=":material/compare_arrows:",
                             query_params={"runs": ",".join(str(r.id) for r in runs[:8])})


started_lessons()

# --- sweeps -----------------------------------------------------------------------------------------------
st.divider()
st.header("Sweeps")
st.caption("Search over settings: a grid, random draws, or Bayesian search (Optuna's TPE), queued as runs.")
EXAMPLE = '{"lr": {"low": 0.0001, "high": 0.01, "log": true},\n "conv_dropout": [0.0, 0.25, 0.5]}'
with st.expander("Start a sweep"):
    a, b, c = st.columns(3)
    base_name = a.selectbox("Base config", form.PRESET_CHOICES, key="sweep_base")
    method = b.selectbox("Method", ["random", "grid", "bayes"], key="sweep_method")
    trials = c.number_input("Trials", 1, 200, 8, key="sweep_trials")
    a, b, c = st.columns(3)
    sweep_data = a.selectbox("Dataset", list(dict.fromkeys(datasets + ["synthetic"])), key="sweep_data")
    sweep_epochs = b.number_input("Epochs per trial", 1, 500, 10, key="sweep_epochs")
    sweep_name = c.text_input("Sweep name (optional)", key="sweep_name", placeholder="e.g. lr-dropout")
    space_text = st.text_area("Search space (JSON: a list is a set of choices, low/high a range)", EXAMPLE,
                              key="sweep_space", height=100)
    if st.button("Queue the sweep", type="primary"):
        with state.shown_errors("Starting the sweep"):
            from fercore.teach.sweeps import start_sweep
            try:
                space = json.loads(space_text)
            except json.JSONDecodeError as e:
                raise ValueError(f"The search space is not valid JSON ({e.msg} at line {e.lineno}).") from None
            base = form.preset_or_plain(base_name)
            base = base.replace(data=sweep_data, epochs=int(sweep_epochs))
            out = start_sweep(store, base, space, method=method, trials=int(trials), name=sweep_name.strip() or None,
                              by=signin.user())
            st.success(f"Sweep {fmt.plain(out['name'])}: {len(out['runs'])} run(s) queued." + (f" {out['note']}" if
                                                                                    out.get("note") else "")
                       + start_worker())

sweeps = []
with state.shown_errors("Listing the sweeps"):
    from fercore.teach.sweeps import best_trial, list_sweeps, sweep_table
    sweeps = list_sweeps(store)
if not sweeps:
    st.caption("No sweeps yet.")
else:
    pick = st.selectbox("Sweep", [s["name"] for s in sweeps], key="sweep_pick",
                        format_func=lambda n: next(f"{n} ({s['method'] or '?'}: {s['finished']}/{s['trials']} finished)"
                                                   for s in sweeps if s["name"] == n))
    with state.shown_errors("Showing the sweep"):
        rows = sweep_table(store, pick)
        params = list(rows[0]["params"]) if rows else []
        table = pd.DataFrame([{"trial": r["trial"], "run": r["name"], "status": r["status"], **r["params"],
                               "best val acc": r["best_val_acc"], "test acc": r["test_acc"]} for r in rows])
        table = tables.as_points(table.astype({p: str for p in params if table[p].map(type).eq(list).any()}),
                                 ("best val acc", "test acc"))
        st.dataframe(table, hide_index=True, placeholder="-",
                     column_config=tables.points_columns(("best val acc", "test acc")))
        if any(r["best_val_acc"] is not None for r in rows):
            chart(charts.parallel_coordinates(rows, params), "sweep-parcoords")
        best = best_trial(store, pick)
        if best:
            st.success(f"Best trial so far: {best['name']} with {fmt.pct(best['best_val_acc'])} val accuracy ("
                       + ", ".join(f"{k} = {v}" for k, v in best["params"].items()) + ").")
        st.page_link("pages/compare.py", label="Compare the sweep's runs", icon=":material/compare_arrows:",
                     query_params={"runs": ",".join(str(r["id"]) for r in sorted(
                         rows, key=lambda r: -(r["best_val_acc"] or 0))[:8])})
