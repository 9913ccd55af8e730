"""feature_normalization: features on different scales make the error surface ill-conditioned (lecture 3.1).

A linear model y = w1 x1 + w2 x2 (two parameters, MSE) on N examples whose second feature is
`feature_scale` times larger than the first. Standardising the features (zero mean, unit
variance, training statistics) turns the elongated valley into near-circles. Measured per data
seed: the Hessian of the real loss (torch.autograd.functional.hessian) and its condition number
before and after; then a learning-rate search for plain gradient descent (torch.optim.SGD, full
batch) on each problem: the steps to bring the loss within `tolerance` of its own least-squares
minimum at each rate, and the steps at each problem's best rate. No training jobs: two parameters
take milliseconds, so everything runs in the analysis step.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.measure import landscape
from trainfail.training.context import Context
from trainfail.core.contract import Claim, Settings
from trainfail.core.run_record import RunRecord

ID = "feature_normalization"
SECTION = contract.FEATURE_NORMALIZATION
ORDER = 1
TITLE = "Feature scaling: the Hessian's condition number and gradient-descent steps"
HEADLINE = "contours_gd_paths"

PROBLEMS = ("raw", "standardised")


def runs(cfg: dict) -> list[Settings]:
    return []  # computed directly in table()


def make_data(n: int, feature_scale: float, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x1 ~ N(0, 1), x2 ~ N(0, feature_scale^2); y = x1 + x2 / feature_scale + noise.

    The true weights are 1 in standardised units, so both features matter equally.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, feature_scale], dtype=torch.float64)
    y = x[:, 0] + x[:, 1] / feature_scale + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each feature to zero mean and unit variance (the lecture's feature normalization)."""
    return (x - x.mean(0)) / x.std(0, unbiased=False)


def mse(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the linear model; w may carry grid dimensions after the first (2, ...)."""
    pred = x @ w if w.dim() == 1 else torch.einsum("nf,f...->n...", x, w)
    return ((pred - y.view(-1, *([1] * (w.dim() - 1)))) ** 2).mean(0)


def mse_grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of `mse` in closed form, 2/N X^T (X w - y), for w of shape (2, ...) as mse takes
    (tests check it against autograd); gradient descent uses it instead of autograd."""
    residual = torch.einsum("nf,f...->n...", x, w) - y.view(-1, *([1] * (w.dim() - 1)))
    return 2.0 / len(x) * torch.einsum("nf,n...->f...", x, residual)


def hessian(x: torch.Tensor, y: torch.Tensor, at=None) -> torch.Tensor:
    """The 2x2 Hessian of the real loss, by automatic differentiation (closed form: 2/N X^T X)."""
    w = torch.zeros(2, dtype=x.dtype) if at is None else torch.as_tensor(at, dtype=x.dtype)
    return torch.autograd.functional.hessian(lambda v: mse(v, x, y), w)


def condition_number(h: torch.Tensor) -> float:
    """lambda_max / lambda_min of a symmetric positive-definite matrix."""
    ev = torch.linalg.eigvalsh(h)
    return float(ev[-1] / ev[0])


def least_squares_minimum(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, float]:
    w = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)
    return w.numpy(), float(mse(w, x, y))


def lr_grid(cfg: dict) -> list[float]:
    lo, hi = cfg["lr_range"]
    return [float(v) for v in np.geomspace(lo, hi, int(cfg["lr_points"]))]


def best_rate(search: pd.DataFrame) -> tuple[float, float]:
    """(learning rate, steps) with the fewest steps to the target; NaN steps when none got there."""
    reached = search[search["reached"]]
    if reached.empty:
        return math.nan, math.nan
    row = reached.sort_values(["steps", "lr"]).iloc[0]
    return float(row["lr"]), float(row["steps"])


