"""fit(): the training loop, top to bottom, as a short loop over train_one_epoch() and evaluate().

Where the speed comes from (measured by `python -m fercore bench`, which runs these side by side):
- The whole dataset lives on the training device as uint8 (FER2013 is ~80 MB); batches are cut by index
  and augmented there with a handful of batched tensor ops (fercore.augment). No DataLoader, no worker
  processes, no per-image PIL: on a GPU this is what leaves the textbook loop several times behind.
- channels_last memory layout: 1.26x for a one-conv-per-block CNN on this project's 2-core AMD machine
  (415 vs 329 images/s), and faster convolutions on GPUs. `fercore bench --preset cpu-starter --fraction 0.25
  --epochs 1` there (the 24-64-128-320 starter network, fp32, no native bf16): lab 187 images/s, plain
  in-memory fp32 loop 168 (1.11x), textbook DataLoader loop 159 (1.18x), textbook with channels_last 172.
- Mixed precision: bf16 autocast on GPUs and on CPUs that compute bf16 natively (AVX-512 BF16 / AMX,
  ~1.8x measured on such a CPU). On a CPU without it bf16 is emulated and ~10x SLOWER (measured 41 vs
  408 images/s here), so the loop detects the instruction set and stays fp32 there.
- No host sync per step: the loss, accuracy, finite-loss flag and gradient norms accumulate in device
  tensors and are read once a second (the progress report) and at the end of the epoch; cudnn.benchmark
  on CUDA. torch.compile is a config option (measured no gain on CPU).
- The step, profiled (issue 25: the lab's loop seemed to keep ~3/4 of a plain bf16 loop). Per-op CPU time on one
  thread, which other processes' load does not distort, on the 2-core AMD EPYC with AVX-512 BF16, starter network,
  batch 128, bf16: lab 227 images/s, plain in-memory loop in channels_last 226, the same in NCHW 172-178; the lab
  without its augmentation 225, without its per-layer gradient norms 224. torch.profiler (`fercore bench
  --profile`): convolutions forward and backward are ~3/4 of a step, batch norm ~9 %, pooling/ReLU/dropout most of
  the rest; the lab's own extras (grid_sample, erasing, norms, accuracy) within the noise (<= 3 %). The old
  comparison was unfair to the lab: it ran first, cold (oneDNN creates its kernels in the first steps), once, and
  the other loops later under whatever load the machine had then; the benchmark now runs the plain loop in the
  lab's precision, both layouts, between the lab's epochs (`plain_same_precision`). On this shared machine the
  epoch rates still swung 3-5x with the other jobs' load, so the 2-thread wall-clock ratio needs an idle machine.
  The one piece of the lab's own machinery that grew with load was the optimiser: torch's default for-loop AdamW
  issues ~10 small parallel ops per parameter, each waiting for both threads; on this machine shared with other
  jobs its best step took 505 ms against 2 ms fused (10.1 vs 3.3 ms on an idle thread), so the optimiser is fused
  on the CPU as on CUDA, and the per-layer gradient norms are one foreach kernel.

The loop knows nothing of SQL or Streamlit: it reports through a Recorder, and hands the recorder its
complete state after every epoch (`on_checkpoint`) so that a run can resume where it stopped, with the
same result as if it had never stopped (deterministic on a CPU).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fercore.augment import make_batch_transform, tta_views
from fercore.config import RunConfig
from fercore.data.dataset import FERDataset, prepare_for_run
from fercore.errors import DataError, TrainingDiverged
from fercore.metrics import evaluation_record
from fercore.models import build_model, gradient_layers, model_info

REPORT_EVERY_S = 1.0   # progress (and the only host syncs of a step) at most this often
# The precision of every recorded evaluation (a run's final val and test, and `evaluate`), whatever the device
# trained in: bf16 autocast flips a few close calls, so a run's stored confusion could not be reproduced.
EVAL_PRECISION = "fp32"


class Cancelled(Exception):
    """The run's owner asked to stop it."""


