"""Refresh the figure fixtures (tests/data/figure_tables/<id>.csv.gz) of the experiments you name,
from a smoke run, and touch no other experiment's file.

    python -m tests.refresh_fixtures batch_accuracy --run      # a named-target smoke run, then its table
    python -m tests.refresh_fixtures batch_accuracy            # from results/, a smoke tree you have
    python -m tests.refresh_fixtures --results DIR a b         # from another smoke tree
    python -m tests.refresh_fixtures --all [--run]             # every experiment

--run runs `snakemake --configfile presets/smoke.yaml --cores N <id> ...` in a throw-away copy of
the working tree (tests/repo_copy.py: tracked and untracked files, no results/), so your own
results/ is left as it is, whatever preset it holds; without --run the tree must be a smoke tree
(its results/preset says so). tests/test_figures.py draws every figure from these tables.
Path tables (one row per update) are thinned: each run's first and last rows and every
KEEP_EVERY-th.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from .repo_copy import ROOT, copy_repo, snakemake

TABLES = ROOT / "tests" / "data" / "figure_tables"
KEEP_EVERY = 10
LONG = 2000  # a table with more rows than this is thinned


def fixture(experiment: str) -> Path:
    return TABLES / f"{experiment}.csv.gz"


def thin(table: pd.DataFrame) -> pd.DataFrame:
    """Keep each run's first and last rows and every KEEP_EVERY-th (by position within the run)."""
    keys = [c for c in ("kind", "part", "method", "problem", "network", "variant", "seed", "start") if c in table]
    position = table.groupby(keys, dropna=False, sort=False).cumcount()
    size = table.groupby(keys, dropna=False, sort=False)[keys[0]].transform("size")
    return table[(position % KEEP_EVERY == 0) | (position == size - 1)].reset_index(drop=True)


def smoke_tree(results: Path) -> Path:
    """`results`, refused unless it holds the smoke preset's results (the fixtures are smoke-sized)."""
    from trainfail.pipeline import results_tree

    marker = results / results_tree.MARKER
    held = marker.read_text().strip() if marker.exists() else None
    if held != "smoke":
        raise SystemExit(f"{results}/ holds {'no preset' if held is None else f'the {held!r} preset'}'s results; the "
                         "fixtures are the smoke preset's tables: add --run (a named-target smoke run in a "
                         "throw-away copy), or name a smoke tree with --results")
    return results


def write(experiments: list[str], results: Path) -> list[Path]:
    """Each named experiment's table from `results`/tables, thinned if long, as its fixture."""
    from trainfail.core import store

    missing = [e for e in experiments if not (results / "tables" / f"{e}.csv").exists()]
    if missing:
        raise SystemExit(f"{results}/tables has no table of {', '.join(missing)}: run them first "
                         f"(snakemake --configfile presets/smoke.yaml {' '.join(missing)}), or add --run")
    TABLES.mkdir(parents=True, exist_ok=True)
    written = []
    for experiment in experiments:
        table = store.read_table(results / "tables" / f"{experiment}.csv")
        if len(table) > LONG:
            table = thin(table)
        table.to_csv(fixture(experiment), index=False, compression={"method": "gzip", "mtime": 0})
        written.append(fixture(experiment))
        print(f"{fixture(experiment).relative_to(ROOT)}: {len(table)} rows")
    return written


def run_smoke(experiments: list[str], workdir: Path, cores: int) -> Path:
    """The smoke preset's named targets, in a copy of the working tree under `workdir`: its results/."""
    work = copy_repo(workdir / "repo")
    print(f"snakemake --configfile presets/smoke.yaml --cores {cores} {' '.join(experiments)}  (in {work})")
    snakemake(work, "--configfile", "presets/smoke.yaml", "--cores", str(cores), *experiments, timeout=3600)
    return work / "results"


def main(argv: list[str] | None = None) -> None:
    from trainfail import experiments as registry

    p = argparse.ArgumentParser(prog="python -m tests.refresh_fixtures", description=__doc__.split("\n\n")[0])
    p.add_argument("experiments", nargs="*", help="experiment ids (their fixture files are rewritten, no others)")
    p.add_argument("--all", action="store_true", help="every experiment")
    p.add_argument("--run", action="store_true", help="run their smoke named targets first, in a throw-away copy")
    p.add_argument("--results", type=Path, default=ROOT / "results", help="a smoke results tree (default: results/)")
    p.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1), help="with --run (default: 2)")
    args = p.parse_args(argv)
    chosen = list(registry.MODULES) if args.all else args.experiments
    unknown = [e for e in chosen if e not in registry.REGISTRY]
    if unknown or not chosen:
        what = f"unknown experiment {', '.join(unknown)}" if unknown else "name experiments, or --all"
        p.error(f"{what}; known: {', '.join(registry.MODULES)}")
    if args.run:
        with tempfile.TemporaryDirectory(prefix="refresh-fixtures-") as tmp:
            write(chosen, run_smoke(chosen, Path(tmp), args.cores))
    else:
        write(chosen, smoke_tree(args.results))


if __name__ == "__main__":
    main(sys.argv[1:])
