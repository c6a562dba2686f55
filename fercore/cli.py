"""`python -m fercore ...`: everything the UI does, scriptable, with `--json` output.

Every command is a function taking the parsed args and the store and returning something to print
(a dict/list for --json, or text). Errors a user can cause are exceptions whose message is a plain
sentence; main() prints them (as {"error": ...} with --json) and exits non-zero, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from fercore import fmt
from fercore.auth import CLI
from fercore.config import RunConfig, applies_text, config_field, config_fields
from fercore.data.audit import DEDUPE_MODES
from fercore.data.dataset import SPLITS
from fercore.errors import UsageError, UserError, is_user_error, user_message
from fercore.predict import ATTRIBUTION_METHODS
from fercore.presets import PRESETS, preset_config
from fercore.store.entities import RunStatus
from fercore.teach.sweeps import METHODS as SWEEP_METHODS

COMMANDS: dict[str, callable] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco




class Parser(argparse.ArgumentParser):
    """argparse prints usage and exits on a mistyped command; raising instead lets main() report it like every
    other error (as {"error": ...} with --json). Subcommand parsers inherit this class."""

    def error(self, message):
        raise UsageError(f"{message[:1].upper()}{message[1:]} (see `{self.prog} --help`).")


# --- helpers ----------------------------------------------------------------------------------------
def open_store(args, starter: bool = True):
    from fercore.jobs.runfile import ensure_starter
    from fercore.store import RunStore
    store = RunStore(args.db)
    if starter:
        ensure_starter(store)
    return store


def config_from_args(args) -> RunConfig:
    base = preset_config(args.preset) if args.preset else RunConfig()
    changes = {}
    for f in config_fields():
        v = getattr(args, "cfg_" + f.name, None)
        if v is not None:
            changes[f.name] = v
    return base.replace(**changes) if changes else base


def add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run config (see PRODUCT.md section 2)")
    for f in config_fields():
        if f.name == "preset":   # --preset is its own flag: it picks the starting config
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        when = applies_text(f)
        help_ = f"{f.metadata['help']} (default: {default}{'; ' + when if when else ''})"
        if isinstance(default, bool):
            g.add_argument(flag, dest="cfg_" + f.name, nargs="?", const="true", default=None, help=help_,
                           metavar="true|false")
        else:
            g.add_argument(flag, dest="cfg_" + f.name, default=None, help=help_,
                           choices=[str(c) for c in f.metadata["choices"]] if f.metadata.get("choices")
                           and not isinstance(default, int) else None)


# --- data -------------------------------------------------------------------------------------------
@command("data import")
def cmd_data_import(args, store):
    from fercore.data import import_dataset
    from fercore.data.audit import audit_sentence
    name = args.name or ("synthetic" if args.src == "synthetic" else None)
    info = import_dataset(args.src, store, name, dedupe=getattr(args, "dedupe", None), by=CLI)
    out = {**info.to_json(), "rows": sum(info.splits.values())}
    text = (f"Imported {out['rows']} images as {info.name!r}: " + ", ".join(f"{k} {v}" for k, v in info.splits.items())
            + ".\n  audit: " + audit_sentence(info.audit))
    dropped = info.audit.get("dropped") or []
    if info.audit.get("deduplicated"):
        text += "\n  dedupe: " + ("; ".join(dropped) or "nothing to drop")
    return out, text + "".join(f"\n  note: {n}" for n in info.notes if n not in dropped)


@command("data list")
def cmd_data_list(args, store):
    rows = store.list_datasets()
    text = "\n".join(f"{d.name:<24} {sum(d.splits.values()):>7} images  {','.join(d.classes)}"
                     f"{'  (synthetic)' if d.synthetic else ''}" for d in rows) or "No datasets yet."
    return [d.to_json() for d in rows], text


# --- training -----------------------------------------------------------------------------------------
@command("train")
def cmd_train(args, store):
    from fercore.data import require
    config = config_from_args(args)
    require(config.data, store)
    from fercore.models.weights import require_weights
    require_weights([config])   # a worker never downloads: refuse now rather than fail later
    from fercore.teach.estimate import teaching_warnings
    warnings = teaching_warnings(config, store, on_gpu=str(args.device or "").startswith("cuda"))
    for w in warnings:   # before a foreground run starts, not after it
        print(f"warning: {w}", file=sys.stderr)
    if args.queue:
        run = store.create_run(config, status=RunStatus.QUEUED, by=CLI)
        from fercore.jobs.spawn import ensure_worker
        started = ensure_worker(store, allowed=not args.no_worker)
        out = {**_brief(run), "worker": started.why, "warnings": warnings}
        return out, f"Queued run {run.label}. {started.sentence()}"
    from fercore.jobs.execute import execute_run
    run = store.create_run(config, status=RunStatus.RUNNING, by=CLI)
    store.update_run(run.id, attempts=1)   # its first attempt, as a worker's claim counts one (policy.MAX_ATTEMPTS)
    run = execute_run(store, run.id, device=args.device)   # with a lease and a heartbeat of its own; Ctrl-C cancels
    if run.status != RunStatus.FINISHED:   # the sentence, and a non-zero exit; the traceback is in the log
        raise UserError(f"Run {run.label} {run.status}: {run.error}")
    out = {**_brief(run), "warnings": warnings, "error": run.error, "accuracy": run.accuracy,
           "accuracy_split": run.accuracy_split,
           "val": run.val and {"accuracy": run.val.accuracy, "n": run.val.n},
           "test": run.test and {"accuracy": run.test.accuracy, "n": run.test.n}}
    return out, f"Run {run.label}: {run.status}, {fmt.accuracy_label(run)}"


def _brief(run) -> dict:
    return {"id": run.id, "name": run.name, "status": str(run.status)}


@command("worker")
def cmd_worker(args, store):
    if args.gpus:
        if args.device:
            raise UserError("Give either --gpus (one worker per GPU) or --device (one worker), not both.")
        from fercore.jobs.pool import describe, run_worker_per_gpu
        res = run_worker_per_gpu(store, args.gpus, once=args.once, idle_exit_s=args.idle_exit)
        return res, describe(res)
    from fercore.jobs.worker import run_worker
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads}).")
    n = run_worker(store, once=args.once, device=args.device, idle_exit_s=args.idle_exit,
                   stall_minutes=args.stall_minutes, threads=args.threads)
    return {"trained": n}, f"Worker finished: {n} run(s) trained."


@command("serve")
def cmd_serve(args, store):
    from fercore import serve

    def ready(info: dict) -> None:
        print(json.dumps(info) if args.json else
              f"FER Lab at {info['url']}: nginx in front of {len(info['backends'])} app process(es) on ports "
              f"{', '.join(map(str, info['backends']))} ({info['threads_per_process']} torch thread(s) each). "
              "Ctrl-C stops them all.", flush=True)
    status = serve.serve(args.db, args.processes, args.port, args.address, ready)
    return {"stopped": True, "exit_status": status}, "Stopped." if status == 0 else \
        "Stopped: nginx or an app process ended by itself (see its output above)."


# --- runs ----------------------------------------------------------------------------------------------
@command("runs list")
def cmd_runs_list(args, store):
    runs = store.list_runs(status=args.status)
    lines = [f"{r.id:>5} {r.name:<28} {r.status:<10} {r.config.arch:<16} {fmt.accuracy_label(r)}" for r in runs]
    return [r.to_json() for r in runs], "\n".join(lines) or "No runs yet."


@command("runs show")
def cmd_runs_show(args, store):
    run = store.get_run(args.run, epochs=True)
    lines = [f"Run {run.label} [{run.status}] on {run.dataset} ({run.device or '-'})"]
    if run.error:
        lines.append(f"  error: {run.error}")
    for e in run.epochs:
        lines.append(f"  epoch {e['epoch']:>3}: train loss {_num(e['train_loss'])} acc {_pct(e['train_acc'])} | "
                     f"val loss {_num(e['val_loss'])} acc {_pct(e['val_acc'])} | {e['seconds'] or 0:.1f}s")
    lines.append(f"  accuracy: {fmt.accuracy_label(run)}")
    return run.to_json(epochs=True), "\n".join(lines)


@command("runs cancel")
def cmd_runs_cancel(args, store):
    from fercore.jobs.policy import cancel_runs
    [run] = cancel_runs(store, [args.run], by=CLI)
    msg = {RunStatus.CANCELLED: "Cancelled.",
           RunStatus.RUNNING: "Cancel requested; the worker stops it within a batch or two."}
    return _brief(run), msg.get(run.status, f"Run {run.label} is already {run.status}; nothing to cancel.")


@command("runs resume")
def cmd_runs_resume(args, store):
    from fercore.jobs.policy import resume_run
    from fercore.jobs.spawn import ensure_worker
    run = resume_run(store, args.run, by=CLI)
    started = ensure_worker(store, allowed=not args.no_worker)
    return ({**_brief(run), "worker": started.why},
            f"Run {run.label} queued to resume after its last finished epoch. {started.sentence()}")


@command("runs delete")
def cmd_runs_delete(args, store):
    run = store.get_run(args.run)
    if run.status == RunStatus.RUNNING:
        raise UserError(f"Run {run.label} is training; cancel it first (`runs cancel {run.id}`).")
    store.delete_run(run.id, by=CLI)
    return {"id": run.id, "deleted": True}, \
        f"Moved run {run.label} to the trash (`runs restore {run.id}` brings it back)."


@command("runs restore")
def cmd_runs_restore(args, store):
    run = store.restore_run(int(args.run), by=CLI)
    return _brief(run), f"Restored run {run.label} from the trash, with its epochs and weights."


@command("runs export")
def cmd_runs_export(args, store):
    from fercore.jobs.runfile import export_run
    path = export_run(store, args.run, Path(args.file))
    return {"file": str(path), "bytes": path.stat().st_size}, f"Exported to {path}."


@command("runs import")
def cmd_runs_import(args, store):
    from fercore.jobs.runfile import import_run
    run = import_run(store, Path(args.file), name=args.name, by=CLI)
    return _brief(run), f"Imported run {run.label}."


@command("runs log")
def cmd_runs_log(args, store):
    run = store.get_run(args.run)
    path = run.log_path
    if not path or not Path(path).exists():
        raise UserError(f"Run {run.label} has no log file (runs trained in the foreground log to the terminal).")
    text = Path(path).read_text(errors="replace")
    return {"id": run.id, "log_path": path, "log": text}, text.rstrip()


@command("runs diagnose")
def cmd_runs_diagnose(args, store):
    from fercore.teach.diagnosis import diagnose
    run = store.get_run(args.run, epochs=True)
    findings = diagnose(run)
    split = run.scored.split if run.scored else None
    head = f"(read from {split})" if split else "(no evaluation yet: curves only)"
    text = "\n".join([head] + [f"- [{f['kind']}] {f['message']}" for f in findings]) if findings else \
        f"Nothing unusual found {head}."
    return {"id": run.id, "name": run.name, "split": split, "findings": findings}, text


# --- using trained runs ---------------------------------------------------------------------------------
@command("evaluate")
def cmd_evaluate(args, store):
    from fercore.metrics import public_evaluation
    from fercore.predict.predictor import evaluate_run
    ev = public_evaluation(evaluate_run(store, args.run, args.data, args.split, tta=args.tta))
    lines = [f"accuracy {_pct(ev['accuracy'])} on {ev['n']} images ({ev['scored']}, tta {ev['tta']}, "
             f"{ev['precision']})"]
    lines += [f"  {c:<10} precision {_pct(m['precision'])} recall {_pct(m['recall'])} f1 {_pct(m['f1'])}"
              for c, m in ev["per_class"].items()]
    return ev, "\n".join(lines)


@command("predict")
def cmd_predict(args, store):
    from fercore.predict.predictor import load_predictor, predict_image
    pred = load_predictor(store, args.run)
    out = [predict_image(pred, Path(p)) for p in args.images]
    lines = []
    for r in out:
        if "error" in r:
            lines.append(f"{r['image']}: {r['error']}")
            continue
        lines.append(f"{r['image']}: {len(r['faces'])} face(s)" +
                     (" (no face found: whole image used)" if r["fallback_whole_image"] else ""))
        lines += [f"  face {i + 1} at {f['box']}: {f['top']} ({f['probs'][f['top']]:.0%})"
                  for i, f in enumerate(r["faces"])]
    if all("error" in r for r in out):   # name each image: its own sentence does not say which one it is about
        raise UserError(out[0]["error"] if len(out) == 1 else " ".join(f"{r['image']}: {r['error']}" for r in out))
    return out, "\n".join(lines)


@command("explain")
def cmd_explain(args, store):
    from fercore.predict.predictor import explain_image, load_predictor
    pred = load_predictor(store, args.run)
    out = explain_image(pred, Path(args.image), args.method, Path(args.out), face=args.face)
    return out, f"Saved the {args.method} map of face {out['face']} ({out['top']}) to {out['out']}."


@command("bench")
def cmd_bench(args, store):
    from fercore.bench import precision_parity, profile_loops, run_benchmark
    if args.profile:
        res = profile_loops(data=args.data, device=args.device, preset=args.preset, quick=args.quick,
                            fraction=args.fraction if args.fraction < 1 else 0.05, precision=args.precision)
        return res, "\n".join(f"{k}: {v}" for k, v in res.items())
    if args.parity:
        res = precision_parity(epochs=args.epochs, data=args.data, device=args.device, preset=args.preset,
                               fraction=args.fraction if args.fraction < 1 else 0.1)
        return res, "\n".join(f"{k}: {v}" for k, v in res.items())
    res = run_benchmark(epochs=args.epochs, batch_size=args.batch_size, data=args.data, device=args.device,
                        csv=not args.no_csv, quick=args.quick, preset=args.preset, fraction=args.fraction,
                        precision=args.precision)
    return res, "\n".join(f"{k}: {v}" for k, v in res.items())


# --- teaching -------------------------------------------------------------------------------------------
@command("lesson list")
def cmd_lesson_list(args, store):
    from fercore.teach.lessons import list_lessons
    lessons = list_lessons(data=args.data, epochs=args.epochs, fraction=args.fraction, store=store)
    rows = [f"{l['name']:<16} {len(l['runs'])} runs  ~{fmt.duration(l['estimate']['seconds_cpu']):>13} CPU  "
            f"~{fmt.duration(l['estimate']['seconds_gpu']):>13} GPU  {l['title']}" for l in lessons]
    return lessons, "\n".join(rows + ["(times: a rough cost model for the data and epochs chosen; "
                                       "--data, --fraction and --epochs change them)"])


@command("lesson start")
def cmd_lesson_start(args, store):
    from fercore.teach.estimate import estimate_runs
    from fercore.teach.lessons import start_lesson
    runs = start_lesson(store, args.name, data=args.data, epochs=args.epochs, fraction=args.fraction, by=CLI)
    est = estimate_runs([r.config for r in runs], store)
    from fercore.jobs.spawn import ensure_worker
    started = ensure_worker(store, allowed=not args.no_worker)
    return ([_brief(r) for r in runs],
            f"Queued {len(runs)} runs of lesson {args.name}: about {fmt.duration(est['seconds_cpu'])} on a CPU, "
            f"{fmt.duration(est['seconds_gpu'])} on a GPU (a rough estimate). {started.sentence(len(runs))}")


@command("sweep start")
def cmd_sweep_start(args, store):
    from fercore.teach.sweeps import start_sweep
    space = json.loads(args.space) if args.space else {}
    sweep = start_sweep(store, config_from_args(args), space, method=args.method, trials=args.trials,
                        name=args.sweep_name, by=CLI)
    from fercore.jobs.spawn import ensure_worker
    started = ensure_worker(store, allowed=not args.no_worker)
    return ({**sweep, "worker": started.why},
            f"Sweep {sweep['name']}: {len(sweep['runs'])} run(s) queued. {started.sentence(len(sweep['runs']))}")


@command("report")
def cmd_report(args, store):
    from fercore.report import build_report, write_figures, write_report
    out_path = Path(args.out)
    if out_path.is_dir():
        raise UsageError(f"{out_path} is a folder; give the report a file name, e.g. -o {out_path / 'report.html'}.")
    report = build_report(store, args.runs, lesson=args.lesson, gallery=not args.no_mistakes)
    size = write_report(report, out_path)
    out = {"path": str(out_path), "bytes": size, "runs": [r.id for r in report.runs], "split": report.split,
           "charts": len(report.charts), "lesson": report.lesson and report.lesson["group"]}
    text = (f"Wrote {out_path} ({size / 1e6:.1f} MB): {len(report.runs)} run(s), {len(report.charts)} charts, "
            f"read on {report.split}.")
    if args.figures:
        export = write_figures(report, Path(args.figures))
        out["figures"] = export.to_json()
        text += (f"\n  figures: {len(export.images)} images and {len(export.tables)} CSV tables in {args.figures}"
                 + (f"\n  {export.note}" if export.note else ""))
    return out, text


# --- pretrained weights ----------------------------------------------------------------------------------
@command("weights list")
def cmd_weights_list(args, store):
    from fercore.models.weights import checkpoints_dir, weights_table
    rows = weights_table()
    lines = [f"{r['arch']:<16} {r['weights']:<38} {r['file']:<38} {r['size_mb']:>6.0f} MB  "
             f"{'present' if r['present'] else 'missing'}" for r in rows]
    return rows, "\n".join(lines + [f"(folder: {checkpoints_dir()})"])


@command("weights fetch")
def cmd_weights_fetch(args, store):
    from fercore.models.weights import PRETRAINED, fetch_weights
    archs = list(PRETRAINED) if args.all else weights_archs(args.archs)
    progress = None if args.json or not sys.stderr.isatty() else download_bars()
    fetched = fetch_weights(archs, progress)
    out = {"fetched": [e.arch for e in fetched], "present": [a for a in archs if PRETRAINED[a].present()]}
    text = (f"Downloaded {', '.join(e.file_name for e in fetched)}." if fetched else
            f"Already on this machine: {', '.join(PRETRAINED[a].file_name for a in archs)}.")
    return out, text


@command("weights import")
def cmd_weights_import(args, store):
    from fercore.models.weights import import_weights
    report = import_weights(Path(args.path), by=CLI)
    lines = [f"Imported {e.file_name} ({e.label})." for e in report.imported]
    lines += [f"Refused: {r}" for r in report.refused]
    if report.ignored:
        lines.append(f"Ignored {len(report.ignored)} file(s) that are no weights file of the lab.")
    return report.to_dict(), "\n".join(lines)


def weights_archs(archs: list[str]) -> list[str]:
    from fercore.models.weights import PRETRAINED, unknown_archs
    if not archs:
        raise UsageError("Name the architectures to fetch (e.g. `weights fetch resnet18`), or use --all.")
    if unknown_archs(archs):
        raise UsageError(f"There are no ImageNet weights for {', '.join(unknown_archs(archs))}; choose from "
                         f"{', '.join(PRETRAINED)}.")
    return archs


def download_bars():
    """A tqdm bar on stderr per file being downloaded."""
    from tqdm import tqdm
    bars = {}

    def progress(entry, done, total):
        bar = bars.get(entry.arch) or bars.setdefault(entry.arch, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.file_name, file=sys.stderr))
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()
    return progress


# --- databases ------------------------------------------------------------------------------------------
@command("db copy")
def cmd_db_copy(args, store):
    from fercore.store import RunStore
    from fercore.store.copy import copy_store, open_source
    dst = RunStore(args.dst, artifacts=args.artifacts)
    res = copy_store(open_source(args.src), dst, merge=args.merge)
    res["run_ids"] = {str(k): v for k, v in res["run_ids"].items()}
    text = (f"Copied {res['runs']} run(s) ({res['epochs']} epochs, {res['evaluations']} evaluations), "
            f"{res['datasets']} dataset(s) and {res['files']} file(s) to {dst.db_path}; files under {dst.artifacts}.")
    if res["datasets_shared"]:
        text += f" {res['datasets_shared']} dataset(s) were there already."
    if any(int(k) != v for k, v in res["run_ids"].items()):
        text += " New run ids: " + ", ".join(f"{k} -> {v}" for k, v in res["run_ids"].items()) + "."
    text += "".join(f"\n  left out run {r['id']} ({r['name']}): {r['reason']}" for r in res["skipped_runs"])
    return res, text


# --- argument parsing -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    # SUPPRESS: a flag given before the subcommand is not overwritten by the subcommand's default
    common.add_argument("--db", default=argparse.SUPPRESS,
                        help="SQLAlchemy URL or SQLite path (default: $FER_DB_URL or runs.db)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    p = Parser(prog="python -m fercore", description="FER Lab engine", parents=[common])
    sub = p.add_subparsers(dest="group", required=True)

    def group(name, help_):
        g = sub.add_parser(name, help=help_, parents=[common])
        return g.add_subparsers(dest="action", required=True)

    data = group("data", "import and list datasets")
    a = data.add_parser("import", parents=[common], help="import a CSV, folder, zip or `synthetic`")
    a.add_argument("src")
    a.add_argument("--name")
    a.add_argument("--dedupe", nargs="?", const="exact", choices=DEDUPE_MODES, default=None,
                   help="drop val/test images that are copies of images of an earlier split, and blank images (see the "
                   "audit that import prints); `--dedupe near` also drops near copies (re-saved, re-cropped)")
    data.add_parser("list", parents=[common])

    t = sub.add_parser("train", parents=[common], help="train a run (foreground) or queue it")
    t.add_argument("--preset", choices=list(PRESETS))
    t.add_argument("--queue", action="store_true", help="queue the run for a background worker")
    t.add_argument("--no-worker", action="store_true", help="with --queue: do not start a worker")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the GPU if there is one)")
    add_config_flags(t)

    w = sub.add_parser("worker", parents=[common], help="train queued runs")
    w.add_argument("--once", action="store_true", help="drain the queue and exit")
    w.add_argument("--device", default=None)
    w.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    w.add_argument("--threads", type=int, default=None,
                   help="CPU threads for training (default: one per core; a worker the app starts on a machine of "
                        "4 cores or fewer without a GPU uses one fewer, leaving a core to the app)")
    w.add_argument("--gpus", default=None, metavar="all|0,1,...",
                   help="start one worker process per GPU (all visible ones, or those listed)")
    w.add_argument("--stall-minutes", type=float, default=None,
                   help="fail a run whose training made no progress for this long (default: $FER_STALL_MINUTES "
                        "or 30; 0 = off)")

    sv = sub.add_parser("serve", parents=[common],
                        help="several app processes behind nginx, for a class on a many-core server")
    sv.add_argument("--processes", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="app processes (default: one per two cores)")
    sv.add_argument("--port", type=int, default=8501, help="the port the class opens (default 8501)")
    sv.add_argument("--address", default="localhost",
                    help="the address nginx listens on (default localhost; 0.0.0.0 for a class on the network)")

    runs = group("runs", "list, show, cancel, resume, delete, restore, export, import, log, diagnose runs")
    r = runs.add_parser("list", parents=[common])
    r.add_argument("--status", choices=[str(s) for s in RunStatus])
    for name in ("show", "cancel", "resume", "delete", "restore", "log", "diagnose"):
        r = runs.add_parser(name, parents=[common])
        r.add_argument("run", help="run id or name")
        if name == "resume":
            r.add_argument("--no-worker", action="store_true", help="do not start a worker")
    r = runs.add_parser("export", parents=[common])
    r.add_argument("run")
    r.add_argument("file")
    r = runs.add_parser("import", parents=[common])
    r.add_argument("file")
    r.add_argument("--name")

    e = sub.add_parser("evaluate", parents=[common], help="evaluate a saved run on a dataset")
    e.add_argument("run")
    e.add_argument("--data", required=True, help="dataset name, path, or `synthetic`")
    e.add_argument("--split", default="test", choices=list(SPLITS))
    e.add_argument("--tta", default=None, choices=config_field("tta").metadata["choices"],
                   help="default: the run's own")

    pr = sub.add_parser("predict", parents=[common], help="faces and class probabilities of images")
    pr.add_argument("run")
    pr.add_argument("images", nargs="+")

    ex = sub.add_parser("explain", parents=[common], help="save an attribution map of a face")
    ex.add_argument("run")
    ex.add_argument("image")
    ex.add_argument("--method", default="saliency", choices=list(ATTRIBUTION_METHODS))
    ex.add_argument("--out", required=True)
    ex.add_argument("--face", type=int, default=1, help="which face (1 = leftmost)")

    b = sub.add_parser("bench", parents=[common], help="training-throughput benchmark")
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--data", default=None, help="FER2013 source (default: ../shared if present, else synthetic)")
    b.add_argument("--device", default=None)
    b.add_argument("--no-csv", action="store_true", help="skip the CSV import timing")
    b.add_argument("--quick", action="store_true", help="a small model and few images (smoke test)")
    b.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="whose network and augmentation (default: cpu-starter on a CPU, default on a GPU)")
    b.add_argument("--fraction", type=float, default=1.0, help="share of the training images (e.g. 0.25)")
    b.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="the lab's precision (auto: bf16 where the device computes it natively, else fp32); the "
                        "plain reference loop runs in the same one")
    b.add_argument("--profile", action="store_true",
                   help="instead: torch.profiler over one epoch of the lab's loop and of the plain loop in the same "
                        "precision; where the lab's extra time goes (--fraction: 0.05 unless given)")
    b.add_argument("--parity", action="store_true",
                   help="instead: train the preset's recipe in fp32 and in bf16 and compare val accuracy "
                        "(--epochs, --fraction: 0.1 unless given)")

    les = group("lesson", "one-click teaching experiments")
    l = les.add_parser("list", parents=[common])
    l2 = les.add_parser("start", parents=[common])
    l2.add_argument("name")
    l2.add_argument("--no-worker", action="store_true")
    for x in (l, l2):
        x.add_argument("--data", default="synthetic")
        x.add_argument("--epochs", type=int, default=None)
        x.add_argument("--fraction", type=float, default=None, help="fraction of the training data")

    rp = sub.add_parser("report", parents=[common], help="one self-contained HTML report of runs or a lesson")
    rp.add_argument("runs", nargs="*", metavar="RUN", help="run ids or names (up to 8)")
    rp.add_argument("-o", "--out", required=True, help="the HTML file to write")
    rp.add_argument("--lesson", default=None, help="a lesson's run group (as the Lessons page shows it): its question, "
                    "what to watch for and its finding are added, and its runs unless RUNs are given too")
    rp.add_argument("--figures", default=None, metavar="DIR",
                    help="also write each chart as PNG and SVG (needs Chrome/Chromium) and each table as CSV")
    rp.add_argument("--no-mistakes", action="store_true", help="leave out the gallery of misclassified faces")

    wt = group("weights", "list, fetch and import the pretrained ImageNet weights files")
    wt.add_parser("list", parents=[common], help="the files transfer learning starts from, and which are here")
    f = wt.add_parser("fetch", parents=[common], help="download them into the torch hub cache (needs internet)")
    f.add_argument("archs", nargs="*", metavar="ARCH", help="architectures as `weights list` names them")
    f.add_argument("--all", action="store_true", help="every architecture")
    i = wt.add_parser("import", parents=[common], help="copy checked files from a file, folder or zip")
    i.add_argument("path", help="a weights file, a folder of them (a USB stick) or a .zip")

    dbs = group("db", "move a lab's runs between databases")
    c = dbs.add_parser("copy", parents=[common], help="copy datasets, runs and their files, e.g. SQLite to PostgreSQL")
    c.add_argument("src", help="the database to copy: an SQLite path or a URL")
    c.add_argument("dst", help="the database to copy into, e.g. postgresql://user:password@host/fer")
    c.add_argument("--merge", action="store_true", help="append to a destination that already holds runs (new ids)")
    c.add_argument("--artifacts", default=None,
                   help="the destination's artifact root (default: $FER_ARTIFACTS, else next to an SQLite file)")

    sw = group("sweep", "hyperparameter search")
    s = sw.add_parser("start", parents=[common])
    s.add_argument("--method", default="random", choices=list(SWEEP_METHODS))
    s.add_argument("--trials", type=int, default=8)
    s.add_argument("--space", help='JSON: {"lr": {"low": 1e-4, "high": 1e-2, "log": true}, '
                   '"conv_dropout": [0, 0.25, 0.5]}')
    s.add_argument("--sweep-name", default=None)
    s.add_argument("--preset", choices=list(PRESETS))
    s.add_argument("--no-worker", action="store_true")
    add_config_flags(s)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        return _fail(argparse.Namespace(json="--json" in argv), str(e), 2)
    args.db = getattr(args, "db", None) or os.environ.get("FER_DB_URL") or "runs.db"
    args.json = getattr(args, "json", False)
    name = args.group + (f" {args.action}" if getattr(args, "action", None) else "")
    try:
        # `weights` needs no database; `db copy` names its own two: none is opened (or created) for --db
        opens_db = args.group != "weights" and name != "db copy"
        store = open_store(args, starter=name not in ("bench",)) if opens_db else None
        out, text = COMMANDS[name](args, store)
    except KeyboardInterrupt:
        return _fail(args, "Interrupted.", 130)
    except Exception as e:   # every error reaches the user as one sentence, never a traceback
        if os.environ.get("FER_DEBUG"):
            raise
        return _fail(args, user_message(e), 2 if is_user_error(e) else 1)
    try:
        print(json.dumps(out, default=str) if args.json else text, flush=True)
    except BrokenPipeError:   # `... | head`: the reader has gone, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _fail(args, msg: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": msg}))
    else:
        print(f"error: {msg}", file=sys.stderr)
    return code


def _pct(v) -> str:
    return "  -  " if v is None else f"{v * 100:5.1f}%"


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"
