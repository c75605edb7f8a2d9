"""Batched Newton maximisation of the GLMM log-likelihood over ``(β, θ)``.

Many independent problems (replicates) are advanced together, in one vectorised
evaluation per iteration. With the Laplace approximation the Hessian is exact
(``_laplace_hessian``); with quadrature it is either the finite difference of the
exact gradient (``p + 1`` points evaluated together) or a BFGS update started from
the Laplace Hessian. The step is a modified Newton step (eigenvalues of the
negative Hessian replaced by their absolute values, so saddle points such as θ = 0
are left, not approached) with a per-replicate backtracking line search. θ is
unconstrained: the likelihood is even in θ, so the reported SD is ``|θ|`` and the
boundary σ = 0 is an interior stationary point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from syndesmo.engines.native.laplace_hessian import laplace_hessian
from syndesmo.engines.native.quadrature import Layout, loglik_and_grad

FD_STEP = 1e-6  # forward differences of the gradient inside the iterations
FD_STEP_FINAL = 1e-7  # the reported Hessian (truncation error ∝ step)
MAX_STEP = 3.0  # largest change of any parameter in one iteration (log-odds units)
MIN_ALPHA = 1e-9


@dataclass
class NewtonResult:
    """Per-replicate outcome of :func:`newton_maximise` (arrays over replicates)."""

    psi: np.ndarray  # (S, P)
    value: np.ndarray  # (S,)
    grad: np.ndarray  # (S, P)
    hess: np.ndarray  # (S, P, P) Hessian (or its BFGS approximation) at psi
    u: np.ndarray  # (G, S) conditional modes at psi
    n_iter: np.ndarray  # (S,)
    converged: np.ndarray  # (S,) bool
    failed: np.ndarray  # (S,) bool: line search or evaluation broke down
    decrement: np.ndarray  # (S,) Newton decrement at the last evaluated point


def _evaluate_fd(
    layout: Layout,
    rep: np.ndarray,
    psi: np.ndarray,
    u: np.ndarray,
    nagq: int,
    step: float = FD_STEP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Value, gradient, Hessian and modes at ``psi``; the Hessian by forward differences
    of the exact gradient, all ``p + 2`` points of a replicate evaluated together."""
    S, P = psi.shape
    h = step * np.maximum(1.0, np.abs(psi))
    offsets = np.concatenate([np.zeros((S, 1, P)), h[:, :, None] * np.eye(P)], axis=1)
    k = P + 1
    pts = (psi[:, None, :] + offsets).reshape(S * k, P)
    val, grad, st = loglik_and_grad(layout, np.repeat(rep, k), pts, np.repeat(u, k, axis=1), nagq)
    val = val.reshape(S, k)
    grad = grad.reshape(S, k, P)
    hess = (grad[:, 1:, :] - grad[:, :1, :]) / h[:, :, None]
    hess = 0.5 * (hess + np.swapaxes(hess, 1, 2))
    ok = st.converged.reshape(S, k).all(axis=1)
    val = np.where(ok, val[:, 0], np.nan)
    return val, grad[:, 0, :], hess, st.u.reshape(-1, S, k)[:, :, 0]


