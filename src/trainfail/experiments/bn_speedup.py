"""bn_speedup: batch normalization trains faster and at higher learning rates (Ioffe & Szegedy 2015).

The paper's Figure 2 / Table: Inception without BN at its best learning rate (the baseline), with
BN at that rate, BN at 5x and 30x the rate, BN-x5 with sigmoid activations; and (the lecture's
point) the baseline at 5x and 30x. Here a conv net (models.build, arch cnn) on a small data set.

The baseline's best rate is chosen by a sweep that is part of the pipeline: the baseline (no BN,
ReLU) is trained at every rate of `sweep_lrs` for every seed, as ordinary runs; the rate with the
highest mean best validation accuracy among rates where no seed diverged is the baseline's best
rate, and those runs are the baseline's curves. The other variants need that rate before they
start, so they train in a second stage: `stage()` puts them there, and the plan makes their
shards wait for every shard of the sweep, whose runs they then read from the results.

Steps to reach the baseline's best accuracy are paired by seed: the target of seed s is the best
validation accuracy the baseline reached with seed s (the paper's single-run design, per seed).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .. import plots, stats, train
from ..runs import DIVERGED_SHORT, final_eval

ID = "bn_speedup"
SECTION = "3.6 Effectiveness of batch normalization"
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

_BEST: dict[str, float] = {}  # memo per process: sweep key -> best rate


def _train_settings(cfg: dict, norm: str, act: str, lr: float, seed: int) -> dict:
    return {"dataset": cfg["dataset"], "model": {**cfg["model"], "norm": norm, "activation": act},
            "optimizer": {**cfg["optimizer"], "lr": float(lr)}, "batch_size": int(cfg["batch_size"]),
            "steps": int(cfg["steps"]), "seed": int(seed), "eval_points": int(cfg["eval_points"]), "log_points": 10}


def sweep_runs(spec: dict) -> list[dict]:
    """The baseline at every rate and seed: ordinary training runs (task train, as the plan stores them)."""
    return [{"task": "train", **_train_settings(spec, "none", "relu", lr, seed)}
            for lr in spec["sweep_lrs"] for seed in spec["seeds"]]


def runs(cfg: dict, ctx) -> list[dict]:
    sweeps, others = [], []
    for ds in cfg["datasets"]:
        spec = {"dataset": ds, "model": cfg["model"], "optimizer": cfg["optimizer"],
                "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]), "eval_points": int(cfg["eval_points"]),
                "sweep_lrs": [float(v) for v in cfg["sweep_lrs"]], "seeds": [int(s) for s in ctx.seeds_for(cfg)]}
        sweeps += sweep_runs(spec)
        others += [{"task": ID, "variant": v, "seed": int(seed), "spec": spec}
                   for v in cfg["variants"] if v != "baseline" for seed in spec["seeds"]]
    return sweeps + others  # the sweeps first: their shards come first


def best_val_acc(values) -> float:
    a = pd.Series(values, dtype=float).dropna()
    return float(a.max()) if len(a) else math.nan


def choose_lr(sweep: pd.DataFrame) -> float:
    """The rate with the highest mean (over seeds) best validation accuracy; rates where a seed diverged are out."""
    ok = sweep.groupby("lr").filter(lambda g: not g["diverged"].astype(bool).any())
    if ok.empty:
        raise ValueError("every rate of the sweep diverged: lower sweep_lrs")
    return float(ok.groupby("lr")["best_val_acc"].mean().idxmax())


def _sweep_row(settings: dict, metrics: pd.DataFrame, diverged: bool) -> dict:
    acc = metrics["val_acc"] if "val_acc" in metrics else []
    return {"lr": settings["optimizer"]["lr"], "seed": settings["seed"], "best_val_acc": best_val_acc(acc),
            "diverged": bool(diverged)}


def stage(settings: dict) -> int:
    """The variants need the sweep's chosen rate: they train in a second stage, after the sweep."""
    return 0 if settings.get("task", "train") == "train" else 1


def best_rate(spec: dict, env) -> float:
    """The baseline's best rate from the sweep's stored runs (finished: the plan's stage order)."""
    from .. import runs as run_store
    from ..config import run_id

    key = json.dumps(spec, sort_keys=True)
    if key not in _BEST:
        results = env.cache_dir.parent  # RunEnv's cache_dir is <results>/data
        rows = []
        for s in sweep_runs(spec):
            rec = run_store.load_run(results, run_id(s))  # FileNotFoundError names a missing run
            rows.append(_sweep_row(s, rec.metrics, rec.diverged))
        _BEST[key] = choose_lr(pd.DataFrame(rows))
    return _BEST[key]


