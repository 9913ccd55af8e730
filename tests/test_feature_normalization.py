"""feature_normalization: the Hessian and condition number against closed forms, GD step counts,
and the claims logic on a small run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from trainfail.measure import landscape
from trainfail.training.context import Context
from trainfail.experiments import feature_normalization as fn


def test_hessian_is_two_over_n_xtx():
    x, y = fn.make_data(50, 10.0, 0.1, seed=3)
    h = fn.hessian(x, y, at=[0.3, -2.0])
    assert torch.allclose(h, 2.0 / len(x) * x.T @ x)


def test_condition_number_of_a_diagonal_matrix():
    assert fn.condition_number(torch.diag(torch.tensor([2.0, 200.0], dtype=torch.float64))) == pytest.approx(100.0)


def test_standardised_features_have_zero_mean_unit_variance_and_correlation_conditioning():
    x, y = fn.make_data(200, 30.0, 0.1, seed=0)
    z = fn.standardise(x)
    assert torch.allclose(z.mean(0), torch.zeros(2, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(2, dtype=z.dtype))
    rho = float(torch.corrcoef(x.T)[0, 1])
    # Hessian = 2 x correlation matrix: condition (1 + |rho|) / (1 - |rho|)
    assert fn.condition_number(fn.hessian(z, y)) == pytest.approx((1 + abs(rho)) / (1 - abs(rho)))
    assert fn.condition_number(fn.hessian(x, y)) > 100


def test_steps_to_loss_on_a_round_quadratic():
    bowl = lambda w: (w ** 2).sum()  # Hessian 2I: GD with lr 0.5 lands on the minimum in one step
    steps, diverged, path = landscape.steps_to_loss(bowl, [1.0, -1.0], {"name": "sgd", "lr": 0.5}, 10, 1e-9)
    assert steps == 1 and not diverged and len(path) == 2
    # lr 0.25 halves the distance each step: loss 2 * 4^-k < 1e-3 first at k = 6
    steps, _, _ = landscape.steps_to_loss(bowl, [1.0, -1.0], {"name": "sgd", "lr": 0.25}, 100, 1e-3)
    assert steps == 6
    steps, diverged, _ = landscape.steps_to_loss(bowl, [1.0, -1.0], {"name": "sgd", "lr": 1.5}, 1000, 1e-3)
    assert math.isnan(steps) and diverged  # |1 - 2 lr| > 1


def test_best_rate_is_the_fewest_steps():
    search = pd.DataFrame({"lr": [0.1, 0.2, 0.4], "steps": [30.0, 10.0, math.nan], "reached": [True, True, False]})
    assert fn.best_rate(search) == (0.2, 10.0)
    assert all(math.isnan(v) for v in fn.best_rate(search.assign(reached=False)))


@pytest.mark.slow
def test_table_and_claims_on_a_small_problem():
    cfg = {"n_examples": 40, "feature_scale": 30.0, "noise": 0.1, "start": [-1.0, -1.0], "tolerance": 1e-2,
           "lr_range": [1e-3, 1.0], "lr_points": 7, "max_steps": 1500, "seeds": [0, 1]}
    t = fn.table(cfg, [], Context({}))
    s = t[t["kind"] == "summary"]
    assert set(s["problem"]) == {"raw", "standardised"} and len(s) == 4
    assert (t["kind"] == "path").any()
    out = {c["claim_id"]: c for c in fn.claims(t, cfg)}
    assert out["condition_number_cut"]["verdict_unadjusted"] == "reproduced"
    assert out["condition_number_cut"]["value"] == pytest.approx(
        np.mean(np.log10(s[s.problem == "raw"]["condition_number"].to_numpy() / s[s.problem == "standardised"]["condition_number"].to_numpy())))
    assert out["fewer_steps"]["verdict_unadjusted"] in ("reproduced", "inconclusive", "not_reproduced")


def test_mse_gradient_in_closed_form_matches_autograd():
    x, y = fn.make_data(40, 20.0, 0.1, seed=1)
    w = torch.tensor([[0.3, -1.0, 2.0], [1.5, 0.2, -0.7]], dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(fn.mse(w, x, y).sum(), w)
    assert torch.allclose(fn.mse_grad(w.detach(), x, y), auto, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("closed_form", [False, True])
def test_steps_to_loss_at_many_rates_equals_one_rate_at_a_time(closed_form):
    # rates that converge, that stop short of the target, that oscillate out, and that overflow
    x, y = fn.make_data(60, 20.0, 0.1, seed=2)
    surface = lambda w: fn.mse(w, x, y)
    if closed_form:
        surface.grad = lambda w: fn.mse_grad(w, x, y)
    target = float(fn.mse(torch.zeros(2, dtype=torch.float64), x, y)) * 0.05
    rates = [1e-4, 1e-3, 3e-3, 1e-2, 0.1, 1.0, 30.0]
    steps, diverged = landscape.steps_to_loss_rates(surface, [-1.0, -1.0], rates, 400, target)
    for lr, s, d in zip(rates, steps, diverged):
        one, one_div, _ = landscape.steps_to_loss(surface, [-1.0, -1.0], {"name": "sgd", "lr": lr}, 400, target)
        assert (math.isnan(s) and math.isnan(one)) or s == one, lr
        assert bool(d) == one_div, lr
    assert np.isnan(steps).any() and (~np.isnan(steps)).any() and diverged.any()  # every case was exercised
