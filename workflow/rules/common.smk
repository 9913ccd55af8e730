# Config validation, the plan, and the input functions every rule uses.
import hashlib
import json
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError

from trainfail.training import data as tf_data
from trainfail import experiments as tf_experiments
from trainfail.pipeline import gpus as tf_gpus
from trainfail.pipeline import results_tree as tf_results_tree
from trainfail.pipeline import execution as tf_execution
from trainfail.pipeline import sources as tf_sources
from trainfail.core import store as tf_store
from trainfail.training import tuning as tf_tuning
from trainfail.core.config import ConfigError, canonical_json, validate
from trainfail.pipeline.plan import enabled_experiments, job_priorities, make_plan

# The schema is composed from the files beside it (schemas/experiments/*.schema.yaml), so it is read
# where it lies: workflow.source_path() may hand back a cached copy without its folder.
SCHEMA = Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"
SCHEMA_HINT = "(config keys and allowed values: workflow/schemas/config.schema.yaml)"
try:
    validate(config, SCHEMA)
except ConfigError as e:
    raise WorkflowError(f"{e}\n{SCHEMA_HINT}")

# The one place the results root is spelled; every path below is built from it.
RESULTS = "results"
STARTED = time.time()  # the report is announced at the end only when this run wrote it
# `snakemake -n` (workflow.dryrun is not known yet while the workflow is read; this is)
DRY_RUN = bool(getattr(workflow.output_settings, "dryrun", False))

# A dry run shows each primary claim's seed count and where it came from (workflow/power.yaml)
if DRY_RUN:
    from trainfail.analysis import power as tf_power

    for line in tf_power.lines(tf_power.load_design(Path(workflow.current_basedir).parent / "power.yaml")):
        print(line, file=sys.stderr)

# One results tree, one preset: a run of another preset into it stops here, before any job (a dry
# run too: it says the real run would be refused). The tree is claimed when a real run starts
# (start_run, below): reading the workflow writes nothing.
try:
    tf_results_tree.check(RESULTS, config["preset"])
except tf_results_tree.PresetMismatch as e:
    raise WorkflowError(("dry run: the real run would be refused here, before any job:\n" if DRY_RUN else "") + str(e))


def results(*parts):
    return "/".join([RESULTS, *parts])


def root_above(levels):
    """A param: the results root, read off the rule's first output `levels` directories up (as
    --lint asks: derived from the output, so it stays right wherever outputs are stored)."""
    return lambda wildcards, output: str(Path(output[0]).parents[levels - 1])


# Every configured experiment gets its named target; `all` covers the enabled ones.
CONFIGURED = [e for e in tf_experiments.MODULES if e in config["experiments"]]
ENABLED = enabled_experiments(config)
try:  # the experiments' own checks (runs() refusing a setting): before any job, too
    PLAN = make_plan(config, CONFIGURED)
except ConfigError as e:
    raise WorkflowError(f"{e}\n{SCHEMA_HINT}")


def measured_costs():
    """shard -> the CPU seconds its training job took when it last ran into this results tree
    (Snakemake's benchmark files, results/benchmarks/train/<shard>.tsv); what is unreadable is left out."""
    out = {}
    for tsv in Path(RESULTS, "benchmarks", "train").glob("*.tsv"):
        try:
            header, *rows = tsv.read_text().splitlines()
            out[tsv.stem] = float(dict(zip(header.split("\t"), rows[-1].split("\t")))["cpu_time"])
        except (OSError, ValueError, KeyError, IndexError):
            pass
    return out


# Longest path first (Snakemake priorities): the jobs on the longest chain of training -> tune ->
# training start first, so that two cores finish together (plan.job_priorities; measured costs from
# an earlier run where every shard has one, else estimated from the settings)
SHARD_PRIORITY, SWEEP_PRIORITY = job_priorities(PLAN, measured_costs())

CHECKED = {}  # shard -> why it is trained again, or None (retrain_if_unfinished)


def retrain_if_unfinished(shard):
    """Retraining a run is deleting its directory, or finding it damaged (README: Retraining runs).
    Called as Snakemake puts the shard's job into its DAG (so only for shards the targets need):
    a shard whose manifest exists but whose runs are not all finished and intact (a run directory
    gone, a file lost, truncated or garbled: execution.shard_problem parses every file and checks
    metrics.csv against its checksum), or whose manifest is gone while its runs are there, is
    marked for a forced run, as `--forcerun` would (without making it a target). Snakemake then
    runs its job (which reuses the intact runs and retrains the others) and, its manifest being
    rewritten, everything after it: the analyses that read it and the report. Nothing is deleted,
    so a dry run lists exactly these jobs and changes nothing. Only the main process: a job
    re-reading the workflow (SLURM) is told what to run."""
    if not workflow.is_main_process or shard in CHECKED or shard not in PLAN.shards:
        return
    manifest = Path(results("shards", f"{shard}.json"))
    rids = PLAN.shards[shard]
    why = CHECKED[shard] = tf_execution.shard_problem(RESULTS, shard, rids, PLAN.runs)
    if why is None or not (manifest.exists() or any(tf_execution.run_dir(RESULTS, r).is_dir() for r in rids)):
        return  # finished, or never trained (Snakemake runs a job whose output is missing)
    dag = workflow.dag
    if not isinstance(getattr(dag, "forcefiles", None), set):
        raise WorkflowError(
            f"shard {shard} must be trained again ({why}), and this Snakemake's DAG has no forcefiles set "
            f"to mark it with (tested with Snakemake 9.27): run with --forcerun {manifest}"
        )
    dag.forcefiles.add(str(manifest))
    again = "would be trained again (dry run)" if DRY_RUN else "is trained again"
    print(f"trainfail: shard {shard} {again}: {why}", file=sys.stderr)


