"""Hessian tools against closed forms: quadratics, the lecture's toy loss, Lanczos vs eigvalsh."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainfail.measure import hessian

def quadratic_hvp(A: torch.Tensor):
    w = torch.zeros(A.shape[0], dtype=torch.float64, requires_grad=True)
    f = 0.5 * w @ A @ w + w.sum()
    g = torch.autograd.grad(f, w, create_graph=True)[0]

    def apply(v):
        batched = v.dim() == 2
        return torch.autograd.grad(g, w, grad_outputs=v, retain_graph=True, is_grads_batched=batched)[0]

    return apply

def random_symmetric(n: int, eigs: np.ndarray, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return torch.as_tensor(Qm @ np.diag(eigs) @ Qm.T)

class Product(nn.Module):
    """The lecture's network: one input, y_hat = w2 * (w1 * x), no bias, linear activation."""

    def __init__(self, w1: float, w2: float):
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor([w1], dtype=torch.float64))
        self.w2 = nn.Parameter(torch.tensor([w2], dtype=torch.float64))

    def forward(self, x):
        return (self.w2 * (self.w1 * x)).unsqueeze(-1)

ONE = (torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))

def test_quadratic_full_spectrum_from_hvps():
    eigs = np.array([-3.0, -0.5, 0.0, 0.0, 1.0, 2.0, 10.0])
    A = random_symmetric(7, eigs)
    H = hessian.hessian_from_hvp(quadratic_hvp(A), 7, chunk=3)
    assert torch.allclose(H, A, atol=1e-12)
    np.testing.assert_allclose(hessian.eigenvalues(H), np.sort(eigs), atol=1e-10)

def test_toy_loss_saddle_at_origin():
    model = Product(0.0, 0.0)
    H = hessian.full_hessian(model, *ONE, loss="mse")
    np.testing.assert_allclose(H.numpy(), [[0.0, -2.0], [-2.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(hessian.eigenvalues(H), [-2.0, 2.0], atol=1e-12)
    assert float(torch.linalg.vector_norm(hessian.gradient(model, *ONE, "mse"))) == 0.0

@pytest.mark.parametrize("w1", [0.5, 1.0, -2.0])
def test_toy_loss_valley_has_one_zero_eigenvalue(w1):
    model = Product(w1, 1.0 / w1)
    eigs = hessian.eigenvalues(hessian.full_hessian(model, *ONE, loss="mse"))
    # closed form on w1 w2 = 1: H = 2 [[w2^2, 1], [1, w1^2]] -> eigenvalues 0 and 2 (w1^2 + w2^2)
    np.testing.assert_allclose(eigs, [0.0, 2 * (w1 ** 2 + w1 ** -2)], atol=1e-10)
    r = hessian.minimum_ratio(eigs, tol=1e-8)
    assert r["ratio_all"] == 0.5 and r["ratio_nonzero"] == 1.0 and r["n_zero"] == 1

def test_hvp_matches_full_hessian_columns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))
    H = hessian.full_hessian(model, x, y, chunk=7)
    v = torch.randn(hessian.num_parameters(model), dtype=torch.float64)
    np.testing.assert_allclose(hessian.hvp(model, x, y, v).numpy(), (H @ v).numpy(), atol=1e-12)
    # against torch.autograd.functional.hessian on the flat parameters
    def f(flat):
        from torch.func import functional_call
        i, params = 0, {}
        for name, p in model.named_parameters():
            params[name] = flat[i:i + p.numel()].view_as(p)
            i += p.numel()
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
    ref = torch.autograd.functional.hessian(f, hessian.flat_parameters(model))
    np.testing.assert_allclose(H.numpy(), ref.numpy(), atol=1e-12)

def test_lanczos_matches_quadratic_spectrum():
    rng = np.random.default_rng(1)
    eigs = np.concatenate([[50.0, 30.0, 20.0, 12.0, 8.0], rng.uniform(-1, 2, 295), [-6.0]])
    A = random_symmetric(len(eigs), eigs)
    r = hessian.lanczos(quadratic_hvp(A), len(eigs), k=5, iters=100, which="top")
    np.testing.assert_allclose(r.values, [50, 30, 20, 12, 8], rtol=1e-4)
    assert r.converged and r.n_hvp <= 100
    b = hessian.lanczos(quadratic_hvp(A), len(eigs), k=1, iters=100, which="bottom")
    np.testing.assert_allclose(b.values, [-6.0], rtol=1e-4)

def test_lanczos_agrees_with_full_spectrum_on_small_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x, y = torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,))
    full = hessian.spectrum(model, x, y)
    top = hessian.top_eigenvalues(model, x, y, k=5, iters=100, tol=1e-8)
    np.testing.assert_allclose(top, full[::-1][:5], rtol=1e-4)
    low = hessian.min_eigenvalue(model, x, y, iters=100, tol=1e-8)
    np.testing.assert_allclose(low, full[0], rtol=1e-4)
    both = hessian.lanczos(hessian.hvp_fn(model, x, y), len(full), k=2, iters=200, which="both", tol=1e-8)
    np.testing.assert_allclose(both.values, [full[-1], full[-2], full[0], full[1]], rtol=1e-4)

