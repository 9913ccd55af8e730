"""batch_timing: time for one update and for one epoch against batch size (lecture 1.2, V100 slide).

One run per batch size executes on the suite's device: an MLP on a 60,000 x 784 tensor
(Fashion-MNIST when installed, else a random tensor of the same shape: time does not depend on
pixel values), warm-up excluded, the device synchronised, CUDA events on a GPU. Time per epoch =
time per update x updates per epoch (ceil(N / B)), the median over repeats.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .. import data, models, optim, plots, stats
from ..timing import time_updates
from ..train import RunResult

ID = "batch_timing"
SECTION = "1.2 Batch size"
TITLE = "Time per update and per epoch against batch size"


def resolve_dataset(name: str, data_dir) -> str:
    """`auto` is decided when the plan is made: Fashion-MNIST if it is on this machine (then the
    data rule prepares it like any dataset), else a random tensor of the same shape. The choice
    is part of the run's settings, so the two are different runs."""
    if name != "auto":
        return name
    return "fashion_mnist" if data.fashion_mnist_on_disk(data_dir) else "random"


def runs(cfg: dict, ctx) -> list[dict]:
    dataset = resolve_dataset(cfg["dataset"], ctx.data_dir)
    return [{"task": ID, "batch_size": int(bs), "n_examples": int(cfg["n_examples"]), "dataset": dataset,
             "model": cfg["model"], "repeats": int(cfg["repeats"]), "warmup": int(cfg["warmup"]), "seed": 0}
            for bs in cfg["batch_sizes"]]


def _inputs(settings: dict, env) -> tuple[torch.Tensor, torch.Tensor, str]:
    n = settings["n_examples"]
    if settings["dataset"] == "fashion_mnist":
        ds = env.dataset("fashion_mnist")
        reps = math.ceil(n / ds.n_train)
        x = ds.x_train.flatten(1).repeat(reps, 1)[:n]
        y = ds.y_train.repeat(reps)[:n]
        return x, y, "Fashion-MNIST"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 784, generator=g).to(env.device)
    y = torch.randint(0, 10, (n,), generator=g).to(env.device)
    return x, y, "random tensor of MNIST's shape"


def execute(settings: dict, env) -> RunResult:
    torch.manual_seed(settings["seed"])
    x, y, source = _inputs(settings, env)
    model = models.build(settings["model"], (784,), 10).to(env.device)
    opt = optim.make_optimizer(model.parameters(), {"name": "sgd", "lr": 0.01})
    times = time_updates(model, opt, x, y, settings["batch_size"], settings["repeats"], settings["warmup"])
    bs = min(settings["batch_size"], len(x))
    rows = [{"repeat": i, "time_per_update": t, "time_per_epoch": t * math.ceil(len(x) / bs)} for i, t in enumerate(times)]
    return RunResult(rows=rows, summary={"data": source, "n_examples": len(x)})


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    frames = []
    for r in records:
        df = r.metrics.copy()
        df["batch_size"] = r.settings["batch_size"]
        df["device"] = r.meta["device"]
        df["device_name"] = r.meta["device_name"]
        df["data"] = r.summary.get("data")
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    note = f"{table['device_name'].iloc[0]}; data: {table['data'].iloc[0]}; median and 95% interval over repeats, warm-up excluded"
    for col, label in (("time_per_update", "time for one update (s)"), ("time_per_epoch", "time for one epoch (s)")):
        fig, axes = plots.figure(width=5)
        ax = axes[0][0]
        sns.lineplot(table, x="batch_size", y=col, estimator=np.median, errorbar=("pi", 95), marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel=label)
        plots.save(fig, outdir, col, note=note)


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    by = {bs: g for bs, g in table.groupby("batch_size")}
    sizes = sorted(by)
    small, largest = sizes[0], sizes[-1]
    mid = 1000 if 1000 in by else sizes[len(sizes) // 2]
    on_gpu = (table["device"].astype(str).str.startswith("cuda")).all()
    where = f"measured on {table['device_name'].iloc[0]}"
    out = [stats.claim(ID, "parallel_update", f"On parallel hardware, one update at batch {mid} takes under 2x the time of batch {small}",
                       f"time per update ratio B={mid} / B={small}",
                       stats.median_ratio(by[mid]["time_per_update"], by[small]["time_per_update"]), threshold=2.0,
                       direction="<", paper_value="< 2 (V100)", kind="test", applicable=bool(on_gpu),
                       note=where if on_gpu else f"{where}: not applicable, the claim is about GPUs (parallel hardware); "
                                                 "a CPU has few cores, so this measures the CPU, not the claim")]
    # 60x (and 60,000x) more arithmetic per update: these two follow from the chosen batch sizes
    out.append(stats.claim(ID, "update_time_rises", f"Past batch {mid}, time per update rises (batch {largest})",
                           f"time per update ratio B={largest} / B={mid}",
                           stats.median_ratio(by[largest]["time_per_update"], by[mid]["time_per_update"]),
                           threshold=1.0, direction=">", kind="demonstration",
                           note=f"{where}; by construction: {largest // mid}x the arithmetic per update"))
    out.append(stats.claim(ID, "epoch_time_falls", f"One epoch takes less time at batch {largest} than at batch {small}",
                           f"time per epoch ratio B={largest} / B={small}",
                           stats.median_ratio(by[largest]["time_per_epoch"], by[small]["time_per_epoch"]),
                           threshold=1.0, direction="<", kind="demonstration",
                           note=f"{where}; by construction: {largest // small} updates per epoch against 1"))
    return out
