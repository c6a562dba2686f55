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
