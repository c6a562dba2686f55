"""Plotly figures for the offline lab reports (fercore.report), and what every chart of FER Lab shares: the
colours, the smoothing, the normalisation and the scales. Pure functions of plain data, no Streamlit.

The pages draw with ECharts (fercore.charts, built on the helpers here; why is said there). One colour per run
across every chart of a page or report (RUN_COLOURS by position), train dashed and val solid on learning curves,
a diverging scale centred on 0 for differences.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

RUN_COLOURS = ["#3b6ea8", "#d9822b", "#4a9a6a", "#b5485d", "#7a5ea8", "#8c6d46", "#c4739f", "#6f7f8f"]
SPLIT_COLOURS = {"train": "#3b6ea8", "val": "#d9822b", "test": "#4a9a6a"}
ACCENT, MUTED = "#3b6ea8", "#b8c4d2"


def _layout(fig: go.Figure, height: int = 320, **kw) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40 if kw.get("title") else 10, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), **kw)
    return fig


def colour(i: int) -> str:
    return RUN_COLOURS[i % len(RUN_COLOURS)]


# --- learning curves -------------------------------------------------------------------------------------------
def smooth(values: list, strength: float) -> list:
    """Exponential moving average (TensorBoard style); gaps (None/NaN) stay gaps."""
    if strength <= 0:
        return list(values)
    out, last = [], None
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        last = v if last is None else strength * last + (1 - strength) * v
        out.append(last)
    return out


def learning_curves(series: list[tuple[str, list[dict]]], metric: str, smoothing: float = 0.0,
                    height: int = 340) -> go.Figure:
    """Overlaid train (dashed) and val (solid) curves of `metric` ('loss' or 'acc') for several runs.

    The legend lies in rows below the plot, one entry per run (clicking it hides both of its curves; one run gets
    "train" and "val"), and the figure grows by its rows: eight names above the plot squeezed it to a strip."""
    fig = go.Figure()
    single = len(series) == 1
    for i, (label, epochs) in enumerate(series):
        x = [e["epoch"] for e in epochs]
        for split, dash in (("train", "dash"), ("val", "solid")):
            y = smooth([e.get(f"{split}_{metric}") for e in epochs], smoothing)
            fig.add_scatter(x=x, y=y, mode="lines+markers" if len(x) < 15 else "lines",
                            name=split if single else label, showlegend=single or split == "val",
                            line=dict(color=colour(i), dash=dash), marker=dict(size=5), legendgroup=label,
                            hovertemplate=f"{label} {split} {metric}: %{{y:.4f}} (epoch %{{x}})<extra></extra>")
    fig.update_xaxes(title="epoch", dtick=1 if max_epoch(series) <= 20 else None)
    values = [v for _, epochs in series for e in epochs for k in ("train_acc", "val_acc")
              if isinstance(v := e.get(k), (int, float)) and math.isfinite(v)]
    fig.update_yaxes(title="accuracy" if metric == "acc" else "loss",
                     tickformat=percent_ticks(values) if metric == "acc" else None)
    rows = legend_rows(2 if single else len(series))
    fig = _layout(fig, height=height + LEGEND_ROW * rows)
    fig.update_layout(legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0,
                                  font=dict(size=11)),
                      margin=dict(b=AXIS_SPACE + LEGEND_ROW * rows))
    return fig


def percent_ticks(values: list[float]) -> str:
    """A percent tick format with enough decimals that ticks over this span read differently (plotly puts ~5
    ticks on an axis: 21-22 % needs one decimal, or every tick reads 22 %, 22 %, 21 %, 21 %)."""
    span = (max(values) - min(values)) * 100 if values else 100.0
    step = span / 5 if span > 0 else 0.1
    return f".{min(max(0, math.ceil(-math.log10(step))), 3)}%"


LEGEND_ROW = 22     # pixels per row of a legend below a chart
AXIS_SPACE = 50     # pixels below a plot for its tick labels and axis title


def legend_rows(entries: int, per_row: int = 2) -> int:
    """Rows a horizontal legend takes in a half-width chart (two run names a row, to be safe)."""
    return max(1, math.ceil(entries / per_row))


def max_epoch(series) -> int:
    """The last epoch of several runs' curves (0 with none)."""
    return max((e["epoch"] for _, eps in series for e in eps), default=0)


