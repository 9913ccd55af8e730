"""warmup_large_batch: the linear scaling rule's settings and the claims on a small table."""

import pandas as pd

from trainfail.context import Context
from trainfail.experiments import warmup_large_batch as exp

CFG = {"dataset": "mnist1d", "model": {"arch": "mlp"}, "small_batch": 32, "large_batch": 512, "lr": 0.05,
       "momentum": 0.9, "epochs": 2, "warmup_steps": 5, "window_steps": 5, "close_within": 0.02}


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
            rows.append({"kind": "final", "variant": variant, "seed": seed, "early_spike": spike, "val_acc": acc,
                         "diverged": spike >= 1000})
    claims = {c["claim_id"]: c for c in exp.claims(pd.DataFrame(rows), CFG, Context({}))}
    assert claims["no_warmup_early_spike"]["verdict_unadjusted"] == "reproduced"
    assert "diverged" in claims["no_warmup_early_spike"]["note"]
    assert claims["warmup_close_to_small_batch"]["verdict_unadjusted"] == "reproduced"
