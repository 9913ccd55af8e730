"""normalization_variants: validation error against batch size per normalization (Wu & He 2018).

The lecture's "more normalizations": none, batch, layer, group, instance and weight normalization
in the same conv net (models.build, arch cnn), trained at batch sizes from 2 to 128. Two arms, the
same seeds (initialization, data order) in each:

  equal_updates  (the claims' controlled arm) `equal_updates.updates` updates at each of
                 `equal_updates.batch_sizes`, for each of `equal_updates.norms`, every (batch size,
                 normalization) cell at its own learning rate, chosen by trainfail.training.tuning
                 from `equal_updates.tuning.lrs` on tuning seeds disjoint from the claims' (the
                 highest mean final validation accuracy): each cell at its best rate, so the small and
                 the reference batch make the same number of updates, each as well tuned, and differ
                 in the noise of their gradient and, for batch norm, of their batch statistics. Group
                 and layer norm, whose forward pass does not depend on the batch, are the controls:
                 what the batch size does without batch statistics. (At fixed epochs, batch 32 made 16x
                 fewer updates than batch 2 and was under-trained; at one rate for every cell, the
                 reference batch's rate was too high at batch 2 for every normalization.)
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
from trainfail.training import sizes, tuning
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
ARMS = {"equal_updates": "equal updates, each cell at its tuned lr", "equal_epochs": "equal epochs, lr x B / reference"}
CONTROLLED = "equal_updates"
# what a cell's sweep maximises (mean over the tuning seeds): the claims' own quantity, validation error
CRITERION = "final_val_acc"
# The protocol, declared before any verdict of it was seen: every (batch size, normalization) cell of
# the controlled arm at its own rate, tuned on tuning seeds (trainfail.training.tuning), not the linear
# scaling rule. Wu & He scale the rate with the batch (lr = 0.1 B/32) at equal *epochs*, where batch 2
# makes 16x the updates of batch 32; at equal updates the same rule would give batch 2 a sixteenth of
# the reference's step for as many steps, and its error would rise because it moved less, for every
# normalization. The linearly scaled protocol stays the secondary arm (equal_epochs), which cannot
# afford the horizon at which Wu & He's batch 32 converges.
# The one test that decides the lecture's claim: batch norm's error rises from the reference batch
# to the smallest one on the controlled arm, where both batch sizes make the same number of updates,
# each at its own tuned rate (the fixed-epoch arm's reference batch was under-trained, which decided
# it; one rate for every cell was too high at batch 2).
PRIMARY = "batchnorm_degrades"


def scaled_lr(base_lr: float, batch_size: int, reference: int) -> float:
    """The linear scaling rule (Goyal et al. 2017), as Wu & He 2018 use across batch sizes."""
    return base_lr * batch_size / reference


def grid_of(cfg: dict) -> dict[tuple[str, int], list[float]]:
    """The controlled arm's candidate rates per cell, (norm, batch size): its schema's `tuning.grids`,
    where an entry without `norms` holds for every norm of the arm at its batch size. Refused unless
    every cell of the arm has exactly one grid and every grid is some cell's."""
    eq, key = cfg["equal_updates"], f"experiments.{ID}.equal_updates.tuning.grids"
    cells = [(str(n), int(b)) for n in eq["norms"] for b in eq["batch_sizes"]]
    out: dict[tuple[str, int], list[float]] = {}
    for i, g in enumerate(eq["tuning"]["grids"]):
        bs = int(g["batch_size"])
        mine = [c for c in cells if c[1] == bs and c[0] in g.get("norms", eq["norms"])]
        if not mine:
            raise ValueError(f"{key}[{i}]: batch size {bs}, norms {g.get('norms', eq['norms'])}: no cell of the arm "
                             f"(equal_updates.batch_sizes {eq['batch_sizes']}, norms {eq['norms']})")
        for c in mine:
            if c in out:
                raise ValueError(f"{key}[{i}]: {c[0]} at batch size {bs} has a grid already: one grid per cell")
            out[c] = [float(v) for v in g["lrs"]]
    if missing := [c for c in cells if c not in out]:
        raise ValueError(f"{key}: no grid for the cells (norm, batch size) {missing}: one grid per cell of the arm")
    return out


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    """The controlled arm (per cell its sweep on the tuning seeds, arm "sweep", then its tuned runs on
    the claim seeds) and the equal-epochs arm, every run labelled with its arm."""
    sizes.require_layers(cfg["model"], f"experiments.{ID}.model", "each norm is put after each layer")
    ref, lr = int(cfg["reference_batch_size"]), float(cfg["optimizer"]["lr"])
    eq = cfg["equal_updates"]
    if ref not in cfg["batch_sizes"] or ref not in eq["batch_sizes"]:
        raise ValueError(f"experiments.{ID}.reference_batch_size: {ref} must be in batch_sizes and in "
                         "equal_updates.batch_sizes (the claims compare the smallest batch with it)")
    if unknown := [n for n in eq["norms"] if n not in cfg["norms"]]:
        raise ValueError(f"experiments.{ID}.equal_updates.norms: {unknown} not in experiments.{ID}.norms "
                         f"({cfg['norms']}): the controlled arm trains some of the experiment's norms")
    grids = grid_of(cfg)
    seeds = [int(s) for s in ctx.seeds_for(cfg)]
    out = []
    common = {"dataset": cfg["dataset"], "eval_points": 1, "log_points": 10}
    for norm in cfg["norms"]:
        model = {**cfg["model"], "norm": norm}
        for bs in eq["batch_sizes"] if norm in eq["norms"] else []:
            base = {**common, "model": model, "optimizer": dict(cfg["optimizer"]), "batch_size": int(bs),
                    "steps": int(eq["updates"])}
            # the cell's sweep (stage 0) and its runs at the chosen rate (stage 1); plan refuses tuning
            # seeds that are also claim seeds
            out += [labelled(r, arm=CONTROLLED if tuning.stage(r) else "sweep")
                    for r in tuning.plan(base, grids[norm, int(bs)], eq["tuning"]["seeds"], seeds, CRITERION)]
        for bs in cfg["batch_sizes"]:
            for seed in seeds:
                out.append(labelled({"task": "train", **common, "model": model,
                                     "optimizer": {**cfg["optimizer"], "lr": scaled_lr(lr, int(bs), ref)},
                                     "batch_size": int(bs), "epochs": int(cfg["epochs"]), "seed": int(seed)},
                                    arm="equal_epochs"))
    return out


