"""Lessons: one-click factor experiments, each a few runs that differ in ONE setting.

LESSONS is the registry (name -> Lesson). A lesson knows its base config (changes to RunConfig's
defaults: a small CNN that trains in minutes on a GPU), the factor and its values, a two-paragraph
explanation (what to watch, why it happens) and how to summarise what the finished runs showed:
computed from their numbers, and saying so plainly when they did not show the expected direction.

`list_lessons` is what `lesson list --json` prints, `start_lesson` queues a lesson's runs as one
group, `lesson_status` tells a page whether they are done and what they showed. The time estimate
comes from fercore.teach.estimate (a cost model, not a measurement); the summaries from fercore.teach.summaries.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fercore.auth import User
from fercore.config import RunConfig
from fercore.errors import NotFound
from fercore.store.entities import Run, RunStatus
from fercore.teach.estimate import estimate_runs
from fercore.teach.summaries import ACC_TOLERANCE, DONE, finding
from fercore.teach.verdicts import (
    summarize_accuracy,
    summarize_batch_size,
    summarize_class_weights,
    summarize_close,
    summarize_dropout,
    summarize_epochs,
    summarize_grad_clip,
)

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
    summarize: Callable[..., object]   # (lesson, runs, epochs_by_run, noise) -> Verdict (fercore.teach.verdicts)
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

    def value_of(self, config: RunConfig):
        """Which of the lesson's values a run's config holds (None if none)."""
        for v in self.values:
            if all(_same(getattr(config, k, None), x) for k, x in self.changes(v).items()):
                return v
        return None


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
        raise NotFound(f"There is no lesson named {name!r}; the lessons are {', '.join(LESSONS)}.")
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
                 fraction: float | None = None, classes=(), by: User | None = None) -> list[Run]:
    """Queue the lesson's runs as one group (group_kind "lesson", group_name "<lesson>-<suffix>"), owned by `by`
    and refused over the class limits before any is queued."""
    configs = lesson_configs(name, data, epochs, fraction, classes)
    for c in configs:
        store.check_queue(c, by, adding=len(configs))
    if not (data.startswith("synthetic") or store.dataset_info(data) or Path(data).expanduser().exists()):
        raise NotFound(f"There is no dataset named {data!r} and no file or folder at that path; import it "
                         "first (`data import`) or use `synthetic`.")
    from fercore.models.weights import require_weights  # imports torchvision: only when a lesson starts
    require_weights(configs, "This lesson")
    group = f"{name}-{uuid.uuid4().hex[:6]}"
    return [store.create_run(c, status=RunStatus.QUEUED, group_kind="lesson", group_name=group, by=by)
            for c in configs]


def lesson_status(store, group_name: str) -> dict:
    """{"lesson", "title", "runs", "done", "summary", "finding"}; the summary (the finding's text, by the one rule
    of fercore.teach.summaries.finding) once every run has finished, failed or been cancelled."""
    runs = sorted(store.list_runs(group_name=group_name), key=lambda r: r.id)
    if not runs:
        raise NotFound(f"There is no lesson run group named {group_name!r}.")
    lesson = get_lesson(group_name.rsplit("-", 1)[0])
    done = all(r.status in DONE for r in runs)
    found = finding(lesson, runs, {r.id: store.epochs(r.id) for r in runs}, store) if done else None
    return {"lesson": lesson.name, "title": lesson.title, "runs": runs, "done": done,
            "summary": found.text if found else None, "finding": found}


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a or []) == list(b or [])
    return a == b

