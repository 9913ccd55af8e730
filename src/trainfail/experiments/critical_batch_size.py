"""critical_batch_size: steps to a target loss against batch size, and the gradient noise scale
(lecture 1.2, extended by McCandlish et al. 2018, "An Empirical Model of Large-Batch Training").

The lecture: a larger batch makes fewer, less noisy updates per epoch. McCandlish et al. make
the trade measurable. The steps S and the examples E (= S x B) needed to reach a target training
loss trade off as

    S(B) = S_min (1 + B_crit / B),        E(B) = E_min (1 + B / B_crit),   E_min = S_min B_crit,

so a batch far below the critical batch B_crit wastes updates (S ~ S_min B_crit / B: perfect
scaling) and a batch far above it wastes examples (S ~ S_min: no further gain). And B_crit is
predicted by the gradient noise scale B_simple = tr(Sigma) / |G|^2 (G the full-batch gradient,
Sigma the per-example gradients' covariance), which is measured on one run, without sweeping B.

What runs:
  the S(B) runs   for each batch size of `budgets` (8 to the full batch), plain SGD for its step
                  budget, evaluated on the whole training set every `eval_every` updates; each at
                  its own rate from `tuning.lrs`, chosen on tuning seeds disjoint from the claim's
                  seeds (trainfail.training.tuning: lowest final training loss at the batch size's budget,
                  the suite's one criterion close to "fewest steps to the target"); the claim
                  seeds of one batch size are one cell (trained stacked);
  the noise runs  the runs of batch size `noise.batch_size` (one of `budgets`) are this module's
                  own task: the same training at that batch size's tuned rate, measuring the
                  noise scale at `noise.points` steps (an on_eval hook) two ways on the same
                  parameters: exactly, from every training example's gradient (torch.func's
                  vmap of grad: `exact_noise`), and by the paper's two-batch estimator (its
                  Appendix A: unbiased |G|^2 and tr(Sigma) from a small and a big batch's
                  gradient norms, `two_batch`). They are also that batch size's S(B) runs.

  the timing runs one per batch size (kind "timing"): the same network, data, loss and tuned rate,
                  its time per update measured on the device that trained the grid (measure.timing:
                  `timing.warmup` updates untimed, then `timing.repeats` blocks of back-to-back
                  updates, the device synchronised before each clock read). Time to the target
                  T(B) = S(B) x time per update(B) (`time_to_target`): the lecture's "larger batch,
                  faster epoch" as a wall-clock optimum on the machine that ran it.

Why a timing run, not the S(B) runs' own clocks: those runs are trained stacked (every seed of a
batch size in one network), evaluate the whole training and test sets every `eval_every` updates,
and the noise runs compute every example's gradient at their noise steps; their wall time per
step measures all of that, not an update. T(B) is the time of the updates alone, of one run,
excluding warm-up and evaluation.

Steps to the target: the first evaluation at or below `target_loss`, linearly interpolated with
the evaluation before it; a run that never reaches it within its budget (or diverged) counts as
never (run_record.NEVER) and is left out of the fit, with a note. The fit (`fit_steps`): least squares
on log S over B_crit (S_min in closed form for each), per claim seed.
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
from trainfail.training import models, optim, train, tuning
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings, labelled
from trainfail.core.run_record import NEVER, RunRecord, RunResult

ID = "critical_batch_size"
SECTION = contract.BATCH_SIZE
ORDER = 5
TITLE = "Critical batch size: steps to a target loss against batch size, and the gradient noise scale"

CRITERION = "final_train_loss"  # the suite's criterion nearest to "fewest steps to the target loss"
# The claim that decides McCandlish et al.'s result by its mechanism: that the critical batch, found
# by training at every batch size, is predicted by the gradient noise at one (B_simple within the
# paper's factor of B_crit). The fit's R^2 only says S(B) has the formula's shape; the rise of
# B_simple is a secondary prediction of the same model.
PRIMARY = "noise_scale_predicts_critical_batch"
FIGURE_CLAIMS = {"steps_vs_batch_size": "steps_fit_r2", "noise_scale": PRIMARY}

NOISE_COLUMNS = ("g2_exact", "trace_exact", "b_simple", "g2_two_batch", "trace_two_batch", "b_simple_two_batch")


# --- the gradient noise scale ----------------------------------------------------------------------

def _functional(model: torch.nn.Module, loss: str):
    """(params, buffers, loss(params, x, y)): the model's mean loss on (x, y) as a function of its
    parameters (torch.func), touching neither the module's .grad nor any random stream."""
    from torch.func import functional_call

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    f = train.loss_fn(loss)

    def mean_loss(p, x, y):
        return f(functional_call(model, (p, buffers), (x,)), y)

    return params, mean_loss


