"""bn_speedup: the learning-rate choice, steps to the baseline's best accuracy, and the claims logic."""

import math

import pandas as pd
import pytest

from trainfail.core import config, store
from trainfail.training import tuning
from trainfail.training.context import Context
from trainfail.experiments import bn_speedup as bs


CFG = {"datasets": ["digits", "mnist1d"], "model": {"arch": "cnn"}, "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 32,
       "steps": 10, "eval_points": 2, "variants": ["baseline", "BN-x5"], "sweep_lrs": [0.1, 0.3], "seeds": [0, 1, 2],
       "tuning_seeds": [100, 101], "criterion": "best_val_acc"}


def test_runs_are_the_sweep_on_tuning_seeds_then_the_claim_seeds():
    runs = bs.runs(CFG, Context({}))
    sweep = [r for r in runs if r["task"] == "train"]
    assert len(sweep) == 8 and {r["optimizer"]["lr"] for r in sweep} == {0.1, 0.3}
    assert {r["seed"] for r in sweep} == {100, 101}  # tuning seeds, not the claims'
    assert all(r["model"]["norm"] == "none" and tuning.stage(r) == 0 for r in sweep)
    assert {r["dataset"] for r in sweep} == {"digits", "mnist1d"}
    tuned = [r for r in runs if r["task"] == tuning.TASK and "derive" not in r]
    assert sorted(r["seed"] for r in tuned) == [0, 0, 1, 1, 2, 2] and all(tuning.stage(r) == 1 for r in tuned)
    assert all(r["criterion"] == "best_val_acc" for r in tuned)
    others = [r for r in runs if "derive" in r]
    assert len(others) == 6 and {r.labels["variant"] for r in others} == {"BN-x5"}
    assert all(tuning.stage(r) == 1 for r in others) and len(runs) == len(sweep) + len(tuned) + len(others)
    # a variant is a derived tuned run of the same sweep as the tuned baseline of its data set: its
    # multiple of the chosen rate, its norm, validation with recomputed BN statistics
    assert tuning.sweep_of(others[0]) == tuning.sweep_of(tuned[0])
    assert others[0]["derive"] == {"lr_multiplier": 5.0, "model": {"norm": "batch"}, "eval_recomputed": ["val"]}
    plain = tuning.at_choice(others[0], {"lr": 0.1})
    assert plain["optimizer"]["lr"] == pytest.approx(0.5) and plain["model"]["norm"] == "batch"
    assert plain["eval_recomputed"] == ["val"] and plain["model"]["activation"] == "relu"
    # the baseline's multiples (no derived model) are the baseline's runs at another rate: a rate stack
    x30 = bs.runs({**CFG, "variants": ["baseline", "baseline-x30"]}, Context({}))
    assert [r["derive"] for r in x30 if "derive" in r][0] == {"lr_multiplier": 30.0}
    with pytest.raises(ValueError, match="tuning seeds \\[1\\]"):
        bs.runs({**CFG, "tuning_seeds": [1, 100]}, Context({}))


def _curves(spec: dict, eval_mode: dict | None = None) -> pd.DataFrame:
    """spec: (variant, seed) -> validation accuracies with recomputed statistics at steps 0, 10, ...;
    eval_mode: the same in eval mode where it differs (default: equal)."""
    rows = []
    for (v, seed), accs in spec.items():
        ev = (eval_mode or {}).get((v, seed), accs)
        rows += [{"kind": "curve", "variant": v, "seed": seed, "step": 10 * i, "val_acc_recomputed": a, "val_acc": e}
                 for i, (a, e) in enumerate(zip(accs, ev))]
    return pd.DataFrame(rows)


