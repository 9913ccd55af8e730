"""generalization_gap: small against large batch, sharp against flat minima (Keskar et al. 2017).

One run per network and seed trains the same initial point twice, with a small batch (SB) and a
large batch (LB, 10% of the training set or more), Adam with the same learning rate, until the
training loss stops improving (early stopping on the full training loss, with a cap on epochs),
and then measures two pairs of points:

  end      the end of training: Keskar's protocol. The regimes stop at different training losses
           (SB often orders of magnitude lower), and cross-entropy curvature falls with the loss,
           so a comparison of these points mixes the regime with the loss level. Kept in the
           tables, labelled "unmatched".
  matched  both regimes at one training loss: the deepest level of a geometric grid
           (`levels_per_decade` per decade) that both trajectories crossed; each regime's weights
           when its full training loss first fell below that level, then polished by
           `polish_steps` full-batch gradient steps at rate 1 / (top Hessian eigenvalue), which
           removes the SGD noise (an SB iterate sits in a noise ball, its gradient is not small)
           so that the point is near stationary. The claims are computed here, on the pairs whose
           polished training losses agree within `match.tolerance` (in log10).

At each point: train/test loss and accuracy, Keskar's epsilon-sharpness (every eps, full space
and a random subspace, with its first-order part), the gradient norm, the top Hessian eigenvalue
with its Lanczos residual and convergence flag, and the distance from the initial point; and
Keskar's 1-D plot x(alpha) = alpha x_LB + (1 - alpha) x_SB between the two points of each pair.
Batch-norm nets are measured with the training-set statistics of the point measured (recomputed
at every point, every alpha and every point of the sharpness search): see trainfail.measure.sharpness.

Claims (tests, per network, paired by seed at matched loss): test accuracy SB > LB; LB sharper
(epsilon-sharpness in the full space and in the subspace, top Hessian eigenvalue); LB closer to
the initial point.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainfail.analysis import plots, stats
from trainfail.core import contract, provenance, run_settings, store
from trainfail.measure import sharpness
from trainfail.training import batchnorm, data, models, sizes, train
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings
from trainfail.measure.hessian import LanczosResult, flat_parameters, lanczos, set_flat_parameters
from trainfail.core.run_record import RunRecord, RunResult

ID = "generalization_gap"
SECTION = contract.BATCH_SIZE
ORDER = 4
TITLE = "Small vs large batch: the generalization gap and sharp minima (Keskar et al. 2017)"

REGIMES = ("SB", "LB")
# The one test that decides Keskar's claim by its mechanism: at converged training (the paper's
# level, matched loss), is the large-batch minimum sharper? On the plain MLP, whose sharpness is a
# property of the function (batch norm makes the loss scale-invariant in the weights before it, so
# its epsilon-box sharpness moves with the weights' norm, which grows with the steps). A pattern:
# the first network's claim at the first eps, at the paper's level (claims() emits it first; the
# quick preset's first network is the plain MLP, digits-MLP).
PRIMARY = "lb_sharper_sharp_full_*"
FIGURE_CLAIMS = {"distance_vs_steps": "sb_farther_at_equal_steps_*", "ratios_vs_level": "lb_sharpness_ratio_reaches_keskar_*",
                 "sharpness_and_distance": PRIMARY, "interpolation": PRIMARY}
POINTS = {"end": "end of training (loss below the target)", "matched": "matched training loss, the paper's level"}

# Keskar et al. 2017 (means over their runs): Table 2 test accuracy (%) and Table 3 epsilon-
# sharpness in the full space at eps 1e-3; (SB, LB). Only numbers checked against the paper are
# transcribed: its eps 5e-4 column and its Table 4 (random subspace) could not be checked against
# a copy of the paper offline, so their cells say "see the paper" instead of a number.
PAPER = {
    "F1": {"dataset": "MNIST", "test_acc": (98.03, 97.81), "full": {"0.001": (1.23, 205.14)}, "sub": {}},
    "C1": {"dataset": "CIFAR-10", "test_acc": (80.04, 77.26), "full": {"0.001": (28.58, 707.23)}, "sub": {}},
}
NOT_TRANSCRIBED = "see the paper"


def _eps_label(eps: float) -> str:
    return f"{eps:g}"


def sharpness_columns(cfg: dict, space: str | None = None) -> list[str]:
    """Table columns of the sharpness measurements: sharp_full_<eps>, sharp_sub_<eps>."""
    spaces = (space,) if space else ("full", "sub")
    return [f"sharp_{s}_{_eps_label(e)}" for s in spaces for e in cfg["epsilons"]]


def levels(cfg: dict) -> list[float]:
    """The matched training-loss levels declared in the schema (match.levels), highest first; the
    last (deepest) is the paper's level, converged training. Refused unless every level lies at or
    above target_loss (both regimes train until their loss falls below the target, so both cross
    every level unless the safety cap stops one first)."""
    out = sorted((float(v) for v in cfg["match"]["levels"]), reverse=True)
    target = float(cfg["target_loss"])
    if out[-1] < target:
        raise ValueError(f"experiments.{ID}.match.levels: {out[-1]:g} lies below target_loss ({target:g}); "
                         "training stops at the target, so no regime would reach it")
    return out


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    out = []
    matched_levels = levels(cfg)
    for net in cfg["networks"]:
        epochs = int(net.get("max_epochs") or cfg["max_epochs"])
        for seed in ctx.seeds_for(cfg):
            out.append({
                "task": ID, "network": net["label"], "dataset": net["name"], "model": net["model"],
                "optimizer": cfg["optimizer"], "batch_sizes": {"SB": int(net["small_batch"]), "LB": int(net["large_batch"])},
                "epochs": epochs, "target_loss": float(cfg["target_loss"]), "seed": int(seed),
                "levels": matched_levels, "polish_steps": int(cfg["match"]["polish_steps"]),
                "descent_steps": int(cfg["match"]["descent_steps"]),
                "measure": {"epsilons": [float(e) for e in cfg["epsilons"]], "subspace_dim": int(cfg["subspace_dim"]),
                            "sharpness_steps": int(cfg["sharpness_steps"]), "sharpness_method": cfg["sharpness_method"],
                            "hessian_iters": int(cfg["hessian_iters"]), "hessian_tol": float(cfg["hessian_tol"]),
                            "hessian_examples": int(cfg.get("hessian_examples", 0))},
                "alphas": [float(a) for a in alphas(cfg)],
            })
    return out


def alphas(cfg: dict) -> np.ndarray:
    a = cfg["interpolation"]
    return np.linspace(a["alpha_min"], a["alpha_max"], int(a["points"]))


# --- matching the training loss -------------------------------------------------------------------

def crossed(loss: float, matched_levels: list[float]) -> list[int]:
    """The indices of the declared levels at or above `loss` (none if the loss is not finite)."""
    return [i for i, v in enumerate(matched_levels) if math.isfinite(loss) and loss <= v]


def log_loss_ratio(loss_a, loss_b) -> np.ndarray:
    """log10(loss_a / loss_b): how far apart two training losses are."""
    return np.log10(np.asarray(loss_a, float)) - np.log10(np.asarray(loss_b, float))


def matched_pairs(sb: pd.DataFrame, lb: pd.DataFrame, tolerance: float) -> list[int]:
    """The seeds whose matched SB and LB points have training losses within `tolerance` in log10
    (both finite): the pairs the claims compare. sb, lb: the matched points indexed by seed."""
    seeds = sorted(set(sb.index) & set(lb.index))
    ls = pd.to_numeric(sb.loc[seeds, "train_loss"], errors="coerce").to_numpy(float)
    ll = pd.to_numeric(lb.loc[seeds, "train_loss"], errors="coerce").to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(log_loss_ratio(ls, ll))
    return [s for s, g in zip(seeds, gap) if np.isfinite(g) and g <= tolerance]


# --- one run: train both regimes, match, polish, measure ------------------------------------------

@dataclass
class Trained:
    """One regime's training: the result, its initial state, its weights when its training loss first
    fell below each declared level, and its distance from the initial point at every evaluation."""
    result: RunResult
    state0: dict
    snapshots: dict[int, dict] = field(default_factory=dict)  # level index -> {step, loss, state}
    distances: list[dict] = field(default_factory=list)  # {step, distance_from_init}
    reached_target: bool = False


class _Reached(Exception):
    """Raised from the evaluation hook when the training loss fell below the target: training stops."""


def train_regime(settings: dict, regime: str, ds: data.Dataset, device: torch.device) -> Trained:
    """Train one regime from the seed's initial point until its full training loss falls below the
    target (or the safety cap on epochs ends it), keeping the weights at the first evaluation (every
    epoch) where the loss fell below each declared level, and the distance from the initial point."""
    matched_levels, target = [float(v) for v in settings["levels"]], float(settings["target_loss"])
    s = {k: settings[k] for k in ("dataset", "model", "optimizer", "epochs", "seed")}
    s.update(batch_size=int(settings["batch_sizes"][regime]), eval_points=int(settings["epochs"]), log_points=20)
    s = run_settings.complete({"task": "train", **s}, f"{ID}'s {regime} regime")  # the loop's defaults
    provenance.make_deterministic(int(settings["seed"]))  # as train.train does before it builds a model
    model = models.build(s["model"], ds.input_shape, ds.num_classes).to(device)
    trained = Trained(result=RunResult(), state0=copy.deepcopy(model.state_dict()))
    names = sharpness.parameter_names(model)
    evals: list[dict] = []  # this regime's evaluation rows (the loop's are lost when the target stops it)
    per_epoch = train.steps_per_epoch(s["batch_size"], ds.n_train)

    def on_eval(m: torch.nn.Module, step: int) -> dict:
        loss, acc = train.evaluate(m, ds.x_train, ds.y_train)  # = this row's train_loss (deterministic)
        dist = sharpness.distance(m.state_dict(), trained.state0, names)
        trained.distances.append({"step": step, "distance_from_init": dist})
        for i in crossed(loss, matched_levels):
            if i not in trained.snapshots:  # the first evaluation below the level
                trained.snapshots[i] = {"step": step, "loss": loss,
                                        "state": {n: t.detach().cpu().clone() for n, t in m.state_dict().items()}}
        if step > 0 and math.isfinite(loss) and loss <= target:
            val_loss, val_acc = train.evaluate(m, ds.x_test, ds.y_test)
            evals.append({"step": step, "epoch": step / per_epoch, "train_loss": loss, "train_acc": acc,
                          "val_loss": val_loss, "val_acc": val_acc, "distance_from_init": dist})
            raise _Reached
        return {"distance_from_init": dist}

    try:
        trained.result = train.train(s, ds, device, model=model, on_eval=on_eval)
    except _Reached:
        m = model.eval()
        trained.reached_target = True
        trained.result = RunResult(rows=evals, model=m, summary={"steps_done": evals[-1]["step"]})
    return trained


def end_evaluation(result: RunResult) -> dict:
    """The last full evaluation of a regime; a diverged one scores its step-0 evaluation
    (run_record.DIVERGED_POLICY)."""
    evals = [r for r in result.rows if "train_loss" in r and math.isfinite(r["train_loss"])]
    row = evals[0] if result.diverged else evals[-1]
    return {"train_loss": row["train_loss"], "train_acc": row["train_acc"], "test_loss": row["val_loss"],
            "test_acc": row["val_acc"]}


def with_statistics(model: torch.nn.Module, ds: data.Dataset) -> torch.nn.Module:
    """A batch-norm net with the training-set statistics of its current weights; others as they are."""
    return batchnorm.recompute_statistics(model, ds.x_train) if batchnorm.bn_layers(model) else model


def hessian_set(ds: data.Dataset, spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    # the HVP graph holds every activation of the examples at once: cap them on large sets (the
    # sets are stored shuffled, so the first n are a random subset); 0 = the whole training set
    n = spec.get("hessian_examples") or ds.n_train
    return ds.x_train[:n], ds.y_train[:n]


def objective(model: torch.nn.Module, ds: data.Dataset, spec: dict) -> sharpness.Objective:
    """The training loss as a function of the parameters: the whole training set in chunks, or, for a
    batch-norm net (one batch, its statistics recomputed at every point), the Hessian's examples."""
    x, y = hessian_set(ds, spec) if batchnorm.bn_layers(model) else (ds.x_train, ds.y_train)
    return sharpness.model_objective(model, x, y)