def per_example_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
                      chunk: int = 2048):
    """Each example's loss gradient, flattened: yields (m, P) blocks over `x` in chunks (vmap of grad).
    Only for networks whose output for an example does not depend on the others' (no train-mode
    batch norm): a per-example gradient exists only there."""
    from torch.func import grad, vmap

    params, mean_loss = _functional(model, loss)
    one = lambda p, xi, yi: mean_loss(p, xi.unsqueeze(0), yi.unsqueeze(0))
    per = vmap(grad(one), in_dims=(None, 0, 0))
    for i in range(0, len(x), chunk):
        g = per(params, x[i:i + chunk], y[i:i + chunk])
        yield torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], 1)


def noise_from_grads(blocks) -> tuple[float, float, float]:
    """(|G|^2, tr(Sigma), B_simple) from per-example gradients (blocks of rows): G their mean,
    Sigma their covariance over the set (the distribution a batch is drawn from, with replacement):
    tr(Sigma) = mean |g_i - G|^2 = mean |g_i|^2 - |G|^2. In float64."""
    total, sq, n = None, 0.0, 0
    for g in blocks:
        g = g.double()
        total = g.sum(0) if total is None else total + g.sum(0)
        sq += float((g * g).sum())
        n += len(g)
    mean = total / n
    g2 = float(mean @ mean)
    trace = sq / n - g2
    return g2, trace, trace / g2 if g2 > 0 else math.nan


def exact_noise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy"):
    """B_simple over the whole set (x, y), exactly: (|G|^2, tr(Sigma), B_simple)."""
    return noise_from_grads(per_example_grads(model, x, y, loss))


def two_batch(batch_grad, n: int, small: int, big: int, draws: int, generator: torch.Generator):
    """McCandlish et al.'s Appendix A estimator: for a batch of B examples drawn with replacement,
    E|G_B|^2 = |G|^2 + tr(Sigma)/B; from a small and a big batch's gradients (batch_grad(indices)
    -> the mean gradient over them, flat),
        |G|^2    ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small),
        tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big),
    both unbiased; each averaged over `draws` independent pairs, then their ratio (the paper
    averages numerator and denominator separately too). Returns (|G|^2, tr(Sigma), B_simple)."""
    if not 1 <= small < big:
        raise ValueError(f"the two-batch estimator needs 1 <= small < big, got small={small}, big={big}")
    g2s, traces = [], []
    for _ in range(int(draws)):
        gs = batch_grad(torch.randint(n, (small,), generator=generator)).double()
        gb = batch_grad(torch.randint(n, (big,), generator=generator)).double()
        ns, nb = float(gs @ gs), float(gb @ gb)
        g2s.append((big * nb - small * ns) / (big - small))
        traces.append((ns - nb) / (1.0 / small - 1.0 / big))
    g2, trace = float(np.mean(g2s)), float(np.mean(traces))
    return g2, trace, trace / g2 if g2 > 0 else math.nan


