"""Schedules against their closed forms (the ones the optimizer experiments use)."""

import math

import pytest
import torch

from trainfail import optim


@pytest.mark.parametrize("t", [0, 1, 9, 99])
def test_power_schedule_closed_form(t):
    assert optim.lr_factor({"name": "power", "exponent": 0.5}, t, 100) == pytest.approx(math.sqrt(t + 1))
    assert optim.lr_factor({"name": "power", "exponent": -0.5}, t, 100) == pytest.approx(1 / math.sqrt(t + 1))
    assert optim.lr_factor({"name": "power"}, t, 100) == pytest.approx(1 / math.sqrt(t + 1))  # default -0.5


def test_adagrad_with_power_half_is_the_lectures_rms_adagrad():
    """torch Adagrad divides by sqrt(sum g^2); with lr x sqrt(t+1) it divides by the root mean square."""
    g = torch.tensor([3.0, -1.0, 0.5, 2.0, -0.25], dtype=torch.float64)
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = optim.make_optimizer([w], {"name": "adagrad", "lr": 0.1, "eps": 1e-300})
    sched = optim.make_schedule(opt, {"name": "power", "exponent": 0.5}, 10)
    expected = 0.0
    for t, gt in enumerate(g):
        w.grad = gt.reshape(1).clone()
        opt.step()
        sched.step()
        rms = math.sqrt(float((g[:t + 1] ** 2).mean()))
        expected -= 0.1 * float(gt) / rms
        assert float(w.detach()) == pytest.approx(expected, rel=1e-12)


def test_noam_peaks_at_warmup_and_decays_as_inverse_sqrt():
    spec = {"name": "noam", "warmup_steps": 30}
    f = [optim.lr_factor(spec, t, 300) for t in range(300)]
    assert max(f) == pytest.approx(1.0) and f.index(max(f)) == 29
    assert f[0] == pytest.approx(1 / 30)
    assert f[119] == pytest.approx(math.sqrt(30 / 120))


def test_warmup_schedules_rise_linearly():
    for name in ("warmup_cosine", "warmup_constant"):
        spec = {"name": name, "warmup_steps": 10}
        assert [optim.lr_factor(spec, t, 100) for t in range(10)] == pytest.approx([(t + 1) / 10 for t in range(10)])
    assert optim.lr_factor({"name": "warmup_constant", "warmup_steps": 10}, 50, 100) == 1.0
    assert optim.lr_factor({"name": "cosine"}, 50, 100) == pytest.approx(0.5)
