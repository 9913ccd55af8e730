# Config validation, the plan, and the input functions every rule uses.
import hashlib
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError

from trainfail import data as tf_data
from trainfail import experiments as tf_experiments
from trainfail import gpus as tf_gpus
from trainfail import sources as tf_sources
from trainfail import store as tf_store
from trainfail.config import ConfigError, canonical_json, validate
from trainfail.plan import enabled_experiments, make_plan

# The schema is read in place, not through workflow.source_path: Snakemake's source cache copies
# the one file, without the experiments/ folder beside it that the schema is composed from.
SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
try:
    validate(config, SCHEMA)
except ConfigError as e:
    raise WorkflowError(f"{e}\n(config keys and allowed values: workflow/schemas/config.schema.yaml)")

# The one place the results root is spelled; every path below is built from it.
RESULTS = "results"


def results(*parts):
    return "/".join([RESULTS, *parts])


def root_above(levels):
    """A param: the results root, read off the rule's first output `levels` directories up (as
    --lint asks: derived from the output, so it stays right wherever outputs are stored)."""
    return lambda wildcards, output: str(Path(output[0]).parents[levels - 1])


# Every configured experiment gets its named target; `all` covers the enabled ones.
CONFIGURED = [e for e in tf_experiments.MODULES if e in config["experiments"]]
ENABLED = enabled_experiments(config)
PLAN = make_plan(config, CONFIGURED)
# Training jobs ask for one `gpu` each when they train on a GPU: `--resources gpu=N` then caps
# them at N at once on a workstation (each takes its own GPU via trainfail.gpus), and the SLURM
# executor turns the resource into `sbatch --gpus=1` (with `gpu_model`, `--gpus=<model>:1`).
GPU_PER_JOB = tf_gpus.gpus_per_job(config["device"])
GPU_SLOTS = results(".gpu-slots")


wildcard_constraints:
    dataset="|".join(tf_data.DATASETS),
    shard=r"[a-z0-9_]+-(stage[0-9]+-)?[0-9]{3}",


def job_file(value):
    """A job's input (run settings, run ids, the config), written once at parse time to a file
    named by the hash of its content, results/jobs/<hash>.json, and passed to the job as that path.
    Command lines stay short however many runs a shard holds, and the path, being the rule's
    param, changes exactly when the content does (so Snakemake reruns exactly those jobs)."""
    text = canonical_json(value)
    path = Path(results("jobs", hashlib.sha256(text.encode()).hexdigest()[:16] + ".json"))
    if not path.exists():
        tf_store.write_text(path, text + "\n")
    return str(path)


def shard_settings(wildcards):
    return job_file(PLAN.shard_settings(wildcards.shard))


def shard_datasets(wildcards):
    """Dataset caches a shard's runs read: prepared once by the data rule."""
    names = {s.get("dataset") for s in PLAN.shard_settings(wildcards.shard)}
    return [results("data", f"{n}.pt") for n in sorted(n for n in names if n in tf_data.DATASETS)]


def shard_inputs(wildcards):
    """What a training job reads: dataset caches, and the shards of earlier stages it builds on."""
    return shard_datasets(wildcards) + [results("shards", f"{s}.json") for s in PLAN.after[wildcards.shard]]


def experiment_shards(experiment):
    return [results("shards", f"{s}.json") for s in PLAN.shards_for(experiment)]


def experiment_config(experiment):
    """What an experiment's analysis reads: its own block and the shared keys, so changing
    another experiment (or the audit, or the device) does not re-run this analysis."""
    shared = {k: config[k] for k in ("preset", "seeds", "data_dir")}
    return {**shared, "experiments": {experiment: config["experiments"][experiment]}}


def analysis_job(experiment):
    return job_file({"config": experiment_config(experiment), "runs": PLAN.by_experiment.get(experiment, [])})


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
