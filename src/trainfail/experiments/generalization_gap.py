"""generalization_gap: small against large batch, sharp against flat minima (Keskar et al. 2017).

Each network/dataset is trained with a small batch (SB) and a large batch (LB, 10% of the
training set or more), Adam with the same learning rate, several seeds, until the training loss
stops improving (early stopping on the full training loss, with a cap on epochs). The training
job then measures its solution (execute): Keskar's epsilon-sharpness of the training loss
(eps 1e-3 and 5e-4, full space and a random 100-dimensional subspace), the top Hessian
eigenvalue (Lanczos on Hessian-vector products, trainfail.hessian) and the distance from the
initial point (re-created from the seed: train.train builds the model after seeding the same
way). The analysis step reads the SB and LB weights of the same seed (model.pt) and evaluates
Keskar's 1-D parametric plot x(alpha) = alpha x_LB + (1 - alpha) x_SB on the training and test
sets. Everything is measured in eval mode (batch norm with running statistics).

Claims: test accuracy SB > LB; LB solutions are sharper (epsilon-sharpness in the full space and
in the subspace, and the top Hessian eigenvalue); LB solutions lie closer to the initial point.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch

from .. import data, models, plots, provenance, sharpness, stats, store, train
from ..hessian import top_eigenvalues
from ..train import RunResult

ID = "generalization_gap"
SECTION = "1.2 Batch size"
TITLE = "Small vs large batch: the generalization gap and sharp minima (Keskar et al. 2017)"

REGIMES = ("SB", "LB")

# Keskar et al. 2017, Tables 2 and 3 (mean over their runs): test accuracy (%) and
# epsilon-sharpness at eps = 1e-3 in the full space, SB against LB.
PAPER = {
    "F1": {"dataset": "MNIST", "test_acc": (98.03, 97.81), "sharpness": (1.23, 205.14)},
    "C1": {"dataset": "CIFAR-10", "test_acc": (80.04, 77.26), "sharpness": (28.58, 707.23)},
}


def _eps_label(eps: float) -> str:
    return f"{eps:g}"


def sharpness_columns(cfg: dict) -> list[str]:
    """Table columns of the sharpness measurements: sharp_full_<eps>, sharp_sub_<eps>."""
    return [f"sharp_{space}_{_eps_label(e)}" for space in ("full", "sub") for e in cfg["epsilons"]]


def runs(cfg: dict, ctx) -> list[dict]:
    out = []
    for net in cfg["networks"]:
        for regime, bs in zip(REGIMES, (net["small_batch"], net["large_batch"])):
            for seed in ctx.seeds_for(cfg):
                out.append({
                    "task": ID, "network": net["label"], "regime": regime, "dataset": net["name"],
                    "model": net["model"], "optimizer": cfg["optimizer"], "batch_size": int(bs),
                    "epochs": int(cfg["max_epochs"]), "eval_points": int(cfg["max_epochs"]),  # = every epoch
                    "log_points": 20, "early_stop": cfg["early_stop"], "seed": int(seed), "save_model": True,
                    "measure": {"epsilons": [float(e) for e in cfg["epsilons"]], "subspace_dim": int(cfg["subspace_dim"]),
                                "sharpness_steps": int(cfg["sharpness_steps"]), "hessian_iters": int(cfg["hessian_iters"]),
                                "hessian_examples": int(cfg.get("hessian_examples", 0))},
                })
    return out


def measure(model: torch.nn.Module, ds: data.Dataset, state0: dict, spec: dict, seed: int) -> dict:
    """Sharpness (both ways, each eps), top Hessian eigenvalue and distance from the initial point."""
    out = {}
    for eps in spec["epsilons"]:
        out[f"sharp_full_{_eps_label(eps)}"] = sharpness.model_sharpness(
            model, ds.x_train, ds.y_train, eps, None, steps=spec["sharpness_steps"], seed=seed)["sharpness"]
        out[f"sharp_sub_{_eps_label(eps)}"] = sharpness.model_sharpness(
            model, ds.x_train, ds.y_train, eps, spec["subspace_dim"], steps=spec["sharpness_steps"], seed=seed)["sharpness"]
    # the HVP graph holds every activation of the examples at once: cap them on large sets (the
    # sets are stored shuffled, so the first n are a random subset); 0 = the whole training set
    n = spec.get("hessian_examples") or ds.n_train
    out["top_eigenvalue"] = float(top_eigenvalues(model, ds.x_train[:n], ds.y_train[:n], k=1, loss="cross_entropy",
                                                  iters=spec["hessian_iters"], seed=seed)[0])
    params = [n for n, _ in model.named_parameters()]  # batch-norm running statistics are not a position
    out["distance_from_init"] = sharpness.distance(model.state_dict(), state0, params)
    return out


def execute(settings: dict, env) -> RunResult:
    ds = env.dataset(settings["dataset"])
    provenance.make_deterministic(int(settings["seed"]))  # as train.train does before it builds a model
    model = models.build(settings["model"], ds.input_shape, ds.num_classes).to(env.device)
    state0 = copy.deepcopy(model.state_dict())
    result = train.train(settings, ds, env.device, model=model)
    final = [r for r in result.rows if "train_acc" in r][-1]
    steps, per_epoch = train.total_steps(settings, ds.n_train)
    summary = {**result.summary, "n_train": ds.n_train, "batch_fraction": min(settings["batch_size"], ds.n_train) / ds.n_train,
               "epochs_done": final["step"] / per_epoch, "stopped_early": final["step"] < steps,
               "train_loss": final["train_loss"], "train_acc": final["train_acc"],
               "test_loss": final["val_loss"], "test_acc": final["val_acc"],
               "parameters": models.count_parameters(model)}
    if not result.diverged:
        summary.update(measure(model, ds, state0, settings["measure"], int(settings["seed"])))
    return RunResult(rows=result.rows, summary=summary, model=model, diverged=result.diverged,
                     diverged_step=result.diverged_step)


def alphas(cfg: dict) -> np.ndarray:
    a = cfg["interpolation"]
    return np.linspace(a["alpha_min"], a["alpha_max"], int(a["points"]))


def interpolation_rows(cfg: dict, records, ctx) -> list[dict]:
    """Keskar's 1-D plot from the saved weights: x(alpha) = alpha x_LB + (1 - alpha) x_SB, per seed."""
    device = torch.device("cpu")  # the analysis step holds no GPU slot: interpolate on the CPU
    by_key = {(r.settings["network"], r.settings["regime"], r.settings["seed"]): r for r in records if not r.diverged}
    rows, datasets = [], {}
    for (net, regime, seed), sb in sorted(by_key.items()):
        lb = by_key.get((net, "LB", seed))
        if regime != "SB" or lb is None:
            continue
        name = sb.settings["dataset"]
        if name not in datasets:
            datasets[name] = data.prepared(name, ctx.results / "data", ctx.data_dir).to(device)
        ds = datasets[name]
        model = models.build(sb.settings["model"], ds.input_shape, ds.num_classes).to(device)
        state_lb, state_sb = lb.state_dict(), sb.state_dict()
        for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
            for row in sharpness.interpolate(model, state_lb, state_sb, alphas(cfg), x, y):
                rows.append({"kind": "interpolation", "network": net, "dataset": sb.settings["dataset"], "seed": seed,
                             "split": split, **row})
    return rows


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    rows = []
    for r in records:
        s = r.settings
        rows.append({"kind": "run", "network": s["network"], "dataset": s["dataset"], "regime": s["regime"],
                     "batch_size": s["batch_size"], "seed": s["seed"], "diverged": r.diverged, "run_id": r.run_id,
                     **{k: r.summary.get(k) for k in ("n_train", "batch_fraction", "epochs_done", "stopped_early",
                                                       "train_loss", "train_acc", "test_loss", "test_acc", "parameters",
                                                       "top_eigenvalue", "distance_from_init")},
                     **{k: r.summary.get(k) for k in sharpness_columns(cfg)}})
    return pd.DataFrame(rows + interpolation_rows(cfg, records, ctx))


