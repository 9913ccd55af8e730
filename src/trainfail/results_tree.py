"""One results tree, one preset: presets must not silently overwrite each other's report.

Runs are named by their settings, so runs of two presets could share results/; but the tables,
figures, claims and the report of one would replace the other's. The tree records its preset in
results/preset when Snakemake first reads the workflow, and a run of another preset into it is
refused before any job, with what to do instead.
"""

from __future__ import annotations

from pathlib import Path

from . import store

MARKER = "preset"


class PresetMismatch(Exception):
    pass


def claim(results: str | Path, preset: str) -> None:
    """Record `preset` as the tree's, or refuse when the tree holds another preset's results."""
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
        return
    store.write_text(marker, preset + "\n")
