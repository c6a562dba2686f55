"""RunStore: the only code that speaks SQL. Callers get frozen entities (store/entities.py), never ORM rows.

SQLite by default (WAL, busy timeout, short transactions, retries on "database is locked");
PostgreSQL for a department (`postgresql://...`; what differs is in dialects.py). Files (dataset arrays,
checkpoints, logs, probabilities) live under an artifact root: $FER_ARTIFACTS (a folder every machine
mounts at the same path), else `<db stem>_artifacts` next to an SQLite file, else, for a server database,
`fer_artifacts/<database name>-<its id>` in the working directory (the id is stored in the database, so two
databases of one server never share a folder; a database made before that keeps `fer_artifacts` itself).
The queue's half (claims, leases, fenced writes, reaping) is queue.py.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, delete, event, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from fercore.auth import Action, User, check_queue, require, validate_name
from fercore.config import RunConfig
from fercore.data.dataset import FERDataset
from fercore.errors import DataError, NotFound
from fercore.safeio import replace_durably
from fercore.store.classroom import ClassroomStore, _active, _audit, actor, refuse_running
from fercore.store.dialects import engine_options, normalize_url, now, retry_locked, unreachable
from fercore.store.entities import DatasetInfo, Evaluation, Run, RunStatus
from fercore.store.queue import QueueStore
from fercore.store.schema import SCHEMA_VERSION, Base, DatasetRow, EpochRow, EvaluationRow, Meta, RunRow

SQLITE_BUSY_MS = 5000   # well inside a run's lease (queue.LEASE_S): a locked database never costs a live run its lease
ARTIFACTS_KEY = "artifacts_folder"   # meta: this database's folder under fer_artifacts ("" = fer_artifacts itself)


class TrialExists(ValueError):
    """Another process queued this sweep trial a moment earlier."""


def default_db() -> str:
    return os.environ.get("FER_DB_URL") or "runs.db"


def _url(url_or_path: str) -> str:
    return normalize_url(url_or_path) if "://" in url_or_path else \
        f"sqlite:///{Path(url_or_path).expanduser().resolve()}"


class RunStore(QueueStore, ClassroomStore):
    def __init__(self, url_or_path: str | None = None, artifacts: str | Path | None = None):
        """`artifacts`: the artifact root, instead of $FER_ARTIFACTS or the default (`db copy --artifacts`)."""
        self.url = _url(url_or_path or default_db())
        self.engine = create_engine(self.url, future=True, **engine_options(self.url))
        root = artifacts or os.environ.get("FER_ARTIFACTS")
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            @event.listens_for(self.engine, "connect")
            def _pragmas(conn, _record):
                cur = conn.cursor()
                cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
            db_file = Path(self.engine.url.database or "runs.db")
            db_file.parent.mkdir(parents=True, exist_ok=True)
            self.db_path = str(db_file)
            self.artifacts = (Path(root).expanduser().resolve() if root
                              else db_file.parent / (db_file.stem + "_artifacts"))
        else:
            self.db_path = self.engine.url.render_as_string(hide_password=True)
            self.artifacts = Path(root).expanduser().resolve() if root else None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._migrate()
        except OperationalError as e:   # the first connection: a server that is down gets a sentence
            if self.is_sqlite or (sentence := unreachable(e, self.db_path)) is None:
                raise
            raise sentence from None
        if self.artifacts is None:
            self.artifacts = (Path("fer_artifacts") / self._artifacts_folder()).expanduser().resolve()
        self.artifacts.mkdir(parents=True, exist_ok=True)

    @retry_locked
    def _artifacts_folder(self) -> str:
        """A server database's own folder under fer_artifacts: its name and a random id stored in it, made once.
        A database that already has datasets or runs from before keeps the shared folder its files are in."""
        with self._session() as s:
            folder = s.scalar(select(Meta.value).where(Meta.key == ARTIFACTS_KEY))
        if folder is not None:
            return folder
        with self._session() as s:
            legacy = s.scalar(select(func.count()).select_from(RunRow)) or \
                s.scalar(select(func.count()).select_from(DatasetRow))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.engine.url.database or "db")
        folder = "" if legacy else f"{name}-{secrets.token_hex(4)}"
        try:
            with self._session.begin() as s:
                s.add(Meta(key=ARTIFACTS_KEY, value=folder))
        except IntegrityError:   # another process made it a moment ago: use theirs
            with self._session() as s:
                folder = s.scalar(select(Meta.value).where(Meta.key == ARTIFACTS_KEY))
        return folder

    # --- schema: created and upgraded in place ---------------------------------------------------
    def _migrate(self) -> None:
        """Several processes often open a new or older database at the same moment (the app's sessions and
        its workers); the one that loses the race to create a table or column finds it made on its next try."""
        for attempt in range(6):
            try:
                return self._migrate_once()
            except (OperationalError, IntegrityError, ProgrammingError) as e:
                if attempt == 5 or not _lost_schema_race(e):
                    raise
                time.sleep(0.05 * (attempt + 1))

    @retry_locked
    def _migrate_once(self) -> None:
        Base.metadata.create_all(self.engine)
        insp = inspect(self.engine)
        with self.engine.begin() as conn:
            for table in Base.metadata.sorted_tables:
                have = {c["name"] for c in insp.get_columns(table.name)}
                for col in table.columns:
                    if col.name not in have:   # a column added since this DB was made
                        ddl = col.type.compile(self.engine.dialect)
                        conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {ddl}'))
                for index in table.indexes:   # create_all skips the indexes of a table that already existed
                    index.create(conn, checkfirst=True)
            row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
            if row is None:
                conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(row) < SCHEMA_VERSION:
                conn.execute(update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION)))

    def schema_version(self) -> int:
        with self._session() as s:
            return int(s.scalar(select(Meta.value).where(Meta.key == "schema_version")))

    def integrity_ok(self) -> bool:
        if not self.is_sqlite:
            return True
        with self.engine.connect() as conn:
            return conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"

    # --- datasets --------------------------------------------------------------------------------
    @retry_locked
    def add_dataset(self, ds: FERDataset, name: str | None = None, replace: bool = True,
                    audit: dict | None = None, by: User | None = None) -> DatasetInfo:
        """Store a dataset under `name`. Datasets are immutable: a name that exists gets a new version (the old one
        is kept as `name@vN`, and runs that trained on it find it by fingerprint); the same images again change
        nothing. `replace=False` refuses an existing name instead."""
        by = actor(by)
        name = validate_name(name or ds.name, "dataset name")
        require(by, Action.IMPORT_DATASET, what=name)
        folder = self.artifacts / "datasets"
        folder.mkdir(parents=True, exist_ok=True)
        fp = ds.fingerprint()
        path = folder / f"{fp}.npz"
        if not path.exists():
            # a temporary name of its own: two sessions of the app (threads of one process) may import at once
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{fp}.", suffix=".tmp.npz")
            os.close(fd)
            try:
                ds.save(tmp)
                # atomic and fsync'd: a failed import or a power cut leaves no half file ...
                replace_durably(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)   # ... and a full disk mid-save leaves no temporary one either
        for attempt in range(2):
            try:
                with self._session.begin() as s:
                    old = s.scalar(select(DatasetRow).where(DatasetRow.name == name, DatasetRow.deleted_at.is_(None)))
                    if old is not None and not replace:
                        raise DataError(f"A dataset named {name!r} already exists.")
                    if old is not None and old.fingerprint == fp:
                        return old.to_entity()   # the same images again: nothing new
                    version = self._retire_version(s, name, old)
                    row = DatasetRow(name=name, created_at=now(), owner=by.id, family=name, version=version)
                    s.add(row)
                    _audit(s, by, "import", f"dataset {name} v{version}", ds.source)
                    row.source, row.fingerprint, row.classes = ds.source, fp, list(ds.classes)
                    row.splits, row.class_counts = ds.split_counts(), ds.class_counts()
                    row.image_size, row.path = ds.image_size, str(path)
                    row.synthetic, row.notes, row.audit = ds.synthetic, ds.notes, audit
                    s.flush()
                    return row.to_entity()
            except IntegrityError:   # another process added this name a moment ago: make ours the next version
                if attempt:
                    raise

    @staticmethod
    def _retire_version(s: Session, name: str, old: DatasetRow | None) -> int:
        """Rename the current version of `name` to `name@vN` (a deleted one too, so the name is free); return the
        new version's number."""
        versions = [v or 1 for v in s.scalars(select(DatasetRow.version).where(
            (DatasetRow.family == name) | (DatasetRow.name == name)))]
        trashed = s.scalar(select(DatasetRow).where(DatasetRow.name == name, DatasetRow.deleted_at.is_not(None)))
        for row in (old, trashed):
            if row is not None:
                row.family, row.version = row.family or name, row.version or 1
                row.name = f"{name}@v{row.version}"
        s.flush()
        return max(versions, default=0) + 1

    def list_datasets(self, versions: bool = False) -> list[DatasetInfo]:
        """Newest first: the dataset a user imported last is the one they most likely want. The current version of
        each name, or every version when `versions`; never what is in the trash."""
        with self._session() as s:
            q = select(DatasetRow).where(DatasetRow.deleted_at.is_(None)) \
                .order_by(DatasetRow.created_at.desc(), DatasetRow.id.desc())
            rows = [r.to_entity() for r in s.scalars(q)]
            return rows if versions else [r for r in rows if r.name == r.family]

    def dataset_info(self, name: str, fingerprint: str | None = None) -> DatasetInfo | None:
        """The dataset of that name, or with `fingerprint` the version of that name with those images (what a run
        trained on, though a newer version was imported since)."""
        with self._session() as s:
            q = select(DatasetRow).where(DatasetRow.deleted_at.is_(None))
            r = s.scalar(q.where(DatasetRow.name == name))
            if fingerprint and (r is None or r.fingerprint != fingerprint):
                r = s.scalar(q.where((DatasetRow.family == (r.family if r else name)) | (DatasetRow.name == name),
                                     DatasetRow.fingerprint == fingerprint).limit(1)) or r
            return r.to_entity() if r else None

    def load_dataset(self, name: str, fingerprint: str | None = None) -> FERDataset:
        info = self.dataset_info(name, fingerprint)
        if info is None:
            raise NotFound(f"There is no dataset named {name!r}; import it first (`data import`).")
        if fingerprint and info.fingerprint != fingerprint:
            raise DataError(f"The images of dataset {name!r} changed since this run started, and the version it "
                            "trained on is gone; queue the run again instead.")
        if not Path(info.path).exists():
            raise NotFound(f"The files of dataset {name!r} are missing ({info.path}); import it again.")
        ds = FERDataset.load(info.path)
        ds.name = name
        return ds

    @retry_locked
    def delete_dataset(self, name: str, by: User | None = None) -> None:
        """Move a dataset to the trash (the instructor restores it or empties the trash; only then its file goes)."""
        by = actor(by)
        require(by, Action.DELETE_DATASET, what=name)
        with self._session.begin() as s:
            r = s.scalar(select(DatasetRow).where(DatasetRow.name == name, DatasetRow.deleted_at.is_(None)))
            if r is None:
                raise NotFound(f"There is no dataset named {name!r}.")
            r.deleted_at = now()
            _audit(s, by, "delete", f"dataset {name}")

    # --- runs ------------------------------------------------------------------------------------
    @retry_locked
    def create_run(self, config: RunConfig, status: RunStatus = RunStatus.QUEUED, group_kind: str | None = None,
                   group_name: str | None = None, classes: list | None = None, trial: int | None = None,
                   by: User | None = None, limits: bool = True, owner: str | None = None) -> Run:
        """A new run owned by `by`, refused (Forbidden, one sentence) over the class limits. `limits=False`: checked
        before (a sweep's trials, a run file); `owner`: whose it is when the lab queues it for someone (a sweep's
        next trial, queued by a worker)."""
        by = actor(by)
        require(by, Action.QUEUE)
        if config.name:
            validate_name(config.name, "run name")
        class_limits = self.limits() if limits and not by.is_instructor else None
        with self._session.begin() as s:
            if class_limits is not None:
                check_queue(by, class_limits, config, _active(s, by.id))
            row = RunRow(name=config.name or "", status=str(status), config=config.to_dict(), dataset=config.data,
                         classes=list(classes or config.classes), created_at=now(), progress={},
                         cancel_requested=False, group_kind=group_kind, group_name=group_name, trial=trial,
                         summary={}, owner=owner or by.id)
            if status == RunStatus.RUNNING:
                row.started_at = row.heartbeat_at = row.progress_at = now()
                row.lease_token = 0   # no attempt holds it yet: take_lease gives the trainer its first lease
            s.add(row)
            s.flush()
            if not row.name:
                row.name = f"run-{row.id}"
            _audit(s, by, "queue" if status == RunStatus.QUEUED else "create", f"run {row.id} ({row.name})",
                   group_name)
            s.flush()
            return row.to_entity(now=now())

    def queue_trial(self, config: RunConfig, sweep: str, trial: int, by: User | None = None,
                    owner: str | None = None) -> Run:
        """Queue trial `trial` of a sweep. Raises TrialExists when another process queued that trial a moment
        earlier (a unique (group_name, trial) index decides), so two workers that both decide to queue a sweep's
        next trial queue it once."""
        try:
            return self.create_run(config, status=RunStatus.QUEUED, group_kind="sweep", group_name=sweep, trial=trial,
                                   by=by, limits=False, owner=owner)
        except IntegrityError:
            raise TrialExists(f"Trial {trial} of sweep {sweep} exists already.") from None

    def resolve(self, run: int | str) -> int:
        """A run id from an id or a name (the newest run of that name); a run in the trash is not found."""
        with self._session() as s:
            if (isinstance(run, int) or (isinstance(run, str) and run.isdigit())) and int(run) < 2 ** 31:
                r = s.get(RunRow, int(run))
                if r is not None and r.deleted_at is None:
                    return r.id
                if r is not None:
                    raise NotFound(f"Run {r.id} was deleted" + (" and the trash emptied." if r.purged_at else
                                                                  "; the instructor can restore it from the trash."))
            rid = s.scalar(select(RunRow.id).where(RunRow.name == str(run), RunRow.deleted_at.is_(None))
                           .order_by(RunRow.id.desc()).limit(1))
            if rid is None:
                raise NotFound(f"There is no run with id or name {run!r}.")
            return rid

    def get_run(self, run: int | str, epochs: bool = False) -> Run:
        rid = self.resolve(run)
        with self._session() as s:
            return self._runs(s, [s.get(RunRow, rid)], epochs=epochs)[0]

    def get_runs(self, ids: list[int], epochs: bool = False) -> list[Run]:
        """Several runs by id in one round of queries, in the order asked (unknown ids are left out)."""
        with self._session() as s:
            rows = {r.id: r for r in s.scalars(select(RunRow).where(RunRow.id.in_([int(i) for i in ids]),
                                                                    RunRow.deleted_at.is_(None)))}
            return self._runs(s, [rows[i] for i in map(int, ids) if i in rows], epochs=epochs)

    def list_runs(self, status: RunStatus | None = None, group_name: str | None = None,
                  limit: int | None = None, owner: str | None = None) -> list[Run]:
        """Newest first; never what is in the trash. `owner`: one user's runs only."""
        with self._session() as s:
            q = select(RunRow).where(RunRow.deleted_at.is_(None)).order_by(RunRow.id.desc())
            if owner:
                q = q.where(RunRow.owner == owner)
            if status:
                q = q.where(RunRow.status == str(status))
            if group_name:
                q = q.where(RunRow.group_name == group_name)
            if limit:
                q = q.limit(limit)
            return self._runs(s, list(s.scalars(q)))

    def epochs(self, run: int | str) -> list[dict]:
        rid = self.resolve(run)
        with self._session() as s:
            return self._epochs(s, rid)

    def evaluation(self, run: int | str, split: str = "test", full: bool = False) -> Evaluation | None:
        rid = self.resolve(run)
        with self._session() as s:
            e = s.scalar(select(EvaluationRow).where(EvaluationRow.run_id == rid, EvaluationRow.split == split)
                         .order_by(EvaluationRow.id.desc()).limit(1))
            return e.to_entity(full) if e else None

    # Every write below takes `lease`: the token of the attempt that writes (a worker, or `train` in the
    # foreground). With it, the write lands only while that attempt holds the run (queue.py's _fence), else
    # LeaseLost; without it (an import, the owner, a test), it is unconditional.
    @retry_locked
    def update_run(self, run_id: int, lease: int | None = None, **values) -> None:
        if "config" in values and isinstance(values["config"], RunConfig):
            values["config"] = values["config"].to_dict()
        if "progress" in values:
            values.setdefault("progress_at", self._now())
        with self._session.begin() as s:
            if lease is not None:
                self._fence(s, run_id, lease, **values)
            else:
                s.execute(update(RunRow).where(RunRow.id == run_id).values(**values))

    @retry_locked
    def set_status(self, run_id: int, status: RunStatus, error: str | None = None, lease: int | None = None,
                   expect: RunStatus | None = None) -> bool:
        """`expect`: change it only from that status (False if it was not). Queued again, a run loses its
        worker, its lease's expiry and any cancel request."""
        status = RunStatus(status)
        values = {"status": str(status), "error": error}
        if status.final:
            values["finished_at"] = now()
        if status == RunStatus.QUEUED:   # started_at stays: a resumed run's time counts from its first start
            values.update(worker_id=None, heartbeat_at=None, cancel_requested=False, finished_at=None,
                          lease_expires_at=None)
        with self._session.begin() as s:
            if lease is not None:
                self._fence(s, run_id, lease, **values)
                return True
            q = update(RunRow).where(RunRow.id == run_id)
            if expect is not None:
                q = q.where(RunRow.status == str(expect))
            return s.execute(q.values(**values)).rowcount == 1

    @retry_locked
    def add_epoch(self, run_id: int, rec: dict, lease: int | None = None) -> None:
        cols = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s",
                "grad_norms"}
        with self._session.begin() as s:
            if lease is not None:
                self._fence(s, run_id, lease)
            row = s.scalar(select(EpochRow).where(EpochRow.run_id == run_id, EpochRow.epoch == rec["epoch"]))
            if row is None:
                row = EpochRow(run_id=run_id, epoch=rec["epoch"])
                s.add(row)
            for k in cols - {"epoch"}:
                setattr(row, k, _clean(rec.get(k)) if k != "grad_norms" else rec.get(k, {}))
            row.extra = {k: _clean(v) for k, v in rec.items() if k not in cols}
            run = s.get(RunRow, run_id)
            run.summary = _summary(run.summary or {}, rec)
            run.progress_at = self._now()

    @retry_locked
    def truncate_epochs(self, run_id: int, after: int, lease: int | None = None) -> None:
        """Drop the epoch rows after `after` (a resumed run redoes them) and recompute the run's summary."""
        with self._session.begin() as s:
            if lease is not None:
                self._fence(s, run_id, lease)
            s.execute(delete(EpochRow).where(EpochRow.run_id == run_id, EpochRow.epoch > after))
            summary: dict = {}
            for e in s.scalars(select(EpochRow).where(EpochRow.run_id == run_id).order_by(EpochRow.epoch)):
                summary = _summary(summary, e.to_record())
            run = s.get(RunRow, run_id)
            run.summary = summary

    def set_progress(self, run_id: int, progress: dict) -> None:
        """Live progress, unfenced (a worker's progress goes through its heartbeat: renew_lease)."""
        self.update_run(run_id, progress=progress)

    @retry_locked
    def add_evaluation(self, run_id: int, ev: dict, split: str = "test", dataset: str | None = None,
                       lease: int | None = None) -> None:
        with self._session.begin() as s:
            if lease is not None:
                self._fence(s, run_id, lease)
            self._add_evaluation(s, run_id, ev, split, dataset)

    @retry_locked
    def finish_run(self, run_id: int, evaluations: dict[str, dict], dataset: str | None, lease: int | None,
                   **values) -> None:
        """A run's end in one transaction: its evaluations (split -> record), `values` (its checkpoint, its last
        progress) and the status FINISHED; all of it or, when the lease is gone, none of it."""
        with self._session.begin() as s:
            if lease is not None:
                self._fence(s, run_id, lease)
            for split, ev in evaluations.items():
                self._add_evaluation(s, run_id, ev, split, dataset)
            s.execute(update(RunRow).where(RunRow.id == run_id).values(
                status=str(RunStatus.FINISHED), error=None, finished_at=now(), **values))

    @staticmethod
    def _add_evaluation(s: Session, run_id: int, ev: dict, split: str, dataset: str | None) -> None:
        s.add(EvaluationRow(run_id=run_id, split=split, dataset=dataset, tta=ev.get("tta", "none"),
                            accuracy=float(ev["accuracy"]), n=int(ev["n"]), classes=list(ev["classes"]),
                            confusion=ev["confusion"], per_class=ev["per_class"],
                            predictions=list(map(int, ev.get("predictions", []))),
                            targets=list(map(int, ev.get("targets", []))),
                            probs_path=ev.get("probs_path"), macro_f1=ev.get("macro_f1"),
                            precision=ev.get("precision"), created_at=now()))
        if split == "test":
            run = s.get(RunRow, run_id)
            run.summary = {**(run.summary or {}), "test_acc": float(ev["accuracy"])}

    @retry_locked
    def delete_run(self, run: int | str, by: User | None = None) -> None:
        """Move a run to the trash with its epochs, evaluations and files (the instructor restores it or empties
        the trash). A queued run is cancelled first; a running one must be cancelled first."""
        rid = self.resolve(run)
        by = actor(by)
        with self._session.begin() as s:
            r = s.get(RunRow, rid)
            require(by, Action.DELETE, r.owner, what=f"run {r.name} (#{r.id})")
            refuse_running(r)
            if r.status == str(RunStatus.QUEUED):
                r.status, r.finished_at, r.error = str(RunStatus.CANCELLED), now(), "deleted before it started"
            r.deleted_at, r.starter = now(), False
            _audit(s, by, "delete", f"run {r.id} ({r.name})")

    @retry_locked
    def discard_run(self, run_id: int) -> None:
        """Remove a run that never was whole (an import that failed half way): its rows and files, keeping a
        tombstone so that its id is not handed out again."""
        with self._session.begin() as s:
            s.execute(delete(EpochRow).where(EpochRow.run_id == run_id))
            s.execute(delete(EvaluationRow).where(EvaluationRow.run_id == run_id))
            s.execute(update(RunRow).where(RunRow.id == run_id).values(
                deleted_at=now(), purged_at=now(), status=str(RunStatus.FAILED), checkpoint=None))
        shutil.rmtree(self.run_dir(run_id, create=False), ignore_errors=True)

    def run_dir(self, run_id: int, create: bool = True) -> Path:
        d = self.artifacts / "runs" / str(run_id)
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    def counts(self) -> dict[RunStatus, int]:
        with self._session() as s:
            rows = s.execute(select(RunRow.status, func.count()).where(RunRow.deleted_at.is_(None))
                             .group_by(RunRow.status)).all()
            return {st: 0 for st in RunStatus} | {RunStatus(k): int(v) for k, v in rows}

    # --- meta flags -----------------------------------------------------------------------------------
    @retry_locked
    def claim_flag(self, key: str) -> bool:
        """Set a one-time flag in the database; True for the one caller that set it, False once it is set."""
        with self._session() as s:
            if s.get(Meta, key) is not None:   # the usual answer, without taking the write lock
                return False
        try:
            with self._session.begin() as s:
                s.add(Meta(key=key, value=now().isoformat(timespec="seconds")))
            return True
        except IntegrityError:
            return False

    @retry_locked
    def release_flag(self, key: str) -> None:
        with self._session.begin() as s:
            s.execute(delete(Meta).where(Meta.key == key))

    # --- entities ----------------------------------------------------------------------------------
    def _runs(self, s: Session, rows: list[RunRow], epochs: bool = False) -> list[Run]:
        """Entities of run rows with their latest val and test evaluations, in two queries for any number."""
        evals = self._latest_evaluations(s, [r.id for r in rows])
        t = now()
        return [r.to_entity(test=evals.get((r.id, "test")), val=evals.get((r.id, "val")),
                            epochs=self._epochs(s, r.id) if epochs else None, now=t) for r in rows]

    @staticmethod
    def _latest_evaluations(s: Session, ids: list[int]) -> dict[tuple[int, str], Evaluation]:
        if not ids:
            return {}
        out = {}
        q = select(EvaluationRow).where(EvaluationRow.run_id.in_(ids), EvaluationRow.split.in_(("val", "test"))) \
            .order_by(EvaluationRow.id)
        for e in s.scalars(q):   # ordered by id: the latest of each (run, split) wins
            out[(e.run_id, e.split)] = e.to_entity()
        return out

    @staticmethod
    def _epochs(s: Session, rid: int) -> list[dict]:
        rows = s.scalars(select(EpochRow).where(EpochRow.run_id == rid).order_by(EpochRow.epoch))
        return [e.to_record() for e in rows]


def _lost_schema_race(e: Exception) -> bool:
    """Another process created the same table, column or schema-version row a moment earlier."""
    text = str(e).lower()
    return any(s in text for s in ("already exists", "duplicate column", "unique constraint", "duplicate key",
                                   "deadlock detected"))


def _clean(v):
    """NaN/inf are not JSON; store them as None (a diverged epoch still keeps its row)."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    return v


def _summary(old: dict, rec: dict) -> dict:
    out = dict(old)
    out["epochs_done"] = max(int(old.get("epochs_done", 0)), int(rec["epoch"]))
    for k in ("val_acc", "train_acc"):
        v = _clean(rec.get(k))
        if v is not None:
            out[f"last_{k}"] = v
            out[f"best_{k}"] = max(v, old.get(f"best_{k}", float("-inf")))
    for k in ("val_loss", "train_loss"):
        v = _clean(rec.get(k))
        if v is not None:
            out[f"last_{k}"] = v
            out[f"min_{k}"] = min(v, old.get(f"min_{k}", float("inf")))
    return out
