"""batch_path: the path geometry (pure functions) and the claims on small hand-made tables."""

import math

import numpy as np
import pandas as pd
import pytest

from trainfail.training.context import Context
from trainfail.experiments import batch_path as exp


def test_direction_spread_is_zero_on_a_straight_path_and_large_on_a_zigzag():
    straight = np.stack([np.linspace(0, 1, 10), np.linspace(0, 2, 10)], axis=1)
    assert exp.direction_spread(straight) == pytest.approx(0.0, abs=1e-6)
    # alternating directions 90 degrees apart: resultant length 1/sqrt(2), spread sqrt(-2 ln r)
    zigzag = np.vstack([[0, 0], np.cumsum([[1, 0], [0, 1]] * 5, axis=0)]).astype(float)  # 5 steps each way
    assert exp.direction_spread(zigzag) == pytest.approx(math.sqrt(-2 * math.log(1 / math.sqrt(2))), rel=1e-9)


def _table(spread_small: list[float], spread_full: list[float], drop_small=0.5, drop_full=0.5) -> pd.DataFrame:
    """One row per (seed, batch size): what claims() reads (it takes each pair's first row)."""
    rows = []
    for seed, (ss, sf) in enumerate(zip(spread_small, spread_full)):
        for bs, spread, drop in ((1, ss, drop_small), (20, sf, drop_full)):
            rows.append({"seed": seed, "batch_size": bs, "update": 0, "spread": spread,
                         "loss_start": 2.0, "loss_end": 2.0 * (1 - drop)})
    return pd.DataFrame(rows)


def _by_id(rows):
    return {r["claim_id"]: r for r in rows}


def test_noisier_small_batch_is_a_paired_demonstration_that_reproduces_when_the_spread_is_larger():
    rows = _by_id(exp.claims(_table([1.0, 1.1, 0.9, 1.05, 0.95], [0.1, 0.12, 0.08, 0.1, 0.11]), {}))
    noisy = rows["small_batch_noisier"]
    # batch 20 is the full batch of a convex problem: its noiselessness is designed (issue 17)
    assert noisy["kind"] == "demonstration" and noisy["verdict_unadjusted"] == "reproduced"
    assert noisy["value"] == pytest.approx(np.mean([0.9, 0.98, 0.82, 0.95, 0.84]))
    assert noisy["n"] == 5


def test_noisier_small_batch_is_not_reproduced_when_the_spreads_are_reversed():
    rows = _by_id(exp.claims(_table([0.1, 0.12, 0.08, 0.1, 0.11], [1.0, 1.1, 0.9, 1.05, 0.95]), {}))
    assert rows["small_batch_noisier"]["verdict_unadjusted"] == "not_reproduced"


def test_equal_spreads_give_no_verdict_either_way():
    rows = _by_id(exp.claims(_table([0.5, 0.6, 0.4], [0.52, 0.58, 0.41]), {}))
    assert rows["small_batch_noisier"]["verdict_unadjusted"] == "inconclusive"


def test_lowering_the_loss_is_a_demonstration_and_follows_the_numbers():
    rows = _by_id(exp.claims(_table([1.0] * 3, [0.1] * 3, drop_small=0.6, drop_full=-0.2), {}))
    assert rows["small_batch_lowers_loss"]["kind"] == rows["full_batch_lowers_loss"]["kind"] == "demonstration"
    assert rows["small_batch_lowers_loss"]["value"] == pytest.approx(0.6)
    assert rows["full_batch_lowers_loss"]["value"] == pytest.approx(-0.2)
    assert rows["full_batch_lowers_loss"]["verdict_unadjusted"] == "not_reproduced"


def test_the_table_from_real_sgd_paths_reproduces_on_the_smoke_settings():
    cfg = {"n_examples": 20, "batch_sizes": [1, 20], "epochs": 3, "lr": 0.1, "start": [-1.0, 3.0], "seeds": [0, 1, 2]}
    table = exp.table(cfg, [], Context({"seeds": [0, 1, 2]}))
    assert set(table["batch_size"]) == {1, 20}
    full = table[table["batch_size"] == 20]
    assert full.groupby("seed")["update"].max().eq(3).all()  # one update per epoch at the full batch
    rows = _by_id(exp.claims(table, cfg))
    assert rows["small_batch_noisier"]["value"] > 0
