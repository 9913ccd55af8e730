"""momentum: gradient descent with and without momentum (lecture 1.3).

(a) A 2-D surface with a shallow local minimum, (w1^2 - 1)^2 + tilt w1 + valley w2^2: from a
start on the shallow side, plain GD stops in the shallow minimum; GD with momentum (torch.optim
SGD with momentum, on the same 2-parameter tensor) carries its speed over the hump into the
deeper one. One start per seed (the configured start jittered), all in one batched call.
(b) A real network: SGD against SGD with momentum at the same learning rate and number of
updates, several seeds. Its runs are built by optimizer_schedule.network_run, so with the same
settings they are the optimizer_schedule grid's (sgd, momentum) x constant x BN-off cells,
trained once for both experiments.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import landscape, plots, stats
from ..config import run_id
from ..train import RunResult
from . import ill_conditioned_convex as icc
from .optimizer_schedule import network_run

ID = "momentum"
SECTION = "1.3 Momentum"
TITLE = "Momentum rolls past a shallow minimum; SGD vs SGD with momentum on a network"


def toy_methods(toy: dict) -> list[dict]:
    return [{"method": "gd", "label": "gradient descent", "optimizer": {"name": "sgd", "lr": float(toy["lr"])}},
            {"method": "momentum", "label": f"GD + momentum {toy['momentum']:g}",
             "optimizer": {"name": "momentum", "lr": float(toy["lr"]), "momentum": float(toy["momentum"])}}]


def network_runs(cfg: dict, ctx) -> list[dict]:
    net = cfg["network"]
    out = []
    for name in ("sgd", "momentum"):
        opt = {"name": name, "lr": float(net["lr"])}
        if name == "momentum":
            opt["momentum"] = float(net["momentum"])
        out += [network_run(net, opt, {"name": "constant"}, "none", s) for s in ctx.seeds_for(cfg)]
    return out


def runs(cfg: dict, ctx) -> list[dict]:
    toy = cfg["toy"]
    seeds = ctx.seeds_for(cfg)
    toy_runs = [{"task": ID, **m, "tilt": float(toy["tilt"]), "valley": float(toy["valley"]), "steps": int(toy["steps"]),
                 "seeds": [int(s) for s in seeds], "starts": icc.starts(toy, seeds)} for m in toy_methods(toy)]
    return toy_runs + network_runs(cfg, ctx)


def execute(settings: dict, env) -> RunResult:
    surface = landscape.tilted_double_well(settings["tilt"], settings["valley"])
    paths = landscape.optimize_path(surface, settings["starts"], settings["optimizer"], settings["steps"])
    rows, per_start = [], []
    for seed, path in zip(settings["seeds"], paths):
        per_start.append({"seed": seed, "final_w1": float(path[-1, 0]), "final_loss": float(path[-1, 2]),
                          "updates": len(path) - 1})
        rows += [{"seed": seed, "update": int(k), "w1": path[k, 0], "w2": path[k, 1], "loss": path[k, 2]}
                 for k in landscape.thin(len(path))]
    return RunResult(rows=rows, summary={"per_start": per_start})


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    frames = []
    net_ids = {run_id({"task": "train", **s}) for s in network_runs(cfg, ctx)}
    for r in records:
        if r.settings.get("task") == ID:
            df = r.metrics.merge(pd.DataFrame(r.summary["per_start"]), on="seed")
            df["part"], df["method"], df["label"] = "toy", r.settings["method"], r.settings["label"]
        elif r.run_id in net_ids:
            m = r.metrics
            df = m.dropna(subset=["train_loss"])[["step", "train_loss", "val_acc"]].copy() if "train_loss" in m else pd.DataFrame()
            df["part"], df["method"] = "network", r.settings["optimizer"]["name"]
            df["seed"], df["lr"], df["diverged"] = r.settings["seed"], r.settings["optimizer"]["lr"], r.diverged
        else:
            continue
        df["run_id"] = r.run_id
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    toy = cfg["toy"]
    surface = landscape.tilted_double_well(toy["tilt"], toy["valley"])
    contour = lambda X, Y: surface(torch.as_tensor(np.stack([X, Y]))).numpy()
    paths = table[table["part"] == "toy"]
    seed = int(paths["seed"].min())
    methods = list(dict.fromkeys(paths["method"]))
    fig, axes = plots.figure(ncols=len(methods) + 1, width=3.8, height=3.3)
    xlim, ylim = (-1.8, max(toy["start"][0], 1.5) + 0.5), (-abs(toy["start"][1]) - 0.5, abs(toy["start"][1]) + 0.5)
    w = np.linspace(*xlim, 400)
    profile = surface(torch.as_tensor(np.stack([w, np.zeros_like(w)]))).numpy()
    axes[0][0].plot(w, profile, "k-")
    axes[0][0].set(xlabel="w1", ylabel="loss at w2 = 0", title="the surface along w1",
                   ylim=(profile.min() - 0.5, profile.min() + 4))
    for ax, m in zip(axes[0][1:], methods):
        p = paths[(paths["method"] == m) & (paths["seed"] == seed)]
        plots.contours(ax, contour, xlim, ylim)
        ax.plot(p["w1"], p["w2"], "-", color="white", lw=0.9)
        ax.plot(p["w1"].iloc[0], p["w2"].iloc[0], "r*", ms=9)
        ax.plot(p["w1"].iloc[-1], p["w2"].iloc[-1], "wo", ms=5)
        first = p.iloc[0]
        ax.set_title(f"{first['label']}\n{int(first['updates'])} updates, final loss {first['final_loss']:.3f}", fontsize=8)
        axes[0][0].plot(p["w1"].iloc[-1], first["final_loss"], "o", label=first["label"])
        ax.set(xlabel="w1", ylabel="w2")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    plots.save(fig, outdir, "toy_paths", note=f"(w1^2-1)^2 + {toy['tilt']:g} w1 + {toy['valley']:g} w2^2, lr {toy['lr']:g}, "
                                              f"start {toy['start']} (seed {seed}); dots: where each path ends")

    net = table[table["part"] == "network"]
    fig, axes = plots.figure(ncols=2, width=4.6)
    for ax, col, label in zip(axes[0], ("train_loss", "val_acc"), ("training loss", "validation accuracy")):
        sns.lineplot(net, x="step", y=col, hue="method", errorbar=plots.BAND, ax=ax)
        ax.set(xlabel="update", ylabel=label, yscale="log" if col == "train_loss" else "linear")
    n = cfg["network"]
    fig.tight_layout()
    plots.save(fig, outdir, "network_curves", note=f"{n['dataset']} {n['model']['arch']} {n['model'].get('hidden', '')}, "
                                                   f"batch {n['batch_size']}, lr {n['lr']:g} for both, momentum {n['momentum']:g}; "
                                                   "mean and 95% t-interval over seeds")


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
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
    net = table[table["part"] == "network"]
    last = net[net["step"] == net["step"].max()]
    sgd = last[last["method"] == "sgd"].sort_values("seed")
    mo = last[last["method"] == "momentum"].sort_values("seed")
    out.append(stats.claim(ID, "momentum_lower_training_loss",
                           f"At the same lr and {int(net['step'].max())} updates, SGD with momentum reaches a lower "
                           "training loss than SGD", "train_loss(SGD) - train_loss(momentum), paired by seed",
                           stats.paired(sgd["train_loss"], mo["train_loss"]), kind="test"))
    return out
