"""End to end through the command line: import, train, show, evaluate, export/import, predict, explain."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, cli_env
from PIL import Image

from fercore.cli import main

TINY = ["--data", "synthetic:420", "--conv-blocks", "2", "--filters", "8,16", "--convs-per-block", "1",
        "--fc-units", "16", "--batch-size", "32", "--lr", "0.003", "--tta", "none"]


def cli(capsys, *args) -> tuple[int, object]:
    code = main(list(args))
    out = capsys.readouterr().out.strip()
    return code, json.loads(out) if out else None


@pytest.fixture
def trained(db, capsys):
    code, out = cli(capsys, "train", *TINY, "--epochs", "2", "--name", "tiny", "--db", db, "--json")
    assert code == 0, out
    return out


def test_train_records_epochs_and_test_confusion(db, capsys, trained):
    assert trained["status"] == "finished" and trained["name"] == "tiny"
    code, run = cli(capsys, "runs", "show", str(trained["id"]), "--db", db, "--json")
    assert code == 0
    assert [e["epoch"] for e in run["epochs"]] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s", "grad_norms"):
        assert run["epochs"][0][key] is not None, key
    test = run["test"]
    k = len(run["classes"])
    assert k == 7 and np.array(test["confusion"]).shape == (k, k)
    assert sum(map(sum, test["confusion"])) == test["n"] > 0
    assert set(test["per_class"]) == set(run["classes"])
    assert run["config"]["epochs"] == 2
    code, runs = cli(capsys, "runs", "list", "--db", db, "--json")
    assert any(r["id"] == trained["id"] and "epochs" not in r for r in runs)


def test_class_subset_is_trained_and_evaluated_on_the_subset(db, capsys):
    code, out = cli(capsys, "train", *TINY, "--epochs", "1", "--classes", "happy,sad,neutral", "--db", db, "--json")
    assert code == 0 and out["status"] == "finished"
    code, run = cli(capsys, "runs", "show", str(out["id"]), "--db", db, "--json")
    assert run["classes"] == ["happy", "sad", "neutral"]
    assert np.array(run["test"]["confusion"]).shape == (3, 3)
    code, ev = cli(capsys, "evaluate", str(out["id"]), "--data", "synthetic:420", "--split", "test", "--db", db,
                   "--json")
    assert code == 0 and ev["classes"] == ["happy", "sad", "neutral"] and ev["n"] == run["test"]["n"]
    assert ev["accuracy"] == pytest.approx(run["test"]["accuracy"])


def test_export_import_round_trip_keeps_weights_and_curves(db, tmp_path, capsys, trained):
    f = tmp_path / "shared.fer.pt"
    assert cli(capsys, "runs", "export", "tiny", str(f), "--db", db, "--json")[0] == 0
    other = str(tmp_path / "other.db")
    code, imp = cli(capsys, "runs", "import", str(f), "--name", "from-friend", "--db", other, "--json")
    assert code == 0 and imp["status"] == "finished"
    code, a = cli(capsys, "runs", "show", "tiny", "--db", db, "--json")
    code, b = cli(capsys, "runs", "show", "from-friend", "--db", other, "--json")
    assert [e["val_acc"] for e in a["epochs"]] == [e["val_acc"] for e in b["epochs"]]
    assert b["test"]["confusion"] == a["test"]["confusion"]
    sa = torch.load(a["checkpoint"], weights_only=True)["state_dict"]
    sb = torch.load(b["checkpoint"], weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


class Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_run_file_carrying_pickled_code_is_refused_and_nothing_runs(db, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.fer.pt"
    torch.save({"format": "fercore-run/1", "payload": Exploit()}, bad)
    code, out = cli(capsys, "runs", "import", str(bad), "--db", db, "--json")
    assert code != 0 and "refuses" in out["error"]
    assert not (tmp_path / "PWNED").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Exploit()))
    code, out = cli(capsys, "runs", "import", str(raw), "--db", db, "--json")
    assert code != 0 and "error" in out and not (tmp_path / "PWNED").exists()


def test_predict_and_explain_an_image(db, tmp_path, capsys, trained):
    img = tmp_path / "face.png"
    Image.fromarray((np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)).save(img)
    code, out = cli(capsys, "predict", "tiny", str(img), "--db", db, "--json")
    assert code == 0
    assert out[0]["image"] == str(img) and out[0]["fallback_whole_image"] is True
    face = out[0]["faces"][0]
    assert len(face["box"]) == 4 and abs(sum(face["probs"].values()) - 1) < 1e-4
    assert face["top"] == max(face["probs"], key=face["probs"].get)
    png = tmp_path / "sal.png"
    code, ex = cli(capsys, "explain", "tiny", str(img), "--method", "saliency", "--out", str(png), "--db", db,
                   "--json")
    assert code == 0 and png.exists() and Image.open(png).size[0] > 0


@pytest.mark.slow   # five CLI processes
def test_user_errors_are_one_json_sentence_never_a_traceback(db, tmp_path):
    cases = [["runs", "show", "nope"], ["train", "--arch", "custom", "--transfer", "frozen"],
             ["data", "import", str(tmp_path / "missing.csv")], ["evaluate", "nope", "--data", "synthetic"],
             ["train", "--lr", "abc"]]
    for args in cases:
        p = subprocess.run([sys.executable, "-m", "fercore", *args, "--db", db, "--json"], capture_output=True,
                           text=True, cwd=REPO, env=cli_env(), timeout=120)
        assert p.returncode == 2, (args, p.returncode, p.stdout)   # 2: the user's mistake; 1 would be a bug of ours
        assert "Traceback" not in p.stdout + p.stderr, (args, p.stderr)
        msg = json.loads(p.stdout)["error"]
        assert isinstance(msg, str) and "Unexpected error" not in msg, (args, msg)


def test_missing_pretrained_weights_refuse_the_run_and_fail_a_queued_one_with_a_plain_sentence(db, capsys, tmp_path,
                                                                                           monkeypatch, tiny):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
    code, out = cli(capsys, "train", *TINY, "--arch", "resnet18", "--transfer", "frozen", "--image-size", "32",
                    "--epochs", "1", "--db", db, "--json")
    assert code != 0 and "resnet18" in out["error"].lower() and ".pth" in out["error"]
    from fercore.jobs.execute import execute_run
    from fercore.store import RunStatus, RunStore
    store = RunStore(db)
    assert all(r.name == "starter" for r in store.list_runs()), "nothing was queued"
    # a run queued before its file went missing fails with the sentence when a worker reaches it
    run = store.create_run(tiny.replace(arch="resnet18", transfer="frozen", image_size=32, epochs=1),
                           status=RunStatus.RUNNING)
    run = execute_run(store, run.id, device="cpu")
    assert run.status == RunStatus.FAILED
    assert "resnet18" in run.error.lower() and ".pth" in run.error
