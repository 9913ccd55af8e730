"""optimizer_schedule: the grid, the spike measure and the claims on small tables."""

import numpy as np
import pandas as pd

from trainfail.context import Context
from trainfail.experiments import optimizer_schedule as exp

CFG = {"dataset": "mnist1d", "model": {"arch": "mlp", "hidden": [8], "norm": "none"}, "batch_size": 32, "steps": 10,
       "eval_points": 2, "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.001}],
       "schedules": [{"name": "constant"}, {"name": "noam", "warmup_steps": 3}], "norms": ["none", "batch"],
       "lr_sweep": {"multipliers": [3.0], "seeds": [0]}, "spike": {"optimizers": ["adam"], "lr_multiplier": 10.0,
                                                                   "warmup_steps": 3, "window": 3}}


def test_runs_cover_the_grid_and_share_the_sweeps_x1_cell():
    runs = exp.runs(CFG, Context({"seeds": [0, 1]}))
    # grid 2 x 2 x 2 x 2 seeds + sweep 2 x 1 x 1 seed + spike 1 x 2 schedules x 2 seeds
    assert len(runs) == 16 + 2 + 4
    assert all("group" not in r for r in runs)
    assert {r["model"]["norm"] for r in runs} == {"none", "batch"}
    spike = [r for r in runs if r["optimizer"]["lr"] == 0.01]
    assert {r["schedule"]["name"] for r in spike} == {"cosine", "warmup_cosine"}


def test_early_spike():
    m = pd.DataFrame({"step": [0, 1, 2, 3, 4, 5], "batch_loss": [2.0, 1.0, 0.5, 1.5, 0.4, 50.0]})
    assert exp.early_spike(m, window=4, diverged=False) == 3.0  # 1.5 after the lowest 0.5; step 5 is past the window
    assert exp.early_spike(m.iloc[:3], window=4, diverged=False) == 1.0  # never rises
    assert exp.early_spike(m, window=3, diverged=True) == exp.SPIKE_CAP


def _finals(rows):
    return pd.DataFrame([{"kind": "final", **r} for r in rows])


def test_claims_from_a_table():
    rows = []
    for seed in range(3):
        rows.append({"group": "grid", "optimizer": "sgd", "schedule": "constant", "bn": False, "seed": seed,
                     "lr": 0.1, "train_loss": 1.0 + 0.01 * seed, "diverged": False})
        rows.append({"group": "grid", "optimizer": "adam", "schedule": "constant", "bn": False, "seed": seed,
                     "lr": 0.001, "train_loss": 0.5 + 0.01 * seed, "diverged": False})
        for sched, spike in (("cosine", 10.0 + seed), ("warmup_cosine", 1.0 + 0.01 * seed)):
            rows.append({"group": "spike", "optimizer": "adam", "schedule": sched, "bn": False, "seed": seed,
                         "lr": 0.01, "early_spike": spike, "diverged": False})
    claims = {c["claim_id"]: c for c in exp.claims(_finals(rows), CFG, Context({"seeds": [0, 1, 2]}))}
    assert claims["adam_beats_sgd"]["verdict_unadjusted"] == "reproduced"
    assert np.isclose(claims["adam_beats_sgd"]["value"], 0.5)
    assert claims["warmup_lowers_spike_adam"]["verdict_unadjusted"] == "reproduced"