def _problems(cfg: dict, seed: int) -> dict:
    x, y = make_data(int(cfg["n_examples"]), float(cfg["feature_scale"]), float(cfg["noise"]), seed)
    z = standardise(x)
    start_std = np.asarray(cfg["start"], float)  # the same function in both problems: w_raw = w_std / std
    start_raw = start_std / x.std(0, unbiased=False).numpy()
    return {"raw": (x, y, start_raw), "standardised": (z, y, start_std)}


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    rows = []
    tol, max_steps = float(cfg["tolerance"]), int(cfg["max_steps"])
    first_seed = ctx.seeds_for(cfg)[0]
    for seed in ctx.seeds_for(cfg):
        for problem, (x, y, start) in _problems(cfg, seed).items():
            h = hessian(x, y)
            ev = torch.linalg.eigvalsh(h).numpy()
            w_star, loss_star = least_squares_minimum(x, y)
            loss_start = float(mse(torch.as_tensor(start), x, y))
            # "the same loss": the same excess over each problem's own minimum, a fraction of the start's
            target = loss_star + tol * (loss_start - loss_star)
            surface = lambda w, x=x, y=y: mse(w, x, y)
            surface.grad = lambda w, x=x, y=y: mse_grad(w, x, y)
            rates = lr_grid(cfg)  # every rate of the search at once (steps_to_loss per rate, stepped together)
            steps, diverged = landscape.steps_to_loss_rates(surface, start, rates, max_steps, target)
            search = pd.DataFrame({"lr": rates, "steps": steps, "reached": ~np.isnan(steps), "diverged": diverged})
            lr_best, steps_best = best_rate(search)
            common = {"seed": seed, "problem": problem}
            rows += [{"kind": "lr_search", **common, **r} for r in search.to_dict("records")]
            rows.append({"kind": "summary", **common, "condition_number": float(ev[-1] / ev[0]),
                         "eig_min": float(ev[0]), "eig_max": float(ev[-1]), "lr": lr_best, "steps": steps_best,
                         "reached": not math.isnan(steps_best), "loss_star": loss_star, "target": target,
                         "w1_star": w_star[0], "w2_star": w_star[1], "max_steps": max_steps})
            if seed == first_seed and not math.isnan(lr_best):  # the path drawn on the contour plot
                path = landscape.optimize_path(surface, start, {"name": "sgd", "lr": lr_best}, max_steps, stop_below=target)
                rows += [{"kind": "path", **common, "step": k, "w1": p[0], "w2": p[1], "loss": p[2], "lr": lr_best}
                         for k, p in enumerate(path)]
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path, ctx: Context) -> None:
    import seaborn as sns

    summary = table[table["kind"] == "summary"]
    paths = table[table["kind"] == "path"]
    seed = int(paths["seed"].min()) if len(paths) else ctx.seeds_for(cfg)[0]
    probs = _problems(cfg, seed)
    fig, axes = plots.figure(ncols=2, width=4.6, height=4.4)
    for ax, problem in zip(axes[0], PROBLEMS):
        x, y, start = probs[problem]
        s = summary[(summary["seed"] == seed) & (summary["problem"] == problem)].iloc[0]
        p = paths[paths["problem"] == problem]
        w_star = np.array([s["w1_star"], s["w2_star"]])
        # equal scales on both axes, so an ill-conditioned valley looks as elongated as it is
        span = float(np.abs(np.asarray(start) - w_star).max()) * 1.4
        lim = [(w_star[i] - span, w_star[i] + span) for i in range(2)]
        xt, yt = x.numpy(), y.numpy()
        surface = lambda W1, W2: ((W1[..., None] * xt[:, 0] + W2[..., None] * xt[:, 1] - yt) ** 2).mean(-1)
        plots.contours(ax, surface, lim[0], lim[1])
        if len(p):
            plots.path(ax, p["w1"].to_numpy(), p["w2"].to_numpy())
        ax.set_aspect("equal")
        ax.set(xlabel="w1", ylabel="w2",
               title=f"{problem}: condition number {s['condition_number']:.3g}\n"
                     f"GD at its best lr {s['lr']:.2g}: {s['steps']:.0f} steps" if s["reached"] else
                     f"{problem}: condition number {s['condition_number']:.3g}\nno lr reached the target")
    plots.save(fig, outdir, "contours_gd_paths",
               note=f"N = {cfg['n_examples']}, x2 on {cfg['feature_scale']}x the scale of x1, seed {seed}; "
                    f"full-batch GD (torch.optim.SGD) until the loss is within {cfg['tolerance']} of the start's excess over the minimum")

    search = table[table["kind"] == "lr_search"].copy()
    search["steps to target"] = search["steps"].where(search["reached"], np.nan)
    fig, axes = plots.figure(ncols=2, width=4.6)
    ax = axes[0][0]
    sns.lineplot(search, x="lr", y="steps to target", hue="problem", hue_order=list(PROBLEMS), marker="o",
                 errorbar=plots.BAND, ax=ax)
    for problem, color in zip(PROBLEMS, sns.color_palette()):
        best = summary[summary["problem"] == problem]["lr"]
        for v in best.dropna().unique():
            ax.axvline(v, color=color, ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="learning rate", title="learning-rate search (missing: target not reached)")
    ax = axes[0][1]
    frac = search.groupby(["problem", "lr"])["diverged"].mean().reset_index()
    sns.lineplot(frac, x="lr", y="diverged", hue="problem", hue_order=list(PROBLEMS), marker="o", errorbar=None, ax=ax)
    ax.set(xscale="log", xlabel="learning rate", ylabel="fraction of seeds diverged", title="divergence")
    plots.save(fig, outdir, "lr_search",
               note=f"mean and 95% t-interval over {summary['seed'].nunique()} data seeds (seeds that reached the target); "
                    f"dotted: each seed's best lr; cap {cfg['max_steps']} steps")

    cond = summary[["seed", "problem", "condition_number"]]
    fig, axes = plots.figure(width=4.2)
    sns.barplot(cond, x="problem", y="condition_number", order=list(PROBLEMS), errorbar=plots.BAND, ax=axes[0][0], capsize=0.2)
    axes[0][0].set(yscale="log", ylabel="Hessian condition number")
    plots.save(fig, outdir, "condition_number", note=f"{plots.BAND_NOTE} (data seeds)")


