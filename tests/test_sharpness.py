"""Keskar's epsilon-sharpness against closed forms of quadratics; interpolation and distance."""

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from trainfail.training import batchnorm, data, train
from trainfail.measure import sharpness as sh
from trainfail.core.run_settings import complete

pytestmark = pytest.mark.usefixtures("one_thread")


def quadratic(diag: torch.Tensor, lin: torch.Tensor | None = None, const: float = 0.0):
    """f(v) = 0.5 v^T D v + g^T v + c with D diagonal, as an Objective (value, gradient)."""
    lin = torch.zeros_like(diag) if lin is None else lin

    def objective(v):
        return 0.5 * (diag * v * v).sum() + (lin * v).sum() + const, diag * v + lin
    return objective


def box_max_separable(diag, lin, x, half):
    """Exact max of a separable quadratic over the box x + [-half, half]: per coordinate, a convex
    parabola peaks at an end, a concave one at its vertex clipped to the interval."""
    total = 0.0
    for d, g, c, w in zip(diag.tolist(), lin.tolist(), x.tolist(), half.tolist()):
        h = lambda t: 0.5 * d * t * t + g * t
        if d >= 0:
            total += max(h(c - w), h(c + w))
        else:
            total += h(min(max(-g / d, c - w), c + w))
    return total


@pytest.mark.parametrize("eps", sh.EPSILONS)
def test_positive_definite_quadratic_at_zero_is_a_box_corner(eps):
    # f = 0.5 z^T D z at x = 0: the box is |z_i| <= eps, the max is at a corner: 0.5 eps^2 sum D_i,
    # so sharpness = 100 * 0.5 eps^2 sum(D) / (1 + 0) = 50 eps^2 sum(D).
    diag = torch.tensor([1.0, 10.0, 100.0, 1e4], dtype=torch.float64)
    out = sh.epsilon_sharpness(quadratic(diag), torch.zeros(4, dtype=torch.float64), eps)
    assert out["f0"] == 0.0
    assert out["sharpness"] == pytest.approx(50 * eps ** 2 * float(diag.sum()), rel=1e-12)


def test_indefinite_quadratic_off_centre_matches_closed_form():
    torch.manual_seed(0)
    n, eps = 12, 1e-3
    diag = torch.randn(n, dtype=torch.float64) * 50      # mixed signs: corners and interior vertices
    lin = torch.randn(n, dtype=torch.float64) * 1e-3
    x = torch.randn(n, dtype=torch.float64)
    f = quadratic(diag, lin, const=1000.0)  # a loss is positive: keep 1 + f(x) > 0
    f0 = float(f(x)[0])
    fmax = box_max_separable(diag, lin, x, sh.box_halfwidth(x, eps)) + 1000.0
    out = sh.epsilon_sharpness(f, x, eps, steps=60)
    expected = 100 * (fmax - f0) / (1 + f0)
    assert out["sharpness"] == pytest.approx(expected, rel=1e-3)
    assert out["sharpness"] <= expected * (1 + 1e-9)  # a maximiser never beats the true maximum


