"""Chaos: 4 worker processes posing as 2 hosts train 24 tiny queued runs while a driver, at random moments, SIGKILLs
a worker, freezes one (SIGSTOP) past its lease and wakes it again, SIGTERMs one, and sets one host's clock minutes
behind; new workers start as old ones die. On SQLite and on a real PostgreSQL.

Every run must end FINISHED exactly once, with epochs 1..N each once and one evaluation per split; no write of a
fenced worker may land (the workers count the writes they had refused); and the run that was interrupted twice (a
kill, then a SIGTERM) must end with exactly the weights of the same run trained without interruption on the CPU.
The counts are printed (`pytest -s`)."""
from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_env
from sqlalchemy import create_engine, text

from fercore.config import RunConfig
from fercore.data import resolve
from fercore.jobs.execute import execute_run
from fercore.jobs.liveness import reap
from fercore.models.checkpoint import read_run_file
from fercore.store import RunStatus, RunStore

pytestmark = pytest.mark.slow

CFG = RunConfig(data="synthetic:140", conv_blocks=2, filters=(4, 8), convs_per_block=1, fc_units=(8,), batch_size=32,
                epochs=3, lr=3e-3, tta="none")
RUNS, WORKERS, LEASE_S, SKEW_S = 24, 4, 8.0, -240.0
TWICE_EPOCHS = 16
TIMEOUT_S = 480


@dataclass
class Chaos:
    db: str
    logs: Path
    rng: random.Random
    procs: list = field(default_factory=list)        # (Popen, host, log path)
    counts: dict = field(default_factory=lambda: {"kills": 0, "stops": 0, "terms": 0, "skews": 0, "started": 0})
    skewed_host: str | None = None
    frozen: tuple | None = None                      # (Popen, when to wake it)
    journal: list = field(default_factory=list)      # what the driver did, when, to whom
    hit: set = field(default_factory=set)            # pids already interrupted (each one at most once)

    def start(self, host: str) -> None:
        env = cli_env()
        env.update(OMP_NUM_THREADS="1", FER_LEASE_S=str(LEASE_S), FER_HOSTNAME=host, FER_WORKER_IDLE_EXIT_S="900")
        if host == self.skewed_host:
            env["FER_CLOCK_SKEW_S"] = str(SKEW_S)
        log = self.logs / f"worker{len(self.procs)}-{host}.log"
        p = subprocess.Popen([sys.executable, "-m", "fercore", "worker", "--db", self.db], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        self.procs.append((p, host, log))
        self.counts["started"] += 1

    def alive(self) -> list:
        return [(p, h) for p, h, _ in self.procs if p.poll() is None]

    def keep_four(self) -> None:
        """Start new workers as old ones die, each on the host that lost one."""
        hosts = [h for _, h in self.alive()]
        for host in ("host-a", "host-b"):
            while hosts.count(host) < WORKERS // 2 and len(hosts) < WORKERS:
                self.start(host)
                hosts.append(host)

    def owner(self, store: RunStore, run) -> subprocess.Popen | None:
        pids = {w.id: w.pid for w in store.list_workers()}
        pid = pids.get(run.worker_id)
        return next((p for p, _ in self.alive() if p.pid == pid), None)

    def busy_victim(self, store: RunStore, spare: set[int]):
        """A worker training a run that has been interrupted at most once (so no run meets the 3-attempt cap)."""
        runs = [r for r in store.list_runs(status=RunStatus.RUNNING) if r.id not in spare and r.attempts < 2]
        self.rng.shuffle(runs)
        for run in runs:
            p = self.owner(store, run)
            if p is not None and p.pid not in self.hit:
                return p, run
        return None, None

    def note(self, t: float, what: str, p: subprocess.Popen, run) -> None:
        self.hit.add(p.pid)
        self.journal.append(f"{t:6.1f}s {what} pid {p.pid} training run {run.id} (attempt {run.attempts})")


def refused_writes(logs: Path) -> tuple[int, int]:
    """(writes the workers refused, as each counted at its exit; lease losses they logged)."""
    text_ = "".join(p.read_text(errors="replace") for p in logs.glob("worker*.log"))
    refused = sum(int(n) for n in re.findall(r"fenced writes refused: (\d+)", text_))
    return refused, text_.count("lost the lease on run")


def act(chaos: Chaos, store: RunStore, events: list, twice: dict, t: float, finished: int) -> None:
    """One step of the driver: the twice-interrupted run's two interruptions, then the random events that are due
    (each at a number of finished runs drawn at random, so that they happen mid-queue on a fast machine or a slow
    one alike)."""
    run = store.get_run(twice["id"])
    if run.status == RunStatus.RUNNING and run.attempts == twice["phase"] + 1 and twice["phase"] < 2:
        done = len(store.epochs(run.id))   # epoch k's row is written after epoch k - 1's saved state
        if done >= twice["after"] + 2 and (p := chaos.owner(store, run)) is not None:
            p.send_signal(signal.SIGKILL if twice["phase"] == 0 else signal.SIGTERM)
            chaos.counts["kills" if twice["phase"] == 0 else "terms"] += 1
            chaos.note(t, "SIGKILL" if twice["phase"] == 0 else "SIGTERM", p, run)
            twice["phase"], twice["after"] = twice["phase"] + 1, done
    if chaos.frozen and t >= chaos.frozen[1]:
        chaos.frozen[0].send_signal(signal.SIGCONT)
        chaos.journal.append(f"{t:6.1f}s SIGCONT pid {chaos.frozen[0].pid}")
        chaos.frozen = None
    for event in [e for e in events if e[0] <= finished]:
        kind = event[1]
        if kind == "skew":
            chaos.skewed_host = "host-b"   # from now on host-b's workers run minutes behind: one starts at once
            chaos.start("host-b")
            chaos.counts["skews"] += 1
            chaos.journal.append(f"{t:6.1f}s host-b's clock set {SKEW_S:+.0f} s (pid {chaos.procs[-1][0].pid})")
        else:
            victim, run = chaos.busy_victim(store, {twice["id"]})
            if victim is None:
                continue   # nobody is training a run right now: try again at the next step
            sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "term": signal.SIGTERM}[kind]
            victim.send_signal(sig)
            chaos.counts[kind + "s"] += 1
            chaos.note(t, sig.name, victim, run)
            if kind == "stop":
                chaos.frozen = (victim, t + 2 * LEASE_S + 3)   # past its lease: its run is taken meanwhile
        events.remove(event)


