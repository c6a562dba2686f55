"""Cached resources at the app's boundary, the folders users may import from, and the instructor lock.

Everything a page loads that is slow (the store with its engine, a trained network, a dataset of
30k images) is created once per process with `st.cache_resource`, keyed by what identifies it, so
a second tab, a rerun or a second student costs nothing.
"""
from __future__ import annotations

import logging
import os
import traceback
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from fercore.errors import PathRefused, is_user_error, user_message
from fercore.store import RunStore, default_db

log = logging.getLogger("fercore.ui")
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


# --- every page goes through the app's navigation --------------------------------------------------------
APP_RAN, WANTED_PAGE = "_fer_app_ran", "_fer_wanted_page"


def require_app(page_file: str) -> None:
    """Send a visitor who reached a page without streamlit_app.py through it, to the page they asked for.

    Streamlit treats a folder named pages/ as an old-style multipage app until the app script first calls
    st.navigation, so the very first visitor of a fresh server who opens /runs directly gets pages/runs.py
    alone: no sidebar, no navigation, and the old page list for every later visitor too."""
    if not st.session_state.get(APP_RAN):   # keep the link's query (?runs=1,2) for the page asked for
        st.session_state[WANTED_PAGE] = (f"pages/{Path(page_file).name}", st.query_params.to_dict())
        st.switch_page("streamlit_app.py")


def app_ran() -> tuple[str, dict] | None:
    """Called by streamlit_app.py after st.navigation: the page a redirected visitor asked for, and the
    query parameters of their link."""
    st.session_state[APP_RAN] = True
    return st.session_state.pop(WANTED_PAGE, None)


# --- widget values that outlive a visit to another page ---------------------------------------------------------
def restore(key: str, default, options=None) -> None:
    """Before drawing the widget `key`: Streamlit drops a widget's value when its page is left, so put back the
    plain copy `keep` saved (or `default`), dropping what is no longer among `options`."""
    value = st.session_state.get(key, st.session_state.get(f"_{key}", default))
    if options is not None:
        value = [v for v in value if v in options] if isinstance(value, list) else (
            value if value in options else default)
    if st.session_state.get(key) != value or key not in st.session_state:
        st.session_state[key] = value


def keep(key: str) -> None:
    """After drawing the widget `key`: save a plain copy of its value under a key Streamlit never drops."""
    st.session_state[f"_{key}"] = st.session_state.get(key)


def active_runs_changed(runs) -> bool:
    """True when the queued and running runs differ from what this session last saw in the Runs table (False at
    its first look): the page then reruns whole, so the sidebar's counts are read with the table."""
    now = sorted((r.id, str(r.status)) for r in runs if r.status.active)
    before = st.session_state.get("_active_runs")
    st.session_state["_active_runs"] = now
    return before is not None and before != now


# --- errors a user can cause: one sentence on the page, never a traceback ------------------------
@contextmanager
def shown_errors(action: str):
    """Run a block; a user error becomes st.error with its sentence, anything else a short note
    (the traceback goes to the server log, not to the student)."""
    try:
        yield
    except Exception as e:   # noqa: BLE001 - this is the UI's last line; Streamlit's own control flow is BaseException
        if is_user_error(e):
            st.error(str(e))
        else:
            log.error("%s failed:\n%s", action, traceback.format_exc())
            st.error(f"{action} failed: {user_message(e)} The details are in the server log.")


# --- cached resources --------------------------------------------------------------------------------------
def db_url() -> str:
    return default_db()


@st.cache_resource(show_spinner="Opening the run database...")
def _store(url: str) -> RunStore:
    store = RunStore(url)
    try:
        from fercore.jobs.runfile import ensure_starter
        ensure_starter(store)
    except Exception:   # noqa: BLE001 - a broken starter file must not keep the lab from opening
        log.error("could not register the starter model:\n%s", traceback.format_exc())
    return store


def get_store() -> RunStore:
    return _store(db_url())


@st.cache_resource(max_entries=12, show_spinner="Loading the model...")
def _predictor(url: str, run_id: int, checkpoint: str):
    from fercore.predict.predictor import load_predictor
    return load_predictor(_store(url), run_id)


def get_predictor(run: dict):
    """The loaded network of a finished run (cached per run id and checkpoint file)."""
    return _predictor(db_url(), int(run.id), str(run.checkpoint))


@st.cache_resource(max_entries=3, show_spinner="Loading the dataset...")
def _dataset(url: str, name: str, fingerprint: str):
    return _store(url).load_dataset(name)


def get_dataset(name: str):
    """The dataset a spec names (fercore.data.resolve), cached per process: a stored one by its fingerprint, a
    synthetic one or a path by the spec (never added to the store from here)."""
    store = get_store()
    info = store.dataset_info(name)
    if info is not None:
        return _dataset(db_url(), name, info.fingerprint)
    from fercore.data.lookup import is_synthetic
    if not is_synthetic(name):   # a path from stored data or a run file: the same check as a typed one
        name = str(confine_path(name))
    return _unstored(name)


