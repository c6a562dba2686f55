"""What the Streamlit pages share: cached resources (store, predictors, datasets), plotly figure
builders, table builders and small formatting helpers. Pages stay thin views over these and fercore.

    state    cached store/predictors/datasets, allowed import folders, the instructor lock
    figures  plotly figures (pure functions of plain data, testable without Streamlit)
    tables   pandas frames of runs and comparisons
    fmt      numbers, durations and names as people read them
"""
