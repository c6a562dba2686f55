"""What each lesson expects, turned into sentences: one summarise function (or factory) per kind of lesson.

Each has the signature (lesson, runs, epochs_by_run, noise) -> Verdict. `noise` is the run-to-run noise that
fercore.teach.summaries.finding estimated; a difference within it (or within ACC_TOLERANCE, the sampling noise of
an accuracy) is not stated as a finding. finding() has already checked that every run learned something and that
the curves are long enough, so these functions only weigh the differences."""
from __future__ import annotations

from collections.abc import Callable

from fercore.store.entities import Run
from fercore.teach.summaries import ACC_TOLERANCE, NOISE_HINT, Lesson, Outcome, Verdict, accuracies, outcomes, pct, pts


def _tolerance(noise: float) -> float:
    return max(noise, ACC_TOLERANCE)


def _within(difference: float, tolerance: float) -> bool:
    """A difference no larger than the tolerance as the sentence shows them (to a tenth of a point): on 60 test
    images one image is 1.7 points either way, and '1.7 points, more than the 1.7 points' must not happen."""
    return round(abs(difference) * 1000) <= round(tolerance * 1000)


def _diagnosis_notes(lesson, done: list[Outcome]) -> str:
    kinds = ("divergence", "oscillation", "overfitting", "vanishing_gradients", "dead_activations")
    notes = [f"{lesson.describe(o.value)}: {', '.join(k for k in kinds if k in f)}"
             for o in done if (f := o.findings()) and any(k in f for k in kinds)]
    return (" Diagnosis found " + "; ".join(notes) + ".") if notes else ""


def summarize_accuracy(better, why: str) -> Callable:
    """Expect the run with value `better` to reach the best accuracy, for the reason `why`."""
    def summarize(lesson: Lesson, runs: list[Run], epochs_by_run: dict, noise: float = 0.0) -> Verdict:
        outs, note = outcomes(lesson, runs, epochs_by_run)
        done = [o for o in outs if o.ok]
        target = next((o for o in done if o.value == better), None)
        others = [o for o in outs if o.value != better]
        if target is None or not others:
            return Verdict(note + f"The expected best run ({lesson.describe(better)}) did not finish, so there is "
                           "nothing to compare.", False)
        rival = max(others, key=lambda o: o.accuracy if o.ok else -1.0)
        margin = target.accuracy - (rival.accuracy if rival.ok else 0.0)
        tol = _tolerance(noise)
        head = accuracies(lesson, done)
        if not rival.ok:
            return Verdict(note + head + f"As expected, {lesson.describe(rival.value)} did not get through training "
                           f"while {lesson.describe(better)} did: {why}." + _diagnosis_notes(lesson, done), True)
        if _within(margin, tol):
            return Verdict(note + head + f"The difference ({pts(margin)}) is within the noise of these runs "
                           f"({pts(tol)}), so they cannot tell whether {lesson.describe(better)} is better, as "
                           f"expected because {why}.", False)
        if margin > 0:
            verdict = f"As expected, {lesson.describe(better)} did best, {pts(margin)} above " \
                      f"{lesson.describe(rival.value)} (more than the {pts(tol)} noise): {why}."
        else:
            verdict = f"These runs did NOT show the expected direction: {lesson.describe(rival.value)} beat " \
                      f"{lesson.describe(better)} by {pts(margin)}. The expectation was that {why}; {NOISE_HINT}."
        return Verdict(note + head + verdict + _diagnosis_notes(lesson, done), True)
    return summarize


