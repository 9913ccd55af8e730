"""Wall time of the whole pipeline, end to end, from a fresh copy of the workflow.

    python benchmarks/bench_pipeline.py [--preset smoke|quick] [--cores 2] [--compare]

Copies the workflow into a temporary directory (no results), runs Snakemake on the preset, and
prints the wall time, the CPU time of every job (user + sys of Snakemake and all its jobs), and
the training time per experiment (each run's or each stack's wall time, from meta.json).

--compare runs the preset twice, each in its own fresh copy: with the current engine (cells
trained as stacks, trainfail.stack) and with every run trained alone (the one-run loop,
`stack: false`), and prints both and their ratios. Wall time depends on what else the machine
runs; CPU time much less so.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.repo_copy import copy_repo, snakemake  # noqa: E402


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def training_seconds(results: Path) -> dict[str, float]:
    """Experiment -> seconds its training jobs spent in runs (a stack counted once)."""
    out: dict[str, float] = defaultdict(float)
    seen = set()
    for manifest in sorted((results / "shards").glob("*.json")):
        experiment = re.sub(r"(-stage\d+)?-\d+$", "", manifest.stem)
        for row in json.loads(manifest.read_text())["runs"]:
            meta = json.loads((results / "runs" / row["run_id"] / "meta.json").read_text())
            info = meta.get("stack") or {}
            key = tuple(info["members"]) if info.get("stacked") else meta["run_id"]
            if key not in seen:
                seen.add(key)
                out[experiment] += float(meta.get("wall_time") or 0.0)
    return dict(out)


def run(preset: str, cores: str, stacked: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_repo(Path(tmp))
        extra = ["presets/smoke.yaml"] if preset == "smoke" else []
        if not stacked:
            (work / "presets" / "loop.yaml").write_text("stack: false\n")
            extra.append("presets/loop.yaml")
        args = (["--configfile", *extra] if extra else [])
        cpu0, t0 = children_cpu(), time.perf_counter()
        proc = snakemake(work, *args, "--cores", cores, timeout=7200, check=False)
        wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
        if proc.returncode:
            sys.exit(proc.stderr[-4000:])
        results = work / "results"
        return {"wall": wall, "cpu": cpu, "runs": len(list((results / "runs").glob("*/meta.json"))),
                "jobs": len(list((results / "shards").glob("*.json"))), "training": training_seconds(results)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="smoke", choices=["smoke", "quick"])
    p.add_argument("--cores", default="2")
    p.add_argument("--compare", action="store_true", help="also run every run alone (stack: false), and compare")
    args = p.parse_args()
    engines = {"stacked": True, "alone": False} if args.compare else {"stacked": True}
    out = {name: run(args.preset, args.cores, stacked) for name, stacked in engines.items()}
    for name, r in out.items():
        print(f"preset {args.preset}, runs {name}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU on {args.cores} cores; "
              f"{r['runs']} runs in {r['jobs']} training jobs")
    if args.compare:
        s, a = out["stacked"], out["alone"]
        print(f"alone / stacked: wall {a['wall'] / s['wall']:.2f}x, CPU {a['cpu'] / s['cpu']:.2f}x")
    print(f"\n{'training seconds by experiment':<32}" + "".join(f"{n:>10}" for n in out)
          + ("   alone/stacked" if args.compare else ""))
    for exp in sorted({e for r in out.values() for e in r["training"]}):
        t = [r["training"].get(exp, 0.0) for r in out.values()]
        ratio = f"   {t[1] / t[0]:.2f}x" if args.compare and t[0] > 0 else ""
        print(f"{exp:<32}" + "".join(f"{v:>10.1f}" for v in t) + ratio)


if __name__ == "__main__":
    main()