def _runs(spec: dict, diverged=()) -> pd.DataFrame:
    # the diverged-run policy: a diverged run scores its step-0 evaluation
    final = lambda v, s, accs: accs[0] if (v, s) in diverged else accs[-1]
    return pd.DataFrame([{"kind": "run", "variant": v, "seed": s, "lr": 0.1, "diverged": (v, s) in diverged,
                          "final_val_acc": final(v, s, accs), "final_val_acc_recomputed": final(v, s, accs)}
                         for (v, s), accs in spec.items()])


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
    out = {c["claim_id"]: c for c in bs.claims(t.assign(dataset="digits"), {})}
    assert out["bn_fewer_steps_digits"]["value"] == pytest.approx(2.0)
    assert out["baseline_x30_worse_digits"]["value"] == pytest.approx((0.8 + 0.7) / 2 - (0.1 + 0.02) / 2)
    assert out["baseline_x30_worse_digits"]["verdict_unadjusted"] == "reproduced"
    assert "1/2 runs diverged" in out["baseline_x30_worse_digits"]["note"]
    assert set(out) == {"bn_fewer_steps_digits", "bn_x5_faster_than_bn_digits", "baseline_x30_worse_digits"}


SEEDS = range(4)


def _speed(variant, hit_step, seeds=SEEDS, best=0.8):
    """A curve that first reaches `best` at `hit_step` (None: never), per seed."""
    curve = lambda h: [0.1] + [best + 0.05 if h is not None and 10 * i >= h else 0.5 for i in range(1, 7)]
    return {(variant, s): curve(hit_step(s) if callable(hit_step) else hit_step) for s in seeds}


def test_bn_x30_is_judged_with_recomputed_statistics():
    """The confound: at a high constant rate the running statistics lag the weights, so in eval mode
    BN-x30 never reaches the target while with recomputed statistics it gets there first. The
    verdict follows the recomputed statistics; the eval-mode number is in the note."""
    spec = {**_speed("baseline", lambda s: 40 + 10 * (s % 2), best=0.75), **_speed("BN-baseline", 30),
            **_speed("BN-x30", lambda s: 10 + 10 * (s % 2))}
    lagging = {k: [0.1] * 7 for k in spec if k[0] == "BN-x30"}
    t = pd.concat([_curves(spec, eval_mode=lagging), _runs(spec)], ignore_index=True).assign(dataset="digits")
    row = {c["claim_id"]: c for c in bs.claims(t, {})}["bn_x30_faster_than_bn_digits"]
    assert row["verdict_unadjusted"] == "reproduced"
    assert row["note"].startswith("eval mode (running statistics): -1.")  # eval mode: never (0) minus BN's speed-up
    eval_only = t.assign(val_acc_recomputed=t["val_acc"])  # had the claim read eval mode
    assert {c["claim_id"]: c for c in bs.claims(eval_only, {})}["bn_x30_faster_than_bn_digits"][
        "verdict_unadjusted"] == "not_reproduced"


def test_sigmoid_claim():
    base = {**_speed("baseline", lambda s: 40 + 10 * (s % 2), best=0.75), **_speed("BN-x5", lambda s: 10 + 10 * (s % 2))}
    never = {**base, **_speed("BN-x5-sigmoid", None)}
    t = pd.concat([_curves(never), _runs(never)], ignore_index=True).assign(dataset="digits")
    row = {c["claim_id"]: c for c in bs.claims(t, {})}["bn_x5_sigmoid_slower_than_bn_x5_digits"]
    assert row["verdict_unadjusted"] == "reproduced" and "reached the target in 0/4" in row["note"]
    faster = {**base, **_speed("BN-x5-sigmoid", 10)}  # sigmoid first at step 10: as fast or faster than BN-x5
    t = pd.concat([_curves(faster), _runs(faster)], ignore_index=True).assign(dataset="digits")
    row = {c["claim_id"]: c for c in bs.claims(t, {})}["bn_x5_sigmoid_slower_than_bn_x5_digits"]
    assert row["verdict_unadjusted"] != "reproduced"


class Rec:
    def __init__(self, settings, accs, diverged=False, summary=None, recomputed=None, choice=None):
        self.settings, self.diverged, self.summary = settings, diverged, summary or {}
        self.labels = settings.labels  # bs.runs() labels every run: its data set, sweep or variant
        self.metrics = pd.DataFrame({"step": [0, 10], "val_acc": accs, "train_loss": [2.0, 1.0]})
        if recomputed is not None:
            self.metrics["val_acc_recomputed"] = recomputed
        self.meta = {"diverged_step": None, **({"choice": tuning.choice_record(choice)} if choice else {})}
        self.run_id = config.run_id(settings) if settings.get("task") == "train" else str(id(self))


