"""The full preset (and full + papers) validate, plan and dry-run offline, with only Fashion-MNIST
and MNIST-1D on the machine; the full preset's estimated time stays in its 10-minute budget; the
GPU check refuses to start without CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainfail import experiments
from trainfail.pipeline import plan
from trainfail.training import data
from trainfail.core.config import load_yaml, merge, validate

from .repo_copy import ROOT, copy_repo, env_for, snakemake

sys.path.insert(0, str(ROOT / "benchmarks"))
import budget  # noqa: E402

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
OFFLINE = {"fashion_mnist", "mnist1d", "mnist1d_large", "digits"}
PAPERS = {"mnist", "cifar10"}


def preset(*names: str, data_dir: Path | None = None) -> dict:
    config = load_yaml(ROOT / "config.yaml")
    for name in names:
        config = merge(config, load_yaml(ROOT / "presets" / f"{name}.yaml"))
    if data_dir is not None:
        config["data_dir"] = str(data_dir)
    return validate(config, SCHEMA)


def datasets(p: plan.Plan) -> set[str]:
    """Every data set a plan's runs read (tuned runs and variants carry theirs in a base)."""
    names = set()
    for s in p.runs.values():
        for block in (s, s.get("base", {}), s.get("sweep", {}).get("base", {})):
            if block.get("dataset"):
                names.add(block["dataset"])
    return names & set(data.DATASETS)


@pytest.mark.parametrize("names", [("full",), ("full", "papers")])
def test_full_preset_validates_and_plans_offline(names, tmp_path):
    """An empty data_dir: nothing downloaded, so the plan may only name what an offline node
    has; with papers.yaml, MNIST and CIFAR-10 are planned (the data rule downloads them)."""
    config = preset(*names, data_dir=tmp_path / "data")
    p = plan.make_plan(config, plan.enabled_experiments(config))
    used = datasets(p)
    assert config["device"] == "cuda" and config["preset"] == ("full" if names == ("full",) else "full+papers")
    assert "fashion_mnist" in used and "mnist1d_large" in used
    if names == ("full",):
        assert used <= OFFLINE, f"the full preset needs downloads: {sorted(used - OFFLINE)}"
    else:
        assert PAPERS <= used
    # one training job per experiment and stage (shards <id>-000, <id>-stage1-000): the GPU
    # trains one job at a time, and each pays start-up
    assert all(shard.endswith("-000") for shard in p.shards), sorted(p.shards)


def test_full_preset_fits_its_budget():
    """The estimate of benchmarks/budget.py for the full preset: at most 10 minutes on one H100,
    held line by line.

    The design: budget.ALLOTMENT_S is one table with a line per experiment (its training jobs and
    its runs the audit re-trains), one for the audit job's start and one for the last analysis and
    report; the lines and budget.RESERVE_S sum to budget.BUDGET_S, so every line holding its
    estimate is the whole preset holding the budget (the total is checked as well). An experiment
    whose full-preset runs grow fails on its own line, by name, and is paid for by moving seconds
    from another line. An experiment without a line (a new one) is charged to the reserve, which all
    such share: its mere presence breaks nothing while it fits there, and one that trains nothing on
    the full preset always fits. The audit samples runs by hash (audit.sample), so a new
    experiment's runs can push others' runs out of the sample but never bring one in: no listed
    line grows because an experiment was added. One message names every line over."""
    rows, totals = budget.estimate(preset("full"))
    over = budget.over_budget(rows, totals)
    assert not over, "the full preset's estimate is over its budget:\n  " + "\n  ".join(over)
    assert totals["total"] <= budget.BUDGET_S, f"{totals['total']:.0f} s > {budget.BUDGET_S:.0f} s"
    assert {r["experiment"] for r in rows if r["runs"]} >= {"batch_accuracy", "normalization_variants", "bn_speedup"}
    # and the cost model is not vacuous: the old full preset (CIFAR-10 at batch 2 for 10 epochs)
    # is hours
    old = preset("full", "papers")
    old["experiments"]["normalization_variants"].update(epochs=10, batch_sizes=[2, 4, 8, 16, 32, 64, 128])
    assert budget.estimate(old)[1]["total"] > 3600


def test_budget_lines_are_one_table_that_sums_to_the_budget():
    lines = set(budget.ALLOTMENT_S) - {budget.AUDIT, budget.TAIL}
    assert not lines - set(experiments.MODULES), f"budget lines of no experiment: {sorted(lines - set(experiments.MODULES))}"
    assert budget.RESERVE_S >= 0
    assert sum(budget.ALLOTMENT_S.values()) + budget.RESERVE_S == pytest.approx(budget.BUDGET_S)


