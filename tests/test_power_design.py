"""The primaries' seed counts follow from their power calculation (workflow/power.yaml), and the
quick preset runs them."""

from __future__ import annotations

import fnmatch
import functools

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
    if power.required(entry, power.alpha_of(DESIGN)) is not None:
        assert entry["seeds"] == power.required(entry, power.alpha_of(DESIGN)), \
            f"{exp}: seeds must be what the calculation gives: python -m trainfail power ..."
        if entry["design"] != "proportion":  # a proportion's variance follows from its fraction
            assert "pilot" in entry["pilot"] or "seed_offset" in entry["pilot"]
    quick = _quick()
    block = quick["experiments"][exp]
    # an experiment without seeds of its own runs the global ones (Context.seeds_for)
    seeds = quick["seeds"] if entry["seeds_key"] == "seeds" and "seeds" not in block else _at(block, entry["seeds_key"])
    if isinstance(seeds, int):  # a count of the experiment's seeds (minimum_ratio's seeds_per_level; 0: all)
        seeds = block["seeds"][:seeds] if seeds else block["seeds"]
    assert len(seeds) == entry["runs"], f"{exp}.{entry['seeds_key']}: the quick preset runs {len(seeds)} seeds, " \
                                        f"workflow/power.yaml says {entry['runs']}"
    if entry["runs"] < entry["seeds"]:
        assert entry.get("capped"), f"{exp}: fewer seeds than the calculation asks for need a `capped` reason"
        assert "marginal_cpu_s" in entry and entry.get("cost"), f"{exp}: a cap needs its measured cost (the cap rule)"
    else:
        assert entry["runs"] == entry["seeds"], f"{exp}: runs more seeds than the calculation asks for"
    assert max(seeds) < PILOT_SEEDS_FROM, f"{exp}: claim seeds must not be pilot seeds"


def test_a_proportions_ends_per_seed_are_its_primary_nets():
    """minimum_ratio's primary counts one training end per seed of every swept (smooth, weight
    decay) net at the primary level: per_seed is that number of nets in the quick preset."""
    entry = DESIGN["experiments"]["minimum_ratio"]
    nets = _quick()["experiments"]["minimum_ratio"]["nets"]
    assert entry["per_seed"] == sum(n.get("weight_decay") == "sweep" and n.get("activation", "relu") != "relu"
                                    for n in nets)


@pytest.mark.parametrize("exp", [e for e, entry in DESIGN["experiments"].items() if "marginal_cpu_s" in entry])
def test_the_cap_rule_is_applied_alike(exp):
    """The header's cap rule, on the measured cost only: the calculation's count when it adds at most
    cap_cpu_s to the quick preset, else capped."""
    entry = DESIGN["experiments"][exp]
    assert entry["marginal_cpu_s"] >= 0 and entry.get("cost"), f"{exp}: a measured cost says what was measured"
    if entry["marginal_cpu_s"] <= DESIGN["cap_cpu_s"]:
        assert entry["runs"] == entry["seeds"], f"{exp}: adds {entry['marginal_cpu_s']} CPU-s <= cap_cpu_s: runs `seeds`"
    else:
        assert entry["runs"] < entry["seeds"] and entry.get("capped"), f"{exp}: over cap_cpu_s: capped"


def test_the_dry_run_lines_name_every_primary():
    text = "\n".join(power.lines(DESIGN))
    for exp, entry in DESIGN["experiments"].items():
        assert f"{exp}.{entry['claim']}: {entry['runs']} seeds" in text


# --- a proportion's power (minimum_ratio's primary: "fraction > threshold", Wilson's interval) ------

ALPHA = power.alpha_of(DESIGN)


@functools.lru_cache(maxsize=None)
def _decides(k: int, n: int, threshold: float, alpha: float) -> bool:
    """The claim's own decision: Wilson's interval at level 1 - alpha lies above the threshold."""
    from trainfail.analysis import stats

    return stats.proportion(k, n).interval(1 - alpha)[0] > threshold


@pytest.mark.parametrize("n", [24, 72, 76, 190])
def test_proportion_power_is_the_binomial_sum_over_the_claims_own_decisions(n):
    """Enumeration through stats.proportion (the interval claims.csv reads) gives the same power."""
    from scipy import stats as sps

    brute = sum(sps.binom.pmf(k, n, 0.95) for k in range(n + 1) if _decides(k, n, 0.8, ALPHA))
    assert power.power_proportion(n, 0.8, 0.15, ALPHA) == pytest.approx(brute, abs=1e-9)


def test_proportion_power_matches_a_simulation():
    """Binomial draws at the true fraction, decided by the claim's interval: the hit rate is the
    computed power within simulation error; and the count asked for is the smallest that has 0.8."""
    import numpy as np

    rng = np.random.default_rng(17)
    threshold, effect = 0.8, 0.15
    n = power.proportion_needed(threshold, effect, ALPHA)
    assert power.power_proportion(n, threshold, effect, ALPHA) >= power.POWER
    assert all(power.power_proportion(m, threshold, effect, ALPHA) < power.POWER for m in range(1, n))
    sims = 4000
    for size in (n, 72):
        ks = rng.binomial(size, threshold + effect, sims)
        hits = sum(_decides(int(k), size, threshold, ALPHA) for k in ks)
        p = power.power_proportion(size, threshold, effect, ALPHA)
        assert abs(hits / sims - p) <= 4 * (p * (1 - p) / sims) ** 0.5 + 1e-3, (size, hits / sims, p)
    # no effect: the test keeps its level (one-sided, at most alpha / 2 at the threshold)
    assert power.power_proportion(n, threshold, 0.0, ALPHA) <= ALPHA / 2


