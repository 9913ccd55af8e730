"""Runs trained together (trainfail.training.stack) against the one-run loop (trainfail.training.train): same work,
one process. Prints runs/s of each and their ratio; it is a measurement, not a test.

    python benchmarks/bench_stack.py                  # CPU, quick scale: MNIST-1D, MLP [64, 64] and
                                                      # the conv net [16, 32], 3, 5 and 16 members
    python benchmarks/bench_stack.py --device cuda    # GPU, the full preset's cells: Fashion-MNIST,
                                                      # MLP [512, 512] and the conv net, 3, 5, 16 members
    python benchmarks/bench_stack.py --only nv --members 3   # the quick preset's normalization_variants
                                                      # cells (digits, conv net [16, 32], batch 2 and 32,
                                                      # batch/layer/instance norm, 3 seeds)

Each cell is one set of training settings (the optimizer_schedule cell: Adam, batch 64 or 128,
evaluation on the whole train and test sets 5 times); `loop` trains its members one after the
other with train.train, `stack` all at once with stack.train_stack, as a shard job does. Both
produce the same rows (bit for bit on a CPU whose kernels agree, trainfail.training.stack.exact_here(),
as this project's CI machines; elsewhere they differ from the first update on, by rounding that
training amplifies: the `max diff` column says by how much; on a GPU likewise). On the CPU a third
engine, `grouped`, is what `stack_exact: false` trains: every layer batched as on a GPU (one grouped
convolution for all members), equal to the loop to float32 rounding; its `max diff` column says how
far from the loop it ends. A warm-up cell (a few steps, every engine) is not timed; GPU clocks are
read after torch.cuda.synchronize. CPU time (user + sys of this process) is printed beside wall
time, because wall time is inflated when other jobs share the machine.

`--steps-only` adds the bare training step (forward, backward, update of S members, no
evaluation) in three implementations: the loop, the grouped layers the engine uses, and
torch.func.vmap over stacked parameters (the alternative the engine was chosen against);
`--compile` adds the grouped step under torch.compile(mode="reduce-overhead") (CUDA graphs on
a GPU). `--tf32` allows TF32 matmuls and convolutions (GPU). Missing datasets are replaced by
random tensors of the same shape (`--data random` forces it).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

from trainfail.core import run_record, run_settings
from trainfail.training import data, models, optim, stack, train
from trainfail.core.provenance import make_deterministic

SHAPES = {"mnist1d": ((1, 40), 4000, 1000), "fashion_mnist": ((1, 28, 28), 60000, 10000), "digits": ((1, 8, 8), 1437, 360)}


def dataset(name: str, kind: str, device: torch.device) -> tuple[data.Dataset, str]:
    if kind == "real":
        try:
            return data.load(name).to(device), "real"
        except Exception as e:  # noqa: BLE001 - any reason the data are absent: fall back, say so
            print(f"({name} unavailable: {type(e).__name__}: {e}; random tensors of its shape instead)")
    shape, n, n_test = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    ds = data.Dataset(name, torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g),
                      torch.randn(n_test, *shape, generator=g), torch.randint(0, 10, (n_test,), generator=g), 10)
    return ds.to(device), "random"


def clock(device: torch.device) -> tuple[float, float]:
    train.sync(device)
    return time.perf_counter(), time.process_time()


def timed(fn, device: torch.device) -> tuple[float, float, object]:
    w0, c0 = clock(device)
    out = fn()
    w1, c1 = clock(device)
    return w1 - w0, c1 - c0, out


def max_diff(a: list[run_record.RunResult], b: list[run_record.RunResult]) -> float:
    """The largest relative difference of any logged number between two engines' runs."""
    worst = 0.0
    for x, y in zip(a, b):
        if len(x.rows) != len(y.rows):
            return math.inf
        for r, s in zip(x.rows, y.rows):
            for k in r.keys() - {"wall_time"}:
                u, v = r[k], s.get(k)
                if v is None:
                    return math.inf
                if u == v or (math.isnan(u) and math.isnan(v)):
                    continue
                worst = max(worst, abs(u - v) / max(1.0, abs(v)))
    return worst


# --- the bare step, three ways ------------------------------------------------------------------

