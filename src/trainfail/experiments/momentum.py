"""momentum: gradient descent with and without momentum (lecture 1.3).

(a) A 2-D surface with a shallow local minimum, (w1^2 - 1)^2 + tilt w1 + valley w2^2: from a
start on the shallow side, plain GD stops in the shallow minimum; GD with momentum (torch.optim
SGD with momentum, on the same 2-parameter tensor) carries its speed over the hump into the
deeper one. One start per seed (the configured start jittered), all in one batched call.
(b) A real network, SGD against SGD with momentum beta, several seeds, in three arms:
  same lr          the lecture's comparison: both at lr for `steps` updates. Momentum's update
                   sums past gradients, so its effective step is lr / (1 - beta), 10x SGD's at
                   beta = 0.9: a larger step, not momentum, can make it faster (a demonstration).
  effective step   SGD at lr / (1 - beta) against momentum at lr, `tuning.steps` updates.
  tuned            each at the rate its sweep on tuning seeds chose (optimizer_schedule's tuned
                   arm: tuned_plan), `tuning.steps` updates.
The verdicts on "momentum trains faster" are the effective-step and tuned arms'. The runs are built
by optimizer_schedule's network_run / tuned_plan, so with the same settings the same-lr runs are the
optimizer_schedule grid's (sgd, momentum) x constant x BN-off cells and the tuned runs that
experiment's tuned sgd / momentum runs, trained once for both experiments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.measure import landscape
from trainfail.training import tuning
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings, labelled
from trainfail.training.network_arms import CONSTANT, claim_seeds, network_run, tuned_plan
from trainfail.core.run_record import RunRecord, RunResult, final_eval

ID = "momentum"
SECTION = contract.MOMENTUM
ORDER = 1
TITLE = "Momentum rolls past a shallow minimum; SGD vs SGD with momentum on a network"
HEADLINE = "toy_paths"  # the lecture's figure: gradient descent stops in the local minimum, momentum rolls past it


# The primary: each optimizer at its own tuned rate (momentum's advantage not bought by an untuned SGD
# rate); the effective-step arm is the secondary control (no gain within the margin refutes "momentum
# helps beyond a larger step").
PRIMARY = "momentum_lower_training_loss"
FIGURE_CLAIMS = {"toy_paths": "momentum_escapes_shallow_minimum"}

def toy_methods(toy: dict) -> list[dict]:
    return [{"method": "gd", "label": "gradient descent", "optimizer": {"name": "sgd", "lr": float(toy["lr"])}},
            {"method": "momentum", "label": f"GD + momentum {toy['momentum']:g}",
             "optimizer": {"name": "momentum", "lr": float(toy["lr"]), "momentum": float(toy["momentum"])}}]


NETWORK_ARMS = {"same_lr": "same lr (the lecture's)", "effective_step": "SGD at lr / (1 - beta)",
                "tuned": "each at its tuned lr"}


def network_arms(cfg: dict, ctx) -> dict[str, list[dict]]:
    """The network runs by arm (tuned: the sweep on tuning seeds, then the tuned runs)."""
    net = {**cfg["network"], "seeds": ctx.seeds_for(cfg)}
    lr, beta = float(net["lr"]), float(net["momentum"])
    sgd, mom = {"name": "sgd", "lr": lr}, {"name": "momentum", "lr": lr, "momentum": beta}
    horizon = int(net["tuning"]["steps"])
    return {"same_lr": [network_run(net, opt, CONSTANT, "none", s) for opt in (sgd, mom) for s in net["seeds"]],
            "effective_step": [network_run(net, opt, CONSTANT, "none", s, steps=horizon)
                               for opt in ({"name": "sgd", "lr": lr / (1 - beta)}, mom) for s in claim_seeds(net, ctx)],
            "tuned": [r for opt in (sgd, mom) for r in tuned_plan(net, opt, ctx)]}


def network_runs(cfg: dict, ctx) -> list[dict]:
    """The network runs labelled with their arm; the tuned arm's sweep (tuning seeds) as arm "sweep"."""
    return [labelled(r, arm="sweep" if arm == "tuned" and not tuning.stage(r) else arm)
            for arm, group in network_arms(cfg, ctx).items() for r in group]


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    toy = cfg["toy"]
    seeds = ctx.seeds_for(cfg)
    toy_runs = [{"task": ID, **m, "tilt": float(toy["tilt"]), "valley": float(toy["valley"]), "steps": int(toy["steps"]),
                 "seeds": [int(s) for s in seeds], "starts": landscape.jittered_starts(toy["start"], toy["start_jitter"], seeds)} for m in toy_methods(toy)]
    return toy_runs + network_runs(cfg, ctx)


