"""Second-order tools: Hessian-vector products, the exact Hessian, Lanczos, critical points.

Everything here is about the Hessian of the *mean loss of a model over a fixed dataset* with
respect to all trainable parameters, flattened into one vector in `model.parameters()` order.

- `hvp` / `hvp_fn`: Hessian-vector products by double backward (Pearlmutter): the gradient graph
  is built once and differentiated again against any number of vectors (batched with
  `is_grads_batched`, so a block of HVPs costs about one vectorised backward pass).
- `full_hessian`: the exact P x P Hessian from blocks of `chunk` HVPs (memory bounded by the
  block, not by P^2 intermediate graphs); `eigenvalues` by `torch.linalg.eigvalsh` in float64.
- `lanczos`: extreme eigenvalues (top, bottom or both) from HVPs only, with full
  re-orthogonalisation (cheap at <= a few hundred iterations, and it keeps the Ritz values
  free of ghost copies) and a residual-based stopping rule, for nets too large for the full Hessian.
- `find_critical_point`: drives the gradient norm down on purpose after training (damped Newton /
  Levenberg-Marquardt on the gradient, or L-BFGS on ||grad||^2) and reports the norm reached.
- `minimum_ratio`: the lecture's "minimum ratio" with an explicit tolerance for zero eigenvalues.

Models are analysed in eval mode (`analysis_mode`): batch norm then uses its running statistics,
so the loss is a fixed function of the parameters (in train mode every forward pass would
re-normalise with batch statistics and the "Hessian" would depend on the batch composition);
dropout is off. Callers that report BN models must say so.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from trainfail.core import phases
from trainfail.training.train import loss_fn

HVP = Callable[[torch.Tensor], torch.Tensor]  # (P,) -> (P,), or (m, P) -> (m, P) for a block


# --------------------------------------------------------------------------- basics

def parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in parameters(model))


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in parameters(model)])


@torch.no_grad()
def set_flat_parameters(model: nn.Module, flat: torch.Tensor) -> None:
    i = 0
    for p in parameters(model):
        n = p.numel()
        p.copy_(flat[i:i + n].view_as(p))
        i += n


@contextlib.contextmanager
def analysis_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration (BN uses running statistics, dropout off), restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def as_dtype(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None):
    """A copy of (model, x, y) in `dtype` (floating tensors only), or the originals if None."""
    if dtype is None:
        return model, x, y
    m = copy.deepcopy(model).to(dtype)
    x = x.to(dtype) if x.is_floating_point() else x
    y = y.to(dtype) if y.is_floating_point() else y
    return m, x, y


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
              weight_decay: float = 0.0) -> torch.Tensor:
    """The mean loss over (x, y), plus (weight_decay / 2) ||w||^2 when weight_decay > 0."""
    value = loss_fn(loss)(model(x), y)
    if weight_decay:
        value = value + 0.5 * weight_decay * sum(p.pow(2).sum() for p in parameters(model))
    return value


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             create_graph: bool = False, weight_decay: float = 0.0) -> torch.Tensor:
    """The flat gradient of the mean loss (the model's mode is left as the caller set it)."""
    params = parameters(model)
    grads = torch.autograd.grad(mean_loss(model, x, y, loss, weight_decay), params, create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


# --------------------------------------------------------------------------- HVPs

def hvp_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
           weight_decay: float = 0.0) -> HVP:
    """A Hessian-vector product closure at the model's current parameters (eval mode).

    The gradient graph is built once here; each call differentiates it again. A call with a
    (m, P) block returns the m products in one batched backward pass. Parameters must not change
    while the closure is in use (build a new one after an update).
    """
    params = parameters(model)
    with analysis_mode(model):
        g = gradient(model, x, y, loss, create_graph=True, weight_decay=weight_decay)

    def apply(v: torch.Tensor) -> torch.Tensor:
        v = v.to(g.dtype)
        batched = v.dim() == 2
        out = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True, is_grads_batched=batched)
        return torch.cat([o.reshape(v.shape[0], -1) if batched else o.reshape(-1) for o in out], dim=-1)

    return apply


def hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
        loss: str = "cross_entropy") -> torch.Tensor:
    """H v for the mean loss over (x, y) at the current parameters; v flat (P,) or a block (m, P)."""
    return hvp_fn(model, x, y, loss)(v)


# --------------------------------------------------------------------------- the full Hessian

@phases.timed("curvature")
def hessian_from_hvp(apply: HVP, dim: int, chunk: int = 256, dtype=torch.float64,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """The dim x dim matrix of a symmetric operator, `chunk` columns (HVPs) at a time, symmetrised."""
    H = torch.empty(dim, dim, dtype=dtype, device=device)
    for start in range(0, dim, chunk):
        stop = min(start + chunk, dim)
        eye = torch.zeros(stop - start, dim, dtype=dtype, device=device)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        H[start:stop] = apply(eye).to(dtype)
    return 0.5 * (H + H.T)  # exact in exact arithmetic; removes round-off asymmetry before eigvalsh


def full_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
                 chunk: int = 64, dtype: torch.dtype | None = torch.float64,
                 weight_decay: float = 0.0) -> torch.Tensor:
    """The exact Hessian (P x P) of the mean loss over (x, y), in eval mode, from chunked HVPs.

    dtype: compute in this precision on a copy of the model (float64 by default, so that
    "zero" eigenvalues are zero to ~1e-12 rather than ~1e-6); None uses the model as it is.
    Memory: the P x P result plus one block of `chunk` HVPs. Meant for P up to ~10,000.
    """
    m, x, y = as_dtype(model, x, y, dtype)
    p0 = parameters(m)[0]
    return hessian_from_hvp(hvp_fn(m, x, y, loss, weight_decay), num_parameters(m), chunk, dtype or p0.dtype, p0.device)


@phases.timed("curvature")
def eigenvalues(H: torch.Tensor) -> np.ndarray:
    """All eigenvalues of a symmetric matrix, ascending, computed in float64 (eigvalsh)."""
    return torch.linalg.eigvalsh(H.detach().to(torch.float64).cpu()).numpy()


def spectrum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             chunk: int = 256, weight_decay: float = 0.0) -> np.ndarray:
    """All Hessian eigenvalues (ascending) of the mean loss, float64, eval mode."""
    return eigenvalues(full_hessian(model, x, y, loss, chunk, weight_decay=weight_decay))


