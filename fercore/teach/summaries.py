"""What a lesson's finished runs showed: outcomes per run, the rule for stating a finding, the sentences.

`finding(lesson, runs)` is the one rule (the lesson summaries and the reports both use it): a lesson's finding
is stated only when every finished run learned something (`learned_something`: it beats always answering the
largest class on the split it reports, the same predicate the diagnosis uses) and the difference the lesson is
about exceeds the run-to-run noise the lab can estimate (the spread between seeds where a lesson has several, else
the spread of each run's last epochs' val accuracy). Otherwise it says the runs are too short to tell and which
settings would tell, with a time estimate. Each summarise function turns the numbers into sentences and says so
when the runs did NOT show the expected direction. Used by the lesson registry in fercore.teach.lessons."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fercore.fmt import duration
from fercore.store.entities import Run, RunStatus
from fercore.teach.diagnosis import diagnose, learned_something, majority_baseline
from fercore.teach.estimate import MIN_CURVE_EPOCHS, MIN_IMAGES_PER_CLASS, estimate_runs, train_class_counts


class Lesson(Protocol):
    """What a summary needs of a lesson (fercore.teach.lessons.Lesson): its values and how to name them."""
    values: tuple
    base: dict
    fixed_epochs: bool
    summarize: Callable

    def value_of(self, config) -> object: ...

    def describe(self, value) -> str: ...

DONE = tuple(s for s in RunStatus if s.final)
# Accuracy differences below one point are noise: the sampling std of an accuracy near 60 % on FER2013's
# 3,589 val images is 0.8 points, and far more on a small synthetic or fractional val set.
ACC_TOLERANCE = 0.01
NOISE_HINT = ("with few epochs, a fraction of the data or a single seed, noise can hide the effect; more epochs "
              "or the full data make it clearer")
NOISE_EPOCHS = 3      # the last epochs whose val-accuracy spread stands for the run-to-run noise (no seeds)


@dataclass(frozen=True)
class Verdict:
    """What one summarise function concluded: its sentences, and whether they state the lesson's finding."""
    text: str
    stated: bool


@dataclass(frozen=True)
class Finding:
    """A lesson's finding by the one rule (module docstring): stated or not, and the text to show."""
    stated: bool
    text: str
    split: str | None = None          # the split the accuracies are read on (test when the runs have it)
    noise: float | None = None        # the run-to-run noise the difference was held against (0..1)
    noise_basis: str = ""
    advice: str = ""                  # when not stated: the settings that would tell, with a time estimate


# --- what the finished runs showed ---------------------------------------------------------------------
@dataclass
class Outcome:
    """One run of a lesson, reduced to the numbers the summaries talk about."""
    value: object
    run: Run
    epochs: list[dict]

    @property
    def ok(self) -> bool:
        return self.run.status == RunStatus.FINISHED and any(e.get("val_acc") is not None for e in self.epochs)

    def series(self, key: str) -> list[float]:
        return [float(e[key]) for e in self.epochs if isinstance(e.get(key), (int, float))
                and math.isfinite(e[key])]

    @property
    def best_val_acc(self) -> float:
        return max(self.series("val_acc"), default=0.0)

    @property
    def split(self) -> str:
        return self.run.scored.split if self.run.scored else "val"

    @property
    def accuracy(self) -> float:
        """The run's accuracy on the split it reports (test when it has one, else val): what summaries compare."""
        return self.run.scored.accuracy if self.run.scored else self.best_val_acc

    @property
    def learned(self) -> bool | None:
        return learned_something(self.run)

    @property
    def diverged(self) -> bool:
        """A run that blew up is an outcome the lesson can name (an lr too high), not a run too short to tell."""
        return "divergence" in self.findings()

    @property
    def gap(self) -> float | None:
        """Train minus val accuracy in the last epoch."""
        last = next((e for e in reversed(self.epochs) if e.get("val_acc") is not None), None)
        if last is None or last.get("train_acc") is None:
            return None
        return last["train_acc"] - last["val_acc"]

    @property
    def swing(self) -> float:
        """Mean absolute epoch-to-epoch change of val accuracy: how much the curve zig-zags."""
        acc = self.series("val_acc")
        return sum(abs(b - a) for a, b in zip(acc, acc[1:])) / max(len(acc) - 1, 1)

    @property
    def seconds_per_epoch(self) -> float | None:
        s = self.series("seconds")
        return sum(s) / len(s) if s else None

    def findings(self) -> dict[str, dict]:
        return {f["kind"]: f for f in diagnose(self.run, self.epochs)}


def outcomes(lesson: Lesson, runs: list[Run], epochs_by_run: dict) -> tuple[list[Outcome], str]:
    """The lesson's runs in the order of its values, and a sentence about those that did not finish."""
    out, problems = [], []
    for r in runs:
        v = lesson.value_of(r.config)
        if v is None:
            continue
        o = Outcome(v, r, list(epochs_by_run.get(r.id, [])))
        out.append(o)
        if not o.ok:
            problems.append(f"{lesson.describe(v)} {r.status}" + (f" ({r.error})" if r.error else ""))
    out.sort(key=lambda o: lesson.values.index(o.value))
    note = ("Not every run finished: " + "; ".join(problems) + ". ") if problems else ""
    return out, note