def top_eigen(model: torch.nn.Module, ds: data.Dataset, spec: dict, seed: int) -> LanczosResult:
    """The top Hessian eigenvalue of the training loss (batch-norm statistics recomputed, as in the
    sharpness), by Lanczos, with its residual and convergence flag."""
    x, y = hessian_set(ds, spec)
    return lanczos(sharpness.model_hvp(model, x, y), sum(p.numel() for p in model.parameters()), k=1,
                   iters=spec["hessian_iters"], which="top", seed=seed, tol=spec["hessian_tol"],
                   dtype=next(model.parameters()).dtype, device=next(model.parameters()).device)


def match_losses(points: dict[str, torch.nn.Module], ds: data.Dataset, polish_steps: int, descent_steps: int,
                 spec: dict, seed: int) -> dict[str, dict]:
    """Polish both regimes' points (in place) and bring their training losses together.

    Each point takes `polish_steps` full-batch gradient steps at 1 / (its top Hessian eigenvalue)
    (sharpness.polish: the SGD noise goes, the point becomes near stationary); then the point whose
    loss is higher keeps descending the same way until its loss is no higher than the other's (at
    most `descent_steps` more steps). Gradient descent only lowers the loss, so this is how two
    points are brought to one loss without undoing a polish. Returns what each point went through.
    """
    runs_: dict[str, tuple] = {}
    for regime, model in points.items():
        f = objective(model, ds, spec)
        x0 = flat_parameters(model)
        loss0, g0 = f(x0)
        top = float(top_eigen(model, ds, spec, seed).values[0])
        done = sharpness.polish(f, x0, 1.0 / top if math.isfinite(top) and top > 0 else 1.0, polish_steps)
        runs_[regime] = (f, done, {"loss_before_polish": float(loss0), "grad_norm_before_polish": float(torch.linalg.vector_norm(g0)),
                                   "top_eigenvalue_before_polish": top, "polish_steps": done["steps"], "descent_steps": 0})
    high, low = sorted(runs_, key=lambda r: runs_[r][1]["loss"], reverse=True)
    f, done, info = runs_[high]
    more = sharpness.polish(f, done["x"], done["lr"], descent_steps, stop_below=runs_[low][1]["loss"])
    runs_[high] = (f, more, {**info, "descent_steps": more["steps"]})
    out = {}
    for regime, (_, done, info) in runs_.items():
        set_flat_parameters(points[regime], done["x"])
        out[regime] = {**info, "polish_lr": done["lr"]}
    return out


