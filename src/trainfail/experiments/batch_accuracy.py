"""batch_accuracy: accuracy against batch size with everything else fixed (lecture 1.2).

The lecture's MNIST / CIFAR-10 slide: the same model, optimizer, learning rate and number of
epochs at every batch size; larger batches end with worse training (and validation) accuracy:
"large batch hurts optimization". Several seeds per cell; intervals over seeds.
"""

from __future__ import annotations

import pandas as pd

from .. import plots, stats
from ..runs import final_eval

ID = "batch_accuracy"
SECTION = "1.2 Batch size"
TITLE = "Accuracy against batch size at a fixed number of epochs"


def runs(cfg: dict, ctx) -> list[dict]:
    out = []
    for ds in cfg["datasets"]:
        for bs in cfg["batch_sizes"]:
            for seed in ctx.seeds_for(cfg):
                out.append({"dataset": ds["name"], "model": ds["model"], "optimizer": cfg["optimizer"],
                            "batch_size": int(bs), "epochs": int(cfg["epochs"]), "seed": int(seed),
                            "eval_points": 10, "log_points": 50})
    return out


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    rows = []
    for r in records:
        final = final_eval(r)  # a diverged run counts as no progress (its step-0 evaluation)
        rows.append({"dataset": r.settings["dataset"], "batch_size": r.settings["batch_size"], "seed": r.settings["seed"],
                     **final, "updates": int(r.metrics["step"].max()), "diverged": r.diverged, "run_id": r.run_id})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    long = table.melt(id_vars=["dataset", "batch_size", "seed"], value_vars=["train_acc", "val_acc"],
                      var_name="split", value_name="accuracy")
    long["split"] = long["split"].map({"train_acc": "train", "val_acc": "validation"})
    fig, axes = plots.figure(ncols=2, width=4.8)
    for ax, split in zip(axes[0], ("train", "validation")):
        sns.lineplot(long[long["split"] == split], x="batch_size", y="accuracy", hue="dataset",
                     marker="o", errorbar=plots.BAND, ax=ax)
        ax.set(xscale="log", xlabel="batch size", title=f"{split} accuracy")
    plots.save(fig, outdir, "accuracy_vs_batch_size",
               note=f"{cfg['epochs']} epochs, {cfg['optimizer']['name']} lr {cfg['optimizer']['lr']} at every batch size; mean and 95% t-interval over seeds")


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    out = []
    for ds, part in table.groupby("dataset"):
        sizes = sorted(part["batch_size"].unique())
        small, largest = sizes[0], sizes[-1]
        s = part[part["batch_size"] == small].sort_values("seed")
        l = part[part["batch_size"] == largest].sort_values("seed")
        for split in ("train", "val"):
            col = f"{split}_acc"
            name = "training" if split == "train" else "validation"
            # the batch sizes share seeds (same initialization): a paired interval over seeds
            out.append(stats.claim(
                ID, f"large_batch_lower_{split}_acc_{ds}",
                f"{ds}: batch {largest} ends with lower {name} accuracy than batch {small} after {cfg['epochs']} epochs",
                f"{col}(B={small}) - {col}(B={largest})", stats.paired(s[col], l[col]), kind="test"))
    return out