def _paired(summary: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    w = summary.pivot(index="seed", columns="problem", values=col)
    return w["raw"].to_numpy(float), w["standardised"].to_numpy(float)


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    summary = table[table["kind"] == "summary"]
    raw, std = _paired(summary, "condition_number")
    # both follow from the chosen feature scale (the lecture's picture, drawn to order): shown, not counted
    out = [stats.claim(ID, "condition_number_cut",
                       "Standardising the features cuts the Hessian's condition number by orders of magnitude (>= 100x)",
                       "log10(condition raw / condition standardised)", stats.mean(np.log10(raw / std)),
                       threshold=2.0, direction=">", kind="demonstration",
                       paper_value="elongated vs round contours (lecture)",
                       note=f"by construction: one feature is scaled by {cfg['feature_scale']:g}")]
    steps_raw, steps_std = _paired(summary, "steps")
    censored = np.isnan(steps_raw)
    # a raw problem that never got there within the cap needed more than max_steps: a lower bound
    steps_raw = np.where(censored, float(cfg["max_steps"]) + 1, steps_raw)
    note = f"{int(censored.sum())} seed(s) of the raw problem did not reach the target in {cfg['max_steps']} steps (counted as {cfg['max_steps'] + 1}: a lower bound)" if censored.any() else ""
    out.append(stats.claim(ID, "fewer_steps",
                           "At each one's best learning rate, GD on standardised features needs far fewer steps (>= 10x) to reach the same loss",
                           "log10(steps raw / steps standardised), paired by data seed", stats.mean(np.log10(steps_raw / steps_std)),
                           threshold=1.0, direction=">", kind="demonstration",
                           note="; ".join(x for x in (note, "by construction: GD's steps grow with the condition number") if x)))
    return out
