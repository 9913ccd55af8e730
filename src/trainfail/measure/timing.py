"""Time per update and per epoch, measured honestly: warm-up excluded, the device synchronised
before a clock is read, CUDA events on a GPU.

On a GPU an update is a queue of kernel launches: timing one update alone (launch, then wait
for the device) adds the launch latency that back-to-back updates in real training overlap
with the previous update's work. So updates are timed in blocks of back-to-back updates with
one synchronisation at the end of each block, and epochs are timed whole.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn


def updates_per_epoch(n: int, batch_size: int) -> int:
    """The training loop's epoch (train.total_steps): full batches only, at least one."""
    return max(n // min(batch_size, n), 1)


def block_size(batch_size: int, n: int, block: int, block_examples: int) -> int:
    """Back-to-back updates per timed block: `block`, but no more than `block_examples` examples
    (a large batch keeps the device busy far longer than a launch takes: no overlap to gain, and
    its updates are costly) and no more than one epoch; at least one."""
    return max(1, min(block, block_examples // max(batch_size, 1), updates_per_epoch(n, batch_size)))


def _timed(device: torch.device, work: Callable[[], None]) -> float:
    """Seconds `work` takes on `device`: CUDA events around it on a GPU (the host waits for the
    end event), the host clock on a CPU. Earlier queued work is finished before it starts."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        work()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def time_updates(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, repeats: int = 10, warmup: int = 3, loss_fn=nn.functional.cross_entropy,
                 seed: int = 0, block: int = 1) -> list[float]:
    """Seconds per update (forward, backward, step) at `batch_size`, one value per repeat: each
    repeat times `block` back-to-back updates and divides by `block`.

    Batches are index slices of device-resident tensors, as in training. The first `warmup`
    updates (allocator, kernel selection, caches) are run but not timed.
    """
    device = x.device
    n = x.shape[0]
    bs = min(batch_size, n)
    # batch offsets drawn on the CPU up front: reading a device random number inside the timed
    # window would add a device-to-host copy and a sync to every update
    offsets = iter(torch.randint(0, n - bs + 1, (warmup + repeats * block,),
                                 generator=torch.Generator().manual_seed(seed)).tolist())

    def update():
        start = next(offsets)
        xb, yb = x[start:start + bs], y[start:start + bs]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        optimizer.step()

    def updates():
        for _ in range(block):
            update()

    for _ in range(warmup):
        update()
    return [_timed(device, updates) / block for _ in range(repeats)]


def time_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, repeats: int = 3, loss_fn=nn.functional.cross_entropy, seed: int = 0) -> list[float]:
    """Seconds per epoch at `batch_size`, one value per repeat, each a real epoch as the training
    loop runs it (train.train): a permutation drawn on the device, then updates_per_epoch()
    back-to-back updates on index-gathered batches. Warm up first (time_updates at this size)."""
    device = x.device
    n = x.shape[0]
    bs = min(batch_size, n)
    generator = torch.Generator(device=device).manual_seed(seed)

    def epoch():
        perm = torch.randperm(n, device=device, generator=generator)
        for k in range(updates_per_epoch(n, bs)):
            idx = perm[k * bs:(k + 1) * bs]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()

    return [_timed(device, epoch) for _ in range(repeats)]