def summarize_close(tolerance: float, expected: str) -> Callable:
    """Expect the runs to end within `tolerance` of each other (a setting that should not matter much)."""
    def summarize(lesson: Lesson, runs: list[Run], epochs_by_run: dict, noise: float = 0.0) -> Verdict:
        outs, note = outcomes(lesson, runs, epochs_by_run)
        done = [o for o in outs if o.ok]
        if len(done) < 2:
            return Verdict(note + "Too few runs finished to compare.", False)
        accs = [o.accuracy for o in done]
        spread = max(accs) - min(accs)
        best = max(done, key=lambda o: o.accuracy)
        tol = max(tolerance, noise)
        text = accuracies(lesson, done)
        if _within(spread, tol):
            text += f"As expected ({expected}), they ended within {pts(spread)} of each other (the noise of these " \
                    f"runs is about {pts(noise)})."
        else:
            text += f"They differ by {pts(spread)} in favour of {lesson.describe(best.value)}, more than the " \
                    f"{pts(tol)} expected from noise ({expected})."
        speeds = [(o, o.seconds_per_epoch) for o in done if o.seconds_per_epoch]
        if len(speeds) == len(done):
            text += " Seconds per epoch: " + ", ".join(f"{lesson.describe(o.value)} {s:.1f}" for o, s in speeds) + "."
        dead = [(o, _mean_dead(o)) for o in done]
        if all(d is not None for _, d in dead):
            text += " Share of dead units (mean over layers, last epoch): " + \
                    ", ".join(f"{lesson.describe(o.value)} {d:.0%}" for o, d in dead) + "."
        return Verdict(note + text, True)
    return summarize


def summarize_epochs(lesson: Lesson, runs: list[Run], epochs_by_run: dict, noise: float = 0.0) -> Verdict:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok]
    if not done:
        return Verdict(note + "No run finished.", False)
    long = max(done, key=lambda o: len(o.epochs))
    short = min(done, key=lambda o: len(o.epochs))
    over = long.findings().get("overfitting")
    last_val = long.series("val_acc")[-1]
    text = f"The {len(short.epochs)}-epoch run reached {pct(short.best_val_acc)} val accuracy; the " \
           f"{len(long.epochs)}-epoch run's best epoch {pct(long.best_val_acc)}, its last {pct(last_val)}. "
    if over and over["severity"] == "warning":
        ev = over["evidence"]
        text += f"As expected, the long run overfitted: its val loss bottomed at {ev['min_val_loss']:.3f} in " \
                f"epoch {ev['epoch']} and rose to {ev['last_val_loss']:.3f} while train loss kept falling"
        if ev.get("gap_end") is not None:
            text += f", ending with train accuracy {pts(ev['gap_end'])} above val"
        text += ". Training past that epoch memorises the training images; the checkpoint chosen on val (or early " \
                "stopping) keeps the good epoch."
    elif over:
        text += f"The long run shows a train/val gap ({over['message']}) but its val loss did not clearly turn " \
                "up: only a mild version of the expected overfitting."
    else:
        text += "These runs did NOT show the expected overfitting: the long run's val loss never clearly turned " \
                f"up while train loss fell (augmentation, a large dataset or a small model can delay it); {NOISE_HINT}."
    return Verdict(note + text, True)


def summarize_dropout(lesson: Lesson, runs: list[Run], epochs_by_run: dict, noise: float = 0.0) -> Verdict:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok and o.gap is not None]
    if len(done) < 2:
        return Verdict(note + "Too few runs finished to compare.", False)
    tol = _tolerance(noise)
    gaps = ", ".join(f"{lesson.describe(o.value)} {pts(o.gap)}" for o in done)
    text = f"Train-minus-val accuracy gap in the last epoch: {gaps}. {accuracies(lesson, done)}"
    if _within(done[-1].gap - done[0].gap, tol):
        return Verdict(note + text + f"The gaps differ by no more than the noise of these runs ({pts(tol)}), so "
                       "they cannot tell what dropout does to the gap.", False)
    shrinking = all(b.gap <= a.gap + tol for a, b in zip(done, done[1:]))
    if shrinking and done[-1].gap < done[0].gap - tol:
        text += "As expected, more dropout narrows the gap: a network that cannot rely on any single unit " \
                "memorises less."
    else:
        text += f"These runs did NOT show the expected steady narrowing of the gap with more dropout; {NOISE_HINT}."
    no_drop = next((o for o in done if o.value == 0), None)
    best = max(done, key=lambda o: o.accuracy)
    if no_drop is not None and best.value != 0 and best.accuracy - no_drop.accuracy > tol:
        text += f" Dropout also paid off on {best.split}: {lesson.describe(best.value)} beat no dropout by " \
                f"{pts(best.accuracy - no_drop.accuracy)}."
    elif no_drop is not None:
        text += " On accuracy, dropout gave no clear gain over no dropout in these runs."
    return Verdict(note + text, True)


