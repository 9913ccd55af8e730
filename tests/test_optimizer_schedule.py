"""optimizer_schedule: the grid, the spike measure and the claims on small tables."""

import numpy as np
import pandas as pd
import pytest

from trainfail.training import tuning
from trainfail.training.context import Context
from trainfail.experiments import optimizer_schedule as exp
from trainfail.training.network_arms import network_run

from .fake_records import record

CFG = {"dataset": "mnist1d", "model": {"arch": "mlp", "hidden": [8], "norm": "none"}, "batch_size": 32, "steps": 10,
       "eval_points": 2, "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.001}],
       "schedules": [{"name": "constant"}, {"name": "noam", "warmup_steps": 3}], "norms": ["none", "batch"],
       "tuning": {"multipliers": [1.0, 3.0], "seeds": [100], "steps": 20},
       "spike": {"optimizers": ["adam"], "lr_multiplier": 10.0, "warmup_steps": 3, "window": 6}}


def test_runs_cover_the_grid_the_tuned_arm_and_the_spike_set():
    runs = exp.runs(CFG, Context({"seeds": [0, 1]}))
    # grid 2 x 2 x 2 x 2 seeds + sweep 2 x 2 rates x 1 tuning seed + tuned 2 x 2 seeds + spike 1 x 2 x 2 seeds
    assert len(runs) == 16 + 4 + 4 + 4
    assert all("group" not in r for r in runs)
    assert {r["model"]["norm"] for r in runs if "model" in r} == {"none", "batch"}
    spike = [r for r in runs if r.get("optimizer", {}).get("lr") == 0.01]
    assert {r["schedule"]["name"] for r in spike} == {"cosine", "warmup_cosine"}
    assert all(r["log_every"] == 1 for r in spike)   # the spike reads every update's batch loss
    sweep = [r for r in runs if r.get("steps") == 20]
    assert {r["seed"] for r in sweep} == {100} and {r["optimizer"]["lr"] for r in sweep} == {0.1, 0.3, 0.001, 0.003}
    tuned = [r for r in runs if tuning.stage(r)]
    assert {r["seed"] for r in tuned} == {0, 1} and all(r["base"]["steps"] == 20 for r in tuned)
    # claim seeds of their own for the tuned arm; tuning seeds among them are refused
    other = {**CFG, "tuning": {**CFG["tuning"], "claim_seeds": [0, 1, 2, 3]}}
    assert {r["seed"] for r in exp.runs(other, Context({"seeds": [0, 1]})) if tuning.stage(r)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="tuning seeds"):
        exp.runs({**CFG, "tuning": {**CFG["tuning"], "claim_seeds": [100]}}, Context({"seeds": [0]}))


def test_a_spike_window_that_ends_with_warm_up_is_refused():
    with pytest.raises(ValueError, match=r"experiments.optimizer_schedule.spike.window: expected at least twice the warm-up .*\(got 5\)"):
        exp.runs({**CFG, "spike": {**CFG["spike"], "window": 5}}, Context({"seeds": [0]}))


def test_early_spike():
    m = pd.DataFrame({"step": [0, 1, 2, 3, 4, 5], "batch_loss": [2.0, 1.0, 0.5, 1.5, 0.4, 50.0]})
    assert exp.early_spike(m, window=4, diverged=False) == 3.0  # 1.5 after the lowest 0.5; step 5 is past the window
    assert exp.early_spike(m.iloc[:3], window=4, diverged=False) == 1.0  # never rises
    assert exp.early_spike(m, window=3, diverged=True) == exp.SPIKE_CAP


def test_fast_phase_end():
    steps = np.arange(0, 700, 100)
    # falls 1.0 per 100 updates, then 0.5, then 0.1: the fast phase is over after update 200
    loss = np.array([3.0, 2.0, 1.5, 1.4, 1.3, 1.2, 1.1])
    assert exp.fast_phase_end(steps, loss) == 200
    assert exp.fast_phase_end(steps, loss, fraction=0.6) == 100
    assert exp.fast_phase_end(steps, 3.0 - 0.5 * np.arange(7) / 100 * 100) is None   # a straight line: still fast
    assert exp.fast_phase_end(steps[:2], loss[:2]) is None


def _finals(rows):
    return pd.DataFrame([{"kind": "final", **r} for r in rows])


def _curves(optimizer, lr, seed, losses):
    return [{"kind": "curve", "group": "sweep", "optimizer": optimizer, "lr": lr, "seed": seed, "step": 10 * k,
             "train_loss": v} for k, v in enumerate(losses)]


