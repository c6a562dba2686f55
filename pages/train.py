"""Train: build a run config (from a preset or by hand), see how long an epoch should take, queue it;
the queue below updates live with progress, ETA and cancel buttons."""
from __future__ import annotations

import streamlit as st

from fercore import fmt
from fercore.auth import Action, may
from fercore.config import RunConfig
from fercore.data import require
from fercore.errors import ConfigError
from fercore.jobs import policy, spawn
from fercore.presets import describe_config, device_preset
from fercore.store.entities import RunStatus
from fercore.teach.estimate import teaching_warnings
from fercore.ui import form, signin, state, tables, weights_panel

state.require_app(__file__)
st.title("Train a model")
store = state.get_store()
user = signin.user()
datasets_info = store.list_datasets()
on_gpu = state.has_gpu()
START_PRESET = device_preset(on_gpu)   # the lab's default recipe on a GPU, the starter's on a CPU


def apply_preset() -> None:
    form.load_preset(st.session_state["train_preset"])   # keeps the chosen dataset, classes and data fraction


def form_config() -> tuple[RunConfig | None, str | None]:
    """The run the form describes now, or the sentence saying which setting is wrong."""
    try:
        return form.to_config(form.current_values(), "" if preset == form.NO_PRESET else preset,
                              st.session_state.get(form.SUGGESTED, "")), None
    except ConfigError as e:   # a plain sentence about the setting that is wrong
        return None, str(e)


def queue_run() -> None:
    """The Queue button's callback (it runs before the page, so the name field can be cleared for the next run)."""
    config, _ = form_config()
    with state.shown_errors("Queueing the run"):
        require(config.data, store)
        run = store.create_run(config, status=RunStatus.QUEUED, by=user)
        st.session_state[QUEUED] = (f"Queued run {run.id} ({fmt.plain(run.name)}). "
                                    f"{spawn.ensure_worker(store).sentence()}")
        form.clear_name()


QUEUED = "_train_queued_note"
choices = form.preset_choices(START_PRESET)
state.restore("train_preset", START_PRESET, choices)   # first visit, or back from another page
form.open_form(st.session_state["train_preset"], datasets_info)
preset = st.selectbox("Start from a preset", choices, key="train_preset", on_change=apply_preset,
                      help="Set-ups from published student reports on FER2013, and the lab's own recipes. Changing it "
                           "keeps your dataset, classes and data fraction unless the preset sets them.")
state.keep("train_preset")
described = st.empty()
if not datasets_info:
    st.caption("No dataset imported yet: runs can use the built-in synthetic faces, or import FER2013 on the "
               "Data page.")

config, problem = form_config()
taken = {r.name for r in store.list_runs(limit=500)}
suggested = form.suggest_name(config, taken) if config else ""
form.basic_form([d.name for d in datasets_info], form.default_classes(datasets_info), suggested)
config, problem = form_config()
if preset != form.NO_PRESET and config is not None:
    described.caption(describe_config(config, preset))

over = None   # the sentence of a class limit this config is over
left, right = st.columns([3, 2])
with left:
    if problem:
        st.error(problem)
    else:
        with state.shown_errors("The time estimate"):
            seconds, basis = form.epoch_estimate(store, config, on_gpu)
            epochs = f"{config.epochs} epoch{'' if config.epochs == 1 else 's'}"
            st.markdown(f"**About {fmt.duration(seconds)} per epoch**, {fmt.duration(seconds * config.epochs)} for "
                        f"{epochs} on this machine's {'GPU' if on_gpu else 'CPU'}.")
            st.caption(f"Estimate: {basis}.")
        for warning in teaching_warnings(config, store, on_gpu):
            st.warning(warning, icon=":material/school:")
        try:   # the class limits, said before queueing (the store refuses the same again)
            store.check_queue(config, user)
        except Exception as e:   # noqa: BLE001 - a Forbidden's sentence
            over = str(e)
            st.error(over)
        info = store.dataset_info(config.data)
        if info is not None and config.split == "usage" and not info.splits.get("val"):
            st.warning(f"{info.name!r} has no val split, so no checkpoint could be chosen. Set split to "
                       "**val_from_train**: a stratified val is carved out of train and the source's own test is "
                       "kept for the final score (a random split would put the official test into training).")
with right:
    missing = config is not None and weights_panel.missing_weights_notice([config], "train")
    blocked = config is None or missing or bool(over)
    st.button("Queue this run", type="primary", disabled=blocked, width="stretch", on_click=queue_run)
    if note := st.session_state.pop(QUEUED, None):
        st.success(note)
with st.expander("Advanced settings (architecture, split, augmentation strengths, optimiser, schedule...)"):
    form.advanced_form([d.name for d in datasets_info], form.default_classes(datasets_info), gpu=on_gpu)
with st.expander("Pretrained weights (ImageNet files for transfer learning)", expanded=bool(missing)):
    weights_panel.weights_panel()

st.divider()


@st.fragment(run_every=2)
def queue() -> None:
    st.subheader("Queue")
    active = sorted(store.list_runs(status=RunStatus.RUNNING) + store.list_runs(status=RunStatus.QUEUED),
                    key=lambda r: r.id)
    names = store.user_names()
    if not active:
        st.caption("Nothing is waiting or training.")
    for r in active:
        a, b, c = st.columns([3, 6, 1.4], vertical_alignment="center")
        a.markdown(f"**{fmt.plain(r.name)}**  \n:gray[{r.config.arch} on {fmt.plain(r.dataset)}, queued by "
                   f"{fmt.plain(tables.owner_name(r.owner, names))}]")
        if r.status == RunStatus.RUNNING:
            done, text = fmt.run_progress(r)
            b.progress(done, text=text + (" (cancelling)" if r.cancel_requested else ""))
        else:
            b.caption("waiting for a worker")
        if may(user, Action.CANCEL, r.owner) and c.button("Cancel", key=f"cancel-{r.id}",
                                                          disabled=r.cancel_requested):
            with state.shown_errors("Cancelling the run"):
                policy.cancel_runs(store, [r.id], by=user)
            st.rerun(scope="fragment")
    recent = [r for r in store.list_runs(limit=8) if r.status not in (RunStatus.QUEUED, RunStatus.RUNNING)][:5]
    if recent:
        lines = []
        for r in recent:
            line = f"**{fmt.plain(r.name)}**: {r.status}" + (f", accuracy {fmt.accuracy_label(r)}" if r.scored else "")
            lines.append(line + (f" :red[({fmt.plain(r.error)})]" if r.error and r.status == RunStatus.FAILED else ""))
        st.markdown("Recently ended:  \n" + "  \n".join(lines))


queue()
