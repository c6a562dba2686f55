"""Lessons: one-click factor experiments, each a few runs that differ in ONE setting.

LESSONS is the registry (name -> Lesson). A lesson knows its base config (changes to RunConfig's
defaults: a small CNN that trains in minutes on a GPU), the factor and its values, a two-paragraph
explanation (what to watch, why it happens) and how to summarise what the finished runs showed:
computed from their numbers, and saying so plainly when they did not show the expected direction.

`list_lessons` is what `lesson list --json` prints, `start_lesson` queues a lesson's runs as one
group, `lesson_status` tells a page whether they are done and what they showed. The time estimate
at the end is a simple cost model (FLOPs per image and a per-step overhead), not a measurement.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import EMOTIONS, RunConfig
from .diagnosis import diagnose

DONE = ("finished", "failed", "cancelled")
# Accuracy differences below one point are noise: the sampling std of an accuracy near 60 % on FER2013's
# 3,589 val images is 0.8 points, and far more on a small synthetic or fractional val set.
ACC_TOLERANCE = 0.01
NOISE_HINT = ("with few epochs, a fraction of the data or a single seed, noise can hide the effect; more epochs "
              "or the full data make it clearer")

# A small CNN: three blocks of two 3x3 convs with BatchNorm, light augmentation, Adam 1e-3. On FER2013 it
# reaches ~60 % in 15 epochs at a few seconds an epoch on a GPU; each lesson changes only what it needs.
SMALL_CNN = dict(arch="custom", conv_blocks=3, filters=(32, 64, 128), convs_per_block=2, batchnorm=True,
                 activation="relu", conv_dropout=0.25, fc_units=(256,), fc_dropout=0.5, hflip=0.5, rotation=10.0,
                 shift=0.0, zoom=0.0, optimizer="adam", lr=1e-3, batch_size=64, epochs=15, schedule="constant",
                 tta="none")
NO_REGULARISATION = dict(conv_dropout=0.0, fc_dropout=0.0, hflip=0.0, rotation=0.0)
# ResNet18 from ImageNet at 64 px: the smallest ImageNet net of the lab, with input large enough for its stem.
RESNET18 = dict(arch="resnet18", transfer="unfrozen", input_mode="rgb", image_size=64, fc_units=(256,),
                fc_dropout=0.5, hflip=0.5, rotation=10.0, optimizer="adam", lr=3e-4, batch_size=64, epochs=10,
                tta="none")
AUGMENTATION = {"off": dict(hflip=0.0, rotation=0.0, shift=0.0, zoom=0.0),
                "on": dict(hflip=0.5, rotation=15.0, shift=0.1, zoom=0.1)}


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    factor: str                        # the config field that changes (or a named group, see `variants`)
    values: tuple
    base: dict                         # changes to RunConfig's defaults shared by every run of the lesson
    explanation: str                   # two paragraphs: what to watch, why it happens
    summarize: Callable[..., str]      # (lesson, runs, epochs_by_run) -> what the finished runs showed
    variants: dict | None = None       # value -> config changes, when one setting means several fields
    fixed_epochs: bool = False         # the epochs lesson: --epochs must not flatten its values

    @property
    def fields(self) -> list[str]:
        """The config fields this lesson's factor sets."""
        return sorted(self.variants[self.values[0]]) if self.variants else [self.factor]

    def changes(self, value) -> dict:
        return dict(self.variants[value]) if self.variants else {self.factor: value}

    def label(self, value) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    def describe(self, value) -> str:
        """'lr 0.01', 'batchnorm off', 'augmentation on'."""
        return f"{self.factor} {self.label(value)}"

    def value_of(self, config: dict):
        """Which of the lesson's values a run's config holds (None if none)."""
        for v in self.values:
            if all(_same(config.get(k), x) for k, x in self.changes(v).items()):
                return v
        return None


