"""Sharp and flat minima (Keskar et al. 2017): epsilon-sharpness, the 1-D interpolation between
two solutions, the distance a solution travelled from its initial point, and the short
full-batch descent ("polish") that ends a run before its point is measured.

epsilon-sharpness (Keskar's Metric 2.1). Around a solution x of the training loss f, with an
n x p matrix A, the box C_eps = {y in R^p : |y_i| <= eps (|(A^+ x)_i| + 1)} (the "+1" keeps the
box open where a coordinate is 0) and

    phi(x, f, eps, A) = 100 * (max_{y in C_eps} f(x + A y) - f(x)) / (1 + f(x)).

A = I is the full space (Keskar's Table 3). For the random subspace (Table 4, p = 100) the paper
takes "a randomly sampled n x p matrix" A and sizes the box with its pseudo-inverse A^+; it
gives no normalisation, and the pseudo-inverse would be needless for orthonormal columns (A^+ =
A^T). Here A has i.i.d. standard normal entries, the plain reading. With it the subspace search
reaches further per coordinate than the full one (||A y|| is about sqrt(n) ||y||) but along only
p directions, and subspace / full sharpness scales like p^2 / n: about 1 for nets of 10^4
parameters, about 10^-2 for Keskar's F1 (1.4 million), whose Table 4 values are 10-20 times
below its Table 3 ones. An orthonormal A would put that ratio near p^2 / n^2 (10^-8 for F1), far
below Keskar's: it is not the paper's convention. tests/test_sharpness.py checks the p^2 / n law.

Keskar maximised with L-BFGS-B (10 iterations, scipy's `minimize(method="L-BFGS-B")` with the
box as bounds): `method="lbfgsb"`. `method="ascent"` is projected gradient ascent with sign steps
(the steepest-ascent direction for a box, as in PGD adversarial attacks): each step moves every
coordinate by a fraction of its own half-width, then clips to the box; the fraction decays
linearly so interior maxima are approached too, and the best value seen is kept. Both start from
the same random point of the box (at an exact minimum the gradient is zero and a search started
at the centre would never move) and both give a lower bound on the true maximum. Neither
dominates on trained nets (tests/test_sharpness.py: the ascent finds the higher value in the full
space, L-BFGS-B, by a fraction of a percent, in the 100-dim subspace), so `method="best"` (the
default) runs both and keeps the larger lower bound.

The first-order part of the sharpness is what the linear term alone reaches in the box,
max_y g^T A y = sum_i |(A^T g)_i| halfwidth_i (in the same units): at a point that is not
stationary (an SGD iterate in its noise ball) it can make up most of the measured sharpness.

Batch norm: f must be a function of the parameters alone, with the statistics recomputed at every
point (never carried over from the trained point, never interpolated). For a batch-norm net, f is
the loss of the whole set (x, y) in one batch, each BN layer normalising with the statistics of
that batch (train-mode BN): the statistics of the data at theta, and differentiable through them,
so the search, the polish and the Hessian see their dependence on the parameters (frozen
statistics give a wrong gradient: a BN layer makes the loss invariant to the scale of the weights
before it, which frozen statistics do not). Callers pass a subset of the training set when a whole
batch does not fit. Nets without batch norm are evaluated in eval mode, in chunks.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from trainfail.core import phases
from trainfail.training import batchnorm, train
from trainfail.measure.hessian import flat_parameters

# theta (flat parameter vector) -> (loss, gradient wrt theta), both detached
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

EPSILONS = (1e-3, 5e-4)  # Keskar's Tables 3 and 4
SUBSPACE_DIM = 100
METHODS = ("best", "ascent", "lbfgsb")


def functional_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    loss: str = "cross_entropy") -> Callable[[torch.Tensor], torch.Tensor]:
    """theta -> the mean loss over (x, y) in one batch with the parameters set to theta, as a
    differentiable function. Eval mode, except batch-norm layers, which normalise with the batch's
    own statistics (module docstring). The model is not touched."""
    probe = copy.deepcopy(model).eval()
    for _, layer in batchnorm.bn_layers(probe):
        layer.train()  # statistics of (x) at theta; the copy's running buffers absorb the updates
    names = [n for n, _ in probe.named_parameters()]
    shapes = [p.shape for _, p in probe.named_parameters()]
    sizes = [math.prod(s) for s in shapes]
    buffers = dict(probe.named_buffers())
    f = train.loss_fn(loss)

    def value(theta: torch.Tensor) -> torch.Tensor:
        params = {name: t.view(shape) for name, t, shape in zip(names, torch.split(theta, sizes), shapes)}
        return f(functional_call(probe, {**params, **buffers}, (x,)), y)

    return value


def model_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
                    chunk: int = 8192) -> Objective:
    """f(theta): the mean loss over the whole set (x, y) with the model's parameters set to theta,
    with its gradient. A batch-norm net: `functional_loss`, one batch. Others: eval mode, the set
    processed in chunks so that memory stays bounded. The model is not touched."""
    has_bn = bool(batchnorm.bn_layers(model))
    chunk = len(x) if has_bn else chunk
    pieces = [(functional_loss(model, x[i:i + chunk], y[i:i + chunk], loss), len(x[i:i + chunk]) / len(x))
              for i in range(0, len(x), chunk)]

    def objective(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = theta.detach().requires_grad_(True)
        total = torch.zeros((), device=theta.device, dtype=theta.dtype)
        grad = torch.zeros_like(theta)
        for value_of, weight in pieces:
            value = value_of(theta) * weight
            (g,) = torch.autograd.grad(value, theta)
            total, grad = total + value.detach(), grad + g
        return total, grad

    return objective


def model_hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              loss: str = "cross_entropy") -> Callable[[torch.Tensor], torch.Tensor]:
    """Hessian-vector products of `functional_loss` at the model's parameters (double backward; the
    gradient graph is built once). hessian.hvp_fn holds batch-norm statistics fixed (eval mode);
    this one differentiates through them, like the rest of this module."""
    theta = flat_parameters(model).requires_grad_(True)
    (g,) = torch.autograd.grad(functional_loss(model, x, y, loss)(theta), theta, create_graph=True)

    def apply(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(g, theta, grad_outputs=v.to(g.dtype), retain_graph=True)[0]

    return apply


def box_halfwidth(center: torch.Tensor, eps: float) -> torch.Tensor:
    """Keskar's box C_eps: half-width eps (|c_i| + 1) per coordinate."""
    return eps * (center.abs() + 1.0)


