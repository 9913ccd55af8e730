"""The six normalizations of models.py do what their papers define, and the experiment's claims logic."""

import pandas as pd
import pytest
import torch
from torch import nn

from trainfail.training import models
from trainfail.training.context import Context
from trainfail.core.contract import labels_of
from trainfail.experiments import normalization_variants as nv


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


CFG = {"dataset": "digits", "model": {"arch": "cnn", "channels": [8]}, "norms": ["batch", "group"],
       "batch_sizes": [2, 32, 128], "reference_batch_size": 32, "epochs": 3, "optimizer": {"name": "sgd", "lr": 0.1},
       "equal_updates": {"updates": 50, "batch_sizes": [2, 32]}, "seeds": [0, 1]}


def test_runs_equal_epochs_arm_scales_lr_and_equal_updates_arm_does_not():
    runs = nv.runs(CFG, Context({}))
    arms = {a: [r for r in runs if labels_of(r)["arm"] == a] for a in nv.ARMS}
    assert len(arms["equal_epochs"]) == 2 * 3 * 2 and len(arms["equal_updates"]) == 2 * 2 * 2
    assert {r["epochs"] for r in arms["equal_epochs"]} == {3}
    assert {(r["batch_size"], r["optimizer"]["lr"]) for r in arms["equal_epochs"]} == {
        (2, 0.1 * 2 / 32), (32, 0.1), (128, 0.1 * 128 / 32)}
    # the controlled arm: the schema's batch sizes, the same updates and the same lr at every one
    assert {(r["batch_size"], r["steps"], r["optimizer"]["lr"]) for r in arms["equal_updates"]} == {(2, 50, 0.1), (32, 50, 0.1)}
    assert all("epochs" not in r for r in arms["equal_updates"])


def test_reference_batch_must_be_a_level_of_both_arms():
    with pytest.raises(ValueError, match="reference_batch_size"):
        nv.runs({**CFG, "equal_updates": {"updates": 50, "batch_sizes": [2, 8]}}, Context({}))


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