def members_for(cell: list[dict], ds: data.Dataset, device: torch.device) -> list[torch.nn.Module]:
    out = []
    for s in cell:
        make_deterministic(int(s["seed"]))
        out.append(models.build(s["model"], ds.input_shape, ds.num_classes).to(device))
    return out


def step_loop(cell, ds, device, batches) -> None:
    for s, net in zip(cell, members_for(cell, ds, device)):
        opt = optim.make_optimizer(net.parameters(), s["optimizer"])
        i = int(s["seed"]) % len(batches)
        for b in batches[i]:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(ds.x_train[b]), ds.y_train[b]).backward()
            opt.step()


def step_grouped(cell, ds, device, batches, compiled: bool = False) -> None:
    net = stack.StackedNet(members_for(cell, ds, device), exact=stack.exact_on(device))
    opt = optim.make_optimizer(list(net.params.values()), cell[0]["optimizer"])

    def loss(xb, yb):
        return stack.member_losses(net(xb), yb, "cross_entropy", net.exact).sum()

    f = torch.compile(loss, mode="reduce-overhead") if compiled else loss
    idx = torch.stack([batches[int(s["seed"]) % len(batches)] for s in cell], 1)  # (steps, S, B)
    for b in idx:
        for p in net.params.values():
            p.grad = None
        f(ds.x_train[b], ds.y_train[b]).backward()
        opt.step()