def _random_start(half: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(half.shape, generator=generator, dtype=half.dtype, device="cpu").to(half.device)
    return (2 * u - 1) * half


def ascend_in_box(objective: Objective, half: torch.Tensor, steps: int = 20, step_fraction: float = 0.5,
                  generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
    """max over {v : |v_i| <= half_i} of objective(v) by projected sign-gradient ascent.

    Returns (best value, its maximiser). steps gradient evaluations plus one; step t moves each
    coordinate by step_fraction * (1 - t / steps) * half_i (linear decay to zero).
    """
    v = _random_start(half, generator)
    best_value, best_v = -math.inf, v
    for t in range(steps + 1):
        value, grad = objective(v)
        value = float(value)
        if not math.isfinite(value):  # a blow-up inside the box: that is as sharp as it gets
            return math.inf, v
        if value > best_value:
            best_value, best_v = value, v
        if t == steps:
            break
        step = step_fraction * (1.0 - t / steps) * half
        v = torch.clamp(v + step * torch.sign(grad), -half, half)
    return best_value, best_v


class _Unbounded(Exception):
    """The objective was not finite somewhere in the box."""


def lbfgsb_in_box(objective: Objective, half: torch.Tensor, iters: int = 10,
                  generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
    """max over the box by scipy's L-BFGS-B on -objective with the box as bounds (Keskar's method:
    10 iterations). Starts where `ascend_in_box` starts; returns the best value it evaluated."""
    import numpy as np
    from scipy.optimize import Bounds, minimize

    best = {"value": -math.inf, "v": None}

    def negated(v: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.from_numpy(v).to(dtype=half.dtype, device=half.device)
        value, grad = objective(t)
        value = float(value)
        if not math.isfinite(value):
            best["value"], best["v"] = math.inf, t
            raise _Unbounded
        if value > best["value"]:
            best["value"], best["v"] = value, t
        return -value, -grad.detach().double().cpu().numpy()

    h = half.detach().double().cpu().numpy()
    start = _random_start(half, generator).double().cpu().numpy()
    try:
        minimize(negated, start, jac=True, method="L-BFGS-B", bounds=Bounds(-h, h), options={"maxiter": iters})
    except _Unbounded:
        pass
    return best["value"], best["v"]


def maximize_in_box(objective: Objective, half: torch.Tensor, steps: int = 20, method: str = "best",
                    generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
    """max of objective over {v : |v_i| <= half_i}: `steps` ascent steps, or L-BFGS-B iterations,
    or ("best") both from the same start, keeping the higher value."""
    if method not in METHODS:
        raise ValueError(f"sharpness method must be one of {METHODS}, got {method!r}")
    state = generator.get_state() if generator is not None else None
    found = []
    if method in ("ascent", "best"):
        found.append(ascend_in_box(objective, half, steps, generator=generator))
    if method in ("lbfgsb", "best"):
        if method == "best" and state is not None:
            generator.set_state(state)  # the same start as the ascent
        found.append(lbfgsb_in_box(objective, half, steps, generator=generator))
    return max(found, key=lambda r: r[0])


def random_subspace(n: int, dim: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Keskar's random n x p matrix A: i.i.d. standard normal entries (drawn on the CPU, seeded)."""
    return torch.randn(n, dim, generator=generator, dtype=dtype).to(device)


@phases.timed("curvature")
def epsilon_sharpness(objective: Objective, x: torch.Tensor, eps: float, subspace_dim: int | None = None,
                      steps: int = 20, seed: int = 0, method: str = "best") -> dict:
    """Keskar's epsilon-sharpness of `objective` at x, in the full space or a random subspace.

    Returns {sharpness, first_order, grad_norm, f0, fmax, eps, dim}: sharpness =
    100 (fmax - f0) / (1 + f0); first_order = the same for the linear term alone (module docstring).
    """
    g = torch.Generator().manual_seed(seed)
    f0, grad = objective(x)
    f0 = float(f0)
    if subspace_dim is None:
        half = box_halfwidth(x, eps)
        fmax, _ = maximize_in_box(lambda z: objective(x + z), half, steps, method, generator=g)
        search_grad, dim = grad, x.numel()
    else:
        subspace_dim = min(subspace_dim, x.numel())  # a subspace cannot be larger than the space
        a = random_subspace(x.numel(), subspace_dim, g, x.dtype, x.device)
        half = box_halfwidth(torch.linalg.lstsq(a, x.unsqueeze(1)).solution.squeeze(1), eps)  # around A^+ x

        def in_subspace(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            value, grad_x = objective(x + a @ y)
            return value, a.T @ grad_x  # chain rule: d f(x + A y) / dy = A^T grad f

        fmax, _ = maximize_in_box(in_subspace, half, steps, method, generator=g)
        search_grad, dim = a.T @ grad, subspace_dim
    fmax = max(fmax, f0)  # the centre belongs to the box
    linear = float((search_grad.abs() * half).sum())
    return {"sharpness": 100.0 * (fmax - f0) / (1.0 + f0), "first_order": 100.0 * linear / (1.0 + f0),
            "grad_norm": float(torch.linalg.vector_norm(grad)), "f0": f0, "fmax": fmax, "eps": eps, "dim": dim}


def model_sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    subspace_dim: int | None = None, loss: str = "cross_entropy", steps: int = 20,
                    seed: int = 0, method: str = "best") -> dict:
    """epsilon_sharpness of the training loss at the model's current parameters (eval mode)."""
    return epsilon_sharpness(model_objective(model, x, y, loss), flat_parameters(model), eps,
                             subspace_dim, steps, seed, method)


def polish(objective: Objective, x: torch.Tensor, lr: float, steps: int, stop_below: float = -math.inf) -> dict:
    """Full-batch gradient descent from x at rate lr, halving lr whenever a step would raise the
    loss (so the loss never goes up): at most `steps` steps, fewer if the loss falls to
    `stop_below`. With lr = 1 / (top Hessian eigenvalue) the first steps remove the SGD noise that
    sits in the high-curvature directions, so the point reached is near stationary along them.
    Returns {x, loss, grad_norm, lr, steps} at the end (steps: the steps taken).
    """
    value, grad = objective(x)
    taken = 0
    for _ in range(steps):
        if float(value) <= stop_below:
            break
        trial = x - lr * grad
        v, g = objective(trial)
        if not math.isfinite(float(v)) or float(v) > float(value):
            lr /= 2
            continue
        x, value, grad, taken = trial, v, g, taken + 1
    return {"x": x.detach(), "loss": float(value), "grad_norm": float(torch.linalg.vector_norm(grad)), "lr": lr,
            "steps": taken}


def parameter_names(model: nn.Module) -> list[str]:
    """The state-dict keys that are positions in parameter space (batch-norm running statistics
    and counters are not: they follow from the parameters and the data)."""
    return [n for n, _ in model.named_parameters()]


@phases.timed("curvature")
def interpolate(model: nn.Module, state_a: dict, state_b: dict, alphas: Iterable[float],
                sets: dict[str, tuple[torch.Tensor, torch.Tensor]], loss: str = "cross_entropy",
                statistics_from: str = "train") -> list[dict]:
    """Keskar's 1-D parametric plot: loss and accuracy at alpha * a + (1 - alpha) * b.

    Only the parameters are interpolated, as in Keskar's own code. A batch-norm net gets, at every
    alpha, the statistics of sets[statistics_from] at the interpolated weights: running variances
    interpolated linearly go negative for alpha > 1 (NaN losses exactly where a sharp minimum
    would show). Returns one row per (alpha, set): {alpha, split, loss, acc}. `model` is not modified.
    """
    probe = copy.deepcopy(model)
    device = next(iter(probe.parameters())).device
    has_bn = bool(batchnorm.bn_layers(probe))
    rows = []
    for alpha in alphas:
        with torch.no_grad():
            for name, p in probe.named_parameters():
                p.copy_(alpha * state_a[name].to(device) + (1 - alpha) * state_b[name].to(device))
        if has_bn:
            batchnorm.recompute_statistics(probe, sets[statistics_from][0])
        for split, (x, y) in sets.items():
            value, acc = train.evaluate(probe, x, y, loss)
            rows.append({"alpha": float(alpha), "split": split, "loss": value, "acc": acc})
    return rows


def distance(state: dict, state0: dict, keys: Sequence[str] | None = None) -> float:
    """Euclidean distance between two points in parameter space, ||theta - theta0||.

    keys: the entries to compare (e.g. `parameter_names(model)`, leaving batch-norm running
    statistics out); by default every floating-point entry.
    """
    keys = keys if keys is not None else [k for k, v in state.items() if v.is_floating_point()]
    sq = sum(float(((state[k].double() - state0[k].double().to(state[k].device)) ** 2).sum()) for k in keys)
    return math.sqrt(sq)
