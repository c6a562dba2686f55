"""The load test of a department: worker processes posing as several GPU servers drain queued runs from one
PostgreSQL database while app sessions poll the runs list every 100 ms.

It checks what a department would notice: every run trained exactly once (one claim in its log, one test
evaluation), none left queued or running, every worker exits cleanly with no lock or deadlock error in its
log, both hosts took runs, and no reader ever got an error or saw a run go back to an earlier status. The
claim path is the real one: `python -m fercore worker --once` processes with the smallest run config.

    python tests/load_postgres.py                    # 8 workers as 2 hosts, 40 runs, 3 readers; its own server
    python tests/load_postgres.py --db postgresql://user:pw@host/fer_load   # an existing, empty database
    python tests/load_postgres.py --db /tmp/x/runs.db                       # the same load on SQLite, to compare

tests/test_load_postgres.py runs a shorter version of it in the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from fercore.config import RunConfig  # noqa: E402
from fercore.jobs.runfile import ensure_starter  # noqa: E402
from fercore.store import RunStore  # noqa: E402
from fercore.store.entities import RunStatus

POLL_S = 0.1
# As small as a run gets: the point is concurrency on the database, not training.
LOAD = RunConfig(data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,), batch_size=32,
                 epochs=1, hflip=0.0, rotation=0.0, tta="none")
ORDER = {"queued": 0, "running": 1, "finished": 2, "failed": 2, "cancelled": 2}
BAD_WORDS = ("Traceback", "locked", "deadlock", "could not reach the queue", "heartbeat failed")


class Reader(threading.Thread):
    """An app session: its own store (own connections), listing the runs every 100 ms."""

    def __init__(self, url: str, i: int, artifacts: Path):
        super().__init__(name=f"load-reader-{i}", daemon=True)
        self.store = RunStore(url, artifacts=artifacts)
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
                        self.backwards.append(f"run {r['id']}: {before} -> {r['status']}")
                    self.seen[r.id] = r.status
            self.stop.wait(POLL_S)
        self.store.engine.dispose()


def run_load(url: str, folder: Path, workers: int = 8, hosts: int = 2, runs: int = 40, readers: int = 3,
             timeout: float = 900) -> dict:
    """Queue `runs` runs in the empty database at `url`, drain them with `workers` worker processes spread over
    `hosts` host names while `readers` threads poll. Returns the figures and a list of problems (empty: passed)."""
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = folder / "artifacts"
    env = dict(os.environ, FER_ARTIFACTS=str(artifacts), OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    store = RunStore(url, artifacts=artifacts)
    ensure_starter(store)   # registered once here: the starter is not what this test is about
    ids = [store.create_run(LOAD.replace(name=f"load-{i}"), status=RunStatus.QUEUED).id for i in range(runs)]
    polling = [Reader(url, i, artifacts) for i in range(readers)]
    for r in polling:
        r.start()
    procs, logs = [], []
    t0 = time.monotonic()
    try:
        for i in range(workers):   # output to files, not pipes: a worker must never stall on a full pipe
            out, err = open(folder / f"worker{i}.out", "w+"), open(folder / f"worker{i}.err", "w+")
            logs += [out, err]
            procs.append(subprocess.Popen([sys.executable, "-m", "fercore", "worker", "--once", "--db", url, "--json"],
                                          cwd=REPO, env={**env, "FER_HOSTNAME": f"load-host-{i % hosts}"},
                                          stdout=out, stderr=err))
        deadline = time.monotonic() + timeout
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        wall = time.monotonic() - t0
        for r in polling:
            r.stop.set()
        for r in polling:
            r.join(timeout=30)
        for f in logs:
            f.close()
    problems, trained = [], []
    for i, p in enumerate(procs):
        out, err = (folder / f"worker{i}.out").read_text(), (folder / f"worker{i}.err").read_text()
        if p.returncode != 0:
            problems.append(f"worker {i} exited with {p.returncode}: {err[-500:]}")
        problems += [f"worker {i}'s log says {w!r}" for w in BAD_WORDS if w in err]
        try:
            trained.append(json.loads(out)["trained"])
        except (ValueError, KeyError):
            trained.append(0)
    problems += _check_runs(store, ids, hosts)
    lat = sorted(x for r in polling for x in r.latencies)
    for r in polling:
        problems += [f"{r.name} got {e}" for e in r.errors[:3]] + [f"{r.name} saw {b}" for b in r.backwards[:3]]
    if len(lat) < 10 * readers:
        problems.append(f"the readers hardly ever got an answer ({len(lat)} polls)")
    figures = {"workers": workers, "hosts": hosts, "runs": runs, "readers": readers, "wall_s": round(wall, 1),
               "runs_per_worker": trained, "polls": len(lat),
               "reader_latency_ms": {"median": _ms(statistics.median(lat)) if lat else None,
                                     "p95": _ms(lat[int(0.95 * (len(lat) - 1))]) if lat else None,
                                     "max": _ms(lat[-1]) if lat else None}}
    if sum(trained) != runs:
        problems.append(f"the workers trained {sum(trained)} runs, not {runs}")
    store.engine.dispose()
    return {"figures": figures, "problems": problems}


def _check_runs(store: RunStore, ids: list[int], hosts: int) -> list[str]:
    problems = []
    workers = {w.id: w for w in store.list_workers()}
    if workers:
        problems.append(f"{len(workers)} worker(s) not marked stopped after they exited")
    with store.engine.connect() as con:   # the test looks underneath the store: every run tested exactly once
        tests = dict(con.execute(text("SELECT run_id, COUNT(*) FROM evaluations WHERE split = 'test' "
                                      "GROUP BY run_id")).all())
        datasets = con.execute(text("SELECT COUNT(*) FROM datasets")).scalar()
        host_of = dict(con.execute(text("SELECT id, host FROM workers")).all())
    claimed_by_host = {}
    for rid in ids:
        run = store.get_run(rid, epochs=True)
        if run.status != RunStatus.FINISHED:
            problems.append(f"run {rid} is {run['status']} ({run['error']})")
            continue
        if [e["epoch"] for e in run.epochs] != [1]:
            problems.append(f"run {rid} has epochs {[e['epoch'] for e in run['epochs']]}")
        claims = Path(run.log_path).read_text(encoding="utf-8").count("claimed by worker")
        if claims != 1 or tests.get(rid) != 1:
            problems.append(f"run {rid} was claimed {claims} times and tested {tests.get(rid, 0)} times")
        host = host_of.get(run.worker_id)
        claimed_by_host[host] = claimed_by_host.get(host, 0) + 1
    stuck = [r.id for r in store.list_runs() if r.status in (RunStatus.QUEUED, RunStatus.RUNNING)]
    if stuck:
        problems.append(f"runs left queued or running: {stuck}")
    if len(claimed_by_host) != hosts:
        problems.append(f"runs per host: {claimed_by_host} (every host should have taken some)")
    if datasets != 1:
        problems.append(f"{datasets} datasets: the workers' race to import the run's data on first use left "
                        "more than one")
    return problems


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", help="an empty database: a PostgreSQL URL, or an SQLite path to compare "
                                "(default: a throwaway PostgreSQL server)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--readers", type=int, default=3)
    args = p.parse_args()
    server = None
    if args.db is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from postgres_server import start_server
        server = start_server()
    try:
        url = args.db or server.create_database("fer_load")
        with tempfile.TemporaryDirectory(prefix="fer-load-") as folder:
            res = run_load(url, Path(folder), args.workers, args.hosts, args.runs, args.readers)
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(res, indent=2))
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
