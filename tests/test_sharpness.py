"""Keskar's epsilon-sharpness against closed forms of quadratics; interpolation and distance."""

import math

import pytest
import torch
from torch import nn

from trainfail import sharpness as sh


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


def test_box_halfwidth_keeps_zero_coordinates_open():
    assert sh.box_halfwidth(torch.tensor([0.0, -2.0, 3.0]), 0.1).tolist() == pytest.approx([0.1, 0.3, 0.4])


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    model.train()
    model(torch.randn(64, 5))  # give batch norm non-trivial running statistics
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    return model, x, y


def test_model_objective_matches_autograd_and_chunking():
    model, x, y = _model_and_data()
    f_whole = sh.model_objective(model, x, y)
    f_chunks = sh.model_objective(model, x, y, chunk=7)
    theta = sh.flat_parameters(model)
    v1, g1 = f_whole(theta)
    v2, g2 = f_chunks(theta)
    model.eval()
    model.zero_grad()
    ref = nn.functional.cross_entropy(model(x), y)
    ref.backward()
    ref_grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert float(v1) == pytest.approx(ref.item(), rel=1e-6)
    assert float(v2) == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(g1, ref_grad, atol=1e-6) and torch.allclose(g2, ref_grad, atol=1e-6)


def test_model_sharpness_grows_with_eps_and_is_nonnegative():
    model, x, y = _model_and_data()
    small = sh.model_sharpness(model, x, y, 5e-4)["sharpness"]
    large = sh.model_sharpness(model, x, y, 1e-3)["sharpness"]
    sub = sh.model_sharpness(model, x, y, 1e-3, subspace_dim=10)["sharpness"]
    assert 0 <= small < large and sub >= 0


def test_interpolate_endpoints_and_buffers():
    model, x, y = _model_and_data()
    a = {k: v.clone() for k, v in model.state_dict().items()}
    other, _, _ = _model_and_data()
    torch.manual_seed(1)
    for p in other.parameters():
        p.data.add_(torch.randn_like(p))
    b = {k: v.clone() for k, v in other.state_dict().items()}
    rows = sh.interpolate(model, a, b, [0.0, 1.0, 0.5], x, y)
    model.eval(), other.eval()
    loss_a = float(nn.functional.cross_entropy(model(x), y))
    loss_b = float(nn.functional.cross_entropy(other(x), y))
    assert rows[0]["loss"] == pytest.approx(loss_b, rel=1e-6)
    assert rows[1]["loss"] == pytest.approx(loss_a, rel=1e-6)
    assert [r["alpha"] for r in rows] == [0.0, 1.0, 0.5]
    assert torch.equal(model.state_dict()["0.weight"], a["0.weight"])  # the model is left as it was


def test_distance_closed_form():
    s0 = {"w": torch.zeros(2, 2), "b": torch.zeros(3), "n": torch.tensor(5)}
    s1 = {"w": torch.full((2, 2), 1.0), "b": torch.tensor([0.0, 3.0, 0.0]), "n": torch.tensor(9)}
    assert sh.distance(s1, s0) == pytest.approx(math.sqrt(4 + 9))   # integer buffers left out
    assert sh.distance(s1, s0, keys=["w"]) == pytest.approx(2.0)
