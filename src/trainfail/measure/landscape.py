"""2-parameter error surfaces and optimizer paths on them.

The toy experiments run the *same* torch.optim code as the real networks, on a 2-element
parameter tensor, so a path on a contour plot is what that optimizer really does.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from trainfail.training import optim

Surface = Callable[[torch.Tensor], torch.Tensor]  # a (2,) parameter tensor -> scalar loss


def optimize_path(loss: Surface, start, optimizer: dict, steps: int, schedule: dict | None = None,
                  dtype=torch.float64, stop_below: float | None = None, stop_above: float | None = None,
                  check_every: int = 1000) -> np.ndarray:
    """Run torch.optim on `loss` from `start` for `steps` updates.

    start of shape (2,): returns an array (updates + 1, 3): parameters w1, w2 and the loss, start
    included. Stops early if the loss drops below `stop_below`, rises above `stop_above` or becomes
    non-finite (checked every `check_every` updates; the path is cut at the first such point).

    start of shape (S, 2): S paths at once, returned as (S, steps + 1, 3) and never cut. The
    parameter is one (S, 2) tensor and the loss the sum of the S losses, so each path gets its
    own gradient; every optimizer here updates element by element, so each path is exactly what
    a separate run from that start would do (tests/test_landscape.py checks it).

    Speed matters (tiny-lr GD makes 100,000 updates): the path is recorded into a preallocated
    tensor (no per-step float() conversions), a constant schedule skips LambdaLR, and the stop
    test reads the record in blocks rather than every step. `loss` must broadcast over a
    (2, ...) tensor, as for `grid`.
    """
    start = torch.as_tensor(start, dtype=dtype)
    single = start.ndim == 1
    w = torch.nn.Parameter(start.reshape(-1, 2).clone())
    opt = optim.make_optimizer([w], optimizer)
    constant = (schedule or {"name": "constant"}).get("name", "constant") == "constant"
    sched = None if constant else optim.make_schedule(opt, schedule, steps)
    # A surface that knows its gradient in closed form (loss.grad) skips autograd: the update is
    # still torch.optim's, only the gradient is computed directly (5x fewer ops per step), and
    # the losses are evaluated afterwards for the whole path at once.
    grad = getattr(loss, "grad", None)
    out = torch.empty(len(w), steps + 1, 3, dtype=dtype)
    params, values = out[:, :, :2], out[:, :, 2]
    done = 0  # updates [0, done) already checked for a stop
    for k in range(steps + 1):
        if grad is None:
            opt.zero_grad()
            value = loss(w.T)
        with torch.no_grad():
            params[:, k] = w
            if grad is None:
                values[:, k] = value
        if single and (k == steps or (k + 1 - done) >= check_every):
            if grad is not None:
                with torch.no_grad():
                    values[0, done:k + 1] = loss(params[0, done:k + 1].T)
            cut = _first_stop(values[0, done:k + 1], stop_below, stop_above)
            if cut is not None:
                return out[0, :done + cut + 1].numpy()
            done = k + 1
        if k == steps:
            break
        if grad is None:
            value.sum().backward()
        else:
            with torch.no_grad():
                w.grad = grad(w.T).T.contiguous()
        opt.step()
        if sched is not None:
            sched.step()
    if grad is not None and not single:
        with torch.no_grad():
            values.copy_(loss(params.permute(2, 0, 1)))
    return out[0].numpy() if single else out.numpy()


def _first_stop(values: torch.Tensor, stop_below: float | None, stop_above: float | None = None) -> int | None:
    """Index of the first non-finite value (or value below stop_below / above stop_above), None if none."""
    bad = ~torch.isfinite(values)
    if stop_below is not None:
        bad |= values < stop_below
    if stop_above is not None:
        bad |= values > stop_above
    idx = torch.nonzero(bad)
    return int(idx[0]) if len(idx) else None


def grid(loss: Surface, xlim, ylim, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The surface evaluated on an n x n grid (vectorised: loss must broadcast over a (2, ...) tensor)."""
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    W = torch.as_tensor(np.stack([X, Y]))
    with torch.no_grad():
        Z = loss(W).numpy()
    return X, Y, Z


# --- surfaces ---------------------------------------------------------------------------------

def quadratic(curvatures) -> Surface:
    """The bowl 0.5 (h1 w1^2 + h2 w2^2): minimum 0 at the origin, Hessian diag(h1, h2)."""
    h = torch.as_tensor(curvatures, dtype=torch.float64)

    def loss(w: torch.Tensor) -> torch.Tensor:
        # one broadcast product instead of indexing w[0], w[1]: half the autograd nodes per step
        return 0.5 * (h.reshape(2, *[1] * (w.ndim - 1)).to(w.dtype) * w.square()).sum(0)

    def grad(w: torch.Tensor) -> torch.Tensor:  # d loss / d w = (h1 w1, h2 w2), same shape as w
        return h.reshape(2, *[1] * (w.ndim - 1)).to(w.dtype) * w

    loss.grad = grad  # optimize_path uses it instead of autograd (tests check they agree)
    return loss


def tilted_double_well(tilt: float, valley: float) -> Surface:
    """(w1^2 - 1)^2 + tilt w1 + valley w2^2: a shallow local minimum near w1 = +1 and a deeper
    global one near w1 = -1, separated by a hump near w1 = tilt / 4 (the lecture's ball that
    momentum rolls over a small hill)."""

    def loss(w: torch.Tensor) -> torch.Tensor:
        return (w[0].square() - 1).square() + tilt * w[0] + valley * w[1].square()

    return loss


