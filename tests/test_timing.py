"""batch_timing: blocks of back-to-back updates, real epochs, and the epoch claim read from them."""

import pandas as pd
import pytest
import torch
from torch import nn

from trainfail.measure import timing
from trainfail.experiments import batch_timing as E


def test_block_size():
    assert timing.block_size(1, 60000, block=20, block_examples=2000) == 20
    assert timing.block_size(1000, 60000, block=20, block_examples=2000) == 2
    assert timing.block_size(60000, 60000, block=20, block_examples=2000) == 1  # never below one update
    assert timing.block_size(10, 30, block=20, block_examples=2000) == 3  # never more than one epoch
    assert timing.updates_per_epoch(60000, 7) == 8571 and timing.updates_per_epoch(10, 100) == 1


class Counting(torch.optim.SGD):
    steps = 0

    def step(self, closure=None):
        Counting.steps += 1
        return super().step(closure)


def _setup(n=64):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    Counting.steps = 0
    return model, Counting(model.parameters(), lr=0.01), torch.randn(n, 5), torch.randint(0, 3, (n,))


def test_updates_are_timed_in_blocks_with_one_clock_reading_each(monkeypatch):
    model, opt, x, y = _setup()
    readings = []
    real = timing._timed
    monkeypatch.setattr(timing, "_timed", lambda device, work: readings.append(1) or real(device, work))
    times = timing.time_updates(model, opt, x, y, batch_size=8, repeats=4, warmup=2, block=5)
    assert len(times) == 4 and all(t > 0 for t in times)
    assert Counting.steps == 2 + 4 * 5  # warm-up, then 4 blocks of 5 back-to-back updates
    assert len(readings) == 4  # one synchronised clock reading per block, not per update


def test_epochs_are_real_epochs():
    model, opt, x, y = _setup(n=70)
    times = timing.time_epochs(model, opt, x, y, batch_size=8, repeats=3)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert Counting.steps == 3 * 8  # 70 // 8 full batches per epoch, as the training loop runs it


def _table(update: dict, epoch: dict, device="cpu") -> pd.DataFrame:
    """update / epoch: batch size -> seconds (five repeats each, slightly spread)."""
    rows = []
    for kind, times in (("update", update), ("epoch", epoch)):
        for bs, t in times.items():
            per_epoch = 60000 // bs
            for i in range(5):
                tt = t * (1 + 0.01 * i)
                rows.append({"kind": kind, "batch_size": bs, "repeat": i, "block": 1,
                             "time_per_update": tt if kind == "update" else tt / per_epoch,
                             "time_per_epoch": tt * per_epoch if kind == "update" else tt,
                             "device": device, "device_name": "test", "data": "random"})
    return pd.DataFrame(rows)


def test_epoch_claim_reads_measured_epochs_not_the_extrapolation():
    """The confound: time per update x updates per epoch says an epoch at batch 60000 is far
    faster than at batch 100 (0.6 s against 6 s), but measured epochs (the gathers, the
    allocator, caches at a large batch) say it is slower. The verdict follows the measured
    epochs; the extrapolation is in the note."""
    update = {100: 0.01, 1000: 0.05, 60000: 0.6}
    rows = {c["claim_id"]: c for c in E.claims(_table(update, {100: 2.0, 60000: 3.0}), {})}
    claim = rows["epoch_time_falls"]
    assert claim["verdict_unadjusted"] == "not_reproduced" and claim["value"] == pytest.approx(1.5, rel=0.02)
    assert "B=60000 / B=100 (measured epochs)" in claim["metric"] and "extrapolated from one update: 0.1" in claim["note"]
    rows = {c["claim_id"]: c for c in E.claims(_table(update, {100: 2.0, 60000: 0.7}), {})}
    assert rows["epoch_time_falls"]["verdict_unadjusted"] == "reproduced"
    assert rows["parallel_update"]["applicable"] is False  # measured on a CPU: shown, not counted
    no_epochs = E.claims(_table(update, {}), {})
    assert {c["claim_id"]: c for c in no_epochs}["epoch_time_falls"]["verdict_unadjusted"] == "inconclusive"


def test_parallel_update_is_judged_on_a_gpu():
    rows = {c["claim_id"]: c for c in E.claims(_table({1: 0.001, 1000: 0.0015, 60000: 0.05}, {}, device="cuda:0"), {})}
    assert rows["parallel_update"]["applicable"] is True and rows["parallel_update"]["verdict_unadjusted"] == "reproduced"


def test_runs_time_epochs_only_at_their_batch_sizes():
    from trainfail.training.context import Context

    cfg = {"dataset": "random", "n_examples": 60000, "batch_sizes": [1, 100, 60000], "model": {"arch": "mlp"}, "repeats": 3,
           "warmup": 1, "block": 20, "block_examples": 2000, "epoch_batch_sizes": [100, 60000], "epoch_repeats": 2}
    runs = {r["batch_size"]: r for r in E.runs(cfg, Context({}))}
    assert [runs[b]["epoch_repeats"] for b in (1, 100, 60000)] == [0, 2, 2]
    assert [runs[b]["block"] for b in (1, 100, 60000)] == [20, 20, 1]
    with pytest.raises(ValueError, match="epoch_batch_sizes: \\[10\\] not in batch_sizes"):
        E.runs({**cfg, "epoch_batch_sizes": [10]}, Context({}))