# Training jobs ask for one `gpu` each when they train on a GPU: `--resources gpu=N` then caps
# them at N at once on a workstation (each takes its own GPU via trainfail.pipeline.gpus), and the SLURM
# executor turns the resource into `sbatch --gpus=1` (with `gpu_model`, `--gpus=<model>:1`).
GPU_PER_JOB = tf_gpus.gpus_per_job(config["device"])
GPU_SLOTS = results(".gpu-slots")


wildcard_constraints:
    dataset="|".join(tf_data.DATASETS),
    shard=r"[a-z0-9_]+-(stage[0-9]+-)?[0-9]{3}",
    sweep=r"[0-9a-f]{16}",


JOB_FILES = {}  # path -> content of every job file computed (written by start_run)
RUN = {"started": False}  # set by start_run: a real run's jobs are starting


def job_file(value):
    """A job's input (run settings, run ids, the config), in a file named by the hash of its
    content, results/jobs/<hash>.json, passed to the job as that path. Command lines stay short
    however many runs a shard holds, and the path, being the rule's param, changes exactly when the
    content does (so Snakemake reruns exactly those jobs). Reading the workflow only computes the
    path: the file is written when a real run starts (start_run), or at once when the path is asked
    for after that (Snakemake evaluates a job's params again just before it runs it); never by a
    dry run, nor by a job re-reading the workflow (SLURM: the main process wrote it)."""
    text = canonical_json(value)
    path = results("jobs", hashlib.sha256(text.encode()).hexdigest()[:16] + ".json")
    JOB_FILES[path] = text
    if RUN["started"]:
        write_job_file(path)
    return path


def write_job_file(path):
    if not Path(path).exists():
        tf_store.write_text(path, JOB_FILES[path] + "\n")


def start_run():
    """The Snakefile's onstart: Snakemake calls it in the main process when a real run has jobs to
    run, after its DAG is built and before the first job (never for -n, nor for a job re-reading
    the workflow, nor when there is nothing to do). Claims the results tree for this preset, and
    writes the job files the jobs read."""
    try:
        tf_results_tree.claim(RESULTS, config["preset"])
    except tf_results_tree.PresetMismatch as e:  # another preset's run claimed it since we read it
        raise WorkflowError(str(e))
    RUN["started"] = True
    for path in list(JOB_FILES):
        write_job_file(path)


def shard_settings(wildcards):
    return job_file(PLAN.shard_settings(wildcards.shard))


def shard_datasets(wildcards):
    """Dataset caches a shard's runs read: prepared once by the data rule (a tuned run trains its
    sweep's base settings)."""
    names = set()
    for s in PLAN.shard_settings(wildcards.shard):
        sweep = tf_tuning.sweep_of(s)
        names.add((sweep["base"] if sweep else s).get("dataset"))
    return [results("data", f"{n}.pt") for n in sorted(n for n in names if n in tf_data.DATASETS)]


def choice_files(sweep_ids):
    """The choice files of sweeps, written by the tune rule (one per sweep id)."""
    return [results("tuning", f"{s}.json") for s in sweep_ids]


def shard_inputs(wildcards):
    """What a training job reads: dataset caches, the choice files of the sweeps its tuned runs
    train at, and the shards of earlier stages it builds on otherwise (plan.after). (Snakemake asks
    this as it puts the job into its DAG: the moment to check the shard's runs.)"""
    shard = wildcards.shard
    retrain_if_unfinished(shard)
    after = [results("shards", f"{s}.json") for s in PLAN.after[shard]]
    return shard_datasets(wildcards) + choice_files(PLAN.choices_for_shard(shard)) + after


def sweep_shards(wildcards):
    """What a tune job reads: the manifests of the shards holding its sweep's runs."""
    return [results("shards", f"{s}.json") for s in PLAN.sweep_shards(wildcards.sweep)]


def sweep_settings(wildcards):
    return job_file(PLAN.sweeps[wildcards.sweep])


def experiment_shards(experiment):
    return [results("shards", f"{s}.json") for s in PLAN.shards_for(experiment)]


def experiment_config(experiment):
    """What an experiment's analysis reads: its own block and the shared keys, so changing
    another experiment (or the audit, or the device) does not re-run this analysis."""
    shared = {k: config[k] for k in ("preset", "seeds", "seed_offset", "data_dir", "figure_formats")}
    return {**shared, "experiments": {experiment: config["experiments"][experiment]}}


def analysis_job(experiment):
    """The analysis's config and its runs as (run id, labels) pairs: the labels its runs() gave."""
    return job_file({"config": experiment_config(experiment), "runs": PLAN.labels.get(experiment, [])})


def experiment_outputs(experiment):
    return [
        results("tables", f"{experiment}.csv"),
        results("claims", f"{experiment}.csv"),
        results("figures", experiment),
    ]


def source_files(paths):
    """Source files as rule inputs (relative to the working directory where they lie below it)."""
    here = Path.cwd().resolve()
    return [str(p.relative_to(here)) if p.is_relative_to(here) else str(p) for p in paths]


def enabled_run_ids():
    """The runs of the enabled experiments: what the report describes and the audit samples."""
    return sorted({r for e in ENABLED for r in PLAN.by_experiment.get(e, [])})


def audit_outputs():
    return [results("audit.csv")] if config["audit"]["sample"] > 0 else []
