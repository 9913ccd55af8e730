# trainfail: the lecture "When Training Fails", re-run with real training.
# The journey: config -> runs (train; a sweep's chosen rate: tune) -> tables -> figures -> claims -> report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        results("report", "index.html"),
        results("findings.md"),
        results("report", "slides.html"),
        results("plan.tsv"),
    localrule: True


onstart:
    # a real run with jobs to run (never -n): claim the tree for the preset, write the job files
    start_run()


onsuccess:
    # the findings, the verdict counts, the claims that failed, where the report is, when this run (re)built it
    html, claims = Path(results("report", "index.html")), Path(results("claims.csv"))
    if html.exists() and claims.exists() and html.stat().st_mtime >= STARTED:
        from trainfail.pipeline.report import console_summary

        print(console_summary(claims, html, Path(results("findings.md"))))
