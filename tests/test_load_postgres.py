"""The department's load test, short: four worker processes posing as two GPU servers drain twelve queued runs
from one PostgreSQL database while two app sessions poll the runs list every 100 ms. Every run is trained
exactly once, none is left stuck, and no lock error reaches a worker or a reader. `pytest -s` prints the
figures; `python tests/load_postgres.py` runs the full size (8 workers, 40 runs, 3 readers)."""
from __future__ import annotations

import json

import pytest
from load_postgres import run_load

pytestmark = pytest.mark.slow   # browser / PostgreSQL / load: `pytest -m 'not slow'` skips it


def test_four_workers_on_two_hosts_twelve_runs_and_two_readers_on_postgresql(pg_server, tmp_path):
    res = run_load(pg_server.create_database(), tmp_path, workers=4, hosts=2, runs=12, readers=2, timeout=540)
    print("\nload on PostgreSQL:", json.dumps(res["figures"]))
    assert res["problems"] == []