# --- what the finished runs showed ---------------------------------------------------------------------
@dataclass
class Outcome:
    """One run of a lesson, reduced to the numbers the summaries talk about."""
    value: object
    run: dict
    epochs: list[dict]

    @property
    def ok(self) -> bool:
        return self.run["status"] == "finished" and any(e.get("val_acc") is not None for e in self.epochs)

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
        return {f["kind"]: f for f in diagnose(self.run, self.epochs, self.run.get("test"))}


def outcomes(lesson: "Lesson", runs: list[dict], epochs_by_run: dict) -> tuple[list[Outcome], str]:
    """The lesson's runs in the order of its values, and a sentence about those that did not finish."""
    out, problems = [], []
    for r in runs:
        v = lesson.value_of(r.get("config") or {})
        if v is None:
            continue
        o = Outcome(v, r, list(epochs_by_run.get(r["id"], [])))
        out.append(o)
        if not o.ok:
            problems.append(f"{lesson.describe(v)} {r['status']}" + (f" ({r['error']})" if r.get("error") else ""))
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
    def summarize(lesson: Lesson, runs: list[dict], epochs_by_run: dict) -> str:
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
    def summarize(lesson: Lesson, runs: list[dict], epochs_by_run: dict) -> str:
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


def summarize_epochs(lesson: Lesson, runs: list[dict], epochs_by_run: dict) -> str:
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


def summarize_dropout(lesson: Lesson, runs: list[dict], epochs_by_run: dict) -> str:
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


def summarize_batch_size(lesson: Lesson, runs: list[dict], epochs_by_run: dict) -> str:
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


def summarize_class_weights(lesson: Lesson, runs: list[dict], epochs_by_run: dict) -> str:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    done = [o for o in outs if o.ok and (o.run.get("test") or {}).get("per_class")]
    if len(done) < 2:
        return note + "Too few runs finished with a test evaluation to compare."
    per_class = done[0].run["test"]["per_class"]
    rare = "disgust" if "disgust" in per_class else min(per_class, key=lambda c: per_class[c]["support"])
    recall = {o.value: o.run["test"]["per_class"][rare]["recall"] for o in done}
    acc = {o.value: o.run["test"]["accuracy"] for o in done}
    off, on = recall.get(False), recall.get(True)
    text = f"Test recall of {rare} (the rarest class): without weights {_pct(off)}, with weights {_pct(on)}; " \
           f"overall test accuracy {_pct(acc[False])} vs {_pct(acc[True])}. "
    if on - off > ACC_TOLERANCE:
        text += f"As expected, weighting the loss by inverse class frequency makes the network find more {rare} " \
                "faces, usually at a small cost in overall accuracy."
    else:
        text += f"These runs did NOT show the expected rise in {rare} recall with class weights"
        text += " (the classes are balanced in this dataset, so weights change little)." if \
            _balanced(done[0].run["test"]) else f"; {NOISE_HINT}."
    return note + text


def summarize_grad_clip(lesson: Lesson, runs: list[dict], epochs_by_run: dict) -> str:
    outs, note = outcomes(lesson, runs, epochs_by_run)
    clipped = next((o for o in outs if o.value), None)
    plain = next((o for o in outs if not o.value), None)
    if clipped is None or plain is None:
        return note + "Too few runs to compare."
    if not plain.ok and clipped.ok:
        return note + f"As expected, the unclipped run did not get through training ({plain.run.get('error')}) " \
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


def _balanced(test: dict) -> bool:
    support = [m["support"] for m in test["per_class"].values()]
    return max(support) <= 1.5 * max(min(support), 1)


# --- the registry ----------------------------------------------------------------------------------------
def _lesson(name, title, factor, values, base, summarize, explanation, **kw) -> Lesson:
    return Lesson(name=name, title=title, factor=factor, values=tuple(values), base=base,
                  explanation=" ".join(explanation.split()).replace(" | ", "\n\n"), summarize=summarize, **kw)


