"""internal_covariate_shift: does BN work by reducing internal covariate shift? (lecture 3.7)

Santurkar et al. 2018, "How does batch normalization help optimization?": the same conv net
trained with plain SGD as a standard network (no normalization), with BN, and with "noisy BN"
(models.NoisyBatchNorm: after every BN, noise whose mean and variance change every step), so the
next layer's input distribution moves every step. Their central claim: noisy BN's layer inputs
shift far more than BN's, yet it trains about as well as BN.

How much noise decides that claim. Noise that destroys information (per-example noise larger than
the unit-variance signal) makes any network train worse, whatever ICS does; noise too weak to move
the inputs more than BN's own batch-to-batch wobble tests nothing. So the noise magnitude m (the
perturbation y - x scaled by m, models.NoisyBatchNorm) is a pre-declared dose-response,
`noise_levels` x `noise_modes` (per_example: the paper's description, y = x + m e; per_channel: one
affine distortion per channel shared by the batch, which moves the distribution and destroys no
information). At every level and in both modes two things are measured, not assumed:
  - the one-step shift of each layer's input (per-channel mean and std, covariate_shift.LayerInputMoments),
    as a ratio to BN's: the claim needs it at least `shift_factor` (lower 95% bound);
  - the signal-to-noise ratio of the noised activations about the clean BN output
    (covariate_shift.NoiseSNR), of the weakest layer at its lowest over training: the claim needs it
    to stay above `snr_floor` (lower 95% bound). Noise added after BN's affine map can be outgrown:
    the network learns a larger gamma and the SNR rises during training, so its mean over training
    would pass noise that drowned the signal while the network learned.
"Noisy BN trains as well as BN" is an equivalence (within `equivalence_margin`) stated per level,
applicable only at the levels that pass both conditions; the others keep their row, marked not
applicable, with the measurements that failed in its note.

Each arm (standard, BN, noisy BN at each mode and level) trains at its own learning rate, chosen by
trainfail.training.tuning from `tuning.lrs` on tuning seeds disjoint from the claims' (lowest mean final
training loss), as bn_speedup does: stage 0 the sweeps (plain training), stage 1 the claim runs (this
module's execute, at the sweep's choice). The criterion reads the training loss as the claims read
accuracy (CRITERION, pre-declared): for the arms with BN (BN, noisy BN) with BN statistics
recomputed on the training set (tuning's final_train_loss_recomputed; the sweep runs ask the
training loop for that evaluation, `eval_recomputed`), for the standard network (no statistics)
in eval mode, which is the same. (Until this criterion, every arm was scored on its eval-mode loss,
with running statistics, which lag the weights and, for noisy BN, were collected on noisy
activations: on tuning seed 100 the recomputed loss would have chosen 1.0 for BN where eval mode
chose 0.3.)

Noisy BN's noise is drawn from generators of the run's own, one per noisy layer, seeded from the
run's seed (models.NoisyBatchNorm, models.noise_seed_for), not from the process's global random
stream: a run's noise is a function of its seed alone, whatever else draws random numbers, and the
noisy arms' sweep runs train stacked like every other cell (stack.py). A protocol change: the same
noise distribution, other draws than before it (the global stream after the initialization), so
the noisy arms' numbers moved by their draw-to-draw noise.

Every `measure_every` steps, on the current batch and without disturbing training
(covariate_shift.py): the input shift per layer, noisy BN's SNR, and for the standard and BN arms
  - ICS per layer: ||G - G'||, ||G - G'|| / ||G|| and cos(G, G') of the layer's gradient before
    and after the preceding layers take their SGD update (at the arm's rate),
  - the landscape along the gradient: loss variation, gradient predictiveness, effective
    beta-smoothness over the step sizes `step_sizes`.
The landscape claims compare standard and BN at matched training loss (`matched_losses`: the first
measurement at which each run's training loss is at or below the level), not at the same step: at
the same step the faster network sits lower in a flatter part of the landscape.
Training and validation accuracy are evaluated at the same steps twice: in eval mode with the
running statistics, and with BN statistics recomputed on the training set (batchnorm.py). The
accuracy claims read the recomputed ones: noisy BN's downstream running statistics were collected
on noisy activations, so its eval-mode accuracy collapses for a reason of measurement, not of
training. (The standard network has no statistics: both are the same.)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.measure import covariate_shift
from trainfail.training import batchnorm, models, sizes, train, tuning
from trainfail.training.context import Context, RunEnv
from trainfail.core.contract import Claim, Settings, labelled
from trainfail.core.run_record import RunRecord, RunResult

ID = "internal_covariate_shift"
SECTION = contract.COVARIATE_SHIFT
ORDER = 1
TITLE = "Standard, BN and noisy BN: ICS, the noise's dose-response and the smoothness of the landscape"
HEADLINE = "dose_response"

# The claim that decides Santurkar et al.'s argument by its mechanism: noise of the paper's kind
# (per example and activation) at half the paper-style magnitude, where by construction it moves
# the layer inputs every step (shift) while keeping more signal than noise (SNR about 2.5 on a
# unit-variance BN output), so that "trains as well as BN" tests ICS, not information loss. Its
# shift ratio and SNR are measured and gate it like every level's; m = 1 (SNR below 1) and the
# per-channel mode are the dose-response around it.
PRIMARY = "noisy_bn_trains_as_well_as_bn_per_example_m0.5"

NORM = {"standard": "none", "batch": "batch", "noisy_batch": "noisy_batch"}
LABEL = {"standard": "standard", "batch": "BN"}
LANDSCAPE = ("loss_variation", "gradient_predictiveness", "beta_smoothness")
# accuracy with BN statistics recomputed on the training set (what the claims read), and in eval
# mode with the running statistics (shown beside it: the uncontrolled measurement)
ACCURACY = ("train_acc_recomputed", "val_acc_recomputed", "train_acc", "val_acc")
LOSS = "train_loss_recomputed"  # the training loss the landscape is matched at
NOISE = {"per_example": "per example and activation", "per_channel": "per channel, shared by the batch"}
# "trains as well": tune for the training loss, read as the claims read accuracy: with BN statistics
# recomputed on the training set for the arms with BN (the standard network has none: eval mode is the same)
CRITERION = {"standard": "final_train_loss", "batch": "final_train_loss_recomputed",
             "noisy_batch": "final_train_loss_recomputed"}


def level_name(noise: str, level: float) -> str:
    """A noisy arm's name, and the suffix of its claim ids: per_example_m0.5."""
    return f"{noise}_m{float(level):g}"


