"""The number people read: which split a run's accuracy is, said everywhere, and evaluations made in one stated
precision so that `evaluate` reproduces a run's own stored numbers exactly."""
import json

import pytest

from fercore import train
from fercore.cli import main
from fercore.store import RunStore

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