def test_table_takes_the_baseline_from_the_choice_file_and_refuses_stale_rates(tmp_path):
    cfg = {**CFG, "datasets": ["digits"], "seeds": [0], "tuning_seeds": [100, 101], "variants": ["baseline", "BN-x5"]}
    plan = bs.runs(cfg, Context({}))
    sweep = [s for s in plan if s["task"] == "train"]
    accs = {(0.1, 100): [0.1, 0.8], (0.1, 101): [0.1, 0.7], (0.3, 100): [0.1, 0.95], (0.3, 101): [0.1, math.nan]}
    recs = [Rec(s, accs[(s["optimizer"]["lr"], s["seed"])], diverged=math.isnan(accs[(s["optimizer"]["lr"], s["seed"])][1]))
            for s in sweep]
    tuned = next(s for s in plan if s["task"] == tuning.TASK and "derive" not in s)
    variant = next(s for s in plan if "derive" in s)
    assert tuning.sweep_of(variant) == tuning.sweep_of(tuned)  # the variants train at the baseline's choice
    choice = tuning.make_choice(tuning.sweep_of(tuned), recs)  # what the sweep's tune job writes
    store.write_checked_json(tmp_path / tuning.choice_file(tuning.sweep_of(tuned)), choice)
    recs += [Rec(tuned, [0.1, 0.75], summary={"lr": 0.1}, choice=choice),
             Rec(variant, [0.1, 0.2], summary={"lr": 0.5, "baseline_lr": 0.1}, recomputed=[0.1, 0.9], choice=choice)]
    ctx = Context({}, tmp_path)
    t = bs.table(cfg, recs, ctx)
    runs_ = t[t["kind"] == "run"].set_index("variant")
    assert runs_.loc["baseline", "lr"] == 0.1  # 0.3 diverged for one tuning seed: not chosen
    assert runs_.loc["BN-x5", "final_val_acc"] == 0.2 and runs_.loc["BN-x5", "final_val_acc_recomputed"] == 0.9
    assert runs_.loc["baseline", "final_val_acc_recomputed"] == 0.75  # no BN: recomputed = eval mode
    sw = t[t["kind"] == "sweep"]
    assert sw["chosen"].sum() == 2 and set(sw["seed"]) == {100, 101}
    assert sw["score"].tolist() == [0.8, 0.7, 0.95, 0.1]  # the choice file's scores (diverged: step 0)
    # the table reads which run is which from the labels, not from the settings
    relabelled = [Rec(r.settings, [0.1, 0.2]) for r in recs[-2:]]
    for r, old in zip(relabelled, recs[-2:]):
        r.labels, r.meta, r.summary = {**old.labels, "dataset": "relabelled"}, old.meta, old.summary
    relabelled[-1].labels["variant"] = "BN-x30"
    t = bs.table(cfg, relabelled, ctx)
    assert set(t["dataset"]) == {"relabelled"} and set(t[t["kind"] == "run"]["variant"]) == {"baseline", "BN-x30"}
    other = {**choice, "lr": 0.3}
    recs[-1].meta["choice"] = tuning.choice_record(other)  # trained at another choice than the file's
    with pytest.raises(ValueError, match="sweep now chooses 0.1"):
        bs.table(cfg, recs, ctx)
    recs[-1].meta["choice"] = tuning.choice_record(choice)
    recs[-2].meta.pop("choice")  # trained before its choice was a file
    with pytest.raises(ValueError, match="did not record, but its sweep now chooses 0.1"):
        bs.table(cfg, recs, ctx)


def test_summary_table_has_the_papers_numbers():
    t = pd.concat([_curves(SPEC).dropna(), _runs(SPEC)], ignore_index=True)
    s = bs.summary_table(t, ["baseline", "BN-baseline", "BN-x5"]).set_index("variant")
    assert s.loc["BN-baseline", "speedup"] == s.loc["BN-baseline", "speedup_eval_mode"] == pytest.approx(2.0)
    assert s.loc["BN-x5", "paper_steps"] == "2.1M" and s.loc["baseline", "paper_steps"] == "31.0M"
    assert s.loc["BN-baseline", "reached"] == "2/2"
