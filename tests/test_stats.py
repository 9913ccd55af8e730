"""Estimates, intervals, verdicts and the family-wise adjustment (trainfail.analysis.stats)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from trainfail.analysis import plots, stats


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
    # within: equivalence, the whole interval inside (-t, t); not equivalent: wholly outside
    assert stats.verdict(-0.01, 0.02, 3, 0.05, "within") == "equivalent"
    assert stats.verdict(0.06, 0.09, 3, 0.05, "within") == "not_equivalent"
    assert stats.verdict(0.03, 0.09, 3, 0.05, "within") == "inconclusive"
    assert stats.verdict(0.01, 0.09, 3, 0.05, "within") == "inconclusive"


def test_claims_need_a_kind():
    with pytest.raises(ValueError, match="kind"):
        stats.claim("e", "c", "s", "m", stats.exact(1.0), kind="maybe")
    with pytest.raises(TypeError):
        stats.claim("e", "c", "s", "m", (1.0, 0.0, 2.0, 3), kind="test")


def test_holm_adjusted_p_values():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.2, float("nan")]) == pytest.approx([0.4, 1.0])


@pytest.mark.parametrize("make", [
    lambda r: stats.mean(r.normal(0.4, 1, 6)),
    lambda r: stats.paired(r.normal(0.5, 1, 7), r.normal(0, 1, 7)),
    lambda r: stats.paired(r.uniform(0.6, 0.9, 5), r.uniform(0.5, 0.8, 5), test_n=400),
    lambda r: stats.mean(r.uniform(0.1, 0.5, 4), test_n=300),
    lambda r: stats.welch(r.normal(1, 1, 5), r.normal(0, 2, 8)),
    lambda r: stats.proportion(int(r.integers(1, 19)), 20),
    lambda r: stats.median_ratio(r.lognormal(0.3, 0.3, 9), r.lognormal(0, 0.3, 9)),
    lambda r: stats.spearman(np.arange(30), np.arange(30) + r.normal(0, 25, 30), ["a"] * 15 + ["b"] * 15),
])
def test_a_p_value_decides_exactly_when_its_interval_does(make):
    """p <= alpha if and only if the 1 - alpha interval leaves the threshold out: the verdict read from
    an interval and the one Holm reads from p are the same decision."""
    rng = np.random.default_rng(3)
    for _ in range(12):
        e = make(rng)
        for t in (0.0, 0.3, 1.0):
            p = e.p_value(t)
            for alpha in (0.05, 0.01, 0.002):
                lo, hi = e.interval(1 - alpha)
                if not (math.isfinite(p) and math.isfinite(lo)) or min(abs(lo - t), abs(hi - t)) < 1e-9:
                    continue
                if e.method == "median_ratio" and abs(p - alpha) < 4 / stats.BOOT:
                    continue  # a resample's width: the quantile and the tail count may round apart
                assert (p <= alpha) == (lo > t or hi < t), (e.method, t, alpha, p, lo, hi)


def test_accuracy_intervals_carry_the_test_sets_sampling_error():
    """Accuracies on a fixed test set: every seed is scored on the same examples, so seed-to-seed
    spread misses the test set's own draw. With test_n the interval adds the binomial variance,
    never narrower than without it; identical seeds still leave an interval; values outside [0, 1]
    or a test_n below 1 are refused."""
    a, b = [0.80, 0.82, 0.79, 0.81, 0.83], [0.70, 0.71, 0.69, 0.72, 0.70]
    seeds_only, with_test = stats.paired(a, b).interval(), stats.paired(a, b, test_n=360).interval()
    assert with_test[0] < seeds_only[0] and with_test[1] > seeds_only[1]
    wide = stats.paired(a, b, test_n=100).interval()
    assert wide[1] - wide[0] > with_test[1] - with_test[0]          # fewer examples, more error
    flat = stats.mean([0.9, 0.9, 0.9], test_n=1000).interval()
    assert flat[0] < 0.9 < flat[1]                                  # no seed spread, still the test set's
    assert stats.Estimate.from_json(stats.paired(a, b, test_n=360).to_json()).interval() == pytest.approx(with_test)
    with pytest.raises(ValueError, match="test_n"):
        stats.paired([1.5, 0.2], [0.1, 0.2], test_n=100)
    with pytest.raises(ValueError, match="test_n"):
        stats.mean([0.5, 0.6], test_n=0)


def test_accuracy_intervals_cover_the_population_difference():
    """Simulated test sets: two models whose population accuracies differ by 0.03, each seed's
    accuracy scored on the same 300 examples (a fixed test set drawn once per experiment). The
    seed-only interval misses the population difference far more often than 5%; the interval with
    the test-set term covers it at least 95% of the time (the bound is conservative)."""
    rng = np.random.default_rng(11)
    n_test, seeds, trials = 300, 5, 400
    miss_seeds = miss_test = 0
    for _ in range(trials):
        # per-example difficulty: the test set's draw, shared by every seed and both models
        hard = rng.uniform(0, 1, n_test)
        # a seed answers an example right when 0.1 u + 0.9 hard < cut (u: the seed's own luck); over
        # the population P(0.1 U + 0.9 H < cut) = (cut - 0.05) / 0.9 for cut in [0.1, 0.9]
        acc = lambda cut: [float(np.mean(rng.uniform(0, 1, n_test) * 0.1 + hard * 0.9 < cut)) for _ in range(seeds)]
        a, b = acc(0.77), acc(0.743)
        truth = (0.77 - 0.743) / 0.9                               # population accuracies 0.8 and 0.77
        lo, hi = stats.paired(a, b).interval()
        miss_seeds += not lo <= truth <= hi
        lo, hi = stats.paired(a, b, test_n=n_test).interval()
        miss_test += not lo <= truth <= hi
    assert miss_test / trials <= 0.05 + 0.03
    assert miss_seeds / trials > 0.07                            # the seed-only interval undercovers


def test_equivalence_and_margin_outcomes():
    close = stats.paired([0.50, 0.52, 0.49, 0.51, 0.50], [0.50, 0.51, 0.50, 0.50, 0.51])
    far = stats.paired([0.9, 0.92, 0.95, 0.91, 0.93], [0.5, 0.51, 0.5, 0.52, 0.5])
    assert stats.claim("e", "c", "s", "m", close, 0.02, "within", kind="test")["verdict_unadjusted"] == "equivalent"
    assert stats.claim("e", "c", "s", "m", far, 0.02, "within", kind="test")["verdict_unadjusted"] == "not_equivalent"
    # a directional claim with a margin: no difference beyond the margin is a decided outcome
    assert stats.claim("e", "c", "s", "m", close, 0.0, ">", kind="test", margin=0.02)["verdict_unadjusted"] == "equivalent"
    assert stats.claim("e", "c", "s", "m", far, 0.0, ">", kind="test", margin=0.02)["verdict_unadjusted"] == "reproduced"
    with pytest.raises(ValueError, match="margin"):
        stats.claim("e", "c", "s", "m", close, 0.0, "within", kind="test")


def test_wilson_never_leaves_the_unit_interval():
    for k, n in ((0, 5), (5, 5), (1, 3)):
        for level in (0.95, 0.999):
            lo, hi = stats.proportion(k, n).interval(level)
            assert 0.0 <= lo <= hi <= 1.0


def test_a_bootstrap_has_resamples_beyond_its_level():
    e = stats.median_ratio([2.0, 2.1, 1.9, 2.3, 2.2], [1.0, 1.05, 0.95, 1.2, 1.1])
    for level in (0.95, 0.999, 0.9995):
        assert len(e._boot(level)) * (1 - level) / 2 >= stats.MIN_TAIL - 1e-6


def _family(rows, family):
    out = pd.DataFrame(rows)
    out["family"] = family
    return out


def test_families_are_adjusted_apart_and_tests_only():
    strong = [1.0, 1.1, 0.9, 1.05, 0.95]
    weak = [0.3, 0.5, 0.1, 0.4, 0.2]          # reproduced at 95%, not against 19 other weak ones
    rows = [stats.claim("e", f"w{i}", "s", "m", stats.mean(weak), kind="test") for i in range(20)]
    lone = [stats.claim("e", "lone", "s", "m", stats.mean(weak), kind="test")]
    others = [stats.claim("e", "check", "s", "m", stats.mean(weak), kind="check"),
              stats.claim("e", "gpu", "s", "m", stats.mean(strong), kind="test", applicable=False)]
    table = pd.concat([_family(rows, "section 1.2"), _family(lone, "primary"), _family(others, "")], ignore_index=True)
    out = stats.family_adjust(table).set_index("claim_id")
    assert out.loc["w0", "family_size"] == 20 and out.loc["lone", "family_size"] == 1
    assert out.loc["w0", "verdict_unadjusted"] == "reproduced" and out.loc["w0", "verdict"] == "inconclusive"
    assert out.loc["lone", "verdict"] == "reproduced"                 # alone in its family: Holm at 0.05
    assert out.loc["check", "verdict"] == "reproduced"                # checks keep their 95% verdict
    assert out.loc["gpu", "verdict"] == "inconclusive" and out.loc["gpu", "family_size"] == 0
    # the adjusted interval decides exactly when Holm does
    for cid in ("w0", "lone"):
        row = out.loc[cid]
        assert (row["ci_low_adjusted"] > 0) == (row["verdict"] == "reproduced")
        assert row["p_adjusted"] == pytest.approx(min(1.0, 20 * row["p_value"]) if cid == "w0" else row["p_value"])
    # an undecided t-based test says what its seeds could decide and how many would decide it
    assert out.loc["w0", "decidable_effect"] > 0 and out.loc["w0", "seeds_to_decide"] > 5


def _simulate(truths, n, design, rng, family="primary"):
    """One family of claims on simulated seeds: truths are (true value, threshold, direction)."""
    rows = []
    for i, (true, threshold, direction) in enumerate(truths):
        if design == "paired":
            e = stats.paired(rng.normal(true, 1.0, n), np.zeros(n))
        else:
            e = stats.welch(rng.normal(true, 1.0, n), rng.normal(0.0, 1.0, n))
        rows.append(stats.claim("sim", f"c{i}", "s", "m", e, threshold, direction, kind="test"))
    return stats.family_adjust(_family(rows, family), explain=False)


def _wrong(verdict: str, true: float, threshold: float, direction: str) -> bool:
    if direction == "within":
        return (verdict == "equivalent" and abs(true) >= threshold) or (verdict == "not_equivalent" and abs(true) <= threshold)
    if verdict == "reproduced":
        return (true <= threshold) if direction == ">" else (true >= threshold)
    if verdict == "not_reproduced":
        return (true >= threshold) if direction == ">" else (true <= threshold)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("design", ["paired", "welch"])
def test_simulated_families_keep_their_error_rate_and_power(design):
    """Families with known truth through the code that writes claims.csv: no effect, an effect at
    the threshold, one at the margin, a large effect; one-sided and equivalence; the presets' seed
    counts. The family-wise rate of wrong decided verdicts stays at most 0.05 (within simulation
    error), and a primary sized by the power calculation is decided with power at least 0.8."""
    from trainfail.analysis import power

    rng = np.random.default_rng(2026)
    truths = [(0.0, 0.0, ">"), (0.0, 0.0, "<"), (0.5, 0.5, ">"),      # no effect / at the threshold
              (0.5, 0.5, "within"), (0.5, 0.5, "within"),             # at the margin: never "equivalent"
              (3.0, 0.0, ">"), (0.0, 0.5, "within"), (0.0, 0.0, ">")]
    sims, wrong = 150, 0
    for i in range(sims):
        n = (3, 5, 8)[i % 3]
        out = _simulate(truths, n, design, rng)
        wrong += any(_wrong(v, *t) for v, t in zip(out["verdict"], truths))
    assert wrong / sims <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / sims), wrong
    # power: one real effect among m = 8 primaries, seeds from the calculation at alpha / m
    m, effect = 8, 1.0
    n = power.seeds_needed(effect, 1.0, 0.05 / m, design="one-sample" if design == "paired" else "two-sample")
    hits = 0
    for _ in range(sims):
        out = _simulate([(effect, 0.0, ">")] + [(0.0, 0.0, ">")] * (m - 1), n, design, rng)
        hits += out["verdict"].iloc[0] == "reproduced"
    assert hits / sims >= 0.8 - 2.5 * math.sqrt(0.8 * 0.2 / sims), (n, hits)


def test_power_calculation_matches_the_normal_approximation():
    from trainfail.analysis import power

    # n ~ ((z_{1-a/2} + z_{power}) sd / effect)^2, plus a little for the t distribution
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    n = power.seeds_needed(0.5, 1.0, 0.05)
    assert (z / 0.5) ** 2 <= n <= (z / 0.5) ** 2 + 3
    assert power.power_t(n, 0.5, 1.0, 0.05) >= 0.8 > power.power_t(n - 1, 0.5, 1.0, 0.05)
    assert power.decidable_effect(1.0, n, 0.05) <= 0.5 + 1e-9


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
