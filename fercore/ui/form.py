"""The Train page's form, built from RunConfig's field table (label, help, choices, bounds, group, basic, applies).

The first view holds what a student decides (the fields marked `basic`, and augmentation on or off); everything
else sits under Advanced, grouped. A setting whose `applies` conditions do not hold for the form's current values
is not drawn. Adding a setting to RunConfig adds its widget here with no other change. Widget values live in
st.session_state under "cfg_<field>", mirrored in a plain dict so the form survives a visit to
another page (Streamlit drops the state of widgets that were not drawn).
"""
from __future__ import annotations

import dataclasses
import statistics

import streamlit as st

from fercore.config import (
    AUGMENTATION_ON,
    AUGMENTS,
    EMOTIONS,
    RunConfig,
    applies,
    augmentation_on,
    config_fields,
    field_default,
)
from fercore.presets import PRESETS, preset_config
from fercore.store.entities import RunStatus

GROUPS = {"data": "Data", "architecture": "Architecture", "transfer": "Transfer (ImageNet nets)",
          "augmentation": "Preprocessing & augmentation", "optimisation": "Optimisation", "run": "Run"}
HIDDEN = {"preset"}                     # informational: set from the preset picker
GPU_ONLY = {"amp", "compile"}           # shown only where a GPU trains (their values stay in the config elsewhere)
# The data group (dataset, class subset, split, data fraction) is the user's choice of what to train on: picking a
# preset changes how to train, so these keep their values unless the preset itself sets them.
DATA_FIELDS = tuple(f.name for f in config_fields() if f.metadata.get("group") == "data")
DATA_AUTO = "_train_data_auto"          # the dataset the form picked by itself (until the user picks one)
STEPS = {"lr": 1e-4, "weight_decay": 1e-5, "momentum": 0.01, "rotation": 1.0, "grad_clip": 0.5, "mixup": 0.1}
STATE = "train_form"
AUGMENT, AUG_SAVED = "train_augment", "_train_aug_saved"   # the first view's augmentation switch
SUGGESTED = "_train_suggested_name"
NO_PRESET = "(none: the plain settings)"   # the first choice of every preset picker
PRESET_CHOICES = [NO_PRESET, *PRESETS]


def preset_or_plain(choice: str) -> RunConfig:
    """The config a preset picker's choice stands for: the preset's, or RunConfig's plain defaults."""
    return RunConfig() if choice == NO_PRESET else preset_config(choice)


def _to_widget(f: dataclasses.Field, value):
    """A config value as its widget holds it (lists as 'a, b' text, class subsets as lists)."""
    if f.name == "classes":
        return list(value or [])
    if isinstance(field_default(f), tuple):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def load_config(config: RunConfig) -> None:
    """Put a config's values into the form (a preset picked, or a run to start from)."""
    values = {f.name: _to_widget(f, getattr(config, f.name)) for f in config_fields()}
    st.session_state[STATE] = values
    for name, v in values.items():
        st.session_state[f"cfg_{name}"] = v


def preset_choices(first: str) -> list[str]:
    """The preset picker's options with this machine's recipe first (after the plain settings)."""
    return [NO_PRESET, first, *(p for p in PRESETS if p != first)]


def newest_real_dataset(datasets_info) -> str | None:
    """The most recently imported dataset that is not synthetic (store.list_datasets() is newest first)."""
    return next((d.name for d in datasets_info if not d.synthetic), None)


def open_form(preset: str, datasets_info) -> None:
    """The form of a session's first visit: the preset's config on the newest real dataset. Later visits keep
    the user's values; a dataset the form picked by itself follows a newer import (a teacher who imports FER2013
    after a first look at Train finds it selected), one the user picked stays."""
    newest = newest_real_dataset(datasets_info)
    if STATE not in st.session_state:
        load_config(preset_or_plain(preset))
        if newest and "data" not in PRESETS.get(preset, {}).get("config", {}):
            _set("data", newest)
        st.session_state[DATA_AUTO] = st.session_state[STATE]["data"]
    elif newest and st.session_state.get(DATA_AUTO) not in (None, newest) \
            and st.session_state[STATE].get("data") == st.session_state[DATA_AUTO]:
        _set("data", newest)
        st.session_state[DATA_AUTO] = newest