def test_rank_one_quadratic_in_random_subspace_matches_closed_form():
    # f(v) = 0.5 (d^T v)^2 at x = 0: in the subspace f = 0.5 (d^T A y)^2 over |y_i| <= eps (|(A^+ 0)_i| + 1)
    # = eps, maximised at y = eps sign(A^T d): 0.5 (eps ||A^T d||_1)^2.
    n, p, eps, seed = 50, 7, 1e-3, 3
    d = torch.linspace(-1, 2, n, dtype=torch.float64)

    def objective(v):
        s = d @ v
        return 0.5 * s * s, s * d

    out = sh.epsilon_sharpness(objective, torch.zeros(n, dtype=torch.float64), eps, subspace_dim=p, seed=seed)
    a = sh.random_subspace(n, p, torch.Generator().manual_seed(seed), torch.float64)
    expected = 100 * 0.5 * (eps * float((a.T @ d).abs().sum())) ** 2
    assert out["dim"] == p
    assert out["sharpness"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("eps", sh.EPSILONS)
def test_lbfgsb_finds_the_box_corner_of_a_convex_quadratic(eps):
    # Keskar's maximiser on the closed form of the first test: 50 eps^2 sum(D)
    diag = torch.tensor([1.0, 10.0, 100.0, 1e4], dtype=torch.float64)
    out = sh.epsilon_sharpness(quadratic(diag), torch.zeros(4, dtype=torch.float64), eps, steps=10, method="lbfgsb")
    assert out["sharpness"] == pytest.approx(50 * eps ** 2 * float(diag.sum()), rel=1e-9)
    out = sh.epsilon_sharpness(quadratic(diag), torch.zeros(4, dtype=torch.float64), eps, steps=10, method="best")
    assert out["sharpness"] == pytest.approx(50 * eps ** 2 * float(diag.sum()), rel=1e-9)


def test_unknown_sharpness_method_is_refused():
    with pytest.raises(ValueError, match="sharpness method"):
        sh.maximize_in_box(quadratic(torch.ones(2)), torch.ones(2), method="newton")


def test_subspace_over_full_sharpness_scales_like_p_squared_over_n():
    # Keskar's convention (A with i.i.d. N(0, 1) entries, box around A^+ x): on f = 0.5 (1^T v)^2 at
    # x = 0 the full-space maximum is 0.5 (eps n)^2 and the subspace one 0.5 (eps ||A^T 1||_1)^2,
    # with ||A^T 1||_1 ~ p sqrt(2 n / pi): the ratio is about (2 / pi) p^2 / n. This is why our
    # 10^4-parameter nets have subspace ~ full sharpness while Keskar's 10^6-parameter ones had
    # Table 4 values well below Table 3.
    p, eps = 100, 1e-3
    for n in (1_000, 4_000, 16_000):
        d = torch.ones(n, dtype=torch.float64)

        def objective(v):
            s = d @ v
            return 0.5 * s * s, s * d

        x = torch.zeros(n, dtype=torch.float64)
        full = sh.epsilon_sharpness(objective, x, eps, method="ascent")["sharpness"]
        assert full == pytest.approx(50 * (eps * n) ** 2, rel=1e-9)
        # one draw of A scatters by ~20% around the law: average four
        sub = [sh.epsilon_sharpness(objective, x, eps, subspace_dim=p, seed=s, method="ascent")["sharpness"]
               for s in range(4)]
        assert sum(sub) / len(sub) / full == pytest.approx(2 / math.pi * p * p / n, rel=0.2), n


def test_ascent_and_keskars_lbfgsb_on_the_same_trained_points():
    # Keskar's maximiser (L-BFGS-B) against the projected sign ascent on the same trained points,
    # from the same start, 20 steps / iterations each (Keskar: 10). Both are lower bounds of the
    # maximum; the ascent is kept beside L-BFGS-B because it finds the higher value in the full
    # space, and "best" keeps the larger of the two.
    ds = data.load_digits(Path("."))
    s = {"dataset": "digits", "model": {"arch": "mlp", "hidden": [32]}, "optimizer": {"name": "adam", "lr": 0.001},
         "eval_points": 1, "seed": 0}
    found = []
    for batch, epochs in ((16, 5), (144, 30)):
        model = train.train(complete({"task": "train", **s, "batch_size": batch, "epochs": epochs}), ds,
                            torch.device("cpu")).model
        f, x = sh.model_objective(model, ds.x_train, ds.y_train), sh.flat_parameters(model)
        for eps in sh.EPSILONS:
            for dim in (None, 100):
                value = {m: sh.epsilon_sharpness(f, x, eps, dim, steps=20, seed=0, method=m)["sharpness"]
                         for m in sh.METHODS}
                found.append({"batch": batch, "eps": eps, "space": "sub" if dim else "full", **value})
    for row in found:
        print(row)
    assert all(r["best"] == max(r["ascent"], r["lbfgsb"]) for r in found)
    assert any(r["ascent"] > r["lbfgsb"] for r in found if r["space"] == "full")
    # the two maximisers agree to a few percent: neither is stuck
    assert all(abs(r["ascent"] / r["lbfgsb"] - 1) < 0.05 for r in found)


def test_box_halfwidth_keeps_zero_coordinates_open():
    assert sh.box_halfwidth(torch.tensor([0.0, -2.0, 3.0]), 0.1).tolist() == pytest.approx([0.1, 0.3, 0.4])


def _model_and_data(norm: bool = True):
    torch.manual_seed(0)
    layers = [nn.Linear(5, 8)] + ([nn.BatchNorm1d(8)] if norm else []) + [nn.Tanh(), nn.Linear(8, 3)]
    model = nn.Sequential(*layers)
    model.train()
    model(torch.randn(64, 5))  # give batch norm non-trivial running statistics
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    return model, x, y


def _autograd_loss_and_grad(model, x, y, train_mode_bn: bool):
    model.zero_grad()
    model.train(train_mode_bn)
    ref = nn.functional.cross_entropy(model(x), y)
    ref.backward()
    model.eval()
    return ref.item(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_model_objective_matches_autograd_and_chunking():
    model, x, y = _model_and_data(norm=False)
    f_whole = sh.model_objective(model, x, y)
    f_chunks = sh.model_objective(model, x, y, chunk=7)
    theta = sh.flat_parameters(model)
    v1, g1 = f_whole(theta)
    v2, g2 = f_chunks(theta)
    ref, ref_grad = _autograd_loss_and_grad(model, x, y, train_mode_bn=False)
    assert float(v1) == pytest.approx(ref, rel=1e-6)
    assert float(v2) == pytest.approx(ref, rel=1e-6)
    assert torch.allclose(g1, ref_grad, atol=1e-6) and torch.allclose(g2, ref_grad, atol=1e-6)


def test_batch_norm_objective_recomputes_statistics_and_differentiates_through_them():
    # the loss of the batch in one pass, each BN layer with that batch's statistics: PyTorch's
    # train-mode forward, value and gradient (the running statistics of the model play no part)
    model, x, y = _model_and_data()
    running = model[1].running_var.clone()
    v, g = sh.model_objective(model, x, y, chunk=7)(sh.flat_parameters(model))  # chunk ignored: one batch
    ref, ref_grad = _autograd_loss_and_grad(copy.deepcopy(model), x, y, train_mode_bn=True)
    assert float(v) == pytest.approx(ref, rel=1e-6)
    assert torch.allclose(g, ref_grad, atol=1e-6)
    assert torch.equal(model[1].running_var, running)  # the model is not touched
    # a BN layer makes the loss invariant to the scale of the weights before it, so the true
    # gradient is orthogonal to them; a gradient with the statistics held fixed is not
    w = model[0].weight.numel() + model[0].bias.numel()
    theta = sh.flat_parameters(model)
    assert abs(float(g[:w] @ theta[:w])) < 1e-4 * float(g.norm() * theta[:w].norm())  # BN eps: 1e-5
    _, frozen = _autograd_loss_and_grad(copy.deepcopy(model), x, y, train_mode_bn=False)
    assert abs(float(frozen[:w] @ theta[:w])) > 1e-3 * float(frozen.norm() * theta[:w].norm())


@pytest.mark.parametrize("norm", [False, True])
def test_model_hvp_matches_finite_differences_of_the_gradient(norm):
    model, x, y = _model_and_data(norm)
    model = model.double()
    x = x.double()
    f = sh.model_objective(model, x, y)
    theta = sh.flat_parameters(model)
    v = torch.randn(theta.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = 1e-5
    fd = (f(theta + h * v)[1] - f(theta - h * v)[1]) / (2 * h)
    assert torch.allclose(sh.model_hvp(model, x, y)(v), fd, rtol=1e-5, atol=1e-8)


def test_model_sharpness_grows_with_eps_and_is_nonnegative():
    model, x, y = _model_and_data()
    small = sh.model_sharpness(model, x, y, 5e-4)["sharpness"]
    large = sh.model_sharpness(model, x, y, 1e-3)["sharpness"]
    sub = sh.model_sharpness(model, x, y, 1e-3, subspace_dim=10)["sharpness"]
    assert 0 <= small < large and sub >= 0


def test_interpolate_endpoints_and_buffers():
    model, x, y = _model_and_data(norm=False)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    other, _, _ = _model_and_data(norm=False)
    torch.manual_seed(1)
    for p in other.parameters():
        p.data.add_(torch.randn_like(p))
    b = {k: v.clone() for k, v in other.state_dict().items()}
    rows = sh.interpolate(model, a, b, [0.0, 1.0, 0.5], {"train": (x, y)})
    model.eval(), other.eval()
    with torch.no_grad():
        loss_a = float(nn.functional.cross_entropy(model(x), y))
        loss_b = float(nn.functional.cross_entropy(other(x), y))
    assert rows[0]["loss"] == pytest.approx(loss_b, rel=1e-6)
    assert rows[1]["loss"] == pytest.approx(loss_a, rel=1e-6)
    assert [r["alpha"] for r in rows] == [0.0, 1.0, 0.5] and {r["split"] for r in rows} == {"train"}
    assert torch.equal(model.state_dict()["0.weight"], a["0.weight"])  # the model is left as it was


def test_batch_norm_interpolation_is_finite_from_minus_one_to_two():
    # two BN nets whose running variances differ a lot: interpolating the variances linearly gives
    # 2 var_LB - var_SB < 0 at alpha = 2 (NaN losses, exactly where a sharp minimum would show);
    # interpolating the parameters and recomputing the statistics at each alpha stays finite
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                                 nn.ReLU(), nn.Linear(8, 3))
    sb, lb = make(), make()
    x, y = torch.randn(200, 5), torch.randint(0, 3, (200,))
    with torch.no_grad():
        lb[0].weight.mul_(0.1)  # LB's first-layer outputs: a tenth of the scale, a hundredth of the variance
    for net in (sb, lb):
        net.train()
        for _ in range(50):
            net(x)  # running statistics converge to the data's
    a, b = lb.state_dict(), sb.state_dict()
    linear_var = 2 * a["1.running_var"] - b["1.running_var"]
    assert (linear_var < 0).any()  # the old way: negative variances at alpha = 2
    alphas = torch.linspace(-1, 2, 13).tolist()
    rows = sh.interpolate(sb, a, b, alphas, {"train": (x, y), "test": (x[:50], y[:50])})
    assert len(rows) == 2 * len(alphas)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["acc"]) for r in rows)
    # at alpha = 1 the net is LB's parameters with the training set's statistics
    probe = batchnorm.recompute_statistics(copy.deepcopy(lb), x).eval()
    at_one = next(r for r in rows if r["alpha"] == 1.0 and r["split"] == "train")
    assert at_one["loss"] == pytest.approx(float(nn.functional.cross_entropy(probe(x), y)), rel=1e-5)