def test_a_new_experiment_draws_on_the_reserve_and_a_grown_one_on_its_line():
    """Rows at exactly their allotments fit; a new experiment that trains nothing, or fits the
    reserve, still fits; one over the reserve, and a listed experiment over its line, are named."""
    rows = [{"experiment": e, "seconds": s, "audit": 0.0} for e, s in budget.ALLOTMENT_S.items()
            if e not in (budget.AUDIT, budget.TAIL)]
    totals = {"audit_start": budget.ALLOTMENT_S[budget.AUDIT], "tail": budget.ALLOTMENT_S[budget.TAIL]}
    totals["total"] = sum(r["seconds"] for r in rows) + totals["audit_start"] + totals["tail"]

    def over(extra: list[dict]) -> list[str]:
        added = sum(r["seconds"] + r["audit"] for r in extra)
        return budget.over_budget(rows + extra, {**totals, "total": totals["total"] + added})

    assert over([]) == []
    assert over([{"experiment": "new_one", "seconds": 0.0, "audit": 0.0}]) == []
    assert over([{"experiment": "new_one", "seconds": budget.RESERVE_S, "audit": 0.0}]) == []
    (message,) = [m for m in over([{"experiment": "new_one", "seconds": budget.RESERVE_S + 5, "audit": 0.0}])
                  if "new_one" in m]
    assert "reserve" in message and "ALLOTMENT_S" in message
    grown = [{**r, "audit": 1.0} if r["experiment"] == "batch_accuracy" else r for r in rows]
    problems = budget.over_budget(grown, {**totals, "total": totals["total"] + 1.0})
    assert problems[0].startswith("batch_accuracy: ") and "over its allotment" in problems[0]


def test_budget_counts_updates_of_a_stacked_cell(monkeypatch):
    """A cell of 5 runs, 3 epochs of 1,000 examples at batch 100: 30 updates each, one host step
    per stacked update, and the arithmetic of 5 members."""
    s = {"task": "train", "dataset": "digits", "model": {"arch": "mlp", "hidden": [64]}, "batch_size": 100,
         "epochs": 3, "eval_points": 1, "log_points": 1, "seed": 0}
    monkeypatch.setitem(budget.SHAPES, "tiny", ((1, 8, 8), 1000, 100))
    updates, one = budget.training({**s, "dataset": "tiny"}, 1)
    _, five = budget.training({**s, "dataset": "tiny"}, 5)
    assert updates == 30
    flops = 3 * budget.forward_flops(s["model"], "tiny") * 100 * 30 * 4 / budget.SUSTAINED_FLOPS
    assert five - one == pytest.approx(flops + 4 * budget.forward_flops(s["model"], "tiny") * 1100 * 2
                                       / budget.SUSTAINED_FLOPS + 2 * 4 * budget.LOGGED_ROW_S, rel=1e-6)


@pytest.mark.e2e
def test_full_preset_dry_run(tmp_path):
    """The real Snakemake parses the full preset and builds its DAG (-n) with no MNIST or
    CIFAR-10 on disk: one training job per shard of the plan, data prepared only for what it
    reads (offline)."""
    names = ("full",)
    work = copy_repo(tmp_path / "repo")
    proc = snakemake(work, "--configfile", "presets/full.yaml", "--config", f"data_dir={tmp_path / 'nodata'}", "-n",
                     timeout=600)
    out = proc.stdout + proc.stderr
    config = preset(*names, data_dir=tmp_path / "nodata")
    p = plan.make_plan(config, plan.enabled_experiments(config))
    stats = out.split("Job stats:")[1].split("total")[0]  # the table: job, count
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts.get("train") == len(p.shards), out[-2000:]
    assert counts.get("prepare_data") == len(datasets(p)) and datasets(p) <= OFFLINE
    assert counts.get("report") == 1 and counts.get("audit_runs") == 1


def test_gpu_check_refuses_without_cuda(tmp_path):
    """Without a CUDA device it stops at once, says why, and runs nothing (no copy, no results)."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: run benchmarks/gpu_check.py itself")
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--out", str(out)],
                          capture_output=True, text=True, env=env_for(ROOT), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no CUDA device" in proc.stderr
    assert not out.exists()


def test_gpu_check_arguments():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--cores", "many"],
                          capture_output=True, text=True, env=env_for(ROOT), timeout=120)
    assert proc.returncode == 2 and "--cores: invalid int value" in proc.stderr


@pytest.mark.e2e
def test_gpu_check_summary_reads_a_real_run(smoke_run):
    """What the GPU check prints after its Snakemake run, read off the session's real smoke run:
    seconds per experiment from every training job's benchmark file, the audit's line, and
    verdict counts that add up to the report's claims."""
    import gpu_check

    from trainfail.core import store

    work, proc = smoke_run
    assert proc.returncode == 0
    results = work / "results"
    seconds = gpu_check.seconds_by_experiment(results)
    trained = {p.stem.split("-stage")[0].rsplit("-", 1)[0] for p in (results / "shards").glob("*.json")}
    assert set(seconds) == trained and all(v > 0 for v in seconds.values())
    claims = store.read_table(results / "claims.csv")
    counts = gpu_check.verdict_counts(results)
    assert sum(n for kind in counts.values() for n in kind.values()) == len(claims)
    assert set(counts) <= {"check", "demonstration", "test"}
    audited = store.read_table(results / "audit.csv")  # the sample (2 in smoke), and the canary if a run was stacked
    assert len(audited) >= 2 and gpu_check.audit_line(results).startswith(
        f"audit: {len(audited)}/{len(audited)} re-trained runs match")
