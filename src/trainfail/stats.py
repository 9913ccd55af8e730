"""Estimates, intervals and verdicts. Every number shown carries an interval; every verdict is computed.

A claim is a statement "metric > threshold", "metric < threshold" or "metric within +-threshold"
about a measured quantity. Its verdict comes from an interval:
  reproduced       the whole interval lies on the claimed side of the threshold
  not_reproduced   the whole interval lies on the other side
  inconclusive     the interval straddles the threshold, or too few samples (n < min_n)

Claims have a kind:
  check           an identity or closed form the code must satisfy (cannot fail unless the code is wrong)
  demonstration   the outcome is set by constants chosen to show a mechanism
  test            an empirical outcome that could come out either way
Only tests count in the report's tally, and only tests are adjusted for multiplicity.

Family-wise error: the m test claims of one report form one family. Each test's verdict is read
from its interval at the Bonferroni level 1 - alpha/m (alpha = 0.05), so the chance that any test
in the family gets a wrong "reproduced" or "not_reproduced" is at most alpha. The unadjusted 95%
interval stays beside it (ci_low/ci_high, verdict_unadjusted); the adjusted one is
ci_low_adjusted/ci_high_adjusted and `verdict`.

An Estimate keeps the data it was computed from (the per-seed values), so its interval can be
recomputed at any level, and a reviewer can read the samples behind a verdict in claims.csv. All
intervals are scipy.stats' own: one-sample and paired t (ttest_1samp, ttest_rel), Welch
(ttest_ind, equal_var=False), Wilson (binomtest), and scipy's percentile bootstrap (seeded) for a
ratio of medians and for Spearman's correlation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

LEVEL = 0.95      # the level of every unadjusted interval, in claims and in figure bands
ALPHA = 0.05      # the family-wise error rate over the test claims of one report
N_BOOT = 2000     # bootstrap resamples (seeded: the same data gives the same interval)
VERDICTS = ("reproduced", "not_reproduced", "inconclusive")
KINDS = ("check", "demonstration", "test")
DIRECTIONS = (">", "<", "within")
FAMILY_METHOD = "Bonferroni"

# One claim row as an experiment's analysis writes it (results/claims/<id>.csv)...
CLAIM_COLUMNS = ["experiment", "claim_id", "kind", "applicable", "statement", "metric", "direction",
                 "threshold", "value", "ci_low", "ci_high", "n", "min_n", "method", "verdict_unadjusted",
                 "paper_value", "note", "estimate"]
# ... and as the report writes it (results/claims.csv), with the family-wise verdict.
FAMILY_COLUMNS = ["family_size", "level_adjusted", "ci_low_adjusted", "ci_high_adjusted", "verdict"]


def _scipy():
    from scipy import stats as sps  # imported on use: scipy.stats costs half a second per job

    return sps


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(values), dtype=float)
    return a[np.isfinite(a)]


def _pairs(a: Iterable[float], b: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


@dataclass(frozen=True)
class Estimate:
    """A measured value, its sample size and the data its interval is computed from.

    method: mean | paired | welch | proportion | median_ratio | spearman | exact | none
    data:   the samples (JSON-able lists), or k and n for a proportion
    """

    method: str
    value: float
    n: int
    data: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """The two-sided interval at `level` (NaN, NaN when it cannot be computed)."""
        if level not in self._cache:
            import warnings

            with warnings.catch_warnings():  # scipy warns on nearly equal samples; the interval stands
                warnings.simplefilter("ignore", RuntimeWarning)
                self._cache[level] = self._interval(level)
        return self._cache[level]

    def _interval(self, level: float) -> tuple[float, float]:
        nan = (math.nan, math.nan)
        d, sps = self.data, None
        if self.method == "exact":
            return (self.value, self.value) if math.isfinite(self.value) else nan
        if self.method == "none" or self.n < 2:
            return nan
        if self.method == "proportion":
            ci = _scipy().binomtest(int(d["k"]), int(d["n"])).proportion_ci(level, method="wilson")
            return float(ci.low), float(ci.high)
        sps = _scipy()
        if self.method == "mean":
            a = np.asarray(d["a"], float)
            if np.ptp(a) == 0:  # no spread: the t-interval has zero width (scipy returns NaN)
                return self.value, self.value
            ci = sps.ttest_1samp(a, 0.0).confidence_interval(level)
        elif self.method == "paired":
            a, b = np.asarray(d["a"], float), np.asarray(d["b"], float)
            if np.ptp(a - b) == 0:
                return self.value, self.value
            ci = sps.ttest_rel(a, b).confidence_interval(level)
        elif self.method == "welch":
            a, b = np.asarray(d["a"], float), np.asarray(d["b"], float)
            if len(a) < 2 or len(b) < 2:
                return nan
            if np.ptp(a) == 0 and np.ptp(b) == 0:
                return self.value, self.value
            ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(level)
        elif self.method == "median_ratio":
            a, b = np.asarray(d["a"], float), np.asarray(d["b"], float)
            if np.ptp(a) == 0 and np.ptp(b) == 0:
                return self.value, self.value
            ci = sps.bootstrap((a, b), _median_ratio, vectorized=True, n_resamples=N_BOOT, confidence_level=level,
                               method="percentile", rng=np.random.default_rng(0)).confidence_interval
        elif self.method == "spearman":
            # resample the pairs within each group (one sample per group for scipy): the groups
            # (e.g. network widths) keep their sizes, so their mix does not enter the correlation
            parts = _groups(d)
            idx = tuple(np.arange(len(x)) for x, _ in parts)
            stat = lambda *ix: _mean_spearman([(x[i], y[i]) for (x, y), i in zip(parts, ix)])
            ci = sps.bootstrap(idx, stat, vectorized=False, n_resamples=N_BOOT, confidence_level=level,
                               method="percentile", rng=np.random.default_rng(0)).confidence_interval
        else:
            raise ValueError(f"unknown estimate method {self.method!r}")
        lo, hi = float(ci.low), float(ci.high)
        return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else nan

    def text(self, fmt: str = ".3f") -> str:
        """"value [low, high]" with the 95% interval, for notes."""
        lo, hi = self.interval()
        return f"{self.value:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"

    @property
    def low(self) -> float:
        return self.interval()[0]

    @property
    def high(self) -> float:
        return self.interval()[1]

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "value": _jsonable(self.value), "n": self.n,
                           "data": {k: _jsonable(v) for k, v in self.data.items()}},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Estimate":
        d = json.loads(text)
        return cls(d["method"], _float(d["value"]), int(d["n"]),
                   {k: ([_float(x) for x in v] if isinstance(v, list) else v) for k, v in d["data"].items()})


def _jsonable(v):
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else str(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def _float(v) -> float:
    return float(v)  # float("nan"), float("inf") read back the strings JSON stores them as


def _median_ratio(a, b, axis=-1):
    return np.median(a, axis=axis) / np.median(b, axis=axis)


def _groups(d: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    x, y = np.asarray(d["a"], float), np.asarray(d["b"], float)
    g = np.asarray(d.get("groups") or [0] * len(x))
    return [(x[g == k], y[g == k]) for k in dict.fromkeys(g.tolist())]


def _spearman_r(x: np.ndarray, y: np.ndarray) -> float:
    """scipy.stats.spearmanr's statistic (Pearson's r of the average ranks), without its per-call
    overhead: the bootstrap calls it thousands of times."""
    rank = _scipy().rankdata
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def _mean_spearman(parts) -> float:
    rs = [_spearman_r(x, y) for x, y in parts if np.ptp(x) > 0 and np.ptp(y) > 0]
    return float(np.mean(rs)) if rs else math.nan


# --- estimates -------------------------------------------------------------------------------------

def mean(values: Iterable[float]) -> Estimate:
    """A mean over seeds with the one-sample t-interval. Non-finite values are dropped: callers
    that must not drop a seed (a diverged run) score it first (records.final_eval)."""
    a = _clean(values)
    return Estimate("mean", float(a.mean()) if len(a) else math.nan, len(a), {"a": a.tolist()})


def paired(a: Iterable[float], b: Iterable[float]) -> Estimate:
    """mean(a - b) over pairs (arms that share seeds: same initialization, same data order), with
    the paired t-interval. A pair with a non-finite member is dropped."""
    a, b = _pairs(a, b)
    return Estimate("paired", float((a - b).mean()) if len(a) else math.nan, len(a), {"a": a.tolist(), "b": b.tolist()})


def welch(a: Iterable[float], b: Iterable[float]) -> Estimate:
    """mean(a) - mean(b) for independent samples, with Welch's interval; n = min(n_a, n_b)."""
    a, b = _clean(a), _clean(b)
    value = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    return Estimate("welch", value, min(len(a), len(b)), {"a": a.tolist(), "b": b.tolist()})


