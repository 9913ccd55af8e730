# Config validation and the plan: which runs exist, how they are sharded, what each experiment needs.
import json

from snakemake.exceptions import WorkflowError

from trainfail import data as tf_data
from trainfail import experiments as tf_experiments
from trainfail import gpus as tf_gpus
from trainfail.config import ConfigError, validate
from trainfail.plan import enabled_experiments, make_plan

try:
    validate(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as e:
    raise WorkflowError(f"{e}\n(config keys and allowed values: workflow/schemas/config.schema.yaml)")

# Every configured experiment gets its named target; `all` covers the enabled ones.
CONFIGURED = [e for e in tf_experiments.MODULES if e in config["experiments"]]
ENABLED = enabled_experiments(config)
PLAN = make_plan(config, CONFIGURED)
# Training jobs ask for one `gpu` each when they train on a GPU: `--resources gpu=N` then caps
# them at N at once on a workstation (each takes its own GPU via trainfail.gpus), and the SLURM
# executor turns the resource into `sbatch --gpus=1` (with `gpu_model`, `--gpus=<model>:1`).
GPU_PER_JOB = tf_gpus.gpus_per_job(config["device"])
GPU_SLOTS = "results/.gpu-slots"


def as_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def shard_settings(wildcards):
    return as_json(PLAN.shard_settings(wildcards.shard))


def shard_datasets(wildcards):
    """Dataset caches a shard's runs read: prepared once by the data rule."""
    names = {s.get("dataset") for s in PLAN.shard_settings(wildcards.shard)}
    return [f"results/data/{n}.pt" for n in sorted(n for n in names if n in tf_data.DATASETS)]


def shard_inputs(wildcards):
    """What a training job reads: dataset caches, and the shards of earlier stages it builds on."""
    return shard_datasets(wildcards) + [f"results/shards/{s}.json" for s in PLAN.after[wildcards.shard]]


def experiment_shards(experiment):
    return [f"results/shards/{s}.json" for s in PLAN.shards_for(experiment)]


def experiment_runs(experiment):
    return as_json(PLAN.by_experiment.get(experiment, []))


def experiment_config(experiment):
    """What an experiment's analysis reads: its own block and the shared keys, so changing
    another experiment (or the audit, or the device) does not re-run this analysis."""
    shared = {k: config[k] for k in ("preset", "seeds", "data_dir")}
    return {**shared, "experiments": {experiment: config["experiments"][experiment]}}


def experiment_outputs(experiment):
    return [f"results/tables/{experiment}.csv", f"results/claims/{experiment}.csv",
            f"results/figures/{experiment}"]


def enabled_run_ids():
    """The runs of the enabled experiments: what the report describes and the audit samples."""
    return sorted({r for e in ENABLED for r in PLAN.by_experiment.get(e, [])})


def audit_outputs():
    return ["results/audit.csv"] if config["audit"]["sample"] > 0 else []
