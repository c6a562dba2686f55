"""fit(): the training loop, top to bottom.

The whole dataset lives on the training device as uint8 (FER2013 is ~80 MB), batches are cut by
index, augmented and normalised there (fercore.augment), and the model runs under bf16 autocast on
a GPU. No DataLoader, no worker processes, no per-image PIL: that is what makes it several times
faster than the textbook loop (see `fercore bench`). The same code runs on a CPU.

The loop knows nothing of SQL or Streamlit: it reports through a Recorder.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .augment import make_batch_transform, tta_views
from .config import RunConfig
from .data.dataset import FERDataset, prepare_for_run
from .metrics import evaluation_record
from .models import build_model, gradient_layers, model_info


class Cancelled(Exception):
    """The run's owner asked to stop it."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says when and suggests why."""


class Recorder:
    """What the loop reports. Subclass and override; the defaults do nothing."""

    def on_start(self, info: dict) -> None: ...

    def on_batch(self, progress: dict) -> bool:
        """Called every second or so; return True to cancel the run."""
        return False

    def on_epoch(self, record: dict) -> None: ...

    def on_evaluation(self, split: str, evaluation: dict) -> None: ...


@dataclass
class FitResult:
    model: torch.nn.Module
    classes: list[str]
    mean: float
    std: float
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    evaluations: dict = field(default_factory=dict)   # split -> evaluation record
    probs: dict = field(default_factory=dict)         # split -> np.ndarray of probabilities
    stopped_early: bool = False


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def fit(config: RunConfig, dataset: FERDataset, recorder: Recorder | None = None,
        device: str | torch.device | None = None) -> FitResult:
    recorder = recorder or Recorder()
    device = device if isinstance(device, torch.device) else pick_device(device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)

    # --- data: class subset, split, fraction; then onto the device as uint8
    ds = prepare_for_run(dataset, config.classes, config.split, config.split_ratios, config.split_seed,
                         config.data_fraction, config.seed)
    classes = list(ds.classes)
    k = len(classes)
    x_train, y_train = (torch.from_numpy(a).to(device) for a in ds.arrays("train"))
    x_val, y_val = (torch.from_numpy(a).to(device) for a in ds.arrays("val"))
    x_test, y_test = (torch.from_numpy(a).to(device) for a in ds.arrays("test"))
    if len(x_val) == 0:
        raise ValueError("The dataset has no validation images, so no checkpoint can be chosen; "
                         "use a random split with a val share (e.g. split=random, 0.8,0.1,0.1).")
    train_f = x_train.float()
    mean, std = float(train_f.mean() / 255.0), float(train_f.std() / 255.0) or 1.0
    del train_f
    train_tf = make_batch_transform(config, mean, std, train=True)
    eval_tf = make_batch_transform(config, mean, std, train=False)

    # --- model, loss, optimiser, schedule
    model = build_model(config, k).to(device)
    model = model.to(memory_format=torch.channels_last)   # faster convolutions on GPUs and CPUs alike
    params = [p for p in model.parameters() if p.requires_grad]
    counts = torch.bincount(y_train, minlength=k).float()
    weights = (counts.sum() / (k * counts.clamp(min=1))) if config.class_weights else None
    optimizer = make_optimizer(config, params)
    n_train = len(x_train)
    bs = min(config.batch_size, n_train)
    steps_per_epoch = max(1, n_train // bs)   # drop the ragged last batch (BatchNorm dislikes size 1)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch)
    use_amp = config.amp and device.type == "cuda"
    grad_layers = gradient_layers(model)
    grad_every = max(1, steps_per_epoch // 20)

    recorder.on_start({"classes": classes, "device": device_name(device), "n_train": n_train,
                       "n_val": len(x_val), "n_test": len(x_test), "steps_per_epoch": steps_per_epoch,
                       "fingerprint": dataset.fingerprint(), **model_info(model)})

    history: list[dict] = []
    best_acc, best_epoch, best_state, since_best = -1.0, 0, None, 0
    t_start = time.perf_counter()
    last_report = 0.0
    stopped_early = False
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n_train, device=device, generator=gen)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        grad_sums = {name: 0.0 for name, _ in grad_layers}
        grad_n = 0
        for step in range(steps_per_epoch):
            idx = perm[step * bs:(step + 1) * bs]
            xb, yb = train_tf(x_train[idx], gen).contiguous(memory_format=torch.channels_last), y_train[idx]
            mix = None
            if config.mixup > 0:
                lam = float(np.random.beta(config.mixup, config.mixup))
                mperm = torch.randperm(len(xb), device=device, generator=gen)
                xb = lam * xb + (1 - lam) * xb[mperm]
                mix = (lam, yb[mperm])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(xb)
            loss = compute_loss(config, logits.float(), yb, k, weights, mix)
            if not torch.isfinite(loss):
                rec = _epoch_record(epoch, float("nan"), None, None, None, optimizer, t0, seen, grad_sums, 1)
                history.append(rec)
                recorder.on_epoch(rec)
                raise TrainingDiverged(
                    f"The training loss became {loss.item()} in epoch {epoch} (batch {step + 1}); the learning "
                    f"rate ({config.lr:g}) is probably too high for this optimiser, or the gradients exploded.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step % grad_every == 0:
                for name, module in grad_layers:
                    g = module.weight.grad if getattr(module, "weight", None) is not None else None
                    if g is not None:
                        grad_sums[name] += float(g.detach().float().norm())
                grad_n += 1
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            if scheduler is not None and config.schedule in ("onecycle", "cosine"):
                scheduler.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            now = time.perf_counter()
            if now - last_report > 1.0 or step == steps_per_epoch - 1:
                last_report = now
                done = (epoch - 1) * steps_per_epoch + step + 1
                total = config.epochs * steps_per_epoch
                elapsed = now - t_start
                if recorder.on_batch({"epoch": epoch, "epochs": config.epochs, "batch": step + 1,
                                      "batches": steps_per_epoch, "elapsed_s": elapsed,
                                      "eta_s": elapsed / done * (total - done),
                                      "train_loss": float(loss_sum / max(seen, 1))}):
                    raise Cancelled()
        train_seconds = time.perf_counter() - t0
        train_loss = float(loss_sum / max(seen, 1))
        train_acc = float(correct / max(seen, 1))
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"The training loss became NaN in epoch {epoch}.")

        val_probs = predict_probs(model, x_val, eval_tf, bs * 2, use_amp, "none")
        val_loss = float(F.nll_loss(torch.log(val_probs.clamp_min(1e-8)), y_val))
        val_acc = float((val_probs.argmax(1) == y_val).float().mean())
        rec = _epoch_record(epoch, train_loss, train_acc, val_loss, val_acc, optimizer, t0, seen, grad_sums,
                            grad_n, train_seconds)
        rec["dead_units"] = dead_unit_fractions(model, eval_tf(x_val[:256]), use_amp)
        history.append(rec)
        recorder.on_epoch(rec)

        if scheduler is not None and config.schedule == "plateau":
            scheduler.step(val_loss)
        if val_acc > best_acc:
            best_acc, best_epoch, since_best = val_acc, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        if config.early_stopping and since_best >= config.early_stopping:
            stopped_early = True
            break

    # --- the checkpoint chosen on val; test evaluated once, with the configured TTA
    if best_state is not None:
        model.load_state_dict(best_state)
    result = FitResult(model=model, classes=classes, mean=mean, std=std, epochs=history,
                       best_epoch=best_epoch, stopped_early=stopped_early)
    for split, (xs, ys) in (("val", (x_val, y_val)), ("test", (x_test, y_test))):
        if len(xs) == 0:
            continue
        probs = predict_probs(model, xs, eval_tf, bs * 2, use_amp, config.tta).cpu().numpy()
        ev = evaluation_record(probs, ys.cpu().numpy(), classes, config.tta)
        ev["best_epoch"] = best_epoch
        result.evaluations[split], result.probs[split] = ev, probs
        recorder.on_evaluation(split, ev)
    return result


def make_optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and
                               config.momentum > 0, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: RunConfig, optimizer, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=0.2)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                          patience=config.plateau_patience)
    return None


