"""What a primary's claim seeds cost: CPU seconds of an experiment's seed-dependent training at a
few seed counts, on the quick preset, with the engine as configured (stacked cells).

    python benchmarks/bench_seeds.py --experiment bn_inference --counts 5 10 [--key seeds]

For each count n the experiment's seed key (workflow/power.yaml's seeds_key) is set to seeds
0..n-1 and the plan is made; the runs whose settings depend on those seeds (the plan's runs minus
those of a plan at one unrelated seed list) are trained shard by shard, as the train rule does, by
`python -m trainfail train` in a fresh results folder per count (dataset caches and the sweeps'
choice files copied from --from, default this checkout's results: tuning seeds never change with
the claim seeds; a sweep whose choice file is not there is trained and tuned first, untimed). Runs
the seed-dependent shards build on (plan.after) are trained first, untimed. Prints CPU-s (user + sys of each job, start-up included) per count, the marginal CPU-s
per member between the counts, and the machine's load. The counts' jobs run one after the other:
compare them with each other, not with timings taken under another load.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
sys.path.insert(0, str(ROOT / "src"))

from trainfail.analysis import power  # noqa: E402
from trainfail.core.config import load_yaml, validate  # noqa: E402
from trainfail.pipeline import plan as tf_plan  # noqa: E402
from trainfail.training import tuning  # noqa: E402


def config_with(exp: str, key: str, seeds: list[int]) -> dict:
    config = validate(load_yaml(ROOT / "config.yaml"), ROOT / "workflow/schemas/config.schema.yaml")
    config = copy.deepcopy(config)
    block = config["experiments"][exp]
    *path, last = key.split(".")
    for part in path:
        block = block.setdefault(part, {})
    # a count (minimum_ratio's seeds_per_level) or a seed list
    block[last] = len(seeds) if isinstance(block.get(last), int) else list(seeds)
    return config


def seed_runs(exp: str, key: str, n: int, others=None):
    """(plan, the shards holding seed-dependent runs, those runs per shard)."""
    p = tf_plan.make_plan(config_with(exp, key, list(range(n))), [exp])
    q = tf_plan.make_plan(config_with(exp, key, [7777]), [exp])
    dependent = [r for r in p.by_experiment[exp] if r not in q.runs]
    shards: dict[str, list[str]] = {}
    for r in dependent:
        shards.setdefault(p.shard_of[r], []).append(r)
    return p, shards


def cpu_of(cmd: list[str], log: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        sys.exit(f"bench_seeds: {' '.join(cmd)} failed (rc {rc}); see {log}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def train(settings: list[dict], results: Path, name: str) -> float:
    jobs = results / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    f = jobs / f"{name}.json"
    f.write_text(json.dumps(settings))
    return cpu_of([sys.executable, "-m", "trainfail", "train", "--settings", str(f), "--device", "cpu",
                   "--results", str(results), "--data-dir", str(DATA), "--threads", "1",
                   "--inexact-stack", "--gpu-slots", str(results / ".gpu-slots")], results / f"{name}.log")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--key", help="the seed key (default: workflow/power.yaml's seeds_key)")
    ap.add_argument("--counts", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--from", dest="source", default=str(ROOT / "results"),
                    help="results folder to copy dataset caches and choice files from")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_seeds"))
    args = ap.parse_args()
    exp = args.experiment
    key = args.key or power.load_design(ROOT / "workflow/power.yaml")["experiments"][exp]["seeds_key"]
    out = {}
    for n in args.counts:
        p, shards = seed_runs(exp, key, n)
        results = Path(args.out) / f"{exp}-{n}"
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir(parents=True)
        (results / "data").symlink_to((Path(args.source) / "data").resolve())  # read only: dataset caches
        shutil.copytree(Path(args.source) / "tuning", results / "tuning")
        missing = [s for s in p.sweeps if not (results / "tuning" / f"{s}.json").exists()]
        if missing:  # sweeps on tuning seeds only (never the claim seeds): trained and tuned here, untimed
            pre = Path(args.out) / f"{exp}-sweeps"
            if not (pre / "tuning").exists():
                pre.mkdir(parents=True, exist_ok=True)
                (pre / "data").symlink_to((Path(args.source) / "data").resolve())
                shutil.copytree(Path(args.source) / "tuning", pre / "tuning")
            for sid in missing:
                if not (pre / "tuning" / f"{sid}.json").exists():
                    spec = p.sweeps[sid]
                    train(tuning.sweep(spec["base"], spec["lrs"], spec["tuning_seeds"]), pre, f"sweep-{sid}")
                    (pre / "jobs" / f"spec-{sid}.json").write_text(json.dumps(spec))
                    spec_file = pre / "jobs" / f"spec-{sid}.json"
                    cpu_of([sys.executable, "-m", "trainfail", "tune", "--sweep", str(spec_file), "--results", str(pre)],
                           pre / f"tune-{sid}.log")
                for suffix in (".json", ".json.sha256"):
                    shutil.copy(pre / "tuning" / f"{sid}{suffix}", results / "tuning" / f"{sid}{suffix}")
        needed = sorted({a for s in shards for a in p.after[s]} - set(shards))
        for s in needed:  # earlier-stage runs the dependent shards build on: trained untimed
            train(p.shard_settings(s), results, f"untimed-{s}")
        load0 = os.getloadavg()[0]
        t0 = time.time()
        cpu = {s: train([p.runs[r] for r in runs], results, s) for s, runs in sorted(shards.items())}
        out[n] = sum(cpu.values())
        nruns = sum(len(r) for r in shards.values())
        print(f"{exp} n={n}: {nruns} seed-dependent runs in {len(shards)} jobs, {out[n]:.1f} CPU-s, "
              f"{time.time() - t0:.0f} s wall, load {load0:.1f} -> {os.getloadavg()[0]:.1f} "
              f"({', '.join(f'{s} {c:.1f}' for s, c in cpu.items())})", flush=True)
    ns = sorted(out)
    for a, b in zip(ns, ns[1:]):
        print(f"{exp}: marginal {(out[b] - out[a]) / (b - a):.2f} CPU-s per seed between n={a} and n={b}")


if __name__ == "__main__":
    main()
