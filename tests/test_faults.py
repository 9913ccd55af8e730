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

from .repo_copy import copy_repo, env_for, snakemake, snakemake_background
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
    # Snakemake removed the table before the forced job; the report that linked it is gone too (issue 23)
    assert not (repo / "results" / "tables" / "batch_accuracy.csv").exists()
    assert not (repo / "results" / "report" / "index.html").exists()


# --- retraining, corrupt outputs named (issue 14) --------------------------------------------

def _log(repo: Path, proc) -> str:
    return proc.stdout + proc.stderr + "".join(p.read_text() for p in (repo / "results" / "logs").rglob("*.log"))


def _status(results: Path) -> dict[str, str]:
    manifest = store.read_json(results / "shards" / "batch_accuracy-000.json")
    return {r["run_id"]: r["status"] for r in manifest["runs"]}


def test_the_error_for_a_damaged_run_names_a_fix_that_works(killed):
    """The run whose metrics the previous test truncated: following the analysis error's advice
    (delete the run directory, run snakemake) retrains that run alone and rebuilds the report."""
    repo = killed["repo"]
    results = repo / "results"
    damaged = [d for d in _finished_runs(results) if "checksum" in (run_problem_of(d) or "")]
    assert len(damaged) == 1
    log = (results / "logs" / "analyze" / "batch_accuracy.log").read_text()
    assert f"delete {Path('results') / 'runs' / damaged[0].name}" in log and "run snakemake again" in log
    import shutil

    shutil.rmtree(damaged[0])
    proc = snakemake(repo, *ARGS)
    assert f"shard batch_accuracy-000 is trained again: run directory results/runs/{damaged[0].name} is missing" in proc.stderr
    status = _status(results)
    assert status[damaged[0].name] == "trained" and sum(s == "trained" for s in status.values()) == 1
    _assert_run_intact(damaged[0])
    assert (results / "report" / "index.html").exists()


def run_problem_of(run: Path) -> str | None:
    from trainfail.runs import run_problem

    return run_problem(run.parent.parent, store.read_json(run / "meta.json")["settings"])


def test_retraining_every_run_of_an_experiment(killed):
    """`plan --run-dirs` lists an experiment's run directories: deleting them retrains them all.
    The shard manifest is deleted too, as the README's recipe of old said: that answered 'Nothing
    to be done', and so did deleting only a manifest."""
    import shutil
    import subprocess
    import sys

    repo = killed["repo"]
    results = repo / "results"
    listed = subprocess.run(
        [sys.executable, "-m", "trainfail", "plan", "--configfile", "config.yaml", "--configfile", "presets/smoke.yaml",
         "--configfile", "presets/faults.yaml", "--run-dirs", "batch_accuracy"],
        cwd=repo, env=env_for(repo), capture_output=True, text=True, check=True).stdout.split()
    assert sorted(Path(p).name for p in listed) == sorted(d.name for d in _finished_runs(results))
    for p in listed:
        shutil.rmtree(repo / p)
    (results / "shards" / "batch_accuracy-000.json").unlink()
    report_before = (results / "report" / "index.html").stat().st_mtime_ns
    snakemake(repo, *ARGS)
    assert (results / "report" / "index.html").stat().st_mtime_ns > report_before  # rebuilt
    assert set(_status(results).values()) == {"trained"} and len(_finished_runs(results)) == len(listed)
    assert (results / "report" / "index.html").exists()


def test_a_truncated_table_is_detected_at_report_time(killed):
    """results/tables/<id>.csv is only linked by the report, never read by it: checked all the same."""
    repo = killed["repo"]
    table = repo / "results" / "tables" / "batch_accuracy.csv"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])  # as by a full disk
    (repo / "results" / "report" / "index.html").unlink()
    proc = snakemake(repo, *ARGS, check=False)
    log = _log(repo, proc)
    assert proc.returncode != 0
    assert "results/tables/batch_accuracy.csv: contents do not match its checksum" in log
    assert "delete it and run snakemake again" in log
    assert not (repo / "results" / "report" / "index.html").exists()
    table.unlink()  # the advice
    snakemake(repo, *ARGS)
    assert store.read_table(table).shape[0] > 0 and (repo / "results" / "report" / "index.html").exists()


def test_garbage_json_in_a_run_is_named(killed):
    repo = killed["repo"]
    run = _finished_runs(repo / "results")[0]
    (run / "summary.json").write_text("{\"final\": 0.3, ")  # cut short
    proc = snakemake(repo, *ARGS, "--forcerun", "analyze_batch_accuracy", check=False)
    log = _log(repo, proc)
    assert proc.returncode != 0
    assert f"runs/{run.name}/summary.json: not valid JSON" in log
    assert f"delete {Path('results') / 'runs' / run.name}" in log  # the advice (it works: see above)


def test_a_shard_of_hundreds_of_runs_keeps_its_command_line_short(tmp_path):
    """A few hundred runs in one shard: their settings reach the job through a file, and every
    job's command line stays short (it once passed > 128 KiB: 'Argument list too long')."""
    repo = copy_repo(tmp_path)
    (repo / "big.yaml").write_text(OVERLAY.replace("{epochs: 25}", "{epochs: 1, shard_size: 100000, seeds: ["
                                                   + ", ".join(map(str, range(200, 320))) + "]}"))
    proc = snakemake(repo, "--configfile", "presets/smoke.yaml", "big.yaml", "--cores", "1", "-n", "-p")
    commands = [line for line in proc.stdout.splitlines() if "python -m trainfail" in line]
    train = [c for c in commands if " train " in c]
    assert train and max(map(len, commands)) < 1000, max(commands, key=len)[:300]
    settings = store.read_json(repo / train[0].split("--settings ")[1].split()[0].strip("'"))
    assert len(settings) >= 300  # the shard really holds hundreds of runs
