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

from .. import contract, plots, sizes, stats
from ..context import Context
from ..contract import Claim, Settings
from ..records import RunRecord, final_eval

ID = "normalization_variants"
SECTION = contract.MORE_NORMALIZATIONS
ORDER = 1
TITLE = "Batch, layer, group, instance and weight normalization against batch size (Wu & He 2018)"
HEADLINE = "error_vs_batch_size"

NAMES = {"none": "no normalization", "batch": "BatchNorm", "layer": "LayerNorm", "group": "GroupNorm",
         "instance": "InstanceNorm", "weight": "WeightNorm"}
# Wu & He 2018, Figure 1 (ResNet-50, ImageNet): validation error (%) at 32 and at 2 images per GPU
PAPER_ERROR = {"batch": (23.6, 34.7), "group": (24.1, 24.1)}


def scaled_lr(base_lr: float, batch_size: int, reference: int) -> float:
    """The linear scaling rule (Goyal et al. 2017), as Wu & He 2018 use across batch sizes."""
    return base_lr * batch_size / reference


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    sizes.require_layers(cfg["model"], f"experiments.{ID}.model", "each norm is put after each layer")
    out = []
    ref = int(cfg["reference_batch_size"])
    for norm in cfg["norms"]:
        for bs in cfg["batch_sizes"]:
            for seed in ctx.seeds_for(cfg):
                out.append({"task": "train", "dataset": cfg["dataset"], "model": {**cfg["model"], "norm": norm},
                            "optimizer": {**cfg["optimizer"], "lr": scaled_lr(float(cfg["optimizer"]["lr"]), int(bs), ref)},
                            "batch_size": int(bs), "epochs": int(cfg["epochs"]), "seed": int(seed),
                            "eval_points": 1, "log_points": 10})
    return out


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    rows = []
    for r in records:
        final = final_eval(r)  # the one diverged-run policy: a diverged run scores its step-0 error
        rows.append({"norm": r.settings["model"]["norm"], "batch_size": r.settings["batch_size"], "seed": r.settings["seed"],
                     "lr": r.settings["optimizer"]["lr"], "updates": int(r.metrics["step"].max()),
                     "val_error": 1.0 - final["val_acc"], "train_error": 1.0 - final["train_acc"],
                     "diverged": r.diverged, "run_id": r.run_id})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    # in percent: the lecture's and Wu & He's unit
    t = table.assign(normalization=table["norm"].map(NAMES), val_pct=100 * table["val_error"])
    order = [NAMES[n] for n in cfg["norms"] if NAMES[n] in set(t["normalization"])]
    colors = dict(zip(order, plots.palette(len(order))))
    small, ref = int(table["batch_size"].min()), int(cfg["reference_batch_size"])
    sizes = sorted(int(b) for b in table["batch_size"].unique())
    lines = dict(hue="normalization", hue_order=order, palette=colors, style="normalization", style_order=order,
                 markers=True, dashes=False, errorbar=plots.BAND)
    fig, axes = plots.figure(ncols=3, width=3.9, height=3.6)

    # (a) where the claims live: the small batches up to the reference one, on a linear scale
    ax = axes[0][0]
    sns.lineplot(t[t["batch_size"] <= ref], x="batch_size", y="val_pct", ax=ax, legend=False, **lines)
    ax.set(xscale="log", xlabel="batch size", ylabel="validation error (%)", title=f"batch {small} to {ref} (the claims)")
    ax.set_xticks([b for b in sizes if b <= ref], [str(b) for b in sizes if b <= ref])
    ax.minorticks_off()

    # (b) the claims' quantity itself: error at the smallest batch minus at the reference, per seed
    per_seed = t.pivot_table(index=["normalization", "seed"], columns="batch_size", values="val_pct").reset_index()
    if small in per_seed and ref in per_seed:
        per_seed["degradation"] = per_seed[small] - per_seed[ref]
        sns.pointplot(per_seed, x="normalization", y="degradation", hue="normalization", order=order, hue_order=order,
                      palette=colors, errorbar=plots.BAND, capsize=0.2, linestyle="none", legend=False, ax=axes[0][1])
    axes[0][1].axhline(0, color="k", lw=0.8)
    axes[0][1].axhline(100 * float(cfg["no_degradation_tolerance"]), color="0.4", lw=0.8, ls=":",
                       label="'does not degrade' tolerance")
    axes[0][1].legend(loc="upper right")
    axes[0][1].set(xlabel="", ylabel=f"error(B={small}) - error(B={ref}) (points)",
                   title=f"degradation from batch {ref} to {small}")
    axes[0][1].tick_params(axis="x", rotation=35)

    # (c) every batch size: above the reference the linearly scaled lr is large and the updates
    # few, so every normalization's error rises there (not the small-batch effect the lecture means)
    ax = axes[0][2]
    sns.lineplot(t, x="batch_size", y="val_pct", ax=ax, **lines)
    ax.axvspan(ref, max(sizes), color="0.9", lw=0, zorder=0)
    ax.set(xscale="log", xlabel="batch size", ylabel="validation error (%)", title="all batch sizes")
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    plots.figure_legend(fig, ax)
    plots.save(fig, outdir, "error_vs_batch_size",
               note=f"{cfg['dataset']}, {cfg['model']['arch']} {cfg['model'].get('channels')}, {cfg['epochs']} epochs at every batch "
                    f"size, lr {cfg['optimizer']['lr']} x B/{ref}; grey (right): batches above the reference, where the "
                    f"scaled lr is {max(sizes) // ref}x larger and the updates {max(sizes) // ref}x fewer; "
                    f"{plots.BAND_NOTE} (middle: of the per-seed differences, as the claims)")


def _errors(table: pd.DataFrame, norm: str, bs: int) -> np.ndarray:
    part = table[(table["norm"] == norm) & (table["batch_size"] == bs)].sort_values("seed")
    return part["val_error"].to_numpy(float)


def degradation(table: pd.DataFrame, norm: str, small: int, reference: int) -> stats.Estimate:
    """val error at the small batch minus at the reference batch, paired by seed (same initialization)."""
    return stats.paired(_errors(table, norm, small), _errors(table, norm, reference))


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
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
