"""Faults, with the real Snakemake pipeline: a training job killed with SIGKILL mid-run (it trains
its runs as stacks, trainfail.training.stack), a corrupted table file, damaged runs, and dry runs.

One copy of the repository serves the tests of a fixture (module scope): `killed`, the smoke preset
with only batch_accuracy enabled and longer epochs, so a shard's runs take long enough to be
killed mid-way; `trained`, the same at the smoke preset's epochs, for damaged runs and dry runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from .repo_copy import copy_repo, env_for, snakemake, snakemake_background
from trainfail import experiments
from trainfail.core import store
from trainfail.core.config import canonical_json, load_yaml, merge, validate
from trainfail.pipeline.plan import make_plan

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
    assert 1 <= len(killed["before"]) < 16  # some runs of the first shard stored, not all
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
    assert len(runs) == 20  # 16 in the first stage (lecture, equal updates, sweep on two tuning seeds), 4 tuned
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


# the analysis alone, forced: its own check of the runs it reads (a plain `snakemake` retrains a damaged
# run before any analysis reads it: test_a_damaged_run_is_retrained_by_a_plain_rerun)
ANALYSIS_ONLY = ["analyze_batch_accuracy", "--forcerun", "analyze_batch_accuracy", "--allowed-rules",
                 "analyze_batch_accuracy"]


def test_corrupted_run_metrics_stop_the_figures(killed):
    repo = killed["repo"]
    if not (repo / "results" / "report" / "index.html").exists():
        snakemake(repo, *ARGS)
    run = _finished_runs(repo / "results")[0]
    metrics = run / "metrics.csv"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[: len(lines) // 2]))  # truncated, as by a full disk
    proc = snakemake(repo, *ARGS, *ANALYSIS_ONLY, check=False)
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


def _status(results: Path, shard: str = "batch_accuracy-000") -> dict[str, str]:
    manifest = store.read_json(results / "shards" / f"{shard}.json")
    return {r["run_id"]: r["status"] for r in manifest["runs"]}


def _shard_of(results: Path, rid: str) -> str:
    return next(m.stem for m in (results / "shards").glob("*.json") if rid in _status(results, m.stem))


def test_the_error_for_a_damaged_run_names_a_fix_that_works(killed):
    """The run whose metrics the previous test truncated: following the analysis error's advice
    (run snakemake again) retrains that run alone and rebuilds the report."""
    repo = killed["repo"]
    results = repo / "results"
    damaged = [d for d in _finished_runs(results) if "checksum" in (run_problem_of(d) or "")]
    assert len(damaged) == 1
    log = (results / "logs" / "analyze" / "batch_accuracy.log").read_text()
    assert f"run {damaged[0].name} is damaged" in log and "run snakemake again to retrain it" in log
    shard = _shard_of(results, damaged[0].name)
    proc = snakemake(repo, *ARGS)
    assert (f"shard {shard} is trained again: results/runs/{damaged[0].name}/metrics.csv: contents do not match "
            "its checksum") in proc.stderr
    status = _status(results, shard)
    assert status[damaged[0].name] == "trained" and sum(s == "trained" for s in status.values()) == 1
    _assert_run_intact(damaged[0])
    assert (results / "report" / "index.html").exists()


def run_problem_of(run: Path) -> str | None:
    from trainfail.pipeline.execution import run_problem

    return run_problem(run.parent.parent, store.read_json(run / "meta.json")["settings"])


def test_retraining_every_run_of_an_experiment(killed):
    """`plan --run-dirs` lists an experiment's run directories: deleting them retrains them all.
    The shard manifest is deleted too, as the README's recipe of old said: that answered 'Nothing
    to be done', and so did deleting only a manifest."""
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
    proc = snakemake(repo, *ARGS, *ANALYSIS_ONLY, check=False)
    log = _log(repo, proc)
    assert proc.returncode != 0
    assert f"runs/{run.name}/summary.json: not valid JSON" in log
    assert f"run {run.name} is damaged" in log and "run snakemake again to retrain it" in log  # it works: above


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
    # the job file is named by its content's hash, and written when a real run starts (not by -n)
    config = validate(merge(merge(load_yaml(repo / "config.yaml"), load_yaml(repo / "presets/smoke.yaml")),
                            load_yaml(repo / "big.yaml")), repo / "workflow/schemas/config.schema.yaml")
    plan = make_plan(config, [e for e in experiments.MODULES if e in config["experiments"]])
    shard = max(plan.shards, key=lambda s: len(plan.shards[s]))
    text = canonical_json(plan.shard_settings(shard))
    path = f"results/jobs/{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    assert any(f"--settings {path} " in c for c in train)
    assert len(plan.shards[shard]) >= 300  # the shard really holds hundreds of runs
    assert not (repo / "results").exists()



# --- a damaged run is retrained by a plain rerun; a dry run writes nothing (issue 23) --------

