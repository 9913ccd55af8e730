"""batch_accuracy: accuracy against batch size with everything else fixed (lecture 1.2).

The lecture's MNIST / CIFAR-10 slide: the same model, optimizer, learning rate and number of
epochs at every batch size; larger batches end with worse training (and validation) accuracy:
"large batch hurts optimization". Three arms, the same seeds (initialization, data order) in each:

  lecture         the slide's set-up: the configured lr and `epochs` at every batch size (the
                  figure). The largest batch makes a handful of updates against thousands, all
                  at a rate chosen for the smallest: its verdict is set by that, not by the batch.
  equal_updates   the configured lr and `equal_updates` updates at every batch size: what the
                  update count alone does (the lecture's mechanism, noisy small-batch updates
                  helping optimization, predicts the small batch still wins).
  tuned           `epochs` at every batch size, each at its own learning rate, chosen from the
                  `tuning.lrs` sweep on tuning seeds disjoint from the claim's seeds (lowest final
                  training loss). The verdict on the lecture's claim: at an equal number of
                  epochs (the slide's horizon: the same data, and on a GPU about the same time),
                  does the large batch still end worse when neither batch runs at the other's rate?
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.training import tuning
from trainfail.training.sizes import test_size
from trainfail.training.context import Context
from trainfail.core.contract import Claim, Settings, labelled
from trainfail.core.run_record import RunRecord, final_eval

ID = "batch_accuracy"
SECTION = contract.BATCH_SIZE
ORDER = 3
TITLE = "Accuracy against batch size: the lecture's arm, equal updates, and a rate tuned per batch size"
HEADLINE = "accuracy_vs_batch_size"

ARMS = {"lecture": "same lr, same epochs (the lecture's)", "equal_updates": "same lr, equal updates",
        "tuned": "lr tuned per batch size, same epochs"}
CRITERION = "final_train_loss"  # "large batch hurts optimization": tune for the training loss


# The primary: the equal-updates arm. The lecture explains the large batch's lower accuracy by its
# noiseless updates; only at an equal number of updates is the update count not the explanation. Its
# "no gap within the margin" is a decided finding (it says the update count explains the tuned arm).
PRIMARY = "large_batch_lower_train_acc_*_equal_updates"
# what the primary's verdict means for the lecture's explanation (the report's finding sentences)
FINDINGS = {"large_batch_lower_train_acc_*_equal_updates": {
    "equivalent": "the update count, not the noise of small batches, explains the large batch's gap",
    "reproduced": "the large batch trains worse even at equal updates: more than the update count is at work",
    "not_reproduced": "at equal updates the large batch trains better"}}
FIGURE_CLAIMS = {"accuracy_vs_batch_size": "large_batch_lower_val_acc_*"}

def base(ds: dict, bs: int, optimizer: dict, length: dict) -> dict:
    """One batch size's training settings; `length` is {"epochs": E} or {"steps": U}."""
    return {"dataset": ds["name"], "model": ds["model"], "optimizer": dict(optimizer), "batch_size": int(bs),
            **length, "eval_points": 2, "log_points": 10}  # only the final evaluation is read (and step 0's)