def arms(cfg: dict) -> list[dict]:
    """Every arm: its name, the network (variant), and for noisy BN its noise mode and magnitude."""
    out = [{"arm": v, "variant": v, "noise": "", "level": math.nan} for v in ("standard", "batch")]
    out += [{"arm": f"noisy_{level_name(mode, m)}", "variant": "noisy_batch", "noise": mode, "level": float(m)}
            for mode in cfg["noise_modes"] for m in cfg["noise_levels"]]
    return out


def arm_label(arm: dict) -> str:
    return LABEL.get(arm["arm"], f"noisy BN {arm['noise'].replace('_', '-')} m={arm['level']:g}")


def noise_note(cfg: dict) -> str:
    s, k = cfg["noise_shift"], cfg["noise_scale"]
    return (f"noisy BN at magnitude m: per_example y = x + m e, e ~ N(mu, sigma^2) per example and activation; "
            f"per_channel y = (1 + m (sigma - 1)) x + m mu per channel; mu ~ U(-{s}, {s}), sigma ~ U(1, {k}) per "
            "channel, new every step")


def _base(cfg: dict, arm: dict) -> dict:
    """An arm's plain training settings without rate and seed (tuning adds them): the sweep's runs;
    the claim runs add the measurements (execute)."""
    model = {**cfg["model"], "norm": NORM[arm["variant"]]}
    if arm["variant"] == "noisy_batch":
        model.update(noise=arm["noise"], noise_shift=float(cfg["noise_shift"]), noise_scale=float(cfg["noise_scale"]),
                     noise_magnitude=float(arm["level"]))
    # the sweep reads only the final evaluation (and step 0's): with BN, its training loss with
    # statistics recomputed (CRITERION), which the loop then evaluates (tuning.base_for)
    return tuning.base_for({"dataset": cfg["dataset"], "model": model, "optimizer": dict(cfg["optimizer"]),
                            "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]), "eval_points": 2,
                            "log_points": 2}, CRITERION[arm["variant"]])


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    sizes.require_layers(cfg["model"], f"experiments.{ID}.model", "the layers whose input shift is measured")
    if cfg["optimizer"]["name"] != "sgd":  # said when the plan is made, not when the job starts
        raise ValueError(f"experiments.{ID}.optimizer.name: expected 'sgd' (ICS is measured with the plain SGD "
                         f"update) (got {cfg['optimizer']['name']!r})")
    every, evals = int(cfg["measure_every"]), int(cfg["eval_every"])
    if evals % every:
        raise ValueError(f"experiments.{ID}.eval_every: expected a multiple of measure_every ({every}): the standard "
                         f"and BN arms evaluate at every measurement, and the claims read the common grid (got {evals})")
    seeds = [int(s) for s in ctx.seeds_for(cfg)]
    out = []
    for arm in arms(cfg):
        # plan refuses tuning seeds that are also claim seeds; its tuned runs are not used: the claim
        # runs are this module's (they measure along the way) and name the sweep
        plan = tuning.plan(_base(cfg, arm), cfg["tuning"]["lrs"], cfg["tuning"]["seeds"], seeds, CRITERION[arm["variant"]])
        sweep = tuning.sweep_of(plan[-1])
        labels = {k: arm[k] for k in ("arm", "variant", "noise")} | {"level": None if math.isnan(arm["level"]) else arm["level"]}
        out += [labelled(r, kind="sweep", **labels) for r in plan if not tuning.stage(r)]
        # ICS and the landscape are claimed for standard and BN only: the noisy arms measure the
        # shift and the SNR (the gate) and train (the claim)
        landscape = arm["variant"] != "noisy_batch"
        out += [labelled({"task": ID, "seed": seed, "sweep": sweep, "measure_every": every,
                          "eval_every": every if landscape else evals, "step_sizes": [float(v) for v in cfg["step_sizes"]],
                          "landscape": landscape}, kind="run", **labels) for seed in seeds]
    return out


