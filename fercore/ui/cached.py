"""The Compare page's charts, built once per process for the same runs in the same state, shared by every tab.

Each is keyed by what it shows: the runs' fingerprints (id, status, epochs done, when it finished, when its evaluation
was made) and the page's choices, so a chart is rebuilt exactly when its run changed and a class opening the same
comparison builds it once. The chart builders stay pure (fercore.charts); this is the thin cached layer over
them. `st.cache_resource`, not `st.cache_data`: the page only reads an option, and cache_data's pickled copy per
hit cost more than building it (measured with Plotly figures: 34 ms against 24 ms for two runs' learning curves).
"""
from __future__ import annotations

import streamlit as st

from fercore import charts


def fingerprint(run) -> tuple:
    """What changes when a run's name, curves or evaluations change (not its heartbeat or progress)."""
    evals = tuple(e.created_at if e else None for e in (run.val, run.test))
    return (run.id, run.name, str(run.status), (run.summary or {}).get("epochs_done"), len(run.epochs or ()),
            run.finished_at, evals)


def learning_curves(runs, labels: dict, metric: str, smoothing: float):
    series = [(labels[r.id], r.epochs) for r in runs if r.epochs]
    return _learning_curves(tuple(map(fingerprint, runs)), tuple(labels.items()), metric, smoothing, series)


@st.cache_resource(max_entries=64, show_spinner=False)
def _learning_curves(key, label_key, metric, smoothing, _series):
    return charts.learning_curves(_series, metric, smoothing)


def confusion_heatmap(run, ev, normal: bool, title: str):
    return _confusion_heatmap(fingerprint(run), ev.split, normal, title, _ev=ev)


@st.cache_resource(max_entries=64, show_spinner=False)
def _confusion_heatmap(key, split, normal, title, _ev):
    return charts.confusion_heatmap(_ev.confusion, _ev.classes, normal, title)


def confusion_difference(run_a, ev_a, run_b, ev_b, title: str):
    return _confusion_difference(fingerprint(run_a), fingerprint(run_b), ev_a.split, title, _evs=(ev_a, ev_b))


@st.cache_resource(max_entries=32, show_spinner=False)
def _confusion_difference(key_a, key_b, split, title, _evs):
    a, b = _evs
    return charts.confusion_difference(a.confusion, b.confusion, a.classes, title)


def per_class_bars(runs, split: str, frame, metric: str):
    return _per_class_bars(tuple(map(fingerprint, runs)), split, metric, _frame=frame)


@st.cache_resource(max_entries=32, show_spinner=False)
def _per_class_bars(key, split, metric, _frame):
    return charts.per_class_bars(_frame, metric)


def gradient_norms(run, label: str, shared_range):
    return _gradient_norms(fingerprint(run), label, tuple(shared_range or ()), _epochs=run.epochs)


@st.cache_resource(max_entries=64, show_spinner=False)
def _gradient_norms(key, label, shared_range, _epochs):
    return charts.gradient_norms(_epochs, label, list(shared_range) or None)
