"""The primaries' seed counts follow from their power calculation (workflow/power.yaml), and the
quick preset runs them."""

from __future__ import annotations

import fnmatch

import pytest

from trainfail import experiments
from trainfail.analysis import power
from trainfail.core.config import load_yaml, validate

from .repo_copy import ROOT

DESIGN = power.load_design(ROOT / "workflow/power.yaml")
PILOT_SEEDS_FROM = 9000  # the pilot's seed_offset: claim seeds stay below it


def _quick() -> dict:
    return validate(load_yaml(ROOT / "config.yaml"), ROOT / "workflow/schemas/config.schema.yaml")


def _at(block: dict, dotted: str):
    for part in dotted.split("."):
        block = block[part]
    return block


def test_the_family_size_is_the_number_of_primaries():
    declared = [e for e in experiments.MODULES if getattr(experiments.get(e), "PRIMARY", None)]
    assert DESIGN["primaries"] == len(declared), f"workflow/power.yaml: primaries is {DESIGN['primaries']}, " \
                                                 f"{len(declared)} experiments declare one: {declared}"


@pytest.mark.parametrize("exp", list(DESIGN["experiments"]))
def test_a_primarys_seeds_follow_from_its_calculation(exp):
    entry = DESIGN["experiments"][exp]
    module = experiments.get(exp)
    assert fnmatch.fnmatchcase(entry["claim"], module.PRIMARY), f"{exp}: {entry['claim']} is not its PRIMARY"
    assert entry["effect"] > 0 and entry["effect_reason"], f"{exp}: an effect needs its reason"
    if entry["sd"] is not None:
        assert entry["seeds"] == power.required(entry, power.alpha_of(DESIGN)), \
            f"{exp}: seeds must be what the calculation gives: python -m trainfail power ..."
        assert "pilot" in entry["pilot"] or "seed_offset" in entry["pilot"]
    quick = _quick()
    block = quick["experiments"][exp]
    # an experiment without seeds of its own runs the global ones (Context.seeds_for)
    seeds = quick["seeds"] if entry["seeds_key"] == "seeds" and "seeds" not in block else _at(block, entry["seeds_key"])
    assert len(seeds) == entry["runs"], f"{exp}.{entry['seeds_key']}: the quick preset runs {len(seeds)} seeds, " \
                                        f"workflow/power.yaml says {entry['runs']}"
    if entry["runs"] < entry["seeds"]:
        assert entry.get("capped"), f"{exp}: fewer seeds than the calculation asks for need a `capped` reason"
    else:
        assert entry["runs"] == entry["seeds"], f"{exp}: runs more seeds than the calculation asks for"
    assert max(seeds) < PILOT_SEEDS_FROM, f"{exp}: claim seeds must not be pilot seeds"


def test_the_dry_run_lines_name_every_primary():
    text = "\n".join(power.lines(DESIGN))
    for exp, entry in DESIGN["experiments"].items():
        assert f"{exp}.{entry['claim']}: {entry['runs']} seeds" in text