def execute(settings: dict, env) -> train.RunResult:
    best = best_rate(settings["spec"], env)
    norm, act, mult = VARIANTS[settings["variant"]]
    result = train.train(_train_settings(settings["spec"], norm, act, mult * best, settings["seed"]),
                         env.dataset(settings["spec"]["dataset"]), env.device)
    result.summary.update({"baseline_lr": best, "lr": mult * best})
    return result


def _dataset_of(r) -> str:
    return r.settings["dataset"] if r.settings.get("task", "train") == "train" else r.settings["spec"]["dataset"]


def dataset_table(records) -> pd.DataFrame:
    """One data set's runs -> sweep rows, and per variant and seed a run row and its curve rows."""
    sweep = [r for r in records if r.settings.get("task", "train") == "train"]
    sweep_table = pd.DataFrame([_sweep_row(r.settings, r.metrics, r.diverged) for r in sweep])
    best = choose_lr(sweep_table) if len(sweep_table) else math.nan
    rows = [{"kind": "sweep", **row, "chosen": row["lr"] == best} for row in sweep_table.to_dict("records")]
    for r in records:
        if r.settings.get("task", "train") == "train":
            if r.settings["optimizer"]["lr"] != best:
                continue
            v, lr = "baseline", best  # the sweep's runs at the chosen rate are the baseline
        else:
            v, lr = r.settings["variant"], r.summary["lr"]
            # the chosen rate is not part of a variant's settings (it is decided by the sweep), so
            # a variant stored before its sweep was retrained could carry a stale rate: refuse it
            if r.summary.get("baseline_lr") != best:
                raise ValueError(f"bn_speedup run {r.run_id} ({v}, seed {r.settings['seed']}) was trained at baseline "
                                 f"rate {r.summary.get('baseline_lr')}, but the sweep now chooses {best}: delete "
                                 f"results/runs/{r.run_id} and the stage-1 shard manifests, then run snakemake again")
        seed = r.settings["seed"]
        m = r.metrics.dropna(subset=["val_acc"]) if "val_acc" in r.metrics else r.metrics.iloc[:0]
        rows += [{"kind": "curve", "variant": v, "seed": seed, "step": int(s), "val_acc": a}
                 for s, a in zip(m["step"], m["val_acc"])]
        rows.append({"kind": "run", "variant": v, "seed": seed, "lr": lr, "baseline_lr": best,
                     "diverged": r.diverged, "diverged_step": r.meta.get("diverged_step"),
                     "final_val_acc": final_eval(r)["val_acc"],  # the one diverged-run policy
                     "best_val_acc": best_val_acc(m["val_acc"]) if len(m) else math.nan, "run_id": r.run_id})
    return pd.DataFrame(rows)


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    parts = [dataset_table([r for r in records if _dataset_of(r) == ds]).assign(dataset=ds)
             for ds in dict.fromkeys(_dataset_of(r) for r in records)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


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
        steps, speedup = stats.mean(reached), stats.mean(part["speedup"])
        (m, (lo, hi)), (s, (slo, shi)) = (steps.value, steps.interval()), (speedup.value, speedup.interval())
        rows.append({"variant": v, "reached": f"{len(reached)}/{len(part)}", "steps": m, "steps_lo": lo, "steps_hi": hi,
                     "speedup": s, "speedup_lo": slo, "speedup_hi": shi,
                     "diverged": f"{int(runs_[runs_['variant'] == v]['diverged'].astype(bool).sum())}/{len(part)}",
                     "paper_steps": PAPER_STEPS.get(v, ""), "paper_speedup": PAPER_SPEEDUP.get(v, math.nan)})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    for ds, part in table.groupby("dataset", sort=False):
        dataset_figures(part, ds, cfg, outdir)


def dataset_figures(table: pd.DataFrame, ds: str, cfg: dict, outdir) -> None:
    import seaborn as sns

    curves, runs_, sw = _parts(table)
    variants = [v for v in dict.fromkeys(["baseline", *cfg["variants"]]) if v in set(runs_["variant"])]
    lr = runs_.groupby("variant")["lr"].first()
    div = runs_.groupby("variant")["diverged"].apply(lambda d: int(d.astype(bool).sum()))
    label = {v: f"{v} (lr {lr[v]:.3g}" + (f", {div[v]}/{(runs_['variant'] == v).sum()} diverged)" if div[v] else ")")
             for v in variants}
    c = curves.assign(variant=curves["variant"].map(label))
    fig, axes = plots.figure(width=7, height=4.4)
    ax = axes[0][0]
    sns.lineplot(c, x="step", y="val_acc", hue="variant", hue_order=[label[v] for v in variants],
                 errorbar=plots.BAND, ax=ax)
    ax.set(xlabel="training step", ylabel="validation accuracy", title=f"{ds}: validation accuracy during training")
    ax.legend(fontsize=7, loc="lower right")
    plots.save(fig, outdir, f"val_acc_vs_steps_{ds}",
               note=f"{cfg['model']['arch']} {cfg['model'].get('channels')}, {cfg['optimizer']['name']}, batch {cfg['batch_size']}; "
                    f"{plots.BAND_NOTE} ({runs_['seed'].nunique()} seeds); a diverged run's curve ends where it diverged")

    fig, axes = plots.figure(width=4.8)
    ax = axes[0][0]
    sns.lineplot(sw, x="lr", y="best_val_acc", marker="o", errorbar=plots.BAND, ax=ax)
    chosen = sw[sw["chosen"].astype(bool)]["lr"]
    if len(chosen):
        ax.axvline(float(chosen.iloc[0]), color="C3", ls=":", label=f"chosen lr {float(chosen.iloc[0]):.3g}")
        ax.legend()
    for lr_, g in sw.groupby("lr"):
        if g["diverged"].astype(bool).any():
            ax.annotate("diverged", (lr_, 0.1), fontsize=7, ha="center")
    ax.set(xscale="log", xlabel="learning rate (baseline, no BN)", ylabel="best validation accuracy",
           title=f"{ds}: the baseline's learning-rate sweep")
    plots.save(fig, outdir, f"baseline_lr_sweep_{ds}",
               note=f"{cfg['steps']} steps per run; {plots.BAND_NOTE} ({sw['seed'].nunique()} seeds); "
                    "rates where a seed diverged are not chosen")

    st = summary_table(table, variants)
    fig, axes = plots.figure(width=8, height=0.3 * len(st) + 0.6)
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
    t.auto_set_column_width(list(range(7)))
    t.scale(1, 1.3)
    plots.save(fig, outdir, f"steps_to_baseline_best_{ds}",
               note="ours: mean [95% interval] over seeds that reached the target (speed-up: over all seeds, 0 = never); "
                    "paper: Ioffe & Szegedy 2015, Inception on ImageNet, steps to 72.2%")


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    return [c for ds, part in table.groupby("dataset", sort=False) for c in dataset_claims(part, ds)]


def dataset_claims(table: pd.DataFrame, ds: str) -> list[dict]:
    curves, runs_, _ = _parts(table)
    st = steps_to_target(curves, runs_).sort_values("seed")
    have = set(st["variant"])
    sp = lambda v: st[st["variant"] == v]["speedup"].to_numpy(float)
    out = []
    if "BN-baseline" in have:
        out.append(stats.claim(ID, f"bn_fewer_steps_{ds}", f"{ds}: BN reaches the baseline's best accuracy in fewer steps (speed-up > 1)",
                               "baseline steps / BN steps (0 = never)", stats.mean(sp("BN-baseline")), 1.0, ">",
                               kind="test", paper_value=f"{PAPER_SPEEDUP['BN-baseline']:.1f}"))
        for v in ("BN-x5", "BN-x30"):
            if v in have:
                # every variant trains from the same seeds (same initialization): paired over seeds
                out.append(stats.claim(ID, f"{v.lower().replace('-', '_')}_faster_than_bn_{ds}",
                                       f"{ds}: {v} reaches the baseline's best accuracy in fewer steps than BN at the baseline's rate",
                                       f"speed-up({v}) - speed-up(BN-baseline)", stats.paired(sp(v), sp("BN-baseline")),
                                       0.0, ">", kind="test",
                                       paper_value=f"{PAPER_SPEEDUP[v]:.1f} vs {PAPER_SPEEDUP['BN-baseline']:.1f}"))
    acc = lambda v: runs_[runs_["variant"] == v].sort_values("seed")["final_val_acc"].to_numpy(float)
    for v in ("baseline-x5", "baseline-x30"):
        if v in have:
            n_div = int(runs_[runs_["variant"] == v]["diverged"].astype(bool).sum())
            out.append(stats.claim(ID, f"{v.replace('-', '_')}_worse_{ds}",
                                   f"{ds}: the baseline at {v.split('-x')[1]}x its best rate ends worse (or diverges)",
                                   f"final val acc(baseline) - final val acc({v}), paired by seed; {DIVERGED_SHORT}",
                                   stats.paired(acc("baseline"), acc(v)), 0.0, ">", kind="test",
                                   note=f"{n_div}/{len(acc(v))} runs diverged"))
    return out
