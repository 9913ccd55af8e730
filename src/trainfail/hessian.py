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

from .train import loss_fn

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


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy") -> torch.Tensor:
    return loss_fn(loss)(model(x), y)


def gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             create_graph: bool = False) -> torch.Tensor:
    """The flat gradient of the mean loss (the model's mode is left as the caller set it)."""
    params = parameters(model)
    grads = torch.autograd.grad(mean_loss(model, x, y, loss), params, create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


# --------------------------------------------------------------------------- HVPs

def hvp_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy") -> HVP:
    """A Hessian-vector product closure at the model's current parameters (eval mode).

    The gradient graph is built once here; each call differentiates it again. A call with a
    (m, P) block returns the m products in one batched backward pass. Parameters must not change
    while the closure is in use (build a new one after an update).
    """
    params = parameters(model)
    with analysis_mode(model):
        g = gradient(model, x, y, loss, create_graph=True)

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
                 chunk: int = 256, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """The exact Hessian (P x P) of the mean loss over (x, y), in eval mode, from chunked HVPs.

    dtype: compute in this precision on a copy of the model (float64 by default, so that
    "zero" eigenvalues are zero to ~1e-12 rather than ~1e-6); None uses the model as it is.
    Memory: the P x P result plus one block of `chunk` HVPs. Meant for P up to ~10,000.
    """
    m, x, y = as_dtype(model, x, y, dtype)
    p0 = parameters(m)[0]
    return hessian_from_hvp(hvp_fn(m, x, y, loss), num_parameters(m), chunk, dtype or p0.dtype, p0.device)


def eigenvalues(H: torch.Tensor) -> np.ndarray:
    """All eigenvalues of a symmetric matrix, ascending, computed in float64 (eigvalsh)."""
    return torch.linalg.eigvalsh(H.detach().to(torch.float64).cpu()).numpy()


def spectrum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             chunk: int = 256) -> np.ndarray:
    """All Hessian eigenvalues (ascending) of the mean loss, float64, eval mode."""
    return eigenvalues(full_hessian(model, x, y, loss, chunk))


# --------------------------------------------------------------------------- Lanczos

@dataclass
class LanczosResult:
    values: np.ndarray          # "top": descending; "bottom": ascending; "both": top k then bottom k
    residuals: np.ndarray       # |beta_m * last component of the Ritz vector| for each value
    n_hvp: int                  # Hessian-vector products used
    converged: bool
    vectors: torch.Tensor | None = None  # (len(values), dim) Ritz vectors when asked for


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


def lanczos(apply: HVP, dim: int, k: int = 1, iters: int = 100, which: str = "top", seed: int = 0,
            tol: float = 1e-6, dtype=torch.float64, device: torch.device | str = "cpu",
            return_vectors: bool = False) -> LanczosResult:
    """The k extreme eigenvalues of a symmetric operator from at most `iters` products.

    Lanczos with full re-orthogonalisation (classical Gram-Schmidt twice): in floating point,
    plain Lanczos loses orthogonality exactly when a Ritz value converges and then produces
    spurious copies of it. Stops as soon as every wanted Ritz pair has residual
    <= tol * max(|theta|, 1e-12 * ||T||) (the residual ||H s - theta s|| is |beta_m * s_m|,
    free to compute), or when the Krylov space is exhausted (then the values are exact).
    The basis (iters x dim) is kept in `dtype` on `device`.
    """
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


def top_eigenvalues(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = 1,
                    loss: str = "cross_entropy", iters: int = 100, tol: float = 1e-6, seed: int = 0,
                    dtype: torch.dtype | None = None) -> np.ndarray:
    """The k largest Hessian eigenvalues (descending) of the mean loss over (x, y), eval mode.

    Lanczos on HVPs; memory is iters x P for the basis, never P x P. dtype None works in the
    model's own precision (float32 nets: relative accuracy ~1e-5 at best); float64 copies it.
    """
    m, x, y = as_dtype(model, x, y, dtype)
    p0 = parameters(m)[0]
    r = lanczos(hvp_fn(m, x, y, loss), num_parameters(m), k, iters, "top", seed, tol,
                dtype=p0.dtype, device=p0.device)
    return r.values


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


