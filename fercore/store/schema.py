"""SQLAlchemy tables of the run store, each with the one `to_entity()` that turns its row into what callers get.
Only fercore.store imports this module."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fercore.auth import LEGACY_OWNER
from fercore.config import RunConfig
from fercore.store.entities import AuditEntry, DatasetInfo, Evaluation, Run, RunStatus, Worker

SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DatasetRow(Base):
    __tablename__ = "datasets"
    __table_args__ = ({"sqlite_autoincrement": True},)   # and rows are never deleted: ids are never reused
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    classes: Mapped[list] = mapped_column(JSON)
    splits: Mapped[dict] = mapped_column(JSON)
    class_counts: Mapped[dict] = mapped_column(JSON)
    image_size: Mapped[int] = mapped_column(Integer, default=48)
    path: Mapped[str] = mapped_column(Text)            # the .npz with the arrays
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[list] = mapped_column(JSON, default=list)
    audit: Mapped[dict | None] = mapped_column(JSON, nullable=True)   # duplicates, blanks (fercore.data.audit)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # --- the classroom: owners, versions, the trash (NULL owner: made before owners existed, the instructor's)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    family: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)  # the name it was imported as
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)   # 1, 2, ... within its family
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)   # in the trash since
    purged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)    # trash emptied: a tombstone

    def to_entity(self) -> DatasetInfo:
        return DatasetInfo(name=self.name, source=self.source, fingerprint=self.fingerprint,
                           classes=tuple(self.classes), splits=self.splits, class_counts=self.class_counts,
                           image_size=self.image_size, path=self.path, synthetic=bool(self.synthetic),
                           notes=tuple(self.notes or ()), audit=self.audit or {}, created_at=iso(self.created_at),
                           owner=self.owner or LEGACY_OWNER, family=self.family or self.name,
                           version=self.version or 1, deleted_at=iso(self.deleted_at))


class RunRow(Base):
    __tablename__ = "runs"
    # a sweep's trial i exists once, however many workers ask for it at the same moment (NULLs never clash)
    # AUTOINCREMENT (new SQLite files): an id is never handed out twice. Older files without it are safe too:
    # run rows are never deleted (emptying the trash keeps a tombstone), so max(id) + 1 is always new.
    __table_args__ = (Index("ux_runs_group_trial", "group_name", "trial", unique=True), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)   # queued running finished failed cancelled
    config: Mapped[dict] = mapped_column(JSON)
    dataset: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    classes: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    device: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    # the last batch or epoch the loop reported: the watchdog's clock
    progress_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    group_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)   # lesson / sweep
    group_name: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    trial: Mapped[int | None] = mapped_column(Integer, nullable=True)   # a sweep run's trial number (1, 2, ...)
    n_params: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)   # best/last metrics, cached for lists
    attempts: Mapped[int | None] = mapped_column(Integer, nullable=True, default=0)   # times a worker claimed it
    # the lease of the attempt that trains it (store/queue.py): a token that grows with every claim, and when it
    # ends on the database's clock unless that attempt's heartbeat renews it
    lease_token: Mapped[int | None] = mapped_column(Integer, nullable=True, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # --- the classroom: owner, the starter flag, the trash, the time budget
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)   # NULL: the instructor's
    starter: Mapped[bool | None] = mapped_column(Boolean, nullable=True, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)   # in the trash since
    purged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)    # trash emptied: a tombstone
    budget_stopped: Mapped[bool | None] = mapped_column(Boolean, nullable=True, default=False)

    def to_entity(self, test: Evaluation | None = None, val: Evaluation | None = None,
                  epochs: list[dict] | None = None, now: datetime | None = None) -> Run:
        duration = None
        if self.started_at:
            duration = ((self.finished_at or now or self.started_at) - self.started_at).total_seconds()
        return Run(id=self.id, name=self.name, status=RunStatus(self.status),
                   config=RunConfig.from_stored(self.config), classes=tuple(self.classes or ()),
                   dataset=self.dataset, dataset_fingerprint=self.dataset_fingerprint,
                   created_at=iso(self.created_at), started_at=iso(self.started_at),
                   finished_at=iso(self.finished_at), duration_s=duration, device=self.device, error=self.error,
                   worker_id=self.worker_id, heartbeat_at=iso(self.heartbeat_at), progress=self.progress or {},
                   cancel_requested=bool(self.cancel_requested), checkpoint=self.checkpoint,
                   log_path=self.log_path, group_kind=self.group_kind, group_name=self.group_name,
                   n_params=self.n_params, summary=self.summary or {}, attempts=self.attempts or 0, trial=self.trial,
                   lease_token=self.lease_token or 0,
                   owner=self.owner or LEGACY_OWNER, starter=bool(self.starter), deleted_at=iso(self.deleted_at),
                   budget_stopped=bool(self.budget_stopped), test=test, val=val,
                   epochs=tuple(epochs) if epochs is not None else None)


class EpochRow(Base):
    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    images_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    grad_norms: Mapped[dict] = mapped_column(JSON, default=dict)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)

    def to_record(self) -> dict:
        """An epoch is a row of metrics: a plain record, as the curves and tables consume it."""
        return {"epoch": self.epoch, "train_loss": self.train_loss, "train_acc": self.train_acc,
                "val_loss": self.val_loss, "val_acc": self.val_acc, "lr": self.lr, "seconds": self.seconds,
                "images_per_s": self.images_per_s, "grad_norms": self.grad_norms or {}, **(self.extra or {})}


class EvaluationRow(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(16))
    dataset: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tta: Mapped[str] = mapped_column(String(16), default="none")
    accuracy: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list] = mapped_column(JSON)
    confusion: Mapped[list] = mapped_column(JSON)
    per_class: Mapped[dict] = mapped_column(JSON)
    predictions: Mapped[list] = mapped_column(JSON, default=list)   # predicted class index per image
    targets: Mapped[list] = mapped_column(JSON, default=list)
    probs_path: Mapped[str | None] = mapped_column(Text, nullable=True)  # .npy of probabilities
    macro_f1: Mapped[float | None] = mapped_column(Float, nullable=True)
    precision: Mapped[str | None] = mapped_column(String(8), nullable=True)   # fp32; NULL: from before it was kept
    created_at: Mapped[datetime] = mapped_column(DateTime)

    def to_entity(self, full: bool = False) -> Evaluation:
        return Evaluation(split=self.split, accuracy=self.accuracy, n=self.n, classes=tuple(self.classes),
                          confusion=tuple(tuple(r) for r in self.confusion), per_class=self.per_class,
                          tta=self.tta, dataset=self.dataset, created_at=iso(self.created_at),
                          macro_f1=self.macro_f1, precision=self.precision,
                          predictions=tuple(self.predictions or ()) if full else (),
                          targets=tuple(self.targets or ()) if full else (),
                          probs_path=self.probs_path if full else None)


class WorkerRow(Base):
    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))   # idle busy stopped
    current_run: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)

    def to_entity(self) -> Worker:
        return Worker(id=self.id, pid=self.pid, host=self.host, device=self.device, status=self.status,
                      current_run=self.current_run, started_at=iso(self.started_at),
                      heartbeat_at=iso(self.heartbeat_at))


class UserRow(Base):
    """Everyone who signed in: what the instructor page lists, and what makes a class display name unique."""
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), index=True)   # casefolded: "Ana" and "ana" are one student
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    signed_in_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    signed_out_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)   # cookies before it are void


class AuditRow(Base):
    """Who did what, to what, when: sign-ins, queueing, cancels, deletes, restores, imports, limit changes."""
    __tablename__ = "audit_log"
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    user_id: Mapped[str] = mapped_column(String(200))
    user_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    object: Mapped[str] = mapped_column(String(400))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    def to_entity(self) -> AuditEntry:
        return AuditEntry(at=iso(self.at), user_id=self.user_id, user_name=self.user_name, action=self.action,
                          object=self.object, detail=self.detail)


def iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") if t else None
