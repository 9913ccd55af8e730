"""optimize_path (torch.optim on 2 parameters), the surfaces and the path measurements."""

import numpy as np
import pytest

from trainfail.measure import landscape


def test_gd_on_quadratic_matches_closed_form():
    # GD on 0.5 h w^2: w_k = (1 - lr h)^k w_0 per coordinate
    h, lr, k = np.array([1.0, 200.0]), 1e-3, 500
    path = landscape.optimize_path(landscape.quadratic(h), [-8.0, 2.0], {"name": "sgd", "lr": lr}, k)
    assert path.shape == (k + 1, 3)
    np.testing.assert_allclose(path[-1, :2], (1 - lr * h) ** k * np.array([-8.0, 2.0]), rtol=1e-9)
    assert path[-1, 2] == pytest.approx(0.5 * (h * path[-1, :2] ** 2).sum())


def test_large_lr_gd_oscillates_across_the_valley():
    # lr h2 = 2: w2 flips sign forever, w1 converges
    path = landscape.optimize_path(landscape.quadratic([1.0, 200.0]), [-8.0, 2.0], {"name": "sgd", "lr": 0.01}, 1000)
    np.testing.assert_allclose(np.abs(path[:, 1]), 2.0, rtol=1e-9)
    assert abs(path[-1, 0]) < 1e-3


@pytest.mark.parametrize("opt", [{"name": "adam", "lr": 0.1}, {"name": "rmsprop", "lr": 0.03},
                                 {"name": "momentum", "lr": 0.01, "momentum": 0.9}, {"name": "adagrad", "lr": 0.3}])
def test_batched_starts_equal_separate_runs(opt):
    f = landscape.quadratic([1.0, 200.0])
    starts = [[-8.0, 2.0], [-7.5, 1.0], [3.0, -0.5]]
    sched = {"name": "power", "exponent": 0.5} if opt["name"] == "adagrad" else None
    batched = landscape.optimize_path(f, starts, opt, 200, sched)
    for s, b in zip(starts, batched):
        np.testing.assert_allclose(b, landscape.optimize_path(f, s, opt, 200, sched), rtol=1e-12, atol=1e-300)


def test_stop_below_and_divergence_cut_the_path():
    f = landscape.quadratic([1.0, 1.0])
    p = landscape.optimize_path(f, [1.0, 0.0], {"name": "sgd", "lr": 0.5}, 100, stop_below=1e-3, check_every=7)
    assert p[-1, 2] < 1e-3 and (p[:-1, 2] >= 1e-3).all()
    p = landscape.optimize_path(f, [1.0, 0.0], {"name": "sgd", "lr": 5.0}, 5000, check_every=1000)
    assert not np.isfinite(p[-1, 2]) and np.isfinite(p[:-1, 2]).all()


def test_double_well_critical_points():
    pts = landscape.double_well_critical_points(0.6)
    assert len(pts) == 3
    np.testing.assert_allclose(4 * pts ** 3 - 4 * pts + 0.6, 0, atol=1e-12)


def test_burst_ratio():
    # down to the floor in jumps of 1, then one jump of 3 on the floor
    path = np.array([[0, 3, 0], [0, 2, 0], [0, 1, 0], [0, 0, 0], [3, 0, 0], [3.5, 0, 0]], float)
    after, before, ratio = landscape.burst_ratio(path, floor=0.5)
    assert (after, before, ratio) == (3.0, 1.0, 3.0)
    assert np.isnan(landscape.burst_ratio(path[:3], floor=0.5)[2])  # never reaches the floor


def test_thin_keeps_ends():
    idx = landscape.thin(100001, keep=3000)
    assert idx[0] == 0 and idx[-1] == 100000 and len(idx) <= 3000
    assert (landscape.thin(10) == np.arange(10)).all()


def test_closed_form_gradient_path_equals_autograd_path():
    f = landscape.quadratic([1.0, 200.0])
    plain = lambda w: f(w)  # the same surface without .grad: autograd
    for opt, sched in (({"name": "adagrad", "lr": 0.3}, {"name": "power", "exponent": 0.5}),
                       ({"name": "sgd", "lr": 0.01}, None)):
        for start in ([-8.0, 2.0], [[-8.0, 2.0], [1.0, -1.0]]):
            np.testing.assert_allclose(landscape.optimize_path(f, start, opt, 300, sched),
                                       landscape.optimize_path(plain, start, opt, 300, sched), rtol=1e-12, atol=1e-300)
