"""Runs trained together (trainfail.training.stack): each member against the same run trained alone."""

from __future__ import annotations

import math

import pytest
import torch

from trainfail.core import run_record, store
from trainfail.pipeline import audit, execution
from trainfail.training import data, models, stack, train, tuning
from trainfail.core.config import run_id
from trainfail.core.run_settings import complete
from trainfail.training.context import RunEnv
from trainfail.pipeline.plan import pack

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
    """The runs of a cell, completed with their defaults as the plan completes them."""
    return [complete({**settings, "seed": s}) for s in seeds]


def rows(result: run_record.RunResult) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in result.rows]


def same(a: list[dict], b: list[dict]) -> bool:
    """Equal rows, NaN equal to NaN (a diverged run's losses)."""
    def key(rs):
        return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rs]
    return key(a) == key(b)


EXACT_HERE = "this CPU's batched kernels sum in another order than one run's (stack.exact_here() is false)"


def assert_own_function(stacked_row: dict, alone_row: dict) -> None:
    """Every CPU: before its first update a member's losses and gradient norm are its run's alone
    to rounding (stack.FORWARD_TOLERANCE, GRADIENT_TOLERANCE)."""
    assert stacked_row["step"] == alone_row["step"] == 0
    for k in ("batch_loss", "train_loss", "val_loss"):
        if k in alone_row:
            assert stacked_row[k] == pytest.approx(alone_row[k], rel=stack.FORWARD_TOLERANCE), k
    assert stacked_row["grad_norm"] == pytest.approx(alone_row["grad_norm"], rel=stack.GRADIENT_TOLERANCE)


def assert_same_run(stacked: run_record.RunResult, alone: run_record.RunResult) -> None:
    """On every CPU a stacked member computes its own run's function (its first row); where this
    CPU's kernels agree (stack.exact_here), it is the run trained alone, bit for bit."""
    assert_own_function(stacked.rows[0], alone.rows[0])
    if stack.exact_here():
        assert stack.same_result(stacked, alone)
        assert stacked.summary["steps_done"] == alone.summary["steps_done"]


def compare(settings: dict, ds, seeds=SEEDS) -> list[run_record.RunResult]:
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
                                           ("cnn", "weight", "linear"), ("mlp", "noisy_batch", "relu"),
                                           ("cnn", "noisy_batch", "relu")])
def test_every_norm_and_both_archs_stack(digits, arch, norm, act):
    model = {"arch": arch, "norm": norm, "activation": act, **({"channels": [4, 8]} if arch == "cnn" else {"hidden": [16, 16]})}
    compare({**BASE, "model": model, "optimizer": {"name": "momentum", "lr": 0.02}, "epochs": 2, "eval_points": 2}, digits)


@pytest.mark.parametrize("noise", ["per_example", "per_channel"])
@pytest.mark.parametrize("exact", [True, False])
def test_noisy_batch_norm_stacks_each_member_with_its_own_noise(digits, noise, exact):
    """Each member draws its noise from its own generators, seeded from its seed (models.noise_seed_for)
    as in its run alone: exact, the member is its run alone (bit for bit where exact_here()); batched
    (stack_exact: false), to float32 rounding over a few updates. The noise is the member's own: its
    trajectory is not another member's, and draws from the global stream between the runs alone
    change nothing."""
    settings = {**BASE, "model": {"arch": "cnn", "channels": [4, 8], "norm": "noisy_batch", "noise": noise,
                                  "noise_magnitude": 0.5}, "optimizer": {"name": "momentum", "lr": 0.02}, "steps": 12,
                "eval_points": 2, "log_points": 12}
    assert stack.why_not(cell(settings)) is None
    members = cell(settings)
    stacked = stack.train_stack(members, digits, CPU, exact=exact)
    alone = []
    for s in members:
        torch.manual_seed(12345 + s["seed"])  # the global stream elsewhere: the noise does not read it
        torch.rand(7)
        alone.append(train.train(s, digits, CPU))
    for a, b in zip(stacked, alone):
        assert_own_function(a.rows[0], b.rows[0])
        for k in ("batch_loss", "grad_norm", "train_loss", "val_loss"):
            x, y = [r[k] for r in a.rows if k in r], [r[k] for r in b.rows if k in r]
            assert x == pytest.approx(y, rel=1e-3, abs=1e-5), k
        if exact and stack.exact_here():
            assert stack.same_result(a, b)
    assert stacked[0].rows[1]["batch_loss"] != stacked[1].rows[1]["batch_loss"]
    # without the noise the runs are other runs: the noise is in the numbers compared above
    quiet = train.train(complete({**settings, "model": {**settings["model"], "noise_magnitude": 0.0}, "seed": 0}), digits, CPU)
    assert quiet.rows[-1]["train_loss"] != pytest.approx(alone[0].rows[-1]["train_loss"], rel=1e-3)