def double_well_critical_points(tilt: float) -> np.ndarray:
    """The w1 where d/dw1 [(w1^2 - 1)^2 + tilt w1] = 4 w1^3 - 4 w1 + tilt = 0, ascending."""
    roots = np.roots([4.0, 0.0, -4.0, tilt])
    return np.sort(roots[np.abs(roots.imag) < 1e-9].real)


# --- measurements on a path --------------------------------------------------------------------

def jumps(path: np.ndarray) -> np.ndarray:
    """Length of every update: |w_{k+1} - w_k| (path rows: w1, w2, loss)."""
    return np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1)


def floor_arrival(path: np.ndarray, floor: float) -> int | None:
    """The first update at which |w2| < floor (the valley floor of a bowl elongated along w1)."""
    idx = np.nonzero(np.abs(path[:, 1]) < floor)[0]
    return int(idx[0]) if len(idx) else None


def burst_ratio(path: np.ndarray, floor: float) -> tuple[float, float, float]:
    """(largest jump after first reaching the floor, largest jump on the way down, their ratio).

    A ratio above 1 is a burst: once on the floor, the path makes a jump longer than any it made
    while descending to it. NaN when the floor is never reached or the path is not finite.
    """
    k = floor_arrival(path, floor)
    d = jumps(path)
    if k is None or k == 0 or k >= len(d) or not np.isfinite(d).all():
        return np.nan, np.nan, np.nan
    after, before = float(d[k:].max()), float(d[:k].max())
    return after, before, after / before if before > 0 else np.nan


def thin(n: int, keep: int = 3000) -> np.ndarray:
    """Indices of at most `keep` points of an n-point path, evenly spread, first and last kept."""
    if n <= keep:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, keep).round().astype(int))


def steps_to_loss(loss: Surface, start, optimizer: dict, max_steps: int, target: float,
                  schedule: dict | None = None) -> tuple[float, bool, np.ndarray]:
    """Updates `optimize_path` needs to bring the loss below `target`.

    Returns (steps, diverged, path): steps is NaN when the target is not reached within max_steps;
    diverged means the loss became non-finite or ended above where it started. A loss 1e6 times
    the start's ends the run early: on a convex quadratic, GD that far up only climbs further.
    """
    path = optimize_path(loss, start, optimizer, max_steps, schedule, stop_below=target,
                         stop_above=1e6 * float(loss(torch.as_tensor(start, dtype=torch.float64)).detach()))
    last = path[-1, 2]
    steps = float(len(path) - 1) if np.isfinite(last) and last < target else float("nan")
    return steps, bool(not np.isfinite(last) or last > path[0, 2]), path


def steps_to_loss_rates(loss: Surface, start, lrs, max_steps: int, target: float) -> tuple[np.ndarray, np.ndarray]:
    """`steps_to_loss` for plain gradient descent at many learning rates at once.

    The same measurement as calling steps_to_loss(loss, start, {"name": "sgd", "lr": lr}, ...) per rate,
    with the paths stepped together: parameters (L, 2), one gradient for all (the loss summed over the
    rates, so each row gets its own), the update w - lr g per row. A row stops at its first loss below
    `target`, above 1e6 times the start's, or non-finite, and is frozen there. Returns (steps, diverged)
    per rate: steps NaN where the target was not reached; diverged where the loss became non-finite or
    ended above where it started. tests/test_feature_normalization.py checks it against steps_to_loss.
    """
    lr = torch.as_tensor([float(v) for v in lrs], dtype=torch.float64).unsqueeze(1)
    w = torch.as_tensor(start, dtype=torch.float64).reshape(1, 2).repeat(len(lr), 1)
    v0 = float(loss(w[0]).detach())
    above = 1e6 * v0
    n = len(lr)
    stop = torch.full((n,), -1, dtype=torch.long)  # the step a row stopped at, -1 while it runs
    last = torch.empty(n, dtype=torch.float64)
    grad = getattr(loss, "grad", None)  # a closed-form gradient skips autograd, as in optimize_path
    for k in range(int(max_steps) + 1):
        w = w.detach().requires_grad_(grad is None)
        with torch.set_grad_enabled(grad is None):
            value = loss(w.T)
        running = stop < 0
        with torch.no_grad():
            bad = running & (~torch.isfinite(value) | (value < target) | (value > above))
            stop[bad] = k
            last[running] = value[running]
        running = stop < 0
        if k == max_steps or not bool(running.any()):
            break
        if grad is None:
            (g,) = torch.autograd.grad(value.sum(), w)
        with torch.no_grad():
            if grad is not None:
                g = grad(w.T).T
            w = torch.where(running.unsqueeze(1), w - lr * g, w)
    last_np, stop_np = last.numpy(), stop.numpy()
    reached = np.isfinite(last_np) & (last_np < target)
    steps = np.where(reached, np.where(stop_np >= 0, stop_np, max_steps), np.nan).astype(float)
    diverged = ~np.isfinite(last_np) | (last_np > v0)
    return steps, diverged


def jittered_starts(start: list[float], jitter: float, seeds: list[int]) -> list[list[float]]:
    """The start moved by jitter x N(0, 1) per coordinate, one start per seed (2-D toy paths)."""
    out = []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(2, generator=g, dtype=torch.float64) * float(jitter)
        out.append([float(v) for v in torch.as_tensor(start, dtype=torch.float64) + noise])
    return out
