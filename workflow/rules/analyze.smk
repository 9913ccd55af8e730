# Per experiment: finished runs -> table -> figures -> claims, and the experiment's named target
# (`snakemake batch_accuracy`). One rule per experiment so each figure set has its own caption.

for experiment in CONFIGURED:

    rule:
        name:
            f"analyze_{experiment}"
        input:
            experiment_shards(experiment),
        output:
            table=f"results/tables/{experiment}.csv",
            claims=f"results/claims/{experiment}.csv",
            figures=report(
                directory(f"results/figures/{experiment}"),
                patterns=["{name}.png"],
                caption=f"../report/{experiment}.rst",
                category=tf_experiments.get(experiment).SECTION,
                subcategory=experiment,
            ),
        params:
            experiment=experiment,
            config=as_json(experiment_config(experiment)),
            runs=experiment_runs(experiment),
        threads: config["threads_per_job"]
        conda:
            "../envs/trainfail.yaml"
        log:
            f"results/logs/analyze/{experiment}.log",
        shell:
            "python -m trainfail analyze {params.experiment} --config {params.config:q} --runs {params.runs:q} "
            "--table {output.table:q} --claims {output.claims:q} --figures {output.figures:q} "
            "--threads {threads} > {log:q} 2>&1"

    rule:
        name:
            experiment
        input:
            experiment_outputs(experiment),
