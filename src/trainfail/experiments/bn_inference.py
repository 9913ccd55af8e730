"""bn_inference: batch normalization at test time (lecture 3.5).

A conv net with BN trains as usual (PyTorch's moving averages, momentum 0.1). At every evaluation
step the on_eval hook computes the true population statistics of each BN layer's input (over the
whole training set, with the current weights; batchnorm.population_statistics) and records how
far the running mean and variance are from them. After training, test accuracy is measured three
ways: with the running statistics (PyTorch's eval mode), with the population statistics, and
with the statistics of each test batch at test batch sizes 1, 2, 8, 64. Running and population
statistics normalise every example alone, so their accuracy does not depend on the test batch
size: it is measured once and shown at every size.

How close can running statistics get? An exponential moving average of per-batch statistics
keeps the sampling noise of the last ~1/momentum batches: even with frozen weights it does not
converge to the population statistics. After training, batchnorm.moving_average_floor measures
that floor (weights frozen, buffers started at the population statistics, batches drawn as in
training, the distance averaged over `floor_steps` updates). The claims compare the final
distance with the floor, not with the initial buffers (0 and 1, which any training leaves far
behind): with a constant learning rate the weights keep moving and the average lags them; once
the rate has decayed it should come down to the floor. That contrast, constant against decayed,
is tested on seeds paired by initialization and data order.

Batch size 1: a BN layer after a linear layer sees one value per channel, its variance is 0 and
its output is beta for every input, so "batch statistics at batch size 1" is undefined for an MLP
(PyTorch refuses; we record NaN). The experiment therefore uses a conv net, whose BN layers
average over positions too: at batch size 1 they normalise each example by its own statistics
(like instance norm), the lecture's failure case made measurable.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.training import batchnorm, sizes, train
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings
from trainfail.core.run_record import RunRecord, RunResult

ID = "bn_inference"
SECTION = contract.BN_AT_TEST_TIME
ORDER = 1
TITLE = "Running, population and per-batch statistics at test time"
HEADLINE = "accuracy_by_mode"


# The primary: running statistics give the test accuracy of population statistics (the lecture's claim
# that moving averages stand in at test time), an equivalence at constant lr; the rest are secondaries.
PRIMARY = "running_matches_population_constant"
FIGURE_CLAIMS = {"accuracy_by_mode": PRIMARY}

def runs(cfg: dict, ctx: Context) -> list[Settings]:
    sizes.require_layers(cfg["model"], f"experiments.{ID}.model", "the BN layer whose statistics are measured")
    model = {**cfg["model"], "norm": "batch", "batchnorm_momentum": float(cfg["momentum"])}
    return [{"task": ID, "dataset": cfg["dataset"], "model": model, "optimizer": cfg["optimizer"],
             "schedule": {"name": schedule}, "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]),
             "seed": int(seed), "eval_points": int(cfg["eval_points"]), "log_points": int(cfg["eval_points"]),
             "test_batch_sizes": [int(b) for b in cfg["test_batch_sizes"]], "floor_steps": int(cfg["floor_steps"])}
            for schedule in cfg["schedules"] for seed in ctx.seeds_for(cfg)]


def _distances(model, x_train) -> dict:
    """Columns for an evaluation row: each BN layer's running-vs-population distance."""
    pop = batchnorm.population_statistics(model, x_train)
    cols = {}
    for k, ((_, layer), (mean, var)) in enumerate(zip(batchnorm.bn_layers(model), pop), start=1):
        cols[f"mean_distance_bn{k}"], cols[f"var_distance_bn{k}"] = batchnorm.statistics_distance(
            layer.running_mean, layer.running_var, mean, var)
    return cols


