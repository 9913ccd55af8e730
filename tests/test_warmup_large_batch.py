"""warmup_large_batch: the linear scaling rule's settings and the claims on a small table."""

import pandas as pd
import pytest

from trainfail.training.context import Context
from trainfail.experiments import warmup_large_batch as exp
from trainfail.pipeline.plan import make_plan

from .fake_records import record

CFG = {"no_spike_margin": 0.1, "dataset": "mnist1d", "model": {"arch": "mlp"}, "small_batch": 32, "large_batch": 512, "lr": 0.05,
       "momentum": 0.9, "epochs": 2, "warmup_steps": 5, "window_steps": 10, "close_within": 0.02}


def test_linear_scaling_rule():
    v = {x["variant"]: x for x in exp.variants(CFG)}
    assert v["large batch, scaled lr, no warm-up"]["optimizer"]["lr"] == 0.05 * 16
    assert v["large batch, scaled lr, warm-up"]["schedule"] == {"name": "warmup_constant", "warmup_steps": 5}
    assert v["large batch, lr not scaled"]["optimizer"]["lr"] == 0.05
    assert len(exp.runs(CFG, Context({"seeds": [0, 1]}))) == 8


def test_claims():
    rows = []
    for seed in range(3):
        for variant, spike, acc in (("small batch", 1.0, 0.80 + 0.001 * seed),
                                    ("large batch, scaled lr, no warm-up", 1000.0, 0.1),
                                    ("large batch, scaled lr, warm-up", 1.1 + 0.01 * seed, 0.79 + 0.001 * seed)):
            rows.append({"kind": "final", "variant": variant, "seed": seed, "early_spike": spike,
                         "early_spike_warmup_only": spike, "val_acc": acc, "diverged": spike >= 1000})
    claims = {c["claim_id"]: c for c in exp.claims(pd.DataFrame(rows), CFG)}
    assert claims["no_warmup_early_spike"]["verdict_unadjusted"] == "reproduced"
    assert "diverged" in claims["no_warmup_early_spike"]["note"]
    # 0.01 apart on mnist1d's 1,000 test examples: the test set's sampling error alone (about 0.018
    # per difference) keeps a margin of 0.02 from being shown; a margin of 0.06 is
    assert claims["warmup_close_to_small_batch"]["verdict_unadjusted"] == "inconclusive"
    wide = {c["claim_id"]: c for c in exp.claims(pd.DataFrame(rows), {**CFG, "close_within": 0.06})}
    assert wide["warmup_close_to_small_batch"]["verdict_unadjusted"] == "equivalent"


def test_a_window_that_ends_with_warm_up_is_refused():
    with pytest.raises(ValueError, match=r"experiments.warmup_large_batch.window_steps: expected at least twice the warm-up .*\(got 5\)"):
        exp.runs({**CFG, "window_steps": 5}, Context({"seeds": [0]}))


def test_the_spike_verdict_follows_the_window_past_warm_up():
    """The warm-up run is calm while its rate rises and spikes at the peak rate: over the warm-up
    alone (the old window) warm-up looks better; over twice the warm-up it is not."""
    rows = []
    for seed in range(4):
        j = 0.01 * seed
        for variant, spike, warmup_only in (("small batch", 1.0, 1.0),
                                            ("large batch, scaled lr, no warm-up", 4.0 + j, 4.0 + j),
                                            ("large batch, scaled lr, warm-up", 8.0 + 2 * j, 1.2 + j)):
            rows.append({"kind": "final", "variant": variant, "seed": seed, "early_spike": spike,
                         "early_spike_warmup_only": warmup_only, "val_acc": 0.8, "diverged": False})
    claims = {c["claim_id"]: c for c in exp.claims(pd.DataFrame(rows), CFG)}
    spike = claims["no_warmup_early_spike"]
    assert spike["verdict_unadjusted"] == "not_reproduced"
    assert "over the warm-up alone" in spike["note"] and "0.5" in spike["note"]   # log10(4 / 1.2) = 0.52 there


def test_k_beyond_goyals_regime_is_flagged():
    rows = [{"kind": "final", "variant": v, "seed": s, "early_spike": 1.0 + s, "early_spike_warmup_only": 1.0,
             "val_acc": 0.8, "diverged": False} for s in range(2)
            for v in ("small batch", "large batch, scaled lr, no warm-up", "large batch, scaled lr, warm-up")]
    far = {c["claim_id"]: c for c in exp.claims(pd.DataFrame(rows), {**CFG, "small_batch": 64, "large_batch": 8192})}
    assert "k = 128 is outside" in far["warmup_close_to_small_batch"]["note"]
    near = {c["claim_id"]: c for c in exp.claims(pd.DataFrame(rows), CFG)}
    assert "outside" not in near["warmup_close_to_small_batch"]["note"]


def test_variants_that_share_settings_are_one_run_with_a_row_for_each():
    """k = 1: the small batch and the large batch at the unscaled and at the "scaled" rate have the
    same settings. They are one run per seed, trained once, and the table, reading the variant from
    the labels (not from batch size, rate and schedule), has a row for every variant."""
    plan = make_plan({"seeds": [0, 1], "experiments": {exp.ID: {**CFG, "large_batch": 32}}}, [exp.ID])
    assert len(plan.by_experiment[exp.ID]) == 2 * 2        # (the shared settings, warm-up) x 2 seeds
    assert len(plan.labels[exp.ID]) == 4 * 2               # every variant x 2 seeds
    m = {"step": [0, 1, 2, 3], "batch_loss": [2.3, 2.0, 1.5, 1.0], "train_loss": [2.3, None, None, 1.0],
         "train_acc": [0.1, None, None, 0.6], "val_loss": [2.3, None, None, 1.1], "val_acc": [0.1, None, None, 0.5]}
    recs = [record(plan.runs[rid], m, labels=labels) for rid, labels in plan.labels[exp.ID]]
    t = exp.table({**CFG, "large_batch": 32}, recs)
    finals = t[t["kind"] == "final"]
    assert finals.groupby("variant")["seed"].apply(sorted).to_dict() == {v["variant"]: [0, 1] for v in exp.variants(CFG)}
    assert finals["run_id"].nunique() == 4
