"""Which queued run a worker takes next: the fair-share choice, in one function every claim calls.

Runs of the instructor (and of the command line, and rows older than owners) go first, oldest first. Then
students take turns: the student with the least work running and finished in the last `RECENT` goes first, the
oldest queued run breaking ties; so three students who queue five runs each are served A, B, C, A, B, C...
instead of A's five first. Only fercore.store imports this module.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from fercore.auth import Role
from fercore.store.entities import RunStatus
from fercore.store.schema import RunRow, UserRow

RECENT = timedelta(hours=1)


def next_run_id(s: Session, now: datetime, exclude: set[int] = frozenset()) -> int | None:
    """The id of the queued run to claim next, or None when nothing waits (ids in `exclude` are skipped: runs
    another worker took a moment ago)."""
    queued = [(rid, owner) for rid, owner in s.execute(
        select(RunRow.id, RunRow.owner).where(RunRow.status == str(RunStatus.QUEUED), RunRow.deleted_at.is_(None))
        .order_by(RunRow.id)) if rid not in exclude]
    if not queued:
        return None
    students = set(s.scalars(select(UserRow.id).where(UserRow.role == str(Role.STUDENT))))
    for rid, owner in queued:
        if owner not in students:   # the instructor's, the command line's, or older than owners
            return rid
    load = Counter(s.scalars(select(RunRow.owner).where(
        RunRow.owner.in_({o for _, o in queued}),
        or_(RunRow.status == str(RunStatus.RUNNING), RunRow.finished_at >= now - RECENT),
        RunRow.started_at.is_not(None))))
    oldest: dict[str, int] = {}
    for rid, owner in queued:
        oldest.setdefault(owner, rid)
    owner = min(oldest, key=lambda o: (load[o], oldest[o]))
    return oldest[owner]
