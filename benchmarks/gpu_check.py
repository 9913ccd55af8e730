"""The GPU path, checked end to end, in one command (README, "Checking the GPU path").

    python benchmarks/gpu_check.py                  # the full preset on this machine's GPU
    python benchmarks/gpu_check.py --papers         # ... with MNIST and CIFAR-10 (downloads)
    python benchmarks/gpu_check.py --out /scratch/gpu-check --cores 16

On a machine with a CUDA GPU it runs, in order:
  1. benchmarks/bench_stack.py --device cuda --steps-only: runs/s of stacked cells against the
     one-run loop at the full preset's cell sizes (Fashion-MNIST MLP [512, 512] and the conv net,
     3, 5 and 16 members), and the members' difference from the loop;
  2. the full preset through Snakemake with `device: cuda` in a fresh copy of the workflow
     (every run trained on the GPU, `batch_timing` timed there, the audit at its GPU tolerance,
     the report), with the plan's budget estimate (benchmarks/budget.py) beside it;
and prints the wall time of the whole run and per experiment (its training jobs, from
Snakemake's benchmark files), the audit's matches and the verdict counts. Everything is kept under
--out (default: a new directory in /tmp): results/report/index.html, results/claims.csv, the logs.
Without CUDA it stops before doing anything, with exit status 2.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.repo_copy import copy_repo, env_for  # noqa: E402

NO_CUDA = 2


def cuda_device() -> str | None:
    """The GPU's name, or None when torch sees no CUDA device (a CPU build, no driver, no GPU)."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def seconds_by_experiment(results: Path) -> dict[str, float]:
    """Experiment -> wall seconds of its training jobs (Snakemake's benchmark files: a job's whole
    process, start-up included), in the order of the lecture."""
    from trainfail import experiments

    out: dict[str, float] = defaultdict(float)
    for tsv in sorted((results / "benchmarks" / "train").glob("*.tsv")):
        experiment = re.sub(r"(-stage\d+)?-\d+$", "", tsv.stem)
        lines = tsv.read_text().splitlines()
        out[experiment] += float(lines[1].split("\t")[0])
    return {e: out[e] for e in sorted(out, key=lambda e: experiments.MODULES.index(e)
                                       if e in experiments.MODULES else len(experiments.MODULES))}


def verdict_counts(results: Path) -> dict[str, dict[str, int]]:
    """kind -> verdict -> count, from results/claims.csv (the family-wise verdicts)."""
    from trainfail.core import store

    claims = store.read_table(results / "claims.csv")
    counts: dict[str, dict[str, int]] = {}
    for (kind, verdict), n in claims.groupby(["kind", "verdict"]).size().items():
        counts.setdefault(kind, {})[verdict] = int(n)
    return counts


def audit_line(results: Path) -> str:
    from trainfail.core import store

    path = results / "audit.csv"
    if not path.exists():
        return "audit: none (audit.sample is 0)"
    table = store.read_table(path)
    good = int(table["match"].astype(bool).sum()) if not table.empty else 0
    worst = float(table["max_abs_diff"].max()) if not table.empty else float("nan")
    return f"audit: {good}/{len(table)} re-trained runs match (largest difference {worst:.3g})"


def run(cmd: list[str], cwd: Path, log: Path, check: bool = True) -> tuple[float, int]:
    """Run a command, its output to `log` and to the screen; its wall seconds and exit status.
    With `check`, stops on failure."""
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env_for(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            out.write(line)
            sys.stdout.write(line)
        proc.wait()
    if check and proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}; log: {log}")
    return time.perf_counter() - t0, proc.returncode


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--papers", action="store_true", help="add presets/papers.yaml (MNIST, CIFAR-10: downloads)")
    p.add_argument("--out", type=Path, help="where to copy the workflow and keep its results (default: a new /tmp dir)")
    p.add_argument("--cores", type=int, default=16, help="Snakemake's --cores (the GPU still trains one job at a time)")
    p.add_argument("--skip-bench", action="store_true", help="skip bench_stack.py (the pipeline only)")
    p.add_argument("--data-dir", type=Path, help="data_dir for the run (MNIST and CIFAR-10 downloads go there)")
    args = p.parse_args(argv)

    gpu = cuda_device()
    if gpu is None:
        print("gpu_check: no CUDA device is visible to torch (a CPU-only build, no driver, or no GPU); "
              "nothing was run. Run this on a machine with a GPU and a CUDA build of PyTorch "
              "(`make TORCH=torch`).", file=sys.stderr)
        sys.exit(NO_CUDA)
    out = args.out or Path(tempfile.mkdtemp(prefix="trainfail-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    work = copy_repo(out / "workflow")
    presets = ["presets/full.yaml"] + (["presets/papers.yaml"] if args.papers else [])
    (work / "presets" / "gpu_check.yaml").write_text(
        "device: cuda\n" + (f"data_dir: {args.data_dir.resolve()}\n" if args.data_dir else ""))
    presets.append("presets/gpu_check.yaml")
    print(f"gpu_check: {gpu}; presets {', '.join(presets)}; work in {work}")

    if not args.skip_bench:
        run([sys.executable, "benchmarks/bench_stack.py", "--device", "cuda", "--steps-only"], work,
            out / "bench_stack.log")
    run([sys.executable, "benchmarks/budget.py", "--configfile", "config.yaml",
         *[a for f in presets for a in ("--configfile", f)]], work, out / "budget.log")
    # one --configfile flag for all the files: a second flag would replace the first
    wall, status = run([sys.executable, "-m", "snakemake", "--configfile", *presets, "--cores", str(args.cores)],
                       work, out / "snakemake.log", check=False)

    results = work / "results"
    print(f"\n== GPU check on {gpu}: {' + '.join(presets)}")
    print(f"whole pipeline: {wall:.0f} s wall ({wall / 60:.1f} min)"
          + (f"; Snakemake FAILED (exit {status}): {out / 'snakemake.log'}" if status else ""))
    for experiment, seconds in seconds_by_experiment(results).items():
        print(f"  {experiment:<28}{seconds:>8.1f} s in training jobs")
    print(audit_line(results))
    if (results / "claims.csv").exists():
        for kind, counts in verdict_counts(results).items():
            print(f"{kind} claims: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())))
        print(f"report: {results / 'report' / 'index.html'}")
    sys.exit(status)


if __name__ == "__main__":
    main()
