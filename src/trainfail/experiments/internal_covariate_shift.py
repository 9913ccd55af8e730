"""internal_covariate_shift: does BN work by reducing internal covariate shift? (lecture 3.7)

Santurkar et al. 2018, "How does batch normalization help optimization?": the same conv net
trained three ways with the same optimizer and learning rate: standard (no normalization), BN,
and "noisy BN" (models.NoisyBatchNorm: after every BN a per-channel shift and scale drawn anew each
step, so the next layer's input distribution moves every step). Every `measure_every` steps the
on_step hook measures, on the current batch and without disturbing training
(covariate_shift.py):
  - how far each layer's input distribution moved in one step (per-channel mean and std),
  - ICS per layer: ||G - G'|| and cos(G, G') of the layer's gradient before and after the
    preceding layers take their SGD update,
  - the landscape along the gradient: loss variation, gradient predictiveness, effective
    beta-smoothness over the step sizes `step_sizes`.
Training and validation accuracy are evaluated at the same steps.
"""

from __future__ import annotations

import pandas as pd

from .. import covariate_shift, models, plots, stats, train
from ..train import RunResult

ID = "internal_covariate_shift"
SECTION = "3.7 Internal covariate shift?"
TITLE = "Standard, BN and noisy BN: ICS and the smoothness of the landscape"

NORM = {"standard": "none", "batch": "batch", "noisy_batch": "noisy_batch"}
LABEL = {"standard": "standard", "batch": "BN", "noisy_batch": "noisy BN"}
LANDSCAPE = ("loss_variation", "gradient_predictiveness", "beta_smoothness")


def runs(cfg: dict, ctx) -> list[dict]:
    out = []
    for variant in cfg["variants"]:
        model = {**cfg["model"], "norm": NORM[variant]}
        if variant == "noisy_batch":
            model.update(noise_shift=float(cfg["noise_shift"]), noise_scale=float(cfg["noise_scale"]))
        for seed in ctx.seeds_for(cfg):
            out.append({"task": ID, "variant": variant, "dataset": cfg["dataset"], "model": model,
                        "optimizer": cfg["optimizer"], "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]),
                        "seed": int(seed), "log_every": int(cfg["measure_every"]), "eval_every": int(cfg["measure_every"]),
                        "step_sizes": [float(s) for s in cfg["step_sizes"]]})
    return out


def execute(settings: dict, env) -> RunResult:
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
            for k, (l2, cos) in enumerate(covariate_shift.internal_covariate_shift(model, loss, xb, yb, lr), start=2):
                cols[f"ics_l2_layer{k}"], cols[f"ics_cos_layer{k}"] = l2, cos
            cols.update(covariate_shift.landscape_along_gradient(model, loss, xb, yb, settings["step_sizes"]))
        finally:
            moments.active = True
        return cols

    return train.train(settings, data, env.device, model=model, on_step=on_step)


def table(cfg: dict, records, ctx) -> pd.DataFrame:
    """Long table: kind = curve (one row per run and measured step) or layer (one per run, step and layer)."""
    rows = []
    for r in records:
        base = {"variant": r.settings["variant"], "seed": r.settings["seed"], "diverged": r.diverged, "run_id": r.run_id}
        m = r.metrics
        layers = sorted({int(c.rsplit("layer", 1)[1]) for c in m.columns if c.startswith("ics_l2_layer")})
        for rec in m.to_dict("records"):
            step = int(rec["step"])
            curve = {k: rec.get(k) for k in ("train_acc", "val_acc", "train_loss", *LANDSCAPE)}
            rows.append({**base, "kind": "curve", "step": step, **curve})
            for k in layers:
                rows.append({**base, "kind": "layer", "step": step, "layer": k, "ics_l2": rec.get(f"ics_l2_layer{k}"),
                             "ics_cos": rec.get(f"ics_cos_layer{k}"), "shift": rec.get(f"shift_layer{k}")})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir, ctx) -> None:
    import seaborn as sns

    table = table.assign(network=table["variant"].map(LABEL))
    order = [LABEL[v] for v in cfg["variants"]]
    note = (f"{cfg['optimizer']['name']} lr {cfg['optimizer']['lr']}, batch {cfg['batch_size']}; noisy BN: shift U(-{cfg['noise_shift']}, "
            f"{cfg['noise_shift']}), scale U(1, {cfg['noise_scale']}) per channel, new every step; mean and 95% t-interval over seeds")
    curve = table[table["kind"] == "curve"]
    fig, axes = plots.figure(ncols=2, width=4.6, sharey=True)
    for ax, col, name in zip(axes[0], ("train_acc", "val_acc"), ("training", "validation")):
        sns.lineplot(curve.dropna(subset=[col]), x="step", y=col, hue="network", hue_order=order,
                     errorbar=plots.BAND, ax=ax)
        ax.set(xlabel="training step", ylabel=f"{name} accuracy", title=f"{name} accuracy")
    plots.save(fig, outdir, "accuracy", note=note)

    layer = table[table["kind"] == "layer"]
    layers = sorted(layer["layer"].dropna().astype(int).unique())
    fig, axes = plots.figure(ncols=len(layers), nrows=3, width=3.6, height=3.0, sharex=True)
    for j, k in enumerate(layers):
        part = layer[layer["layer"] == k]
        for i, (col, label) in enumerate((("ics_l2", "ICS: ||G - G'||"), ("ics_cos", "ICS: cos(G, G')"),
                                          ("shift", "input shift in one step"))):
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


