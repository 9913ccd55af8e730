# All claims -> results/claims.csv (family-wise verdicts), the HTML report and its verdicts table (the one
# Snakemake's --report shows); the findings in words (results/findings.md); the lecture mode (slides.html:
# one section per slide); and the plan table.


rule report:
    input:
        tables=[results("tables", f"{e}.csv") for e in ENABLED],
        claims=[results("claims", f"{e}.csv") for e in ENABLED],
        figures=[results("figures", e) for e in ENABLED],
        captions=[f"workflow/report/{e}.rst" for e in ENABLED],
        audit=audit_outputs(),
        code=source_files(tf_sources.for_report()),
    output:
        html=results("report", "index.html"),
        claims=results("claims.csv"),
        # Snakemake's --report shows these verdicts (family-wise, the primaries first), the same as the page's
        verdicts=report(
            results("report", "verdicts.csv"),
            caption="../report/verdicts.rst",
            category="0 Verdicts",
            labels={"what": "verdicts (family-wise, primaries first)"},
        ),
    log:
        results("logs", "report.log"),
    localrule: True
    conda:
        "../envs/trainfail.yaml"
    params:
        job=job_file(
            {
                "config": config,
                "experiments": ENABLED,
                "runs": enabled_run_ids(),
                "audit": bool(audit_outputs()),
            }
        ),
        results=root_above(2),
    shell:
        "python -m trainfail report --job {params.job:q} --results {params.results:q} "
        "--captions workflow/report --out {output.html:q} > {log:q} 2>&1"


rule findings:
    input:
        claims=results("claims.csv"),
        code=source_files(tf_sources.for_report()),
    output:
        results("findings.md"),
    log:
        results("logs", "findings.log"),
    localrule: True
    conda:
        "../envs/trainfail.yaml"
    shell:
        "python -m trainfail findings --claims {input.claims:q} --out {output:q} > {log:q} 2>&1"


rule slides:
    input:
        tables=[results("tables", f"{e}.csv") for e in ENABLED],
        claims=results("claims.csv"),
        code=source_files(tf_sources.for_slides(ENABLED)),
    output:
        results("report", "slides.html"),
    log:
        results("logs", "slides.log"),
    localrule: True
    conda:
        "../envs/trainfail.yaml"
    params:
        job=job_file({"config": config, "experiments": ENABLED}),
        results=root_above(2),
    shell:
        "python -m trainfail slides --job {params.job:q} --results {params.results:q} --out {output:q} > {log:q} 2>&1"


rule plan:
    output:
        results("plan.tsv"),
    log:
        results("logs", "plan.log"),
    localrule: True
    conda:
        "../envs/trainfail.yaml"
    params:
        job=job_file({"config": config, "experiments": CONFIGURED}),
    shell:
        "python -m trainfail plan --job {params.job:q} --tsv {output:q} > {log:q} 2>&1"
