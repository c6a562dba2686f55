"""`python -m fercore ...`: everything the UI does, scriptable, with `--json` output.

Every command is a function taking the parsed args and the store and returning something to print
(a dict/list for --json, or text). Errors a user can cause are exceptions whose message is a plain
sentence; main() prints them (as {"error": ...} with --json) and exits non-zero, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
from pathlib import Path

from .config import PRESETS, ConfigError, RunConfig, config_fields, preset_config

COMMANDS: dict[str, callable] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


class UserError(Exception):
    """A plain-sentence error for the user."""


class UsageError(UserError):
    """A mistyped command line (an unknown flag, a bad choice)."""


class Parser(argparse.ArgumentParser):
    """argparse prints usage and exits on a mistyped command; raising instead lets main() report it like every
    other error (as {"error": ...} with --json). Subcommand parsers inherit this class."""

    def error(self, message):
        raise UsageError(f"{message[:1].upper()}{message[1:]} (see `{self.prog} --help`).")


# --- helpers ----------------------------------------------------------------------------------------
def open_store(args, starter: bool = True):
    from .runfile import ensure_starter
    from .store import RunStore
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
        help_ = f.metadata["help"] + f" (default: {default})"
        if isinstance(default, bool):
            g.add_argument(flag, dest="cfg_" + f.name, nargs="?", const="true", default=None, help=help_,
                           metavar="true|false")
        else:
            g.add_argument(flag, dest="cfg_" + f.name, default=None, help=help_,
                           choices=[str(c) for c in f.metadata["choices"]] if f.metadata.get("choices")
                           and not isinstance(default, int) else None)


def run_summary(run: dict) -> dict:
    """The `runs list` shape: the run without epochs."""
    return {k: v for k, v in run.items() if k != "epochs"}


# --- data -------------------------------------------------------------------------------------------
@command("data import")
def cmd_data_import(args, store):
    from .data.sources import load_source
    ds = load_source(args.src)
    name = args.name or ("synthetic" if args.src == "synthetic" else ds.name)
    info = store.add_dataset(ds, name)
    out = {"name": info["name"], "source": info["source"], "classes": info["classes"], "splits": info["splits"],
           "rows": sum(info["splits"].values()), "synthetic": info["synthetic"], "notes": info["notes"],
           "fingerprint": info["fingerprint"]}
    text = (f"Imported {out['rows']} images as {name!r}: " +
            ", ".join(f"{k} {v}" for k, v in info["splits"].items()) + ".")
    return out, text + "".join(f"\n  note: {n}" for n in info["notes"])


@command("data list")
def cmd_data_list(args, store):
    rows = store.list_datasets()
    text = "\n".join(f"{d['name']:<24} {sum(d['splits'].values()):>7} images  {','.join(d['classes'])}"
                     f"{'  (synthetic)' if d['synthetic'] else ''}" for d in rows) or "No datasets yet."
    return rows, text


# --- training -----------------------------------------------------------------------------------------
@command("train")
def cmd_train(args, store):
    config = config_from_args(args)
    if args.queue:
        run = store.create_run(config, status="queued")
        from .jobs import ensure_worker
        if not args.no_worker:
            ensure_worker(store)
        return ({"id": run["id"], "name": run["name"], "status": run["status"]},
                f"Queued run {run['id']} ({run['name']}); a worker will train it.")
    from .jobs import heartbeat_while
    from .runner import execute_run
    run = store.create_run(config, status="running")
    with heartbeat_while(store, run["id"]):   # so the app never mistakes a foreground run for a dead one
        run = execute_run(store, run["id"], device=args.device)
    out = {"id": run["id"], "name": run["name"], "status": run["status"], "error": run["error"],
           "test": run["test"] and {k: run["test"][k] for k in ("accuracy", "n")}}
    text = f"Run {run['id']} ({run['name']}): {run['status']}"
    if run["test"]:
        text += f", test accuracy {run['test']['accuracy']:.4f}"
    if run["error"]:
        text += f": {run['error']}"
    return out, text


@command("worker")
def cmd_worker(args, store):
    from .jobs import run_worker
    n = run_worker(store, once=args.once, device=args.device, idle_exit_s=args.idle_exit,
                   stall_minutes=args.stall_minutes)
    return {"trained": n}, f"Worker finished: {n} run(s) trained."


# --- runs ----------------------------------------------------------------------------------------------
@command("runs list")
def cmd_runs_list(args, store):
    runs = [run_summary(r) for r in store.list_runs(status=args.status)]
    lines = [f"{r['id']:>5} {r['name']:<28} {r['status']:<10} {r['config'].get('arch', ''):<16} "
             f"val {_pct(r['summary'].get('best_val_acc'))}  test {_pct((r['test'] or {}).get('accuracy'))}"
             for r in runs]
    return runs, "\n".join(lines) or "No runs yet."


@command("runs show")
def cmd_runs_show(args, store):
    run = store.get_run(args.run, epochs=True)
    val = store.evaluation(run["id"], "val")
    run["val"] = val
    lines = [f"Run {run['id']} {run['name']} [{run['status']}] on {run['dataset']} ({run['device'] or '-'})"]
    if run["error"]:
        lines.append(f"  error: {run['error']}")
    for e in run["epochs"]:
        lines.append(f"  epoch {e['epoch']:>3}: train loss {_num(e['train_loss'])} acc {_pct(e['train_acc'])} | "
                     f"val loss {_num(e['val_loss'])} acc {_pct(e['val_acc'])} | {e['seconds'] or 0:.1f}s")
    if run["test"]:
        lines.append(f"  test accuracy {_pct(run['test']['accuracy'])} on {run['test']['n']} images")
    return run, "\n".join(lines)


@command("runs cancel")
def cmd_runs_cancel(args, store):
    from .jobs import cancel_runs
    [run] = cancel_runs(store, [args.run])
    msg = {"cancelled": "Cancelled.", "running": "Cancel requested; the worker stops it within a batch or two."}
    return ({"id": run["id"], "name": run["name"], "status": run["status"]},
            msg.get(run["status"], f"Run {run['name']} is already {run['status']}; nothing to cancel."))


@command("runs delete")
def cmd_runs_delete(args, store):
    run = store.get_run(args.run)
    if run["status"] == "running":
        raise UserError(f"Run {run['name']} is training; cancel it first (`runs cancel {run['id']}`).")
    store.delete_run(run["id"])
    return {"id": run["id"], "deleted": True}, f"Deleted run {run['id']} ({run['name']})."


@command("runs export")
def cmd_runs_export(args, store):
    from .runfile import export_run
    path = export_run(store, args.run, Path(args.file))
    return {"file": str(path), "bytes": path.stat().st_size}, f"Exported to {path}."


@command("runs import")
def cmd_runs_import(args, store):
    from .runfile import import_run
    run = import_run(store, Path(args.file), name=args.name)
    return ({"id": run["id"], "name": run["name"], "status": run["status"]},
            f"Imported run {run['id']} ({run['name']}).")


@command("runs log")
def cmd_runs_log(args, store):
    run = store.get_run(args.run)
    path = run.get("log_path")
    if not path or not Path(path).exists():
        raise UserError(f"Run {run['name']} has no log file (runs trained in the foreground log to the terminal).")
    text = Path(path).read_text(errors="replace")
    return {"id": run["id"], "log_path": path, "log": text}, text.rstrip()


@command("runs diagnose")
def cmd_runs_diagnose(args, store):
    from .diagnosis import diagnose
    run = store.get_run(args.run, epochs=True)
    findings = diagnose(run, run["epochs"], run["test"])
    text = "\n".join(f"- [{f['kind']}] {f['message']}" for f in findings) or "Nothing unusual found."
    return {"id": run["id"], "name": run["name"], "findings": findings}, text


# --- using trained runs ---------------------------------------------------------------------------------
@command("evaluate")
def cmd_evaluate(args, store):
    from .inference import evaluate_run
    from .metrics import public_evaluation
    ev = public_evaluation(evaluate_run(store, args.run, args.data, args.split, tta=args.tta))
    lines = [f"accuracy {_pct(ev['accuracy'])} on {ev['n']} images ({args.split}, tta {ev['tta']})"]
    lines += [f"  {c:<10} precision {_pct(m['precision'])} recall {_pct(m['recall'])} f1 {_pct(m['f1'])}"
              for c, m in ev["per_class"].items()]
    return ev, "\n".join(lines)


@command("predict")
def cmd_predict(args, store):
    from .inference import load_predictor, predict_image
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
    from .inference import explain_image, load_predictor
    pred = load_predictor(store, args.run)
    out = explain_image(pred, Path(args.image), args.method, Path(args.out), face=args.face)
    return out, f"Saved the {args.method} map of face {out['face']} ({out['top']}) to {out['out']}."


@command("bench")
def cmd_bench(args, store):
    from .bench import run_benchmark
    res = run_benchmark(epochs=args.epochs, batch_size=args.batch_size, data=args.data, device=args.device,
                        csv=not args.no_csv, quick=args.quick)
    return res, "\n".join(f"{k}: {v}" for k, v in res.items())


# --- teaching -------------------------------------------------------------------------------------------
@command("lesson list")
def cmd_lesson_list(args, store):
    from .lessons import list_lessons
    from .ui.fmt import duration
    lessons = list_lessons(data=args.data, epochs=args.epochs, fraction=args.fraction, store=store)
    rows = [f"{l['name']:<16} {len(l['runs'])} runs  ~{duration(l['estimate']['seconds_cpu']):>13} CPU  "
            f"~{duration(l['estimate']['seconds_gpu']):>13} GPU  {l['title']}" for l in lessons]
    return lessons, "\n".join(rows + ["(times: a rough cost model for the data and epochs chosen; "
                                       "--data, --fraction and --epochs change them)"])


@command("lesson start")
def cmd_lesson_start(args, store):
    from .lessons import start_lesson
    from .estimate import estimate_runs
    from .ui.fmt import duration
    runs = start_lesson(store, args.name, data=args.data, epochs=args.epochs, fraction=args.fraction)
    est = estimate_runs([RunConfig.from_dict(r["config"]) for r in runs], store)
    if not args.no_worker:
        from .jobs import ensure_worker
        ensure_worker(store)
    return ([{"id": r["id"], "name": r["name"], "status": r["status"]} for r in runs],
            f"Queued {len(runs)} runs of lesson {args.name}: about {duration(est['seconds_cpu'])} on a CPU, "
            f"{duration(est['seconds_gpu'])} on a GPU (a rough estimate).")


@command("sweep start")
def cmd_sweep_start(args, store):
    from .sweeps import start_sweep
    space = json.loads(args.space) if args.space else {}
    sweep = start_sweep(store, config_from_args(args), space, method=args.method, trials=args.trials,
                        name=args.sweep_name)
    if not args.no_worker:
        from .jobs import ensure_worker
        ensure_worker(store)
    return sweep, f"Sweep {sweep['name']}: {len(sweep['runs'])} run(s) queued."


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
    w.add_argument("--stall-minutes", type=float, default=None,
                   help="fail a run whose training made no progress for this long (default: $FER_STALL_MINUTES "
                        "or 30; 0 = off)")

    runs = group("runs", "list, show, cancel, delete, export, import, log, diagnose runs")
    r = runs.add_parser("list", parents=[common])
    r.add_argument("--status", choices=["queued", "running", "finished", "failed", "cancelled"])
    for name in ("show", "cancel", "delete", "log", "diagnose"):
        runs.add_parser(name, parents=[common]).add_argument("run", help="run id or name")
    r = runs.add_parser("export", parents=[common])
    r.add_argument("run")
    r.add_argument("file")
    r = runs.add_parser("import", parents=[common])
    r.add_argument("file")
    r.add_argument("--name")

    e = sub.add_parser("evaluate", parents=[common], help="evaluate a saved run on a dataset")
    e.add_argument("run")
    e.add_argument("--data", required=True, help="dataset name, path, or `synthetic`")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--tta", default=None, choices=["none", "flip", "tencrop"], help="default: the run's own")

    pr = sub.add_parser("predict", parents=[common], help="faces and class probabilities of images")
    pr.add_argument("run")
    pr.add_argument("images", nargs="+")

    ex = sub.add_parser("explain", parents=[common], help="save an attribution map of a face")
    ex.add_argument("run")
    ex.add_argument("image")
    ex.add_argument("--method", default="saliency", choices=["saliency", "ig", "gradcam", "occlusion"])
    ex.add_argument("--out", required=True)
    ex.add_argument("--face", type=int, default=1, help="which face (1 = leftmost)")

    b = sub.add_parser("bench", parents=[common], help="training-throughput benchmark")
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--data", default=None, help="FER2013 source (default: ../shared if present, else synthetic)")
    b.add_argument("--device", default=None)
    b.add_argument("--no-csv", action="store_true", help="skip the CSV import timing")
    b.add_argument("--quick", action="store_true", help="a small model and few images (smoke test)")

    les = group("lesson", "one-click teaching experiments")
    l = les.add_parser("list", parents=[common])
    l2 = les.add_parser("start", parents=[common])
    l2.add_argument("name")
    l2.add_argument("--no-worker", action="store_true")
    for x in (l, l2):
        x.add_argument("--data", default="synthetic")
        x.add_argument("--epochs", type=int, default=None)
        x.add_argument("--fraction", type=float, default=None, help="fraction of the training data")

    sw = group("sweep", "hyperparameter search")
    s = sw.add_parser("start", parents=[common])
    s.add_argument("--method", default="random", choices=["grid", "random", "bayes"])
    s.add_argument("--trials", type=int, default=8)
    s.add_argument("--space", help='JSON: {"lr": {"low": 1e-4, "high": 1e-2, "log": true}, "conv_dropout": [0, 0.25, 0.5]}')
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
        store = open_store(args, starter=name not in ("bench",))
        out, text = COMMANDS[name](args, store)
    except KeyboardInterrupt:
        return _fail(args, "Interrupted.", 130)
    except Exception as e:   # every error reaches the user as one sentence, never a traceback
        if os.environ.get("FER_DEBUG"):
            raise
        return _fail(args, _plain(e), 2 if _is_user_error(e) else 1)
    try:
        print(json.dumps(out, default=str) if args.json else text, flush=True)
    except BrokenPipeError:   # `... | head`: the reader has gone, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _is_user_error(e: Exception) -> bool:
    from .data.dataset import DataError
    from .runfile import RunFileError
    from .store import NotFound
    return isinstance(e, (UserError, ConfigError, DataError, NotFound, RunFileError, FileNotFoundError, ValueError))


def _plain(e: Exception) -> str:
    if _is_user_error(e):
        return str(e)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "The disk is full; free some space and try again (nothing was saved)."
    return f"Unexpected error ({type(e).__name__}: {e}). Set FER_DEBUG=1 to see the details."


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
