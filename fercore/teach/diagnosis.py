"""Automatic diagnosis of a run: what went wrong (or right), each a plain sentence with its evidence.

`diagnose(run)` reads only what the store keeps: the run (config, status, error, classes), its epoch
records (losses, accuracies, per-layer gradient norms, dead-unit shares) and its evaluation (the
confusion matrix of test when the run has a test split, else of val; each finding names the split).
Each check is a plain function in CHECKS, returning zero or
more findings {"kind", "severity", "message", "evidence"}; adding a check means adding one function.

The thresholds below are deliberately coarse: a finding should mean something a student can see
on the learning curves, not a statistical subtlety.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from fercore.store.entities import Evaluation, Run, RunStatus

# --- thresholds ---------------------------------------------------------------------------------------
# Overfitting: val loss must sit clearly above its (smoothed) minimum for several epochs, so one noisy
# epoch on a small val set does not count as a turn.
OVERFIT_MIN_RISING_EPOCHS = 3     # epochs after the minimum, at least
OVERFIT_MIN_RISE = 0.10           # the smoothed val loss ends >= 10 % above its minimum
GAP_WARN = 0.20                   # a train/val accuracy gap of 20 points is worth naming on its own
# Divergence: the epoch-mean training loss is smooth, so a 25 % climb above its best is no noise.
TRAIN_LOSS_RISE = 0.25
CHANCE_MARGIN = 0.05              # within 5 points of 1/k: the network learned nothing
# Learning rates above these are "high" for the optimiser (Adam's usual range is 1e-4..1e-3; SGD with
# momentum on a BatchNorm CNN trains up to ~0.1).
HIGH_LR = {"adam": 5e-3, "adamw": 5e-3, "sgd": 0.2}
# Oscillation: most epoch-to-epoch moves reverse direction and they are large.
OSCILLATION_MIN_EPOCHS = 6
OSCILLATION_REVERSALS = 0.6       # share of consecutive moves that change sign
OSCILLATION_ACC_SWING = 0.05      # mean absolute val-accuracy move of 5 points (noise on a few hundred
                                  # val images is ~2-3 points)
# Underfitting: still improving when training stopped.
STILL_IMPROVING = 0.01            # val accuracy gained >= 1 point over the last 3 epochs
# Gradients: weight-gradient L2 norms per layer (a CE loss gives O(0.01-10) on a healthy net).
VANISHING_RATIO = 1e-3            # first layers' norm below 1/1000 of the last layers'
TINY_GRAD = 1e-6                  # every layer below this: nothing learns anywhere
EXPLODING_NORM = 1e3              # a single layer's norm above 1000
EXPLODING_GROWTH = 100.0          # the largest norm grew 100x from the first to the last epoch
EDGE_LAYERS = 2                   # how many layers count as "first" and "last"
# Activations: more than half the channels of a layer never firing (or always saturated).
DEAD_SHARE = 0.5
# Confusion: a pair is worth naming when >= 15 % of a class's images go to one other class.
CONFUSED_MIN_SHARE = 0.15
CONFUSED_TOP = 3
# One class taking most answers: it receives >= 50 % of all predictions and at least twice its true share.
DOMINANT_SHARE = 0.5
DOMINANT_OVER_TRUE = 2.0


def diagnose(run: Run, epochs: list[dict] | None = None, evaluation: Evaluation | None = None) -> list[dict]:
    """All findings for one run, the most serious kinds first. `epochs` default to the run's own (load them
    with `store.get_run(run, epochs=True)`), `evaluation` to `run.scored` (test when it exists, else val)."""
    epochs = list(run.epochs or ()) if epochs is None else list(epochs)
    ctx = _Context(run, epochs, evaluation or run.scored)
    findings: list[dict] = []
    for check in CHECKS:
        findings.extend(check(ctx))
    return findings


def finding(kind: str, severity: str, message: str, **evidence) -> dict:
    return {"kind": kind, "severity": severity, "message": message, "evidence": evidence}


class _Context:
    """The run's numbers, pulled out once: series with their epoch numbers, class count, optimiser."""

    def __init__(self, run: Run, epochs: list[dict], evaluation: Evaluation | None):
        self.run, self.epochs, self.evaluation = run, epochs, evaluation
        self.config = run.config
        self.classes = list(run.classes or (evaluation.classes if evaluation else ()) or self.config.classes)
        self.split = evaluation.split if evaluation else "test"
        self.k = len(self.classes) or 7
        self.lr = self.config.lr
        self.lr_text = f"{self.lr:g}" if isinstance(self.lr, (int, float)) else "unknown"
        self.optimizer = self.config.optimizer

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of a metric, skipping epochs where it is missing or not finite."""
        xs, ys = [], []
        for e in self.epochs:
            v = e.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                xs.append(int(e["epoch"]))
                ys.append(float(v))
        return xs, ys

    def value_at(self, key: str, epoch: int):
        for e in self.epochs:
            if e.get("epoch") == epoch:
                return e.get(key)
        return None

    def lr_is_high(self) -> bool:
        return self.lr is not None and self.lr >= HIGH_LR.get(self.optimizer, HIGH_LR["adam"])


# --- checks -------------------------------------------------------------------------------------------
def check_failed(ctx: _Context) -> list[dict]:
    if ctx.run.status != RunStatus.FAILED:
        return []
    reason = ctx.run.error or "no reason was recorded"
    done = len([e for e in ctx.epochs if e.get("val_acc") is not None])
    return [finding("failed", "warning", f"The run failed after {done} complete epoch(s): {reason}",
                    error=reason, epochs_done=done)]


def check_divergence(ctx: _Context) -> list[dict]:
    out = []
    nan_epoch = _nan_epoch(ctx)
    if nan_epoch is not None:
        out.append(finding(
            "divergence", "warning",
            f"The training loss became NaN in epoch {nan_epoch} at learning rate {ctx.lr_text} ({ctx.optimizer}): "
            "the updates were so large that the weights blew up. Lower the learning rate (10x is a good first "
            "step) or clip the gradients.", epoch=nan_epoch, lr=ctx.lr, optimizer=ctx.optimizer))
        return out
    xs, train = ctx.series("train_loss")
    if len(train) >= 3:
        smooth = _smooth(train)
        best = min(range(len(smooth)), key=smooth.__getitem__)
        if best < len(smooth) - 1 and smooth[-1] >= smooth[best] * (1 + TRAIN_LOSS_RISE):
            out.append(finding(
                "divergence", "warning",
                f"The training loss rose from {train[best]:.3f} (epoch {xs[best]}) to {train[-1]:.3f} "
                f"(epoch {xs[-1]}): the optimiser is overshooting; a lower learning rate (now {ctx.lr_text}) or a "
                "schedule that decays it would help.", min_epoch=xs[best], min_train_loss=train[best],
                last_train_loss=train[-1], lr=ctx.lr))
    vx, val_acc = ctx.series("val_acc")
    chance = 1.0 / ctx.k
    if len(val_acc) >= 2 and max(val_acc) < chance + CHANCE_MARGIN and ctx.lr_is_high():
        out.append(finding(
            "divergence", "warning",
            f"Validation accuracy stayed at chance level (best {max(val_acc):.1%}, chance {chance:.1%} for "
            f"{ctx.k} classes) with a high learning rate ({ctx.lr_text} for {ctx.optimizer}): the steps overshoot "
            "every minimum and the network learns nothing.", best_val_acc=max(val_acc), chance=chance,
            lr=ctx.lr, **_single_prediction(ctx)))
    return out


def check_oscillation(ctx: _Context) -> list[dict]:
    xs, acc = ctx.series("val_acc")
    if len(acc) < OSCILLATION_MIN_EPOCHS:
        return []
    moves = [b - a for a, b in zip(acc, acc[1:])]
    signs = [m for m in moves if m != 0]
    reversals = sum(1 for a, b in zip(signs, signs[1:]) if (a > 0) != (b > 0))
    share = reversals / max(len(signs) - 1, 1)
    swing = sum(abs(m) for m in moves) / len(moves)
    if share < OSCILLATION_REVERSALS or swing < OSCILLATION_ACC_SWING:
        return []
    return [finding(
        "oscillation", "warning",
        f"Validation accuracy zig-zags: {share:.0%} of the epoch-to-epoch moves reverse direction, by "
        f"{swing:.1%} on average (between {min(acc):.1%} and {max(acc):.1%}). The learning rate "
        f"({ctx.lr_text}) is probably too high for steady progress, or the batches are very small.",
        reversal_share=share, mean_swing=swing, min_val_acc=min(acc), max_val_acc=max(acc))]


def check_overfitting(ctx: _Context) -> list[dict]:
    ex, val_loss = ctx.series("val_loss")
    tx, train_loss = ctx.series("train_loss")
    if len(val_loss) < OVERFIT_MIN_RISING_EPOCHS + 2 or len(train_loss) != len(val_loss):
        return []
    sv, st = _smooth(val_loss), _smooth(train_loss)
    m = min(range(len(sv)), key=sv.__getitem__)
    after = len(sv) - 1 - m
    rose = sv[-1] >= sv[m] * (1 + OVERFIT_MIN_RISE)
    train_fell = st[-1] < st[m]
    gap_end = _gap(ctx, ex[-1])
    if after >= OVERFIT_MIN_RISING_EPOCHS and rose and train_fell:
        # the turn: the lowest raw val loss near the smoothed minimum
        w = _window(len(val_loss)) // 2
        lo, hi = max(0, m - w), min(len(val_loss), m + w + 1)
        turn = min(range(lo, hi), key=val_loss.__getitem__)
        ev = dict(epoch=ex[turn], min_val_loss=val_loss[turn], last_val_loss=val_loss[-1],
                  train_loss_at_turn=train_loss[turn], last_train_loss=train_loss[-1], last_epoch=ex[-1],
                  gap_at_turn=_gap(ctx, ex[turn]), gap_end=gap_end)
        gap_txt = ""
        if gap_end is not None:
            gap_txt = (f"; the train/val accuracy gap ended at {gap_end * 100:.1f} points (train "
                       f"{ctx.value_at('train_acc', ex[-1]):.1%}, val {ctx.value_at('val_acc', ex[-1]):.1%})")
        return [finding(
            "overfitting", "warning",
            f"Overfitting from epoch {ex[turn]}: val loss bottomed at {val_loss[turn]:.3f} and rose to "
            f"{val_loss[-1]:.3f} by epoch {ex[-1]} while train loss kept falling ({train_loss[turn]:.3f} -> "
            f"{train_loss[-1]:.3f}){gap_txt}. The network memorises the training images; the checkpoint is chosen "
            "on val, and early stopping, more data, augmentation or dropout would help.", **ev)]
    if gap_end is not None and gap_end >= GAP_WARN:
        return [finding(
            "overfitting", "info",
            f"Train accuracy ({ctx.value_at('train_acc', ex[-1]):.1%}) is {gap_end * 100:.1f} points above val "
            f"accuracy ({ctx.value_at('val_acc', ex[-1]):.1%}) in the last epoch: the network fits the training "
            "images much better than new ones.", gap_end=gap_end, last_epoch=ex[-1])]
    return []


def check_underfitting(ctx: _Context) -> list[dict]:
    xs, acc = ctx.series("val_acc")
    if len(acc) < 2:
        return []
    chance = 1.0 / ctx.k
    if max(acc) < chance + CHANCE_MARGIN and not ctx.lr_is_high() and _nan_epoch(ctx) is None:
        return [finding(
            "underfitting", "warning",
            f"Validation accuracy never left chance level (best {max(acc):.1%}, chance {chance:.1%} for {ctx.k} "
            "classes) although the learning rate is not high: the network learned nothing. Look for vanishing "
            "gradients, dead units, or a learning rate that is too small.", best_val_acc=max(acc),
            chance=chance, **_single_prediction(ctx))]
    if len(acc) >= 4 and acc[-1] >= max(acc) and acc[-1] - acc[-4] >= STILL_IMPROVING \
            and ctx.run.status == RunStatus.FINISHED:
        return [finding(
            "underfitting", "info",
            f"Still improving when training stopped: val accuracy rose from {acc[-4]:.1%} to {acc[-1]:.1%} over "
            f"the last 3 epochs (its best is the last epoch, {xs[-1]}). More epochs would probably help.",
            gain_last_3=acc[-1] - acc[-4], last_val_acc=acc[-1], last_epoch=xs[-1])]
    return []


def check_vanishing_gradients(ctx: _Context) -> list[dict]:
    layers, per_epoch = _grad_table(ctx)
    if len(layers) < 2 * EDGE_LAYERS or not per_epoch:
        return []
    ratios, firsts, lasts, tops = [], [], [], []
    for norms in per_epoch:
        first = _mean([norms[l] for l in layers[:EDGE_LAYERS]])
        last = _mean([norms[l] for l in layers[-EDGE_LAYERS:]])
        firsts.append(first)
        lasts.append(last)
        tops.append(max(norms.values()))
        ratios.append(first / last if last > 0 else 1.0)
    ratio, first, last = _median(ratios), _median(firsts), _median(lasts)
    if max(tops) < TINY_GRAD:
        return [finding(
            "vanishing_gradients", "warning",
            f"Every layer's gradient is tiny (largest weight-gradient norm {max(tops):.1e}): the loss no longer "
            "moves any weight. Saturated activations (sigmoid/tanh) or a learning signal lost in depth are the "
            "usual causes; ReLU, BatchNorm and a sensible initialisation help.", max_norm=max(tops))]
    if ratio < VANISHING_RATIO:
        return [finding(
            "vanishing_gradients", "warning",
            f"Vanishing gradients: the first layers ({', '.join(layers[:EDGE_LAYERS])}) get weight gradients "
            f"{_times(ratio)} smaller than the last layers ({first:.1e} vs {last:.1e}, median over "
            f"{len(per_epoch)} epochs), so they barely learn. Each saturating activation multiplies the signal "
            "by less than 1 on its way back; ReLU, BatchNorm, fewer layers or residual connections help.",
            ratio=ratio, first_layers=layers[:EDGE_LAYERS], last_layers=layers[-EDGE_LAYERS:],
            first_norm=first, last_norm=last, activation=ctx.config.activation)]
    return []


def check_exploding_gradients(ctx: _Context) -> list[dict]:
    layers, per_epoch = _grad_table(ctx, finite_only=False)
    if not per_epoch:
        return []
    for i, norms in enumerate(per_epoch):
        bad = [l for l, v in norms.items() if not math.isfinite(v)]
        if bad:
            epoch = _grad_epochs(ctx)[i]
            return [finding(
                "exploding_gradients", "warning",
                f"The gradient of {bad[0]} became infinite or NaN in epoch {epoch}: the gradients exploded. "
                "Clip the gradient norm, lower the learning rate, or add BatchNorm.", epoch=epoch, layers=bad)]
    tops = [max(n.values()) for n in per_epoch]
    peak = max(tops)
    growth = tops[-1] / tops[0] if tops[0] > 0 else 1.0
    if peak >= EXPLODING_NORM or (len(tops) >= 3 and growth >= EXPLODING_GROWTH):
        epoch = _grad_epochs(ctx)[tops.index(peak)]
        layer = max(per_epoch[tops.index(peak)].items(), key=lambda kv: kv[1])[0]
        return [finding(
            "exploding_gradients", "warning",
            f"Exploding gradients: the weight gradient of {layer} reached {peak:.3g} in epoch {epoch} (it was "
            f"{tops[0]:.3g} in the first epoch). Large gradients throw the weights far off; clip the gradient "
            "norm or lower the learning rate.", peak_norm=peak, layer=layer, epoch=epoch, growth=growth)]
    return []


def check_dead_activations(ctx: _Context) -> list[dict]:
    last = next((e.get("dead_units") for e in reversed(ctx.epochs) if e.get("dead_units")), None)
    if not last:
        return []
    bad = {k: v for k, v in last.items() if isinstance(v, (int, float)) and v > DEAD_SHARE}
    if not bad:
        return []
    saturating = ctx.config.activation in ("sigmoid", "tanh")
    state = "saturated (stuck near their limits)" if saturating else "dead (never firing)"
    worst = max(bad, key=bad.get)
    return [finding(
        "dead_activations", "warning",
        f"{len(bad)} activation layer(s) have most channels {state} on a validation batch; the worst, {worst}, "
        f"{bad[worst]:.0%}. Those units pass no gradient back. " +
        ("Use ReLU-family activations or BatchNorm." if saturating else
         "A lower learning rate, LeakyReLU or BatchNorm keep units alive."),
        layers=bad, activation=ctx.config.activation)]


def check_never_predicted(ctx: _Context) -> list[dict]:
    cm, classes = _confusion(ctx)
    if cm is None:
        return []
    never = [(c, sum(cm[i])) for i, c in enumerate(classes)
             if sum(row[i] for row in cm) == 0 and sum(cm[i]) > 0]
    if not never:
        return []
    evidence = dict(classes=[c for c, _ in never], support={c: n for c, n in never})
    predicted = [c for i, c in enumerate(classes) if sum(row[i] for row in cm) > 0]
    if len(predicted) == 1:
        return [finding(
            "never_predicted", "warning",
            f"The model predicts {predicted[0]} for every {ctx.split} image and never any of the other {len(never)} "
            "classes: it has learned nothing beyond one answer (see the learning rate and the gradients).",
            predicts_only=predicted[0], **evidence)]
    names = ", ".join(f"{c} ({n} {ctx.split} images)" for c, n in never)
    return [finding(
        "never_predicted", "warning",
        f"On {ctx.split}, the model never predicts {names}: it gave up on "
        f"{'this class' if len(never) == 1 else 'these classes'}. "
        "A rare class often ends like this; class weights or oversampling make the loss care about it.",
        **evidence)]


def check_confused_pairs(ctx: _Context) -> list[dict]:
    cm, classes = _confusion(ctx)
    if cm is None:
        return []
    pairs = []
    for i, row in enumerate(cm):
        total = sum(row)
        for j, n in enumerate(row):
            if i != j and total and n / total >= CONFUSED_MIN_SHARE:
                pairs.append({"true": classes[i], "predicted": classes[j], "count": int(n), "share": n / total,
                              "support": int(total)})
    if not pairs:
        return []
    pairs.sort(key=lambda p: -p["share"])
    pairs = pairs[:CONFUSED_TOP]
    text = "; ".join(f"{p['true']} is taken for {p['predicted']} in {p['share']:.0%} of cases ({p['count']} of "
                     f"{p['support']})" for p in pairs)
    return [finding("confused_pairs", "info", f"Most confused on {ctx.split}: {text}.", pairs=pairs,
                    split=ctx.split)]


def check_dominant_class(ctx: _Context) -> list[dict]:
    """One class soaks up most answers (an lr that is too high, or an unweighted rare-class problem)."""
    cm, classes = _confusion(ctx)
    if cm is None:
        return []
    total = sum(map(sum, cm))
    predicted = [sum(row[j] for row in cm) for j in range(len(classes))]
    j = max(range(len(classes)), key=predicted.__getitem__)
    share, true_share = predicted[j] / total, sum(cm[j]) / total
    if share < DOMINANT_SHARE or share < DOMINANT_OVER_TRUE * true_share or share == 1.0:
        return []   # share 1.0: check_never_predicted already says "predicts X for every image"
    return [finding(
        "dominant_class", "warning",
        f"The model predicts {classes[j]} for most faces: {share:.0%} of its answers on {ctx.split} are "
        f"{classes[j]}, which is only {true_share:.0%} of the images. It has learned a safe guess more than the "
        "expressions; a lower learning rate or class weights usually help.",
        predicted_class=classes[j], share=share, true_share=true_share, split=ctx.split)]


def majority_baseline(evaluation: Evaluation) -> tuple[float, str]:
    """The accuracy of always answering the split's largest class, and that class."""
    rows = [sum(r) for r in evaluation.confusion]
    i = max(range(len(rows)), key=rows.__getitem__)
    return rows[i] / max(sum(rows), 1), evaluation.classes[i]


