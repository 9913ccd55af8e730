"""critical_batch_size: the noise scale (exact, two-batch), the S(B) fit, the plan and the claims."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from trainfail.training import models, tuning
from trainfail.training.context import Context
from trainfail.core.contract import labels_of
from trainfail.experiments import critical_batch_size as exp
from trainfail.core.run_record import NEVER

CFG = {"dataset": {"name": "digits", "model": {"arch": "mlp", "hidden": [8]}}, "optimizer": {"name": "sgd", "lr": 0.1},
       "budgets": [{"batch_size": 8, "steps": 40}, {"batch_size": 64, "steps": 20}, {"batch_size": 1437, "steps": 20}],
       "eval_every": 5, "target_loss": 2.0, "tuning": {"lrs": [0.3, 1.0], "seeds": [100]},
       "noise": {"batch_size": 64, "points": 4, "small": 8, "big": 256, "draws": 2},
       "timing": {"repeats": 3, "warmup": 1, "block": 4, "block_examples": 1000},
       "min_r2": 0.95, "agreement_factor": 10, "estimator_band": 1.5}


@pytest.fixture(autouse=True)
def one_thread():
    """As the pipeline's jobs run (threads: 1): many tiny backward passes on a shared machine are
    thirty times slower with two threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _net_and_data(n=24, seed=0):
    torch.manual_seed(seed)
    model = models.build({"arch": "mlp", "hidden": [5]}, (1, 6), 3).double()
    x = torch.randn(n, 1, 6, dtype=torch.float64)
    y = torch.randint(3, (n,))
    return model, x, y


def test_exact_noise_scale_matches_a_per_example_loop():
    model, x, y = _net_and_data()
    grads = []
    for i in range(len(x)):  # brute force: one backward pass per example
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    g = torch.stack(grads)
    mean = g.mean(0)
    g2 = float(mean @ mean)
    trace = float(((g - mean) ** 2).sum(1).mean())
    got = exact_g2, exact_trace, exact_b = exp.exact_noise(model, x, y)
    assert np.allclose(got, (g2, trace, trace / g2), rtol=1e-9)
    # in chunks (the full preset's sets) the same
    assert np.allclose(exp.noise_from_grads(exp.per_example_grads(model, x, y, chunk=5)), got, rtol=1e-9)
    assert exact_b > 0 and exact_g2 > 0 and exact_trace > 0


def test_two_batch_estimator_is_unbiased_on_a_quadratic():
    """l_i(theta) = |theta - x_i|^2 / 2: g_i = theta - x_i, so G = theta - mean(x) and
    Sigma = the covariance of the x_i (over the set) in closed form."""
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(500, 4)) * np.array([1.0, 2.0, 0.5, 3.0]), dtype=torch.float64)
    theta = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    mu = x.mean(0)
    g2_true = float((theta - mu) @ (theta - mu))
    trace_true = float(((x - mu) ** 2).sum(1).mean())
    # the exact estimator on the per-example gradients gives the closed form
    assert np.allclose(exp.noise_from_grads([theta - x]), (g2_true, trace_true, trace_true / g2_true))
    gen = torch.Generator().manual_seed(0)
    g2, trace, b = exp.two_batch(lambda idx: theta - x[idx].mean(0), len(x), 4, 64, 4000, gen)
    assert g2 == pytest.approx(g2_true, rel=0.05)
    assert trace == pytest.approx(trace_true, rel=0.05)
    assert b == pytest.approx(trace_true / g2_true, rel=0.08)
    with pytest.raises(ValueError, match="small < big"):
        exp.two_batch(lambda idx: theta - x[idx].mean(0), len(x), 64, 64, 1, gen)


def test_two_batch_on_a_network_agrees_with_exact():
    model, x, y = _net_and_data(n=200)
    _, _, exact_b = exp.exact_noise(model, x, y)
    gen = torch.Generator().manual_seed(1)
    _, _, b = exp.two_batch(exp.model_batch_grad(model, x, y), len(x), 4, 100, 1500, gen)
    assert b == pytest.approx(exact_b, rel=0.15)


