"""bn_inference: batch normalization at test time (lecture 3.5).

A conv net with BN trains as usual (PyTorch's moving averages, momentum 0.1). At every evaluation
step the on_eval hook computes the true population statistics of each BN layer's input (over the
whole training set, with the current weights; batchnorm.population_statistics) and records how
far the running mean and variance are from them. After training, test accuracy is measured three
ways: with the running statistics (PyTorch's eval mode), with the population statistics, and
with the statistics of each test batch at test batch sizes 1, 2, 8, 64. Running and population
statistics normalise every example alone, so their accuracy does not depend on the test batch
size: it is measured once and shown at every size.

Batch size 1: a BN layer after a linear layer sees one value per channel, its variance is 0 and
its output is beta for every input, so "batch statistics at batch size 1" is undefined for an MLP
(PyTorch refuses; we record NaN). The experiment therefore uses a conv net, whose BN layers
average over positions too: at batch size 1 they normalise each example by its own statistics
(like instance norm), the lecture's failure case made measurable.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import batchnorm, plots, stats, train
from ..train import RunResult

ID = "bn_inference"
SECTION = "3.5 Batch normalization at test time"
TITLE = "Running, population and per-batch statistics at test time"


def runs(cfg: dict, ctx) -> list[dict]:
    model = {**cfg["model"], "norm": "batch", "batchnorm_momentum": float(cfg["momentum"])}
    return [{"task": ID, "dataset": cfg["dataset"], "model": model, "optimizer": cfg["optimizer"],
             "schedule": {"name": schedule}, "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]),
             "seed": int(seed), "eval_points": int(cfg["eval_points"]), "log_points": int(cfg["eval_points"]),
             "test_batch_sizes": [int(b) for b in cfg["test_batch_sizes"]]}
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


def execute(settings: dict, env) -> RunResult:
    data = env.dataset(settings["dataset"])
    result = train.train(settings, data, env.device, on_eval=lambda model, step: _distances(model, data.x_train))
    result.summary["test_accuracy"] = test_accuracies(result.model, data, settings["test_batch_sizes"])
    return result


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    """Long table: kind = convergence (distance by step, layer, statistic) or accuracy (by mode, test batch size)."""
    rows = []
    for r in records:
        base = {"schedule": r.settings["schedule"]["name"], "seed": r.settings["seed"], "diverged": r.diverged, "run_id": r.run_id}
        m = r.metrics
        for col in [c for c in m.columns if c.startswith(("mean_distance_bn", "var_distance_bn"))]:
            statistic, layer = col.split("_distance_")
            for step, value in m[["step", col]].dropna().itertuples(index=False):
                rows.append({**base, "kind": "convergence", "step": int(step), "layer": layer,
                             "statistic": "mean" if statistic == "mean" else "variance", "distance": value})
        for a in r.summary.get("test_accuracy", []):
            rows.append({**base, "kind": "accuracy", "mode": a["mode"], "test_batch_size": a["test_batch_size"],
                         "accuracy": float(a["accuracy"])})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    schedules = list(dict.fromkeys(table["schedule"]))
    conv = table[table["kind"] == "convergence"]
    fig, axes = plots.figure(ncols=len(schedules), nrows=2, width=4.6, sharex=True)
    labels = {"mean": "|running - population mean| / pop. std", "variance": "|running / population variance - 1|"}
    for j, schedule in enumerate(schedules):
        for i, statistic in enumerate(("mean", "variance")):
            ax = axes[i][j]
            sns.lineplot(conv[(conv["statistic"] == statistic) & (conv["schedule"] == schedule)], x="step",
                         y="distance", hue="layer", errorbar=plots.BAND, ax=ax, legend=(i == 0 and j == 0))
            ax.set(yscale="log", xlabel="training step", ylabel=labels[statistic],
                   title=f"running {statistic}, {schedule} learning rate")
    plots.save(fig, outdir, "running_vs_population",
               note=f"BN momentum {cfg['momentum']}; population = each BN input over the training set with the current "
                    f"weights; RMS / mean over channels; mean and 95% t-interval over seeds")

    acc = table[table["kind"] == "accuracy"].copy()
    acc["test batch size"] = acc["test_batch_size"].astype(int).astype(str)
    order = [str(b) for b in sorted(acc["test_batch_size"].astype(int).unique())]
    fig, axes = plots.figure(ncols=len(schedules), width=4.6, sharey=True)
    for ax, schedule in zip(axes[0], schedules):
        sns.pointplot(acc[acc["schedule"] == schedule], x="test batch size", y="accuracy", hue="mode", order=order,
                      hue_order=["running", "population", "batch"], errorbar=plots.BAND, dodge=0.3, ax=ax)
        ax.set(ylabel="test accuracy", title=f"{schedule} learning rate")
    plots.save(fig, outdir, "accuracy_by_mode",
               note="running / population statistics normalise each example alone (same at every test batch size); "
                    "batch = each test batch's own statistics; mean and 95% t-interval over seeds")


def _seed_values(part: pd.DataFrame, column: str) -> np.ndarray:
    return part.sort_values("seed")[column].to_numpy(dtype=float)


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    out = []
    tol, margin = float(cfg["match_tolerance"]), float(cfg["failure_margin"])
    for schedule in dict.fromkeys(table["schedule"]):
        conv = table[(table["kind"] == "convergence") & (table["schedule"] == schedule)]
        for statistic in ("mean", "variance"):
            per_seed = conv[conv["statistic"] == statistic].groupby(["seed", "step"])["distance"].mean().reset_index()
            first = _seed_values(per_seed[per_seed["step"] == per_seed["step"].min()], "distance")  # averaged over layers
            last = _seed_values(per_seed.loc[per_seed.groupby("seed")["step"].idxmax()], "distance")
            # distances span orders of magnitude: compare them as a ratio, on a log scale
            # against the initial buffers (0 and 1) this can hardly fail: shown, not counted
            out.append(stats.claim(
                ID, f"running_{statistic}_approaches_population_{schedule}",
                f"{schedule} lr: the running {statistic} approaches the population {statistic} (distance at the end "
                f"of training smaller than at the start)",
                "log10(distance at step 0 / at the final step), mean over BN layers",
                stats.mean(np.log10(first / last)), kind="demonstration",
                note=f"final distance {np.mean(last):.3g} (step 0: {np.mean(first):.3g}); by construction: "
                     "the buffers start at 0 and 1"))

        acc = table[(table["kind"] == "accuracy") & (table["schedule"] == schedule)]
        at = acc[acc["test_batch_size"] == acc["test_batch_size"].min()]  # running/population: same at every size
        running = _seed_values(at[at["mode"] == "running"], "accuracy")
        population = _seed_values(at[at["mode"] == "population"], "accuracy")
        out.append(stats.claim(
            ID, f"running_matches_population_{schedule}",
            f"{schedule} lr: evaluating with running statistics gives the test accuracy of population statistics "
            f"(within {tol:.0%})",
            "accuracy(running) - accuracy(population), paired by seed; claimed within +-tolerance",
            stats.paired(running, population), threshold=tol, direction="within", kind="test",
            note=f"running {np.mean(running):.3f}, population {np.mean(population):.3f}"))

        one = _seed_values(acc[(acc["mode"] == "batch") & (acc["test_batch_size"] == 1)], "accuracy")
        row = stats.claim(
            ID, f"batch_statistics_fail_at_batch_1_{schedule}",
            f"{schedule} lr: normalising with the test batch's own statistics fails badly at test batch size 1 "
            f"(accuracy more than {margin:.0%} below population statistics)",
            "accuracy(population) - accuracy(batch statistics, B=1), paired by seed",
            stats.paired(population, one) if len(one) == len(population) else stats.missing(),
            threshold=margin, direction=">", kind="test", note=f"batch statistics at B=1: {np.nanmean(one) if np.isfinite(one).any() else math.nan:.3f}")
        if not np.isfinite(one).any():
            row.update(note="batch statistics at batch size 1 are undefined for this model (BN after a linear layer)")
        out.append(row)
    return out