@pytest.mark.parametrize("batch_size", [512, 100, 1000])
def test_full_batch_and_ragged_batches_stack(digits, batch_size):
    """The batch shapes the presets use beyond the tests above: the full batch (512 of 512 examples),
    a batch that leaves a ragged remainder (100: 12 examples dropped each epoch), and a batch larger
    than the set (clipped to the full batch)."""
    compare({**BASE, "batch_size": batch_size, "optimizer": {"name": "momentum", "lr": 0.1}, "epochs": 6}, digits)


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
        assert_own_function(a.rows[0], b.rows[0])
        if stack.exact_here():  # elsewhere the loop itself rounds otherwise, and training amplifies it
            for k in ("batch_loss", "grad_norm", "train_loss", "val_loss"):
                x = [r[k] for r in a.rows if k in r]
                assert x == pytest.approx([r[k] for r in b.rows if k in r], rel=1e-5), k
    assert not all(same(rows(a), rows(b)) for a, b in zip(batched, alone))


# stack_exact: false on the CPU: grouped convolutions (and every other layer batched) against the
# member-by-member forms, which are each member's run alone (bit for bit where exact_here()).
GROUPED_NETS = [{"arch": "cnn", "channels": [4, 8], "norm": n} for n in ("none", "batch", "group", "instance", "layer",
                                                                          "weight", "noisy_batch")]


def _stacked_pair(ds, model: dict, seeds=SEEDS):
    """The same members as two StackedNets: exact (member by member) and grouped (batched)."""
    from trainfail.core.provenance import make_deterministic

    members = []
    for s in seeds:
        make_deterministic(s)
        members.append(models.build(model, ds.input_shape, ds.num_classes, seed=s))  # as train_stack builds them
    return stack.StackedNet(members, exact=True), stack.StackedNet(members, exact=False)


@pytest.mark.parametrize("model", GROUPED_NETS, ids=lambda m: m["norm"])
def test_grouped_convolutions_agree_with_member_by_member_to_float32_rounding(digits, model):
    """One forward and backward on each member's own batch: outputs, per-member losses, every
    gradient and the batch norms' running statistics (per member) of the grouped forms equal the
    member-by-member ones to float32 rounding; a member that read another's channels would be off
    by O(1). Then evaluation on the whole set (one pass for all members against each member alone)."""
    exact, grouped = _stacked_pair(digits, model)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, digits.n_train, (len(SEEDS), 16), generator=g)
    x, y = digits.x_train[idx], digits.y_train[idx]
    outs, grads = [], []
    for net in (exact, grouped):
        out = net(x)
        losses = stack.member_losses(out, y, "cross_entropy", net.exact)
        losses.sum().backward()
        outs.append((out.detach(), losses.detach()))
        grads.append({k: p.grad for k, p in net.params.items()})
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-5, atol=1e-6)
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-3, atol=1e-5, msg=k)
    for k in exact.buffers:
        torch.testing.assert_close(grouped.buffers[k], exact.buffers[k], rtol=1e-5, atol=1e-6, msg=k)
    assert stack.grad_norms(grouped) == pytest.approx(stack.grad_norms(exact), rel=1e-4)
    ev_exact, ev_grouped = exact.evaluate(digits.x_test, digits.y_test, "cross_entropy"), \
        grouped.evaluate(digits.x_test, digits.y_test, "cross_entropy")
    for (l1, a1), (l2, a2) in zip(ev_exact, ev_grouped):
        assert l2 == pytest.approx(l1, rel=1e-5) and abs(a2 - a1) <= 2 / len(digits.y_test)  # an argmax tie at most
    # the members differ (else agreement would be cheap): different seeds, different outputs
    assert not torch.allclose(outs[0][0][0], outs[0][0][1], atol=1e-3)


@pytest.mark.parametrize("model", GROUPED_NETS[:3] + [{"arch": "cnn", "channels": [4, 8], "norm": "layer"}],
                         ids=lambda m: m["norm"])
