"""Runs trained together (trainfail.stack): each member against the same run trained alone."""

from __future__ import annotations

import math

import pytest
import torch

from trainfail import audit, data, models, records, runs, stack, train, tuning
from trainfail.config import run_id
from trainfail.context import RunEnv
from trainfail.plan import pack

CPU = torch.device("cpu")
SEEDS = (0, 1, 2)
# a short run: 512 digits, batch 32, 3 epochs = 48 updates, evaluated 4 times, logged 12 times
BASE = {"task": "train", "dataset": "digits", "model": {"arch": "mlp", "hidden": [16]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 32, "epochs": 3, "eval_points": 4, "log_points": 12}
LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "rmsprop": 0.003, "adam": 0.003,
      "adamw": 0.003, "radam": 0.003}


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return data.load("digits").subset(512)


def cell(settings: dict, seeds=SEEDS) -> list[dict]:
    return [{**settings, "seed": s} for s in seeds]


def rows(result: records.RunResult) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in result.rows]


def same(a: list[dict], b: list[dict]) -> bool:
    """Equal rows, NaN equal to NaN (a diverged run's losses)."""
    def key(rs):
        return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rs]
    return key(a) == key(b)


def assert_same_run(stacked: records.RunResult, alone: records.RunResult) -> None:
    """On the CPU a stacked member is the run trained alone, bit for bit."""
    assert stack.CPU_TOLERANCE == 0.0
    assert (stacked.diverged, stacked.diverged_step) == (alone.diverged, alone.diverged_step)
    assert [r["step"] for r in stacked.rows] == [r["step"] for r in alone.rows]
    assert same(rows(stacked), rows(alone))
    assert stacked.summary["steps_done"] == alone.summary["steps_done"]
    a, b = stacked.model.state_dict(), alone.model.state_dict()
    assert list(a) == list(b)
    for k in b:  # NaN where NaN (a diverged member's parameters)
        assert a[k].shape == b[k].shape and bool(((a[k] == b[k]) | (a[k].isnan() & b[k].isnan())).all()), k


def compare(settings: dict, ds, seeds=SEEDS) -> list[records.RunResult]:
    members = cell(settings, seeds)
    stacked = stack.train_stack(members, ds, CPU)
    for s, r in zip(members, stacked):
        assert_same_run(r, train.train(s, ds, CPU))
    return stacked


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("opt", sorted(LR))
def test_each_member_is_its_run_alone_for_every_optimizer(digits, opt, norm):
    compare({**BASE, "model": {**BASE["model"], "norm": norm}, "optimizer": {"name": opt, "lr": LR[opt]}}, digits)


@pytest.mark.parametrize("arch,norm,act", [("mlp", "layer", "tanh"), ("mlp", "group", "relu"), ("mlp", "weight", "sigmoid"),
                                           ("cnn", "none", "relu"), ("cnn", "batch", "relu"), ("cnn", "layer", "relu"),
                                           ("cnn", "group", "tanh"), ("cnn", "instance", "relu"),
                                           ("cnn", "weight", "linear")])
def test_every_norm_and_both_archs_stack(digits, arch, norm, act):
    model = {"arch": arch, "norm": norm, "activation": act, **({"channels": [4, 8]} if arch == "cnn" else {"hidden": [16, 16]})}
    compare({**BASE, "model": model, "optimizer": {"name": "momentum", "lr": 0.02}, "epochs": 2, "eval_points": 2}, digits)


def test_1d_convolutions_and_mse_loss_stack():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    ds = data.Dataset("seq", torch.randn(256, 2, 24, generator=g), torch.randn(256, generator=g),
                      torch.randn(64, 2, 24, generator=g), torch.randn(64, generator=g), 1)
    settings = {**BASE, "dataset": "seq", "loss": "mse", "model": {"arch": "cnn", "channels": [4, 8], "norm": "batch"},
                "optimizer": {"name": "adam", "lr": 0.003}, "epochs": 4}
    compare(settings, ds)


@pytest.mark.parametrize("model", [{"arch": "cnn", "channels": [4, 8], "norm": "group"},
                                   {"arch": "mlp", "hidden": [16], "norm": "layer"}])
def test_the_batched_gpu_forms_equal_the_loop_up_to_rounding(digits, model):
    """exact=False is what a GPU runs (a grouped convolution, one group norm for layer norm, one
    batched loss): here on the CPU it must agree with the loop to float32 rounding, and it does
    round differently (else `exact` would buy nothing)."""
    settings = {**BASE, "model": model, "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": 1}
    batched = stack.train_stack(cell(settings), digits, CPU, exact=False)
    alone = [train.train(s, digits, CPU) for s in cell(settings)]
    for a, b in zip(batched, alone):
        assert [r["step"] for r in a.rows] == [r["step"] for r in b.rows]
        for k in ("batch_loss", "grad_norm", "train_loss", "val_loss"):
            x = [r[k] for r in a.rows if k in r]
            assert x == pytest.approx([r[k] for r in b.rows if k in r], rel=1e-5), k
    assert not all(same(rows(a), rows(b)) for a, b in zip(batched, alone))


