"""Classify: upload a photo or take one; every face is boxed and numbered; each chosen run gives its
class probabilities per face, and an attribution map beside each face crop shows which pixels made it say so.
Switching the explanation method reruns only the explanation fragment, from the cached classification."""
from __future__ import annotations

import streamlit as st

from fercore import charts, fmt
from fercore.predict import ATTRIBUTION_METHODS as METHODS
from fercore.predict import METHOD_READING
from fercore.store.entities import RunStatus
from fercore.ui import classify, live, state
from fercore.ui.draw import chart

state.require_app(__file__)
st.title("What does the model see?")
store = state.get_store()
finished = [r for r in store.list_runs(status=RunStatus.FINISHED) if r.checkpoint]
by_id = {r.id: r for r in finished}
if [r.starter for r in store.list_runs(limit=2)] == [True]:   # a fresh lab: only the shipped model
    st.info("Upload a photo to try the starter model; import FER2013 on the Data page to train your own.",
            icon=":material/waving_hand:")

# --- inputs ----------------------------------------------------------------------------------------------
left, right = st.columns([3, 2])
upload = left.file_uploader("Upload a photo with one or more faces", type=["jpg", "jpeg", "png", "webp"],
                            key="classify_upload")
from_camera = False
with right:
    camera = st.container() if st.toggle("Use the webcam instead", key="classify_use_camera") else None
if not finished:
    st.warning("No trained model yet. Train one on the Train page (the synthetic demo set trains in a minute "
               "on a CPU), or import a run file on the Runs page.")
    st.stop()
starter = [r.id for r in finished if r.starter][:1]   # a flag the instructor sets, never a name
if "classify_runs" not in st.session_state:   # first visit, or back from another page
    st.session_state["classify_runs"] = st.session_state.get("_classify_runs") or starter or [finished[0].id]
st.session_state["classify_runs"] = [i for i in st.session_state["classify_runs"] if i in by_id][:4]
chosen = st.multiselect("Models (saved runs)", list(by_id), key="classify_runs", max_selections=4,   # full width:
                        format_func=lambda i: f"{by_id[i].name} · {fmt.accuracy_label(by_id[i])}",  # 4 labels fit
                        help="Pick several to see them side by side. 'starter' is the model shipped with the lab.")
st.session_state["_classify_runs"] = chosen
if camera is not None:   # live video with the first model picked; a frozen frame or a snapshot comes back as a photo
    with camera:
        shot = live.webcam([by_id[i] for i in chosen])
    from_camera = shot is not None
    upload = shot or upload

photo = classify.keep_photo(upload, from_camera)
if photo is None:
    st.info("Upload a photo (JPEG, PNG or WebP) or switch on the webcam. Faces are found automatically; "
            "a tight face crop works too.")
    st.stop()
if upload is None:   # back from another page: the photo from before
    kept, forget = st.columns([4, 1], vertical_alignment="center")
    kept.caption(f"Showing the photo from before ({photo[0]}).")
    forget.button("Clear the photo", on_click=classify.forget_photo)
if not chosen:
    st.warning("Pick at least one model above.")
    st.stop()

det = None
with state.shown_errors("Reading the photo"):
    det = classify.detect(photo[1])
if det is None:
    st.stop()
if photo[2] and det.fallback_whole_image:   # a webcam frame without a face is not a face to classify
    st.warning("No face found in this webcam frame: face the camera in good light, a little closer, and take "
               "another photo.", icon=":material/no_accounts:")
    st.stop()

# --- every chosen run scores every face (cached per run and photo) ----------------------------------------
results, predict_s = {}, 0.0
for rid in chosen:
    with state.shown_errors(f"Loading model {by_id[rid].name}"):
        probs, seconds = classify.scores(rid, str(by_id[rid].checkpoint), det.crops)
        results[rid] = (state.get_predictor(by_id[rid]).classes, probs)
        predict_s += seconds
if not results:
    st.stop()
tops = {(i, rid): int(probs[i].argmax()) for rid, (_, probs) in results.items() for i in range(len(det.crops))}

shown, legend = st.columns([3, 2])
shown.image(det.boxed, caption=None if det.fallback_whole_image else f"{len(det.boxes)} face(s), numbered",
            width="stretch")
with legend:
    if det.fallback_whole_image:   # one sentence (faces.NO_FACE, or why detection cannot run here)
        st.warning(" ".join(det.notes))
    else:
        for note in det.notes:
            st.caption(note)
    st.caption(f"Face detection {det.seconds * 1000:.0f} ms; classified by {len(results)} model(s) in "
               f"{predict_s * 1000:.0f} ms.")
    for i in range(len(det.crops)):
        st.markdown("**The whole image**" if det.fallback_whole_image else f"**Face {i + 1}**")
        for col, (rid, (classes, probs)) in zip(st.columns(len(results)), results.items()):
            p = {c: float(v) for c, v in zip(classes, probs[i])}
            top = classes[tops[i, rid]]
            chart(charts.probability_bars(p, f"{by_id[rid].name}: {top} ({p[top]:.0%})"), f"bars-{i}-{rid}", col)


# --- why: one map per face and model, beside the face crop; a method switch reruns only this ----------------
@st.fragment
def explanations() -> None:
    st.subheader("Why? Where each model's answer comes from")
    pick, bar = st.columns([1, 2], vertical_alignment="bottom")
    method = pick.selectbox("Explanation method", list(METHODS), format_func=METHODS.get, key="classify_method",
                            help="Saliency (SmoothGrad): gradient of the class score per pixel, averaged over noisy "
                                 "copies. Integrated Gradients: gradients from a black image to this one. Grad-CAM: "
                                 "where the last conv layer finds the class. Occlusion: how much the score drops when "
                                 "a patch is hidden.")
    with bar:
        st.html(charts.colour_ramp_html(classify.overlay_colours()))
    explain_s = 0.0
    for i, crop in enumerate(det.crops):
        cols = st.columns(1 + max(len(results), 2))
        name = "Whole image" if det.fallback_whole_image else f"Face {i + 1}"
        cols[0].image(classify.enlarge(crop), caption=f"{name} as the model sees it (48x48)", width="stretch")
        for col, (rid, (classes, _)) in zip(cols[1:], results.items()):
            with col, state.shown_errors("The explanation"):
                img, note, seconds = classify.explain(rid, str(by_id[rid].checkpoint), crop, tops[i, rid], method)
                explain_s += seconds
                st.image(img, caption=f"{by_id[rid].name}: {METHODS[method]} for {classes[tops[i, rid]]}",
                         width="stretch")
                st.caption(METHOD_READING[method])
                slot = st.empty()   # the same elements for every method: no stale note left after a switch
                if note:
                    slot.caption(f":orange[{note}]")
    st.caption(f"Explained in {explain_s * 1000:.0f} ms.")


explanations()
st.container(key="classify_result")   # an empty marker: the result is complete (tests/load_class.py waits for it)