def model_batch_grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy"):
    """batch_grad for `two_batch` on a model: the mean loss gradient over x[idx], flattened (by
    torch.autograd.grad: the module's .grad is left alone)."""
    f = train.loss_fn(loss)
    params = [p for p in model.parameters() if p.requires_grad]

    def batch_grad(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(x.device)
        with torch.enable_grad():
            grads = torch.autograd.grad(f(model(x[idx]), y[idx]), params)
        return torch.cat([g.reshape(-1) for g in grads])

    return batch_grad


def noise_columns(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, noise: dict,
                  seed: int, step: int) -> dict:
    """Both estimates on the model's current parameters (its training set x, y): the columns of an
    evaluation row. The two-batch draws use their own generator (seed, step): training's random
    streams are untouched."""
    g2, trace, b = exact_noise(model, x, y, loss)
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    g2t, tracet, bt = two_batch(model_batch_grad(model, x, y, loss), len(x), int(noise["small"]),
                                int(noise["big"]), int(noise["draws"]), gen)
    return dict(zip(NOISE_COLUMNS, (g2, trace, b, g2t, tracet, bt)))


def noise_steps(steps: int, points: int, eval_every: int) -> list[int]:
    """`points` measurement steps from 0 to `steps`, evenly spaced, on the evaluation grid (the
    on_eval hook runs only there; the last step is always evaluated)."""
    at = {min(int(round(i * steps / max(points - 1, 1) / eval_every)) * eval_every, steps) for i in range(points)}
    return sorted(at | {steps} if points > 1 else at)


# --- steps to the target, and the fit --------------------------------------------------------------

def steps_to_target(steps, losses, target: float) -> float:
    """The first step at which the training loss is at or below `target`, interpolated linearly
    between that evaluation and the one before it; NEVER if no evaluation reaches it."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(losses, dtype=float)
    ok = np.isfinite(v)
    s, v = s[ok], v[ok]
    hit = np.flatnonzero(v <= target)
    if not len(hit):
        return NEVER
    i = int(hit[0])
    if i == 0 or v[i - 1] == v[i]:
        return float(s[i])
    return float(s[i - 1] + (s[i] - s[i - 1]) * (v[i - 1] - target) / (v[i - 1] - v[i]))


def fit_steps(batch_sizes, steps) -> dict:
    """S(B) = S_min (1 + B_crit / B) fitted by least squares on log S: for each B_crit, log S_min is
    the mean of log S - log(1 + B_crit/B); B_crit minimises the residual (bounded search over
    [min B / 1000, max B x 1000] in log B_crit). Points that never reached the target are left out.
    Returns s_min, b_crit, e_min, r2 (on log S), n (points used) and at_bound (B_crit at a bound:
    S(B) shows no knee in the range)."""
    from scipy.optimize import minimize_scalar

    b = np.asarray(batch_sizes, dtype=float)
    s = np.asarray(steps, dtype=float)
    ok = np.isfinite(s) & (s > 0)
    b, s = b[ok], s[ok]
    out = {"s_min": math.nan, "b_crit": math.nan, "e_min": math.nan, "r2": math.nan, "n": int(len(b)),
           "at_bound": False}
    if len(np.unique(b)) < 3:
        return out
    logs = np.log(s)

    def sse(log_bc: float) -> tuple[float, float]:
        shape = np.log1p(np.exp(log_bc) / b)
        log_smin = float(np.mean(logs - shape))
        return float(np.sum((logs - log_smin - shape) ** 2)), log_smin

    lo, hi = math.log(b.min() / 1000), math.log(b.max() * 1000)
    grid = np.linspace(lo, hi, 200)
    start = int(np.argmin([sse(g)[0] for g in grid]))
    bracket = (grid[max(start - 1, 0)], grid[min(start + 1, len(grid) - 1)])
    best = minimize_scalar(lambda g: sse(g)[0], bounds=bracket, method="bounded", options={"xatol": 1e-8})
    err, log_smin = sse(best.x)
    total = float(np.sum((logs - logs.mean()) ** 2))
    s_min, b_crit = math.exp(log_smin), math.exp(best.x)
    return {"s_min": s_min, "b_crit": b_crit, "e_min": s_min * b_crit, "r2": 1 - err / total if total > 0 else math.nan,
            "n": int(len(b)), "at_bound": bool(start in (0, len(grid) - 1))}


def steps_curve(fit: dict, batch_sizes) -> np.ndarray:
    b = np.asarray(batch_sizes, dtype=float)
    return fit["s_min"] * (1 + fit["b_crit"] / b)


# --- the plan -------------------------------------------------------------------------------------

def _base(cfg: dict, batch_size: int, steps: int) -> dict:
    ds = cfg["dataset"]
    return {"dataset": ds["name"], "model": ds["model"], "optimizer": dict(cfg["optimizer"]),
            "batch_size": int(batch_size), "steps": int(steps), "eval_every": int(cfg["eval_every"]), "log_points": 2}


def _check(cfg: dict) -> None:
    sizes = [int(b["batch_size"]) for b in cfg["budgets"]]
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"experiments.{ID}.budgets: each batch size once, got {sizes}")
    if int(cfg["noise"]["batch_size"]) not in sizes:
        raise ValueError(f"experiments.{ID}.noise.batch_size: {cfg['noise']['batch_size']} is not one of the "
                          f"budgets' batch sizes {sizes} (the noise runs are that batch size's S(B) runs)")
    if cfg["dataset"]["model"].get("norm", "none") == "batch":
        raise ValueError(f"experiments.{ID}.dataset.model.norm: batch norm in train mode has no per-example "
                          "gradients (an example's output depends on its batch): the exact noise scale needs none")


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    """Per batch size: its sweep (tuning seeds, labelled kind "sweep") and its runs on the claim
    seeds at the chosen rate (kind "run"): tuned runs, or, at noise.batch_size, the noise runs."""
    _check(cfg)
    seeds = [int(s) for s in ctx.seeds_for(cfg)]
    noise_b = int(cfg["noise"]["batch_size"])
    noise = {k: int(cfg["noise"][k]) for k in ("points", "small", "big", "draws")}
    clock = {k: int(cfg["timing"][k]) for k in ("repeats", "warmup", "block", "block_examples")}
    out = []
    for budget in cfg["budgets"]:
        b = int(budget["batch_size"])
        plan = tuning.plan(_base(cfg, b, budget["steps"]), cfg["tuning"]["lrs"], cfg["tuning"]["seeds"], seeds,
                           CRITERION)
        out += [labelled(r, kind="sweep", batch_size=b) for r in plan if not tuning.stage(r)]
        spec = tuning.sweep_of(plan[-1])
        if b == noise_b:
            out += [labelled({"task": ID, "seed": s, "sweep": spec, "noise": noise}, kind="run", batch_size=b)
                    for s in seeds]
        else:
            out += [labelled(r, kind="run", batch_size=b) for r in plan if tuning.stage(r)]
        # one timing run per batch size (its first claim seed: the initialization hardly matters to a timing)
        out.append(labelled({"task": ID, "seed": seeds[0], "sweep": spec, "timing": clock}, kind="timing",
                            batch_size=b))
    return out


def stage(settings: Settings) -> int:
    """The tuned runs, the noise runs and the timing runs train at their sweep's choice: stage 1."""
    return 1 if settings.get("task") in (tuning.TASK, ID) else 0


def execute(settings: Settings, env: RunEnv) -> RunResult:
    """A noise run: the batch size's tuned training, with both noise estimates at its noise steps.
    A timing run: the time per update of that training (`time_updates`)."""
    if ("noise" in settings) == ("timing" in settings):
        raise ValueError(f"a {ID} run is a noise run or a timing run: exactly one of 'noise' and 'timing', "
                         f"got {sorted(settings)}")
    choice = tuning.env_choice(settings, env)
    plain = tuning.at_choice({"base": settings["sweep"]["base"], "seed": settings["seed"]}, choice)
    data = env.dataset(plain["dataset"])
    if "timing" in settings:
        return tuning.with_choice(time_updates(plain, data, env.device, settings["timing"]), choice)
    noise = settings["noise"]
    at = set(noise_steps(int(plain["steps"]), int(noise["points"]), int(plain["eval_every"])))

    def measure(model, step):
        if step not in at:
            return {}
        return noise_columns(model, data.x_train, data.y_train, plain["loss"], noise, settings["seed"], step)

    return tuning.with_choice(train.train(plain, data, env.device, on_eval=measure), choice)


def time_updates(plain: dict, data, device: torch.device, clock: dict) -> RunResult:
    """Seconds per update (forward, backward, step) of the training `plain` describes, on `device`:
    its network, loss, optimizer and batch size on its training set (timing.time_updates: the
    first `warmup` updates untimed, then `repeats` blocks of back-to-back updates, each block timed
    whole with the device synchronised, its time divided by its updates). One row per block."""
    torch.manual_seed(int(plain["seed"]))
    model = models.build(plain["model"], data.input_shape, data.num_classes).to(device)
    opt = optim.make_optimizer(model.parameters(), plain["optimizer"])
    bs = int(plain["batch_size"])
    block = timing.block_size(bs, data.n_train, int(clock["block"]), int(clock["block_examples"]))
    model.train(True)
    times = timing.time_updates(model, opt, data.x_train, data.y_train, bs, int(clock["repeats"]),
                                int(clock["warmup"]), train.loss_fn(plain["loss"]), int(plain["seed"]), block)
    rows = [{"repeat": i, "block": block, "time_per_update": t} for i, t in enumerate(times)]
    return RunResult(rows=rows, summary={"time_per_update": float(np.median(times)), "block": block})


# --- the table -------------------------------------------------------------------------------------

def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    """One row per run (kind "sweep" or "run": batch size, seed, rate, steps to the target, final
    training loss); for the noise runs, one row per measurement (kind "noise": step, training
    loss, both estimates); for the timing runs, one row per timed block (kind "timing": time per
    update, the device and its name)."""
    target = float(cfg["target_loss"])
    rows = []
    for r in records:
        s = r.settings
        plain = s["sweep"]["base"] if s["task"] == ID else s.get("base", s)
        lr = tuning.check(r, ctx.results) if tuning.sweep_of(s) else s["optimizer"]["lr"]
        if r.labels["kind"] == "timing":
            rows += [{"kind": "timing", "batch_size": int(plain["batch_size"]), "seed": int(s["seed"]), "lr": float(lr),
                      "budget": int(plain["steps"]), "run_id": r.run_id, "repeat": int(m.repeat),
                      "block": int(m.block), "time_per_update": float(m.time_per_update),
                      "device": str(r.meta.get("device", "")), "device_name": str(r.meta.get("device_name", ""))}
                     for m in r.metrics.itertuples()]
            continue
        evals = r.metrics.dropna(subset=["train_loss"]) if "train_loss" in r.metrics else r.metrics.iloc[:0]
        reached = NEVER if r.diverged else steps_to_target(evals["step"], evals["train_loss"], target)
        finite = evals[np.isfinite(evals["train_loss"].to_numpy(float))] if len(evals) else evals
        final = float(finite["train_loss"].iloc[0 if r.diverged else -1]) if len(finite) else math.nan
        common = {"batch_size": int(plain["batch_size"]), "seed": int(s["seed"]), "lr": float(lr),
                  "budget": int(plain["steps"]), "run_id": r.run_id}
        rows.append({"kind": r.labels["kind"], **common, "steps_to_target": reached, "train_loss": final,
                     "diverged": bool(r.diverged)})
        if s["task"] == ID and "b_simple" in r.metrics:
            for m in r.metrics.dropna(subset=["b_simple"]).itertuples():
                rows.append({"kind": "noise", **common, "step": int(m.step), "train_loss": float(m.train_loss),
                             "diverged": bool(r.diverged), **{c: float(getattr(m, c)) for c in NOISE_COLUMNS}})
    return pd.DataFrame(rows)


def seed_fits(table: pd.DataFrame) -> pd.DataFrame:
    """The fit per claim seed: seed, s_min, b_crit, e_min, r2, n, at_bound, never (batch sizes
    that did not reach the target)."""
    out = []
    runs_ = table[table["kind"] == "run"]
    for seed, part in runs_.groupby("seed"):
        fit = fit_steps(part["batch_size"], part["steps_to_target"])
        never = sorted(int(b) for b in part.loc[~np.isfinite(part["steps_to_target"].astype(float)), "batch_size"])
        out.append({"seed": int(seed), **fit, "never": never})
    return pd.DataFrame(out, columns=["seed", "s_min", "b_crit", "e_min", "r2", "n", "at_bound", "never"])


def noise_per_seed(table: pd.DataFrame) -> pd.DataFrame:
    """Per seed: B_simple (exact) averaged over training up to the target (geometric mean over the
    measurements at steps up to the noise run's steps to the target; all of them if it never got
    there), and the mean log10 ratio of the two-batch estimate to the exact one over all measurements."""
    noise = table[table["kind"] == "noise"]
    runs_ = table[table["kind"] == "run"]
    out = []
    for seed, part in noise.groupby("seed"):
        b = int(part["batch_size"].iloc[0])
        reached = runs_[(runs_["seed"] == seed) & (runs_["batch_size"] == b)]["steps_to_target"]
        until = float(reached.iloc[0]) if len(reached) else NEVER
        upto = part[part["step"] <= until] if math.isfinite(until) else part
        exact = upto["b_simple"].to_numpy(float)
        exact = exact[np.isfinite(exact) & (exact > 0)]
        ratio = (part["b_simple_two_batch"] / part["b_simple"]).to_numpy(float)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        out.append({"seed": int(seed), "b_simple_mean": float(np.exp(np.mean(np.log(exact)))) if len(exact) else math.nan,
                    "points": int(len(exact)), "log10_two_batch_over_exact": float(np.mean(np.log10(ratio)))
                    if len(ratio) else math.nan})
    return pd.DataFrame(out, columns=["seed", "b_simple_mean", "points", "log10_two_batch_over_exact"])


def time_to_target(table: pd.DataFrame) -> pd.DataFrame:
    """T(B) = S(B) x time per update(B), per claim seed and batch size: the steps to the target of
    the kind "run" rows times the median time per update of that batch size's timing rows (NaN
    where either is missing; NEVER stays NEVER). Columns: seed, batch_size, steps_to_target,
    time_per_update, time_to_target."""
    runs_ = table[table["kind"] == "run"][["seed", "batch_size", "steps_to_target"]]
    clock = table[table["kind"] == "timing"]
    per_update = (clock.groupby("batch_size", as_index=False)["time_per_update"].median() if len(clock)
                  else pd.DataFrame({"batch_size": pd.Series(dtype=int), "time_per_update": pd.Series(dtype=float)}))
    out = runs_.merge(per_update, on="batch_size", how="left")
    out["time_to_target"] = out["steps_to_target"].astype(float) * out["time_per_update"].astype(float)
    return out.sort_values(["seed", "batch_size"]).reset_index(drop=True)


def wall_clock_optimum(times: pd.DataFrame) -> tuple[float, float]:
    """(batch size, seconds): where the geometric mean over seeds of T(B) is smallest, over the
    batch sizes every seed brought to the target (a batch size some seed never brought there is
    not a candidate: its mean would hide the seeds that failed). (NaN, NaN) without one."""
    ok = times[np.isfinite(times["time_to_target"].astype(float))]
    if ok.empty:
        return math.nan, math.nan
    seeds = times["seed"].nunique()
    by = ok.groupby("batch_size")["time_to_target"]
    full = [b for b, g in by if len(g) == seeds]
    if not full:
        return math.nan, math.nan
    geo = {b: float(np.exp(np.mean(np.log(by.get_group(b))))) for b in full}
    best = min(geo, key=geo.get)
    return float(best), geo[best]


def rises(points: pd.DataFrame) -> list[float]:
    """Per seed, Spearman's correlation of the exact B_simple with the step (NaN without spread)."""
    from scipy.stats import spearmanr

    out = []
    for _, part in points.groupby("seed"):
        ok = part[np.isfinite(part["b_simple"].to_numpy(float))]
        flat = len(ok) < 3 or ok["b_simple"].nunique() < 2 or ok["step"].nunique() < 2
        out.append(math.nan if flat else float(spearmanr(ok["step"], ok["b_simple"])[0]))
    return out


# --- figures ---------------------------------------------------------------------------------------

def _mean_fit(runs_: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per batch size the geometric mean of S over the seeds that reached the target, and the fit to it."""
    finite = runs_[np.isfinite(runs_["steps_to_target"].astype(float))]
    g = finite.groupby("batch_size")["steps_to_target"].apply(lambda v: float(np.exp(np.mean(np.log(v)))))
    mean = g.rename("steps").reset_index()
    return mean, fit_steps(mean["batch_size"], mean["steps"])


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    runs_ = table[table["kind"] == "run"].copy()
    runs_["examples_to_target"] = runs_["steps_to_target"] * runs_["batch_size"]
    mean, fit = _mean_fit(runs_)
    fig, axes = plots.figure(ncols=2, width=4.6)
    ax = axes[0][0]
    shown = runs_[np.isfinite(runs_["steps_to_target"].astype(float))]
    sns.lineplot(shown, x="batch_size", y="steps_to_target", marker="o", errorbar=plots.BAND, ax=ax,
                 label="measured (tuned rate per batch size)")
    if len(mean) and math.isfinite(fit["b_crit"]):
        grid = np.geomspace(mean["batch_size"].min(), mean["batch_size"].max(), 100)
        ax.plot(grid, steps_curve(fit, grid), "--", color="0.3",
                label=f"S_min (1 + B_crit/B): B_crit {fit['b_crit']:.0f}, S_min {fit['s_min']:.0f}")
        ax.axvline(fit["b_crit"], color="0.6", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel=f"steps to training loss {cfg['target_loss']:g}",
           title="steps to the target against batch size")
    ax.legend()
    ax = axes[0][1]
    for seed, part in shown.groupby("seed"):
        ax.scatter(part["examples_to_target"], part["steps_to_target"], color="0.7", s=12,
                   label="one seed" if seed == shown["seed"].min() else None)
    if len(mean):
        ax.plot(mean["steps"] * mean["batch_size"], mean["steps"], "o", color=plots.palette(1)[0],
                label="geometric mean over seeds")
        for row in mean.itertuples():
            ax.annotate(f"B={row.batch_size}", (row.steps * row.batch_size, row.steps), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    if len(mean) and math.isfinite(fit["b_crit"]):
        grid = np.geomspace(mean["batch_size"].min() / 2, mean["batch_size"].max() * 2, 200)
        s = steps_curve(fit, grid)
        ax.plot(s * grid, s, "--", color="0.3", label="(S/S_min - 1)(E/E_min - 1) = 1")
    ax.set(xscale="log", yscale="log", xlabel="examples to the target E = S B", ylabel="steps to the target S",
           title="the steps-examples trade-off (Pareto front)")
    ax.legend()
    chosen = runs_.groupby("batch_size")["lr"].first()
    note = (f"{cfg['dataset']['name']}, {cfg['optimizer']['name']}; rates tuned on seeds {cfg['tuning']['seeds']} from "
            f"{cfg['tuning']['lrs']}: " + ", ".join(f"B={b}: {lr:g}" for b, lr in chosen.items())
            + f"; steps interpolated between evaluations every {cfg['eval_every']} updates; the dashed fit is to the "
              f"geometric mean over seeds (the claims fit each seed); {plots.BAND_NOTE}")
    plots.save(fig, outdir, "steps_vs_batch_size", note=note)

    _time_figure(table, cfg, outdir)
    noise = table[table["kind"] == "noise"]
    if noise.empty:
        return
    small, big, draws = (cfg["noise"][k] for k in ("small", "big", "draws"))
    long = pd.concat([noise.assign(estimator="exact (per-example gradients)", value=np.log10(noise["b_simple"])),
                      noise.assign(estimator=f"two-batch ({small} and {big}, {draws} draws)",
                                   value=np.log10(noise["b_simple_two_batch"]))])
    fig, axes = plots.figure(ncols=2, width=4.4)
    ax = axes[0][0]
    sns.lineplot(long, x="step", y="value", hue="estimator", marker="o", errorbar=plots.BAND, ax=ax)
    b_crit = seed_fits(table)["b_crit"].dropna()
    if len(b_crit):
        c = float(np.mean(np.log10(b_crit)))
        f = math.log10(float(cfg["agreement_factor"]))
        ax.axhline(c, color="0.3", ls="--", label=f"log10 B_crit from the fit (B_crit {10 ** c:.0f})")
        ax.axhspan(c - f, c + f, color="0.9", zorder=0, label=f"within {cfg['agreement_factor']:g}x of B_crit")
    ax.set(xlabel=f"step (batch {cfg['noise']['batch_size']}, tuned rate)", ylabel="log10 B_simple = log10 tr(Sigma) / |G|^2",
           title="the gradient noise scale during training")
    plots.figure_legend(fig, ax, into=axes[0][1])
    plots.save(fig, outdir, "noise_scale", note=f"{plots.BAND_NOTE} (of log10 B_simple); B_crit: geometric mean of "
                                                f"the per-seed fits")


def device_label(table: pd.DataFrame) -> str:
    """The device the timing runs measured, by name (provenance), e.g. 'NVIDIA H100 80GB HBM3 (cuda:0)'."""
    clock = table[table["kind"] == "timing"] if "kind" in table else table.iloc[:0]
    if clock.empty:
        return "no timing runs"
    names = sorted({f"{n} ({d})" for n, d in zip(clock["device_name"], clock["device"])})
    return "; ".join(names)


def _time_figure(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    """Time per update against batch size (left), and the time to the target T(B) = S(B) x time per
    update (right): the lecture's larger-batch-faster-epoch as a wall-clock optimum on this device."""
    times = time_to_target(table)
    clock = table[table["kind"] == "timing"]
    if clock.empty:
        return
    device = device_label(table)
    best_b, best_t = wall_clock_optimum(times)
    fig, axes = plots.figure(ncols=2, width=4.6)
    ax = axes[0][0]
    med = clock.groupby("batch_size")["time_per_update"].median()
    lo = clock.groupby("batch_size")["time_per_update"].min()
    hi = clock.groupby("batch_size")["time_per_update"].max()
    ax.plot(med.index, med.values * 1e3, "o-", color=plots.palette(1)[0], label="median over timed blocks")
    ax.fill_between(med.index, lo.values * 1e3, hi.values * 1e3, color=plots.palette(1)[0], alpha=0.2,
                    label="fastest to slowest block")
    ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="time per update (ms)",
           title="time per update (warm-up excluded)")
    ax.legend()
    ax = axes[0][1]
    shown = times[np.isfinite(times["time_to_target"].astype(float))]
    for seed, part in shown.groupby("seed"):
        ax.plot(part["batch_size"], part["time_to_target"], color="0.75", lw=0.8, marker=".",
                label="one seed" if seed == shown["seed"].min() else None)
    if len(shown):
        geo = shown.groupby("batch_size")["time_to_target"].apply(lambda v: float(np.exp(np.mean(np.log(v)))))
        ax.plot(geo.index, geo.values, "o-", color=plots.palette(1)[0], label="geometric mean over seeds")
    if math.isfinite(best_b):
        ax.plot([best_b], [best_t], "*", ms=12, color="C3", label=f"wall-clock optimum: B = {best_b:.0f}")
    ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="time to the target T(B) = S(B) x t(B) (s)",
           title=f"time to training loss {cfg['target_loss']:g}")
    ax.legend()
    fig.suptitle(f"measured on {device}", fontsize=9)
    plots.save(fig, outdir, "time_to_target",
               note=f"{device}; t(B): {cfg['timing']['repeats']} blocks of back-to-back updates after "
                    f"{cfg['timing']['warmup']} untimed, one run alone at the batch size's tuned rate, evaluation "
                    f"excluded; S(B): each seed's steps to the target (the left figure of steps_vs_batch_size); "
                    f"timed on the machine that trained the grid, while its other jobs ran")


