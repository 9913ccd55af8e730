"""Where the pipeline's CPU-seconds go: per experiment and per phase, the critical path, and the
training's distance to the machine's matmul peak.

    python benchmarks/profile_pipeline.py --preset quick [--cores 2]     run it in a fresh copy, then profile
    python benchmarks/profile_pipeline.py --results results [--wall S]   profile a finished tree

Every `python -m trainfail` job writes its phase times to results/benchmarks/phases/<rule>/<job>.json
(trainfail.core.phases: wall and CPU seconds per phase, beside Snakemake's benchmark files). This
script sums them:

- per experiment (a tune job counts to the experiment whose runs it reads; prepare_data, audit and
  report stand alone): CPU-s and wall-s of its jobs, and CPU-s per phase: start_up (the
  interpreter until the command runs), imports, data, train_steps, eval, curvature (Hessians,
  Lanczos, sharpness: trainfail.measure), write_runs (run directories and their provenance),
  read_runs, table, figures (drawing), figures_png and
  figures_pdf (rendering each format), claims, report, other (writing runs, manifests, the rest);
- the critical path: the longest chain of jobs through Snakemake's DAG (`snakemake --dag`), in
  CPU-seconds, against the wall time and against the sum of the jobs' CPU-seconds over the cores:
  how long the cores wait for each other (the second core's idle time);
- the training's achieved FLOP/s against a float32 matmul peak measured here, now, on one thread
  (each job trains on one thread), as a ratio: FLOPs are counted per run from its model (torch's
  FlopCounterMode on one forward pass, as benchmarks/budget.py counts them) x examples, a step
  counted as 3 forward passes (forward + backward), an evaluation as 1, over the train_steps and
  eval CPU-seconds of the jobs whose every run is a plain training (task train or tuned; the
  experiments with an execute of their own are left out and their share is printed).

On a machine others share, wall times stretch with the load; CPU-seconds much less: compare those.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

PHASES = ["start_up", "imports", "data", "train_steps", "eval", "curvature", "write_runs", "read_runs", "table", "figures",
          "figures_png", "figures_pdf", "claims", "report", "other"]


def load_jobs(results: Path) -> list[dict]:
    """One record per job that wrote phase times: rule, name, experiment, wall, cpu, phases, end time."""
    shard_of: dict[str, str] = {}
    for manifest in (results / "shards").glob("*.json"):
        for row in json.loads(manifest.read_text())["runs"]:
            shard_of[row["run_id"]] = manifest.stem
    jobs = []
    for path in sorted((results / "benchmarks" / "phases").glob("*/*.json")):
        rec = json.loads(path.read_text())
        rule, name = path.parent.name, path.stem
        if rule == "train":
            exp = experiment_of(name)
        elif rule == "tune":
            choice = results / "tuning" / f"{name}.json"
            runs = json.loads(choice.read_text()).get("runs", []) if choice.exists() else []
            exp = experiment_of(shard_of.get(runs[0], "?")) if runs else "?"
        elif rule == "analyze":
            exp = name
        else:
            exp = f"({rule})"
        jobs.append({"rule": rule, "name": name, "experiment": exp, "wall": rec["wall"], "cpu": rec["cpu"],
                     "phases": rec["phases"], "counts": rec.get("counts", {}), "end": path.stat().st_mtime})
    return jobs


def experiment_of(shard: str) -> str:
    return re.sub(r"(-stage\d+)?-\d+$", "", shard)


def table(jobs: list[dict]) -> str:
    by_exp: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for j in jobs:
        row = by_exp[j["experiment"]]
        row["jobs"] += 1
        row["wall"] += j["wall"]
        row["cpu"] += j["cpu"]
        for name, p in j["phases"].items():
            row[name if name in PHASES else "other"] += p["cpu"]
    total: dict[str, float] = defaultdict(float)
    for row in by_exp.values():
        for k, v in row.items():
            total[k] += v
    cols = [p for p in PHASES if total.get(p, 0) > 0.005]
    head = f"{'CPU-s':<26}{'jobs':>5}{'wall':>8}{'CPU':>8}" + "".join(f"{c[:11]:>12}" for c in cols)
    lines = [head]
    for exp in sorted(by_exp, key=lambda e: -by_exp[e]["cpu"]):
        r = by_exp[exp]
        lines.append(f"{exp[:25]:<26}{int(r['jobs']):>5}{r['wall']:>8.1f}{r['cpu']:>8.1f}"
                     + "".join(f"{r.get(c, 0):>12.1f}" for c in cols))
    lines.append(f"{'total':<26}{int(total['jobs']):>5}{total['wall']:>8.1f}{total['cpu']:>8.1f}"
                 + "".join(f"{total.get(c, 0):>12.1f}" for c in cols))
    lines.append(f"{'share of CPU':<47}" + "".join(f"{100 * total.get(c, 0) / max(total['cpu'], 1e-9):>11.1f}%"
                                                for c in cols))
    by_rule: dict[str, list] = defaultdict(lambda: [0, 0.0, 0.0])
    for j in jobs:
        r = by_rule[j["rule"]]
        r[0] += 1
        r[1] += j["cpu"]
        r[2] += j["phases"].get("start_up", {}).get("cpu", 0) + j["phases"].get("imports", {}).get("cpu", 0)
    lines.append("\nby rule: " + "; ".join(f"{rule} {n} jobs {cpu:.1f} CPU-s ({cpu / n:.2f} each, start-up and "
                                           f"imports {imp / n:.2f})" for rule, (n, cpu, imp) in sorted(by_rule.items())))
    return "\n".join(lines)


def dag_edges(repo: Path, env: dict) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str]]] | None:
    """Snakemake's DAG of the tree's default target: node -> (rule, wildcard value), edges (a, b)."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--dag", "--forceall", "--cores", "1",
                           *(["--configfile", "presets/smoke.yaml"] if (repo / "results" / "preset").exists()
                             and (repo / "results" / "preset").read_text().strip() == "smoke" else [])],
                          cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"(no DAG: snakemake --dag failed: {proc.stderr[-500:]})")
        return None
    nodes, edges = {}, []
    for m in re.finditer(r'^\s*(\d+)\[label = "([^"]*)"', proc.stdout, re.M):
        rule, *rest = m.group(2).split("\\n")
        nodes[m.group(1)] = (rule, rest[0].split(": ", 1)[1] if rest else "")
    for m in re.finditer(r"^\s*(\d+) -> (\d+)", proc.stdout, re.M):
        edges.append((m.group(1), m.group(2)))
    return nodes, edges