class Recorder:
    """What the loop reports. Subclass and override; the defaults do nothing."""

    def on_start(self, info: dict) -> None: ...

    def on_batch(self, progress: dict) -> bool:
        """Called about once a second; return True to cancel the run."""
        return False

    def on_epoch(self, record: dict) -> None: ...

    def on_checkpoint(self, state: dict) -> None:
        """The loop's whole state after an epoch (see `fit(resume=...)`); save it to resume later. Its tensors are
        the live ones (no copy per epoch): save them now, before the next batch changes them."""

    def on_evaluation(self, split: str, evaluation: dict) -> None: ...

    def on_final_evaluation(self, images: int, tta: str) -> None:
        """Training is over; the chosen checkpoint is now scored on val and test (`images` in all, with `tta`)."""

    def out_of_time(self) -> bool:
        """Asked after each epoch: True ends training there, as early stopping does (the best epoch is kept)."""
        return False


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


# --- devices and precision -----------------------------------------------------------------------------
def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); emulated bf16 is far slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def uses_amp(config: RunConfig, device: torch.device) -> bool:
    if not config.amp:
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def device_name(device: torch.device, amp: bool | None = None) -> str:
    """e.g. `cuda:0 (NVIDIA H100)`, `cpu (fp32, 2 threads)`: what trained, and how."""
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        precision = "bf16" if (cpu_has_bf16() if amp is None else amp) else "fp32"
        n = torch.get_num_threads()
        return f"cpu ({precision}, {n} thread{'' if n == 1 else 's'})"
    return str(device)


