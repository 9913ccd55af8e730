"""ill_conditioned_convex: optimizers on an elongated convex bowl (lecture 2, "training stuck").

The bowl 0.5 (h1 w1^2 + h2 w2^2) with curvatures orders of magnitude apart: flat along w1, steep
along w2. Each method is torch.optim on a 2-parameter tensor (landscape.optimize_path), from one
start per seed (the configured start, jittered by the seed), all starts in one batched call.
- GD with a large learning rate bounces across the valley (lr h2 = 2: w2 flips sign forever);
- GD with a tiny one really makes its 100,000 updates and is still far from the minimum;
- Adagrad in the lecture's form (sigma = root *mean* square of past gradients, eta constant)
  reaches the valley floor, then bursts out of it: once the steep gradients vanish, sigma shrinks
  and eta / sigma grows until a step is unstable. torch's Adagrad divides by the root of the
  *sum*, i.e. the lecture's form with eta / sqrt(t + 1): the lecture's "learning-rate decay",
  exactly; so "Adagrad" runs torch Adagrad with the `power` schedule (t + 1)^0.5 and "Adagrad +
  decay" runs it with a constant schedule. RMSprop, Adam and a warm-up variant complete the set.
A burst is measured as the largest jump after the path first reaches the floor (|w2| < floor)
divided by the largest jump on its way down: above 1, the path jumps further once on the floor
than it ever did while descending.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.measure import landscape
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings
from trainfail.core.run_record import RunRecord, RunResult

ID = "ill_conditioned_convex"
SECTION = contract.ADAPTIVE
ORDER = 1
TITLE = "GD, Adagrad, RMSprop and Adam on an elongated convex bowl"
HEADLINE = "paths"



def runs(cfg: dict, ctx: Context) -> list[Settings]:
    seeds = ctx.seeds_for(cfg)
    return [{"task": ID, "method": m["id"], "label": m["label"], "optimizer": m["optimizer"],
             "schedule": m.get("schedule", {"name": "constant"}), "steps": int(m["steps"]),
             "curvatures": [float(h) for h in cfg["curvatures"]], "floor": float(cfg["floor"]),
             "seeds": [int(s) for s in seeds], "starts": landscape.jittered_starts(cfg["start"], cfg["start_jitter"], seeds)}
            for m in cfg["methods"]]


def measure(path: np.ndarray, floor: float) -> dict:
    """Everything the claims need from one full path (before thinning for storage)."""
    after, before, ratio = landscape.burst_ratio(path, floor)
    finite = bool(np.isfinite(path).all())
    arrival = landscape.floor_arrival(path, floor)
    return {"updates": len(path) - 1, "final_distance": float(np.linalg.norm(path[-1, :2])) if finite else np.inf,
            "final_loss": float(path[-1, 2]), "floor_arrival": arrival, "jump_after_floor": after,
            "jump_before_floor": before, "burst_ratio": ratio, "diverged": not finite}


def execute(settings: Settings, env: RunEnv) -> RunResult:
    surface = landscape.quadratic(settings["curvatures"])
    paths = landscape.optimize_path(surface, settings["starts"], settings["optimizer"], settings["steps"],
                                    settings["schedule"])
    rows, per_start = [], []
    for seed, path in zip(settings["seeds"], paths):
        per_start.append({"seed": seed, **measure(path, settings["floor"])})
        for k in landscape.thin(len(path)):
            rows.append({"seed": seed, "update": int(k), "w1": path[k, 0], "w2": path[k, 1], "loss": path[k, 2]})
    diverged = any(p["diverged"] for p in per_start)
    return RunResult(rows=rows, summary={"per_start": per_start}, diverged=diverged)


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    frames = []
    for r in records:
        df = r.metrics.copy()
        stats_by_seed = pd.DataFrame(r.summary["per_start"])
        df = df.merge(stats_by_seed, on="seed", how="left")
        df["method"], df["label"] = r.settings["method"], r.settings["label"]
        df["lr"], df["optimizer"] = r.settings["optimizer"]["lr"], r.settings["optimizer"]["name"]
        df["schedule"] = r.settings["schedule"]["name"]
        df["run_id"] = r.run_id
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    order = {m["id"]: i for i, m in enumerate(cfg["methods"])}
    return out.sort_values(["method", "seed", "update"], key=lambda c: c.map(order) if c.name == "method" else c,
                           ignore_index=True)


def per_start(table: pd.DataFrame) -> pd.DataFrame:
    return table.groupby(["method", "seed"], sort=False).first().reset_index()


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    surface = landscape.quadratic(cfg["curvatures"])
    contour = lambda X, Y: surface(torch.as_tensor(np.stack([X, Y]))).numpy()
    seed = int(table["seed"].min())
    methods = list(dict.fromkeys(table["method"]))
    ncols = min(4, len(methods))
    nrows = -(-len(methods) // ncols)
    fig, axes = plots.figure(ncols=ncols, nrows=nrows, width=3.6, height=3.3)
    x0, y0 = cfg["start"]
    xlim, ylim = (min(x0, 0) - 1.5, max(x0, 0) + 1.5), (-abs(y0) - 1.5, abs(y0) + 1.5)
    for ax, m in zip(axes.flat, methods):
        p = table[(table["method"] == m) & (table["seed"] == seed)]
        filled = plots.contours(ax, contour, xlim, ylim, colorbar=False)
        ok = np.isfinite(p["w1"]) & np.isfinite(p["w2"])
        ax.plot(p["w1"][ok].clip(*xlim), p["w2"][ok].clip(*ylim), "-", color="white", lw=0.6, alpha=0.8)
        ax.plot(x0, y0, "r*", ms=9)
        ax.plot(0, 0, "k+", ms=9)
        first = p.iloc[0]
        ax.set_title(f"{first['label']}\n{int(first['updates']):,} updates, distance {first['final_distance']:.2g}",
                     fontsize=8)
        ax.set(xlabel="w1 (flat)", ylabel="w2 (steep)")
    for ax in list(axes.flat)[len(methods):]:
        ax.set_visible(False)
    plots.contour_colorbar(fig, filled, axes, log=True)
    plots.save(fig, outdir, "paths", note=f"bowl 0.5 ({cfg['curvatures'][0]:g} w1^2 + {cfg['curvatures'][1]:g} w2^2), "
                                          f"start {cfg['start']} (seed {seed}); + = minimum; paths clipped to the frame")

    # the bursts: one colour per method, shared by both panels, so that the right panel's labels
    # (horizontal, on its y axis) name the left panel's lines too
    adaptive = [m for m in methods if table.loc[table["method"] == m, "optimizer"].iloc[0] not in ("sgd",)]
    labels = {m: table.loc[table["method"] == m, "label"].iloc[0] for m in adaptive}
    # each optimizer in its colour (plots.OPTIMIZER_COLORS); a second arm of one optimizer in a shade of it
    by_label = plots.colors(labels[m] for m in adaptive)
    colors = {m: by_label[labels[m]] for m in adaptive}
    fig, axes = plots.figure(ncols=2, width=4.8, height=3.4)
    ax = axes[0][0]
    part = table[table["method"].isin(adaptive)].copy()
    part["|w2|"] = part["w2"].abs() + 1e-16
    for (m, _s), g in part.groupby(["method", "seed"], sort=False):
        ax.plot(g["update"], g["|w2|"], lw=0.7, color=colors[m])
    ax.axhline(cfg["floor"], color="k", ls="--", lw=0.8)
    ax.annotate("valley floor", (0, cfg["floor"]), xytext=(2, 2), textcoords="offset points", fontsize=8, va="bottom")
    ax.set(yscale="log", xlabel="update", ylabel="|w2| (height above the valley floor)", ylim=(1e-12, 1e2),
           title="every start, one line each")
    starts_tbl = per_start(table)
    ratios = starts_tbl[starts_tbl["method"].isin(adaptive)].assign(method_label=lambda d: d["method"].map(labels))
    order = [labels[m] for m in adaptive]
    sns.pointplot(ratios, y="method_label", x="burst_ratio", hue="method_label", order=order, hue_order=order,
                  palette=[colors[m] for m in adaptive], errorbar=plots.BAND, capsize=0.2, linestyle="none",
                  legend=False, ax=axes[0][1])
    axes[0][1].axvline(1.0, color="k", ls="--", lw=0.8)
    axes[0][1].set(xscale="log", ylabel="", xlabel="largest jump after reaching the floor / largest before",
                   title="bursts after the floor (> 1: a burst)")
    plots.save(fig, outdir, "bursts", note=f"colours: the methods (right panel's labels); left: |w2| along every start's path "
                                           f"(one line per seed); right: {plots.BAND_NOTE.replace('seeds', 'starts')}")


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    s = per_start(table)
    by = {m: g for m, g in s.groupby("method")}
    tol = float(cfg["tolerance"])
    out = []
    if "gd_large" in by:
        g = by["gd_large"]
        # the lecture's learning rates on a bowl of chosen curvatures: all four are demonstrations
        out.append(stats.claim(ID, "large_lr_gd_does_not_converge",
                                 f"GD with lr {g['lr'].iloc[0]:g} is not within {tol:g} of the minimum after "
                                 f"{int(g['updates'].iloc[0]):,} updates (it oscillates across the valley)",
                                 "distance to the minimum at the end", stats.mean(g["final_distance"].clip(upper=1e300)),
                                 tol, ">", kind="demonstration", paper_value="oscillates (lr 1e-2)",
                                 note="by construction: lr x the steep curvature >= 2, GD cannot converge"))
    if "gd_tiny" in by:
        g = by["gd_tiny"]
        out.append(stats.claim(ID, "tiny_lr_gd_not_within_tolerance",
                                 f"GD with lr {g['lr'].iloc[0]:g} is still not within {tol:g} of the minimum after "
                                 f"{int(g['updates'].iloc[0]):,} updates",
                                 "distance to the minimum at the end", stats.mean(g["final_distance"]), tol, ">",
                                 kind="demonstration", paper_value="far after 100,000 updates (lr 1e-7)",
                                 note="by construction: lr x the flat curvature x updates is far below 1"))
    for m, cid, text, direction in (("adagrad", "adagrad_bursts", "Adagrad (sigma = RMS, constant eta) bursts after it "
                                     "reaches the valley floor", ">"),
                                    ("adagrad_decay", "decay_removes_bursts", "With learning-rate decay eta/sqrt(t+1), "
                                     "Adagrad makes no burst after reaching the floor", "<")):
        if m in by:
            ratio = by[m]["burst_ratio"]
            note = "" if ratio.notna().all() else f"{int(ratio.isna().sum())} start(s) never reached the floor (excluded)"
            out.append(stats.claim(ID, cid, text, "largest jump after first reaching the floor / largest jump before",
                                   stats.mean(ratio), 1.0, direction, kind="demonstration",
                                   note="; ".join(x for x in (note, "the lecture's constants on a chosen bowl") if x)))
    return out