def evaluate_hessian(
    layout: Layout,
    rep: np.ndarray,
    psi: np.ndarray,
    u: np.ndarray,
    nagq: int,
    step: float = FD_STEP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Value, gradient, Hessian and modes: exact for Laplace, finite differences else."""
    if nagq > 1:
        return _evaluate_fd(layout, rep, psi, u, nagq, step)
    val, grad, st = loglik_and_grad(layout, rep, psi, u, 1)
    hess = laplace_hessian(layout, rep, psi, st)
    return np.where(st.converged, val, np.nan), grad, hess, st.u


def newton_direction(grad: np.ndarray, hess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Modified Newton ascent steps and decrements for a batch of problems."""
    lam, V = np.linalg.eigh(-hess)
    floor = 1e-10 * np.max(np.abs(lam), axis=1, keepdims=True) + 1e-12
    lam = np.maximum(np.abs(lam), floor)
    gv = np.einsum("sij,si->sj", V, grad)
    step = np.einsum("sij,sj->si", V, gv / lam)
    decrement = np.einsum("si,si->s", grad, step)
    big = np.max(np.abs(step), axis=1)
    scale = np.where(big > MAX_STEP, MAX_STEP / np.maximum(big, 1e-300), 1.0)
    return step * scale[:, None], decrement


def _evaluate_center(
    layout: Layout, rep: np.ndarray, psi: np.ndarray, u: np.ndarray, nagq: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    val, grad, st = loglik_and_grad(layout, rep, psi, u, nagq)
    return np.where(st.converged, val, np.nan), grad, st.u


def _bfgs_update(
    info: np.ndarray, step: np.ndarray, grad_old: np.ndarray, grad_new: np.ndarray
) -> np.ndarray:
    """BFGS update of the negative Hessian (kept positive definite: skipped if sᵀy ≤ 0)."""
    yv = grad_old - grad_new  # gradient change of the function being minimised
    sy = np.einsum("si,si->s", step, yv)
    Ns = np.einsum("sij,sj->si", info, step)
    sNs = np.einsum("si,si->s", step, Ns)
    ok = sy > 1e-12 * np.sqrt(np.einsum("si,si->s", yv, yv) * np.einsum("si,si->s", step, step))
    ok &= sNs > 0
    upd = info - np.einsum("si,sj->sij", Ns, Ns) / np.where(ok, sNs, 1.0)[:, None, None]
    upd += np.einsum("si,sj->sij", yv, yv) / np.where(ok, sy, 1.0)[:, None, None]
    return np.where(ok[:, None, None], upd, info)


def newton_maximise(
    layout: Layout,
    psi0: np.ndarray,
    nagq: int,
    *,
    rep: np.ndarray | None = None,
    u0: np.ndarray | None = None,
    tol: float = 1e-10,
    maxiter: int = 100,
    hess0: np.ndarray | None = None,
) -> NewtonResult:
    """Maximise the approximate log-likelihood of every replicate from ``psi0``.

    Without ``hess0`` every iteration uses the finite-difference Hessian (Newton);
    with ``hess0`` (the Hessian of a nearby problem, e.g. the Laplace fit before
    quadrature) only the gradient is evaluated and the Hessian is updated by BFGS.
    Converged means the decrement ``gᵀ(−H)⁻¹g`` (twice the predicted gain of the next
    step) fell below ``tol``; that last step is then taken as well.
    """
    S, P = psi0.shape
    rep = np.arange(S) if rep is None else rep
    quasi = hess0 is not None
    psi = psi0.astype(float).copy()
    u = np.zeros((layout.n_groups, S)) if u0 is None else u0.copy()
    value = np.full(S, -np.inf)
    grad = np.zeros((S, P))
    hess = np.zeros((S, P, P)) if hess0 is None else np.array(hess0, dtype=float)
    step = np.zeros((S, P))
    dec = np.full(S, np.inf)
    alpha = np.ones(S)
    n_iter = np.zeros(S, dtype=int)
    converged = np.zeros(S, dtype=bool)
    failed = np.zeros(S, dtype=bool)
    first = np.ones(S, dtype=bool)

    while True:
        active = np.flatnonzero(~converged & ~failed & (first | (n_iter < maxiter)))
        if active.size == 0:
            break
        trial = psi[active] + alpha[active, None] * step[active]
        if quasi:
            val_t, grad_t, u_t = _evaluate_center(layout, rep[active], trial, u[:, active], nagq)
            hess_t = hess[active]
        else:
            val_t, grad_t, hess_t, u_t = evaluate_hessian(
                layout, rep[active], trial, u[:, active], nagq
            )
        finite = np.isfinite(val_t) & np.all(np.isfinite(grad_t), axis=1)
        finite &= np.all(np.isfinite(hess_t), axis=(1, 2))
        old = value[active]
        accept = finite & (first[active] | (val_t >= old - 1e-10 * (1.0 + np.abs(old))))

        acc = active[accept]
        if acc.size:
            if quasi:
                moved = acc[~first[acc]]
                if moved.size:
                    info = _bfgs_update(
                        -hess[moved],
                        alpha[moved, None] * step[moved],
                        grad[moved],
                        grad_t[accept][~first[acc]],
                    )
                    hess[moved] = -info
            else:
                hess[acc] = hess_t[accept]
            psi[acc] = trial[accept]
            value[acc] = val_t[accept]
            grad[acc] = grad_t[accept]
            u[:, acc] = u_t[:, accept]
            n_iter[acc] += ~first[acc]
            first[acc] = False
            st, dc = newton_direction(grad[acc], hess[acc])
            step[acc] = st
            dec[acc] = dc
            alpha[acc] = 1.0
            conv = acc[dc < tol]
            psi[conv] += step[conv]  # the final (tiny) step
            converged[conv] = True

        rej = active[~accept]
        if rej.size:
            failed[rej[first[rej]]] = True
            alpha[rej] *= 0.5
            failed[rej[alpha[rej] < MIN_ALPHA]] = True
    return NewtonResult(psi, value, grad, hess, u, n_iter, converged, failed, dec)


def final_hessian(
    layout: Layout,
    psi: np.ndarray,
    u: np.ndarray,
    nagq: int,
    rep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Value, gradient, Hessian and modes at the estimates.

    The Laplace Hessian is exact; with quadrature it is the forward difference of the
    exact gradient with a small step (relative error ~1e-7 in the standard errors;
    lme4 differences the deviance itself, to the same end).
    """
    rep = np.arange(psi.shape[0]) if rep is None else rep
    return evaluate_hessian(layout, rep, psi, u, nagq, FD_STEP_FINAL)
