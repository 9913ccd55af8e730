"""Estimates, intervals and verdicts. Every number shown carries an interval; every verdict is computed.

A claim is a statement "metric > threshold", "metric < threshold" or "metric within +-margin"
about a measured quantity. Its verdict comes from an interval (equivalently, from a p-value: the
smallest alpha at which the two-sided 1 - alpha interval leaves out the threshold):
  reproduced       the whole interval lies on the claimed side of the threshold
  not_reproduced   the whole interval lies on the other side
  equivalent       ("within" claims) the whole interval lies inside (-margin, +margin): the two
                   one-sided tests (TOST) each reject a difference as large as the margin
  not_equivalent   ("within" claims) the whole interval lies outside the margin: a difference
                   larger than the margin is shown
  inconclusive     the interval straddles the threshold (or a margin), or too few samples
A directional claim may also carry a margin (a control arm whose "no difference" is a finding, e.g.
equal updates removing the large-batch gap): its interval lying inside (-margin, +margin) decides
"equivalent" (no effect beyond the margin), which the report spells out. One estimate, one claim,
one p-value: the smaller of the directional and the equivalence p (the interval decides either way
at one level, and a wrong decision of either kind is at most alpha at any true value).

Claims have a kind:
  check           an identity or closed form the code must satisfy (cannot fail unless the code is wrong)
  demonstration   the outcome is set by constants chosen to show a mechanism
  test            an empirical outcome that could come out either way
Only tests count in the report's tally, and only tests are adjusted for multiplicity.

Roles and families (the pre-declared design): each experiment names in code (its PRIMARY
constant) the one test that decides the lecture's claim by its mechanism. The primaries of a report
form the headline family; every other applicable test is secondary, and the secondaries of one
lecture section form that section's family. Within each family Holm's step-down procedure keeps
the chance of any wrong decided verdict at most alpha = 0.05 (family-wise). A claim's adjusted
p-value is Holm's; its verdict is decided when that is at most alpha, and its adjusted interval is
read at the level 1 - alpha * p / p_adjusted, at which the interval decides exactly when Holm does.
The unadjusted 95% interval stays beside it (ci_low/ci_high, verdict_unadjusted).

An Estimate keeps the data it was computed from (the per-seed values), so its interval can be
recomputed at any level, and a reviewer can read the samples behind a verdict in claims.csv. All
intervals are scipy.stats' own: one-sample and paired t (ttest_1samp, ttest_rel), Welch
(ttest_ind, equal_var=False), Wilson (binomtest), and a seeded percentile bootstrap with enough
resamples for the level it is read at (at least MIN_TAIL resamples beyond each end) for a ratio of
medians, and Fisher's z (with the Fieller-Hartley-Pearson variance 1.06 / (n - 3)) for Spearman's
correlation. Wilson's interval never leaves [0, 1]. An accuracy on a fixed test set (test_n given
to mean/paired) adds the test set's binomial sampling variance to the seeds' (Estimate.test_var).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

LEVEL = 0.95      # the level of every unadjusted interval, in claims and in figure bands
ALPHA = 0.05      # the family-wise error rate within each family of test claims
N_BOOT = 2000     # bootstrap resamples at least (seeded: the same data gives the same interval) ...
MIN_TAIL = 25     # ... and more where the level needs them: this many beyond each end of the interval
BOOT = 50_000     # the resamples of a ratio of medians up to the 99.9% level (more beyond it)
MAX_BOOT = 500_000
VERDICTS = ("reproduced", "not_reproduced", "equivalent", "not_equivalent", "inconclusive")
DECIDED = VERDICTS[:-1]
KINDS = ("check", "demonstration", "test")
ROLES = ("primary", "secondary")
DIRECTIONS = (">", "<", "within")
FAMILY_METHOD = "Holm"
PRIMARY_FAMILY = "primary"


# One claim row as an experiment's analysis writes it (results/claims/<id>.csv)...
CLAIM_COLUMNS = ["experiment", "claim_id", "kind", "applicable", "statement", "metric", "direction",
                 "threshold", "margin", "value", "ci_low", "ci_high", "n", "min_n", "method", "p_value", "verdict_unadjusted",
                 "paper_value", "note", "estimate", "role", "family"]
# ... and as the report writes it (results/claims.csv), with the family-wise verdict, and for a
# claim left inconclusive the smallest effect this run could decide and about how many seeds would
# decide the effect measured (trainfail.analysis.power; t-based estimates only).
FAMILY_COLUMNS = ["family_size", "p_adjusted", "level_adjusted", "ci_low_adjusted", "ci_high_adjusted", "verdict",
                  "decidable_effect", "seeds_to_decide"]


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
        d = self.data
        if self.method == "exact":
            return (self.value, self.value) if math.isfinite(self.value) else nan
        if self.method == "none" or self.n < 2:
            return nan
        sps = _scipy()
        if self.method == "proportion":
            ci = sps.binomtest(int(d["k"]), int(d["n"])).proportion_ci(level, method="wilson")
            return float(ci.low), float(ci.high)
        if self.method in ("mean", "paired", "welch"):
            a, b = self._samples()
            if self.test_var() > 0:
                centre, se, df = self._t_parts()
                q = float(sps.t.ppf((1 + level) / 2, df))
                return centre - q * se, centre + q * se
            if self._no_spread():
                return self.value, self.value
            if self.method == "welch":
                ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(level)
            else:
                ci = sps.ttest_1samp(a if b is None else a - b, 0.0).confidence_interval(level)
        elif self.method == "median_ratio":
            if self._no_spread():
                return self.value, self.value
            boot = self._boot(level)
            return float(np.quantile(boot, (1 - level) / 2)), float(np.quantile(boot, (1 + level) / 2))
        elif self.method == "spearman":
            z, se = self._fisher()
            if not (math.isfinite(z) and se > 0):
                return nan
            q = float(sps.norm.ppf((1 + level) / 2))
            return math.tanh(z - q * se), math.tanh(z + q * se)
        else:
            raise ValueError(f"unknown estimate method {self.method!r}")
        lo, hi = float(ci.low), float(ci.high)
        return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else nan

    def p_value(self, threshold: float = 0.0) -> float:
        """The two-sided p-value of "value = threshold": the smallest alpha at which the 1 - alpha
        interval (the same method as `interval`) leaves the threshold out. NaN where no interval
        can be computed."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = self._p_value(float(threshold))
        return float(min(1.0, p)) if math.isfinite(p) else math.nan

    def _p_value(self, t: float) -> float:
        d = self.data
        if self.method == "exact":
            return math.nan if not math.isfinite(self.value) else (0.0 if self.value != t else 1.0)
        if self.method == "none" or self.n < 2 or not math.isfinite(self.value):
            return math.nan
        sps = _scipy()
        if self.method == "proportion":  # Wilson's interval is the score test's inversion
            k, n = int(d["k"]), int(d["n"])
            if t <= 0 or t >= 1:
                return 0.0 if (k > 0 if t <= 0 else k < n) else 1.0
            z = (k / n - t) / math.sqrt(t * (1 - t) / n)
            return float(2 * sps.norm.sf(abs(z)))
        if self.method in ("mean", "paired", "welch"):
            a, b = self._samples()
            if self.test_var() > 0:
                centre, se, df = self._t_parts()
                return float(2 * sps.t.sf(abs(centre - t) / se, df))
            if self._no_spread():
                return 0.0 if self.value != t else 1.0
            if self.method == "welch":
                return float(sps.ttest_ind(a - t, b, equal_var=False).pvalue)
            return float(sps.ttest_1samp(a if b is None else a - b, t).pvalue)
        if self.method == "median_ratio":
            if self._no_spread():
                return 0.0 if self.value != t else 1.0
            p = lambda boot: float(2 * min(np.mean(boot <= t), np.mean(boot >= t)))
            first = p(self._boot(LEVEL))  # a small p is read again where the interval at 1 - p is read
            return first if first >= 2 * MIN_TAIL / BOOT else p(self._boot(1 - max(first, 1e-12)))
        if self.method == "spearman":
            z, se = self._fisher()
            if not (math.isfinite(z) and se > 0) or not -1 <= t <= 1:
                return math.nan  # nothing measured, or a threshold no correlation has
            if abs(t) == 1:
                return 0.0       # an estimate strictly inside (-1, 1) always excludes +-1
            return float(2 * sps.norm.sf(abs(z - math.atanh(t)) / se))
        raise ValueError(f"unknown estimate method {self.method!r}")

    def spread(self) -> tuple[float, str]:
        """(sd, design) of a t-based estimate, for power calculations: the sd of the values (mean),
        of the differences (paired), or the two groups' pooled sd (welch); NaN otherwise."""
        if self.method not in ("mean", "paired", "welch") or self.n < 2:
            return math.nan, "none"
        a, b = self._samples()
        if self.method == "welch":
            return float(math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)), "two-sample"
        return float(np.std(a if b is None else a - b, ddof=1)), "one-sample"

    def test_var(self) -> float:
        """The test-set sampling variance of a mean accuracy (or error) measured on `test_n` held-out
        examples (data["test_n"]; 0 without it). Seed-to-seed spread does not see it: every seed is
        scored on the same examples, so their accuracy is one draw of the test set, not the
        population's. Binomial: p(1 - p) / test_n per arm, and for a paired difference the sum of
        the two arms' (a bound: it takes the arms' per-example errors as uncorrelated; they are
        positively correlated in practice, which only makes the true variance smaller)."""
        n_test = self.data.get("test_n")
        if not n_test or self.method not in ("mean", "paired"):
            return 0.0
        a, b = self._samples()
        arms = [a] if b is None else [a, b]
        return float(sum(np.mean(x) * (1 - np.mean(x)) for x in arms) / float(n_test))

    def _t_parts(self) -> tuple[float, float, float]:
        """(centre, se, df) of a mean or paired difference whose variance adds the test-set term:
        se^2 = s^2 / n + test variance, with Welch-Satterthwaite degrees of freedom (the test-set
        term is known, with infinite degrees of freedom)."""
        a, b = self._samples()
        d = a if b is None else a - b
        seeds = float(np.var(d, ddof=1)) / len(d)
        v = seeds + self.test_var()
        df = v ** 2 / (seeds ** 2 / (len(d) - 1)) if seeds > 0 else math.inf
        return float(d.mean()), math.sqrt(v), df

    def _samples(self) -> tuple[np.ndarray, np.ndarray | None]:
        a = np.asarray(self.data.get("a", []), float)
        b = np.asarray(self.data["b"], float) if "b" in self.data and self.method != "mean" else None
        return a, b

    def _no_spread(self) -> bool:
        a, b = self._samples()
        if self.method == "paired":
            return bool(np.ptp(a - b) == 0)
        return bool(np.ptp(a) == 0 and (b is None or np.ptp(b) == 0))

    def _boot(self, level: float) -> np.ndarray:
        """The seeded bootstrap distribution of a ratio of medians, with at least MIN_TAIL
        resamples beyond each end of the `level` interval (N_BOOT at least, MAX_BOOT at most)."""
        need = max(N_BOOT, BOOT, math.ceil(2 * MIN_TAIL / max(1 - level, 1e-12)))
        size = min(MAX_BOOT, need)
        key = ("boot", size)
        if key not in self._cache:
            a, b = self._samples()
            rng = np.random.default_rng(0)
            ra = np.median(a[rng.integers(0, len(a), (size, len(a)))], axis=1)
            rb = np.median(b[rng.integers(0, len(b), (size, len(b)))], axis=1)
            self._cache[key] = ra / rb
        return self._cache[key]

    def _fisher(self) -> tuple[float, float]:
        """Fisher's z of the (group-weighted) rank correlation and its standard error."""
        z, w = _fisher_parts(_groups(self.data))
        return z, (math.sqrt(1.06 / w) if w > 0 else math.nan)

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


