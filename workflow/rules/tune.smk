# One job per sweep: its finished runs -> the rate it chooses, results/tuning/<sweep id>.json (the
# rate, the criterion, every rate's score per tuning seed, the run ids read; checksummed). Tuned
# runs and the analysis take the file as an input: a new choice retrains them and reruns it. Like
# training, choosing is not tied to code: a changed sweep run chooses again, an edit does not.
# Not a local rule: it sits between a sweep's train shards and the tuned ones, so on SLURM it runs
# in their group (profiles/slurm: groups), which a path out of the group and back would break.


rule tune:
    input:
        sweep_shards,
    output:
        results("tuning", "{sweep}.json"),
    log:
        results("logs", "tune", "{sweep}.log"),
    benchmark:
        results("benchmarks", "tune", "{sweep}.tsv")
    priority: lambda wildcards: SWEEP_PRIORITY.get(wildcards.sweep, 0)
    conda:
        "../envs/trainfail.yaml"
    threads: 1
    params:
        sweep=sweep_settings,
        results=root_above(2),
    shell:
        "python -m trainfail tune --sweep {params.sweep:q} --results {params.results:q} --out {output:q} "
        "> {log:q} 2>&1"
