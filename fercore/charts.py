"""The pages' charts as Apache ECharts options for `st.echarts_chart`: pure functions of plain data (dicts, lists,
arrays), no Streamlit, like fercore.figures, whose Plotly figures the offline reports keep.

Why the pages draw with ECharts (issue 25): the first chart of a browser tab loads its library. Plotly's is 4.7 MB
of JavaScript and cost a fresh tab about 1 s of CPU before its first chart was drawn; ECharts' is 1.2 MB and cost
about 0.35 s (a one-chart page in a new Chromium context, 2-core EPYC). The reports embed their library in one
offline file and export pictures through kaleido, so they stay on Plotly; the colours, smoothing and scales come
from fercore.figures, so a chart reads the same on a page and in a report.

Every chart is drawn without animation: a class's pages redraw often (the live bars a few times a second) and a
chart should show its numbers at once. Values shown as percentages are sent as percent points (0-100), since an
ECharts option carries no JavaScript to format a fraction.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from fercore.figures import (
    ACCENT,
    AXIS_SPACE,
    LEGEND_ROW,
    MUTED,
    SPLIT_COLOURS,
    colour,
    layer_shades,
    legend_rows,
    max_epoch,
    row_normalise,
    smooth,
)

TITLE = {"fontSize": 13, "fontWeight": "bold"}
BLUES = ["#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b"]        # Plotly's "Blues", light to dark
RED_BLUE = ["#b2182b", "#ef8a62", "#f7f7f7", "#67a9cf", "#2166ac"]     # Plotly's "RdBu": fewer red, more blue
VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]


def _chart(height: int, title: str = "", **option) -> dict:
    """The option every chart shares; its height in pixels goes to st.echarts_chart (see `height`)."""
    base = {"animation": False, "_height": height}
    if title:
        base["title"] = {"text": title, "textStyle": TITLE, "left": 0}
    return {**base, **option}


def height(option: dict) -> int:
    return int(option.get("_height", 320))


def spec(option: dict) -> dict:
    """The option as st.echarts_chart takes it (without this module's own keys)."""
    return {k: v for k, v in option.items() if not k.startswith("_")}


def _pct(v) -> float | None:
    v = _finite(v)
    return None if v is None else round(100 * v, 2)


# --- Classify ------------------------------------------------------------------------------------------------
def probability_bars(probs: dict[str, float], title: str = "") -> dict:
    """Horizontal bars of class probabilities in the classes' own order, top to bottom, the top class highlighted."""
    classes = list(probs)
    top = max(classes, key=probs.get)
    data = [{"value": round(100 * float(probs[c]), 1), "itemStyle": {"color": ACCENT if c == top else MUTED}}
            for c in classes]
    return _chart(40 + 26 * len(classes) + (24 if title else 0), title,
                  grid={"left": 8, "right": 48, "top": 30 if title else 6, "bottom": 6, "containLabel": True},
                  xAxis={"type": "value", "min": 0, "max": 100, "show": False},
                  yAxis={"type": "category", "data": classes, "inverse": True,
                         "axisTick": {"show": False}, "axisLine": {"show": False}},
                  tooltip={"trigger": "item", "formatter": "{b}: {c} %"},
                  series=[{"type": "bar", "data": data, "barMaxWidth": 18,
                           "label": {"show": True, "position": "right", "formatter": "{c} %"}}])


# --- Data ----------------------------------------------------------------------------------------------------
def class_balance(class_counts: dict[str, dict[str, int]]) -> dict:
    """Grouped bars: images per class, one bar per split."""
    shown = {s: c for s, c in class_counts.items() if sum(c.values())}
    classes = list(dict.fromkeys(k for c in shown.values() for k in c))
    return _chart(320, legend={"top": 0}, tooltip={"trigger": "axis"},
                  grid={"left": 8, "right": 8, "top": 36, "bottom": 8, "containLabel": True},
                  xAxis={"type": "category", "data": classes},
                  yAxis={"type": "value", "name": "images"},
                  series=[{"type": "bar", "name": split, "data": [counts.get(c, 0) for c in classes],
                           "itemStyle": {"color": SPLIT_COLOURS.get(split)}} for split, counts in shown.items()])


def pixel_histogram(values_by_split: dict[str, np.ndarray]) -> dict:
    """Share of pixels at each intensity (0-255), one line per split. A few pure-black or pure-white values
    (padding, blank images) would flatten the curves: they are clipped, and the chart's title says so."""
    shares = {split: np.bincount(px.ravel(), minlength=256) / px.size for split, px in values_by_split.items()
              if px.size}
    title, top = "", None
    if shares:
        stacked = np.stack(list(shares.values()))
        clip = float(np.percentile(stacked, 99)) * 1.3
        peak = float(stacked.max())
        if peak > clip > 0:
            top = float(f"{100 * clip:.2g}")
            at = int(np.argmax(stacked.max(axis=0)))
            title = f"clipped: pixel value {at} holds {peak:.1%}"
    option = _chart(280, legend={"top": 0, "right": 0}, tooltip={"trigger": "axis", "valueFormatter": "%.2f %%"},
                  grid={"left": 8, "right": 16, "top": 36, "bottom": 8, "containLabel": True},
                  xAxis={"type": "value", "min": 0, "max": 255, "name": "pixel value", "nameLocation": "middle",
                         "nameGap": 26},
                  yAxis={"type": "value", "name": "share of pixels", "max": top,
                         "axisLabel": {"formatter": "{value} %"}},
                  series=[{"type": "line", "name": split, "showSymbol": False,
                           "data": [[i, round(100 * float(v), 4)] for i, v in enumerate(s)],
                           "itemStyle": {"color": SPLIT_COLOURS.get(split)}, "lineStyle": {"width": 1.5}}
                          for split, s in shares.items()])
    if title:
        option["title"] = {"text": title, "textStyle": {"fontSize": 11, "fontWeight": "normal"}, "left": "center"}
    return option


# --- learning curves -------------------------------------------------------------------------------------------
def learning_curves(series: list[tuple[str, list[dict]]], metric: str, smoothing: float = 0.0,
                    chart_height: int = 340) -> dict:
    """Overlaid train (dashed) and val (solid) curves of `metric` ('loss' or 'acc', in percent) for several runs.

    One legend entry per run below the plot (a run's two curves share its name, so clicking it hides both; a single
    run gets "train" and "val"); the chart grows by the legend's rows, as the Plotly one does."""
    single = len(series) == 1
    acc = metric == "acc"
    out = []
    for i, (label, epochs) in enumerate(series):
        for split, dash in (("train", "dashed"), ("val", "solid")):
            y = smooth([e.get(f"{split}_{metric}") for e in epochs], smoothing)
            out.append({"type": "line", "name": split if single else label,
                        "data": [[e["epoch"], _pct(v) if acc else _finite(v)] for e, v in zip(epochs, y)],
                        "showSymbol": len(epochs) < 15, "symbol": "circle", "symbolSize": 5,
                        "connectNulls": False,
                        "lineStyle": {"type": dash, "width": 2, **({} if single else {"color": colour(i)})},
                        "itemStyle": {} if single else {"color": colour(i)}})
    if single:   # train and val in two colours, told apart by the legend
        for s, c in zip(out, (colour(0), colour(1))):
            s["lineStyle"]["color"] = s["itemStyle"]["color"] = c
    rows = legend_rows(2 if single else len(series))
    last = max_epoch(series)
    return _chart(chart_height + LEGEND_ROW * rows,
                  legend={"bottom": 0, "left": 0, "textStyle": {"fontSize": 11}},
                  tooltip={"trigger": "axis", "valueFormatter": "%.1f %%" if acc else "%.4f"},
                  grid={"left": 8, "right": 16, "top": 30, "bottom": AXIS_SPACE + LEGEND_ROW * rows,
                        "containLabel": True},
                  xAxis={"type": "value", "name": "epoch", "nameLocation": "middle", "nameGap": 26, "min": 1,
                         "max": max(last, 2), "minInterval": 1},
                  yAxis={"type": "value", "name": "accuracy" if acc else "loss", "scale": True,
                         "axisLabel": {"formatter": "{value} %" if acc else "{value}"}},
                  series=out)


def _finite(v):
    return float(v) if isinstance(v, numbers.Real) and math.isfinite(v) else None   # numpy numbers too


def gradient_norms(epochs: list[dict], title: str = "", y_range: list[float] | None = None) -> dict:
    """Per-layer weight-gradient norms over epochs on a log axis (vanishing and exploding both show); `y_range`
    (log10 units, figures.gradient_norm_range) gives several runs' charts one scale to compare by eye."""
    layers = list(dict.fromkeys(k for e in epochs for k in (e.get("grad_norms") or {})))
    y_axis = {"type": "log"}   # named in the page's caption: the title sits where an axis name would
    if y_range:
        y_axis.update(min=float(10 ** y_range[0]), max=float(10 ** y_range[1]))
    last = max((e["epoch"] for e in epochs), default=1)
    return _chart(360, title,
                  legend={"type": "scroll", "orient": "vertical", "right": 0, "top": 30, "textStyle": {"fontSize": 10}},
                  tooltip={"trigger": "axis", "valueFormatter": "%.3g"},
                  grid={"left": 8, "right": 170, "top": 40 if title else 24, "bottom": 30, "containLabel": True},
                  xAxis={"type": "value", "name": "epoch", "nameLocation": "middle", "nameGap": 26, "min": 1,
                         "max": max(last, 2), "minInterval": 1},
                  yAxis=y_axis,
                  series=[{"type": "line", "name": layer, "symbolSize": 4, "itemStyle": {"color": c},
                           "lineStyle": {"color": c},
                           "data": [[e["epoch"], _positive((e.get("grad_norms") or {}).get(layer))] for e in epochs]}
                          for layer, c in zip(layers, layer_shades(len(layers)))])


def _positive(v):
    v = _finite(v)
    return v if v is not None and v > 0 else None   # a log axis has no place for 0


# --- confusion ------------------------------------------------------------------------------------------------
def _matrix(shown: np.ndarray, classes: list[str], text: list[list[str]], title: str, lo: float, hi: float,
            colours: list[str], dark) -> dict:
    """A confusion-style heatmap: true class down, prediction across, each cell labelled with its text (white on
    dark cells); the tooltip names both classes."""
    data = [{"value": [j, i, float(shown[i, j]), text[i][j], t, p],
             "label": {"color": "#ffffff" if dark(float(shown[i, j])) else "#1f2937"}}
            for i, t in enumerate(classes) for j, p in enumerate(classes)]
    return _chart(130 + 38 * len(classes), title,
                  grid={"left": 24, "right": 8, "top": 34 if title else 8, "bottom": 30, "containLabel": True},
                  xAxis={"type": "category", "data": classes, "name": "predicted", "nameLocation": "middle",
                         "nameGap": 28, "splitArea": {"show": False}, "axisLabel": {"interval": 0}},
                  yAxis={"type": "category", "data": classes, "name": "true", "inverse": True,
                         "nameLocation": "middle", "nameGap": 62, "axisLabel": {"interval": 0}},
                  visualMap={"show": False, "min": lo, "max": hi, "dimension": 2, "inRange": {"color": colours}},
                  tooltip={"formatter": "true {@[4]}, predicted {@[5]}: {@[3]}"},
                  series=[{"type": "heatmap", "data": data, "label": {"show": True, "formatter": "{@[3]}"},
                           "itemStyle": {"borderColor": "#ffffff", "borderWidth": 1}}])


def confusion_heatmap(cm, classes: list[str], normalize: bool, title: str = "") -> dict:
    """Rows are the true class, columns the prediction; optionally each row scaled to sum 1."""
    m = np.asarray(cm, dtype=float)
    shown = row_normalise(m) if normalize else m
    text = [[f"{v:.0%}" if normalize else f"{int(v)}" for v in row] for row in shown]
    hi = 1.0 if normalize else max(float(shown.max()), 1.0)
    return _matrix(shown, classes, text, title, 0.0, hi, BLUES, lambda v: v > 0.55 * hi)


def confusion_difference(cm_a, cm_b, classes: list[str], title: str = "") -> dict:
    """Row-normalised B minus A: blue where B puts more of a true class, red where fewer."""
    d = row_normalise(np.asarray(cm_b, float)) - row_normalise(np.asarray(cm_a, float))
    lim = max(float(np.abs(d).max()), 0.01)
    return _matrix(d, classes, [[f"{v:+.0%}" for v in row] for row in d], title, -lim, lim, RED_BLUE,
                   lambda v: abs(v) > 0.6 * lim)


def per_class_bars(frame, metric: str) -> dict:
    """Grouped bars of one per-class metric (precision/recall/f1, in percent), one colour per run."""
    groups = list(frame.groupby("run", sort=False))
    classes = list(dict.fromkeys(frame["class"]))
    series = []
    for i, (run, part) in enumerate(groups):
        by_class = dict(zip(part["class"], part[metric]))
        series.append({"type": "bar", "name": str(run), "itemStyle": {"color": colour(i)},
                       "data": [_pct(by_class.get(c)) for c in classes]})
    return _chart(340, legend={"top": 0, "left": 0}, tooltip={"trigger": "axis", "valueFormatter": "%.1f %%"},
                  grid={"left": 8, "right": 8, "top": 44 + 22 * (legend_rows(len(groups), 3) - 1), "bottom": 8,
                        "containLabel": True},
                  xAxis={"type": "category", "data": classes, "axisLabel": {"interval": 0}},
                  yAxis={"type": "value", "min": 0, "max": 100,   # the metric is named beside its chart
                         "axisLabel": {"formatter": "{value} %"}},
                  series=series)


# --- sweeps ---------------------------------------------------------------------------------------------------
def parallel_coordinates(rows: list[dict], params: list[str], metric: str = "best_val_acc") -> dict:
    """One line per finished trial through its settings to its accuracy: wide-ranging positive numbers (learning
    rates) on a log axis, text settings as categories, coloured by the accuracy."""
    done = [r for r in rows if r.get(metric) is not None]
    axes = []
    for k, p in enumerate(params):
        vals = [r["params"].get(p) for r in done]
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            log = min(vals) > 0 and max(vals) / min(vals) >= 10
            axes.append({"dim": k, "name": f"{p} (log)" if log else p, "type": "log" if log else "value",
                         "scale": True})
        else:
            axes.append({"dim": k, "name": p, "type": "category",
                         "data": sorted({str(v) for v in vals})})
    acc = [_pct(r[metric]) for r in done]
    axes.append({"dim": len(params), "name": "best val acc", "type": "value", "scale": True,
                 "axisLabel": {"formatter": "{value} %"}})
    data = [[_value(r["params"].get(p), axes[k]) for k, p in enumerate(params)] + [a] for r, a in zip(done, acc)]
    return _chart(380, parallelAxis=axes,
                  parallel={"left": 60, "right": 90, "top": 40, "bottom": 30},
                  visualMap={"type": "continuous", "dimension": len(params), "min": min(acc, default=0),
                             "max": max(acc, default=100), "inRange": {"color": VIRIDIS}, "right": 0, "top": 40,
                             "text": ["val acc %", ""], "calculable": False, "precision": 1},
                  tooltip={"trigger": "item"},
                  series=[{"type": "parallel", "data": data, "lineStyle": {"width": 2, "opacity": 0.8}}])


def _value(v, axis: dict):
    return str(v) if axis["type"] == "category" else v


def colour_ramp_html(colours: np.ndarray) -> str:
    """The attribution overlay's colour bar, low to high, as a few lines of HTML (a CSS gradient of the overlay's
    own colours): no chart library needed for a legend."""
    stops = ", ".join(f"rgb({r},{g},{b})" for r, g, b in np.asarray(colours).astype(int))
    return (f'<div style="height:14px;border-radius:3px;background:linear-gradient(to right, {stops})"></div>'
            '<div style="display:flex;justify-content:space-between;font-size:0.8rem;opacity:0.75">'
            '<span>low</span><span>high attribution</span></div>')
