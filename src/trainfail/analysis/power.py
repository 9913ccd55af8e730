"""Power: how many seeds decide an effect, and what effect a given number of seeds decides.

The tests behind claims are two-sided t-tests (one-sample or paired: "one-sample"; Welch with equal
group sizes: "two-sample"). A test at level alpha on n seeds has power

    P(|T| > t_{1 - alpha/2, df})   with T ~ noncentral t(df, effect / sd * sqrt(n / k)),

k = 1 (one-sample, df = n - 1) or 2 (two-sample, df = 2n - 2). A claim whose outcome of interest is
"no difference" (an equivalence, or a directional claim with a margin) is sized as an equivalence
("equivalence"): the power that its 1 - alpha interval lies inside +-margin when the true value is 0,
P(|mean| + t s / sqrt(n) < margin), which needs about 1.25x the seeds of the t-test at the same
effect (both one-sided tests must pass). `seeds_needed` is the smallest n with power >= POWER;
`decidable_effect` the smallest effect n seeds decide with that power.

A proportion's claim "fraction > threshold" (stats.proportion: Wilson's score interval, read at
level 1 - alpha) is reproduced when the interval's lower end exceeds the threshold p0, which is
exactly the score test's z = (k/n - p0) / sqrt(p0 (1 - p0) / n) > z_{1 - alpha/2}. Its power at a
true fraction p0 + effect is the binomial probability of those k, summed exactly over k = 0..n
(`power_proportion`); `proportion_needed` is the smallest n with power >= POWER (the power of a
discrete test saws up and down with n: the smallest n that reaches it, not every larger one).

Uses: a primary claim's seed count (workflow/power.yaml: the effect the lecture or paper implies,
the sd measured on pilot seeds disjoint from the claim's, alpha = ALPHA / the number of primaries,
Holm's first step) and, for a claim left inconclusive, what this run could have decided and about
how many seeds would decide the effect it measured (stats.family_adjust).
"""

from __future__ import annotations

import math

POWER = 0.8
MAX_SEEDS = 10_000  # "more than this" is reported as this


def _scipy():
    from scipy import stats as sps

    return sps


def _k_df(n: int, design: str) -> tuple[int, int]:
    if design in ("one-sample", "equivalence"):
        return 1, n - 1
    if design == "two-sample":
        return 2, 2 * n - 2
    raise ValueError(f"design must be 'one-sample', 'two-sample' or 'equivalence', got {design!r}")


def power_equivalence(n: int, margin: float, sd: float, alpha: float) -> float:
    """The power of an equivalence as stats decides it (the 1 - alpha t interval of a one-sample mean
    lies inside +-margin) on n seeds when the true value is 0: P(|mean| + t s / sqrt(n) < margin),
    integrated over s (s^2 df / sd^2 ~ chi^2_df) in closed form for the mean."""
    df = n - 1
    if df < 1 or not (sd > 0) or not (margin > 0):
        return math.nan if not sd > 0 else 0.0
    sps = _scipy()
    from scipy import integrate

    t = float(sps.t.ppf(1 - alpha / 2, df))
    a = abs(margin) / sd * math.sqrt(n)  # the margin in standard errors of the mean at s = sd

    def inside(q: float) -> float:  # P(|Z| < a - t sqrt(q / df)) at chi^2 value q
        return max(0.0, 2 * float(sps.norm.cdf(a - t * math.sqrt(q / df))) - 1) * float(sps.chi2.pdf(q, df))

    top = df * (a / t) ** 2  # beyond it the interval is wider than the margin
    return float(integrate.quad(inside, 0, top, limit=200)[0])


