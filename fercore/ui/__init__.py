"""What the Streamlit pages share: cached resources (store, predictors, datasets),
table builders and small formatting helpers. Pages stay thin views over these and fercore; the plotly
figure builders live below, in fercore/figures.py, where the reports reach them too.

    state    cached store/predictors/datasets, allowed import folders, the instructor lock
    tables   pandas frames of runs and comparisons
    cached   the Compare page's figures, cached per process by the runs' fingerprints
    live     the Classify page's live webcam (streamlit-webrtc), with its snapshot fallback
    warmup   the background warm-up of a fresh server
    fmt      numbers, durations and names as people read them
"""
