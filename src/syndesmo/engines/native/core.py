"""The fit itself, shared by ``fit_native`` and ``fit_many``: layout in, arrays out.

For every replicate of a ``Layout``: logistic regression (θ = 0) as the start and as
the boundary candidate, Newton on the Laplace likelihood (exact Hessian), then — for
``nagq > 1`` — quasi-Newton on the quadrature likelihood started from the Laplace
Hessian, an L-BFGS-B fallback where Newton breaks down, and the Hessian at the
estimates for the standard errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, xlogy

from syndesmo.engines.native.newton import final_hessian, newton_maximise
from syndesmo.engines.native.quadrature import Layout, cross, logistic, loglik_and_grad

SNAP_TOL = 1e-5  # |θ| below this: compare with the θ = 0 (plain logistic) solution
THETA_START = 1.0  # lme4's default starting value of θ
STAGE1_TOL = 1e-6  # Laplace stage before adaptive quadrature


@dataclass
class CoreFit:
    psi: np.ndarray  # (S, p + 1): β then θ (θ ≥ 0)
    value: np.ndarray  # (S,) approximate log-likelihood without binomial coefficients
    grad: np.ndarray  # (S, p + 1)
    hess: np.ndarray  # (S, p + 1, p + 1)
    vcov: np.ndarray  # (S, p, p)
    theta_se: np.ndarray  # (S,)
    converged: np.ndarray  # (S,)
    message: list[str]
    n_iter: np.ndarray  # (S,)


def glm_irls(layout: Layout, maxiter: int = 50, tol: float = 1e-12) -> np.ndarray:
    """Ordinary logistic regression (θ = 0) for every replicate by IRLS, as R's glm."""
    rep = np.arange(layout.n_reps)
    Xb = layout.design(rep)
    y, m = layout.y, layout.m  # (n, R)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = (y + 0.5) / (m + 1.0)
    eta = np.log(mu / (1.0 - mu))
    beta = np.zeros((layout.n_reps, layout.p))
    ridge = 1e-12 * np.eye(layout.p)
    for _ in range(maxiter):
        w = m * mu * (1.0 - mu)
        off = 0.0 if layout.offset is None else layout.offset
        work = w * (eta - off) + (y - m * mu)
        xtwx = layout.gram(rep, w)
        new = np.linalg.solve(xtwx + ridge, cross(Xb, work)[..., None])[..., 0]
        delta = np.max(np.abs(new - beta))
        beta = new
        eta = layout.eta(Xb, beta)
        mu = logistic(eta, with_softplus=False)[0]
        if delta < tol * (1.0 + np.max(np.abs(beta))):
            break
    return beta


def fit_core(
    layout: Layout,
    nagq: int,
    start: np.ndarray | None,
    tol: float,
    maxiter: int,
) -> CoreFit:
    """Fit every replicate of ``layout``: GLM start → Laplace → (quadrature) → Hessian."""
    S = layout.n_reps
    p = layout.p
    beta_glm = glm_irls(layout)
    if start is None:
        psi0 = np.column_stack([beta_glm, np.full(S, THETA_START)])
    else:
        psi0 = np.broadcast_to(start, (S, p + 1)).astype(float).copy()
        psi0[:, -1] = np.where(psi0[:, -1] == 0.0, 1e-3, psi0[:, -1])  # θ = 0 is stationary

    stage1_tol = max(tol, STAGE1_TOL) if nagq > 1 else tol
    first = newton_maximise(layout, psi0, 1, tol=stage1_tol, maxiter=maxiter)
    res = first
    if nagq > 1:
        res = newton_maximise(
            layout, first.psi, nagq, u0=first.u, tol=tol, maxiter=maxiter, hess0=first.hess
        )
    psi, u = res.psi.copy(), res.u.copy()
    converged = res.converged & ~res.failed
    iters = first.n_iter + (res.n_iter if res is not first else 0)
    decrement = res.decrement.copy()
    notes = [""] * S
    for i in np.flatnonzero(res.failed):
        fb = fallback(layout, i, psi0[i], nagq, tol, maxiter)
        if fb is not None:
            psi[i], u[:, i], converged[i], decrement[i], notes[i] = fb

    u *= np.where(psi[:, -1] < 0, -1.0, 1.0)  # modes are odd in θ
    psi[:, -1] = np.abs(psi[:, -1])
    # Near the boundary the exact θ = 0 optimum (plain logistic regression) is at least
    # as good; lme4's bounded optimiser reports θ = 0 there too.
    near = np.flatnonzero(psi[:, -1] < SNAP_TOL)
    if near.size:
        cand = np.column_stack([beta_glm[near], np.zeros(near.size)])
        zero = np.zeros((layout.n_groups, near.size))
        v_cand, _, _ = loglik_and_grad(layout, near, cand, zero, nagq, grad=False)
        v_here, _, _ = loglik_and_grad(layout, near, psi[near], u[:, near], nagq, grad=False)
        better = v_cand >= v_here - 1e-9
        psi[near[better]] = cand[better]
        u[:, near[better]] = 0.0

    value, grad, hess, u = final_hessian(layout, psi, u, nagq)
    vcov, theta_se = covariances(hess, psi[:, -1])
    converged &= np.isfinite(value)
    messages = []
    with np.errstate(invalid="ignore"):
        gnorms = np.where(
            np.all(np.isfinite(grad), axis=1), np.max(np.abs(grad), axis=1, initial=0.0), math.inf
        )
    for i in range(S):
        gnorm = float(gnorms[i])
        if converged[i]:
            msg = (
                f"converged after {iters[i]} Newton iterations "
                f"(max |gradient| {gnorm:.1e}, decrement {decrement[i]:.1e})"
            )
        elif res.failed[i] or not np.isfinite(value[i]):
            msg = (
                f"line search failed after {iters[i]} Newton iterations: the log-likelihood "
                f"could not be increased (max |gradient| {gnorm:.2e})"
            )
        else:
            msg = (
                f"iteration limit reached (maxiter={maxiter}) with max |gradient| {gnorm:.2e} "
                f"and Newton decrement {decrement[i]:.2e} > tol={tol:g}"
            )
        messages.append(msg + notes[i])
    return CoreFit(psi, value, grad, hess, vcov, theta_se, converged, messages, iters)