# --- the loop -----------------------------------------------------------------------------------------
@dataclass
class Batches:
    """A split on the device as uint8, ready to be cut into batches."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def fit(config: RunConfig, dataset: FERDataset, recorder: Recorder | None = None,
        device: str | torch.device | None = None, resume: dict | None = None,
        bf16: bool | None = None) -> FitResult:
    """Train `config` on `dataset`; `resume` is a state that `on_checkpoint` handed out, to continue after it.
    `bf16` forces bf16 autocast on or off (the benchmark's precision parity, also where bf16 is only emulated);
    None lets `uses_amp` decide."""
    recorder = recorder or Recorder()
    device = device if isinstance(device, torch.device) else pick_device(device)
    torch.manual_seed(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed input sizes: let cuDNN pick its fastest kernels once

    # --- data: class subset, split, fraction; then onto the device as uint8
    ds = prepare_for_run(dataset, config)
    classes = list(ds.classes)
    train, val, test = (Batches(*(torch.from_numpy(a).to(device) for a in ds.arrays(s)))
                        for s in ("train", "val", "test"))
    if len(val) == 0:
        raise DataError("The dataset has no validation images, so no checkpoint can be chosen; use the split "
                        "val_from_train (a val carved out of train, the source's test kept).")
    mean, std = _pixel_stats(train.x)
    train_tf = make_batch_transform(config, mean, std, train=True)
    eval_tf = make_batch_transform(config, mean, std, train=False)

    # --- model, loss weights, optimiser, schedule
    model = build_model(config, len(classes)).to(device).to(memory_format=torch.channels_last)
    net = torch.compile(model) if config.compile else model   # `model` keeps the plain state-dict keys
    counts = torch.bincount(train.y, minlength=len(classes)).float()
    weights = (counts.sum() / (len(classes) * counts.clamp(min=1))) if config.class_weights else None
    batch_size = min(config.batch_size, len(train))
    steps = max(1, len(train) // batch_size)   # drop the ragged last batch (BatchNorm dislikes size 1)
    optimizer = make_optimizer(config, [p for p in model.parameters() if p.requires_grad], device)
    scheduler = make_scheduler(config, optimizer, steps)
    amp = uses_amp(config, device) if bf16 is None else bf16
    loop = _Loop(config, net, optimizer, scheduler, train_tf, weights, amp, gen, recorder, steps, batch_size,
                 gradient_layers(model))

    recorder.on_start({"classes": classes, "device": device_name(device, amp), "n_train": len(train),
                       "n_val": len(val), "n_test": len(test), "steps_per_epoch": steps,
                       "fingerprint": dataset.fingerprint(), **model_info(model)})
    progress = _Progress()
    if resume:
        progress = _restore(resume, model, optimizer, scheduler)
    loop.t_start = time.perf_counter() - progress.elapsed

    # a run restored after its early stop trains no further epoch
    last_epoch = progress.epoch if progress.stopped_early else config.epochs
    for epoch in range(progress.epoch + 1, last_epoch + 1):
        seed_epoch(config.seed, epoch, gen)
        record = train_one_epoch(loop, train, epoch)
        val_probs = predict_probs(net, val.x, eval_tf, batch_size * 2, amp, "none")
        record.update(val_metrics(config, val_probs, val.y, weights))
        record["dead_units"] = dead_unit_fractions(net, eval_tf(val.x[:256]), amp)
        recorder.on_epoch(record)
        progress.add(record, model)
        if scheduler is not None and config.schedule == "plateau":
            scheduler.step(record["val_loss"])
        progress.elapsed = time.perf_counter() - loop.t_start
        # decided before the snapshot, so that the snapshot knows: a crash after an early stop (or the end of the
        # run's time budget) must not train on
        progress.stopped_early = ((bool(config.early_stopping) and progress.since_best >= config.early_stopping)
                                  or recorder.out_of_time())
        recorder.on_checkpoint(_snapshot(progress, model, optimizer, scheduler, config.seed))
        if progress.stopped_early:
            break

    # --- the checkpoint chosen on val; test evaluated once, with the configured TTA
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    result = FitResult(model=model, classes=classes, mean=mean, std=std, epochs=progress.history,
                       best_epoch=progress.best_epoch, stopped_early=progress.stopped_early)
    recorder.on_final_evaluation(len(val) + len(test), config.tta)
    for split, part in (("val", val), ("test", test)):
        if len(part):   # the plain model in fp32, as `evaluate` scores it later (EVAL_PRECISION)
            result.probs[split], result.evaluations[split] = evaluate(model, part, eval_tf, batch_size * 2,
                                                                      config.tta, classes)
            result.evaluations[split]["best_epoch"] = progress.best_epoch
            recorder.on_evaluation(split, result.evaluations[split])
    return result


@dataclass
class _Loop:
    """What one epoch of training needs, set up once by fit()."""
    config: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    transform: object
    weights: torch.Tensor | None
    amp: bool
    gen: torch.Generator
    recorder: Recorder
    steps: int
    batch_size: int
    grad_layers: list
    t_start: float = 0.0
    last_report: float = 0.0


def train_one_epoch(loop: _Loop, train: Batches, epoch: int) -> dict:
    """One pass over the training images; returns the epoch's record (train loss/accuracy, lr, timings,
    per-layer gradient norms). Nothing is read back from the device until a report is due."""
    config, model, device = loop.config, loop.model, train.x.device
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(len(train), device=device, generator=loop.gen)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    grad_sums = torch.zeros(len(loop.grad_layers), device=device)   # per layer, in loop.grad_layers' order
    grad_every, grad_n, seen = max(1, loop.steps // 20), 0, 0
    for step in range(loop.steps):
        idx = perm[step * loop.batch_size:(step + 1) * loop.batch_size]
        xb, yb = loop.transform(train.x[idx], loop.gen).contiguous(memory_format=torch.channels_last), train.y[idx]
        mix = None
        if config.mixup > 0:   # lambda from the CPU generator: no device sync
            lam = float(torch.distributions.Beta(config.mixup, config.mixup).sample())
            other = torch.randperm(len(xb), device=device, generator=loop.gen)
            xb, mix = lam * xb + (1 - lam) * xb[other], (lam, yb[other])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=loop.amp):
            logits = model(xb)
        loss = compute_loss(config, logits.float(), yb, logits.shape[1], loop.weights, mix)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step % grad_every == 0:
            grad_sums += layer_grad_norms(loop.grad_layers, device)
            grad_n += 1
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        loop.optimizer.step()
        if loop.scheduler is not None and config.schedule in ("onecycle", "cosine"):
            loop.scheduler.step()
        finite &= torch.isfinite(loss.detach())
        loss_sum += loss.detach() * len(yb)
        correct += _hits(logits.detach(), yb, mix)
        seen += len(yb)
        now = time.perf_counter()
        if now - loop.last_report > REPORT_EVERY_S or step == loop.steps - 1:
            loop.last_report = now
            if not bool(finite):
                diverged(loop, epoch, step, t0, seen, _by_layer(loop, grad_sums))
            done = (epoch - 1) * loop.steps + step + 1
            elapsed = now - loop.t_start
            if loop.recorder.on_batch({"epoch": epoch, "epochs": config.epochs, "batch": step + 1,
                                       "batches": loop.steps, "elapsed_s": elapsed,
                                       "eta_s": elapsed / done * (config.epochs * loop.steps - done),
                                       "train_loss": float(loss_sum / max(seen, 1))}):
                raise Cancelled()
    train_seconds = time.perf_counter() - t0
    return {"epoch": epoch, "train_loss": float(loss_sum / max(seen, 1)), "train_acc": float(correct / max(seen, 1)),
            "lr": float(loop.optimizer.param_groups[0]["lr"]), "seconds": train_seconds,
            "images_per_s": seen / train_seconds if train_seconds > 0 else None,
            "grad_norms": _by_layer(loop, grad_sums / max(grad_n, 1))}


def layer_grad_norms(grad_layers: list, device: torch.device) -> torch.Tensor:
    """The L2 norm of each layer's weight gradient (0 where a frozen layer has none), in one foreach kernel."""
    have = [i for i, (_, m) in enumerate(grad_layers) if m.weight.grad is not None]
    norms = torch.zeros(len(grad_layers), device=device)
    if have:
        grads = [grad_layers[i][1].weight.grad.detach() for i in have]
        norms[have] = torch.stack(torch._foreach_norm(grads)).float()
    return norms


