"""`python -m trainfail <command>`: the commands the Snakemake rules call (and users may too).

    prepare-data NAME --out FILE       load a dataset once into a cached tensor file
    train --settings JSON              train a shard of runs into results/runs/<run id>/
    analyze EXPERIMENT --config JSON   runs -> table -> figures -> claims for one experiment
    report --config JSON               all claims -> results/claims.csv and the HTML report
    audit --runs JSON --out CSV        re-run a sample of finished runs and compare their metrics
    download NAME                      fetch and verify mnist / cifar10 / cifar100 / fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _config(text: str) -> dict:
    """A config given inline as JSON, or as a path to a JSON/YAML file."""
    if text.lstrip().startswith("{"):
        return json.loads(text)
    from .config import load_yaml

    return load_yaml(text)


def cmd_prepare_data(args) -> None:
    from . import data

    data.save_cache(data.load(args.name, args.data_dir), args.out)


def cmd_train(args) -> None:
    from . import gpus

    # the GPU slot first: CUDA_VISIBLE_DEVICES must be set before torch initialises CUDA
    with gpus.gpu_slot(args.device, Path(args.gpu_slots)):
        from . import runs

        runs.run_shard(json.loads(args.settings), args.device, Path(args.results), Path(args.data_dir),
                       Path(args.manifest) if args.manifest else None, args.threads, stacked=not args.no_stack,
                       tf32=args.tf32)


def cmd_audit(args) -> None:
    from . import gpus

    with gpus.gpu_slot(args.device, Path(args.gpu_slots)):
        from . import audit, store

        table = audit.audit_runs(Path(args.results), json.loads(args.runs), args.sample, args.tolerance,
                                 args.device, Path(args.data_dir), args.seed)
        store.write_table(table, args.out)
    bad = table[~table["match"].astype(bool)] if not table.empty else table
    print(f"[trainfail] audit: {len(table) - len(bad)}/{len(table)} re-runs match -> {args.out}")


def cmd_analyze(args) -> None:
    import torch

    from . import experiments, runs, stats, store
    from .context import Context

    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(_config(args.config), Path(args.results))
    module = experiments.get(args.experiment)
    cfg = ctx.experiment(args.experiment)
    records = runs.load_runs(ctx.results, json.loads(args.runs)) if args.runs else []
    table = module.table(cfg, records, ctx)
    store.write_table(table, args.table)
    checked = store.read_table(args.table)  # figures and claims read the table back, checksum verified
    store.write_dir(args.figures, lambda tmp: module.figures(checked, cfg, tmp, ctx))
    import pandas as pd

    claims = pd.DataFrame(module.claims(checked, cfg, ctx), columns=stats.CLAIM_COLUMNS)
    store.write_table(claims, args.claims)
    for c in claims.to_dict("records"):  # the family-wise verdicts come with the report
        print(f"[trainfail] {c['experiment']}/{c['claim_id']} ({c['kind']}): {c['verdict_unadjusted']} at 95% "
              f"({c['metric']} = {c['value']:.4g} [{c['ci_low']:.4g}, {c['ci_high']:.4g}], n={c['n']})")


def cmd_report(args) -> None:
    from . import report, store

    config = _config(args.config)
    exps = [e for e in args.experiments.split(",") if e]
    results = Path(args.results)
    from . import stats

    # the family-wise verdicts: every test claim of this report read at the Bonferroni level
    claims = stats.family_adjust(report.collect_claims([results / "claims" / f"{e}.csv" for e in exps]))
    store.write_table(claims, results / "claims.csv")
    # only this config's runs: results/runs may also hold runs of other presets or configs
    metas = [store.read_json(results / "runs" / rid / "meta.json") for rid in json.loads(args.runs)]
    audit_csv = results / "audit.csv"
    audit_table = store.read_table(audit_csv) if args.audit and audit_csv.exists() else None
    page = report.build(config, claims, results / "figures", Path(args.captions), metas, exps, audit_table)
    store.write_text(args.out, page)
    print(f"[trainfail] report: {args.out} ({len(claims)} claims)")


def cmd_download(args) -> None:
    from . import data

    files = {"mnist": list(data.IDX_FILES.values()), "fashion_mnist": list(data.IDX_FILES.values()),
             "cifar10": ["cifar-10-binary.tar.gz"], "cifar100": ["cifar-100-binary.tar.gz"]}
    if args.name not in files:
        sys.exit(f"nothing to download for {args.name!r}: choose from {', '.join(files)}")
    for fn in files[args.name]:
        print(data.download(args.name, fn, Path(args.data_dir)))


def cmd_plan(args) -> None:
    from .config import load_yaml, merge, validate
    from .plan import enabled_experiments, make_plan

    config: dict = {}
    for f in args.configfile:
        config = merge(config, load_yaml(f))
    validate(config, args.schema)
    from . import stack

    plan = make_plan(config, enabled_experiments(config))
    stacks = {}  # shard -> the cells its job trains as stacks (when stack: true)
    for shard in plan.shards:
        stacks[shard] = [c for c in stack.cells(plan.shard_settings(shard)) if stack.why_not(c) is None]
    for exp, ids in plan.by_experiment.items():
        cells = [c for s in plan.shards_for(exp) for c in stacks[s]]
        print(f"{exp}: {len(ids)} runs in {len(plan.shards_for(exp))} shards; "
              f"{sum(len(c) for c in cells)} of them in {len(cells)} stacks")
    print(f"total: {len(plan.runs)} distinct runs, {len(plan.shards)} shards, "
          f"{sum(len(c) for v in stacks.values() for c in v)} runs in {sum(map(len, stacks.values()))} stacks"
          f"{'' if config.get('stack', True) else ' (but stack: false trains every run alone)'}")


def main(argv: list[str] | None = None) -> None:
    # deterministic cuBLAS reads this when CUDA starts: set it before any torch import
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    p = argparse.ArgumentParser(prog="trainfail", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare-data")
    s.add_argument("name")
    s.add_argument("--data-dir", default="data")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_prepare_data)

    s = sub.add_parser("train")
    s.add_argument("--settings", required=True, help="JSON list of run settings")
    s.add_argument("--device", default="auto")
    s.add_argument("--results", default="results")
    s.add_argument("--data-dir", default="data")
    s.add_argument("--manifest")
    s.add_argument("--threads", type=int)
    s.add_argument("--no-stack", action="store_true", help="train every run alone (no stacked cells)")
    s.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions on a GPU")
    s.add_argument("--gpu-slots", default="results/.gpu-slots", help="lock files handing out one GPU per job")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("audit")
    s.add_argument("--runs", required=True, help="JSON list of finished run ids to sample from")
    s.add_argument("--sample", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance when a GPU is involved")
    s.add_argument("--device", default="auto")
    s.add_argument("--results", default="results")
    s.add_argument("--data-dir", default="data")
    s.add_argument("--gpu-slots", default="results/.gpu-slots")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("analyze")
    s.add_argument("experiment")
    s.add_argument("--config", required=True)
    s.add_argument("--runs", default="[]", help="JSON list of run ids")
    s.add_argument("--results", default="results")
    s.add_argument("--table", required=True)
    s.add_argument("--claims", required=True)
    s.add_argument("--figures", required=True)
    s.add_argument("--threads", type=int)
    s.set_defaults(func=cmd_analyze)

    s = sub.add_parser("report")
    s.add_argument("--config", required=True)
    s.add_argument("--experiments", required=True, help="comma-separated ids, in report order")
    s.add_argument("--results", default="results")
    s.add_argument("--captions", default="workflow/report")
    s.add_argument("--out", required=True)
    s.add_argument("--audit", action="store_true", help="add results/audit.csv as the report's audit section")
    s.add_argument("--runs", default="[]", help="JSON list of the run ids the report describes (provenance footer)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("download")
    s.add_argument("name")
    s.add_argument("--data-dir", default="data")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("plan", help="print how many runs and shards a config makes")
    s.add_argument("--configfile", action="append", default=["config.yaml"])
    s.add_argument("--schema", default="workflow/schemas/config.schema.yaml")
    s.set_defaults(func=cmd_plan)

    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