def step_vmap(cell, ds, device, batches) -> None:
    from torch.func import functional_call, stack_module_state

    nets = members_for(cell, ds, device)
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    opt = optim.make_optimizer(list(params.values()), cell[0]["optimizer"])

    def one(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    batched = torch.vmap(one)
    idx = torch.stack([batches[int(s["seed"]) % len(batches)] for s in cell], 1)
    for b in idx:
        opt.zero_grad(set_to_none=True)
        batched(params, buffers, ds.x_train[b], ds.y_train[b]).sum().backward()
        opt.step()


# --- the benchmark ------------------------------------------------------------------------------

def bench_cell(label: str, settings: dict, ds: data.Dataset, device: torch.device, sizes: list[int],
               repeats: int, steps_only: bool, compiled: bool) -> None:
    print(f"\n{label}: {settings['model']} on {ds.name} ({ds.n_train} x {tuple(ds.input_shape)}), batch "
          f"{settings['batch_size']}, {settings['steps']} steps, {settings['optimizer']['name']}, "
          f"evaluated {settings['eval_points']} times")
    warm = [{**settings, "steps": 3, "seed": s} for s in range(2)]
    train.train(warm[0], ds, device)
    stack.train_stack(warm, ds, device)
    engines = {"loop": lambda c: [train.train(s, ds, device) for s in c],
               "stack": lambda c: stack.train_stack(c, ds, device)}
    grouped = device.type == "cpu"
    if grouped:  # stack_exact: false, what a GPU runs: every layer batched, not bit for bit
        engines["grouped"] = lambda c: stack.train_stack(c, ds, device, exact=False)
    print(f"{'members':>7}  " + "  ".join(f"{e + ' runs/s':>22}" for e in engines)
          + "  ratio stack/loop  (wall; CPU)  max diff stack vs loop"
          + ("  ratio grouped/loop; grouped/stack (CPU)  max diff grouped vs loop" if grouped else ""))
    for S in sizes:
        cell = [{**settings, "seed": s} for s in range(S)]
        wall = {e: [] for e in engines}
        cpu = {e: [] for e in engines}
        results = {}
        for _ in range(repeats):
            for e, fn in engines.items():
                w, c, results[e] = timed(lambda: fn(cell), device)
                wall[e].append(w)
                cpu[e].append(c)
        rate = {e: S / statistics.median(wall[e]) for e in engines}
        crate = {e: S / statistics.median(cpu[e]) for e in engines}
        print(f"{S:>7}  " + "  ".join(f"{rate[e]:>10.2f} ({crate[e]:>7.2f} CPU)" for e in engines)
              + f"  {rate['stack'] / rate['loop']:>6.2f}x; {crate['stack'] / crate['loop']:.2f}x"
              + f"  {max_diff(results['stack'], results['loop']):.1e}"
              + (f"  {crate['grouped'] / crate['loop']:>6.2f}x; {crate['grouped'] / crate['stack']:.2f}x"
                 f"  {max_diff(results['grouped'], results['loop']):.1e}" if grouped else ""))
    if not steps_only:
        return
    steps = settings["steps"]
    variants = {"loop": step_loop, "grouped": step_grouped, "vmap": step_vmap}
    if compiled:
        variants["grouped+compile"] = lambda *a: step_grouped(*a, compiled=True)
    print(f"  bare step ({steps} updates per member, no evaluation), updates/s of all members together:")
    for S in sizes:
        cell = [{**settings, "seed": s} for s in range(S)]
        g = torch.Generator(device=device).manual_seed(0)
        batches = [torch.randint(0, ds.n_train, (steps, settings["batch_size"]), device=device, generator=g)
                   for _ in range(S)]
        line = []
        for name, fn in variants.items():
            try:
                short = [b[:5] for b in batches]
                fn(cell, ds, device, short)  # warm-up (and compilation): not timed
                w, c, _ = timed(lambda: fn(cell, ds, device, batches), device)
                line.append(f"{name} {S * steps / w:,.0f} ({S * steps / c:,.0f} CPU)")
            except Exception as e:  # noqa: BLE001 - a variant that cannot run here is reported, not fatal
                line.append(f"{name} failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
        print(f"  {S:>5}  " + "; ".join(line))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--members", type=int, nargs="+", default=[3, 5, 16])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, help="updates per run (default: 300 CPU MLP, 100 CPU conv, 1000 GPU)")
    ap.add_argument("--data", choices=["real", "random"], default="real")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (a training job uses 1; profiles set-threads may raise it)")
    ap.add_argument("--steps-only", action="store_true", help="also time the bare step: loop, grouped, vmap")
    ap.add_argument("--compile", action="store_true", help="with --steps-only: the grouped step under torch.compile")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions (GPU)")
    ap.add_argument("--only", choices=["mlp", "cnn", "nv"],
                    help="one cell: mlp, cnn, or nv (normalization_variants' conv nets on digits, CPU)")
    a = ap.parse_args()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    gpu = device.type == "cuda"
    ds, kind = dataset("fashion_mnist" if gpu else "mnist1d", a.data, device)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {a.threads} thread(s)"
    print(f"device: {name}; torch {torch.__version__}; data: {kind}; tf32: {a.tf32}")
    base = {"task": "train", "dataset": ds.name, "optimizer": {"name": "adam", "lr": 1e-3},
            "batch_size": 128 if gpu else 64, "eval_points": 5, "log_points": 20}
    cells = {"mlp": ("MLP cell", {**base, "model": {"arch": "mlp", "hidden": [512, 512] if gpu else [64, 64]},
                                  "steps": a.steps or (1000 if gpu else 300)}),
             "cnn": ("conv net cell", {**base, "model": {"arch": "cnn", "channels": [16, 32], "norm": "batch"},
                                       "steps": a.steps or (1000 if gpu else 100)})}
    for key, (label, settings) in cells.items():
        if a.only in (None, key):
            settings = run_settings.complete({**settings, "seed": 0})  # as the plan completes a run
            bench_cell(label, settings, ds, device, a.members, a.repeats, a.steps_only, a.compile)
    if a.only == "nv":  # the quick preset's normalization_variants cells (momentum 0.9, lr 0.1, 800 steps)
        digits, kind = dataset("digits", a.data, device)
        for norm in ("batch", "layer", "instance"):
            for batch in (2, 32):
                settings = {"task": "train", "dataset": "digits", "batch_size": batch, "eval_points": 1,
                            "log_points": 10, "steps": a.steps or 800,
                            "model": {"arch": "cnn", "channels": [16, 32], "hidden": [64], "norm": norm},
                            "optimizer": {"name": "momentum", "lr": 0.1, "momentum": 0.9}}
                bench_cell(f"normalization_variants cell ({kind} data)", run_settings.complete({**settings, "seed": 0}),
                           digits, device, a.members, a.repeats, a.steps_only, a.compile)


if __name__ == "__main__":
    main()