def stage(settings: Settings) -> int:
    """The claim runs train at their sweep's rate: stage 1, after the sweeps."""
    return 1 if settings.get("task") == ID else 0


def execute(settings: Settings, env: RunEnv) -> RunResult:
    from trainfail.core.provenance import make_deterministic

    base = settings["sweep"]["base"]
    if base["optimizer"]["name"] != "sgd":
        raise ValueError("internal_covariate_shift measures ICS with the plain SGD update: use optimizer sgd")
    choice = tuning.env_choice(settings, env)  # the sweep's choice: an input of this run's shard
    lr = float(choice["lr"])
    plain = tuning.with_lr(base, lr, settings["seed"])
    plain.pop("task")
    for key in ("eval_points", "log_points"):
        plain.pop(key, None)
    plain["log_every"], plain["eval_every"] = int(settings["measure_every"]), int(settings["eval_every"])
    data = env.dataset(plain["dataset"])
    make_deterministic(int(plain["seed"]))
    model = models.build(plain["model"], data.input_shape, data.num_classes, seed=int(plain["seed"]))
    moments, noise = covariate_shift.LayerInputMoments(model), covariate_shift.NoiseSNR(model)
    loss = train.loss_fn("cross_entropy")
    every, forwards = int(settings["measure_every"]), [0]

    def record_when_read(module, inputs) -> None:
        """The input moments are read at the measured steps (multiples of measure_every) against the
        step before: recorded at the training forwards of those two steps only (the same numbers as
        recording every step, without the per-step cost)."""
        if module is model and module.training:  # not a measuring copy (it shares the hooks)
            step = forwards[0]
            moments.active = step % every == 0 or (step + 1) % every == 0
            forwards[0] += 1

    model.register_forward_pre_hook(record_when_read)

    def on_step(model, opt, xb, yb, step) -> dict:
        cols = {f"shift_layer{k}": s for k, s in enumerate(moments.shift(), start=2)}
        cols.update({f"snr_noisy{k}": s for k, s in enumerate(noise.snr(), start=1)})
        if not settings["landscape"]:
            return cols
        moments.active = noise.active = False  # the measurement copies share the recording hooks
        try:
            for k, (l2, cos, rel) in enumerate(covariate_shift.internal_covariate_shift(model, loss, xb, yb, lr), start=2):
                cols[f"ics_l2_layer{k}"], cols[f"ics_cos_layer{k}"], cols[f"ics_rel_layer{k}"] = l2, cos, rel
            cols.update(covariate_shift.landscape_along_gradient(model, loss, xb, yb, settings["step_sizes"]))
        finally:
            moments.active = noise.active = True
        return cols

    # the loop evaluates with recomputed statistics too (eval_recomputed); the standard network has no
    # statistics to recompute: its eval-mode evaluation is the same (table()); the noisy arms' claims
    # read the training set only
    plain.pop("eval_recomputed", None)
    if batchnorm.bn_layers(model):
        plain["eval_recomputed"] = ["train", "val"] if settings["landscape"] else ["train"]
    result = train.train(plain, data, env.device, model=model, on_step=on_step)
    return tuning.with_choice(result, choice)  # summary: lr; meta.json: the choice (a changed one retrains)


