"""internal_covariate_shift: does BN work by reducing internal covariate shift? (lecture 3.7)

Santurkar et al. 2018, "How does batch normalization help optimization?": the same conv net
trained three ways with the same optimizer and learning rate: standard (no normalization), BN,
and "noisy BN" (models.NoisyBatchNorm: after every BN, noise whose mean and variance change every
step, drawn per example and activation as the paper describes, or one per-channel shift and
scale per step), so the next layer's input distribution moves every step. Every `measure_every`
steps the on_step hook measures, on the current batch and without disturbing training
(covariate_shift.py):
  - how far each layer's input distribution moved in one step (per-channel mean and std),
  - ICS per layer: ||G - G'||, ||G - G'|| / ||G|| and cos(G, G') of the layer's gradient before
    and after the preceding layers take their SGD update,
  - the landscape along the gradient: loss variation, gradient predictiveness, effective
    beta-smoothness over the step sizes `step_sizes`.
Training and validation accuracy are evaluated at the same steps twice: in eval mode with the
running statistics, and with BN statistics recomputed on the training set (batchnorm.py). The
accuracy claims read the recomputed ones: noisy BN's downstream running statistics were collected
on noisy activations, so its eval-mode accuracy collapses for a reason of measurement, not of
training. (The standard network has no statistics: both are the same.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import batchnorm, contract, covariate_shift, models, plots, sizes, stats, train
from ..context import Context, RunEnv
from ..contract import Claim, Settings
from ..records import RunRecord, RunResult

ID = "internal_covariate_shift"
SECTION = contract.COVARIATE_SHIFT
ORDER = 1
TITLE = "Standard, BN and noisy BN: ICS and the smoothness of the landscape"
HEADLINE = "landscape"

NORM = {"standard": "none", "batch": "batch", "noisy_batch": "noisy_batch"}
LABEL = {"standard": "standard", "batch": "BN", "noisy_batch": "noisy BN"}
LANDSCAPE = ("loss_variation", "gradient_predictiveness", "beta_smoothness")
# accuracy with BN statistics recomputed on the training set (what the claims read), and in eval
# mode with the running statistics (shown beside it: the uncontrolled measurement)
ACCURACY = ("train_acc_recomputed", "val_acc_recomputed", "train_acc", "val_acc")
NOISE = {"per_example": "per example and activation", "per_channel": "per channel, shared by the batch"}


def noise_note(cfg: dict) -> str:
    if cfg["noise"] == "per_channel":
        return (f"noisy BN: y = sigma x + mu per channel, mu ~ U(-{cfg['noise_shift']}, {cfg['noise_shift']}), "
                f"sigma ~ U(1, {cfg['noise_scale']}), new every step")
    return (f"noisy BN: y = x + e, e ~ N(mu, sigma^2) per example and activation; per channel mu ~ "
            f"U(-{cfg['noise_shift']}, {cfg['noise_shift']}), sigma ~ U(1, {cfg['noise_scale']}), new every step")


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    sizes.require_layers(cfg["model"], f"experiments.{ID}.model", "the layers whose input shift is measured")
    if cfg["optimizer"]["name"] != "sgd":  # said when the plan is made, not when the job starts
        raise ValueError(f"experiments.{ID}.optimizer.name: expected 'sgd' (ICS is measured with the plain SGD "
                         f"update) (got {cfg['optimizer']['name']!r})")
    out = []
    for variant in cfg["variants"]:
        model = {**cfg["model"], "norm": NORM[variant]}
        if variant == "noisy_batch":
            model.update(noise=cfg["noise"], noise_shift=float(cfg["noise_shift"]), noise_scale=float(cfg["noise_scale"]))
        for seed in ctx.seeds_for(cfg):
            out.append({"task": ID, "variant": variant, "dataset": cfg["dataset"], "model": model,
                        "optimizer": cfg["optimizer"], "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]),
                        "seed": int(seed), "log_every": int(cfg["measure_every"]), "eval_every": int(cfg["measure_every"]),
                        "step_sizes": [float(s) for s in cfg["step_sizes"]]})
    return out


def execute(settings: Settings, env: RunEnv) -> RunResult:
    from ..provenance import make_deterministic

    if settings["optimizer"]["name"] != "sgd":
        raise ValueError("internal_covariate_shift measures ICS with the plain SGD update: use optimizer sgd")
    data = env.dataset(settings["dataset"])
    make_deterministic(int(settings["seed"]))
    model = models.build(settings["model"], data.input_shape, data.num_classes)
    moments = covariate_shift.LayerInputMoments(model)
    loss = train.loss_fn("cross_entropy")
    lr = float(settings["optimizer"]["lr"])

    def on_step(model, opt, xb, yb, step) -> dict:
        cols = {f"shift_layer{k}": s for k, s in enumerate(moments.shift(), start=2)}
        moments.active = False  # the measurement copies share the recording hooks
        try:
            for k, (l2, cos, rel) in enumerate(covariate_shift.internal_covariate_shift(model, loss, xb, yb, lr), start=2):
                cols[f"ics_l2_layer{k}"], cols[f"ics_cos_layer{k}"], cols[f"ics_rel_layer{k}"] = l2, cos, rel
            cols.update(covariate_shift.landscape_along_gradient(model, loss, xb, yb, settings["step_sizes"]))
        finally:
            moments.active = True
        return cols

    # the standard network has no statistics to recompute: its eval-mode evaluation is the same (table())
    recomputed = (lambda model, step: batchnorm.recomputed_evaluation(model, data)) if batchnorm.bn_layers(model) else None
    return train.train(settings, data, env.device, model=model, on_step=on_step, on_eval=recomputed)


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    """Long table: kind = curve (one row per run and measured step) or layer (one per run, step and layer)."""
    rows = []
    for r in records:
        base = {"variant": r.settings["variant"], "seed": r.settings["seed"], "diverged": r.diverged, "run_id": r.run_id}
        m = r.metrics
        layers = sorted({int(c.rsplit("layer", 1)[1]) for c in m.columns if c.startswith("ics_l2_layer")})
        for rec in m.to_dict("records"):
            step = int(rec["step"])
            curve = {k: rec.get(k) for k in (*ACCURACY, "train_loss", *LANDSCAPE)}
            for k in ACCURACY[:2]:  # no BN (standard): nothing recomputed, eval mode is the same
                curve[k] = rec.get(k, rec.get(k.removesuffix("_recomputed")))
            rows.append({**base, "kind": "curve", "step": step, **curve})
            for k in layers:
                rows.append({**base, "kind": "layer", "step": step, "layer": k, "ics_l2": rec.get(f"ics_l2_layer{k}"),
                             "ics_rel": rec.get(f"ics_rel_layer{k}"), "ics_cos": rec.get(f"ics_cos_layer{k}"),
                             "shift": rec.get(f"shift_layer{k}")})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    import seaborn as sns

    table = table.assign(network=table["variant"].map(LABEL))
    order = [LABEL[v] for v in cfg["variants"]]
    note = f"{cfg['optimizer']['name']} lr {cfg['optimizer']['lr']}, batch {cfg['batch_size']}; {noise_note(cfg)}; {plots.BAND_NOTE}"
    curve = table[table["kind"] == "curve"]
    fig, axes = plots.figure(ncols=2, nrows=2, width=4.6, sharey=True, sharex=True)
    for i, (suffix, how) in enumerate((("_recomputed", "BN statistics recomputed on the training set"),
                                       ("", "eval mode: running statistics"))):
        for j, name in enumerate(("train", "val")):
            col, ax = f"{name}_acc{suffix}", axes[i][j]
            sns.lineplot(curve.dropna(subset=[col]), x="step", y=col, hue="network", hue_order=order,
                         errorbar=plots.BAND, ax=ax, legend=(i == 0 and j == 0))
            what = "training" if name == "train" else "validation"
            ax.set(xlabel="training step", ylabel="accuracy", title=f"{what} accuracy\n{how}")
    plots.save(fig, outdir, "accuracy", note=note + "; the claims read the recomputed row (noisy BN's running "
               "statistics were collected on noisy activations)")

    layer = table[table["kind"] == "layer"]
    layers = sorted(layer["layer"].dropna().astype(int).unique())
    panels = [("ics_l2", "ICS: ||G - G'||"), ("ics_cos", "ICS: cos(G, G')"), ("shift", "input shift in one step")]
    if "ics_rel" in layer:
        panels.insert(1, ("ics_rel", "ICS: ||G - G'|| / ||G||"))
    fig, axes = plots.figure(ncols=len(layers), nrows=len(panels), width=3.6, height=3.0, sharex=True)
    for j, k in enumerate(layers):
        part = layer[layer["layer"] == k]
        for i, (col, label) in enumerate(panels):
            ax = axes[i][j]
            sns.lineplot(part.dropna(subset=[col]), x="step", y=col, hue="network", hue_order=order,
                         errorbar=plots.BAND, ax=ax, legend=(i == 0 and j == 0))
            ax.set(xlabel="training step", ylabel=label if j == 0 else "", title=f"layer {k}")
            if col != "ics_cos":
                ax.set_yscale("log")
    plots.save(fig, outdir, "ics_per_layer", note=note + "; G' = layer's gradient after the preceding layers' SGD update")

    fig, axes = plots.figure(ncols=3, width=4.8)
    labels = {"loss_variation": ("loss variation", "max - min of L(w - eta g)"),
              "gradient_predictiveness": ("gradient predictiveness", "max ||grad L(w - eta g) - grad L(w)||"),
              "beta_smoothness": ("effective beta-smoothness", "max ||grad change|| / ||eta g||")}
    for ax, col in zip(axes[0], LANDSCAPE):
        sns.lineplot(curve.dropna(subset=[col]), x="step", y=col, hue="network", hue_order=order,
                     errorbar=plots.BAND, ax=ax, legend=(col == LANDSCAPE[0]))
        ax.set(yscale="log", xlabel="training step", ylabel=labels[col][1], title=labels[col][0])
    plots.save(fig, outdir, "landscape", note=note + f"; step sizes eta in {cfg['step_sizes']} along -g")


def _per_seed(part: pd.DataFrame, col: str) -> pd.Series:
    """One number per seed: the mean over measured steps (and layers) of a column."""
    return part.groupby("seed")[col].mean()


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    curve = table[table["kind"] == "curve"]
    layer = table[table["kind"] == "layer"]

    def seeds(part, variant, col):
        return _per_seed(part[part["variant"] == variant].dropna(subset=[col]), col)

    def diff(part, a, b, col):
        # the variants share seeds (same initialization and data order): paired over seeds
        x, y = seeds(part, a, col), seeds(part, b, col)
        common = x.index.intersection(y.index)
        return stats.paired(x[common], y[common])

    def eval_mode(a, b):
        """The same comparison in eval mode (running statistics): the uncontrolled number, shown."""
        e = diff(curve, a, b, "train_acc")
        lo, hi = e.interval()
        return f"eval mode (running statistics): {e.value:.3f} [{lo:.3f}, {hi:.3f}]"

    def accuracy(claim_id, statement, a, b, note="", **kw):
        return stats.claim(ID, claim_id, statement, f"mean training accuracy over evaluation steps, BN statistics "
                           f"recomputed on the training set: {LABEL[a]} - {LABEL[b]}",
                           diff(curve, a, b, "train_acc_recomputed"), kind="test",
                           note="; ".join(x for x in (note, eval_mode(a, b)) if x), **kw)

    tol, margin = float(cfg["match_tolerance"]), float(cfg["ics_margin"])
    out = [
        accuracy("noisy_bn_trains_as_well_as_bn",
                 f"Noisy BN trains about as well as BN (mean training accuracy over training at most {tol:.0%} lower)",
                 "batch", "noisy_batch", threshold=tol, direction="<", note=noise_note(cfg)),
        accuracy("noisy_bn_trains_better_than_standard", "Noisy BN trains better than the standard network",
                 "noisy_batch", "standard"),
        accuracy("bn_trains_better_than_standard", "BN trains better than the standard network", "batch", "standard"),
        stats.claim(ID, "noisy_bn_shifts_more", "Noisy BN's layer inputs shift more from step to step than BN's",
                    "one-step input shift (mean over layers and steps): noisy BN - BN", diff(layer, "noisy_batch", "batch", "shift"),
                    kind="demonstration", note="by construction: noise is injected after every BN layer"),
        # "BN does not reduce ICS" is a non-inferiority claim: BN's ICS is not lower than the
        # standard network's by more than a stated margin (not: BN's ICS is higher)
        stats.claim(ID, "bn_does_not_reduce_ics_cosine",
                    f"BN does not reduce ICS: with BN a layer's gradient stays no more aligned (cosine at most {margin:g} "
                    "higher) when the preceding layers update",
                    "cos(G, G') BN - standard (mean over layers and steps); non-inferiority margin", diff(layer, "batch", "standard", "ics_cos"),
                    threshold=margin, direction="<", kind="test",
                    note="not_reproduced: BN keeps the gradient more aligned by more than the margin (BN reduces ICS)"),
        stats.claim(ID, "bn_does_not_reduce_ics_l2",
                    f"BN does not reduce ICS: with BN a layer's gradient changes no less (relative l2 at most {margin:g} "
                    "lower) when the preceding layers update",
                    "||G - G'|| / ||G|| standard - BN (mean over layers and steps); non-inferiority margin",
                    diff(layer, "standard", "batch", "ics_rel"), threshold=margin, direction="<", kind="test",
                    note="relative to ||G||: the absolute l2 (figure) depends on the gradients' scale, which BN changes"),
    ]
    for col, what in (("loss_variation", "smaller loss variation along the gradient"),
                      ("gradient_predictiveness", "a smaller gradient change along the step (more predictive gradients)"),
                      ("beta_smoothness", "a smaller effective beta-smoothness")):
        out.append(stats.claim(ID, f"bn_smaller_{col}", f"BN smooths the landscape: {what} than the standard network",
                               f"{col} standard - BN (mean over measured steps)", diff(curve, "standard", "batch", col),
                               kind="test"))
    return out