def test_noise_columns_leave_training_state_alone():
    model, x, y = _net_and_data()
    before = [p.detach().clone() for p in model.parameters()]
    state = torch.random.get_rng_state()
    cols = exp.noise_columns(model, x, y, "cross_entropy", CFG["noise"], seed=3, step=10)
    assert set(cols) == set(exp.NOISE_COLUMNS) and all(math.isfinite(v) for v in cols.values())
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fit_recovers_the_formula_from_synthetic_data():
    sizes = np.array([8, 16, 32, 64, 128, 256, 512, 1024, 4000])
    steps = 70.0 * (1 + 120.0 / sizes)
    fit = exp.fit_steps(sizes, steps)
    assert fit["b_crit"] == pytest.approx(120.0, rel=1e-4) and fit["s_min"] == pytest.approx(70.0, rel=1e-4)
    assert fit["e_min"] == pytest.approx(70.0 * 120.0, rel=1e-3) and fit["r2"] == pytest.approx(1.0, abs=1e-9)
    assert not fit["at_bound"] and fit["n"] == len(sizes)
    # multiplicative noise: still close, R^2 below 1; a point that never reached the target is left out
    noisy = steps * np.exp(np.random.default_rng(0).normal(0, 0.05, len(sizes)))
    fit = exp.fit_steps(list(sizes) + [2], list(noisy) + [NEVER])
    assert fit["n"] == len(sizes) and 0.9 < fit["r2"] < 1 and fit["b_crit"] == pytest.approx(120, rel=0.25)
    # no knee in range (S falls as 1/B everywhere): B_crit runs to the search bound
    assert exp.fit_steps(sizes, 1e5 / sizes)["at_bound"]
    assert math.isnan(exp.fit_steps([8, 16], [10, 5])["b_crit"])  # two batch sizes: nothing to fit


def test_steps_to_target_interpolates_and_says_never():
    assert exp.steps_to_target([0, 10, 20], [2.3, 1.6, 1.2], 1.4) == pytest.approx(15.0)
    assert exp.steps_to_target([0, 10, 20], [2.3, 1.6, 1.5], 1.4) == NEVER
    assert exp.steps_to_target([0, 10], [1.0, 0.5], 1.4) == 0.0
    assert exp.noise_steps(200, 6, 10) == [0, 40, 80, 120, 160, 200]
    assert set(exp.noise_steps(150, 4, 10)) <= set(range(0, 151, 10))


def test_plan_tunes_each_batch_size_and_measures_noise_at_one():
    ctx = Context({"seeds": [0, 1]})
    runs = exp.runs(CFG, ctx)
    kinds = [(labels_of(r)["kind"], labels_of(r)["batch_size"], r["task"]) for r in runs]
    assert sum(k == "sweep" for k, _, _ in kinds) == 3 * 2                   # 3 sizes x 2 rates x 1 tuning seed
    assert {(b, t) for k, b, t in kinds if k == "run"} == {(8, "tuned"), (1437, "tuned"), (64, exp.ID)}
    assert {(b, t) for k, b, t in kinds if k == "timing"} == {(8, exp.ID), (64, exp.ID), (1437, exp.ID)}
    clocks = [r for r in runs if labels_of(r)["kind"] == "timing"]
    assert all(r["timing"] == CFG["timing"] and r["seed"] == 0 and exp.stage(r) == 1 and "noise" not in r
               for r in clocks)
    noise = [r for r in runs if r["task"] == exp.ID and "noise" in r]
    assert sorted(r["seed"] for r in noise) == [0, 1] and all(exp.stage(r) == 1 for r in noise)
    assert noise[0]["sweep"]["base"]["batch_size"] == 64 and tuning.sweep_of(noise[0]) == noise[0]["sweep"]
    assert all(not tuning.stage(r) for r in runs if labels_of(r)["kind"] == "sweep")
    with pytest.raises(ValueError, match="noise.batch_size"):
        exp.runs({**CFG, "noise": {**CFG["noise"], "batch_size": 16}}, ctx)
    with pytest.raises(ValueError, match="dataset.model.norm"):
        exp.runs({**CFG, "dataset": {"name": "digits", "model": {"arch": "mlp", "hidden": [8], "norm": "batch"}}}, ctx)
    with pytest.raises(ValueError, match="tuning seeds"):
        exp.runs({**CFG, "tuning": {"lrs": [0.3], "seeds": [1]}}, ctx)


