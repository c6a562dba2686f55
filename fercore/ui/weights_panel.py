"""The pretrained ImageNet weights in the app: the Train page's panel (what is here, Fetch, imports for
offline classrooms) and the notice shown instead of queueing runs whose weights are missing.

Nothing here touches the network while a page draws: the reachability check runs when Fetch is pressed,
so an offline class machine answers with one sentence, and a page never waits on a dead connection.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from fercore.config import RunConfig
from fercore.models.weights import (
    MIB,
    ImportReport,
    checkpoints_dir,
    fetch_weights,
    import_upload,
    import_weights,
    missing_sentence,
    missing_weights,
    weights_table,
)
from fercore.ui import signin, state

NOTE = "_weights_note-"   # + key: a success message that survives the rerun after a fetch or an import


def weights_panel() -> None:
    """The table of weights files, a Fetch button for the missing ones, and the two ways to import."""
    show_note("panel")
    rows = weights_table()
    st.dataframe(pd.DataFrame([{"architecture": r["arch"], "weights": r["weights"], "file": r["file"],
                                "MB": round(r["size_mb"]), "on this machine": r["present"]} for r in rows]),
                 hide_index=True)
    st.caption(f"Transfer modes head, frozen and unfrozen start from these files in {checkpoints_dir()}; "
               "training reads them there and never downloads.")
    missing = [r["arch"] for r in rows if not r["present"]]
    if not signin.user().is_instructor:   # weights are shared by the whole machine (fercore refuses students too)
        st.caption("Fetching and importing weights is for the instructor.")
        return
    if missing:
        picked = st.multiselect("Architectures to download", missing, default=missing, key="weights_fetch_pick")
        fetch_button(picked, "panel", "Fetch from download.pytorch.org")
    import_widgets()


def missing_weights_notice(configs: list[RunConfig], key: str, subject: str = "This run") -> bool:
    """Above a button that would queue `configs`: if their ImageNet weights are missing, say so and offer
    to fetch them. True when something is missing (the caller then does not queue)."""
    show_note(key)
    missing = missing_weights(configs)
    if missing:
        st.warning(missing_sentence(missing, subject))
        if signin.user().is_instructor:
            fetch_button(missing, key, "Fetch them now (needs internet)")
    return bool(missing)


def fetch_button(archs: list[str], key: str, label: str) -> None:
    if st.button(label, key=f"weights-fetch-{key}", disabled=not archs):
        with state.shown_errors("Downloading the weights"):
            fetched = fetch_with_progress(archs)
            st.session_state[NOTE + key] = f"Downloaded {', '.join(e.file_name for e in fetched)}." if fetched else \
                "The weights are already on this machine."
            st.rerun()


def fetch_with_progress(archs: list[str]):
    bar = st.progress(0.0, text="Checking that download.pytorch.org can be reached...")
    shown = {}

    def progress(entry, done, total):
        percent = int(100 * done / total) if total else 0
        if shown.get(entry.arch) != percent:   # one update per percent, not per megabyte
            shown[entry.arch] = percent
            size = f" of {total / MIB:.0f}" if total else ""
            bar.progress(percent / 100, text=f"{entry.file_name}: {done / MIB:.0f}{size} MB")
    try:
        return fetch_weights(archs, progress)
    finally:
        bar.empty()


def import_widgets() -> None:
    limit = st.get_option("server.maxUploadSize")
    st.markdown("**No internet here?** Bring the files (for example on a USB stick) and import them: only files "
                "with torchvision's own name and checksum are accepted.")
    uploads = st.file_uploader(f"Weights files, or a .zip of them (uploads up to {limit} MB each)",
                               type=["pth", "zip"], accept_multiple_files=True, key="weights_upload")
    if st.button("Import the uploads", key="weights-import-upload", disabled=not uploads):
        reports = []
        for upload in uploads:
            with state.shown_errors(f"Importing {upload.name}"):
                reports.append(import_upload(upload.name, upload.getvalue(), by=signin.user()))
        note_imports(reports)
    a, b = st.columns([4, 1], vertical_alignment="bottom")
    path = a.text_input("Or a file, folder or .zip on this server (for files larger than the upload limit)",
                        key="weights_path", placeholder="/media/usb/checkpoints")
    if b.button("Import from the path", key="weights-import-path", disabled=not path.strip()):
        with state.shown_errors("Importing the weights"):
            note_imports([import_weights(state.confine_path(path), by=signin.user())])


def note_imports(reports: list[ImportReport]) -> None:
    """Show what was refused now; keep the success for after the rerun that redraws the table."""
    for r in reports:
        for sentence in r.refused:
            st.error(sentence)
    imported = [e.file_name for r in reports for e in r.imported]
    if imported and not any(r.refused for r in reports):
        st.session_state[NOTE + "panel"] = f"Imported {', '.join(imported)}."
        st.rerun()
    if imported:
        st.success(f"Imported {', '.join(imported)}.")


def show_note(key: str) -> None:
    note = st.session_state.pop(NOTE + key, None)
    if note:
        st.success(note)