def _labels(r: RunRecord) -> dict:
    lv = r.labels.get("level")
    return {"arm": r.labels["arm"], "variant": r.labels["variant"], "noise": r.labels["noise"],
            "level": math.nan if lv is None else float(lv)}


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    """Long table: kind = sweep (one row per sweep run: its rate and score, whether chosen), curve
    (one row per claim run and measured step) or layer (one per claim run, step and layer)."""
    rows, sweeps_done = [], set()
    for r in records:
        if r.labels["kind"] != "run":
            continue
        arm = _labels(r)
        # the rate the run was trained at: its sweep's choice file, refused if it chose again since
        lr = tuning.check(r, ctx.results)
        if arm["arm"] not in sweeps_done:
            sweeps_done.add(arm["arm"])
            choice = tuning.read_choice(ctx.results, tuning.sweep_of(r.settings))
            rows += [{**arm, "kind": "sweep", "lr": row["lr"], "seed": row["seed"], "score": row["score"],
                      "diverged": row["diverged"], "chosen": row["lr"] == lr}
                     for row in tuning.choice_scores(choice).to_dict("records")]
        base = {**arm, "seed": r.settings["seed"], "lr": lr, "diverged": r.diverged, "run_id": r.run_id}
        m = r.metrics
        layers = sorted({int(c.rsplit("layer", 1)[1]) for c in m.columns if c.startswith("shift_layer")})
        noisy = [c for c in m.columns if c.startswith("snr_noisy")]
        for rec in m.to_dict("records"):
            step = int(rec["step"])
            curve = {k: rec.get(k) for k in (*ACCURACY, "train_loss", LOSS, *LANDSCAPE)}
            for k in (*ACCURACY[:2], LOSS):  # no BN (standard): nothing recomputed, eval mode is the same
                if curve[k] is None or (isinstance(curve[k], float) and math.isnan(curve[k])):
                    curve[k] = rec.get(k.replace("_recomputed", ""))
            shifts = [rec.get(f"shift_layer{k}") for k in layers]
            snrs = [rec.get(c) for c in noisy]
            curve["shift"] = float(np.nanmean(shifts)) if any(_finite(v) for v in shifts) else math.nan
            # the weakest noisy layer's SNR: the condition holds for the network when it holds for each
            curve["snr"] = float(np.nanmin(snrs)) if any(_finite(v) for v in snrs) else math.nan
            rows.append({**base, "kind": "curve", "step": step, **curve})
            for k in layers:
                rows.append({**base, "kind": "layer", "step": step, "layer": k, "ics_l2": rec.get(f"ics_l2_layer{k}"),
                             "ics_rel": rec.get(f"ics_rel_layer{k}"), "ics_cos": rec.get(f"ics_cos_layer{k}"),
                             "shift": rec.get(f"shift_layer{k}")})
    return pd.DataFrame(rows)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _per_seed(part: pd.DataFrame, col: str) -> pd.Series:
    """One number per seed: the mean over measured steps (and layers) of a column."""
    return part.dropna(subset=[col]).groupby("seed")[col].mean()


