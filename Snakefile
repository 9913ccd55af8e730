# trainfail: the lecture "When Training Fails", re-run with real training.
# The journey: config -> runs (train) -> tables -> figures -> claims -> report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/report.smk"


# On a cluster these run on the submitting host, not as jobs: they are cheap (tables, figures,
# the report, named targets) or need the internet (dataset downloads). Local runs ignore this.
localrules:
    all,
    prepare_data,
    report,


workflow.localrules(*(f"analyze_{e}" for e in CONFIGURED), *CONFIGURED)


rule all:
    input:
        "results/report/index.html",
    default_target: True
