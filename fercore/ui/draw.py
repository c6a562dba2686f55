"""Draw one of fercore.charts' options on a page: st.echarts_chart at the chart's own height, with a stable key (a
chart keeps its identity across reruns, so a redraw with new numbers does not rebuild it)."""
from __future__ import annotations

import streamlit as st

from fercore import charts


def chart(option: dict, key: str, where=None, alt: str | None = None) -> None:
    (where or st).echarts_chart(charts.spec(option), height=charts.height(option), key=key, alt=alt)