def _loss_grad(model, x, y, loss) -> tuple[float, torch.Tensor]:
    with analysis_mode(model):
        params = parameters(model)
        value = mean_loss(model, x, y, loss)
        g = torch.autograd.grad(value, params)
    return float(value.detach()), torch.cat([t.reshape(-1) for t in g]).detach()


def find_critical_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "mse",
                        method: str = "newton", max_iter: int = 100, tol: float = 1e-9,
                        damping: float = 1e-3, chunk: int = 256) -> CriticalPoint:
    """Drive the gradient norm of the mean loss to zero on purpose, in place, in eval mode.

    Gradient descent stalls long before the gradient vanishes, so "training ended" is not a
    critical point. Here the gradient itself is the residual to zero:
      method="newton": Levenberg-Marquardt on g(w) = 0, whose Jacobian is the Hessian H:
        d = -(H^2 + lambda I)^-1 H g (through H's eigendecomposition), lambda shrinks after a step
        that lowers ||g|| and grows otherwise. Near a non-degenerate critical point of ANY type
        (minimum or saddle) this is Newton's method (quadratic convergence); the damping handles
        the zero eigenvalues of symmetric or dead directions. Needs the full Hessian (P <~ 10^4).
      method="lbfgs": L-BFGS on 0.5 ||g||^2, whose gradient H g is one HVP: for larger nets.
    Work in float64 (pass a float64 model): float32 round-off floors ||g|| near 1e-6.
    """
    loss0, g0 = _loss_grad(model, x, y, loss)
    history = [{"iteration": 0, "loss": loss0, "grad_norm": float(torch.linalg.vector_norm(g0))}]
    value, g = loss0, g0
    it = 0
    if method == "newton":
        lam = damping
        for it in range(1, max_iter + 1):
            gn = float(torch.linalg.vector_norm(g))
            if gn <= tol:
                it -= 1
                break
            e, U = torch.linalg.eigh(full_hessian(model, x, y, loss, chunk, dtype=None).to(torch.float64))
            gu = U.T @ g.to(torch.float64)
            w0 = flat_parameters(model)
            for _ in range(30):  # grow the damping until the step lowers ||g||
                d = -(U @ (e / (e ** 2 + lam * max(float(e.abs().max()), 1e-12) ** 2) * gu))
                set_flat_parameters(model, w0 + d.to(w0.dtype))
                new_value, new_g = _loss_grad(model, x, y, loss)
                if math.isfinite(new_value) and float(torch.linalg.vector_norm(new_g)) < gn:
                    value, g = new_value, new_g
                    lam = max(lam / 4, 1e-14)
                    break
                lam *= 8
            else:
                set_flat_parameters(model, w0)
                break
            history.append({"iteration": it, "loss": value, "grad_norm": float(torch.linalg.vector_norm(g))})
    elif method == "lbfgs":
        params = parameters(model)
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=50, line_search_fn="strong_wolfe",
                                tolerance_grad=0.0, tolerance_change=0.0)

        def closure():
            opt.zero_grad()
            with analysis_mode(model):
                gr = gradient(model, x, y, loss, create_graph=True)
            objective = 0.5 * gr.pow(2).sum()
            objective.backward()
            return objective

        opt.step(closure)
        it = opt.state[opt._params[0]].get("n_iter", max_iter)
        value, g = _loss_grad(model, x, y, loss)
        history.append({"iteration": it, "loss": value, "grad_norm": float(torch.linalg.vector_norm(g))})
    else:
        raise ValueError(f"method must be 'newton' or 'lbfgs', got {method!r}")
    gn = float(torch.linalg.vector_norm(g))
    return CriticalPoint(method, loss0, history[0]["grad_norm"], value, gn, it, gn <= tol, history)