# --- the primaries' family, simulated at these counts (issue 17's "Checked by simulation") ---------

def _primary_family(rng, counts: dict, true: dict):
    """The 13 primaries as one Holm family through stats.family_adjust (what writes claims.csv):
    per-seed values N(true, sd) for a t-based primary (threshold 0, ">"; an equivalence: "within"
    +-effect), k ~ Binomial(per_seed x
    n, threshold + true) for a proportion; a primary with a pending pilot stands in at sd 1."""
    import pandas as pd

    from trainfail.analysis import stats

    rows = []
    for exp, e in DESIGN["experiments"].items():
        n, effect = counts[exp], true.get(exp, 0.0)
        if e["design"] == "proportion":
            ends = n * int(e.get("per_seed", 1))
            est, threshold = stats.proportion(int(rng.binomial(ends, e["threshold"] + effect)), ends), e["threshold"]
            direction = ">"
        else:
            sd = e["sd"] if e["sd"] is not None else 1.0
            est, threshold = stats.mean(rng.normal(effect, sd, n * int(e.get("per_seed", 1)))), 0.0
            direction = ">"
            if e["design"] == "equivalence":  # "within +-effect": the null is a true value at the margin
                threshold, direction = e["effect"], "within"
        rows.append(stats.claim(exp, e["claim"], "s", "m", est, threshold, direction, kind="test"))
    for _ in range(DESIGN["primaries"] - len(rows)):  # primaries without an entry: null, 5 seeds
        rows.append(stats.claim("other", f"c{len(rows)}", "s", "m", stats.mean(rng.normal(0, 1, 5)), 0.0, ">",
                                kind="test"))
    table = pd.DataFrame(rows)
    table["family"] = "primary"
    return stats.family_adjust(table, explain=False).set_index("experiment")


@pytest.mark.slow
def test_the_primaries_family_keeps_its_level_and_a_sized_primary_its_power():
    """At the quick preset's counts with every primary at its null (0; an equivalence at its margin),
    the family-wise rate of a wrong "reproduced" or "equivalent" is at most 0.05 (within simulation
    error); at the calculation's counts, each primary with its stated effect (an equivalence: a true
    0; the others null) is decided the right way with power at least 0.8."""
    import numpy as np

    rng = np.random.default_rng(2017)
    runs = {exp: e["runs"] for exp, e in DESIGN["experiments"].items()}
    # the null of an equivalence is a true value at its margin (wrong: "equivalent"), of the others 0
    at_null = {exp: e["effect"] for exp, e in DESIGN["experiments"].items() if e["design"] == "equivalence"}
    sims, per = 120, 40  # the family-wise rate's, and per primary for its power (about 2 CPU-minutes)
    wrong = sum(_primary_family(rng, runs, at_null)["verdict"].isin(["reproduced", "equivalent"]).any()
                for _ in range(sims))
    assert wrong / sims <= 0.05 + 2.5 * (0.05 * 0.95 / sims) ** 0.5, wrong
    sized = {exp: e["seeds"] for exp, e in DESIGN["experiments"].items()}
    for exp, e in DESIGN["experiments"].items():
        if e["sd"] is None and e["design"] != "proportion":
            continue
        # an equivalence's power: "equivalent" at a true 0; the others': "reproduced" at the effect
        true, hit = ({exp: 0.0}, "equivalent") if e["design"] == "equivalence" else ({exp: e["effect"]}, "reproduced")
        hits = sum(_primary_family(rng, sized, {**at_null, **true}).loc[exp, "verdict"] == hit for _ in range(per))
        assert hits / per >= power.POWER - 2.5 * (0.8 * 0.2 / per) ** 0.5, (exp, e["seeds"], hits)


def test_an_equivalence_is_sized_by_the_probability_its_interval_lies_inside_the_margin():
    # against a simulation of the decision stats makes (the 1 - alpha t interval inside +-margin at a
    # true 0), and it needs more seeds than the t-test at the same effect (both one-sided tests pass)
    import numpy as np
    from scipy import stats as sps

    n, margin, sd, alpha = 12, 0.02, 0.015, 0.05 / 13
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, sd, (20_000, n))
    half = sps.t.ppf(1 - alpha / 2, n - 1) * x.std(1, ddof=1) / np.sqrt(n)
    simulated = float(np.mean(np.abs(x.mean(1)) + half < margin))
    assert power.power_equivalence(n, margin, sd, alpha) == pytest.approx(simulated, abs=0.01)
    eq, t = power.seeds_needed(margin, sd, alpha, design="equivalence"), power.seeds_needed(margin, sd, alpha)
    assert power.power_equivalence(eq, margin, sd, alpha) >= 0.8 > power.power_equivalence(eq - 1, margin, sd, alpha)
    assert eq > t

