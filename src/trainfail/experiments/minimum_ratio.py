"""minimum_ratio: how often is a critical point a local minimum? (lecture 1.1, empirical study)

The lecture trains a network many times until it "stops at a critical point", looks at the
Hessian there and plots training loss against the minimum ratio = (# positive eigenvalues) /
(# eigenvalues): no run reached 1. Here, as in the course homework, the network is a 1-h-1
regression net fitting sin(5 pi x) / (5 pi x) on [-1, 1] with MSE.

Each run is one net (width, activation, weight decay) with all its seeds trained together as an ensemble:
the parameters are stacked (seeds, P) and the objective is the sum of the members' objectives,
so every member's gradient, Adam update (elementwise) and Hessian block are exactly those of
training it alone, at the cost of one process and one vectorised pass. Per member:
  1. full-batch Adam for `train_steps` steps from PyTorch's default init under its seed;
  2. the critical point is then found on purpose: Levenberg-Marquardt on grad = 0 with the exact
     Hessian (hessian.newton_on_gradient; finds saddles as readily as minima), in float64;
  3. verified when ||grad|| <= grad_tol; the exact Hessian (P x P) there, eigvalsh, and the
     minimum ratio over all eigenvalues and over the non-zero ones (|lambda| > zero_tol * max|lambda|).
Runs that do not reach grad_tol are kept and shown, but are not critical points and do not
enter the claims. Weight decay (an L2 term in the objective, (wd/2)||w||^2) is a setting: without
it, tanh units can drift toward saturation and many runs end in "gradient-flat" regions where
the gradient lies in the near-null space of the Hessian and no Newton-type step lowers it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import hessian, optim, plots, stats
from ..provenance import make_deterministic
from ..train import RunResult

ID = "minimum_ratio"
SECTION = "1.1 Critical points: local minima and saddle points"
TITLE = "Training loss against minimum ratio at critical points found on purpose"


# --------------------------------------------------------------------------- the data and the ensemble

def make_data(n: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """x evenly spaced on [-1, 1], y = sin(5 pi x) / (5 pi x) (torch.sinc(z) = sin(pi z) / (pi z))."""
    x = torch.linspace(-1.0, 1.0, n, dtype=dtype).unsqueeze(1)
    return x, torch.sinc(5.0 * x).squeeze(1)


def member_model(width: int, activation: str = "tanh") -> nn.Sequential:
    act = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]
    return nn.Sequential(nn.Linear(1, width), act(), nn.Linear(width, 1))


class Ensemble:
    """S independent 1-h-1 nets with flat parameters W of shape (S, P), P = 3h + 1.

    Row s holds [weight1 (h), bias1 (h), weight2 (h), bias2 (1)], the order of
    member_model(h).parameters(), so a row can be loaded into that model (tests check it).
    """

    def __init__(self, width: int, activation: str = "tanh"):
        self.width = width
        self.act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[activation]

    @property
    def dim(self) -> int:
        return 3 * self.width + 1

    def init(self, seeds: list[int], activation: str = "tanh") -> torch.Tensor:
        rows = []
        for s in seeds:
            torch.manual_seed(int(s))  # PyTorch's default init under each seed, as for a lone run
            rows.append(hessian.flat_parameters(member_model(self.width, activation)))
        return torch.stack(rows).to(torch.float64)

    def forward(self, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.width
        w1, b1, w2, b2 = W[:, :h], W[:, h:2 * h], W[:, 2 * h:3 * h], W[:, 3 * h]
        hidden = self.act(x[:, 0][None, :, None] * w1[:, None, :] + b1[:, None, :])  # (S, N, h)
        return torch.einsum("snh,sh->sn", hidden, w2) + b2[:, None]                  # (S, N)

    def kinks_in_range(self, w: torch.Tensor, x: torch.Tensor) -> int:
        """ReLU units whose kink lies inside the data (active on some examples but not all).

        A unit active on no example is dead, and one active on all is linear there; a net with
        no kink in range fits an affine function (for this symmetric target: a constant, loss
        var(y)), and such points are exactly critical with many zero eigenvalues. For smooth
        activations every unit counts."""
        h = self.width
        if self.act is not torch.relu:
            return h
        z = x[:, 0][:, None] * w[None, :h] + w[None, h:2 * h]
        on = (z > 0)
        return int((on.any(dim=0) & ~on.all(dim=0)).sum())

    def losses(self, W: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> torch.Tensor:
        """Each member's objective: mean squared error + (wd / 2) ||w||^2, shape (S,)."""
        mse = (self.forward(W, x) - y[None, :]).pow(2).mean(dim=1)
        return mse + 0.5 * weight_decay * W.pow(2).sum(dim=1)

    def loss_grad(self, x, y, weight_decay: float):
        def f(W: torch.Tensor):
            W = W.detach().requires_grad_(True)
            values = self.losses(W, x, y, weight_decay)
            (g,) = torch.autograd.grad(values.sum(), W)  # sum of independent members: row s = grad of member s
            return values.detach(), g
        return f

    def hessians(self, x, y, weight_decay: float, chunk: int = 256):
        def f(W: torch.Tensor) -> torch.Tensor:
            W = W.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.losses(W, x, y, weight_decay).sum(), W, create_graph=True)

            def apply(V: torch.Tensor) -> torch.Tensor:
                return torch.autograd.grad(g, W, grad_outputs=V, retain_graph=True, is_grads_batched=True)[0]

            return hessian.block_hessians(apply, W.shape[0], W.shape[1], chunk)
        return f