def _by_layer(loop: _Loop, values: torch.Tensor) -> dict[str, float]:
    return dict(zip((name for name, _ in loop.grad_layers), values.tolist()))


def evaluate(model, part: Batches, eval_tf, batch_size: int, tta: str,
             classes: list[str]) -> tuple[np.ndarray, dict]:
    """Probabilities (with the run's TTA) and the evaluation record of one split, in EVAL_PRECISION."""
    probs = predict_probs(model, part.x, eval_tf, batch_size, False, tta).cpu().numpy()
    return probs, {**evaluation_record(probs, part.y.cpu().numpy(), classes, tta), "precision": EVAL_PRECISION}


def val_metrics(config: RunConfig, probs: torch.Tensor, y: torch.Tensor, weights) -> dict:
    """Val loss with the same criterion as the train loss (label smoothing, class weights; the log of the
    probabilities stands in for the logits, which softmax maps to the same values), and val accuracy."""
    log_probs = torch.log(probs.clamp_min(1e-8))
    loss = compute_loss(config, log_probs, y, probs.shape[1], weights)
    return {"val_loss": float(loss), "val_acc": float((probs.argmax(1) == y).float().mean())}


def _hits(logits: torch.Tensor, y: torch.Tensor, mix) -> torch.Tensor:
    """Correct answers of a batch; under mixup each image counts lambda for its first label and 1 - lambda for
    its second, as the loss does."""
    pred = logits.argmax(1)
    if mix is None:
        return (pred == y).sum()
    lam, y2 = mix
    return lam * (pred == y).sum() + (1 - lam) * (pred == y2).sum()


def diverged(loop: _Loop, epoch: int, step: int, t0: float, seen: int, grad_sums: dict) -> None:
    """Record the epoch where the loss stopped being a number (its curves end there), then stop the run."""
    seconds = time.perf_counter() - t0
    loop.recorder.on_epoch({"epoch": epoch, "train_loss": float("nan"), "train_acc": None, "val_loss": None,
                            "val_acc": None, "lr": float(loop.optimizer.param_groups[0]["lr"]), "seconds": seconds,
                            "images_per_s": seen / seconds if seconds > 0 else None,
                            "grad_norms": {k: float(v) for k, v in grad_sums.items()}})
    raise TrainingDiverged(
        f"The training loss became NaN or infinite in epoch {epoch} (by batch {step + 1}); the learning rate "
        f"({loop.config.lr:g}) is probably too high for this optimiser, or the gradients exploded.")


def _pixel_stats(x_u8: torch.Tensor) -> tuple[float, float]:
    xf = x_u8.float()
    return float(xf.mean() / 255.0), float(xf.std() / 255.0) or 1.0


# --- best-so-far bookkeeping and the resumable state ------------------------------------------------------
@dataclass
class _Progress:
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    since_best: int = 0
    stopped_early: bool = False
    elapsed: float = 0.0

    def add(self, record: dict, model: torch.nn.Module) -> None:
        self.epoch = record["epoch"]
        self.history.append(record)
        if record["val_acc"] > self.best_acc:
            self.best_acc, self.best_epoch, self.since_best = record["val_acc"], record["epoch"], 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.since_best += 1


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random draws (shuffle, augmentation, dropout, mixup), from the run's seed."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_epoch(seed: int, epoch: int, gen: torch.Generator) -> None:
    """Reseed every generator the loop draws from at the start of an epoch. A snapshot then needs no generator
    state at all (just the epoch), so it carries nothing device-specific: the state of a CUDA generator (16
    bytes) cannot be restored into a CPU one (5,056 bytes) or back, and a run must resume on whatever device
    the next worker has. On one device, a resumed run draws exactly what the uninterrupted run drew."""
    s = epoch_seed(seed, epoch)
    torch.manual_seed(s)   # the global generators: dropout, mixup's lambda (and every CUDA device's)
    gen.manual_seed(s)     # the loop's own: shuffling, augmentation, mixup's pairing