def arms(cfg: dict, ctx) -> dict[str, list[dict]]:
    """Every run by arm (tuned = the sweep on tuning seeds and the tuned runs on the claim seeds)."""
    seeds = ctx.seeds_for(cfg)
    out: dict[str, list[dict]] = {a: [] for a in ARMS}
    epochs, updates = {"epochs": int(cfg["epochs"])}, {"steps": int(cfg["equal_updates"])}
    for ds in cfg["datasets"]:
        for bs in cfg["batch_sizes"]:
            out["lecture"] += [{"task": "train", **base(ds, bs, cfg["optimizer"], epochs), "seed": int(s)} for s in seeds]
            out["equal_updates"] += [{"task": "train", **base(ds, bs, cfg["optimizer"], updates), "seed": int(s)}
                                     for s in seeds]
            out["tuned"] += tuning.plan(base(ds, bs, cfg["optimizer"], epochs), cfg["tuning"]["lrs"],
                                        cfg["tuning"]["seeds"], seeds, CRITERION)
    return out


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    """Every run labelled with its arm; the tuned arm's sweep (tuning seeds) as arm "sweep"."""
    return [labelled(s, arm="sweep" if arm == "tuned" and not tuning.stage(s) else arm)
            for arm, group in arms(cfg, ctx).items() for s in group]


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    """One row per run of an arm on the claim seeds (the tuned arm with the rate its sweep chose),
    one row per sweep run (arm "sweep", on the tuning seeds), and one per sweep (arm "tuning":
    tuning.choice_rows)."""
    rows = []
    for r in records:
        s = r.settings
        if tuning.stage(s) == 1:  # a tuned run: its settings name the sweep, its choice file the rate
            plain, lr = s["base"], tuning.check(r, ctx.results)
        else:
            plain, lr = s, s["optimizer"]["lr"]
        final = final_eval(r)  # a diverged run counts as no progress (its step-0 evaluation)
        rows.append({"arm": r.labels["arm"], "dataset": plain["dataset"], "batch_size": plain["batch_size"],
                     "seed": s["seed"], "lr": lr, **final, "updates": int(r.metrics["step"].max()),
                     "diverged": r.diverged, "run_id": r.run_id})
    # per (dataset, batch size) its sweep's choice: the rate, its and its neighbours' mean scores, edge_optimum
    rows += [{"arm": "tuning", **c} for c in tuning.choice_rows(records, ctx.results).to_dict("records")]
    return pd.DataFrame(rows)


def chosen_rates(table: pd.DataFrame) -> pd.DataFrame:
    """The rate each (dataset, batch size) was trained at in the tuned arm, with the sweep's grid edges."""
    tuned = table[table["arm"] == "tuned"].groupby(["dataset", "batch_size"])["lr"].first()
    sweep = table[table["arm"] == "sweep"].groupby(["dataset", "batch_size"])["lr"].agg(["min", "max"])
    out = sweep.join(tuned.rename("lr"), how="inner").reset_index()
    out["at_edge"] = (out["lr"] == out["min"]) | (out["lr"] == out["max"])
    return out


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    tuning.write_choices(tuning.rows_in(table, "arm", "tuning"), outdir)  # the report shows it as a table
    arms_shown = table[table["arm"].isin(list(ARMS))].copy()
    arms_shown["arm"] = arms_shown["arm"].map(ARMS)
    datasets = list(dict.fromkeys(arms_shown["dataset"]))
    fig, axes = plots.figure(ncols=2, nrows=len(datasets), width=4.8, height=3.4)
    for i, ds in enumerate(datasets):
        part = arms_shown[arms_shown["dataset"] == ds]
        for ax, col, split in zip(axes[i], ("train_acc", "val_acc"), ("training", "validation")):
            sns.lineplot(part, x="batch_size", y=col, hue="arm", hue_order=list(ARMS.values()), marker="o",
                         errorbar=plots.BAND, ax=ax, legend=i == 0 and col == "train_acc")
            plots.bound(ax, 0, 1)  # an accuracy's interval stays within [0, 1]
            ax.set(xscale="log", xlabel="batch size", ylabel=f"{split} accuracy", title=f"{ds}: {split} accuracy")
    if datasets:
        axes[0][0].legend()
    rates = chosen_rates(table)
    chosen = "; ".join(f"{r.dataset} B={r.batch_size}: {r.lr:g}" for r in rates.itertuples())
    plots.save(fig, outdir, "accuracy_vs_batch_size",
               note=f"{cfg['epochs']} epochs ({cfg['equal_updates']} updates in the equal-updates arm); "
                    f"{cfg['optimizer']['name']} lr {cfg['optimizer']['lr']:g} in the lecture and equal-updates arms; "
                    f"tuned rates (from {cfg['tuning']['lrs']} on tuning seeds {cfg['tuning']['seeds']}): {chosen}; "
                    f"{plots.BAND_NOTE}")

    sweep = table[table["arm"] == "sweep"]
    fig, axes = plots.figure(ncols=len(datasets), width=4.6)
    for ax, ds in zip(axes[0], datasets):
        sns.lineplot(sweep[sweep["dataset"] == ds], x="lr", y="train_loss", hue="batch_size", marker="o",
                     palette="viridis", errorbar=plots.BAND, ax=ax)
        ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="final training loss (tuning seeds)",
               title=f"{ds}: the rate sweep, {cfg['epochs']} epochs")
    plots.save(fig, outdir, "lr_sweep", note=f"tuning seeds {cfg['tuning']['seeds']} (not the claim's); each batch "
                                             f"size's tuned runs use its lowest mean; diverged runs at their step-0 loss")


