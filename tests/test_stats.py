"""Estimates, intervals, verdicts and the family-wise adjustment (trainfail.stats)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from trainfail import plots, stats


def test_intervals_are_scipys():
    a, b = [1.0, 2.0, 3.5, 2.2], [0.0, 0.1, 0.4, 0.3]
    assert stats.mean(a).interval() == pytest.approx(tuple(sps.ttest_1samp(a, 0).confidence_interval(0.95)))
    assert stats.mean([1.0, 2.0, 3.0]).interval()[1] - 2.0 == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert stats.paired(a, b).interval(0.99) == pytest.approx(tuple(sps.ttest_rel(a, b).confidence_interval(0.99)))
    assert stats.welch(a, b).interval() == pytest.approx(
        tuple(sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)))
    wilson = sps.binomtest(0, 20).proportion_ci(0.95, method="wilson")
    assert stats.proportion(0, 20).interval() == pytest.approx((wilson.low, wilson.high))
    x = np.arange(10.0)
    y = x ** 2 + np.array([0, 3, -2, 5, 1, 0, 2, -1, 4, 0.0])
    assert stats.spearman(x, y).value == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)


def test_degenerate_and_missing_samples():
    assert math.isnan(stats.mean([1.0]).low)                      # one seed: no interval
    assert stats.mean([2.0, 2.0, 2.0]).interval() == (2.0, 2.0)     # no spread: zero width
    assert stats.exact(0.5).interval() == (0.5, 0.5)
    e = stats.missing()
    assert e.n == 0 and math.isnan(e.value)
    assert stats.mean([1.0, float("nan"), 3.0]).n == 2


def test_bootstrap_intervals_are_seeded():
    a, b = [2.0, 2.1, 1.9, 2.0, 2.2], [1.0, 1.05, 0.95, 1.0, 1.1]
    e1, e2 = stats.median_ratio(a, b), stats.median_ratio(a, b)
    assert e1.value == pytest.approx(2.0) and e1.low <= 2.0 <= e1.high
    assert e1.interval() == e2.interval()


def test_paired_interval_uses_the_pairing():
    # a seed effect shared by both arms: Welch sees the spread between seeds, paired does not
    base = np.array([0.1, 0.5, 0.9, 0.3, 0.7])
    a, b = base + np.array([0.05, 0.06, 0.04, 0.05, 0.055]), base
    assert stats.verdict(*stats.welch(a, b).interval(), 5) == "inconclusive"
    assert stats.verdict(*stats.paired(a, b).interval(), 5) == "reproduced"


def test_estimate_round_trips_through_json():
    g = ["a"] * 6 + ["b"] * 6
    for e in (stats.mean([1.0, 2.0, 4.0]), stats.paired([1, 2, 3], [0, 2, 1]), stats.welch([1, 2], [3, 5, 4]),
              stats.proportion(3, 17), stats.spearman(range(12), [1, 3, 2, 5, 4, 6] * 2, g), stats.exact(2.5),
              stats.missing()):
        back = stats.Estimate.from_json(e.to_json())
        assert (back.method, back.n) == (e.method, e.n)
        assert back.interval(0.99) == pytest.approx(e.interval(0.99), nan_ok=True)


def test_verdicts_follow_the_interval():
    assert stats.verdict(0.1, 0.3, 3) == "reproduced"
    assert stats.verdict(-0.3, -0.1, 3) == "not_reproduced"
    assert stats.verdict(-0.1, 0.3, 3) == "inconclusive"
    assert stats.verdict(0.1, 0.3, 1) == "inconclusive"
    assert stats.verdict(0.5, 1.5, 5, threshold=2.0, direction="<") == "reproduced"
    # within: equivalence, the whole interval inside (-t, t)
    assert stats.verdict(-0.01, 0.02, 3, 0.05, "within") == "reproduced"
    assert stats.verdict(0.06, 0.09, 3, 0.05, "within") == "not_reproduced"
    assert stats.verdict(0.01, 0.09, 3, 0.05, "within") == "inconclusive"


def test_claims_need_a_kind():
    with pytest.raises(ValueError, match="kind"):
        stats.claim("e", "c", "s", "m", stats.exact(1.0), kind="maybe")
    with pytest.raises(TypeError):
        stats.claim("e", "c", "s", "m", (1.0, 0.0, 2.0, 3), kind="test")


def test_family_adjustment_widens_tests_only():
    strong = [1.0, 1.1, 0.9, 1.05, 0.95]
    weak = [0.3, 0.5, 0.1, 0.4, 0.2]          # reproduced at 95%, not at 1 - 0.05/m with m = 20
    rows = [stats.claim("e", f"t{i}", "s", "m", stats.mean(weak if i == 0 else strong), kind="test") for i in range(20)]
    rows.append(stats.claim("e", "check", "s", "m", stats.mean(weak), kind="check"))
    rows.append(stats.claim("e", "gpu", "s", "m", stats.mean(strong), kind="test", applicable=False))
    out = stats.family_adjust(pd.DataFrame(rows)).set_index("claim_id")
    assert (out["family_size"] == 20).all()                          # the inapplicable one is out
    assert out.loc["t0", "verdict_unadjusted"] == "reproduced" and out.loc["t0", "verdict"] == "inconclusive"
    assert out.loc["t0", "level_adjusted"] == pytest.approx(1 - 0.05 / 20)
    lo, hi = sps.ttest_1samp(weak, 0).confidence_interval(1 - 0.05 / 20)
    assert (out.loc["t0", "ci_low_adjusted"], out.loc["t0", "ci_high_adjusted"]) == pytest.approx((lo, hi))
    assert out.loc["t1", "verdict"] == "reproduced"
    assert out.loc["check", "verdict"] == "reproduced"                # checks keep their 95% verdict
    assert out.loc["gpu", "verdict"] == "inconclusive"


def test_figure_band_is_the_claims_interval():
    """A figure's band for a cell equals the interval the claims table prints for that cell."""
    table = pd.DataFrame({"x": [1, 1, 1, 2, 2, 2], "y": [0.50, 0.55, 0.62, 0.70, 0.74, 0.71]})
    fig, axes = plots.figure()
    import seaborn as sns

    sns.lineplot(table, x="x", y="y", errorbar=plots.BAND, ax=axes[0][0])
    band = axes[0][0].collections[0].get_paths()[0].vertices
    for x in (1, 2):
        ys = band[np.isclose(band[:, 0], x), 1]
        claim = stats.claim("e", "c", "s", "y", stats.mean(table[table["x"] == x]["y"]), kind="test")
        assert (ys.min(), ys.max()) == pytest.approx((claim["ci_low"], claim["ci_high"]))