def test_polish_is_gradient_descent_at_one_over_the_top_eigenvalue():
    # f = 0.5 sum d_i v_i^2: a step at 1/d_max multiplies v_i by (1 - d_i / d_max), a closed form
    diag = torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64)
    x0 = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    out = sh.polish(quadratic(diag), x0, lr=1 / 4.0, steps=3)
    assert torch.allclose(out["x"], (1 - diag / 4.0) ** 3 * x0) and out["steps"] == 3
    # a rate that raises the loss is halved (at 3/d_max the top coordinate would grow: |1 - 3| > 1)
    out = sh.polish(quadratic(diag), x0, lr=3 / 4.0, steps=5)
    assert out["lr"] == pytest.approx(3 / 8.0) and out["loss"] < float(quadratic(diag)(x0)[0])
    # stop_below: no step once the loss is low enough
    out = sh.polish(quadratic(diag), x0, lr=1 / 4.0, steps=100, stop_below=0.5)
    assert out["loss"] <= 0.5 and out["steps"] < 100


def test_distance_closed_form():
    s0 = {"w": torch.zeros(2, 2), "b": torch.zeros(3), "n": torch.tensor(5)}
    s1 = {"w": torch.full((2, 2), 1.0), "b": torch.tensor([0.0, 3.0, 0.0]), "n": torch.tensor(9)}
    assert sh.distance(s1, s0) == pytest.approx(math.sqrt(4 + 9))   # integer buffers left out
    assert sh.distance(s1, s0, keys=["w"]) == pytest.approx(2.0)