def cell(norm: str, batch_size) -> str:
    """A controlled-arm cell's name, as the claims' notes and the tuning table give it."""
    return f"{NAMES.get(norm, norm)} B={int(batch_size)}"


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    """One row per run: the two arms' runs on the claim seeds (a tuned run at the rate its cell's
    sweep chose, tuning.check), the sweeps' runs on the tuning seeds (arm "sweep"), and per cell its
    sweep's choice (arm "tuning": tuning.choice_rows with the cell's norm; the chosen rate, its mean
    score and its neighbours', edge_optimum)."""
    rows = []
    for r in records:
        s = r.settings
        plain, lr = (s["base"], tuning.check(r, ctx.results)) if tuning.stage(s) else (s, s["optimizer"]["lr"])
        final = final_eval(r)  # the one diverged-run policy: a diverged run scores its step-0 error
        rows.append({"arm": r.labels["arm"], "norm": plain["model"]["norm"], "batch_size": plain["batch_size"],
                     "seed": s["seed"], "lr": lr, "updates": int(r.metrics["step"].max()),
                     "val_error": 1.0 - final["val_acc"], "train_error": 1.0 - final["train_acc"],
                     "diverged": r.diverged, "run_id": r.run_id})
    norm_of = {tuning.sweep_id(spec): spec["base"]["model"]["norm"]
               for r in records if (spec := tuning.sweep_of(r.settings)) is not None}
    rows += [{"arm": "tuning", "norm": norm_of[c["sweep_id"]], "cell": cell(norm_of[c["sweep_id"]], c["batch_size"]), **c}
             for c in tuning.choice_rows(records, ctx.results).to_dict("records")]
    return pd.DataFrame(rows)


