"""`worker --gpus all`: one worker process per GPU of this machine, for a GPU server of a department.

Each GPU gets an ordinary worker (`python -m fercore worker --device cuda:N`), a process of its own, so a run
that crashes or runs out of memory on one GPU never disturbs the others, and the queue hands each its own
runs (RunStore.claim_next_run). This process only starts them, passes a SIGTERM/Ctrl-C on to all of them
(each requeues its run to resume, see policy.py), and reports how many runs each trained. start_workers() does the
same for any list of devices.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from fercore.errors import UserError
from fercore.jobs.spawn import REPO_ROOT, worker_env
from fercore.store import RunStore


class NoGPU(UserError, ValueError):
    """`--gpus` on a machine without the GPUs asked for; the message is a plain sentence."""


def visible_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pick_gpus(spec: str, have: int) -> list[int]:
    """`all` or a comma list of GPU numbers (`0,2`) -> the GPU numbers, checked against the `have` visible ones."""
    if have == 0:
        raise NoGPU("This machine has no GPU that PyTorch can see, so `--gpus` starts no worker; "
                    "start one with `worker --device cpu` to train on the CPU.")
    if spec.strip().lower() == "all":
        return list(range(have))
    try:
        gpus = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise NoGPU(f"--gpus takes `all` or GPU numbers such as 0,1, not {spec!r}.") from None
    missing = [g for g in gpus if not 0 <= g < have]
    if not gpus or missing:
        raise NoGPU(f"This machine has {have} GPU(s), numbered 0 to {have - 1}; there is no GPU "
                    f"{', '.join(map(str, missing)) if missing else spec}.")
    return gpus


def run_worker_per_gpu(store: RunStore, spec: str, once: bool = False, idle_exit_s: float | None = None) -> dict:
    """`worker --gpus SPEC`: a worker on each chosen GPU of this machine (see start_workers)."""
    return start_workers(store, [f"cuda:{g}" for g in pick_gpus(spec, visible_gpus())], once, idle_exit_s)


def start_workers(store: RunStore, devices: list[str], once: bool = False, idle_exit_s: float | None = None) -> dict:
    """Start one worker process per device and wait for them all; a SIGTERM or Ctrl-C is passed on to each.
    Returns {"workers": [{"device", "trained", "exit_code", "error"}], "trained": total}."""
    env = worker_env(store)
    extra = (["--once"] if once else []) + (["--idle-exit", str(idle_exit_s)] if idle_exit_s is not None else [])
    procs = []
    for device in devices:   # their log lines go to our stderr; their one line of JSON comes back through a pipe
        procs.append(subprocess.Popen([sys.executable, "-m", "fercore", "worker", "--device", device, "--json", *extra],
                                      cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      text=True, start_new_session=os.name == "posix"))
        # a session of their own: a Ctrl-C in the terminal reaches them once, through pass_on, not twice

    def pass_on(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old[sig] = signal.signal(sig, pass_on)
        except ValueError:   # not the main thread (a notebook, a test): the caller stops the workers itself
            pass
    try:
        workers = []
        for device, p in zip(devices, procs):
            out, _ = p.communicate()
            try:
                said = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                said = {}
            workers.append({"device": device, "trained": int(said.get("trained", 0)), "exit_code": p.returncode,
                            "error": said.get("error")})
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for p in procs:   # only if we are leaving on an error: no worker outlives its starter
            if p.poll() is None:
                p.terminate()
    return {"workers": workers, "trained": sum(w["trained"] for w in workers)}

def describe(res: dict) -> str:
    """run_worker_per_gpu's result as one line for the terminal."""
    parts = []
    for w in res["workers"]:
        part = f"{w['device']} trained {w['trained']} run(s)"
        if w["exit_code"]:
            reason = w["error"] or f"exit code {w['exit_code']}"
            part += f" and stopped: {reason.rstrip('.')}"
        parts.append(part)
    return "Workers finished: " + "; ".join(parts) + "."
