"""What leaves the store: frozen, typed entities, never ORM rows or loose dicts.

Each ORM row in schema.py has one `to_entity()` that builds these (MLflow's tracking store is the
model); each entity has one `to_json()` that gives the CLI's JSON shape (PRODUCT.md section 4).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from fercore.config import RunConfig


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Waiting for or being trained by a worker."""
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def final(self) -> bool:
        return not self.active

    @property
    def resumable(self) -> bool:
        """A run that stopped before its last epoch and can continue from its last checkpoint."""
        return self in (RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True)
class Evaluation:
    """A run's checkpoint scored on one split of one dataset."""
    split: str
    accuracy: float
    n: int
    classes: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]   # rows = true class, in `classes` order
    per_class: dict                          # class -> {precision, recall, f1, support}
    tta: str = "none"
    dataset: str | None = None
    created_at: str | None = None
    macro_f1: float | None = None
    predictions: tuple[int, ...] = ()        # only when asked for (full=True)
    targets: tuple[int, ...] = ()
    probs_path: str | None = None
    precision: str | None = None             # fp32 (fercore.train.EVAL_PRECISION); None: recorded before it was

    def to_json(self, full: bool = False) -> dict:
        d = {"accuracy": self.accuracy, "n": self.n, "classes": list(self.classes),
             "confusion": [list(r) for r in self.confusion], "per_class": self.per_class, "split": self.split,
             "dataset": self.dataset, "tta": self.tta, "created_at": self.created_at, "macro_f1": self.macro_f1,
             "precision": self.precision}
        if full:
            d.update(predictions=list(self.predictions), targets=list(self.targets), probs_path=self.probs_path)
        return d

    def recall(self, cls: str) -> float | None:
        return (self.per_class.get(cls) or {}).get("recall")


@dataclass(frozen=True)
class Run:
    id: int
    name: str
    status: RunStatus
    config: RunConfig
    classes: tuple[str, ...] = ()
    dataset: str | None = None
    dataset_fingerprint: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    device: str | None = None
    error: str | None = None
    worker_id: int | None = None
    heartbeat_at: str | None = None
    progress: dict = field(default_factory=dict)
    cancel_requested: bool = False
    checkpoint: str | None = None
    log_path: str | None = None
    group_kind: str | None = None        # lesson / sweep
    group_name: str | None = None
    trial: int | None = None                      # a sweep run's trial number (1, 2, ...)
    n_params: int | None = None
    summary: dict = field(default_factory=dict)   # best/last/min of each metric over the epochs
    attempts: int = 0                             # how many times a worker started or resumed it
    lease_token: int = 0                          # the attempt that holds it (store/queue.py)
    owner: str = "instructor"                     # the user id of who queued it (fercore.auth.User.id)
    starter: bool = False                         # the model Classify preselects (a flag, never a name)
    deleted_at: str | None = None                 # in the trash since
    budget_stopped: bool = False                  # stopped at its best checkpoint when its time budget ran out
    test: Evaluation | None = None
    val: Evaluation | None = None
    epochs: tuple[dict, ...] | None = None        # only when asked for

    @property
    def scored(self) -> Evaluation | None:
        """The evaluation people read (`accuracy`, diagnosis, lesson summaries): test when the run has one, the
        split scored once at the end; else val, the split that chose the checkpoint (and so flatters it)."""
        return self.test or self.val

    @property
    def accuracy(self) -> float | None:
        """The accuracy of a run, one number everywhere: its chosen checkpoint with its own TTA, on test when the
        run has a test split, else on val; `accuracy_split` says which, and fmt.accuracy_label shows both."""
        return self.scored.accuracy if self.scored else None

    @property
    def accuracy_split(self) -> str | None:
        """"test" or "val": the split `accuracy` is measured on (None before any evaluation)."""
        return self.scored.split if self.scored else None

    @property
    def val_accuracy(self) -> float | None:
        return self.val.accuracy if self.val else None

    @property
    def test_accuracy(self) -> float | None:
        return self.test.accuracy if self.test else None

    @property
    def label(self) -> str:
        return f"{self.name} (#{self.id})"

    def to_json(self, epochs: bool = False) -> dict:
        d = {"id": self.id, "name": self.name, "status": str(self.status), "config": self.config.to_dict(),
             "dataset": self.dataset, "dataset_fingerprint": self.dataset_fingerprint, "classes": list(self.classes),
             "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
             "duration_s": self.duration_s, "device": self.device, "error": self.error, "worker_id": self.worker_id,
             "heartbeat_at": self.heartbeat_at, "progress": self.progress, "cancel_requested": self.cancel_requested,
             "checkpoint": self.checkpoint, "log_path": self.log_path, "group_kind": self.group_kind,
             "group_name": self.group_name, "trial": self.trial, "n_params": self.n_params, "summary": self.summary,
             "attempts": self.attempts, "owner": self.owner, "starter": self.starter,
             "budget_stopped": self.budget_stopped,
             "accuracy": self.accuracy, "accuracy_split": self.accuracy_split,
             "test": self.test.to_json() if self.test else None,
             "val": self.val.to_json() if self.val else None}
        if epochs and self.epochs is not None:
            d["epochs"] = list(self.epochs)
        return d


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str
    fingerprint: str
    classes: tuple[str, ...]
    splits: dict            # split -> number of images
    class_counts: dict      # split -> {class: count}
    image_size: int
    path: str
    synthetic: bool = False
    notes: tuple[str, ...] = ()
    audit: dict = field(default_factory=dict)
    created_at: str | None = None
    owner: str = "instructor"
    family: str = ""          # the name it was imported as; older versions are named `family@vN`
    version: int = 1
    deleted_at: str | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source, "fingerprint": self.fingerprint,
                "classes": list(self.classes), "splits": self.splits, "class_counts": self.class_counts,
                "image_size": self.image_size, "path": self.path, "synthetic": self.synthetic,
                "notes": list(self.notes), "audit": self.audit, "created_at": self.created_at, "owner": self.owner,
                "version": self.version}


@dataclass(frozen=True)
class Worker:
    id: int
    pid: int
    host: str
    device: str
    status: str            # idle busy stopped
    current_run: int | None
    started_at: str | None
    heartbeat_at: str | None

    def to_json(self) -> dict:
        return {"id": self.id, "pid": self.pid, "host": self.host, "device": self.device, "status": self.status,
                "current_run": self.current_run, "started_at": self.started_at, "heartbeat_at": self.heartbeat_at}


@dataclass(frozen=True)
class AuditEntry:
    at: str | None
    user_id: str
    user_name: str
    action: str
    object: str
    detail: str | None = None

    def to_json(self) -> dict:
        return {"at": self.at, "user_id": self.user_id, "user_name": self.user_name, "action": self.action,
                "object": self.object, "detail": self.detail}
