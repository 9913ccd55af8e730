"""stuck_not_critical: training stuck is not a critical point (lecture 2.1.A).

When the loss stops going down, people say the network is stuck at a critical point. The lecture
shows it usually is not: the gradient norm on the plateau stays large (or spikes) while the loss
barely changes: the parameters bounce between the walls of a valley instead of resting where the
gradient vanishes. Here: full-batch gradient descent (torch.optim.SGD, the batch is the whole
training set, so the logged batch loss and gradient norm are those of the training loss itself)
on a small MLP at a large learning rate, with the loss and the gradient norm logged at every step.
The plateau is the last `plateau_fraction` of the steps; whether the loss "barely changes" there
is measured, not assumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings
from trainfail.core.run_record import RunRecord, RunResult

ID = "stuck_not_critical"
SECTION = contract.STUCK
ORDER = 1
TITLE = "On a loss plateau the gradient norm is far from zero"
HEADLINE = "loss_and_gradient_norm"


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    n = int(cfg.get("n_train", 0))
    return [{"dataset": cfg["dataset"], "model": cfg["model"], "optimizer": cfg["optimizer"],
             "n_train": n, "batch_size": n or 10 ** 9,  # the whole training set (train() clips to n_train)
             "steps": int(cfg["steps"]), "seed": int(seed), "loss": "cross_entropy",
             "log_every": 1, "eval_points": 5, "task": ID}
            for seed in ctx.seeds_for(cfg)]


def execute(settings: Settings, env: RunEnv) -> RunResult:
    """Plain training on the first n_train examples (0 = all), the batch being all of them."""
    from trainfail.training.train import train

    data = env.dataset(settings["dataset"])
    if settings["n_train"]:
        data = data.subset(settings["n_train"])
    return train(settings, data, env.device)


def plateau_stats(steps: np.ndarray, loss: np.ndarray, grad_norm: np.ndarray, fraction: float) -> dict:
    """Loss change and gradient norm over the last `fraction` of the steps (the plateau)."""
    start = steps.max() - fraction * steps.max()
    on = steps >= start
    l_on, g_on = loss[on], grad_norm[on]
    half = len(l_on) // 2
    # medians of the plateau's two halves: robust to the loss spikes that go with gradient spikes
    first, second = float(np.median(l_on[:max(half, 1)])), float(np.median(l_on[half:]))
    return {"plateau_start": int(steps[on].min()), "loss_plateau_first_half": first, "loss_plateau_second_half": second,
            "loss_rel_change": abs(first - second) / abs(first),
            "grad_norm_start": float(grad_norm[0]), "grad_norm_plateau_min": float(g_on.min()),
            "grad_norm_plateau_p10": float(np.quantile(g_on, 0.1)),
            "grad_norm_plateau_median": float(np.median(g_on)), "grad_norm_plateau_max": float(g_on.max()),
            "grad_norm_p10_rel": float(np.quantile(g_on, 0.1) / grad_norm[0])}


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    rows = []
    for r in records:
        m = r.metrics.dropna(subset=["batch_loss"]).sort_values("step")
        s = plateau_stats(m["step"].to_numpy(), m["batch_loss"].to_numpy(), m["grad_norm"].to_numpy(),
                          float(cfg["plateau_fraction"]))
        for _, row in m.iterrows():
            rows.append({"seed": r.settings["seed"], "step": int(row["step"]), "loss": row["batch_loss"],
                         "grad_norm": row["grad_norm"], "diverged": r.diverged, **s})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    fig, axes = plots.figure(nrows=2, width=7.0, height=2.6, sharex=True)
    sns.lineplot(table, x="step", y="loss", hue="seed", palette=plots.palette(table["seed"].nunique()), lw=0.8,
                 errorbar=None, ax=axes[0][0])
    sns.lineplot(table, x="step", y="grad_norm", hue="seed", palette=plots.palette(table["seed"].nunique()), lw=0.6,
                 errorbar=None, ax=axes[1][0], legend=False)
    start = int(table["plateau_start"].min())
    for ax in (axes[0][0], axes[1][0]):
        ax.axvspan(start, table["step"].max(), color="0.85", alpha=0.5, lw=0)
    axes[0][0].set(ylabel="training loss", yscale="log", title="full-batch gradient descent: the loss plateaus (grey) ...")
    axes[1][0].set(ylabel="||gradient||", yscale="log", xlabel="step", title="... while the gradient norm does not go to zero")
    axes[0][0].legend(title="seed")
    opt = cfg["optimizer"]
    plots.save(fig, outdir, "loss_and_gradient_norm",
               note=f"{cfg['dataset']}, MLP {cfg['model'].get('hidden')}, {opt['name']} lr {opt['lr']}, the whole training set "
                    f"per step; plateau = last {cfg['plateau_fraction']:.0%} of {cfg['steps']} steps; one line per seed")


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    per_seed = table.groupby("seed").first().reset_index()
    diverged = per_seed["diverged"].astype(bool)
    per_seed = per_seed[~diverged]  # a diverged run has no plateau to measure (run_record.DIVERGED_POLICY)
    note = f"plateau = last {cfg['plateau_fraction']:.0%} of {cfg['steps']} steps; mean and t interval over seeds" + (
        f"; {int(diverged.sum())} diverged run(s) have no plateau and are not counted" if diverged.any() else "")
    return [
        stats.claim(ID, "loss_barely_changes", f"On the plateau the loss changes by less than {cfg['flat_tol']:.0%}",
                      "|median L(2nd half of plateau) - median L(1st half)| / median L(1st half)", stats.mean(per_seed["loss_rel_change"]),
                      float(cfg["flat_tol"]), "<", kind="demonstration",  # full-batch GD at a rate chosen to oscillate
                      note=note),
        stats.claim(ID, "gradient_far_from_zero",
                      f"On the plateau the gradient norm stays above {cfg['far_from_zero']:.0%} of its initial value",
                      "10th percentile of ||g|| on the plateau / ||g|| at step 0", stats.mean(per_seed["grad_norm_p10_rel"]),
                      float(cfg["far_from_zero"]), ">", kind="demonstration",
                      note=f"median on the plateau / initial {np.median(per_seed['grad_norm_plateau_median'] / per_seed['grad_norm_start']):.2f}, "
                           f"smallest / initial {(per_seed['grad_norm_plateau_min'] / per_seed['grad_norm_start']).min():.2f}; " + note),
    ]
