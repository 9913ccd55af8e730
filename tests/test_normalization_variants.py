"""The six normalizations of models.py do what their papers define, and the experiment's plan (the
controlled arm's cells at rates tuned on tuning seeds), table and claims logic."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from trainfail.core.config import ConfigError, load_yaml, merge, validate
from trainfail.training import models, tuning
from trainfail.training.context import Context
from trainfail.core.contract import labels_of
from trainfail.experiments import normalization_variants as nv

from .fake_records import record, write_choice

ROOT = Path(__file__).resolve().parents[1]


def _first_norm(model: nn.Module) -> nn.Module:
    return model.net[1]


def _pre_norm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.net[0](x)


@pytest.mark.parametrize("spatial", [(1, 12), (1, 6, 6)])
@pytest.mark.parametrize("norm", ["layer", "group", "instance", "none", "weight"])
def test_per_example_norms_do_not_depend_on_the_batch(norm, spatial):
    torch.manual_seed(0)
    model = models.build({"arch": "cnn", "channels": [16, 32], "norm": norm}, spatial, 3).train()
    x = torch.randn(5, *spatial)
    assert torch.allclose(model(x)[:1], model(x[:1]), atol=1e-5)


def test_batchnorm_depends_on_the_batch_in_training_and_not_in_eval():
    torch.manual_seed(0)
    model = models.build({"arch": "cnn", "channels": [8], "norm": "batch"}, (1, 12), 3)
    x = torch.randn(6, 1, 12)
    assert not torch.allclose(model.train()(x)[:1], model(x[:3])[:1], atol=1e-4)
    model.eval()
    assert torch.allclose(model(x)[:1], model(x[:1]), atol=1e-6)


def _stats(h: torch.Tensor, dims):
    return h.mean(dims), h.var(dims, unbiased=False)


@pytest.mark.parametrize("norm,dims", [
    ("batch", (0, 2)),      # per channel over examples and positions (Ioffe & Szegedy)
    ("layer", (1, 2)),      # per example over channels and positions (Ba et al.)
    ("instance", (2,)),     # per example and channel over positions (Ulyanov et al.)
])
def test_normalized_statistics(norm, dims):
    torch.manual_seed(0)
    model = models.build({"arch": "cnn", "channels": [8], "norm": norm}, (2, 10), 3).train()
    x = torch.randn(4, 2, 10) * 3 + 1
    out = _first_norm(model)(_pre_norm(model, x))  # affine starts at weight 1, bias 0
    mean, var = _stats(out, dims)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
    assert torch.allclose(var, torch.ones_like(var), atol=1e-3)


def test_group_norm_groups_channels():
    model = models.build({"arch": "cnn", "channels": [16], "norm": "group"}, (1, 10), 3)
    g = _first_norm(model)
    assert isinstance(g, nn.GroupNorm) and g.num_groups == 8  # 2 channels per group
    assert models._groups(64) == 32 and models._groups(256) == 32  # Wu & He's G = 32
    x = torch.randn(3, 16, 10)
    out = g(x).view(3, 8, 2 * 10)
    assert torch.allclose(out.mean(-1), torch.zeros(3, 8), atol=1e-5)


def test_weight_norm_reparametrises_the_weight():
    model = models.build({"arch": "cnn", "channels": [4], "norm": "weight"}, (1, 10), 3)
    conv = model.net[0]
    p = conv.parametrizations.weight
    g, v = p.original0, p.original1
    expected = g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)  # Salimans & Kingma: w = g v / ||v||
    assert torch.allclose(conv.weight, expected, atol=1e-6)
    assert isinstance(_first_norm(model), nn.Identity)


def test_instance_norm_needs_positions():
    with pytest.raises(ValueError):
        models.build({"arch": "mlp", "hidden": [8], "norm": "instance"}, (4,), 3)


def test_scaled_lr_is_linear_in_batch_size():
    assert nv.scaled_lr(0.1, 2, 32) == pytest.approx(0.00625)
    assert nv.scaled_lr(0.1, 128, 32) == pytest.approx(0.4)


# batch 2: one grid for both norms; batch 32: one per norm
GRIDS = [{"batch_size": 2, "lrs": [0.01, 0.03]}, {"batch_size": 32, "norms": ["batch"], "lrs": [0.03, 0.1, 0.3]},
         {"batch_size": 32, "norms": ["group"], "lrs": [0.01, 0.03, 0.1, 0.3]}]
CFG = {"dataset": "digits", "model": {"arch": "cnn", "channels": [8]}, "norms": ["none", "batch", "group"],
       "batch_sizes": [2, 32, 128], "reference_batch_size": 32, "epochs": 3, "optimizer": {"name": "sgd", "lr": 0.1},
       "equal_updates": {"updates": 50, "batch_sizes": [2, 32], "norms": ["batch", "group"],
                         "tuning": {"seeds": [100, 101], "grids": GRIDS}}, "seeds": [0, 1]}


def _by_arm(runs):
    return {a: [r for r in runs if labels_of(r)["arm"] == a] for a in (*nv.ARMS, "sweep")}


def test_runs_equal_epochs_arm_scales_lr_and_equal_updates_cells_are_tuned():
    arms = _by_arm(nv.runs(CFG, Context({})))
    assert len(arms["equal_epochs"]) == 3 * 3 * 2  # every norm, batch size and claim seed
    assert {r["epochs"] for r in arms["equal_epochs"]} == {3}
    assert {(r["batch_size"], r["optimizer"]["lr"]) for r in arms["equal_epochs"]} == {
        (2, 0.1 * 2 / 32), (32, 0.1), (128, 0.1 * 128 / 32)}
    # the controlled arm: its norms only, per (norm, batch size) cell a sweep over its batch size's grid
    # on the tuning seeds, then the claim seeds at the rate the sweep chooses (unknown at plan time)
    tuned, sweep = arms["equal_updates"], arms["sweep"]
    assert all(tuning.stage(r) == 1 and "optimizer" not in r for r in tuned)
    assert {(r["base"]["model"]["norm"], r["base"]["batch_size"], r["seed"]) for r in tuned} == {
        (n, b, s) for n in ("batch", "group") for b in (2, 32) for s in (0, 1)}
    assert {(r["base"]["model"]["norm"], r["base"]["batch_size"], tuple(r["lrs"])) for r in tuned} == {
        ("batch", 2, (0.01, 0.03)), ("group", 2, (0.01, 0.03)), ("batch", 32, (0.03, 0.1, 0.3)),
        ("group", 32, (0.01, 0.03, 0.1, 0.3))}
    assert all(r["base"]["steps"] == 50 and "epochs" not in r["base"] for r in tuned)
    assert all(r["tuning_seeds"] == [100, 101] and r["criterion"] == nv.CRITERION == "final_val_acc" for r in tuned)
    assert len(sweep) == (2 + 2 + 3 + 4) * 2  # the cells' rates x tuning seeds
    assert {r["seed"] for r in sweep} == {100, 101} and all(r["task"] == "train" for r in sweep)
    assert {(r["model"]["norm"], r["batch_size"], r["optimizer"]["lr"]) for r in sweep} == {
        (n, g["batch_size"], lr) for g in GRIDS for n in g.get("norms", ["batch", "group"]) for lr in g["lrs"]}
    # one sweep per cell: each cell's tuned runs name their own
    assert len({tuning.sweep_id(tuning.sweep_of(r)) for r in tuned}) == 2 * 2


def test_reference_batch_must_be_a_level_of_both_arms():
    with pytest.raises(ValueError, match="reference_batch_size"):
        nv.runs({**CFG, "equal_updates": {**CFG["equal_updates"], "batch_sizes": [2, 8]}}, Context({}))


@pytest.mark.parametrize("change,key", [
    ({"norms": ["batch", "layer"]}, "equal_updates.norms"),
    ({"tuning": {"seeds": [100, 101], "grids": GRIDS[:2]}}, r"equal_updates.tuning.grids: no grid for .*\('group', 32\)"),
    ({"tuning": {"seeds": [100, 101], "grids": GRIDS + [{"batch_size": 8, "lrs": [0.1]}]}}, r"grids\[3\]: .* no cell"),
    ({"tuning": {"seeds": [100, 101], "grids": GRIDS + [{"batch_size": 32, "lrs": [0.1]}]}}, r"grids\[3\]: .* one grid per cell"),
    ({"tuning": {"seeds": [1, 100], "grids": GRIDS}}, "tuning seeds \\[1\\]"),
])
def test_bad_controlled_arm_is_refused_naming_the_key(change, key):
    with pytest.raises(ValueError, match=key):
        nv.runs({**CFG, "equal_updates": {**CFG["equal_updates"], **change}}, Context({}))


def _config(*presets: str) -> dict:
    cfg = load_yaml(ROOT / "config.yaml")
    for p in presets:
        cfg = merge(cfg, load_yaml(ROOT / p))
    return validate(cfg, ROOT / "workflow/schemas/config.schema.yaml")


@pytest.mark.parametrize("presets", [(), ("presets/smoke.yaml",), ("presets/full.yaml",)])
def test_the_tuning_grids_are_declared_in_the_schema(presets):
    """The rates a cell may take are the schema's (never added by the analysis): one grid per batch
    size of the controlled arm, at least two tuning seeds, none of them a claim seed, and the sweeps
    are the plan's, with the claim runs naming them."""
    cfg = _config(*presets)
    block = cfg["experiments"][nv.ID]
    eq = block["equal_updates"]
    assert len(eq["tuning"]["seeds"]) >= tuning.MIN_TUNING_SEEDS
    grids = nv.grid_of(block)
    assert sorted(grids) == sorted((n, b) for n in eq["norms"] for b in eq["batch_sizes"])
    assert all(len(v) >= 3 for v in grids.values())  # an interior optimum is possible in each
    ctx = Context(cfg)
    arms = _by_arm(nv.runs(ctx.experiment(nv.ID), ctx))
    assert {r["seed"] for r in arms["sweep"]}.isdisjoint(r["seed"] for r in arms["equal_updates"])
    assert {tuple(r["lrs"]) for r in arms["equal_updates"]} == {tuple(v) for v in grids.values()}