def test_grouped_training_trajectories_stay_within_float32_rounding_of_the_exact_stack(digits, model):
    """A few updates (16, SGD with momentum): every logged number of the grouped stack within 1e-3
    (relative) of the exact stack's, member by member; the members keep their own trajectories."""
    settings = {**BASE, "model": model, "optimizer": {"name": "momentum", "lr": 0.02}, "steps": 16,
                "eval_points": 2, "log_points": 16}
    exact = stack.train_stack(cell(settings), digits, CPU, exact=True)
    grouped = stack.train_stack(cell(settings), digits, CPU, exact=False)
    for a, b in zip(grouped, exact):
        assert [r["step"] for r in a.rows] == [r["step"] for r in b.rows]
        for k in ("batch_loss", "grad_norm", "train_loss", "val_loss", "train_acc", "val_acc"):
            x, y = [r[k] for r in a.rows if k in r], [r[k] for r in b.rows if k in r]
            assert x == pytest.approx(y, rel=1e-3, abs=1e-5), k
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert list(sa) == list(sb)
        for k in sb:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-3, atol=1e-5, msg=k)
    assert grouped[0].rows[0]["batch_loss"] != grouped[1].rows[0]["batch_loss"]  # members: their own runs


def test_the_probe_says_no_where_a_stack_rounds_otherwise(monkeypatch):
    """exact_here() is what gates the bit-for-bit tests: it must be able to say no. The batched
    forms (exact off) round otherwise than one run, as another CPU's kernels do."""
    stack.exact_here.cache_clear()
    monkeypatch.setattr(stack, "exact_on", lambda device: False)
    try:
        assert stack.exact_here() is False
    finally:
        stack.exact_here.cache_clear()


