# Train one shard of runs: each run writes results/runs/<run id>/; the shard manifest comes last.


rule train:
    input:
        shard_inputs,
    output:
        results("shards", "{shard}.json"),
    log:
        results("logs", "train", "{shard}.log"),
    benchmark:
        results("benchmarks", "train", "{shard}.tsv")
    priority: lambda wildcards: SHARD_PRIORITY.get(wildcards.shard, 0)
    conda:
        "../envs/trainfail.yaml"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=shard_settings,
        device=config["device"],
        data_dir=config["data_dir"],
        gpu_slots=GPU_SLOTS,
        results=root_above(2),
        engine=("" if config["stack"] else " --no-stack")
        + (" --tf32" if config["tf32"] else "")
        + ("" if config["stack_exact"] else " --inexact-stack"),
    shell:
        # the log gets every line; the console (fd 3, opened on it before the redirection) a short
        # line of runs done and time left at most every 15 s (trainfail.core.progress)
        "TRAINFAIL_CONSOLE_FD=3 TRAINFAIL_JOB={wildcards.shard:q} "
        "python -m trainfail train --settings {params.settings:q} --device {params.device:q} "
        "--results {params.results:q} --data-dir {params.data_dir:q} --manifest {output:q} "
        "--threads {threads} --gpu-slots {params.gpu_slots:q}{params.engine} 3>&2 > {log:q} 2>&1"
