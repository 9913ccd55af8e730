"""optimizer_schedule: optimizers x learning-rate schedules x batch norm on a real network (lecture 2).

Every optimizer {SGD, SGD+momentum, Adagrad, RMSprop, Adam, AdamW, RAdam} x every schedule
{constant, cosine decay, linear warm-up then cosine, the Transformer (Noam) schedule} x batch
norm {off, on}, several seeds, at the same number of updates and each optimizer's configured
rate: the grid (the lecture's picture; its rates are defaults, not tuned, and it is a figure,
not a verdict).

"Adaptive methods train faster than SGD" is judged on the tuned arm: each optimizer (constant
schedule, BN off) at the rate of a sweep (its configured lr x `tuning.multipliers`) with the
lowest mean final training loss over the tuning seeds, trained on the claim seeds (disjoint) for
`tuning.steps` updates, a horizon past the fast initial phase of every tuned learning curve
(`fast_phase_end` on the tuning seeds' curves says where that phase ends; the claims state it).

A second small set runs a few optimizers at a large learning rate (lr_multiplier x theirs) with
cosine decay, with and without warm-up, to measure the early loss spike (the largest batch loss
over the lowest one before it, within the first `window` updates; a diverged run counts at the
cap). The window must be at least twice the warm-up: a warm-up run reaches its peak rate when
warm-up ends, so a window that ends there cannot see the spike the peak rate causes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.training import optim, sizes, tuning
from trainfail.training.context import Context
from trainfail.core.contract import Claim, Settings, labelled
from trainfail.training.network_arms import CONSTANT, claim_seeds, multipliers, network_run, scaled, tuned_plan
from trainfail.core.run_record import SPIKE_CAP, RunRecord, final_eval
from trainfail.measure.spikes import check_window, early_spike

ID = "optimizer_schedule"
SECTION = contract.SCHEDULING
ORDER = 1
TITLE = "Optimizers x schedules x batch norm on a real network; each optimizer at its tuned rate"
HEADLINE = "schedules"  # the lecture's figure: the schedules and the loss under each

# The primary: Adam against SGD, each at its rate tuned on seeds apart (section 2.2's claim: a per-
# parameter rate beats one rate). Momentum against SGD lives in the momentum experiment (one estimate,
# one claim); warm-up's spike is a secondary.
PRIMARY = "adam_beats_sgd"

def groups(cfg: dict, ctx) -> dict[str, list[dict]]:
    """Every run, by the group it belongs to: the grid (configured rates), the tuning sweep (tuning
    seeds), the tuned runs (claim seeds) and the warm-up spike runs: runs() labels each run with its group."""
    seeds = ctx.seeds_for(cfg)
    out: dict[str, list[dict]] = {"grid": [], "sweep": [], "tuned": [], "spike": []}
    spike = cfg["spike"]
    check_window(spike["window"], spike["warmup_steps"], f"experiments.{ID}.spike.window")
    for opt in cfg["optimizers"]:
        for sched in cfg["schedules"]:
            for norm in cfg["norms"]:
                out["grid"] += [network_run(cfg, opt, sched, norm, s) for s in seeds]
        for r in tuned_plan(cfg, opt, ctx):
            out["tuned" if tuning.stage(r) else "sweep"].append(r)
        if opt["name"] in spike["optimizers"]:
            for sched in ({"name": "cosine"}, {"name": "warmup_cosine", "warmup_steps": int(spike["warmup_steps"])}):
                out["spike"] += [network_run(cfg, scaled(opt, spike["lr_multiplier"]), sched, "none", s, every_step=True)
                                 for s in seeds]
    return out


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    if "batch" in cfg["norms"]:
        sizes.require_layers(cfg["model"], f"experiments.{ID}.model", "norms has 'batch': BN goes after each hidden layer")
    # a run in two groups has the same settings: trained once, in the table once per group
    return [labelled(r, group=g) for g, group in groups(cfg, ctx).items() for r in group]


def fast_phase_end(steps, losses, fraction: float = 0.25) -> int | None:
    """Where a learning curve's fast initial phase ends: the first evaluation step after which the
    loss falls, per update, at less than `fraction` of its rate over the first evaluation interval.
    None while it never slows that much (the run ends inside its fast phase)."""
    s, loss = np.asarray(steps, float), np.asarray(losses, float)
    if len(s) < 3:
        return None
    rate = -np.diff(loss) / np.diff(s)
    slow = np.flatnonzero(rate[1:] < fraction * rate[0])
    return int(s[slow[0] + 1]) if len(slow) else None


def run_row(r, results: Path, spike: dict | None = None) -> dict:
    """A run's final row. A tuned run's settings name its sweep, and its rate is the one its sweep's
    choice file under `results` holds (tuning.check refuses a run trained at another choice). Spike
    runs add the spike over the window and, for comparison, over the warm-up alone (the window
    that cannot see the peak rate's spike)."""
    final = final_eval(r)  # a diverged run counts as no progress, not as a missing seed
    s = r.settings.get("base", r.settings)
    lr = tuning.check(r, results) if tuning.stage(r.settings) else s["optimizer"]["lr"]
    row = {"optimizer": s["optimizer"]["name"], "lr": lr, "schedule": s["schedule"]["name"],
           "bn": s["model"]["norm"] == "batch", "seed": r.settings["seed"], "steps": s["steps"],
           "train_loss": final["train_loss"], "val_acc": final["val_acc"], "diverged": r.diverged, "run_id": r.run_id}
    if spike:
        row["early_spike"] = early_spike(r.metrics, int(spike["window"]), r.diverged)
        row["early_spike_warmup_only"] = early_spike(r.metrics, int(spike["warmup_steps"]), r.diverged)
    return row


def curve_rows(r) -> pd.DataFrame:
    """The evaluation rows (train loss against update) and the lr actually used at every update."""
    m = r.metrics
    ev = m.dropna(subset=["train_loss"])[["step", "train_loss"]] if "train_loss" in m else pd.DataFrame()
    lr = m[["step", "lr"]].dropna()
    return ev, lr


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    """One row per (run, group) with finals; curves as extra rows (kind = curve: the grid and the
    tuning sweep; kind = lr: the rate each grid schedule used, first seed); kind = tuning: one row per
    sweep (tuning.choice_rows: the chosen rate, its neighbours' scores, edge_optimum)."""
    seeds = ctx.seeds_for(cfg)
    base_lr = {o["name"]: float(o["lr"]) for o in cfg["optimizers"]}
    rows = []
    for r in records:
        group = r.labels["group"]
        row = {"kind": "final", "group": group, **run_row(r, ctx.results, cfg["spike"] if group == "spike" else None)}
        row["lr_multiplier"] = row["lr"] / base_lr[row["optimizer"]]
        rows.append(row)
        if group in ("grid", "sweep"):
            ev, lr = curve_rows(r)
            key = {k: row[k] for k in ("group", "optimizer", "schedule", "bn", "seed", "lr", "lr_multiplier")}
            rows += [{"kind": "curve", **key, "step": int(s), "train_loss": v} for s, v in zip(ev["step"], ev["train_loss"])]
            if group == "grid" and row["seed"] == seeds[0]:
                rows += [{"kind": "lr", **key, "step": int(s), "lr_used": v} for s, v in zip(lr["step"], lr["lr"])]
    # per optimizer its sweep's choice: the rate, its mean score and its neighbours', the edge mark
    rows += [{"kind": "tuning", "group": "tuned", **c} for c in tuning.choice_rows(records, ctx.results).to_dict("records")]
    return pd.DataFrame(rows)


def tuned_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: the rate the sweep chose, whether it is at the sweep's edge, and where the fast
    phase of the tuning seeds' mean learning curve at that rate ends."""
    tuned = finals(table, "tuned").groupby("optimizer", sort=False)["lr"].first()
    sweep = finals(table, "sweep")
    curves = table[(table["kind"] == "curve") & (table["group"] == "sweep")]
    rows = []
    for o, lr in tuned.items():
        grid = sweep[sweep["optimizer"] == o]["lr"]
        c = curves[(curves["optimizer"] == o) & np.isclose(curves["lr"], lr)].groupby("step")["train_loss"].mean()
        rows.append({"optimizer": o, "lr": lr, "at_edge": bool(np.isclose(lr, grid.min()) or np.isclose(lr, grid.max())),
                     "fast_phase_end": fast_phase_end(c.index, c.to_numpy())})
    return pd.DataFrame(rows, columns=["optimizer", "lr", "at_edge", "fast_phase_end"])


def finals(table: pd.DataFrame, group: str = "grid") -> pd.DataFrame:
    return table[(table["kind"] == "final") & (table["group"] == group)]


def _heat(ax, cells: pd.DataFrame, value: str, optimizers: list[str], schedules: list[str], fmt: str, cmap: str,
          label: str, limits: tuple[float, float]) -> None:
    import seaborn as sns

    est = {k: stats.mean(g[value]) for k, g in cells.groupby(["optimizer", "schedule"])}
    mean = pd.DataFrame([[est[(o, s)].value if (o, s) in est else np.nan for s in schedules] for o in optimizers],
                        index=optimizers, columns=schedules)
    text = [[_cell_text(est.get((o, s)), fmt) for s in schedules] for o in optimizers]
    sns.heatmap(mean, annot=np.array(text), fmt="", cmap=cmap, ax=ax, vmin=limits[0], vmax=limits[1],
                cbar_kws={"label": label}, annot_kws={"fontsize": 8})


def _cell_text(e: stats.Estimate | None, fmt: str) -> str:
    if e is None or not np.isfinite(e.value):
        return "diverged"
    lo, hi = e.interval()
    half = (hi - lo) / 2 if np.isfinite(lo) else np.nan
    return f"{e.value:{fmt}}\n±{half:{fmt}}" + (f"\n(n={e.n})" if e.n < 2 else "")


def figures(table: pd.DataFrame, cfg: dict, outdir: Path, ctx: Context) -> None:
    import seaborn as sns

    tuning.write_choices(tuning.rows_in(table, "kind", "tuning"), outdir)  # the report shows it as a table
    optimizers = [o["name"] for o in cfg["optimizers"]]
    schedules = [s["name"] for s in cfg["schedules"]]
    hp = textwrap.fill("; ".join(f"{o['name']} lr {o['lr']:g}" + "".join(f" {k} {v}" for k, v in o.items() if k not in ("name", "lr"))
                   for o in cfg["optimizers"]), 150)
    setup = f"{cfg['dataset']} {cfg['model']['arch']} {cfg['model'].get('hidden', '')}, batch {cfg['batch_size']}, {cfg['steps']} updates"

    # one colour per optimizer (plots.OPTIMIZER_COLORS, as in every figure), a dash each too: Adam
    # and AdamW (weight decay 0.01) nearly coincide
    colors = plots.colors(optimizers)
    arm = dict(hue="optimizer", hue_order=optimizers, palette=colors, style="optimizer", style_order=optimizers)
    curves = table[(table["kind"] == "curve") & (table["group"] == "grid")].copy()
    # the optimizers side by side at the constant rate, without and with BN; the schedules are the
    # headline's (schedules), the whole grid the heatmaps'
    fig, axes = plots.figure(ncols=2, width=5.0, height=3.8, sharey=True)
    constant = curves[curves["schedule"] == schedules[0]] if schedules else curves.iloc[:0]
    for ax, bn in zip(axes[0], (False, True)):
        sns.lineplot(constant[constant["bn"].astype(bool) == bn], x="step", y="train_loss", errorbar=plots.BAND,
                     ax=ax, legend=not bn, **arm)
        ax.set(yscale="log", title=f"{schedules[0] if schedules else ''} schedule, BN {'on' if bn else 'off'}",
               xlabel="update", ylabel="training loss")
    plots.figure_legend(fig, axes[0][0], title="optimizer")
    plots.save(fig, outdir, "learning_curves", note=f"the grid at the configured (untuned) rates; {setup}; {plots.BAND_NOTE}. "
                                                    f"{hp}")

    grid = finals(table)
    fig, axes = plots.figure(ncols=2, nrows=2, width=5.4, height=3.8)
    for j, (value, fmt, cmap, label) in enumerate((("train_loss", ".2f", "viridis_r", "final training loss"),
                                                   ("val_acc", ".2f", "viridis", "final validation accuracy"))):
        # one colour scale per quantity, BN off and on alike, so that the two rows compare
        means = grid.groupby(["bn", "optimizer", "schedule"])[value].mean()
        limits = (float(means.min()), float(means.max())) if len(means) else (0.0, 1.0)
        for i, bn in enumerate((False, True)):
            ax = axes[i][j]
            _heat(ax, grid[grid["bn"] == bn], value, optimizers, schedules, fmt, cmap, label, limits)
            ax.set(title=f"{label}, BN {'on' if bn else 'off'}", xlabel="", ylabel="")
            ax.tick_params(axis="x", rotation=20)
    plots.save(fig, outdir, "heatmaps", note=f"the grid at the configured (untuned) rates; {setup}; mean ± 95% interval "
                                             f"half-width over seeds; one colour scale per column. {hp}")

    # the lecture's figure of 2.3: each schedule's learning rate, and what it does to the loss of an
    # adaptive optimizer (Adam where the grid has it), BN off
    lr = table[table["kind"] == "lr"]
    one = lr[(lr["optimizer"] == optimizers[0]) & (~lr["bn"].astype(bool))]
    shown = "adam" if "adam" in optimizers else optimizers[-1]
    sched_colors = dict(zip(schedules, plots.palette(len(schedules))))
    fig, axes = plots.figure(ncols=2, width=5.0, height=3.8)
    ax = axes[0][0]
    for s in schedules:
        p = one[one["schedule"] == s]
        ax.plot(p["step"], p["lr_used"] / p["lr"], label=s, color=sched_colors[s])
        t = np.arange(int(cfg["steps"]))
        spec = next(x for x in cfg["schedules"] if x["name"] == s)
        ax.plot(t, [optim.lr_factor(spec, k, int(cfg["steps"])) for k in t], "k:", lw=0.6)
    ax.set(xlabel="update", ylabel="learning rate / base learning rate", title="the schedules")
    ax.legend(title="schedule")
    part = curves[(curves["optimizer"] == shown) & (~curves["bn"].astype(bool))]
    sns.lineplot(part, x="step", y="train_loss", hue="schedule", hue_order=schedules, palette=sched_colors,
                 errorbar=plots.BAND, ax=axes[0][1], legend=False)
    axes[0][1].set(yscale="log", xlabel="update", ylabel="training loss", title=f"{shown}, BN off, under each schedule")
    plots.save(fig, outdir, "schedules", note="left: the lr each run used (read back from the runs; a schedule is the same "
                                              "for every seed, so no interval); dotted: optim.lr_factor's closed form; "
                                              f"right: {setup}, configured rate; {plots.BAND_NOTE}")

    t = cfg["tuning"]
    rates = tuned_rates(table)
    sweep = finals(table, "sweep")
    fig, axes = plots.figure(ncols=3, width=4.4)
    sns.lineplot(sweep, x="lr_multiplier", y="train_loss", markers=True, errorbar=plots.BAND, ax=axes[0][0], **arm)
    mults = sorted({m for o in optimizers for m in multipliers(t, o)})
    axes[0][0].set(xscale="log", yscale="log", xlabel="learning rate / configured learning rate",
                   ylabel="final training loss (tuning seeds)", title=f"the sweep, {t['steps']} updates")
    axes[0][0].set_xticks(mults, [f"x{m:g}" for m in mults])
    axes[0][0].minorticks_off()
    chosen = table[(table["kind"] == "curve") & (table["group"] == "sweep")]
    chosen = chosen[[bool(np.isclose(lr_, rates.set_index("optimizer")["lr"].get(o, np.nan)))
                     for o, lr_ in zip(chosen["optimizer"], chosen["lr"])]] if len(rates) else chosen.iloc[:0]
    sns.lineplot(chosen, x="step", y="train_loss", errorbar=plots.BAND, ax=axes[0][1], legend=False, **arm)
    for end in rates["fast_phase_end"].dropna():
        axes[0][1].axvline(end, color="0.6", lw=0.6, ls=":")
    axes[0][1].set(yscale="log", xlabel="update", ylabel="training loss (tuning seeds)",
                   title="at the chosen rates; dotted: fast phase ends")
    compared = pd.concat([finals(table, "tuned").assign(arm=f"tuned rate, {t['steps']} updates"),
                          grid[(grid["schedule"] == "constant") & (~grid["bn"].astype(bool))]
                          .assign(arm=f"configured rate, {cfg['steps']} updates")])
    sns.pointplot(compared, x="optimizer", y="train_loss", hue="arm", order=optimizers, errorbar=plots.BAND,
                  capsize=0.1, dodge=0.3, linestyle="none", ax=axes[0][2])
    axes[0][2].set(yscale="log", xlabel="", ylabel="final training loss (claim seeds)",
                   title="constant schedule, BN off")
    axes[0][2].tick_params(axis="x", rotation=30)
    axes[0][2].legend(loc="upper center", bbox_to_anchor=(0.5, -0.3))  # below: the points fill the panel
    plots.figure_legend(fig, axes[0][0], title="optimizer")
    picked = "; ".join(f"{r.optimizer} {r.lr:g}" + (" (edge)" if r.at_edge else "") for r in rates.itertuples())
    plots.save(fig, outdir, "lr_sweep", note=f"tuning seeds {t['seeds']}, claim seeds {claim_seeds(cfg, ctx)}; chosen: "
                                             f"{picked}; {plots.BAND_NOTE}; diverged runs at their step-0 loss")

    spike = finals(table, "spike")
    sp = cfg["spike"]
    fig, axes = plots.figure(ncols=2, width=4.4, sharey=True)
    for ax, col, title in ((axes[0][0], "early_spike", f"first {sp['window']} updates (the claim)"),
                           (axes[0][1], "early_spike_warmup_only", f"the warm-up alone ({sp['warmup_steps']} updates)")):
        sns.pointplot(spike, x="optimizer", y=col, hue="schedule", errorbar=plots.BAND, capsize=0.1,
                      dodge=0.3, ax=ax, linestyle="none")
        ax.set(yscale="log", title=title, ylabel="largest batch loss / lowest before it")
    plots.save(fig, outdir, "warmup_spike", note=f"lr x{sp['lr_multiplier']:g} the configured one; right: a window that "
                                                 f"ends with warm-up never sees the peak rate; {plots.BAND_NOTE}; "
                                                 f"diverged = {SPIKE_CAP:g}")


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    t = cfg["tuning"]
    tuned = finals(table, "tuned")
    grid = finals(table)
    configured = grid[(grid["schedule"] == CONSTANT["name"]) & (~grid["bn"].astype(bool))]
    rates = tuned_rates(table).set_index("optimizer")
    ends = rates["fast_phase_end"].dropna()
    horizon = (f"{t['steps']} updates; the tuning seeds' curves at the chosen rates leave their fast phase by update "
               f"{int(ends.max())}" if len(ends) == len(rates) and len(rates) else
               f"{t['steps']} updates; a tuned curve is still in its fast phase at the end")
    arm = lambda part, o: part[part["optimizer"] == o].sort_values("seed")
    out = []
    if "sgd" in rates.index:
        for o in cfg["optimizers"]:
            o = o["name"]
            if o in ("sgd", "momentum") or o not in rates.index:  # momentum vs SGD: momentum's claim
                continue
            edge = [x for x in ("sgd", o) if rates.loc[x, "at_edge"]]
            old = stats.paired(arm(configured, "sgd")["train_loss"], arm(configured, o)["train_loss"])
            other = arm(tuned, o)
            # the optimizers share seeds (same initialization and data order): paired over seeds
            out.append(stats.claim(
                ID, f"{o}_beats_sgd",
                f"At an equal budget ({t['steps']} updates, constant schedule, BN off), each at its rate tuned on "
                f"seeds apart, {o} (lr {rates.loc[o, 'lr']:g}) reaches a lower training loss than SGD "
                f"(lr {rates.loc['sgd', 'lr']:g})",
                f"train_loss(sgd) - train_loss({o}), tuned rates", stats.paired(arm(tuned, "sgd")["train_loss"],
                                                                                  other["train_loss"]),
                kind="test", note="; ".join(x for x in (
                    f"{int(other['diverged'].sum())} diverged" if other["diverged"].any() else "",
                    f"edge_optimum: the chosen rate of {', '.join(edge)} is at the edge of the sweep, the best may "
                    "lie beyond" if edge else "",
                    horizon,
                    f"uncontrolled, at the configured rates after {cfg['steps']} updates: {stats.Estimate.text(old)}") if x)))
    spike = finals(table, "spike")
    sp = cfg["spike"]
    for o, part in spike.groupby("optimizer", sort=False):
        get = lambda sched, col: part[part["schedule"] == sched].sort_values("seed")[col]
        log_diff = lambda col: stats.paired(np.log10(get("cosine", col)), np.log10(get("warmup_cosine", col)))
        out.append(stats.claim(
            ID, f"warmup_lowers_spike_{o}",
            f"{o} at lr x{sp['lr_multiplier']:g}: linear warm-up ({sp['warmup_steps']} updates) lowers the early loss "
            f"spike (first {sp['window']} updates: the warm-up and after it, at the peak rate)",
            "log10 spike(no warm-up) - log10 spike(warm-up)", log_diff("early_spike"), kind="test",
            note="; ".join(x for x in (f"diverged counted at {SPIKE_CAP:g}" if part["diverged"].any() else "",
                                       f"over the warm-up alone (a window blind to the peak): "
                                       f"{stats.Estimate.text(log_diff('early_spike_warmup_only'))}") if x)))
    return out
