"""2-parameter error surfaces and optimizer paths on them.

The toy experiments run the *same* torch.optim code as the real networks, on a 2-element
parameter tensor, so a path on a contour plot is what that optimizer really does.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from . import optim

Surface = Callable[[torch.Tensor], torch.Tensor]  # a (2,) parameter tensor -> scalar loss


def optimize_path(loss: Surface, start, optimizer: dict, steps: int, schedule: dict | None = None,
                  dtype=torch.float64, stop_below: float | None = None,
                  stop_above: float | None = None) -> np.ndarray:
    """Run torch.optim on `loss` from `start` for `steps` updates.

    Returns an array of shape (updates + 1, 3): parameters w1, w2 and the loss, start included.
    Stops early if the loss drops below `stop_below`, rises above `stop_above` or becomes non-finite.
    """
    w = torch.nn.Parameter(torch.as_tensor(start, dtype=dtype).clone())
    opt = optim.make_optimizer([w], optimizer)
    sched = optim.make_schedule(opt, schedule, steps)
    out = np.empty((steps + 1, 3))
    for k in range(steps + 1):
        opt.zero_grad()
        value = loss(w)
        out[k] = (float(w[0].detach()), float(w[1].detach()), float(value.detach()))
        if (k == steps or not np.isfinite(out[k, 2]) or (stop_below is not None and out[k, 2] < stop_below)
                or (stop_above is not None and out[k, 2] > stop_above)):
            return out[:k + 1]
        value.backward()
        opt.step()
        sched.step()
    return out


def grid(loss: Surface, xlim, ylim, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The surface evaluated on an n x n grid (vectorised: loss must broadcast over a (2, ...) tensor)."""
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    W = torch.as_tensor(np.stack([X, Y]))
    with torch.no_grad():
        Z = loss(W).numpy()
    return X, Y, Z


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
