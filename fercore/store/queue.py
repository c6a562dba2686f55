"""The queue's SQL: claiming a run, its lease, fenced writes, reaping, cancelling, and the workers' rows.

A run is owned by one attempt at a time. Claiming it (one conditional UPDATE) moves it from `queued` to `running`
and gives it a lease: a token that grows with every claim (`lease_token`) and an expiry on the database's clock
(`lease_expires_at`), which the worker's heartbeat renews. Every write a worker makes for a run goes through
`_fence`: an UPDATE of the run's row `WHERE lease_token = :token AND status = 'running'`, in the same transaction
as the write, so the write lands only while that attempt still holds the run; otherwise nothing is written and
LeaseLost is raised. The UPDATE also locks the row (PostgreSQL) or the database (SQLite) until the write commits,
so no claim or reap slips in between the check and the write. The reaper takes only runs whose lease expired on
the database's clock, never by a host's own clock, so hosts whose clocks differ still agree.

RunStore (runstore.py) inherits these methods; they are split out because they are one idea: who owns a run.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager

from sqlalchemy import and_, case, func, or_, select, update

from fercore.auth import Action, User, require
from fercore.store import fairshare
from fercore.store.classroom import _audit, actor
from fercore.store.dialects import db_now, now, retry_locked
from fercore.store.entities import Run, RunStatus, Worker
from fercore.store.schema import RunRow, WorkerRow

LEASE_ENV = "FER_LEASE_S"
# How long a claim or a heartbeat keeps a run. SQLite's busy timeout (SQLITE_BUSY_MS in runstore.py) is 5 s, so a
# heartbeat waiting on a locked database gives up and tries again long before the lease ends: ten beats of 2 s
# fit in one lease. (The old 30 s busy timeout was longer than the 15 s after which a run counted as dead, so a
# busy database alone could have a live worker's run taken from it.)
LEASE_S = 20.0
LEGACY_STALE_S = 60.0   # a run `running` from before leases existed (no expiry) counts as dead after this
QUEUED, RUNNING = str(RunStatus.QUEUED), str(RunStatus.RUNNING)


def lease_seconds() -> float:
    """LEASE_S, or $FER_LEASE_S (a test shortens it to see a stopped worker lose its run within seconds)."""
    return float(os.environ.get(LEASE_ENV) or LEASE_S)


class LeaseLost(Exception):
    """A write for a run whose lease this attempt no longer holds: it was reaped, taken by a newer attempt, or
    ended. The writer stops and writes nothing more for the run."""

    def __init__(self, run_id: int, token: int, holder: int | None, status: str | None):
        self.run_id, self.token, self.holder, self.status = run_id, token, holder, status
        if holder is not None and holder > token:
            by = f"taken by attempt {holder}" if status == RUNNING else f"taken by the reaper; it is {status} now"
        else:
            by = f"it is {status} now"
        super().__init__(f"lost the lease on run {run_id} ({by})")


class QueueStore:
    """The queue's half of RunStore (see the module's docstring)."""

    refused_writes = 0   # writes this process refused because their lease was gone (the chaos test counts them)

    def _now(self, plus_s: float = 0.0):
        return db_now(self.engine.dialect.name, plus_s)

    # --- fencing -----------------------------------------------------------------------------------
    def _fence(self, s, run_id: int, token: int, **values):
        """Inside a write's transaction: update the run's row only while `token` holds its lease (also locking
        it until the transaction ends); raises LeaseLost, rolling the whole write back, when it does not."""
        values = values or {"lease_token": RunRow.lease_token}   # a no-op that still takes the row's lock
        res = s.execute(update(RunRow).where(RunRow.id == run_id, RunRow.lease_token == token,
                                             RunRow.status == RUNNING).values(**values))
        if res.rowcount != 1:
            self._refuse(s, run_id, token)

    def _refuse(self, s, run_id: int, token: int):
        row = s.execute(select(RunRow.lease_token, RunRow.status).where(RunRow.id == run_id)).first()
        type(self).refused_writes += 1
        raise LeaseLost(run_id, token, row[0] if row else None, row[1] if row else "deleted")

    @contextmanager
    def holding_lease(self, run_id: int, token: int):
        """A block that runs only while `token` holds the run's lease, and during which no other attempt can take
        it: a worker renames its files into place inside it (write to a temporary name, then rename here)."""
        with self._session.begin() as s:
            self._fence(s, run_id, token)
            yield

    @retry_locked
    def renew_lease(self, run_id: int, token: int, progress: dict | None = None) -> bool | None:
        """The heartbeat of a run's attempt: extend its lease (and store its latest progress, if any). Returns
        whether its owner asked to cancel it, None when the run ended under this very lease (nothing to renew);
        raises LeaseLost when another attempt or the reaper took it."""
        values = {"lease_expires_at": self._now(lease_seconds()), "heartbeat_at": self._now()}
        if progress is not None:
            values.update(progress=progress, progress_at=self._now())
        with self._session.begin() as s:
            row = s.execute(update(RunRow).where(RunRow.id == run_id, RunRow.lease_token == token,
                                                 RunRow.status == RUNNING).values(**values)
                            .returning(RunRow.cancel_requested)).first()
            if row is None:
                if s.scalar(select(RunRow.lease_token).where(RunRow.id == run_id)) == token:
                    return None
                self._refuse(s, run_id, token)
            return bool(row[0])

    # --- claiming --------------------------------------------------------------------------------
    @retry_locked
    def claim_next_run(self, worker_id: int, device: str = "") -> Run | None:
        """Move the next queued run to `running` for this worker with a new lease, in one conditional UPDATE
        (never two workers; a run cancelled at the same moment is not claimed). Which run is next is decided in one
        place, fairshare.next_run_id (the instructor's first, then round-robin across students). PostgreSQL locks
        the chosen row with SKIP LOCKED first, so workers claiming at the same moment take different runs without
        waiting for each other."""
        taken: set[int] = set()
        for _ in range(20):
            with self._session.begin() as s:
                rid = fairshare.next_run_id(s, now(), exclude=taken)
                if rid is None:
                    return None
                taken.add(rid)
                if not self.is_sqlite and s.scalar(select(RunRow.id).where(RunRow.id == rid)
                                                   .with_for_update(skip_locked=True)) is None:
                    continue   # another worker is claiming it right now
                claimed = s.execute(update(RunRow).where(RunRow.id == rid, RunRow.status == QUEUED)
                                    .values(status=RUNNING, worker_id=worker_id, device=device, error=None,
                                            progress={}, heartbeat_at=self._now(), progress_at=self._now(),
                                            started_at=func.coalesce(RunRow.started_at, now()),
                                            attempts=func.coalesce(RunRow.attempts, 0) + 1,
                                            lease_token=func.coalesce(RunRow.lease_token, 0) + 1,
                                            lease_expires_at=self._now(lease_seconds())))
                if claimed.rowcount == 1:
                    return self._runs(s, [s.get(RunRow, rid)])[0]
        return None

    @retry_locked
    def take_lease(self, run_id: int) -> int:
        """A new lease on a `running` run for the caller, which trains it itself (`train` without --queue): any
        earlier holder is fenced off from then on. Returns its token (the caller's heartbeat renews it)."""
        with self._session.begin() as s:
            return s.execute(update(RunRow).where(RunRow.id == run_id).values(
                lease_token=func.coalesce(RunRow.lease_token, 0) + 1, heartbeat_at=self._now(),
                lease_expires_at=self._now(lease_seconds())).returning(RunRow.lease_token)).scalar_one()

    # --- cancelling -------------------------------------------------------------------------------
    @retry_locked
    def request_cancel(self, run: int | str, by: User | None = None) -> Run:
        """One conditional UPDATE: a queued run is cancelled at once, a running one asked to stop (its worker reads
        the flag at its next heartbeat). A claim at the same moment is either before it (the run is running: asked
        to stop) or after it (the run is cancelled: not claimed). Only its owner or the instructor may."""
        rid = self.resolve(run)
        by = actor(by)
        queued = RunRow.status == QUEUED
        with self._session.begin() as s:
            r = s.get(RunRow, rid)
            require(by, Action.CANCEL, r.owner, what=f"run {r.name} (#{r.id})")
            res = s.execute(update(RunRow).where(RunRow.id == rid, RunRow.status.in_((QUEUED, RUNNING))).values(
                status=case((queued, str(RunStatus.CANCELLED)), else_=RunRow.status),
                finished_at=case((queued, now()), else_=RunRow.finished_at),
                error=case((queued, "cancelled before it started"), else_=RunRow.error),
                cancel_requested=case((queued, RunRow.cancel_requested), else_=True)))
            if res.rowcount:
                _audit(s, by, "cancel", f"run {r.id} ({r.name})")
            s.refresh(r)
            return self._runs(s, [r])[0]

    # --- reaping ----------------------------------------------------------------------------------
    @retry_locked
    def reap_expired_leases(self, reason: str) -> list[int]:
        """Fail every running run whose lease expired on the database's clock (one conditional UPDATE; nothing is
        written when none expired). Returns their ids; their epochs and files stay."""
        legacy = and_(RunRow.lease_expires_at.is_(None),
                      func.coalesce(RunRow.heartbeat_at, RunRow.started_at, RunRow.created_at)
                      < self._now(-LEGACY_STALE_S))
        with self._session.begin() as s:   # the token moves on: the attempt that held it is fenced off
            return list(s.execute(update(RunRow).where(RunRow.status == RUNNING,
                                                       or_(RunRow.lease_expires_at < self._now(), legacy))
                                  .values(status=str(RunStatus.FAILED), finished_at=now(), error=reason,
                                          lease_token=func.coalesce(RunRow.lease_token, 0) + 1)
                                  .returning(RunRow.id)).scalars())

    @retry_locked
    def reap_runs_of_workers(self, worker_ids: list[int], reason: str) -> list[int]:
        """Fail the running runs of workers whose process is gone (the caller checked their pids on their host),
        and mark those workers stopped. A run another worker claimed since keeps going: the condition is on its
        worker."""
        if not worker_ids:
            return []
        with self._session.begin() as s:
            ids = list(s.execute(update(RunRow).where(RunRow.status == RUNNING, RunRow.worker_id.in_(worker_ids))
                                 .values(status=str(RunStatus.FAILED), finished_at=now(), error=reason,
                                         lease_token=func.coalesce(RunRow.lease_token, 0) + 1)
                                 .returning(RunRow.id)).scalars())
            s.execute(update(WorkerRow).where(WorkerRow.id.in_(worker_ids), WorkerRow.status != "stopped")
                      .values(status="stopped"))
            return ids

    @retry_locked
    def fail_stalled_run(self, run_id: int, token: int, stalled_after_s: float, reason: str) -> bool:
        """The watchdog: fail this attempt's run when its training reported nothing (no batch, no epoch) for
        stalled_after_s on the database's clock, however fresh its heartbeat (the process lives, its loop hangs).
        Its epochs stay; a cancel is requested too, so a loop that wakes up later stops. True if it was failed."""
        last = func.coalesce(RunRow.progress_at, RunRow.started_at, RunRow.created_at)
        with self._session.begin() as s:
            res = s.execute(update(RunRow).where(RunRow.id == run_id, RunRow.lease_token == token,
                                                 RunRow.status == RUNNING, last < self._now(-stalled_after_s))
                            .values(status=str(RunStatus.FAILED), finished_at=now(), error=reason,
                                    cancel_requested=True))
            return res.rowcount == 1

    # --- workers ----------------------------------------------------------------------------------
    @retry_locked
    def register_worker(self, pid: int, device: str, host: str | None = None) -> int:
        """A worker is known by its host and its process id there (`host`: default this machine's name)."""
        with self._session.begin() as s:
            w = WorkerRow(pid=pid, host=host or socket.gethostname(), device=device, status="idle", current_run=None,
                          started_at=now(), heartbeat_at=now())
            s.add(w)
            s.flush()
            s.execute(update(WorkerRow).where(WorkerRow.id == w.id).values(heartbeat_at=self._now()))
            return w.id

    @retry_locked
    def worker_heartbeat(self, worker_id: int, status: str, current_run: int | None = None) -> None:
        with self._session.begin() as s:
            s.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(
                status=status, current_run=current_run, heartbeat_at=self._now()))

    @retry_locked
    def stop_silent_workers(self, silent_s: float) -> None:
        """Mark workers whose heartbeat is older than silent_s (database clock) stopped; writes only if any is."""
        with self._session.begin() as s:
            s.execute(update(WorkerRow).where(WorkerRow.status != "stopped",
                                              WorkerRow.heartbeat_at < self._now(-silent_s)).values(status="stopped"))

    def list_workers(self, alive_within_s: float | None = None) -> list[Worker]:
        with self._session() as s:
            q = select(WorkerRow).where(WorkerRow.status != "stopped").order_by(WorkerRow.id)
            if alive_within_s is not None:
                q = q.where(WorkerRow.heartbeat_at >= self._now(-alive_within_s))
            return [w.to_entity() for w in s.scalars(q)]