def test_time_to_target_is_steps_times_the_median_time_per_update():
    """T(B) = S(B) x median time per update(B), on a hand-made table; the optimum is the smallest
    geometric mean over seeds among the batch sizes every seed brought to the target."""
    runs = [{"kind": "run", "seed": seed, "batch_size": b, "steps_to_target": s}
            for seed, (s8, s64, s512) in {0: (800, 120, 40), 1: (1250, 130, 50)}.items()
            for b, s in ((8, s8), (64, s64), (512, s512))]
    clock = [{"kind": "timing", "seed": 0, "batch_size": b, "time_per_update": t, "device": "cpu", "device_name": "x"}
             for b, ts in {8: (1e-3, 2e-3, 9e-3), 64: (2e-3, 3e-3, 2.5e-3), 512: (0.02, 0.01, 0.03)}.items() for t in ts]
    t = exp.time_to_target(pd.DataFrame(runs + clock))
    got = {(r.seed, r.batch_size): r.time_to_target for r in t.itertuples()}
    assert got[(0, 8)] == pytest.approx(800 * 2e-3) and got[(1, 8)] == pytest.approx(1250 * 2e-3)  # the median
    assert got[(0, 64)] == pytest.approx(120 * 2.5e-3) and got[(1, 512)] == pytest.approx(50 * 0.02)
    # geometric means: B=8 sqrt(1.6 x 2.5) = 2.0, B=64 sqrt(0.3 x 0.325) ~ 0.312, B=512 sqrt(0.8 x 1.0) ~ 0.894
    b, secs = exp.wall_clock_optimum(t)
    assert b == 64 and secs == pytest.approx(math.sqrt(0.3 * 0.325))
    # a batch size one seed never brought to the target is no candidate, however fast the other seed
    runs[3]["steps_to_target"] = NEVER                      # seed 1, batch 8
    runs[1]["steps_to_target"] = 1.0                        # seed 0, batch 64: T = 0.0025 s
    runs[4]["steps_to_target"] = NEVER                      # seed 1, batch 64
    t = exp.time_to_target(pd.DataFrame(runs + clock))
    assert t.loc[(t["seed"] == 1) & (t["batch_size"] == 64), "time_to_target"].item() == NEVER
    assert exp.wall_clock_optimum(t)[0] == 512
    assert math.isnan(exp.wall_clock_optimum(t[t["batch_size"] == 8])[0])


