"""Time per update, measured honestly: warm-up excluded, the device synchronised, CUDA events on a GPU."""

from __future__ import annotations

import time

import torch
from torch import nn


def time_updates(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, repeats: int = 10, warmup: int = 3, loss_fn=nn.functional.cross_entropy,
                 seed: int = 0) -> list[float]:
    """Seconds for each of `repeats` single updates (forward, backward, step) at `batch_size`.

    Batches are index slices of device-resident tensors, as in training. The first `warmup`
    updates (allocator, kernel selection, caches) are run but not timed.
    """
    device = x.device
    n = x.shape[0]
    bs = min(batch_size, n)
    # batch offsets drawn on the CPU up front: reading a device random number inside the timed
    # window would add a device-to-host copy and a sync to every update
    offsets = iter(torch.randint(0, n - bs + 1, (warmup + repeats,),
                                 generator=torch.Generator().manual_seed(seed)).tolist())

    def update():
        start = next(offsets)
        xb, yb = x[start:start + bs], y[start:start + bs]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        optimizer.step()

    for _ in range(warmup):
        update()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            update()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1000.0)
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            update()
            times.append(time.perf_counter() - t0)
    return times