LESSONS: dict[str, Lesson] = {l.name: l for l in [
    _lesson("learning_rate", "Learning rate: 0.01 vs 0.001 with Adam", "lr", (0.01, 0.001), SMALL_CNN,
            summarize_accuracy(0.001, "the larger step overshoots the minimum and bounces around it"), """
        Watch the validation curves. With lr 0.001 loss falls smoothly; with 0.01 it falls less, zig-zags
        and may stall near chance, and the diagnosis may call it overshoot or oscillation. | Adam scales every
        step to roughly the learning rate whatever the gradient's size, so the learning rate is literally the
        step length in weight space. Steps ten times longer jump across the narrow valleys of the loss surface
        instead of walking down them."""),
    _lesson("epochs", "Epochs: 8 vs 100 (overfitting)", "epochs", (8, 100), {**SMALL_CNN, **NO_REGULARISATION},
            summarize_epochs, """
        Compare train and val loss of the long run: after a few epochs val loss reaches its minimum and turns
        up while train loss keeps falling towards zero, and train accuracy races past val accuracy. The
        diagnosis names the epoch of the turn. | With no dropout and no augmentation the network has enough
        capacity to memorise the training faces, noise and all. Once it has learned what generalises, further
        epochs only fit what is particular to the training images, and new faces get worse. This is why the
        lab picks the checkpoint on val and offers early stopping.""", fixed_epochs=True),
    _lesson("dropout", "Dropout: 0 vs 0.25 vs 0.5", "conv_dropout", (0.0, 0.25, 0.5),
            {**SMALL_CNN, **NO_REGULARISATION, "epochs": 30}, summarize_dropout, """
        Watch the gap between train and val accuracy: without dropout it opens quickly, with 0.25 and 0.5 it
        stays smaller and val loss turns up later or not at all. Too much dropout can slow learning enough to
        cost accuracy in a short run. | Dropout switches off a random share of the activations at each step,
        so no unit can count on any other being there: the network must spread what it knows over many
        units, which is much harder to do for memorised noise than for real patterns."""),
    _lesson("batchnorm", "BatchNorm: off vs on", "batchnorm", (False, True), SMALL_CNN,
            summarize_accuracy(True, "normalised layer inputs keep every layer in a range where it learns "
                                     "quickly"), """
        Watch the first epochs: with BatchNorm, val accuracy climbs much faster and ends higher at the same
        learning rate; without it, training is slower and the gradient norms of the first layers are smaller.
        | BatchNorm rescales each channel to zero mean and unit variance over the batch, so a layer's inputs do
        not drift as the layers before it change. Gradients then keep a healthy size through the depth of the
        network and larger learning rates become safe."""),
    _lesson("activation", "ReLU vs LeakyReLU", "activation", ("relu", "leaky_relu"), {**SMALL_CNN,
            "batchnorm": False}, summarize_close(ACC_TOLERANCE, "LeakyReLU to match or slightly beat ReLU"), """
        Watch the dead-units share in the diagnosis and the per-layer gradient norms: ReLU units that never
        fire pass no gradient and stop learning; LeakyReLU keeps them alive. The accuracy difference is usually
        small. | ReLU outputs zero for any negative input and has zero slope there. If a unit's weights drift
        so that its input is negative for every image, it is dead for good. LeakyReLU keeps a small slope
        (0.01) for negative inputs, so such a unit can still recover. BatchNorm is switched off in this lesson
        because it largely prevents dying units."""),
    _lesson("augmentation", "Augmentation: off vs on", "augmentation", ("off", "on"), {**SMALL_CNN, "epochs": 30},
            summarize_accuracy("on", "flipped, rotated and shifted faces are new examples the network cannot "
                                     "memorise"), """
        Watch the train/val gap: without augmentation train accuracy shoots up and val loss turns up; with
        flips, rotations, shifts and zooms the training curve is lower and slower, but val keeps improving
        longer and ends higher. | A face mirrored or turned by a few degrees still shows the same expression,
        so augmentation multiplies the training set with examples that are new to the network but honest about
        the label. The network can no longer memorise exact pixels and must learn the shapes that matter.""",
            variants=AUGMENTATION),
    _lesson("batch_size", "Batch size: 4 vs 32 vs 128", "batch_size", (4, 32, 128), {**SMALL_CNN, "epochs": 10},
            summarize_batch_size, """
        Watch how noisy the curves are and how long an epoch takes: batch 4 takes many small, noisy steps (and
        BatchNorm statistics over 4 images are noisy too), batch 128 few smooth ones. At the same learning rate
        the small batches make many more updates per epoch. | Each step follows the average gradient of its
        batch; over 4 images that average is a rough guess, over 128 a good estimate. Noise can help escape poor
        regions but wastes the GPU, which processes 128 images nearly as fast as 4."""),
    _lesson("transfer", "Transfer learning: head vs frozen vs unfrozen vs scratch (ResNet18)", "transfer",
            ("head", "frozen", "unfrozen", "scratch"), RESNET18,
            summarize_accuracy("unfrozen", "ImageNet features are a good start but gray faces are far from "
                                           "ImageNet photos, so the backbone must adapt"), """
        Compare the four curves: training only a new head on frozen ImageNet features (head, frozen) is fast
        but plateaus low; fine-tuning everything (unfrozen) climbs fastest and highest; from scratch the same
        network needs more epochs. These runs need the ImageNet weights file on the machine. | Features learned
        on ImageNet photos (edges, textures, object parts) are generic at first and specific later. Low-resolution
        gray faces with subtle expression changes are far from ImageNet, so the later layers must be retrained;
        starting from pretrained weights still beats random ones because the early filters transfer."""),
    _lesson("input_channels", "Grayscale input: copy to 3 channels vs a 1-channel first conv", "input_mode",
            ("rgb", "gray"), RESNET18,
            summarize_close(0.02, "both reach the same accuracy (summing the pretrained RGB kernels is the same "
                                  "filter), gray a little faster"), """
        Compare accuracy and seconds per epoch: the two runs should end close together, the 1-channel one a bit
        cheaper. | An ImageNet network expects RGB. Copying the gray image into R, G and B works but makes the
        first conv do three times the work on identical inputs. Summing the pretrained RGB kernels into one gives
        exactly the same response to a gray image, so nothing is lost at the start; the runs then differ only by
        the randomness of training."""),
    _lesson("class_weights", "Class weights: off vs on (watch disgust recall)", "class_weights", (False, True),
            SMALL_CNN, summarize_class_weights, """
        Watch the recall of disgust, FER2013's rarest class (436 of 28,709 training faces): without weights the
        network rarely or never predicts it; with inverse-frequency weights its recall rises, while overall
        accuracy stays about the same or drops a little. | The plain loss is an average over images, so a class
        with 1.5 % of the images contributes 1.5 % of the gradient and ignoring it costs almost nothing. Weighting
        each image's loss by the inverse frequency of its class makes every class count equally."""),
    _lesson("loss", "Loss: cross-entropy vs mean squared error", "loss", ("ce", "mse"), SMALL_CNN,
            summarize_accuracy("ce", "squared error on softmax outputs gives vanishing gradients for confidently "
                                     "wrong answers, cross-entropy the largest"), """
        Watch the first epochs: cross-entropy learns faster and ends higher; MSE on the softmax outputs starts
        slowly and may stall. | Cross-entropy's gradient with respect to the logits is simply the predicted minus
        the true probability, large exactly when the network is confidently wrong. Through a softmax, squared
        error multiplies that by the softmax's slope, which is near zero for confident outputs, so the worst
        mistakes are corrected the least."""),
    _lesson("grad_clip", "Gradient clipping: off vs on", "grad_clip", (0.0, 1.0),
            {**SMALL_CNN, "batchnorm": False, "optimizer": "sgd", "lr": 0.05, "init": "kaiming"},
            summarize_grad_clip, """
        Watch the training loss for spikes and the per-layer gradient norms: without clipping, SGD at this
        learning rate on a network without BatchNorm can take a huge step after one bad batch (loss spikes, or
        NaN); with clipping at norm 1 the curve stays steady. | Clipping rescales the whole gradient whenever its
        norm exceeds the threshold, keeping its direction. Ordinary steps are unchanged; only the rare huge
        gradient, which would throw the weights far away, is tamed."""),
    _lesson("lr_schedule", "Learning-rate schedule: constant vs ReduceLROnPlateau", "schedule",
            ("constant", "plateau"), {**SMALL_CNN, "epochs": 30, "plateau_patience": 2, "plateau_factor": 0.5},
            summarize_accuracy("plateau", "smaller steps late in training settle into the minimum the large steps "
                                          "kept jumping over"), """
        Watch the lr column and the val curve after a plateau: the plateau run halves its learning rate when val
        loss stops improving for 2 epochs, and val accuracy usually makes a small jump after each drop; the
        constant run keeps hovering. | Early on, large steps make fast progress; near a minimum the same steps
        overshoot back and forth. Reducing the step when progress stalls lets the optimiser settle into the
        minimum instead of circling it."""),
]}


