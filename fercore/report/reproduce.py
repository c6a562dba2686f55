"""The `python -m fercore` commands that recreate each run of a report from the same data.

One `data import` per dataset (its source, name and --dedupe as imported), then one `train` per run with every
setting of its RunConfig as a flag (the CLI's flags are the config's fields in kebab-case), so the new run's
config equals the old one whatever the defaults are by then. Synthetic sets are drawn again from their spec.
"""
from __future__ import annotations

import shlex

from fercore.config import config_fields
from fercore.data import is_synthetic
from fercore.presets import PRESETS
from fercore.store import Run

CLI = "python -m fercore"


def reproduce_commands(store, runs: list[Run]) -> list[dict]:
    """[{"run": label, "commands": [command lines], "notes": [sentences]}], the first run of each dataset carrying
    its `data import`."""
    imported, out = set(), []
    for r in runs:
        name = r.dataset or r.config.data
        commands, notes = [], []
        if name not in imported:
            imported.add(name)
            line, note = import_command(store, name, r.dataset_fingerprint)
            commands += [line] if line else []
            notes += [note] if note else []
        commands.append(train_command(r))
        if r.device:
            notes.append(f"It trained on {r.device}; add --device to choose where it trains again (the numbers "
                         "match closely, not bit for bit, across devices and thread counts).")
        out.append({"run": r.label, "commands": commands, "notes": notes})
    return out


def import_command(store, name: str, fingerprint: str | None) -> tuple[str | None, str | None]:
    """The `data import` that recreates dataset `name` (None for a synthetic spec: training draws it)."""
    if is_synthetic(name):
        return None, None
    info = store.dataset_info(name)
    expect = f"Its fingerprint must read {fingerprint}." if fingerprint else ""
    if info is None:
        return None, (f"The dataset {name!r} is not in this database: import the same data under that name "
                      f"(`{CLI} data import SOURCE --name {shlex.quote(name)}`). {expect}").strip()
    dedupe = " --dedupe" if info.audit.get("deduplicated") else ""
    return f"{CLI} data import {shlex.quote(info.source)} --name {shlex.quote(name)}{dedupe}", expect or None


def train_command(run: Run) -> str:
    """`train` with every config field as a flag; `--preset` only to record which preset the config started from."""
    config = run.config.to_dict()
    parts = [f"{CLI} train"]
    if config.get("preset") in PRESETS:
        parts.append(f"--preset {shlex.quote(config['preset'])}")
    for f in config_fields():
        if f.name == "preset":
            continue
        parts.append(f"--{f.name.replace('_', '-')} {shlex.quote(_flag_value(config[f.name]))}")
    return wrap(parts)


def wrap(parts: list[str], width: int = 100) -> str:
    """Flags packed into lines of about `width` characters, joined by shell line continuations."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 1 + len(part) > width:
            lines.append("    " + part)
        else:
            lines[-1] += " " + part
    return " \\\n".join(lines)


def _flag_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_flag_value(x) for x in v)
    return repr(v) if isinstance(v, float) else str(v)


def command_lines(text: str) -> list[list[str]]:
    """The commands of a Reproduce block as argument lists (continuation lines joined), for scripts and tests."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip().startswith(CLI)]