def test_timing_run_times_the_tuned_update(tmp_path):
    """A timing run at its sweep's choice: one row per timed block, the median in its summary."""
    from trainfail.training import data as data_mod

    ds = data_mod.load_digits(tmp_path)
    plain = {"seed": 0, "model": {"arch": "mlp", "hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.3},
             "batch_size": 64, "loss": "cross_entropy"}
    r = exp.time_updates(plain, ds, torch.device("cpu"), CFG["timing"])
    assert [row["repeat"] for row in r.rows] == [0, 1, 2] and all(row["block"] == 4 for row in r.rows)
    assert all(row["time_per_update"] > 0 for row in r.rows)
    assert r.summary["time_per_update"] == pytest.approx(np.median([row["time_per_update"] for row in r.rows]))
    with pytest.raises(ValueError, match="exactly one of 'noise' and 'timing'"):
        exp.execute({"task": exp.ID, "seed": 0, "sweep": {}}, None)


def _table(b_crit=100.0, s_min=60.0, b_simple=150.0, rises=True, device="cuda:0"):
    rows = []
    sizes = [8, 32, 128, 512, 4000]
    for seed in range(4):
        jitter = 1 + 0.02 * (seed - 1.5)
        for b in sizes:
            rows.append({"kind": "run", "batch_size": b, "seed": seed, "lr": 1.0, "budget": 200,
                         "steps_to_target": s_min * (1 + b_crit / b) * jitter, "train_loss": 1.3, "diverged": False})
        for i, step in enumerate([0, 40, 80, 120, 160, 200]):
            v = b_simple * (0.5 + 0.2 * i if rises else 1.5 - 0.2 * i) * jitter
            rows.append({"kind": "noise", "batch_size": 128, "seed": seed, "lr": 1.0, "budget": 200, "step": step,
                         "train_loss": 2.3 - 0.2 * i, "diverged": False, "b_simple": v,
                         "b_simple_two_batch": v * (1.1 if seed % 2 else 0.95)})
    for b in sizes:  # a GPU-like clock: an update costs about the same up to batch 512
        rows += [{"kind": "timing", "batch_size": b, "seed": 0, "time_per_update": (1e-3 + b * 1e-7) * f,
                  "device": device, "device_name": "a test device"} for f in (0.9, 1.0, 1.2)]
    return pd.DataFrame(rows)


def test_claims_follow_the_measurements():
    cfg = {**CFG, "budgets": [{"batch_size": b, "steps": 200} for b in (8, 32, 128, 512, 4000)],
           "noise": {**CFG["noise"], "batch_size": 128}}
    claims = {c["claim_id"]: c for c in exp.claims(_table(), cfg)}
    assert set(claims) == {"steps_fit_r2", exp.PRIMARY, "noise_scale_rises", "two_batch_agrees_with_exact",
                           "full_batch_reaches_target_sooner"}
    # T(4000) / T(8) = (S(4000) x 1.4 ms) / (S(8) x 1.0008 ms), the same on every seed (the jitter cancels)
    fast = claims["full_batch_reaches_target_sooner"]
    ratio = (1 + 100 / 4000) * 1.4e-3 / ((1 + 100 / 8) * 1.0008e-3)
    assert fast["value"] == pytest.approx(math.log10(ratio)) and fast["applicable"]
    # 512: 71.7 steps x 1.05 ms = 75 ms beats 4000: 61.5 steps x 1.4 ms = 86 ms: an optimum inside the range
    assert "wall-clock optimum on this device: B = 512" in fast["note"] and "a test device (cuda:0)" in fast["note"]
    on_cpu = {c["claim_id"]: c for c in exp.claims(_table(device="cpu"), cfg)}["full_batch_reaches_target_sooner"]
    assert not on_cpu["applicable"] and on_cpu["verdict_unadjusted"] == "inconclusive" and "not applicable" in on_cpu["note"]
    assert claims[exp.PRIMARY]["kind"] == "test" and claims[exp.PRIMARY]["direction"] == "within"
    assert claims[exp.PRIMARY]["threshold"] == pytest.approx(1.0) and claims[exp.PRIMARY]["paper_value"] == "within 10x"
    assert claims["steps_fit_r2"]["verdict_unadjusted"] == "reproduced" and claims["steps_fit_r2"]["value"] > 0.99
    assert claims["noise_scale_rises"]["value"] == pytest.approx(1.0)
    assert claims["two_batch_agrees_with_exact"]["kind"] == "check"
    assert claims["two_batch_agrees_with_exact"]["verdict_unadjusted"] == "equivalent"
    # the noise scale up to the target: the steps of batch 128 to the target bound the average
    assert claims[exp.PRIMARY]["verdict_unadjusted"] == "equivalent"   # within a factor of 10
    far = {c["claim_id"]: c for c in exp.claims(_table(b_simple=1e5, rises=False), cfg)}
    assert far[exp.PRIMARY]["verdict_unadjusted"] == "not_equivalent"
    assert far["noise_scale_rises"]["verdict_unadjusted"] == "not_reproduced"


def test_a_batch_size_that_never_reaches_the_target_is_named():
    t = _table()
    t.loc[(t["kind"] == "run") & (t["batch_size"] == 8) & (t["seed"] == 0), "steps_to_target"] = NEVER
    claims = {c["claim_id"]: c for c in exp.claims(t, CFG)}
    assert "batch sizes [8] did not reach the target" in claims["steps_fit_r2"]["note"]
    fits = exp.seed_fits(t)
    assert fits.loc[fits["seed"] == 0, "n"].item() == 4
