"""What the Streamlit pages share: cached resources (store, predictors, datasets),
table builders and small formatting helpers. Pages stay thin views over these and fercore; the plotly
figure builders live below, in fercore/figures.py, where the reports reach them too.

    state    cached store/predictors/datasets, allowed import folders, the instructor lock
    tables   pandas frames of runs and comparisons
    fmt      numbers, durations and names as people read them
"""