def execute(settings: Settings, env: RunEnv) -> RunResult:
    surface = landscape.tilted_double_well(settings["tilt"], settings["valley"])
    paths = landscape.optimize_path(surface, settings["starts"], settings["optimizer"], settings["steps"])
    rows, per_start = [], []
    for seed, path in zip(settings["seeds"], paths):
        per_start.append({"seed": seed, "final_w1": float(path[-1, 0]), "final_loss": float(path[-1, 2]),
                          "updates": len(path) - 1})
        rows += [{"seed": seed, "update": int(k), "w1": path[k, 0], "w2": path[k, 1], "loss": path[k, 2]}
                 for k in landscape.thin(len(path))]
    return RunResult(rows=rows, summary={"per_start": per_start})


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    """The toy paths (part toy), and per network run of an arm on the claim seeds its learning curve
    (part network) and its final evaluation (part network_final). Sweep runs are not read: the
    tuned runs' rates are their sweeps' choices (tuning.check reads the choice files), and each
    sweep's choice is one row (part tuning: tuning.choice_rows)."""
    frames = []
    for r in records:
        if r.settings.get("task") == ID:
            df = r.metrics.merge(pd.DataFrame(r.summary["per_start"]), on="seed")
            df["part"], df["method"], df["label"] = "toy", r.settings["method"], r.settings["label"]
            frames.append(df.assign(run_id=r.run_id))
            continue
        arm, s = r.labels["arm"], r.settings
        if arm == "sweep":
            continue  # a sweep run (tuning seeds)
        plain = s.get("base", s)
        key = {"arm": arm, "method": plain["optimizer"]["name"], "seed": s["seed"], "diverged": r.diverged,
               "lr": tuning.check(r, ctx.results) if tuning.stage(s) else plain["optimizer"]["lr"], "run_id": r.run_id}
        m = r.metrics
        curve = m.dropna(subset=["train_loss"])[["step", "train_loss", "val_acc"]] if "train_loss" in m else pd.DataFrame()
        frames.append(curve.assign(part="network", **key))
        # a diverged run counts as no progress (its step-0 evaluation), never as a missing seed
        frames.append(pd.DataFrame([{"part": "network_final", **key, "steps": plain["steps"], **final_eval(r)}]))
    # per optimizer its sweep's choice: the rate, its and its neighbours' mean scores, edge_optimum
    frames.append(tuning.choice_rows(records, ctx.results).assign(part="tuning"))
    return pd.concat(frames, ignore_index=True)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    tuning.write_choices(tuning.rows_in(table, "part", "tuning"), outdir)  # the report shows it as a table
    toy = cfg["toy"]
    surface = landscape.tilted_double_well(toy["tilt"], toy["valley"])
    contour = lambda X, Y: surface(torch.as_tensor(np.stack([X, Y]))).numpy()
    paths = table[table["part"] == "toy"]
    seed = int(paths["seed"].min())
    methods = list(dict.fromkeys(paths["method"]))
    colors = plots.colors(methods)  # gd: SGD's colour, momentum: momentum's (plots.OPTIMIZER_COLORS)
    fig, axes = plots.figure(ncols=len(methods) + 1, width=3.8, height=3.3)
    xlim, ylim = (-1.8, max(toy["start"][0], 1.5) + 0.5), (-abs(toy["start"][1]) - 0.5, abs(toy["start"][1]) + 0.5)
    w = np.linspace(*xlim, 400)
    profile = surface(torch.as_tensor(np.stack([w, np.zeros_like(w)]))).numpy()
    axes[0][0].plot(w, profile, "k-")
    axes[0][0].set(xlabel="w1", ylabel="loss at w2 = 0", title="the surface along w1",
                   ylim=(profile.min() - 0.5, profile.min() + 4))
    for ax, m in zip(axes[0][1:], methods):
        p = paths[(paths["method"] == m) & (paths["seed"] == seed)]
        filled = plots.contours(ax, contour, xlim, ylim, colorbar=False)
        ax.plot(p["w1"], p["w2"], "-", color="white", lw=0.9)
        ax.plot(p["w1"].iloc[0], p["w2"].iloc[0], "r*", ms=9)
        ax.plot(p["w1"].iloc[-1], p["w2"].iloc[-1], "o", color=colors[m], mec="white", ms=7)
        first = p.iloc[0]
        ax.set_title(f"{first['label']}\n{int(first['updates'])} updates, final loss {first['final_loss']:.3f}", fontsize=8)
        axes[0][0].plot(p["w1"].iloc[-1], first["final_loss"], "o", color=colors[m], ms=7, label=first["label"])
        ax.set(xlabel="w1", ylabel="w2")
    axes[0][0].legend()
    if methods:
        plots.contour_colorbar(fig, filled, axes[0][1:], log=True)
    plots.save(fig, outdir, "toy_paths", note=f"(w1^2-1)^2 + {toy['tilt']:g} w1 + {toy['valley']:g} w2^2, lr {toy['lr']:g}, "
                                              f"start {toy['start']} (seed {seed}); dots: where each path ends")

    net = table[table["part"] == "network"]
    n = cfg["network"]
    fig, axes = plots.figure(ncols=len(NETWORK_ARMS), width=4.0, sharey=True)
    for ax, (arm, label) in zip(axes[0], NETWORK_ARMS.items()):
        part = net[net["arm"] == arm]
        sns.lineplot(part, x="step", y="train_loss", hue="method", hue_order=["sgd", "momentum"],
                     palette=plots.colors(["sgd", "momentum"]), errorbar=plots.BAND, ax=ax)
        lrs = ", ".join(f"{m} lr {g['lr'].iloc[0]:g}" for m, g in part.groupby("method", sort=False))
        ax.set(xlabel="update", ylabel="training loss", yscale="log", title=f"{label}\n{lrs}")
        ax.title.set_fontsize(8)
    plots.save(fig, outdir, "network_curves", note=f"{n['dataset']} {n['model']['arch']} {n['model'].get('hidden', '')}, "
                                                   f"batch {n['batch_size']}, momentum {n['momentum']:g}; tuned rates from "
                                                   f"lr {n['lr']:g} x {n['tuning']['multipliers']} on tuning seeds "
                                                   f"{n['tuning']['seeds']}; {plots.BAND_NOTE}")


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    toy = table[table["part"] == "toy"].groupby(["method", "seed"]).first().reset_index()
    gd = toy[toy["method"] == "gd"].sort_values("seed")
    mom = toy[toy["method"] == "momentum"].sort_values("seed")
    hump = float(landscape.double_well_critical_points(cfg["toy"]["tilt"])[1])
    # the 2-D toy: the surface, lr and momentum are chosen to show the mechanism
    out = [stats.claim(ID, "momentum_escapes_shallow_minimum",
                       "Where plain GD stops in the shallow minimum, GD with momentum rolls on to a lower loss",
                       "final loss(GD) - final loss(momentum), paired by start", stats.paired(gd["final_loss"], mom["final_loss"]),
                       kind="demonstration", note="by construction (a designed surface and start); "
                                                  f"GD ends at w1 = {gd['final_w1'].mean():.3f}, momentum at {mom['final_w1'].mean():.3f}; "
                              f"the hump is at w1 = {hump:.3f}")]
    final = table[table["part"] == "network_final"]
    get = lambda arm, m: final[(final["arm"] == arm) & (final["method"] == m)].sort_values("seed")
    n = cfg["network"]
    beta = float(n["momentum"])
    diff = lambda arm: stats.paired(get(arm, "sgd")["train_loss"], get(arm, "momentum")["train_loss"])
    lr_of = lambda arm, m: f"{get(arm, m)['lr'].iloc[0]:g}" if len(get(arm, m)) else "?"
    steps = lambda arm: int(get(arm, "sgd")["steps"].iloc[0]) if len(get(arm, "sgd")) else 0
    diverged = lambda arm: (f"{int(get(arm, 'sgd')['diverged'].sum())} SGD and "
                            f"{int(get(arm, 'momentum')['diverged'].sum())} momentum runs diverged (scored at step 0)"
                            if get(arm, "sgd")["diverged"].any() or get(arm, "momentum")["diverged"].any() else "")
    metric = "train_loss(SGD) - train_loss(momentum), paired by seed"
    chosen = tuning.rows_in(table, "part", "tuning")
    # the arms share seeds (same initialization and data order): paired over seeds
    out.append(stats.claim(ID, "momentum_lower_training_loss_same_lr",
                           f"The lecture's comparison: at the same lr ({lr_of('same_lr', 'sgd')}) and {steps('same_lr')} "
                           "updates, SGD with momentum reaches a lower training loss than SGD", metric, diff("same_lr"),
                           kind="demonstration",
                           note="; ".join(x for x in (f"uncontrolled: momentum {beta:g} takes an effective step "
                                                      f"lr / (1 - beta), {1 / (1 - beta):g}x SGD's", diverged("same_lr")) if x)))
    out.append(stats.claim(ID, "momentum_lower_training_loss_effective_step",
                           f"At the same effective step (SGD lr {lr_of('effective_step', 'sgd')} = momentum's lr "
                           f"{lr_of('effective_step', 'momentum')} / (1 - {beta:g})) and {steps('effective_step')} updates, "
                           "SGD with momentum reaches a lower training loss than SGD", metric, diff("effective_step"),
                           kind="test", margin=float(n["no_gain_margin"]),
                           note="; ".join(x for x in (f"within ±{n['no_gain_margin']:g} ('equivalent'): momentum's gain "
                                                      "is its larger effective step", diverged("effective_step")) if x)))
    out.append(stats.claim(ID, "momentum_lower_training_loss",
                           f"Each at its rate tuned on seeds apart (SGD lr {lr_of('tuned', 'sgd')}, momentum lr "
                           f"{lr_of('tuned', 'momentum')}) and {steps('tuned')} updates, SGD with momentum reaches a lower "
                           "training loss than SGD", metric, diff("tuned"), kind="test",
                           note="; ".join(x for x in (tuning.edge_note(chosen), f"rates tuned on seeds {n['tuning']['seeds']} "
                                                      f"from lr {n['lr']:g} x {n['tuning']['multipliers']}",
                                                      diverged("tuned")) if x)))
    return out
