"""batch_timing: time for one update and for one epoch against batch size (lecture 1.2, V100 slide).

One run per batch size executes on the suite's device: an MLP on a 60,000 x 784 tensor
(Fashion-MNIST when installed, else a random tensor of the same shape: time does not depend on
pixel values), warm-up excluded, the device synchronised before a clock is read, CUDA events on a
GPU (timing.py). Time per update: blocks of back-to-back updates (timing.block_size), one sync
per block, so that launch overhead overlaps as in real training. Time per epoch: real epochs,
timed whole, at `epoch_batch_sizes`; beside them (labelled) the extrapolation time per update x
updates per epoch, which is what one can say at batch sizes whose epoch is too long to time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.measure import timing
from trainfail.training import data, models, optim
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings
from trainfail.core.run_record import RunRecord, RunResult

ID = "batch_timing"
SECTION = contract.BATCH_SIZE
ORDER = 2
TITLE = "Time per update and per epoch against batch size"


# The primary: a larger batch costs little more time per update on parallel hardware (the lecture's
# mechanism for "a large batch is not slower per update"); measured on a GPU only (not applicable on a CPU).
PRIMARY = "parallel_update"

def resolve_dataset(name: str, data_dir) -> str:
    """`auto` is decided when the plan is made: Fashion-MNIST if it is on this machine (then the
    data rule prepares it like any dataset), else a random tensor of the same shape. The choice
    is part of the run's settings, so the two are different runs."""
    if name != "auto":
        return name
    return "fashion_mnist" if data.fashion_mnist_on_disk(data_dir) else "random"


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    dataset = resolve_dataset(cfg["dataset"], ctx.data_dir)
    missing = sorted(set(cfg["epoch_batch_sizes"]) - set(cfg["batch_sizes"]))
    if missing:
        raise ValueError(f"experiments.batch_timing.epoch_batch_sizes: {missing} not in batch_sizes "
                         "(an epoch is timed in the run of its batch size)")
    n = int(cfg["n_examples"])
    # one timing seed (its initialization hardly matters to a timing); seed_offset shifts it too
    return [{"task": ID, "batch_size": int(bs), "n_examples": n, "dataset": dataset,
             "model": cfg["model"], "repeats": int(cfg["repeats"]), "warmup": int(cfg["warmup"]), "seed": ctx.seed_offset,
             "block": timing.block_size(int(bs), n, int(cfg["block"]), int(cfg["block_examples"])),
             "epoch_repeats": int(cfg["epoch_repeats"]) if bs in cfg["epoch_batch_sizes"] else 0}
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


def execute(settings: Settings, env: RunEnv) -> RunResult:
    torch.manual_seed(settings["seed"])
    x, y, source = _inputs(settings, env)
    model = models.build(settings["model"], (784,), 10).to(env.device)
    opt = optim.make_optimizer(model.parameters(), {"name": "sgd", "lr": 0.01})
    bs, block = settings["batch_size"], settings.get("block", 1)
    per_epoch = timing.updates_per_epoch(len(x), bs)
    times = timing.time_updates(model, opt, x, y, bs, settings["repeats"], settings["warmup"], block=block)
    rows = [{"kind": "update", "repeat": i, "block": block, "time_per_update": t, "time_per_epoch": t * per_epoch}
            for i, t in enumerate(times)]
    # after the update timing: warm at this batch size
    epochs = timing.time_epochs(model, opt, x, y, bs, settings.get("epoch_repeats", 0))
    rows += [{"kind": "epoch", "repeat": i, "block": per_epoch, "time_per_update": t / per_epoch, "time_per_epoch": t}
             for i, t in enumerate(epochs)]
    return RunResult(rows=rows, summary={"data": source, "n_examples": len(x), "updates_per_epoch": per_epoch})


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    frames = []
    for r in records:
        df = r.metrics.copy()
        df["batch_size"] = r.settings["batch_size"]
        df["device"] = r.meta["device"]
        df["device_name"] = r.meta["device_name"]
        df["data"] = r.summary.get("data")
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    note = (f"{table['device_name'].iloc[0]}; data: {table['data'].iloc[0]}; median and 95% interval over repeats, "
            "warm-up excluded")
    upd, ep = _part(table, "update"), _part(table, "epoch")
    # side by side, as the lecture shows them: an update costs about the same up to a large batch,
    # so an epoch (fewer updates) gets cheaper as the batch grows
    fig, axes = plots.figure(ncols=2, width=4.6)
    ax = axes[0][0]
    sns.lineplot(upd, x="batch_size", y="time_per_update", estimator=np.median, errorbar=("pi", 95), marker="o", ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="time for one update (s)", title="time per update")
    ax = axes[0][1]
    sns.lineplot(upd, x="batch_size", y="time_per_epoch", estimator=np.median, errorbar=("pi", 95), marker="o",
                 ls="--", label="extrapolated: time per update x updates per epoch", ax=ax)
    if len(ep):
        sns.lineplot(ep, x="batch_size", y="time_per_epoch", estimator=np.median, errorbar=("pi", 95), marker="s",
                     label="measured: whole epochs", ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="time for one epoch (s)", title="time per epoch")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22))
    blocks = ", ".join(f"{b}: {k}" for b, k in upd.groupby("batch_size")["block"].first().items())
    plots.save(fig, outdir, "time_per_update_and_epoch",
               note=note + f"; updates timed in blocks of back-to-back updates (batch size: updates per block) {blocks}")


def _part(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The update timings (blocks) or the epoch timings."""
    return table[table["kind"] == kind]


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    upd, ep = _part(table, "update"), _part(table, "epoch")
    by = {bs: g for bs, g in upd.groupby("batch_size")}
    sizes = sorted(by)
    small, largest = sizes[0], sizes[-1]
    mid = 1000 if 1000 in by else sizes[len(sizes) // 2]
    on_gpu = (table["device"].astype(str).str.startswith("cuda")).all()
    where = f"measured on {table['device_name'].iloc[0]}"
    out = [stats.claim(ID, "parallel_update", f"On parallel hardware, one update at batch {mid} takes under 2x the time of batch {small}",
                       f"time per update ratio B={mid} / B={small} (blocks of back-to-back updates)",
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
    # the epoch claim reads real epochs; the extrapolation from one update is shown beside it
    eby = {bs: g for bs, g in ep.groupby("batch_size")}
    if len(eby) >= 2:
        lo, hi = min(eby), max(eby)
        estimate, how = stats.median_ratio(eby[hi]["time_per_epoch"], eby[lo]["time_per_epoch"]), "measured epochs"
    else:
        lo, hi = small, largest
        estimate, how = stats.missing(), "no epochs timed at two batch sizes (epoch_batch_sizes)"
    extrapolated = stats.median_ratio(by[hi]["time_per_epoch"], by[lo]["time_per_epoch"])
    out.append(stats.claim(ID, "epoch_time_falls", f"One epoch takes less time at batch {hi} than at batch {lo}",
                           f"time per epoch ratio B={hi} / B={lo} ({how})", estimate,
                           threshold=1.0, direction="<", kind="demonstration",
                           note=f"{where}; by construction: {hi // lo} times fewer updates per epoch; extrapolated from "
                                f"one update: {extrapolated.value:.3g}"))
    return out