ONLY = OVERLAY.replace("  batch_accuracy: {epochs: 25}\n", "")
ONLY_ARGS = ["--configfile", "presets/smoke.yaml", "only.yaml", "--cores", "1"]
LAST_SHARD = "batch_accuracy-stage1-000"  # the tuned runs: no other shard waits for it


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under path: (mtime in ns, size). Equal before and after = untouched."""
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob("*")}


def _jobs(proc) -> dict[str, int]:
    """Snakemake's 'Job stats' table (the jobs it runs, or with -n would run): rule -> count."""
    lines = (proc.stdout + proc.stderr).splitlines()
    start = lines.index("Job stats:") + 3  # the table's heading and rule
    counts = {}
    for line in lines[start:]:
        rule, count = line.split()
        if rule == "total":
            return counts
        counts[rule] = int(count)
    raise AssertionError("no job stats")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A clean checkout: first a dry run of the default (quick) preset, then a real run of the
    smoke preset (only batch_accuracy) into the same tree."""
    repo = copy_repo(tmp_path_factory.mktemp("trained"))
    (repo / "only.yaml").write_text(ONLY)
    dry = snakemake(repo, "--cores", "1", "-n")
    after_dry = (repo / "results").exists()
    real = snakemake(repo, *ONLY_ARGS, check=False)
    return {"repo": repo, "dry": dry, "results_after_dry": after_dry, "real": real}


def test_a_dry_run_on_a_clean_checkout_writes_nothing(trained):
    """`snakemake -n` lists the jobs and leaves no results/ (no job files, no preset claimed), so the
    real run of another preset afterwards is not refused."""
    assert _jobs(trained["dry"])["train"] > 0 and "This was a dry-run" in trained["dry"].stdout
    assert not trained["results_after_dry"]
    real = trained["real"]
    assert real.returncode == 0, real.stderr[-3000:]
    results = trained["repo"] / "results"
    assert (results / "preset").read_text() == "smoke\n" and list((results / "jobs").glob("*.json"))


def test_a_dry_run_of_another_preset_says_it_would_be_refused(trained):
    results = trained["repo"] / "results"
    before = _tree(results)
    proc = snakemake(trained["repo"], "--cores", "1", "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "dry run: the real run would be refused here, before any job" in out
    assert "holds the results of the 'smoke' preset" in out
    assert _tree(results) == before


def _truncate_metrics(run: Path) -> str:
    metrics = run / "metrics.csv"
    metrics.write_bytes(metrics.read_bytes()[: metrics.stat().st_size // 2])  # as by a full disk
    return f"results/runs/{run.name}/metrics.csv: contents do not match its checksum"


def _garble_summary(run: Path) -> str:
    summary = run / "summary.json"
    data = bytearray(summary.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4] = b"\x00\xff#!"  # a few bytes overwritten
    summary.write_bytes(bytes(data))
    return f"results/runs/{run.name}/summary.json: not valid JSON"


def _delete(run: Path) -> str:
    shutil.rmtree(run)
    return f"run directory results/runs/{run.name} is missing"


FAULTS = {"truncated_metrics": _truncate_metrics, "garbled_summary": _garble_summary, "deleted": _delete}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_damaged_run_is_retrained_by_a_plain_rerun(trained, fault):
    """A run of a finished shard damaged (metrics.csv truncated, summary.json garbled) or deleted:
    a dry run names the shard and lists its job, the analysis that reads it, the report, findings and slides, and
    writes nothing; the real run runs exactly those jobs, retrains that run (its intact
    neighbours reused) and leaves every other shard alone; then nothing is left to do."""
    repo, results = trained["repo"], trained["repo"] / "results"
    assert trained["real"].returncode == 0
    rids = list(_status(results, LAST_SHARD))
    rid = rids[list(FAULTS).index(fault)]  # another run for each fault
    meta = store.read_json(results / "runs" / rid / "meta.json")
    cell = set(meta["stack"]["members"]) if meta["stack"]["stacked"] else {rid}
    why = FAULTS[fault](results / "runs" / rid)
    before = _tree(results)

    dry = snakemake(repo, *ONLY_ARGS, "-n")
    assert f"trainfail: shard {LAST_SHARD} would be trained again (dry run): {why}" in dry.stderr
    assert _jobs(dry) == {"train": 1, "analyze_batch_accuracy": 1, "report": 1, "findings": 1, "slides": 1, "all": 1}
    assert _tree(results) == before  # nothing written, nothing removed

    others = {m.name: m.stat().st_mtime_ns for m in (results / "shards").glob("*.json") if m.stem != LAST_SHARD}
    table = (results / "tables" / "batch_accuracy.csv").stat().st_mtime_ns
    real = snakemake(repo, *ONLY_ARGS)
    assert f"trainfail: shard {LAST_SHARD} is trained again: {why}" in real.stderr
    assert _jobs(real) == _jobs(dry)
    status = _status(results, LAST_SHARD)
    trained_again = {r for r, s in status.items() if s == "trained"}
    assert rid in trained_again and trained_again <= cell, status
    _assert_run_intact(results / "runs" / rid)
    assert {m.name: m.stat().st_mtime_ns for m in (results / "shards").glob("*.json")
            if m.stem != LAST_SHARD} == others  # no other shard ran
    assert (results / "tables" / "batch_accuracy.csv").stat().st_mtime_ns > table  # analysed again
    assert (results / "report" / "index.html").exists()
    assert "Nothing to be done" in snakemake(repo, *ONLY_ARGS, "-n").stdout