def test_accuracies(model, data, test_batch_sizes: list[int]) -> list[dict]:
    """Test accuracy by evaluation mode and test batch size."""
    whole = len(data.x_test)
    running = batchnorm.accuracy_in_batches(model, data.x_test, data.y_test, whole)
    population = batchnorm.accuracy_in_batches(
        batchnorm.with_population_statistics(model, batchnorm.population_statistics(model, data.x_train)),
        data.x_test, data.y_test, whole)
    per_batch = batchnorm.with_batch_statistics(model)
    rows = []
    for b in test_batch_sizes:
        rows += [{"mode": "running", "test_batch_size": b, "accuracy": running},
                 {"mode": "population", "test_batch_size": b, "accuracy": population},
                 {"mode": "batch", "test_batch_size": b,
                  "accuracy": batchnorm.accuracy_in_batches(per_batch, data.x_test, data.y_test, b)}]
    return rows


def execute(settings: Settings, env: RunEnv) -> RunResult:
    data = env.dataset(settings["dataset"])
    result = train.train(settings, data, env.device, on_eval=lambda model, step: _distances(model, data.x_train))
    result.summary["test_accuracy"] = test_accuracies(result.model, data, settings["test_batch_sizes"])
    if not result.diverged:
        generator = torch.Generator(device=env.device).manual_seed(int(settings["seed"]))
        floor = batchnorm.moving_average_floor(result.model, data.x_train, int(settings["batch_size"]),
                                               int(settings["floor_steps"]), generator)
        result.summary["floor"] = [{"layer": f"bn{k}", "mean": m, "variance": v} for k, (m, v) in enumerate(floor, start=1)]
    return result


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    """Long table: kind = convergence (distance by step, layer, statistic), floor (the moving
    average's floor by layer and statistic, after training) or accuracy (by mode, test batch size)."""
    rows = []
    for r in records:
        base = {"schedule": r.settings["schedule"]["name"], "seed": r.settings["seed"], "diverged": r.diverged, "run_id": r.run_id}
        m = r.metrics
        for col in [c for c in m.columns if c.startswith(("mean_distance_bn", "var_distance_bn"))]:
            statistic, layer = col.split("_distance_")
            for step, value in m[["step", col]].dropna().itertuples(index=False):
                rows.append({**base, "kind": "convergence", "step": int(step), "layer": layer,
                             "statistic": "mean" if statistic == "mean" else "variance", "distance": value})
        for f in r.summary.get("floor", []):
            rows += [{**base, "kind": "floor", "layer": f["layer"], "statistic": statistic, "distance": f[key]}
                     for statistic, key in (("mean", "mean"), ("variance", "variance"))]
        for a in r.summary.get("test_accuracy", []):
            rows.append({**base, "kind": "accuracy", "mode": a["mode"], "test_batch_size": a["test_batch_size"],
                         "accuracy": float(a["accuracy"])})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    schedules = list(dict.fromkeys(table["schedule"]))
    conv = table[table["kind"] == "convergence"]
    floor = table[table["kind"] == "floor"]
    layers = sorted(set(conv["layer"]))
    colors = dict(zip(layers, plots.palette(len(layers))))
    fig, axes = plots.figure(ncols=len(schedules), nrows=2, width=4.6, sharex=True)
    labels = {"mean": "|running - population mean| / pop. std", "variance": "|running / population variance - 1|"}
    for j, schedule in enumerate(schedules):
        for i, statistic in enumerate(("mean", "variance")):
            ax = axes[i][j]
            sns.lineplot(conv[(conv["statistic"] == statistic) & (conv["schedule"] == schedule)], x="step",
                         y="distance", hue="layer", hue_order=layers, palette=colors, errorbar=plots.BAND, ax=ax,
                         legend=(i == 0 and j == 0))
            # the moving average's floor of each layer (frozen final weights): how close it can get
            part = floor[(floor["statistic"] == statistic) & (floor["schedule"] == schedule)]
            for layer, value in part.groupby("layer")["distance"].mean().items():
                ax.axhline(value, color=colors.get(layer, "0.5"), ls=":", lw=1.2)
            ax.set(yscale="log", xlabel="training step", ylabel=labels[statistic],
                   title=f"running {statistic}, {schedule} learning rate")
    plots.save(fig, outdir, "running_vs_population",
               note=f"BN momentum {cfg['momentum']}; population = each BN input over the training set with the current "
                    f"weights; RMS / mean over channels; dotted: the moving average's floor (final weights frozen, "
                    f"mean over seeds); {plots.BAND_NOTE}")

    acc = table[table["kind"] == "accuracy"].copy()
    acc["test batch size"] = acc["test_batch_size"].astype(int).astype(str)
    order = [str(b) for b in sorted(acc["test_batch_size"].astype(int).unique())]
    fig, axes = plots.figure(ncols=len(schedules), width=4.6, sharey=True)
    for ax, schedule in zip(axes[0], schedules):
        sns.pointplot(acc[acc["schedule"] == schedule], x="test batch size", y="accuracy", hue="mode", order=order,
                      hue_order=["running", "population", "batch"], errorbar=plots.BAND, dodge=0.3, ax=ax)
        ax.set(ylabel="test accuracy", title=f"{schedule} learning rate")
    for ax in axes[0]:  # after every panel: they share the y axis
        plots.bound(ax, 0, 1)  # an accuracy's interval stays within [0, 1]
    plots.save(fig, outdir, "accuracy_by_mode",
               note="running / population statistics normalise each example alone (same at every test batch size); "
                    "batch = each test batch's own statistics; mean and 95% t-interval over seeds")


