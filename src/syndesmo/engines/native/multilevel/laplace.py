"""Laplace approximation of a logistic GLMM with any nested (+ few crossed) structure.

For parameters ``ψ = (β, θ)`` the joint log density of responses and spherical random
effects is ``h(u) = Σ_i [y_i η_i − m_i log(1 + e^{η_i})] − ½|u|²`` with
``η_i = x_iβ + o_i + Σ_ℓ a_iℓ(θ) · u_{ℓ,g_ℓ(i)}``. The conditional modes ``û``
maximise ``h`` (penalised Newton, lme4's PIRLS, with a step-halving safeguard per
independent block); the Laplace log-likelihood is

    ℓ(ψ) = h(û) − ½ log det H(û),   H = I + Σ_i v_i a_i a_iᵀ,  v_i = m_i μ_i (1 − μ_i).

Its gradient is exact (implicit differentiation of ``û``): with ``lev_i = a_iᵀ H⁻¹ a_i``,
``t_i = H⁻¹ a_i`` at the row's nodes, ``s = H⁻¹ Σ_i v'_i lev_i a_i`` and
``ρ_i = r_i − ½ v'_i lev_i + ½ v_i a_i·s`` (``r_i = y_i − m_i μ_i``, ``v'_i = dv_i/dη_i``):

    ∂ℓ/∂β = Σ_i ρ_i x_i,
    ∂ℓ/∂Λ_ℓ[r, c] = Σ_i z_iℓ[r] (ρ_i u_ℓc − v_i t_iℓc − ½ r_i s_ℓc)   (at the row's node).

Everything is a segment sum over sorted rows, so one evaluation costs O(rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from syndesmo.engines.native.multilevel.tree import (
    Factorization,
    Tree,
    factorize,
    row_quadratic,
    selected_inverse,
    solve,
)
from syndesmo.engines.native.quadrature import logistic

MODE_TOL = 1e-10  # Newton step in u below which the last full step is taken
MODE_MAXITER = 200
MIN_HALVING = 1e-12


@dataclass
class Data:
    """Sorted rows of one model: fixed effects, responses, offset and the tree."""

    X: np.ndarray  # (n, p)
    y: np.ndarray  # (n,)
    m: np.ndarray  # (n,)
    offset: np.ndarray | None  # (n,)
    tree: Tree
    n_theta: int

    @property
    def p(self) -> int:
        return self.X.shape[1]

    def eta_fixed(self, beta: np.ndarray) -> np.ndarray:
        """``Xβ + offset`` for a batch ``beta`` ``(B, p)``: ``(n, B)``."""
        eta = self.X @ beta.T
        return eta if self.offset is None else eta + self.offset[:, None]


@dataclass
class ModeState:
    """Conditional modes and what the likelihood needs at them (one batch)."""

    u: list[np.ndarray]  # per level (G, B, d)
    a: list[np.ndarray]  # per level (n, B, d)
    eta: np.ndarray  # (n, B)
    mu: np.ndarray
    v: np.ndarray
    r: np.ndarray
    ll: np.ndarray  # (n, B) row log-likelihood (without binomial coefficients)
    F: Factorization
    converged: np.ndarray  # (B,)
    n_iter: int


def _eta(tree: Tree, eta0: np.ndarray, a: list[np.ndarray], u: list[np.ndarray], levels):
    eta = eta0.copy()
    for lev in levels:
        eta += np.einsum("nbd,nbd->nb", a[lev], tree.to_rows(lev, u[lev]))
    return eta


def _rows(eta: np.ndarray, y: np.ndarray, m: np.ndarray):
    mu, var, sp = logistic(eta)
    ll = y[:, None] * eta - m[:, None] * sp
    return mu, m[:, None] * var, y[:, None] - m[:, None] * mu, ll


def _unit_h(tree: Tree, ll: np.ndarray, u: list[np.ndarray], levels) -> np.ndarray:
    """``h`` per independent block (the nodes of the first free level): ``(G, B)``."""
    l0 = levels.start
    out = tree.seg_rows(l0, ll)
    for lev in levels:
        pen = 0.5 * np.sum(u[lev] ** 2, axis=-1)
        out = out - tree.seg_nodes(lev, l0, pen)
    return out


def solve_modes(
    tree: Tree,
    eta0: np.ndarray,
    a: list[np.ndarray],
    y: np.ndarray,
    m: np.ndarray,
    u0: list[np.ndarray] | None = None,
    levels: range | None = None,
    tol: float = MODE_TOL,
) -> ModeState:
    """Maximise ``h`` over the random effects of ``levels`` (default all) by Newton.

    ``eta0`` ``(n, B)`` is the fixed part of the linear predictor, including the
    contributions of levels held fixed. Steps are halved per independent block (a node
    of the first free level) until ``h`` does not decrease; once the largest Newton
    step is below ``tol`` the full step is taken and the factorisation recomputed there.
    """
    levels = range(tree.depth) if levels is None else levels
    l0 = levels.start
    B = eta0.shape[1]
    u: list = [None] * tree.depth  # levels outside ``levels`` stay None
    for lev in levels:
        L = tree.levels[lev]
        u[lev] = np.zeros((L.n_nodes, B, L.d)) if u0 is None else u0[lev].copy()
    eta = _eta(tree, eta0, a, u, levels)
    mu, v, r, ll = _rows(eta, y, m)
    h = _unit_h(tree, ll, u, levels)
    converged = np.zeros(B, dtype=bool)
    it = 0
    final = False
    for it in range(1, MODE_MAXITER + 1):  # noqa: B007
        F = factorize(tree, a, v, levels)
        if final:
            converged[:] = True
            break
        grad = [None] * tree.depth
        for lev in levels:
            grad[lev] = tree.seg_rows(lev, r[:, :, None] * a[lev]) - u[lev]
        delta = solve(tree, F, grad, levels)
        big = max(float(np.max(np.abs(delta[lev]), initial=0.0)) for lev in levels)
        if not np.isfinite(big):
            break
        if big < tol:
            for lev in levels:
                u[lev] = u[lev] + delta[lev]
            eta = _eta(tree, eta0, a, u, levels)
            mu, v, r, ll = _rows(eta, y, m)
            final = True
            continue
        alpha = np.ones((tree.levels[l0].n_nodes, B))
        while True:
            trial = [None] * tree.depth
            for lev in levels:
                scale = tree.to_nodes(lev, l0, alpha)[..., None]
                trial[lev] = u[lev] + scale * delta[lev]
            eta_t = _eta(tree, eta0, a, trial, levels)
            mu_t, v_t, r_t, ll_t = _rows(eta_t, y, m)
            h_t = _unit_h(tree, ll_t, trial, levels)
            bad = ~(h_t >= h - 1e-12 * (1.0 + np.abs(h)))
            if not bad.any():
                break
            alpha = np.where(bad, 0.5 * alpha, alpha)
            if np.min(alpha) < MIN_HALVING:
                break
        u = trial
        eta, mu, v, r, ll, h = eta_t, mu_t, v_t, r_t, ll_t, h_t
    return ModeState(u, a, eta, mu, v, r, ll, F, converged, it)


def laplace_value(st: ModeState) -> np.ndarray:
    """``h(û) − ½ log det H`` per batch element ``(B,)``."""
    pen = sum(0.5 * np.sum(x**2, axis=(0, 2)) for x in st.u)
    return st.ll.sum(axis=0) - pen - 0.5 * st.F.logdet


def laplace_gradient(data: Data, st: ModeState) -> np.ndarray:
    """Exact gradient of the Laplace log-likelihood over ``(β, θ)``: ``(B, p + n_theta)``."""
    tree = data.tree
    depth = tree.depth
    S = selected_inverse(tree, st.F)
    lev_i, t = row_quadratic(tree, S, st.a)
    vp = st.v * (1.0 - 2.0 * st.mu)  # dv/dη
    c = [tree.seg_rows(lev, (vp * lev_i)[:, :, None] * st.a[lev]) for lev in range(depth)]
    s = solve(tree, st.F, c)
    a_s = sum(
        np.einsum("nbd,nbd->nb", st.a[lev], tree.to_rows(lev, s[lev])) for lev in range(depth)
    )
    rho = st.r - 0.5 * vp * lev_i + 0.5 * st.v * a_s
    B = rho.shape[1]
    g_beta = rho.T @ data.X  # (B, p)
    g_theta = np.zeros((B, data.n_theta))
    for lev in range(depth):
        L = tree.levels[lev]
        U = tree.to_rows(lev, st.u[lev])
        Sr = tree.to_rows(lev, s[lev])
        W = rho[:, :, None] * U - st.v[:, :, None] * t[lev] - 0.5 * st.r[:, :, None] * Sr
        M = np.einsum("nr,nbc->brc", L.Z, W)  # (B, d, d)
        j, rr, cc = L.theta_map
        np.add.at(g_theta, (slice(None), j), M[:, rr, cc])
    return np.concatenate([g_beta, g_theta], axis=1)


def evaluate(
    data: Data,
    psi: np.ndarray,
    u0: list[np.ndarray] | None = None,
    *,
    gradient: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, ModeState]:
    """Laplace log-likelihood (without binomial coefficients), gradient and modes.

    ``psi`` is ``(B, p + n_theta)``: fixed effects then θ.
    """
    psi = np.atleast_2d(np.asarray(psi, dtype=float))
    p = data.p
    tree = data.tree
    a = tree.row_factors(tree.lambdas(psi[:, p:]))
    st = solve_modes(tree, data.eta_fixed(psi[:, :p]), a, data.y, data.m, u0)
    value = np.where(st.converged, laplace_value(st), np.nan)
    grad = laplace_gradient(data, st) if gradient else None
    return value, grad, st
