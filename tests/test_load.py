"""The load test of a class: four worker processes drain twenty queued runs from one SQLite file while an app
session polls the runs list every 100 ms. All runs finish, none is trained twice, and no "database is locked"
reaches anyone. Run with `pytest -s` to see the figures (wall time, how the runs spread, the reader's latency).
"""
from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, cli_env

from fercore.config import RunConfig
from fercore.store import RunStore
from fercore.store.entities import RunStatus

pytestmark = pytest.mark.slow   # browser / PostgreSQL / load: `pytest -m 'not slow'` skips it

WORKERS = 4
RUNS = 20
POLL_S = 0.1
# As small as a run gets: the point is concurrency on the database, not training.
LOAD = RunConfig(data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,), batch_size=32,
                 epochs=1, hflip=0.0, rotation=0.0, tta="none")
ORDER = {"queued": 0, "running": 1, "finished": 2, "failed": 2, "cancelled": 2}


class Reader(threading.Thread):
    """An app session: its own store (own connections), listing the runs every 100 ms."""

    def __init__(self, url: str):
        super().__init__(name="load-reader", daemon=True)
        self.store = RunStore(url)
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.backwards: list[str] = []   # a run seen going back to an earlier status (claimed again?)
        self.seen: dict[int, str] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                runs = self.store.list_runs()
            except Exception as e:   # noqa: BLE001 - what a page would have shown the student
                self.errors.append(f"{type(e).__name__}: {e}")
            else:
                self.latencies.append(time.perf_counter() - t0)
                for r in runs:
                    before = self.seen.get(r.id)
                    if before and ORDER[r.status] < ORDER[before]:
                        self.backwards.append(f"run {r.id}: {before} -> {r.status}")
                    self.seen[r.id] = r.status
            self.stop.wait(POLL_S)


def test_four_workers_twenty_runs_and_a_polling_reader_on_one_sqlite_file(db, tmp_path):
    store = RunStore(db)
    ids = [store.create_run(LOAD.replace(name=f"load-{i}"), status=RunStatus.QUEUED).id for i in range(RUNS)]
    reader = Reader(store.url)
    reader.start()
    t0 = time.monotonic()
    workers, files = [], []
    try:
        for i in range(WORKERS):   # output to files, not pipes: a worker must never stall on a full pipe
            files.append((open(tmp_path / f"worker{i}.out", "w+"), open(tmp_path / f"worker{i}.err", "w+")))
            out, err = files[i]
            workers.append(subprocess.Popen([sys.executable, "-m", "fercore", "worker", "--once", "--db", db, "--json"],
                                            cwd=REPO, env=cli_env(), stdout=out, stderr=err))
        for p in workers:
            p.wait(timeout=540)
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        wall = time.monotonic() - t0
        reader.stop.set()
        reader.join(timeout=30)
        for f in (f for pair in files for f in pair):
            f.close()

    trained = []
    for i, p in enumerate(workers):
        out, err = (tmp_path / f"worker{i}.out").read_text(), (tmp_path / f"worker{i}.err").read_text()
        assert p.returncode == 0, err
        assert "locked" not in err.lower() and "Traceback" not in err, err
        trained.append(json.loads(out)["trained"])
    lat = sorted(reader.latencies)
    print(f"\nload: {WORKERS} workers, {RUNS} runs in {wall:.1f} s (runs per worker {trained}); reader: "
          f"{len(lat)} polls, latency median {statistics.median(lat) * 1000:.0f} ms, "
          f"p95 {lat[int(0.95 * (len(lat) - 1))] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")

    assert reader.errors == [], reader.errors[:3]   # no "database is locked" reached the app
    assert reader.backwards == [], reader.backwards
    assert len(lat) >= 20, "the reader hardly ever got an answer"
    assert sum(trained) == RUNS
    for rid in ids:
        run = store.get_run(rid, epochs=True)
        assert run.status == RunStatus.FINISHED, (rid, run.error)
        assert [e["epoch"] for e in run.epochs] == [1]
        log = open(run.log_path, encoding="utf-8").read()
        assert log.count("claimed by worker") == 1, f"run {rid} was claimed more than once"
    con = sqlite3.connect(db)
    try:
        evaluations = dict(con.execute("SELECT run_id, COUNT(*) FROM evaluations WHERE split = 'test' GROUP BY run_id"))
        datasets = con.execute("SELECT COUNT(*) FROM datasets").fetchone()[0]
    finally:
        con.close()
    assert evaluations == {rid: 1 for rid in ids}   # each run tested exactly once: trained exactly once
    assert datasets == 1   # the workers raced to import the run's data on first use; one import won
    assert store.integrity_ok()