def _seed_values(part: pd.DataFrame, column: str) -> np.ndarray:
    return part.sort_values("seed")[column].to_numpy(dtype=float)


def floor_ratios(table: pd.DataFrame, schedule: str, statistic: str) -> pd.DataFrame:
    """Per seed: the distance at step 0 and at the final step, and the moving average's floor
    (each averaged over BN layers), and log10(final / floor). A diverged run has no floor (NaN)."""
    part = table[(table["schedule"] == schedule) & (table["statistic"] == statistic)]
    conv = part[part["kind"] == "convergence"].groupby(["seed", "step"])["distance"].mean().reset_index()
    first = conv[conv["step"] == conv["step"].min()].set_index("seed")["distance"]
    last = conv.loc[conv.groupby("seed")["step"].idxmax()].set_index("seed")["distance"]
    floor = part[part["kind"] == "floor"].groupby("seed")["distance"].mean()
    out = pd.DataFrame({"first": first, "final": last}).join(floor.rename("floor"), how="left")
    out["log_ratio"] = np.log10(out["final"] / out["floor"])
    return out.sort_index()


def _accuracy_gap(table: pd.DataFrame, schedule: str) -> pd.DataFrame:
    """Per seed: test accuracy with running and with population statistics (the same at every
    test batch size: read at the smallest)."""
    acc = table[(table["kind"] == "accuracy") & (table["schedule"] == schedule)]
    at = acc[acc["test_batch_size"] == acc["test_batch_size"].min()]
    return at.pivot_table(index="seed", columns="mode", values="accuracy").sort_index()


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    out = []
    tol, margin, factor = float(cfg["match_tolerance"]), float(cfg["failure_margin"]), float(cfg["floor_factor"])
    schedules = list(dict.fromkeys(table["schedule"]))
    for schedule in schedules:
        for statistic in ("mean", "variance"):
            r = floor_ratios(table, schedule, statistic)
            # a diverged run has no trained point, hence no floor: counted in the note, not scored
            diverged = f"; {int(r['floor'].isna().sum())}/{len(r)} runs diverged (no floor)" if r["floor"].isna().any() else ""
            out.append(stats.claim(
                ID, f"running_{statistic}_at_floor_{schedule}",
                f"{schedule} lr: at the end of training the running {statistic} is as close to the population {statistic} "
                f"as a moving average of batch statistics can be (within {factor:g}x its sampling floor)",
                "log10(final distance / moving-average floor), distance and floor averaged over BN layers",
                stats.mean(r["log_ratio"]), threshold=float(np.log10(factor)), direction="<", kind="test",
                note=f"final distance {r['final'].mean():.3g}, floor {r['floor'].mean():.3g} (frozen weights, momentum "
                     f"{cfg['momentum']}, batch {cfg['batch_size']}); step 0 (the initial buffers): {r['first'].mean():.3g}"
                     + diverged))

        gap = _accuracy_gap(table, schedule)
        running, population = gap["running"].to_numpy(float), gap["population"].to_numpy(float)
        out.append(stats.claim(
            ID, f"running_matches_population_{schedule}",
            f"{schedule} lr: evaluating with running statistics gives the test accuracy of population statistics "
            f"(within {tol:.0%})",
            "accuracy(running) - accuracy(population), paired by seed; claimed within +-tolerance",
            stats.paired(running, population), threshold=tol, direction="within", kind="test",
            note=f"running {np.mean(running):.3f}, population {np.mean(population):.3f}"))

        acc = table[(table["kind"] == "accuracy") & (table["schedule"] == schedule)]
        one = _seed_values(acc[(acc["mode"] == "batch") & (acc["test_batch_size"] == 1)], "accuracy")
        row = stats.claim(
            ID, f"batch_statistics_fail_at_batch_1_{schedule}",
            f"{schedule} lr: normalising with the test batch's own statistics fails badly at test batch size 1 "
            f"(accuracy more than {margin:.0%} below population statistics)",
            "accuracy(population) - accuracy(batch statistics, B=1), paired by seed",
            stats.paired(population, one) if len(one) == len(population) else stats.missing(),
            threshold=margin, direction=">", kind="demonstration",
            note=f"by construction: at B=1 the last BN normalises each channel over its own positions, and the global "
                 f"pool after it sees only each channel's shape; batch statistics at B=1: "
                 f"{np.nanmean(one) if np.isfinite(one).any() else math.nan:.3f}")
        if not np.isfinite(one).any():
            row.update(note="batch statistics at batch size 1 are undefined for this model (BN after a linear layer)")
        out.append(row)

    # the lecture's contrast: the same seeds (initialization, data order) with a constant and with
    # a decayed learning rate; the decayed one brings the running statistics down to the floor
    for decayed in [s for s in schedules if s != "constant"] if "constant" in schedules else []:
        for statistic in ("mean", "variance"):
            c, d = floor_ratios(table, "constant", statistic), floor_ratios(table, decayed, statistic)
            common = c.index.intersection(d.index)
            out.append(stats.claim(
                ID, f"decay_brings_running_{statistic}_to_floor_{decayed}",
                f"The running {statistic} ends closer to its floor with a {decayed}-decayed learning rate than with a "
                "constant one (the moving average lags weights that keep moving)",
                f"log10(final distance / floor): constant - {decayed}, paired by seed",
                stats.paired(c.loc[common, "log_ratio"], d.loc[common, "log_ratio"]), threshold=0.0, direction=">",
                kind="test"))
        c, d = _accuracy_gap(table, "constant"), _accuracy_gap(table, decayed)
        common = c.index.intersection(d.index)
        gap_c = (c.loc[common, "running"] - c.loc[common, "population"]).abs()
        gap_d = (d.loc[common, "running"] - d.loc[common, "population"]).abs()
        out.append(stats.claim(
            ID, f"decay_closes_running_accuracy_gap_{decayed}",
            f"Running statistics cost less test accuracy (against population statistics) with a {decayed}-decayed "
            "learning rate than with a constant one",
            f"|accuracy(running) - accuracy(population)|: constant - {decayed}, paired by seed",
            stats.paired(gap_c, gap_d), threshold=0.0, direction=">", kind="test",
            note=f"gap constant {gap_c.mean():.3f}, {decayed} {gap_d.mean():.3f}"))
    return out