def fallback(layout: Layout, i: int, psi0: np.ndarray, nagq: int, tol: float, maxiter: int):
    """L-BFGS-B (θ ≥ 0) on the exact gradient, then Newton, for a replicate where the
    batched Newton iteration broke down. Returns ``None`` if that fails too."""
    from scipy.optimize import minimize

    rep = np.array([i])
    state = {"u": np.zeros((layout.n_groups, 1))}

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        val, grad, st = loglik_and_grad(layout, rep, x[None, :], state["u"], nagq)
        if not (st.converged.all() and np.isfinite(val[0])):
            return math.inf, np.zeros_like(x)
        state["u"] = st.u
        return -float(val[0]), -grad[0]

    x0 = psi0.astype(float).copy()
    x0[-1] = max(abs(x0[-1]), 0.1)
    bounds = [(None, None)] * (x0.size - 1) + [(0.0, None)]
    opt = minimize(
        objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-9},
    )
    if not np.isfinite(opt.fun):
        return None
    start = opt.x.copy()
    start[-1] = max(start[-1], 1e-3)  # θ = 0 is a stationary point of Newton
    pol = newton_maximise(
        layout, start[None, :], nagq, rep=rep, u0=state["u"], tol=tol, maxiter=maxiter
    )
    if pol.converged[0] and not pol.failed[0]:
        note = "; reached by the L-BFGS-B fallback after the Newton line search failed"
        return pol.psi[0], pol.u[:, 0], True, pol.decrement[0], note
    note = f"; L-BFGS-B fallback after the Newton line search failed: {opt.message}"
    return opt.x, state["u"][:, 0], bool(opt.success), math.nan, note


def covariances(hess: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariance of β (and SE of θ) from the Hessian over (β, θ), as lme4's vcov().

    At θ = 0 the cross derivatives vanish (the likelihood is even in θ) and the β block
    is inverted alone, which is what lme4's central differences give there too; the
    same is done when the full information matrix is not positive definite.
    """
    p = hess.shape[1] - 1
    info = -np.nan_to_num(hess, nan=0.0, posinf=0.0, neginf=0.0)
    finite = np.all(np.isfinite(hess), axis=(1, 2))
    full = finite & (theta > 0) & (np.linalg.eigvalsh(info)[:, 0] > 0)
    beta_block = info[:, :p, :p]
    ok_block = finite & (np.linalg.eigvalsh(beta_block)[:, 0] > 0)
    eye = np.eye(p + 1)
    inv_full = np.linalg.inv(np.where(full[:, None, None], info, eye))
    inv_block = np.linalg.inv(np.where(ok_block[:, None, None], beta_block, eye[:p, :p]))
    vcov = np.where(full[:, None, None], inv_full[:, :p, :p], inv_block)
    vcov[~(full | ok_block)] = np.nan
    theta_se = np.where(full, np.sqrt(np.abs(inv_full[:, p, p])), np.nan)
    return 0.5 * (vcov + np.swapaxes(vcov, 1, 2)), theta_se


def constants(y: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate: sum of log binomial coefficients, and saturated log-likelihood."""
    if np.all(m <= 1):  # 0/1 responses (or rows left out): both are exactly zero
        zero = np.zeros(y.shape[:-1])
        return zero, zero
    logc = np.sum(gammaln(m + 1.0) - gammaln(y + 1.0) - gammaln(m - y + 1.0), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.sum(xlogy(y, y / m) + xlogy(m - y, (m - y) / m), axis=-1, where=m > 0)
    return logc, logc + sat


def lme4_loglik(value: np.ndarray, logc: np.ndarray, sat: np.ndarray, nagq: int) -> np.ndarray:
    return value + logc if nagq == 1 else value + logc - sat
