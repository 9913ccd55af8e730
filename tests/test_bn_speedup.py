"""bn_speedup: the learning-rate choice, steps to the baseline's best accuracy, and the claims logic."""

import math

import pandas as pd
import pytest

from trainfail.context import Context
from trainfail.experiments import bn_speedup as bs


def test_choose_lr_skips_rates_where_a_seed_diverged():
    sweep = pd.DataFrame({"lr": [0.01, 0.01, 0.1, 0.1, 1.0, 1.0], "seed": [0, 1] * 3,
                          "best_val_acc": [0.80, 0.82, 0.90, 0.88, 0.95, 0.10],
                          "diverged": [False, False, False, False, False, True]})
    assert bs.choose_lr(sweep) == 0.1


def test_runs_are_the_sweep_then_the_other_variants():
    cfg = {"datasets": ["digits", "mnist1d"], "model": {"arch": "cnn"}, "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 32,
           "steps": 10, "eval_points": 2, "variants": ["baseline", "BN-x5"], "sweep_lrs": [0.1, 0.3], "seeds": [0, 1, 2]}
    runs = bs.runs(cfg, Context({}))
    sweep = [r for r in runs if r["task"] == "train"]
    assert len(sweep) == 12 and {r["optimizer"]["lr"] for r in sweep} == {0.1, 0.3}
    assert all(r["model"]["norm"] == "none" for r in sweep)
    assert {r["dataset"] for r in sweep} == {"digits", "mnist1d"}
    others = [r for r in runs if r["task"] == bs.ID]
    assert len(others) == 6 and {r["variant"] for r in others} == {"BN-x5"}
    assert runs[:12] == sweep  # the sweeps' shards come first


def _curves(spec: dict) -> pd.DataFrame:
    rows = []
    for (v, seed), accs in spec.items():
        rows += [{"kind": "curve", "variant": v, "seed": seed, "step": 10 * i, "val_acc": a} for i, a in enumerate(accs)]
    return pd.DataFrame(rows)


def _runs(spec: dict, diverged=()) -> pd.DataFrame:
    return pd.DataFrame([{"kind": "run", "variant": v, "seed": s, "lr": 0.1, "diverged": (v, s) in diverged,
                          # the diverged-run policy: a diverged run scores its step-0 evaluation
                          "final_val_acc": accs[0] if (v, s) in diverged else accs[-1]} for (v, s), accs in spec.items()])


SPEC = {
    ("baseline", 0): [0.1, 0.5, 0.7, 0.8], ("baseline", 1): [0.1, 0.4, 0.75, 0.7],
    ("BN-baseline", 0): [0.1, 0.8, 0.9, 0.9], ("BN-baseline", 1): [0.1, 0.6, 0.8, 0.9],
    ("BN-x5", 0): [0.1, 0.85, 0.9, 0.9], ("BN-x5", 1): [0.1, 0.8, 0.9, 0.9],
    ("baseline-x30", 0): [0.1, math.nan, math.nan, math.nan], ("baseline-x30", 1): [0.1, 0.02, 0.02, 0.02],
}


def test_steps_to_target_pairs_by_seed():
    curves = _curves(SPEC).dropna()
    st = bs.steps_to_target(curves, _runs(SPEC)).set_index(["variant", "seed"])
    assert st.loc[("baseline", 0), "steps_to_target"] == 30  # its own best, 0.8, first at step 30
    assert st.loc[("baseline", 1), "steps_to_target"] == 20
    assert st.loc[("BN-baseline", 0), "steps_to_target"] == 10 and st.loc[("BN-baseline", 0), "speedup"] == 3
    assert st.loc[("BN-baseline", 1), "steps_to_target"] == 20 and st.loc[("BN-baseline", 1), "speedup"] == 1
    assert math.isnan(st.loc[("baseline-x30", 1), "steps_to_target"]) and st.loc[("baseline-x30", 1), "speedup"] == 0


def test_claims_from_a_table():
    t = pd.concat([_curves(SPEC).dropna(), _runs(SPEC, diverged={("baseline-x30", 0)})], ignore_index=True)
    out = {c["claim_id"]: c for c in bs.claims(t.assign(dataset="digits"), {}, None)}
    assert out["bn_fewer_steps_digits"]["value"] == pytest.approx(2.0)
    assert out["baseline_x30_worse_digits"]["value"] == pytest.approx((0.8 + 0.7) / 2 - (0.1 + 0.02) / 2)
    assert out["baseline_x30_worse_digits"]["verdict_unadjusted"] == "reproduced"
    assert "1/2 runs diverged" in out["baseline_x30_worse_digits"]["note"]
    assert set(out) == {"bn_fewer_steps_digits", "bn_x5_faster_than_bn_digits", "baseline_x30_worse_digits"}


def test_table_takes_the_baseline_from_the_sweep_at_the_chosen_rate():
    class Rec:
        def __init__(self, settings, accs, diverged=False, summary=None):
            self.settings, self.diverged, self.summary = settings, diverged, summary or {}
            self.metrics = pd.DataFrame({"step": [0, 10], "val_acc": accs})
            self.meta, self.run_id = {"diverged_step": None}, str(id(self))

    base = lambda lr, seed: {"task": "train", "dataset": "digits", "optimizer": {"lr": lr}, "seed": seed}
    recs = [Rec(base(0.1, 0), [0.1, 0.8]), Rec(base(0.1, 1), [0.1, 0.7]),
            Rec(base(1.0, 0), [0.1, 0.95]), Rec(base(1.0, 1), [0.1, math.nan], diverged=True),
            Rec({"task": bs.ID, "variant": "BN-x5", "seed": 0, "spec": {"dataset": "digits"}}, [0.1, 0.9], summary={"lr": 0.5, "baseline_lr": 0.1})]
    t = bs.table({}, recs, None)
    runs = t[t["kind"] == "run"].set_index("variant")
    assert runs.loc["baseline", "lr"].tolist() == [0.1, 0.1]  # 1.0 diverged for one seed: not chosen
    assert t[t["kind"] == "sweep"]["chosen"].sum() == 2
    assert set(t["dataset"]) == {"digits"}
    recs[-1].summary["baseline_lr"] = 1.0  # trained before the sweep was retrained: a stale rate
    with pytest.raises(ValueError, match="sweep now chooses 0.1"):
        bs.table({}, recs, None)


def test_summary_table_has_the_papers_numbers():
    t = pd.concat([_curves(SPEC).dropna(), _runs(SPEC)], ignore_index=True)
    s = bs.summary_table(t, ["baseline", "BN-baseline", "BN-x5"]).set_index("variant")
    assert s.loc["BN-x5", "paper_steps"] == "2.1M" and s.loc["baseline", "paper_steps"] == "31.0M"
    assert s.loc["BN-baseline", "reached"] == "2/2"
