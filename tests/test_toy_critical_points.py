"""toy_critical_points: closed forms of L = (1 - w1 w2)^2 and the table/claims logic."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainfail.experiments import toy_critical_points as toy

CFG = {"grid_n": 20, "starts_n": 3, "eig_tol": 1e-6, "tol": 1e-6, "escape_steps": [0.1, 0.5], "gd_steps": 5, "gd_lr": 0.1}


def test_closed_form_and_autograd_agree():
    for w1, w2 in [(0, 0), (1, 1), (0.3, -2), (2, 0.5)]:
        np.testing.assert_allclose(toy.autograd_hessian(w1, w2), toy.closed_form_hessian(w1, w2), atol=1e-12)
    np.testing.assert_allclose(toy.closed_form_hessian(0, 0), [[0, -2], [-2, 0]])


def test_labels():
    assert toy.label(0.0, 0.0, np.array([-2.0, 2.0]), 1e-6) == "saddle"
    assert toy.label(2.0, 0.5, np.linalg.eigvalsh(toy.closed_form_hessian(2.0, 0.5)), 1e-6) == "local minimum (flat valley)"


def test_table_and_claims():
    df = toy.table(CFG, [])
    cps = df[df["kind"] == "critical_point"]
    assert cps["at_origin"].sum() == 1 and cps["on_valley"].sum() >= 2
    assert (cps[cps["on_valley"]]["label"] == "local minimum (flat valley)").all()
    gd = df[df["kind"] == "gd_origin"]
    assert len(gd) == CFG["gd_steps"] + 1 and (gd[["w1", "w2"]] == 0).all().all()
    claims = pd.DataFrame(toy.claims(df, CFG))
    assert set(claims["verdict_unadjusted"]) == {"reproduced"}, claims[["claim_id", "value", "verdict_unadjusted"]]
