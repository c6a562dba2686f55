"""A small class against a real server, each student a light client speaking Streamlit's protocol (tests/load_class.py):
every student gets the Classify page's result after uploading a photo, and the maps of another method after
switching it. The full-size class (30) runs by hand: `python tests/load_class.py --students 1,10,30`."""
from __future__ import annotations

import pytest

pytest.importorskip("websockets")
from load_class import run_table  # noqa: E402


@pytest.mark.slow
def test_three_students_each_get_their_result_and_switch_the_method():
    (row,) = run_table([3], spread=1.0)
    assert row["failed"] == 0, row["failures"]
    assert row["upload_median_s"] > 0 and row["switch_median_s"] > 0
    assert row["server_rss_mb"] < 3000, "one shared predictor and detector per process, no per-session copies"


def test_idle_tabs_share_one_worker_check_per_process(monkeypatch, tmp_path):
    """Every open tab reruns the sidebar's sections; the queue and the workers are looked up once per TTL for all."""
    from fercore.jobs import liveness
    from fercore.ui import state
    monkeypatch.setenv("FER_DB_URL", str(tmp_path / "runs.db"))
    monkeypatch.setenv("FER_AUTOSTART_WORKER", "0")
    calls = []
    real = liveness.worker_status
    monkeypatch.setattr(liveness, "worker_status", lambda store: calls.append(1) or real(store))
    state._worker_snapshot.clear()
    for _tab in range(30):
        snapshot = state.worker_snapshot()
    assert calls == [1] and snapshot["queued"] == 0 and snapshot["alive"] == []
    assert state.SIDEBAR_REFRESH_S >= 10


def test_the_server_runs_no_collection_and_no_source_watcher_after_each_script_run():
    import tomllib

    from conftest import REPO
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    assert config["server"]["fileWatcherType"] == "none"