def _snapshot(progress: _Progress, model, optimizer, scheduler, seed: int) -> dict:
    """Everything needed to continue after this epoch as if training had never stopped. Random state is two
    integers (see `seed_epoch`), and whether early stopping has ended the run."""
    return {"epoch": progress.epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "rng": {"seed": int(seed), "reseeded_each_epoch": True},
            "best": {"acc": progress.best_acc, "epoch": progress.best_epoch, "since": progress.since_best,
                     "state": progress.best_state or {}},
            "stopped_early": progress.stopped_early, "elapsed": progress.elapsed}


def _restore(state: dict, model, optimizer, scheduler) -> _Progress:
    """The progress a snapshot describes. Its random state needs no restoring: each epoch reseeds from (seed,
    epoch); snapshots written before that (with device-specific generator states) are read too, their generator
    states ignored."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"]:
        scheduler.load_state_dict(state["scheduler"])
    best = state["best"]
    return _Progress(epoch=int(state["epoch"]), best_acc=float(best["acc"]), best_epoch=int(best["epoch"]),
                     best_state=best["state"] or None, since_best=int(best["since"]),
                     stopped_early=bool(state.get("stopped_early", False)), elapsed=float(state.get("elapsed", 0.0)))


# --- optimiser, schedule, loss ----------------------------------------------------------------------------
FUSED_DEVICES = ("cuda", "cpu")   # where torch has fused SGD/Adam/AdamW kernels


def make_optimizer(config: RunConfig, params, device: torch.device | None = None) -> torch.optim.Optimizer:
    """The run's optimiser; fused (one vectorised pass per parameter, no per-op dispatch) where torch has it, which is
    CUDA and, since torch 2.4, the CPU: the starter's AdamW step takes 3.3 ms fused, 10.1 ms as torch's default
    for-loop (one thread of this project's EPYC)."""
    fused = {"fused": True} if device is not None and device.type in FUSED_DEVICES else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and
                               config.momentum > 0, weight_decay=config.weight_decay, **fused)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, **fused)


def make_scheduler(config: RunConfig, optimizer, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=0.2,
                                                   cycle_momentum=config.cycle_momentum)
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


# --- inference on uint8 stacks ------------------------------------------------------------------------------
@torch.no_grad()
def predict_probs(model, images_u8: torch.Tensor, eval_tf, batch_size: int, use_amp: bool,
                  tta: str = "none") -> torch.Tensor:
    """Softmax probabilities (averaged over the TTA views) for a stack of uint8 images. When all the views of a
    chunk fit in one batch (a few faces of a photo), they go through the network together: ten-crop TTA of one
    face in one pass, 1.5x faster than ten passes on a CPU."""
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = eval_tf(images_u8[i:i + batch_size], None)
        views = tta_views(x, tta)
        groups = [torch.cat(views)] if len(views) * len(x) <= batch_size else views
        p = 0
        for v in groups:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
                probs = model(v.contiguous(memory_format=torch.channels_last)).float().softmax(1)
            p = p + probs.view(-1, len(x), probs.shape[1]).sum(0)
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
    stats: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(name, kind):
        def fn(_m, _i, out):
            o = out.float()
            o = o.transpose(0, 1).reshape(o.shape[1], -1) if o.dim() > 1 else o.reshape(1, -1)
            if kind is torch.nn.Sigmoid:
                dead = ((o < 0.02) | (o > 0.98)).all(1)
            elif kind is torch.nn.Tanh:
                dead = (o.abs() > 0.98).all(1)
            else:
                dead = (o <= 0).all(1)
            stats[name] = dead.float().mean()
        return fn

    for name, m in model.named_modules():
        if isinstance(m, ACTIVATIONS):
            hooks.append(m.register_forward_hook(hook(name, type(m))))
    try:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
            model(x.contiguous(memory_format=torch.channels_last))
    finally:
        for h in hooks:
            h.remove()
    return {k: float(v) for k, v in stats.items()}

