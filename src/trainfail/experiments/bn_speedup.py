"""bn_speedup: batch normalization trains faster and at higher learning rates (Ioffe & Szegedy 2015).

The paper's Figure 2 / Table: Inception without BN at its best learning rate (the baseline), with
BN at that rate, BN at 5x and 30x the rate, BN-x5 with sigmoid activations; and (the lecture's
point) the baseline at 5x and 30x. Here a conv net (models.build, arch cnn) on a small data set.

The baseline's best rate is chosen by a sweep that is part of every run: each run first trains the
baseline (no BN, ReLU) at every rate of `sweep.lrs` on `sweep.seeds`, for the same steps, and takes
the rate with the highest mean best validation accuracy among rates where no seed diverged. The
sweep is deterministic and memoised per process, so every run (and shard) finds the same rate;
this costs one sweep per shard, and keeps the pipeline one stage deep (no rule changes).

Steps to reach the baseline's best accuracy are paired by seed: the target of seed s is the best
validation accuracy the baseline reached with seed s (the paper's single-run design, per seed).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .. import plots, stats, train

ID = "bn_speedup"
SECTION = "3 Batch normalization"
TITLE = "Batch normalization: fewer steps, higher learning rates (Ioffe & Szegedy 2015)"

# variant -> (norm, activation, learning-rate multiplier); the paper's names
VARIANTS = {
    "baseline": ("none", "relu", 1.0),
    "BN-baseline": ("batch", "relu", 1.0),
    "BN-x5": ("batch", "relu", 5.0),
    "BN-x30": ("batch", "relu", 30.0),
    "BN-x5-sigmoid": ("batch", "sigmoid", 5.0),
    "baseline-x5": ("none", "relu", 5.0),
    "baseline-x30": ("none", "relu", 30.0),
}
# Ioffe & Szegedy 2015, Figure 3: steps to reach Inception's best accuracy (72.2%), and max accuracy
PAPER_STEPS = {"baseline": "31.0M", "BN-baseline": "13.3M", "BN-x5": "2.1M", "BN-x30": "2.7M",
               "BN-x5-sigmoid": "never (max 69.8%)", "baseline-x5": "not reported", "baseline-x30": "not reported"}
PAPER_SPEEDUP = {"baseline": 1.0, "BN-baseline": 31.0 / 13.3, "BN-x5": 31.0 / 2.1, "BN-x30": 31.0 / 2.7,
                 "BN-x5-sigmoid": 0.0}

_SWEEPS: dict[str, tuple[float, list[dict]]] = {}  # memo: sweep key -> (best lr, rows)


def _train_settings(settings: dict, norm: str, act: str, lr: float, seed: int) -> dict:
    return {"dataset": settings["dataset"], "model": {**settings["model"], "norm": norm, "activation": act},
            "optimizer": {**settings["optimizer"], "lr": lr}, "batch_size": settings["batch_size"],
            "steps": settings["steps"], "seed": seed, "eval_points": settings["eval_points"], "log_points": 10}


def runs(cfg: dict, ctx) -> list[dict]:
    base = {"task": ID, "dataset": cfg["dataset"], "model": cfg["model"], "optimizer": cfg["optimizer"],
            "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]), "eval_points": int(cfg["eval_points"]),
            "sweep": {"lrs": [float(v) for v in cfg["sweep"]["lrs"]], "seeds": [int(s) for s in cfg["sweep"]["seeds"]]}}
    return [{**base, "variant": v, "seed": int(seed)} for v in cfg["variants"] for seed in ctx.seeds_for(cfg)]


def best_val_acc(rows: list[dict]) -> float:
    accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None and math.isfinite(r["val_acc"])]
    return max(accs) if accs else math.nan


def choose_lr(sweep: pd.DataFrame) -> float:
    """The rate with the highest mean (over seeds) best validation accuracy; rates where a seed diverged are out."""
    ok = sweep.groupby("lr").filter(lambda g: not g["diverged"].any())
    if ok.empty:
        raise ValueError("every rate of the sweep diverged: lower sweep.lrs")
    return float(ok.groupby("lr")["best_val_acc"].mean().idxmax())


def sweep(settings: dict, env) -> tuple[float, list[dict]]:
    key = json.dumps({k: settings[k] for k in ("dataset", "model", "optimizer", "batch_size", "steps", "eval_points", "sweep")},
                     sort_keys=True)
    if key not in _SWEEPS:
        data = env.dataset(settings["dataset"])
        rows = []
        for lr in settings["sweep"]["lrs"]:
            for seed in settings["sweep"]["seeds"]:
                r = train.train(_train_settings(settings, "none", "relu", lr, seed), data, env.device)
                rows.append({"lr": lr, "seed": seed, "best_val_acc": best_val_acc(r.rows), "diverged": r.diverged})
        best = choose_lr(pd.DataFrame(rows))
        _SWEEPS[key] = (best, [{**r, "chosen": r["lr"] == best} for r in rows])
    return _SWEEPS[key]


def execute(settings: dict, env) -> train.RunResult:
    best, sweep_rows = sweep(settings, env)
    norm, act, mult = VARIANTS[settings["variant"]]
    result = train.train(_train_settings(settings, norm, act, mult * best, settings["seed"]),
                         env.dataset(settings["dataset"]), env.device)
    result.summary.update({"baseline_lr": best, "lr": mult * best, "sweep": sweep_rows})
    return result


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    rows = []
    for r in records:
        v, seed = r.settings["variant"], r.settings["seed"]
        m = r.metrics.dropna(subset=["val_acc"]) if "val_acc" in r.metrics else r.metrics.iloc[:0]
        rows += [{"kind": "curve", "variant": v, "seed": seed, "step": int(s), "val_acc": a}
                 for s, a in zip(m["step"], m["val_acc"])]
        final = float(m["val_acc"].iloc[-1]) if len(m) and not r.diverged else math.nan
        rows.append({"kind": "run", "variant": v, "seed": seed, "lr": r.summary["lr"], "baseline_lr": r.summary["baseline_lr"],
                     "diverged": r.diverged, "diverged_step": r.meta.get("diverged_step"),
                     "final_val_acc": final, "best_val_acc": float(m["val_acc"].max()) if len(m) else math.nan,
                     "steps": int(r.settings["steps"]), "run_id": r.run_id})
    if records:
        rows += [{"kind": "sweep", **s} for s in records[0].summary["sweep"]]
    return pd.DataFrame(rows)


def steps_to_target(curves: pd.DataFrame, runs_: pd.DataFrame) -> pd.DataFrame:
    """Per variant and seed: the first evaluated step at which validation accuracy reaches the
    baseline's best accuracy of the same seed (NaN: never), and the speed-up over the baseline
    (baseline steps / variant steps; 0 when never)."""
    base = curves[curves["variant"] == "baseline"]
    target = base.groupby("seed")["val_acc"].max()
    out = []
    for (v, seed), c in curves.groupby(["variant", "seed"]):
        if seed not in target.index:
            continue
        hit = c[c["val_acc"] >= target[seed] - 1e-12].sort_values("step")
        out.append({"variant": v, "seed": seed, "target": float(target[seed]),
                    "steps_to_target": float(hit["step"].iloc[0]) if len(hit) else math.nan})
    out = pd.DataFrame(out)
    base_steps = out[out["variant"] == "baseline"].set_index("seed")["steps_to_target"]
    out["speedup"] = [base_steps[s] / n if np.isfinite(n) and n > 0 else (0.0 if not np.isfinite(n) else math.inf)
                      for s, n in zip(out["seed"], out["steps_to_target"])]
    return out.merge(runs_[["variant", "seed", "diverged", "final_val_acc"]], on=["variant", "seed"], how="left")


def _parts(table: pd.DataFrame):
    curves = table[table["kind"] == "curve"]
    runs_ = table[table["kind"] == "run"]
    return curves, runs_, table[table["kind"] == "sweep"]


def summary_table(table: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """The paper's table: steps to the baseline's best accuracy, ours (mean, interval) beside theirs."""
    curves, runs_, _ = _parts(table)
    st = steps_to_target(curves, runs_)
    rows = []
    for v in variants:
        part = st[st["variant"] == v]
        reached = part["steps_to_target"].dropna()
        m, lo, hi, _ = stats.mean_ci(reached)
        s, slo, shi, _ = stats.mean_ci(part["speedup"])
        rows.append({"variant": v, "reached": f"{len(reached)}/{len(part)}", "steps": m, "steps_lo": lo, "steps_hi": hi,
                     "speedup": s, "speedup_lo": slo, "speedup_hi": shi,
                     "diverged": f"{int(runs_[runs_['variant'] == v]['diverged'].astype(bool).sum())}/{len(part)}",
                     "paper_steps": PAPER_STEPS.get(v, ""), "paper_speedup": PAPER_SPEEDUP.get(v, math.nan)})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    curves, runs_, sw = _parts(table)
    variants = [v for v in cfg["variants"] if v in set(runs_["variant"])]
    lr = runs_.groupby("variant")["lr"].first()
    div = runs_.groupby("variant")["diverged"].apply(lambda d: int(d.astype(bool).sum()))
    label = {v: f"{v} (lr {lr[v]:.3g}" + (f", {div[v]}/{(runs_['variant'] == v).sum()} diverged)" if div[v] else ")")
             for v in variants}
    c = curves.assign(variant=curves["variant"].map(label))
    fig, axes = plots.figure(width=7, height=4.4)
    ax = axes[0][0]
    sns.lineplot(c, x="step", y="val_acc", hue="variant", hue_order=[label[v] for v in variants],
                 errorbar=("ci", 95), ax=ax)
    ax.set(xlabel="training step", ylabel="validation accuracy", title=f"{cfg['dataset']}: validation accuracy during training")
    ax.legend(fontsize=7, loc="lower right")
    plots.save(fig, outdir, "val_acc_vs_steps",
               note=f"{cfg['model']['arch']} {cfg['model'].get('channels')}, {cfg['optimizer']['name']}, batch {cfg['batch_size']}; "
                    f"mean and 95% interval over {runs_['seed'].nunique()} seeds; a diverged run's curve ends where it diverged")

    fig, axes = plots.figure(width=4.8)
    ax = axes[0][0]
    sns.lineplot(sw, x="lr", y="best_val_acc", marker="o", errorbar=("ci", 95), ax=ax)
    chosen = sw[sw["chosen"].astype(bool)]["lr"]
    if len(chosen):
        ax.axvline(float(chosen.iloc[0]), color="C3", ls=":", label=f"chosen lr {float(chosen.iloc[0]):.3g}")
        ax.legend()
    for lr_, g in sw.groupby("lr"):
        if g["diverged"].astype(bool).any():
            ax.annotate("diverged", (lr_, 0.1), fontsize=7, ha="center")
    ax.set(xscale="log", xlabel="learning rate (baseline, no BN)", ylabel="best validation accuracy",
           title="the baseline's learning-rate sweep")
    plots.save(fig, outdir, "baseline_lr_sweep",
               note=f"{cfg['steps']} steps per run; mean and 95% interval over sweep seeds {cfg['sweep']['seeds']}")

    st = summary_table(table, variants)
    fig, axes = plots.figure(width=8, height=0.45 * len(st) + 1)
    ax = axes[0][0]
    ax.axis("off")
    cell = lambda m, lo, hi: "–" if not np.isfinite(m) else (f"{m:.0f} [{lo:.0f}, {hi:.0f}]" if np.isfinite(lo) else f"{m:.0f}")
    text = [[r.variant, r.reached, cell(r.steps, r.steps_lo, r.steps_hi),
             "–" if not np.isfinite(r.speedup) else f"{r.speedup:.2f} [{r.speedup_lo:.2f}, {r.speedup_hi:.2f}]",
             r.diverged, r.paper_steps, "–" if not np.isfinite(r.paper_speedup) else f"{r.paper_speedup:.1f}"]
            for r in st.itertuples()]
    t = ax.table(cellText=text, colLabels=["variant", "reached", "steps to baseline's best", "speed-up",
                                           "diverged", "paper steps", "paper speed-up"], loc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.3)
    plots.save(fig, outdir, "steps_to_baseline_best",
               note="ours: mean [95% interval] over seeds that reached the target (speed-up: over all seeds, 0 = never); "
                    "paper: Ioffe & Szegedy 2015, Inception on ImageNet, steps to 72.2%")


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    curves, runs_, _ = _parts(table)
    st = steps_to_target(curves, runs_).sort_values("seed")
    have = set(st["variant"])
    sp = lambda v: st[st["variant"] == v]["speedup"].to_numpy(float)
    out = []
    if "BN-baseline" in have:
        out.append(stats.compare(ID, "bn_fewer_steps", "BN reaches the baseline's best accuracy in fewer steps (speed-up > 1)",
                                 "baseline steps / BN steps (0 = never)", stats.mean_ci(sp("BN-baseline")), 1.0, ">",
                                 paper_value=f"{PAPER_SPEEDUP['BN-baseline']:.1f}"))
        for v in ("BN-x5", "BN-x30"):
            if v in have:
                out.append(stats.compare(ID, f"{v.lower().replace('-', '_')}_faster_than_bn",
                                         f"{v} reaches the baseline's best accuracy in fewer steps than BN at the baseline's rate",
                                         f"speed-up({v}) - speed-up(BN-baseline)", stats.diff_ci(sp(v), sp("BN-baseline")),
                                         0.0, ">", paper_value=f"{PAPER_SPEEDUP[v]:.1f} vs {PAPER_SPEEDUP['BN-baseline']:.1f}"))
    chance = 1.0 / 10
    acc = lambda v: runs_[runs_["variant"] == v].sort_values("seed")["final_val_acc"].fillna(chance).to_numpy(float)
    for v in ("baseline-x5", "baseline-x30"):
        if v in have:
            n_div = int(runs_[runs_["variant"] == v]["diverged"].astype(bool).sum())
            out.append(stats.compare(ID, f"{v.replace('-', '_')}_worse",
                                     f"The baseline at {v.split('-x')[1]}x its best rate ends worse (or diverges)",
                                     f"final val acc(baseline) - final val acc({v}); diverged = chance (0.1)",
                                     stats.diff_ci(acc("baseline"), acc(v)), 0.0, ">",
                                     note=f"{n_div}/{len(acc(v))} runs diverged"))
    return out
