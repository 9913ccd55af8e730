"""toy_critical_points: saddle point or local minimum? The lecture's 2-parameter net (1.1).

One example (x = 1, y = 1), no bias, linear activation: y_hat = w2 * (w1 * x), so
L(w1, w2) = (1 - w1 w2)^2. Its critical points are the origin and the hyperbola w1 w2 = 1.
Here they are *found*, not assumed: Newton's method on grad = 0 (hessian.find_critical_point)
from a grid of starts, then each is classified from the eigenvalues of the Hessian computed by
autograd on the net as an nn.Module (hessian.full_hessian), and the autograd Hessians are
checked against the closed form. The escape: from the origin (a saddle) a step along the
eigenvector of the negative eigenvalue lowers the loss, while gradient descent (torch.optim.SGD)
started exactly there never moves, since the gradient is exactly zero.
No training runs: everything is computed in the analysis step in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from trainfail.analysis import plots, stats
from trainfail.core import contract
from trainfail.measure import hessian, landscape
from trainfail.core.contract import Claim, Settings
from trainfail.core.run_record import RunRecord

ID = "toy_critical_points"
SECTION = contract.CRITICAL_POINTS
ORDER = 1
TITLE = "Critical points of L(w1, w2) = (1 - w1 w2)^2: saddle, flat valley, escape"
HEADLINE = "toy_critical_points"

X1 = (torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))  # the one example (x, y)


class TwoWeights(nn.Module):
    """The lecture's network: one input, one hidden linear unit, no bias."""

    def __init__(self, w1: float, w2: float):
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor([float(w1)], dtype=torch.float64))
        self.w2 = nn.Parameter(torch.tensor([float(w2)], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w2 * (self.w1 * x)).unsqueeze(-1)


def toy_loss(w) -> torch.Tensor:
    """L on a (2, ...) tensor (broadcasts over grids)."""
    return (1 - w[0] * w[1]) ** 2


def closed_form_hessian(w1: float, w2: float) -> np.ndarray:
    """d2L: [[2 w2^2, 4 w1 w2 - 2], [4 w1 w2 - 2, 2 w1^2]]."""
    c = 4 * w1 * w2 - 2
    return np.array([[2 * w2 ** 2, c], [c, 2 * w1 ** 2]])


def autograd_hessian(w1: float, w2: float) -> np.ndarray:
    return hessian.full_hessian(TwoWeights(w1, w2), *X1, loss="mse").numpy()


def runs(cfg: dict) -> list[Settings]:
    return []  # computed directly in table()


def label(w1: float, w2: float, eigs: np.ndarray, tol: float, radius: float = 1e-3) -> str:
    """The second-order test; degenerate cases are settled by the loss on a small circle."""
    kind = hessian.classify(eigs, tol)
    if kind.startswith("degenerate"):
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        around = toy_loss(torch.as_tensor(np.stack([w1 + radius * np.cos(angles), w2 + radius * np.sin(angles)])))
        here = float(toy_loss(torch.tensor([w1, w2])))
        if float(around.min()) >= here:
            return "local minimum (flat valley)"
        if float(around.max()) <= here:
            return "local maximum (flat ridge)"
        return "saddle (degenerate)"
    return kind


def table(cfg: dict, records: list[RunRecord]) -> pd.DataFrame:
    eig_tol = float(cfg["eig_tol"])
    rows = []
    # 1. critical points found by Newton on grad = 0 from a grid of starts
    found: dict[tuple, dict] = {}
    for a in np.linspace(-2, 2, int(cfg["starts_n"])):
        for b in np.linspace(-2, 2, int(cfg["starts_n"])):
            m = TwoWeights(a, b)
            cp = hessian.find_critical_point(m, *X1, loss="mse", max_iter=100, tol=1e-12)
            if not cp.converged:
                continue
            w1, w2 = float(m.w1.detach()), float(m.w2.detach())
            found.setdefault((round(w1, 6), round(w2, 6)), {"w1": w1, "w2": w2, "grad_norm": cp.grad_norm,
                                                              "start_w1": a, "start_w2": b})
    for p in found.values():
        H = autograd_hessian(p["w1"], p["w2"])
        eigs = np.linalg.eigvalsh(H)
        err = float(np.abs(H - closed_form_hessian(p["w1"], p["w2"])).max())
        rows.append({"kind": "critical_point", **p, "loss": float(toy_loss(torch.tensor([p["w1"], p["w2"]]))),
                     "eig_min": eigs[0], "eig_max": eigs[1], "h11": H[0, 0], "h12": H[0, 1], "h22": H[1, 1],
                     "closed_form_error": err, "label": label(p["w1"], p["w2"], eigs, eig_tol),
                     "on_valley": abs(p["w1"] * p["w2"] - 1) < 1e-9, "at_origin": abs(p["w1"]) + abs(p["w2"]) < 1e-9})
    # 2. autograd against the closed form away from critical points too
    for a in np.linspace(-2, 2, 7):
        for b in np.linspace(-2, 2, 7):
            H = autograd_hessian(a, b)
            rows.append({"kind": "hessian_check", "w1": a, "w2": b,
                         "closed_form_error": float(np.abs(H - closed_form_hessian(a, b)).max())})
    # 3. the escape from the origin along the eigenvector of the negative eigenvalue
    e, U = np.linalg.eigh(autograd_hessian(0.0, 0.0))
    u = U[:, 0] * np.sign(U[0, 0])  # eigenvalue -2: direction (1, 1)/sqrt(2)
    loss0 = float(toy_loss(torch.zeros(2)))
    for t in cfg["escape_steps"]:
        w = t * u
        rows.append({"kind": "escape", "t": float(t), "w1": w[0], "w2": w[1], "u1": u[0], "u2": u[1],
                     "eig_min": e[0], "loss": float(toy_loss(torch.tensor(w))), "loss_origin": loss0})
    # 4. gradient descent (torch.optim.SGD) from exactly the origin, and from after the escape step
    opt = {"name": "sgd", "lr": float(cfg["gd_lr"])}
    t_escape = float(sorted(cfg["escape_steps"])[len(cfg["escape_steps"]) // 2])
    for name, start in (("gd_origin", [0.0, 0.0]), ("gd_after_escape", list(t_escape * u))):
        path = landscape.optimize_path(toy_loss, start, opt, int(cfg["gd_steps"]))
        for k, (w1, w2, l) in enumerate(path):
            rows.append({"kind": name, "step": k, "w1": w1, "w2": w2, "loss": l, "t": t_escape})
    return pd.DataFrame(rows)


def figures(table: pd.DataFrame, cfg: dict, outdir: Path) -> None:
    fig, axes = plots.figure(ncols=2, width=5.0, height=4.6)
    ax = axes[0][0]
    surface = lambda X, Y: (1 - X * Y) ** 2
    plots.contours(ax, surface, (-2, 2), (-2, 2), n=int(cfg["grid_n"]), log=True)
    xs = np.linspace(0.5, 2, 100)
    ax.plot(xs, 1 / xs, "w--", lw=1)
    ax.plot(-xs, -1 / xs, "w--", lw=1, label="w1 w2 = 1")
    cps = table[table["kind"] == "critical_point"]
    markers = {"saddle": ("X", "red"), "local minimum (flat valley)": ("o", "white"), "local minimum": ("o", "white"),
               "local maximum": ("^", "orange")}
    for lab, part in cps.groupby("label"):
        mk, col = markers.get(lab, ("s", "magenta"))
        ax.scatter(part["w1"], part["w2"], marker=mk, c=col, edgecolors="k", s=60 if mk == "X" else 25, zorder=5,
                   label=f"{lab} ({len(part)})")
    esc = table[table["kind"] == "escape"]
    if len(esc):
        u = esc[["u1", "u2"]].iloc[0].to_numpy(float)
        ax.annotate("", xy=(0.9 * u[0], 0.9 * u[1]), xytext=(0, 0),
                    arrowprops={"arrowstyle": "->", "color": "red", "lw": 1.5})
    gd = table[table["kind"] == "gd_after_escape"]
    ax.plot(gd["w1"], gd["w2"], "-", color="orange", lw=1.2, label="GD after the escape step")
    g0 = table[table["kind"] == "gd_origin"]
    ax.plot(g0["w1"].iloc[-1], g0["w2"].iloc[-1], "*", color="yellow", ms=12, mec="k",
            label=f"GD from (0, 0): {len(g0) - 1} steps, moved {np.hypot(g0['w1'], g0['w2']).max():.0e}")
    ax.set(xlabel="w1", ylabel="w2", title="L = (1 - w1 w2)^2: critical points by autograd Hessian")
    ax.legend(loc="lower left")
    ax = axes[0][1]
    t = np.linspace(-1.6, 1.6, 200)
    if len(esc):
        u = esc[["u1", "u2"]].iloc[0].to_numpy(float)
        v = np.array([u[1], -u[0]])
        ax.plot(t, (1 - (t * u[0]) * (t * u[1])) ** 2, label=f"along eigenvector of {esc['eig_min'].iloc[0]:+.0f}")
        ax.plot(t, (1 - (t * v[0]) * (t * v[1])) ** 2, label="along the other eigenvector (+2)")
        ax.plot(esc["t"], esc["loss"], "o", color="red", label="escape steps")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set(xlabel="step length from (0, 0)", ylabel="loss", ylim=(0, 3), title="the saddle at the origin")
    ax.legend()
    plots.save(fig, outdir, "toy_critical_points",
               note=f"critical points from Newton on grad = 0 from a {cfg['starts_n']}x{cfg['starts_n']} grid of starts; "
                    f"labels from autograd Hessian eigenvalues (|lambda| <= {cfg['eig_tol']:g} is zero; degenerate cases "
                    f"settled by the loss on a circle of radius 1e-3); SGD lr {cfg['gd_lr']}")


def claims(table: pd.DataFrame, cfg: dict) -> list[Claim]:
    tol, eig_tol = float(cfg["tol"]), float(cfg["eig_tol"])
    cps = table[table["kind"] == "critical_point"]
    origin = cps[cps["at_origin"]]
    valley = cps[cps["on_valley"]]
    note = "deterministic computation (no seeds)"
    out = []
    if len(origin):
        o = origin.iloc[0]
        err = max(abs(o["h11"]), abs(o["h12"] + 2), abs(o["h22"]), abs(o["eig_min"] + 2), abs(o["eig_max"] - 2))
        out.append(stats.claim(ID, "origin_hessian", "At (0, 0) the Hessian is [[0, -2], [-2, 0]] with eigenvalues +2 and -2",
                                 "max |autograd - [[0,-2],[-2,0]]| and |eigenvalues - (-2, +2)|", stats.exact(err), tol, "<",
                                 paper_value="[[0,-2],[-2,0]], eigenvalues +-2", min_n=1, kind="check", note=note))
        out.append(stats.claim(ID, "origin_is_saddle", "(0, 0) is a saddle point: eigenvalues of both signs",
                                 "lambda_min * lambda_max at (0, 0)", stats.exact(o["eig_min"] * o["eig_max"]), 0.0, "<",
                                 paper_value=-4.0, min_n=1, kind="check", note=f"label from autograd: {o['label']}"))
    else:
        out.append(stats.claim(ID, "origin_is_saddle", "(0, 0) is a saddle point", "origin found", stats.missing(),
                                 min_n=1, kind="check", note="Newton never converged to the origin"))
    vmin = float(valley["label"].eq("local minimum (flat valley)").mean()) if len(valley) else np.nan
    out.append(stats.claim(ID, "valley_is_flat_minimum",
                             "Every critical point with w1 w2 = 1 is a minimum with one zero eigenvalue (a flat valley)",
                             "fraction of valley critical points labelled minimum with exactly one zero eigenvalue",
                             stats.exact(vmin if not (valley["eig_min"].abs() > eig_tol).any() else 0.0), 0.999, ">",
                             paper_value=1.0, min_n=1, kind="check",
                             note=f"{len(valley)} valley points found; max |zero eigenvalue| {valley['eig_min'].abs().max():.1e}; "
                                  f"other eigenvalue {valley['eig_max'].min():.2f} to {valley['eig_max'].max():.2f} = 2(w1^2 + w2^2)"))
    err = float(table["closed_form_error"].max())
    out.append(stats.claim(ID, "autograd_matches_closed_form", "The autograd Hessian agrees with the closed form to 1e-6",
                             "max |H_autograd - H_closed_form| over critical points and a 7x7 grid", stats.exact(err), tol, "<",
                             min_n=1, kind="check", note=note))
    esc = table[table["kind"] == "escape"].sort_values("t")
    first = esc.iloc[0]
    out.append(stats.claim(ID, "escape_lowers_loss",
                             "From the saddle, a step along the eigenvector of the negative eigenvalue lowers the loss",
                             f"L(t u) - L(0) at the smallest step t = {first['t']:g}", stats.exact(first["loss"] - first["loss_origin"]),
                             0.0, "<", min_n=1, kind="check", note=f"all steps: {', '.join(f'{l:.3f}' for l in esc['loss'])} vs L(0) = 1"))
    g0 = table[table["kind"] == "gd_origin"]
    moved = float(np.hypot(g0["w1"], g0["w2"]).max())
    out.append(stats.claim(ID, "gd_stays_at_origin", "Gradient descent started exactly at the saddle does not move",
                             f"largest distance from (0, 0) over {len(g0) - 1} SGD steps", stats.exact(moved), 1e-12, "<",
                             min_n=1, kind="check", note=f"loss stays {g0['loss'].iloc[-1]:.3f}"))
    return out