def learned_something(run: Run, evaluation: Evaluation | None = None) -> bool | None:
    """The one rule for "this run learned something", shared by the diagnosis and the lesson summaries: its
    accuracy on the split it reports (test when it has one, else val) beats always answering the largest class
    by more than the sampling noise of that split (one binomial standard deviation). None: no evaluation."""
    ev = evaluation or run.scored
    if ev is None or not ev.confusion:
        return None
    base, _ = majority_baseline(ev)
    n = sum(map(sum, ev.confusion)) or ev.n
    return confusion_accuracy(ev) - base > math.sqrt(base * (1 - base) / max(n, 1))


def confusion_accuracy(evaluation: Evaluation) -> float:
    """The accuracy its confusion matrix counts (the stored accuracy is the same number for any real run)."""
    total = sum(map(sum, evaluation.confusion))
    return sum(evaluation.confusion[i][i] for i in range(len(evaluation.confusion))) / total if total else \
        evaluation.accuracy


def check_learned_nothing(ctx: _Context) -> list[dict]:
    """No better than the safe guess: the run has not learned anything usable (too short, too little data, or
    a setting that stops it learning)."""
    if ctx.run.status != RunStatus.FINISHED or ctx.evaluation is None or learned_something(ctx.run, ctx.evaluation) \
            is not False:
        return []
    base, cls = majority_baseline(ctx.evaluation)
    accuracy = confusion_accuracy(ctx.evaluation)
    return [finding(
        "learned_nothing", "warning",
        f"On {ctx.split} the run scored {accuracy:.1%}, no better than always answering {cls} "
        f"({base:.1%}): it has not learned anything usable yet. Train more epochs or on a larger share of the data "
        "before reading anything into its curves.", accuracy=accuracy, baseline=base,
        majority_class=cls, split=ctx.split)]


