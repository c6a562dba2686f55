"""`db copy SRC DST`: move a lab's datasets and runs to another database, e.g. a class's runs.db to the
department's PostgreSQL server, with the files they name.

What is copied: datasets (rows and their .npz arrays), runs (every column, with their folder: checkpoint, log,
probabilities), their epochs and evaluations, and the workers that trained them (marked stopped), plus the
specs of sweeps. Run ids are kept, so `runs show 12` means the same run before and after; the file paths
stored in the rows are rewritten to the destination's artifact root.

By default the destination must hold no runs yet: copying into a live lab would mix two histories under one
set of ids. `--merge` appends instead: the runs get new ids (their epochs, evaluations and folders follow),
datasets the destination already has (same name and images) are shared, and the source's auto-registered
starter model is left out when the destination has its own.

All rows go in one transaction: a copy that fails leaves the destination as it was (and removes the files it
had written). A run still training in the source is refused: its worker would go on writing to the source.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import func, insert, select

from fercore.errors import UserError
from fercore.store.dialects import move_id_sequence_past
from fercore.store.entities import RunStatus
from fercore.store.runstore import RunStore, _url
from fercore.store.schema import AuditRow, DatasetRow, EpochRow, EvaluationRow, RunRow, UserRow, WorkerRow

STARTER_SOURCE = "starter.fer.pt"   # runfile.STARTER_FILE's name, as import_run records it in a run's progress


class CopyRefused(UserError, ValueError):
    """A copy that must not happen (or cannot); the message is a plain sentence."""


def open_source(url_or_path: str) -> RunStore:
    """The source database; an SQLite file must exist (opening it would otherwise create an empty one)."""
    url = _url(url_or_path)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise CopyRefused(f"There is no database at {url[len('sqlite:///'):]}; check the source path.")
    return RunStore(url_or_path)


def copy_store(src: RunStore, dst: RunStore, merge: bool = False) -> dict:
    """Copy everything of `src` into `dst` (see the module docstring). Returns what was copied:
    {"datasets", "datasets_shared", "runs", "epochs", "evaluations", "files", "run_ids": {old: new},
    "skipped_runs": [...]}."""
    if src.url == dst.url:
        raise CopyRefused("The source and the destination are the same database.")
    training = src.counts()[RunStatus.RUNNING]
    if training:
        raise CopyRefused(f"{training} run(s) are training in the source database; let them finish or cancel them "
                          "(`runs cancel RUN`), then copy.")
    held = sum(dst.counts().values())
    if held and not merge:
        raise CopyRefused(f"The destination already holds {held} run(s). Copy into an empty database, or add "
                          "--merge to append these runs under new ids.")
    files = _Files()
    try:
        with src.engine.connect() as sc, dst.engine.begin() as dc:
            out = {"files": 0, "skipped_runs": []}
            out["datasets"], out["datasets_shared"] = _copy_datasets(sc, dc, dst, files)
            workers = _copy_workers(sc, dc)
            _copy_people(sc, dc)   # who is a student (fair share, limits) and who did what
            keep_ids = not merge
            dst_starter = merge and dc.scalar(select(func.count()).select_from(RunRow)
                                              .where(RunRow.name == "starter")) > 0
            run_ids, out["epochs"], out["evaluations"] = {}, 0, 0
            for row in sc.execute(select(RunRow.__table__).order_by(RunRow.id)).mappings():
                if dst_starter and row["name"] == "starter" and \
                        (row["progress"] or {}).get("imported_from") == STARTER_SOURCE:
                    out["skipped_runs"].append({"id": row["id"], "name": row["name"],
                                                "reason": "the destination has its own starter model"})
                    continue
                new = _copy_run(sc, dc, src, dst, dict(row), keep_ids, workers, files)
                run_ids[row["id"]] = new
                out["epochs"] += _copy_children(sc, dc, EpochRow, row["id"], new)
                old = row["id"]
                out["evaluations"] += _copy_children(
                    sc, dc, EvaluationRow, old, new, lambda p, old=old, new=new: files.rehome(p, src, dst, old, new))
            for table in (RunRow, EpochRow, EvaluationRow, WorkerRow, DatasetRow):
                move_id_sequence_past(dc, table.__tablename__)
            out["runs"], out["run_ids"] = len(run_ids), run_ids
            _copy_sweep_specs(src, dst, files)
    except BaseException:
        files.remove_written()
        raise
    out["files"] = len(files.written)
    return out


# --- rows ----------------------------------------------------------------------------------------------------
def _copy_datasets(sc, dc, dst: RunStore, files: _Files) -> tuple[int, int]:
    """Datasets are referred to by name (a run's config names its data), so a name the destination already has
    must hold the same images there."""
    copied = shared = 0
    folder = dst.artifacts / "datasets"
    for row in sc.execute(select(DatasetRow.__table__).order_by(DatasetRow.id)).mappings():
        row = dict(row)
        have = dc.execute(select(DatasetRow.fingerprint).where(DatasetRow.name == row["name"])).scalar()
        if have is not None:
            if have != row["fingerprint"]:
                raise CopyRefused(f"Both databases have a dataset named {row['name']!r}, with different images; "
                                  "rename one of them (import it again under another name) and copy again.")
            shared += 1
            continue
        row.pop("id")
        row["path"] = files.copy(Path(row["path"]), folder / Path(row["path"]).name, required=False)
        dc.execute(insert(DatasetRow.__table__).values(**row))
        copied += 1
    return copied, shared


def _copy_people(sc, dc) -> None:
    """The users (a destination's own row of the same id wins) and the audit log (appended)."""
    have = set(dc.scalars(select(UserRow.id)))
    for row in sc.execute(select(UserRow.__table__)).mappings():
        if row["id"] not in have:
            dc.execute(insert(UserRow.__table__).values(**row))
    for row in sc.execute(select(AuditRow.__table__).order_by(AuditRow.id)).mappings():
        dc.execute(insert(AuditRow.__table__).values(**{k: v for k, v in row.items() if k != "id"}))


def _copy_workers(sc, dc) -> dict[int, int]:
    """The workers that trained the runs (their host, device): history now, so all marked stopped."""
    ids = {}
    for row in sc.execute(select(WorkerRow.__table__).order_by(WorkerRow.id)).mappings():
        row = dict(row)
        old = row.pop("id")
        row.update(status="stopped", current_run=None)
        ids[old] = dc.execute(insert(WorkerRow.__table__).values(**row).returning(WorkerRow.id)).scalar_one()
    return ids


def _copy_run(sc, dc, src: RunStore, dst: RunStore, row: dict, keep_id: bool, workers: dict,
              files: _Files) -> int:
    old = row["id"]
    if not keep_id:
        row.pop("id")
    row["worker_id"] = workers.get(row["worker_id"])
    paths = {k: row[k] for k in ("checkpoint", "log_path") if row.get(k)}
    row.update({k: None for k in paths})
    new = dc.execute(insert(RunRow.__table__).values(**row).returning(RunRow.id)).scalar_one()
    files.copy_run_folder(_run_folder(src, old, paths.values()), dst.run_dir(new, create=False))
    if paths:
        dc.execute(RunRow.__table__.update().where(RunRow.id == new).values(
            **{k: files.rehome(p, src, dst, old, new) for k, p in paths.items()}))
    return new


def _copy_children(sc, dc, table, old_run: int, new_run: int, rehome=None) -> int:
    n = 0
    for row in sc.execute(select(table.__table__).where(table.run_id == old_run).order_by(table.id)).mappings():
        row = dict(row)
        row.pop("id")
        row["run_id"] = new_run
        if rehome is not None and row.get("probs_path"):
            row["probs_path"] = rehome(row["probs_path"])
        dc.execute(insert(table.__table__).values(**row))
        n += 1
    return n


def _run_folder(src: RunStore, run_id: int, paths) -> Path:
    """Where the source keeps a run's files: the folder its stored paths name (the source database's own
    artifact root, whatever $FER_ARTIFACTS says now), else its run_dir."""
    for p in paths:
        folder = Path(p).parent
        if folder.name == str(run_id) and folder.parent.name == "runs":
            return folder
    return src.run_dir(run_id, create=False)


def _copy_sweep_specs(src: RunStore, dst: RunStore, files: _Files) -> None:
    folder = src.artifacts / "sweeps"
    if folder.is_dir():
        for spec in folder.glob("*.json"):
            files.copy(spec, dst.artifacts / "sweeps" / spec.name, required=False, overwrite=False)


# --- files ---------------------------------------------------------------------------------------------------
class _Files:
    """The files a copy writes, so that a copy that fails can take them back."""

    def __init__(self):
        self.written: list[Path] = []
        self.folders: dict[str, tuple[Path, Path]] = {}   # str(run dst folder) -> (src folder, dst folder)

    def copy(self, src: Path, dst: Path, required: bool = True, overwrite: bool = True) -> str:
        """Copy one file (atomically: never half a file at `dst`); returns the path to store."""
        if not src.is_file() or _same(src, dst):
            if required and not src.is_file():
                raise CopyRefused(f"The file {src} named by the source database is missing.")
            return str(dst if dst.is_file() else src)
        if dst.exists() and not overwrite:
            return str(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".copy")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self.written.append(dst)
        return str(dst)

    def copy_run_folder(self, src: Path, dst: Path) -> None:
        if _same(src, dst):   # the same artifact root and the same id: the files are where they belong
            self.folders[str(dst)] = (src, dst)
            return
        if dst.exists() and any(dst.iterdir()):
            raise CopyRefused(f"The destination's artifact folder already holds files for run {dst.name} ({dst}); "
                              "copy into an empty artifact root (--artifacts DIR).")
        self.folders[str(dst)] = (src, dst)
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    self.copy(f, dst / f.relative_to(src))

    def rehome(self, path: str, src: RunStore, dst: RunStore, old: int, new: int) -> str:
        """A stored path of run `old` as the destination must store it for run `new`."""
        p = Path(path)
        folder = dst.run_dir(new, create=False)
        src_folder = self.folders.get(str(folder), (None,))[0]
        if src_folder is not None and p.is_relative_to(src_folder):
            return str(folder / p.relative_to(src_folder))
        if p.is_file():   # a file outside the run's folder (an older layout): brought into it
            return self.copy(p, folder / p.name)
        return path   # gone already in the source: nothing to copy, the path says where it was

    def remove_written(self) -> None:
        for f in reversed(self.written):
            f.unlink(missing_ok=True)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