def test_a_grid_that_is_not_a_list_of_rates_is_a_config_error():
    bad = merge(load_yaml(ROOT / "config.yaml"), {"experiments": {nv.ID: {"equal_updates": {"tuning": {
        "grids": [{"batch_size": 2, "lrs": [0.0]}]}}}}})
    with pytest.raises(ConfigError, match=f"experiments.{nv.ID}.equal_updates.tuning.grids"):
        validate(bad, ROOT / "workflow/schemas/config.schema.yaml")


def _metrics(acc: float) -> dict:
    return {"step": [0, 50], "train_loss": [2.3, 1 - acc], "train_acc": [0.1, acc], "val_loss": [2.3, 1 - acc],
            "val_acc": [0.1, acc]}


def test_table_gives_tuned_runs_their_cells_chosen_rate(tmp_path):
    """A tuned run's rate is its cell's choice (from the choice file the tune job writes), per batch
    size and norm; the choices are rows of their own, naming the cell."""
    runs = nv.runs(CFG, Context({}))
    recs, acc = [], {0.01: 0.8, 0.03: 0.9, 0.1: 0.95, 0.3: 0.7}  # batch 2 chooses 0.03 (its edge), 32 chooses 0.1
    for r in runs:
        if labels_of(r)["arm"] == "sweep":
            recs.append(record(r, _metrics(acc[r["optimizer"]["lr"]])))
    sweeps = list(recs)
    recs += [record(r, _metrics(0.85)) for r in runs if labels_of(r)["arm"] == "equal_epochs"]
    for r in runs:
        if labels_of(r)["arm"] == nv.CONTROLLED:
            choice = write_choice(tmp_path, r, sweeps)  # the tune job's file: it reads its own cell's runs
            recs.append(record(r, _metrics(0.9), {"lr": choice["lr"]}, choice=choice))
    t = nv.table(CFG, recs, Context({}, tmp_path))
    tuned = t[t["arm"] == nv.CONTROLLED]
    assert dict(zip(tuned["batch_size"], tuned["lr"])) == {2: 0.03, 32: 0.1}
    chosen = t[t["arm"] == "tuning"].set_index("cell")
    assert set(chosen.index) == {"BatchNorm B=2", "BatchNorm B=32", "GroupNorm B=2", "GroupNorm B=32"}
    assert chosen.loc["BatchNorm B=2", "edge"] == "high" and chosen.loc["GroupNorm B=32", "edge"] == ""
    assert chosen.loc["GroupNorm B=32", "lower_lr"] == 0.03 and chosen.loc["GroupNorm B=32", "upper_lr"] == 0.3
    assert chosen.loc["GroupNorm B=32", "grid"] == "0.01 0.03 0.1 0.3" and chosen.loc["BatchNorm B=32", "grid"] == "0.03 0.1 0.3"
    # the claims' runs are the arms' rows alone, and the primary's note names its cells' rates and the edge
    errs = t[t["arm"].isin(list(nv.ARMS))]
    assert set(errs["arm"]) == set(nv.ARMS) and len(t[t["arm"] == "sweep"]) == (2 + 2 + 3 + 4) * 2
    rows = {c["claim_id"]: c for c in nv.claims(t, {"dataset": "digits", "reference_batch_size": 32, "no_degradation_tolerance": 0.02})}
    note = rows[nv.PRIMARY]["note"]
    assert "BatchNorm B=2 lr 0.03" in note and "BatchNorm B=32 lr 0.1" in note and "GroupNorm" not in note
    assert "edge_optimum" in note and "BatchNorm B=2 lr 0.03 (high edge" in note
    assert "tuned lr" in rows[nv.PRIMARY]["statement"]  # the claim names its arm
    assert "edge_optimum" not in rows["batchnorm_degrades_equal_epochs"]["note"]