CHECKS: list[Callable[[_Context], list[dict]]] = [
    check_failed, check_learned_nothing, check_divergence, check_exploding_gradients, check_vanishing_gradients,
    check_oscillation, check_overfitting, check_underfitting, check_dead_activations, check_never_predicted,
    check_dominant_class, check_confused_pairs,
]


# --- helpers ------------------------------------------------------------------------------------------
def _nan_epoch(ctx: _Context) -> int | None:
    """The epoch whose loss became NaN: a recorded epoch without a train loss, or the run's error says so."""
    error = (ctx.run.error or "").lower()
    says_nan = "nan" in error or "infinite" in error or "diverged" in error
    for e in ctx.epochs:
        v = e.get("train_loss")
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            if says_nan or e.get("val_loss") is None:
                return int(e["epoch"])
    if says_nan:
        return len(ctx.epochs) or 1
    return None


def _single_prediction(ctx: _Context) -> dict:
    cm, classes = _confusion(ctx)
    if cm is None:
        return {}
    used = [j for j in range(len(classes)) if sum(row[j] for row in cm) > 0]
    return {"predicts_only": classes[used[0]]} if len(used) == 1 else {}


def _confusion(ctx: _Context):
    ev = ctx.evaluation
    cm = [list(r) for r in ev.confusion] if ev else None
    classes = list(ev.classes if ev else ctx.classes)
    if not cm or len(cm) != len(classes) or sum(map(sum, cm)) == 0:
        return None, classes
    return cm, classes


