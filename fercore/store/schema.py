"""SQLAlchemy tables of the run store. Only fercore.store imports this module."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DatasetRow(Base):
    __tablename__ = "datasets"
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
    created_at: Mapped[datetime] = mapped_column(DateTime)


class RunRow(Base):
    __tablename__ = "runs"
    # a sweep's trial i exists once, however many workers ask for it at the same moment (NULLs never clash)
    __table_args__ = (Index("ux_runs_group_trial", "group_name", "trial", unique=True),)
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
    progress_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)   # last batch/epoch: the watchdog's clock
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    group_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)   # lesson / sweep
    group_name: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    trial: Mapped[int | None] = mapped_column(Integer, nullable=True)   # a sweep run's trial number (1, 2, ...)
    n_params: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)   # best/last metrics, cached for lists


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
    created_at: Mapped[datetime] = mapped_column(DateTime)


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