# --- public API ---------------------------------------------------------------------------------------
def get_lesson(name: str) -> Lesson:
    if name not in LESSONS:
        raise ValueError(f"There is no lesson named {name!r}; the lessons are {', '.join(LESSONS)}.")
    return LESSONS[name]


def lesson_configs(name: str, data: str = "synthetic", epochs: int | None = None, fraction: float | None = None,
                   classes=()) -> list[RunConfig]:
    """The lesson's runs: its base config on `data`, one run per value of the factor."""
    lesson = get_lesson(name)
    shared = {**lesson.base, "data": data, "classes": tuple(classes)}
    if epochs is not None and not lesson.fixed_epochs:
        shared["epochs"] = int(epochs)
    if fraction is not None:
        shared["data_fraction"] = float(fraction)
    return [RunConfig.from_dict({**shared, **lesson.changes(v), "name": f"lesson-{name}-{lesson.label(v)}"})
            for v in lesson.values]


def list_lessons(data: str = "synthetic", epochs: int | None = None, fraction: float | None = None,
                 store=None) -> list[dict]:
    """Every lesson with its explanation, run configs and a time estimate (`lesson list --json`).
    Given a store, the estimate uses the dataset's real size."""
    out = []
    for lesson in LESSONS.values():
        configs = lesson_configs(lesson.name, data, epochs, fraction)
        out.append({"name": lesson.name, "title": lesson.title, "factor": lesson.factor, "fields": lesson.fields,
                    "values": [lesson.label(v) for v in lesson.values], "explanation": lesson.explanation,
                    "runs": [c.to_dict() for c in configs], "estimate": estimate_runs(configs, store)})
    return out


