"""Intervals and verdicts. Every number shown carries an interval; every verdict is computed.

A claim is a statement "metric > threshold" (or "<") about a measured quantity. Its verdict:
  reproduced       the whole 95% interval lies on the claimed side of the threshold
  not_reproduced   the whole interval lies on the other side
  inconclusive     the interval straddles the threshold, or too few samples (n < min_n)
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

VERDICTS = ("reproduced", "not_reproduced", "inconclusive")
CLAIM_COLUMNS = ["experiment", "claim_id", "statement", "metric", "value", "ci_low", "ci_high", "n",
                 "verdict", "paper_value", "note"]


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(values), dtype=float)
    return a[np.isfinite(a)]


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and Student-t interval over seeds: (mean, low, high, n). n < 2 gives a NaN interval."""
    a = _clean(values)
    n = len(a)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(a.mean())
    if n < 2:
        return m, math.nan, math.nan, n
    from scipy import stats as sps  # imported here: scipy.stats costs half a second per job

    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * a.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def diff_ci(a: Iterable[float], b: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """mean(a) - mean(b) with a Welch interval: (difference, low, high, min(n_a, n_b))."""
    a, b = _clean(a), _clean(b)
    n = min(len(a), len(b))
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    d = float(a.mean() - b.mean())
    if n < 2:
        return d, math.nan, math.nan, n
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d, n
    df = (va + vb) ** 2 / ((va ** 2) / (len(a) - 1) + (vb ** 2) / (len(b) - 1))
    from scipy import stats as sps

    half = float(sps.t.ppf(0.5 + level / 2, df) * se)
    return d, d - half, d + half, n


def bootstrap_ci(values: Sequence[float], statistic=np.mean, level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float, float, int]:
    """Percentile bootstrap for statistics without a closed-form interval (e.g. a rank correlation)."""
    a = _clean(values)
    n = len(a)
    if n < 2:
        return (float(statistic(a)) if n else math.nan), math.nan, math.nan, n
    rng = np.random.default_rng(seed)
    boots = [statistic(a[rng.integers(0, n, n)]) for _ in range(n_boot)]
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(statistic(a)), float(lo), float(hi), n


def median_ratio_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 2000,
                    seed: int = 0) -> tuple[float, float, float, int]:
    """median(a) / median(b) with a percentile bootstrap resampling each sample on its own
    (e.g. time per update at two batch sizes, over repeats)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    boots = [np.median(rng.choice(a, len(a))) / np.median(rng.choice(b, len(b))) for _ in range(n_boot)]
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(np.median(a) / np.median(b)), float(lo), float(hi), min(len(a), len(b))


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float, float, int]:
    """A proportion k/n with Wilson's score interval (sensible at k = 0, unlike the bootstrap)."""
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    from scipy.stats import norm  # here: scipy.stats costs half a second per job

    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(centre - half, 0.0), min(centre + half, 1.0), n


def verdict(ci_low: float, ci_high: float, n: int, threshold: float = 0.0, direction: str = ">",
            min_n: int = 2) -> str:
    """The verdict for the claim "value <direction> threshold" from its interval."""
    if n < min_n or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "inconclusive"
    if direction == ">":
        above, below = ci_low > threshold, ci_high < threshold
        return "reproduced" if above else "not_reproduced" if below else "inconclusive"
    if direction == "<":
        below, above = ci_high < threshold, ci_low > threshold
        return "reproduced" if below else "not_reproduced" if above else "inconclusive"
    raise ValueError(f"direction must be '>' or '<', got {direction!r}")


def claim(experiment: str, claim_id: str, statement: str, metric: str, value: float,
          ci_low: float, ci_high: float, n: int, verdict: str, paper_value=None, note: str = "") -> dict:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"experiment": experiment, "claim_id": claim_id, "statement": statement, "metric": metric,
            "value": value, "ci_low": ci_low, "ci_high": ci_high, "n": n, "verdict": verdict,
            "paper_value": paper_value, "note": note}


def compare(experiment: str, claim_id: str, statement: str, metric: str, estimate: tuple,
            threshold: float = 0.0, direction: str = ">", paper_value=None, note: str = "",
            min_n: int = 2) -> dict:
    """A claim row from an (estimate, low, high, n) tuple and the claimed side of a threshold."""
    value, lo, hi, n = estimate
    return claim(experiment, claim_id, statement, metric, value, lo, hi, n,
                 verdict(lo, hi, n, threshold, direction, min_n), paper_value, note)
