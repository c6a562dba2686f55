"""The classroom half of the run store: who signed in, the class limits, the audit log, the trash and the starter
flag. A mixin of RunStore (it uses its sessions and `retry_locked`); the rules themselves are fercore.auth's.

Nothing here deletes a run row: emptying the trash removes a run's files, epochs and evaluations and keeps a
tombstone, so a run id is never handed out twice (a saved /compare?runs=5 link never opens someone else's run).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from fercore.auth import PERSONAL, Action, Limits, Role, User, check_queue, check_sweep, require
from fercore.errors import NotFound, UserError
from fercore.store.dialects import now
from fercore.store.entities import AuditEntry, DatasetInfo, Run, RunStatus
from fercore.store.schema import AuditRow, DatasetRow, EpochRow, EvaluationRow, Meta, RunRow, UserRow

LIMITS_KEY = "class_limits"


def actor(by: User | None) -> User:
    """Who acts when a caller names nobody: the personal user (a laptop's only user, who may do everything)."""
    return by or PERSONAL


class ClassroomStore:
    # --- users -------------------------------------------------------------------------------------------------
    def sign_in(self, user: User, how: str = "") -> None:
        """Record a sign-in: the user's row (created or seen again) and an audit line."""
        with self._session.begin() as s:
            row = s.get(UserRow, user.id)
            if row is None:
                s.add(UserRow(id=user.id, name=user.name, name_key=user.name.casefold(), role=str(user.role),
                              created_at=now(), last_seen_at=now(), signed_in_at=now()))
            else:
                row.name, row.name_key, row.role = user.name, user.name.casefold(), str(user.role)
                row.last_seen_at = row.signed_in_at = now()
            _audit(s, user, "sign in", user.name, how)

    def sign_out(self, user: User) -> None:
        """Every cookie issued to this user until now stops working; a class display name is free again."""
        with self._session.begin() as s:
            s.execute(update(UserRow).where(UserRow.id == user.id).values(signed_out_at=now()))
            _audit(s, user, "sign out", user.name)

    def seen(self, user: User) -> None:
        with self._session.begin() as s:
            s.execute(update(UserRow).where(UserRow.id == user.id).values(last_seen_at=now()))

    def signed_out_at(self, user_id: str) -> float | None:
        """When the user last signed out, as a Unix time (UTC), or None."""
        with self._session() as s:
            t = s.scalar(select(UserRow.signed_out_at).where(UserRow.id == user_id))
        from datetime import UTC
        return t.replace(tzinfo=UTC).timestamp() if t else None

    def name_in_use(self, user_id: str) -> bool:
        """Whether someone is signed in under this id now (signed in, and not signed out since): a class display
        name is one student's at a time."""
        with self._session() as s:
            r = s.get(UserRow, user_id)
            return r is not None and r.signed_in_at is not None and (
                r.signed_out_at is None or r.signed_out_at < r.signed_in_at)

    def list_users(self) -> list[dict]:
        """Everyone who signed in, the most recently seen first: id, name, role, last seen."""
        with self._session() as s:
            rows = s.scalars(select(UserRow).order_by(UserRow.last_seen_at.desc()))
            return [{"id": r.id, "name": r.name, "role": r.role, "last_seen": r.last_seen_at.isoformat(
                timespec="seconds")} for r in rows]

    def runs_by_owner(self) -> dict[str, dict[str, int]]:
        """owner id -> {status: number of runs} (the trash left out): each student's runs and share of the queue."""
        with self._session() as s:
            rows = s.execute(select(RunRow.owner, RunRow.status, func.count()).where(RunRow.deleted_at.is_(None))
                             .group_by(RunRow.owner, RunRow.status)).all()
        out: dict[str, dict[str, int]] = {}
        for owner, status, n in rows:
            out.setdefault(owner or "instructor", {})[status] = int(n)
        return out

    def user_names(self) -> dict[str, str]:
        """user id -> display name, for owner columns."""
        with self._session() as s:
            return dict(s.execute(select(UserRow.id, UserRow.name)).all())

    # --- limits ------------------------------------------------------------------------------------------------
    def limits(self) -> Limits:
        with self._session() as s:
            raw = s.scalar(select(Meta.value).where(Meta.key == LIMITS_KEY))
        return Limits.from_dict(json.loads(raw)) if raw else Limits()

    def set_limits(self, limits: Limits, by: User | None = None) -> Limits:
        by = actor(by)
        require(by, Action.SET_LIMITS)
        limits = Limits.from_dict(limits.to_dict())   # checked
        with self._session.begin() as s:
            row = s.get(Meta, LIMITS_KEY)
            if row is None:
                s.add(Meta(key=LIMITS_KEY, value=json.dumps(limits.to_dict())))
            else:
                row.value = json.dumps(limits.to_dict())
            _audit(s, by, "change limits", "class limits", json.dumps(limits.to_dict()))
        return limits

    def active_runs_of(self, owner: str) -> int:
        with self._session() as s:
            return _active(s, owner)

    def check_queue(self, config, by: User | None = None, adding: int = 1) -> None:
        """Refuse, in a sentence, what `by` may not queue (their role, the class limits); the Train form, the CLI,
        lessons and sweeps ask before queueing, and create_run asks again."""
        by = actor(by)
        require(by, Action.QUEUE)
        check_queue(by, self.limits(), config, self.active_runs_of(by.id), adding)

    def check_sweep(self, by: User | None, trials: int, configs=()) -> None:
        """A sweep's limits (its trial count, each trial's settings), asked before its first trial is queued."""
        by = actor(by)
        require(by, Action.QUEUE)
        check_sweep(by, self.limits(), trials, configs)

    def time_budget_s(self, run: Run) -> float | None:
        """The seconds a run may train before it stops at its best checkpoint: students' runs only."""
        with self._session() as s:
            role = s.scalar(select(UserRow.role).where(UserRow.id == run.owner))
        return self.limits().run_minutes * 60 if role == str(Role.STUDENT) else None

    # --- the audit log -------------------------------------------------------------------------------------------
    def audit_log(self, limit: int = 200, user_id: str | None = None) -> list[AuditEntry]:
        with self._session() as s:
            q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
            if user_id:
                q = q.where(AuditRow.user_id == user_id)
            return [r.to_entity() for r in s.scalars(q)]

    def record(self, by: User | None, action: str, obj: str, detail: str | None = None) -> None:
        """An audit line for an action the store does not perform itself (importing weights, say)."""
        with self._session.begin() as s:
            _audit(s, actor(by), action, obj, detail)

    # --- the trash -----------------------------------------------------------------------------------------------
    def trash(self) -> tuple[list[Run], list[DatasetInfo]]:
        """The runs and datasets in the trash, most recently deleted first."""
        with self._session() as s:
            runs = list(s.scalars(select(RunRow).where(RunRow.deleted_at.is_not(None), RunRow.purged_at.is_(None))
                                  .order_by(RunRow.deleted_at.desc())))
            datasets = s.scalars(select(DatasetRow).where(DatasetRow.deleted_at.is_not(None),
                                                          DatasetRow.purged_at.is_(None))
                                 .order_by(DatasetRow.deleted_at.desc()))
            return self._runs(s, runs), [d.to_entity() for d in datasets]

    def restore_run(self, run_id: int, by: User | None = None) -> Run:
        """Take a run out of the trash, with its epochs, evaluations and weights (they never left)."""
        by = actor(by)
        require(by, Action.RESTORE, what=f"run {run_id}")
        with self._session.begin() as s:
            r = s.get(RunRow, int(run_id))
            if r is None or r.deleted_at is None or r.purged_at is not None:
                raise NotFound(f"Run {run_id} is not in the trash.")
            r.deleted_at = None
            _audit(s, by, "restore", f"run {r.id} ({r.name})")
            s.flush()
            return self._runs(s, [r])[0]

    def restore_dataset(self, name: str, by: User | None = None) -> DatasetInfo:
        by = actor(by)
        require(by, Action.RESTORE, what=f"dataset {name}")
        with self._session.begin() as s:
            r = s.scalar(select(DatasetRow).where(DatasetRow.name == name, DatasetRow.deleted_at.is_not(None),
                                                  DatasetRow.purged_at.is_(None)))
            if r is None:
                raise NotFound(f"There is no dataset named {name!r} in the trash.")
            r.deleted_at = None
            _audit(s, by, "restore", f"dataset {name}")
            return r.to_entity()

    def empty_trash(self, by: User | None = None) -> dict:
        """Remove for good what is in the trash: run files, epochs and evaluations (each run keeps a tombstone
        row, so its id is never reused) and dataset files no other version uses."""
        by = actor(by)
        require(by, Action.EMPTY_TRASH)
        with self._session.begin() as s:
            ids = list(s.scalars(select(RunRow.id).where(RunRow.deleted_at.is_not(None), RunRow.purged_at.is_(None))))
            if ids:
                s.execute(delete(EpochRow).where(EpochRow.run_id.in_(ids)))
                s.execute(delete(EvaluationRow).where(EvaluationRow.run_id.in_(ids)))
                s.execute(update(RunRow).where(RunRow.id.in_(ids)).values(purged_at=now(), checkpoint=None,
                                                                          summary={}, progress={}))
            gone = list(s.scalars(select(DatasetRow).where(DatasetRow.deleted_at.is_not(None),
                                                           DatasetRow.purged_at.is_(None))))
            paths, names = {d.path for d in gone}, [d.name for d in gone]
            for d in gone:   # a tombstone under a name nobody can type, so the name is free again
                d.purged_at, d.name = now(), f"{d.family or d.name}@gone{d.id}"
            s.flush()
            used = set(s.scalars(select(DatasetRow.path).where(DatasetRow.path.in_(paths),
                                                               DatasetRow.purged_at.is_(None)))) if paths else set()
            _audit(s, by, "empty trash", f"{len(ids)} run(s), {len(gone)} dataset(s)")
        for rid in ids:
            shutil.rmtree(self.run_dir(rid, create=False), ignore_errors=True)
        for p in paths - used:
            Path(p).unlink(missing_ok=True)
        return {"runs": ids, "datasets": names}

    # --- the starter model ----------------------------------------------------------------------------------------
    def set_starter(self, run_id: int, by: User | None = None) -> None:
        """Flag the run Classify preselects for everyone (one at a time)."""
        by = actor(by)
        require(by, Action.SET_STARTER, what=f"run {run_id}")
        with self._session.begin() as s:
            if s.get(RunRow, int(run_id)) is None:
                raise NotFound(f"There is no run {run_id}.")
            s.execute(update(RunRow).where(RunRow.starter.is_(True)).values(starter=False))
            s.execute(update(RunRow).where(RunRow.id == int(run_id)).values(starter=True))
            _audit(s, by, "set starter", f"run {run_id}")


def _active(s: Session, owner: str) -> int:
    return s.scalar(select(func.count()).select_from(RunRow).where(
        RunRow.owner == owner, RunRow.deleted_at.is_(None),
        RunRow.status.in_((str(RunStatus.QUEUED), str(RunStatus.RUNNING)))))


def _audit(s: Session, by: User, action: str, obj: str, detail: str | None = None) -> None:
    s.add(AuditRow(at=now(), user_id=by.id, user_name=by.name, action=action, object=obj[:400], detail=detail))


def refuse_running(r: RunRow) -> None:
    if r.status == str(RunStatus.RUNNING):
        raise UserError(f"Run {r.name} (#{r.id}) is training; cancel it first, then delete it.")
