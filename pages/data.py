"""Data: import FER2013 (upload, a path on the server, or the synthetic demo set), then look at a
dataset: class balance per split, samples per class, pixel statistics, and augmentation previews."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from fercore import charts, fmt
from fercore.auth import safe_name
from fercore.ui import analysis, form, signin, state, tables
from fercore.ui.draw import chart

state.require_app(__file__)
st.title("Data")
store = state.get_store()
UPLOAD_LIMIT_MB = st.get_option("server.maxUploadSize")   # .streamlit/config.toml
IMPORTED = "_data_imported"   # what the last import brought: a sentence, then the loader's notes


def upload_to_file(up, folder: Path) -> Path:
    """Write an upload to `folder` in 1 MB chunks (a 287 MB CSV is not copied whole in memory once more),
    under its own name: the loaders recognise fer2013.csv / .csv.gz / .zip by it."""
    path = folder / (Path(up.name).name or "upload")
    up.seek(0)
    with open(path, "wb") as f:
        shutil.copyfileobj(up, f, 1 << 20)
    return path


def import_source(src: str, name: str, source: str | None = None) -> None:
    """Load a source, audit it, store it as a dataset (deduplicated when asked), and say what arrived."""
    from fercore.data import import_dataset
    st.session_state.pop(IMPORTED, None)   # a failed import must not sit under the last one's success
    with st.spinner("Importing and auditing... (the full FER2013 takes a few seconds)"):
        dedupe = st.session_state.get("data_dedupe", False) and \
            ("near" if st.session_state.get("data_dedupe_near") else "exact")
        info = import_dataset(src, store, name.strip() or None, dedupe=dedupe, source=source,
                              by=signin.user(), on_wait=lambda: st.info(
                                  "Two imports are running on the server; yours starts as soon as one ends.",
                                  icon=":material/hourglass_top:"))
    splits = ", ".join(f"{k} {v:,}" for k, v in info.splits.items())
    # Said below the import box, which folds once a dataset exists: the outcome must not hide inside it.
    version = f", version {info.version}: the earlier versions stay" if info.version > 1 else ""
    st.session_state[IMPORTED] = [f"Imported {sum(info.splits.values()):,} images as '{fmt.plain(info.name)}' "
                                  f"({splits}{version}).", *map(fmt.plain, info.notes)]
    st.session_state["data_pick"] = info.name


# Open on a lab with no data, folded on one with some; decided once per session, so the box does not fold under a
# teacher who is importing a second dataset (a changed `expanded` redraws the expander closed).
st.session_state.setdefault("_data_import_open", not store.list_datasets())
with st.expander("Import a dataset", expanded=st.session_state["_data_import_open"]):
    st.checkbox("Drop duplicates (val/test images that are copies of training images) and blank images",
                key="data_dedupe", help="FER2013 repeats itself: 280 of its 3,589 PublicTest images are training "
                                        "images. A model scores them from memory, which inflates val accuracy.")
    st.checkbox("... and near copies too (the same photo re-saved, re-cropped or brightened)", key="data_dedupe_near",
                disabled=not st.session_state.get("data_dedupe"),
                help="Found by a perceptual hash (dHash) and confirmed by the pixels: FER2013 has about 150 PublicTest "
                     "images that are near copies of training images, beyond the 280 identical ones.")
    up_tab, path_tab, synth_tab = st.tabs(["Upload a file", "A path on the server", "Synthetic demo faces"])
    with up_tab:
        up = st.file_uploader(f"fer2013.csv (or .csv.gz, icml_face_data.csv), or a .zip of <split>/<class>/ images, "
                              f"up to {UPLOAD_LIMIT_MB} MB", type=["csv", "gz", "zip"], key="data_upload",
                              help="The full fer2013.csv (287 MB) fits; zipped or gzipped it uploads faster.")
        up_name = st.text_input("Name (optional)", key="data_upload_name", placeholder="e.g. fer2013")
        if st.button("Import the upload", disabled=up is None):
            with state.shown_errors("The import"), tempfile.TemporaryDirectory() as tmp:
                import_source(str(upload_to_file(up, Path(tmp))),
                              up_name or safe_name(Path(up.name).name.split(".")[0]),
                              source=f"upload: {Path(up.name).name}")
    with path_tab:
        roots = state.allowed_roots()
        st.caption("The lab reads only from these folders: " + ", ".join(f"`{r}`" for r in roots) + ".")
        st.caption(f"To add one, the instructor sets the environment variable `FER_DATA_DIRS` to the folder (several "
                   f"separated by `{os.pathsep}`) before starting the app, e.g. "
                   "`FER_DATA_DIRS=/data/fer streamlit run streamlit_app.py`.")
        typed = st.text_input("Path to a CSV, zip or image folder", key="data_path",
                              placeholder=str(roots[-1] / "fer2013.csv"))
        path_name = st.text_input("Name (optional)", key="data_path_name")
        if st.button("Import from the path"):
            with state.shown_errors("The import"):
                import_source(str(state.confine_path(typed)), path_name)
    with synth_tab:
        st.caption("Procedurally drawn faces whose expressions a small CNN can learn: for demos and "
                   "CPU-only classrooms. Always labelled synthetic.")
        n = st.select_slider("Number of faces", [700, 2100, 4200, 8400], value=2100)
        if st.button("Create the synthetic set"):
            with state.shown_errors("Creating the synthetic set"):
                import_source(f"synthetic:{n}", "synthetic" if n == 2100 else f"synthetic-{n}")

if st.session_state.get(IMPORTED):
    done, *notes = st.session_state[IMPORTED]
    st.success(done)
    for note in notes:
        st.info(note)
datasets = store.list_datasets()
if not datasets:
    st.info("No dataset yet: import FER2013 above, or create the synthetic demo faces.")
    st.stop()

owners = store.user_names()
st.dataframe([{"name": d.name, "version": d.version, "owner": tables.owner_name(d.owner, owners),
               "images": sum(d.splits.values()), **d.splits,
               "classes": ", ".join(d.classes), "synthetic": d.synthetic, "source": d.source}
              for d in datasets], hide_index=True)
names = [d.name for d in datasets]
if st.session_state.get("data_pick") not in names:
    st.session_state["data_pick"] = names[0]
name = st.selectbox("Dataset", names, key="data_pick")
info = store.dataset_info(name)
if info.synthetic:
    st.caption(":orange[Synthetic] faces, drawn by the lab; not real photographs.")
ds = None
with state.shown_errors("Loading the dataset"):
    ds = state.get_dataset(name)
if ds is None:
    st.stop()

# --- the audit: what the dataset repeats ------------------------------------------------------------------
st.subheader("Duplicates and blank images")
audit = info.audit
if not audit:
    st.caption("This dataset was imported before the lab audited imports; import it again to see its duplicates.")
else:
    across = audit.get("duplicates_across", {})
    near = audit.get("near_duplicates") or {}
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Extra copies inside a split", f"{sum(audit.get('duplicates_within', {}).values()):,}")
    c2.metric("Val/test images also in an earlier split",
              f"{sum(d['n'] for d in across.values()):,}",
              help=", ".join(f"{k.replace('_in_', ' in ')}: {d['n']} ({d['other_label']} with another label)"
                             for k, d in across.items()) or None)
    c3.metric("Blank images", f"{sum(audit.get('blank', {}).values()):,}")
    if near:
        c4.metric("Near copies (beyond identical ones)", f"{near['extra']:,}",
                  help=f"The same photo re-saved, re-cropped or brightened: dHashes within {near['hash_bits']} of 64 "
                       f"bits and pixels correlated at least {near['correlation']}. Across splits: "
                       + (", ".join(f"{k.replace('_in_', ' in ')}: {d['n']} ({d['other_label']} with another label)"
                                    for k, d in near["across"].items()) or "none") + ".")
    dropped = "; ".join(audit.get("dropped") or []) or "nothing to drop"
    st.caption("A val or test image that is also a training image is scored from memory, not from what the "
               "network learned, so val accuracy is inflated and choosing the checkpoint on val partly rewards "
               "memorising. The random splits keep every copy of an image, identical or near, in one split. "
               + (f"This dataset was deduplicated at import ({audit.get('dedupe') or 'exact'} copies): {dropped}."
                  if audit.get("deduplicated") else
                  "Import it again with 'Drop duplicates' ticked to score on unseen images only."))
    if not audit.get("deduplicated"):   # the pairs' indices are the imported rows, before any drop
        for pairs, caption in ((audit.get("pairs"), "Pairs side by side: a training image, then the val/test image "
                                                    "with the same pixels"),
                               (near.get("pairs"), "Near copies side by side: an image, then its near copy in a "
                                                   "later split (or the same one)")):
            shown = [i for pair in pairs or [] for i in pair if i < len(ds)]
            if shown:
                st.image(analysis.mosaic(ds.images[shown], columns=min(len(shown), 12), scale=2), caption=caption)

# --- balance and samples ----------------------------------------------------------------------------------
st.subheader("Class balance")
chart(charts.class_balance(info.class_counts), "balance")
train_counts = info.class_counts["train"]
if train_counts and min(train_counts.values()) > 0:
    ratio = max(train_counts.values()) / min(train_counts.values())
    if ratio >= 3:
        st.caption(f"The largest training class has {ratio:.0f}x the images of the smallest: consider class "
                   "weights, and read per-class recall, not just accuracy.")

st.subheader("Samples per class")
rng = np.random.default_rng(0)
per_class = st.slider("Samples per class", 4, 24, 12, 4)
cols = st.columns(2)
for i, cls in enumerate(ds.classes):
    idx = np.flatnonzero(ds.labels == i)
    if len(idx):
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        cols[i % 2].image(analysis.mosaic(ds.images[pick], columns=per_class // 2 if per_class > 12 else per_class,
                                          scale=1), caption=f"{cls} ({len(idx):,} images)")

# --- pixel statistics ---------------------------------------------------------------------------------------
st.subheader("Pixel statistics")
sample = {}
for code, split in enumerate(("train", "val", "test")):
    idx = np.flatnonzero(ds.split == code)
    if len(idx):
        sample[split] = ds.images[rng.choice(idx, size=min(3000, len(idx)), replace=False)]
a, b = st.columns([1, 2])
a.dataframe([{"split": s, "mean": float(x.mean()), "std": float(x.std()),
              "dark %": 100 * float((x < 32).mean()), "bright %": 100 * float((x > 223).mean())}
             for s, x in sample.items()], hide_index=True,
            column_config={"mean": st.column_config.NumberColumn(format="%.1f"),
                           "std": st.column_config.NumberColumn(format="%.1f"),
                           "dark %": st.column_config.NumberColumn(format=tables.POINTS_FORMAT,
                                                                   help="Share of pixels darker than 32 (of 0-255)"),
                           "bright %": st.column_config.NumberColumn(format=tables.POINTS_FORMAT,
                                                                     help="Share of pixels brighter than 223 "
                                                                          "(of 0-255)")})
a.caption("Mean and std of pixel values (0-255) on up to 3,000 images per split; 'standard' normalisation uses "
          "the training mean and std.")
chart(charts.pixel_histogram(sample), "histogram", b)
means = np.stack([ds.images[ds.labels == i].mean(axis=0) if (ds.labels == i).any()
                  else np.zeros(ds.images.shape[1:]) for i in range(len(ds.classes))]).astype(np.uint8)
st.image(analysis.mosaic(means, columns=len(ds.classes), scale=2),
         caption="The mean face of each class: " + ", ".join(ds.classes))

# --- augmentation preview -----------------------------------------------------------------------------------
st.subheader("Augmentation preview")
st.caption("What training would feed the network: each row is one real image, then random augmentations of it.")
p = st.selectbox("Augmentations of", form.PRESET_CHOICES, key="aug_preset")
base = form.preset_or_plain(p)
knobs = {"hflip": (0.0, 1.0, 0.05), "rotation": (0.0, 90.0, 1.0), "shift": (0.0, 0.5, 0.01), "zoom": (0.0, 0.5, 0.01),
         "blur": (0.0, 1.0, 0.05), "erasing": (0.0, 1.0, 0.05)}
cols = st.columns(len(knobs))
changes = {k: c.slider(k, lo, hi, float(getattr(base, k)), step, key=f"aug_{p}_{k}")
           for c, (k, (lo, hi, step)) in zip(cols, knobs.items())}
seed = st.number_input("Seed", 0, 10_000, 0, key="aug_seed")
with state.shown_errors("The augmentation preview"):
    from fercore.augment import preview
    cfg = base.replace(**changes, image_size=ds.image_size)   # preview at the images' own size
    train_idx = np.flatnonzero(ds.split == 0)
    picks = np.random.default_rng(int(seed)).choice(train_idx, size=min(4, len(train_idx)), replace=False)
    gap = np.full((ds.image_size * 2, 12), 255, np.uint8)
    rows = [np.concatenate([analysis.mosaic(ds.images[i][None], columns=1), gap,
                            analysis.mosaic(preview(cfg, ds.images[i], 8, int(seed) * 100 + k), columns=8)], axis=1)
            for k, i in enumerate(picks)]
    st.image(np.concatenate([np.pad(r, ((0, 6), (0, 0)), constant_values=255) for r in rows]),
             caption="left: the original; right: 8 augmented versions")
