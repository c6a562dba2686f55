"""`fercore bench`: the lab's training loop against a textbook torchvision DataLoader loop.

Same device, same model, same batch size, same optimiser. The textbook loop keeps the images as
PIL images and applies RandomHorizontalFlip, RandomRotation(10), ToTensor and Normalize per image
in 4 DataLoader workers; the lab's loop (fercore.train.fit) keeps the uint8 dataset on the device,
augments whole batches there and uses bf16 autocast on a GPU. Also times the import of a full-size
FER2013 challenge CSV (35,887 rows) written from the shared data.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fercore.config import RunConfig
from fercore.data.dataset import FERDataset
from fercore.train import device_name, fit, pick_device

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


def textbook_images_per_s(config: RunConfig, ds: FERDataset, device: torch.device, epochs: int,
                          workers: int = 4) -> float:
    """The classic loop: a Dataset of PIL images, per-image transforms, a DataLoader with workers."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from fercore.models import build_model

    x, y = ds.arrays("train")
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
    torch.manual_seed(0)
    model = build_model(config, len(ds.classes)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        model.train()
        t0, seen = time.perf_counter(), 0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(yb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - t0))
    return max(rates)   # best epoch: the first one pays for worker start-up


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


def run_benchmark(epochs: int = 2, batch_size: int = 128, data: str | None = None, device: str | None = None,
                  csv: bool = True, quick: bool = False) -> dict:
    dev = pick_device(device)
    ds = bench_dataset(data, quick)
    # the 4-block custom CNN; flip + rotation(10) in both loops
    config = RunConfig(arch="custom", conv_blocks=4, filters=(16, 32, 64, 128) if quick else (64, 128, 256, 512),
                       convs_per_block=1 if quick else 2, fc_units=(256,), batch_size=batch_size, epochs=epochs,
                       hflip=0.5, rotation=10.0, optimizer="adam", lr=1e-3, tta="none")
    result = fit(config, ds, device=dev)
    lab = max(e["images_per_s"] for e in result.epochs)
    textbook = textbook_images_per_s(config, ds, dev, epochs, workers=0 if quick else 4)
    out = {"device": device_name(dev), "dataset": ds.name, "train_images": int(ds.split_counts()["train"]),
           "model": "custom 4-block CNN " + ("(quick)" if quick else "64-128-256-512 x2 convs"),
           "batch_size": batch_size, "epochs": epochs, "lab_images_per_s": round(lab, 1),
           "textbook_images_per_s": round(textbook, 1), "speedup": round(lab / textbook, 2),
           "lab_val_acc": round(result.epochs[-1]["val_acc"], 4)}
    if csv:
        out.update(csv_import_seconds(ds))
    return out
