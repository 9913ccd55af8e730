"""Training-loop throughput: trainfail's device-resident index-slice loop against a plain
torch.utils.data.DataLoader loop, same model, batch size, optimizer and number of steps.

    python benchmarks/bench_loop.py [--device cpu|cuda] [--batch-size 128] [--steps 300]

Prints steps per second for both and their ratio (measured in one run, warm-up excluded).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from trainfail.core import provenance
from trainfail.training import data, models, optim


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(ds, model, opt, bs, steps, device) -> float:
    g = torch.Generator(device=device).manual_seed(0)
    per_epoch = ds.n_train // bs
    perm = None
    sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(ds.n_train, device=device, generator=g)
        idx = perm[(step % per_epoch) * bs:(step % per_epoch + 1) * bs]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx]).backward()
        opt.step()
    sync(device)
    return steps / (time.perf_counter() - t0)


def dataloader(ds_cpu, model, opt, bs, steps, device) -> float:
    loader = DataLoader(TensorDataset(ds_cpu.x_train, ds_cpu.y_train), batch_size=bs, shuffle=True, drop_last=True,
                        pin_memory=device.type == "cuda")
    done = 0
    sync(device)
    t0 = time.perf_counter()
    while done < steps:
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    sync(device)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset", default="mnist1d")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = provenance.resolve_device(args.device)
    ds_cpu = data.load(args.dataset)
    ds = ds_cpu.to(device)
    print(f"device: {provenance.device_name(device)}; dataset {args.dataset}; batch {args.batch_size}; {args.steps} steps")
    for spec in ({"arch": "mlp", "hidden": [100, 100]}, {"arch": "cnn", "channels": [16, 32]}):
        results = {}
        for name, fn, d in (("index slices", ours, ds), ("DataLoader", dataloader, ds_cpu)):
            torch.manual_seed(0)
            model = models.build(spec, ds.input_shape, 10).to(device)
            opt = optim.make_optimizer(model.parameters(), {"name": "sgd", "lr": 0.05})
            fn(d, model, opt, args.batch_size, 20, device)  # warm-up
            results[name] = max(fn(d, model, opt, args.batch_size, args.steps, device) for _ in range(3))
        ratio = results["index slices"] / results["DataLoader"]
        print(f"{spec['arch']}: index slices {results['index slices']:.0f} steps/s, "
              f"DataLoader {results['DataLoader']:.0f} steps/s, ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
