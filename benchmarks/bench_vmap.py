"""Does training several seeds of one cell together (torch.func vmap over stacked parameters) beat
the loop? The optimizer_schedule cell at quick scale: an MLP [64, 64] on MNIST-1D-shaped data
(4,000 x 40, 10 classes), batch 64, 300 Adam updates, S seeds, one CPU thread.

loop: S models trained one after the other (the training loop's inner step: index a batch,
      forward, backward, step).
vmap: the S models' parameters stacked (torch.func.stack_module_state), one vmapped
      functional_call forward, one backward of the summed loss (each seed's gradient is its own:
      the parameters are separate slices), one torch.optim.Adam step on the stacked tensors
      (Adam is element-wise, so this equals S separate optimizers).
Run:  PYTHONPATH=src python benchmarks/bench_vmap.py [--seeds 3] [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from trainfail import models


def data(n: int = 4000, length: int = 40):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, length, generator=g), torch.randint(0, 10, (n,), generator=g)


def make(seeds: int, hidden) -> list[torch.nn.Module]:
    out = []
    for s in range(seeds):
        torch.manual_seed(s)
        out.append(models.build({"arch": "mlp", "hidden": hidden}, (1, 40), 10))
    return out


def batches(n: int, bs: int, steps: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    per_epoch = n // bs
    idx = [torch.randperm(n, generator=g)[:per_epoch * bs].view(per_epoch, bs) for _ in range(steps // per_epoch + 1)]
    return torch.cat(idx)[:steps]


def loop(nets, x, y, idx, lr) -> float:
    start = time.perf_counter()
    for s, net in enumerate(nets):
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for b in idx[s]:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    return time.perf_counter() - start


def vmapped(nets, x, y, idx, lr) -> float:
    params, buffers = stack_module_state(nets)
    params = {k: torch.nn.Parameter(v) for k, v in params.items()}
    base = copy.deepcopy(nets[0]).to("meta")
    opt = torch.optim.Adam(params.values(), lr=lr)

    def one(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    batched = torch.vmap(one)
    start = time.perf_counter()
    for k in range(idx.shape[1]):
        b = idx[:, k]  # (S, batch): each seed its own batch
        opt.zero_grad(set_to_none=True)
        batched(params, buffers, x[b], y[b]).sum().backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    a = ap.parse_args()
    torch.set_num_threads(1)
    x, y = data()
    idx = torch.stack([batches(len(x), 64, a.steps, s) for s in range(a.seeds)])
    times = {"loop": [], "vmap": []}
    loop(make(a.seeds, a.hidden), x, y, idx[:, :20], 1e-3)  # warm-up (allocator, first-call costs): not timed
    vmapped(make(a.seeds, a.hidden), x, y, idx[:, :20], 1e-3)
    for _ in range(a.repeats):
        times["loop"].append(loop(make(a.seeds, a.hidden), x, y, idx, 1e-3))
        times["vmap"].append(vmapped(make(a.seeds, a.hidden), x, y, idx, 1e-3))
    for k, v in times.items():
        print(f"{k}: median {statistics.median(v):.3f}s  (repeats {', '.join(f'{t:.3f}' for t in v)}) "
              f"for {a.seeds} seeds x {a.steps} updates")
    print(f"speed-up vmap over loop: {statistics.median(times['loop']) / statistics.median(times['vmap']):.2f}x")


if __name__ == "__main__":
    main()