def load_preset(choice: str) -> None:
    """Put a preset picked in the form, keeping the user's data settings (DATA_FIELDS) unless it sets them."""
    before = {name: st.session_state.get(f"cfg_{name}", st.session_state.get(STATE, {}).get(name))
              for name in DATA_FIELDS}
    sets = PRESETS.get(choice, {}).get("config", {})
    load_config(preset_or_plain(choice))
    for name, value in before.items():
        if name not in sets and value is not None:
            _set(name, value)


def _set(name: str, value) -> None:
    st.session_state[STATE][name] = value
    st.session_state[f"cfg_{name}"] = value


def _data_picked() -> None:
    st.session_state.pop(DATA_AUTO, None)   # the user chose: the form no longer follows new imports


def _ensure_state() -> dict:
    if STATE not in st.session_state:
        load_config(RunConfig())
    values = st.session_state[STATE]
    for name, v in values.items():   # re-create widget state dropped while on another page
        st.session_state.setdefault(f"cfg_{name}", v)
    return values


def _widget(f: dataclasses.Field, datasets: list[str], classes: list[str]):
    meta, key, default = f.metadata, f"cfg_{f.name}", field_default(f)
    label, help_, labels = meta["label"], meta["help"], meta["labels"]
    if f.name == "data":
        options = list(dict.fromkeys(datasets + ["synthetic", st.session_state.get(key, "synthetic")]))
        return st.selectbox(label, options, key=key, help=help_, on_change=_data_picked)
    if f.name == "classes":
        options = list(dict.fromkeys(classes + list(st.session_state.get(key) or [])))
        return st.multiselect(label, options, key=key, help=help_, placeholder="all classes")
    if f.name == "name":
        return st.text_input(label, key=key, help=help_ + " Left empty, the run gets the name shown.",
                             placeholder=st.session_state.get(SUGGESTED, ""))
    if isinstance(default, bool):
        return st.checkbox(label, key=key, help=help_)
    if meta.get("choices"):
        return st.selectbox(label, list(meta["choices"]), key=key, help=help_,
                            format_func=lambda v: str(labels.get(v, v)),
                            on_change=_arch_picked if f.name == "arch" else None)
    if isinstance(default, tuple) or isinstance(default, str):
        return st.text_input(label, key=key, help=help_)
    lo, hi = meta.get("lo"), meta.get("hi")
    if isinstance(default, int):
        return st.number_input(label, min_value=None if lo is None else int(lo), max_value=None if hi is None
                               else int(hi), step=1, key=key, help=help_)
    step = STEPS.get(f.name, 0.05 if hi is not None and hi <= 1 else 1.0)
    return st.number_input(label, min_value=None if lo is None else float(lo), max_value=None if hi is None
                           else float(hi), step=float(step), format="%g", key=key, help=help_)


def _arch_picked() -> None:
    """The custom CNN has no pretrained weights; an ImageNet net is picked for its weights (fine-tuned unless
    the student chooses otherwise)."""
    arch = st.session_state["cfg_arch"]
    if arch == "custom":
        _set("transfer", "scratch")
    elif st.session_state.get("cfg_transfer", "scratch") == "scratch":
        _set("transfer", "unfrozen")


def _augmentation_switched() -> None:
    """Augmentation off sets every augmentation's strength to 0 (remembering them); on puts them back, or the
    lab's usual set when there were none."""
    values = st.session_state[STATE]
    if not st.session_state[AUGMENT]:
        st.session_state[AUG_SAVED] = {k: values[k] for k in AUGMENTS}
        for k in AUGMENTS:
            _set(k, 0.0)
        return
    saved = st.session_state.get(AUG_SAVED) or {}
    for k, v in (saved if augmentation_on(saved) else AUGMENTATION_ON).items():
        _set(k, v)


def current_values() -> dict:
    """The form's values as the widgets hold them now (before they are drawn in this run)."""
    values = _ensure_state()
    for name in values:
        if f"cfg_{name}" in st.session_state:
            values[name] = st.session_state[f"cfg_{name}"]
    return values


def _shown(f: dataclasses.Field, values: dict, gpu: bool) -> bool:
    return f.name not in HIDDEN and (gpu or f.name not in GPU_ONLY) and applies(f, values)


