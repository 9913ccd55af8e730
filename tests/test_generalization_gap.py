"""generalization_gap: the grid of runs, the Keskar tables and the claims on small synthetic tables,
and one tiny real run through execute() (training, sharpness, eigenvalue, distance)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trainfail import data, train
from trainfail.context import Context, RunEnv
from trainfail.experiments import generalization_gap as gg

CFG = {
    "networks": [{"label": "net", "name": "digits", "model": {"arch": "mlp", "hidden": [8]},
                  "small_batch": 16, "large_batch": 144, "analogue": "F1"}],
    "optimizer": {"name": "adam", "lr": 0.001}, "max_epochs": 2, "early_stop": {"patience": 5, "min_delta": 0.01},
    "epsilons": [0.001, 0.0005], "subspace_dim": 5, "sharpness_steps": 3, "hessian_iters": 4,
    "interpolation": {"alpha_min": -1.0, "alpha_max": 2.0, "points": 4}, "seeds": [0, 1, 2],
}


def test_runs_pair_every_seed_in_both_regimes():
    runs = gg.runs(CFG, Context({"seeds": [7]}))
    assert [(r["regime"], r["batch_size"], r["seed"]) for r in runs] == \
        [("SB", 16, s) for s in (0, 1, 2)] + [("LB", 144, s) for s in (0, 1, 2)]
    assert all(r["save_model"] and r["task"] == gg.ID and r["eval_points"] == r["epochs"] for r in runs)


def synthetic(sharp_sb, sharp_lb, acc_sb, acc_lb, dist_sb, dist_lb) -> pd.DataFrame:
    rows = []
    for regime, sharp, acc, dist, bs in (("SB", sharp_sb, acc_sb, dist_sb, 16), ("LB", sharp_lb, acc_lb, dist_lb, 144)):
        for seed, (s, a, d) in enumerate(zip(sharp, acc, dist)):
            rows.append({"kind": "run", "network": "net", "dataset": "digits", "regime": regime, "batch_size": bs,
                         "seed": seed, "diverged": False, "train_acc": 1.0, "test_acc": a, "train_loss": 0.01,
                         "epochs_done": 10, "top_eigenvalue": s, "distance_from_init": d,
                         **{c: s for c in gg.sharpness_columns(CFG)}})
    return pd.DataFrame(rows)


def test_claims_reproduced_when_lb_is_sharper_worse_and_closer():
    t = synthetic([1.0, 1.2, 0.9], [100.0, 120.0, 90.0], [0.98, 0.981, 0.979], [0.97, 0.969, 0.971],
                  [30.0, 31.0, 29.0], [10.0, 10.5, 9.5])
    claims = {c["claim_id"]: c for c in gg.claims(t, CFG, None)}
    assert {c["verdict_unadjusted"] for c in claims.values()} == {"reproduced"}
    ratio = claims["lb_sharper_sharp_full_0.001_net"]
    # the log10 ratio of (100, 120, 90) to (1, 1.2, 0.9), paired by seed, is exactly 2
    assert ratio["value"] == pytest.approx(2.0) and ratio["ci_low"] > 0
    assert claims["lb_closer_to_init_net"]["value"] == pytest.approx(np.log10(3.0), rel=1e-2)
    assert claims["sb_higher_test_acc_net"]["value"] == pytest.approx(0.01)
    assert "98.03" in claims["sb_higher_test_acc_net"]["paper_value"]


def test_claims_not_reproduced_when_lb_is_flatter_and_inconclusive_on_noise():
    t = synthetic([100.0, 120.0, 90.0], [1.0, 1.2, 0.9], [0.97, 0.99, 0.95], [0.98, 0.96, 0.97],
                  [10.0, 10.5, 9.5], [30.0, 31.0, 29.0])
    claims = {c["claim_id"]: c for c in gg.claims(t, CFG, None)}
    assert claims["lb_sharper_top_eigenvalue_net"]["verdict_unadjusted"] == "not_reproduced"
    assert claims["lb_closer_to_init_net"]["verdict_unadjusted"] == "not_reproduced"
    assert claims["sb_higher_test_acc_net"]["verdict_unadjusted"] == "inconclusive"


def test_keskar_tables_put_the_paper_beside_ours():
    t = synthetic([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.9, 0.92, 0.94], [0.8, 0.8, 0.8], [3, 3, 3], [1, 1, 1])
    acc, sharp = gg.keskar_tables(t, CFG)
    ours = acc.iloc[0]
    assert ours["test SB"] == "92.00 ± 2.00" and ours["test LB"] == "80.00 ± 0.00"
    assert "B=16 / 144" in ours["network"]
    assert list(acc["test SB"][1:]) == ["98.03", "80.04"]
    assert sharp.iloc[0]["sharp_full_0.001 LB"] == "5 ± 1"
    assert sharp.iloc[1]["sharp_full_0.001 LB"] == "205.14"


def test_early_stop_keeps_training_while_the_loss_improves():
    # the first evaluation used to compare against inf - d * inf = NaN and never counted as an
    # improvement, so every run stopped after `patience` evaluations
    ds = data.load_digits(Path("."))
    s = {"dataset": "digits", "model": {"arch": "mlp", "hidden": [8]}, "optimizer": {"name": "adam", "lr": 0.01},
         "batch_size": 144, "epochs": 8, "eval_points": 8, "seed": 0, "early_stop": {"patience": 2, "min_delta": 0.0}}
    result = train.train(s, ds, torch.device("cpu"))
    assert result.rows[-1]["epoch"] == 8


def test_execute_measures_a_real_run(tmp_path):
    env = RunEnv(torch.device("cpu"), tmp_path, tmp_path)
    settings = gg.runs({**CFG, "max_epochs": 1}, Context({}))[3]  # LB, seed 0
    result = gg.execute(settings, env)
    s = result.summary
    assert not result.diverged and s["n_train"] == 1437 and s["batch_fraction"] == pytest.approx(144 / 1437)
    for col in gg.sharpness_columns(CFG) + ["top_eigenvalue"]:
        assert math.isfinite(s[col]) and s[col] >= 0, col
    # one epoch of Adam at lr 1e-3 moves the weights, but not far
    assert 0 < s["distance_from_init"] < 10
    # the initial point is the one train.train starts from: a zero-epoch run does not move
    still = gg.execute({**settings, "epochs": 0, "eval_points": 1}, env)
    assert still.summary["distance_from_init"] == 0.0


def test_interpolation_rows_from_saved_weights(tmp_path):
    from trainfail import runs as tf_runs
    from trainfail.config import run_id

    ctx = Context({"seeds": [0], "device": "cpu", "data_dir": str(tmp_path)}, tmp_path)
    cfg = {**CFG, "seeds": [0], "max_epochs": 1}
    env = RunEnv(torch.device("cpu"), tmp_path, tmp_path / "data")
    records = []
    for settings in gg.runs(cfg, ctx):
        tf_runs.run_one(settings, env, tmp_path)
        records.append(tf_runs.load_run(tmp_path, run_id(settings)))
    table = gg.table(cfg, records, ctx)
    inter = table[table["kind"] == "interpolation"]
    assert len(inter) == 2 * 4 and set(inter["split"]) == {"train", "test"}
    train_rows = inter[inter["split"] == "train"].set_index("alpha")
    runs_ = table[table["kind"] == "run"].set_index("regime")
    # alpha = 0 is the SB solution, alpha = 1 the LB solution
    assert train_rows.loc[0.0, "loss"] == pytest.approx(runs_.loc["SB", "train_loss"], rel=1e-5)
    assert train_rows.loc[1.0, "loss"] == pytest.approx(runs_.loc["LB", "train_loss"], rel=1e-5)
    assert np.allclose(sorted(inter["alpha"].unique()), np.linspace(-1, 2, 4))
