"""What a lesson's finished runs showed: outcomes per run and the summary sentences.

Each summarise function turns the numbers of finished runs into plain sentences, and says so when the runs
did NOT show the expected direction. Used by the lesson registry in fercore.teach.lessons."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fercore.store.entities import Run, RunStatus
from fercore.teach.diagnosis import diagnose


class Lesson(Protocol):
    """What a summary needs of a lesson (fercore.teach.lessons.Lesson): its values and how to name them."""
    values: tuple

    def value_of(self, config) -> object: ...

    def describe(self, value) -> str: ...

DONE = tuple(s for s in RunStatus if s.final)
# Accuracy differences below one point are noise: the sampling std of an accuracy near 60 % on FER2013's
# 3,589 val images is 0.8 points, and far more on a small synthetic or fractional val set.
ACC_TOLERANCE = 0.01
NOISE_HINT = ("with few epochs, a fraction of the data or a single seed, noise can hide the effect; more epochs "
              "or the full data make it clearer")


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


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _pts(x: float) -> str:
    return f"{abs(x) * 100:.1f} points"


def _accuracies(lesson, done: list[Outcome]) -> str:
    return ", ".join(f"{lesson.describe(o.value)} {_pct(o.best_val_acc)}" for o in done)


def _diagnosis_notes(lesson, done: list[Outcome]) -> str:
    kinds = ("divergence", "oscillation", "overfitting", "vanishing_gradients", "dead_activations")
    notes = [f"{lesson.describe(o.value)}: {', '.join(k for k in kinds if k in f)}"
             for o in done if (f := o.findings()) and any(k in f for k in kinds)]
    return (" Diagnosis found " + "; ".join(notes) + ".") if notes else ""


def summarize_accuracy(better, why: str) -> Callable:
    """Expect the run with value `better` to reach the best val accuracy, for the reason `why`."""
    def summarize(lesson: Lesson, runs: list[Run], epochs_by_run: dict) -> str:
        outs, note = outcomes(lesson, runs, epochs_by_run)
        done = [o for o in outs if o.ok]
        target = next((o for o in done if o.value == better), None)
        others = [o for o in outs if o.value != better]
        if target is None or not others:
            return note + f"The expected best run ({lesson.describe(better)}) did not finish, so there is " \
                          "nothing to compare."
        rival = max(others, key=lambda o: o.best_val_acc if o.ok else -1.0)
        rival_acc = rival.best_val_acc if rival.ok else 0.0
        margin = target.best_val_acc - rival_acc
        head = f"Best val accuracy: {_accuracies(lesson, done)}. "
        if not rival.ok:
            verdict = f"As expected, {lesson.describe(rival.value)} did not get through training while " \
                      f"{lesson.describe(better)} did: {why}."
        elif margin > ACC_TOLERANCE:
            verdict = f"As expected, {lesson.describe(better)} did best, {_pts(margin)} above " \
                      f"{lesson.describe(rival.value)}: {why}."
        elif margin >= -ACC_TOLERANCE:
            verdict = f"No clear difference (within {_pts(ACC_TOLERANCE)}): {lesson.describe(better)} was expected " \
                      f"to win because {why}; {NOISE_HINT}."
        else:
            verdict = f"These runs did NOT show the expected direction: {lesson.describe(rival.value)} beat " \
                      f"{lesson.describe(better)} by {_pts(margin)}. The expectation was that {why}; {NOISE_HINT}."
        return note + head + verdict + _diagnosis_notes(lesson, done)
    return summarize


def summarize_close(tolerance: float, expected: str) -> Callable:
    """Expect the runs to end within `tolerance` of each other (a setting that should not matter much)."""
    def summarize(lesson: Lesson, runs: list[Run], epochs_by_run: dict) -> str:
        outs, note = outcomes(lesson, runs, epochs_by_run)
        done = [o for o in outs if o.ok]
        if len(done) < 2:
            return note + "Too few runs finished to compare."
        accs = [o.best_val_acc for o in done]
        spread = max(accs) - min(accs)
        best = max(done, key=lambda o: o.best_val_acc)
        text = f"Best val accuracy: {_accuracies(lesson, done)}. "
        if spread <= tolerance:
            text += f"As expected ({expected}), they ended within {_pts(spread)} of each other."
        else:
            text += f"They differ by {_pts(spread)} in favour of {lesson.describe(best.value)}, more than the " \
                    f"{_pts(tolerance)} expected ({expected}); {NOISE_HINT}."
        speeds = [(o, o.seconds_per_epoch) for o in done if o.seconds_per_epoch]
        if len(speeds) == len(done):
            text += " Seconds per epoch: " + ", ".join(f"{lesson.describe(o.value)} {s:.1f}" for o, s in speeds) + "."
        dead = [(o, _mean_dead(o)) for o in done]
        if all(d is not None for _, d in dead):
            text += " Share of dead units (mean over layers, last epoch): " + \
                    ", ".join(f"{lesson.describe(o.value)} {d:.0%}" for o, d in dead) + "."
        return note + text
    return summarize


def summarize_epochs(lesson: Lesson, runs: list[Run], epochs_by_run: dict) -> str:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok]
    if not done:
        return note + "No run finished."
    long = max(done, key=lambda o: len(o.epochs))
    short = min(done, key=lambda o: len(o.epochs))
    over = long.findings().get("overfitting")
    last_val = long.series("val_acc")[-1]
    text = f"The {len(short.epochs)}-epoch run reached {_pct(short.best_val_acc)} val accuracy; the " \
           f"{len(long.epochs)}-epoch run's best epoch {_pct(long.best_val_acc)}, its last {_pct(last_val)}. "
    if over and over["severity"] == "warning":
        ev = over["evidence"]
        text += f"As expected, the long run overfitted: its val loss bottomed at {ev['min_val_loss']:.3f} in " \
                f"epoch {ev['epoch']} and rose to {ev['last_val_loss']:.3f} while train loss kept falling"
        if ev.get("gap_end") is not None:
            text += f", ending with train accuracy {_pts(ev['gap_end'])} above val"
        text += ". Training past that epoch memorises the training images; the checkpoint chosen on val (or early " \
                "stopping) keeps the good epoch."
    elif over:
        text += f"The long run shows a train/val gap ({over['message']}) but its val loss did not clearly turn " \
                "up: only a mild version of the expected overfitting."
    else:
        text += "These runs did NOT show the expected overfitting: the long run's val loss never clearly turned " \
                f"up while train loss fell (augmentation, a large dataset or a small model can delay it); {NOISE_HINT}."
    return note + text


def summarize_dropout(lesson: Lesson, runs: list[Run], epochs_by_run: dict) -> str:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok and o.gap is not None]
    if len(done) < 2:
        return note + "Too few runs finished to compare."
    gaps = ", ".join(f"{lesson.describe(o.value)} {_pts(o.gap)}" for o in done)
    text = f"Train-minus-val accuracy gap in the last epoch: {gaps}. Best val accuracy: {_accuracies(lesson, done)}. "
    shrinking = all(b.gap <= a.gap + ACC_TOLERANCE for a, b in zip(done, done[1:]))
    if shrinking and done[-1].gap < done[0].gap - ACC_TOLERANCE:
        text += "As expected, more dropout narrows the gap: a network that cannot rely on any single unit " \
                "memorises less."
    else:
        text += f"These runs did NOT show the expected steady narrowing of the gap with more dropout; {NOISE_HINT}."
    no_drop = next((o for o in done if o.value == 0), None)
    best = max(done, key=lambda o: o.best_val_acc)
    if no_drop is not None and best.value != 0 and best.best_val_acc - no_drop.best_val_acc > ACC_TOLERANCE:
        text += f" Dropout also paid off on val: {lesson.describe(best.value)} beat no dropout by " \
                f"{_pts(best.best_val_acc - no_drop.best_val_acc)}."
    elif no_drop is not None:
        text += " On val accuracy, dropout gave no clear gain over no dropout in these runs."
    return note + text


def summarize_batch_size(lesson: Lesson, runs: list[Run], epochs_by_run: dict) -> str:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok]
    if len(done) < 2:
        return note + "Too few runs finished to compare."
    text = f"Best val accuracy: {_accuracies(lesson, done)}. Mean epoch-to-epoch val-accuracy swing: " + \
           ", ".join(f"{lesson.describe(o.value)} {_pts(o.swing)}" for o in done) + ". "
    if done[0].swing > done[-1].swing:
        text += "As expected, the smallest batches give the noisiest curves: each step follows the gradient of " \
                "a few images."
    else:
        text += "These runs did NOT show the expected noisier curve for the smallest batch."
    secs = [o.seconds_per_epoch for o in done]
    if all(secs):
        text += " Seconds per epoch: " + ", ".join(f"{lesson.describe(o.value)} {s:.1f}" for o, s in zip(done, secs))
        text += (": small batches cost far more time per epoch (many more, smaller steps)." if secs[0] > secs[-1]
                 else ".")
    return note + text


def summarize_class_weights(lesson: Lesson, runs: list[Run], epochs_by_run: dict) -> str:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok and o.run.scored and o.run.scored.per_class]
    if len(done) < 2 or {o.value for o in done} != {False, True}:
        return note + "Too few runs finished with an evaluation to compare."
    split = done[0].run.scored.split   # test when the runs have one, else val
    per_class = done[0].run.scored.per_class
    rare = "disgust" if "disgust" in per_class else min(per_class, key=lambda c: per_class[c]["support"])
    recall = {o.value: o.run.scored.recall(rare) or 0.0 for o in done}
    acc = {o.value: o.run.scored.accuracy for o in done}
    off, on = recall[False], recall[True]
    text = f"{split.capitalize()} recall of {rare} (the rarest class): without weights {_pct(off)}, with weights " \
           f"{_pct(on)}; overall {split} accuracy {_pct(acc[False])} vs {_pct(acc[True])}. "
    if on - off > ACC_TOLERANCE:
        text += f"As expected, weighting the loss by inverse class frequency makes the network find more {rare} " \
                "faces, usually at a small cost in overall accuracy."
    else:
        text += f"These runs did NOT show the expected rise in {rare} recall with class weights"
        text += " (the classes are balanced in this dataset, so weights change little)." if \
            _balanced(per_class) else f"; {NOISE_HINT}."
    return note + text


def summarize_grad_clip(lesson: Lesson, runs: list[Run], epochs_by_run: dict) -> str:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    clipped = next((o for o in outs if o.value), None)
    plain = next((o for o in outs if not o.value), None)
    if clipped is None or plain is None:
        return note + "Too few runs to compare."
    if not plain.ok and clipped.ok:
        return note + f"As expected, the unclipped run did not get through training ({plain.run.error}) " \
                      f"while the clipped one reached {_pct(clipped.best_val_acc)}: clipping caps each step, so one " \
                      "bad batch cannot throw the weights away."
    if not clipped.ok:
        return note + "The clipped run did not finish, so there is nothing to compare."
    spikes = {o.value: _loss_spikes(o) for o in (plain, clipped)}
    text = f"Best val accuracy: without clipping {_pct(plain.best_val_acc)}, with {_pct(clipped.best_val_acc)}; " \
           f"epochs whose train loss rose: {spikes[plain.value]} vs {spikes[clipped.value]}; val swing " \
           f"{_pts(plain.swing)} vs {_pts(clipped.swing)}. "
    steadier = clipped.swing <= plain.swing and spikes[clipped.value] <= spikes[plain.value]
    if steadier and clipped.best_val_acc >= plain.best_val_acc - ACC_TOLERANCE:
        text += "As expected, clipping made training at least as steady and no less accurate."
    else:
        text += f"These runs did NOT clearly show the steadier training expected from clipping; {NOISE_HINT}."
    return note + text


def _loss_spikes(o: Outcome) -> int:
    loss = o.series("train_loss")
    return sum(1 for a, b in zip(loss, loss[1:]) if b > a)


def _mean_dead(o: Outcome) -> float | None:
    last = next((e.get("dead_units") for e in reversed(o.epochs) if e.get("dead_units")), None)
    return sum(last.values()) / len(last) if last else None


def _balanced(per_class: dict) -> bool:
    support = [m["support"] for m in per_class.values()]
    return max(support) <= 1.5 * max(min(support), 1)

