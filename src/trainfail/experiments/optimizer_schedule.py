"""optimizer_schedule: optimizers x learning-rate schedules x batch norm on a real network (lecture 2).

Every optimizer {SGD, SGD+momentum, Adagrad, RMSprop, Adam, AdamW, RAdam} x every schedule
{constant, cosine decay, linear warm-up then cosine, the Transformer (Noam) schedule} x batch
norm {off, on}, several seeds, at the same number of updates. Each optimizer's learning rate is
stated in the config; a small sweep (the same network, constant schedule, BN off, the configured
lr times a few multipliers) is part of the grid and has its own table, so the choice is visible.
A second small set runs a few optimizers at a large learning rate (lr_multiplier x theirs) with
cosine decay, with and without warm-up, to measure the early loss spike (the largest batch loss
in the first `window` updates over the lowest one before it; a diverged run counts at the cap).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from .. import optim, plots, stats
from ..runs import SPIKE_CAP, final_eval

ID = "optimizer_schedule"
SECTION = "2.3 Learning-rate scheduling: decay and warm-up"
TITLE = "Optimizers x schedules x batch norm on a real network"


def network_run(cfg: dict, optimizer: dict, schedule: dict, norm: str, seed: int) -> dict:
    """One training run's settings; momentum's network part builds its runs here too, so equal
    settings give equal run ids and are trained once."""
    return {"dataset": cfg["dataset"], "model": {**cfg["model"], "norm": norm}, "optimizer": dict(optimizer),
            "schedule": dict(schedule), "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]),
            "seed": int(seed), "eval_points": int(cfg["eval_points"]), "log_every": 1}


def scaled(optimizer: dict, factor: float) -> dict:
    return {**optimizer, "lr": float(optimizer["lr"]) * factor}


def groups(cfg: dict, ctx) -> dict[str, list[dict]]:
    """Every run, by the group it belongs to: the grid, the lr sweep (x1 included: the reference
    the multipliers are read against) and the warm-up spike runs. runs() and table() both use it."""
    seeds = ctx.seeds_for(cfg)
    out: dict[str, list[dict]] = {"grid": [], "sweep": [], "spike": []}
    spike = cfg["spike"]
    for opt in cfg["optimizers"]:
        for sched in cfg["schedules"]:
            for norm in cfg["norms"]:
                out["grid"] += [network_run(cfg, opt, sched, norm, s) for s in seeds]
        for mult in dict.fromkeys([1.0, *cfg["lr_sweep"]["multipliers"]]):
            out["sweep"] += [network_run(cfg, scaled(opt, mult), {"name": "constant"}, "none", s)
                             for s in cfg["lr_sweep"].get("seeds") or seeds]
        if opt["name"] in spike["optimizers"]:
            for sched in ({"name": "cosine"}, {"name": "warmup_cosine", "warmup_steps": int(spike["warmup_steps"])}):
                out["spike"] += [network_run(cfg, scaled(opt, spike["lr_multiplier"]), sched, "none", s) for s in seeds]
    return out


def runs(cfg: dict, ctx) -> list[dict]:
    # a run in two groups (the sweep's x1 lr is a grid cell) has the same settings: trained once
    from ..config import canonical_json

    unique = {canonical_json(r): r for group in groups(cfg, ctx).values() for r in group}
    return list(unique.values())


def early_spike(metrics: pd.DataFrame, window: int, diverged: bool) -> float:
    """The largest early spike: max over updates k <= window of batch_loss[k] / min(batch_loss[:k]).

    1 when the batch loss never rises above its running minimum; a spike is a rise over the
    lowest loss reached so far (the initial loss is not the reference: a spike after the loss
    has fallen is still a spike). SPIKE_CAP if the run diverged.
    """
    if diverged:
        return SPIKE_CAP
    early = metrics[(metrics["step"] <= window)]["batch_loss"].dropna().to_numpy(float)
    if len(early) == 0 or not np.isfinite(early).all():
        return SPIKE_CAP
    if len(early) < 2:
        return 1.0
    running_min = np.minimum.accumulate(early)[:-1]
    return float(min(max(1.0, (early[1:] / running_min).max()), SPIKE_CAP))


def run_row(r, window: int) -> dict:
    m = r.metrics
    final = final_eval(r)  # a diverged run counts as no progress, not as a missing seed
    s = r.settings
    return {"optimizer": s["optimizer"]["name"], "lr": s["optimizer"]["lr"], "schedule": s["schedule"]["name"],
            "bn": s["model"]["norm"] == "batch", "seed": s["seed"],
            "train_loss": final["train_loss"], "val_acc": final["val_acc"],
            "early_spike": early_spike(m, window, r.diverged), "diverged": r.diverged, "run_id": r.run_id}


def curve_rows(r) -> pd.DataFrame:
    """The evaluation rows (train loss against update) and the lr actually used at every update."""
    m = r.metrics
    ev = m.dropna(subset=["train_loss"])[["step", "train_loss"]] if "train_loss" in m else pd.DataFrame()
    lr = m[["step", "lr"]].dropna()
    return ev, lr


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    """One row per (run, group) with finals; curves as extra rows (kind = curve / lr)."""
    window = int(cfg["spike"]["window"])
    by_id = {r.run_id: r for r in records}
    from ..config import run_id

    seeds = ctx.seeds_for(cfg)
    ids = {g: [run_id({"task": "train", **r}) for r in rs] for g, rs in groups(cfg, ctx).items()}
    base_lr = {o["name"]: float(o["lr"]) for o in cfg["optimizers"]}
    rows = []
    for group, group_ids in ids.items():
        for rid in dict.fromkeys(group_ids):
            r = by_id[rid]
            row = {"kind": "final", "group": group, **run_row(r, window)}
            row["lr_multiplier"] = row["lr"] / base_lr[row["optimizer"]]
            rows.append(row)
            if group == "grid":
                ev, lr = curve_rows(r)
                key = {k: row[k] for k in ("group", "optimizer", "schedule", "bn", "seed", "lr", "lr_multiplier")}
                rows += [{"kind": "curve", **key, "step": int(s), "train_loss": v} for s, v in zip(ev["step"], ev["train_loss"])]
                if row["seed"] == seeds[0]:
                    rows += [{"kind": "lr", **key, "step": int(s), "lr_used": v} for s, v in zip(lr["step"], lr["lr"])]
    return pd.DataFrame(rows)


def finals(table: pd.DataFrame, group: str = "grid") -> pd.DataFrame:
    return table[(table["kind"] == "final") & (table["group"] == group)]


def _heat(ax, cells: pd.DataFrame, value: str, optimizers: list[str], schedules: list[str], fmt: str, cmap: str) -> None:
    import seaborn as sns

    est = {k: stats.mean(g[value]) for k, g in cells.groupby(["optimizer", "schedule"])}
    mean = pd.DataFrame([[est[(o, s)].value if (o, s) in est else np.nan for s in schedules] for o in optimizers],
                        index=optimizers, columns=schedules)
    text = [[_cell_text(est.get((o, s)), fmt) for s in schedules] for o in optimizers]
    sns.heatmap(mean, annot=np.array(text), fmt="", cmap=cmap, ax=ax, cbar=False, annot_kws={"fontsize": 6.5})


def _cell_text(e: stats.Estimate | None, fmt: str) -> str:
    if e is None or not np.isfinite(e.value):
        return "diverged"
    lo, hi = e.interval()
    half = (hi - lo) / 2 if np.isfinite(lo) else np.nan
    return f"{e.value:{fmt}}\n±{half:{fmt}}" + (f"\n(n={e.n})" if e.n < 2 else "")


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    optimizers = [o["name"] for o in cfg["optimizers"]]
    schedules = [s["name"] for s in cfg["schedules"]]
    hp = textwrap.fill("; ".join(f"{o['name']} lr {o['lr']:g}" + "".join(f" {k} {v}" for k, v in o.items() if k not in ("name", "lr"))
                   for o in cfg["optimizers"]), 150)
    setup = f"{cfg['dataset']} {cfg['model']['arch']} {cfg['model'].get('hidden', '')}, batch {cfg['batch_size']}, {cfg['steps']} updates"

    curves = table[table["kind"] == "curve"].copy()
    curves["BN"] = curves["bn"].map({True: "on", False: "off"})
    ncols = 4
    nrows = -(-len(optimizers) // ncols)
    fig, axes = plots.figure(ncols=ncols, nrows=nrows, width=3.6, height=2.9, sharey=True)
    for ax, o in zip(axes.flat, optimizers):
        part = curves[curves["optimizer"] == o]
        sns.lineplot(part, x="step", y="train_loss", hue="schedule", style="BN", hue_order=schedules,
                     errorbar=plots.BAND, ax=ax, legend=o == optimizers[0])
        ax.set(yscale="log", title=f"{o} (lr {part['lr'].iloc[0]:g})", xlabel="update", ylabel="training loss")
    for ax in list(axes.flat)[len(optimizers):]:
        ax.set_visible(False)
    if optimizers:
        axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    plots.save(fig, outdir, "learning_curves", note=f"{setup}; {plots.BAND_NOTE}. {hp}")

    grid = finals(table)
    fig, axes = plots.figure(ncols=2, nrows=2, width=4.6, height=3.4)
    for j, (value, fmt, cmap, label) in enumerate((("train_loss", ".2f", "viridis_r", "final training loss"),
                                                   ("val_acc", ".2f", "viridis", "final validation accuracy"))):
        for i, bn in enumerate((False, True)):
            ax = axes[i][j]
            _heat(ax, grid[grid["bn"] == bn], value, optimizers, schedules, fmt, cmap)
            ax.set(title=f"{label}, BN {'on' if bn else 'off'}", xlabel="", ylabel="")
            ax.tick_params(axis="x", rotation=20, labelsize=7)
    fig.tight_layout()
    plots.save(fig, outdir, "heatmaps", note=f"{setup}; mean ± 95% interval half-width over seeds. {hp}")

    lr = table[table["kind"] == "lr"]
    one = lr[(lr["optimizer"] == optimizers[0]) & (~lr["bn"].astype(bool))]
    fig, axes = plots.figure(width=5.2)
    ax = axes[0][0]
    for s in schedules:
        p = one[one["schedule"] == s]
        ax.plot(p["step"], p["lr_used"] / p["lr"], label=s)
        t = np.arange(int(cfg["steps"]))
        spec = next(x for x in cfg["schedules"] if x["name"] == s)
        ax.plot(t, [optim.lr_factor(spec, k, int(cfg["steps"])) for k in t], "k:", lw=0.6)
    ax.set(xlabel="update", ylabel="learning rate / base learning rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plots.save(fig, outdir, "schedules", note="the lr each run used (read back from the runs; a schedule is the same "
                                              "for every seed, so no interval); dotted: optim.lr_factor's closed form")

    sweep = finals(table, "sweep")
    fig, axes = plots.figure(width=5.2)
    sns.lineplot(sweep, x="lr_multiplier", y="train_loss", hue="optimizer", hue_order=optimizers, marker="o",
                 errorbar=plots.BAND, ax=axes[0][0])
    mults = sorted({1.0, *cfg["lr_sweep"]["multipliers"]})
    axes[0][0].set(xscale="log", yscale="log", xlabel="learning rate / configured learning rate",
                   ylabel="final training loss")
    axes[0][0].set_xticks(mults, [f"x{m:g}" for m in mults])
    axes[0][0].minorticks_off()
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    plots.save(fig, outdir, "lr_sweep", note=f"constant schedule, BN off; {hp}; diverged runs not drawn")

    spike = finals(table, "spike")
    fig, axes = plots.figure(width=5.2)
    sns.pointplot(spike, x="optimizer", y="early_spike", hue="schedule", errorbar=plots.BAND, capsize=0.1,
                  dodge=0.3, ax=axes[0][0], linestyle="none")
    axes[0][0].set(yscale="log", ylabel=f"largest batch loss / lowest before it\n(first {cfg['spike']['window']} updates)")
    fig.tight_layout()
    plots.save(fig, outdir, "warmup_spike", note=f"lr x{cfg['spike']['lr_multiplier']:g} the configured one; "
                                                 f"{plots.BAND_NOTE}; diverged = {SPIKE_CAP:g}")


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    grid = finals(table)
    cell = grid[(grid["schedule"] == cfg["schedules"][0]["name"]) & (~grid["bn"].astype(bool))]
    sgd = cell[cell["optimizer"] == "sgd"].sort_values("seed")
    out = []
    for o in cfg["optimizers"]:
        if o["name"] == "sgd" or sgd.empty:
            continue
        other = cell[cell["optimizer"] == o["name"]].sort_values("seed")
        # the optimizers share seeds (same initialization and data order): paired over seeds
        out.append(stats.claim(
            ID, f"{o['name']}_beats_sgd",
            f"At {cfg['steps']} updates ({cfg['schedules'][0]['name']} schedule, BN off), {o['name']} (lr {o['lr']:g}) "
            f"reaches a lower training loss than SGD (lr {sgd['lr'].iloc[0]:g})",
            f"train_loss(sgd) - train_loss({o['name']})", stats.paired(sgd["train_loss"], other["train_loss"]),
            kind="test", note=f"{int(other['diverged'].sum())} diverged" if other["diverged"].any() else ""))
    spike = finals(table, "spike")
    for o, part in spike.groupby("optimizer", sort=False):
        no = part[part["schedule"] == "cosine"].sort_values("seed")["early_spike"]
        wu = part[part["schedule"] == "warmup_cosine"].sort_values("seed")["early_spike"]
        out.append(stats.claim(
            ID, f"warmup_lowers_spike_{o}",
            f"{o} at lr x{cfg['spike']['lr_multiplier']:g}: linear warm-up ({cfg['spike']['warmup_steps']} updates) lowers "
            f"the early loss spike (first {cfg['spike']['window']} updates)",
            "log10 spike(no warm-up) - log10 spike(warm-up)", stats.paired(np.log10(no), np.log10(wu)),
            kind="test", note=f"diverged counted at {SPIKE_CAP:g}" if part["diverged"].any() else ""))
    return out