@st.cache_resource(max_entries=4, show_spinner="Loading the dataset...")
def _unstored(spec: str):
    from fercore.data import resolve
    return resolve(spec, get_store(), keep=False)


def run_split_images(run, split: str = "test"):
    """(images, labels) of a run's `split`: exactly the rows its training used (fercore.data.prepare_for_run)."""
    from fercore.data import prepare_for_run
    ds = prepare_for_run(get_dataset(run.dataset or run.config.data), run.config)
    return ds.arrays(split)


# Every open tab reruns the sidebar's queue and worker sections this often (st.fragment(run_every=...)); what they show
# is worked out once per WORKER_SNAPSHOT_TTL_S for the whole process, so a class of idle tabs costs a few cheap
# cache look-ups, not a database round and a worker check each (issue 25).
SIDEBAR_REFRESH_S = 10
WORKER_SNAPSHOT_TTL_S = 2


@st.cache_data(ttl=WORKER_SNAPSHOT_TTL_S, show_spinner=False)
def _worker_snapshot(url: str) -> dict:
    from fercore.jobs import liveness, spawn
    store = _store(url)
    liveness.reap(store)
    spawn.ensure_worker(store)   # it decides (FER_AUTOSTART_WORKER) and does nothing when it may not
    return liveness.worker_status(store)


def worker_snapshot() -> dict:
    """The queue and the live workers (liveness.worker_status), after reaping the runs of dead workers and starting a
    worker for queued runs (spawn.ensure_worker decides whether it may): at most once every WORKER_SNAPSHOT_TTL_S per
    process."""
    return _worker_snapshot(db_url())


@st.cache_resource(show_spinner=False)
def training_device() -> str:
    import torch
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return "CPU (no GPU found)"


def has_gpu() -> bool:
    """Whether runs train on a GPU here: what the Train form starts from and shows, and every time estimate."""
    return training_device().startswith("GPU")


# --- import paths typed by users: confined to allowed folders ----------------------------------------------
def class_settings():
    """The sign-in mode and its settings (fercore.auth.identity) from .streamlit/secrets.toml: the one place the app
    reads the secrets (fercore/ui/signin.py draws the forms)."""
    from fercore.auth import identity
    secrets = {}
    for key in ("fer_class", "auth", "instructor_password"):
        try:
            value = st.secrets.get(key)
        except Exception:   # noqa: BLE001 - no secrets file at all: personal mode, the normal case
            return identity.settings_from({})
        if value:
            secrets[key] = value.to_dict() if hasattr(value, "to_dict") else value
    return identity.settings_from(secrets)


def allowed_roots() -> list[Path]:
    """../shared/datasets when present and FER_DATA_DIRS (os.pathsep-separated); in personal mode the working
    directory too. A class server never reads its own folder (its secrets, its database) unless it is listed."""
    from fercore.auth.identity import Mode
    roots = [Path.cwd()] if class_settings().mode == Mode.PERSONAL else []
    if SHARED_DATASETS.is_dir():
        roots.append(SHARED_DATASETS)
    roots += [Path(p).expanduser() for p in os.environ.get("FER_DATA_DIRS", "").split(os.pathsep) if p.strip()]
    out = []
    for r in roots:
        r = r.resolve()
        if r not in out:
            out.append(r)
    return out


def confine_path(text: str) -> Path:
    """The resolved path if it lies inside an allowed folder (symlinks followed first), else PathRefused."""
    text = (text or "").strip()
    if not text:
        raise PathRefused("Type the path of a CSV, zip or image folder on the server.")
    if "\x00" in text:
        raise PathRefused("That path contains a NUL character.")
    raw = Path(text).expanduser()
    path = (raw if raw.is_absolute() else Path.cwd() / raw).resolve()
    roots = allowed_roots()
    if not any(path == r or path.is_relative_to(r) for r in roots):
        raise PathRefused(f"{text} is outside the folders this lab may read from ("
                          + ", ".join(str(r) for r in roots) + "). Ask the instructor to add its folder to "
                          "FER_DATA_DIRS, or upload the file instead.")
    if not path.exists():
        raise PathRefused(f"There is no file or folder at {text}.")
    return path


def database_problem(e: Exception) -> str:
    """The sentence for a database that could not be opened, never with the URL's password (the message of a
    malformed URL quotes the URL whole)."""
    from fercore.store import redact_url
    raw, shown = db_url(), redact_url(db_url())
    reason = f"{type(e).__name__}: {e}".replace(raw, shown)
    if "://" in raw:
        from sqlalchemy.engine import make_url
        try:
            password = make_url(raw).password
        except Exception:   # noqa: BLE001 - unparseable: the replace above took the whole URL out
            password = None
        if password:
            reason = reason.replace(str(password), "***")
    return f"The run database {shown} could not be opened ({reason}). Check FER_DB_URL or the file's permissions."
