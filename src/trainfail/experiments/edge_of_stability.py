"""edge_of_stability: full-batch gradient descent trains at the edge of stability (Cohen et al., ICLR 2021).

Extends the lecture's 1.1 (the Hessian at critical points), 2.1 ("stuck is not critical": the loss
bounces while the gradient stays large) and 2.3 (warm-up). Classical optimisation says gradient
descent at step eta is stable only where the top Hessian eigenvalue (the sharpness) is below 2/eta.
Cohen et al. find that full-batch GD on a neural network does not stay in that region by luck:
the sharpness rises during training (progressive sharpening) until it reaches 2/eta, then hovers
just above it while the loss keeps falling, non-monotonically over short windows. With heavy-ball
momentum beta the threshold is (2 + 2 beta)/eta. Adam ("Adaptive gradient methods at the edge of
stability", Cohen et al. 2022) trains at the edge of its own preconditioned stability: the top
eigenvalue of P^-1 H, P = diag(sqrt(v_hat) + eps) its current preconditioner, settles near
(2 + 2 beta1)/((1 - beta1) eta), 38/eta at beta1 = 0.9.

Protocol (the paper's Figure 1 on a small scale): a tanh MLP with Cohen's square loss ((1/2) sum
over classes of (f - onehot)^2, averaged over examples; train.loss_fn "half_squared_error") on the
first `n_train` training examples, full-batch torch.optim.SGD at each of `step_sizes` (the levels,
from the schema) and heavy-ball SGD (`momentum_beta`, at each of `momentum_step_sizes`); every step's training loss is
logged, and every `sharpness_every` steps the top Hessian eigenvalue of the training loss is
computed by Lanczos on Hessian-vector products (hessian.lanczos, double backward), warm-started
from the previous top Ritz vector, stopped at relative residual `lanczos_tol` (recorded per
measurement). One run per (arm, step size, seed), `seeds` of them each.

Two more arms, each a claim of the issue (19) beyond Figure 1:
  mini-batch SGD  plain SGD at `sgd.lr` (one of the GD levels) on batches of each of
                  `sgd.batch_sizes`, the full-batch loss and sharpness every `sgd.sharpness_every`
                  steps; with the GD run at that step size as the full batch (reused): the late
                  sharpness stays below 2/eta at every batch size, and rises with the batch size
                  (Cohen et al. 2021, appendix on SGD);
  warm-up         full-batch GD with the rate rising linearly to `warmup.lr` over `warmup.steps`
                  updates, stopped there: the sharpness where the warm-up ends against 2/eta of
                  the target rate, a rate whose 2/eta lies below the sharpness at initialization
                  (the mechanism `warmup_large_batch`'s warm-up relies on).
Paid for inside the experiment: the SGD runs measure every 50 steps, and losses are read once per
sharpness step. The heavy-ball and Adam runs keep the 1,000 steps (`momentum_steps`, `adam_steps`)
their claims were declared on: halving them would save about 4 CPU-s but move the window the
claims read.

The step sizes were chosen on tuning seed 100 (disjoint from the claim seeds) so that the sharpness
reaches 2/eta within the run at each of them (the sharpness at initialization is about 2.6 on
MNIST-1D with this net): looking at that seed's sharpness curves only, never at a verdict. The
heavy-ball runs use the same step sizes: on seed 100 their sharpness first reaches (2 + 2 beta)/eta
at steps 275, 125 and 50 of 1,000 (eta 0.25, 0.35, 0.5; beta 0.9), before the late part. Adam's
rate `adam_lr` (0.002) is the smallest of 0.001, 0.002, 0.004 at which seed 100's preconditioned
sharpness comes within 10% of 38/eta in the first quarter of the run (at 0.001 it reaches only
0.86 of it by step 325). An Adam run is measured from step `sharpness_every` on: before its first
update Adam has no preconditioner.

The price: the tracking costs 1.3-1.5x the untracked run at k = 25 (benchmarks/bench_eos.py, about
6.5 Hessian-vector products per measurement warm, 13 cold); the late part of the run (its last
`late_fraction`) must lie after the first crossing of the threshold for the hovering claims to
measure the edge: on the quick preset the smallest step size first reaches 2/eta at about step
500 of 1,000, the late part starts at 750.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.measure import hessian
from trainfail.training import models, optim
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings
from trainfail.core.run_record import SPIKE_CAP, RunRecord, RunResult

ID = "edge_of_stability"
SECTION = contract.STUCK
ORDER = 2
TITLE = "Full-batch gradient descent trains at the edge of stability: sharpness hovers at 2/eta"
HEADLINE = "loss_and_sharpness"

LOSS = "half_squared_error"
GD, MOMENTUM, ADAM, SGD, WARMUP = "gd", "momentum", "adam", "sgd", "warmup"
DIVERGED_FACTOR = 1e3  # a loss above this x the initial loss is a divergence (the run stops there)

# The edge of stability decides the claim by its mechanism: the sharpness, after rising, settles at
# the stability threshold 2/eta of plain gradient descent. The pooled hovering test over every step
# size is that statement in one number (the per-step-size tests, sharpening and the loss's
# behaviour are its consequences or preconditions).
PRIMARY = "sharpness_hovers_at_2_over_eta"
FIGURE_CLAIMS = {"loss_and_sharpness": "progressive_sharpening", "sharpness_over_threshold": PRIMARY,
                 "sgd_and_warmup": "sgd_below_2_over_eta"}


def lr_label(lr: float) -> str:
    return f"lr{lr:g}"


def threshold(lr: float, beta: float = 0.0) -> float:
    """The stability threshold of the top Hessian eigenvalue: 2/eta for gradient descent,
    (2 + 2 beta)/eta for heavy-ball momentum (on a quadratic, x_{t+1} = x_t - eta a x_t + beta
    (x_t - x_{t-1}) is stable iff eta a < 2 + 2 beta; torch.optim.SGD's momentum is this form)."""
    return (2.0 + 2.0 * beta) / lr


def adam_threshold(lr: float, beta1: float) -> float:
    """Adam's preconditioned stability threshold (Cohen et al. 2022): its update is heavy ball with
    step (1 - beta1) eta and momentum beta1 on the preconditioned loss, so (2 + 2 beta1)/((1 - beta1) eta)."""
    return threshold((1.0 - beta1) * lr, beta1)


def preconditioner(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> torch.Tensor | None:
    """Adam's diagonal preconditioner P = sqrt(v_hat) + eps over the flat parameters (torch.optim.Adam's
    own state: v_hat = exp_avg_sq / (1 - beta2^t)); None before its first step."""
    group = opt.param_groups[0]
    state = [opt.state.get(p, {}) for p in params]
    if not all("exp_avg_sq" in st for st in state):
        return None
    beta2, eps = group["betas"][1], group["eps"]
    out = []
    for st in state:
        t = float(st["step"])
        out.append((st["exp_avg_sq"] / (1.0 - beta2 ** t)).sqrt().add(eps).reshape(-1))
    return torch.cat(out).detach()


# --------------------------------------------------------------------------- runs

def runs(cfg: dict, ctx: Context) -> list[Settings]:
    common = {"task": ID, "dataset": cfg["dataset"], "n_train": int(cfg["n_train"]), "model": cfg["model"],
              "steps": int(cfg["steps"]), "sharpness_every": int(cfg["sharpness_every"]),
              "lanczos_iters": int(cfg["lanczos_iters"]), "lanczos_tol": float(cfg["lanczos_tol"])}
    _check(cfg)
    out = []
    for seed in ctx.seeds_for(cfg):
        for lr in cfg["step_sizes"]:
            out.append(contract.labelled({**common, "optimizer": {"name": "sgd", "lr": float(lr)}, "seed": int(seed)},
                                         arm=GD))
        beta = float(cfg["momentum_beta"])
        for lr in cfg["momentum_step_sizes"]:
            out.append(contract.labelled({**common, "optimizer": {"name": "momentum", "lr": float(lr), "momentum": beta},
                                          "steps": int(cfg["momentum_steps"]), "seed": int(seed)}, arm=MOMENTUM))
        adam = {"name": "adam", "lr": float(cfg["adam_lr"]), "betas": [float(cfg["adam_beta1"]), 0.999], "eps": 1e-8}
        out.append(contract.labelled({**common, "optimizer": adam, "steps": int(cfg["adam_steps"]), "seed": int(seed)},
                                     arm=ADAM))
        sgd = cfg["sgd"]
        for b in sgd["batch_sizes"]:
            out.append(contract.labelled({**common, "optimizer": {"name": "sgd", "lr": float(sgd["lr"])},
                                          "batch_size": int(b), "sharpness_every": int(sgd["sharpness_every"]),
                                          "seed": int(seed)}, arm=SGD))
        warm = cfg["warmup"]
        out.append(contract.labelled({**common, "optimizer": {"name": "sgd", "lr": float(warm["lr"])},
                                      "steps": int(warm["steps"]), "warmup_steps": int(warm["steps"]),
                                      "sharpness_every": int(warm["sharpness_every"]), "seed": int(seed)}, arm=WARMUP))
    return out


def _check(cfg: dict) -> None:
    """The SGD arm's step size must be a GD level (its full-batch run is the SGD comparison's largest
    batch, reused, not re-run), and its batches below the training set."""
    sgd = cfg["sgd"]
    if not any(math.isclose(float(sgd["lr"]), float(v)) for v in cfg["step_sizes"]):
        raise ValueError(f"experiments.{ID}.sgd.lr: {sgd['lr']} is not one of step_sizes {cfg['step_sizes']} (the "
                         "full-batch run at that step size is the SGD comparison's largest batch)")
    big = [int(b) for b in sgd["batch_sizes"] if int(b) >= int(cfg["n_train"])]
    if big:
        raise ValueError(f"experiments.{ID}.sgd.batch_sizes: {big} not below n_train {cfg['n_train']} (the full "
                         "batch is the GD run at sgd.lr, already in the plan)")


class SharpnessTracker:
    """The top Hessian eigenvalue of the loss over (x, y) at the model's current parameters, by
    Lanczos warm-started from the previous call's top Ritz vector (the Hessian moves little in k
    steps, so a few products reach the tolerance where a cold start needs tens). With a diagonal
    preconditioner P (flat), the top eigenvalue of P^-1 H, as that of the symmetric P^-1/2 H P^-1/2."""

    def __init__(self, iters: int, tol: float, seed: int = 0):
        self.iters, self.tol, self.seed = iters, tol, seed
        self.vector: torch.Tensor | None = None

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = LOSS,
                 precondition: torch.Tensor | None = None) -> dict:
        apply = hessian.hvp_fn(model, x, y, loss)
        if precondition is not None:
            scale = precondition.rsqrt()
            plain = apply
            apply = lambda v: scale.to(v.dtype) * plain(scale.to(v.dtype) * v)  # noqa: E731
        p = hessian.parameters(model)[0]
        r = hessian.lanczos(apply, hessian.num_parameters(model), 1, self.iters, "top", self.seed, self.tol,
                            device=p.device, return_vectors=True, start=self.vector)
        self.vector = r.vectors[0]
        return {"sharpness": float(r.values[0]), "residual": float(r.relative_residuals[0]), "n_hvp": int(r.n_hvp),
                "converged": bool(r.converged)}


def execute(settings: Settings, env: RunEnv) -> RunResult:
    """Full-batch GD (or heavy ball) on the first n_train examples; the loss every step, the
    sharpness every `sharpness_every` steps and at the end."""
    data = env.dataset(settings["dataset"]).subset(int(settings["n_train"]))
    return gradient_descent(settings, data.x_train, data.y_train, data.input_shape, data.num_classes, env.device)


def gradient_descent(settings: Settings, x: torch.Tensor, y: torch.Tensor, input_shape, num_classes: int,
                     device: torch.device, track: bool = True) -> RunResult:
    """The run itself; track=False skips the sharpness (benchmarks/bench_eos.py: the same run untracked).

    Full batch unless settings["batch_size"] is below the examples: then mini-batch SGD (batches
    drawn without replacement, reshuffled every epoch by a generator of the run's seed), its
    full-batch loss logged at the sharpness steps only (a full forward pass every step would cost
    more than the step). settings["warmup_steps"] W: the rate rises linearly, eta (t + 1)/W at
    update t, to the optimizer's lr at the last step of the warm-up.

    The losses stay on the device between sharpness steps (no host sync per step: on a GPU the
    host queues the next steps while the last one computes); a divergence is found when they are
    read, every `sharpness_every` steps, and the run is cut at its first diverged step."""
    torch.manual_seed(int(settings["seed"]))
    model = models.build(settings["model"], input_shape, num_classes).to(device)
    opt = optim.make_optimizer(model.parameters(), settings["optimizer"])
    tracker = SharpnessTracker(int(settings["lanczos_iters"]), float(settings["lanczos_tol"]), int(settings["seed"]))
    adam = settings["optimizer"]["name"] == "adam"
    params = list(model.parameters())
    steps, every = int(settings["steps"]), int(settings["sharpness_every"])
    n = len(x)
    batch = int(settings.get("batch_size") or n)
    minibatch = batch < n
    order = torch.Generator().manual_seed(int(settings["seed"]))
    perm, at = torch.randperm(n, generator=order), 0
    warmup, peak = int(settings.get("warmup_steps") or 0), float(settings["optimizer"]["lr"])
    rows, pending, first, diverged_step = [], [], None, None
    for step in range(steps + 1):
        measure = step % every == 0 or step == steps
        full = measure or not minibatch
        loss = hessian.mean_loss(model, x, y, LOSS) if full else None
        if full:
            pending.append((step, loss.detach()))
        if measure:  # read the pending losses: one host sync per `every` steps
            values = torch.stack([v for _, v in pending]).tolist()
            first = values[0] if first is None else first
            for (s, _), value in zip(pending, values):
                rows.append({"step": s, "loss": value})
                if not math.isfinite(value) or value > DIVERGED_FACTOR * first:
                    diverged_step = s
                    break
            pending = []
            if diverged_step is not None:
                break
            if track:
                p = preconditioner(opt, params) if adam else None
                if not adam or p is not None:  # Adam has no preconditioner before its first step
                    rows[-1].update(tracker(model, x, y, precondition=p))
        if step == steps:
            break
        if warmup:
            for group in opt.param_groups:
                group["lr"] = peak * min(1.0, (step + 1) / warmup)
        opt.zero_grad(set_to_none=True)
        if minibatch:
            if at + batch > n:
                perm, at = torch.randperm(n, generator=order), 0
            idx = perm[at:at + batch].to(x.device)
            at += batch
            loss = hessian.mean_loss(model, x[idx], y[idx], LOSS)
        loss.backward()
        opt.step()
    measured = [r for r in rows if "sharpness" in r]
    summary = {"final_loss": rows[-1]["loss"], "measurements": len(measured),
               "hvp_per_measurement": float(np.mean([r["n_hvp"] for r in measured])) if measured else math.nan,
               "max_residual": max((r["residual"] for r in measured), default=math.nan)}
    return RunResult(rows=rows, summary=summary, model=model, diverged=diverged_step is not None,
                     diverged_step=diverged_step)


# --------------------------------------------------------------------------- table

def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    frames = []
    for r in records:
        opt = r.settings["optimizer"]
        beta = (float(opt.get("momentum", 0.0)) if opt["name"] == "momentum" else
                float(opt["betas"][0]) if opt["name"] == "adam" else 0.0)
        thr = adam_threshold(float(opt["lr"]), beta) if opt["name"] == "adam" else threshold(float(opt["lr"]), beta)
        m = r.metrics.sort_values("step")
        cols = [c for c in ("step", "loss", "sharpness", "residual", "n_hvp") if c in m.columns]
        f = m[cols].copy()
        for c in ("sharpness", "residual", "n_hvp"):
            if c not in f.columns:
                f[c] = np.nan
        n_train = int(r.settings["n_train"])
        f = f.assign(arm=r.labels.get("arm", GD), lr=float(opt["lr"]), beta=beta, seed=int(r.settings["seed"]),
                     batch_size=min(int(r.settings.get("batch_size") or n_train), n_train),
                     warmup_steps=int(r.settings.get("warmup_steps") or 0),
                     threshold=thr, two_over_eta=2.0 / float(opt["lr"]),
                     steps=int(r.settings["steps"]), diverged=bool(r.diverged))
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_summary(run: pd.DataFrame, late_fraction: float) -> dict:
    """One run's numbers for the claims, from its rows (one per step, sharpness where measured).

    first_crossing: the first measured step whose sharpness reaches the run's threshold;
    sharpening: the largest sharpness measured before it over the sharpness at step 0 (NaN when
    step 0 is already past the threshold); hover_ratio: the median sharpness over the late part
    (the last `late_fraction` of the steps) over the threshold; rises: the fraction of the late
    part's steps at which the loss went up; long_change: the late part's relative change in loss,
    median of its last tenth over median of its first tenth, minus 1 (falls: < 0)."""
    run = run.sort_values("step")
    thr = float(run["threshold"].iloc[0])
    steps_total = int(run["steps"].iloc[0])
    s = run.dropna(subset=["sharpness"])
    reached = s[s["sharpness"] >= thr]
    first = int(reached["step"].iloc[0]) if len(reached) else None
    before = s[s["step"] < first] if first is not None else s
    s0 = float(s["sharpness"].iloc[0]) if len(s) else math.nan
    sharpening = float(before["sharpness"].max() / s0) if len(before) and s0 > 0 else math.nan
    late_start = steps_total * (1.0 - late_fraction)
    late_s = s[s["step"] >= late_start]
    late = run[run["step"] >= late_start]
    loss = late["loss"].to_numpy()
    tenth = max(len(loss) // 10, 1)
    return {"first_crossing": first if first is not None else math.nan, "sharpness_initial": s0,
            "sharpness_final": float(s["sharpness"].iloc[-1]) if len(s) else math.nan,
            "late_sharpness": float(late_s["sharpness"].median()) if len(late_s) else math.nan,
            "sharpening": sharpening,
            "hover_ratio": float(late_s["sharpness"].median() / thr) if len(late_s) else math.nan,
            "hover_ratio_2_over_eta": float(late_s["sharpness"].median() / float(run["two_over_eta"].iloc[0]))
            if len(late_s) else math.nan,
            "rises": float(np.mean(np.diff(loss) > 0)) if len(loss) > 1 else math.nan,
            "long_change": float(np.median(loss[-tenth:]) / np.median(loss[:tenth]) - 1.0) if len(loss) > 1 else math.nan,
            "max_residual": float(s["residual"].max()) if len(s) else math.nan,
            "hvp_per_measurement": float(s["n_hvp"].mean()) if len(s) else math.nan}


def summaries(table: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """One row per run (arm, lr, seed) with run_summary's numbers; diverged runs kept, flagged."""
    rows = []
    table = table if "batch_size" in table.columns else table.assign(batch_size=0)
    for (arm, lr, batch, seed), run in table.groupby(["arm", "lr", "batch_size", "seed"], sort=False):
        rows.append({"arm": arm, "lr": lr, "batch_size": batch, "seed": seed, "beta": float(run["beta"].iloc[0]),
                     "threshold": float(run["threshold"].iloc[0]), "diverged": bool(run["diverged"].iloc[0]),
                     **run_summary(run, float(cfg["late_fraction"]))})
    return pd.DataFrame(rows)


def sgd_by_batch(summary: pd.DataFrame, lr: float) -> pd.DataFrame:
    """The SGD comparison at step size lr: one row per (seed, batch size), the mini-batch SGD runs and
    the full-batch GD run at the same lr (the largest batch), with the late median sharpness and its
    ratio to 2/eta (`ratio`); a diverged run's ratio is the spike cap (never dropped)."""
    at = summary[np.isclose(summary["lr"].astype(float), float(lr)) & summary["arm"].isin([SGD, GD])]
    out = at[["seed", "batch_size", "arm", "late_sharpness", "diverged"]].copy()
    out["ratio"] = np.where(at["diverged"], SPIKE_CAP, at["late_sharpness"] * float(lr) / 2.0)
    return out.sort_values(["seed", "batch_size"]).reset_index(drop=True)


def sgd_largest_ratio(by_batch: pd.DataFrame) -> pd.Series:
    """Per seed, the largest late sharpness / (2/eta) over its mini-batch runs (the full batch left out):
    every batch size stays below 2/eta when this does."""
    return by_batch[by_batch["arm"] == SGD].groupby("seed")["ratio"].max()


def batch_slope(by_batch: pd.DataFrame) -> pd.Series:
    """Per seed, the least-squares slope of log(late median sharpness) against log2(batch size) over its
    batch sizes, the full batch included (> 0: the sharpness rises with the batch); NaN for a seed with
    fewer than two finite points or a diverged run."""
    out = {}
    for seed, g in by_batch.groupby("seed"):
        ok = np.isfinite(g["late_sharpness"]) & (g["late_sharpness"] > 0) & ~g["diverged"].astype(bool)
        if g["diverged"].any() or ok.sum() < 2:
            out[seed] = math.nan
            continue
        out[seed] = float(np.polyfit(np.log2(g.loc[ok, "batch_size"].astype(float)),
                                     np.log(g.loc[ok, "late_sharpness"]), 1)[0])
    return pd.Series(out, dtype=float)


def warmup_ratio(summary: pd.DataFrame) -> pd.DataFrame:
    """Per warm-up run: the sharpness at its last step (the end of the warm-up, where the rate reaches its
    target eta) over 2/eta of the target, and the same at step 0 (the target rate's stability at
    initialization); a diverged run's end ratio is the spike cap."""
    w = summary[summary["arm"] == WARMUP]
    return pd.DataFrame({"seed": w["seed"].to_numpy(), "lr": w["lr"].to_numpy(),
                         "end": np.where(w["diverged"], SPIKE_CAP, w["sharpness_final"] * w["lr"] / 2.0),
                         "initial": (w["sharpness_initial"] * w["lr"] / 2.0).to_numpy(),
                         "diverged": w["diverged"].to_numpy()})


# --------------------------------------------------------------------------- figures

def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    t = table[table["arm"].isin([GD, MOMENTUM, ADAM])]
    panels = [(GD, lr) for lr in sorted(t.loc[t["arm"] == GD, "lr"].unique())]
    panels += [(MOMENTUM, lr) for lr in sorted(t.loc[t["arm"] == MOMENTUM, "lr"].unique())]
    panels += [(ADAM, lr) for lr in sorted(t.loc[t["arm"] == ADAM, "lr"].unique())]
    seeds = sorted(t["seed"].unique())
    colors = dict(zip(seeds, plots.palette(len(seeds))))

    # Cohen et al.'s Figure 1: the loss (top) and the sharpness (bottom) against the step, one column
    # per step size, the threshold dashed; heavy ball in its own columns, with both thresholds; Adam
    # last, its preconditioned sharpness against its own threshold (2/eta is 19x below it)
    fig, axes = plots.figure(ncols=len(panels), nrows=2, width=2.9, height=2.5, layout="constrained")
    for k, (arm, lr) in enumerate(panels):
        p = t[(t["arm"] == arm) & (t["lr"] == lr)]
        beta = float(p["beta"].iloc[0])
        for seed, run in p.groupby("seed"):
            axes[0][k].plot(run["step"], run["loss"], lw=0.7, color=colors[seed], label=f"seed {seed}")
            s = run.dropna(subset=["sharpness"])
            axes[1][k].plot(s["step"], s["sharpness"], lw=0.9, marker=".", ms=2, color=colors[seed])
        if arm != ADAM:
            axes[1][k].axhline(2.0 / lr, color="k", ls="--", lw=0.9, label="2/eta")
        if arm == MOMENTUM:
            axes[1][k].axhline(threshold(lr, beta), color="C3", ls="--", lw=0.9, label="(2+2 beta)/eta")
        if arm == ADAM:
            axes[1][k].axhline(adam_threshold(lr, beta), color="C3", ls="--", lw=0.9,
                               label="(2+2 beta1)/((1-beta1) eta)")
        end = int(p["steps"].max())
        for ax in (axes[0][k], axes[1][k]):
            ax.axvspan(end * (1.0 - float(cfg["late_fraction"])), end, color="0.9", lw=0, zorder=0)
        title = {GD: f"GD, eta = {lr:g}", MOMENTUM: f"heavy ball beta = {beta:g}, eta = {lr:g}",
                 ADAM: f"Adam beta1 = {beta:g}, eta = {lr:g}"}[arm]
        axes[0][k].set(title=title, ylabel="training loss" if k == 0 else "")
        axes[1][k].set(xlabel="step", ylabel="sharpness (top Hessian eigenvalue)" if k == 0 else
                       "preconditioned sharpness (of P^-1 H)" if arm == ADAM else "")
        axes[1][k].legend(loc="lower right")
    axes[0][0].legend(loc="upper right")
    plots.save(fig, outdir, "loss_and_sharpness",
               note=f"{cfg['dataset']}, first {cfg['n_train']} examples, tanh MLP {cfg['model'].get('hidden')}, square loss, "
                    f"full batch; sharpness by warm-started Lanczos every {cfg['sharpness_every']} steps; one line per "
                    f"seed; grey: the late part (last {float(cfg['late_fraction']):.0%}) the hovering claims read")

    # every run on one scale: sharpness over its own threshold, and the late medians per step size
    s = summaries(t, cfg)
    fig, axes = plots.figure(ncols=2, width=4.2, height=3.2, layout="constrained")
    ax = axes[0][0]
    names = {GD: "GD", MOMENTUM: "heavy ball", ADAM: "Adam"}
    labels = {key: f"{names[key[0]]} {key[1]:g}" for key in panels}
    pal = dict(zip(panels, plots.palette(len(panels))))
    for (arm, lr, seed), run in t.dropna(subset=["sharpness"]).groupby(["arm", "lr", "seed"]):
        ax.plot(run["step"], run["sharpness"] / run["threshold"], lw=0.7, color=pal[(arm, lr)],
                label=labels[(arm, lr)] if seed == seeds[0] else None)
    ax.axhline(1.0, color="k", ls="--", lw=0.9)
    ax.axhspan(float(cfg["hover_low"]), float(cfg["hover_high"]), color="0.85", lw=0, zorder=0)
    ax.set(xlabel="step", ylabel="sharpness / stability threshold", title="every run, on the scale of its threshold")
    ax.legend(loc="lower right")
    ax = axes[0][1]
    s = s.assign(setting=[labels[(a, lr)] for a, lr in zip(s["arm"], s["lr"])])
    sns.pointplot(s, x="setting", y="hover_ratio", errorbar=plots.BAND, linestyle="none", color="C0", ax=ax,
                  order=[labels[p] for p in panels], markersize=5)
    sns.stripplot(s, x="setting", y="hover_ratio", color="0.4", size=3, ax=ax, order=[labels[p] for p in panels])
    ax.axhspan(float(cfg["hover_low"]), float(cfg["hover_high"]), color="0.85", lw=0, zorder=0)
    ax.axhline(1.0, color="k", ls="--", lw=0.9)
    ax.set(xlabel="", ylabel="late median sharpness / threshold", title="hovering band (grey)")
    ax.tick_params(axis="x", rotation=30)
    plots.save(fig, outdir, "sharpness_over_threshold",
               note=f"threshold 2/eta (GD), (2+2 beta)/eta (heavy ball) or (2+2 beta1)/((1-beta1) eta) (Adam, of the "
                    f"preconditioned sharpness); right: per seed (grey) and mean with "
                    f"{plots.BAND_NOTE}")
    _sgd_warmup_figure(table, cfg, outdir)


def _sgd_warmup_figure(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    """Left: mini-batch SGD's sharpness against the step at each batch size, with the full-batch run at
    the same eta, 2/eta dashed. Right: the warm-up runs' sharpness against 2/eta of the current rate
    (falling as the rate rises) and of the target (dashed)."""
    lr = float(cfg["sgd"]["lr"])
    sgd = table[np.isclose(table["lr"], lr) & table["arm"].isin([SGD, GD])].dropna(subset=["sharpness"])
    warm = table[table["arm"] == WARMUP].dropna(subset=["sharpness"])
    if sgd.empty and warm.empty:
        return
    fig, axes = plots.figure(ncols=2, width=4.2, height=3.2, layout="constrained")
    ax = axes[0][0]
    sizes = sorted(sgd["batch_size"].unique())
    pal = dict(zip(sizes, plots.palette(len(sizes))))
    for (b, seed), run in sgd.groupby(["batch_size", "seed"]):
        ax.plot(run["step"], run["sharpness"], lw=0.8, color=pal[b],
                label=(f"B = {b}" + (" (full batch, GD)" if (run["arm"] == GD).all() else ""))
                if seed == sgd["seed"].min() else None)
    ax.axhline(2.0 / lr, color="k", ls="--", lw=0.9, label="2/eta")
    ax.set(xlabel="step", ylabel="sharpness (full-batch Hessian)", title=f"SGD at eta = {lr:g}, by batch size")
    ax.legend(loc="lower right")
    ax = axes[0][1]
    seeds = sorted(warm["seed"].unique())
    colors = dict(zip(seeds, plots.palette(len(seeds))))
    for seed, run in warm.groupby("seed"):
        ax.plot(run["step"], run["sharpness"], lw=0.8, marker=".", ms=2, color=colors[seed], label=f"seed {seed}")
    if not warm.empty:
        w_lr, w_steps = float(warm["lr"].iloc[0]), int(warm["warmup_steps"].iloc[0])
        steps = np.arange(1, w_steps + 1)
        ax.plot(steps, 2.0 / (w_lr * steps / w_steps), color="0.5", lw=0.9, label="2/eta_t (current rate)")
        ax.axhline(2.0 / w_lr, color="k", ls="--", lw=0.9, label="2/eta (target)")
        ax.set_ylim(0, 2.5 * max(float(warm["sharpness"].max()), 2.0 / w_lr))
        ax.set(title=f"GD, linear warm-up to eta = {w_lr:g} over {w_steps} steps")
    ax.set(xlabel="step", ylabel="sharpness")
    ax.legend(loc="upper right")
    plots.save(fig, outdir, "sgd_and_warmup",
               note=f"sharpness of the full-batch training loss by warm-started Lanczos (SGD every "
                    f"{cfg['sgd']['sharpness_every']} steps, warm-up every {cfg['warmup']['sharpness_every']}); one line "
                    "per seed")


# --------------------------------------------------------------------------- claims

def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    s = summaries(table, cfg)
    ok = s[~s["diverged"]]
    gd = ok[ok["arm"] == GD]
    # the hovering claims never drop a diverged run (run_record.DIVERGED_POLICY): it did not settle at
    # its threshold, it left it; its ratio is scored at the spike cap
    scored = s.assign(hover_ratio=np.where(s["diverged"], SPIKE_CAP, s["hover_ratio"]))
    gd_all, hb, adam = (scored[scored["arm"] == arm] for arm in (GD, MOMENTUM, ADAM))
    low, high = float(cfg["hover_low"]), float(cfg["hover_high"])
    centre, margin = (low + high) / 2, (high - low) / 2
    late = f"the last {float(cfg['late_fraction']):.0%} of {cfg['steps']} steps"
    n_div = int(s["diverged"].sum())
    div = f"; {n_div} diverged run(s) left out (run_record.DIVERGED_POLICY)" if n_div else ""
    tracking = (f"Lanczos warm-started every {cfg['sharpness_every']} steps, relative residual <= {cfg['lanczos_tol']:g} "
                f"(largest recorded {s['max_residual'].max():.2g}), {s['hvp_per_measurement'].mean():.1f} products per "
                "measurement")
    band = f"[{low:g}, {high:g}]"
    out = [stats.claim(
        ID, "progressive_sharpening",
        f"Progressive sharpening: under full-batch GD the top Hessian eigenvalue rises (by more than "
        f"{float(cfg['sharpening_min']):g}x) before it first reaches 2/eta",
        "largest sharpness measured before the first step at which it reaches 2/eta, over the sharpness at step 0; "
        "mean over every GD run (step sizes and seeds), t interval",
        stats.mean(gd["sharpening"]), float(cfg["sharpening_min"]), ">", kind="test",
        paper_value="rises until it reaches 2/eta (Cohen et al. 2021, Fig. 1)",
        note="per step size: " + ", ".join(f"{lr:g}: {g['sharpening'].mean():.2f} (first reaches 2/eta at step "
                                          f"{g['first_crossing'].median():.0f}, median)" for lr, g in gd.groupby("lr"))
             + f"; {tracking}{div}")]

    def hover(claim_id: str, runs: pd.DataFrame, what: str, thr_name: str, paper: str, steps=None) -> Claim:
        window = late if steps is None else f"the last {float(cfg['late_fraction']):.0%} of {steps} steps"
        return stats.claim(
            ID, claim_id,
            f"{what}: the sharpness hovers at {thr_name}: its median over the late part of the run, divided by "
            f"{thr_name}, lies within {band}",
            f"median sharpness over {window} / ({thr_name}), minus {centre:g}; mean over runs, t interval; equivalence "
            f"margin {margin:g} (the band {band})",
            stats.mean(runs["hover_ratio"] - centre), margin, "within", kind="test", paper_value=paper,
            note=f"ratios: {', '.join(('diverged' if d else f'{v:.3f}') for v, d in zip(runs['hover_ratio'], runs['diverged']))}"
                 f"; {tracking}" + (f"; {int(runs['diverged'].sum())} diverged run(s) scored at the spike cap "
                                    f"{SPIKE_CAP:g} (run_record.DIVERGED_POLICY: never dropped; eta of each: "
                                    f"{', '.join(f'{v:g}' for v in runs.loc[runs['diverged'], 'lr'])})"
                                    if runs["diverged"].any() else ""))

    out.append(hover(PRIMARY, gd_all, "Full-batch GD at every step size", "2/eta",
                     "1: hovers just above 2/eta (Cohen et al. 2021)"))
    for lr in cfg["step_sizes"]:
        out.append(hover(f"sharpness_hovers_{lr_label(float(lr))}", gd_all[np.isclose(gd_all["lr"], float(lr))],
                         f"Full-batch GD at eta = {float(lr):g}", "2/eta", "1 (Cohen et al. 2021)"))
    beta = float(cfg["momentum_beta"])
    hb_lrs = ", ".join(f"{float(v):g}" for v in cfg["momentum_step_sizes"])
    out.append(hover("momentum_threshold", hb, f"Heavy-ball momentum beta = {beta:g} at every step size ({hb_lrs})",
                     "(2 + 2 beta)/eta",
                     f"1 at (2 + 2 beta)/eta = {2 + 2 * beta:g}/eta (Cohen et al. 2021, Appendix); hovering at 2/eta "
                     f"instead would be a ratio of {1 / (1 + beta):.2f}", steps=cfg["momentum_steps"]))
    b1, a_lr = float(cfg["adam_beta1"]), float(cfg["adam_lr"])
    out.append(hover("adam_threshold", adam, f"Adam (beta1 = {b1:g}, eta = {a_lr:g}), its preconditioned sharpness "
                     "(top eigenvalue of P^-1 H, P = diag(sqrt(v_hat) + eps))", "(2 + 2 beta1)/((1 - beta1) eta)",
                     f"1 at (2 + 2 beta1)/((1 - beta1) eta) = {(2 + 2 * b1) / (1 - b1):.3g}/eta = "
                     f"{adam_threshold(a_lr, b1):.4g} (Cohen et al. 2022)", steps=cfg["adam_steps"]))
    out += sgd_claims(s, cfg, late)
    out.append(warmup_claim(s, cfg))
    out.append(stats.claim(
        ID, "loss_nonmonotone_short",
        f"At the edge of stability the training loss is non-monotone over short windows: it goes up at more than "
        f"{float(cfg['rises_min']):.0%} of the late part's steps (gradient descent below its threshold never raises it)",
        f"fraction of the steps in {late} at which the full-batch loss rose; mean over GD runs, t interval",
        stats.mean(gd["rises"]), float(cfg["rises_min"]), ">", kind="test",
        paper_value="non-monotone (Cohen et al. 2021, Fig. 1)",
        note="per step size: " + ", ".join(f"{lr:g}: {g['rises'].mean():.3f}" for lr, g in gd.groupby("lr")) + div))
    out.append(stats.claim(
        ID, "loss_falls_long",
        "... yet it falls over long windows: over the late part the loss ends lower than it starts",
        f"median loss over the last tenth of {late} / median over its first tenth, minus 1; mean over GD runs, t interval",
        stats.mean(gd["long_change"]), 0.0, "<", kind="test",
        paper_value="falls consistently over long timescales (Cohen et al. 2021)",
        note="per step size: " + ", ".join(f"{lr:g}: {g['long_change'].mean():+.3f}" for lr, g in gd.groupby("lr")) + div))
    return out


def sgd_claims(summary: pd.DataFrame, cfg: dict, late: str) -> list[Claim]:
    """Mini-batch SGD at one step size (Cohen et al. 2021, SGD appendix): its late sharpness stays
    below 2/eta at every batch size, and rises with the batch size up to the full batch (GD)."""
    lr = float(cfg["sgd"]["lr"])
    by = sgd_by_batch(summary, lr)
    largest, slope = sgd_largest_ratio(by), batch_slope(by)
    sizes = sorted(int(b) for b in by["batch_size"].unique())
    table_note = "; ".join(f"B = {b}: " + ", ".join("diverged" if d else f"{v:.3f}" for v, d in
                                                    zip(g["ratio"], g["diverged"]))
                           for b, g in by.groupby("batch_size"))
    paper = "below 2/eta, and lower the smaller the batch (Cohen et al. 2021, appendix on SGD; Jastrzebski et al. 2020)"
    return [
        stats.claim(
            ID, "sgd_below_2_over_eta",
            f"Mini-batch SGD at eta = {lr:g} does not reach the edge: at every batch size of "
            f"{[int(b) for b in cfg['sgd']['batch_sizes']]} the sharpness stays below 2/eta",
            f"per seed, the largest over its mini-batch runs of the median sharpness over {late} / (2/eta); mean over "
            "seeds, t interval",
            stats.mean(largest), 1.0, "<", kind="test", paper_value=paper,
            note=f"late median / (2/eta) per run, {table_note} (B = {sizes[-1]}: the full-batch GD run at this eta)"),
        stats.claim(
            ID, "sgd_sharpness_rises_with_batch",
            f"... and the sharpness SGD settles at rises with the batch size (B = {', '.join(map(str, sizes))}, "
            "the last the full batch), at the fixed step size",
            f"per seed, the least-squares slope of log(median sharpness over {late}) against log2(B), over the batch "
            "sizes and the full batch; mean over seeds, t interval",
            stats.mean(slope), 0.0, ">", kind="test", paper_value=paper,
            note="slope per seed: " + ", ".join(f"{k}: {v:+.3f}" for k, v in slope.items())
                 + " (a slope of 1 would be sharpness proportional to B)")]


def warmup_claim(summary: pd.DataFrame, cfg: dict) -> Claim:
    """Full-batch GD with linear warm-up to eta: the sharpness where the warm-up ends is below 2/eta, the
    target rate is stable on arrival (the mechanism warmup_large_batch's warm-up relies on)."""
    w = warmup_ratio(summary)
    lr, steps = float(cfg["warmup"]["lr"]), int(cfg["warmup"]["steps"])
    return stats.claim(
        ID, "warmup_sharpness_below_target",
        f"With linear warm-up to eta = {lr:g} over {steps} full-batch steps, the sharpness at the end of the warm-up "
        f"is below 2/eta = {2 / lr:g} of the target rate: the rate is stable when it arrives",
        "sharpness at the last warm-up step / (2/eta of the target); mean over seeds, t interval",
        stats.mean(w["end"]), 1.0, "<", kind="test",
        paper_value="below 1: warm-up lowers the sharpness until the target rate is stable (Gilmer et al. 2022; "
                    "Kalra & Barkeshli 2023)",
        note="end of warm-up per seed: " + ", ".join("diverged" if d else f"{v:.3f}" for v, d in zip(w["end"], w["diverged"]))
             + "; at step 0 (the target rate without warm-up): " + ", ".join(f"{v:.3f}" for v in w["initial"])
             + " (above 1: the target rate is unstable at initialization); ties to warmup_large_batch")