def claims(table: pd.DataFrame, cfg: dict, ctx) -> list[dict]:
    curve = table[table["kind"] == "curve"]
    layer = table[table["kind"] == "layer"]

    def seeds(part, variant, col):
        return _per_seed(part[part["variant"] == variant].dropna(subset=[col]), col)

    def diff(part, a, b, col):
        # the variants share seeds (same initialization and data order): paired over seeds
        x, y = seeds(part, a, col), seeds(part, b, col)
        common = x.index.intersection(y.index)
        return stats.paired(x[common], y[common])

    tol = float(cfg["match_tolerance"])
    out = [
        stats.claim(ID, "noisy_bn_trains_as_well_as_bn",
                      f"Noisy BN trains about as well as BN (mean training accuracy over training at most {tol:.0%} lower)",
                      "mean training accuracy over evaluation steps: BN - noisy BN", diff(curve, "batch", "noisy_batch", "train_acc"),
                      threshold=tol, direction="<", kind="test",
                      note=f"noise: per channel, shift U(-{cfg['noise_shift']}, {cfg['noise_shift']}) and scale U(1, {cfg['noise_scale']}) "
                           "shared by the batch, new every step (the paper draws noise per example; magnitudes ours)"),
        stats.claim(ID, "noisy_bn_trains_better_than_standard", "Noisy BN trains better than the standard network",
                      "mean training accuracy over evaluation steps: noisy BN - standard",
                      diff(curve, "noisy_batch", "standard", "train_acc"), kind="test"),
        stats.claim(ID, "bn_trains_better_than_standard", "BN trains better than the standard network",
                      "mean training accuracy over evaluation steps: BN - standard", diff(curve, "batch", "standard", "train_acc"), kind="test"),
        stats.claim(ID, "noisy_bn_shifts_more", "Noisy BN's layer inputs shift more from step to step than BN's",
                      "one-step input shift (mean over layers and steps): noisy BN - BN", diff(layer, "noisy_batch", "batch", "shift"),
                    kind="demonstration", note="by construction: noise is injected after every BN layer"),
        stats.claim(ID, "bn_does_not_reduce_ics_cosine",
                      "BN does not reduce ICS: with BN a layer's gradient turns at least as much when the preceding layers update",
                      "cos(G, G') standard - BN (mean over layers and steps)", diff(layer, "standard", "batch", "ics_cos"), kind="test",
                      note="not_reproduced would mean BN reduces ICS; inconclusive: no difference found either way"),
        stats.claim(ID, "bn_does_not_reduce_ics_l2",
                      "BN does not reduce ICS: with BN a layer's gradient changes at least as much (l2) when the preceding layers update",
                      "||G - G'|| BN - standard (mean over layers and steps)", diff(layer, "batch", "standard", "ics_l2"), kind="test",
                      note="l2 depends on the gradients' scale, which BN changes; the cosine is scale-free"),
    ]
    for col, what in (("loss_variation", "smaller loss variation along the gradient"),
                      ("gradient_predictiveness", "a smaller gradient change along the step (more predictive gradients)"),
                      ("beta_smoothness", "a smaller effective beta-smoothness")):
        out.append(stats.claim(ID, f"bn_smaller_{col}", f"BN smooths the landscape: {what} than the standard network",
                                 f"{col} standard - BN (mean over measured steps)", diff(curve, "standard", "batch", col),
                               kind="test"))
    return out
