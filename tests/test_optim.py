"""Schedules against their closed forms (the ones the optimizer experiments use)."""

import math

import pytest
import torch

from trainfail.training import optim


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_takes_a_step(name):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = optim.make_optimizer([w], {"name": name, "lr": 0.1})
    (w ** 2).sum().backward()
    opt.step()
    assert (w.detach().abs() < torch.tensor([1.0, 2.0])).all()


def test_optimizer_kinds():
    p = [torch.nn.Parameter(torch.zeros(1))]
    m = optim.make_optimizer(p, {"name": "momentum", "lr": 0.1, "momentum": 0.8})
    assert isinstance(m, torch.optim.SGD) and m.defaults["momentum"] == 0.8
    assert isinstance(optim.make_optimizer(p, {"name": "radam", "lr": 0.1}), torch.optim.RAdam)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make_optimizer(p, {"name": "lion", "lr": 0.1})


T = 100


@pytest.mark.parametrize("spec, expected", [
    ({"name": "constant"}, lambda t: 1.0),
    ({"name": "step", "step_size": 30, "gamma": 0.5}, lambda t: 0.5 ** (t // 30)),
    ({"name": "cosine"}, lambda t: 0.5 * (1 + math.cos(math.pi * t / T))),
    ({"name": "warmup_cosine", "warmup_steps": 10},
     lambda t: (t + 1) / 10 if t < 10 else 0.5 * (1 + math.cos(math.pi * (t - 10) / 90))),
    ({"name": "warmup_constant", "warmup_steps": 10}, lambda t: min((t + 1) / 10, 1.0)),
    ({"name": "noam", "warmup_steps": 16}, lambda t: 16 ** 0.5 * min((t + 1) ** -0.5, (t + 1) * 16 ** -1.5)),
    ({"name": "inverse_sqrt", "decay_steps": 4}, lambda t: 1 / math.sqrt(1 + t / 4)),
])
def test_schedule_matches_closed_form(spec, expected):
    for t in range(T):
        assert optim.lr_factor(spec, t, T) == pytest.approx(expected(t), rel=1e-12)


def test_noam_peaks_at_warmup_and_decays_as_inverse_sqrt():
    spec = {"name": "noam", "warmup_steps": 25}
    values = [optim.lr_factor(spec, t, 1000) for t in range(1000)]
    assert max(values) == pytest.approx(1.0) and values.index(max(values)) == 24
    assert values[99] / values[399] == pytest.approx(2.0)


def test_lambda_lr_applies_the_factor():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = optim.make_optimizer([w], {"name": "sgd", "lr": 0.2})
    sched = optim.make_schedule(opt, {"name": "step", "step_size": 2, "gamma": 0.1}, 10)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.2, 0.2, 0.02, 0.02, 0.002])
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.make_schedule(opt, {"name": "sawtooth"}, 10)
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


def test_noam_starts_at_one_over_warmup():
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