def _groups(d: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    x, y = np.asarray(d["a"], float), np.asarray(d["b"], float)
    g = np.asarray(d.get("groups") or [0] * len(x))
    return [(x[g == k], y[g == k]) for k in dict.fromkeys(g.tolist())]


def _spearman_r(x: np.ndarray, y: np.ndarray) -> float:
    """scipy.stats.spearmanr's statistic (Pearson's r of the average ranks)."""
    rank = _scipy().rankdata
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def _fisher_parts(parts) -> tuple[float, float]:
    """The weighted mean of the groups' Fisher z (weights n - 3, the inverse of each z's variance
    up to the factor 1.06) and the total weight. A perfect correlation is clipped to |r| < 1."""
    zs, ws = [], []
    for x, y in parts:
        if len(x) > 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            zs.append(math.atanh(float(np.clip(_spearman_r(x, y), -0.999999, 0.999999))))
            ws.append(len(x) - 3)
    if not ws:
        return math.nan, 0.0
    return float(np.average(zs, weights=ws)), float(sum(ws))


# --- estimates -------------------------------------------------------------------------------------

def _test_n(test_n: int | None, *samples: np.ndarray) -> dict:
    """{"test_n": n} for accuracies (or errors) measured on n held-out examples; checked."""
    if test_n is None:
        return {}
    if not int(test_n) >= 1:
        raise ValueError(f"test_n must be a number of held-out examples >= 1, got {test_n!r}")
    if any(len(x) and (np.min(x) < 0 or np.max(x) > 1) for x in samples):
        raise ValueError("test_n goes with accuracies or error rates (values in [0, 1])")
    return {"test_n": int(test_n)}


def mean(values: Iterable[float], test_n: int | None = None) -> Estimate:
    """A mean over seeds with the one-sample t-interval. Non-finite values are dropped: callers
    that must not drop a seed (a diverged run) score it first (run_record.final_eval).
    test_n: the values are accuracies (or errors) on that many held-out examples, and the interval
    adds their test-set sampling variance (Estimate.test_var)."""
    a = _clean(values)
    return Estimate("mean", float(a.mean()) if len(a) else math.nan, len(a), {"a": a.tolist(), **_test_n(test_n, a)})


def paired(a: Iterable[float], b: Iterable[float], test_n: int | None = None) -> Estimate:
    """mean(a - b) over pairs (arms that share seeds: same initialization, same data order), with
    the paired t-interval. A pair with a non-finite member is dropped. test_n: as in `mean`, for
    two arms scored on the same test_n held-out examples."""
    a, b = _pairs(a, b)
    return Estimate("paired", float((a - b).mean()) if len(a) else math.nan, len(a),
                    {"a": a.tolist(), "b": b.tolist(), **_test_n(test_n, a, b)})


def welch(a: Iterable[float], b: Iterable[float]) -> Estimate:
    """mean(a) - mean(b) for independent samples, with Welch's interval; n = min(n_a, n_b)."""
    a, b = _clean(a), _clean(b)
    value = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    return Estimate("welch", value, min(len(a), len(b)), {"a": a.tolist(), "b": b.tolist()})


def proportion(k: int, n: int) -> Estimate:
    """A proportion k/n with Wilson's score interval (sensible at k = 0, unlike the bootstrap)."""
    return Estimate("proportion", k / n if n else math.nan, int(n), {"k": int(k), "n": int(n)})


def median_ratio(a: Iterable[float], b: Iterable[float]) -> Estimate:
    """median(a) / median(b), independent samples (e.g. repeated timings), seeded percentile bootstrap."""
    a, b = _clean(a), _clean(b)
    value = float(np.median(a) / np.median(b)) if len(a) and len(b) else math.nan
    return Estimate("median_ratio", value, min(len(a), len(b)), {"a": a.tolist(), "b": b.tolist()})


def spearman(x: Iterable[float], y: Iterable[float], groups: Iterable | None = None,
             min_group: int = 4) -> Estimate:
    """Spearman's rank correlation of paired values, with Fisher's z interval (variance
    1.06 / (n - 3)). With `groups`, the correlations within groups combined on Fisher's z scale
    (weights n - 3); groups smaller than `min_group` (at least 4) or without spread are left out.
    n: pairs used."""
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    g = np.asarray(list(groups) if groups is not None else [0] * len(x), dtype=object)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[keep], y[keep], g[keep]
    sizes = {k: int((g == k).sum()) for k in dict.fromkeys(g.tolist())}
    use = np.array([sizes[k] >= max(min_group, 4) for k in g.tolist()], dtype=bool) if len(g) else np.zeros(0, bool)
    x, y, g = x[use], y[use], g[use]
    data = {"a": x.tolist(), "b": y.tolist(), "groups": [str(k) for k in g.tolist()]}
    parts = [(a, b) for a, b in _groups(data) if np.ptp(a) > 0 and np.ptp(b) > 0] if len(x) else []
    z, _ = _fisher_parts(parts)
    value = math.tanh(z) if math.isfinite(z) else math.nan
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
    seaborn's `errorbar=`). One definition for every figure; see plots.BAND. Computed as
    mean(values).interval(LEVEL) computes it (scipy's ttest_1samp interval: mean +- t(n - 1) x
    standard error), without building the test for every cell: a figure has hundreds of cells, and
    the test's machinery cost an analysis job seconds (equal to rounding: tests/test_band.py)."""
    a = _clean(values)
    m = float(np.nanmean(values)) if len(values) else math.nan
    if len(a) < 2:
        return (m, m)
    centre = float(a.mean())
    if np.ptp(a) == 0:  # no spread: Estimate._no_spread
        return (centre, centre)
    half = _t_quantile((1 + LEVEL) / 2, len(a) - 1) * float(a.std(ddof=1)) / math.sqrt(len(a))
    lo, hi = centre - half, centre + half
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (m, m)


@functools.lru_cache(maxsize=None)
def _t_quantile(q: float, df: int) -> float:
    return float(_scipy().t.ppf(q, df))


# --- verdicts --------------------------------------------------------------------------------------

def verdict(ci_low: float, ci_high: float, n: int, threshold: float = 0.0, direction: str = ">",
            min_n: int = 2) -> str:
    """The verdict for the claim "value <direction> threshold" from its interval.

    direction "within" (an equivalence, threshold = the margin): equivalent when the whole interval
    lies inside (-margin, margin), not equivalent when it lies wholly outside it.
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
        inside = -threshold < ci_low and ci_high < threshold
        outside = ci_low > threshold or ci_high < -threshold
        return "equivalent" if inside else "not_equivalent" if outside else "inconclusive"
    return "reproduced" if yes else "not_reproduced" if no else "inconclusive"


def claim_p(estimate: Estimate, threshold: float, direction: str, margin: float | None = None) -> tuple[float, str]:
    """The one p-value a claim is decided by, and the verdict it gives when it is small enough.

    ">" and "<": the two-sided p of "value = threshold"; the verdict is the side the value lies on.
    "within" (margin m): inside (-m, m) the larger of the p-values at -m and +m (the two one-sided
    tests, each at alpha/2: the interval lies inside the margin); outside, the p at the nearer
    margin (the interval lies wholly outside). Consistent with `verdict`: p <= alpha exactly when
    the 1 - alpha interval decides. A directional claim with a margin decides "equivalent" too."""
    v = estimate.value
    if not math.isfinite(v):
        return math.nan, "inconclusive"
    if direction == "within":
        m = abs(float(threshold))
        if -m < v < m:
            return max(estimate.p_value(-m), estimate.p_value(m)), "equivalent"
        if abs(v) > m:
            return estimate.p_value(math.copysign(m, v)), "not_equivalent"
        return 1.0, "inconclusive"
    if margin is not None and math.isfinite(float(margin)) and float(margin) > 0:
        p_eq, eq = claim_p(estimate, margin, "within")
        p_dir, outcome = claim_p(estimate, threshold, direction)
        if eq == "equivalent" and (not math.isfinite(p_dir) or p_eq < p_dir):
            return p_eq, eq
        return p_dir, outcome
    if v == threshold:
        return 1.0, "inconclusive"
    claimed = (v > threshold) == (direction == ">")
    return estimate.p_value(threshold), "reproduced" if claimed else "not_reproduced"


def decide(estimate: Estimate, threshold: float, direction: str, alpha: float = 1 - LEVEL, min_n: int = 2,
           margin: float | None = None) -> str:
    """The verdict at level alpha (unadjusted: 1 - LEVEL, the 95% interval's verdict)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    p, outcome = claim_p(estimate, threshold, direction, margin)
    return outcome if estimate.n >= min_n and math.isfinite(p) and p <= alpha else "inconclusive"


def claim(experiment: str, claim_id: str, statement: str, metric: str, estimate: Estimate,
          threshold: float = 0.0, direction: str = ">", *, kind: str, paper_value=None, note: str = "",
          min_n: int = 2, applicable: bool = True, margin: float | None = None) -> dict:
    """One claim row: the estimate, its 95% interval and the verdict that interval gives.

    kind: "check", "demonstration" or "test" (see the module docstring); it is required, so that
    every claim says honestly whether it could have come out the other way.
    direction "within": an equivalence with margin `threshold` (declared in the schema, with its
    reason). margin (with ">" or "<"): the interval lying inside +-margin decides "equivalent" (no
    effect beyond the margin: the finding of a control arm), declared in the schema with its reason.
    applicable: False when this run cannot test the claim (e.g. a GPU claim measured on a CPU):
    the measurement is shown, the verdict is inconclusive, and it is left out of every family.
    The role and family are the pipeline's (`assign_roles`), from the experiment's PRIMARY.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if direction == "within" and not float(threshold) > 0:
        raise ValueError(f"{claim_id}: an equivalence needs a margin > 0, got {threshold!r}")
    if margin is not None and (direction == "within" or not float(margin) > 0):
        raise ValueError(f"{claim_id}: a margin goes with '>' or '<' and must be > 0, got {margin!r}")
    if not isinstance(estimate, Estimate):
        raise TypeError(f"estimate must be a stats.Estimate, got {type(estimate).__name__}")
    lo, hi = estimate.interval(LEVEL)
    p, _ = claim_p(estimate, threshold, direction, margin)
    decided = decide(estimate, threshold, direction, 1 - LEVEL, min_n, margin) if applicable else "inconclusive"
    return {"experiment": experiment, "claim_id": claim_id, "kind": kind, "applicable": bool(applicable),
            "statement": statement,
            "metric": metric, "direction": direction, "threshold": float(threshold),
            "margin": float(margin) if margin is not None else math.nan, "value": estimate.value,
            "ci_low": lo, "ci_high": hi, "n": estimate.n, "min_n": int(min_n), "method": estimate.method,
            "p_value": p, "verdict_unadjusted": decided,
            "paper_value": paper_value, "note": note, "estimate": estimate.to_json(), "role": "", "family": ""}


def assign_roles(claims: pd.DataFrame, primary: str | None, section: str) -> pd.DataFrame:
    """Each applicable test's role and family: the experiment's PRIMARY claim is "primary" (the
    report's headline family), every other test "secondary" in its lecture section's family.
    Checks, demonstrations and claims this run cannot test have no role and no family; a test whose
    measurement another test of the experiment already carries is left out (`_counted_once`)."""
    out = _counted_once(claims.copy(), primary)
    test = out["kind"].eq("test") if len(out) else pd.Series([], dtype=bool)
    is_primary = test & out["claim_id"].eq(primary) if primary else test & False
    out["role"] = np.where(is_primary, "primary", np.where(test, "secondary", ""))
    applicable = out["applicable"].astype(bool) if len(out) else test
    out["family"] = np.where(test & applicable, np.where(is_primary, PRIMARY_FAMILY, f"section {section}"), "")
    return out


SAMPLED = ("mean", "paired", "welch", "median_ratio", "spearman")  # per-seed samples: equal ones are one measurement


def _counted_once(claims: pd.DataFrame, primary: str | None) -> pd.DataFrame:
    """One estimate, one claim, at run time too: when two applicable tests of an experiment carry
    the same per-seed samples (two arms that coincided in this run, e.g. tuned rates that landed on
    the control arm's pair), the primary (else the first) keeps it and the others are left out of
    every family (applicable False, inconclusive), their note naming the claim that counts it."""
    if claims.empty or "estimate" not in claims:
        return claims
    live = claims["kind"].eq("test") & claims["applicable"].astype(bool) & claims["method"].isin(SAMPLED) \
        & (claims["n"] > 1)
    order = sorted(claims.index[live], key=lambda i: claims.at[i, "claim_id"] != primary)
    kept: dict[str, str] = {}
    for i in order:
        e = claims.at[i, "estimate"]
        if e in kept:
            claims.at[i, "applicable"] = False
            claims.at[i, "verdict_unadjusted"] = "inconclusive"
            note = f"the same measurement as {kept[e]} (its arms coincided in this run): counted once, there"
            claims.at[i, "note"] = "; ".join(x for x in (str(claims.at[i, "note"] or ""), note) if x and x != "nan")
        else:
            kept[e] = claims.at[i, "claim_id"]
    return claims


def holm(p: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN counts as 1: it never decides)."""
    p = np.asarray(list(p), float)
    q = np.where(np.isfinite(p), p, 1.0)
    order = np.argsort(q, kind="stable")
    m = len(q)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * q[i]))
        adj[i] = running
    return adj


def family_adjust(claims: pd.DataFrame, alpha: float = ALPHA, explain: bool = True) -> pd.DataFrame:
    """The report's verdicts: each family of applicable test claims (the primaries; each section's
    secondaries) controlled by Holm at family-wise `alpha`. Checks and demonstrations keep their
    95% verdict (they are not sampled outcomes), and so do claims this run cannot test. A test's
    adjusted interval is read at the level where it decides exactly when Holm does. An undecided
    test gets the smallest effect this run could decide at its family's first Holm level, and about
    how many seeds would decide the effect it measured (t-based estimates; trainfail.analysis.power).
    Adds the FAMILY_COLUMNS (explain=False leaves the last two NaN: the verdicts are the same)."""
    from trainfail.analysis import power

    out = claims.copy()
    if out.empty:
        return out.reindex(columns=list(out.columns) + FAMILY_COLUMNS)
    for col, default in (("role", ""), ("family", ""), ("p_value", math.nan), ("margin", math.nan)):
        if col not in out:
            out[col] = default
    out["family"] = out["family"].fillna("").astype(str)
    is_test = out["kind"].eq("test") & out["applicable"].astype(bool)
    out.loc[is_test & out["family"].eq(""), "family"] = "tests"   # claims written before roles existed
    n_rows = len(out)
    cols = {"family_size": [0] * n_rows, "p_adjusted": [math.nan] * n_rows, "level_adjusted": [LEVEL] * n_rows,
            "ci_low_adjusted": out["ci_low"].tolist(), "ci_high_adjusted": out["ci_high"].tolist(),
            "verdict": out["verdict_unadjusted"].tolist(), "decidable_effect": [math.nan] * n_rows,
            "seeds_to_decide": [math.nan] * n_rows}
    position = {label: i for i, label in enumerate(out.index)}
    for _, idx in out[is_test].groupby("family").groups.items():
        rows = out.loc[idx]
        m = len(rows)
        estimates = [Estimate.from_json(e) for e in rows["estimate"]]
        decisions = [claim_p(e, float(t), d, margin_of(mg))
                     for e, t, d, mg in zip(estimates, rows["threshold"], rows["direction"], rows["margin"])]
        p = np.array([x for x, _ in decisions], float)
        adj = holm(p)
        ranks = np.argsort(np.argsort(np.where(np.isfinite(p), p, 1.0), kind="stable"), kind="stable")
        for i, (label, e, (pi, outcome), row) in enumerate(zip(idx, estimates, decisions, rows.to_dict("records"))):
            a_eff = alpha * pi / adj[i] if math.isfinite(pi) and pi > 0 and adj[i] > 0 else alpha / (m - ranks[i])
            level = 1 - a_eff
            lo, hi = e.interval(level)
            decided = e.n >= int(row["min_n"]) and math.isfinite(pi) and adj[i] <= alpha
            j = position[label]
            cols["family_size"][j], cols["p_adjusted"][j], cols["level_adjusted"][j] = m, float(adj[i]), level
            cols["ci_low_adjusted"][j], cols["ci_high_adjusted"][j] = lo, hi
            cols["verdict"][j] = outcome if decided else "inconclusive"
            if explain and not decided:
                cols["decidable_effect"][j], cols["seeds_to_decide"][j] = \
                    power.undecided(e, float(row["threshold"]), row["direction"], alpha / m)
    for name, values in cols.items():
        out[name] = values
    out["family_size"] = out["family_size"].astype(int)
    return out


def margin_of(value) -> float | None:
    try:
        m = float(value)
    except (TypeError, ValueError):
        return None
    return m if math.isfinite(m) and m > 0 else None
