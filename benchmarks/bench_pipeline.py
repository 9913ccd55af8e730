"""Wall time of the whole pipeline, end to end, from a fresh copy of the workflow.

    python benchmarks/bench_pipeline.py [--preset smoke|quick] [--cores 2] [--compare]

Copies the workflow into a temporary directory (no results), runs Snakemake on the preset, and
prints the wall time, the CPU time of Snakemake and all its jobs (user + sys), and the training
time per experiment (each run's or each stack's wall time, from meta.json).

--compare runs the preset twice, each in its own fresh copy: with the current engine (cells
trained as stacks, trainfail.training.stack) and with every run trained alone (the one-run loop,
`stack: false`). The two run *at the same time*, each with half the cores, so that both see the
same machine: run one after the other on a machine others share, they would see different loads,
and the load moves CPU time too (caches, hyper-threads), not only wall time. The machine's load
average is printed beside each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.repo_copy import copy_repo, env_for  # noqa: E402


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


def identical(a: Path, b: Path) -> str:
    """Do both engines give the same numbers? Every run's metrics and summary (timing columns
    aside), and every claim."""
    from trainfail.core import store
    from trainfail.pipeline import audit

    differ = []
    ids = sorted(p.name for p in (a / "runs").iterdir() if not p.name.startswith("."))
    for rid in ids:
        x, y = a / "runs" / rid, b / "runs" / rid
        metrics = audit.compare(store.read_table(x / "metrics.csv"), store.read_table(y / "metrics.csv"), 0.0)
        summary = audit.compare(audit.summary_frame(store.read_json(x / "summary.json")),
                                audit.summary_frame(store.read_json(y / "summary.json")), 0.0)
        if not (metrics["match"] and summary["match"]):
            differ.append(rid)
    experiments = sorted(p.stem for p in (a / "claims").glob("*.csv"))
    claims = [e for e in experiments if not store.read_table(a / "claims" / f"{e}.csv").equals(
        store.read_table(b / "claims" / f"{e}.csv"))]
    return (f"runs whose numbers differ, stacked vs alone: {len(differ)} of {len(ids)} {differ[:5]}; "
            f"experiments whose claims differ: {claims or 'none'} (claims on measured times differ by nature)")


def start(work: Path, preset: str, cores: int, stacked: bool) -> tuple[subprocess.Popen, float, float]:
    copy_repo(work)
    files = ["presets/smoke.yaml"] if preset == "smoke" else []
    if not stacked:
        (work / "presets" / "loop.yaml").write_text("stack: false\n")
        files.append("presets/loop.yaml")
    args = ["--configfile", *files] if files else []
    with open(work / "snakemake.out", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args, "--cores", str(cores)], cwd=work,
                                env=env_for(work), stdout=out, stderr=subprocess.STDOUT)
    return proc, time.perf_counter(), os.getloadavg()[0]


def wait_all(started: dict[str, tuple[Path, subprocess.Popen, float, float]]) -> dict[str, dict]:
    """Wait for every Snakemake; each one's wall time ends when it ends."""
    out: dict[str, dict] = {}
    while len(out) < len(started):
        for name, (work, proc, t0, load0) in started.items():
            if name in out:
                continue
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # CPU time of it and its jobs
            if pid == 0:
                continue
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode:
                sys.exit((work / "snakemake.out").read_text()[-4000:])
            results = work / "results"
            out[name] = {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "load": (load0, os.getloadavg()[1]),
                         "runs": len(list((results / "runs").glob("*/meta.json"))),
                         "jobs": len(list((results / "shards").glob("*.json"))), "training": training_seconds(results)}
        time.sleep(0.2)
    return {name: out[name] for name in started}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="smoke", choices=["smoke", "quick"])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--compare", action="store_true",
                   help="also run every run alone (stack: false), at the same time, half the cores each")
    args = p.parse_args()
    engines = {"stacked": True, "alone": False} if args.compare else {"stacked": True}
    cores = max(args.cores // len(engines), 1)
    with tempfile.TemporaryDirectory() as tmp:
        started = {name: (Path(tmp) / name, *start(Path(tmp) / name, args.preset, cores, stacked))
                   for name, stacked in engines.items()}
        out = wait_all(started)
        same = identical(Path(tmp) / "stacked" / "results", Path(tmp) / "alone" / "results") if args.compare else ""
    for name, r in out.items():
        print(f"preset {args.preset}, runs {name}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU on {cores} core(s); "
              f"{r['runs']} runs in {r['jobs']} training jobs; machine load {r['load'][0]:.1f} at the start, "
              f"{r['load'][1]:.1f} over the last 5 minutes")
    if args.compare:
        s, a = out["stacked"], out["alone"]
        print(f"alone / stacked: wall {a['wall'] / s['wall']:.2f}x, CPU {a['cpu'] / s['cpu']:.2f}x")
        print(same)
    print(f"\n{'training seconds by experiment':<32}" + "".join(f"{n:>10}" for n in out)
          + ("   alone/stacked" if args.compare else ""))
    for exp in sorted({e for r in out.values() for e in r["training"]}):
        t = [r["training"].get(exp, 0.0) for r in out.values()]
        ratio = f"   {t[1] / t[0]:.2f}x" if args.compare and t[0] > 0 else ""
        print(f"{exp:<32}" + "".join(f"{v:>10.1f}" for v in t) + ratio)


if __name__ == "__main__":
    main()