def test_a_batched_linear_layer_is_each_members_own_where_the_engine_batches_it_on_the_cpu():
    """stack.bmm_is_mm is a claim about torch's CPU kernels: where it says yes, a batched matmul
    (forward and backward) is bit for bit one linear layer per member; a new torch may break it."""
    import itertools

    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    S, batched = 3, 0
    for rows, n_in, n_out in itertools.product([1, 2, 7, 32, 256], [1, 2, 8, 64, 512], [1, 2, 10, 100]):
        if not stack.bmm_is_mm(rows, n_in, n_out):
            continue
        batched += 1
        x, w, b, g = (torch.randn(*shape) for shape in [(S, rows, n_in), (S, n_out, n_in), (S, n_out), (S, rows, n_out)])
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = torch.baddbmm(leaves[2].unsqueeze(1), leaves[0], leaves[1].transpose(1, 2))
        y.backward(g)
        for i in range(S):
            own = [t[i].clone().requires_grad_() for t in (x, w, b)]
            yi = F.linear(*own)
            yi.backward(g[i])
            assert torch.equal(yi, y[i]) and all(torch.equal(o.grad, t.grad[i]) for o, t in zip(own, leaves)), \
                (rows, n_in, n_out)
    assert batched > 30


def test_a_member_keeps_its_initialization_data_order_and_state_dict_keys(digits):
    members = cell({**BASE, "steps": 1, "optimizer": {"name": "sgd", "lr": 1e-30}, "model": {"arch": "cnn", "norm": "weight"}})
    stacked = stack.train_stack(members, digits, CPU)
    for s, r in zip(members, stacked):
        torch.manual_seed(s["seed"])
        built = models.build(s["model"], digits.input_shape, digits.num_classes).state_dict()
        state = r.model.state_dict()
        assert list(state) == list(built) and all(torch.equal(state[k], built[k]) for k in built)
    # different seeds: different first batches (each member draws its own permutation)
    assert len({r.rows[0]["batch_loss"] for r in stacked}) == len(SEEDS)


