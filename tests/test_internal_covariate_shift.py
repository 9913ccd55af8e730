"""internal_covariate_shift: noisy BN, ICS and landscape measures against closed forms, claims."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from trainfail import covariate_shift, models, train
from trainfail.experiments import internal_covariate_shift as E

MSE = train.loss_fn("mse")


def test_noisy_batchnorm_shifts_and_scales_each_channel_anew_every_step():
    torch.manual_seed(0)
    layer = models.NoisyBatchNorm(nn.BatchNorm1d(5), noise_shift=0.5, noise_scale=2.0)
    x = torch.randn(200, 5) * 3 + 1
    y = layer(x)
    # BN output has batch mean 0 and (biased) std 1, so the noisy output has mean = shift, std = scale
    assert torch.allclose(y.mean(0), layer.shift, atol=1e-5)
    assert torch.allclose(y.std(0, unbiased=False), layer.scale, atol=1e-3)
    assert (layer.shift.abs() <= 0.5).all() and (layer.scale >= 1).all() and (layer.scale <= 2).all()
    first = layer.shift.clone()
    layer(x)
    assert not torch.equal(first, layer.shift)  # a new draw every training forward
    layer.resample = False
    kept = layer.shift.clone()
    layer(x)
    assert torch.equal(kept, layer.shift)
    layer.eval()
    assert torch.allclose(layer(x), layer.bn(x))  # eval mode: plain BN


def test_noisy_batchnorm_in_conv_nets_and_from_the_spec():
    net = models.build({"arch": "cnn", "channels": [4, 4], "norm": "noisy_batch", "noise_shift": 0.3, "noise_scale": 1.2},
                       (1, 8), 3)
    noisy = [m for m in net.modules() if isinstance(m, models.NoisyBatchNorm)]
    assert len(noisy) == 2 and all(m.noise_shift == 0.3 and m.noise_scale == 1.2 for m in noisy)
    assert net(torch.randn(5, 1, 8)).shape == (5, 3)


def _scalar_chain(w1, w2):
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(w1)
        net[1].weight.fill_(w2)
    return net


def test_ics_of_a_two_layer_scalar_chain():
    """f(x) = w2 w1 x, L = (f - y)^2: G2 = 2 (w2 w1 x - y) w1 x; after w1 <- w1 - lr G1, G2' the same at w1'."""
    w1, w2, x, y, lr = 0.8, -1.5, 2.0, 1.0, 0.1
    net = _scalar_chain(w1, w2)
    (l2, cos), = covariate_shift.internal_covariate_shift(net, MSE, torch.tensor([[x]]), torch.tensor([y]), lr)
    g1 = 2 * (w2 * w1 * x - y) * w2 * x
    g2 = 2 * (w2 * w1 * x - y) * w1 * x
    w1n = w1 - lr * g1
    g2n = 2 * (w2 * w1n * x - y) * w1n * x
    assert l2 == pytest.approx(abs(g2 - g2n), rel=1e-5)
    assert cos == pytest.approx(np.sign(g2 * g2n))
    assert net[0].weight.item() == pytest.approx(w1)  # measured on a copy


def test_ics_is_zero_without_an_update():
    torch.manual_seed(0)
    net = models.build({"arch": "mlp", "hidden": [6, 6], "norm": "batch"}, (4,), 3)
    out = covariate_shift.internal_covariate_shift(net, train.loss_fn("cross_entropy"), torch.randn(16, 4),
                                                   torch.randint(0, 3, (16,)), lr=0.0)
    assert len(out) == 2  # layers 2 and 3 (the first has no preceding layers)
    assert all(l2 == pytest.approx(0.0, abs=1e-7) and cos == pytest.approx(1.0) for l2, cos in out)


def test_landscape_of_a_quadratic():
    """L(w) = mean((Xw - y)^2) has Hessian H = 2 X^T X / n: the gradient changes by eta H g, the
    effective beta-smoothness is ||H g|| / ||g|| at every eta, and the loss is a parabola in eta."""
    torch.manual_seed(0)
    X, y = torch.randn(20, 2, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    net = nn.Linear(2, 1, bias=False).double()
    w = net.weight.detach().reshape(-1).clone()
    H = 2 * X.T @ X / len(X)
    g = 2 * X.T @ (X @ w - y) / len(X)
    etas = [0.05, 0.1, 0.2, 0.4]
    got = covariate_shift.landscape_along_gradient(net, MSE, X, y, etas)
    loss = [float(((X @ (w - e * g) - y) ** 2).mean()) for e in etas]
    assert got["loss_variation"] == pytest.approx(max(loss) - min(loss), rel=1e-9)
    assert got["gradient_predictiveness"] == pytest.approx(0.4 * float(torch.linalg.vector_norm(H @ g)), rel=1e-9)
    assert got["beta_smoothness"] == pytest.approx(float(torch.linalg.vector_norm(H @ g) / torch.linalg.vector_norm(g)), rel=1e-9)
    assert torch.equal(net.weight.detach().reshape(-1), w)


def test_layer_input_moments_shift():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    moments = covariate_shift.LayerInputMoments(net)
    a, b = torch.randn(8, 2), torch.randn(8, 2) + 1
    net(a)
    assert math.isnan(moments.shift()[0])
    net(b)
    ha, hb = torch.relu(net[0](a)).detach(), torch.relu(net[0](b)).detach()
    expected = (hb.mean(0) - ha.mean(0)).abs().mean() + (hb.std(0) - ha.std(0)).abs().mean()
    assert moments.shift()[0] == pytest.approx(float(expected), rel=1e-5)
    moments.active = False
    net(a)
    assert moments.shift()[0] == pytest.approx(float(expected), rel=1e-5)  # paused: nothing recorded


def _table(bn_acc=0.9, noisy_acc=0.89, std_acc=0.6):
    rows = []
    for seed in range(4):
        j = 0.002 * seed
        for variant, acc, smooth, cos, shift in (("standard", std_acc, 5.0, 0.95, 0.1), ("batch", bn_acc, 1.0, 0.9, 0.05),
                                                 ("noisy_batch", noisy_acc, 1.0, 0.9, 0.4)):
            for step in (0, 10, 20):
                rows.append({"variant": variant, "seed": seed, "kind": "curve", "step": step, "train_acc": acc + j,
                             "val_acc": acc + j, "loss_variation": smooth + j, "gradient_predictiveness": smooth + j,
                             "beta_smoothness": smooth + j})
                for layer in (2, 3):
                    rows.append({"variant": variant, "seed": seed, "kind": "layer", "step": step, "layer": layer,
                                 "ics_l2": 1 - cos + j, "ics_cos": cos + j, "shift": shift + j})
    return pd.DataFrame(rows)


def test_claims_from_a_table():
    cfg = {"match_tolerance": 0.02, "noise_shift": 0.5, "noise_scale": 1.5}
    verdicts = {c["claim_id"]: c["verdict_unadjusted"] for c in E.claims(_table(), cfg, None)}
    assert set(verdicts.values()) == {"reproduced"}
    assert len(verdicts) == 9
    verdicts = {c["claim_id"]: c["verdict_unadjusted"] for c in E.claims(_table(noisy_acc=0.7), cfg, None)}
    assert verdicts["noisy_bn_trains_as_well_as_bn"] == "not_reproduced"


def test_runs_and_sgd_only():
    from trainfail.context import Context

    cfg = {"dataset": "mnist1d", "model": {"arch": "cnn"}, "variants": ["standard", "batch", "noisy_batch"], "noise_shift": 0.5,
           "noise_scale": 1.5, "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 8, "steps": 4, "measure_every": 2,
           "step_sizes": [0.1]}
    runs = E.runs(cfg, Context({"seeds": [0]}))
    assert [r["model"]["norm"] for r in runs] == ["none", "batch", "noisy_batch"]
    assert runs[2]["model"]["noise_shift"] == 0.5
    with pytest.raises(ValueError, match="plain SGD"):
        E.execute({**runs[0], "optimizer": {"name": "adam", "lr": 0.1}}, None)