def proportion(k: int, n: int) -> Estimate:
    """A proportion k/n with Wilson's score interval (sensible at k = 0, unlike the bootstrap)."""
    return Estimate("proportion", k / n if n else math.nan, int(n), {"k": int(k), "n": int(n)})


def median_ratio(a: Iterable[float], b: Iterable[float]) -> Estimate:
    """median(a) / median(b), independent samples (e.g. repeated timings), percentile bootstrap."""
    a, b = _clean(a), _clean(b)
    value = float(np.median(a) / np.median(b)) if len(a) and len(b) else math.nan
    return Estimate("median_ratio", value, min(len(a), len(b)), {"a": a.tolist(), "b": b.tolist()})


def spearman(x: Iterable[float], y: Iterable[float], groups: Iterable | None = None,
             min_group: int = 4) -> Estimate:
    """Spearman's rank correlation of paired values (scipy.stats.spearmanr), percentile bootstrap
    over the pairs. With `groups`, the mean of the within-group correlations, resampling within
    each group; groups smaller than `min_group` or without spread are left out. n: pairs used."""
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    g = np.asarray(list(groups) if groups is not None else [0] * len(x), dtype=object)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[keep], y[keep], g[keep]
    sizes = {k: int((g == k).sum()) for k in dict.fromkeys(g.tolist())}
    use = np.array([sizes[k] >= min_group for k in g.tolist()], dtype=bool) if len(g) else np.zeros(0, bool)
    x, y, g = x[use], y[use], g[use]
    data = {"a": x.tolist(), "b": y.tolist(), "groups": [str(k) for k in g.tolist()]}
    parts = [(a, b) for a, b in _groups(data) if np.ptp(a) > 0 and np.ptp(b) > 0] if len(x) else []
    value = _mean_spearman(parts) if parts else math.nan
    data = {"a": np.concatenate([a for a, _ in parts]).tolist() if parts else [],
            "b": np.concatenate([b for _, b in parts]).tolist() if parts else [],
            "groups": [str(i) for i, (a, _) in enumerate(parts) for _ in a]}
    return Estimate("spearman", value, len(data["a"]), data)