def measure(model: torch.nn.Module, ds: data.Dataset, state0: dict, spec: dict, seed: int) -> dict:
    """Everything measured at one point, in eval mode with the point's own batch-norm statistics."""
    model = with_statistics(model, ds)
    train_loss, train_acc = train.evaluate(model, ds.x_train, ds.y_train)
    test_loss, test_acc = train.evaluate(model, ds.x_test, ds.y_test)
    out = {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc}
    f, x = objective(model, ds, spec), flat_parameters(model)
    out["grad_norm"] = float(torch.linalg.vector_norm(f(x)[1]))
    for eps in spec["epsilons"]:
        for space, dim in (("full", None), ("sub", spec["subspace_dim"])):
            r = sharpness.epsilon_sharpness(f, x, eps, dim, spec["sharpness_steps"], seed, spec["sharpness_method"])
            col = f"sharp_{space}_{_eps_label(eps)}"
            out[col], out[f"{col}_first_order"] = r["sharpness"], r["first_order"]
    top = top_eigen(model, ds, spec, seed)
    out.update(top_eigenvalue=float(top.values[0]), top_eigenvalue_residual=float(top.relative_residuals[0]),
               top_eigenvalue_converged=bool(top.converged), top_eigenvalue_hvps=int(top.n_hvp))
    out["distance_from_init"] = sharpness.distance(model.state_dict(), state0, sharpness.parameter_names(model))
    return out


def measure_light(model: torch.nn.Module, ds: data.Dataset, state0: dict, spec: dict, seed: int) -> dict:
    """What the curve against the matched level needs at the levels above the paper's: losses and
    accuracies, the first epsilon's sharpness in the full space, and the distance from the initial
    point (the top eigenvalue is the polish's: top_eigenvalue_before_polish)."""
    model = with_statistics(model, ds)
    train_loss, train_acc = train.evaluate(model, ds.x_train, ds.y_train)
    test_loss, test_acc = train.evaluate(model, ds.x_test, ds.y_test)
    out = {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc}
    f, x = objective(model, ds, spec), flat_parameters(model)
    eps = spec["epsilons"][0]
    r = sharpness.epsilon_sharpness(f, x, eps, None, spec["sharpness_steps"], seed, spec["sharpness_method"])
    col = f"sharp_full_{_eps_label(eps)}"
    out[col], out[f"{col}_first_order"] = r["sharpness"], r["first_order"]
    out["distance_from_init"] = sharpness.distance(model.state_dict(), state0, sharpness.parameter_names(model))
    return out


def execute(settings: Settings, env: RunEnv) -> RunResult:
    ds = env.dataset(settings["dataset"])
    seed, spec = int(settings["seed"]), settings["measure"]
    matched_levels = [float(v) for v in settings["levels"]]
    trained = {regime: train_regime(settings, regime, ds, env.device) for regime in REGIMES}
    template = trained["SB"].result.model
    summary: dict = {"n_train": ds.n_train, "parameters": models.count_parameters(template),
                     "levels": matched_levels, "target_loss": float(settings["target_loss"]), "regimes": {}}
    for regime, t in trained.items():
        bs = int(settings["batch_sizes"][regime])
        per_epoch = train.steps_per_epoch(bs, ds.n_train)
        done = t.result.summary["steps_done"]
        end = end_evaluation(t.result)
        end["distance_from_init"] = t.distances[-1]["distance_from_init"] if t.distances else None
        summary["regimes"][regime] = {
            "batch_size": bs, "batch_fraction": min(bs, ds.n_train) / ds.n_train, "epochs_done": done / per_epoch,
            "steps_done": done, "reached_target": t.reached_target,
            "cap_hit": not t.reached_target and not t.result.diverged,  # the safety cap ended it above the target
            "diverged": t.result.diverged, "diverged_step": t.result.diverged_step, "end": end, "matched": {},
            "distances": t.distances}
    pair_states = None
    for i, level in enumerate(matched_levels):
        if any(t.result.diverged or i not in t.snapshots for t in trained.values()):
            continue  # a regime never crossed it (diverged, or the safety cap stopped it)
        points = {regime: copy.deepcopy(template) for regime in REGIMES}
        for regime, model in points.items():
            model.load_state_dict(trained[regime].snapshots[i]["state"])
        polished = match_losses(points, ds, int(settings["polish_steps"]), int(settings["descent_steps"]), spec, seed)
        paper_level = i == len(matched_levels) - 1  # the deepest: converged training, every measure
        for regime, model in points.items():
            step = trained[regime].snapshots[i]["step"]
            per_epoch = train.steps_per_epoch(settings["batch_sizes"][regime], ds.n_train)
            measured = (measure if paper_level else measure_light)(model, ds, trained[regime].state0, spec, seed)
            summary["regimes"][regime]["matched"][f"{level:g}"] = {"step": step, "epoch": step / per_epoch,
                                                                   **polished[regime], **measured}
        if paper_level:
            pair_states = {regime: model.state_dict() for regime, model in points.items()}
    sets = {"train": (ds.x_train, ds.y_train), "test": (ds.x_test, ds.y_test)}
    summary["interpolation"] = ({"matched": sharpness.interpolate(template, pair_states["LB"], pair_states["SB"],
                                                                  settings["alphas"], sets)} if pair_states else {})
    rows = [{"regime": regime, **row} for regime, t in trained.items() for row in t.result.rows]
    bad = [t.result.diverged_step for t in trained.values() if t.result.diverged]
    return RunResult(rows=rows, summary=summary, model=None, diverged=bool(bad), diverged_step=min(bad) if bad else None)