def _grad_epochs(ctx: _Context) -> list[int]:
    return [int(e["epoch"]) for e in ctx.epochs if e.get("grad_norms")]


def _grad_table(ctx: _Context, finite_only: bool = True) -> tuple[list[str], list[dict]]:
    """Layer names in network order (first to last) and one {layer: norm} per epoch that has them."""
    per_epoch = []
    for e in ctx.epochs:
        norms = {k: float(v) for k, v in (e.get("grad_norms") or {}).items() if isinstance(v, (int, float))}
        if not norms:
            continue
        if finite_only:
            if not all(math.isfinite(v) for v in norms.values()):
                continue
        per_epoch.append(norms)
    layers = list(per_epoch[0]) if per_epoch else []
    return layers, [n for n in per_epoch if set(n) == set(layers)]


def _gap(ctx: _Context, epoch: int) -> float | None:
    tr, va = ctx.value_at("train_acc", epoch), ctx.value_at("val_acc", epoch)
    return tr - va if tr is not None and va is not None else None


def _window(n: int) -> int:
    """Smoothing window: 3 epochs for short runs, about a tenth of the run for long ones (odd)."""
    w = max(3, min(9, n // 10))
    return w if w % 2 else w + 1


def _smooth(values: list[float]) -> list[float]:
    """Centered moving average (shorter at the ends), so one noisy epoch does not make a turn."""
    h = _window(len(values)) // 2
    return [_mean(values[max(0, i - h):i + h + 1]) for i in range(len(values))]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _times(ratio: float) -> str:
    if ratio <= 0:
        return "infinitely"
    return f"{float(f'{1 / ratio:.2g}'):,.0f}x"   # two significant digits: 870,000,000x
