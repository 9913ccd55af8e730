"""One results tree, one preset: presets must not silently overwrite each other's report.

Runs are named by their settings, so runs of two presets could share results/; but the tables,
figures, claims and the report of one would replace the other's. The tree records its preset in
results/preset when a real run first starts a job (the workflow's onstart: a dry run writes
nothing), and a run of another preset into it is refused when Snakemake reads the workflow, before
any job (a dry run is refused too), with what to do instead.
"""

from __future__ import annotations

from pathlib import Path

from trainfail.core import store

MARKER = "preset"


class PresetMismatch(Exception):
    pass


def check(results: str | Path, preset: str) -> None:
    """Refuse when the tree holds another preset's results; write nothing (a dry run checks too)."""
    results = Path(results)
    marker = results / MARKER
    if marker.exists():
        held = marker.read_text().removesuffix("\n")  # exactly what is written below, read alike
        if held != preset:
            raise PresetMismatch(
                f"{results}/ holds the results of the '{held}' preset, and this is a run of the '{preset}' preset: "
                f"its tables, figures, claims and report would replace the '{held}' ones.\n"
                f"  keep both: move them aside first (mv {results} {results}-{held}), or run from another copy of "
                "the repository;\n"
                f"  start over: make clean (removes {results}/ and .snakemake/, every run of every preset).")


def claim(results: str | Path, preset: str) -> None:
    """Record `preset` as the tree's (when a real run starts), or refuse when the tree holds another
    preset's results."""
    check(results, preset)
    marker = Path(results) / MARKER
    if not marker.exists():
        store.write_text(marker, preset + "\n")