def test_chaos(any_db, tmp_path):
    store = RunStore(any_db)
    resolve(CFG.data, store)   # imported once, so the workers race for runs, not for the import
    twice_cfg = CFG.replace(name="twice", epochs=TWICE_EPOCHS, seed=7)
    ids = [store.create_run(twice_cfg).id]
    ids += [store.create_run(CFG.replace(name=f"run{i}", seed=i)).id for i in range(RUNS - 1)]
    rng = random.Random(2126)
    chaos = Chaos(any_db, tmp_path, rng)
    # (finished runs, event): all of them while at least 10 runs still wait or train
    events = sorted([(rng.randint(1, 12), "kill"), (rng.randint(1, 12), "kill"), (rng.randint(1, 12), "stop"),
                     (rng.randint(1, 12), "term"), (rng.randint(0, 8), "skew")])
    twice = {"id": ids[0], "phase": 0, "after": 0}
    t0 = time.monotonic()
    try:
        chaos.keep_four()
        last_reap = 0.0
        while time.monotonic() - t0 < TIMEOUT_S:
            finished = sum(r.status == RunStatus.FINISHED for r in store.get_runs(ids))
            act(chaos, store, events, twice, time.monotonic() - t0, finished)
            chaos.keep_four()
            if time.monotonic() - last_reap > 1:   # as the app does on every page load (its own host: no pids)
                reap(store)
                last_reap = time.monotonic()
            if all(r.status.final for r in store.get_runs(ids)) and chaos.frozen is None:
                break
            time.sleep(0.1)
    finally:
        for p, _ in chaos.alive():
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
        for p, _, _ in chaos.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    elapsed = time.monotonic() - t0
    refused, lost = refused_writes(tmp_path)
    summary = (f"chaos on {store.engine.dialect.name}: {chaos.counts}, fenced writes refused {refused}, lease losses "
               f"logged {lost}, attempts {sum(r.attempts for r in store.get_runs(ids))} for {RUNS} runs, "
               f"{elapsed:.0f} s\n" + "\n".join(chaos.journal))
    print("\n" + summary)
    (tmp_path / "chaos.txt").write_text(summary)
    check_every_run_once(store, ids, twice_cfg)
    assert twice["phase"] == 2 and store.get_run(ids[0]).attempts == 3, twice
    assert chaos.counts["kills"] >= 2 and chaos.counts["stops"] == 1 and chaos.counts["terms"] >= 1
    assert chaos.counts["skews"] == 1 and lost >= 1 and refused >= 1   # the woken worker found its run taken
    same_weights_as_uninterrupted(store, ids[0], twice_cfg)


def check_every_run_once(store: RunStore, ids: list[int], twice_cfg: RunConfig) -> None:
    runs = store.get_runs(ids, epochs=True)
    assert [r.status for r in runs] == [RunStatus.FINISHED] * len(ids), [(r.id, r.status, r.error) for r in runs]
    for run in runs:
        assert [e["epoch"] for e in run.epochs] == list(range(1, run.config.epochs + 1)), run.id
        assert 1 <= run.attempts <= 3 and Path(run.checkpoint).is_file()
        log = Path(run.log_path).read_text()
        assert log.count(f"run {run.id} ended: finished") == 1, log   # finished by exactly one attempt
    engine = create_engine(store.url)
    try:
        with engine.connect() as con:
            rows = con.execute(text("SELECT run_id, split, COUNT(*) FROM evaluations GROUP BY run_id, split")).all()
    finally:
        engine.dispose()
    per_run = {(r[0], r[1]): r[2] for r in rows if r[0] in ids}
    assert set(per_run.values()) == {1} and len(per_run) == 2 * len(ids), per_run   # one val, one test each


def same_weights_as_uninterrupted(store: RunStore, twice_id: int, config: RunConfig) -> None:
    reference = store.create_run(config.replace(name="reference"), status=RunStatus.RUNNING)
    ref = execute_run(store, reference.id, device="cpu")
    assert ref.status == RunStatus.FINISHED, ref.error
    got = read_run_file(Path(store.get_run(twice_id).checkpoint))["state_dict"]
    want = read_run_file(Path(ref.checkpoint))["state_dict"]
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), "the twice-interrupted run's weights differ"
