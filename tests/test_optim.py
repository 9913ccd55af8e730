import math

import pytest
import torch

from trainfail import optim


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
