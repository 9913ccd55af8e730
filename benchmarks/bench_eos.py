"""The edge of stability's tracking overhead: the same full-batch run with and without the sharpness.

One run of the quick preset's edge_of_stability (its defaults: MNIST-1D, tanh MLP, the middle step
size, seed 0) is trained twice by the experiment's own loop (edge_of_stability.gradient_descent):
untracked, and with the top Hessian eigenvalue every k steps by warm-started Lanczos. Prints the
CPU seconds of each (best of --repeats), their ratio and the products per measurement. Target:
at most 1.5x at k = 25 (issue 19; Cockpit's full probe set costs 2.3x at every 16 steps).

    PYTHONPATH=src python benchmarks/bench_eos.py [--every 25] [--steps 1200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from trainfail.training import data
from trainfail.core.config import load_schema
from trainfail.experiments import edge_of_stability as eos

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5


def defaults() -> dict:
    block = load_schema(ROOT / "workflow/schemas/config.schema.yaml")["properties"]["experiments"]["properties"][eos.ID]
    return {k: v["default"] for k, v in block["properties"].items() if "default" in v}


def main() -> None:
    cfg = defaults()
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--steps", type=int, default=int(cfg["steps"]))
    ap.add_argument("--lr", type=float, default=sorted(cfg["step_sizes"])[len(cfg["step_sizes"]) // 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = data.load(cfg["dataset"], args.data_dir).subset(int(cfg["n_train"]))
    settings = {"task": eos.ID, "dataset": cfg["dataset"], "n_train": int(cfg["n_train"]), "model": cfg["model"],
                "optimizer": {"name": "sgd", "lr": args.lr}, "steps": args.steps, "sharpness_every": args.every,
                "lanczos_iters": int(cfg["lanczos_iters"]), "lanczos_tol": float(cfg["lanczos_tol"]), "seed": 0}

    def cpu(track: bool):
        best, result = float("inf"), None
        for _ in range(args.repeats):
            start = time.process_time()
            result = eos.gradient_descent(settings, ds.x_train, ds.y_train, ds.input_shape, ds.num_classes,
                                          torch.device("cpu"), track=track)
            best = min(best, time.process_time() - start)
        return best, result

    plain, _ = cpu(False)
    tracked, result = cpu(True)
    ratio = tracked / plain
    print(f"{cfg['dataset']}, first {cfg['n_train']} examples, MLP {cfg['model']['hidden']} tanh, GD lr {args.lr:g}, "
          f"{args.steps} steps, {args.threads} thread(s), CPU seconds (best of {args.repeats})")
    print(f"untracked:                     {plain:7.2f} s")
    print(f"tracked every {args.every:>4} steps:      {tracked:7.2f} s  ({result.summary['measurements']} measurements, "
          f"{result.summary['hvp_per_measurement']:.1f} Hessian-vector products each, largest relative residual "
          f"{result.summary['max_residual']:.2g})")
    print(f"overhead: {ratio:.2f}x  target <= {TARGET}x  {'OK' if ratio <= TARGET else 'OVER'}")


if __name__ == "__main__":
    main()
