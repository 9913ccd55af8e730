# The reproducibility audit (`snakemake audit`): re-train a deterministic sample of the finished
# runs of the enabled experiments into a scratch directory and compare their metrics with the
# stored ones -> results/audit.csv (run id, match, largest difference); the report shows it.
# `audit.sample: 0` turns it off.


rule audit_runs:
    input:
        [s for e in ENABLED for s in experiment_shards(e)],
    output:
        results("audit.csv"),
    log:
        results("logs", "audit.log"),
    benchmark:
        results("benchmarks", "audit.tsv")
    conda:
        "../envs/trainfail.yaml"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
    params:
        runs=job_file(enabled_run_ids()),
        sample=config["audit"]["sample"],
        seed=config["audit"]["seed"],
        tolerance=config["audit"]["tolerance"],
        device=config["device"],
        data_dir=config["data_dir"],
        gpu_slots=GPU_SLOTS,
        results=root_above(1),
    shell:
        "python -m trainfail audit --runs {params.runs:q} --sample {params.sample} --seed {params.seed} "
        "--tolerance {params.tolerance} --device {params.device:q} --results {params.results:q} "
        "--data-dir {params.data_dir:q} --gpu-slots {params.gpu_slots:q} --out {output:q} > {log:q} 2>&1"


rule audit:
    input:
        results("audit.csv"),
    localrule: True