def test_lanczos_flags_a_top_eigenvalue_that_did_not_converge():
    # a dense spectrum below the top: 5 products cannot resolve it, 100 can; the relative residual
    # reported beside the value bounds its error (|theta - lambda| <= residual for some eigenvalue)
    rng = np.random.default_rng(2)
    eigs = np.concatenate([[10.0], rng.uniform(0, 9.5, 199)])
    A = random_symmetric(len(eigs), eigs)
    short = hessian.lanczos(quadratic_hvp(A), len(eigs), k=1, iters=5, which="top", tol=1e-3)
    assert not short.converged and short.relative_residuals[0] > 1e-3
    assert np.abs(eigs - short.values[0]).min() <= short.residuals[0]  # near some eigenvalue...
    assert short.values[0] < 10.0 - 0.1  # ... but not yet the top one
    full = hessian.lanczos(quadratic_hvp(A), len(eigs), k=1, iters=100, which="top", tol=1e-6)
    assert full.converged and full.relative_residuals[0] <= 1e-6 and full.values[0] == pytest.approx(10.0, rel=1e-6)


def test_lanczos_ritz_vectors_are_eigenvectors():
    A = random_symmetric(40, np.linspace(-5, 5, 40))
    r = hessian.lanczos(quadratic_hvp(A), 40, k=1, iters=40, which="bottom", tol=1e-12, return_vectors=True)
    v = r.vectors[0]
    np.testing.assert_allclose((A @ v).numpy(), (r.values[0] * v).numpy(), atol=1e-8)

def test_analysis_uses_eval_mode_for_batch_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    model.train()
    before = model[1].running_mean.clone()
    hessian.full_hessian(model, x, y, loss="mse")
    assert model.training and torch.equal(model[1].running_mean, before)  # restored; stats untouched


def test_minimum_ratio_tolerance():
    eigs = np.array([-1.0, 1e-12, 0.0, 2.0, 3.0])
    r = hessian.minimum_ratio(eigs, tol=1e-9)
    assert (r["n_pos"], r["n_neg"], r["n_zero"]) == (2, 1, 2)
    assert r["ratio_all"] == pytest.approx(0.4) and r["ratio_nonzero"] == pytest.approx(2 / 3)
    # an absolute tolerance below the tiny eigenvalue counts it as positive
    assert hessian.minimum_ratio(eigs, tol=1e-13, relative=False)["n_pos"] == 3


@pytest.mark.parametrize("method", ["newton", "lbfgs"])
def test_critical_point_finder_reaches_small_gradient(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.linspace(-1, 1, 40, dtype=torch.float64).unsqueeze(1)
    y = torch.sin(3 * x).squeeze(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x).squeeze(1), y).backward()
        opt.step()
    cp = hessian.find_critical_point(model, x, y, loss="mse", method=method, max_iter=100, tol=1e-12)
    # the net is far from any critical point after 200 Adam steps: both methods must still cut ||g||
    assert cp.grad_norm < 0.5 * cp.grad_norm_start
    assert [h["grad_norm"] for h in cp.history] == sorted([h["grad_norm"] for h in cp.history], reverse=True)
    g = hessian.gradient(model, x, y, "mse")
    assert float(torch.linalg.vector_norm(g)) == pytest.approx(cp.grad_norm, rel=1e-6, abs=1e-14)


def test_critical_point_finder_from_toy_saddle_neighbourhood():
    # near (0.1, -0.05) Newton on the gradient converges to the saddle at the origin or to the valley
    model = Product(0.1, -0.05)
    cp = hessian.find_critical_point(model, *ONE, loss="mse", tol=1e-12)
    assert cp.converged
    w1, w2 = float(model.w1.detach()), float(model.w2.detach())
    assert abs(w1 * w2) < 1e-9 or abs(w1 * w2 - 1) < 1e-9
