"""warmup_large_batch: the linear scaling rule with and without gradual warm-up (Goyal et al. 2017).

A small-batch reference (batch b, lr eta, SGD with momentum) against a large batch k b trained
for the same number of epochs with lr k eta (the linear scaling rule), without warm-up (constant
k eta from the first update) and with gradual warm-up (lr rising linearly to k eta over the
first `warmup_steps` updates; Goyal et al. ramp from eta, the `warmup_constant` schedule from ~0), and
the large batch at the unscaled lr eta. Several seeds. Measured: the early loss spike (largest
batch loss in the first `window_steps` updates over the lowest one before it, see
spikes.early_spike; a diverged run counts at the cap) and the final validation
accuracy. The window is at least twice the warm-up (spikes.check_window): the
warm-up run reaches the peak rate k eta when warm-up ends, and a window that ends there (the
spike over the warm-up alone, kept beside for comparison) cannot see what that rate does.
Goyal et al. validated the rule up to k = 32 (batch 8k from 256) with enough epochs; a larger k
is flagged in the claims.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.training import sizes
from trainfail.training.context import Context
from trainfail.core.contract import Claim, Settings, labelled
from trainfail.core.run_record import SPIKE_CAP, RunRecord, final_eval
from trainfail.measure.spikes import check_window, early_spike

ID = "warmup_large_batch"
GOYAL_MAX_K = 32  # the largest batch-size multiple Goyal et al. validated (256 -> 8k)
SECTION = contract.SCHEDULING
ORDER = 2
TITLE = "Large batch, linearly scaled lr, with and without warm-up (Goyal et al. 2017)"


# The primary: warm-up removes the early loss spike of a large batch at a scaled rate (the lecture's
# mechanism); Goyal et al.'s "warm-up matches the small batch" is the secondary magnitude claim.
PRIMARY = "no_warmup_early_spike"

def variants(cfg: dict) -> list[dict]:
    """(variant, batch size, optimizer, schedule) for the reference and the large-batch runs."""
    b, big = int(cfg["small_batch"]), int(cfg["large_batch"])
    k = big / b
    opt = lambda lr: {"name": "momentum", "lr": float(lr), "momentum": float(cfg["momentum"])}
    warm = {"name": "warmup_constant", "warmup_steps": int(cfg["warmup_steps"])}
    lr = float(cfg["lr"])
    return [{"variant": "small batch", "batch_size": b, "optimizer": opt(lr), "schedule": {"name": "constant"}},
            {"variant": "large batch, lr not scaled", "batch_size": big, "optimizer": opt(lr), "schedule": {"name": "constant"}},
            {"variant": "large batch, scaled lr, no warm-up", "batch_size": big, "optimizer": opt(k * lr),
             "schedule": {"name": "constant"}},
            {"variant": "large batch, scaled lr, warm-up", "batch_size": big, "optimizer": opt(k * lr), "schedule": warm}]


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    """Every run labelled with its variant: two variants that happen to share settings (k = 1) are
    one run, trained once, with both labels (a row in the table for each)."""
    check_window(cfg["window_steps"], cfg["warmup_steps"], f"experiments.{ID}.window_steps")
    out = []
    for v in variants(cfg):
        for seed in ctx.seeds_for(cfg):
            out.append(labelled({"task": "train", "dataset": cfg["dataset"], "model": cfg["model"], "optimizer": v["optimizer"],
                                 "schedule": v["schedule"], "batch_size": v["batch_size"], "epochs": int(cfg["epochs"]),
                                 "seed": int(seed), "eval_points": 10, "log_every": 1}, variant=v["variant"]))
    return out


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    window = int(cfg["window_steps"])
    horizon = 2 * window * int(cfg["large_batch"])  # examples seen: the large batch's first 2 windows
    rows = []
    for r in records:
        s = r.settings
        variant = r.labels["variant"]
        m = r.metrics
        final = final_eval(r)  # a diverged run counts as no progress, not as a missing seed
        base = {"variant": variant, "seed": s["seed"], "batch_size": s["batch_size"], "lr": s["optimizer"]["lr"],
                "run_id": r.run_id}
        rows.append({"kind": "final", **base, "val_acc": final["val_acc"],
                     "train_loss": final["train_loss"],
                     "early_spike": early_spike(m, window, r.diverged),
                     "early_spike_warmup_only": early_spike(m, int(cfg["warmup_steps"]), r.diverged),
                     "diverged": r.diverged})
        early = m[(m["step"] * s["batch_size"] <= horizon) & m["batch_loss"].notna()] if "batch_loss" in m else m.iloc[:0]
        rows += [{"kind": "early", **base, "examples_seen": int(st) * s["batch_size"], "batch_loss": bl}
                 for st, bl in zip(early["step"], early["batch_loss"])]
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    order = list(dict.fromkeys(v["variant"] for v in variants(cfg)))
    fig, axes = plots.figure(ncols=2, width=5.0)
    early = table[table["kind"] == "early"].copy()
    early["batch_loss"] = early["batch_loss"].clip(upper=SPIKE_CAP)
    sns.lineplot(early, x="examples_seen", y="batch_loss", hue="variant", hue_order=order, errorbar=plots.BAND, ax=axes[0][0])
    for steps, style in ((cfg["warmup_steps"], ":"), (cfg["window_steps"], "--")):
        axes[0][0].axvline(steps * cfg["large_batch"], color="0.5", lw=0.7, ls=style)
    axes[0][0].set(yscale="log", xlabel="examples seen", ylabel="batch loss (early updates)",
                   title="dotted: warm-up ends; dashed: the spike window ends")
    axes[0][0].legend()
    final = table[table["kind"] == "final"].copy()
    final["val_acc_shown"] = final["val_acc"]  # a diverged run shows its step-0 accuracy (no progress)
    sns.pointplot(final, x="variant", y="val_acc_shown", order=order, errorbar=plots.BAND, capsize=0.2, ax=axes[0][1],
                  linestyle="none")
    plots.bound(axes[0][1], 0, 1)  # an accuracy's interval stays within [0, 1]
    axes[0][1].set(xlabel="", ylabel="final validation accuracy")
    axes[0][1].set_xticks(range(len(order)), [textwrap.fill(v, 14) for v in order])
    k = cfg["large_batch"] / cfg["small_batch"]
    plots.save(fig, outdir, "warmup_large_batch",
               note=f"{cfg['dataset']}, batch {cfg['small_batch']} lr {cfg['lr']:g} vs batch {cfg['large_batch']} lr "
                    f"{k * cfg['lr']:g} (x{k:g}), {cfg['epochs']} epochs, SGD momentum {cfg['momentum']:g}, warm-up "
                    f"{cfg['warmup_steps']} updates; {plots.BAND_NOTE}; diverged runs at their step-0 accuracy")


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    final = table[table["kind"] == "final"]
    get = lambda v, col: final[final["variant"] == v].sort_values("seed")[col]
    no, wu, small = "large batch, scaled lr, no warm-up", "large batch, scaled lr, warm-up", "small batch"
    n_div = int(final[final["variant"] == no]["diverged"].sum())
    tol = float(cfg["close_within"])
    k = cfg["large_batch"] / cfg["small_batch"]
    regime = (f"k = {k:g} is outside Goyal et al.'s validated k <= {GOYAL_MAX_K}" if k > GOYAL_MAX_K else "")
    log_diff = lambda col: stats.paired(np.log10(get(no, col)), np.log10(get(wu, col)))
    join = lambda *parts: "; ".join(p for p in parts if p)
    return [
        # the variants share seeds (same initialization): paired over seeds
        stats.claim(ID, "no_warmup_early_spike",
                    f"Without warm-up the large-batch run (lr x{k:g}) spikes more in its first {cfg['window_steps']} "
                    f"updates (the {cfg['warmup_steps']}-update warm-up and after it, at the peak rate) than with warm-up",
                    "log10 spike(no warm-up) - log10 spike(warm-up)", log_diff("early_spike"), kind="test",
                    margin=float(cfg["no_spike_margin"]),
                    note=join(f"within ±{cfg['no_spike_margin']:g} ('equivalent'): no spike to remove at this scale",f"{n_div} no-warm-up run(s) diverged (counted at {SPIKE_CAP:g})" if n_div else "",
                              f"over the warm-up alone (a window blind to the peak): "
                              f"{stats.Estimate.text(log_diff('early_spike_warmup_only'))}", regime)),
        stats.claim(ID, "warmup_close_to_small_batch",
                    f"With warm-up the large-batch run's validation accuracy is within ±{tol:g} of the small batch's",
                    "val_acc(small batch) - val_acc(large batch + warm-up)",
                    stats.paired(get(small, "val_acc"), get(wu, "val_acc"), test_n=sizes.test_size(cfg["dataset"])),
                    tol, "within", kind="test",
                    paper_value="ImageNet: 23.74% vs 23.60% top-1 error (batch 8k vs 256)", note=regime),
    ]