def basic_form(datasets: list[str], classes: list[str], suggested_name: str = "") -> dict:
    """The first view: model (and its pretrained weights), data and share, epochs, learning rate, augmentation
    on or off, the run's name. Returns the form's raw values (turn them into a RunConfig with `to_config`)."""
    values = current_values()
    st.session_state[SUGGESTED] = suggested_name
    fs = [f for f in config_fields() if f.metadata["basic"] and _shown(f, values, True)]
    order = ["arch", "transfer", "data", "classes", "data_fraction", "epochs", "lr", "name"]
    fs.sort(key=lambda f: order.index(f.name) if f.name in order else len(order))
    cols = st.columns(3)
    for i, f in enumerate(fs):
        with cols[i % 3]:
            values[f.name] = _widget(f, datasets, classes)
    st.session_state[AUGMENT] = augmentation_on(values)
    with cols[len(fs) % 3]:
        st.toggle("Augmentation", key=AUGMENT, on_change=_augmentation_switched,
                  help="Flipped, rotated, shifted and zoomed copies of the training faces (the strengths are under "
                       "Advanced). Off trains on the images as they are.")
    return values


def advanced_form(datasets: list[str], classes: list[str], gpu: bool = True) -> dict:
    """Everything that is not on the first view, grouped in tabs; GPU-only settings only where a GPU trains, and
    no setting that does not apply to the form's current values."""
    values = current_values()
    by_group: dict[str, list] = {}
    for f in config_fields():
        if not f.metadata["basic"] and _shown(f, values, gpu):
            by_group.setdefault(f.metadata["group"], []).append(f)
    tabs = st.tabs([GROUPS.get(g, g) for g in by_group])
    for tab, (group, fs) in zip(tabs, by_group.items()):
        with tab:
            cols = st.columns(3)
            for i, f in enumerate(fs):
                with cols[i % 3]:
                    values[f.name] = _widget(f, datasets, classes)
    return values


def to_config(values: dict, preset: str = "", suggested_name: str = "") -> RunConfig:
    """The form's values as a validated RunConfig (ConfigError with a plain sentence otherwise); an empty name
    takes the suggested one."""
    raw = {k: v for k, v in values.items() if k not in HIDDEN}
    if isinstance(raw.get("classes"), list):
        raw["classes"] = tuple(raw["classes"])
    if not str(raw.get("name") or "").strip():
        raw["name"] = suggested_name
    return RunConfig.from_dict({**raw, "preset": preset})


def suggest_name(config: RunConfig, taken: set[str]) -> str:
    """A fresh run name that says what the run is: 'cpu-starter-lr0.003-e28', '-2', '-3'... when taken."""
    base = f"{config.preset or config.arch}-lr{config.lr:g}-e{config.epochs}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def clear_name() -> None:
    """After queueing: the next run gets a fresh suggested name, not this one's."""
    _set("name", "")


# --- time per epoch ------------------------------------------------------------------------------------------
def _similar(a: RunConfig, b: RunConfig) -> bool:
    keys = ("arch", "image_size") + (("conv_blocks", "filters", "convs_per_block") if b.arch == "custom"
                                     else ("transfer",))
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def epoch_estimate(store, config: RunConfig, on_gpu: bool) -> tuple[float | None, str]:
    """Seconds per epoch: measured throughput of similar finished runs on this kind of device if there are
    any, else the lessons' rough cost model. Returns (seconds, where the number comes from)."""
    from fercore.teach.estimate import estimate_runs, train_images
    n, basis = train_images(config, store)
    kind = "cuda" if on_gpu else "cpu"
    similar = [r for r in store.list_runs(status=RunStatus.FINISHED, limit=200)
               if (r.device or "").startswith(kind) and _similar(r.config, config)][:10]
    rates = [e["images_per_s"] for r in similar for e in store.epochs(r.id) if e.get("images_per_s")]
    if rates:
        return n / statistics.median(rates), (f"measured: {len(similar)} similar finished run(s) on this "
                                              f"{'GPU' if on_gpu else 'CPU'} trained "
                                              f"{statistics.median(rates):,.0f} images/s; {n:,} training images")
    est = estimate_runs([config.replace(epochs=1)], store)
    seconds = est["seconds_gpu" if on_gpu else "seconds_cpu"]
    return float(seconds), f"a rough guess from the model's size (no similar run measured yet); {n:,} images, {basis}"


def default_classes(datasets_info) -> list[str]:
    names = list(EMOTIONS)
    for d in datasets_info:
        names += [c for c in d.classes if c not in names]
    return names