# --------------------------------------------------------------------------- runs

def runs(cfg: dict, ctx) -> list[dict]:
    # Seeds are split into ensembles of `ensemble_size` so that shards can run in parallel;
    # group-major order spreads the nets (cheap and costly) over the shards.
    seeds = [int(s) for s in ctx.seeds_for(cfg)]
    size = int(cfg.get("ensemble_size", 8))
    groups = [seeds[i:i + size] for i in range(0, len(seeds), size)]
    return [{"task": ID, "width": int(net["width"]), "activation": net.get("activation", "relu"),
             "weight_decay": float(net.get("weight_decay", 0.0)), "seeds": group,
             "n_examples": int(cfg["n_examples"]), "optimizer": cfg["optimizer"],
             "train_steps": int(cfg["train_steps"]), "newton_iters": int(cfg["newton_iters"]),
             "grad_tol": float(cfg["grad_tol"]), "zero_tol": float(cfg["zero_tol"]), "log_points": 50}
            for group in groups for net in cfg["nets"]]


def train_ensemble(ens: Ensemble, W: torch.Tensor, x, y, settings: dict) -> tuple[torch.Tensor, list[dict]]:
    """Full-batch torch.optim training of all members at once; rows: step, seed, loss, grad_norm."""
    W = nn.Parameter(W.clone())
    opt = optim.make_optimizer([W], settings["optimizer"])
    steps, wd, seeds = settings["train_steps"], settings["weight_decay"], settings["seeds"]
    every = max(steps // settings["log_points"], 1)
    rows = []
    for step in range(steps + 1):
        opt.zero_grad()
        values = ens.losses(W, x, y, wd)
        values.sum().backward()
        if step % every == 0 or step == steps:
            gn = torch.linalg.vector_norm(W.grad, dim=1)
            rows += [{"phase": "train", "step": step, "seed": s, "loss": float(values[i].detach()), "grad_norm": float(gn[i])}
                     for i, s in enumerate(seeds)]
        if step == steps:
            break
        opt.step()
    return W.detach(), rows


def execute(settings: dict, env) -> RunResult:
    make_deterministic(int(settings["seeds"][0]))
    x, y = make_data(settings["n_examples"])
    ens = Ensemble(settings["width"], settings["activation"])
    seeds, wd = settings["seeds"], settings["weight_decay"]
    W, rows = train_ensemble(ens, ens.init(seeds, settings["activation"]), x, y, settings)
    W, points = hessian.newton_on_gradient(W, ens.loss_grad(x, y, wd), ens.hessians(x, y, wd),
                                           max_iter=settings["newton_iters"], tol=settings["grad_tol"] * 1e-2)
    H = ens.hessians(x, y, wd)(W)
    results = []
    for i, (s, cp) in enumerate(zip(seeds, points)):
        rows += [{"phase": "newton", "step": h["iteration"], "seed": s, "loss": h["loss"], "grad_norm": h["grad_norm"]}
                 for h in cp.history]
        eigs = hessian.eigenvalues(H[i])
        mse = float((ens.forward(W[i:i + 1], x) - y).pow(2).mean())
        kinks = ens.kinks_in_range(W[i], x)
        results.append({"seed": s, "loss_train_end": cp.loss_start, "grad_norm_train_end": cp.grad_norm_start,
                        "objective": cp.loss, "mse": mse, "grad_norm": cp.grad_norm, "newton_iters": cp.iterations,
                        "kinks_in_range": kinks,
                        "verified": cp.grad_norm <= settings["grad_tol"],
                        **hessian.minimum_ratio(eigs, settings["zero_tol"]),
                        "min_eig": float(eigs[0]), "max_eig": float(eigs[-1]),
                        "spectrum": " ".join(f"{e:.6e}" for e in eigs)})
    return RunResult(rows=rows, summary={"points": results, "parameters": ens.dim})


# --------------------------------------------------------------------------- analysis

def table(cfg: dict, records, ctx) -> pd.DataFrame:
    rows = []
    for r in records:
        for p in r.summary["points"]:
            net = f"1-{r.settings['width']}-1 {r.settings['activation']}" + \
                (f", wd {r.settings['weight_decay']:g}" if r.settings["weight_decay"] else "")
            rows.append({"net": net, "width": r.settings["width"], "activation": r.settings["activation"],
                         "parameters": r.summary["parameters"], "weight_decay": r.settings["weight_decay"],
                         **p, "run_id": r.run_id})
    return pd.DataFrame(rows)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    fig, axes = plots.figure(ncols=2, width=5.6, height=4.0)
    ax = axes[0][0]
    t = table.copy()
    ver, unver = t[t["verified"]], t[~t["verified"]]
    if len(unver):  # drawn first, so the verified points stay visible on top
        ax.scatter(unver["ratio_all"], unver["mse"], marker="x", color="0.7", s=18, zorder=1,
                   label=f"not verified (||g|| > {cfg['grad_tol']:g})")
    sns.scatterplot(ver, x="ratio_all", y="mse", hue="net", style="net", s=45, alpha=0.8, zorder=3, ax=ax)  # ties overlap
    ax.legend(fontsize=7)
    ax.set(xlabel="minimum ratio (# positive eigenvalues / # eigenvalues)", ylabel="training loss (MSE)",
           yscale="log", title=f"{len(ver)} verified critical points of {len(t)} runs", xlim=(-0.02, 1.02))
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax = axes[0][1]
    # a few spectra spread over the loss range, preferring one with negative curvature if any
    k = min(int(cfg.get("spectra_shown", 3)), len(ver))
    saddles = ver[ver["n_neg"] > 0].head(1)
    rest = ver.drop(saddles.index).sort_values("mse")
    picks = np.unique(np.linspace(0, len(rest) - 1, max(k - len(saddles), 0)).astype(int)) if len(rest) else []
    shown = pd.concat([saddles, rest.iloc[picks]]) if k else ver.head(0)
    for _, r in shown.iterrows():
        eigs = np.array([float(v) for v in r["spectrum"].split()])
        ax.plot(np.arange(len(eigs)), eigs, "o-", ms=3,
                label=f"{r['net']} seed {r['seed']}: ratio {r['ratio_all']:.2f}, loss {r['mse']:.1e}")
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="eigenvalue index (ascending)", ylabel="Hessian eigenvalue", title="spectra at verified critical points")
    ax.legend(fontsize=6)
    plots.save(fig, outdir, "loss_vs_minimum_ratio",
               note=f"y = sin(5 pi x)/(5 pi x), {cfg['n_examples']} points; Adam {cfg['train_steps']} steps, then Newton "
                    f"(Levenberg-Marquardt) on grad = 0; verified: ||grad|| <= {cfg['grad_tol']:g}; "
                    f"zero eigenvalue: |lambda| <= {cfg['zero_tol']:g} max|lambda|")

    fig, axes = plots.figure(width=5.0, height=3.6)
    ax = axes[0][0]
    ax.scatter(t["grad_norm_train_end"], t["grad_norm"], c=np.where(t["verified"], "C0", "0.6"), s=15)
    lim = [min(t["grad_norm"].min(), t["grad_norm_train_end"].min()) / 2, t["grad_norm_train_end"].max() * 2]
    ax.plot(lim, lim, "k:", lw=0.8)
    ax.axhline(float(cfg["grad_tol"]), color="C3", lw=0.8, ls="--", label="verification threshold")
    ax.set(xscale="log", yscale="log", xlabel="||grad|| when training ended", ylabel="||grad|| after the Newton search",
           title="critical points are found on purpose")
    ax.legend(fontsize=7)
    plots.save(fig, outdir, "gradient_norm_reached", note="one point per run; grey: not verified")


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    ver = table[table["verified"]]
    n, n_all = len(ver), len(table)
    k = int((ver["ratio_all"] >= 1.0).sum())
    k_nonzero = int((ver["ratio_nonzero"] >= 1.0).sum())
    frac_max = float(cfg["minimum_fraction_max"])
    affine = int((ver["kinks_in_range"] == 0).sum()) if "kinks_in_range" in ver else 0
    note = (f"{n} of {n_all} runs verified (||grad|| <= {cfg['grad_tol']:g}); largest ratio {ver['ratio_all'].max():.3f}; "
            f"over non-zero eigenvalues {k_nonzero} of {n} have ratio 1 (zero tolerance {cfg['zero_tol']:g} x max|lambda|); "
            f"{affine} verified points have no ReLU kink inside the data (an affine fit)"
            if n else f"no run of {n_all} reached ||grad|| <= {cfg['grad_tol']:g}")
    out = [stats.claim(ID, "no_run_reaches_ratio_one",
                         f"True local minima are rare: fewer than {frac_max:.0%} of the verified critical points have minimum ratio 1",
                         "fraction of verified critical points with ratio 1 (all eigenvalues), Wilson 95% interval",
                         stats.proportion(k, n), frac_max, "<", kind="test", paper_value="no run above about 0.6", note=note)]
    out.append(stats.claim(ID, "no_minimum_over_nonzero_eigenvalues",
                             f"Counting only non-zero eigenvalues, fewer than {frac_max:.0%} of the verified critical points are minima",
                             "fraction of verified critical points whose non-zero eigenvalues are all positive, Wilson 95% interval",
                             stats.proportion(k_nonzero, n), frac_max, "<", kind="test",
                             note="separates 'no negative curvature' from 'zero eigenvalues make the ratio < 1'"))
    # within each net: pooling nets would mix the effect of the network size (wider nets: lower
    # loss and more zero eigenvalues) into the correlation
    rho = stats.spearman(ver["mse"], ver["ratio_all"], ver["net"])
    kinked = ver[ver["kinks_in_range"] > 0] if "kinks_in_range" in ver else ver
    rho_kinked = stats.spearman(kinked["mse"], kinked["ratio_all"], kinked["net"])
    lo_k, hi_k = rho_kinked.interval()
    out.append(stats.claim(ID, "higher_loss_lower_ratio",
                             "Critical points with higher training loss have a lower minimum ratio (negative rank correlation)",
                             "Spearman(loss, minimum ratio) within each net, averaged; bootstrap 95% interval",
                             rho, 0.0, "<", kind="test", paper_value="negative (Dauphin et al. 2014)", min_n=8,
                             note=f"verified points only; groups of >= 4 points with varying values; without the affine fits: "
                                  f"{rho_kinked.value:.2f} [{lo_k:.2f}, {hi_k:.2f}], n = {rho_kinked.n}"))
    return out