def block_hessians(apply: HVP, members: int, dim: int, chunk: int = 256, dtype=torch.float64,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The (members, dim, dim) Hessians of a sum of independent objectives (an ensemble).

    When parameters are stacked as (members, dim) and the objective is a sum over members of
    functions of their own parameters, the Hessian is block diagonal, and one HVP with the same
    unit vector e_j in every member's slot returns column j of every block: dim HVPs in all,
    not members * dim. `apply` takes (m, members, dim) and returns the same shape.
    """
    H = torch.empty(members, dim, dim, dtype=dtype, device=device)
    for start in range(0, dim, chunk):
        stop = min(start + chunk, dim)
        V = torch.zeros(stop - start, members, dim, dtype=dtype, device=device)
        V[torch.arange(stop - start), :, torch.arange(start, stop)] = 1.0
        H[:, start:stop] = apply(V).to(dtype).transpose(0, 1)
    return 0.5 * (H + H.transpose(1, 2))


# --------------------------------------------------------------------------- Lanczos

@dataclass
class LanczosResult:
    values: np.ndarray          # "top": descending; "bottom": ascending; "both": top k then bottom k
    residuals: np.ndarray       # |beta_m * last component of the Ritz vector| for each value
    n_hvp: int                  # Hessian-vector products used
    converged: bool
    vectors: torch.Tensor | None = None  # (len(values), dim) Ritz vectors when asked for

    @property
    def relative_residuals(self) -> np.ndarray:
        """||H s - theta s|| / |theta| per value: a Ritz value is within about this fraction of an
        eigenvalue (and, for an isolated top eigenvalue, much closer). Report it beside the value."""
        return self.residuals / np.maximum(np.abs(self.values), 1e-300)


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices into ascending Ritz values theta for the requested end(s)."""
    k = min(k, len(theta))
    top = np.arange(len(theta) - 1, len(theta) - 1 - k, -1)
    bottom = np.arange(k)
    if which == "top":
        return top
    if which == "bottom":
        return bottom
    if which == "both":
        return np.concatenate([top, bottom])
    raise ValueError(f"which must be 'top', 'bottom' or 'both', got {which!r}")


@phases.timed("curvature")
def lanczos(apply: HVP, dim: int, k: int = 1, iters: int = 100, which: str = "top", seed: int = 0,
            tol: float = 1e-6, dtype=torch.float64, device: torch.device | str = "cpu",
            return_vectors: bool = False, start: torch.Tensor | None = None) -> LanczosResult:
    """The k extreme eigenvalues of a symmetric operator from at most `iters` products.

    Lanczos with full re-orthogonalisation (classical Gram-Schmidt twice): in floating point,
    plain Lanczos loses orthogonality exactly when a Ritz value converges and then produces
    spurious copies of it. Stops as soon as every wanted Ritz pair has residual
    <= tol * max(|theta|, 1e-12 * ||T||) (the residual ||H s - theta s|| is |beta_m * s_m|,
    free to compute), or when the Krylov space is exhausted (then the values are exact).
    The basis (iters x dim) is kept in `dtype` on `device`.

    start: the first Lanczos vector (normalised here) in place of a random one. Warm-starting
    with the previous top Ritz vector when the operator changes slowly (the Hessian along a
    training run, tracked every few steps) makes the tracking cost a few products, not tens.
    """
    if start is not None and float(torch.linalg.vector_norm(start)) > 0:
        q = start.detach().to(device=device, dtype=dtype).reshape(-1).clone()
    else:
        gen = torch.Generator().manual_seed(seed)
        q = torch.randn(dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    q /= torch.linalg.vector_norm(q)
    Q = torch.empty(min(iters, dim), dim, dtype=dtype, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    n = 0
    theta = S = None
    converged = False
    for j in range(min(iters, dim)):
        Q[j] = q
        w = apply(q).to(dtype)
        n += 1
        alpha = float(torch.dot(w, q))
        alphas.append(alpha)
        w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
        w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
        beta = float(torch.linalg.vector_norm(w))
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, S = np.linalg.eigh(T)
        idx = _wanted(theta, k, which)
        res = np.abs(beta * S[-1, idx])
        scale = np.maximum(np.abs(theta[idx]), 1e-12 * np.abs(theta).max())
        exhausted = beta <= 1e-12 * max(np.abs(theta).max(), 1e-300) or j + 1 == dim
        if (len(alphas) >= k and np.all(res <= tol * scale)) or exhausted:
            converged = True
            break
        betas.append(beta)
        q = w / beta
    idx = _wanted(theta, k, which)
    m = len(alphas)
    vectors = (torch.as_tensor(S[:, idx].T.copy(), dtype=dtype, device=device) @ Q[:m]) if return_vectors else None
    return LanczosResult(values=theta[idx].copy(), residuals=np.abs(beta * S[-1, idx]), n_hvp=n,
                         converged=converged, vectors=vectors)


def top_lanczos(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = 1,
                loss: str = "cross_entropy", iters: int = 100, tol: float = 1e-6, seed: int = 0,
                dtype: torch.dtype | None = None) -> LanczosResult:
    """Lanczos for the k largest Hessian eigenvalues of the mean loss over (x, y), eval mode, with
    the residuals and the convergence flag (converged: every relative residual <= tol within
    `iters` products), which a caller that reports the values reports too.

    Memory is iters x P for the basis, never P x P. dtype None works in the model's own precision
    (float32 nets: relative accuracy ~1e-5 at best); float64 copies it.
    """
    m, x, y = as_dtype(model, x, y, dtype)
    p0 = parameters(m)[0]
    return lanczos(hvp_fn(m, x, y, loss), num_parameters(m), k, iters, "top", seed, tol,
                   dtype=p0.dtype, device=p0.device)


def top_eigenvalues(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = 1,
                    loss: str = "cross_entropy", iters: int = 100, tol: float = 1e-6, seed: int = 0,
                    dtype: torch.dtype | None = None) -> np.ndarray:
    """The k largest Hessian eigenvalues (descending) of the mean loss over (x, y), eval mode
    (`top_lanczos(...).values`; use top_lanczos where the values are reported)."""
    return top_lanczos(model, x, y, k, loss, iters, tol, seed, dtype).values


def min_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
                   iters: int = 100, tol: float = 1e-6, seed: int = 0, dtype: torch.dtype | None = None) -> float:
    """The most negative (smallest algebraic) Hessian eigenvalue of the mean loss, eval mode."""
    m, x, y = as_dtype(model, x, y, dtype)
    p0 = parameters(m)[0]
    r = lanczos(hvp_fn(m, x, y, loss), num_parameters(m), 1, iters, "bottom", seed, tol,
                dtype=p0.dtype, device=p0.device)
    return float(r.values[0])


# --------------------------------------------------------------------------- the minimum ratio

def minimum_ratio(eigs, tol: float = 1e-6, relative: bool = True) -> dict:
    """The lecture's minimum ratio = (# positive eigenvalues) / (# eigenvalues), two ways.

    An eigenvalue counts as zero when |lambda| <= tol * max|lambda| (relative=True) or
    |lambda| <= tol (relative=False). Exact zeros are common (symmetries, dead units, the flat
    valley of the toy loss) and whether they count changes the ratio a lot, so both are reported:
    ratio_all = n_pos / n (zeros count as not positive) and ratio_nonzero = n_pos / (n_pos + n_neg).
    """
    e = np.asarray(eigs, dtype=float)
    scale = float(np.abs(e).max()) if (relative and len(e)) else 1.0
    zero_tol = tol * scale
    n_pos, n_neg = int((e > zero_tol).sum()), int((e < -zero_tol).sum())
    n = len(e)
    n_zero = n - n_pos - n_neg
    return {"n": n, "n_pos": n_pos, "n_neg": n_neg, "n_zero": n_zero, "zero_tol": zero_tol,
            "ratio_all": n_pos / n if n else math.nan,
            "ratio_nonzero": n_pos / (n_pos + n_neg) if n_pos + n_neg else math.nan}


def classify(eigs, tol: float = 1e-6) -> str:
    """The second-order test from Hessian eigenvalues (|lambda| <= tol counts as zero):
    'local minimum' (all > 0), 'local maximum' (all < 0), 'saddle' (both signs), and, when some
    are zero, 'degenerate minimum?' / 'degenerate maximum?' / 'degenerate': the test alone cannot
    decide; the caller must look at the loss around the point (e.g. the toy loss's valley)."""
    e = np.asarray(eigs, dtype=float)
    pos, neg, zero = (e > tol).any(), (e < -tol).any(), (np.abs(e) <= tol).any()
    if pos and neg:
        return "saddle"
    if zero:
        return "degenerate minimum?" if pos else "degenerate maximum?" if neg else "degenerate"
    return "local minimum" if pos else "local maximum"


# --------------------------------------------------------------------------- critical points

@dataclass
class CriticalPoint:
    method: str
    loss_start: float
    grad_norm_start: float
    loss: float
    grad_norm: float                  # ||grad|| reached: the evidence that this is a critical point
    iterations: int
    converged: bool                   # grad_norm <= tol
    history: list[dict] = field(default_factory=list)  # one {iteration, loss, grad_norm} per iteration


LossGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # w (S, P) -> loss (S,), grad (S, P)


@phases.timed("curvature")
def newton_on_gradient(w: torch.Tensor, loss_grad: LossGrad, hessians: Callable[[torch.Tensor], torch.Tensor],
                       max_iter: int = 100, tol: float = 1e-9, damping: float = 1e-3,
                       max_tries: int = 30, acceleration: bool = False,
                       fd_step: float = 0.1, max_accel: float = 0.75) -> tuple[torch.Tensor, list[CriticalPoint]]:
    """Levenberg-Marquardt on grad(w) = 0 for S independent members at once (w is (S, P)).

    The gradient is the residual and the Hessian its Jacobian, so the step solves
    min_d ||g + H d||^2 + mu ||d||^2:  d = -(H^2 + mu I)^-1 H g, through H = U diag(e) U^T,
    with mu = lambda * max|e|^2 per member. A step is kept only if it lowers ||g||; then lambda
    shrinks 4x, else it grows 8x and the step is retried (at most max_tries times; a member that
    cannot lower ||g|| any more stops: it sits in a "gradient-flat" region where g lies in the
    near-null space of H, Frye et al. 2021). Near a non-degenerate critical point of any type,
    minimum or saddle, this is Newton's method and converges quadratically; zero eigenvalues
    (symmetries, dead units) are handled by the damping. hessians(w) -> (S, P, P).

    acceleration: geodesic acceleration (Transtrum & Sethna 2012), for sloppy problems, where
    plain LM creeps along a curved valley with a short step per iteration (hundreds of iterations
    that lower ||g|| linearly). The step v gets a second-order correction a / 2 with
    a = -(H^2 + mu I)^-1 H g_vv, g_vv = (2 / h) ((g(w + h v) - g(w)) / h - H v) the directional second
    derivative of the residual (one more gradient); it is used when 2 ||a|| <= max_accel ||v||,
    and the plain step is tried when the corrected one does not lower ||g||.
    Every step depends on (g, H) only through H^2, H g and ||g||, which are the same for L and -L:
    the search has no preference for minima over maxima or saddles.
    """
    w = w.detach().clone()
    S = w.shape[0]
    value, g = loss_grad(w)
    gn = torch.linalg.vector_norm(g, dim=1)
    histories = [[{"iteration": 0, "loss": float(value[s]), "grad_norm": float(gn[s])}] for s in range(S)]
    start_loss, start_gn = value.clone(), gn.clone()
    lam = torch.full((S,), float(damping), dtype=torch.float64)
    active = gn > tol
    iterations = torch.zeros(S, dtype=torch.long)
    for it in range(1, max_iter + 1):
        # only the members still searching are evaluated: the members are independent, and late
        # iterations typically serve a few stragglers
        idx = torch.nonzero(active).squeeze(1)
        if len(idx) == 0:
            break
        wa, ga, va, gna, la = w[idx], g[idx], value[idx], gn[idx], lam[idx]
        e, U = torch.linalg.eigh(hessians(wa).to(torch.float64))
        gu = (U.transpose(1, 2) @ ga.to(torch.float64).unsqueeze(-1)).squeeze(-1)
        scale = e.abs().amax(dim=1).clamp_min(1e-12) ** 2
        trying = torch.ones(len(idx), dtype=torch.bool)
        for _ in range(max_tries):
            t = torch.nonzero(trying).squeeze(1)
            Ut = U[t]
            filt = e[t] / (e[t] ** 2 + (la[t] * scale[t]).unsqueeze(1))  # (H^2 + mu I)^-1 H in the eigenbasis
            du = -filt * gu[t]
            d = (Ut @ du.unsqueeze(-1)).squeeze(-1).to(w.dtype)
            candidates = [d]
            if acceleration:
                _, g_h = loss_grad(wa[t] + fd_step * d)
                Hd = (Ut @ (e[t] * du).unsqueeze(-1)).squeeze(-1)
                g_vv = (2.0 / fd_step) * ((g_h - ga[t]) / fd_step - Hd)
                a = -(Ut @ (filt * (Ut.transpose(1, 2) @ g_vv.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)).squeeze(-1)
                small = 2 * torch.linalg.vector_norm(a, dim=1) <= max_accel * torch.linalg.vector_norm(d, dim=1)
                if bool(small.any()):
                    candidates = [torch.where(small[:, None], d + 0.5 * a.to(w.dtype), d), d]
            ok = torch.zeros(len(t), dtype=torch.bool)
            for c, step in enumerate(candidates):  # per member, the first that lowers ||g|| wins
                w_c = wa[t] + step
                v_c, g_c = loss_grad(w_c)
                gn_c = torch.linalg.vector_norm(g_c, dim=1)
                take = ~ok & torch.isfinite(v_c) & (gn_c < gna[t])
                if c == 0:
                    w_try, v_try, g_try, gn_try = w_c, v_c, g_c, gn_c
                else:
                    w_try, g_try = torch.where(take[:, None], w_c, w_try), torch.where(take[:, None], g_c, g_try)
                    v_try, gn_try = torch.where(take, v_c, v_try), torch.where(take, gn_c, gn_try)
                ok = ok | take
                if bool(ok.all()):
                    break
            k = t[ok]
            wa[k], ga[k], va[k], gna[k] = w_try[ok], g_try[ok], v_try[ok], gn_try[ok]
            la[t] = torch.where(ok, (la[t] / 4).clamp_min(1e-14), la[t] * 8)
            trying[k] = False
            if not bool(trying.any()):
                break
        w[idx], g[idx], value[idx], gn[idx], lam[idx] = wa, ga, va, gna, la
        moved = idx[~trying]  # the others could not lower ||g||: stalled
        iterations[moved] = it
        for s, v, n in zip(moved.tolist(), value[moved].tolist(), gn[moved].tolist()):
            histories[s].append({"iteration": it, "loss": v, "grad_norm": n})
        active[idx] = ~trying & (gna > tol)
    points = [CriticalPoint("newton", float(start_loss[s]), float(start_gn[s]), float(value[s]), float(gn[s]),
                            int(iterations[s]), bool(gn[s] <= tol), histories[s]) for s in range(S)]
    return w, points


def _loss_grad(model, x, y, loss, weight_decay: float = 0.0) -> tuple[float, torch.Tensor]:
    with analysis_mode(model):
        params = parameters(model)
        value = mean_loss(model, x, y, loss, weight_decay)
        g = torch.autograd.grad(value, params)
    return float(value.detach()), torch.cat([t.reshape(-1) for t in g]).detach()


@phases.timed("curvature")
def find_critical_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "mse",
                        method: str = "newton", max_iter: int = 100, tol: float = 1e-9,
                        damping: float = 1e-3, chunk: int = 256, weight_decay: float = 0.0) -> CriticalPoint:
    """Drive the gradient norm of the mean loss to zero on purpose, in place, in eval mode.

    Gradient descent slows down long before the gradient vanishes, so "training ended" is not a
    critical point; here the gradient itself is the residual driven to zero:
      method="newton": `newton_on_gradient` (Levenberg-Marquardt with the exact Hessian; finds
        saddles as readily as minima). Needs the full Hessian (P <~ 10^4).
      method="lbfgs": L-BFGS on 0.5 ||g||^2, whose gradient H g is one HVP: for larger nets.
    Work in float64 (pass a float64 model): float32 round-off floors ||g|| near 1e-6.
    """
    if method == "newton":
        def loss_grad(w):
            set_flat_parameters(model, w[0])
            value, g = _loss_grad(model, x, y, loss, weight_decay)
            return torch.tensor([value], dtype=torch.float64), g.unsqueeze(0)

        def hessians(w):
            set_flat_parameters(model, w[0])
            return full_hessian(model, x, y, loss, chunk, dtype=None, weight_decay=weight_decay).unsqueeze(0)

        w, points = newton_on_gradient(flat_parameters(model).unsqueeze(0), loss_grad, hessians, max_iter, tol, damping)
        set_flat_parameters(model, w[0])
        return points[0]
    if method != "lbfgs":
        raise ValueError(f"method must be 'newton' or 'lbfgs', got {method!r}")
    loss0, g0 = _loss_grad(model, x, y, loss, weight_decay)
    params = parameters(model)
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=0.0)

    def closure():
        opt.zero_grad()
        with analysis_mode(model):
            gr = gradient(model, x, y, loss, create_graph=True, weight_decay=weight_decay)
        objective = 0.5 * gr.pow(2).sum()
        objective.backward()
        return objective

    opt.step(closure)
    it = int(opt.state[params[0]].get("n_iter", max_iter))
    value, g = _loss_grad(model, x, y, loss, weight_decay)
    gn0, gn = float(torch.linalg.vector_norm(g0)), float(torch.linalg.vector_norm(g))
    history = [{"iteration": 0, "loss": loss0, "grad_norm": gn0}, {"iteration": it, "loss": value, "grad_norm": gn}]
    return CriticalPoint("lbfgs", loss0, gn0, value, gn, it, gn <= tol, history)