def power_t(n: int, effect: float, sd: float, alpha: float, design: str = "one-sample") -> float:
    """The power of the two-sided t-test at level `alpha` on n seeds (per group) for `effect`;
    design "equivalence": of the equivalence within +-effect at a true value of 0 (power_equivalence)."""
    if design == "equivalence":
        return power_equivalence(n, effect, sd, alpha)
    k, df = _k_df(n, design)
    if df < 1 or not (sd > 0):
        return math.nan if not sd > 0 else 0.0
    sps = _scipy()
    nc = abs(effect) / sd * math.sqrt(n / k)
    crit = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def seeds_needed(effect: float, sd: float, alpha: float, power: float = POWER, design: str = "one-sample") -> int:
    """The smallest n >= 2 (per group) whose t-test at `alpha` has at least `power` for `effect`;
    MAX_SEEDS when none up to it does (or no effect). Starts from the normal approximation
    n = k ((z_{1-alpha/2} + z_power) sd / effect)^2, which the t-test's n exceeds by a few."""
    if not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0:
        return MAX_SEEDS
    if sd == 0:
        return 2
    k, _ = _k_df(2, design)
    # an equivalence needs both one-sided tests: power (1 + power) / 2 per side at a true 0
    z = _z(alpha, (1 + power) / 2 if design == "equivalence" else power)
    n = max(2, math.ceil(k * (z * sd / abs(effect)) ** 2))
    if n >= MAX_SEEDS:
        return MAX_SEEDS
    while n > 2 and power_t(n - 1, effect, sd, alpha, design) >= power:
        n -= 1
    while power_t(n, effect, sd, alpha, design) < power:
        n += 1
        if n >= MAX_SEEDS:
            return MAX_SEEDS
    return int(n)


def power_proportion(n: int, threshold: float, effect: float, alpha: float) -> float:
    """The power of "fraction > threshold" on n independent ends whose true fraction is threshold +
    effect: P(Wilson's lower bound at level 1 - alpha > threshold), exactly (binomial enumeration)."""
    p0, p1 = float(threshold), float(threshold) + float(effect)
    if n < 1 or not (0 < p0 < 1) or not (0 <= p1 <= 1):
        return math.nan if n >= 1 else 0.0
    sps = _scipy()
    z = float(sps.norm.ppf(1 - alpha / 2))
    # the score test's rejection region k > n p0 + z sqrt(n p0 (1 - p0)): its smallest k
    k_min = math.floor(n * p0 + z * math.sqrt(n * p0 * (1 - p0))) + 1
    return float(sps.binom.sf(k_min - 1, n, p1)) if k_min <= n else 0.0


def proportion_needed(threshold: float, effect: float, alpha: float, power: float = POWER) -> int:
    """The smallest n whose proportion test at `alpha` has at least `power` for `effect` above
    `threshold`; MAX_SEEDS when none up to it does."""
    if not (effect > 0) or threshold + effect > 1:
        return MAX_SEEDS
    n = 1
    while power_proportion(n, threshold, effect, alpha) < power:
        n += 1
        if n >= MAX_SEEDS:
            return MAX_SEEDS
    return n


def decidable_effect(sd: float, n: int, alpha: float, power: float = POWER, design: str = "one-sample") -> float:
    """The smallest effect that n seeds decide with `power` at `alpha` (bisection on power_t, to
    0.1% of sd)."""
    k, df = _k_df(n, design)
    if df < 1 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    lo, hi = 0.0, sd
    while power_t(n, hi, sd, alpha, design) < power:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-3 * sd:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_t(n, mid, sd, alpha, design) < power else (lo, mid)
    return hi


def distance(value: float, threshold: float, direction: str) -> float:
    """How far a measured value lies from what would decide its claim: from the threshold, or for
    an equivalence from the nearer end of the margin."""
    if direction == "within":
        return abs(abs(float(threshold)) - abs(value))
    return abs(value - float(threshold))