@pytest.mark.slow
def test_members_are_their_runs_under_another_cpus_kernels(tmp_path):
    """What holds on every CPU, tested against other kernels than this CPU's: the same runs trained
    alone in a process that takes MKL's compatible code branch, ATen's default (unvectorised
    dispatch) capability and oneDNN capped at SSE4.1, against the stack trained here. Their first
    rows agree within stack.FORWARD_TOLERANCE and GRADIENT_TOLERANCE for every optimizer, norm and
    arch of the tests above."""
    import json
    import os
    import subprocess
    import sys

    torch.set_num_threads(1)
    configs = [{**BASE, "model": {**BASE["model"], "norm": norm}, "optimizer": {"name": opt, "lr": LR[opt]}, "steps": 1}
               for opt in sorted(LR) for norm in ("none", "batch")]
    configs += [{**BASE, "model": {"arch": arch, "norm": norm, "activation": "relu",
                                   **({"channels": [4, 8]} if arch == "cnn" else {"hidden": [16, 16]})},
                 "optimizer": {"name": "momentum", "lr": 0.02}, "steps": 1}
                for arch, norms in (("mlp", ("layer", "group", "weight", "noisy_batch")),
                                    ("cnn", ("none", "batch", "layer", "group", "instance", "weight", "noisy_batch")))
                for norm in norms]
    (tmp_path / "runs.json").write_text(json.dumps([cell(c) for c in configs]))
    script = ("import json, sys, torch\n"
              "from trainfail.training import data, train\n"
              "torch.set_num_threads(1)\n"
              "ds = data.load('digits').subset(512)\n"
              "cells = json.load(open(sys.argv[1]))\n"
              "rows = [[train.train(s, ds, torch.device('cpu')).rows[0] for s in c] for c in cells]\n"
              "json.dump(rows, open(sys.argv[2], 'w'))\n")
    other = {**os.environ, "MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
    subprocess.run([sys.executable, "-c", script, tmp_path / "runs.json", tmp_path / "rows.json"], env=other,
                   check=True, timeout=300)
    theirs = json.loads((tmp_path / "rows.json").read_text())
    ds = data.load("digits").subset(512)
    for c, rows_alone in zip(configs, theirs):
        for member, alone_row in zip(stack.train_stack(cell(c), ds, CPU), rows_alone):
            assert_own_function(member.rows[0], alone_row)


def test_a_batched_linear_layer_is_each_members_own_where_the_engine_batches_it_on_the_cpu():
    """stack.bmm_is_mm is a claim about torch's CPU kernels: where it says yes, a batched matmul
    (forward and backward) is bit for bit one linear layer per member; a new torch may break it.
    Where the probe says this CPU's kernels do not agree, the rule has nothing to hold to."""
    import itertools

    if not stack.exact_here():
        pytest.skip(EXACT_HERE)

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
    steps = train.total_steps(settings, 512)[0]
    for r in stacked:  # every CPU: the members that do not diverge train to the end, finite
        if r.diverged:
            assert 0 <= r.diverged_step <= r.rows[-1]["step"] <= steps
        else:
            assert r.rows[-1]["step"] == steps and math.isfinite(r.rows[-1]["train_loss"])
    if not stack.exact_here():
        return  # which seeds diverge at the edge of stability is a matter of rounding
    assert any(r.diverged_step % 7 for r in stacked if r.diverged)  # caught between logged steps
    finished = [s for s, r in zip(seeds, alone) if not r.diverged]
    without = stack.train_stack(cell(settings, finished), digits, CPU)
    for s, r in zip(finished, without):
        assert same(rows(r), rows(stacked[seeds.index(s)]))


@pytest.mark.parametrize("exact", [True, False])
def test_a_stack_is_reproduced_bit_for_bit_on_any_cpu(digits, exact):
    """A stack against its own rerun: the same kernels by construction, so bit for bit everywhere."""
    settings = {**BASE, "model": {"arch": "cnn", "channels": [4, 8], "norm": "batch"}, "epochs": 1,
                "optimizer": {"name": "adam", "lr": 0.003}}
    a, b = (stack.train_stack(cell(settings), digits, CPU, exact=exact) for _ in range(2))
    assert all(stack.same_result(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("settings", [
    {**BASE, "model": {**BASE["model"], "norm": "batch"}, "optimizer": {"name": "adam", "lr": 0.003},
     "schedule": {"name": "warmup_cosine", "warmup_steps": 5}, "steps": 40, "eval_every": 7, "log_every": 3,
     "batch_size": 50, "seed": 4},
    {**BASE, "optimizer": {"name": "sgd", "lr": 1e-9}, "epochs": 20, "eval_every": 5,
     "early_stop": {"patience": 2, "min_delta": 1e-3}, "seed": 4}])
def test_a_run_alone_is_the_one_member_case_of_the_loop(digits, settings):
    """train.train and stack.train_stack are one loop, train.run: a run alone is its one-member
    case on the run's own module, a stack its S-member case on a StackedNet. So a stack of one run
    reads the settings (schedule, length, evaluation and logging points, batch size, early
    stopping) as the run alone does: the same rows, bit for bit where exact_here()."""
    settings = complete(settings)
    alone = train.train(settings, digits, CPU)
    [one] = stack.train_stack([settings], digits, CPU)
    assert [r["step"] for r in one.rows] == [r["step"] for r in alone.rows]
    assert [r["lr"] for r in one.rows] == [r["lr"] for r in alone.rows]
    assert_same_run(one, alone)
    with pytest.raises(ValueError, match="hooks"):  # hooks get a run's own module: a run alone only
        train.run([settings], digits, CPU, stack.StackedNet([one.model]), on_eval=lambda m, step: {})


def test_cells_and_what_is_not_stacked():
    runs_ = cell(BASE) + cell({**BASE, "batch_size": 64}) + cell(BASE, [9])
    assert [len(c) for c in stack.cells(runs_)] == [4, 3]
    assert stack.why_not(cell(BASE)) is None
    assert "one run" in stack.why_not(cell(BASE, [0]))
    assert "own execute" in stack.why_not([{**BASE, "task": "generalization_gap", "seed": s} for s in SEEDS])
    assert stack.why_not(cell({**BASE, "model": {"arch": "cnn", "norm": "noisy_batch"}})) is None
    body = {k: v for k, v in BASE.items() if k != "task"}
    assert stack.why_not([complete(tuning.tuned(body, [0.1, 0.3], [100], s)) for s in SEEDS]) is None
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
    alone = complete({**BASE, "task": "train", "seed": 5, "batch_size": 64, "epochs": 1})
    rows = execution.run_shard(cell(settings) + [alone], "cpu", results, tmp_path / "data")
    assert [r["status"] for r in rows] == ["trained"] * 4
    metas = [run_record.load_run(results, r["run_id"]).meta for r in rows]
    ids = [r["run_id"] for r in rows]
    for i, meta in enumerate(metas[:3]):
        assert meta["stack"] == {"stacked": True, "engine": stack.ENGINE, "exact": True, "members": ids[:3],
                                 "seeds": list(SEEDS), "index": i}
        assert execution.cell_of(meta) == cell(settings)
    assert metas[3]["stack"] == {"stacked": False, "reason": "a cell of one run"}
    record = run_record.load_run(results, ids[1])
    assert list(record.state_dict()) == list(models.build(settings["model"], (1, 8, 8), 10).state_dict())

    table = audit.audit_runs(results, ids, 4, 1e-4, "cpu", tmp_path / "data")
    assert table["match"].all() and (table.query("check == 'rerun'")["max_abs_diff"] == 0).all()
    assert table["check"].tolist().count(audit.ALONE) == 1  # the canary: one stacked run, alone

    execution.run_shard(cell({**settings, "epochs": 2}), "cpu", results, tmp_path / "data", stacked=False)
    off = run_record.load_run(results, run_id(complete({**settings, "epochs": 2, "seed": 0}))).meta["stack"]
    assert off == {"stacked": False, "reason": "stacking turned off (stack: false)"}


def test_a_layer_the_stack_does_not_know_falls_back_to_the_loop(tmp_path, monkeypatch):
    from torch import nn

    monkeypatch.setattr(models, "activation", lambda name: nn.GELU())
    torch.set_num_threads(1)
    rows = execution.run_shard(cell({**BASE, "batch_size": 128, "epochs": 1}), "cpu", tmp_path, tmp_path / "data")
    meta = run_record.load_run(tmp_path, rows[0]["run_id"]).meta
    assert meta["stack"]["stacked"] is False and "GELU" in meta["stack"]["reason"]


def test_a_retrained_run_is_trained_in_its_whole_cell_as_in_a_fresh_tree(tmp_path):
    """A run's numbers do not depend on what was on disk: a deleted run is retrained in its whole
    stack (only it is stored), so it is bit for bit the fresh tree's run on any CPU."""
    import shutil

    torch.set_num_threads(1)
    results = tmp_path / "results"
    settings = cell({**BASE, "batch_size": 128, "epochs": 1}, (0, 1, 2, 3))
    fresh = execution.run_shard(settings, "cpu", results, tmp_path / "data")
    before = run_record.load_run(results, fresh[1]["run_id"])
    untouched = (execution.run_dir(results, fresh[0]["run_id"]) / "meta.json").read_bytes()
    shutil.rmtree(execution.run_dir(results, fresh[1]["run_id"]))
    rows = execution.run_shard(settings, "cpu", results, tmp_path / "data", tmp_path / "shard.json")
    assert [r["status"] for r in rows] == ["reused", "trained", "reused", "reused"]
    after = run_record.load_run(results, rows[1]["run_id"])
    assert after.metrics.drop(columns="wall_time").equals(before.metrics.drop(columns="wall_time"))
    assert after.meta["stack"] == before.meta["stack"]  # the same four members
    assert (execution.run_dir(results, fresh[0]["run_id"]) / "meta.json").read_bytes() == untouched  # not rewritten


def test_a_run_trained_otherwise_than_the_shard_trains_it_now_is_trained_again(tmp_path):
    """Seeds added to a cell, or `stack` switched: the stored runs were trained in another stack (or
    alone), so they are trained again as the shard trains them; the same shard again reuses all."""
    torch.set_num_threads(1)
    results = tmp_path / "results"
    settings = cell({**BASE, "batch_size": 128, "epochs": 1}, (0, 1, 2, 3))
    execution.run_shard(settings[:2], "cpu", results, tmp_path / "data")  # a stack of two
    rows = execution.run_shard(settings, "cpu", results, tmp_path / "data")
    assert [r["status"] for r in rows] == ["trained"] * 4
    assert run_record.load_run(results, rows[0]["run_id"]).meta["stack"]["seeds"] == [0, 1, 2, 3]
    assert [r["status"] for r in execution.run_shard(settings, "cpu", results, tmp_path / "data")] == ["reused"] * 4
    off = execution.run_shard(settings, "cpu", results, tmp_path / "data", stacked=False)
    assert [r["status"] for r in off] == ["trained"] * 4
    assert [r["status"] for r in execution.run_shard(settings, "cpu", results, tmp_path / "data", stacked=False)] \
        == ["reused"] * 4
    assert execution.trained_as({"stack": {"stacked": False, "reason": "GELU", "not_stackable": True}}, settings, True)


def test_stack_exact_false_is_recorded_retrained_on_a_switch_and_audited_to_its_stated_tolerance(tmp_path):
    """stack_exact: false (grouped convolutions on the CPU): meta.json says exact false; switching the
    key trains the cell again (a tree never mixes the two); the audit reruns the stack as it was
    (bit for bit) and its canary compares the first row to GRADIENT_TOLERANCE, saying so, and still
    catches a doctored run."""
    torch.set_num_threads(1)
    results = tmp_path / "results"
    settings = cell({**BASE, "model": {"arch": "cnn", "channels": [4, 8], "norm": "batch"}, "batch_size": 128,
                     "epochs": 1})
    rows = execution.run_shard(settings, "cpu", results, tmp_path / "data", exact=False)
    ids = [r["run_id"] for r in rows]
    assert all(run_record.load_run(results, r).meta["stack"]["exact"] is False for r in ids)
    assert [r["status"] for r in execution.run_shard(settings, "cpu", results, tmp_path / "data", exact=False)] \
        == ["reused"] * 3
    table = audit.audit_runs(results, ids[:1], 1, 1e-4, "cpu", tmp_path / "data")
    assert table["check"].tolist() == [audit.RERUN, audit.ALONE] and table["match"].all()
    assert table["max_abs_diff"].iloc[0] == 0  # the rerun with its stack, grouped again: the same kernels
    canary = table.set_index("check").loc[audit.ALONE]
    assert canary["tolerance"] == stack.GRADIENT_TOLERANCE and canary["rows"] == 1
    assert "stack_exact: false" in canary["note"] and f"{stack.GRADIENT_TOLERANCE:g}" in canary["note"]
    path = execution.run_dir(results, ids[0]) / "metrics.csv"
    doctored = store.read_table(path)
    doctored.loc[doctored.index[0], "batch_loss"] *= 1.01
    store.write_table(doctored, path)
    table = audit.audit_runs(results, ids[:1], 1, 1e-4, "cpu", tmp_path / "data")
    assert not table["match"].any()
    exact = execution.run_shard(settings, "cpu", results, tmp_path / "data")  # stack_exact: true again
    assert [r["status"] for r in exact] == ["trained"] * 3
    assert run_record.load_run(results, ids[1]).meta["stack"]["exact"] is True


def test_the_audits_canary_trains_a_stacked_run_alone_and_fails_on_a_perturbed_run(tmp_path):
    torch.set_num_threads(1)
    results = tmp_path / "results"
    rows = execution.run_shard(cell({**BASE, "batch_size": 128, "epochs": 1}), "cpu", results, tmp_path / "data")
    ids = [r["run_id"] for r in rows]
    table = audit.audit_runs(results, ids[:1], 1, 1e-4, "cpu", tmp_path / "data")
    assert table["check"].tolist() == [audit.RERUN, audit.ALONE] and table["match"].all()
    assert table["max_abs_diff"].iloc[0] == 0  # the rerun with its stack: the same kernels
    path = execution.run_dir(results, ids[0]) / "metrics.csv"
    doctored = store.read_table(path)
    doctored.loc[doctored.index[0], "batch_loss"] *= 1.01  # the first row: what the canary reads on any CPU
    store.write_table(doctored, path)
    table = audit.audit_runs(results, ids[:1], 1, 1e-4, "cpu", tmp_path / "data")
    assert not table["match"].any() and "batch_loss" in table.set_index("check").loc[audit.ALONE, "note"]


def test_tuned_runs_of_an_arm_are_stacked_at_the_chosen_rate(tmp_path):
    torch.set_num_threads(1)
    env = RunEnv(CPU, tmp_path / "data", tmp_path / "results" / "data", tmp_path / "results")
    base = {k: v for k, v in BASE.items() if k != "task"} | {"batch_size": 64, "steps": 30}
    settings = [complete(s) for s in tuning.plan(base, [0.001, 0.3], [100], [0, 1])]
    execution.run_shard(settings[:2], "cpu", tmp_path / "results", tmp_path / "data")
    choice = tuning.tune(tmp_path / "results", tuning.sweep_of(settings[2]))  # the sweep's tune job
    metas = execution.run_cell(settings[2:], env, tmp_path / "results")
    assert all(m["stack"]["stacked"] for m in metas)
    assert all(m["choice"] == tuning.choice_record(choice) for m in metas)  # one choice read for the stack
    tuned = [run_record.load_run(tmp_path / "results", m["run_id"]) for m in metas]
    assert [t.summary["lr"] for t in tuned] == [0.3, 0.3]
    alone = execution.run_one(complete(tuning.with_lr(base, 0.3, 1)), env, tmp_path / "results")
    alone = run_record.load_run(tmp_path / "results", alone["run_id"]).metrics.drop(columns="wall_time")
    assert_own_function(tuned[1].metrics.iloc[0].to_dict(), alone.iloc[0].to_dict())
    if stack.exact_here():
        assert alone.equals(tuned[1].metrics.drop(columns="wall_time"))


# --- rate stacks (stack_exact: false): runs that differ in rate, one stack -------------------------

def rate_cell(settings: dict, rates, seeds=(0, 1)) -> list[dict]:
    """A sweep's runs: every rate on every seed."""
    return [s for lr in rates for s in cell({**settings, "optimizer": {**settings["optimizer"], "lr": lr}}, seeds)]


@pytest.mark.parametrize("opt", sorted(LR))
def test_a_rate_stack_member_moves_as_at_its_own_rate(digits, opt):
    """One optimizer at the largest rate, each member's move scaled by its rate over it
    (optim.RATE_LINEAR): every member's losses equal its seed stack's at its own rate to float32
    rounding (measured: 1e-7 relative after 48 updates; bounded at 1e-4 for any CPU), with a
    schedule, and its rows record its own rate (the schedule's factor on it)."""
    assert opt in stack.optim.RATE_LINEAR
    settings = {**BASE, "optimizer": {"name": opt, "lr": LR[opt], "weight_decay": 1e-3},
                "schedule": {"name": "warmup_cosine", "warmup_steps": 5}}
    rates = [LR[opt] / 3, LR[opt], LR[opt] * 2]
    runs_ = rate_cell(settings, rates)
    assert [len(c) for c in stack.cells(runs_, rates=True)] == [6] and len(stack.cells(runs_)) == 3
    together = stack.train_stack(runs_, digits, CPU, exact=False)
    for i in range(len(rates)):
        alone = stack.train_stack(runs_[2 * i:2 * i + 2], digits, CPU, exact=False)
        for a, b in zip(together[2 * i:2 * i + 2], alone):
            assert [r["lr"] for r in a.rows] == [r["lr"] for r in b.rows]
            assert [r["step"] for r in a.rows] == [r["step"] for r in b.rows]
            for ra, rb in zip(a.rows, b.rows):
                for k in ("batch_loss", "train_loss", "val_loss"):
                    if k in rb:
                        assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), (k, ra["step"])


def test_a_rate_stack_is_inexact_only_and_a_diverging_rate_leaves_the_others_alone(digits):
    """An exact stack never mixes rates (a scaled move is not bit for bit the run's); in a rate stack a
    member that diverges at a huge rate stops, and the others train to the end as in their own stack."""
    runs_ = rate_cell(BASE, [0.1, 1e20])  # 1e20: every seed overflows at its first update
    with pytest.raises(ValueError, match="differ only in the seed"):
        stack.train_stack(runs_, digits, CPU, exact=True)
    assert stack.why_not(runs_) is None  # the same seeds at two rates are four runs
    assert "share a seed" in stack.why_not(runs_[:2] + runs_[:1])
    together = stack.train_stack(runs_, digits, CPU, exact=False)
    assert [r.diverged for r in together] == [False, False, True, True]
    for a, b in zip(together[:2], stack.train_stack(runs_[:2], digits, CPU, exact=False)):
        assert [r["train_loss"] for r in a.rows if "train_loss" in r] == \
            pytest.approx([r["train_loss"] for r in b.rows if "train_loss" in r], rel=1e-4)
    # an experiment's own task is never rate-stacked; a large network keeps one cell per rate (RATE_STACK_BYTES)
    assert stack.rate_of({**runs_[0], "task": "generalization_gap"}) is None
    big = rate_cell({**BASE, "model": {"arch": "mlp", "hidden": [4096] * 8}, "batch_size": 4096}, [0.1, 0.3])
    assert [len(c) for c in stack.cells(big, rates=True)] == [2, 2]
    assert stack.rate_stacks(True, False) and not stack.rate_stacks(True, True) and not stack.rate_stacks(False, False)


def test_a_shard_trains_a_sweep_as_one_rate_stack_and_the_audit_retrains_it(tmp_path):
    """A shard with stack_exact false trains a sweep's rates and seeds as one stack, records every
    member's rate (meta.json's stack.lrs), from which cell_of rebuilds the stack: the audit's rerun
    is bit for bit; with stack_exact true the same runs are trained again, one cell per rate."""
    torch.set_num_threads(1)
    results = tmp_path / "results"
    runs_ = rate_cell({**BASE, "epochs": 1}, [0.03, 0.1, 0.3])
    rows = execution.run_shard(runs_, "cpu", results, tmp_path / "data", exact=False)
    ids = [r["run_id"] for r in rows]
    metas = [run_record.load_run(results, r).meta for r in ids]
    assert all(m["stack"]["members"] == ids and m["stack"]["lrs"] == [0.03, 0.03, 0.1, 0.1, 0.3, 0.3] for m in metas)
    assert execution.cell_of(metas[3]) == runs_
    assert [r["status"] for r in execution.run_shard(runs_, "cpu", results, tmp_path / "data", exact=False)] \
        == ["reused"] * 6
    table = audit.audit_runs(results, ids[2:3], 1, 1e-4, "cpu", tmp_path / "data")
    assert table["match"].all() and table.set_index("check").loc[audit.RERUN, "max_abs_diff"] == 0
    exact = execution.run_shard(runs_, "cpu", results, tmp_path / "data")
    assert [r["status"] for r in exact] == ["trained"] * 6
    assert all(len(run_record.load_run(results, r).meta["stack"]["members"]) == 2 for r in ids)


def test_derived_tuned_runs_train_as_one_rate_stack_at_their_multiples_and_are_audited(tmp_path):
    """bn_speedup's variants are derived tuned runs (tuning.tuned's derive): the baseline's multiples
    (1x, 5x) are one rate stack with stack_exact false, each member at its multiple of the chosen rate
    (summary lr, baseline_lr), its losses its own run's at that rate to float32 rounding; the BN
    variant (another network) is a cell of its own, evaluated with recomputed statistics; the audit
    rebuilds the rate stack from meta.json (lrs: the multipliers) and reruns it bit for bit."""
    torch.set_num_threads(1)
    results = tmp_path / "results"
    env = RunEnv(CPU, tmp_path / "data", results / "data", results)
    base = {k: v for k, v in BASE.items() if k != "task"} | {"batch_size": 64, "steps": 30,
                                                              "model": {"arch": "mlp", "hidden": [16], "norm": "none"}}
    sweep = [complete(s) for s in tuning.sweep(base, [0.03, 0.1], [100, 101])]
    execution.run_shard(sweep, "cpu", results, tmp_path / "data", exact=False)
    spec = {"base": complete(tuning.tuned(base, [0.03, 0.1], [100, 101], 0))["base"], "lrs": [0.03, 0.1],
            "tuning_seeds": [100, 101], "criterion": "final_train_loss"}
    choice = tuning.tune(results, spec)
    derived = [complete(tuning.tuned(spec["base"], spec["lrs"], spec["tuning_seeds"], seed, derive=d))
               for d in ({}, {"lr_multiplier": 5.0}, {"lr_multiplier": 2.0, "model": {"norm": "batch"},
                                                      "eval_recomputed": ["val"]}) for seed in (0, 1)]
    assert [len(c) for c in stack.cells(derived, rates=True)] == [4, 2] and len(stack.cells(derived)) == 3
    rows = execution.run_shard(derived, "cpu", results, tmp_path / "data", exact=False)
    runs_ = [run_record.load_run(results, r["run_id"]) for r in rows]
    assert [r.summary["lr"] for r in runs_] == pytest.approx([choice["lr"]] * 2 + [5 * choice["lr"]] * 2
                                                             + [2 * choice["lr"]] * 2)
    assert runs_[2].summary["baseline_lr"] == choice["lr"] and runs_[2].meta["stack"]["lrs"] == [1.0, 1.0, 5.0, 5.0]
    assert "val_acc_recomputed" in runs_[4].metrics and "val_acc_recomputed" not in runs_[0].metrics
    alone = train.train(complete({**tuning.at_choice(derived[3], choice), "task": "train"}), env.dataset("digits"), CPU)
    assert [r["train_loss"] for r in runs_[3].metrics.to_dict("records") if r["train_loss"] == r["train_loss"]] == \
        pytest.approx([r["train_loss"] for r in alone.rows if "train_loss" in r], rel=1e-4)
    table = audit.audit_runs(results, [runs_[3].run_id], 1, 1e-4, "cpu", tmp_path / "data")
    assert table["match"].all() and table.set_index("check").loc[audit.RERUN, "max_abs_diff"] == 0