def gradient_norms(epochs: list[dict], title: str = "", y_range: list[float] | None = None) -> go.Figure:
    """Per-layer gradient norms over epochs (log scale: vanishing and exploding both show). `y_range`
    (log10 units, from `gradient_norm_range`) gives several runs' charts one scale to compare by eye."""
    layers = list(dict.fromkeys(k for e in epochs for k in (e.get("grad_norms") or {})))
    fig = go.Figure()
    shades = layer_shades(len(layers))
    for layer, c in zip(layers, shades):
        fig.add_scatter(x=[e["epoch"] for e in epochs], y=[(e.get("grad_norms") or {}).get(layer) for e in epochs],
                        mode="lines+markers", name=layer, line=dict(color=c), marker=dict(size=4))
    fig.update_yaxes(type="log", title="weight-gradient L2 norm, log scale", range=y_range)
    n_epochs = max((e["epoch"] for e in epochs), default=1)
    fig.update_xaxes(title="epoch", dtick=1 if n_epochs <= 20 else None, range=[0.8, n_epochs + 0.2] if n_epochs <= 2
                     else None)
    fig.update_layout(legend=dict(orientation="v", x=1.02, y=1, font=dict(size=10)))
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      title=dict(text=title, font=dict(size=13)) if title else None)
    return fig


def gradient_norm_range(runs_epochs: list[list[dict]]) -> list[float] | None:
    """One log-axis range [log10 low, log10 high] holding every positive gradient norm of several runs, with a
    little room; None when there is none."""
    values = [v for epochs in runs_epochs for e in epochs for v in (e.get("grad_norms") or {}).values()
              if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
    if not values:
        return None
    low, high = math.log10(min(values)), math.log10(max(values))
    pad = max(0.1, 0.05 * (high - low))
    return [low - pad, high + pad]


def layer_shades(n: int) -> list[str]:
    """n colours from the first layer (light) to the last (dark), so depth reads at a glance."""
    if n <= 1:
        return [ACCENT] * n
    return [f"hsl({210 - 170 * i / (n - 1):.0f},55%,{62 - 30 * i / (n - 1):.0f}%)" for i in range(n)]


# --- confusion ------------------------------------------------------------------------------------------------
def confusion_heatmap(cm, classes: list[str], normalize: bool, title: str = "") -> go.Figure:
    """Rows are the true class, columns the prediction; optionally each row scaled to sum 1."""
    m = np.asarray(cm, dtype=float)
    shown = row_normalise(m) if normalize else m
    text = [[f"{v:.0%}" if normalize else f"{int(v)}" for v in row] for row in shown]
    fig = go.Figure(go.Heatmap(z=shown, x=classes, y=classes, colorscale="Blues", text=text,
                               texttemplate="%{text}", zmin=0, zmax=1 if normalize else None,
                               hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="true")
    fig.update_xaxes(title="predicted", side="bottom")
    return _layout(fig, height=120 + 38 * len(classes), title=dict(text=title, font=dict(size=13)) if title else None)


def confusion_difference(cm_a, cm_b, classes: list[str], title: str = "") -> go.Figure:
    """Row-normalised B minus A: blue where B puts more of a true class, red where fewer."""
    d = row_normalise(np.asarray(cm_b, float)) - row_normalise(np.asarray(cm_a, float))
    lim = max(float(np.abs(d).max()), 0.01)
    fig = go.Figure(go.Heatmap(z=d, x=classes, y=classes, colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                               text=[[f"{v:+.0%}" for v in row] for row in d], texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="true")
    fig.update_xaxes(title="predicted")
    return _layout(fig, height=120 + 38 * len(classes), title=dict(text=title, font=dict(size=13)) if title else None)


def row_normalise(m: np.ndarray) -> np.ndarray:
    s = m.sum(axis=1, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m, dtype=float), where=s > 0)


def per_class_bars(frame, metric: str) -> go.Figure:
    """Grouped bars of one per-class metric (precision/recall/f1), one colour per run."""
    fig = go.Figure()
    for i, (run, part) in enumerate(frame.groupby("run", sort=False)):
        fig.add_bar(name=run, x=part["class"], y=part[metric], marker_color=colour(i),
                    hovertemplate=f"{run} %{{x}}: %{{y:.1%}}<extra></extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title=metric)
    return _layout(fig)