# --- the rule: when a lesson's finding is stated -------------------------------------------------------------
def finding(lesson: Lesson, runs: list[Run], epochs_by_run: dict | None = None, store=None) -> Finding:
    """The lesson's finding from its runs, by the one rule (module docstring). `epochs_by_run` defaults to the
    runs' own epochs (`store.get_run(id, epochs=True)`); `store` lets the advice use the dataset's real size."""
    if epochs_by_run is None:
        epochs_by_run = {r.id: list(r.epochs or ()) for r in runs}
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok]
    split = done[0].split if done else None
    blockers = too_short(lesson, done)
    if blockers:
        advice = advice_to_tell(lesson, done, store)
        return Finding(False, note + "Too short to tell: " + " ".join(blockers) + " " + advice, split, None, "",
                       advice)
    noise, basis = run_to_run_noise(done)
    verdict = lesson.summarize(lesson, runs, epochs_by_run, noise)
    if verdict.stated or not done:
        return Finding(verdict.stated, verdict.text, split, noise, basis)
    advice = advice_to_tell(lesson, done, store)
    return Finding(False, f"{verdict.text} The run-to-run noise here is about {pts(noise)} ({basis}). {advice}",
                   split, noise, basis, advice)


def too_short(lesson: Lesson, done: list[Outcome]) -> list[str]:
    """Why these finished runs cannot carry a finding: a run that learned nothing (and did not blow up), curves
    too short to show a trend or to estimate the noise. [] when they can."""
    out = []
    unknown = [o for o in done if o.learned is None]
    if unknown:
        out.append(", ".join(lesson.describe(o.value) for o in unknown) + " has no evaluation to judge by.")
    stuck = [o for o in done if o.learned is False and not o.diverged]
    if stuck:
        base, cls = majority_baseline(stuck[0].run.scored)
        out.append(", ".join(f"{lesson.describe(o.value)} scored {pct(o.accuracy)}" for o in stuck) +
                   f" on {stuck[0].split}, no better than always answering {cls} ({pct(base)}), so "
                   f"{'it has' if len(stuck) == 1 else 'they have'} not learned enough for a difference to mean "
                   "anything.")
    shortest = min((len(o.series("val_acc")) for o in done), default=MIN_CURVE_EPOCHS)
    if shortest < MIN_CURVE_EPOCHS:
        points = "a single point" if shortest == 1 else f"only {shortest} points"
        out.append(f"Each learning curve is {points} ({shortest} epoch{'' if shortest == 1 else 's'}): no zig-zag, "
                   "turn or gap can show, and the noise between epochs cannot be estimated.")
    return out


def run_to_run_noise(done: list[Outcome]) -> tuple[float, str]:
    """How far accuracies move by chance: the spread between runs of the same value (different seeds) where the
    lesson has them, else the largest spread of a run's last NOISE_EPOCHS epochs' val accuracy."""
    by_value: dict = {}
    for o in done:
        by_value.setdefault(o.value, []).append(o.accuracy)
    seeds = [max(a) - min(a) for a in by_value.values() if len(a) > 1]
    if seeds:
        return max(seeds), "the spread between seeds"
    spreads = [max(a) - min(a) for o in done if (a := o.series("val_acc")[-NOISE_EPOCHS:])]
    return max(spreads, default=0.0), f"the spread of the last {NOISE_EPOCHS} epochs' val accuracy"


def advice_to_tell(lesson: Lesson, done: list[Outcome], store=None) -> str:
    """The settings that would tell (more epochs, a larger share of the data) and how long they would take."""
    if not done:
        return ""
    config = done[0].run.config
    epochs = config.epochs if lesson.fixed_epochs else max(config.epochs * 3, lesson.base.get("epochs", 15),
                                                           MIN_CURVE_EPOCHS)
    counts, _ = train_class_counts(config, store)
    need = MIN_IMAGES_PER_CLASS * 2 * len(counts) / max(sum(counts.values()), 1)   # comfortably above the minimum
    share = config.data_fraction if config.data_fraction >= 1 else min(1.0, round(max(config.data_fraction * 4,
                                                                                       need), 2))
    configs = [o.run.config.replace(epochs=epochs if not lesson.fixed_epochs else o.run.config.epochs,
                                    data_fraction=share) for o in done]
    gpu = any((o.run.device or "").startswith("cuda") for o in done)
    seconds = estimate_runs(configs, store)["seconds_gpu" if gpu else "seconds_cpu"]
    what = [] if lesson.fixed_epochs else [f"{epochs} epochs"]
    if share != config.data_fraction:
        what.append(f"a data share of {share:g}")
    if not what:
        return "To tell, run the lesson again with another seed and compare the two sets of runs."
    return (f"To tell, run the lesson again with {' and '.join(what)} (about {duration(seconds)} for its "
            f"{len(configs)} runs on this machine's {'GPU' if gpu else 'CPU'}, a rough estimate).")


def pct(x: float) -> str:
    return f"{x:.1%}"


def pts(x: float) -> str:
    return f"{abs(x) * 100:.1f} points"


def accuracies(lesson, done: list[Outcome]) -> str:
    """'Test accuracy: lr 0.01 41.0%, lr 0.001 55.1%. ' (the split each run reports)."""
    return f"{done[0].split.capitalize()} accuracy: " + \
        ", ".join(f"{lesson.describe(o.value)} {pct(o.accuracy)}" for o in done) + ". "