# --- the table ------------------------------------------------------------------------------------

POINT_COLUMNS = ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "top_eigenvalue",
                 "top_eigenvalue_residual", "top_eigenvalue_converged", "distance_from_init", "step", "epoch",
                 "loss_before_polish", "grad_norm_before_polish", "top_eigenvalue_before_polish", "polish_lr",
                 "polish_steps", "descent_steps")


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    """One row per (network, seed, regime, point): the end of training and each matched level
    (`level`, the declared training loss; the deepest is the paper's), one per evaluation of the
    distance from the initial point (kind "distance"), one per interpolation (alpha, split)."""
    rows = []
    measured = list(POINT_COLUMNS) + [c + s for c in sharpness_columns(cfg) for s in ("", "_first_order")]
    for r in records:
        s, summ = r.settings, r.summary
        paper = f"{min(summ['levels']):g}"
        for regime in REGIMES:
            info = summ["regimes"][regime]
            base = {"network": s["network"], "dataset": s["dataset"], "regime": regime, "batch_size": info["batch_size"],
                    "seed": s["seed"], "diverged": info["diverged"], "run_id": r.run_id}
            points = [("end", None, info["end"])] + [("matched", float(lv), info["matched"].get(f"{float(lv):g}") or {})
                                                      for lv in summ["levels"]]
            for point, level, values in points:
                rows.append({"kind": "point", **base, "point": point, "level": level,
                             "paper_level": point == "matched" and f"{level:g}" == paper,
                             "target_loss": summ["target_loss"], "n_train": summ["n_train"],
                             "batch_fraction": info["batch_fraction"], "epochs_done": info["epochs_done"],
                             "steps_done": info["steps_done"], "reached_target": info["reached_target"],
                             "cap_hit": info["cap_hit"], "parameters": summ["parameters"],
                             **{c: values.get(c) for c in measured}})
            rows += [{"kind": "distance", **base, **d} for d in info["distances"]]
        for point, curve in summ.get("interpolation", {}).items():
            rows += [{"kind": "interpolation", "network": s["network"], "dataset": s["dataset"], "seed": s["seed"],
                      "point": point, **row} for row in curve]
    return pd.DataFrame(rows)


# --- the tables in Keskar's format and the figures ------------------------------------------------

def _mean_sd(values: pd.Series, scale: float = 1.0, digits: int | None = 2) -> str:
    """mean ± sd over seeds: `digits` decimals, or 3 significant figures (None) for quantities
    that span orders of magnitude (sharpness, eigenvalues)."""
    v = pd.to_numeric(values, errors="coerce").dropna() * scale
    if v.empty:
        return "–"
    sd = v.std(ddof=1) if len(v) > 1 else float("nan")
    if digits is None:
        return f"{v.mean():.3g} ± {sd:.2g}"
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def _points(table: pd.DataFrame) -> pd.DataFrame:
    """The end of training and the paper's matched level (Keskar's tables, the claims at his level)."""
    pts = table[table["kind"] == "point"]
    return pts[(pts["point"] == "end") | pts["paper_level"].astype(bool)]


def _levels(table: pd.DataFrame) -> pd.DataFrame:
    """Every matched level's points (the curve against the level)."""
    pts = table[table["kind"] == "point"]
    return pts[pts["point"] == "matched"]


def _row_name(net: str, part: pd.DataFrame, point: str) -> str:
    sb, lb = (part[part["regime"] == r] for r in REGIMES)
    sizes = f"B={int(sb['batch_size'].iloc[0])} / {int(lb['batch_size'].iloc[0])}" if len(sb) and len(lb) else ""
    where = POINTS[point]
    if point == "matched":  # where the pairs met, after the polish
        losses = pd.to_numeric(part["train_loss"], errors="coerce").dropna()
        if len(losses):
            where += f" {losses.min():.2g}" + (f"-{losses.max():.2g}" if f"{losses.max():.2g}" != f"{losses.min():.2g}" else "")
    return f"{net} ({part['dataset'].iloc[0]}, {sizes}), {where}"


