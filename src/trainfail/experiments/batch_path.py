"""batch_path: small batch vs full batch on a 2-parameter model (lecture 1.2).

N = 20 examples, a linear model y = w x + b (two parameters), plain SGD with the same learning
rate: full batch (one update per epoch) against batch size 1 (20 updates per epoch). The claim:
the batch-1 path is noisier (its update directions spread more) yet both lower the loss.
Runs in the analysis step: two parameters train in milliseconds, so there is no training job.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.training.context import Context
from trainfail.core.contract import Claim, Settings
from trainfail.core.run_record import RunRecord

ID = "batch_path"
SECTION = contract.BATCH_SIZE
ORDER = 1
TITLE = "Small vs full batch: the path on the error surface"


def runs(cfg: dict) -> list[Settings]:
    return []  # computed directly in table()


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    y = 2.0 * x - 1.0 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((w[0] * x + w[1] - y) ** 2).mean()


def sgd_path(x, y, batch_size: int, epochs: int, lr: float, start, seed: int) -> np.ndarray:
    """The parameter path of torch.optim.SGD: one point per update, the start included."""
    w = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=lr)
    g = torch.Generator().manual_seed(seed)
    path = [w.detach().clone()]
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss(w, x[idx], y[idx]).backward()
            opt.step()
            path.append(w.detach().clone())
    return torch.stack(path).numpy()


def direction_spread(path: np.ndarray) -> float:
    """Circular standard deviation (radians) of the update directions: 0 for a straight path."""
    steps = np.diff(path, axis=0)
    angles = np.arctan2(steps[:, 1], steps[:, 0])
    r = np.hypot(np.cos(angles).mean(), np.sin(angles).mean())
    return float(math.sqrt(-2.0 * math.log(max(r, 1e-12))))


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    n, epochs, lr = int(cfg["n_examples"]), int(cfg["epochs"]), float(cfg["lr"])
    rows = []
    for seed in ctx.seeds_for(cfg):
        x, y = make_data(n, seed)
        for bs in cfg["batch_sizes"]:
            path = sgd_path(x, y, int(bs), epochs, lr, cfg["start"], seed)
            w = torch.tensor(path)
            losses = [float(loss(p, x, y)) for p in w]
            spread = direction_spread(path)
            for k, (p, l) in enumerate(zip(path, losses)):
                rows.append({"seed": seed, "batch_size": int(bs), "update": k, "w": p[0], "b": p[1], "loss": l,
                             "spread": spread, "loss_start": losses[0], "loss_end": losses[-1]})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    seed = table["seed"].min()
    x, y = make_data(int(cfg["n_examples"]), int(seed))
    xn, yn = x.numpy(), y.numpy()
    surface = lambda W, B: ((W[..., None] * xn + B[..., None] - yn) ** 2).mean(-1)
    sizes = sorted(table["batch_size"].unique())
    fig, axes = plots.figure(ncols=len(sizes), width=4.2, height=4)
    one = table[table["seed"] == seed]
    lim_w = (min(one["w"].min(), 2) - 0.5, max(one["w"].max(), 2) + 0.5)
    lim_b = (min(one["b"].min(), -1) - 0.5, max(one["b"].max(), -1) + 0.5)
    for ax, bs in zip(axes[0], sizes):
        filled = plots.contours(ax, surface, lim_w, lim_b, log=False, colorbar=False)
        p = one[one["batch_size"] == bs]
        ax.plot(p["w"], p["b"], "o-", color="white", ms=2, lw=1)
        ax.plot(p["w"].iloc[0], p["b"].iloc[0], "r*", ms=10)
        ax.set_title(f"batch size {bs}: {len(p) - 1} updates\nloss {p['loss'].iloc[0]:.2f} -> {p['loss'].iloc[-1]:.2f}")
        ax.set_xlabel("w")
        ax.set_ylabel("b")
    if sizes:
        plots.contour_colorbar(fig, filled, axes[0], log=False)
    plots.save(fig, outdir, "batch_path", note=f"N = {cfg['n_examples']} examples, SGD lr {cfg['lr']}, {cfg['epochs']} epochs, seed {seed}")

    per_seed = table.groupby(["seed", "batch_size"]).first().reset_index()
    fig, axes = plots.figure(width=4.5)
    import seaborn as sns

    sns.pointplot(per_seed, x="batch_size", y="spread", errorbar=plots.BAND, ax=axes[0][0], capsize=0.2)
    axes[0][0].set_ylabel("spread of update directions (rad)")
    plots.save(fig, outdir, "direction_spread", note=plots.BAND_NOTE)


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    per_seed = table.groupby(["seed", "batch_size"]).first().reset_index()
    small, large = min(per_seed["batch_size"]), max(per_seed["batch_size"])
    s = per_seed[per_seed["batch_size"] == small]
    l = per_seed[per_seed["batch_size"] == large]
    # both batch sizes start from the same point on the same seed's data: paired over seeds
    out = [stats.claim(ID, "small_batch_noisier",
                       f"Batch size {small} moves in more scattered directions than batch size {large}",
                       "spread(small) - spread(full), radians",
                       stats.paired(s.sort_values("seed")["spread"], l.sort_values("seed")["spread"]), kind="demonstration",
                       note=f"by construction: batch {large} is the full batch of this convex problem (no noise at all)")]
    for name, part in (("small", s), ("full", l)):
        drop = 1.0 - part["loss_end"] / part["loss_start"]
        bs = small if name == "small" else large
        # a small learning rate on a convex least-squares loss: chosen so that both paths descend
        out.append(stats.claim(ID, f"{name}_batch_lowers_loss", f"Batch size {bs} lowers the loss",
                               "1 - loss(end) / loss(start)", stats.mean(drop), kind="demonstration",
                               note="by construction: a convex loss and a learning rate small enough to descend"))
    return out
