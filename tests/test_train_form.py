"""Issue 23, part 1: the Train form a student reads (first view, Advanced, settings that apply, the preset's
description, a fresh name, warnings about settings that cannot teach anything) and the same table behind `--help`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fercore.config import RunConfig, applies, config_fields
from fercore.presets import describe_config, preset_config
from fercore.store import RunStore
from fercore.teach.estimate import teaching_warnings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def train_page(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")
    monkeypatch.setenv("FER_DB_URL", str(tmp_path / "runs.db"))
    from fercore.ui import state
    monkeypatch.setattr(state, "training_device", lambda: "CPU (no GPU found)")
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def widget_keys(at) -> set[str]:
    return {w.key for kind in ("number_input", "selectbox", "checkbox", "text_input", "multiselect", "toggle")
            for w in at.get(kind) if w.key}


def test_the_field_table_says_when_a_setting_applies():
    assert applies("momentum", RunConfig(optimizer="sgd")) and not applies("momentum", RunConfig(optimizer="adamw"))
    assert not applies("plateau_factor", {"schedule": "onecycle"})
    assert applies("plateau_factor", {"schedule": "plateau"})
    assert not applies("split_ratios", RunConfig()) and applies("split_ratios", {"split": "random"})
    assert not applies("transfer", RunConfig()) and applies("transfer", {"arch": "vgg16"})
    assert not applies("filters", {"arch": "resnet18"})
    assert applies("fc_units", {"arch": "resnet18", "transfer": "frozen"})
    assert all(f.metadata["label"] and f.metadata["help"] for f in config_fields())
    out = subprocess.run([sys.executable, "-m", "fercore", "train", "--help"], cwd=REPO, capture_output=True, text=True)
    assert "only when optimizer is sgd" in " ".join(out.stdout.split()), "--help reads the same table"


def test_first_view_holds_what_a_student_decides_and_advanced_hides_what_does_not_apply(train_page):
    at = train_page
    keys = widget_keys(at)
    assert {"cfg_arch", "cfg_data", "cfg_data_fraction", "cfg_epochs", "cfg_lr", "train_augment"} <= keys
    assert any(e.label.startswith("Advanced") for e in at.expander)
    labels = {w.label for w in at.number_input}
    assert "Learning rate" in labels and "lr" not in labels, "readable labels, not raw names"
    # cpu-starter: AdamW with one-cycle, FER2013's own split, the custom CNN
    assert not keys & {"cfg_momentum", "cfg_nesterov", "cfg_plateau_factor", "cfg_plateau_patience",
                       "cfg_split_ratios", "cfg_val_fraction", "cfg_transfer", "cfg_input_mode"}
    assert {"cfg_cycle_momentum", "cfg_filters"} <= keys
    at.selectbox(key="cfg_optimizer").set_value("sgd").run()
    at.selectbox(key="cfg_schedule").set_value("plateau").run()
    at.selectbox(key="cfg_split").set_value("random").run()
    keys = widget_keys(at)
    assert {"cfg_momentum", "cfg_nesterov", "cfg_plateau_factor", "cfg_split_ratios"} <= keys
    assert "cfg_cycle_momentum" not in keys
    at.selectbox(key="cfg_arch").set_value("vgg16").run()
    keys = widget_keys(at)
    assert "cfg_transfer" in keys and "cfg_filters" not in keys
    assert at.selectbox(key="cfg_transfer").value == "unfrozen", "an ImageNet net is picked for its weights"
    at.selectbox(key="cfg_arch").set_value("custom").run()
    assert not at.error, "the hidden transfer mode went back to scratch for the custom CNN"


def test_the_preset_description_follows_the_form(train_page):
    at = train_page
    assert describe_config(preset_config("cpu-starter"), "cpu-starter").startswith("A VGG-style CNN")
    assert any(c.value.startswith("A VGG-style CNN") for c in at.caption)
    at.selectbox(key="cfg_arch").set_value("vgg16").run()
    text = " ".join(c.value for c in at.caption)
    assert "Based on preset cpu-starter, changed: model VGG16 (ImageNet) (was Custom CNN)" in text
    assert "A VGG-style CNN" not in text


def test_augmentation_switch_turns_every_augmentation_off_and_back(train_page):
    at = train_page
    before = at.number_input(key="cfg_rotation").value
    assert at.toggle(key="train_augment").value and before > 0
    at.toggle(key="train_augment").set_value(False).run()
    assert at.number_input(key="cfg_rotation").value == 0 and at.number_input(key="cfg_hflip").value == 0
    at.toggle(key="train_augment").set_value(True).run()
    assert at.number_input(key="cfg_rotation").value == before


def test_a_new_run_gets_a_fresh_name_and_settings_that_cannot_teach_are_warned_about(train_page, tmp_path):
    at = train_page
    assert not at.warning, [w.value for w in at.warning]
    at.number_input(key="cfg_data_fraction").set_value(0.001).run()
    at.number_input(key="cfg_epochs").set_value(1).run()
    texts = " ".join(w.value for w in at.warning)
    assert "training images per class" in texts and "share of the training images to at least" in texts
    assert "single point" in texts and "at least 3 epochs" in texts
    at.text_input(key="cfg_name").set_value("mine").run()
    at.button[[b.label for b in at.button].index("Queue this run")].click().run()
    assert at.text_input(key="cfg_name").value == "", "the next run does not inherit this one's name"
    at.button[[b.label for b in at.button].index("Queue this run")].click().run()
    names = [r.name for r in RunStore(str(tmp_path / "runs.db")).list_runs() if r.name != "starter"]
    assert len(names) == 2 and "mine" in names and len(set(names)) == 2, names


def test_teaching_warnings_are_one_function_the_cli_calls_too(tmp_path):
    assert teaching_warnings(RunConfig(data="synthetic", epochs=5)) == []
    few = teaching_warnings(RunConfig(data="fer2013", data_fraction=0.001, epochs=10))
    assert len(few) == 1 and "0.05" in few[0], few
    out = subprocess.run([sys.executable, "-m", "fercore", "--db", str(tmp_path / "cli.db"), "--json", "train",
                          "--data", "synthetic", "--epochs", "1", "--queue", "--no-worker"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "single point" in json.loads(out.stdout)["warnings"][0] and "warning:" in out.stderr
