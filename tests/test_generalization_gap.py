"""generalization_gap: the grid of runs, the loss matching, the Keskar tables and the claims on small
synthetic tables, and real runs through execute() (both regimes trained, matched, polished and
measured; batch-norm interpolation finite)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trainfail.core import provenance
from trainfail.measure import sharpness
from trainfail.training import data, models, train
from trainfail.training.context import Context, RunEnv
from trainfail.experiments import generalization_gap as gg
from trainfail.core.run_settings import complete

CFG = {
    "networks": [{"label": "net", "name": "digits", "model": {"arch": "mlp", "hidden": [8]},
                  "small_batch": 16, "large_batch": 144, "analogue": "F1"}],
    "optimizer": {"name": "adam", "lr": 0.01}, "max_epochs": 40, "target_loss": 0.3,
    "match": {"levels": [1.0, 0.3], "polish_steps": 3, "descent_steps": 200, "tolerance": 0.1},
    "epsilons": [0.001, 0.0005], "subspace_dim": 5, "sharpness_method": "best", "sharpness_steps": 3,
    "hessian_iters": 4, "hessian_tol": 1e-3,
    "interpolation": {"alpha_min": -1.0, "alpha_max": 2.0, "points": 4}, "seeds": [0, 1, 2],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_runs_train_both_regimes_of_a_seed_in_one_run():
    runs = gg.runs(CFG, Context({"seeds": [7]}))
    assert [(r["batch_sizes"], r["seed"]) for r in runs] == [({"SB": 16, "LB": 144}, s) for s in (0, 1, 2)]
    assert all(r["task"] == gg.ID and r["epochs"] == 40 and len(r["alphas"]) == 4 for r in runs)
    assert all(r["target_loss"] == 0.3 and r["levels"] == [1.0, 0.3] for r in runs)
    own_cap = {**CFG, "networks": [{**CFG["networks"][0], "max_epochs": 9}]}
    assert {r["epochs"] for r in gg.runs(own_cap, Context({}))} == {9}


def test_levels_come_from_the_schema_deepest_last_and_at_or_above_the_target():
    assert gg.levels({**CFG, "match": {**CFG["match"], "levels": [0.3, 1.0, 0.5]}}) == [1.0, 0.5, 0.3]
    with pytest.raises(ValueError, match="match.levels"):
        gg.levels({**CFG, "target_loss": 0.5})
    assert gg.crossed(0.4, [1.0, 0.5, 0.3]) == [0, 1] and gg.crossed(float("nan"), [1.0]) == []
    # the schema declares the sweep: its default levels are the quick preset's, the target the deepest
    import yaml
    root = Path(__file__).resolve().parents[1]
    defaults = yaml.safe_load((root / f"workflow/schemas/experiments/{gg.ID}.schema.yaml").read_text())["properties"]
    declared = defaults["match"]["properties"]["levels"]
    assert declared["description"] and len(declared["default"]) >= 3
    assert min(declared["default"]) >= defaults["target_loss"]["default"]


def test_matched_pairs_keep_only_losses_within_the_tolerance():
    sb = pd.DataFrame({"train_loss": [0.010, 0.010, 0.010, 0.010]}, index=[0, 1, 2, 3])
    lb = pd.DataFrame({"train_loss": [0.012, 0.015, np.nan, 0.0099]}, index=[0, 1, 2, 3])
    seeds = gg.matched_pairs(sb, lb, tolerance=0.1)
    assert seeds == [0, 3]  # 1.2x and 0.99x are within 10^0.1 = 1.26x; 1.5x and NaN are not
    gap = np.abs(gg.log_loss_ratio(sb.loc[seeds, "train_loss"], lb.loc[seeds, "train_loss"]))
    assert (gap <= 0.1).all()
    assert gg.matched_pairs(sb, lb, tolerance=0.2) == [0, 1, 3]


PAPER_LEVEL, UPPER_LEVEL = 0.3, 1.0


def synthetic(sharp_sb, sharp_lb, acc_sb, acc_lb, dist_sb, dist_lb, loss_lb=None, steps=(400, 100),
              growth=(0.5, 0.5)) -> pd.DataFrame:
    """Matched points at both declared levels with the given measures (the paper's level at training
    loss 0.3, LB's optionally off; the upper level the same measures halved), end-of-training points,
    and distance curves d = c * step^k per regime, reaching the given distance at its matched step."""
    rows = []
    for regime, sharp, acc, dist, bs, step, k in (("SB", sharp_sb, acc_sb, dist_sb, 16, steps[0], growth[0]),
                                                  ("LB", sharp_lb, acc_lb, dist_lb, 144, steps[1], growth[1])):
        for seed, (s, a, d) in enumerate(zip(sharp, acc, dist)):
            loss = loss_lb[seed] if (regime == "LB" and loss_lb) else PAPER_LEVEL
            base = {"kind": "point", "network": "net", "dataset": "digits", "regime": regime, "batch_size": bs,
                    "seed": seed, "diverged": False, "target_loss": 0.3, "epochs_done": 10, "epoch": 5, "step": step,
                    "cap_hit": False, "reached_target": True, "top_eigenvalue_converged": True,
                    "top_eigenvalue_residual": 1e-4, "grad_norm": 1e-3, "top_eigenvalue_before_polish": 2 * s}
            sharp_cols = {c: s for c in gg.sharpness_columns(CFG)} | {c + "_first_order": 0.1 * s for c in gg.sharpness_columns(CFG)}
            rows.append({**base, "point": "matched", "level": PAPER_LEVEL, "paper_level": True, "train_acc": 1.0,
                         "test_acc": a, "train_loss": loss, "top_eigenvalue": s, "distance_from_init": d, **sharp_cols})
            upper = {c: 0.5 * v for c, v in sharp_cols.items() if c.startswith("sharp_full_0.001")}
            rows.append({**base, "point": "matched", "level": UPPER_LEVEL, "paper_level": False, "train_acc": 0.9,
                         "test_acc": a, "train_loss": UPPER_LEVEL, "distance_from_init": d / 2, **upper, "step": step // 4})
            rows.append({**base, "point": "end", "level": None, "paper_level": False, "train_acc": 1.0, "test_acc": a,
                         "train_loss": 0.29, "distance_from_init": d})
            rows += [{"kind": "distance", "network": "net", "dataset": "digits", "regime": regime, "seed": seed,
                      "batch_size": bs, "step": t, "distance_from_init": d * (t / step) ** k}
                     for t in (0, step // 16, step // 8, step // 4, step // 2, step, 2 * step)]
    return pd.DataFrame(rows)


def test_claims_reproduced_when_lb_is_sharper_worse_and_closer_at_matched_loss():
    t = synthetic([1.0, 1.2, 0.9], [100.0, 120.0, 90.0], [0.98, 0.981, 0.979], [0.97, 0.969, 0.971],
                  [30.0, 31.0, 29.0], [10.0, 10.5, 9.5])
    claims = {c["claim_id"]: c for c in gg.claims(t, CFG)}
    assert {c["kind"] for c in claims.values()} == {"test"}
    ratio = claims["lb_sharper_sharp_full_0.001_net"]
    # the log10 ratio of (100, 120, 90) to (1, 1.2, 0.9), paired by seed, is exactly 2
    assert ratio["value"] == pytest.approx(2.0) and ratio["ci_low"] > 0 and ratio["n"] == 3
    assert ratio["verdict_unadjusted"] == "reproduced"
    assert "3 of 3 seed pairs" in ratio["note"] and "paper's level: training loss 0.3" in ratio["note"]
    assert claims["lb_closer_to_init_net"]["value"] == pytest.approx(np.log10(3.0), rel=1e-2)
    assert claims["sb_higher_test_acc_net"]["value"] == pytest.approx(0.01)
    assert "98.03" in claims["sb_higher_test_acc_net"]["paper_value"]
    top = claims["lb_sharper_top_eigenvalue_net"]["note"]
    assert "0 of 6 top eigenvalues not converged" in top and "before the polish: log10 ratio 2 [2, 2]" in top
    # Keskar's magnitudes: the per-seed ratios against his numbers (100x < his 167x; 3x is his lower end)
    mag = claims["lb_sharpness_ratio_reaches_keskar_net"]
    assert mag["value"] == pytest.approx(100.0) and mag["threshold"] == pytest.approx(205.14 / 1.23)
    assert mag["verdict_unadjusted"] == "not_reproduced" and "205.14" in mag["paper_value"]
    dist = claims["lb_distance_ratio_reaches_keskar_net"]
    assert dist["threshold"] == 3.0 and dist["paper_value"].startswith("3 to 10")
    # the level sweep: one claim per declared level above the paper's, named by its level
    assert claims["lb_sharper_sharp_full_0.001_net_loss1"]["value"] == pytest.approx(2.0)
    assert claims["lb_closer_to_init_net_loss1"]["value"] == pytest.approx(np.log10(3.0), rel=1e-2)
    # the distance control: equal growth laws, SB at 4x the steps -> at equal steps SB is no farther
    # than 3 / 2 = 1.5x (d ~ steps^0.5), the steps reading is not the one these data support
    control = claims["sb_farther_at_equal_steps_net"]
    assert control["value"] == pytest.approx(np.log10(1.5), abs=0.01)
    assert "growth law" in control["note"] and "k = 0.50 (SB), 0.50 (LB)" in control["note"]
    ids = list(claims)
    assert len(ids) == len(gg.claims(t, CFG))  # no claim id twice


def test_distance_control_says_which_reading_the_data_support():
    # SB 3x farther at matched loss, but only because it took 9x the steps at d ~ steps^0.5
    t = synthetic([1.0, 1.2, 0.9], [100.0, 120.0, 90.0], [0.98] * 3, [0.97] * 3,
                  [30.0, 31.0, 29.0], [10.0, 10.4, 9.8], steps=(900, 100))
    control = {c["claim_id"]: c for c in gg.claims(t, CFG)}["sb_farther_at_equal_steps_net"]
    assert abs(control["value"]) < 0.01 and control["verdict_unadjusted"] != "reproduced"
    assert "the step count" in control["note"]
    # SB farther at the same steps: the batch size
    t = synthetic([1.0] * 3, [2.0] * 3, [0.98] * 3, [0.97] * 3, [30.0, 31.0, 29.0], [10.0, 10.4, 9.8], steps=(100, 100))
    control = {c["claim_id"]: c for c in gg.claims(t, CFG)}["sb_farther_at_equal_steps_net"]
    assert control["verdict_unadjusted"] == "reproduced" and "the batch size" in control["note"]


def test_level_claims_name_levels_declared_in_the_schema_only():
    t = synthetic([1.0, 1.2, 0.9], [100.0, 120.0, 90.0], [0.98] * 3, [0.97] * 3, [30.0] * 3, [10.0] * 3)
    extra = t[(t["kind"] == "point") & (t["level"] == UPPER_LEVEL)].assign(level=0.5)  # not declared
    ids = [c["claim_id"] for c in gg.claims(pd.concat([t, extra]), CFG)]
    assert not any(i.endswith("loss0.5") for i in ids)
    level_ids = [i for i in ids if "_loss" in i]
    assert level_ids and all(i.endswith(f"_loss{UPPER_LEVEL:g}") for i in level_ids)
    ratios = gg.level_ratios(t, CFG)
    assert set(ratios["level"]) == {PAPER_LEVEL, UPPER_LEVEL}


def test_claims_not_reproduced_when_lb_is_flatter_and_inconclusive_on_noise():
    t = synthetic([100.0, 120.0, 90.0], [1.0, 1.2, 0.9], [0.97, 0.99, 0.95], [0.98, 0.96, 0.97],
                  [10.0, 10.5, 9.5], [30.0, 31.0, 29.0])
    claims = {c["claim_id"]: c for c in gg.claims(t, CFG)}
    assert claims["lb_sharper_top_eigenvalue_net"]["verdict_unadjusted"] == "not_reproduced"
    assert claims["lb_closer_to_init_net"]["verdict_unadjusted"] == "not_reproduced"
    assert claims["sb_higher_test_acc_net"]["verdict_unadjusted"] == "inconclusive"


def test_claims_leave_out_pairs_whose_losses_are_not_matched():
    t = synthetic([1.0, 1.2, 0.9, 1.1], [100.0, 120.0, 90.0, 1.0], [0.98] * 4, [0.97] * 4, [3.0] * 4, [1.0] * 4,
                  loss_lb=[0.33, 0.29, 0.35, 1.5])  # seed 3: LB at 5x the loss, and no sharper
    claims = {c["claim_id"]: c for c in gg.claims(t, CFG)}
    ratio = claims["lb_sharper_sharp_full_0.001_net"]
    assert ratio["n"] == 3 and "3 of 4 seed pairs" in ratio["note"]
    assert ratio["value"] == pytest.approx(2.0, abs=1e-9)


def test_keskar_tables_put_the_paper_beside_ours():
    t = synthetic([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.9, 0.92, 0.94], [0.8, 0.8, 0.8], [3, 3, 3], [1, 1, 1])
    tables = gg.keskar_tables(t, CFG)
    acc = tables["table2_accuracy"]
    assert list(acc["network"][:2]) == ["net (digits, B=16 / 144), end of training (loss below the target)",
                                         "net (digits, B=16 / 144), matched training loss, the paper's level 0.3"]
    ours = acc.iloc[1]
    assert ours["test SB"] == "92.00 ± 2.00" and ours["test LB"] == "80.00 ± 0.00"
    assert list(acc["test SB"][2:]) == ["98.03", "80.04"]
    full, sub = tables["table3_sharpness"], tables["table4_subspace"]
    assert full.iloc[1]["sharp_full_0.001 LB"] == "5 ± 1" and full.iloc[0]["sharp_full_0.001 LB"] == "–"
    assert full.iloc[2]["sharp_full_0.001 LB"] == "205.14" and full.iloc[3]["sharp_full_0.001 SB"] == "28.58"
    # numbers not checked against the paper are not printed
    assert full.iloc[3]["sharp_full_0.0005 SB"] == gg.NOT_TRANSCRIBED
    assert sub.iloc[2]["sharp_sub_0.001 LB"] == gg.NOT_TRANSCRIBED and "sharp_full_0.001 SB" not in sub.columns
    assert tables["table_curvature"].iloc[1]["first-order share of sharp_full_0.001 SB"] == "0.10 ± 0.00"


def _pair(tmp_path, **changes):
    env = RunEnv(torch.device("cpu"), tmp_path, tmp_path)
    settings = {**gg.runs({**CFG, **changes}, Context({}))[0]}
    return settings, gg.execute(settings, env)


def test_execute_trains_to_the_target_and_matches_every_level(tmp_path):
    settings, result = _pair(tmp_path)
    s = result.summary
    assert not result.diverged and s["n_train"] == 1437 and s["levels"] == [1.0, 0.3]
    sb, lb = s["regimes"]["SB"], s["regimes"]["LB"]
    assert sb["batch_fraction"] == pytest.approx(16 / 1437) and lb["batch_size"] == 144
    for info in (sb, lb):
        # trained to the target, not to the cap: stopped at the first evaluation below it
        assert info["reached_target"] and not info["cap_hit"] and info["epochs_done"] < CFG["max_epochs"]
        assert info["end"]["train_loss"] <= CFG["target_loss"]
        assert info["distances"][0]["step"] == 0 and info["distances"][0]["distance_from_init"] == 0
        assert info["distances"][-1]["distance_from_init"] == pytest.approx(info["end"]["distance_from_init"])
        assert set(info["matched"]) == {"1", "0.3"}
        paper, upper = info["matched"]["0.3"], info["matched"]["1"]
        for col in gg.sharpness_columns(CFG) + ["top_eigenvalue", "top_eigenvalue_residual", "grad_norm"]:
            assert math.isfinite(paper[col]) and paper[col] >= 0, col
        assert math.isfinite(upper["sharp_full_0.001"]) and "top_eigenvalue" not in upper  # the light measure
        for level, m in ((0.3, paper), (1.0, upper)):
            assert 0 < m["distance_from_init"] < 50
            # the snapshot was taken when the training loss first fell below the level, then polished
            assert m["loss_before_polish"] <= level * 1.001 and m["train_loss"] <= m["loss_before_polish"]
            assert m["polish_steps"] == 3 and m["top_eigenvalue_before_polish"] > 0
    for level in ("1", "0.3"):
        gap = abs(math.log10(sb["matched"][level]["train_loss"] / lb["matched"][level]["train_loss"]))
        assert gap <= CFG["match"]["tolerance"]
    # LB needs more epochs for the same loss (9x fewer updates per epoch), fewer updates
    assert lb["epochs_done"] > sb["epochs_done"]
    # the initial point is the one train.train starts from
    ds = data.load_digits(tmp_path)
    provenance.make_deterministic(0)
    x0 = models.build(settings["model"], ds.input_shape, ds.num_classes).state_dict()
    model = train.train(complete({"task": "train", **{k: settings[k] for k in ("dataset", "model", "optimizer", "seed")},
                                  "batch_size": 144, "steps": lb["steps_done"], "eval_points": 2}), ds,
                        torch.device("cpu")).model
    assert lb["end"]["distance_from_init"] == pytest.approx(sharpness.distance(model.state_dict(), x0), rel=1e-5)


def test_the_safety_cap_is_recorded_when_hit(tmp_path):
    _, result = _pair(tmp_path, max_epochs=1)
    lb = result.summary["regimes"]["LB"]
    assert lb["cap_hit"] and not lb["reached_target"] and lb["epochs_done"] == pytest.approx(1.0)


def test_table_rows_and_interpolation_from_a_real_run(tmp_path):
    from trainfail.pipeline import execution as tf_execution
    from trainfail.core.config import run_id
    from trainfail.core.run_record import load_run

    ctx = Context({"seeds": [0], "device": "cpu", "data_dir": str(tmp_path)}, tmp_path)
    cfg = {**CFG, "seeds": [0]}
    env = RunEnv(torch.device("cpu"), tmp_path, tmp_path / "data")
    records = []
    for settings in gg.runs(cfg, ctx):
        tf_execution.run_one(settings, env, tmp_path)
        records.append(load_run(tmp_path, run_id(settings)))
    table = gg.table(cfg, records)
    points = table[table["kind"] == "point"]
    assert len(points) == 2 * 3 and set(points["point"]) == {"end", "matched"}
    assert set(points["level"].dropna()) == {1.0, 0.3} and points["paper_level"].sum() == 2
    assert (table["kind"] == "distance").sum() > 4
    inter = table[table["kind"] == "interpolation"]
    assert len(inter) == 2 * 4 and set(inter["split"]) == {"train", "test"}
    assert np.allclose(sorted(inter["alpha"].unique()), np.linspace(-1, 2, 4))
    curve = inter[inter["split"] == "train"].set_index("alpha")
    at = points[points["paper_level"].astype(bool)].set_index("regime")
    # alpha = 0 is the SB point, alpha = 1 the LB point
    assert curve.loc[0.0, "loss"] == pytest.approx(at.loc["SB", "train_loss"], rel=1e-5)
    assert curve.loc[1.0, "loss"] == pytest.approx(at.loc["LB", "train_loss"], rel=1e-5)
    claims = gg.claims(table, cfg)
    assert all(c["n"] <= 1 for c in claims)  # one seed: measured, never decisive


def test_batch_norm_pair_interpolates_finitely_from_minus_one_to_two(tmp_path):
    bn = [{**CFG["networks"][0], "model": {"arch": "mlp", "hidden": [8], "norm": "batch"}}]
    _, result = _pair(tmp_path, networks=bn, interpolation={"alpha_min": -1.0, "alpha_max": 2.0, "points": 7})
    for point, curve in result.summary["interpolation"].items():
        assert len(curve) == 2 * 7
        assert all(math.isfinite(r["loss"]) and math.isfinite(r["acc"]) for r in curve), point
    matched = [result.summary["regimes"][r]["matched"]["0.3"] for r in gg.REGIMES]
    assert abs(math.log10(matched[0]["train_loss"] / matched[1]["train_loss"])) <= CFG["match"]["tolerance"]


def test_a_diverged_pair_is_recorded_and_scored_at_step_zero(tmp_path):
    # SGD at an absurd rate: both regimes blow up; the run is kept, diverged, with its step-0
    # evaluation as its end-of-training accuracy, no measured point, no matched pair
    _, result = _pair(tmp_path, optimizer={"name": "sgd", "lr": 1e30})
    assert result.diverged
    s = result.summary
    assert s["interpolation"] == {}
    for regime in gg.REGIMES:
        info = s["regimes"][regime]
        assert info["diverged"] and info["matched"] == {} and not info["cap_hit"]
        assert math.isfinite(info["end"]["train_loss"]) and info["end"]["test_acc"] < 0.3  # the untrained net

    class Record:
        settings, summary, run_id = gg.runs(CFG, Context({}))[0], s, "x"

    table = gg.table(CFG, [Record()])
    assert table["diverged"].all()
    claims = gg.claims(table, CFG)
    assert all(c["verdict_unadjusted"] == "inconclusive" for c in claims)
