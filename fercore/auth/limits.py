"""The class limits an instructor sets for students, and the one check before anything is queued.

The defaults keep one student from taking a shared machine for days (the audit queued 200 sweep trials, 1000
epochs at batch 4096 and 320 px) while leaving every lesson and the Train form's presets possible."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from fercore.auth.rules import Forbidden
from fercore.auth.users import User


@dataclass(frozen=True)
class Limits:
    active_runs: int = 6         # queued + running runs per student at once
    epochs: int = 120
    image_size: int = 96
    batch_size: int = 512
    sweep_trials: int = 12
    run_minutes: float = 45.0    # per-run time budget (everyone's runs): stops at its best checkpoint

    LABELS = {"active_runs": "queued and running runs per student", "epochs": "epochs per run",
              "image_size": "image size (px)", "batch_size": "batch size", "sweep_trials": "trials per sweep",
              "run_minutes": "minutes of training per run (then it stops at its best checkpoint)"}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Limits:
        """Stored limits; unknown keys dropped, missing ones at their default, each checked."""
        d = {f.name: d[f.name] for f in fields(cls) if d and f.name in d}
        out = cls(**{k: (float(v) if k == "run_minutes" else int(v)) for k, v in d.items()})
        for f in fields(cls):
            if getattr(out, f.name) <= 0:
                raise ValueError(f"The limit on {cls.LABELS[f.name]} must be above 0.")
        return out


def check_queue(user: User, limits: Limits, config, active: int, adding: int = 1) -> None:
    """Refuse, in a sentence, queueing `adding` runs of `config` for a student who has `active` queued or running
    runs. The instructor's runs are not limited (their time budget still applies)."""
    if user.is_instructor:
        return
    if adding and active + adding > limits.active_runs:
        raise Forbidden(f"You have {active} run(s) queued or training and the class limit is {limits.active_runs}; "
                        "wait for one to finish or cancel one first.")
    for key, value in (("epochs", config.epochs), ("image_size", config.image_size),
                       ("batch_size", config.batch_size)):
        if value > getattr(limits, key):
            raise Forbidden(f"{key.replace('_', ' ').capitalize()} {value} is over the class limit of "
                            f"{getattr(limits, key)} {Limits.LABELS[key]}; lower it, or ask the instructor.")


def check_sweep(user: User, limits: Limits, trials: int, configs=()) -> None:
    """A sweep counts against the trials limit (not the queued-runs one); each trial's settings are checked."""
    if user.is_instructor:
        return
    if trials > limits.sweep_trials:
        raise Forbidden(f"A sweep of {trials} trials is over the class limit of {limits.sweep_trials}; "
                        "ask for fewer trials.")
    for config in configs:
        check_queue(user, limits, config, active=0, adding=0)
