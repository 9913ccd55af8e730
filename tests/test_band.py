"""The figures' error band (stats.band) is the claims' t-interval of the mean, computed directly."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from trainfail.analysis import stats


def through_the_estimate(values):
    lo, hi = stats.mean(values).interval(stats.LEVEL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = float(np.nanmean(values)) if len(values) else math.nan
    return (m, m) if math.isnan(lo) else (lo, hi)


CASES = [[], [1.0], [2.0, 2.0, 2.0], [1.0, np.nan], [1.0, np.inf, 3.0], [1.0, np.nan, 2.0], [0.1, 0.2], [-3.0, 5.0, 1e-9]]
rng = np.random.default_rng(0)
CASES += [list(rng.normal(rng.uniform(-5, 5), rng.uniform(1e-6, 10), n) * 10.0 ** rng.integers(-6, 6))
          for n in range(2, 12) for _ in range(5)]


@pytest.mark.parametrize("values", CASES)
def test_band_is_the_interval_the_claims_print(values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = stats.band(values)
    want = through_the_estimate(values)
    for g, w in zip(got, want):
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=1e-9, abs=1e-12 * max(map(abs, want)))
