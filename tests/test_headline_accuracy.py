"""The number people read: which split a run's accuracy is, said everywhere, and evaluations made in one stated
precision so that `evaluate` reproduces a run's own stored numbers exactly."""
import json

import pytest

from fercore import fmt, train
from fercore.cli import main
from fercore.config import RunConfig
from fercore.store import RunStore
from fercore.store.entities import Evaluation, Run, RunStatus
from fercore.ui.tables import runs_frame

TINY_FLAGS = ["--epochs", "1", "--conv-blocks", "2", "--filters", "8,16", "--convs-per-block", "1",
              "--fc-units", "16", "--batch-size", "32"]


@pytest.fixture
def bf16_everywhere(monkeypatch):
    """Training under bf16 autocast whatever this CPU computes natively, so that a machine without AVX-512 BF16
    checks what one with it would do."""
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert train.uses_amp(train.RunConfig(), train.pick_device("cpu"))


def test_evaluate_reproduces_the_stored_confusion_of_a_run_trained_in_bf16(db, bf16_everywhere, capsys):
    data = "synthetic:2100:5"   # 525 val and 525 test rows: bf16 flips a few close calls there
    assert main(["--db", db, "--json", "train", "--data", data, *TINY_FLAGS, "--split", "random",
                 "--split-ratios", "0.5,0.25,0.25", "--name", "bf16run"]) == 0
    capsys.readouterr()
    run = RunStore(db).get_run("bf16run")
    assert "bf16" in run.device, run.device   # it really trained under autocast
    for split, stored in (("test", run.test), ("val", run.val)):
        assert stored.precision == "fp32"
        assert main(["--db", db, "--json", "evaluate", "bf16run", "--data", data, "--split", split]) == 0
        ev = json.loads(capsys.readouterr().out)
        assert ev["precision"] == "fp32"
        assert ev["confusion"] == [list(r) for r in stored.confusion], split
        assert ev["accuracy"] == stored.accuracy


def evaluation(split: str, accuracy: float) -> Evaluation:
    return Evaluation(split=split, accuracy=accuracy, n=10, classes=("a", "b"), confusion=((5, 0), (0, 5)),
                      per_class={}, precision="fp32")


def test_the_accuracy_of_a_run_is_test_where_it_has_one_and_every_label_says_which():
    both = Run(id=1, name="r", status=RunStatus.FINISHED, config=RunConfig(), val=evaluation("val", 0.62),
               test=evaluation("test", 0.631))
    only_val = Run(id=2, name="v", status=RunStatus.FINISHED, config=RunConfig(), val=evaluation("val", 0.62))
    none = Run(id=3, name="q", status=RunStatus.QUEUED, config=RunConfig())
    assert (both.accuracy, both.accuracy_split, both.val_accuracy) == (0.631, "test", 0.62)
    assert (only_val.accuracy, only_val.accuracy_split) == (0.62, "val")
    assert fmt.accuracy_label(both) == "63.1 % test · 62.0 % val"
    assert fmt.accuracy_label(only_val) == "62.0 % val" and fmt.accuracy_label(none) == "not evaluated"
    assert fmt.headline_accuracy(both) == "63.1 % (test)" and fmt.headline_accuracy(none) == "not evaluated"
    assert both.to_json()["accuracy"] == 0.631 and both.to_json()["accuracy_split"] == "test"
    frame = runs_frame([both, only_val]).set_index("id")
    assert list(frame["scored on"]) == ["test", "val"] and list(frame["accuracy"]) == [0.631, 0.62]
    assert list(frame["val acc"]) == [0.62, 0.62]


def test_the_command_line_says_which_split_each_accuracy_is(db, capsys):
    assert main(["--db", db, "--json", "train", "--data", "synthetic:420", *TINY_FLAGS, "--name", "cli"]) == 0
    trained = json.loads(capsys.readouterr().out)
    run = RunStore(db).get_run("cli")
    assert trained["accuracy"] == run.test.accuracy and trained["accuracy_split"] == "test"
    assert main(["--db", db, "runs", "list"]) == 0
    assert f"{fmt.pct(run.test.accuracy)} test · {fmt.pct(run.val.accuracy)} val" in capsys.readouterr().out
    assert main(["--db", db, "runs", "show", "cli"]) == 0
    assert f"accuracy: {fmt.pct(run.test.accuracy)} test · {fmt.pct(run.val.accuracy)} val" in capsys.readouterr().out
    assert main(["--db", db, "--json", "runs", "list"]) == 0
    [listed] = [r for r in json.loads(capsys.readouterr().out) if r["name"] == "cli"]
    assert listed["accuracy_split"] == "test" and listed["test"]["precision"] == "fp32"
    assert main(["--db", db, "evaluate", "cli", "--data", "synthetic:420", "--split", "test"]) == 0
    assert "fp32" in capsys.readouterr().out