# --- the tables in Keskar's format and the figures ------------------------------------------------

def _mean_sd(values: pd.Series, scale: float = 1.0, digits: int | None = 2) -> str:
    """mean ± sd over seeds: `digits` decimals, or 3 significant figures (None) for quantities
    that span orders of magnitude (sharpness, eigenvalues)."""
    v = pd.to_numeric(values, errors="coerce").dropna() * scale
    if v.empty:
        return "–"
    sd = v.std(ddof=1) if len(v) > 1 else float("nan")
    if digits is None:
        return f"{v.mean():.3g} ± {sd:.2g}"
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def keskar_tables(table: pd.DataFrame, cfg: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keskar's Table 2 (train/test accuracy, %) and Table 3 (sharpness), mean ± sd over seeds,
    SB and LB side by side, with the paper's F1 and C1 rows under ours."""
    runs_ = table[(table["kind"] == "run") & ~table["diverged"].astype(bool)]
    acc, sharp = [], []
    for net, part in runs_.groupby("network", sort=False):
        sb, lb = part[part["regime"] == "SB"], part[part["regime"] == "LB"]
        name = f"{net} ({part['dataset'].iloc[0]}, B={int(sb['batch_size'].iloc[0]) if len(sb) else '?'} / {int(lb['batch_size'].iloc[0]) if len(lb) else '?'})"
        acc.append({"network": name, "train SB": _mean_sd(sb["train_acc"], 100), "train LB": _mean_sd(lb["train_acc"], 100),
                    "test SB": _mean_sd(sb["test_acc"], 100), "test LB": _mean_sd(lb["test_acc"], 100),
                    # not in Keskar's table: cross-entropy sharpness shrinks as the loss goes to zero, so
                    # the loss each regime stopped at is needed to read the sharpness table
                    "train loss SB": _mean_sd(sb["train_loss"], digits=None), "train loss LB": _mean_sd(lb["train_loss"], digits=None),
                    "epochs SB": _mean_sd(sb["epochs_done"], digits=0), "epochs LB": _mean_sd(lb["epochs_done"], digits=0)})
        row = {"network": name}
        for col in sharpness_columns(cfg) + ["top_eigenvalue", "distance_from_init"]:
            for regime, rows in (("SB", sb), ("LB", lb)):
                row[f"{col} {regime}"] = _mean_sd(rows[col], digits=None)
        sharp.append(row)
    for label, paper in PAPER.items():
        acc.append({"network": f"Keskar {label} ({paper['dataset']}, paper)", "train SB": "", "train LB": "",
                    "test SB": f"{paper['test_acc'][0]:.2f}", "test LB": f"{paper['test_acc'][1]:.2f}"})
        sharp.append({"network": f"Keskar {label} ({paper['dataset']}, paper)",
                      "sharp_full_0.001 SB": f"{paper['sharpness'][0]:.2f}", "sharp_full_0.001 LB": f"{paper['sharpness'][1]:.2f}"})
    return pd.DataFrame(acc).fillna(""), pd.DataFrame(sharp).fillna("")


def _table_figure(df: pd.DataFrame, outdir, name: str, title: str, note: str, width: float) -> None:
    fig, axes = plots.figure(width=width, height=0.3 * (len(df) + 2))
    ax = axes[0][0]
    ax.axis("off")
    t = ax.table(cellText=df.values, colLabels=[c.replace("_", " ") for c in df.columns], loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    t.auto_set_column_width(list(range(len(df.columns))))
    ax.set_title(title)
    plots.save(fig, outdir, name, note=note)


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    acc, sharp = keskar_tables(table, cfg)
    for df, stem in ((acc, "table2_accuracy"), (sharp, "table3_sharpness")):
        store.write_text(outdir / f"{stem}.csv", df.to_csv(index=False))  # the same table as text, beside its picture
    _table_figure(acc, outdir, "table2_accuracy", "Keskar Table 2 format: accuracy (%), mean ± sd over seeds",
                  "SB/LB batch sizes in the row label; Adam, same lr; trained until the training loss stops improving "
                  f"(or {cfg['max_epochs']} epochs)", 12)
    # the sharpness table is wide: one figure per measure group keeps it readable
    eps_cols = [c for c in sharp.columns if c.startswith("sharp_")]
    other_cols = [c for c in sharp.columns if c != "network" and c not in eps_cols]
    ours = ~sharp["network"].str.startswith("Keskar")  # the paper has no eigenvalue/distance numbers
    for rows, part, stem in ((sharp, eps_cols, "table3_sharpness"), (sharp[ours], other_cols, "table3_eigenvalue_distance")):
        _table_figure(rows[["network"] + part], outdir, stem, "Keskar Table 3 format: sharpness measures, mean ± sd over seeds",
                      f"epsilon-sharpness = 100 (max f - f) / (1 + f) in a box of half-width eps(|x|+1) (full space; "
                      f"sub = random {cfg['subspace_dim']}-dim subspace); top Hessian eigenvalue by Lanczos; "
                      "distance = ||x - x0||", 11)

    runs_ = table[(table["kind"] == "run") & ~table["diverged"].astype(bool)].copy()
    measures = [f"sharp_full_{_eps_label(cfg['epsilons'][0])}", f"sharp_sub_{_eps_label(cfg['epsilons'][0])}",
                "top_eigenvalue", "distance_from_init"]
    fig, axes = plots.figure(ncols=len(measures), width=3.2)
    for ax, col in zip(axes[0], measures):
        runs_[col] = pd.to_numeric(runs_[col], errors="coerce")
        sns.barplot(runs_, x="network", y=col, hue="regime", hue_order=list(REGIMES), errorbar=plots.BAND, ax=ax, alpha=0.6)
        sns.stripplot(runs_, x="network", y=col, hue="regime", hue_order=list(REGIMES), dodge=True, ax=ax,
                      legend=False, size=4, palette="dark:k")
        if ax is not axes[0][0]:
            ax.get_legend().remove()
        ax.set(yscale="log" if col != "distance_from_init" else "linear", title=col.replace("_", " "), xlabel="", ylabel="")
    plots.save(fig, outdir, "sharpness_and_distance",
               note="bars: mean and 95% t-interval over seeds; dots: seeds. LB is sharper if its bars are higher; "
                    "Keskar: LB closer to the initial point")

    inter = table[table["kind"] == "interpolation"].copy()
    nets = list(dict.fromkeys(inter["network"]))
    if not nets:
        return
    fig, axes = plots.figure(ncols=len(nets), width=5.2)
    fig.subplots_adjust(wspace=0.55)  # room for each panel's right-hand accuracy axis
    for ax, net in zip(axes[0], nets):
        part = inter[inter["network"] == net]
        sns.lineplot(part, x="alpha", y="loss", style="split", color="tab:blue", errorbar=plots.BAND, ax=ax)
        ax.set(yscale="log", ylabel="cross entropy (blue)", xlabel="alpha  (0 = SB solution, 1 = LB solution)", title=net)
        ax.yaxis.label.set_color("tab:blue")
        twin = ax.twinx()
        sns.lineplot(part, x="alpha", y="acc", style="split", color="tab:red", errorbar=plots.BAND, ax=twin, legend=False)
        twin.set(ylabel="accuracy (red)")
        twin.yaxis.label.set_color("tab:red")
        twin.grid(False)
        for a in (0.0, 1.0):
            ax.axvline(a, color="0.5", lw=0.6, ls=":")
    plots.save(fig, outdir, "interpolation",
               note="Keskar's 1-D parametric plot: x(alpha) = alpha x_LB + (1 - alpha) x_SB, same seed; "
                    "solid train, dashed test; mean and 95% t-interval over seeds; eval mode")


# --- claims ---------------------------------------------------------------------------------------

def _log_ratio(a: pd.Series, b: pd.Series) -> stats.Estimate:
    """log10(a / b) over seeds, paired by seed (SB and LB of a seed share the initial point).

    Sharpness spans orders of magnitude between regimes, so the comparison is on a log scale;
    values <= 0 (no increase found in the box) are floored at 1e-12 to stay finite."""
    la = np.log10(np.maximum(pd.to_numeric(a, errors="coerce").to_numpy(float), 1e-12))
    lb = np.log10(np.maximum(pd.to_numeric(b, errors="coerce").to_numpy(float), 1e-12))
    return stats.paired(la, lb)


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    out = []
    runs_ = table[(table["kind"] == "run") & ~table["diverged"].astype(bool)]
    eps = _eps_label(cfg["epsilons"][0])
    for net, part in runs_.groupby("network", sort=False):
        sb, lb = part[part["regime"] == "SB"].sort_values("seed"), part[part["regime"] == "LB"].sort_values("seed")
        if sb.empty or lb.empty:  # every run of one regime diverged: nothing to compare (the table says so)
            continue
        ana = next((n.get("analogue") for n in cfg["networks"] if n["label"] == net), None)
        paper = PAPER.get(ana) if ana else None
        bsb, blb = int(sb["batch_size"].iloc[0]), int(lb["batch_size"].iloc[0])
        # cross-entropy curvature shrinks as the loss goes to zero: say where each regime stopped
        losses = (f"final training loss SB {pd.to_numeric(sb['train_loss']).mean():.3g}, "
                  f"LB {pd.to_numeric(lb['train_loss']).mean():.3g}; a lower-loss solution looks flatter")
        out.append(stats.claim(
            ID, f"sb_higher_test_acc_{net}", f"{net}: the small batch ({bsb}) reaches higher test accuracy than the large batch ({blb})",
            "test_acc(SB) - test_acc(LB), paired by seed", stats.paired(sb["test_acc"], lb["test_acc"]), kind="test",
            paper_value=f"{paper['test_acc'][0]} vs {paper['test_acc'][1]} (%, {ana})" if paper else None))
        for col, what in ((f"sharp_full_{eps}", f"epsilon-sharpness (eps {eps}, full space)"),
                          (f"sharp_sub_{eps}", f"epsilon-sharpness (eps {eps}, random {cfg['subspace_dim']}-dim subspace)"),
                          ("top_eigenvalue", "top Hessian eigenvalue")):
            out.append(stats.claim(
                ID, f"lb_sharper_{col}_{net}", f"{net}: the large-batch solution is sharper by {what}",
                f"log10({col}(LB) / {col}(SB)), paired by seed", _log_ratio(lb[col], sb[col]), threshold=0.0, kind="test",
                paper_value=(f"{paper['sharpness'][1]} / {paper['sharpness'][0]} ({ana})"
                             if paper and col == f"sharp_full_{eps}" and eps == "0.001" else None),
                note=losses))
        out.append(stats.claim(
            ID, f"lb_closer_to_init_{net}", f"{net}: the large-batch solution lies closer to the initial point",
            "log10(||x_SB - x0|| / ||x_LB - x0||), paired by seed", _log_ratio(sb["distance_from_init"], lb["distance_from_init"]),
            threshold=0.0, kind="test", paper_value="ratio 3 to 10 (Keskar)"))
    return out