def summarize_batch_size(lesson: Lesson, runs: list[Run], epochs_by_run: dict, noise: float = 0.0) -> Verdict:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok]
    if len(done) < 2:
        return Verdict(note + "Too few runs finished to compare.", False)
    text = accuracies(lesson, done) + "Mean epoch-to-epoch val-accuracy swing: " + \
        ", ".join(f"{lesson.describe(o.value)} {pts(o.swing)}" for o in done) + ". "
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
    return Verdict(note + text, True)


def summarize_class_weights(lesson: Lesson, runs: list[Run], epochs_by_run: dict, noise: float = 0.0) -> Verdict:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok and o.run.scored and o.run.scored.per_class]
    if len(done) < 2 or {o.value for o in done} != {False, True}:
        return Verdict(note + "Too few runs finished with an evaluation to compare.", False)
    split = done[0].run.scored.split   # test when the runs have one, else val
    per_class = done[0].run.scored.per_class
    rare = "disgust" if "disgust" in per_class else min(per_class, key=lambda c: per_class[c]["support"])
    recall = {o.value: o.run.scored.recall(rare) or 0.0 for o in done}
    acc = {o.value: o.run.scored.accuracy for o in done}
    off, on = recall[False], recall[True]
    text = f"{split.capitalize()} recall of {rare} (the rarest class): without weights {pct(off)}, with weights " \
           f"{pct(on)}; overall {split} accuracy {pct(acc[False])} vs {pct(acc[True])}. "
    if on - off > _tolerance(noise):
        text += f"As expected, weighting the loss by inverse class frequency makes the network find more {rare} " \
                "faces, usually at a small cost in overall accuracy."
    else:
        text += f"These runs did NOT show the expected rise in {rare} recall with class weights"
        text += " (the classes are balanced in this dataset, so weights change little)." if \
            _balanced(per_class) else f"; {NOISE_HINT}."
    return Verdict(note + text, True)


def summarize_grad_clip(lesson: Lesson, runs: list[Run], epochs_by_run: dict, noise: float = 0.0) -> Verdict:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    clipped = next((o for o in outs if o.value), None)
    plain = next((o for o in outs if not o.value), None)
    if clipped is None or plain is None:
        return Verdict(note + "Too few runs to compare.", False)
    if not plain.ok and clipped.ok:
        return Verdict(note + f"As expected, the unclipped run did not get through training ({plain.run.error}) "
                       f"while the clipped one reached {pct(clipped.accuracy)} on {clipped.split}: clipping caps "
                       "each step, so one bad batch cannot throw the weights away.", True)
    if not clipped.ok:
        return Verdict(note + "The clipped run did not finish, so there is nothing to compare.", False)
    spikes = {o.value: _loss_spikes(o) for o in (plain, clipped)}
    text = f"{accuracies(lesson, [plain, clipped])}Epochs whose train loss rose: {spikes[plain.value]} without " \
           f"clipping vs {spikes[clipped.value]} with; val swing {pts(plain.swing)} vs {pts(clipped.swing)}. "
    steadier = clipped.swing <= plain.swing and spikes[clipped.value] <= spikes[plain.value]
    if steadier and clipped.accuracy >= plain.accuracy - _tolerance(noise):
        text += "As expected, clipping made training at least as steady and no less accurate."
    else:
        text += f"These runs did NOT clearly show the steadier training expected from clipping; {NOISE_HINT}."
    return Verdict(note + text, True)


def _loss_spikes(o: Outcome) -> int:
    loss = o.series("train_loss")
    return sum(1 for a, b in zip(loss, loss[1:]) if b > a)


def _mean_dead(o: Outcome) -> float | None:
    last = next((e.get("dead_units") for e in reversed(o.epochs) if e.get("dead_units")), None)
    return sum(last.values()) / len(last) if last else None


def _balanced(per_class: dict) -> bool:
    support = [m["support"] for m in per_class.values()]
    return max(support) <= 1.5 * max(min(support), 1)