def keskar_tables(table: pd.DataFrame, cfg: dict) -> dict[str, pd.DataFrame]:
    """Keskar's Table 2 (accuracy, %), Table 3 (sharpness, full space), Table 4 (random subspace)
    and our curvature table, mean ± sd over seeds, SB and LB side by side, one row per network and
    point (end of training, matched loss), the paper's F1 and C1 rows under ours."""
    out: dict[str, list] = {"table2_accuracy": [], "table3_sharpness": [], "table4_subspace": [], "table_curvature": []}
    pts = _points(table)
    for net, part in pts.groupby("network", sort=False):
        for point in POINTS:
            here = part[part["point"] == point]
            sb, lb = (here[here["regime"] == r] for r in REGIMES)
            name = _row_name(net, here, point)
            acc = {"network": name}
            for col, scale, digits, label in (("train_acc", 100, 2, "train"), ("test_acc", 100, 2, "test"),
                                              ("train_loss", 1, None, "train loss")):
                acc.update({f"{label} {r}": _mean_sd(rows[col], scale, digits) for r, rows in zip(REGIMES, (sb, lb))})
            col = "epochs_done" if point == "end" else "epoch"
            acc.update({f"epochs {r}": _mean_sd(rows[col], digits=0) for r, rows in zip(REGIMES, (sb, lb))})
            out["table2_accuracy"].append(acc)
            for stem, space in (("table3_sharpness", "full"), ("table4_subspace", "sub")):
                row = {"network": name}
                for c in sharpness_columns(cfg, space):
                    row.update({f"{c} {r}": _mean_sd(rows[c], digits=None) for r, rows in zip(REGIMES, (sb, lb))})
                out[stem].append(row)
            curv = {"network": name}
            for c in ("top_eigenvalue", "top_eigenvalue_residual", "top_eigenvalue_before_polish", "distance_from_init",
                      "grad_norm"):
                curv.update({f"{c} {r}": _mean_sd(rows[c], digits=None) for r, rows in zip(REGIMES, (sb, lb))})
            first = sharpness_columns(cfg, "full")[0]
            for r, rows in zip(REGIMES, (sb, lb)):
                share = pd.to_numeric(rows[f"{first}_first_order"], errors="coerce") / pd.to_numeric(rows[first], errors="coerce")
                curv[f"first-order share of {first} {r}"] = _mean_sd(share, digits=2)
            out["table_curvature"].append(curv)
    for label, paper in PAPER.items():
        name = f"Keskar {label} ({paper['dataset']}, paper)"
        out["table2_accuracy"].append({"network": name, "test SB": f"{paper['test_acc'][0]:.2f}",
                                       "test LB": f"{paper['test_acc'][1]:.2f}"})
        for stem, space in (("table3_sharpness", "full"), ("table4_subspace", "sub")):
            row = {"network": name}
            for e in cfg["epsilons"]:
                values = paper[space].get(_eps_label(e))
                row.update({f"sharp_{space}_{_eps_label(e)} {r}": f"{v:.2f}" if values else NOT_TRANSCRIBED
                            for r, v in zip(REGIMES, values or (None, None))})
            out[stem].append(row)
    return {k: pd.DataFrame(v).fillna("") for k, v in out.items()}


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    tables = keskar_tables(table, cfg)
    for stem, df in tables.items():
        store.write_text(outdir / f"{stem}.csv", df.to_csv(index=False))  # the report shows it as an HTML table
    match = cfg["match"]
    matched_note = (f"matched: both regimes' weights when the training loss first fell below {levels(cfg)[-1]:g} (the "
                    f"deepest declared level, converged training), then {match['polish_steps']} "
                    "full-batch gradient steps at 1 / (top Hessian eigenvalue)")
    box = (f"epsilon-sharpness = 100 (max f - f) / (1 + f) over the box |y_i| <= eps(|(A^+ x)_i| + 1), z = A y; "
           f"{cfg['sharpness_method']} maximiser, {cfg['sharpness_steps']} steps")
    # Keskar's Tables 2-4 and the curvature table are tables (CSV, LaTeX, HTML in the report), not
    # pictures of tables; what each says about its columns goes beside it as <stem>.txt
    notes = {"table2_accuracy": "Keskar Table 2 format: accuracy (%), mean ± sd over seeds. SB/LB batch sizes in the row "
                                f"label; Adam, same lr; end: trained until the training loss fell below "
                                f"{float(cfg['target_loss']):g} (or the safety cap of {cfg['max_epochs']} epochs); {matched_note}",
             "table3_sharpness": f"Keskar Table 3 format: sharpness in the full space (A = I), mean ± sd over seeds. {box}",
             "table4_subspace": f"Keskar Table 4 format: sharpness in a random {cfg['subspace_dim']}-dim subspace, mean ± sd "
                                f"over seeds. {box}; A: n x p, i.i.d. N(0, 1) entries, as Keskar's (sub / full sharpness "
                                "then scales like p^2 / n: about 1 for our nets, 10-20x below full for Keskar's "
                                "million-parameter ones)",
             "table_curvature": "Top Hessian eigenvalue (Lanczos, with its relative residual), distance ||x - x0||, gradient "
                                "norm; first-order share: the part of the sharpness the linear term alone reaches in the box"}
    for stem, text in notes.items():
        store.write_text(outdir / f"{stem}.txt", text + "\n")

    pts = _points(table).copy()
    pts = pts[~pts["diverged"].astype(bool) | (pts["point"] == "matched")]
    eps = cfg["epsilons"][0]
    measures = {sharpness_columns(cfg, "full")[0]: (f"sharpness, full space, eps {eps:g}", "epsilon-sharpness (%)", "log"),
                sharpness_columns(cfg, "sub")[0]: (f"sharpness, {cfg['subspace_dim']}-dim subspace, eps {eps:g}",
                                                   "epsilon-sharpness (%)", "log"),
                "top_eigenvalue": ("top Hessian eigenvalue", "lambda_max of the loss Hessian", "log"),
                "distance_from_init": ("distance from the initial weights", "||x - x0|| (L2 norm of the weights)", "linear")}
    regime_colors = dict(zip(REGIMES, plots.palette(len(REGIMES))))
    fig, axes = plots.figure(nrows=len(POINTS), ncols=len(measures), width=3.3, height=3.0)
    for row_axes, point in zip(axes, POINTS):
        here = pts[pts["point"] == point]
        for ax, (col, (title, unit, scale)) in zip(row_axes, measures.items()):
            values = here.assign(**{col: pd.to_numeric(here[col], errors="coerce")})
            if values[col].notna().any():
                # points, not bars: a bar's length means nothing on a log axis
                sns.stripplot(values, x="network", y=col, hue="regime", hue_order=list(REGIMES), palette=regime_colors,
                              dodge=True, ax=ax, legend=False, size=3, alpha=0.5, jitter=0.1)
                sns.pointplot(values, x="network", y=col, hue="regime", hue_order=list(REGIMES), palette=regime_colors,
                              errorbar=plots.BAND, dodge=0.4, linestyle="none", capsize=0.1, markers="D", ax=ax,
                              legend=ax is axes[0][0])
            ax.set(yscale=scale, xlabel="", ylabel=unit,
                   title=f"{title}\n{POINTS[point]}")
            ax.title.set_fontsize(9)
    plots.save(fig, outdir, "sharpness_and_distance",
               note=f"diamonds: {plots.BAND_NOTE}; dots: seeds. Top: end of training (Keskar's protocol, unmatched "
                    "losses); bottom: matched training loss, polished (the claims). epsilon-sharpness: the largest "
                    "loss increase in the box, in % of (1 + loss). LB is sharper where its diamond is higher")

    level_curves(table, cfg, outdir)
    distance_growth(table, outdir)

    inter = table[table["kind"] == "interpolation"].copy()
    nets = list(dict.fromkeys(inter["network"]))
    if not nets:
        return
    inter_points = [p for p in POINTS if p in set(inter["point"])]
    fig, axes = plots.figure(nrows=len(inter_points), ncols=len(nets), width=5.2, height=3.4)
    for row_axes, point in zip(axes, inter_points):
        for ax, net in zip(row_axes, nets):
            part = inter[(inter["network"] == net) & (inter["point"] == point)]
            if part.empty:
                ax.axis("off")
                continue
            loss_color, acc_color = plots.PALETTE[0], plots.PALETTE[1]
            sns.lineplot(part, x="alpha", y="loss", style="split", color=loss_color, errorbar=plots.BAND, ax=ax,
                         legend=not fig.legends)
            if ax.get_legend() is not None:  # one legend for the figure, beside it: the twin axes would cover it
                plots.figure_legend(fig, ax)
            ax.set(yscale="log", ylabel="cross entropy (blue)", xlabel="alpha  (0 = SB, 1 = LB)",
                   title=f"{net}: {POINTS[point]}")
            ax.yaxis.label.set_color(loss_color)
            twin = ax.twinx()
            sns.lineplot(part, x="alpha", y="acc", style="split", color=acc_color, errorbar=plots.BAND, ax=twin, legend=False)
            plots.bound(twin, 0, 1)  # an accuracy's interval stays within [0, 1]
            twin.set(ylabel="accuracy (red)")
            twin.yaxis.label.set_color(acc_color)
            twin.grid(False)
            for a in (0.0, 1.0):
                ax.axvline(a, color="0.5", lw=0.6, ls=":")
    plots.save(fig, outdir, "interpolation",
               note="Keskar's 1-D parametric plot: x(alpha) = alpha x_LB + (1 - alpha) x_SB, same seed; solid train, "
                    "dashed test; mean and 95% t-interval over seeds; parameters interpolated, batch-norm statistics "
                    "recomputed at every alpha")


