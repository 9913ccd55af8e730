"""The verdict design, checked on every experiment's claims (computed from its figure fixture).

Each experiment that makes test claims declares its PRIMARY (trainfail.core.contract) before any data:
the one test that decides the lecture's claim. It must name a test the experiment emits. One
estimate is one claim: two test rows that carry the same estimate count one measurement twice.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from trainfail import experiments
from trainfail.analysis import stats
from trainfail.core import contract
from trainfail.training.context import Context

from .refresh_fixtures import fixture
from .test_figures import smoke_config

IDS = list(experiments.scan()[0])


@pytest.fixture(scope="module")
def all_claims(tmp_path_factory) -> dict[str, pd.DataFrame]:
    config = smoke_config()
    ctx = Context(config, tmp_path_factory.mktemp("results"))
    out = {}
    for exp in IDS:
        table = pd.read_csv(fixture(exp))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = contract.call(experiments.get(exp).claims, table, ctx.experiment(exp), ctx=ctx)
        out[exp] = pd.DataFrame(rows, columns=stats.CLAIM_COLUMNS)
    return out


@pytest.mark.parametrize("experiment", IDS)
def test_the_primary_is_declared_and_is_a_test(experiment, all_claims):
    claims = all_claims[experiment]
    module = experiments.get(experiment)
    tests = claims[claims["kind"].eq("test")]
    if tests.empty:
        assert getattr(module, "PRIMARY", None) is None, f"{experiment}: PRIMARY without any test claim"
        return
    assert getattr(module, "PRIMARY", None), f"{experiment} makes test claims but declares no PRIMARY"
    primary = contract.primary_of(module, claims["claim_id"])
    assert primary is not None, f"{experiment}.PRIMARY = {module.PRIMARY!r} names none of {claims['claim_id'].tolist()}"
    assert primary in set(tests["claim_id"]), f"{experiment}.PRIMARY names {primary!r}, which is not a test"
    roles = stats.assign_roles(claims, primary, module.SECTION.number)
    assert (roles["role"] == "primary").sum() == 1


def test_one_estimate_is_one_claim(all_claims):
    """No two test rows (across every experiment) carry the same measurement."""
    # each experiment's claims as the pipeline keeps them: a coincidence of one preset's arms (the
    # smoke preset's single step size pooled and alone) is one measurement at run time (assign_roles)
    kept = [stats.assign_roles(c, contract.primary_of(experiments.get(e), c["claim_id"]), experiments.get(e).SECTION.number)
            for e, c in all_claims.items()]
    tests = pd.concat([c[c["kind"].eq("test") & c["applicable"].astype(bool)] for c in kept])
    # per-seed samples: a proportion's k/n (or one deterministic number) can coincide by chance
    usable = tests[(tests["n"] > 1) & tests["method"].isin(stats.SAMPLED)]
    dup = usable[usable.duplicated("estimate", keep=False)]
    assert dup.empty, f"test claims carrying the same estimate: {dup[['experiment', 'claim_id']].values.tolist()}"


def test_a_measurement_two_arms_share_at_run_time_is_counted_once():
    """When tuning lands on the control arm's rates the two comparisons are one measurement: the
    primary keeps it, the other test leaves every family and says why."""
    same = stats.paired([0.5, 0.6, 0.55], [0.4, 0.45, 0.5])
    rows = pd.DataFrame([stats.claim("x", "control", "s", "m", same, kind="test", margin=0.01),
                         stats.claim("x", "main", "s", "m", same, kind="test"),
                         stats.claim("x", "other", "s", "m", stats.paired([0.5, 0.6, 0.5], [0.4, 0.4, 0.5]), kind="test")])
    out = stats.assign_roles(rows, "main", "1.3").set_index("claim_id")
    assert out.loc["main", "family"] == "primary" and bool(out.loc["main", "applicable"])
    assert not bool(out.loc["control", "applicable"]) and out.loc["control", "family"] == ""
    assert "main" in out.loc["control", "note"] and out.loc["control", "verdict_unadjusted"] == "inconclusive"
    assert out.loc["other", "family"] == "section 1.3"


def test_claim_ids_are_unique_within_an_experiment(all_claims):
    for exp, c in all_claims.items():
        assert not c["claim_id"].duplicated().any(), f"{exp}: {c.loc[c['claim_id'].duplicated(), 'claim_id'].tolist()}"
