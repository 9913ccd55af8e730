# Per experiment: finished runs -> table -> figures -> claims, and the experiment's named target
# (`snakemake batch_accuracy`). One rule per experiment so each figure set has its own caption.
# A tuned run's rate is read from its sweep's choice file, an input: a new choice reruns the analysis.
# The analysis names its source files as inputs (trainfail.pipeline.sources): editing the experiment or a
# module it uses reruns it; training is not rerun by code changes (runs are named by settings).

for experiment in CONFIGURED:
    tf_module = tf_experiments.get(experiment)

    rule:
        name:
            f"analyze_{experiment}"
        input:
            shards=experiment_shards(experiment),
            choices=choice_files(PLAN.choices_for(experiment)),
            code=source_files(tf_sources.for_analysis(experiment)),
        output:
            table=results("tables", f"{experiment}.csv"),
            # not in Snakemake's --report: its verdicts are before the family-wise adjustment; the
            # report rule's verdicts.csv is
            claims=results("claims", f"{experiment}.csv"),
            figures=report(
                directory(results("figures", experiment)),
                patterns=["{name}.png"],
                caption=f"../report/{experiment}.rst",
                category=str(tf_module.SECTION),
                subcategory=experiment,
                labels={"experiment": experiment, "what": "{name}"},
            ),
        log:
            results("logs", "analyze", f"{experiment}.log"),
        benchmark:
            results("benchmarks", "analyze", f"{experiment}.tsv")
        localrule: True
        conda:
            "../envs/trainfail.yaml"
        threads: 1
        params:
            experiment=experiment,
            job=analysis_job(experiment),
            results=root_above(2),
            # the report links this job's outputs, which Snakemake removes before the job: the job
            # removes the report too, so that a failed analysis leaves no report linking a missing table
            report=results("report", "index.html") if experiment in ENABLED else "",
        shell:
            "python -m trainfail analyze {params.experiment} --job {params.job:q} --results {params.results:q} "
            "--table {output.table:q} --claims {output.claims:q} --figures {output.figures:q} "
            "--report {params.report:q} --threads {threads} > {log:q} 2>&1"

    rule:
        name:
            experiment
        input:
            experiment_outputs(experiment),
        localrule: True