def start_lesson(store, name: str, data: str = "synthetic", epochs: int | None = None,
                 fraction: float | None = None, classes=()) -> list[dict]:
    """Queue the lesson's runs as one group (group_kind "lesson", group_name "<lesson>-<suffix>")."""
    configs = lesson_configs(name, data, epochs, fraction, classes)
    if not (data.startswith("synthetic") or store.dataset_info(data) or Path(data).expanduser().exists()):
        raise ValueError(f"There is no dataset named {data!r} and no file or folder at that path; import it "
                         "first (`data import`) or use `synthetic`.")
    group = f"{name}-{uuid.uuid4().hex[:6]}"
    return [store.create_run(c, status="queued", group_kind="lesson", group_name=group) for c in configs]


def lesson_status(store, group_name: str) -> dict:
    """{"lesson", "title", "runs", "done", "summary"}; the summary once every run has finished, failed or
    been cancelled."""
    runs = sorted(store.list_runs(group_name=group_name), key=lambda r: r["id"])
    if not runs:
        raise ValueError(f"There is no lesson run group named {group_name!r}.")
    lesson = get_lesson(group_name.rsplit("-", 1)[0])
    done = all(r["status"] in DONE for r in runs)
    summary = lesson.summarize(lesson, runs, {r["id"]: store.epochs(r["id"]) for r in runs}) if done else None
    return {"lesson": lesson.name, "title": lesson.title, "runs": runs, "done": done, "summary": summary}


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a or []) == list(b or [])
    return a == b