def _table(errors: dict, arm: str = "equal_updates") -> pd.DataFrame:
    rows = []
    for (norm, bs), errs in errors.items():
        rows += [{"arm": arm, "norm": norm, "batch_size": bs, "seed": s, "val_error": e} for s, e in enumerate(errs)]
    return pd.DataFrame(rows)


def test_claims_batchnorm_degrades_groupnorm_does_not():
    t = _table({("batch", 2): [0.30, 0.32, 0.31], ("batch", 32): [0.10, 0.11, 0.12],
                ("group", 2): [0.11, 0.12, 0.12], ("group", 32): [0.11, 0.11, 0.12],
                ("layer", 2): [0.40, 0.42, 0.41], ("layer", 32): [0.11, 0.11, 0.12]})
    # a margin wide enough for digits' 360 test examples, whose sampling error the intervals carry
    rows = {c["claim_id"]: c for c in nv.claims(t, {"dataset": "digits", "reference_batch_size": 32,
                                                    "no_degradation_tolerance": 0.08})}
    out = {k: c["verdict_unadjusted"] for k, c in rows.items()}
    assert nv.PRIMARY in rows and rows[nv.PRIMARY]["kind"] == "test"
    assert out["batchnorm_degrades"] == "reproduced"
    assert out["groupnorm_degrades_less_than_batchnorm"] == "reproduced"
    assert out["layernorm_degrades_less_than_batchnorm"] == "not_reproduced"
    assert out["groupnorm_beats_batchnorm_at_b2"] == "reproduced"
    assert rows["groupnorm_beats_batchnorm_at_b2"]["paper_value"]
    # "does not degrade": an equivalence with the schema's margin
    for norm in ("group", "layer"):
        c = rows[f"{norm}norm_does_not_degrade"]
        assert c["direction"] == "within" and c["threshold"] == pytest.approx(0.08)
    assert out["groupnorm_does_not_degrade"] == "equivalent"
    assert out["layernorm_does_not_degrade"] != "equivalent"


def test_claims_name_their_arm_and_the_primary_is_on_the_controlled_arm():
    errors = {("batch", 2): [0.30, 0.32, 0.31], ("batch", 32): [0.10, 0.11, 0.12],
              ("group", 2): [0.11, 0.12, 0.12], ("group", 32): [0.11, 0.11, 0.12]}
    later = {k: [e + (0.05 if k[1] == 2 else 0.0) for e in v] for k, v in errors.items()}
    t = pd.concat([_table(errors, "equal_updates"), _table(later, "equal_epochs")])
    rows = {c["claim_id"]: c for c in nv.claims(t, {"dataset": "digits", "reference_batch_size": 32,
                                                    "no_degradation_tolerance": 0.02})}
    assert {"batchnorm_degrades_equal_epochs", "groupnorm_does_not_degrade_equal_epochs"} <= set(rows)
    assert nv.PRIMARY == "batchnorm_degrades"
    # each arm's claim reads its own arm's runs
    assert rows["batchnorm_degrades_equal_epochs"]["value"] == pytest.approx(rows["batchnorm_degrades"]["value"] + 0.05)
