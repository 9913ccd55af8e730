"""bn_inference: population statistics, running averages, batch-statistics evaluation, claims."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from trainfail import batchnorm, models
from trainfail.experiments import bn_inference as E


def _data(n=64, f=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g) * torch.tensor([1.0, 3.0, 0.5]) + torch.tensor([2.0, -1.0, 0.0])


def test_population_statistics_of_the_first_layer_are_the_data_statistics():
    x = _data()
    net = nn.Sequential(nn.BatchNorm1d(3))
    (mean, var), = batchnorm.population_statistics(net, x)
    assert torch.allclose(mean, x.mean(0), atol=1e-5)
    assert torch.allclose(var, x.var(0, unbiased=True), atol=1e-5)
    assert torch.equal(net[0].running_mean, torch.zeros(3))  # the model itself is untouched


def test_population_statistics_layer_by_layer_and_in_chunks():
    torch.manual_seed(0)
    x = _data()
    net = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 4), nn.BatchNorm1d(4))
    stats = batchnorm.population_statistics(net, x, chunk=7)
    # layer 2's input: the linear layer applied to x normalised by layer 1's population statistics
    m1, v1 = stats[0]
    h = net[1]((x - m1) / torch.sqrt(v1 + net[0].eps) * net[0].weight + net[0].bias).detach()
    assert torch.allclose(stats[1][0], h.mean(0), atol=1e-5)
    assert torch.allclose(stats[1][1], h.var(0), atol=1e-5)
    whole = batchnorm.population_statistics(net, x)
    assert all(torch.allclose(a, b, atol=1e-5) for s, t in zip(stats, whole) for a, b in zip(s, t))


def test_population_statistics_of_a_conv_layer_average_over_positions():
    x = torch.randn(10, 2, 7)
    (mean, var), = batchnorm.population_statistics(nn.Sequential(nn.BatchNorm1d(2)), x)
    flat = x.transpose(0, 1).reshape(2, -1)
    assert torch.allclose(mean, flat.mean(1), atol=1e-5) and torch.allclose(var, flat.var(1), atol=1e-5)


def test_running_average_closed_form():
    """Feeding the same batch n times: running = (1 - m)^n init + (1 - (1 - m)^n) batch statistic."""
    x = _data()
    bn = nn.BatchNorm1d(3, momentum=0.1)
    for _ in range(20):
        bn(x)
    keep = 0.9 ** 20
    assert torch.allclose(bn.running_mean, (1 - keep) * x.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, keep + (1 - keep) * x.var(0), atol=1e-4)
    (mean, var), = batchnorm.population_statistics(nn.Sequential(bn), x)
    d_mean, d_var = batchnorm.statistics_distance(bn.running_mean, bn.running_var, mean, var)
    assert d_mean == pytest.approx(float(torch.sqrt(((keep * mean) ** 2 / var).mean())), rel=1e-4)


def test_statistics_distance_closed_forms():
    pm, pv = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 9.0])
    assert batchnorm.statistics_distance(pm, pv, pm, pv) == (0.0, 0.0)
    d_mean, d_var = batchnorm.statistics_distance(pm + 2 * pv.sqrt(), 2 * pv, pm, pv)
    assert d_mean == pytest.approx(2.0) and d_var == pytest.approx(1.0)


def test_batch_statistics_normalise_each_batch_by_itself():
    x = _data(n=32)
    net = nn.Sequential(nn.BatchNorm1d(3))
    out = batchnorm.with_batch_statistics(net).eval()(x)
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out.var(0, unbiased=False), torch.ones(3), atol=1e-3)
    assert net[0].running_mean is not None  # the original keeps its buffers


def test_batch_one_is_undefined_after_a_linear_layer_and_defined_in_a_conv_net():
    mlp = models.build({"arch": "mlp", "hidden": [4], "norm": "batch"}, (3,), 2)
    x, y = _data(n=6), torch.zeros(6, dtype=torch.long)
    assert math.isnan(batchnorm.accuracy_in_batches(batchnorm.with_batch_statistics(mlp), x, y, 1))
    assert not math.isnan(batchnorm.accuracy_in_batches(mlp, x, y, 1))  # running statistics: fine
    cnn = models.build({"arch": "cnn", "channels": [4], "norm": "batch"}, (1, 8), 2)
    acc = batchnorm.accuracy_in_batches(batchnorm.with_batch_statistics(cnn), torch.randn(6, 1, 8), y, 1)
    assert 0.0 <= acc <= 1.0


def _table(running_gap=0.0, batch1=0.1):
    rows = []
    for seed in range(4):
        for step, dist in ((0, 1.0), (50, 0.1), (100, 0.01 * (1 + 0.1 * seed))):
            for layer in ("bn1", "bn2"):
                for statistic in ("mean", "variance"):
                    rows.append({"schedule": "cosine", "seed": seed, "kind": "convergence", "step": step, "layer": layer,
                                 "statistic": statistic, "distance": dist})
        pop = 0.9 + 0.01 * seed
        for b in (1, 64):
            rows += [{"schedule": "cosine", "seed": seed, "kind": "accuracy", "mode": "population", "test_batch_size": b, "accuracy": pop},
                     {"schedule": "cosine", "seed": seed, "kind": "accuracy", "mode": "running", "test_batch_size": b,
                      "accuracy": pop - running_gap + 0.001 * seed},
                     {"schedule": "cosine", "seed": seed, "kind": "accuracy", "mode": "batch", "test_batch_size": b,
                      "accuracy": batch1 + 0.01 * seed if b == 1 else pop}]
    return pd.DataFrame(rows)


def test_claims_from_a_table():
    cfg = {"match_tolerance": 0.01, "failure_margin": 0.1}
    verdicts = {c["claim_id"]: c["verdict_unadjusted"] for c in E.claims(_table(), cfg, None)}
    assert verdicts == {"running_mean_approaches_population_cosine": "reproduced",
                        "running_variance_approaches_population_cosine": "reproduced",
                        "running_matches_population_cosine": "reproduced",
                        "batch_statistics_fail_at_batch_1_cosine": "reproduced"}
    verdicts = {c["claim_id"]: c["verdict_unadjusted"] for c in E.claims(_table(running_gap=0.05, batch1=0.89), cfg, None)}
    assert verdicts["running_matches_population_cosine"] == "not_reproduced"
    assert verdicts["batch_statistics_fail_at_batch_1_cosine"] == "not_reproduced"
    nan_b1 = _table()
    nan_b1.loc[(nan_b1["mode"] == "batch") & (nan_b1["test_batch_size"] == 1), "accuracy"] = np.nan
    row = [c for c in E.claims(nan_b1, cfg, None) if c["claim_id"].startswith("batch_statistics")][0]
    assert row["verdict_unadjusted"] == "inconclusive" and "undefined" in row["note"]


def test_runs_use_pytorch_momentum_and_every_schedule():
    from trainfail.context import Context

    cfg = {"dataset": "mnist1d", "model": {"arch": "cnn"}, "momentum": 0.1, "optimizer": {"name": "sgd", "lr": 0.1},
           "schedules": ["constant", "cosine"], "batch_size": 8, "steps": 5, "eval_points": 2, "test_batch_sizes": [1, 2]}
    runs = E.runs(cfg, Context({"seeds": [0, 1]}))
    assert len(runs) == 4 and {r["schedule"]["name"] for r in runs} == {"constant", "cosine"}
    assert all(r["model"]["norm"] == "batch" and r["model"]["batchnorm_momentum"] == 0.1 for r in runs)