def _accuracy(part: pd.DataFrame, cfg: dict, col: str = "train_acc_recomputed") -> pd.Series:
    """One number per seed: the mean accuracy over the evaluations every `eval_every` steps (the grid
    every arm evaluates on: the standard and BN arms evaluate more often)."""
    return _per_seed(part[part["step"] % int(cfg["eval_every"]) == 0], col)


def at_matched_loss(curve: pd.DataFrame, col: str, level: float) -> pd.Series:
    """Per seed: `col` at the first measured step whose training loss (statistics recomputed) is at
    or below `level` (a seed that never gets there is left out)."""
    out = {}
    for seed, c in curve.dropna(subset=[LOSS, col]).sort_values("step").groupby("seed"):
        hit = c[c[LOSS] <= level]
        if len(hit):
            out[seed] = float(hit[col].iloc[0])
    return pd.Series(out, dtype=float)


def dose_response(table: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Per noisy arm (mode and level): the shift ratio to BN (median over seeds, with its interval),
    the weakest layer's SNR at its lowest over training (mean over seeds, with its interval), whether the claim applies there
    (both lower bounds past their thresholds), and the accuracy difference to BN (recomputed)."""
    curve = table[table["kind"] == "curve"]
    bn_shift = _per_seed(curve[curve["arm"] == "batch"], "shift")
    bn_acc = _accuracy(curve[curve["arm"] == "batch"], cfg)
    rows = []
    for arm in [a for a in arms(cfg) if a["variant"] == "noisy_batch"]:
        part = curve[curve["arm"] == arm["arm"]]
        shift = stats.median_ratio(_per_seed(part, "shift"), bn_shift)
        # "stays above": the lowest over training (the network grows BN's gamma and outgrows the noise)
        snr = stats.mean(part.dropna(subset=["snr"]).groupby("seed")["snr"].min())
        acc = _accuracy(part, cfg)
        common = acc.index.intersection(bn_acc.index)
        diff = stats.paired(bn_acc[common], acc[common])
        (s_lo, s_hi), (n_lo, n_hi), (d_lo, d_hi) = shift.interval(), snr.interval(), diff.interval()
        ok_shift = bool(np.isfinite(s_lo) and s_lo >= float(cfg["shift_factor"]))
        ok_snr = bool(np.isfinite(n_lo) and n_lo > float(cfg["snr_floor"]))
        rows.append({"noise": arm["noise"], "level": arm["level"], "arm": arm["arm"],
                     "lr": float(part["lr"].iloc[0]) if len(part) else math.nan,
                     "shift_ratio": shift.value, "shift_ratio_lo": s_lo, "shift_ratio_hi": s_hi,
                     "snr": snr.value, "snr_lo": n_lo, "snr_hi": n_hi,
                     "train_acc_recomputed": float(acc.mean()) if len(acc) else math.nan,
                     "bn_minus_noisy": diff.value, "bn_minus_noisy_lo": d_lo, "bn_minus_noisy_hi": d_hi,
                     "shift_ok": ok_shift, "snr_ok": ok_snr, "applicable": ok_shift and ok_snr})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    curve = table[table["kind"] == "curve"]
    lrs = curve.groupby("arm")["lr"].first()
    label = {a["arm"]: f"{arm_label(a)} (lr {lrs[a['arm']]:.3g})" for a in arms(cfg) if a["arm"] in lrs}
    note = (f"{cfg['optimizer']['name']}, each arm at its tuned rate (from {cfg['tuning']['lrs']} on tuning seeds "
            f"{cfg['tuning']['seeds']}), batch {cfg['batch_size']}; {noise_note(cfg)}; {plots.BAND_NOTE}")

    # the dose-response: per mode, against the magnitude, the shift ratio, the SNR and the accuracy
    dose = dose_response(table, cfg)
    if len(dose):
        modes = list(dict.fromkeys(dose["noise"]))
        colors = dict(zip(modes, plots.palette(len(modes))))
        fig, axes = plots.figure(ncols=3, width=4.2, height=3.2)
        panels = (("shift_ratio", "input shift / BN's (median)", float(cfg["shift_factor"]), "log"),
                  ("snr", "SNR of the noised activations\n(weakest layer, lowest over training)", float(cfg["snr_floor"]), "log"),
                  ("bn_minus_noisy", "training accuracy: BN - noisy BN", float(cfg["equivalence_margin"]), "linear"))
        for ax, (col, title, line, scale) in zip(axes[0], panels):
            for mode in modes:
                d = dose[dose["noise"] == mode].sort_values("level")
                err = np.vstack([d[col] - d[f"{col}_lo"], d[f"{col}_hi"] - d[col]]).clip(min=0)
                ax.errorbar(d["level"], d[col], yerr=err, marker="o", capsize=3, color=colors[mode],
                            label=mode.replace("_", "-"))
                applies = d[d["applicable"].astype(bool)]
                ax.scatter(applies["level"], applies[col], s=90, facecolors="none", edgecolors=colors[mode])
            ax.axhline(line, color="0.4", ls=":")
            if col == "bn_minus_noisy":
                ax.axhline(-line, color="0.4", ls=":")
            ax.set(xscale="log", yscale=scale, xlabel="noise magnitude m", title=title)
        axes[0][0].legend()
        plots.save(fig, outdir, "dose_response",
                   note=note + f"; dotted: the claim's thresholds (shift ratio >= {cfg['shift_factor']}, SNR > "
                   f"{cfg['snr_floor']}, equivalence margin +-{cfg['equivalence_margin']}); circled: levels where the "
                   "claim applies (both lower bounds past their thresholds); shift ratio: bootstrap interval of the median "
                   "ratio; accuracy: mean over the evaluations, statistics recomputed on the training set")

    order = [label[a["arm"]] for a in arms(cfg) if a["arm"] in label]
    shown = curve.assign(network=curve["arm"].map(label))
    net_colors = plots.colors(order)  # standard and BN in their colours (plots.NORMALIZATION_COLORS)
    fig, axes = plots.figure(ncols=2, nrows=2, width=4.6, sharey=True, sharex=True)
    for i, (suffix, how) in enumerate((("_recomputed", "statistics recomputed"), ("", "eval mode"))):
        for j, name in enumerate(("train", "val")):
            col, ax = f"{name}_acc{suffix}", axes[i][j]
            sns.lineplot(shown.dropna(subset=[col]), x="step", y=col, hue="network", hue_order=order, palette=net_colors,
                         errorbar=plots.BAND, ax=ax, legend=(i == 0 and j == 0))
            what = "training" if name == "train" else "validation"
            ax.set(xlabel="training step", ylabel="accuracy", title=f"{what} accuracy, {how}")
    for ax in axes.flat:  # after every panel: they share the y axis
        plots.bound(ax, 0, 1)  # an accuracy's interval stays within [0, 1]
    plots.figure_legend(fig, axes[0][0])
    plots.save(fig, outdir, "accuracy", note=note + "; top: BN statistics recomputed on the training set, the claims' "
               "row; bottom: eval mode, running statistics (noisy BN's were collected on noisy activations)")

    pair = ["standard", "batch"]
    layer = table[(table["kind"] == "layer") & table["arm"].isin(pair)].dropna(subset=["ics_l2"])
    layer = layer.assign(network=layer["arm"].map(LABEL))
    layers = sorted(layer["layer"].dropna().astype(int).unique())
    # one panel per measure, the layers along x: each seed's mean over the measured steps, then the
    # mean and interval over seeds (16 panels of noisy curves over time said less than these four)
    panels = [("ics_l2", "ICS: ||G - G'||", "log"), ("ics_rel", "ICS: ||G - G'|| / ||G||", "log"),
              ("ics_cos", "ICS: cos(G, G')", "linear"), ("shift", "input shift in one step", "log")]
    if layers:
        per_seed = (layer.groupby(["network", "layer", "seed"])[[c for c, _, _ in panels]].mean().reset_index()
                    .assign(layer=lambda d: d["layer"].astype(int)))
        fig, axes = plots.figure(ncols=len(panels), width=3.4, height=3.2)
        for ax, (col, name, scale) in zip(axes[0], panels):
            sns.pointplot(per_seed.dropna(subset=[col]), x="layer", y=col, hue="network", hue_order=["standard", "BN"],
                          palette=plots.colors(["standard", "BN"]), order=layers, errorbar=plots.BAND, capsize=0.15,
                          dodge=0.3, ax=ax, legend=col == panels[0][0])
            if col == "ics_cos":
                plots.bound(ax, -1, 1)  # a cosine stays within [-1, 1]
            ax.set(xlabel="layer", ylabel="", yscale=scale, title=name)
        plots.figure_legend(fig, axes[0][0], title="network")
        plots.save(fig, outdir, "ics_per_layer", note=note + "; each seed's mean over the measured training steps; "
                   "G' = layer's gradient after the preceding layers' SGD update at the arm's rate")

    # the landscape against the training loss (matched loss), not against the step
    land = curve[curve["arm"].isin(pair)].assign(network=lambda d: d["arm"].map(LABEL)).dropna(subset=[LOSS])
    fig, axes = plots.figure(ncols=3, width=4.8)
    labels = {"loss_variation": ("loss variation", "max - min of L(w - eta g)"),
              "gradient_predictiveness": ("gradient predictiveness", "max ||grad L(w - eta g) - grad L(w)||"),
              "beta_smoothness": ("effective beta-smoothness", "max ||grad change|| / ||eta g||")}
    for ax, col in zip(axes[0], LANDSCAPE):
        sns.scatterplot(land.dropna(subset=[col]), x=LOSS, y=col, hue="network", hue_order=["standard", "BN"],
                        palette=plots.colors(["standard", "BN"]), ax=ax, legend=(col == LANDSCAPE[0]), s=14, alpha=0.7)
        for lv in cfg["matched_losses"]:
            ax.axvline(float(lv), color="0.5", ls=":")
        ax.set(xscale="log", yscale="log", xlabel="training loss (statistics recomputed)", ylabel=labels[col][1],
               title=labels[col][0])
        ax.invert_xaxis()
    plots.save(fig, outdir, "landscape", note=note + f"; step sizes eta in {cfg['step_sizes']} along -g; one point "
               f"per run and measurement; dotted: the matched losses {cfg['matched_losses']} (the claims read each "
               "run's first measurement at or below each)")


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    curve = table[table["kind"] == "curve"]
    layer = table[table["kind"] == "layer"]

    def diff(part, a, b, col, per_seed=_per_seed):
        # the arms share seeds (same initialization and data order): paired over seeds
        x, y = per_seed(part[part["arm"] == a], col), per_seed(part[part["arm"] == b], col)
        common = x.index.intersection(y.index)
        return stats.paired(x[common], y[common])

    acc = lambda part, col: _accuracy(part, cfg, col)

    def eval_mode(a, b):
        """The same comparison in eval mode (running statistics): the uncontrolled number, shown."""
        e = diff(curve, a, b, "train_acc", acc)
        lo, hi = e.interval()
        return f"eval mode (running statistics): {e.value:.3f} [{lo:.3f}, {hi:.3f}]"

    def accuracy(claim_id, statement, a, b, note="", **kw):
        return stats.claim(ID, claim_id, statement, f"mean training accuracy over evaluation steps, BN statistics "
                           f"recomputed on the training set: {a} - {b}", diff(curve, a, b, "train_acc_recomputed", acc),
                           kind="test", note="; ".join(x for x in (note, eval_mode(a, b)) if x), **kw)

    margin, ics_margin = float(cfg["equivalence_margin"]), float(cfg["ics_margin"])
    factor, floor = float(cfg["shift_factor"]), float(cfg["snr_floor"])
    out = [accuracy("bn_trains_better_than_standard", "BN trains better than the standard network", "batch", "standard")]
    for d in dose_response(table, cfg).to_dict("records"):
        name, arm = level_name(d["noise"], d["level"]), d["arm"]
        where = f"noisy BN ({NOISE[d['noise']]}, magnitude m = {d['level']:g})"
        part = curve[curve["arm"].isin([arm, "batch"])]
        bn_shift, shift = _per_seed(part[part["arm"] == "batch"], "shift"), _per_seed(part[part["arm"] == arm], "shift")
        out.append(stats.claim(ID, f"noisy_bn_shifts_more_{name}",
                               f"{where}: the layer inputs shift at least {factor:g}x as much from step to step as BN's",
                               "one-step input shift (mean over layers and steps), median over seeds: noisy BN / BN",
                               stats.median_ratio(shift, bn_shift), threshold=factor, direction=">", kind="demonstration",
                               note="set by the noise's magnitude; with the SNR it decides whether the claims at this "
                                    "level apply"))
        gate = (f"shift ratio {d['shift_ratio']:.3g} [{d['shift_ratio_lo']:.3g}, {d['shift_ratio_hi']:.3g}] "
                f"(needs >= {factor:g}), SNR {d['snr']:.3g} [{d['snr_lo']:.3g}, {d['snr_hi']:.3g}] (needs > {floor:g}), "
                f"lr {d['lr']:.3g}")
        why = ("" if d["applicable"] else "not applicable here: " + " and ".join(
            x for x, ok in (("the shift does not clearly exceed BN's", d["shift_ok"]),
                            ("the noise drowns the signal (SNR not above the floor)", d["snr_ok"])) if not ok) + "; ")
        out.append(accuracy(f"noisy_bn_trains_as_well_as_bn_{name}",
                            f"{where}: noisy BN trains as well as BN (mean training accuracy within {margin:g})",
                            "batch", arm, note=why + gate, threshold=margin, direction="within",
                            applicable=bool(d["applicable"])))
        out.append(accuracy(f"noisy_bn_trains_better_than_standard_{name}",
                            f"{where}: noisy BN trains better than the standard network", arm, "standard",
                            note=why + gate, applicable=bool(d["applicable"])))
    out += [
        # "BN does not reduce ICS" is a non-inferiority claim: BN's ICS is not lower than the
        # standard network's by more than a stated margin (not: BN's ICS is higher)
        stats.claim(ID, "bn_does_not_reduce_ics_cosine",
                    f"BN does not reduce ICS: with BN a layer's gradient stays no more aligned (cosine at most "
                    f"{ics_margin:g} higher) when the preceding layers update",
                    "cos(G, G') BN - standard (mean over layers and steps); non-inferiority margin",
                    diff(layer, "batch", "standard", "ics_cos"), threshold=ics_margin, direction="<", kind="test",
                    note="not_reproduced: BN keeps the gradient more aligned by more than the margin (BN reduces ICS)"),
        stats.claim(ID, "bn_does_not_reduce_ics_l2",
                    f"BN does not reduce ICS: with BN a layer's gradient changes no less (relative l2 at most "
                    f"{ics_margin:g} lower) when the preceding layers update",
                    "||G - G'|| / ||G|| standard - BN (mean over layers and steps); non-inferiority margin",
                    diff(layer, "standard", "batch", "ics_rel"), threshold=ics_margin, direction="<", kind="test",
                    note="relative to ||G||: the absolute l2 (figure) depends on the gradients' scale, which BN changes"),
    ]
    std, bn = curve[curve["arm"] == "standard"], curve[curve["arm"] == "batch"]
    for level in cfg["matched_losses"]:
        level = float(level)
        for col, what in (("loss_variation", "smaller loss variation along the gradient"),
                          ("gradient_predictiveness", "a smaller gradient change along the step (more predictive gradients)"),
                          ("beta_smoothness", "a smaller effective beta-smoothness")):
            a, b = at_matched_loss(std, col, level), at_matched_loss(bn, col, level)
            common = a.index.intersection(b.index)
            n_std, n_bn = len(a), len(b)
            out.append(stats.claim(ID, f"bn_smaller_{col}_loss{level:g}",
                                   f"BN smooths the landscape: {what} than the standard network, at training loss {level:g}",
                                   f"{col} standard - BN at each run's first measurement with training loss <= {level:g}, "
                                   "paired by seed", stats.paired(a[common], b[common]), kind="test",
                                   note=f"runs reaching the loss: standard {n_std}, BN {n_bn} (of "
                                        f"{std['seed'].nunique()}, {bn['seed'].nunique()})"))
    return out