def test_early_stopping_is_per_member(digits):
    settings = {**BASE, "optimizer": {"name": "sgd", "lr": 0.3}, "epochs": 12, "eval_every": 4,
                "early_stop": {"patience": 1, "min_delta": 0.05}}
    stacked = compare(settings, digits, seeds=(0, 1, 2, 3, 4))
    stops = [r.rows[-1]["step"] for r in stacked]
    assert len(set(stops)) > 1 and min(stops) < 12 * (512 // 32)  # they stop at different steps


def test_a_diverging_member_stops_at_its_step_and_leaves_the_others_alone(digits):
    """At a rate on the edge of stability some seeds diverge and others do not (found here with
    the one-run loop): the stack must record each diverging member at the step the loop finds (a
    step between logged steps included) and train the others as if it had never been there."""
    seeds = (0, 1, 2, 3, 4)
    for lr in (1e4, 1e5, 1e6):
        settings = {**BASE, "optimizer": {"name": "sgd", "lr": lr}, "log_every": 7, "eval_points": 3}
        alone = [train.train(s, digits, CPU) for s in cell(settings, seeds)]
        if 0 < sum(r.diverged for r in alone) < len(seeds):
            break
    else:
        pytest.fail("no rate where some seeds diverge and others do not")
    stacked = stack.train_stack(cell(settings, seeds), digits, CPU)
    for a, b in zip(stacked, alone):
        assert_same_run(a, b)
    assert any(r.diverged_step % 7 for r in stacked if r.diverged)  # caught between logged steps
    finished = [s for s, r in zip(seeds, alone) if not r.diverged]
    without = stack.train_stack(cell(settings, finished), digits, CPU)
    for s, r in zip(finished, without):
        assert same(rows(r), rows(stacked[seeds.index(s)]))


def test_a_batched_stack_is_reproduced_bit_for_bit(digits):
    settings = {**BASE, "model": {"arch": "cnn", "channels": [4, 8], "norm": "batch"}, "epochs": 1}
    a, b = (stack.train_stack(cell(settings), digits, CPU, exact=False) for _ in range(2))
    assert all(same(rows(x), rows(y)) for x, y in zip(a, b))


def test_cells_and_what_is_not_stacked():
    runs_ = cell(BASE) + cell({**BASE, "batch_size": 64}) + [{**BASE, "seed": 9}]
    assert [len(c) for c in stack.cells(runs_)] == [4, 3]
    assert stack.why_not(cell(BASE)) is None
    assert "one run" in stack.why_not(cell(BASE, [0]))
    assert "own execute" in stack.why_not(cell({**BASE, "task": "generalization_gap"}))
    assert "noisy" in stack.why_not(cell({**BASE, "model": {"arch": "cnn", "norm": "noisy_batch"}}))
    assert stack.why_not(cell(tuning.tuned(BASE, [0.1, 0.3], [100], 0))) is None
    with pytest.raises(ValueError, match="differ only in the seed"):
        stack.train_stack([{**BASE, "seed": 0}, {**BASE, "seed": 1, "batch_size": 8}], None, CPU)


def test_the_plan_never_splits_a_cell():
    settings = cell(BASE, range(5)) + cell({**BASE, "epochs": 1}, range(2)) + cell({**BASE, "epochs": 2}, range(3))
    by_id = {run_id(s): s for s in settings}
    shards = pack(list(by_id), by_id, 4)
    assert [len(s) for s in shards] == [5, 5]  # whole cells until a shard holds at least 4 runs
    assert sorted(r for s in shards for r in s) == sorted(by_id)
    assert [len(s) for s in pack(list(by_id), by_id, 8)] == [10]
    assert [len(s) for s in pack(list(by_id), by_id, 1)] == [5, 2, 3]  # never a cell split


def test_a_shard_records_how_each_run_was_trained_and_the_audit_retrains_the_stack(tmp_path):
    torch.set_num_threads(1)
    results = tmp_path / "results"
    settings = {**BASE, "batch_size": 128, "epochs": 1, "save_model": True}
    alone = {**BASE, "task": "train", "seed": 5, "batch_size": 64, "epochs": 1}
    rows = runs.run_shard(cell(settings) + [alone], "cpu", results, tmp_path / "data")
    assert [r["status"] for r in rows] == ["trained"] * 4
    metas = [records.load_run(results, r["run_id"]).meta for r in rows]
    ids = [r["run_id"] for r in rows]
    for i, meta in enumerate(metas[:3]):
        assert meta["stack"] == {"stacked": True, "engine": stack.ENGINE, "exact": True, "members": ids[:3],
                                 "seeds": list(SEEDS), "index": i}
        assert runs.cell_of(meta) == cell(settings)
    assert metas[3]["stack"] == {"stacked": False, "reason": "a cell of one run"}
    record = records.load_run(results, ids[1])
    assert list(record.state_dict()) == list(models.build(settings["model"], (1, 8, 8), 10).state_dict())

    table = audit.audit_runs(results, ids, 4, 1e-4, "cpu", tmp_path / "data")
    assert table["match"].all() and (table["max_abs_diff"] == 0).all()

    runs.run_shard(cell({**settings, "epochs": 2}), "cpu", results, tmp_path / "data", stacked=False)
    off = records.load_run(results, run_id({**settings, "epochs": 2, "seed": 0})).meta["stack"]
    assert off == {"stacked": False, "reason": "stacking turned off (stack: false)"}


def test_a_layer_the_stack_does_not_know_falls_back_to_the_loop(tmp_path, monkeypatch):
    from torch import nn

    monkeypatch.setattr(models, "activation", lambda name: nn.GELU())
    torch.set_num_threads(1)
    rows = runs.run_shard(cell({**BASE, "batch_size": 128, "epochs": 1}), "cpu", tmp_path, tmp_path / "data")
    meta = records.load_run(tmp_path, rows[0]["run_id"]).meta
    assert meta["stack"]["stacked"] is False and "GELU" in meta["stack"]["reason"]


def test_a_resumed_shard_stacks_only_the_runs_it_still_needs(tmp_path):
    torch.set_num_threads(1)
    results = tmp_path / "results"
    settings = cell({**BASE, "batch_size": 128, "epochs": 1}, (0, 1, 2, 3))
    runs.run_shard(settings[:1], "cpu", results, tmp_path / "data")
    rows = runs.run_shard(settings, "cpu", results, tmp_path / "data", tmp_path / "shard.json")
    assert [r["status"] for r in rows] == ["reused", "trained", "trained", "trained"]
    assert records.load_run(results, rows[1]["run_id"]).meta["stack"]["seeds"] == [1, 2, 3]


def test_tuned_runs_of_an_arm_are_stacked_at_the_chosen_rate(tmp_path):
    torch.set_num_threads(1)
    env = RunEnv(CPU, tmp_path / "data", tmp_path / "results" / "data")
    base = {k: v for k, v in BASE.items() if k != "task"} | {"batch_size": 64, "steps": 30}
    settings = tuning.plan(base, [0.001, 0.3], [100], [0, 1])
    runs.run_shard(settings[:2], "cpu", tmp_path / "results", tmp_path / "data")
    metas = runs.run_cell(settings[2:], env, tmp_path / "results")
    assert all(m["stack"]["stacked"] for m in metas)
    tuned = [records.load_run(tmp_path / "results", m["run_id"]) for m in metas]
    assert [t.summary["lr"] for t in tuned] == [0.3, 0.3]
    alone = runs.run_one(tuning.with_lr(base, 0.3, 1), env, tmp_path / "results")
    assert records.load_run(tmp_path / "results", alone["run_id"]).metrics.drop(columns="wall_time").equals(
        tuned[1].metrics.drop(columns="wall_time"))
