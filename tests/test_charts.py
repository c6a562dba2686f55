"""The pages' ECharts options (fercore/charts.py): what each chart claims is what the data says, and every option is
plain JSON that st.echarts_chart accepts (no NaN, no JavaScript)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fercore import charts, figures

CLASSES = ["angry", "happy", "sad"]


def as_json(option: dict) -> dict:
    return json.loads(json.dumps(charts.spec(option), allow_nan=False))


def epochs(n: int, nan_at: int | None = None) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_acc": 0.1 * e,
             "val_acc": float("nan") if e == nan_at else 0.09 * e, "grad_norms": {"conv1": 0.0 if e == 1 else 0.1,
                                                                                     "fc": 2.0 * e}}
            for e in range(1, n + 1)]


def test_probability_bars_show_percent_in_class_order_with_the_top_class_highlighted():
    option = as_json(charts.probability_bars({"angry": 0.1, "happy": 0.7, "sad": 0.2}, "m: happy (70%)"))
    assert option["yAxis"]["data"] == CLASSES and option["yAxis"]["inverse"], "first class on top"
    bars = option["series"][0]["data"]
    assert [b["value"] for b in bars] == [10.0, 70.0, 20.0]
    assert [b["itemStyle"]["color"] for b in bars] == [figures.MUTED, figures.ACCENT, figures.MUTED]
    assert option["title"]["text"] == "m: happy (70%)" and option["animation"] is False
    assert charts.height(charts.probability_bars({"a": 1.0})) < charts.height(charts.probability_bars(
        {c: 0.1 for c in "abcdefg"})), "a bar per class: more classes, a taller chart"


def test_learning_curves_one_legend_entry_per_run_train_dashed_gaps_kept():
    option = as_json(charts.learning_curves([("1 · a", epochs(3, nan_at=2)), ("2 · b", epochs(3))], "acc"))
    names = [s["name"] for s in option["series"]]
    assert names == ["1 · a", "1 · a", "2 · b", "2 · b"], "a run's two curves share its name (one legend entry)"
    assert [s["lineStyle"]["type"] for s in option["series"]] == ["dashed", "solid"] * 2
    assert option["series"][1]["data"] == [[1, 9.0], [2, None], [3, 27.0]], "percent; a NaN stays a gap"
    assert option["series"][0]["lineStyle"]["color"] != option["series"][2]["lineStyle"]["color"]
    assert option["yAxis"]["axisLabel"]["formatter"] == "{value} %"
    single = as_json(charts.learning_curves([("a", epochs(2))], "loss", smoothing=0.5))
    assert [s["name"] for s in single["series"]] == ["train", "val"]
    assert single["series"][0]["data"][1][1] == pytest.approx(figures.smooth([1.0, 0.5], 0.5)[1])
    eight = charts.learning_curves([(f"run {i}", epochs(2)) for i in range(8)], "loss")
    assert charts.height(eight) > charts.height(charts.learning_curves([("a", epochs(2))], "loss")), \
        "the legend's rows below the plot make room for themselves"


def test_confusion_heatmap_rows_true_columns_predicted_labelled_and_named():
    cm = [[8, 2, 0], [1, 9, 0], [0, 0, 0]]
    option = as_json(charts.confusion_heatmap(cm, CLASSES, True, "run: 85 %"))
    cells = {(d["value"][4], d["value"][5]): d for d in option["series"][0]["data"]}
    assert cells["angry", "angry"]["value"][2] == pytest.approx(0.8) and cells["angry", "angry"]["value"][3] == "80%"
    assert cells["angry", "happy"]["value"][:2] == [1, 0], "x is the prediction, y the true class"
    assert cells["sad", "sad"]["value"][3] == "0%", "a class with no images is a row of zeros, not NaN"
    assert cells["happy", "happy"]["label"]["color"] == "#ffffff" and cells["angry", "sad"]["label"]["color"] != \
        "#ffffff", "white text on dark cells only"
    assert option["visualMap"]["max"] == 1.0 and "{@[4]}" in option["tooltip"]["formatter"]
    counts = as_json(charts.confusion_heatmap(cm, CLASSES, False))
    assert counts["visualMap"]["max"] == 9.0 and {d["value"][3] for d in counts["series"][0]["data"]} >= {"8", "9"}


def test_confusion_difference_is_centred_on_zero():
    option = as_json(charts.confusion_difference([[10, 0], [0, 10]], [[5, 5], [0, 10]], ["a", "b"]))
    assert option["visualMap"]["min"] == -option["visualMap"]["max"] == pytest.approx(-0.5)
    assert {tuple(d["value"][4:]): d["value"][3] for d in option["series"][0]["data"]}[("a", "b")] == "+50%"


def test_gradient_norms_on_a_shared_log_scale_without_zeros():
    eps = epochs(3)
    shared = figures.gradient_norm_range([eps, [{"epoch": 1, "grad_norms": {"fc": 1e-4}}]])
    option = as_json(charts.gradient_norms(eps, "run", shared))
    assert option["yAxis"]["type"] == "log"
    assert option["yAxis"]["min"] == pytest.approx(10 ** shared[0]) and option["yAxis"]["max"] == \
        pytest.approx(10 ** shared[1])
    conv1 = next(s for s in option["series"] if s["name"] == "conv1")
    assert conv1["data"][0] == [1, None], "a zero norm has no place on a log axis: a gap, not a crash"
    assert len({s["lineStyle"]["color"] for s in option["series"]}) == 2, "one shade per layer"


def test_per_class_bars_one_series_per_run_in_percent():
    frame = pd.DataFrame([{"run": r, "class": c, "f1": v} for r, vals in (("a", (0.5, 0.25, 1.0)),
                                                                          ("b", (0.1, 0.2, 0.3)))
                          for c, v in zip(CLASSES, vals)])
    option = as_json(charts.per_class_bars(frame, "f1"))
    assert option["xAxis"]["data"] == CLASSES
    assert [(s["name"], s["data"]) for s in option["series"]] == [("a", [50.0, 25.0, 100.0]), ("b", [10.0, 20.0, 30.0])]


def test_class_balance_skips_empty_splits_and_pixel_histogram_says_when_it_clips():
    balance = as_json(charts.class_balance({"train": {"a": 3, "b": 1}, "val": {"a": 0, "b": 0}}))
    assert [(s["name"], s["data"]) for s in balance["series"]] == [("train", [3, 1])]
    rng = np.random.default_rng(0)
    padded = np.concatenate([np.zeros(5000), rng.integers(1, 256, 5000)]).astype(np.uint8)
    hist = as_json(charts.pixel_histogram({"train": padded, "val": np.zeros(0, np.uint8)}))
    assert [s["name"] for s in hist["series"]] == ["train"]
    assert "pixel value 0" in hist["title"]["text"] and hist["yAxis"]["max"] < 50
    assert "title" not in as_json(charts.pixel_histogram({"train": rng.integers(0, 256, 9000).astype(np.uint8)}))


def test_parallel_coordinates_log_axis_for_wide_ranges_categories_for_text():
    rows = [{"params": {"lr": lr, "optimizer": opt, "dropout": d}, "best_val_acc": acc}
            for lr, opt, d, acc in ((1e-4, "adam", 0.1, 0.4), (1e-2, "sgd", 0.3, 0.5), (1e-3, "adam", 0.2, 0.45))]
    rows.append({"params": {"lr": 1e-1, "optimizer": "sgd", "dropout": 0.5}, "best_val_acc": None})   # not done
    option = as_json(charts.parallel_coordinates(rows, ["lr", "optimizer", "dropout"]))
    axes = option["parallelAxis"]
    assert [(a["name"], a["type"]) for a in axes] == [("lr (log)", "log"), ("optimizer", "category"),
                                                      ("dropout", "value"), ("best val acc", "value")]
    assert axes[1]["data"] == ["adam", "sgd"]
    assert option["series"][0]["data"] == [[1e-4, "adam", 0.1, 40.0], [1e-2, "sgd", 0.3, 50.0],
                                           [1e-3, "adam", 0.2, 45.0]], "finished trials only"
    assert option["visualMap"]["dimension"] == 3


def test_colour_ramp_is_the_overlays_own_colours():
    html = charts.colour_ramp_html(np.array([[0, 0, 128], [255, 0, 0]]))
    assert "linear-gradient(to right, rgb(0,0,128), rgb(255,0,0))" in html and "high attribution" in html


def test_every_chart_is_plain_json_for_a_run_that_diverged():
    """A run whose loss went to infinity and accuracy to NaN still draws (gaps), never an invalid option."""
    eps = [{"epoch": 1, "train_loss": math.inf, "val_loss": float("nan"), "train_acc": None, "val_acc": 0.1,
            "grad_norms": {"fc": math.inf}}]
    for option in (charts.learning_curves([("x", eps)], "loss"), charts.learning_curves([("x", eps)], "acc"),
                   charts.gradient_norms(eps)):
        as_json(option)
