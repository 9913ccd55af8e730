"""What checking every finished run costs when Snakemake builds its DAG (README: Retraining runs).

    python benchmarks/bench_verify.py [--preset quick|smoke|full] [--results DIR] [--repeats 5]

Snakemake asks, for each training shard in its DAG, whether the shard is finished
(trainfail.pipeline.execution.shard_problem): its manifest, and each of its runs' files, parsed, metrics.csv
checked against its checksum. This prints the time of that check over every shard of the preset's
plan, beside the time of only looking for the files (verify=False, the check before), with the
number of runs and the bytes read.

Without --results it writes a stand-in tree into a temporary directory: for each run of the plan,
a run directory with a metrics.csv of as many rows as the run logs (trainfail.training.train.log_steps and
eval_steps at its batch size and dataset size; 100 rows for a run of an experiment's own task),
summary.json, meta.json, and the shard manifests. With --results it times a real tree (give the
config files the pipeline used with --configfile). Times are medians over --repeats with the
files in the page cache (the usual case: the jobs just wrote them, or the last run read them);
--cold adds one pass after dropping the caches (needs root).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"quick": ["config.yaml"], "smoke": ["config.yaml", "presets/smoke.yaml"],
           "full": ["config.yaml", "presets/full.yaml"]}
N_TRAIN = {"mnist1d": 4000, "mnist1d_large": 40000, "digits": 1437, "fashion_mnist": 60000, "mnist": 60000,
           "cifar10": 50000, "cifar100": 50000}
COLUMNS = ("step", "epoch", "lr", "batch_loss", "grad_norm", "wall_time", "train_loss", "train_acc", "val_loss",
           "val_acc")


def load_config(files: list[str]) -> dict:
    """The config as the workflow sees it: the files merged in order, validated (defaults filled)."""
    from trainfail.core.config import load_yaml, merge, validate

    config: dict = {}
    for f in files:
        config = merge(config, load_yaml(ROOT / f))
    return validate(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")


def rows_of(settings: dict) -> int:
    from trainfail.training.train import eval_steps, log_steps, total_steps

    try:
        n = int(settings.get("n_examples") or N_TRAIN[settings["dataset"]])
        total, _ = total_steps(settings, n)
    except (KeyError, TypeError, ValueError):
        return 100
    return len(log_steps(total, settings) | eval_steps(total, settings))


def write_tree(results: Path, plan) -> None:
    from trainfail.core import store
    from trainfail.core.run_record import run_dir

    for rid, settings in plan.runs.items():
        n = rows_of(settings)
        frame = pd.DataFrame({c: [0.123456789 * (i + 1) for i in range(n)] for c in COLUMNS})
        path = run_dir(results, rid)
        path.mkdir(parents=True)
        store.write_table(frame, path / "metrics.csv")
        store.write_json(path / "summary.json", {"steps_done": n, "wall_time": 1.0, "final_val_acc": 0.5})
        store.write_json(path / "meta.json", {"run_id": rid, "settings_hash": rid, "settings": settings,
                                              "seed": settings.get("seed"), "stack": {"stacked": False}})
    for shard, rids in plan.shards.items():
        store.write_json(results / "shards" / f"{shard}.json",
                         {"runs": [{"run_id": r, "status": "trained"} for r in rids], "device": "cpu"})


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--configfile", action="append", help="config files (instead of --preset)")
    p.add_argument("--results", type=Path, help="a real results tree to time (default: a stand-in one)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cold", action="store_true", help="also one pass after dropping the page cache (root)")
    args = p.parse_args()
    from trainfail.pipeline.plan import make_plan
    from trainfail.pipeline.execution import unfinished_shards

    files = args.configfile or PRESETS[args.preset]
    config = load_config(files)
    plan = make_plan(config, [e for e in config["experiments"]])
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results or Path(tmp) / "results"
        if args.results is None:
            write_tree(results, plan)
        nbytes = sum(f.stat().st_size for r in plan.runs for f in (results / "runs" / r).glob("*")
                     if f.name != "model.pt" and f.is_file())
        left = unfinished_shards(results, plan.shards, plan.runs)
        if left:
            print(f"note: {len(left)} shards are not finished here, e.g. {next(iter(left.items()))}")
        look = timed(lambda: unfinished_shards(results, plan.shards, plan.runs, verify=False), args.repeats)
        verify = timed(lambda: unfinished_shards(results, plan.shards, plan.runs, verify=True), args.repeats)
        print(f"{' + '.join(files)}: {len(plan.runs)} runs in {len(plan.shards)} shards, "
              f"{nbytes / 1e6:.1f} MB of run files ({'stand-in tree' if args.results is None else results})")
        print(f"  look for the files only (verify=False): {look * 1e3:8.1f} ms")
        print(f"  parse and checksum every run (verify):  {verify * 1e3:8.1f} ms  "
              f"({verify / len(plan.runs) * 1e6:.0f} us a run; median of {args.repeats}, files cached)")
        if args.cold:
            subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=True)
            t0 = time.perf_counter()
            unfinished_shards(results, plan.shards, plan.runs, verify=True)
            print(f"  parse and checksum, page cache dropped: {(time.perf_counter() - t0) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
