"""The SLURM profile against a real SLURM cluster (not a mock).

Needs slurmctld/slurmd/munged running: `.ci/slurm-up.sh` (root) starts a one-node cluster on
127.0.0.1 and `.ci/slurm-down.sh` stops it. Without SLURM's binaries or a controller that
answers, the test is skipped and says why.

To keep CI time small it runs the smoke preset's `batch_accuracy` target (20 real training runs
in 2 shards, a rate sweep and the runs tuned on it, which the profile's grouping packs into one
submission) through profiles/slurm, trains the same runs locally meanwhile, and requires
identical metrics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from .repo_copy import copy_repo, run_metrics, snakemake, snakemake_background
from trainfail.pipeline import audit

TARGET = "batch_accuracy"
ARGS = [TARGET, "--configfile", "presets/smoke.yaml", "--config", "shard_size=2"]


def _cluster_state() -> str | None:
    """None when a SLURM cluster answers with an up partition, else why not."""
    missing = [b for b in ("sbatch", "squeue", "sinfo") if shutil.which(b) is None]
    if missing:
        return f"SLURM binaries absent ({', '.join(missing)}); .ci/slurm-up.sh installs and starts a one-node cluster"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %a %t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: no SLURM controller answers (.ci/slurm-up.sh starts one)"
    if out.returncode or not out.stdout.strip():
        return f"no SLURM controller answers ({out.stderr.strip()[:200]}); .ci/slurm-up.sh starts one"
    if not any(f.split()[1] == "up" and not f.split()[2].startswith(("down", "drain"))
               for f in out.stdout.splitlines() if len(f.split()) == 3):
        return f"no usable SLURM partition/node: {out.stdout.strip()}"
    return None


def _default_partition() -> str:
    for line in subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split():
        if line.endswith("*"):
            return line[:-1]
    return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()[0]


pytestmark = [pytest.mark.slurm, pytest.mark.e2e]


def _site_profile(repo) -> None:
    """profiles/slurm as shipped, with only the site settings swapped: this cluster's partition,
    no account (no accounting database), and a quick first status check."""
    path = repo / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    resources = profile["default-resources"]
    resources.pop("slurm_account")
    resources["slurm_partition"] = _default_partition()
    profile["slurm-no-account"] = True
    profile["slurm-init-seconds-before-status-checks"] = 2
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


def test_smoke_target_through_slurm_matches_local_run(tmp_path):
    why = _cluster_state()
    if why and os.environ.get("TRAINFAIL_REQUIRE_SLURM"):  # CI starts a cluster: its absence is a failure
        pytest.fail(f"TRAINFAIL_REQUIRE_SLURM is set but {why}")
    if why:
        pytest.skip(why)
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install snakemake-executor-plugin-slurm")

    # The local reference run (the same target: `--until train` would stop before the tuned stage,
    # whose shard waits on the tuning shard) runs meanwhile: the SLURM run mostly waits on the queue.
    local = copy_repo(tmp_path / "local")
    reference = snakemake_background(local, *ARGS, "--cores", "1")
    on_slurm = copy_repo(tmp_path / "slurm")
    _site_profile(on_slurm)
    proc = snakemake(on_slurm, *ARGS, "--profile", "profiles/slurm", timeout=240)
    log = proc.stdout + proc.stderr
    reference.wait(timeout=240)
    assert reference.returncode == 0, f"local reference run failed:\n{(local / 'snakemake.out').read_text()[-3000:]}"

    # The jobs went through sbatch: the executor reports each SLURM job id ...
    job_ids = set(re.findall(r"has been submitted with SLURM jobid (\d+)", log))
    assert job_ids, f"no job was submitted to SLURM:\n{log[-3000:]}"
    # ... SLURM itself knows them as completed (accounting is off: squeue keeps finished jobs
    # for MinJobAge seconds) ...
    states = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %T", "-j", ",".join(sorted(job_ids))],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    states = dict(line.split() for line in states if line.strip())
    assert states and set(states.values()) == {"COMPLETED"}, states
    # ... the two train shards rode in one submission (profile: groups + group-components) ...
    train_logs = list((on_slurm / ".snakemake" / "slurm_logs").glob("group_train_shards*/*.log"))
    assert len(train_logs) == 1, train_logs
    assert len(re.findall(r"Finished jobid: \d+ \(Rule: train\)", log)) == 2
    # ... cheap rules ran on the submitting host ...
    assert f"localrule analyze_{TARGET}" in log and "localrule prepare_data" in log
    # ... and every run was trained inside one of those SLURM jobs.
    metas = [json.loads(p.read_text()) for p in (on_slurm / "results" / "runs").glob("*/meta.json")]
    assert len(metas) == 20  # 16 in stage 0 (the sweep on two tuning seeds), 4 tuned
    assert {m["host"]["slurm_job_id"] for m in metas} <= job_ids


    slurm_metrics, local_metrics = run_metrics(on_slurm / "results"), run_metrics(local / "results")
    assert sorted(slurm_metrics) == sorted(local_metrics)
    for rid, stored in local_metrics.items():
        result = audit.compare(stored, slurm_metrics[rid], tolerance=0.0)  # CPU both: bit-identical
        assert result["match"], (rid, result)