def undecided(estimate, threshold: float, direction: str, alpha: float) -> tuple[float, float]:
    """For an undecided claim: (the smallest effect this run's seeds decide at `alpha` with 80%
    power, about how many seeds would decide the effect measured). NaN where the estimate is not a
    t-based one (a proportion, a bootstrap ratio, a correlation, a deterministic value)."""
    sd, design = estimate.spread()
    if not math.isfinite(sd):
        return math.nan, math.nan
    effect = distance(estimate.value, threshold, direction)
    v = estimate.test_var()
    if v > 0:  # an accuracy on a fixed test set: seeds shrink only the seed term (normal approximation)
        z = _z(alpha, POWER)
        room = (effect / z) ** 2 - v
        seeds = min(MAX_SEEDS, max(2, math.ceil(sd ** 2 / room))) if room > 0 else MAX_SEEDS
        return z * math.sqrt(sd ** 2 / estimate.n + v), float(seeds)
    return (decidable_effect(sd, estimate.n, alpha, POWER, design),
            float(seeds_needed(effect, sd, alpha, POWER, design)))


def _z(alpha: float, power: float) -> float:
    sps = _scipy()
    return float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))


# --- the primaries' seed counts (workflow/power.yaml) ---------------------------------------------

DESIGN_KEYS = ("claim", "effect", "effect_reason", "sd", "design", "pilot", "seeds")  # and optionally
# per_seed: the claim's samples per seed (a claim pooling several runs per seed), runs, capped


def load_design(path) -> dict:
    """workflow/power.yaml: per experiment with a PRIMARY, the power calculation's inputs (the
    smallest effect of interest and its reason, the sd measured on pilot seeds that are not claim
    seeds) and the seed count it gives. Entries whose pilot is pending have sd null."""
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}


def alpha_of(design: dict) -> float:
    """The level a primary is powered at: alpha over the number of primaries (Holm's first step)."""
    return float(design["alpha"]) / int(design["primaries"])


def required(entry: dict, alpha: float, target: float = POWER) -> int | None:
    """The seed count the calculation asks for (None while the pilot is pending)."""
    if entry.get("design") == "proportion":
        n = proportion_needed(float(entry["threshold"]), float(entry["effect"]), alpha, target)
        return math.ceil(n / int(entry.get("per_seed", 1)))
    if entry.get("sd") is None:
        return None
    n = seeds_needed(float(entry["effect"]), float(entry["sd"]), alpha, target, entry.get("design", "one-sample"))
    # a claim that pools several runs per seed (edge_of_stability: one per step size) counts runs
    return math.ceil(n / int(entry.get("per_seed", 1)))


def lines(design: dict) -> list[str]:
    """One line per primary: its seeds and where they came from (what `snakemake -n` prints)."""
    a = alpha_of(design)
    out = [f"power: primaries powered at alpha {design['alpha']} / {design['primaries']} = {a:.4g}, power {POWER:g} "
           "(workflow/power.yaml; trainfail.analysis.power)"]
    for exp, e in design.get("experiments", {}).items():
        runs = e.get("runs", e["seeds"])
        if e.get("design") == "proportion":
            per = f", {e['per_seed']} ends per seed" if int(e.get("per_seed", 1)) > 1 else ""
            out.append(f"  {exp}.{e['claim']}: {runs} seeds; the calculation asks {e['seeds']} = smallest n with power "
                       f"{POWER:g} for a fraction {e['threshold'] + e['effect']:g} against the threshold "
                       f"{e['threshold']:g} (proportion, Wilson's interval, exact binomial{per})")
        elif e.get("sd") is None:
            out.append(f"  {exp}.{e['claim']}: {runs} seeds (the preset's; pilot pending: {e.get('pilot', '')})")
            continue
        else:
            out.append(f"  {exp}.{e['claim']}: {runs} seeds; the calculation asks {e['seeds']} = smallest n with power "
                       f"{POWER:g} for effect {e['effect']:g} at sd {e['sd']:.3g} ({e['design']}; sd from {e['pilot']})")
        if runs < e["seeds"]:
            out.append(f"    capped, underpowered: {e.get('capped', '(no reason given)')}")
    return out