# --- time estimate ---------------------------------------------------------------------------------------
# Training images per class of the datasets a class usually picks (FER2013 Training split; the synthetic
# set is balanced, 80 % of its images train). Unknown names are assumed FER2013-sized.
FER2013_TRAIN = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171,
                 "neutral": 4965}
FER2013_VAL_SHARE = 3589 / 28709
# Effective training throughput, FLOPs per second, and a fixed cost per optimiser step (kernel launches,
# the optimiser, Python). The lessons' small CNN trained at 26-56 GFLOP/s on a shared 2-core laptop-class CPU
# (batch 4-128), so 30 is a slightly pessimistic middle; the GPU numbers are conservative guesses for small
# 48-96 px nets, which use a small part of a modern GPU.
RATES = {"cpu": {"flops": 30e9, "step_s": 0.004}, "gpu": {"flops": 20e12, "step_s": 0.003}}
# Multiply-adds of one 224 px forward pass, from torchvision's weights metadata (`meta["_ops"]`), copied
# here so that `lesson list` does not import torchvision (seconds on a laptop).
IMAGENET_GMACS = {"vgg16": 15.47, "resnet18": 1.814, "resnet50": 4.089, "resnet101": 7.801,
                  "efficientnet_b0": 0.386, "efficientnet_b2": 1.088}
BACKWARD_FACTOR = 3.0   # forward + backward ~ 3 forward passes when every layer trains


def train_images(config: RunConfig, store=None) -> tuple[int, str]:
    """Training images per epoch for this config, and where the number comes from."""
    counts, basis = None, ""
    info = store.dataset_info(config.data) if store is not None else None
    if info:
        counts, basis = dict(info["class_counts"]["train"]), f"dataset {config.data!r}"
    elif config.data.startswith("synthetic"):
        n = int(config.data.split(":")[1]) if ":" in config.data else 2100
        counts, basis = {c: 0.8 * n / len(EMOTIONS) for c in EMOTIONS}, f"synthetic ({n} faces)"
    else:
        counts, basis = FER2013_TRAIN, "assumed FER2013-sized (28,709 training images)"
    if config.classes:
        counts = {c: v for c, v in counts.items() if c in config.classes}
    return int(sum(counts.values()) * config.data_fraction), basis


def forward_flops(config: RunConfig) -> float:
    """FLOPs of one forward pass of one image."""
    if config.arch != "custom":
        return 2 * IMAGENET_GMACS[config.arch] * 1e9 * (config.image_size / 224) ** 2
    side, cin, flops = config.image_size, 1, 0.0
    filters = list(config.filters) + [config.filters[-1]] * config.conv_blocks
    for block in range(config.conv_blocks):
        for _ in range(config.convs_per_block):
            flops += 2 * config.kernel_size ** 2 * cin * filters[block] * side * side
            cin = filters[block]
        side //= 2
    width = cin * max(side, 1) ** 2
    for units in list(config.fc_units) + [7]:
        flops += 2 * width * units
        width = units
    return flops


def estimate_runs(configs: list[RunConfig], store=None) -> dict:
    """{"images", "seconds_cpu", "seconds_gpu", "basis"} for training all configs one after the other."""
    images, seconds, basis = 0, {"cpu": 0.0, "gpu": 0.0}, ""
    for c in configs:
        n, basis = train_images(c, store)
        seen = n * c.epochs
        images += seen
        fwd = forward_flops(c)
        train_cost = fwd * (1.2 if c.transfer in ("head", "frozen") else BACKWARD_FACTOR)
        val_images = n / max(c.data_fraction, 1e-9) * FER2013_VAL_SHARE * c.epochs
        steps = c.epochs * max(1, n // max(c.batch_size, 1))
        for kind, rate in RATES.items():
            seconds[kind] += (seen * train_cost + val_images * fwd) / rate["flops"] + steps * rate["step_s"]
    return {"images": int(images), "seconds_cpu": round(seconds["cpu"]), "seconds_gpu": round(seconds["gpu"]),
            "basis": basis + "; a rough cost model, not a measurement"}