def compute_loss(config: RunConfig, logits, y, k: int, weights, mix=None):
    def one(target):
        if config.loss == "mse":   # the lesson on why CE wins: squared error of softmax vs one-hot
            err = (logits.softmax(1) - F.one_hot(target, k).float()) ** 2
            if weights is not None:
                err = err * weights[target].unsqueeze(1)
            return err.sum(1).mean()
        return F.cross_entropy(logits, target, weight=weights, label_smoothing=config.label_smoothing)

    if mix is None:
        return one(y)
    lam, y2 = mix
    return lam * one(y) + (1 - lam) * one(y2)


@torch.no_grad()
def predict_probs(model, images_u8: torch.Tensor, eval_tf, batch_size: int, use_amp: bool,
                  tta: str = "none") -> torch.Tensor:
    """Softmax probabilities (averaged over the TTA views) for a stack of uint8 images."""
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = eval_tf(images_u8[i:i + batch_size], None)
        views = tta_views(x, tta)
        p = 0
        for v in views:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
                p = p + model(v).float().softmax(1)
        out.append(p / len(views))
    if not out:
        return torch.zeros(0, 1)
    return torch.cat(out)


ACTIVATIONS = (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.ELU, torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.SiLU)


@torch.no_grad()
def dead_unit_fractions(model, x, use_amp: bool) -> dict[str, float]:
    """Per activation layer: the share of channels that never fire (output <= 0 everywhere) on a val batch,
    or for saturating activations (sigmoid/tanh) that are saturated everywhere."""
    model.eval()
    stats: dict[str, float] = {}
    hooks = []

    def hook(name, kind):
        def fn(_m, _i, out):
            o = out.float()
            o = o.transpose(0, 1).reshape(o.shape[1], -1) if o.dim() > 1 else o.reshape(1, -1)
            if kind in (torch.nn.Sigmoid,):
                dead = ((o < 0.02) | (o > 0.98)).all(1)
            elif kind in (torch.nn.Tanh,):
                dead = (o.abs() > 0.98).all(1)
            else:
                dead = (o <= 0).all(1)
            stats[name] = float(dead.float().mean())
        return fn

    for name, m in model.named_modules():
        if isinstance(m, ACTIVATIONS):
            hooks.append(m.register_forward_hook(hook(name, type(m))))
    try:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return stats


def _epoch_record(epoch, train_loss, train_acc, val_loss, val_acc, optimizer, t0, seen, grad_sums, grad_n,
                  train_seconds=None):
    secs = time.perf_counter() - t0
    train_seconds = train_seconds or secs
    return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
            "val_acc": val_acc, "lr": float(optimizer.param_groups[0]["lr"]), "seconds": secs,
            "images_per_s": seen / train_seconds if train_seconds > 0 else None,
            "grad_norms": {k: v / max(grad_n, 1) for k, v in grad_sums.items()}}
