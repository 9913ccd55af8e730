"""minimum_ratio: the closed-form ensemble is exactly the lone nets; the zero modes the symmetries
imply are the Hessian's zero eigenvalues; the claims logic on small tables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from trainfail.measure import hessian
from trainfail.experiments import minimum_ratio as mr


@pytest.mark.parametrize("activation", sorted(mr.ACTIVATIONS))
def test_closed_form_matches_autograd_on_lone_models(activation):
    x, y = mr.make_data(30)
    ens = mr.Ensemble(5, activation)
    W = ens.init([0, 1, 2]) + 0.1  # shift so ReLU kinks are off the data
    values, g = ens.loss_grad(x, y, 1e-3)(W)
    H = ens.hessians(x, y, 1e-3)(W)
    for s in range(3):
        m = mr.member_model(5, activation).double()
        hessian.set_flat_parameters(m, W[s])
        assert float(values[s]) == pytest.approx(float(hessian.mean_loss(m, x, y, "mse", 1e-3).detach()), rel=1e-12)
        torch.testing.assert_close(g[s], hessian.gradient(m, x, y, "mse", weight_decay=1e-3))
        torch.testing.assert_close(H[s], hessian.full_hessian(m, x, y, "mse", weight_decay=1e-3))


def relu_critical_point(w, b, v, c, x, seed=0):
    """A ReLU net that is an exact critical point with a non-zero residual: the target is the net's
    own output plus noise orthogonal to every feature x 1[active], 1[active], 1, so the gradient
    (which is a combination of those features weighted by the residual) vanishes exactly."""
    W = torch.tensor([w + b + v + [c]], dtype=torch.float64)
    ens = mr.Ensemble(len(w), "relu")
    on = (x * W[0, :len(w)] + W[0, len(w):2 * len(w)] > 0).to(torch.float64)
    F = torch.cat([x * on, on, torch.ones_like(x)], dim=1)
    noise = torch.randn(len(x), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    U, sv, _ = torch.linalg.svd(F, full_matrices=False)
    Q = U[:, sv > 1e-10 * sv[0]]  # an orthonormal basis of the features' span
    noise = noise - Q @ (Q.T @ noise)
    return ens, W, ens.forward(W, x)[0] + 0.1 * noise


def test_relu_zero_eigenvalues_are_the_symmetry_plus_dead_units():
    # acceptance: three live units with kinks at distinct places inside the data, one dead unit
    x, _ = mr.make_data(40)
    ens, W, y = relu_critical_point([2.0, -3.0, 1.5, 1.0], [0.4, 0.5, -0.9, -5.0], [0.5, -0.4, 0.8, 0.3], 0.1, x)
    _, g = ens.loss_grad(x, y, 0.0)(W)
    assert float(g.norm()) < 1e-12 and float((ens.forward(W, x)[0] - y).norm()) > 0.1
    modes = mr.zero_modes(W[0], x, 4, "relu", 0.0)
    assert (modes["rescaling"], modes["dead"], modes["redundant"], modes["dead_units"]) == (3, 3, 0, 1)
    m = mr.member_model(4, "relu").double()
    hessian.set_flat_parameters(m, W[0])
    eigs = hessian.eigenvalues(hessian.full_hessian(m, x, y, "mse"))  # autograd, not the closed form
    for tol in (1e-6, 1e-9):
        c = mr.eigenvalue_counts(eigs, tol, modes["symmetry"])
        assert c["n_zero"] == 3 + 3 == modes["symmetry"] and c["n_zero_other"] == 0
    assert c["ratio_all"] <= mr.relu_ratio_cap(4)


def test_relu_redundant_units_add_zero_modes():
    # a unit linear on all the data (trades its bias with the output bias) and two units with the
    # same split of the data (one pair of features between them): 3 redundant directions
    x, _ = mr.make_data(40)
    ens, W, y = relu_critical_point([0.5, 1.0, 2.0, -1.5], [2.0, -0.1, -0.2, -0.6], [0.3, 0.5, 0.4, -0.7], 0.1, x, seed=1)
    modes = mr.zero_modes(W[0], x, 4, "relu", 0.0)
    assert (modes["rescaling"], modes["dead"], modes["redundant"], modes["linear_units"]) == (4, 0, 3, 1)
    eigs = hessian.eigenvalues(ens.hessians(x, y, 0.0)(W)[0])
    assert mr.eigenvalue_counts(eigs, 1e-9, modes["symmetry"])["n_zero"] == 7


def test_smooth_net_with_weight_decay_has_no_symmetry_zeros():
    # acceptance: tanh with weight decay, at critical points found from training (minima and saddles)
    settings = {"task": mr.ID, "width": 4, "activation": "tanh", "weight_decays": [1e-3], "seeds": [0, 1, 2, 3],
                "n_examples": 40, "optimizer": {"name": "adam", "lr": 0.01}, "train_steps": 1000,
                "newton_iters": 300, "grad_tol": 1e-8, "perturbations": 1, "perturb_scales": [0.3], "log_points": 10}
    pts = pd.DataFrame(mr.execute(settings, None).summary["points"])
    assert pts["verified"].all()
    assert (pts["symmetry"] == 0).all()
    for spectrum in pts["spectrum"]:
        eigs = np.array([float(v) for v in spectrum.split()])
        assert mr.eigenvalue_counts(eigs, 1e-6, 0)["n_zero"] == 0
        assert np.abs(eigs).min() > 1e-7  # no eigenvalue anywhere near zero
    # the same net without weight decay has no forced zeros either; ReLU with weight decay neither
    x, _ = mr.make_data(40)
    w = mr.Ensemble(4, "relu").init([0])[0]
    assert mr.zero_modes(w, x, 4, "tanh", 0.0)["symmetry"] == 0
    assert mr.zero_modes(w, x, 4, "relu", 1e-3)["symmetry"] == 0


def test_execute_finds_verified_points_and_counts():
    settings = {"task": mr.ID, "width": 4, "activation": "relu", "weight_decays": [0.0], "seeds": [0, 1, 2, 3],
                "n_examples": 40, "optimizer": {"name": "adam", "lr": 0.01}, "train_steps": 300,
                "newton_iters": 100, "grad_tol": 1e-8, "perturbations": 2, "perturb_scales": [0.1, 0.3], "log_points": 10}
    res = mr.execute(settings, None)
    pts = pd.DataFrame(res.summary["points"])
    assert len(pts) == 4 * 3 and res.summary["parameters"] == 13
    assert (pts["start"] == mr.TRAINING_END).sum() == 4 and set(pts["perturb_scale"]) == {0.0, 0.1, 0.3}
    ends = pts[pts["start"] == mr.TRAINING_END]
    assert (ends["grad_norm"] <= ends["grad_norm_train_end"]).all()
    assert (ends["distance_from_start"] == ends["distance_from_train_end"]).all()
    assert pts["verified"].any()
    for _, p in pts[pts["verified"]].iterrows():
        eigs = np.array([float(v) for v in p["spectrum"].split()])
        c = mr.eigenvalue_counts(eigs, 1e-6, p["symmetry"])
        assert len(eigs) == 13 and c["n_pos"] + c["n_neg"] + c["n_zero"] == 13
        assert c["n_zero_other"] >= 0  # every zero the symmetries imply is there
        if p["off_units"] == 0:
            assert c["n_neg"] == 0  # ReLU: H = (2/N) J^T J at a critical point with every v_j != 0
    rows = pd.DataFrame(res.rows)
    assert set(rows["phase"]) == {"train", "newton"} and len(rows) < 2000


def test_perturbed_starts_do_not_depend_on_the_grouping():
    W = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    a, la = mr.perturbed_starts(W, [5, 6, 7], [0.1, 1.0], 2)
    b, lb = mr.perturbed_starts(W[1:], [6, 7], [0.1, 1.0], 2)
    i = [k for k, lab in enumerate(la) if lab["seed"] != 5]
    torch.testing.assert_close(a[i], b)
    assert [lab["perturb_scale"] for lab in la if lab["seed"] == 6] == [0.1, 1.0]  # scales cycle over copies
    assert float((a[0] - W[0]).std()) == pytest.approx(1.0, rel=0.8)


def test_relu_ratio_cap():
    assert mr.relu_ratio_cap(8) == pytest.approx(17 / 25)
    eigs = np.r_[np.zeros(8), np.ones(17)]
    assert mr.eigenvalue_counts(eigs, 1e-6, 8)["ratio_all"] == mr.relu_ratio_cap(8)


CFG = {"grad_tol": 1e-8, "zero_tol": 1e-6, "zero_tols": [1e-4, 1e-6, 1e-8], "minimum_fraction_max": 0.2,
       "train_steps": 100, "negative_c": 1.0, "negative_c_sensitivity": 0.1, "weight_decays": [1e-4, 1e-3]}


def _table(rows):
    cols = {"verified": True, "start": mr.TRAINING_END, "n_pos_by_wd": 0, "distance_from_start": 0.1, "off_units": 0,
            "n_zero_other": 0, "n_zero_symmetry": 0, "width": 8, "ratio_all": 0.9, "activation": "tanh",
            "collapsed_negative": 0, "weight_decay": 1e-4, "swept": True, "stop": "minimum"}
    t = pd.DataFrame([{**cols, **r} for r in rows])
    t["base_net"] = [f"1-{w}-1 {a}" for w, a in zip(t["width"], t["activation"])]
    t["net"] = [mr.net_label(w, a, wd) for w, a, wd in zip(t["width"], t["activation"], t["weight_decay"])]
    if "stop@c0.1" not in t:
        t["stop@c0.1"] = t["stop"]
    t["n_neg_clear"] = (t["stop"] != "minimum").astype(int) * t["n_neg"].clip(lower=1)
    t["index_clear"] = t["index"]
    for tol in ("1e-04", "1e-06", "1e-08"):
        t[f"minimum@{tol}"] = t["minimum"]
    return t


def _rows():
    rng = np.random.default_rng(0)
    rows = []
    for width in (8, 16):
        for wd in (1e-4, 1e-3):
            for i in range(16):
                loss = rng.uniform(0.01, 0.1)
                index = round(loss * 50) / 25          # higher loss, higher index
                if wd == 1e-3:                          # the strong decay: collapsed units make every saddle
                    stop = "reducible saddle"
                else:                                   # the wide net: all strict, the narrow one half
                    stop = "strict saddle" if width == 16 or i % 2 else "minimum"
                rows.append({"family": "primary", "seed": i, "objective": loss, "index": index, "width": width,
                             "weight_decay": wd, "n_neg": int(index * 25), "minimum": stop == "minimum", "stop": stop,
                             "stop@c0.1": "strict saddle" if wd == 1e-4 else stop,
                             "start": mr.TRAINING_END if i < 12 else mr.PERTURBED})
    for i in range(10):
        rows.append({"family": "lecture", "activation": "relu", "weight_decay": 0.0, "swept": False, "seed": i,
                     "objective": 0.01 * (i + 1), "index": 0.0, "n_neg": 0, "minimum": True,
                     "ratio_all": mr.relu_ratio_cap(8), "n_zero_symmetry": 8})
    rows.append({"family": "primary", "verified": False, "seed": 99, "objective": 1.0, "index": 0.0,
                 "n_neg": 0, "minimum": True})
    return rows


def test_claims_logic():
    rows = _rows()
    claims = {c["claim_id"]: c for c in mr.claims(_table(rows), CFG)}
    assert claims["minima_rare_wd0.0001"]["n"] == 24  # verified training ends at the level only
    # the strong decay: no minima, but every saddle is reducible, so the strict-saddle claim fails there
    assert claims["minima_rare_wd0.001"]["value"] == 0 and claims["minima_rare_wd0.001"]["verdict_unadjusted"] == "reproduced"
    assert claims["strict_saddles_common_wd0.001"]["value"] == 0
    assert claims["strict_saddles_common_wd0.001"]["verdict_unadjusted"] == "not_reproduced"
    assert claims["strict_saddles_common_wd0.0001"]["value"] == pytest.approx(18 / 24)
    assert claims["strict_saddles_common_wd0.0001_c0.1"]["value"] == 1.0  # read at the other c
    assert claims["more_strict_saddles_in_wider_net_wd0.0001"]["value"] == pytest.approx(1.0 - 0.5)
    assert claims["more_strict_saddles_in_wider_net_wd0.001"]["value"] == pytest.approx(0.0)
    # Fisher's z on a few small groups: a strong correlation, but too few points to decide at 95%
    assert claims["higher_loss_higher_index"]["method"] == "spearman"
    assert claims["higher_loss_higher_index"]["value"] > 0.9
    assert claims["no_run_reaches_ratio_one"]["verdict_unadjusted"] == "reproduced"
    assert claims["no_run_reaches_ratio_one"]["kind"] == "check"
    assert claims["relu_hessian_psd"]["verdict_unadjusted"] == "reproduced"
    assert claims["symmetry_zeros_present"]["verdict_unadjusted"] == "reproduced"
    assert "1-8-1 tanh, wd 0.0001: 12/13 training ends" in claims["minima_rare_wd0.0001"]["note"]
    assert claims[mr.PRIMARY]["kind"] == "test"
    # a ReLU point with a negative eigenvalue and no unit switched off breaks the identity
    rows[-2].update(n_neg=1, minimum=False)
    claims = {c["claim_id"]: c for c in mr.claims(_table(rows), CFG)}
    assert claims["relu_hessian_psd"]["verdict_unadjusted"] == "not_reproduced"


def test_sweep_levels_come_from_the_schema_and_claims_name_them():
    from trainfail.core.config import ConfigError, validate
    from trainfail.training.context import Context

    schema = mr.Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    cfg = validate({"experiments": {mr.ID: {}}}, schema)["experiments"][mr.ID]
    levels = [float(v) for v in cfg["weight_decays"]]
    assert len(levels) >= 3 and min(levels) == pytest.approx(1e-4) and max(levels) == pytest.approx(1e-3)
    assert any(v == pytest.approx(mr.PRIMARY_LEVEL) for v in levels) and mr.PRIMARY.endswith(mr.level_tag(mr.PRIMARY_LEVEL))
    # every swept net trains at exactly the schema's levels; the lecture's ReLU net at its own
    settings = mr.runs(cfg, Context(config={}))
    swept = [s for s in settings if s["activation"] != "relu"]
    assert swept and all(s["weight_decays"] == levels for s in swept)
    assert all(s["weight_decays"] == [0.0] for s in settings if s["activation"] == "relu")
    # a swept net trains the first seeds_per_level seeds at each level, a fixed net all of them
    n = int(cfg["seeds_per_level"])
    for net in {(s["width"], s["activation"]) for s in swept}:
        assert sorted(x for s in swept if (s["width"], s["activation"]) == net for x in s["seeds"]) == cfg["seeds"][:n]
    assert sorted(x for s in settings if s["activation"] == "relu" for x in s["seeds"]) == cfg["seeds"]
    # the per-level claims are the schema's levels, each id naming its level; a level the table has
    # but the schema does not declare gets no claim
    rows = _rows() + [{"family": "primary", "seed": 0, "objective": 0.1, "index": 0.1, "n_neg": 1, "minimum": False,
                       "stop": "strict saddle", "weight_decay": 5e-4}]
    ids = [c["claim_id"] for c in mr.claims(_table(rows), {**CFG, "weight_decays": levels})]
    for stem in ("minima_rare", "strict_saddles_common", "more_strict_saddles_in_wider_net"):
        assert [i for i in ids if i.startswith(stem + "_wd") and not i.endswith("_c0.1")] == [f"{stem}_{mr.level_tag(v)}" for v in levels]
    assert not any("0.0005" in i for i in ids)
    assert f"{mr.PRIMARY}_{mr.c_tag(CFG['negative_c_sensitivity'])}" in ids  # the sensitivity row names its level and c
    assert mr.level_tag(3e-4) == "wd0.0003"
    # a misspelt sweep is refused with the key named
    with pytest.raises(ConfigError, match="weight_decay"):
        validate({"experiments": {mr.ID: {"nets": [{"width": 4, "activation": "tanh", "weight_decay": "swep"}]}}}, schema)
    with pytest.raises(ConfigError, match="weight_decays"):
        validate({"experiments": {mr.ID: {"weight_decays": []}}}, schema)


def test_search_with_levels_is_one_search_per_level():
    # members at different weight decays searched at once (the level rides along, frozen) end where
    # a separate search per level ends
    x, y = mr.make_data(40)
    ens = mr.Ensemble(4, "tanh")
    levels = torch.tensor([1e-4, 1e-4, 1e-3, 1e-3], dtype=torch.float64)
    W, _ = mr.train_ensemble(ens, ens.init([0, 1]).repeat(2, 1), x, y,
                             {"optimizer": {"name": "adam", "lr": 0.01}, "train_steps": 1000, "seeds": [0, 1] * 2,
                              "log_points": 5}, weight_decay=levels)
    together, pts = mr.search(ens, W, levels, x, y, 300, 1e-10)
    for wd, rows in ((1e-4, [0, 1]), (1e-3, [2, 3])):
        alone, pa = mr.search(ens, W[rows], levels[rows], x, y, 300, 1e-10)
        assert all(pts[r].converged for r in rows) and all(p.converged for p in pa)
        torch.testing.assert_close(together[rows], alone, atol=1e-9, rtol=0)
        assert [pts[r].iterations for r in rows] == [p.iterations for p in pa]
    # training at per-member levels is training each level alone
    W1, _ = mr.train_ensemble(ens, ens.init([0, 1]), x, y, {"optimizer": {"name": "adam", "lr": 0.01}, "train_steps": 1000,
                                                            "seeds": [0, 1], "log_points": 5, "weight_decay": 1e-3})
    torch.testing.assert_close(W[2:], W1)


def test_collapsed_units_make_reducible_saddles():
    # a collapsed tanh unit whose closed-form curvature wd - s ||(a, b)|| is negative: that negative
    # direction lies on the inert unit (reducible saddle), not on the live ones
    x, y = mr.make_data(40)
    ens = mr.Ensemble(2, "tanh")
    W, _ = mr.train_ensemble(ens, ens.init([0]), x, y, {"optimizer": {"name": "adam", "lr": 0.01}, "train_steps": 1000,
                                                        "seeds": [0], "log_points": 5, "weight_decay": 1e-3})
    W, (cp,) = hessian.newton_on_gradient(W, ens.loss_grad(x, y, 1e-3), ens.hessians(x, y, 1e-3), max_iter=300,
                                          tol=1e-11, acceleration=True)
    w = W[0]
    grown = torch.cat([w[0:2], torch.zeros(1), w[2:4], torch.zeros(1), w[4:6], torch.zeros(1), w[6:]])
    inert = mr.reducible_units(grown, x, 3, "tanh")
    assert inert.tolist() == [False, False, True]
    e, U = torch.linalg.eigh(mr.Ensemble(3, "tanh").hessians(x, y, 1e-3)(grown[None])[0])
    mass = mr.reducible_mass(U, inert, 3)
    small = int(e.argmin())
    assert float(e[small]) < -1e-3 and float(mass[small]) == pytest.approx(1.0, abs=1e-9)
    neg = e.numpy() < 0
    n_clear, n_strict = mr.saddle_split(e.numpy(), mass.numpy()[neg], 1e-3)
    assert n_clear >= 1 and n_strict == n_clear - 1
    # duplicated units (the same feature: equal (w, b), or opposite for tanh) and a switched-off one
    w = torch.tensor([1.0, -1.0, 2.0, 0.5, 0.3, -0.3, -1.0, 0.2, 0.5, 0.7, 1.0, 0.0, 0.1], dtype=torch.float64)
    assert mr.reducible_units(w, x, 4, "tanh").tolist() == [True, True, False, True]
    assert mr.reducible_units(w, x, 4, "gelu").tolist() == [False, False, False, True]
    assert mr.stop_kind(1, 0) == "reducible saddle" and mr.stop_kind(2, 1) == "strict saddle" and mr.stop_kind(0, 0) == "minimum"


def _tanh_training_ends(width=6, n=50, wd=3e-4, steps=1500, seeds=(0, 1, 2, 3)):
    x, y = mr.make_data(n)
    ens = mr.Ensemble(width, "tanh")
    settings = {"optimizer": {"name": "adam", "lr": 0.01}, "train_steps": steps, "weight_decay": wd,
                "seeds": list(seeds), "log_points": 5}
    W, _ = mr.train_ensemble(ens, ens.init(list(seeds)), x, y, settings)
    return ens, W, x, y, wd


@pytest.mark.parametrize("acceleration", [False, True])
def test_critical_point_search_has_no_preference_for_minima(acceleration):
    # every step depends on (g, H) only through H^2, H g and ||g||: on -L the search from the same
    # starts retraces the one on L, so it cannot favour minima (a descent bias would not)
    ens, W, x, y, wd = _tanh_training_ends(width=4, n=40, wd=1e-3, steps=1000)
    starts, _ = mr.perturbed_starts(W, [0, 1, 2, 3], [0.3], 1)
    lg, hs = ens.loss_grad(x, y, wd), ens.hessians(x, y, wd)

    def neg_lg(w):
        v, g = lg(w)
        return -v, -g

    a, pa = hessian.newton_on_gradient(starts, lg, hs, max_iter=300, tol=1e-10, acceleration=acceleration)
    b, pb = hessian.newton_on_gradient(starts, neg_lg, lambda w: -hs(w), max_iter=300, tol=1e-10, acceleration=acceleration)
    torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
    assert [p.iterations for p in pa] == [p.iterations for p in pb]
    eigs = torch.linalg.eigvalsh(hs(a))
    assert bool((eigs[:, 0] < -1e-4)[[p.converged for p in pa]].any())  # it found saddles of L (maxima-side of -L)


def test_geodesic_acceleration_cuts_the_iterations_on_sloppy_nets():
    # plain LM creeps along the sloppy valley (hundreds of iterations from these training ends);
    # with the acceleration most members converge within a budget where plain LM converges few
    ens, W, x, y, wd = _tanh_training_ends()
    lg, hs = ens.loss_grad(x, y, wd), ens.hessians(x, y, wd)
    _, plain = hessian.newton_on_gradient(W, lg, hs, max_iter=150, tol=1e-10)
    _, fast = hessian.newton_on_gradient(W, lg, hs, max_iter=150, tol=1e-10, acceleration=True)
    assert sum(p.converged for p in fast) >= 3 > sum(p.converged for p in plain) + 1


def test_collapsed_unit_adds_its_closed_form_curvature():
    # a verified critical point of a 1-2-1 tanh net, then one more unit at w = b = v = 0: still critical,
    # and its Hessian block (decoupled) adds the eigenvalues wd and wd -+ ||(2/N) sum r (x, 1)||
    settings = {"task": mr.ID, "width": 2, "activation": "tanh", "weight_decay": 1e-3, "seeds": [0],
                "n_examples": 40, "optimizer": {"name": "adam", "lr": 0.01}, "train_steps": 1000,
                "newton_iters": 300, "grad_tol": 1e-8, "perturbations": 0, "perturb_scales": [0.1], "log_points": 10}
    x, y = mr.make_data(40)
    ens = mr.Ensemble(2, "tanh")
    W, _ = mr.train_ensemble(ens, ens.init([0]), x, y, settings)
    W, (cp,) = hessian.newton_on_gradient(W, ens.loss_grad(x, y, 1e-3), ens.hessians(x, y, 1e-3), max_iter=300,
                                          tol=1e-11, acceleration=True)
    assert cp.converged
    w = W[0]
    grown = torch.cat([w[0:2], torch.zeros(1), w[2:4], torch.zeros(1), w[4:6], torch.zeros(1), w[6:]])[None]
    big = mr.Ensemble(3, "tanh")
    _, g = big.loss_grad(x, y, 1e-3)(grown)
    assert float(g.norm()) < 1e-10
    r = ens.forward(W, x)[0] - y
    s = float(torch.hypot((2 / 40) * (r @ x[:, 0]), (2 / 40) * r.sum()))
    expected = np.sort(np.r_[hessian.eigenvalues(ens.hessians(x, y, 1e-3)(W)[0]), 1e-3, 1e-3 - s, 1e-3 + s])
    np.testing.assert_allclose(hessian.eigenvalues(big.hessians(x, y, 1e-3)(grown)[0]), expected, atol=1e-12)
    assert s > 1e-3  # the residual is large enough that growing the unit lowers the loss: a saddle
    assert mr.collapsed_units(grown[0], x, y, 3, "tanh", 1e-3) == {"collapsed_units": 1, "collapsed_negative": 1}
    assert mr.collapsed_units(grown[0], x, y, 3, "tanh", 1.0) == {"collapsed_units": 1, "collapsed_negative": 0}


def test_a_diverged_member_is_recorded_not_searched():
    settings = {"task": mr.ID, "width": 4, "activation": "tanh", "weight_decays": [0.0], "seeds": [0, 1],
                "n_examples": 20, "optimizer": {"name": "sgd", "lr": 1e6}, "train_steps": 50,
                "newton_iters": 20, "grad_tol": 1e-8, "perturbations": 1, "perturb_scales": [0.1], "log_points": 5}
    res = mr.execute(settings, None)
    pts = pd.DataFrame(res.summary["points"])
    assert pts["diverged"].all() and not pts["verified"].any() and (pts["spectrum"] == "").all()
    record = SimpleNamespace(settings=settings, summary=res.summary, run_id="r")
    t = mr.table({"zero_tol": 1e-6, "zero_tols": [1e-6], "negative_c": 1.0, "negative_c_sensitivity": 0.1}, [record])
    assert len(t) == 4 and not t["verified"].any()