def level_ratios(table: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Per network, seed and matched level: log10 sharpness ratio LB / SB (full space, first eps)
    and log10 distance ratio SB / LB, for the pairs within the match tolerance."""
    col, tol, rows = sharpness_columns(cfg, "full")[0], float(cfg["match"]["tolerance"]), []
    lv = _levels(table)
    for (net, level), here in lv.groupby(["network", "level"], sort=False):
        a, b = (here[here["regime"] == r].set_index("seed").sort_index() for r in REGIMES)
        for seed in matched_pairs(a, b, tol):
            sh = [float(pd.to_numeric(f.loc[seed, col], errors="coerce")) for f in (a, b)]
            di = [float(pd.to_numeric(f.loc[seed, "distance_from_init"], errors="coerce")) for f in (a, b)]
            rows.append({"network": net, "level": float(level), "seed": seed,
                         "log10 sharpness ratio (LB / SB)": math.log10(max(sh[1], 1e-12) / max(sh[0], 1e-12)),
                         "log10 distance ratio (SB / LB)": math.log10(di[0] / di[1])})
    return pd.DataFrame(rows, columns=["network", "level", "seed", "log10 sharpness ratio (LB / SB)",
                                       "log10 distance ratio (SB / LB)"])


def level_curves(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    """Sharpness ratio and distance ratio against the matched level, mean and interval over seeds."""
    import seaborn as sns

    ratios = level_ratios(table, cfg)
    if ratios.empty:
        return
    nets = list(dict.fromkeys(ratios["network"]))
    colors = dict(zip(nets, plots.palette(len(nets))))
    fig, axes = plots.figure(ncols=2, width=4.2, height=3.4)
    for ax, y in zip(axes[0], ("log10 sharpness ratio (LB / SB)", "log10 distance ratio (SB / LB)")):
        sns.lineplot(ratios, x="level", y=y, hue="network", hue_order=nets, palette=colors, marker="o",
                     errorbar=plots.BAND, ax=ax, legend=ax is axes[0][-1])
        ax.axhline(0, color="k", lw=0.8)
        ax.axvline(levels(cfg)[-1], color="0.5", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="matched training loss", ylabel=y)
        ax.invert_xaxis()  # training goes from left to right
    if axes[0][-1].get_legend() is not None:
        plots.figure_legend(fig, axes[0][-1])
    plots.save(fig, outdir, "ratios_vs_level",
               note=f"each declared level (dotted: the paper's, converged training): both regimes' weights when their "
                    f"training loss first fell below it, polished and matched; {plots.BAND_NOTE}; above 0: LB sharper (left), LB closer to the initial point (right); "
                    f"Keskar: log10 sharpness ratio 1.4-2.2, distance ratio 0.5-1")


def distance_growth(table: pd.DataFrame, outdir: Path) -> None:
    """The distance control: distance from the initial point against the number of steps, per regime."""
    import seaborn as sns

    d = table[(table["kind"] == "distance")].copy()
    d = d[pd.to_numeric(d["step"]) > 0]
    if d.empty:
        return
    nets = list(dict.fromkeys(d["network"]))
    regime_colors = dict(zip(REGIMES, plots.palette(len(REGIMES))))
    fig, axes = plots.figure(ncols=len(nets), width=3.8, height=3.4)
    for ax, net in zip(axes[0], nets):
        part = d[d["network"] == net].assign(step=lambda f: pd.to_numeric(f["step"]),
                                              distance_from_init=lambda f: pd.to_numeric(f["distance_from_init"]))
        sns.lineplot(part, x="step", y="distance_from_init", hue="regime", hue_order=list(REGIMES),
                     palette=regime_colors, units="seed", estimator=None, errorbar=None, lw=0.8, alpha=0.7, ax=ax,
                     legend=ax is axes[0][-1])
        ax.set(xscale="log", yscale="log", xlabel="updates", ylabel="||x - x0||", title=net)
    if axes[0][-1].get_legend() is not None:
        plots.figure_legend(fig, axes[0][-1])
    plots.save(fig, outdir, "distance_vs_steps",
               note="the distance control: distance from the initial weights at every evaluation (every epoch), one line "
                    "per seed; where the SB and LB lines coincide at an equal number of updates, the distance is set by "
                    "the step count, not the batch size (claim sb_farther_at_equal_steps)")


# --- claims ---------------------------------------------------------------------------------------

def _log_ratio(a: pd.Series, b: pd.Series) -> stats.Estimate:
    """log10(a / b) over seeds, paired by seed (SB and LB of a seed share the initial point).

    Sharpness spans orders of magnitude between regimes, so the comparison is on a log scale;
    values <= 0 (no increase found in the box) are floored at 1e-12 to stay finite."""
    la = np.log10(np.maximum(pd.to_numeric(a, errors="coerce").to_numpy(float), 1e-12))
    lb = np.log10(np.maximum(pd.to_numeric(b, errors="coerce").to_numpy(float), 1e-12))
    return stats.paired(la, lb)


def _ratio(a: pd.Series, b: pd.Series) -> stats.Estimate:
    """a / b per seed (paired: the same initial point), and the mean of those ratios over seeds."""
    ra = pd.to_numeric(a, errors="coerce").to_numpy(float) / pd.to_numeric(b, errors="coerce").to_numpy(float)
    return stats.mean(ra)


def _regime_frames(part: pd.DataFrame, point: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    here = part[part["point"] == point]
    return tuple(here[here["regime"] == r].set_index("seed").sort_index() for r in REGIMES)


def log_distance_at(curve: pd.DataFrame, step: float) -> float:
    """log10 of the distance from the initial point at `step`, interpolated linearly in log-log
    between the evaluations around it (the distance grows like a power of the step count)."""
    c = curve[pd.to_numeric(curve["step"]) > 0]
    x = np.log10(pd.to_numeric(c["step"]).to_numpy(float))
    y = np.log10(np.maximum(pd.to_numeric(c["distance_from_init"]).to_numpy(float), 1e-30))
    if len(x) == 0 or not (x[0] <= math.log10(step) <= x[-1]):
        return float("nan")
    return float(np.interp(math.log10(step), x, y))


def growth_exponent(curve: pd.DataFrame) -> float:
    """The slope of log10 distance against log10 step over the evaluations after the first epoch
    (the growth law d ~ steps^k)."""
    c = curve[pd.to_numeric(curve["step"]) > 0]
    if len(c) < 3:
        return float("nan")
    x = np.log10(pd.to_numeric(c["step"]).to_numpy(float))
    y = np.log10(np.maximum(pd.to_numeric(c["distance_from_init"]).to_numpy(float), 1e-30))
    return float(np.polyfit(x[1:], y[1:], 1)[0])


def equal_steps_distances(table: pd.DataFrame, net: str) -> pd.DataFrame:
    """Per seed: log10 distance of SB and LB at one equal number of steps (the smaller of the two
    regimes' step counts at the paper's matched level, where both have trained that long), and
    each regime's growth exponent."""
    d = table[(table["kind"] == "distance") & (table["network"] == net)]
    pts = _levels(table)
    pts = pts[(pts["network"] == net) & pts["paper_level"].astype(bool)]
    rows = []
    for seed, part in d.groupby("seed"):
        at = pts[pts["seed"] == seed].set_index("regime")["step"]
        if not set(REGIMES) <= set(at.index) or at.isna().any():
            continue
        step = float(min(pd.to_numeric(at)))
        curves = {r: part[part["regime"] == r].sort_values("step") for r in REGIMES}
        rows.append({"seed": seed, "step": step, **{f"log_d_{r}": log_distance_at(c, step) for r, c in curves.items()},
                     **{f"exponent_{r}": growth_exponent(c) for r, c in curves.items()}})
    return pd.DataFrame(rows, columns=["seed", "step"] + [f"{k}_{r}" for k in ("log_d", "exponent") for r in REGIMES])


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    out = []
    tol = float(cfg["match"]["tolerance"])
    eps = _eps_label(cfg["epsilons"][0])
    matched_levels = levels(cfg)
    paper_level = matched_levels[-1]
    for net, part in _points(table).groupby("network", sort=False):
        sb, lb = _regime_frames(part, "matched")
        end_sb, end_lb = _regime_frames(part, "end")
        seeds = matched_pairs(sb, lb, tol)
        n_all = int(part["seed"].nunique())
        sb, lb = sb.loc[seeds], lb.loc[seeds]
        ana = next((n.get("analogue") for n in cfg["networks"] if n["label"] == net), None)
        paper = PAPER.get(ana) if ana else None
        bsb, blb = (int(part[part["regime"] == r]["batch_size"].iloc[0]) for r in REGIMES)
        gaps = np.abs(log_loss_ratio(pd.to_numeric(sb["train_loss"]), pd.to_numeric(lb["train_loss"]))) if seeds else []
        capped = {r: int(f["cap_hit"].astype(bool).sum()) for r, f in zip(REGIMES, (end_sb, end_lb))}
        where = (f"paper's level: training loss {paper_level:g} (converged; both regimes trained until their loss fell "
                 f"below the target {float(cfg['target_loss']):g}, safety cap hit by SB {capped['SB']}, LB {capped['LB']} "
                 f"of {n_all}); matched loss {pd.to_numeric(sb['train_loss']).mean():.3g} (SB) vs "
                 f"{pd.to_numeric(lb['train_loss']).mean():.3g} (LB): {len(seeds)} of {n_all} seed pairs within "
                 f"{tol:g} in log10 (largest gap {max(gaps, default=float('nan')):.3f})")
        at_level = f"at the matched training loss {paper_level:g} (converged training, the paper's level)"

        est = stats.paired(sb["test_acc"], lb["test_acc"], test_n=sizes.test_size(str(part["dataset"].iloc[0])))
        out.append(stats.claim(
            ID, f"sb_higher_test_acc_{net}",
            f"{net}: {at_level}, the small batch ({bsb}) reaches higher test accuracy than the large batch ({blb})",
            "test_acc(SB) - test_acc(LB) at matched training loss, paired by seed", est, kind="test",
            paper_value=f"{paper['test_acc'][0]} vs {paper['test_acc'][1]} (%, {ana}, end of training)" if paper else None,
            note=where))
        for col, space, what in ((f"sharp_full_{eps}", "full", f"epsilon-sharpness (eps {eps}, full space)"),
                                 (f"sharp_sub_{eps}", "sub", f"epsilon-sharpness (eps {eps}, random {cfg['subspace_dim']}-dim subspace)"),
                                 ("top_eigenvalue", None, "top Hessian eigenvalue")):
            est, note = _log_ratio(lb[col], sb[col]), where
            if space:
                share = [pd.to_numeric(f[f"{col}_first_order"]) / pd.to_numeric(f[col]) for f in (sb, lb)]
                note += f"; first-order share SB {share[0].mean():.2f}, LB {share[1].mean():.2f}"
            else:
                before = _log_ratio(lb["top_eigenvalue_before_polish"], sb["top_eigenvalue_before_polish"])
                note += f"; at the snapshots, before the polish: log10 ratio {before.text('.3g')}, n={before.n}"
                both = pd.concat([sb, lb])
                unconverged = int((~both["top_eigenvalue_converged"].dropna().astype(bool)).sum())
                note += (f"; Lanczos: {unconverged} of {int(both['top_eigenvalue_converged'].notna().sum())} "
                         f"top eigenvalues not converged (relative residual > {cfg['hessian_tol']:g}), largest "
                         f"relative residual {pd.to_numeric(both['top_eigenvalue_residual']).max():.2g}")
            out.append(stats.claim(
                ID, f"lb_sharper_{col}_{net}", f"{net}: {at_level}, the large-batch solution is sharper by {what}",
                f"log10({col}(LB) / {col}(SB)) at matched training loss, paired by seed", est, threshold=0.0,
                kind="test", note=note))
        est = _log_ratio(sb["distance_from_init"], lb["distance_from_init"])
        out.append(stats.claim(
            ID, f"lb_closer_to_init_{net}", f"{net}: {at_level}, the large-batch solution lies closer to the initial point",
            "log10(||x_SB - x0|| / ||x_LB - x0||) at matched training loss, paired by seed", est, threshold=0.0,
            kind="test", note=where))

        # Keskar's magnitudes (secondary): the ratios themselves (per seed, their mean: not the log
        # ratio the direction claims above carry) against his numbers
        col = f"sharp_full_{eps}"
        pv = (paper["full"] or {}).get(eps) if paper else None
        if pv:
            ratio = pv[1] / pv[0]
            out.append(stats.claim(
                ID, f"lb_sharpness_ratio_reaches_keskar_{net}",
                f"{net}: {at_level}, the large batch is at least as much sharper (full space, eps {eps}) as in Keskar's {ana}",
                f"mean over seeds of {col}(LB) / {col}(SB) at matched training loss, the ratio per seed", _ratio(lb[col], sb[col]),
                threshold=ratio, kind="test", paper_value=f"{ratio:.1f} ({pv[1]} / {pv[0]}, {ana}, Table 3, end of training)",
                note=where))
        out.append(stats.claim(
            ID, f"lb_distance_ratio_reaches_keskar_{net}",
            f"{net}: {at_level}, the small-batch solution is at least 3 times farther from the initial point (Keskar: 3 to 10)",
            "mean over seeds of ||x_SB - x0|| / ||x_LB - x0|| at matched training loss, the ratio per seed",
            _ratio(sb["distance_from_init"], lb["distance_from_init"]), threshold=3.0, kind="test",
            paper_value="3 to 10 (Keskar et al. 2017, Section 2.2)", note=where))

        # the distance control: at an equal number of steps, does the batch size still set the distance?
        eq = equal_steps_distances(table, net)
        est = stats.paired(eq["log_d_SB"], eq["log_d_LB"]) if len(eq) else stats.missing()
        matched_est = _log_ratio(sb["distance_from_init"], lb["distance_from_init"])
        exps = {r: pd.to_numeric(eq.get(f"exponent_{r}", pd.Series(dtype=float))).mean() for r in REGIMES}
        low, matched_low = est.interval()[0], matched_est.interval()[0]
        if not len(eq) or not (math.isfinite(low) and math.isfinite(matched_low)):
            reading = "undecided (too few pairs)"
        elif low > 0:
            reading = ("the batch size: SB lies farther from the initial point than LB even after the same number of "
                       "steps, so the matched-loss distance ratio is not the step count alone")
        elif matched_low > 0:
            reading = ("the step count: at an equal number of steps SB is not farther than LB, so the matched-loss "
                       "distance ratio comes from SB taking more steps (the distance grows with steps alone)")
        else:
            reading = "neither: SB is not clearly farther at matched loss or at equal steps"
        out.append(stats.claim(
            ID, f"sb_farther_at_equal_steps_{net}",
            f"{net}: after the same number of updates, the small-batch weights lie farther from the initial point than "
            f"the large-batch ones (the distance control)",
            "log10(||x_SB - x0|| / ||x_LB - x0||) at an equal number of steps (the smaller of the two regimes' step "
            "counts at the paper's level; log-log interpolation between evaluations), paired by seed", est,
            threshold=0.0, kind="test",
            note=(f"the reading the data support: {reading}; steps compared: median {eq['step'].median() if len(eq) else float('nan'):.0f}; "
                  f"growth law d ~ steps^k: k = {exps['SB']:.2f} (SB), {exps['LB']:.2f} (LB), mean over seeds; "
                  f"matched-loss ratio {matched_est.text('.3g')}")))

        # the curve: every other declared level, secondary claims that name their level
        lv = _levels(table)
        lv = lv[(lv["network"] == net) & ~lv["paper_level"].astype(bool)]
        for level in matched_levels[:-1]:
            here = lv[np.isclose(pd.to_numeric(lv["level"]), level)]
            a, b = (here[here["regime"] == r].set_index("seed").sort_index() for r in REGIMES)
            keep = matched_pairs(a, b, tol) if len(a) and len(b) else []
            a, b = a.loc[keep], b.loc[keep]
            note = f"matched training loss {level:g}: {len(keep)} of {n_all} seed pairs within {tol:g} in log10"
            out.append(stats.claim(
                ID, f"lb_sharper_{col}_{net}_loss{level:g}",
                f"{net}: at the matched training loss {level:g}, the large-batch solution is sharper (full space, eps {eps})",
                f"log10({col}(LB) / {col}(SB)) at matched training loss {level:g}, paired by seed",
                _log_ratio(b[col], a[col]), threshold=0.0, kind="test", note=note))
            out.append(stats.claim(
                ID, f"lb_closer_to_init_{net}_loss{level:g}",
                f"{net}: at the matched training loss {level:g}, the large-batch solution lies closer to the initial point",
                f"log10(||x_SB - x0|| / ||x_LB - x0||) at matched training loss {level:g}, paired by seed",
                _log_ratio(a["distance_from_init"], b["distance_from_init"]), threshold=0.0, kind="test", note=note))
    return out
