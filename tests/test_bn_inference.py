"""bn_inference: population statistics, running averages, batch-statistics evaluation, claims."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from trainfail.training import batchnorm, models
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


def test_moving_average_floor_matches_the_closed_form():
    """A BN layer on i.i.d. Gaussian channels, weights frozen: batch means b_t have variance
    sigma^2 / B (x the finite-population factor), and an exponential moving average with momentum m
    keeps m / (2 - m) of it; unbiased batch variances have variance 2 sigma^4 / (B - 1), so the
    relative error of the running variance is normal with sd sqrt(m / (2 - m) * 2 / (B - 1)) and
    mean absolute value sqrt(2 / pi) times that. (Many batches per epoch: the permutation's
    correlation between batches of one epoch is negligible.)"""
    n, channels, b, m = 32768, 64, 16, 0.1
    x = torch.randn(n, channels, generator=torch.Generator().manual_seed(0)) * 3 + 1
    net = nn.Sequential(nn.BatchNorm1d(channels, momentum=m))
    (mean_floor, var_floor), = batchnorm.moving_average_floor(net, x, b, steps=1500, generator=torch.Generator().manual_seed(1))
    keep = m / (2 - m)
    assert mean_floor == pytest.approx(math.sqrt(keep * (n - b) / (b * (n - 1))), rel=0.05)
    assert var_floor == pytest.approx(math.sqrt(2 / math.pi) * math.sqrt(keep * 2 / (b - 1)), rel=0.05)
    assert torch.equal(net[0].running_mean, torch.zeros(channels))  # measured on a copy
    # a smaller momentum averages more batches: a lower floor
    slow = nn.Sequential(nn.BatchNorm1d(channels, momentum=0.01))
    (slow_mean, _), = batchnorm.moving_average_floor(slow, x, b, steps=1500, generator=torch.Generator().manual_seed(1))
    assert slow_mean < mean_floor / 2


def test_recomputed_evaluation_ignores_the_running_statistics():
    torch.manual_seed(0)
    x, y = _data(n=64), torch.randint(0, 2, (64,))
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    data = type("Data", (), {"x_train": x, "y_train": y, "x_test": x[:16], "y_test": y[:16]})()
    with torch.no_grad():
        net[1].running_mean.fill_(100.0)  # garbage running statistics: eval mode is wrong...
    pop = batchnorm.with_population_statistics(net, batchnorm.population_statistics(net, x))
    got = batchnorm.recomputed_evaluation(net, data)
    from trainfail.training import train

    assert got["train_loss_recomputed"] == pytest.approx(train.evaluate(pop, x, y)[0])  # ... recomputed is not
    assert got["train_loss_recomputed"] != pytest.approx(train.evaluate(net, x, y)[0])
    plain = nn.Sequential(nn.Linear(3, 2))  # no BN: evaluated as it is
    assert batchnorm.recomputed_evaluation(plain, data)["val_acc_recomputed"] == train.evaluate(plain, x[:16], y[:16])[1]


def _table(running_gap=0.0, batch1=0.1, schedules=("cosine",), final=None, floor=0.01):
    """final: schedule -> the final running-vs-population distance (default: at the floor)."""
    final = final or {}
    rows = []
    for schedule in schedules:
        for seed in range(4):
            end = final.get(schedule, floor) * (1 + 0.05 * seed)
            for step, dist in ((0, 1.0), (50, 0.1), (100, end)):
                for layer in ("bn1", "bn2"):
                    for statistic in ("mean", "variance"):
                        rows.append({"schedule": schedule, "seed": seed, "kind": "convergence", "step": step, "layer": layer,
                                     "statistic": statistic, "distance": dist})
            rows += [{"schedule": schedule, "seed": seed, "kind": "floor", "layer": layer, "statistic": statistic,
                      "distance": floor * (1 + 0.02 * seed)} for layer in ("bn1", "bn2") for statistic in ("mean", "variance")]
            pop = 0.9 + 0.01 * seed
            gap = running_gap if schedule == "constant" or len(schedules) == 1 else 0.0
            for b in (1, 64):
                rows += [{"schedule": schedule, "seed": seed, "kind": "accuracy", "mode": "population", "test_batch_size": b,
                          "accuracy": pop},
                         {"schedule": schedule, "seed": seed, "kind": "accuracy", "mode": "running", "test_batch_size": b,
                          "accuracy": pop - gap + 0.001 * seed},
                         {"schedule": schedule, "seed": seed, "kind": "accuracy", "mode": "batch", "test_batch_size": b,
                          "accuracy": batch1 + 0.01 * seed if b == 1 else pop}]
    return pd.DataFrame(rows)


CFG = {"match_tolerance": 0.01, "failure_margin": 0.1, "floor_factor": 2.0, "momentum": 0.1, "batch_size": 32}


def _verdicts(table):
    return {c["claim_id"]: c["verdict_unadjusted"] for c in E.claims(table, CFG)}


def test_claims_from_a_table():
    verdicts = _verdicts(_table())
    assert verdicts == {"running_mean_at_floor_cosine": "reproduced",
                        "running_variance_at_floor_cosine": "reproduced",
                        "running_matches_population_cosine": "equivalent",
                        "batch_statistics_fail_at_batch_1_cosine": "reproduced"}
    verdicts = _verdicts(_table(running_gap=0.05, batch1=0.89))
    assert verdicts["running_matches_population_cosine"] == "not_equivalent"
    assert verdicts["batch_statistics_fail_at_batch_1_cosine"] == "not_reproduced"
    nan_b1 = _table()
    nan_b1.loc[(nan_b1["mode"] == "batch") & (nan_b1["test_batch_size"] == 1), "accuracy"] = np.nan
    row = [c for c in E.claims(nan_b1, CFG) if c["claim_id"].startswith("batch_statistics")][0]
    assert row["verdict_unadjusted"] == "inconclusive" and "undefined" in row["note"]


def test_running_statistics_are_judged_against_the_floor_not_the_initial_buffers():
    """The confound: against the initial buffers (distance 1 at step 0) a final distance of 0.1 is
    a 10x improvement, 'approaching' the population; but the moving average's floor is 0.01, so
    the running statistics are 10x farther than they could be. The verdict follows the floor; the
    step-0 distance is shown in the note."""
    lagging = E.claims(_table(final={"cosine": 0.1}), CFG)
    row = {c["claim_id"]: c for c in lagging}["running_mean_at_floor_cosine"]
    assert row["verdict_unadjusted"] == "not_reproduced"
    assert "step 0 (the initial buffers): 1" in row["note"]
    assert row["value"] == pytest.approx(1.0, abs=0.05)  # log10(0.1 / 0.01)


def test_constant_against_decayed_learning_rate_is_the_contrast():
    both = _table(schedules=("constant", "cosine"), final={"constant": 0.08, "cosine": 0.011}, running_gap=0.05)
    verdicts = _verdicts(both)
    assert verdicts["running_mean_at_floor_constant"] == "not_reproduced"
    assert verdicts["running_mean_at_floor_cosine"] == "reproduced"
    assert verdicts["decay_brings_running_mean_to_floor_cosine"] == "reproduced"
    assert verdicts["decay_brings_running_variance_to_floor_cosine"] == "reproduced"
    assert verdicts["decay_closes_running_accuracy_gap_cosine"] == "reproduced"
    same = _verdicts(_table(schedules=("constant", "cosine"), final={"constant": 0.011, "cosine": 0.011}))
    assert same["decay_brings_running_mean_to_floor_cosine"] != "reproduced"


def test_runs_use_pytorch_momentum_and_every_schedule():
    from trainfail.training.context import Context

    cfg = {"dataset": "mnist1d", "model": {"arch": "cnn"}, "momentum": 0.1, "optimizer": {"name": "sgd", "lr": 0.1},
           "schedules": ["constant", "cosine"], "batch_size": 8, "steps": 5, "eval_points": 2, "test_batch_sizes": [1, 2],
           "floor_steps": 10}
    runs = E.runs(cfg, Context({"seeds": [0, 1]}))
    assert len(runs) == 4 and {r["schedule"]["name"] for r in runs} == {"constant", "cosine"}
    assert all(r["model"]["norm"] == "batch" and r["model"]["batchnorm_momentum"] == 0.1 for r in runs)


def test_recomputed_evaluation_reads_the_training_set_from_the_statistics_pass():
    """recomputed_evaluation takes the training set's loss and accuracy from the outputs of the one
    forward that computed the statistics (population_pass): they are what train.evaluate computes
    on the network holding those statistics; a set too large for one forward has no such outputs."""
    from trainfail.training import data as data_, models, train

    ds = data_.load("digits").subset(600)
    torch.manual_seed(0)
    net = models.build({"arch": "cnn", "channels": [4, 8], "norm": "batch"}, ds.input_shape, ds.num_classes)
    net.train()
    net(ds.x_train[:32])  # running statistics of one batch: far from the population's
    got = batchnorm.recomputed_evaluation(net, ds)
    ref = batchnorm.with_recomputed_statistics(net, ds.x_train)
    for name, x, y in (("train", ds.x_train, ds.y_train), ("val", ds.x_test, ds.y_test)):
        loss, acc = train.evaluate(ref, x, y)
        assert got[f"{name}_loss_recomputed"] == pytest.approx(loss, rel=1e-6) and got[f"{name}_acc_recomputed"] == acc
    assert got["train_loss_recomputed"] != pytest.approx(train.evaluate(net, ds.x_train, ds.y_train)[0], rel=1e-3)
    stats, out = batchnorm.population_pass(net, ds.x_train)
    assert out.shape == (600, ds.num_classes) and batchnorm.population_pass(net, ds.x_train, chunk=100)[1] is None
    for (m1, v1), (m2, v2) in zip(stats, batchnorm.population_statistics(net, ds.x_train, chunk=100)):
        torch.testing.assert_close(m1, m2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-5)
