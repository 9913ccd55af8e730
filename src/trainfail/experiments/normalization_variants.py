"""normalization_variants: validation error against batch size per normalization (Wu & He 2018).

The lecture's "more normalizations": none, batch, layer, group, instance and weight normalization
in the same conv net (models.build, arch cnn), trained at batch sizes from 2 to 128.

Fixed *epochs*, not steps, with the learning rate scaled linearly with the batch size
(lr = base_lr x B / reference_batch_size), as Wu & He 2018 do: every batch size sees every example
the same number of times, so a small batch is not also under-trained on data (with fixed steps,
batch 2 would see 64x fewer examples than batch 128 and the comparison would be about data, not
normalization). The price: large batches make few updates in the same epochs, which raises every
normalization's error at the largest batches; the claims therefore compare batch 2 with the
reference batch size (Wu & He: 32 per GPU), where that effect is small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import contract, plots, stats
from ..context import Context
from ..contract import Claim, Settings
from ..records import RunRecord, final_eval

ID = "normalization_variants"
SECTION = contract.MORE_NORMALIZATIONS
ORDER = 1
TITLE = "Batch, layer, group, instance and weight normalization against batch size (Wu & He 2018)"

NAMES = {"none": "no normalization", "batch": "BatchNorm", "layer": "LayerNorm", "group": "GroupNorm",
         "instance": "InstanceNorm", "weight": "WeightNorm"}
# Wu & He 2018, Figure 1 (ResNet-50, ImageNet): validation error (%) at 32 and at 2 images per GPU
PAPER_ERROR = {"batch": (23.6, 34.7), "group": (24.1, 24.1)}


def scaled_lr(base_lr: float, batch_size: int, reference: int) -> float:
    """The linear scaling rule (Goyal et al. 2017), as Wu & He 2018 use across batch sizes."""
    return base_lr * batch_size / reference


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    out = []
    ref = int(cfg["reference_batch_size"])
    for norm in cfg["norms"]:
        for bs in cfg["batch_sizes"]:
            for seed in ctx.seeds_for(cfg):
                out.append({"dataset": cfg["dataset"], "model": {**cfg["model"], "norm": norm},
                            "optimizer": {**cfg["optimizer"], "lr": scaled_lr(float(cfg["optimizer"]["lr"]), int(bs), ref)},
                            "batch_size": int(bs), "epochs": int(cfg["epochs"]), "seed": int(seed),
                            "eval_points": 1, "log_points": 10})
    return out


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    rows = []
    for r in records:
        final = final_eval(r)  # the one diverged-run policy: a diverged run scores its step-0 error
        rows.append({"norm": r.settings["model"]["norm"], "batch_size": r.settings["batch_size"], "seed": r.settings["seed"],
                     "lr": r.settings["optimizer"]["lr"], "updates": int(r.metrics["step"].max()),
                     "val_error": 1.0 - final["val_acc"], "train_error": 1.0 - final["train_acc"],
                     "diverged": r.diverged, "run_id": r.run_id})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path, ctx: Context) -> None:
    import seaborn as sns

    t = table.assign(normalization=table["norm"].map(NAMES))
    order = [NAMES[n] for n in cfg["norms"]]
    fig, axes = plots.figure(ncols=2, width=4.8, height=3.8)
    for ax, col, name in zip(axes[0], ("val_error", "train_error"), ("validation", "training")):
        sns.lineplot(t, x="batch_size", y=col, hue="normalization", hue_order=order, style="normalization",
                     style_order=order, markers=True, dashes=False, errorbar=plots.BAND, ax=ax)
        ax.set(xscale="log", xlabel="batch size (log)", ylabel=f"{name} error", title=f"{name} error against batch size")
        ax.set_xticks(sorted(table["batch_size"].unique()), [str(b) for b in sorted(table["batch_size"].unique())])
        ax.legend(fontsize=7)
    plots.save(fig, outdir, "error_vs_batch_size",
               note=f"{cfg['dataset']}, {cfg['model']['arch']} {cfg['model'].get('channels')}, {cfg['epochs']} epochs at every batch size, "
                    f"lr {cfg['optimizer']['lr']} x B/{cfg['reference_batch_size']}; mean and 95% t-interval over seeds")


def _errors(table: pd.DataFrame, norm: str, bs: int) -> np.ndarray:
    part = table[(table["norm"] == norm) & (table["batch_size"] == bs)].sort_values("seed")
    return part["val_error"].to_numpy(float)


def degradation(table: pd.DataFrame, norm: str, small: int, reference: int) -> stats.Estimate:
    """val error at the small batch minus at the reference batch, paired by seed (same initialization)."""
    return stats.paired(_errors(table, norm, small), _errors(table, norm, reference))


def claims(table: pd.DataFrame, cfg: dict, ctx: Context) -> list[Claim]:
    small, ref = int(table["batch_size"].min()), int(cfg["reference_batch_size"])
    tol = float(cfg["no_degradation_tolerance"])
    norms = set(table["norm"])
    out = []
    if "batch" in norms:
        out.append(stats.claim(ID, "batchnorm_degrades", f"BatchNorm's validation error is higher at batch {small} than at batch {ref}",
                                 f"val_error(B={small}) - val_error(B={ref}), BatchNorm", degradation(table, "batch", small, ref),
                                 0.0, ">", kind="test", paper_value=f"{PAPER_ERROR['batch'][1] - PAPER_ERROR['batch'][0]:.1f} points (ResNet-50, ImageNet)"))
    for norm in ("group", "layer"):
        if norm not in norms:
            continue
        out.append(stats.claim(ID, f"{norm}norm_does_not_degrade",
                                 f"{NAMES[norm]}'s validation error at batch {small} is within {tol:.0%} of its error at batch {ref}",
                                 f"val_error(B={small}) - val_error(B={ref}), {NAMES[norm]}", degradation(table, norm, small, ref),
                                 tol, "<", kind="test", paper_value="0.0 points (GroupNorm)" if norm == "group" else None))
        if "batch" in norms:
            b = _errors(table, "batch", small) - _errors(table, "batch", ref)
            o = _errors(table, norm, small) - _errors(table, norm, ref)
            out.append(stats.claim(ID, f"{norm}norm_degrades_less_than_batchnorm",
                                   f"From batch {ref} to {small}, {NAMES[norm]} loses less than BatchNorm",
                                   f"degradation(BatchNorm) - degradation({NAMES[norm]}), paired by seed",
                                   stats.paired(b, o), 0.0, ">", kind="test"))
    return out
