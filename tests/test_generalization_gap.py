"""generalization_gap: the grid of runs, the loss matching, the Keskar tables and the claims on small
synthetic tables, and real runs through execute() (both regimes trained, matched, polished and
measured; batch-norm interpolation finite)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trainfail import data, models, provenance, sharpness, train
from trainfail.context import Context, RunEnv
from trainfail.experiments import generalization_gap as gg
from trainfail.run_settings import complete

CFG = {
    "networks": [{"label": "net", "name": "digits", "model": {"arch": "mlp", "hidden": [8]},
                  "small_batch": 16, "large_batch": 144, "analogue": "F1"}],
    "optimizer": {"name": "adam", "lr": 0.01}, "max_epochs": 2, "early_stop": {"patience": 5, "min_delta": 0.01},
    "match": {"levels_per_decade": 10, "polish_steps": 3, "descent_steps": 200, "tolerance": 0.1},
    "epsilons": [0.001, 0.0005], "subspace_dim": 5, "sharpness_method": "best", "sharpness_steps": 3,
    "hessian_iters": 4, "hessian_tol": 1e-3,
    "interpolation": {"alpha_min": -1.0, "alpha_max": 2.0, "points": 4}, "seeds": [0, 1, 2],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_runs_train_both_regimes_of_a_seed_in_one_run():
    runs = gg.runs(CFG, Context({"seeds": [7]}))
    assert [(r["batch_sizes"], r["seed"]) for r in runs] == [({"SB": 16, "LB": 144}, s) for s in (0, 1, 2)]
    assert all(r["task"] == gg.ID and r["epochs"] == 2 and len(r["alphas"]) == 4 for r in runs)
    own_cap = {**CFG, "networks": [{**CFG["networks"][0], "max_epochs": 9}]}
    assert {r["epochs"] for r in gg.runs(own_cap, Context({}))} == {9}


def test_loss_levels_closed_form():
    assert gg.level_index(0.1, 10) == 10 and gg.level_index(0.0999, 10) == 10 and gg.level_index(0.1001, 10) == 9
    assert gg.level_index(2.3, 10) == -4 and gg.level_index(float("nan"), 10) is None
    assert gg.level_loss(10, 10) == pytest.approx(0.1) and gg.level_loss(3, 1) == pytest.approx(1e-3)
    assert gg.common_level({"SB": 30, "LB": 16}) == 16 and gg.common_level({"SB": 30, "LB": None}) is None


def test_matched_pairs_keep_only_losses_within_the_tolerance():
    sb = pd.DataFrame({"train_loss": [0.010, 0.010, 0.010, 0.010]}, index=[0, 1, 2, 3])
    lb = pd.DataFrame({"train_loss": [0.012, 0.015, np.nan, 0.0099]}, index=[0, 1, 2, 3])
    seeds = gg.matched_pairs(sb, lb, tolerance=0.1)
    assert seeds == [0, 3]  # 1.2x and 0.99x are within 10^0.1 = 1.26x; 1.5x and NaN are not
    gap = np.abs(gg.log_loss_ratio(sb.loc[seeds, "train_loss"], lb.loc[seeds, "train_loss"]))
    assert (gap <= 0.1).all()
    assert gg.matched_pairs(sb, lb, tolerance=0.2) == [0, 1, 3]


def synthetic(sharp_sb, sharp_lb, acc_sb, acc_lb, dist_sb, dist_lb, loss_lb=None) -> pd.DataFrame:
    """Matched points with the given measures (training loss 0.01, LB's optionally off), and end-of-
    training points 100x sharper for LB at a 100x higher loss (what the unmatched comparison sees)."""
    rows = []
    for regime, sharp, acc, dist, bs in (("SB", sharp_sb, acc_sb, dist_sb, 16), ("LB", sharp_lb, acc_lb, dist_lb, 144)):
        for seed, (s, a, d) in enumerate(zip(sharp, acc, dist)):
            loss = loss_lb[seed] if (regime == "LB" and loss_lb) else 0.01
            base = {"kind": "point", "network": "net", "dataset": "digits", "regime": regime, "batch_size": bs,
                    "seed": seed, "diverged": False, "level": 20, "level_loss": 0.01, "epochs_done": 10, "epoch": 5,
                    "top_eigenvalue_converged": True, "top_eigenvalue_residual": 1e-4, "grad_norm": 1e-3,
                    "top_eigenvalue_before_polish": 2 * s}
            sharp_cols = {c: s for c in gg.sharpness_columns(CFG)} | {c + "_first_order": 0.1 * s for c in gg.sharpness_columns(CFG)}
            rows.append({**base, "point": "matched", "train_acc": 1.0, "test_acc": a, "train_loss": loss,
                         "top_eigenvalue": s, "distance_from_init": d, **sharp_cols})
            end = s * (100 if regime == "LB" else 1)
            rows.append({**base, "point": "end", "train_acc": 1.0, "test_acc": a, "train_loss": 1e-4 if regime == "SB" else 1e-2,
                         "top_eigenvalue": end, "distance_from_init": d, **{c: end for c in sharp_cols}})
    return pd.DataFrame(rows)


def test_claims_reproduced_when_lb_is_sharper_worse_and_closer_at_matched_loss():
    t = synthetic([1.0, 1.2, 0.9], [100.0, 120.0, 90.0], [0.98, 0.981, 0.979], [0.97, 0.969, 0.971],
                  [30.0, 31.0, 29.0], [10.0, 10.5, 9.5])
    claims = {c["claim_id"]: c for c in gg.claims(t, CFG)}
    assert {c["verdict_unadjusted"] for c in claims.values()} == {"reproduced"}
    assert {c["kind"] for c in claims.values()} == {"test"}
    ratio = claims["lb_sharper_sharp_full_0.001_net"]
    # the log10 ratio of (100, 120, 90) to (1, 1.2, 0.9), paired by seed, is exactly 2 (the
    # unmatched end-of-training points are 100x further apart: the claim does not use them)
    assert ratio["value"] == pytest.approx(2.0) and ratio["ci_low"] > 0 and ratio["n"] == 3
    assert "3 of 3 seed pairs" in ratio["note"] and "end of training (unmatched)" in ratio["note"]
    assert "4 [4, 4]" in ratio["note"]  # the unmatched log10 ratio, shown beside
    assert claims["lb_closer_to_init_net"]["value"] == pytest.approx(np.log10(3.0), rel=1e-2)
    assert claims["sb_higher_test_acc_net"]["value"] == pytest.approx(0.01)
    assert "98.03" in claims["sb_higher_test_acc_net"]["paper_value"]
    assert ratio["paper_value"].startswith("log10(205.14 / 1.23) = 2.22")
    assert claims["lb_sharper_sharp_sub_0.001_net"]["paper_value"] is None  # Table 4: not transcribed
    top = claims["lb_sharper_top_eigenvalue_net"]["note"]
    assert "0 of 12 top eigenvalues not converged" in top and "before the polish: log10 ratio 2 [2, 2]" in top


def test_claims_not_reproduced_when_lb_is_flatter_and_inconclusive_on_noise():
    t = synthetic([100.0, 120.0, 90.0], [1.0, 1.2, 0.9], [0.97, 0.99, 0.95], [0.98, 0.96, 0.97],
                  [10.0, 10.5, 9.5], [30.0, 31.0, 29.0])
    claims = {c["claim_id"]: c for c in gg.claims(t, CFG)}
    assert claims["lb_sharper_top_eigenvalue_net"]["verdict_unadjusted"] == "not_reproduced"
    assert claims["lb_closer_to_init_net"]["verdict_unadjusted"] == "not_reproduced"
    assert claims["sb_higher_test_acc_net"]["verdict_unadjusted"] == "inconclusive"


def test_claims_leave_out_pairs_whose_losses_are_not_matched():
    t = synthetic([1.0, 1.2, 0.9, 1.1], [100.0, 120.0, 90.0, 1.0], [0.98] * 4, [0.97] * 4, [3.0] * 4, [1.0] * 4,
                  loss_lb=[0.011, 0.0095, 0.012, 0.05])  # seed 3: LB at 5x the loss, and no sharper
    claims = {c["claim_id"]: c for c in gg.claims(t, CFG)}
    ratio = claims["lb_sharper_sharp_full_0.001_net"]
    assert ratio["n"] == 3 and "3 of 4 seed pairs" in ratio["note"]
    assert ratio["value"] == pytest.approx(2.0, abs=1e-9)


def test_keskar_tables_put_the_paper_beside_ours():
    t = synthetic([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.9, 0.92, 0.94], [0.8, 0.8, 0.8], [3, 3, 3], [1, 1, 1])
    tables = gg.keskar_tables(t, CFG)
    acc = tables["table2_accuracy"]
    assert list(acc["network"][:2]) == ["net (digits, B=16 / 144), end of training (unmatched)",
                                         "net (digits, B=16 / 144), matched training loss 0.01"]  # where the pairs met
    ours = acc.iloc[1]
    assert ours["test SB"] == "92.00 ± 2.00" and ours["test LB"] == "80.00 ± 0.00"
    assert list(acc["test SB"][2:]) == ["98.03", "80.04"]
    full, sub = tables["table3_sharpness"], tables["table4_subspace"]
    assert full.iloc[1]["sharp_full_0.001 LB"] == "5 ± 1" and full.iloc[0]["sharp_full_0.001 LB"] == "500 ± 1e+02"
    assert full.iloc[2]["sharp_full_0.001 LB"] == "205.14" and full.iloc[3]["sharp_full_0.001 SB"] == "28.58"
    # numbers not checked against the paper are not printed
    assert full.iloc[3]["sharp_full_0.0005 SB"] == gg.NOT_TRANSCRIBED
    assert sub.iloc[2]["sharp_sub_0.001 LB"] == gg.NOT_TRANSCRIBED and "sharp_full_0.001 SB" not in sub.columns
    assert tables["table_curvature"].iloc[1]["first-order share of sharp_full_0.001 SB"] == "0.10 ± 0.00"


def test_early_stop_keeps_training_while_the_loss_improves():
    # the first evaluation used to compare against inf - d * inf = NaN and never counted as an
    # improvement, so every run stopped after `patience` evaluations
    ds = data.load_digits(Path("."))
    s = {"dataset": "digits", "model": {"arch": "mlp", "hidden": [8]}, "optimizer": {"name": "adam", "lr": 0.01},
         "batch_size": 144, "epochs": 8, "eval_points": 8, "seed": 0, "early_stop": {"patience": 2, "min_delta": 0.0}}
    result = train.train(complete({"task": "train", **s}), ds, torch.device("cpu"))
    assert result.rows[-1]["epoch"] == 8


def _pair(tmp_path, **changes):
    env = RunEnv(torch.device("cpu"), tmp_path, tmp_path)
    settings = {**gg.runs({**CFG, **changes}, Context({}))[0]}
    return settings, gg.execute(settings, env)


def test_execute_matches_polishes_and_measures_a_real_pair(tmp_path):
    settings, result = _pair(tmp_path)
    s = result.summary
    assert not result.diverged and s["n_train"] == 1437
    sb, lb = s["regimes"]["SB"], s["regimes"]["LB"]
    assert sb["batch_fraction"] == pytest.approx(16 / 1437) and lb["batch_size"] == 144
    # the matched level is the deepest both crossed; LB (9x fewer updates) sets it
    assert s["level"] == min(sb["deepest_level"], lb["deepest_level"]) == lb["deepest_level"]
    assert s["level_loss"] == pytest.approx(10 ** (-s["level"] / 10))
    for info in (sb, lb):
        for point in ("end", "matched"):
            m = info[point]
            for col in gg.sharpness_columns(CFG) + ["top_eigenvalue", "top_eigenvalue_residual", "grad_norm"]:
                assert math.isfinite(m[col]) and m[col] >= 0, (point, col)
            assert 0 < m["distance_from_init"] < 20
        # the snapshot was taken when the training loss first fell below the level, then polished
        assert info["matched"]["loss_before_polish"] <= s["level_loss"] * 1.001
        assert info["matched"]["train_loss"] <= info["matched"]["loss_before_polish"]
        assert info["matched"]["polish_steps"] == 3 and info["matched"]["top_eigenvalue_before_polish"] > 0
    # the acceptance: the matched points' training losses agree within the stated tolerance
    gap = abs(math.log10(sb["matched"]["train_loss"] / lb["matched"]["train_loss"]))
    assert gap <= CFG["match"]["tolerance"]
    assert max(sb["matched"]["descent_steps"], lb["matched"]["descent_steps"]) > 0 == min(
        sb["matched"]["descent_steps"], lb["matched"]["descent_steps"])  # only the higher one descended
    # the initial point is the one train.train starts from: the end-of-training distance is
    # ||x_end - x0|| for the model train.train produces from this seed
    ds = data.load_digits(tmp_path)
    plain = {k: settings[k] for k in ("dataset", "model", "optimizer", "epochs", "early_stop", "seed")}
    model = train.train(complete({"task": "train", **plain, "batch_size": 144, "eval_points": 2}), ds,
                        torch.device("cpu")).model
    provenance.make_deterministic(0)
    x0 = models.build(settings["model"], ds.input_shape, ds.num_classes).state_dict()
    assert lb["end"]["distance_from_init"] == pytest.approx(sharpness.distance(model.state_dict(), x0), rel=1e-6)
    assert lb["end"]["train_loss"] == pytest.approx(train.evaluate(model, ds.x_train, ds.y_train)[0], rel=1e-6)


def test_table_rows_and_interpolation_from_a_real_run(tmp_path):
    from trainfail import runs as tf_runs
    from trainfail.config import run_id
    from trainfail.records import load_run

    ctx = Context({"seeds": [0], "device": "cpu", "data_dir": str(tmp_path)}, tmp_path)
    cfg = {**CFG, "seeds": [0]}
    env = RunEnv(torch.device("cpu"), tmp_path, tmp_path / "data")
    records = []
    for settings in gg.runs(cfg, ctx):
        tf_runs.run_one(settings, env, tmp_path)
        records.append(load_run(tmp_path, run_id(settings)))
    table = gg.table(cfg, records)
    points = table[table["kind"] == "point"]
    assert len(points) == 2 * 2 and set(points["point"]) == {"end", "matched"}
    inter = table[table["kind"] == "interpolation"]
    assert len(inter) == 2 * 2 * 4 and set(inter["split"]) == {"train", "test"}
    assert np.allclose(sorted(inter["alpha"].unique()), np.linspace(-1, 2, 4))
    for point in ("end", "matched"):
        curve = inter[(inter["split"] == "train") & (inter["point"] == point)].set_index("alpha")
        at = points[points["point"] == point].set_index("regime")
        # alpha = 0 is the SB point, alpha = 1 the LB point
        assert curve.loc[0.0, "loss"] == pytest.approx(at.loc["SB", "train_loss"], rel=1e-5)
        assert curve.loc[1.0, "loss"] == pytest.approx(at.loc["LB", "train_loss"], rel=1e-5)
    claims = gg.claims(table, cfg)
    assert len(claims) == 5 and all(c["n"] == 1 for c in claims)  # one seed: measured, never decisive


def test_batch_norm_pair_interpolates_finitely_from_minus_one_to_two(tmp_path):
    bn = [{**CFG["networks"][0], "model": {"arch": "mlp", "hidden": [8], "norm": "batch"}}]
    _, result = _pair(tmp_path, networks=bn, interpolation={"alpha_min": -1.0, "alpha_max": 2.0, "points": 7})
    for point, curve in result.summary["interpolation"].items():
        assert len(curve) == 2 * 7
        assert all(math.isfinite(r["loss"]) and math.isfinite(r["acc"]) for r in curve), point
    matched = [result.summary["regimes"][r]["matched"] for r in gg.REGIMES]
    assert abs(math.log10(matched[0]["train_loss"] / matched[1]["train_loss"])) <= CFG["match"]["tolerance"]


def test_a_diverged_pair_is_recorded_and_scored_at_step_zero(tmp_path):
    # SGD at an absurd rate: both regimes blow up; the run is kept, diverged, with its step-0
    # evaluation as its end-of-training accuracy, no measured point, no matched pair
    _, result = _pair(tmp_path, optimizer={"name": "sgd", "lr": 1e30})
    assert result.diverged
    s = result.summary
    assert s["level"] is None and s["interpolation"] == {}
    for regime in gg.REGIMES:
        info = s["regimes"][regime]
        assert info["diverged"] and "matched" not in info and "sharp_full_0.001" not in info["end"]
        assert math.isfinite(info["end"]["train_loss"]) and info["end"]["test_acc"] < 0.3  # the untrained net

    class Record:
        settings, summary, run_id = gg.runs(CFG, Context({}))[0], s, "x"

    table = gg.table(CFG, [Record()])
    assert table["diverged"].all() and len(table) == 4
    claims = gg.claims(table, CFG)
    assert all(c["verdict_unadjusted"] == "inconclusive" for c in claims)
