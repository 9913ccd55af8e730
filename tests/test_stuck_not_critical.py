"""stuck_not_critical: plateau statistics and claims on synthetic curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainfail.experiments import stuck_not_critical as st


def test_plateau_stats():
    steps = np.arange(101)
    loss = np.where(steps < 60, 2.0 - steps / 60, 1.0)
    gn = np.where(steps < 60, 1.0, 0.5)
    s = st.plateau_stats(steps, loss, gn, 0.4)
    assert s["plateau_start"] == 60 and s["loss_rel_change"] == 0.0
    assert s["grad_norm_p10_rel"] == pytest.approx(0.5)


def test_claims():
    rows = []
    for seed in range(4):
        steps = np.arange(101)
        loss = np.where(steps < 60, 2.0 - steps / 60, 1.0 - 0.001 * (steps - 60))
        gn = np.where(steps < 60, 1.0, 0.5 + 0.01 * seed)
        s = st.plateau_stats(steps, loss, gn, 0.4)
        rows += [{"seed": seed, "step": k, "loss": l, "grad_norm": g, "diverged": False, **s} for k, l, g in zip(steps, loss, gn)]
    cfg = {"plateau_fraction": 0.4, "steps": 100, "flat_tol": 0.1, "far_from_zero": 0.1}
    claims = {c["claim_id"]: c for c in st.claims(pd.DataFrame(rows), cfg)}
    assert claims["loss_barely_changes"]["verdict_unadjusted"] == "reproduced"
    assert claims["gradient_far_from_zero"]["verdict_unadjusted"] == "reproduced"