def exact(value: float) -> Estimate:
    """A deterministic number (no seeds, no sampling): its interval is the value itself."""
    return Estimate("exact", float(value), 1)


def missing() -> Estimate:
    """Nothing to measure (no finished run): the claim is inconclusive."""
    return Estimate("none", math.nan, 0)


def band(values) -> tuple[float, float]:
    """The figure band of a cell: the same 95% t-interval of the mean that claims print (for
    seaborn's `errorbar=`). One definition for every figure; see plots.BAND."""
    lo, hi = mean(values).interval(LEVEL)
    m = float(np.nanmean(values)) if len(values) else math.nan
    return (m, m) if math.isnan(lo) else (lo, hi)


# --- verdicts --------------------------------------------------------------------------------------

def verdict(ci_low: float, ci_high: float, n: int, threshold: float = 0.0, direction: str = ">",
            min_n: int = 2) -> str:
    """The verdict for the claim "value <direction> threshold" from its interval.

    direction "within": |value| < threshold (equivalence): reproduced when the whole interval
    lies inside (-threshold, threshold), not reproduced when it lies wholly outside.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if n < min_n or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "inconclusive"
    if direction == ">":
        yes, no = ci_low > threshold, ci_high < threshold
    elif direction == "<":
        yes, no = ci_high < threshold, ci_low > threshold
    else:
        yes, no = -threshold < ci_low and ci_high < threshold, ci_low > threshold or ci_high < -threshold
    return "reproduced" if yes else "not_reproduced" if no else "inconclusive"


def claim(experiment: str, claim_id: str, statement: str, metric: str, estimate: Estimate,
          threshold: float = 0.0, direction: str = ">", *, kind: str, paper_value=None, note: str = "",
          min_n: int = 2, applicable: bool = True) -> dict:
    """One claim row: the estimate, its 95% interval and the verdict that interval gives.

    kind: "check", "demonstration" or "test" (see the module docstring); it is required, so that
    every claim says honestly whether it could have come out the other way.
    applicable: False when this run cannot test the claim (e.g. a GPU claim measured on a CPU):
    the measurement is shown, the verdict is inconclusive, and it is left out of the test family.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(estimate, Estimate):
        raise TypeError(f"estimate must be a stats.Estimate, got {type(estimate).__name__}")
    lo, hi = estimate.interval(LEVEL)
    decided = verdict(lo, hi, estimate.n, threshold, direction, min_n) if applicable else "inconclusive"
    return {"experiment": experiment, "claim_id": claim_id, "kind": kind, "applicable": bool(applicable),
            "statement": statement,
            "metric": metric, "direction": direction, "threshold": float(threshold), "value": estimate.value,
            "ci_low": lo, "ci_high": hi, "n": estimate.n, "min_n": int(min_n), "method": estimate.method,
            "verdict_unadjusted": decided,
            "paper_value": paper_value, "note": note, "estimate": estimate.to_json()}


def family_adjust(claims: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """The report's verdicts: test claims read at the Bonferroni level 1 - alpha/m over the m
    applicable test claims of the report; checks and demonstrations keep their 95% verdict (they
    are not sampled outcomes), and so do claims this run cannot test. Adds the FAMILY_COLUMNS."""
    out = claims.copy()
    if out.empty:
        return out.reindex(columns=list(out.columns) + FAMILY_COLUMNS)
    is_test = out["kind"].eq("test") & out["applicable"].astype(bool)
    m = int(is_test.sum())
    level = 1 - alpha / m if m else LEVEL
    out["family_size"] = m
    lows, highs, levels, verdicts = [], [], [], []
    for test, row in zip(is_test, out.to_dict("records")):
        if test:
            lo, hi = Estimate.from_json(row["estimate"]).interval(level)
            v = verdict(lo, hi, int(row["n"]), float(row["threshold"]), row["direction"], int(row["min_n"]))
        else:
            lo, hi, v = row["ci_low"], row["ci_high"], row["verdict_unadjusted"]
        lows.append(lo), highs.append(hi), verdicts.append(v), levels.append(level if test else LEVEL)
    out["level_adjusted"], out["ci_low_adjusted"], out["ci_high_adjusted"] = levels, lows, highs
    out["verdict"] = verdicts
    return out