def _runs(table: pd.DataFrame) -> pd.DataFrame:
    """The arms' rows (the claim seeds' runs), without the sweeps' runs and choices."""
    return table[table["arm"].isin(list(ARMS))]


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns
    from matplotlib.lines import Line2D

    chosen = tuning.rows_in(table, "arm", "tuning")
    tuning.write_choices(chosen, outdir, keys=("cell",))  # the report shows it as a table
    # in percent: the lecture's and Wu & He's unit
    every = table.assign(normalization=table["norm"].map(NAMES), val_pct=100 * table["val_error"])
    t = _runs(every)
    order = [NAMES[n] for n in cfg["norms"] if NAMES[n] in set(t["normalization"])]
    colors = plots.colors(order)  # one colour per normalization in every figure (plots.NORMALIZATION_COLORS)
    ref = int(cfg["reference_batch_size"])
    eq = cfg["equal_updates"]
    lines = dict(hue="normalization", hue_order=order, palette=colors, style="normalization", style_order=order,
                 markers=True, dashes=False, errorbar=plots.BAND)
    fig, axes = plots.figure(ncols=4, width=3.9, height=3.6)

    # (a) the claims' arm: equal updates, each cell at its tuned lr
    ax = axes[0][0]
    ctl = t[t["arm"] == CONTROLLED]
    ctl_sizes = sorted(int(b) for b in ctl["batch_size"].unique())
    sns.lineplot(ctl, x="batch_size", y="val_pct", ax=ax, legend=False, **lines)
    plots.bound(ax, 0, 100)  # an error rate's interval stays within [0, 100] %
    ax.set(xscale="log", xlabel="batch size", ylabel="validation error (%)",
           title=f"equal updates ({eq['updates']}), tuned lr: the claims")
    ax.set_xticks(ctl_sizes, [str(b) for b in ctl_sizes])
    ax.minorticks_off()

    # (b) the cells' sweeps on the tuning seeds: mean validation error against lr, the chosen rate ringed
    ax = axes[0][1]
    sweeps = every[every["arm"] == "sweep"]
    small = min(ctl_sizes) if ctl_sizes else None
    for (name, bs), part in sweeps.groupby(["normalization", "batch_size"], sort=False):
        mean = part.groupby("lr")["val_pct"].mean()
        ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, color=colors.get(name, "k"),
                ls="-" if int(bs) == small else "--")
    for c in chosen.itertuples():
        ax.plot(c.lr, 100 * (1 - c.score), "o", ms=9, mfc="none", mec=colors.get(NAMES[c.norm], "k"))
    styles = [Line2D([], [], color="k", ls="-" if b == small else "--", label=f"B={b}") for b in ctl_sizes]
    if styles:
        ax.legend(handles=styles + [Line2D([], [], color="k", marker="o", ms=9, mfc="none", ls="none", label="chosen")])
    ax.set(xscale="log", xlabel="learning rate", ylabel="validation error (%), mean of tuning seeds",
           title=f"tuning seeds {eq['tuning']['seeds']}: each cell's sweep")

    # (c) the claims' quantity itself: error at the smallest batch minus at the reference, per seed and arm
    ax = axes[0][2]
    parts = []
    for arm, part in t.groupby("arm"):
        small_arm = int(part["batch_size"].min())
        wide = part.pivot_table(index=["normalization", "seed"], columns="batch_size", values="val_pct").reset_index()
        if small_arm in wide and ref in wide:
            parts.append(wide.assign(degradation=wide[small_arm] - wide[ref], arm=ARMS[arm]))
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

    # (d) Wu & He's protocol at this horizon, every batch size: above the reference the linearly
    # scaled lr is large and the updates few, so every normalization's error rises there
    ax = axes[0][3]
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
               note=f"{cfg['dataset']}, {cfg['model']['arch']} {cfg['model'].get('channels')}; (a, the claims) "
                    f"{eq['updates']} updates at every batch size, each cell at the rate of its grid with the best mean "
                    f"validation accuracy on tuning seeds {eq['tuning']['seeds']} (b: the sweeps); (d) {cfg['epochs']} "
                    f"epochs at every batch size, lr {cfg['optimizer']['lr']} x B/{ref} (grey: above the reference, few "
                    f"updates at a large lr); {plots.BAND_NOTE} ((c): of the per-seed differences, as the claims)")


def _errors(table: pd.DataFrame, norm: str, bs: int) -> np.ndarray:
    part = table[(table["norm"] == norm) & (table["batch_size"] == bs)].sort_values("seed")
    return part["val_error"].to_numpy(float)


def degradation(table: pd.DataFrame, norm: str, small: int, reference: int, test_n: int | None = None) -> stats.Estimate:
    """val error at the small batch minus at the reference batch, paired by seed (same initialization);
    test_n: the errors' held-out examples, whose sampling error the interval adds (stats.paired)."""
    return stats.paired(_errors(table, norm, small), _errors(table, norm, reference), test_n=test_n)


