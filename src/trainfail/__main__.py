"""`python -m trainfail <command>`: the commands the Snakemake rules call (and users may too).

    plan                               what a config trains: runs and shards (a table with --tsv)
    prepare-data NAME --out FILE       load a dataset once into a cached tensor file
    train --settings FILE              train a shard of runs into results/runs/<run id>/
    tune --sweep FILE --out FILE       a sweep's finished runs -> its chosen rate (results/tuning/<id>.json)
    analyze EXPERIMENT --job FILE      runs -> table -> figures -> claims for one experiment
    report --job FILE                  all claims -> results/claims.csv and the HTML report
    slides --job FILE --out FILE       the lecture mode: one section per 1280x720 slide (slides.html)
    audit --runs FILE --out CSV        re-run a sample of finished runs and compare their metrics
    download NAME                      fetch and verify mnist / cifar10 / cifar100 / fashion_mnist
    power --pilot DIR --label TEXT     a pilot run's primaries -> workflow/power.yaml's sd and seed counts

A FILE argument is a path to a JSON (or YAML) file; inline JSON is accepted too. The rules pass
files (results/jobs/<hash>.json), so a command line stays short however many runs a shard holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainfail.core import phases


def _load(text: str):
    """A value given inline as JSON, or as a path to a JSON (or YAML) file. JSON is read as JSON:
    YAML 1.1 would read a number such as 1e-08 as a string."""
    if text.lstrip()[:1] in ("{", "["):
        return json.loads(text)
    from trainfail.core.config import load_yaml

    try:
        if not text.endswith((".yaml", ".yml")):
            with open(text) as f:
                return json.load(f)
        return load_yaml(text)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and Path(text).parent.name == "jobs":  # the workflow's job file
            sys.exit(f"trainfail: cannot read {text}: {e.strerror} (job files are written when snakemake starts a "
                     "run, by the workflow's onstart handler: run snakemake without --no-hooks)")
        sys.exit(f"trainfail: cannot read {text}: {e.strerror}")
    except json.JSONDecodeError as e:
        sys.exit(f"trainfail: {text} is not valid JSON: {e}")


def cmd_prepare_data(args) -> None:
    with phases.phase("imports"):
        from trainfail.training import data

    with phases.phase("data"):
        data.save_cache(data.load(args.name, args.data_dir), args.out)


def cmd_train(args) -> None:
    from trainfail.pipeline import gpus

    # the GPU slot first: CUDA_VISIBLE_DEVICES must be set before torch initialises CUDA
    with gpus.gpu_slot(args.device, Path(args.gpu_slots)):
        with phases.phase("imports"):
            from trainfail.pipeline import execution

        execution.run_shard(_load(args.settings), args.device, Path(args.results), Path(args.data_dir),
                            Path(args.manifest) if args.manifest else None, args.threads, stacked=not args.no_stack,
                            tf32=args.tf32, exact=not args.inexact_stack)


def cmd_tune(args) -> None:
    with phases.phase("imports"):
        from trainfail.training import tuning

    spec = _load(args.sweep)
    sid = tuning.sweep_id(spec)
    if args.out and Path(args.out).name != f"{sid}.json":
        sys.exit(f"trainfail: {args.out} is not the choice file of sweep {sid} (results/{tuning.choice_file(spec)})")
    choice = tuning.tune(Path(args.results), spec, Path(args.out) if args.out else None)
    mean = lambda r: "diverged" if not r["eligible"] else "none" if r["mean_score"] is None else f"{r['mean_score']:.4g}"
    means = ", ".join(f"lr {r['lr']:g}: {mean(r)}" for r in choice["rates"])
    print(f"[trainfail] sweep {sid}: lr {choice['lr']:g} chosen by {choice['criterion']} ({choice['better']} of the "
          f"mean over tuning seeds {spec['tuning_seeds']}; {means}) from {len(choice['runs'])} runs")


def cmd_audit(args) -> None:
    from trainfail.pipeline import gpus

    with gpus.gpu_slot(args.device, Path(args.gpu_slots)):
        with phases.phase("imports"):
            from trainfail.core import store
            from trainfail.pipeline import audit

        table = audit.audit_runs(Path(args.results), _load(args.runs), args.sample, args.tolerance,
                                 args.device, Path(args.data_dir), args.seed)
        store.write_table(table, args.out)
    bad = table[~table["match"].astype(bool)] if not table.empty else table
    print(f"[trainfail] audit: {len(table) - len(bad)}/{len(table)} re-runs match -> {args.out}")


def cmd_analyze(args) -> None:
    with phases.phase("imports"):
        import torch

        from trainfail import experiments
        from trainfail.analysis import stats, textables
        from trainfail.core import contract, store
        from trainfail.training.context import Context
        from trainfail.core.run_record import load_labelled

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report:  # it links this analysis' table and figures, which Snakemake removed before the job:
        Path(args.report).unlink(missing_ok=True)  # none left linking them if the analysis fails
    job = _load(args.job)
    ctx = Context(job["config"], Path(args.results))
    module = experiments.get(args.experiment)
    cfg = ctx.experiment(args.experiment)
    with phases.phase("read_runs"):
        records = load_labelled(ctx.results, job["runs"])  # one record per (run id, labels) pair
    with phases.phase("table"):
        table = contract.call(module.table, cfg, records, ctx=ctx)
        store.write_table(table, args.table)
        checked = store.read_table(args.table)  # figures and claims read the table back, checksum verified

    def figures(tmp):
        contract.call(module.figures, checked, cfg, tmp, ctx=ctx)
        textables.write_latex_beside_csvs(tmp)  # a table written as CSV beside the figures, for papers

    from trainfail.analysis import plots

    plots.use_formats(job["config"].get("figure_formats"))  # PDFs for papers: the full preset, or on demand
    with phases.phase("figures"):  # plots.save counts its rendering per format (figures_png, figures_pdf)
        store.write_dir(args.figures, figures)
    with phases.phase("claims"):
        import pandas as pd

        claims = pd.DataFrame(contract.call(module.claims, checked, cfg, ctx=ctx), columns=stats.CLAIM_COLUMNS)
        claims = stats.assign_roles(claims, contract.primary_of(module, claims["claim_id"]), module.SECTION.number)
        from trainfail.pipeline import claim_runs  # which runs each claim rests on (the report's claim cards)

        claims = claim_runs.add_runs(claims, lambda t: contract.call(module.claims, t, cfg, ctx=ctx), checked, records)
        store.write_table(claims, args.claims)
    for c in claims.to_dict("records"):  # the family-wise verdicts come with the report
        print(f"[trainfail] {c['experiment']}/{c['claim_id']} ({c['kind']}): {c['verdict_unadjusted']} at 95% "
              f"({c['metric']} = {c['value']:.4g} [{c['ci_low']:.4g}, {c['ci_high']:.4g}], n={c['n']})")


def cmd_report(args) -> None:
    with phases.phase("imports"):
        from trainfail.analysis import stats
        from trainfail.core import store
        from trainfail.pipeline import report

    job = _load(args.job)
    config, exps = job["config"], job["experiments"]
    results = Path(args.results)

    # the family-wise verdicts: Holm within the primaries and within each section's secondaries
    claims = stats.family_adjust(report.collect_claims([results / "claims" / f"{e}.csv" for e in exps]))
    for e in exps:  # linked from the page, not read: a truncated table must not be linked as if sound
        try:
            store.verified_bytes(results / "tables" / f"{e}.csv")
        except store.CorruptFileError as err:
            sys.exit(f"trainfail: {err}\ndelete it and run snakemake again: it is rebuilt from the runs")
    store.write_table(claims, results / "claims.csv")
    # only this config's runs: results/runs may also hold runs of other presets or configs
    metas = [store.read_json(results / "runs" / rid / "meta.json") for rid in job["runs"]]
    audit_csv = results / "audit.csv"
    audit_table = store.read_table(audit_csv) if job.get("audit") else None
    with phases.phase("report"):
        page = report.build(config, claims, results / "figures", Path(args.captions), metas, exps, audit_table,
                            results)
        store.write_text(args.out, page)
        # the same verdicts for Snakemake's --report (workflow/rules/report.smk), the primaries first
        store.write_text(Path(args.out).with_name("verdicts.csv"), report.verdicts_table(claims).to_csv(index=False))
    print(f"[trainfail] report: {args.out} ({len(claims)} claims)")


def cmd_findings(args) -> None:
    from trainfail.core import store
    from trainfail.pipeline import report

    out = Path(args.out)
    claims = store.read_table(Path(args.claims))
    store.write_text(out, report.findings_markdown(claims, out.parent / "figures"))
    print(f"[trainfail] findings: {out}")
def cmd_slides(args) -> None:
    import pandas as pd

    from trainfail.core import store
    from trainfail.pipeline import slides

    job = _load(args.job)
    results = Path(args.results)
    claims = pd.read_csv(results / "claims.csv")  # the family-wise verdicts, as the report shows them
    store.write_text(args.out, slides.build(job["config"], claims, results, job["experiments"]))
    print(f"[trainfail] slides: {args.out}")


def cmd_power(args) -> None:
    """Fill workflow/power.yaml's sd and seeds from a pilot run's per-experiment claims."""
    import yaml

    from trainfail.analysis import power, stats
    from trainfail.core import store

    path = Path(args.design)
    design = power.load_design(path)
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    alpha = power.alpha_of(design)
    for exp, entry in design.get("experiments", {}).items():
        if entry.get("design") == "proportion":  # its variance follows from its fraction: no pilot
            continue
        claims_csv = Path(args.pilot) / "claims" / f"{exp}.csv"
        if not claims_csv.exists():
            print(f"[trainfail] power: {exp}: no pilot claims at {claims_csv}; left as it is")
            continue
        claims = store.read_table(claims_csv)
        row = claims[claims["role"].eq("primary")] if "role" in claims else claims.iloc[:0]
        if row.empty:
            print(f"[trainfail] power: {exp}: the pilot has no primary claim; left as it is")
            continue
        estimate = stats.Estimate.from_json(row["estimate"].iloc[0])
        sd, design_kind = estimate.spread()
        per_seed = int(entry.get("per_seed", 1))
        entry.update(claim=str(row["claim_id"].iloc[0]), sd=round(float(sd), 6), design=design_kind,
                     pilot=f"{args.label}: {estimate.n // per_seed} pilot seeds"
                           + (f" ({estimate.n} samples, {per_seed} per seed)" if per_seed > 1 else ""))
        entry["seeds"] = power.required(entry, alpha)
        print(f"[trainfail] power: {exp}: sd {sd:.4g} on {estimate.n} pilot seeds -> {entry['seeds']} seeds")
    path.write_text(header + yaml.safe_dump(design, sort_keys=False, width=100))


def cmd_download(args) -> None:
    from trainfail.training import data

    files = {"mnist": list(data.IDX_FILES.values()), "fashion_mnist": list(data.IDX_FILES.values()),
             "cifar10": ["cifar-10-binary.tar.gz"], "cifar100": ["cifar-100-binary.tar.gz"]}
    if args.name not in files:
        sys.exit(f"nothing to download for {args.name!r}: choose from {', '.join(files)}")
    for fn in files[args.name]:
        print(data.download(args.name, fn, Path(args.data_dir)))


def cmd_plan(args) -> None:
    from trainfail.pipeline import plan as tf_plan
    from trainfail.core.config import load_yaml, merge, validate

    if args.job:
        job = _load(args.job)
        config, exps = job["config"], job["experiments"]
    else:
        config = {}
        for f in args.configfile or ["config.yaml"]:
            config = merge(config, load_yaml(f))
        validate(config, args.schema)
        exps = list(config["experiments"]) if args.run_dirs else tf_plan.enabled_experiments(config)
    plan = tf_plan.make_plan(config, exps)
    if args.run_dirs:  # the way to retrain an experiment: delete these, run snakemake (README)
        if args.run_dirs not in plan.by_experiment:
            sys.exit(f"no experiment {args.run_dirs!r} in this config; experiments: {', '.join(plan.by_experiment)}")
        print("\n".join(str(Path(args.results) / "runs" / rid) for rid in plan.by_experiment[args.run_dirs]))
        return
    table = tf_plan.describe(plan)
    if args.tsv:
        from trainfail.core import store

        store.write_text(args.tsv, table.to_csv(sep="\t", index=False))
    from trainfail.training import stack

    stacks = {}  # shard -> the cells its job trains as stacks (when stack: true)
    for shard in plan.shards:
        stacks[shard] = [c for c in plan.cells(shard) if stack.why_not(c) is None]
    for exp, ids in plan.by_experiment.items():
        cells = [c for s in plan.shards_for(exp) for c in stacks[s]]
        tuned = len(plan.choices_for(exp))
        print(f"{exp}: {len(ids)} runs in {len(plan.shards_for(exp))} shards; "
              f"{sum(len(c) for c in cells)} of them in {len(cells)} stacks"
              + (f"; trains at the rates of {tuned} sweeps (tune jobs)" if tuned else ""))
    print(f"total: {len(plan.runs)} distinct runs, {len(plan.shards)} shards, {len(plan.sweeps)} tune jobs, "
          f"{sum(len(c) for v in stacks.values() for c in v)} runs in {sum(map(len, stacks.values()))} stacks"
          f"{'' if config.get('stack', True) else ' (but stack: false trains every run alone)'}")
    if args.shard:
        rows = table[table["shard"] == args.shard]
        if rows.empty:
            sys.exit(f"no shard {args.shard!r}; shards: {', '.join(sorted(plan.shards))}")
        print(rows.to_string(index=False))


def main(argv: list[str] | None = None) -> None:
    # deterministic cuBLAS reads this when CUDA starts: set it before any torch import
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    phases.begin()  # what ran before this is start-up (the interpreter, argparse, this module)
    p = argparse.ArgumentParser(prog="trainfail", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    s = sub.add_parser("plan", help="what a config trains: runs and shards, and what differs between runs")
    s.add_argument("--configfile", action="append", help="config files merged in order (default: config.yaml); "
                                                          "e.g. --configfile config.yaml --configfile presets/smoke.yaml")
    s.add_argument("--schema", default="workflow/schemas/config.schema.yaml", help="the config schema")
    s.add_argument("--job", help="a job file written by the workflow (config and experiments), instead of --configfile")
    s.add_argument("--tsv", help="write the plan table here: shard, stage, run id, experiments, the settings that differ")
    s.add_argument("--shard", help="print the runs of this shard (e.g. bn_speedup-stage1-000)")
    s.add_argument("--run-dirs", metavar="EXPERIMENT", help="print only the run directories of this experiment "
                                                             "(delete them and run snakemake to retrain it)")
    s.add_argument("--results", default="results", help="the results root (for --run-dirs)")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("prepare-data", help="load a dataset once into a cached tensor file")
    s.add_argument("name", help="dataset id: mnist1d, mnist1d_large, digits, fashion_mnist, mnist, cifar10, cifar100, random")
    s.add_argument("--data-dir", default="data", help="where downloaded datasets live")
    s.add_argument("--out", required=True, help="the cache file to write (results/data/<name>.pt)")
    s.set_defaults(func=cmd_prepare_data)

    s = sub.add_parser("train", help="train a shard of runs into <results>/runs/<run id>/")
    s.add_argument("--settings", required=True, help="file (or inline JSON) with the list of run settings")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--results", default="results", help="the results root")
    s.add_argument("--data-dir", default="data", help="where downloaded datasets live")
    s.add_argument("--manifest", help="the shard manifest to write when every run is complete")
    s.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    s.add_argument("--no-stack", action="store_true", help="train every run alone (no stacked cells)")
    s.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions on a GPU")
    s.add_argument("--inexact-stack", action="store_true",
                   help="stack_exact: false: stacked cells batch every layer on the CPU too (grouped convolutions); "
                        "members equal their runs alone to float32 rounding, not bit for bit")
    s.add_argument("--gpu-slots", default="results/.gpu-slots", help="lock files handing out one GPU per job")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("tune", help="a sweep's finished runs -> its chosen rate, results/tuning/<sweep id>.json")
    s.add_argument("--sweep", required=True, help="file (or inline JSON): the sweep {base, lrs, tuning_seeds, criterion}")
    s.add_argument("--results", default="results", help="the results root (the sweep's runs are read there)")
    s.add_argument("--out", help="the choice file to write (default: <results>/tuning/<sweep id>.json)")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("audit", help="re-run a sample of finished runs and compare their metrics")
    s.add_argument("--runs", required=True, help="file (or inline JSON) with the finished run ids to sample from")
    s.add_argument("--sample", type=int, default=3, help="how many runs to re-run")
    s.add_argument("--seed", type=int, default=0, help="seed of the deterministic sample")
    s.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance when a GPU is involved")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--results", default="results", help="the results root")
    s.add_argument("--data-dir", default="data", help="where downloaded datasets live")
    s.add_argument("--gpu-slots", default="results/.gpu-slots", help="lock files handing out one GPU per job")
    s.add_argument("--out", required=True, help="the audit table to write (CSV)")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("analyze", help="finished runs -> table -> figures -> claims for one experiment")
    s.add_argument("experiment", help="experiment id (see `plan`)")
    s.add_argument("--job", required=True, help="file (or inline JSON): {config, runs: [[run id, labels], ...]}")
    s.add_argument("--results", default="results", help="the results root")
    s.add_argument("--table", required=True, help="the table to write (CSV, checksummed)")
    s.add_argument("--claims", required=True, help="the claims to write (CSV, checksummed)")
    s.add_argument("--figures", required=True, help="the figure directory to write (PNG and PDF)")
    s.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    s.add_argument("--report", help="the HTML report, which links the outputs: removed first (rebuilt after)")
    s.set_defaults(func=cmd_analyze)

    s = sub.add_parser("report", help="all claims -> claims.csv (family-wise verdicts) and the HTML report")
    s.add_argument("--job", required=True, help="file (or inline JSON): {config, experiments, runs, audit}")
    s.add_argument("--results", default="results", help="the results root")
    s.add_argument("--captions", default="workflow/report", help="the captions' directory (<id>.rst)")
    s.add_argument("--out", required=True, help="the HTML page to write")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("findings", help="claims.csv -> findings.md: each lecture section's finding in words")
    s.add_argument("--claims", required=True, help="the family-wise claims (results/claims.csv)")
    s.add_argument("--out", required=True, help="the Markdown file to write (results/findings.md)")
    s.set_defaults(func=cmd_findings)
    s = sub.add_parser("slides", help="the lecture mode: one lecture section per slide, its headline figure large")
    s.add_argument("--job", required=True, help="file (or inline JSON): {config, experiments}")
    s.add_argument("--results", default="results", help="the results root (tables/, claims.csv)")
    s.add_argument("--out", required=True, help="the HTML page to write (results/report/slides.html)")
    s.set_defaults(func=cmd_slides)

    s = sub.add_parser("power", help="a pilot run's primaries -> workflow/power.yaml's sd and seed counts")
    s.add_argument("--pilot", required=True, help="the pilot's results folder (with claims/<id>.csv)")
    s.add_argument("--label", required=True, help="where the pilot came from (commit, seed_offset, preset)")
    s.add_argument("--design", default="workflow/power.yaml")
    s.set_defaults(func=cmd_power)

    s = sub.add_parser("download", help="fetch and verify mnist, cifar10, cifar100 or fashion_mnist")
    s.add_argument("name", help="mnist, fashion_mnist, cifar10 or cifar100")
    s.add_argument("--data-dir", default="data", help="where to put it (data_dir/<name>/)")
    s.set_defaults(func=cmd_download)

    args = p.parse_args(argv)
    args.func(args)
    if (where := phases_file(args)) is not None:
        phases.dump(where, command=args.command)


def phases_file(args) -> Path | None:
    """Where a pipeline job's phase times go: <results>/benchmarks/phases/<rule>/<job>.json, beside
    Snakemake's benchmark files (benchmarks/profile_pipeline.py reads them). Named by the job's
    output; None for a command run by hand without one. TRAINFAIL_PHASES=0 turns it off."""
    import os

    if os.environ.get("TRAINFAIL_PHASES", "1") == "0":
        return None
    out = {"train": "manifest", "tune": "out", "audit": "out", "analyze": "claims", "report": "out",
           "prepare-data": "out"}.get(args.command)
    if out is None or not getattr(args, out, None):
        return None
    results = Path(args.out).parents[1] if args.command == "prepare-data" else Path(args.results)
    rule = {"prepare-data": "prepare_data"}.get(args.command, args.command)
    name = {"analyze": getattr(args, "experiment", ""), "report": "report"}.get(args.command)
    return results / "benchmarks" / "phases" / rule / f"{name or Path(getattr(args, out)).stem}.json"


if __name__ == "__main__":
    main()
