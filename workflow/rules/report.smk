# All claims -> results/claims.csv, and the HTML report: claims first, a section per lecture section.


rule report:
    input:
        [p for e in ENABLED for p in experiment_outputs(e)],
        audit_outputs(),
    output:
        html="results/report/index.html",
        claims="results/claims.csv",
    params:
        config=as_json(config),
        experiments=",".join(ENABLED),
        captions="workflow/report",
        audit="--audit" if audit_outputs() else "",
        runs=as_json(enabled_run_ids()),
    conda:
        "../envs/trainfail.yaml"
    log:
        "results/logs/report.log",
    shell:
        "python -m trainfail report --config {params.config:q} --experiments {params.experiments} "
        "--captions {params.captions:q} --runs {params.runs:q} --out {output.html:q} {params.audit} > {log:q} 2>&1"