# --- claims ----------------------------------------------------------------------------------------

def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    fits = seed_fits(table)
    noise = noise_per_seed(table)
    never = sorted({b for v in fits["never"] for b in v})
    never_note = (f"batch sizes {never} did not reach the target on some seed within their budget: left out of "
                  "that seed's fit; ") if never else ""
    bound = (f"B_crit at the search bound on seeds {fits.loc[fits['at_bound'], 'seed'].tolist()}; "
             if fits["at_bound"].any() else "")
    b_crits = ", ".join(f"{v:.0f}" for v in fits["b_crit"])
    lrs = sorted(float(v) for v in cfg["tuning"]["lrs"])
    chosen = table[table["kind"] == "run"].groupby("batch_size")["lr"].first()
    edge = [int(b) for b, lr in chosen.items() if lr in (lrs[0], lrs[-1])]
    edge_note = f"the tuned rate of batch {edge} is at the edge of the sweep {lrs}: it may be under-tuned; " if edge else ""
    out = [stats.claim(
        ID, "steps_fit_r2",
        f"steps to training loss {cfg['target_loss']:g} follow S(B) = S_min (1 + B_crit/B) across batch sizes "
        f"{[int(b['batch_size']) for b in cfg['budgets']]} (R^2 on log S at least {cfg['min_r2']:g})",
        "R^2 of the fit on log S, per claim seed", stats.mean(fits["r2"]), float(cfg["min_r2"]), ">", kind="test",
        note=f"{edge_note}{never_note}{bound}B_crit per seed: {b_crits}")]
    joined = noise.merge(fits[["seed", "b_crit"]], on="seed")
    log_ratio = np.log10(joined["b_simple_mean"] / joined["b_crit"])
    factor = float(cfg["agreement_factor"])
    out.append(stats.claim(
        ID, PRIMARY,
        f"the gradient noise scale B_simple, averaged over training up to the target, lies within a factor of "
        f"{factor:g} of the critical batch B_crit from the fit",
        "log10(mean B_simple / B_crit), per claim seed", stats.mean(log_ratio), math.log10(factor), "within",
        kind="test", paper_value=f"within {factor:g}x",
        note=f"B_simple per seed: {', '.join(f'{v:.0f}' for v in joined['b_simple_mean'])} (exact, at batch "
             f"{cfg['noise']['batch_size']}); B_crit per seed: {b_crits}"))
    points = table[table["kind"] == "noise"]
    out.append(stats.claim(
        ID, "noise_scale_rises",
        "the gradient noise scale rises during training (as the loss falls)",
        "Spearman correlation of B_simple (exact) with the step over a run's measurements, per claim seed",
        stats.mean(rises(points)), 0.0, ">", kind="test",
        note=f"{cfg['noise']['points']} measurements per run over its {int(points['budget'].max()) if len(points) else 0} "
             "steps; the seeds are the sample (a run's measurements are not independent)"))
    out.append(_time_claim(table))
    band = float(cfg["estimator_band"])
    out.append(stats.claim(
        ID, "two_batch_agrees_with_exact",
        f"the two-batch estimator (batches {cfg['noise']['small']} and {cfg['noise']['big']}, {cfg['noise']['draws']} "
        f"draws) agrees with the exact B_simple within a factor of {band:g}",
        "mean log10(two-batch / exact B_simple) over the measurements, per claim seed",
        stats.mean(noise["log10_two_batch_over_exact"]), math.log10(band), "within", kind="check",
        note="both estimate tr(Sigma)/|G|^2 on the same parameters; the two-batch one is unbiased in "
             "numerator and denominator, so only its sampling noise (draws) separates them"))
    return out


