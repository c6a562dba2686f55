"""What the Streamlit pages share: cached resources (store, predictors, datasets),
table builders and small formatting helpers. Pages stay thin views over these and fercore; the chart
builders live below, in fercore/charts.py (ECharts, for the pages) over fercore/figures.py (Plotly, for the reports).

    state    cached store/predictors/datasets, allowed import folders, the instructor lock
    tables   pandas frames of runs and comparisons
    cached   the Compare page's charts, cached per process by the runs' fingerprints
    draw     one chart on a page (st.echarts_chart at its own height)
    live     the Classify page's live webcam (streamlit-webrtc), with its snapshot fallback
    warmup   the background warm-up of a fresh server
    fmt      numbers, durations and names as people read them
"""