def _arm(table: pd.DataFrame, arm: str) -> pd.DataFrame:
    return table[table["arm"] == arm] if "arm" in table else table


def tuned_note(table: pd.DataFrame, norms: list[str], sizes: list[int]) -> str:
    """The note of a controlled-arm claim resting on the cells (norms x sizes): their tuned rates, and
    tuning.edge_note's mark where a cell's chosen rate is at an edge of its grid ("" without choices)."""
    rows = tuning.rows_in(table, "arm", "tuning")
    rows = rows[rows["norm"].isin(norms) & rows["batch_size"].astype(int).isin(sizes)] if len(rows) else rows
    if not len(rows):
        return ""
    rates = ", ".join(f"{r.cell} lr {r.lr:g}" for r in rows.itertuples())
    return "; ".join(x for x in (tuning.edge_note(rows, name="cell"),
                                 f"rates tuned per cell on seeds {rows['tuning_seeds'].iloc[0]}: {rates}") if x)


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    ref = int(cfg["reference_batch_size"])
    margin = float(cfg["no_degradation_tolerance"])
    test_n = sizes.test_size(cfg["dataset"])
    out = []
    for arm in ARMS:
        part = _arm(table, arm)
        if part.empty:
            continue
        small, norms = int(part["batch_size"].min()), set(part["norm"])
        suffix = "" if arm == CONTROLLED else f"_{arm}"
        how = ARMS[arm]
        note = (lambda *ns: tuned_note(table, list(ns), [small, ref])) if arm == CONTROLLED else (lambda *ns: "")
        if "batch" in norms:
            out.append(stats.claim(
                ID, f"batchnorm_degrades{suffix}", f"BatchNorm's validation error is higher at batch {small} than at batch {ref} ({how})",
                f"val_error(B={small}) - val_error(B={ref}), BatchNorm, {how}, paired by seed",
                degradation(part, "batch", small, ref, test_n), 0.0, ">", kind="test", note=note("batch"),
                paper_value=f"{(PAPER_ERROR['batch'][1] - PAPER_ERROR['batch'][0]) / 100:.3f} (ResNet-50, ImageNet, B=2 vs 32)"))
        for norm in ("group", "layer"):
            if norm not in norms:
                continue
            out.append(stats.claim(
                ID, f"{norm}norm_does_not_degrade{suffix}",
                f"{NAMES[norm]}'s validation error at batch {small} is equivalent to its error at batch {ref}, within {margin:.0%} ({how})",
                f"val_error(B={small}) - val_error(B={ref}), {NAMES[norm]}, {how}, paired by seed",
                degradation(part, norm, small, ref, test_n), margin, "within", kind="test", note=note(norm),
                paper_value=f"{(PAPER_ERROR['group'][1] - PAPER_ERROR['group'][0]) / 100:.3f} (GroupNorm, ResNet-50)" if norm == "group" else None))
            if "batch" in norms and arm == CONTROLLED:
                b = _errors(part, "batch", small) - _errors(part, "batch", ref)
                o = _errors(part, norm, small) - _errors(part, norm, ref)
                out.append(stats.claim(ID, f"{norm}norm_degrades_less_than_batchnorm",
                                       f"From batch {ref} to {small}, {NAMES[norm]} loses less than BatchNorm ({how})",
                                       f"degradation(BatchNorm) - degradation({NAMES[norm]}), {how}, paired by seed",
                                       stats.paired(b, o), 0.0, ">", kind="test", note=note("batch", norm)))
        if arm == CONTROLLED and {"batch", "group"} <= norms:
            # Wu & He's magnitude at the smallest batch: group norm's error below batch norm's
            out.append(stats.claim(
                ID, f"groupnorm_beats_batchnorm_at_b{small}",
                f"At batch {small}, GroupNorm's validation error is lower than BatchNorm's ({how})",
                f"val_error(BatchNorm, B={small}) - val_error(GroupNorm, B={small}), {how}, paired by seed",
                stats.paired(_errors(part, "batch", small), _errors(part, "group", small), test_n=test_n), 0.0, ">",
                kind="test", note=tuned_note(table, ["batch", "group"], [small]),
                paper_value=f"{(PAPER_ERROR['batch'][1] - PAPER_ERROR['group'][1]) / 100:.3f} (ResNet-50, ImageNet, B=2)"))
    return out
