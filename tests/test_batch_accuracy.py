"""batch_accuracy: the three arms, and claims that follow the controlled (tuned) arm."""

import numpy as np
import pandas as pd
import pytest

from trainfail.training import tuning
from trainfail.training.context import Context
from trainfail.core.contract import labelled
from trainfail.experiments import batch_accuracy as exp

from .fake_records import record, write_choice

CFG = {"datasets": [{"name": "digits", "model": {"arch": "mlp", "hidden": [8]}}], "batch_sizes": [16, 1437],
       "epochs": 2, "optimizer": {"name": "sgd", "lr": 0.05}, "equal_updates": 10, "no_gap_margin": 0.02,
       "tuning": {"lrs": [0.1, 1.0], "seeds": [100]}}


def test_arms_share_seeds_and_tune_on_other_seeds():
    arms = exp.arms(CFG, Context({"seeds": [0, 1]}))
    assert {r["seed"] for r in arms["lecture"]} == {r["seed"] for r in arms["equal_updates"]} == {0, 1}
    assert all(r["epochs"] == 2 and "steps" not in r for r in arms["lecture"])
    assert all(r["steps"] == 10 and "epochs" not in r for r in arms["equal_updates"])
    sweep = [r for r in arms["tuned"] if not tuning.stage(r)]
    tuned = [r for r in arms["tuned"] if tuning.stage(r)]
    assert {r["seed"] for r in sweep} == {100} and {r["seed"] for r in tuned} == {0, 1}
    assert len(sweep) == 2 * 2 and len(tuned) == 2 * 2      # (2 rates x 1 tuning seed, 2 claim seeds) x 2 sizes
    assert {r["base"]["batch_size"] for r in tuned} == {16, 1437} and all(r["base"]["epochs"] == 2 for r in tuned)
    with pytest.raises(ValueError, match="tuning seeds"):
        exp.runs({**CFG, "tuning": {"lrs": [0.1, 1.0], "seeds": [1]}}, Context({"seeds": [0, 1]}))


def _table():
    """A table where the lecture's arm says "large batch hurts" (20 updates at a rate chosen for
    neither) while, at rates tuned per batch size, the large batch does as well: the update count
    and the rate decide the lecture's arm, not the batch."""
    rows = []
    for seed in range(5):
        jitter = 0.004 * seed
        for arm, lr_small, lr_large, acc_small, acc_large in (
                ("lecture", 0.05, 0.05, 0.99 - jitter, 0.40 + jitter),
                ("equal_updates", 0.05, 0.05, 0.70 - jitter, 0.75 + 2 * jitter),
                ("tuned", 0.1, 3.0, 0.99 - jitter, 0.99 + jitter)):
            for bs, lr, acc, updates in ((16, lr_small, acc_small, 180), (1437, lr_large, acc_large, 2)):
                rows.append({"arm": arm, "dataset": "digits", "batch_size": bs, "seed": seed, "lr": lr,
                             "train_acc": acc, "val_acc": acc - 0.02, "updates": updates, "diverged": False})
    for bs, lrs in ((16, (0.1, 3.0)), (1437, (0.1, 3.0))):
        rows += [{"arm": "sweep", "dataset": "digits", "batch_size": bs, "seed": 100, "lr": lr, "train_acc": 0.5,
                  "val_acc": 0.5, "updates": 1, "diverged": False} for lr in lrs]
    return pd.DataFrame(rows)


def test_the_verdict_follows_the_tuned_arm_not_the_lecture_arm():
    claims = {c["claim_id"]: c for c in exp.claims(_table(), CFG)}
    lecture = claims["large_batch_lower_train_acc_digits_same_lr"]
    tuned = claims["large_batch_lower_train_acc_digits"]
    assert lecture["kind"] == "demonstration" and lecture["verdict_unadjusted"] == "reproduced"
    assert tuned["kind"] == "test" and tuned["verdict_unadjusted"] == "not_reproduced"
    assert np.isclose(tuned["value"], -0.016)           # mean of (0.99 - j) - (0.99 + j) over j = 0.004 k
    assert "the lecture's arm" in tuned["note"] and "2 vs 180 updates" in tuned["note"]   # the uncontrolled arm, labelled
    assert "lr 3" in tuned["statement"] and "lr 0.1" in tuned["statement"]
    assert claims["large_batch_lower_train_acc_digits_equal_updates"]["verdict_unadjusted"] == "not_reproduced"
    # both tuned rates lie on the sweep's edges (0.1 and 3.0): the note says they may be under-tuned
    assert "edge of the sweep" in tuned["note"]


def test_chosen_rates_flag_the_sweeps_edges():
    rates = exp.chosen_rates(_table()).set_index("batch_size")
    assert rates.loc[16, "lr"] == 0.1 and rates.loc[1437, "lr"] == 3.0
    assert rates["at_edge"].all()


def _metrics(loss: float) -> dict:
    return {"step": [0, 10], "train_loss": [2.3, loss], "train_acc": [0.1, 1 - loss], "val_loss": [2.3, loss],
            "val_acc": [0.1, 1 - loss]}


def test_table_reads_each_runs_arm_from_its_labels(tmp_path):
    """No config to re-derive the plan from: the arm is the label the run came with, and a run
    labelled twice (two arms that share settings) is a row in each."""
    base = exp.base(CFG["datasets"][0], 16, CFG["optimizer"], {"epochs": 2})
    sweep = [record(labelled(s, arm="sweep"), _metrics(0.2 if s["optimizer"]["lr"] == 0.1 else 0.4))
             for s in tuning.sweep(base, [0.1, 1.0], [100])]
    tuned_settings = tuning.tuned(base, [0.1, 1.0], [100], 0)
    choice = write_choice(tmp_path, tuned_settings, sweep)  # what the sweep's tune job writes
    tuned = record(labelled(tuned_settings, arm="tuned"), _metrics(0.1), {"lr": 0.1}, choice=choice)
    plain = {**base, "seed": 0}
    recs = sweep + [tuned, record(plain, _metrics(0.3), labels={"arm": "lecture"}),
                    record(plain, _metrics(0.3), labels={"arm": "equal_updates"})]
    t = exp.table({}, recs, Context({}, tmp_path))
    assert list(t["arm"]) == ["sweep", "sweep", "tuned", "lecture", "equal_updates", "tuning"]
    assert t.loc[2, "lr"] == 0.1 and t.loc[2, "batch_size"] == 16   # the tuned run: its sweep's rate, its base
    assert t.loc[3, "run_id"] == t.loc[4, "run_id"]
    # the sweep's choice as one row: the smaller rate, at the grid's low edge, its neighbour 1.0
    assert t.loc[5, "lr"] == 0.1 and t.loc[5, "edge"] == "low" and t.loc[5, "upper_lr"] == 1.0
