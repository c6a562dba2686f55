"""The Compare page's cached charts (fercore/ui/cached.py): a second tab on the same comparison builds nothing, and
a run that changed (a new epoch, a new evaluation, a new name) is drawn anew."""
from __future__ import annotations

import dataclasses

import pytest

from fercore import charts
from fercore.config import RunConfig
from fercore.store.entities import Evaluation, Run, RunStatus
from fercore.ui import cached


def epoch(n: int) -> dict:
    return {"epoch": n, "train_loss": 1.0 / n, "val_loss": 1.1 / n, "train_acc": 0.1 * n, "val_acc": 0.09 * n,
            "grad_norms": {"conv1": 0.5 / n}}


def run(rid: int, epochs: int = 3, **changes) -> Run:
    ev = Evaluation(split="test", accuracy=0.5, n=4, classes=("happy", "sad"), confusion=((1, 1), (0, 2)),
                    per_class={}, created_at="2026-12-04T10:00:00")
    return dataclasses.replace(Run(id=rid, name=f"run-{rid}", status=RunStatus.FINISHED, config=RunConfig(),
                                   epochs=tuple(epoch(i) for i in range(1, epochs + 1)), test=ev,
                                   summary={"epochs_done": epochs}), **changes)


@pytest.fixture
def builds(monkeypatch):
    """Counts the pure builders' calls; every test starts with empty caches."""
    calls = []
    for name in ("learning_curves", "confusion_heatmap", "gradient_norms"):
        real = getattr(charts, name)
        monkeypatch.setattr(charts, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    for fn in (cached._learning_curves, cached._confusion_heatmap, cached._gradient_norms):
        fn.clear()
    return calls


def test_a_second_tab_on_the_same_comparison_builds_no_chart(builds):
    runs = [run(1), run(2)]
    labels = {r.id: f"{r.id} · {r.name}" for r in runs}
    first = cached.learning_curves(runs, labels, "loss", 0.0)
    again = cached.learning_curves([run(1), run(2)], labels, "loss", 0.0)   # a fresh tab reads the runs anew
    assert again is first and builds == ["learning_curves"]
    cm = cached.confusion_heatmap(runs[0], runs[0].test, True, "t")
    assert cached.confusion_heatmap(run(1), run(1).test, True, "t") is cm
    assert cached.gradient_norms(runs[0], "a", None) is cached.gradient_norms(run(1), "a", None)
    assert builds == ["learning_curves", "confusion_heatmap", "gradient_norms"]


def test_a_run_that_changed_is_drawn_anew(builds):
    labels = {1: "1", 2: "2"}
    before = cached.learning_curves([run(1), run(2)], labels, "loss", 0.0)
    grown = cached.learning_curves([run(1, epochs=4), run(2)], labels, "loss", 0.0)   # one more epoch
    assert grown is not before and len(grown["series"][0]["data"]) == 4
    assert cached.learning_curves([run(1), run(2)], labels, "loss", 0.5) is not before, "another smoothing"
    re_evaluated = run(1, test=dataclasses.replace(run(1).test, confusion=((2, 0), (0, 2)), created_at="later"))
    assert cached.confusion_heatmap(re_evaluated, re_evaluated.test, False, "t") is not \
        cached.confusion_heatmap(run(1), run(1).test, False, "t")
    assert cached.fingerprint(run(1, name="renamed")) != cached.fingerprint(run(1))
    assert cached.fingerprint(run(1, heartbeat_at="now", progress={"batch": 3})) == cached.fingerprint(run(1)), \
        "a heartbeat is not a change of what is drawn"