def _table():
    """Configured rates (the grid, 10 updates): adam far ahead of SGD. Tuned rates (20 updates):
    SGD ahead of adam. And a warm-up run whose spike comes at its peak rate, after warm-up ends."""
    rows = []
    for seed in range(4):
        j = 0.01 * seed
        rows += [{"group": "grid", "optimizer": "sgd", "schedule": "constant", "bn": False, "seed": seed, "lr": 0.1,
                  "train_loss": 1.5 + j, "diverged": False},
                 {"group": "grid", "optimizer": "adam", "schedule": "constant", "bn": False, "seed": seed, "lr": 0.001,
                  "train_loss": 0.9 + j, "diverged": False},
                 {"group": "tuned", "optimizer": "sgd", "schedule": "constant", "bn": False, "seed": seed, "lr": 0.3,
                  "train_loss": 0.5 + j, "diverged": False},
                 {"group": "tuned", "optimizer": "adam", "schedule": "constant", "bn": False, "seed": seed, "lr": 0.003,
                  "train_loss": 0.6 + 2 * j, "diverged": False}]
        # the no-warm-up run spikes at once (x3); the warm-up run is calm during warm-up (x1.1) and
        # spikes x30 at the peak rate: only a window past warm-up sees that
        rows += [{"group": "spike", "optimizer": "adam", "schedule": "cosine", "bn": False, "seed": seed, "lr": 0.01,
                  "early_spike": 3.0 + j, "early_spike_warmup_only": 3.0 + j, "diverged": False},
                 {"group": "spike", "optimizer": "adam", "schedule": "warmup_cosine", "bn": False, "seed": seed,
                  "lr": 0.01, "early_spike": 30.0 + j, "early_spike_warmup_only": 1.1 + j, "diverged": False}]
    for o, lrs in (("sgd", (0.1, 0.3)), ("adam", (0.001, 0.003))):
        rows += [{"group": "sweep", "optimizer": o, "schedule": "constant", "bn": False, "seed": 100, "lr": lr,
                  "train_loss": 1.0, "diverged": False} for lr in lrs]
    curves = _curves("sgd", 0.3, 100, [2.3, 1.3, 1.2, 1.1]) + _curves("adam", 0.003, 100, [2.3, 1.5, 1.4, 1.3])
    return pd.concat([_finals(rows), pd.DataFrame(curves)], ignore_index=True)


def test_the_verdicts_follow_the_tuned_rates_and_the_long_window():
    claims = {c["claim_id"]: c for c in exp.claims(_table(), CFG)}
    beats = claims["adam_beats_sgd"]
    assert beats["verdict_unadjusted"] == "not_reproduced" and np.isclose(beats["value"], -0.115)
    assert "configured rates after 10 updates: 0.600" in beats["note"]     # the uncontrolled arm, labelled
    assert "lr 0.003" in beats["statement"] and "lr 0.3" in beats["statement"]
    assert "edge of the sweep" in beats["note"]                         # both chose their sweep's largest rate
    assert "fast phase by update 10" in beats["note"]
    spike = claims["warmup_lowers_spike_adam"]
    assert spike["verdict_unadjusted"] == "not_reproduced"               # warm-up run spikes more, at its peak
    assert "over the warm-up alone" in spike["note"] and "0.4" in spike["note"]   # log10(3 / 1.1) = 0.44 there


def test_early_spike_windows_on_a_warm_up_run():
    """A warm-up run calm while the rate rises and spiking once it peaks: the warm-up-long window
    sees no spike, the window twice as long does."""
    loss = [2.3, 2.2, 2.1, 2.0, 2.0, 6.0, 3.0, 2.0]   # warm-up of 3 updates; the spike at update 5
    m = pd.DataFrame({"step": range(len(loss)), "batch_loss": loss})
    assert exp.early_spike(m, window=3, diverged=False) == 1.0
    assert exp.early_spike(m, window=6, diverged=False) == 3.0


def test_table_reads_each_runs_group_from_its_labels():
    """No grid to re-derive from the config: the group is the label the run came with; a run in two
    groups (the same settings) is a final row in each, and its curve rows say which group."""
    m = {"step": [0, 1, 2, 3], "train_loss": [2.3, None, None, 1.0], "val_acc": [0.1, None, None, 0.6],
         "lr": [0.1, 0.1, 0.1, 0.1], "batch_loss": [2.3, 2.0, 4.0, 1.0]}
    run = network_run(CFG, {"name": "sgd", "lr": 0.1}, {"name": "cosine"}, "none", 7)  # no such cell in CFG
    recs = [record(run, m, labels={"group": "grid"}), record(run, m, labels={"group": "sweep"}),
            record(run, m, labels={"group": "spike"})]
    t = exp.table(CFG, recs, Context({"seeds": [7]}))
    finals = t[t["kind"] == "final"]
    assert list(finals["group"]) == ["grid", "sweep", "spike"] and finals["run_id"].nunique() == 1
    assert finals["early_spike"].tolist()[2] == 2.0 and finals["early_spike"].isna().tolist()[:2] == [True, True]
    assert set(t[t["kind"] == "curve"]["group"]) == {"grid", "sweep"} and set(t[t["kind"] == "lr"]["group"]) == {"grid"}
