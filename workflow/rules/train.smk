# Train one shard of runs: each run writes results/runs/<run id>/; the shard manifest comes last.


rule train:
    input:
        shard_inputs,
    output:
        "results/shards/{shard}.json",
    params:
        settings=shard_settings,
        device=config["device"],
        data_dir=config["data_dir"],
        gpu_slots=GPU_SLOTS,
        engine=("" if config["stack"] else " --no-stack") + (" --tf32" if config["tf32"] else ""),
    threads: config["threads_per_job"]
    resources:
        gpu=GPU_PER_JOB,
    conda:
        "../envs/trainfail.yaml"
    log:
        "results/logs/train/{shard}.log",
    shell:
        "python -m trainfail train --settings {params.settings:q} --device {params.device} "
        "--data-dir {params.data_dir:q} --manifest {output:q} --threads {threads} "
        "--gpu-slots {params.gpu_slots:q}{params.engine} > {log:q} 2>&1"