def _time_claim(table: pd.DataFrame) -> Claim:
    """The full batch against the smallest in wall-clock time to the target, per seed (the timing is
    one run per batch size, shared by the seeds: the interval is over the seeds' steps). A claim
    about parallel hardware: measured everywhere, decided on a GPU only (as batch_timing's)."""
    times = time_to_target(table)
    sizes = sorted(times["batch_size"].unique()) if len(times) else []
    device = device_label(table)
    clock_devices = table.loc[table["kind"] == "timing", "device"].astype(str) if len(table) else pd.Series(dtype=str)
    on_gpu = bool(len(clock_devices) and clock_devices.str.startswith("cuda").all())
    best_b, best_t = wall_clock_optimum(times)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        wide = times.pivot(index="seed", columns="batch_size", values="time_to_target")
        ratio = np.log10(wide[large].astype(float) / wide[small].astype(float))
        estimate = stats.mean(ratio.replace([np.inf, -np.inf], np.nan))
        geo = times[np.isfinite(times["time_to_target"].astype(float))].groupby("batch_size")["time_to_target"].apply(
            lambda v: float(np.exp(np.mean(np.log(v)))))
        per_b = ", ".join(f"B={b}: {v:.3g} s" for b, v in geo.items())
        t_upd = times.groupby("batch_size")["time_per_update"].first()
        per_u = ", ".join(f"B={b}: {v * 1e3:.3g} ms" for b, v in t_upd.items())
    else:
        small = large = sizes[0] if sizes else 0
        estimate, per_b, per_u = stats.missing(), "", ""
    optimum = (f"wall-clock optimum on this device: B = {best_b:.0f} (T = {best_t:.3g} s, geometric mean over seeds)"
               if math.isfinite(best_b) else "no wall-clock optimum (no batch size reached the target on every seed)")
    where = f"measured on {device}"
    return stats.claim(
        ID, "full_batch_reaches_target_sooner",
        f"On parallel hardware the full batch ({large}) reaches the target loss in less wall-clock time than batch "
        f"{small}: T(B) = S(B) x time per update(B) falls with the batch size",
        f"log10(T(B={large}) / T(B={small})) per claim seed; T = steps to the target x median time per update "
        "(one timing run per batch size, warm-up and evaluation excluded)",
        estimate, 0.0, "<", kind="test", applicable=on_gpu,
        paper_value="S(B) falls to S_min beyond B_crit (McCandlish et al. 2018); time per update nearly flat in B "
                    "on a GPU (lecture 1.2, V100)",
        note=f"{optimum}; T(B): {per_b}; time per update: {per_u}; "
             + (where if on_gpu else f"{where}: not applicable, the claim is about GPUs (parallel hardware); on a CPU "
                                     "a larger batch costs proportionally more time per update, so this measures the "
                                     "CPU, not the claim"))
