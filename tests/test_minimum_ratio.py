"""minimum_ratio: the vectorised ensemble is exactly the lone nets; the claims logic on small tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from trainfail import hessian
from trainfail.context import Context
from trainfail.experiments import minimum_ratio as mr


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_ensemble_members_match_lone_models(activation):
    x, y = mr.make_data(30)
    ens = mr.Ensemble(5, activation)
    W = ens.init([0, 1, 2], activation) + 0.1  # shift so ReLU kinks are off the data
    values, g = ens.loss_grad(x, y, 1e-3)(W)
    H = ens.hessians(x, y, 1e-3, chunk=4)(W)
    for s in range(3):
        m = mr.member_model(5, activation).double()
        hessian.set_flat_parameters(m, W[s])
        assert float(values[s]) == pytest.approx(float(hessian.mean_loss(m, x, y, "mse", 1e-3).detach()), rel=1e-12)
        torch.testing.assert_close(g[s], hessian.gradient(m, x, y, "mse", weight_decay=1e-3))
        torch.testing.assert_close(H[s], hessian.full_hessian(m, x, y, "mse", weight_decay=1e-3))


def test_execute_finds_verified_points_and_ratios():
    settings = {"task": mr.ID, "width": 4, "activation": "relu", "weight_decay": 0.0, "seeds": [0, 1, 2, 3],
                "n_examples": 40, "optimizer": {"name": "adam", "lr": 0.01}, "train_steps": 100,
                "newton_iters": 30, "grad_tol": 1e-8, "zero_tol": 1e-6, "log_points": 10}
    res = mr.execute(settings, None)
    pts = pd.DataFrame(res.summary["points"])
    assert len(pts) == 4 and res.summary["parameters"] == 13
    assert (pts["grad_norm"] <= pts["grad_norm_train_end"]).all()
    for _, p in pts.iterrows():
        eigs = np.array([float(v) for v in p["spectrum"].split()])
        assert len(eigs) == 13 and p["n_pos"] + p["n_neg"] + p["n_zero"] == 13
        assert p["ratio_all"] == pytest.approx(p["n_pos"] / 13)
        assert 0 <= p["kinks_in_range"] <= 4


def test_kinks_in_range():
    x, _ = mr.make_data(11)
    ens = mr.Ensemble(3, "relu")
    # units: kink at x = 0 (in range), always active (linear on the data), never active (dead)
    w = torch.tensor([1.0, 1.0, 1.0, 0.0, 5.0, -5.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    assert ens.kinks_in_range(w, x) == 1


def test_claims_logic():
    rng = np.random.default_rng(0)
    rows = []
    for net in ("a", "b"):
        for i in range(12):
            loss = rng.uniform(0.01, 0.1)
            rows.append({"net": net, "verified": True, "mse": loss, "ratio_all": 0.9 - 5 * loss,
                         "ratio_nonzero": 0.95 - loss, "seed": i})
    rows.append({"net": "a", "verified": False, "mse": 1.0, "ratio_all": 1.0, "ratio_nonzero": 1.0, "seed": 99})
    cfg = {"grad_tol": 1e-8, "zero_tol": 1e-6, "minimum_fraction_max": 0.2}
    claims = {c["claim_id"]: c for c in mr.claims(pd.DataFrame(rows), cfg, Context({"seeds": [0]}))}
    assert claims["no_run_reaches_ratio_one"]["verdict_unadjusted"] == "reproduced"   # 0 of 24 verified at ratio 1
    assert claims["higher_loss_lower_ratio"]["verdict_unadjusted"] == "reproduced"    # perfectly anti-monotone
    assert claims["higher_loss_lower_ratio"]["value"] == pytest.approx(-1.0)
