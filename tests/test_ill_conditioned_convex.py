"""ill_conditioned_convex: starts, the per-path measurements and the claims, on short paths."""

import numpy as np

from trainfail.measure import landscape
from trainfail.training.context import Context
from trainfail.training.context import RunEnv
from trainfail.experiments import ill_conditioned_convex as exp

CFG = {"curvatures": [1.0, 200.0], "start": [-8.0, 2.0], "start_jitter": 0.1, "floor": 0.05, "tolerance": 0.01,
       "methods": [{"id": "gd_large", "label": "GD", "optimizer": {"name": "sgd", "lr": 0.01}, "steps": 300},
                   {"id": "gd_tiny", "label": "tiny", "optimizer": {"name": "sgd", "lr": 1e-7}, "steps": 300},
                   {"id": "adagrad", "label": "Adagrad", "optimizer": {"name": "adagrad", "lr": 0.3},
                    "schedule": {"name": "power", "exponent": 0.5}, "steps": 2000},
                   {"id": "adagrad_decay", "label": "Adagrad + decay", "optimizer": {"name": "adagrad", "lr": 0.3},
                    "steps": 2000}]}


class _Record:
    def __init__(self, settings, result):
        import pandas as pd

        self.settings, self.summary, self.run_id = settings, result.summary, "x"
        self.metrics = pd.DataFrame(result.rows)


def test_starts_are_seeded_and_jittered():
    a, b = (landscape.jittered_starts(CFG["start"], CFG["start_jitter"], [0, 1]) for _ in range(2))
    assert a == b and a[0] != a[1]
    assert np.allclose(a[0], CFG["start"], atol=0.5)


def test_claims_on_short_paths():
    ctx = Context({"seeds": [0, 1, 2]})
    env = RunEnv(device=None, data_dir=None, cache_dir=None)
    records = [_Record(s, exp.execute(s, env)) for s in exp.runs(CFG, ctx)]
    table = exp.table(CFG, records)
    claims = {c["claim_id"]: c for c in exp.claims(table, CFG)}
    assert claims["large_lr_gd_does_not_converge"]["verdict_unadjusted"] == "reproduced"
    assert claims["tiny_lr_gd_not_within_tolerance"]["verdict_unadjusted"] == "reproduced"
    assert claims["adagrad_bursts"]["verdict_unadjusted"] == "reproduced"
    assert claims["decay_removes_bursts"]["verdict_unadjusted"] == "reproduced"
