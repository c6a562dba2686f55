"""`fercore bench`: where the training speed comes from, four loops side by side on one device.

Same device, model, batch size and optimiser (Adam) in every loop; images/s of training steps:
- textbook: PIL images, per-image RandomHorizontalFlip + RandomRotation(10) + ToTensor + Normalize in
  DataLoader workers, fp32, the default (NCHW) memory layout: the loop of the PyTorch tutorials;
- textbook_amp_cl: the same with bf16 autocast (where the device computes bf16 natively) and channels_last,
  so that what mixed precision and the layout give is not credited to the data path;
- plain: the images as one in-memory tensor, batches cut by index, flip only, fp32, NCHW: the fastest
  loop a careful student writes by hand (the CPU baseline);
- lab: fercore.train.fit with the preset's full augmentation (on-device, batched), channels_last and the
  precision fercore picks (bf16 where native, else fp32; `precision` forces one);
- plain_same_precision (the reference row): the plain loop in the lab's precision, in both memory layouts (NCHW
  and channels_last), the faster one counting. Its epochs run between the lab's epochs (one before the first,
  one after each), so that other processes on the machine slow both alike; `lab_vs_plain_same_precision` pairs
  each lab epoch with the reference's epochs around it (issue 25: >= 0.95).
Also times the import of a full-size FER2013 challenge CSV (35,887 rows) written from the data.

`precision_parity` (`fercore bench --parity`) trains the preset's own recipe twice on the same images and
seed, in fp32 and under bf16 autocast, and reports both val accuracies: whether bf16 costs accuracy. Where the
CPU has no native bf16 it is emulated (slow, but the same arithmetic), and the report says so.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fercore.config import RunConfig
from fercore.data.dataset import FERDataset
from fercore.presets import device_preset, preset_config
from fercore.train import Recorder, cpu_has_bf16, device_name, fit, pick_device, uses_amp

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def bench_dataset(data: str | None, quick: bool) -> FERDataset:
    if data:
        from fercore.data.sources import load_source
        return load_source(data)
    if (SHARED / "fer2013-trainval-u8.xz").exists() and not quick:
        from fercore.data.sources import load_trainval_block
        return load_trainval_block(SHARED)
    from fercore.data.synthetic import make_synthetic
    return make_synthetic(n=700 if quick else 7000, seed=0)


def _model(config: RunConfig, k: int, device: torch.device, channels_last: bool):
    from fercore.models import build_model
    torch.manual_seed(0)
    model = build_model(config, k).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _timed_epochs(step, batches, epochs: int, device: torch.device) -> float:
    """Best images/s over the epochs (the first pays for worker start-up and kernel selection)."""
    rates = []
    for _ in range(epochs):
        t0, seen = time.perf_counter(), 0
        for xb, yb in batches():
            step(xb, yb)
            seen += len(yb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - t0))
    return max(rates)


def _train_step(model, amp: bool, channels_last: bool, device: torch.device):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(xb, yb):
        model.train()
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(xb)
        loss = loss_fn(out.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def textbook_images_per_s(config: RunConfig, x: np.ndarray, y: np.ndarray, k: int, device: torch.device,
                          epochs: int, workers: int, amp: bool = False, channels_last: bool = False) -> float:
    """The classic loop: a Dataset of PIL images, per-image transforms, a DataLoader with workers."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    mean, std = float(x.mean() / 255), float(x.std() / 255)
    tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.RandomRotation(10),
                             transforms.ToTensor(), transforms.Normalize([mean], [std])])

    class Faces(Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return tf(Image.fromarray(x[i])), int(y[i])

    loader = DataLoader(Faces(), batch_size=config.batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    step = _train_step(_model(config, k, device, channels_last), amp, channels_last, device)

    def batches():
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
    return _timed_epochs(step, batches, epochs, device)


def plain_loop(config: RunConfig, x: np.ndarray, y: np.ndarray, k: int, device: torch.device, amp: bool = False,
               channels_last: bool = False):
    """In-memory tensors, batches by index, a flip, Adam: the careful hand-written loop. Returns a function that
    trains one epoch and returns its images/s."""
    xs = torch.from_numpy(x).to(device).unsqueeze(1).float().div_(255)
    xs = (xs - xs.mean()) / xs.std()
    ys = torch.from_numpy(y).to(device)
    step = _train_step(_model(config, k, device, channels_last), amp, channels_last, device)
    bs = config.batch_size

    def batches():
        perm = torch.randperm(len(ys), device=device)
        for i in range(len(ys) // bs):
            idx = perm[i * bs:(i + 1) * bs]
            xb = xs[idx]
            flip = torch.rand(len(idx), device=device) < 0.5
            yield torch.where(flip[:, None, None, None], xb.flip(-1), xb), ys[idx]
    return lambda: _timed_epochs(step, batches, 1, device)


def plain_images_per_s(config: RunConfig, x: np.ndarray, y: np.ndarray, k: int, device: torch.device,
                       epochs: int) -> float:
    """The plain loop in fp32 and NCHW (the CPU baseline): best images/s over `epochs`."""
    epoch = plain_loop(config, x, y, k, device)
    return max(epoch() for _ in range(epochs))


class PlainBetweenLabEpochs(Recorder):
    """The reference: the plain loop in the lab's precision, in both layouts, one epoch each before the lab's first
    epoch and after each of its epochs (fit's recorder hooks), so that the machine's other load hits both."""

    def __init__(self, config: RunConfig, x: np.ndarray, y: np.ndarray, k: int, device: torch.device, amp: bool):
        self.loops = {layout: plain_loop(config, x, y, k, device, amp, layout == "channels_last")
                      for layout in ("nchw", "channels_last")}
        self.rates: dict[str, list[float]] = {layout: [] for layout in self.loops}
        self.load: list[float] = []

    def _epoch(self) -> None:
        self.load.append(os.getloadavg()[0])
        for layout, epoch in self.loops.items():
            self.rates[layout].append(epoch())

    def on_start(self, info: dict) -> None:
        self._epoch()

    def on_epoch(self, record: dict) -> None:
        self._epoch()

    def best(self) -> tuple[str, float]:
        layout = max(self.rates, key=lambda k: max(self.rates[k]))
        return layout, max(self.rates[layout])

    def paired_ratio(self, lab_rates: list[float]) -> float:
        """The lab against the plain loop under the same load: each lab epoch over the mean of the reference's
        epochs just before and just after it (faster layout), the median over the lab's epochs. Best against best
        would credit the reference with whichever moment the machine was quietest."""
        ref = self.rates[self.best()[0]]
        return float(np.median([lab / ((ref[i] + ref[i + 1]) / 2) for i, lab in enumerate(lab_rates)]))


def csv_import_seconds(ds: FERDataset) -> dict:
    """Write a full-size challenge CSV (train + val + val again as PrivateTest) and time its import."""
    from fercore.data.sources import load_source, write_challenge_csv
    x_tr, y_tr = ds.arrays("train")
    x_va, y_va = ds.arrays("val")
    images = np.concatenate([x_tr, x_va, x_va])
    labels = np.concatenate([y_tr, y_va, y_va])
    usage = ["Training"] * len(x_tr) + ["PublicTest"] * len(x_va) + ["PrivateTest"] * len(x_va)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fer2013.csv"
        write_challenge_csv(images, labels, usage, path)
        size = path.stat().st_size
        t0 = time.perf_counter()
        loaded = load_source(str(path), cache_dir=Path(tmp) / "cache")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_source(str(path), cache_dir=Path(tmp) / "cache")
        second = time.perf_counter() - t0
    return {"csv_rows": len(loaded), "csv_mb": round(size / 1e6, 1), "csv_import_s": round(first, 2),
            "csv_cached_load_s": round(second, 3)}


def bench_config(preset: str | None, device: torch.device, batch_size: int, epochs: int, fraction: float,
                 quick: bool) -> RunConfig:
    """The preset's network and augmentation (default: the CPU starter on a CPU, the lab's recipe on a GPU)."""
    name = preset or device_preset(device.type != "cpu")
    changes = dict(batch_size=batch_size, epochs=epochs, data_fraction=fraction, tta="none", optimizer="adam",
                   lr=1e-3, schedule="constant")
    if quick:
        changes.update(conv_blocks=4, filters=(8, 16, 32, 64), convs_per_block=1, fc_units=(32,))
    return preset_config(name, **changes)


def run_benchmark(epochs: int = 2, batch_size: int = 128, data: str | None = None, device: str | None = None,
                  csv: bool = True, quick: bool = False, preset: str | None = None, fraction: float = 1.0,
                  precision: str = "auto") -> dict:
    """`precision`: the lab's ("auto": what fit picks here, bf16 where native; "fp32"; "bf16")."""
    dev = pick_device(device)
    ds = bench_dataset(data, quick)
    config = bench_config(preset, dev, batch_size, epochs, fraction, quick)
    from fercore.data.dataset import prepare_for_run
    x, y = prepare_for_run(ds, config).arrays("train")   # the same training images in every loop
    k = len(ds.classes)
    lab_amp = uses_amp(config, dev) if precision == "auto" else precision == "bf16"
    reference = PlainBetweenLabEpochs(config, x, y, k, dev, lab_amp)
    result = fit(config, ds, recorder=reference, device=dev, bf16=lab_amp)
    ref_layout, ref_rate = reference.best()
    amp_ok = dev.type == "cuda" or cpu_has_bf16()
    workers = 0 if quick else (4 if dev.type == "cuda" else 1)
    rates = {
        "lab": max(e["images_per_s"] for e in result.epochs),
        "plain_same_precision": ref_rate,
        "plain": plain_images_per_s(config, x, y, k, dev, epochs),
        "textbook": textbook_images_per_s(config, x, y, k, dev, epochs, workers),
        "textbook_amp_cl": textbook_images_per_s(config, x, y, k, dev, epochs, workers, amp=amp_ok,
                                                 channels_last=True),
    }
    out = {"device": device_name(dev, lab_amp), "dataset": ds.name, "train_images": int(len(y)),
           "preset": config.preset,
           "model": f"{config.arch} {config.conv_blocks} blocks x {config.convs_per_block} convs "
                    f"{'-'.join(map(str, config.filters))}", "batch_size": batch_size, "epochs": epochs,
           "bf16": amp_ok, **{f"{k}_images_per_s": round(v, 1) for k, v in rates.items()},
           "lab_precision": "bf16" if lab_amp else "fp32", "plain_same_precision_layout": ref_layout,
           "lab_vs_plain_same_precision": round(reference.paired_ratio([e["images_per_s"] for e in result.epochs]), 3),
           "lab_best_vs_plain_best_same_precision": round(rates["lab"] / rates["plain_same_precision"], 3),
           "epoch_rates": {"lab": [round(e["images_per_s"], 1) for e in result.epochs],
                           **{f"plain_{k}": [round(r, 1) for r in v] for k, v in reference.rates.items()}},
           "load_1min": [round(v, 2) for v in reference.load], "cpu_flags": cpu_flags(),
           "lab_vs_plain": round(rates["lab"] / rates["plain"], 2),
           "lab_vs_textbook": round(rates["lab"] / rates["textbook"], 2),
           "amp_cl_vs_textbook": round(rates["textbook_amp_cl"] / rates["textbook"], 2),
           "lab_val_acc": round(result.epochs[-1]["val_acc"], 4)}
    if csv:
        out.update(csv_import_seconds(ds))
    return out


class _ProfileTrainingSteps(Recorder):
    """torch.profiler over the lab's training steps of one epoch: on from fit's start to the epoch's last batch."""

    def __init__(self, profiler):
        self.profiler = profiler

    def on_start(self, info: dict) -> None:
        self.profiler.start()

    def on_batch(self, progress: dict) -> bool:
        if progress["batch"] == progress["batches"]:
            self.profiler.stop()
        return False


def profile_loops(preset: str | None = None, data: str | None = None, device: str | None = None,
                  fraction: float = 0.05, quick: bool = False, precision: str = "auto", rows: int = 12) -> dict:
    """Where a training step's time goes: torch.profiler over one epoch of the lab's loop and of the plain loop in the
    same precision and layout (channels_last), as the ops with the most self CPU time, and the ops where the lab
    spends more than the plain loop (what its extra work costs: augmentation, statistics, the optimiser)."""
    from torch.profiler import ProfilerActivity, profile
    dev = pick_device(device)
    ds = bench_dataset(data, quick)
    config = bench_config(preset, dev, 128, 1, 1.0 if quick else fraction, quick)
    from fercore.data.dataset import prepare_for_run
    x, y = prepare_for_run(ds, config).arrays("train")
    amp = uses_amp(config, dev) if precision == "auto" else precision == "bf16"
    plain = plain_loop(config, x, y, len(ds.classes), dev, amp, channels_last=True)
    plain()   # warm: the kernels both loops share
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    totals = {}
    lab_prof = profile(activities=activities)
    fit(config, ds, recorder=_ProfileTrainingSteps(lab_prof), device=dev, bf16=amp)
    with profile(activities=activities) as plain_prof:
        plain()
    for name, prof in (("lab", lab_prof), ("plain", plain_prof)):
        totals[name] = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
    extra = {k: v - totals["plain"].get(k, 0.0) for k, v in totals["lab"].items()}
    top = sorted(extra, key=extra.get, reverse=True)[:rows]
    return {"device": device_name(dev, amp), "train_images": int(len(y)),
            "self_cpu_ms": {name: round(sum(t.values())) for name, t in totals.items()},
            "lab_top_ops_ms": {k: round(v, 1) for k, v in sorted(totals["lab"].items(), key=lambda kv: -kv[1])[:rows]},
            "plain_top_ops_ms": {k: round(v, 1) for k, v in
                                 sorted(totals["plain"].items(), key=lambda kv: -kv[1])[:rows]},
            "lab_minus_plain_ms": {k: round(extra[k], 1) for k in top}}


def cpu_flags() -> str:
    """The instruction sets that decide the CPU's precision (AVX2, AVX-512, its BF16, AMX), from /proc/cpuinfo."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


class _Device(Recorder):
    def on_start(self, info: dict) -> None:
        self.device = info["device"]


def precision_parity(epochs: int = 3, data: str | None = None, device: str | None = None,
                     preset: str | None = None, fraction: float = 0.1, quick: bool = False) -> dict:
    """The preset's recipe (its optimiser, schedule and augmentation; no TTA) for `epochs` on `fraction` of
    the training images, once in fp32 and once in bf16: val accuracy, loss and speed of each."""
    dev = pick_device(device)
    ds = bench_dataset(data, quick)
    name = preset or device_preset(dev.type != "cpu")
    changes = dict(epochs=epochs, data_fraction=fraction, tta="none")
    if quick:
        changes.update(conv_blocks=2, filters=(8, 16), convs_per_block=1, fc_units=(16,), batch_size=32)
    config = preset_config(name, **changes)
    out = {"dataset": ds.name, "preset": name, "epochs": epochs, "data_fraction": fraction,
           "bf16_native": dev.type == "cuda" or cpu_has_bf16()}
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        t0, seen = time.perf_counter(), _Device()
        result = fit(config, ds, recorder=seen, device=dev, bf16=bf16)
        out[precision] = {"device": seen.device, "val_acc": round(float(result.evaluations["val"]["accuracy"]), 4),
                          "last_val_loss": round(float(result.epochs[-1]["val_loss"]), 4),
                          "images_per_s": round(max(e["images_per_s"] for e in result.epochs), 1),
                          "seconds": round(time.perf_counter() - t0, 1)}
    out["bf16_minus_fp32_points"] = round(100 * (out["bf16"]["val_acc"] - out["fp32"]["val_acc"]), 2)
    return out
