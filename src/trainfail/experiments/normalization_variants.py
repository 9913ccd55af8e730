"""normalization_variants: validation error against batch size per normalization (Wu & He 2018).

The lecture's "more normalizations": none, batch, layer, group, instance and weight normalization
in the same conv net (models.build, arch cnn), trained at batch sizes from 2 to 128. Two arms, the
same seeds (initialization, data order) in each:

  equal_updates  (the claims' controlled arm) `equal_updates.updates` updates at each of
                 `equal_updates.batch_sizes`, every batch size at the reference lr: the same number
                 of steps of the same size, so the small and the reference batch make the same
                 progress in expectation and differ in the noise of their gradient and, for batch
                 norm, of their batch statistics. Group and layer norm, whose forward pass does not
                 depend on the batch, are the controls: what the batch size does without batch
                 statistics. (At fixed epochs, batch 32 made 16x fewer updates than batch 2 and was
                 under-trained: its error, not batch 2's, moved.)
  equal_epochs   Wu & He's protocol at a short horizon: `epochs` at every batch size, the lr scaled
                 linearly with the batch size (lr = base_lr x B / reference_batch_size). Every batch
                 size sees every example equally often, but large batches make few updates; kept
                 as a secondary reading and for the figure's largest batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.training import sizes
from trainfail.training.context import Context
from trainfail.core.contract import Claim, Settings, labelled
from trainfail.core.run_record import RunRecord, final_eval

ID = "normalization_variants"
SECTION = contract.MORE_NORMALIZATIONS
ORDER = 1
TITLE = "Batch, layer, group, instance and weight normalization against batch size (Wu & He 2018)"
HEADLINE = "error_vs_batch_size"

NAMES = {"none": "no normalization", "batch": "BatchNorm", "layer": "LayerNorm", "group": "GroupNorm",
         "instance": "InstanceNorm", "weight": "WeightNorm"}
# Wu & He 2018, Figure 1 (ResNet-50, ImageNet): validation error (%) at 32 and at 2 images per GPU
PAPER_ERROR = {"batch": (23.6, 34.7), "group": (24.1, 24.1)}
ARMS = {"equal_updates": "equal updates, reference lr", "equal_epochs": "equal epochs, lr x B / reference"}
CONTROLLED = "equal_updates"
# The one test that decides the lecture's claim: batch norm's error rises from the reference batch
# to the smallest one on the controlled arm, where both batch sizes make the same number of updates
# at the same rate (the fixed-epoch arm's reference batch was under-trained, which decided it).
PRIMARY = "batchnorm_degrades"


def scaled_lr(base_lr: float, batch_size: int, reference: int) -> float:
    """The linear scaling rule (Goyal et al. 2017), as Wu & He 2018 use across batch sizes."""
    return base_lr * batch_size / reference


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    sizes.require_layers(cfg["model"], f"experiments.{ID}.model", "each norm is put after each layer")
    ref, lr = int(cfg["reference_batch_size"]), float(cfg["optimizer"]["lr"])
    if ref not in cfg["batch_sizes"] or ref not in cfg["equal_updates"]["batch_sizes"]:
        raise ValueError(f"experiments.{ID}.reference_batch_size ({ref}) must be in batch_sizes and in "
                         "equal_updates.batch_sizes (the claims compare the smallest batch with it)")
    out = []
    common = {"dataset": cfg["dataset"], "eval_points": 1, "log_points": 10}
    for norm in cfg["norms"]:
        model = {**cfg["model"], "norm": norm}
        for bs in cfg["equal_updates"]["batch_sizes"]:
            for seed in ctx.seeds_for(cfg):
                out.append(labelled({"task": "train", **common, "model": model, "optimizer": {**cfg["optimizer"], "lr": lr},
                                     "batch_size": int(bs), "steps": int(cfg["equal_updates"]["updates"]),
                                     "seed": int(seed)}, arm="equal_updates"))
        for bs in cfg["batch_sizes"]:
            for seed in ctx.seeds_for(cfg):
                out.append(labelled({"task": "train", **common, "model": model,
                                     "optimizer": {**cfg["optimizer"], "lr": scaled_lr(lr, int(bs), ref)},
                                     "batch_size": int(bs), "epochs": int(cfg["epochs"]), "seed": int(seed)},
                                    arm="equal_epochs"))
    return out


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    rows = []
    for r in records:
        final = final_eval(r)  # the one diverged-run policy: a diverged run scores its step-0 error
        rows.append({"arm": r.labels["arm"], "norm": r.settings["model"]["norm"], "batch_size": r.settings["batch_size"], "seed": r.settings["seed"],
                     "lr": r.settings["optimizer"]["lr"], "updates": int(r.metrics["step"].max()),
                     "val_error": 1.0 - final["val_acc"], "train_error": 1.0 - final["train_acc"],
                     "diverged": r.diverged, "run_id": r.run_id})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    # in percent: the lecture's and Wu & He's unit
    t = table.assign(normalization=table["norm"].map(NAMES), val_pct=100 * table["val_error"])
    order = [NAMES[n] for n in cfg["norms"] if NAMES[n] in set(t["normalization"])]
    colors = plots.colors(order)  # one colour per normalization in every figure (plots.NORMALIZATION_COLORS)
    ref = int(cfg["reference_batch_size"])
    lines = dict(hue="normalization", hue_order=order, palette=colors, style="normalization", style_order=order,
                 markers=True, dashes=False, errorbar=plots.BAND)
    fig, axes = plots.figure(ncols=3, width=3.9, height=3.6)

    # (a) the claims' arm: equal updates at the reference lr
    ax = axes[0][0]
    ctl = t[t["arm"] == CONTROLLED]
    ctl_sizes = sorted(int(b) for b in ctl["batch_size"].unique())
    sns.lineplot(ctl, x="batch_size", y="val_pct", ax=ax, legend=False, **lines)
    plots.bound(ax, 0, 100)  # an error rate's interval stays within [0, 100] %
    ax.set(xscale="log", xlabel="batch size", ylabel="validation error (%)",
           title=f"equal updates ({cfg['equal_updates']['updates']}), the claims")
    ax.set_xticks(ctl_sizes, [str(b) for b in ctl_sizes])
    ax.minorticks_off()

    # (b) the claims' quantity itself: error at the smallest batch minus at the reference, per seed and arm
    ax = axes[0][1]
    parts = []
    for arm, part in t.groupby("arm"):
        small = int(part["batch_size"].min())
        wide = part.pivot_table(index=["normalization", "seed"], columns="batch_size", values="val_pct").reset_index()
        if small in wide and ref in wide:
            parts.append(wide.assign(degradation=wide[small] - wide[ref], arm=ARMS[arm]))
    if parts:
        per_seed = pd.concat(parts, ignore_index=True)
        arm_order = [ARMS[a] for a in ARMS if ARMS[a] in set(per_seed["arm"])]
        sns.pointplot(per_seed, x="normalization", y="degradation", hue="arm", order=order, hue_order=arm_order,
                      palette=plots.palette(len(arm_order)), errorbar=plots.BAND, capsize=0.2, linestyle="none",
                      dodge=0.4, ax=ax)
    ax.axhline(0, color="k", lw=0.8)
    margin = 100 * float(cfg["no_degradation_tolerance"])
    ax.axhspan(-margin, margin, color="0.9", lw=0, zorder=0, label="equivalence margin")
    ax.legend(loc="lower left")  # the points lie above zero or near it
    ax.set(xlabel="", ylabel=f"error(smallest B) - error(B={ref}) (points)", title=f"degradation from batch {ref} to the smallest")
    ax.tick_params(axis="x", rotation=35)

    # (c) Wu & He's protocol at this horizon, every batch size: above the reference the linearly
    # scaled lr is large and the updates few, so every normalization's error rises there
    ax = axes[0][2]
    ep = t[t["arm"] == "equal_epochs"]
    sizes = sorted(int(b) for b in ep["batch_size"].unique())
    sns.lineplot(ep, x="batch_size", y="val_pct", ax=ax, **lines)
    plots.bound(ax, 0, 100)
    if sizes and max(sizes) > ref:
        ax.axvspan(ref, max(sizes), color="0.9", lw=0, zorder=0)
    ax.set(xscale="log", xlabel="batch size", ylabel="validation error (%)", title=f"equal epochs ({cfg['epochs']}), lr x B/{ref}")
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    plots.figure_legend(fig, ax)
    plots.save(fig, outdir, "error_vs_batch_size",
               note=f"{cfg['dataset']}, {cfg['model']['arch']} {cfg['model'].get('channels')}; left: "
                    f"{cfg['equal_updates']['updates']} updates at every batch size, lr {cfg['optimizer']['lr']} (the claims); "
                    f"right: {cfg['epochs']} epochs at every batch size, lr {cfg['optimizer']['lr']} x B/{ref} (grey: above the "
                    f"reference, few updates at a large lr); {plots.BAND_NOTE} (middle: of the per-seed differences, as the claims)")


def _errors(table: pd.DataFrame, norm: str, bs: int) -> np.ndarray:
    part = table[(table["norm"] == norm) & (table["batch_size"] == bs)].sort_values("seed")
    return part["val_error"].to_numpy(float)


def degradation(table: pd.DataFrame, norm: str, small: int, reference: int) -> stats.Estimate:
    """val error at the small batch minus at the reference batch, paired by seed (same initialization)."""
    return stats.paired(_errors(table, norm, small), _errors(table, norm, reference))


def _arm(table: pd.DataFrame, arm: str) -> pd.DataFrame:
    return table[table["arm"] == arm] if "arm" in table else table


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    ref = int(cfg["reference_batch_size"])
    margin = float(cfg["no_degradation_tolerance"])
    out = []
    for arm in ARMS:
        part = _arm(table, arm)
        if part.empty:
            continue
        small, norms = int(part["batch_size"].min()), set(part["norm"])
        suffix = "" if arm == CONTROLLED else f"_{arm}"
        how = ARMS[arm]
        if "batch" in norms:
            out.append(stats.claim(
                ID, f"batchnorm_degrades{suffix}", f"BatchNorm's validation error is higher at batch {small} than at batch {ref} ({how})",
                f"val_error(B={small}) - val_error(B={ref}), BatchNorm, {how}, paired by seed",
                degradation(part, "batch", small, ref), 0.0, ">", kind="test",
                paper_value=f"{(PAPER_ERROR['batch'][1] - PAPER_ERROR['batch'][0]) / 100:.3f} (ResNet-50, ImageNet, B=2 vs 32)"))
        for norm in ("group", "layer"):
            if norm not in norms:
                continue
            out.append(stats.claim(
                ID, f"{norm}norm_does_not_degrade{suffix}",
                f"{NAMES[norm]}'s validation error at batch {small} is equivalent to its error at batch {ref}, within {margin:.0%} ({how})",
                f"val_error(B={small}) - val_error(B={ref}), {NAMES[norm]}, {how}, paired by seed",
                degradation(part, norm, small, ref), margin, "within", kind="test",
                paper_value=f"{(PAPER_ERROR['group'][1] - PAPER_ERROR['group'][0]) / 100:.3f} (GroupNorm, ResNet-50)" if norm == "group" else None))
            if "batch" in norms and arm == CONTROLLED:
                b = _errors(part, "batch", small) - _errors(part, "batch", ref)
                o = _errors(part, norm, small) - _errors(part, norm, ref)
                out.append(stats.claim(ID, f"{norm}norm_degrades_less_than_batchnorm",
                                       f"From batch {ref} to {small}, {NAMES[norm]} loses less than BatchNorm ({how})",
                                       f"degradation(BatchNorm) - degradation({NAMES[norm]}), {how}, paired by seed",
                                       stats.paired(b, o), 0.0, ">", kind="test"))
        if arm == CONTROLLED and {"batch", "group"} <= norms:
            # Wu & He's magnitude at the smallest batch: group norm's error below batch norm's
            out.append(stats.claim(
                ID, f"groupnorm_beats_batchnorm_at_b{small}",
                f"At batch {small}, GroupNorm's validation error is lower than BatchNorm's ({how})",
                f"val_error(BatchNorm, B={small}) - val_error(GroupNorm, B={small}), {how}, paired by seed",
                stats.paired(_errors(part, "batch", small), _errors(part, "group", small)), 0.0, ">", kind="test",
                paper_value=f"{(PAPER_ERROR['batch'][1] - PAPER_ERROR['group'][1]) / 100:.3f} (ResNet-50, ImageNet, B=2)"))
    return out