def _pair(part: pd.DataFrame, arm: str, bs: int, col: str) -> pd.Series:
    return part[(part["arm"] == arm) & (part["batch_size"] == bs)].sort_values("seed")[col]


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    out = []
    rates = chosen_rates(table)
    for ds, part in table.groupby("dataset", sort=False):
        sizes = sorted(part["batch_size"].unique())
        small, largest = sizes[0], sizes[-1]
        mine = rates[rates["dataset"] == ds].set_index("batch_size")
        lr_of = lambda b: f"{mine.loc[b, 'lr']:g}" if b in mine.index else "?"
        edge = [int(b) for b in mine.index[mine["at_edge"]]] if len(mine) else []
        edge_note = (f"edge_optimum: the tuned rate of batch {edge} is at the edge of the sweep {cfg['tuning']['lrs']}: "
                     "it may be under-tuned; ") if edge else ""
        lecture = stats.paired(_pair(part, "lecture", small, "train_acc"), _pair(part, "lecture", largest, "train_acc"))
        lo, hi = lecture.interval()
        updates = {b: int(_pair(part, "lecture", b, "updates").max()) for b in (small, largest)}
        uncontrolled = (f"the lecture's arm (same lr {cfg['optimizer']['lr']:g}, {updates[largest]} vs "
                        f"{updates[small]} updates): {lecture.value:.3f} [{lo:.3f}, {hi:.3f}]")
        # the tuned arm's budget is equal epochs (the slide's), not equal updates: say so in the claim
        budget = (f"budget: equal epochs (the same examples seen), so batch {largest} makes {updates[largest]} updates "
                  f"against {updates[small]}; at equal updates only the untuned equal_updates arm compares")
        # the batch sizes share seeds (same initialization, data order): paired over seeds
        for split in ("train", "val"):
            col = f"{split}_acc"
            name = "training" if split == "train" else "validation"
            out.append(stats.claim(
                ID, f"large_batch_lower_{split}_acc_{ds}",
                f"{ds}: after {cfg['epochs']} epochs, each batch size at its own tuned rate (B={small}: lr "
                f"{lr_of(small)}, B={largest}: lr {lr_of(largest)}), batch {largest} ends with lower {name} "
                f"accuracy than batch {small}",
                f"{col}(B={small}) - {col}(B={largest}), tuned arm",
                # validation accuracy: one draw of the test set, whose sampling error the interval adds
                stats.paired(_pair(part, "tuned", small, col), _pair(part, "tuned", largest, col),
                             test_n=test_size(ds) if split == "val" else None), kind="test",
                note=f"{edge_note}rates tuned on seeds {cfg['tuning']['seeds']}; {budget}; {uncontrolled}"))
        out.append(stats.claim(
            ID, f"large_batch_lower_train_acc_{ds}_same_lr",
            f"{ds}: the lecture's set-up (same lr, {cfg['epochs']} epochs): batch {largest} ends with lower "
            f"training accuracy than batch {small}",
            f"train_acc(B={small}) - train_acc(B={largest}), lecture arm", lecture, kind="demonstration",
            note=f"uncontrolled: batch {largest} makes {updates[largest]} updates against {updates[small]}, at a rate "
                 "chosen for neither; the verdict on the claim is the tuned arm's"))
        out.append(stats.claim(
            ID, f"large_batch_lower_train_acc_{ds}_equal_updates",
            f"{ds}: at an equal number of updates ({cfg['equal_updates']}) and the same lr, batch {largest} ends "
            f"with lower training accuracy than batch {small} (noisy small-batch updates help optimization)",
            f"train_acc(B={small}) - train_acc(B={largest}), equal-updates arm",
            stats.paired(_pair(part, "equal_updates", small, "train_acc"),
                         _pair(part, "equal_updates", largest, "train_acc")), kind="test",
            margin=float(cfg["no_gap_margin"]),
            note=f"batch {largest} sees {largest // small}x more examples per update; a gap within "
                 f"±{cfg['no_gap_margin']:g} ('equivalent') says the update count, not the noise, explains the tuned "
                 "arm's gap"))
    return out