def critical_path(jobs: list[dict], dag) -> tuple[float, list[str]]:
    """The longest chain of jobs in CPU-seconds, and its jobs."""
    nodes, edges = dag
    cost = {}
    by_key = {(j["rule"], j["name"]): j["cpu"] for j in jobs}
    for n, (rule, value) in nodes.items():
        rule = "analyze" if rule.startswith("analyze_") else rule
        value = rule_name(nodes[n][0]) if rule == "analyze" else value
        key = {"report": ("report", "report"), "audit_runs": ("audit", "audit")}.get(rule, (rule, value))
        cost[n] = by_key.get(key, 0.0)
    preds = defaultdict(list)
    for a, b in edges:
        preds[b].append(a)
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(n: str) -> tuple[float, list[str]]:
        if n not in best:
            prev = max((longest(p) for p in preds[n]), default=(0.0, []), key=lambda t: t[0])
            best[n] = (prev[0] + cost[n], prev[1] + [f"{nodes[n][0]}:{nodes[n][1]}".rstrip(":")])
        return best[n]

    return max((longest(n) for n in nodes), default=(0.0, []), key=lambda t: t[0])


def rule_name(rule: str) -> str:
    return rule.removeprefix("analyze_")


def matmul_peak(seconds: float = 1.0) -> float:
    """Float32 FLOP/s of a 1024 x 1024 matmul on one thread: the best of several timed batches."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.process_time()
        for _ in range(4):
            a @ b
        dt = time.process_time() - t0
        if dt > 0:
            best = max(best, 4 * 2 * 1024 ** 3 / dt)
    return best


def training_flops(results: Path, jobs: list[dict]) -> tuple[float, float, float]:
    """(FLOPs, CPU-s of train_steps + eval, CPU-s of train_steps + eval left out) over the training
    jobs whose every run is a plain training (benchmarks/budget.py's FLOP count per example)."""
    from benchmarks import budget
    from trainfail.training import sizes

    flops = counted = left = 0.0
    for j in jobs:
        if j["rule"] != "train":
            continue
        spent = sum(j["phases"].get(p, {}).get("cpu", 0.0) for p in ("train_steps", "eval"))
        manifest = results / "shards" / f"{j['name']}.json"
        total, ok = 0.0, manifest.exists()
        for row in json.loads(manifest.read_text())["runs"] if ok else []:
            run = results / "runs" / row["run_id"]
            meta = json.loads((run / "meta.json").read_text())
            base = sizes.training_base(meta["settings"])
            if base is None or meta["settings"].get("task") not in ("train", "tuned") or base["dataset"] not in sizes.SHAPES:
                ok = False
                break
            summary = json.loads((run / "summary.json").read_text())
            _, n_train, n_test = sizes.SHAPES[base["dataset"]]
            rows = (run / "metrics.csv").read_text().splitlines()
            header = rows[0].split(",")
            evals = sum(1 for r in rows[1:] if r.split(",")[header.index("val_loss")] not in ("", "nan")) \
                if "val_loss" in header else 0
            steps = int(summary.get("steps_done") or 0)
            fwd = budget.forward_flops(base["model"], base["dataset"])
            total += fwd * (3 * steps * min(int(base["batch_size"]), n_train) + evals * (n_train + n_test))
        if ok:
            flops += total
            counted += spent
        else:
            left += spent
    return flops, counted, left


def run_preset(work: Path, preset: str, cores: int) -> tuple[float, float]:
    from tests.repo_copy import copy_repo, env_for

    copy_repo(work)
    args = ["--configfile", "presets/smoke.yaml"] if preset == "smoke" else []
    t0 = time.perf_counter()
    with open(work / "snakemake.out", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args, "--cores", str(cores)], cwd=work,
                                env=env_for(work), stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit((work / "snakemake.out").read_text()[-4000:])
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["smoke", "quick"], help="run this preset in a fresh copy, then profile it")
    p.add_argument("--results", type=Path, help="profile this finished results tree instead")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--wall", type=float, help="the run's wall time (with --results; default: first job start to last end)")
    p.add_argument("--no-dag", action="store_true", help="skip the critical path (snakemake --dag)")
    args = p.parse_args()
    if not (args.preset or args.results):
        p.error("give --preset or --results")
    from tests.repo_copy import env_for

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        wall = args.wall
        cpu_all = None
        if args.preset:
            wall, cpu_all = run_preset(Path(tmp), args.preset, args.cores)
            results = Path(tmp) / "results"
        else:
            results = args.results.resolve()
        jobs = load_jobs(results)
        if not jobs:
            sys.exit(f"no phase files under {results}/benchmarks/phases (trainfail.core.phases writes them)")
        span = max(j["end"] for j in jobs) - min(j["end"] - j["wall"] for j in jobs)
        wall = wall or span
        cpu = sum(j["cpu"] for j in jobs)
        print(f"results: {results}; machine load {load0:.1f} at the start, {os.getloadavg()[1]:.1f} over the last "
              f"5 minutes ({os.cpu_count()} CPUs)")
        print(f"wall {wall:.1f} s; jobs' CPU {cpu:.1f} s" + (f" (Snakemake and its jobs: {cpu_all:.1f} s)" if cpu_all else "")
              + f"; {len(jobs)} jobs\n")
        print(table(jobs))
        if not args.no_dag:
            dag = dag_edges(results.parent, env_for(results.parent))
            if dag:
                length, path = critical_path(jobs, dag)
                bound = max(length, cpu / args.cores)
                print(f"\ncritical path {length:.1f} CPU-s over {len(path)} jobs ({' -> '.join(path[-6:])}); "
                      f"jobs' CPU / {args.cores} cores = {cpu / args.cores:.1f} s: on an idle machine the wall is at "
                      f"least {bound:.1f} s; the cores are busy {100 * cpu / (args.cores * wall):.0f}% of "
                      f"{args.cores} x the wall ({args.cores * wall - cpu:.1f} core-seconds idle or lost to others' load)")
        flops, counted, left = training_flops(results, jobs)
        peak = matmul_peak()
        if counted > 0:
            achieved = flops / counted
            print(f"\ntraining: {flops / 1e9:.1f} GFLOP (forward x 3 per trained example, x 1 per evaluated one) in "
                  f"{counted:.1f} CPU-s of train_steps + eval = {achieved / 1e9:.2f} GFLOP/s per core; float32 matmul "
                  f"peak here, one thread: {peak / 1e9:.1f} GFLOP/s; achieved / peak = {achieved / peak:.3f} "
                  f"({left:.1f} CPU-s of training in jobs of experiments with their own execute left out)")


if __name__ == "__main__":
    main()
