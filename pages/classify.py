"""Classify: upload a photo or take one; every face is boxed and numbered; each chosen run gives its
class probabilities per face, and an attribution map shows which pixels made it say so."""
from __future__ import annotations

import streamlit as st

from fercore import fmt
from fercore.store.entities import RunStatus
from fercore.ui import classify, figures, state

state.require_app(__file__)
st.title("What does the model see?")
store = state.get_store()
finished = [r for r in store.list_runs(status=RunStatus.FINISHED) if r.checkpoint]
by_id = {r.id: r for r in finished}
if [r.name for r in store.list_runs(limit=2)] == ["starter"]:   # a fresh lab: only the shipped model
    st.info("Upload a photo to try the starter model; import FER2013 on the Data page to train your own.",
            icon=":material/waving_hand:")

# --- inputs ----------------------------------------------------------------------------------------------
left, right = st.columns([3, 2])
with left:
    upload = st.file_uploader("Upload a photo with one or more faces", type=["jpg", "jpeg", "png", "webp"],
                              key="classify_upload")
    if st.toggle("Use the webcam instead", key="classify_use_camera"):
        shot = st.camera_input("Take a photo", key="classify_camera")
        upload = shot or upload
with right:
    if not finished:
        st.warning("No trained model yet. Train one on the Train page (the synthetic demo set trains in a minute "
                   "on a CPU), or import a run file on the Runs page.")
        st.stop()
    starter = [r.id for r in finished if r.name == "starter"][:1]
    if "classify_runs" not in st.session_state:   # first visit, or back from another page
        st.session_state["classify_runs"] = st.session_state.get("_classify_runs") or starter or [finished[0].id]
    st.session_state["classify_runs"] = [i for i in st.session_state["classify_runs"] if i in by_id][:4]
    chosen = st.multiselect("Models (saved runs)", list(by_id), key="classify_runs", max_selections=4,
                            format_func=lambda i: f"{by_id[i].name} · {fmt.accuracy_label(by_id[i])}",
                            help="Pick several to see them side by side. 'starter' is the model shipped with the lab.")
    st.session_state["_classify_runs"] = chosen
    from fercore.predict import ATTRIBUTION_METHODS as METHODS
    method = st.selectbox("Explanation", list(METHODS), format_func=METHODS.get, key="classify_method",
                          help="Saliency: gradient of the class score per pixel. Integrated Gradients: gradients "
                               "averaged from a black image to this one. Grad-CAM: where the last conv layer "
                               "looks. Occlusion: how much the score drops when a patch is hidden.")

if upload is None:
    st.info("Upload a photo (JPEG, PNG or WebP) or switch on the webcam. Faces are found automatically; "
            "a tight face crop works too.")
    st.stop()
if not chosen:
    st.warning("Pick at least one model above.")
    st.stop()

det = None
with state.shown_errors("Reading the photo"):
    det = classify.detect(upload.getvalue())
if det is None:
    st.stop()

# --- every chosen run scores every face ------------------------------------------------------------------
results, predict_s = {}, 0.0
for rid in chosen:
    with state.shown_errors(f"Loading model {by_id[rid].name}"):
        pred = state.get_predictor(by_id[rid])
        probs, seconds = classify.scores(pred, det.crops)
        results[rid] = (pred, probs)
        predict_s += seconds
if not results:
    st.stop()

photo, legend = st.columns([3, 2])
photo.image(det.boxed, caption=None if det.fallback_whole_image else f"{len(det.boxes)} face(s), numbered",
            width="stretch")
with legend:
    if det.fallback_whole_image:   # one sentence (faces.NO_FACE, or why detection cannot run here)
        st.warning(" ".join(det.notes))
    else:
        for note in det.notes:
            st.caption(note)
    timing = st.empty()
    st.markdown(f"**{METHODS[method]}** maps: bright colours mark the pixels that pushed the model most towards "
                "its top class.")
    st.plotly_chart(figures.attribution_colourbar(classify.overlay_colours()), key="colourbar",
                    config={"displayModeBar": False})

explain_s = 0.0
for i, crop in enumerate(det.crops):
    st.subheader("The whole image" if det.fallback_whole_image else f"Face {i + 1}")
    face_col, runs_col = st.columns([1, 4])
    face_col.image(classify.enlarge(crop), caption="as the model sees it (48x48)", width=144)
    with runs_col:
        for rid, (pred, probs) in results.items():
            p = {c: float(v) for c, v in zip(pred.classes, probs[i])}
            top = max(p, key=p.get)
            bars, heat = st.columns([2.2, 1])
            bars.plotly_chart(figures.probability_bars(p, f"{by_id[rid].name}: {top} ({p[top]:.0%})"),
                              key=f"bars-{i}-{rid}", config={"displayModeBar": False})
            with heat, state.shown_errors("The explanation"):
                img, note, seconds = classify.explain(rid, str(by_id[rid].checkpoint), crop,
                                                      pred.classes.index(top), method)
                explain_s += seconds
                st.image(img, caption=f"{METHODS[method]} for {top}", width=160)
                if note:
                    st.caption(note)

timing.caption(f"Face detection {det.seconds * 1000:.0f} ms; classified by {len(results)} model(s) in "
               f"{predict_s * 1000:.0f} ms; explained in {explain_s * 1000:.0f} ms.")
st.container(key="classify_result")   # an empty marker: the result is complete (tests/load_class.py waits for it)
