"""Per-job start-up overhead: what one training job pays before its first step.

    python benchmarks/bench_startup.py [--repeats 5]

Times (median of repeats) a bare `python -c pass`, `import torch`, the `train` command with an
empty shard, and the same command training one tiny run, and prints what sharding saves: with
shard_size runs per job, start-up is paid once per shard instead of once per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from trainfail.core.run_settings import complete

# a run as the plan makes it: completed with its defaults (trainfail.core.run_settings)
TINY = complete({"task": "train", "dataset": "digits", "model": {"arch": "mlp", "hidden": [16]},
                 "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64, "steps": 20, "seed": 0})


def timed(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        base = [py, "-m", "trainfail", "train", "--device", "cpu", "--results", tmp, "--threads", "1"]
        subprocess.run(base + ["--settings", json.dumps([{**TINY, "seed": 99}])], check=True, capture_output=True)  # warm the data cache
        rows = {
            "python -c pass": timed([py, "-c", "pass"], args.repeats),
            "python -c 'import torch'": timed([py, "-c", "import torch"], args.repeats),
            "train, empty shard": timed(base + ["--settings", "[]"], args.repeats),
        }
        one = []
        for i in range(args.repeats):  # a new seed each time so the run is not reused
            t0 = time.perf_counter()
            subprocess.run(base + ["--settings", json.dumps([{**TINY, "seed": 1000 + i}])], check=True, capture_output=True)
            one.append(time.perf_counter() - t0)
        rows["train, one tiny run (20 steps)"] = statistics.median(one)
    for name, t in rows.items():
        print(f"{name:34s} {t * 1000:8.0f} ms")
    start = rows["train, empty shard"]
    work = rows["train, one tiny run (20 steps)"] - start
    print(f"start-up per job: {start:.2f} s; work of a tiny run: {work:.2f} s")
    for k in (1, 8, 16):
        print(f"shard_size {k:2d}: start-up is {start / (start + k * work):.0%} of a job's time")


if __name__ == "__main__":
    main()
