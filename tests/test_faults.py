"""Faults, with the real Snakemake pipeline: a training job killed with SIGKILL mid-run (it trains
its runs as stacks, trainfail.stack), and a corrupted table file.

One copy of the repository serves every test here (module fixture): the smoke preset with only
batch_accuracy enabled and longer epochs, so a shard's runs take long enough to be killed mid-way.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .repo_copy import copy_repo, snakemake, snakemake_background
from trainfail import experiments, store

pytestmark = pytest.mark.e2e

# only batch_accuracy (every other experiment disabled), long enough to kill a training job mid-run
OVERLAY = "audit: {sample: 0}\nexperiments:\n" + "".join(
    f"  {e}: {{enabled: false}}\n" for e in experiments.MODULES if e != "batch_accuracy"
) + "  batch_accuracy: {epochs: 25}\n"
ARGS = ["--configfile", "presets/smoke.yaml", "presets/faults.yaml", "--cores", "1"]


def _children(pid: int) -> list[int]:
    """All descendants of pid (from /proc)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def _train_job(snakemake_pid: int) -> int | None:
    for pid in _children(snakemake_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"trainfail" in cmd and b"train" in cmd and b"--settings" in cmd:
            return pid
    return None


def _finished_runs(results: Path) -> list[Path]:
    runs = results / "runs"
    return [d for d in runs.iterdir() if not d.name.startswith(".")] if runs.exists() else []


def _assert_run_intact(run: Path) -> None:
    meta = store.read_json(run / "meta.json")
    assert meta["run_id"] == run.name
    metrics = store.read_table(run / "metrics.csv")  # checksum verified
    assert len(metrics) > 0 and metrics["step"].is_monotonic_increasing
    store.read_json(run / "summary.json")


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Start the pipeline, SIGKILL the training job once its first run is stored, let Snakemake
    finish (it reports the failure), and record what was on disk."""
    repo = copy_repo(tmp_path_factory.mktemp("faults"))
    (repo / "presets" / "faults.yaml").write_text(OVERLAY)
    results = repo / "results"
    proc = snakemake_background(repo, *ARGS)
    victim, deadline = None, time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if _finished_runs(results):
            victim = _train_job(proc.pid)
            if victim:
                os.kill(victim, signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait(timeout=180)
    log = (repo / "snakemake.out").read_text()
    assert victim, f"never caught the training job mid-shard:\n{log[-3000:]}"
    before = {d.name: store.read_json(d / "meta.json")["finished_at"] for d in _finished_runs(results)}
    return {"repo": repo, "returncode": proc.returncode, "log": log, "before": before}


def test_sigkilled_training_job_leaves_no_half_written_output(killed):
    results = killed["repo"] / "results"
    assert killed["returncode"] != 0, "Snakemake should report the killed job"
    assert not list((results / "shards").glob("*.json")), "a killed shard must not look finished"
    assert 1 <= len(killed["before"]) < 12  # some runs of the first shard stored, not all
    for run in _finished_runs(results):  # every visible run directory is complete and intact
        _assert_run_intact(run)
        assert store.read_json(run / "meta.json")["stack"]["stacked"]  # the job trained stacks
    # leftovers of the interrupted run are hidden temp directories, never a run directory
    assert all(d.name.startswith(".") and d.name.endswith(".tmp")
               for d in (results / "runs").iterdir() if d.name not in killed["before"])


def test_rerun_after_sigkill_completes_and_reuses_finished_runs(killed):
    repo = killed["repo"]
    snakemake(repo, *ARGS)
    results = repo / "results"
    runs = _finished_runs(results)
    assert len(runs) == 16  # 12 in the first stage (lecture, equal updates, sweep), 4 tuned after it
    for run in runs:
        _assert_run_intact(run)
    manifest = store.read_json(results / "shards" / "batch_accuracy-000.json")  # the shard that was killed
    status = {r["run_id"]: r["status"] for r in manifest["runs"]}
    assert {r for r, s in status.items() if s == "reused"} == set(killed["before"])
    for rid, finished_at in killed["before"].items():  # not retrained
        assert store.read_json(results / "runs" / rid / "meta.json")["finished_at"] == finished_at
    assert (results / "report" / "index.html").exists()


def test_corrupted_table_is_detected_not_reported(killed):
    repo = killed["repo"]
    if not (repo / "results" / "report" / "index.html").exists():
        snakemake(repo, *ARGS)
    claims = repo / "results" / "claims" / "batch_accuracy.csv"
    text = claims.read_text()
    claims.write_text(text.replace("reproduced", "reproducedX", 1) if "reproduced" in text else text + "1\n")

    proc = snakemake(repo, *ARGS, check=False)  # the report is older than the edited table: it is rebuilt
    log = proc.stdout + proc.stderr + "".join(p.read_text() for p in (repo / "results" / "logs").glob("report.log"))
    assert proc.returncode != 0
    assert "results/claims/batch_accuracy.csv" in log and "do not match its checksum" in log
    assert not (repo / "results" / "report" / "index.html").exists()  # nothing built from it

    claims.unlink()  # recovery: delete the bad file; the pipeline rebuilds it from the runs
    snakemake(repo, *ARGS)
    assert store.read_table(claims).shape[0] > 0
    assert (repo / "results" / "report" / "index.html").exists()


def test_corrupted_run_metrics_stop_the_figures(killed):
    repo = killed["repo"]
    if not (repo / "results" / "report" / "index.html").exists():
        snakemake(repo, *ARGS)
    run = _finished_runs(repo / "results")[0]
    metrics = run / "metrics.csv"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[: len(lines) // 2]))  # truncated, as by a full disk
    proc = snakemake(repo, *ARGS, "--forcerun", "analyze_batch_accuracy", check=False)
    log = proc.stdout + proc.stderr + (repo / "results" / "logs" / "analyze" / "batch_accuracy.log").read_text()
    assert proc.returncode != 0
    assert f"runs/{run.name}/metrics.csv" in log and "checksum" in log
    assert not (repo / "results" / "figures" / "batch_accuracy").exists()
