"""Sharp and flat minima (Keskar et al. 2017): epsilon-sharpness, the 1-D interpolation between
two solutions, and the distance a solution travelled from its initial point.

epsilon-sharpness (Keskar's Metric 2.1). Around a solution x of the training loss f, the box
C_eps = {z : |z_i| <= eps (|x_i| + 1)} (the "+1" keeps the box open where x_i = 0), and

    phi(x, f, eps, A) = 100 * (max_{y in C_eps} f(x + A y) - f(x)) / (1 + f(x)),

with A the identity (the full space) or a random n x p matrix (a random p-dimensional subspace,
Keskar's p = 100; there the box is on y, with half-widths eps (|(A^+ x)_i| + 1), A^+ the
pseudo-inverse). Keskar maximised with L-BFGS-B (10 iterations). Here the maximiser is projected
gradient ascent with sign steps (the steepest-ascent direction for a box, as in PGD adversarial
attacks): each step moves every coordinate by a fraction of its own half-width, then clips to the
box; the fraction decays linearly so interior maxima are approached too, and the best value seen
is kept. It starts from a random point of the box, because at an exact minimum the gradient is
zero and an ascent started at the centre would never move. A maximiser of a convex function over
a box sits at a corner, which sign steps reach in a few iterations; like L-BFGS-B it gives a lower
bound on the true maximum.

Models are evaluated in eval mode throughout (batch norm uses its running statistics), so f is a
deterministic function of the parameters.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from . import train
from .hessian import flat_parameters

# theta (flat parameter vector) -> (loss, gradient wrt theta), both detached
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

EPSILONS = (1e-3, 5e-4)  # Keskar's Tables 3 and 4
SUBSPACE_DIM = 100


def model_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
                    chunk: int = 8192) -> Objective:
    """f(theta): the mean loss over the whole set (x, y) with the model's parameters set to theta.

    The model is switched to eval mode (batch norm with running statistics, no dropout); its
    parameters are not touched. The set is processed in chunks so memory stays bounded.
    """
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [math.prod(s) for s in shapes]
    buffers = dict(model.named_buffers())
    f = train.loss_fn(loss)
    n = len(x)

    def objective(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = theta.detach().requires_grad_(True)
        params = {name: t.view(shape) for name, t, shape in zip(names, torch.split(theta, sizes), shapes)}
        total = torch.zeros((), device=theta.device, dtype=theta.dtype)
        grad = torch.zeros_like(theta)
        for i in range(0, n, chunk):
            xb, yb = x[i:i + chunk], y[i:i + chunk]
            value = f(functional_call(model, {**params, **buffers}, (xb,)), yb) * (len(yb) / n)
            (g,) = torch.autograd.grad(value, theta)
            total, grad = total + value.detach(), grad + g
        return total, grad

    return objective


def box_halfwidth(center: torch.Tensor, eps: float) -> torch.Tensor:
    """Keskar's box C_eps: half-width eps (|c_i| + 1) per coordinate."""
    return eps * (center.abs() + 1.0)


def maximize_in_box(objective: Objective, half: torch.Tensor, steps: int = 20, step_fraction: float = 0.5,
                    generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
    """max over {v : |v_i| <= half_i} of objective(v) by projected sign-gradient ascent.

    Returns (best value, its maximiser). steps gradient evaluations plus one; step t moves each
    coordinate by step_fraction * (1 - t / steps) * half_i (linear decay to zero).
    """
    u = torch.rand(half.shape, generator=generator, dtype=half.dtype, device="cpu").to(half.device)
    v = (2 * u - 1) * half
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


def random_subspace(n: int, dim: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Keskar's random n x p matrix A: i.i.d. standard normal entries (drawn on the CPU, seeded)."""
    return torch.randn(n, dim, generator=generator, dtype=dtype).to(device)


def epsilon_sharpness(objective: Objective, x: torch.Tensor, eps: float, subspace_dim: int | None = None,
                      steps: int = 20, seed: int = 0) -> dict:
    """Keskar's epsilon-sharpness of `objective` at x, in the full space or a random subspace.

    Returns {sharpness, f0, fmax, eps, dim}: sharpness = 100 (fmax - f0) / (1 + f0).
    """
    g = torch.Generator().manual_seed(seed)
    f0 = float(objective(x)[0])
    if subspace_dim is None:
        fmax, _ = maximize_in_box(lambda z: objective(x + z), box_halfwidth(x, eps), steps, generator=g)
        dim = x.numel()
    else:
        subspace_dim = min(subspace_dim, x.numel())  # a subspace cannot be larger than the space
        a = random_subspace(x.numel(), subspace_dim, g, x.dtype, x.device)
        coords = torch.linalg.lstsq(a, x.unsqueeze(1)).solution.squeeze(1)  # A^+ x

        def in_subspace(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            value, grad = objective(x + a @ y)
            return value, a.T @ grad  # chain rule: d f(x + A y) / dy = A^T grad f

        fmax, _ = maximize_in_box(in_subspace, box_halfwidth(coords, eps), steps, generator=g)
        dim = subspace_dim
    fmax = max(fmax, f0)  # the centre belongs to the box
    return {"sharpness": 100.0 * (fmax - f0) / (1.0 + f0), "f0": f0, "fmax": fmax, "eps": eps, "dim": dim}


def model_sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    subspace_dim: int | None = None, loss: str = "cross_entropy", steps: int = 20,
                    seed: int = 0) -> dict:
    """epsilon_sharpness of the training loss at the model's current parameters (eval mode)."""
    return epsilon_sharpness(model_objective(model, x, y, loss), flat_parameters(model), eps,
                             subspace_dim, steps, seed)


def interpolate(model: nn.Module, state_a: dict, state_b: dict, alphas: Iterable[float], x: torch.Tensor,
                y: torch.Tensor, loss: str = "cross_entropy") -> list[dict]:
    """Keskar's 1-D parametric plot: loss and accuracy at alpha * a + (1 - alpha) * b for each alpha.

    Every floating-point entry of the state dicts is interpolated, batch norm's running mean and
    variance included (the model is evaluated in eval mode, with those statistics); integer
    buffers (num_batches_tracked) are taken from b. The model passed in is not modified.
    """
    probe = copy.deepcopy(model)
    device = next(iter(probe.parameters())).device
    rows = []
    for alpha in alphas:
        mixed = {k: (alpha * state_a[k].to(device) + (1 - alpha) * state_b[k].to(device))
                 if state_b[k].is_floating_point() else state_b[k] for k in state_b}
        probe.load_state_dict(mixed)
        value, acc = train.evaluate(probe, x, y, loss)
        rows.append({"alpha": float(alpha), "loss": value, "acc": acc})
    return rows


def distance(state: dict, state0: dict, keys: Sequence[str] | None = None) -> float:
    """Euclidean distance between two points in parameter space, ||theta - theta0||.

    keys: the entries to compare (e.g. the model's parameter names, leaving batch-norm running
    statistics out); by default every floating-point entry.
    """
    keys = keys if keys is not None else [k for k, v in state.items() if v.is_floating_point()]
    sq = sum(float(((state[k].double() - state0[k].double().to(state[k].device)) ** 2).sum()) for k in keys)
    return math.sqrt(sq)
